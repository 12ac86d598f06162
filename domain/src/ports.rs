//! The ports: small capability traits the use cases need, implemented by adapters.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::error::Result;
use crate::types::{
    BaseName, BearerToken, Capture, CaptureDir, CaptureRef, ClusterTarget, EntryPoint, FileInfo,
    FileSet, FileSlice, FileState, NodeName, ResourceAttributes, User,
};

/// A node's files as a tar stream, in chunks. It must end with an `Err` item if the producer
/// failed (for exec: a non-success status), so a reader can never take a cut stream for a
/// whole one; a clean end is the end of the stream. The error is the domain's, with its
/// context (the node, the file that could not be read whole), as the adapter knows it.
pub type TarStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// A file's bytes, in chunks, under the same rule as [`TarStream`]: a failed producer ends it
/// with an `Err` item.
pub type ByteStream = TarStream;

/// Turns a bearer token into a user.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// The user the token belongs to; [`crate::Error::Unauthenticated`] if it is not valid.
    async fn authenticate(&self, token: &BearerToken) -> Result<User>;
}

/// Decides whether a user may do something (a SubjectAccessReview).
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait Authorizer: Send + Sync {
    /// True if `user` may act as `attributes` say.
    async fn allowed(&self, user: &User, attributes: &ResourceAttributes) -> Result<bool>;
}

/// The outcome of a conditional status update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusUpdate {
    /// Written.
    Updated,
    /// The capture changed since it was read (resource version differs): read and try again.
    Conflict,
}

/// Finds PacketCaptures and updates their status.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait CaptureLocator: Send + Sync {
    /// The capture, or `None` if it does not exist.
    async fn get(&self, capture: &CaptureRef) -> Result<Option<Capture>>;

    /// Empties `fileNames` of the given nodes' `status.files` entries, provided the capture is
    /// still at `capture.resource_version`.
    async fn clear_file_names(&self, capture: &Capture, nodes: &[String]) -> Result<StatusUpdate>;
}

/// Reaches the files of a capture on the nodes.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait FileFetcher: Send + Sync {
    /// How `node` is reached; [`crate::Error::NoEntryPod`] if it cannot be.
    async fn entry_point(&self, node: &NodeName) -> Result<EntryPoint>;

    /// How each of `nodes` is reached, in order; the first node that cannot be is the error.
    /// Adapters that can answer for many nodes at once (one pod list) override this.
    async fn entry_points(&self, nodes: &[NodeName]) -> Result<Vec<EntryPoint>> {
        let mut entries = Vec::with_capacity(nodes.len());
        for node in nodes {
            entries.push(self.entry_point(node).await?);
        }
        Ok(entries)
    }

    /// The files of `set` as a tar stream: every regular file of the directory, or the named
    /// ones in the order given. The files are those on the node when the read reaches them: a
    /// directory that does not exist is a complete tar stream with no file, and a file that is
    /// not there (retention removed it after the capture's status listed it) is left out, with
    /// a log line naming it. A file that is there but cannot be read whole fails the stream
    /// with [`crate::Error::FileUnreadable`] naming it.
    async fn archive(&self, entry: &EntryPoint, set: &FileSet) -> Result<TarStream>;

    /// The bytes of `slice` (the caller checked they exist). The stream may end early when the
    /// file is shorter; the caller counts.
    async fn read_file(&self, entry: &EntryPoint, slice: &FileSlice) -> Result<ByteStream>;

    /// The directory's regular files now; a directory that does not exist has none.
    async fn list(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<Vec<FileInfo>>;

    /// Removes the directory and everything in it; a missing directory is not an error.
    async fn remove(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<()>;

    /// The directory's regular files now, with their inode numbers; a directory that does not
    /// exist has none. For following a running capture: backends that cannot follow say so.
    async fn inodes(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<Vec<FileState>> {
        let _ = (entry, dir);
        Err(crate::Error::CannotFollow)
    }

    /// The bytes of file `name` from its start, then whatever is appended to it, as it comes:
    /// the file that was opened is followed, also once renamed. The stream never ends by
    /// itself (dropping it stops the read); a producer that fails ends it with an `Err` item.
    async fn follow(
        &self,
        entry: &EntryPoint,
        dir: &CaptureDir,
        name: &BaseName,
    ) -> Result<ByteStream> {
        let _ = (entry, dir, name);
        Err(crate::Error::CannotFollow)
    }
}

/// Compiles pcap-filter expressions (tcpdump's syntax) into classic BPF programs, with the
/// library that defines the language. Calls are CPU work that may take a while for long
/// expressions; [`crate::bpf::Filter`] makes them from blocking threads.
pub trait FilterCompiler: Send + Sync {
    /// `expression` for packets of `link_type` (a pcap LINKTYPE_ value) captured with
    /// `snaplen`; the error is the compiler's own message.
    fn compile(
        &self,
        expression: &str,
        link_type: u32,
        snaplen: u32,
    ) -> std::result::Result<crate::bpf::Program, String>;
}

/// Scratch space for the spool of a download: a file nobody else can see, gone when dropped.
///
/// Calls block (file IO); the engine makes them from blocking threads.
pub trait SpoolStorage: Send + Sync {
    /// A new, empty file that has no name (unlinked at once), so nothing of it remains after
    /// the download, a crash included. One per download that spools past its memory budget.
    fn create(&self) -> std::io::Result<Box<dyn SpoolFile>>;
}

/// One spool file, shared by a download's nodes: each writes and reads its own ranges.
pub trait SpoolFile: Send + Sync {
    /// Writes all of `data` at `offset`.
    fn write_at(&self, data: &[u8], offset: u64) -> std::io::Result<()>;

    /// Reads up to `buf.len()` bytes at `offset`; how many were read.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;

    /// Gives back the space of a range that was read and is not needed any more.
    fn discard(&self, offset: u64, len: u64) -> std::io::Result<()>;
}

/// The ports that act inside one cluster.
#[derive(Clone)]
pub struct ClusterPorts {
    /// SubjectAccessReviews in that cluster.
    pub authorizer: Arc<dyn Authorizer>,
    /// PacketCaptures in that cluster.
    pub locator: Arc<dyn CaptureLocator>,
    /// Node files in that cluster.
    pub fetcher: Arc<dyn FileFetcher>,
}

impl std::fmt::Debug for ClusterPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterPorts")
    }
}

/// Gives the ports of the cluster a request addresses.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait ClusterRouter: Send + Sync {
    /// The local cluster's ports, or a managed cluster's through Voltron;
    /// [`crate::Error::ClusterNotFound`] / [`crate::Error::ClusterNotConnected`] otherwise.
    async fn route(&self, target: &ClusterTarget) -> Result<ClusterPorts>;
}
