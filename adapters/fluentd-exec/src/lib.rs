//! The fluentd-exec adapter: a capture's node files through exec in the node's entry pod.
//!
//! Boundary: the only code that runs commands. Every command is a [`Command`]: a fixed argument
//! vector (no shell) whose one variable part is a path validated by the domain
//! ([`CaptureDir`]). An exec counts as complete only when its status frame says Success; a tar
//! stream whose exec failed ends with an error read, never with a clean end of file.

mod running;
mod verdict;

use std::io;

use async_trait::async_trait;
use packetcapture_domain::{
    BaseName, ByteStream, CaptureDir, EntryPoint, FileFetcher, FileInfo, FileSet, FileSlice,
    FileState, NodeName, Result, TarStream,
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
#[derive(Clone, Debug)]
pub enum Command {
    /// The directory's files as a tar stream (`tar`).
    Archive(CaptureDir),
    /// The named files of the directory, in that order, as a tar stream (`tar`).
    ArchiveFiles(CaptureDir, Vec<BaseName>),
    /// A slice of one file (`dd`).
    Read(FileSlice),
    /// The directory's regular files with size and modification time (`find` and `stat`).
    List(CaptureDir),
    /// The directory and everything in it removed (`rm`).
    Remove(CaptureDir),
    /// The directory's regular files with inode and size (`find` and `stat`), to follow a
    /// running capture.
    Inodes(CaptureDir),
    /// One file from its start, then what is appended to it (`tail -f`, which follows the
    /// file it opened, also once renamed).
    Follow(CaptureDir, BaseName),
}

impl Command {
    /// The program run.
    pub fn program(&self) -> &'static str {
        match self {
            Self::Archive(_) | Self::ArchiveFiles(..) => "tar",
            Self::Read(_) => "dd",
            Self::List(_) | Self::Inodes(_) => "find",
            Self::Remove(_) => "rm",
            Self::Follow(..) => "tail",
        }
    }

    /// What it does, for messages: "{action} on node N failed".
    pub fn action(&self) -> &'static str {
        match self {
            Self::Archive(_) | Self::ArchiveFiles(..) | Self::Read(_) => "reading files",
            Self::List(_) | Self::Inodes(_) => "listing files",
            Self::Remove(_) => "removing files",
            Self::Follow(..) => "following a file",
        }
    }

    /// The whole argument vector: `env LC_ALL=C` (so the tools report in the C locale, which
    /// the verdicts read), the program, its arguments. Runs with GNU tools and BusyBox alike.
    pub fn argv(&self) -> Vec<String> {
        let owned: Vec<String>;
        let args: Vec<&str> = match self {
            Self::ArchiveFiles(dir, names) => {
                owned = names
                    .iter()
                    .map(|n| format!("{}/{n}", relative(dir)))
                    .collect();
                ["-c", "-f", "-", "-C", "/", "--"]
                    .into_iter()
                    .chain(owned.iter().map(String::as_str))
                    .collect()
            }
            // Byte offsets (GNU and BusyBox dd both take iflag=skip_bytes,count_bytes); the
            // path is an operand of its own, never parsed by a shell.
            Self::Read(FileSlice {
                dir,
                name,
                start,
                len,
            }) => {
                owned = vec![
                    format!("if={}/{name}", dir.path()),
                    format!("skip={start}"),
                    format!("count={len}"),
                ];
                vec![
                    owned[0].as_str(),
                    "iflag=skip_bytes,count_bytes",
                    owned[1].as_str(),
                    owned[2].as_str(),
                    "bs=65536",
                    "status=none",
                ]
            }
            // No --ignore-failed-read: a file that cannot be read must not be skipped silently.
            Self::Archive(dir) => vec!["-c", "-f", "-", "-C", "/", "--", relative(dir)],
            Self::List(dir) => stat_each(dir, "%s %Y %n"),
            Self::Inodes(dir) => stat_each(dir, "%i %s %n"),
            // From the first byte, following the descriptor (GNU and BusyBox `-f`): a rename
            // does not move the read to the new file.
            Self::Follow(dir, name) => {
                owned = vec![format!("{}/{name}", dir.path())];
                vec!["-c", "+1", "-f", "--", owned[0].as_str()]
            }
            Self::Remove(dir) => vec!["-rf", "--", dir.path()],
        };
        ["env", "LC_ALL=C", self.program()]
            .into_iter()
            .chain(args)
            .map(str::to_owned)
            .collect()
    }

    /// What the command's exit and stderr mean for its output.
    pub(crate) fn verdict(&self, exit: &verdict::Exit, stderr: &str) -> verdict::Verdict {
        match self {
            Self::Archive(dir) => verdict::archive(relative(dir), exit, stderr),
            Self::ArchiveFiles(dir, _) => verdict::archive(relative(dir), exit, stderr),
            Self::Read(_) => verdict::read(exit, stderr),
            Self::List(dir) | Self::Inodes(dir) => verdict::listing(dir.path(), exit, stderr),
            // It never ends by itself while it works: any end is the follower's to judge.
            Self::Remove(_) | Self::Follow(..) => verdict::removal(exit, stderr),
        }
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

    async fn start(&self, entry: &EntryPoint, command: &Command) -> Result<Exec> {
        let config = self.pods.config();
        Exec::start(
            &self.pods.cluster().client,
            config.namespace.as_str(),
            config.container.as_str(),
            entry,
            command.clone(),
        )
        .await
        .map_err(|e| node_error(&entry.node, command, e))
    }
}

