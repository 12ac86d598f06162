//! The archive engine: per-node tar streams in, one zip stream out, produced while it is read.
//!
//! The core ([`write_zip`]) is synchronous and pure over readers and a writer; [`stream_zip`]
//! runs it on a blocking thread and hands its output over a bounded channel, so memory does
//! not grow with the capture. Invariants:
//! - nothing is written before the first regular file is found, so "no file" is told apart
//!   (the caller answers 204) before any byte exists;
//! - a node's tar stream counts only if it ends with an end-of-archive block and every entry's
//!   data is whole; anything else is [`Error::TruncatedArchive`];
//! - after a failure the zip's central directory is never written, so a partial download can
//!   never open as a whole archive.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;
use zip::write::{FullFileOptions, ZipWriter};

use crate::error::{Error, Result};
use crate::ports::FileFetcher;
use crate::types::{CaptureDir, Compression, EntryPoint, NodeFiles, NodeName};

/// Size of the chunks handed to the HTTP body.
pub const CHUNK_SIZE: usize = 64 * 1024;
/// Chunks that may wait in the channel: with [`CHUNK_SIZE`], the bound on buffered output.
pub const CHANNEL_CHUNKS: usize = 8;

/// Decides each zip entry's name: the file's base name, or `{node}/{name}` when the name
/// occurs on more than one node.
#[derive(Debug, Default)]
pub struct EntryNamer {
    colliding: HashSet<String>,
    used: HashSet<String>,
}

impl EntryNamer {
    /// Names reported by more than one node (from the capture's status) get the node prefix
    /// on every node; a collision the status did not predict prefixes the later file.
    pub fn from_status(files: &[NodeFiles]) -> Self {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut colliding = HashSet::new();
        for node in files {
            let unique: HashSet<&str> = node.file_names.iter().map(String::as_str).collect();
            for name in unique {
                if !seen.insert(name) {
                    colliding.insert(name.to_owned());
                }
            }
        }
        Self {
            colliding,
            used: HashSet::new(),
        }
    }

    /// The entry name for `base` from `node`; never returns a name twice.
    pub fn name(&mut self, node: &NodeName, base: &str) -> String {
        let mut name = if self.colliding.contains(base) || self.used.contains(base) {
            format!("{node}/{base}")
        } else {
            base.to_owned()
        };
        let stem = name.clone();
        let mut n = 1;
        while self.used.contains(&name) {
            n += 1;
            name = format!("{stem}~{n}");
        }
        self.used.insert(name.clone());
        name
    }
}

/// What an archive held, for logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZipSummary {
    /// Files written.
    pub files: u64,
    /// Bytes of file data written (before compression).
    pub bytes: u64,
}

/// A reader that remembers whether its source reached end of file.
struct EofTracking<R> {
    inner: R,
    eof: bool,
}

impl<R: Read> Read for EofTracking<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        Ok(n)
    }
}

/// A reader that remembers whether a read failed, to tell read from write errors of a copy.
struct ReadErrorTracking<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for ReadErrorTracking<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
}

