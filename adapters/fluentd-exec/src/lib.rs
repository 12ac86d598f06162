//! The fluentd-exec adapter: a capture's node files through exec in the node's entry pod.
//!
//! Boundary: the only code that runs commands. Every command is a [`Command`]: a fixed argument
//! vector (no shell) whose one variable part is a path validated by the domain
//! ([`CaptureDir`]). An exec counts as complete only when its status frame says Success; a tar
//! stream whose exec failed ends with an error read, never with a clean end of file.

mod running;

use std::io;

use async_trait::async_trait;
use packetcapture_domain::{
    CaptureDir, EntryPoint, FileFetcher, FileInfo, NodeName, Result, TarStream,
};
use packetcapture_kubernetes::EntryPods;
use running::Exec;

/// The most a listing may print before it is refused.
const LIST_OUTPUT_LIMIT: usize = 16 * 1024 * 1024;

/// What went wrong with an exec.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The exec could not be started or its connection failed.
    #[error("exec of {command} in pod {pod} could not run")]
    Start {
        /// The command's name.
        command: &'static str,
        /// The entry pod.
        pod: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// The command ended with a failure status (or none at all).
    #[error("{command} in pod {pod} failed: {reason}{}", stderr_suffix(.stderr))]
    Failed {
        /// The command's name.
        command: &'static str,
        /// The entry pod.
        pod: String,
        /// The status' account of it.
        reason: String,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// Reading its output failed.
    #[error("reading the output of {command} in pod {pod}")]
    Output {
        /// The command's name.
        command: &'static str,
        /// The entry pod.
        pod: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Its output could not be understood.
    #[error("cannot parse the output of {command} in pod {pod}: {reason}")]
    Parse {
        /// The command's name.
        command: &'static str,
        /// The entry pod.
        pod: String,
        /// What was wrong.
        reason: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(" (stderr: {})", stderr.trim())
    }
}

/// Every command this adapter runs, with its argument vector and what it does for messages.
#[derive(Clone, Copy, Debug)]
pub enum Command<'a> {
    /// The directory's files as a tar stream (`tar`).
    Archive(&'a CaptureDir),
    /// The directory's regular files with size and modification time (`find`).
    List(&'a CaptureDir),
    /// The directory and everything in it removed (`rm`).
    Remove(&'a CaptureDir),
}

impl Command<'_> {
    /// The program run.
    pub fn program(&self) -> &'static str {
        match self {
            Self::Archive(_) => "tar",
            Self::List(_) => "find",
            Self::Remove(_) => "rm",
        }
    }

    /// What it does, for messages: "{action} on node N failed".
    pub fn action(&self) -> &'static str {
        match self {
            Self::Archive(_) => "reading files",
            Self::List(_) => "listing files",
            Self::Remove(_) => "removing files",
        }
    }

    /// The whole argument vector, program first.
    pub fn argv(&self) -> Vec<String> {
        let args: Vec<&str> = match self {
            // --ignore-failed-read: a directory that is gone is an empty archive (exit 0), and
            // a file still growing is archived up to its size at open.
            Self::Archive(dir) => vec![
                "-c",
                "-f",
                "-",
                "--ignore-failed-read",
                "-C",
                "/",
                "--",
                dir.path().trim_start_matches('/'),
            ],
            Self::List(dir) => vec![
                dir.path(),
                "-mindepth",
                "1",
                "-maxdepth",
                "1",
                "-type",
                "f",
                "-printf",
                "%f\\0%s\\0%T@\\0",
            ],
            Self::Remove(dir) => vec!["-rf", "--", dir.path()],
        };
        std::iter::once(self.program())
            .chain(args)
            .map(str::to_owned)
            .collect()
    }
}

/// The files backend by exec.
#[derive(Debug, Clone)]
pub struct ExecFetcher {
    pods: EntryPods,
}

impl ExecFetcher {
    /// Execs in the entry pods `pods` finds.
    pub fn new(pods: EntryPods) -> Self {
        Self { pods }
    }

    async fn start(&self, entry: &EntryPoint, command: Command<'_>) -> Result<Exec> {
        let config = self.pods.config();
        Exec::start(
            &self.pods.cluster().client,
            config.namespace.as_str(),
            &entry.handle,
            config.container.as_str(),
            &command,
        )
        .await
        .map_err(|e| node_error(&entry.node, &command, e))
    }
}

fn node_error(node: &NodeName, command: &Command<'_>, e: Error) -> packetcapture_domain::Error {
    packetcapture_domain::Error::NodeFiles {
        node: node.to_string(),
        action: command.action(),
        source: Box::new(e),
    }
}

/// A failed read of an exec's output: the exec's own error when it is one.
fn read_failure(
    node: &NodeName,
    command: &Command<'_>,
    e: io::Error,
) -> packetcapture_domain::Error {
    let source = e.downcast::<Error>().unwrap_or_else(|e| Error::Output {
        command: command.program(),
        pod: String::new(),
        source: e,
    });
    node_error(node, command, source)
}

/// `find` prints `name\0size\0mtime\0` per file.
fn parse_listing(out: &[u8]) -> std::result::Result<Vec<FileInfo>, String> {
    let text = std::str::from_utf8(out).map_err(|_| "not UTF-8".to_owned())?;
    let fields: Vec<&str> = text.split('\0').collect();
    let fields = fields.strip_suffix(&[""]).unwrap_or(&fields);
    if !fields.len().is_multiple_of(3) {
        return Err(format!("{} fields, not a multiple of 3", fields.len()));
    }
    fields
        .chunks(3)
        .map(|f| {
            let size = f[1]
                .parse::<u64>()
                .map_err(|_| format!("size \"{}\" of {}", f[1], f[0]))?;
            let seconds = f[2].split('.').next().unwrap_or_default();
            let modified = seconds
                .parse::<i64>()
                .map_err(|_| format!("time \"{}\" of {}", f[2], f[0]))?;
            Ok(FileInfo {
                name: f[0].to_owned(),
                size,
                modified,
            })
        })
        .collect()
}

#[async_trait]
impl FileFetcher for ExecFetcher {
    async fn entry_point(&self, node: &NodeName) -> Result<EntryPoint> {
        self.pods.find(node).await
    }

    async fn entry_points(&self, nodes: &[NodeName]) -> Result<Vec<EntryPoint>> {
        self.pods.find_all(nodes).await
    }

    async fn archive(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<TarStream> {
        Ok(Box::pin(
            self.start(entry, Command::Archive(dir))
                .await?
                .into_stream(),
        ))
    }

    async fn list(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<Vec<FileInfo>> {
        let command = Command::List(dir);
        let mut exec = self.start(entry, command).await?;
        let fail = |e: Error| node_error(&entry.node, &command, e);
        let out = match exec.output(LIST_OUTPUT_LIMIT).await {
            Ok(out) => out,
            // find says so when the directory does not exist: no files there.
            Err(_)
                if exec.stderr().contains("No such file or directory")
                    && exec.stderr().contains(dir.path()) =>
            {
                return Ok(Vec::new());
            }
            Err(e) => return Err(read_failure(&entry.node, &command, e)),
        };
        parse_listing(&out).map_err(|reason| {
            fail(Error::Parse {
                command: command.program(),
                pod: entry.handle.clone(),
                reason,
            })
        })
    }

    async fn remove(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<()> {
        let command = Command::Remove(dir);
        let mut exec = self.start(entry, command).await?;
        exec.output(LIST_OUTPUT_LIMIT)
            .await
            .map_err(|e| read_failure(&entry.node, &command, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_output_parses_and_bad_output_is_refused() {
        let out = b"a.pcap\x0012\x001700000000.5\x00b c.pcap\x000\x0017\x00";
        let files = parse_listing(out).unwrap();
        assert_eq!(
            files[0],
            FileInfo {
                name: "a.pcap".into(),
                size: 12,
                modified: 1_700_000_000
            }
        );
        assert_eq!(files[1].name, "b c.pcap");
        assert!(parse_listing(b"").unwrap().is_empty());
        assert!(parse_listing(b"a\x00x\x001\x00").is_err());
        assert!(parse_listing(b"a\x001\x00").is_err());
    }

    #[test]
    fn every_command_is_a_fixed_vector_around_the_validated_path() {
        let capture = packetcapture_domain::CaptureRef::parse("dev", "cap").unwrap();
        let dir = CaptureDir::new("node-1", "/var/log/calico/pcap", &capture).unwrap();
        let archive = Command::Archive(&dir).argv();
        assert_eq!(archive[0], "tar");
        assert_eq!(archive.last().unwrap(), "var/log/calico/pcap/dev/cap");
        assert_eq!(
            Command::Remove(&dir).argv(),
            ["rm", "-rf", "--", "/var/log/calico/pcap/dev/cap"]
        );
        assert_eq!(
            Command::List(&dir).argv()[1],
            "/var/log/calico/pcap/dev/cap"
        );
        assert_eq!(Command::Remove(&dir).action(), "removing files");
    }
}
