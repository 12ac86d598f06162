//! Reading the sources of a download concurrently: at most `concurrency` open at once, opened
//! in order, each pumped into its [`Pipe`]. The first failure (or a stall longer than the idle
//! timeout) is kept and announced at once, so the writer stops while the other reads are cut.

use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::spool::Pipe;
use crate::budget::{Budget, Reservation, STREAM_COST};
use crate::error::{Error, Result};
use crate::ports::{ByteStream, FileFetcher, TarStream};
use crate::types::{BaseName, CaptureDir, EntryPoint, FileSet, NodeName};

/// The size of the pieces small chunks are gathered into while a pipe spools.
const GATHER: usize = 64 * 1024;

/// How a download reads its nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchOptions {
    /// Nodes read at once.
    pub concurrency: NonZeroUsize,
    /// A node that sends nothing for this long fails the download.
    pub idle_timeout: Duration,
}

impl FetchOptions {
    /// Nodes read at once unless configured (`FETCH_CONCURRENCY`).
    pub const DEFAULT_CONCURRENCY: NonZeroUsize = match NonZeroUsize::new(16) {
        Some(n) => n,
        None => NonZeroUsize::MIN,
    };
    /// How long a node may send nothing unless configured (`NODE_IDLE_TIMEOUT`).
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            concurrency: Self::DEFAULT_CONCURRENCY,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// One read of a node: how it is reached, which directory, and which files.
#[derive(Clone, Debug)]
pub struct NodeSource {
    /// Entry point resolved before anything was sent.
    pub entry: EntryPoint,
    /// The capture's directory on that node.
    pub dir: CaptureDir,
    /// The files to read, in this order; `None`: every file of the directory.
    pub files: Option<Vec<BaseName>>,
}

impl NodeSource {
    /// Every file of `dir`.
    pub fn whole(entry: EntryPoint, dir: CaptureDir) -> Self {
        Self {
            entry,
            dir,
            files: None,
        }
    }
}

/// The first failure of a download; announcing it stops everything.
#[derive(Debug, Default)]
pub(crate) struct Failure {
    token: CancellationToken,
    error: Mutex<Option<Error>>,
}

impl Failure {
    /// Keeps `error` unless one came first, and announces the failure.
    pub(crate) fn fail(&self, error: Error) {
        let mut slot = self
            .error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(error);
        }
        drop(slot);
        self.token.cancel();
    }

    /// Resolves once a failure was announced.
    pub(crate) async fn announced(&self) {
        self.token.cancelled().await;
    }

    /// The failure's error (once).
    pub(crate) fn take(&self) -> Error {
        self.error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_else(|| Error::Internal("a download failed without an error".into()))
    }
}

/// The next chunk a writer takes from a source's pipe: `None` at its clean end; the download's
/// failure when one was announced (or the pipe's read failed); [`Error::ClientGone`] once the
/// body is gone.
pub(crate) async fn next_chunk(
    pipe: &Pipe,
    failure: &Failure,
    tx: &tokio::sync::mpsc::Sender<super::output::Msg>,
) -> Result<Option<bytes::Bytes>> {
    let next = tokio::select! {
        biased;
        () = failure.announced() => return Err(failure.take()),
        () = tx.closed() => return Err(Error::ClientGone),
        next = pipe.next() => next,
    };
    match next {
        Some(Ok(chunk)) => Ok(Some(chunk)),
        Some(Err(())) => Err(failure.take()),
        None => Ok(None),
    }
}

/// How a download's sources are read: at most `options.concurrency` at once, `reserved` of
/// them on node streams the download reserved, and more only on streams taken from `extra`
/// (the budget) while it has some to spare.
pub(crate) struct Reads {
    pub(crate) options: FetchOptions,
    pub(crate) reserved: usize,
    pub(crate) extra: Option<Arc<Budget>>,
}