/// Writes the zip of every node's files to `out`; see the module's invariants.
///
/// `nodes` yields each node's tar stream in order (opened lazily, so one node's exec runs at a
/// time). `out` receives nothing unless a file is found; `on_first_file` runs right after the
/// first entry's header was written and flushed. With no file at all, `out` is untouched and the
/// summary counts zero files.
pub fn write_zip<W, R, I>(
    nodes: I,
    mut namer: EntryNamer,
    compression: Compression,
    out: W,
) -> Result<ZipSummary>
where
    W: Write,
    R: Read,
    I: IntoIterator<Item = Result<(NodeName, R)>>,
{
    let abort = AtomicBool::new(false);
    let mut out = Some(Guarded {
        inner: out,
        abort: &abort,
    });
    let mut zip: Option<ZipWriter<zip::write::StreamWriter<Guarded<'_, W>>>> = None;
    let mut summary = ZipSummary::default();
    let result = (|| {
        for node in nodes {
            let (node, reader) = node?;
            let mut archive = tar::Archive::new(EofTracking {
                inner: reader,
                eof: false,
            });
            let read_err = |e: io::Error| Error::NodeFiles {
                node: node.to_string(),
                action: "reading files",
                source: e.into(),
            };
            for entry in archive.entries().map_err(read_err)? {
                let mut entry = entry.map_err(read_err)?;
                if !entry.header().entry_type().is_file() {
                    continue;
                }
                let path = entry.path().map_err(read_err)?.into_owned();
                let Some(base) = path
                    .file_name()
                    .and_then(|b| b.to_str())
                    .filter(|b| !b.is_empty())
                else {
                    tracing::warn!(node = %node, path = %path.display(), "skipping a file whose name is not UTF-8");
                    continue;
                };
                let size = entry.size();
                let mtime = entry.header().mtime().unwrap_or(0);
                let name = namer.name(&node, base);
                let options = entry_options(compression, size, mtime);
                let first = zip.is_none();
                let writer = zip.get_or_insert_with(|| {
                    ZipWriter::new_stream(out.take().expect("the sink is taken only once"))
                });
                writer.start_file(name.as_str(), options).map_err(zip_err)?;
                if first {
                    writer.flush().map_err(|e| Error::ZipWrite { source: e })?;
                }
                let mut reader = ReadErrorTracking {
                    inner: &mut entry,
                    failed: false,
                };
                let copied = io::copy(&mut reader, writer).map_err(|e| {
                    if reader.failed {
                        read_err(e)
                    } else {
                        Error::ZipWrite { source: e }
                    }
                })?;
                if copied != size {
                    return Err(Error::TruncatedArchive {
                        node: node.to_string(),
                        reason: format!("file {base} ended after {copied} of {size} bytes"),
                    });
                }
                summary.files += 1;
                summary.bytes += size;
            }
            let mut rest = archive.into_inner();
            if rest.eof {
                return Err(Error::TruncatedArchive {
                    node: node.to_string(),
                    reason: "the tar stream ended without an end-of-archive block".into(),
                });
            }
            // Read to the end: the producer's final status (an exec's exit code) arrives there.
            io::copy(&mut rest, &mut io::sink()).map_err(read_err)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            if let Some(zip) = zip {
                let mut sink = zip.finish().map_err(zip_err)?.into_inner();
                sink.flush().map_err(|e| Error::ZipWrite { source: e })?;
            }
            Ok(summary)
        }
        Err(e) => {
            // Dropping a ZipWriter writes a central directory; the guard refuses those bytes,
            // so no partial archive can look whole.
            abort.store(true, Ordering::SeqCst);
            drop(zip);
            drop(out);
            Err(e)
        }
    }
}

fn zip_err(e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(source) => Error::ZipWrite { source },
        other => Error::ZipWrite {
            source: io::Error::other(other),
        },
    }
}

fn entry_options(
    compression: Compression,
    size: u64,
    mtime: u64,
) -> FullFileOptions<'static, 'static> {
    let method = match compression {
        Compression::Stored => zip::CompressionMethod::Stored,
        Compression::Deflate => zip::CompressionMethod::Deflated,
    };
    let mut options = FullFileOptions::default()
        .compression_method(method)
        .large_file(size >= u64::from(u32::MAX))
        .unix_permissions(0o644);
    if let Some(dos) = dos_time(mtime) {
        options = options.last_modified_time(dos);
    }
    if let Ok(secs) = u32::try_from(mtime) {
        // The Unix timestamp too, exact and free of time zones, for unzip and friends.
        match options
            .clone()
            .with_extended_timestamp(Some(secs), None, None)
        {
            Ok(with_ts) => options = with_ts,
            Err(e) => tracing::debug!(error = %e, "extended timestamp not added"),
        }
    }
    options
}

