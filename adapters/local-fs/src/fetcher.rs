//! Node files under a local root: `{root}/{node}/{directory}/{ns}/{name}`.
//!
//! For deployments (and tests) where node files are mounted locally rather than reached by exec.
//! A node is reachable when `{root}/{node}` is a directory. Only regular files are served;
//! symbolic links are never followed.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use packetcapture_domain::{
    CaptureDir, EntryPoint, Error as DomainError, FileFetcher, FileInfo, NodeName, Result,
    TarStream,
};
use tokio_util::io::SyncIoBridge;

/// Pipe size between the tar writer thread and its reader.
const PIPE: usize = 256 * 1024;

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

fn mtime(meta: &fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime()
}

fn write_tar(dir: &Path, out: impl io::Write) -> Result<(), Error> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io {
            action: "archiving",
            path,
            source,
        }
    };
    let mut builder = tar::Builder::new(out);
    for (name, meta) in regular_files(dir)? {
        let path = dir.join(&name);
        let file = fs::File::open(&path).map_err(io_err(&path))?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata(&meta);
        header.set_entry_type(tar::EntryType::Regular);
        // The size at open: a file still growing is archived up to there.
        builder
            .append_data(&mut header, &name, file.take(meta.len()))
            .map_err(io_err(&path))?;
    }
    builder.into_inner().map_err(io_err(dir))?;
    Ok(())
}

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

    async fn archive(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<TarStream> {
        let path = self.dir(entry, dir);
        let node = entry.node.clone();
        let (reader, writer) = tokio::io::duplex(PIPE);
        let writer = SyncIoBridge::new(writer);
        tokio::task::spawn_blocking(move || {
            // On failure the pipe closes before the end-of-archive block, which the reader
            // reports as a truncated archive; the cause is logged here.
            if let Err(e) = write_tar(&path, writer) {
                tracing::warn!(node = %node, error = %e, "archiving local files failed");
            }
        });
        Ok(Box::pin(reader))
    }

    async fn list(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<Vec<FileInfo>> {
        let path = self.dir(entry, dir);
        let files = tokio::task::spawn_blocking(move || regular_files(&path))
            .await
            .map_err(|e| DomainError::Internal(format!("listing task failed: {e}")))?
            .map_err(|e| node_err(&entry.node, "listing files", e))?;
        Ok(files
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
}