/// Reads every source into its pipe, in order, as `reads` allows. Runs until all are read, or
/// is dropped (which drops every open stream, closing its exec).
pub(crate) async fn run(
    fetcher: Arc<dyn FileFetcher>,
    sources: Vec<(NodeSource, Arc<Pipe>)>,
    reads: Reads,
    failure: Arc<Failure>,
) {
    let mut waiting = sources.into_iter().peekable();
    let mut running = FuturesUnordered::new();
    let mut on_reserved = 0;
    loop {
        while running.len() < reads.options.concurrency.get() && waiting.peek().is_some() {
            let stream = if on_reserved < reads.reserved {
                on_reserved += 1;
                None
            } else {
                match reads
                    .extra
                    .as_ref()
                    .and_then(|b| b.try_reserve(1, STREAM_COST))
                {
                    Some(extra) => Some(extra),
                    None => break,
                }
            };
            let Some((source, pipe)) = waiting.next() else {
                break;
            };
            let read = pump(
                fetcher.clone(),
                source,
                pipe,
                reads.options,
                failure.clone(),
            );
            running.push(async move {
                read.await;
                stream.is_some()
            });
        }
        match running.next().await {
            Some(extra) => {
                if !extra {
                    on_reserved -= 1;
                }
            }
            None => return,
        }
    }
}

/// Reads one source into its pipe, to its end.
async fn pump(
    fetcher: Arc<dyn FileFetcher>,
    source: NodeSource,
    pipe: Arc<Pipe>,
    options: FetchOptions,
    failure: Arc<Failure>,
) {
    let result = async {
        let set = FileSet {
            dir: source.dir.clone(),
            names: source.files.clone(),
        };
        let stream = fetcher.archive(&source.entry, &set).await?;
        copy(stream, &pipe, &source, options.idle_timeout).await
    }
    .await;
    match result {
        Ok(()) => pipe.finish(Ok(())),
        Err(e) => {
            failure.fail(e);
            pipe.finish(Err(()));
        }
    }
}

/// Copies a source into its pipe. While the pipe spools, small chunks (an exec under a
/// bandwidth cap sends frames of a few KiB) are gathered into pieces of [`GATHER`] bytes, so
/// the spool handles few large pieces; once the writer reads the pipe they pass at once.
async fn copy(
    mut stream: TarStream,
    pipe: &Pipe,
    source: &NodeSource,
    idle: Duration,
) -> Result<()> {
    let mut gathered = BytesMut::new();
    loop {
        // Nothing is read while a direct pipe is full: the chunk would only wait in memory
        // (the exec's socket holds it meanwhile, and its sender waits).
        pipe.room().await;
        let next = tokio::select! {
            biased;
            next = tokio::time::timeout(idle, stream.next()) => next.map_err(|_| Error::NodeStalled {
                node: source.dir.node().to_string(),
                seconds: idle.as_secs(),
            })?,
            () = pipe.direct(), if !gathered.is_empty() => {
                pipe.push(gathered.split().freeze()).await?;
                continue;
            }
        };
        match next {
            None => {
                pipe.push(gathered.split().freeze()).await?;
                return Ok(());
            }
            Some(Ok(chunk)) if pipe.is_direct() => {
                pipe.push(gathered.split().freeze()).await?;
                pipe.push(chunk).await?;
            }
            Some(Ok(chunk)) if gathered.is_empty() && chunk.len() >= GATHER => {
                pipe.push(chunk).await?;
            }
            Some(Ok(chunk)) => {
                gathered.extend_from_slice(&chunk);
                if gathered.len() >= GATHER {
                    pipe.push(gathered.split().freeze()).await?;
                }
            }
            Some(Err(e)) => return Err(e),
        }
    }
}

/// Passes exactly `expected` bytes of a file through; fewer is an error item, more is cut off.
/// Holds the read's node stream (if it has its own) until it is dropped.
pub(crate) struct Exact {
    inner: ByteStream,
    left: u64,
    expected: u64,
    node: String,
    file: String,
    done: bool,
    _stream: Option<Reservation>,
}

impl Stream for Exact {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(mut chunk))) => {
                let take = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                chunk.truncate(take);
                self.left -= take as u64;
                if self.left == 0 {
                    self.done = true;
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                let error = Error::FileUnreadable {
                    node: self.node.clone(),
                    file: self.file.clone(),
                    reason: format!(
                        "it ended after {} of {} bytes",
                        self.expected - self.left,
                        self.expected
                    ),
                };
                Poll::Ready(Some(Err(error)))
            }
        }
    }
}

impl Exact {
    /// `len` bytes of `file` on `node` from `inner`.
    pub(crate) fn new(
        inner: ByteStream,
        len: u64,
        node: &NodeName,
        file: &BaseName,
        stream: Option<Reservation>,
    ) -> Self {
        Self {
            inner,
            left: len,
            expected: len,
            node: node.to_string(),
            file: file.to_string(),
            done: len == 0,
            _stream: stream,
        }
    }
}
