//! What the writers (zip, merge) share: how their output reaches the response body, in
//! batches through a bounded channel, and the helpers both use on the way.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::tar::TarError;
use crate::error::{Error, Result};
use crate::types::NodeName;

/// Output is handed to the HTTP body in batches of at least this many bytes (the first
/// file's header at once).
pub const CHUNK_SIZE: usize = 256 * 1024;
/// Batches that may wait in the channel: with [`CHUNK_SIZE`] (and the largest read a batch
/// may end with), the bound on buffered output.
pub const CHANNEL_CHUNKS: usize = 4;

/// What a download held, for logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Files written (a zip's entries, the manifest left out).
    pub files: u64,
    /// Packets written (a merge's).
    pub packets: u64,
    /// Packets a merge read in its window, before its filter (equal to `packets` without
    /// one).
    pub read: u64,
    /// Bytes of file or packet data written (before compression).
    pub bytes: u64,
}

/// What a writer hands the body.
pub(crate) enum Msg {
    /// The next pieces of the download, in order.
    Data(Vec<Bytes>),
    /// The writer finished.
    Done(Summary),
    /// The writer failed.
    Failed(Error),
}

/// Hands `msg` to the body; a body that is gone is the client gone.
pub(crate) async fn send(tx: &mpsc::Sender<Msg>, msg: Msg) -> Result<()> {
    tx.send(msg).await.map_err(|_| Error::ClientGone)
}

/// A node's tar stream that is not whole.
pub(crate) fn tar_error(node: &NodeName, e: TarError) -> Error {
    Error::TruncatedArchive {
        node: node.to_string(),
        reason: e.to_string(),
    }
}

/// A tar member's file name: the last part of its path, if it is UTF-8.
pub(crate) fn base_name(path: &[u8]) -> Option<&str> {
    let name = path.rsplit(|b| *b == b'/').find(|part| !part.is_empty())?;
    std::str::from_utf8(name).ok()
}

/// The download as a stream of chunks. Ends with `Ok` only after the writer finished (a zip's
/// central directory sent, a merge's last packet); any failure, including the engine
/// vanishing, is an `Err` item.
pub struct DownloadStream {
    /// Pieces received and not yet handed out.
    pending: std::collections::VecDeque<Bytes>,
    rx: mpsc::Receiver<Msg>,
    done: bool,
    summary: Arc<OnceLock<Summary>>,
}

impl DownloadStream {
    /// The stream whose first pieces are `first`, the rest to come on `rx`.
    pub(crate) fn new(first: Vec<Bytes>, rx: mpsc::Receiver<Msg>) -> Self {
        Self {
            pending: first.into(),
            rx,
            done: false,
            summary: Arc::default(),
        }
    }

    /// Where the download's summary appears once the writer finished (never, when it
    /// failed): for the edge's log line and metrics.
    pub fn summary(&self) -> Arc<OnceLock<Summary>> {
        self.summary.clone()
    }
}

impl std::fmt::Debug for DownloadStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadStream")
            .field("done", &self.done)
            .finish()
    }
}

impl Stream for DownloadStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(piece) = self.pending.pop_front() {
            return Poll::Ready(Some(Ok(piece)));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Msg::Data(pieces))) => {
                self.pending = pieces.into();
                match self.pending.pop_front() {
                    Some(piece) => Poll::Ready(Some(Ok(piece))),
                    None => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                }
            }
            Poll::Ready(Some(Msg::Done(summary))) => {
                let _ = self.summary.set(summary);
                tracing::debug!(
                    files = summary.files,
                    packets = summary.packets,
                    bytes = summary.bytes,
                    "download complete"
                );
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Msg::Failed(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(Error::Internal(
                    "the archive engine stopped mid-stream".into(),
                ))))
            }
        }
    }
}