pub(crate) fn node_error(
    node: &NodeName,
    command: &Command,
    e: Error,
) -> packetcapture_domain::Error {
    packetcapture_domain::Error::NodeFiles {
        node: node.to_string(),
        action: command.action(),
        source: Box::new(e),
    }
}

/// `find`'s arguments that `stat -c FORMAT` each regular file directly in `dir`.
fn stat_each<'a>(dir: &'a CaptureDir, format: &'static str) -> Vec<&'a str> {
    vec![
        dir.path(),
        "-mindepth",
        "1",
        "-maxdepth",
        "1",
        "-type",
        "f",
        "-exec",
        "stat",
        "-c",
        format,
        "{}",
        "+",
    ]
}

/// The capture directory without its leading `/`, as `tar -C /` takes and prints it.
fn relative(dir: &CaptureDir) -> &str {
    dir.path().trim_start_matches('/')
}

/// The lines of a `stat -c '%A %B %n'` listing: two numbers, then the path, of which the file's
/// name is the last part. `what` names the two numbers in errors.
fn stat_lines<'a, A: std::str::FromStr, B: std::str::FromStr>(
    out: &'a [u8],
    what: [&'static str; 2],
) -> std::result::Result<Vec<(A, B, &'a str)>, String> {
    let text = std::str::from_utf8(out).map_err(|_| "not UTF-8".to_owned())?;
    text.lines()
        .map(|line| {
            let mut fields = line.splitn(3, ' ');
            let (Some(a), Some(b), Some(path)) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!(
                    "line \"{line}\" is not {}, {} and path",
                    what[0], what[1]
                ));
            };
            let a = a
                .parse::<A>()
                .map_err(|_| format!("{} \"{a}\" of {path}", what[0]))?;
            let b = b
                .parse::<B>()
                .map_err(|_| format!("{} \"{b}\" of {path}", what[1]))?;
            let name = path.rsplit('/').next().filter(|n| !n.is_empty());
            let name = name.ok_or_else(|| format!("path \"{path}\" names no file"))?;
            Ok((a, b, name))
        })
        .collect()
}

/// `stat -c '%s %Y %n'` prints `size mtime path` per file.
fn parse_listing(out: &[u8]) -> std::result::Result<Vec<FileInfo>, String> {
    Ok(stat_lines::<u64, i64>(out, ["size", "time"])?
        .into_iter()
        .map(|(size, modified, name)| FileInfo {
            name: name.to_owned(),
            size,
            modified,
        })
        .collect())
}

#[async_trait]
impl FileFetcher for ExecFetcher {
    async fn entry_point(&self, node: &NodeName) -> Result<EntryPoint> {
        self.pods.find(node).await
    }

    async fn entry_points(&self, nodes: &[NodeName]) -> Result<Vec<EntryPoint>> {
        self.pods.find_all(nodes).await
    }

    async fn archive(&self, entry: &EntryPoint, set: &FileSet) -> Result<TarStream> {
        let command = match &set.names {
            None => Command::Archive(set.dir.clone()),
            Some(names) => Command::ArchiveFiles(set.dir.clone(), names.clone()),
        };
        Ok(Box::pin(self.start(entry, &command).await?.into_stream()))
    }

    async fn read_file(&self, entry: &EntryPoint, slice: &FileSlice) -> Result<ByteStream> {
        let command = Command::Read(slice.clone());
        Ok(Box::pin(self.start(entry, &command).await?.into_stream()))
    }

