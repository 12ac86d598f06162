//! Node files under a local root: `{root}/{node}/{directory}/{ns}/{name}`.
//!
//! For deployments (and tests) where node files are mounted locally rather than reached by exec.
//! A node is reachable when `{root}/{node}` is a directory. Only regular files are served;
//! symbolic links are never followed.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use packetcapture_domain::{
    BaseName, ByteStream, CaptureDir, EntryPoint, Error as DomainError, FileFetcher, FileInfo,
    FileSet, FileSlice, FileState, NodeName, Result, TarStream,
};
use tokio::sync::mpsc;

/// Size of the chunks handed to the reader.
const CHUNK: usize = 256 * 1024;
/// Chunks that may wait for the reader.
const CHUNKS: usize = 4;

/// What went wrong with local files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("{action} {path}")]
    Io {
        /// What was done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Node files under a local root.
#[derive(Debug, Clone)]
pub struct LocalFetcher {
    root: PathBuf,
}

impl LocalFetcher {
    /// Serves `{root}/{node}/...`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn node_root(&self, node: &NodeName) -> PathBuf {
        self.root.join(node.as_str())
    }

    fn dir(&self, entry: &EntryPoint, dir: &CaptureDir) -> PathBuf {
        self.node_root(&entry.node)
            .join(dir.path().trim_start_matches('/'))
    }

    /// The capture directory's regular files with their metadata, read on a blocking thread.
    async fn regular_files(
        &self,
        entry: &EntryPoint,
        dir: &CaptureDir,
    ) -> Result<Vec<(String, fs::Metadata)>> {
        let path = self.dir(entry, dir);
        tokio::task::spawn_blocking(move || regular_files(&path))
            .await
            .map_err(|e| DomainError::Internal(format!("listing task failed: {e}")))?
            .map_err(|e| node_err(&entry.node, "listing files", e))
    }
}

fn node_err(node: &NodeName, action: &'static str, e: Error) -> DomainError {
    DomainError::NodeFiles {
        node: node.to_string(),
        action,
        source: Box::new(e),
    }
}

/// Regular files of `dir` (not following links), sorted by name; none if it does not exist.
fn regular_files(dir: &Path) -> Result<Vec<(String, fs::Metadata)>, Error> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                action: "reading directory",
                path: dir.into(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            action: "reading directory",
            path: dir.into(),
            source,
        })?;
        let meta = entry
            .path()
            .symlink_metadata()
            .map_err(|source| Error::Io {
                action: "reading metadata of",
                path: entry.path(),
                source,
            })?;
        if let (true, Some(name)) = (meta.is_file(), entry.file_name().to_str()) {
            files.push((name.to_owned(), meta));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// Opens a regular file for reading without following a symbolic link.
fn open_regular(path: &Path) -> io::Result<fs::File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let file = fs::File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

fn mtime(meta: &fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime()
}

/// Chunks of the tar stream, handed to the reader; refuses every byte once `failed` is set,
/// so the end-of-archive block that dropping a `tar::Builder` writes never leaves.
struct ChunkSink {
    tx: mpsc::Sender<Result<Bytes, DomainError>>,
    buf: BytesMut,
    failed: Arc<AtomicBool>,
}

impl ChunkSink {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away"))
    }
}

impl io::Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(io::Error::other("the archive failed"));
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A file read to exactly the size its tar header announces: ending early (the file shrank
/// while it was read) is an error, never zeros.
struct Exact {
    file: io::Take<fs::File>,
    size: u64,
    read: u64,
}

impl io::Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.read += n as u64;
        if n == 0 && !buf.is_empty() && self.read < self.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                Shrank {
                    read: self.read,
                    size: self.size,
                },
            ));
        }
        Ok(n)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("it shrank while it was read: {read} of {size} bytes")]
struct Shrank {
    read: u64,
    size: u64,
}

/// Writes the tar stream of `dir`'s regular files; any file that cannot be read whole fails
/// it, naming the file.
fn write_tar(node: &NodeName, dir: &Path, out: &mut ChunkSink) -> Result<(), DomainError> {
    let listing = regular_files(dir).map_err(|e| node_err(node, "reading files", e))?;
    let names = listing.into_iter().map(|(name, _)| name).collect();
    write_files(node, dir, names, out)
}