fn dos_time(mtime: u64) -> Option<zip::DateTime> {
    let ts = jiff::Timestamp::from_second(i64::try_from(mtime).ok()?).ok()?;
    let civil = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    zip::DateTime::try_from(civil).ok()
}

/// The sink as the zip writer sees it: once the archive is aborted, every byte is discarded,
/// so the central directory that dropping a `ZipWriter` writes never reaches the client.
struct Guarded<'a, W> {
    inner: W,
    abort: &'a AtomicBool,
}

impl<W: Write> Write for Guarded<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.abort.load(Ordering::SeqCst) {
            return Ok(data.len());
        }
        self.inner.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.abort.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.flush()
    }
}

/// A `Write` that hands full chunks to a bounded channel, blocking while it is full.
struct ChannelWriter {
    tx: mpsc::Sender<Msg>,
    buf: BytesMut,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(Msg::Data(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // Notice a client that left at once, not at the next full chunk.
        if self.tx.is_closed() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client went away",
            ));
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_SIZE {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

enum Msg {
    Data(Bytes),
    Done(ZipSummary),
    Failed(Error),
}

/// One node to put in the archive: how it is reached and which directory.
#[derive(Clone, Debug)]
pub struct NodeSource {
    /// Entry point resolved before anything was sent.
    pub entry: EntryPoint,
    /// The capture's directory on that node.
    pub dir: CaptureDir,
}

/// Starts the engine on a blocking thread. Resolves once the first file is found
/// (`Some(stream)`), or once every node was read and none held a file (`None`), or on an error
/// before the first byte. After that, errors arrive as an `Err` item of the stream.
pub async fn stream_zip(
    fetcher: Arc<dyn FileFetcher>,
    nodes: Vec<NodeSource>,
    namer: EntryNamer,
    compression: Compression,
) -> Result<Option<ZipStream>> {
    let (tx, mut rx) = mpsc::channel(CHANNEL_CHUNKS);
    let handle = tokio::runtime::Handle::current();
    let sink = ChannelWriter {
        tx: tx.clone(),
        buf: BytesMut::with_capacity(CHUNK_SIZE),
    };
    let task = tokio::task::spawn_blocking(move || {
        let readers = nodes.into_iter().map(|source| {
            let stream = handle.block_on(fetcher.archive(&source.entry, &source.dir))?;
            Ok((
                source.dir.node().clone(),
                SyncIoBridge::new_with_handle(stream, handle.clone()),
            ))
        });
        let msg = match write_zip(readers, namer, compression, sink) {
            Ok(summary) => Msg::Done(summary),
            Err(e) => Msg::Failed(e),
        };
        // The receiver may be gone (client left); nothing more to tell then.
        let _ = tx.blocking_send(msg);
    });
    match rx.recv().await {
        Some(Msg::Data(first)) => Ok(Some(ZipStream {
            first: Some(first),
            rx,
            done: false,
        })),
        Some(Msg::Done(_)) => Ok(None),
        Some(Msg::Failed(e)) => Err(e),
        None => Err(match task.await {
            Err(e) if e.is_panic() => Error::Internal("the archive engine panicked".into()),
            _ => Error::Internal("the archive engine stopped without a result".into()),
        }),
    }
}

/// The zip as a stream of chunks. Ends with `Ok` only after the central directory was sent;
/// any failure, including the engine vanishing, is an `Err` item.
pub struct ZipStream {
    first: Option<Bytes>,
    rx: mpsc::Receiver<Msg>,
    done: bool,
}

impl std::fmt::Debug for ZipStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZipStream")
            .field("done", &self.done)
            .finish()
    }
}

impl Stream for ZipStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Msg::Data(chunk))) => Poll::Ready(Some(Ok(chunk))),
            Poll::Ready(Some(Msg::Done(summary))) => {
                tracing::debug!(
                    files = summary.files,
                    bytes = summary.bytes,
                    "zip archive complete"
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