    async fn list(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<Vec<FileInfo>> {
        let command = Command::List(dir.clone());
        let mut exec = self.start(entry, &command).await?;
        let fail = |e: Error| node_error(&entry.node, &command, e);
        let out = exec.output(LIST_OUTPUT_LIMIT).await?;
        parse_listing(&out).map_err(|reason| {
            fail(Error::Parse {
                command: command.program(),
                pod: entry.handle.clone(),
                reason,
            })
        })
    }

    async fn remove(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<()> {
        let command = Command::Remove(dir.clone());
        let mut exec = self.start(entry, &command).await?;
        exec.output(LIST_OUTPUT_LIMIT).await?;
        Ok(())
    }

    async fn inodes(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<Vec<FileState>> {
        let command = Command::Inodes(dir.clone());
        let mut exec = self.start(entry, &command).await?;
        let out = exec.output(LIST_OUTPUT_LIMIT).await?;
        parse_inodes(&out).map_err(|reason| {
            node_error(
                &entry.node,
                &command,
                Error::Parse {
                    command: command.program(),
                    pod: entry.handle.clone(),
                    reason,
                },
            )
        })
    }

    async fn follow(
        &self,
        entry: &EntryPoint,
        dir: &CaptureDir,
        name: &BaseName,
    ) -> Result<ByteStream> {
        let command = Command::Follow(dir.clone(), name.clone());
        Ok(Box::pin(self.start(entry, &command).await?.into_stream()))
    }
}

/// `stat -c '%i %s %n'` prints `inode size path` per file.
fn parse_inodes(out: &[u8]) -> std::result::Result<Vec<FileState>, String> {
    Ok(stat_lines::<u64, u64>(out, ["inode", "size"])?
        .into_iter()
        .map(|(inode, size, name)| FileState {
            name: name.to_owned(),
            size,
            inode,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_listings_parse_and_bad_ones_are_refused() {
        let files = parse_inodes(b"77 12 /var/log/x/a.pcap\n78 0 /var/log/x/b c.pcap\n").unwrap();
        assert_eq!(
            files[0],
            FileState {
                name: "a.pcap".into(),
                size: 12,
                inode: 77
            }
        );
        assert_eq!(files[1].name, "b c.pcap");
        assert!(parse_inodes(b"x 1 /a\n").is_err());
        assert!(parse_inodes(b"1 1\n").is_err());
    }

    #[test]
    fn following_is_tail_from_the_first_byte_on_the_validated_path() {
        let capture = packetcapture_domain::CaptureRef::parse("dev", "cap").unwrap();
        let dir = CaptureDir::new("node-1", "/var/log/calico/pcap", &capture).unwrap();
        let name = BaseName::new("-f.pcap").unwrap();
        assert_eq!(
            Command::Follow(dir, name).argv(),
            [
                "env",
                "LC_ALL=C",
                "tail",
                "-c",
                "+1",
                "-f",
                "--",
                "/var/log/calico/pcap/dev/cap/-f.pcap"
            ]
        );
    }

    #[test]
    fn listing_output_parses_and_bad_output_is_refused() {
        let out = b"12 1700000000 /var/log/x/a.pcap\n0 17 /var/log/x/b c.pcap\n";
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
        assert!(parse_listing(b"x 1 /a\n").is_err());
        assert!(parse_listing(b"1 x /a\n").is_err());
        assert!(parse_listing(b"1 1\n").is_err());
        assert!(parse_listing(b"1 1 /dir/\n").is_err());
    }

    #[test]
    fn every_command_is_a_fixed_vector_around_the_validated_path() {
        let capture = packetcapture_domain::CaptureRef::parse("dev", "cap").unwrap();
        let dir = CaptureDir::new("node-1", "/var/log/calico/pcap", &capture).unwrap();
        let archive = Command::Archive(dir.clone()).argv();
        assert_eq!(archive[..3], ["env", "LC_ALL=C", "tar"]);
        assert_eq!(archive.last().unwrap(), "var/log/calico/pcap/dev/cap");
        assert!(
            !archive.iter().any(|a| a == "--ignore-failed-read"),
            "a file that cannot be read is never skipped"
        );
        assert_eq!(
            Command::Remove(dir.clone()).argv(),
            [
                "env",
                "LC_ALL=C",
                "rm",
                "-rf",
                "--",
                "/var/log/calico/pcap/dev/cap"
            ]
        );
        assert_eq!(
            Command::List(dir.clone()).argv()[3],
            "/var/log/calico/pcap/dev/cap"
        );
        assert_eq!(Command::Remove(dir.clone()).action(), "removing files");
        let names = vec![
            BaseName::new("a-1.pcap").unwrap(),
            BaseName::new("-rf").unwrap(),
        ];
        assert_eq!(
            Command::ArchiveFiles(dir.clone(), names.clone()).argv()[2..],
            [
                "tar",
                "-c",
                "-f",
                "-",
                "-C",
                "/",
                "--",
                "var/log/calico/pcap/dev/cap/a-1.pcap",
                "var/log/calico/pcap/dev/cap/-rf"
            ],
            "names after --, joined to the validated directory"
        );
        assert_eq!(
            Command::Read(FileSlice {
                dir,
                name: names[0].clone(),
                start: 5,
                len: 100
            })
            .argv()[2..],
            [
                "dd",
                "if=/var/log/calico/pcap/dev/cap/a-1.pcap",
                "iflag=skip_bytes,count_bytes",
                "skip=5",
                "count=100",
                "bs=65536",
                "status=none"
            ]
        );
    }
}