/// Writes the tar stream of the files `names` of `dir`, as they are when opened.
fn write_files(
    node: &NodeName,
    dir: &Path,
    names: Vec<String>,
    out: &mut ChunkSink,
) -> Result<(), DomainError> {
    let failed = out.failed.clone();
    let unreadable = |name: &str, reason: String| {
        failed.store(true, Ordering::SeqCst);
        DomainError::FileUnreadable {
            node: node.to_string(),
            file: name.to_owned(),
            reason,
        }
    };
    let mut builder = tar::Builder::new(out);
    for name in names {
        let path = dir.join(&name);
        // The size and time of the file opened, whatever happened to the name since the
        // listing; a file still growing is archived up to its size at open. A file that is
        // not there any more (retention removed it) is left out.
        let file = match open_regular(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(%node, file = %name, "a file of the capture is gone from its node (removed after the capture's status listed it): left out");
                continue;
            }
            Err(e) => return Err(unreadable(&name, e.to_string())),
        };
        let meta = file
            .metadata()
            .map_err(|e| unreadable(&name, e.to_string()))?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata(&meta);
        header.set_entry_type(tar::EntryType::Regular);
        let size = meta.len();
        let reader = Exact {
            file: file.take(size),
            size,
            read: 0,
        };
        if let Err(e) = builder.append_data(&mut header, &name, reader) {
            let reader_failed = e.get_ref().is_some_and(|inner| inner.is::<Shrank>())
                || e.kind() != io::ErrorKind::BrokenPipe;
            if reader_failed {
                return Err(unreadable(&name, e.to_string()));
            }
            failed.store(true, Ordering::SeqCst);
            return Err(DomainError::Internal(
                "the reader of a local archive went away".into(),
            ));
        }
    }
    builder
        .into_inner()
        .and_then(io::Write::flush)
        .map_err(|e| {
            node_err(
                node,
                "reading files",
                Error::Io {
                    action: "archiving",
                    path: dir.into(),
                    source: e,
                },
            )
        })
}

/// Runs `write` on a blocking thread into a [`ChunkSink`] and streams its chunks; an error it
/// returns ends the stream as an error item.
fn produce(
    write: impl FnOnce(&mut ChunkSink) -> Result<(), DomainError> + Send + 'static,
) -> TarStream {
    let (tx, rx) = mpsc::channel(CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut sink = ChunkSink {
            tx: tx.clone(),
            buf: BytesMut::with_capacity(CHUNK),
            failed: Arc::new(AtomicBool::new(false)),
        };
        if let Err(e) = write(&mut sink) {
            // The reader may be gone; then nobody is left to tell.
            let _ = tx.blocking_send(Err(e));
        }
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item, rx))
    });
    Box::pin(chunks)
}

/// How often a followed file is looked at again once its end is reached.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(50);

#[async_trait]
impl FileFetcher for LocalFetcher {
    async fn entry_point(&self, node: &NodeName) -> Result<EntryPoint> {
        let root = self.node_root(node);
        match tokio::fs::metadata(&root).await {
            Ok(m) if m.is_dir() => Ok(EntryPoint {
                node: node.clone(),
                handle: root.display().to_string(),
            }),
            _ => Err(DomainError::NoEntryPod {
                node: node.to_string(),
            }),
        }
    }

    async fn archive(&self, entry: &EntryPoint, set: &FileSet) -> Result<TarStream> {
        let path = self.dir(entry, &set.dir);
        let node = entry.node.clone();
        let Some(names) = &set.names else {
            return Ok(produce(move |sink| write_tar(&node, &path, sink)));
        };
        let names = names.iter().map(|n| n.as_str().to_owned()).collect();
        Ok(produce(move |sink| write_files(&node, &path, names, sink)))
    }

    async fn read_file(&self, entry: &EntryPoint, slice: &FileSlice) -> Result<ByteStream> {
        let path = self.dir(entry, &slice.dir).join(slice.name.as_str());
        let (start, len) = (slice.start, slice.len);
        let node = entry.node.clone();
        let file = slice.name.to_string();
        Ok(produce(move |sink| {
            use std::io::{Seek, Write};
            let unreadable = |reason: String| DomainError::FileUnreadable {
                node: node.to_string(),
                file: file.clone(),
                reason,
            };
            let mut opened = open_regular(&path).map_err(|e| unreadable(e.to_string()))?;
            opened
                .seek(io::SeekFrom::Start(start))
                .map_err(|e| unreadable(e.to_string()))?;
            let mut buf = vec![0u8; CHUNK];
            let mut reader = opened.take(len);
            loop {
                let n = reader
                    .read(&mut buf)
                    .map_err(|e| unreadable(e.to_string()))?;
                if n == 0 {
                    break;
                }
                sink.write_all(&buf[..n]).map_err(|_| {
                    DomainError::Internal("the reader of a local file went away".into())
                })?;
            }
            sink.flush()
                .map_err(|_| DomainError::Internal("the reader of a local file went away".into()))
        }))
    }

