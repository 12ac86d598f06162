//! A PacketCapture as this service sees it: its status per node, where its files are, how
//! they are reached and archived.

use std::fmt;

use crate::error::Error;
use crate::types::{BaseName, CaptureName, Namespace, NodeName, printable};

/// Names one PacketCapture.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CaptureRef {
    /// Its namespace.
    pub namespace: Namespace,
    /// Its name.
    pub name: CaptureName,
}

impl CaptureRef {
    /// Validates both parts.
    pub fn parse(namespace: &str, name: &str) -> Result<Self, Error> {
        Ok(Self {
            namespace: Namespace::new(namespace)?,
            name: CaptureName::new(name)?,
        })
    }
}

impl fmt::Display for CaptureRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `status.files[].state` of a PacketCapture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaptureState {
    /// Writing packets.
    Capturing,
    /// Done; files are complete.
    Finished,
    /// Waiting for its start time.
    Scheduled,
    /// Failed on the node.
    Error,
    /// Started, no packet seen yet.
    WaitingForTraffic,
    /// A value this service does not know (kept, printable, for messages).
    Other(String),
}

impl CaptureState {
    /// Reads the status field's text.
    pub fn parse(value: &str) -> Self {
        match value {
            "Capturing" => Self::Capturing,
            "Finished" => Self::Finished,
            "Scheduled" => Self::Scheduled,
            "Error" => Self::Error,
            "WaitingForTraffic" => Self::WaitingForTraffic,
            other => Self::Other(printable(other)),
        }
    }

    /// The status spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Capturing => "Capturing",
            Self::Finished => "Finished",
            Self::Scheduled => "Scheduled",
            Self::Error => "Error",
            Self::WaitingForTraffic => "WaitingForTraffic",
            Self::Other(s) => s,
        }
    }
}

/// One `status.files[]` entry: what a node reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFiles {
    /// The node's name, as written by the node (validated when used).
    pub node: String,
    /// Directory holding `{ns}/{name}/` on the node.
    pub directory: String,
    /// File names the node reported.
    pub file_names: Vec<String>,
    /// Capture state on that node, if reported.
    pub state: Option<CaptureState>,
}

/// A PacketCapture as far as this service cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    /// Which capture.
    pub reference: CaptureRef,
    /// `metadata.resourceVersion`, for optimistic concurrency on status updates.
    pub resource_version: String,
    /// `status.files`, in order.
    pub files: Vec<NodeFiles>,
}

/// Files of a capture's directory to read: all of its regular files, or those named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSet {
    /// The capture's directory on the node.
    pub dir: CaptureDir,
    /// The files, in this order; `None`: every regular file of the directory.
    pub names: Option<Vec<BaseName>>,
}

impl FileSet {
    /// Every regular file of `dir`.
    pub fn all(dir: CaptureDir) -> Self {
        Self { dir, names: None }
    }
}

/// `len` bytes of one file of a capture's directory, from byte `start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSlice {
    /// The capture's directory on the node.
    pub dir: CaptureDir,
    /// The file.
    pub name: BaseName,
    /// The first byte.
    pub start: u64,
    /// How many bytes.
    pub len: u64,
}

/// Where a capture's files live on one node: `{directory}/{ns}/{name}`, validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CaptureDir {
    node: NodeName,
    path: String,
}

impl CaptureDir {
    /// Validates the node name and the status' directory (absolute, no `.`/`..`, no control
    /// characters) and joins `{ns}/{name}` to it.
    pub fn new(node: &str, directory: &str, capture: &CaptureRef) -> Result<Self, Error> {
        let node = NodeName::new(node).map_err(|_| Error::InvalidStatus {
            capture: capture.to_string(),
            reason: format!(
                "node name \"{}\" is not a DNS-1123 subdomain",
                printable(node)
            ),
        })?;
        let bad = |why: &str| Error::InvalidStatus {
            capture: capture.to_string(),
            reason: format!(
                "directory \"{}\" of node {node} {why}",
                printable(directory)
            ),
        };
        if !directory.starts_with('/') {
            return Err(bad("is not an absolute path"));
        }
        if directory.chars().any(char::is_control) {
            return Err(bad("contains control characters"));
        }
        if directory.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(bad("contains . or .. segments"));
        }
        let mut path = String::with_capacity(directory.len() + 64);
        let segments = directory.split('/').filter(|s| !s.is_empty());
        for segment in segments.chain([capture.namespace.as_str(), capture.name.as_str()]) {
            path.push('/');
            path.push_str(segment);
        }
        Ok(Self { node, path })
    }

    /// The node.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// The absolute path of the capture's directory on the node.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// One file as it is on a node now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// Base name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub modified: i64,
}

/// One file as it is on a node now, with its inode: following a running capture tells a file
/// renamed by a rotation from the new one that took its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileState {
    /// Base name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// The inode number.
    pub inode: u64,
}

/// How an adapter reaches a node's files: the node and, for exec, the entry pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EntryPoint {
    /// The node.
    pub node: NodeName,
    /// The backend's handle for it (entry pod name for exec, the node for local files).
    pub handle: String,
}

/// Which part of a capture a download takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only these nodes (each must be in the capture's status); empty: every node.
    pub nodes: Vec<NodeName>,
    /// Only packets (or files that may hold packets) in this window.
    pub window: crate::pcap::Window,
    /// Only packets this pcap-filter expression matches (merges only).
    pub filter: Option<crate::bpf::FilterExpression>,
}

impl Selection {
    /// True when `node` is selected.
    pub fn has_node(&self, node: &str) -> bool {
        self.nodes.is_empty() || self.nodes.iter().any(|n| n.as_str() == node)
    }
}

/// Compression of zip entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// No compression (pcap rarely compresses well and Stored is several times faster).
    #[default]
    Stored,
    /// Deflate, for slow links.
    Deflate,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture() -> CaptureRef {
        CaptureRef::parse("dev", "cap-1").unwrap()
    }

    #[test]
    fn capture_dir_joins_and_refuses_hostile_directories() {
        let d = CaptureDir::new("node-1", "/var/log/calico/pcap/", &capture()).unwrap();
        assert_eq!(d.path(), "/var/log/calico/pcap/dev/cap-1");
        let d = CaptureDir::new("node-1", "/", &capture()).unwrap();
        assert_eq!(d.path(), "/dev/cap-1");
        for bad in ["relative/dir", "/var/../etc", "/var/./x", "/var/\n", ""] {
            assert!(
                CaptureDir::new("node-1", bad, &capture()).is_err(),
                "{bad:?}"
            );
        }
        assert!(CaptureDir::new("../node", "/var", &capture()).is_err());
    }
}