    async fn list(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<Vec<FileInfo>> {
        Ok(self
            .regular_files(entry, dir)
            .await?
            .into_iter()
            .map(|(name, meta)| FileInfo {
                name,
                size: meta.len(),
                modified: mtime(&meta),
            })
            .collect())
    }

    async fn remove(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<()> {
        let path = self.dir(entry, dir);
        match tokio::fs::remove_dir_all(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(node_err(
                &entry.node,
                "removing files",
                Error::Io {
                    action: "removing",
                    path,
                    source,
                },
            )),
        }
    }

    async fn inodes(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<Vec<FileState>> {
        use std::os::unix::fs::MetadataExt;
        Ok(self
            .regular_files(entry, dir)
            .await?
            .into_iter()
            .map(|(name, meta)| FileState {
                name,
                size: meta.len(),
                inode: meta.ino(),
            })
            .collect())
    }

    /// Reads the open file to its end, then looks again every 50 ms, until the stream is
    /// dropped; the file stays the one opened, also once renamed.
    async fn follow(
        &self,
        entry: &EntryPoint,
        dir: &CaptureDir,
        name: &BaseName,
    ) -> Result<ByteStream> {
        let path = self.dir(entry, dir).join(name.as_str());
        let node = entry.node.to_string();
        let file = name.to_string();
        let mut opened = open_regular(&path).map_err(|e| DomainError::FileUnreadable {
            node: node.clone(),
            file: file.clone(),
            reason: e.to_string(),
        })?;
        let (tx, rx) = mpsc::channel::<Result<Bytes>>(CHUNKS);
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; CHUNK];
            while !tx.is_closed() {
                match opened.read(&mut buf) {
                    Ok(0) => std::thread::sleep(FOLLOW_POLL),
                    Ok(n) => {
                        if tx
                            .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(DomainError::FileUnreadable {
                            node,
                            file,
                            reason: e.to_string(),
                        }));
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(futures_util::stream::unfold(
            rx,
            |mut rx| async move {
                let item = rx.recv().await?;
                Some((item, rx))
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Read;

    use super::*;

    /// Runs `write_files` and gathers what reached the reader, and how it ended.
    fn archive(dir: &Path, names: &[&str]) -> (Vec<u8>, Result<(), DomainError>) {
        let (tx, mut rx) = mpsc::channel(1024);
        let mut sink = ChunkSink {
            tx,
            buf: BytesMut::new(),
            failed: Arc::new(AtomicBool::new(false)),
        };
        let node = NodeName::new("node-1").unwrap();
        let names = names.iter().map(|n| (*n).to_owned()).collect();
        let result = write_files(&node, dir, names, &mut sink);
        drop(sink);
        let mut bytes = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        (bytes, result)
    }

    #[test]
    fn a_file_gone_between_listing_and_opening_is_left_out_and_the_archive_ends_whole() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.pcap"), [1u8; 3000]).unwrap();
        std::fs::write(dir.path().join("b.pcap"), [2u8; 10]).unwrap();
        let (bytes, result) = archive(dir.path(), &["a.pcap", "rotated-away.pcap", "b.pcap"]);
        result.unwrap();
        assert!(bytes.ends_with(&[0u8; 1024]), "a whole archive");
        let mut tar = tar::Archive::new(bytes.as_slice());
        let mut found = Vec::new();
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            found.push((entry.path().unwrap().display().to_string(), data.len()));
        }
        assert_eq!(
            found,
            [("a.pcap".to_owned(), 3000), ("b.pcap".to_owned(), 10)]
        );
    }

    #[test]
    fn a_file_that_comes_up_short_is_an_error_never_zeros() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), [7u8; 100]).unwrap();
        let file = fs::File::open(dir.path().join("f")).unwrap();
        let mut exact = Exact {
            file: file.take(200),
            size: 200,
            read: 0,
        };
        let mut out = Vec::new();
        let err = exact.read_to_end(&mut out).unwrap_err();
        assert!(err.to_string().contains("shrank"), "{err}");
        assert_eq!(out.len(), 100, "what was there, and no padding");
    }
}
