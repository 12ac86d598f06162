//! The fluentd-exec adapter: a capture's node files through exec in the node's entry pod.
//!
//! Boundary: the only code that runs commands. Every command is a fixed argument vector (no
//! shell) whose one variable part is a path validated by the domain ([`CaptureDir`]). An exec
//! counts as complete only when its status frame says Success; a tar stream whose exec failed
//! ends with an error read, never with a clean end of file.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Api;
use kube::api::{AttachParams, AttachedProcess};
use packetcapture_domain::{
    CaptureDir, EntryPoint, FileFetcher, FileInfo, NodeName, Result, TarStream,
};
use packetcapture_kubernetes::EntryPods;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Stdout buffered between the WebSocket and the reader (kube's default is 1 KiB).
const STDOUT_BUFFER: usize = 256 * 1024;
/// How much of stderr is kept for messages.
const STDERR_TAIL: usize = 2048;
/// The most a listing may print before it is refused.
const LIST_OUTPUT_LIMIT: u64 = 16 * 1024 * 1024;

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

/// The exit status as text, from a status frame.
fn failure_reason(status: Option<&Status>) -> Option<String> {
    match status {
        None => Some("the exec ended without a status (connection lost?)".into()),
        Some(s) if s.status.as_deref() == Some("Success") => None,
        Some(s) => {
            let code = s
                .details
                .as_ref()
                .and_then(|d| d.causes.as_ref())
                .and_then(|causes| {
                    causes
                        .iter()
                        .find(|c| c.reason.as_deref() == Some("ExitCode"))
                })
                .and_then(|c| c.message.as_ref())
                .map(|code| format!("exit code {code}"));
            let told = s
                .message
                .clone()
                .or_else(|| s.reason.clone())
                .unwrap_or_else(|| "failure".into());
            Some(code.unwrap_or(told))
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

    async fn start(
        &self,
        entry: &EntryPoint,
        command: &'static str,
        args: Vec<String>,
    ) -> Result<Running> {
        let config = self.pods.config();
        let cluster = self.pods.cluster();
        let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &config.namespace);
        let params = AttachParams::default()
            .container(config.container.clone())
            .stdin(false)
            .stdout(true)
            .stderr(true)
            .max_stdout_buf_size(STDOUT_BUFFER);
        let mut argv = vec![command.to_owned()];
        argv.extend(args);
        tracing::debug!(node = %entry.node, pod = %entry.handle, ?argv, "exec");
        let mut process = api
            .exec(&entry.handle, argv, &params)
            .await
            .map_err(|source| {
                node_error(
                    &entry.node,
                    action(command),
                    Error::Start {
                        command,
                        pod: entry.handle.clone(),
                        source,
                    },
                )
            })?;
        let stdout = process
            .stdout()
            .ok_or_else(|| packetcapture_domain::Error::Internal("exec without stdout".into()))?;
        let status = process
            .take_status()
            .ok_or_else(|| packetcapture_domain::Error::Internal("exec status taken".into()))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut stderr_task = None;
        if let Some(mut reader) = process.stderr() {
            let tail = stderr.clone();
            stderr_task = Some(tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = reader.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut t = tail
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    t.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if t.len() > STDERR_TAIL {
                        let cut = t.len() - STDERR_TAIL;
                        let cut = (cut..t.len())
                            .find(|i| t.is_char_boundary(*i))
                            .unwrap_or(t.len());
                        t.drain(..cut);
                    }
                }
            }));
        }
        Ok(Running {
            command,
            node: entry.node.clone(),
            pod: entry.handle.clone(),
            stdout: Box::pin(stdout),
            status: Some(Box::pin(status)),
            stderr,
            stderr_task,
            _process: process,
            final_status: None,
            done: false,
        })
    }
}

fn action(command: &str) -> &'static str {
    match command {
        "tar" => "reading files",
        "find" => "listing files",
        _ => "removing files",
    }
}

fn node_error(node: &NodeName, action: &'static str, e: Error) -> packetcapture_domain::Error {
    packetcapture_domain::Error::NodeFiles {
        node: node.to_string(),
        action,
        source: Box::new(e),
    }
}

/// A running exec: stdout as a reader that fails at its end unless the status was Success.
struct Running {
    command: &'static str,
    node: NodeName,
    pod: String,
    stdout: Pin<Box<dyn AsyncRead + Send>>,
    status: Option<Pin<Box<dyn Future<Output = Option<Status>> + Send>>>,
    stderr: Arc<Mutex<String>>,
    /// Collects stderr; done once the command's stderr ended.
    stderr_task: Option<tokio::task::JoinHandle<()>>,
    /// Kept so the exec lives as long as its reader; dropping it closes the exec.
    _process: AttachedProcess,
    /// The status, once it resolved before stdout ended.
    final_status: Option<Option<Status>>,
    done: bool,
}

impl Running {
    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// All of stderr, once it ended (or after a second: kube may leave it open on a lost link).
    async fn whole_stderr(&mut self) -> String {
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), task).await;
        }
        self.stderr()
    }
}

impl Running {
    /// Ends the stream: cleanly if the status said Success, else with an error read.
    fn finish(&mut self, status: Option<Status>) -> Poll<io::Result<()>> {
        self.done = true;
        match failure_reason(status.as_ref()) {
            None => {
                let stderr = self.stderr();
                if !stderr.trim().is_empty() {
                    tracing::debug!(node = %self.node, pod = %self.pod, command = self.command, stderr = %stderr.trim(), "exec wrote to stderr");
                }
                Poll::Ready(Ok(()))
            }
            Some(reason) => {
                let err = Error::Failed {
                    command: self.command,
                    pod: self.pod.clone(),
                    reason,
                    stderr: self.stderr(),
                };
                Poll::Ready(Err(io::Error::other(err)))
            }
        }
    }
}

impl AsyncRead for Running {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match self.stdout.as_mut().poll_read(cx, buf) {
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) if buf.filled().len() > before => return Poll::Ready(Ok(())),
            Poll::Ready(Ok(())) => {
                // End of stdout: the status decides whether that end is a clean one.
                let Some(status) = self.status.as_mut() else {
                    let status = self.final_status.take().flatten();
                    return self.finish(status);
                };
                let status = ready!(status.as_mut().poll(cx));
                self.status = None;
                return self.finish(status);
            }
            Poll::Pending => {}
        }
        // No data now. kube does not close stdout when the connection is lost, only the status
        // channel: once the status has resolved, everything sent before it is in the pipe, so
        // an empty pipe then is the end.
        if let Some(status) = self.status.as_mut() {
            let status = ready!(status.as_mut().poll(cx));
            self.status = None;
            self.final_status = Some(status);
            let before = buf.filled().len();
            match self.stdout.as_mut().poll_read(cx, buf) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if buf.filled().len() > before => return Poll::Ready(Ok(())),
                _ => {}
            }
        }
        let status = self.final_status.take().flatten();
        self.finish(status)
    }
}

/// The path without its leading `/`, for `tar -C /`.
fn relative(dir: &CaptureDir) -> String {
    dir.path().trim_start_matches('/').to_owned()
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

    async fn archive(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<TarStream> {
        // --ignore-failed-read: a directory that is gone is an empty archive (exit 0), and a
        // file still growing is archived up to its size at open (no "file changed" exit 1).
        let args = ["-c", "-f", "-", "--ignore-failed-read", "-C", "/", "--"].map(str::to_owned);
        let mut argv = args.to_vec();
        argv.push(relative(dir));
        Ok(Box::pin(self.start(entry, "tar", argv).await?))
    }

    async fn list(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<Vec<FileInfo>> {
        let argv = vec![
            dir.path().to_owned(),
            "-mindepth".into(),
            "1".into(),
            "-maxdepth".into(),
            "1".into(),
            "-type".into(),
            "f".into(),
            "-printf".into(),
            "%f\\0%s\\0%T@\\0".into(),
        ];
        let mut running = self.start(entry, "find", argv).await?;
        let mut out = Vec::new();
        let read = (&mut running)
            .take(LIST_OUTPUT_LIMIT + 1)
            .read_to_end(&mut out)
            .await;
        let fail = |e: Error| node_error(&entry.node, "listing files", e);
        if let Err(e) = read {
            // find says so when the directory does not exist: no files there.
            let stderr = running.whole_stderr().await;
            if stderr.contains("No such file or directory") && stderr.contains(dir.path()) {
                return Ok(Vec::new());
            }
            return Err(fail(Error::Output {
                command: "find",
                pod: entry.handle.clone(),
                source: e,
            }));
        }
        if out.len() as u64 > LIST_OUTPUT_LIMIT {
            return Err(fail(Error::Parse {
                command: "find",
                pod: entry.handle.clone(),
                reason: "output too large".into(),
            }));
        }
        parse_listing(&out).map_err(|reason| {
            fail(Error::Parse {
                command: "find",
                pod: entry.handle.clone(),
                reason,
            })
        })
    }

    async fn remove(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<()> {
        let argv = vec!["-rf".into(), "--".into(), dir.path().to_owned()];
        let mut running = self.start(entry, "rm", argv).await?;
        let mut sink = Vec::new();
        running.read_to_end(&mut sink).await.map_err(|e| {
            node_error(
                &entry.node,
                "removing files",
                Error::Output {
                    command: "rm",
                    pod: entry.handle.clone(),
                    source: e,
                },
            )
        })?;
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
    fn a_status_without_success_is_a_failure_naming_the_exit_code() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};
        let failed = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("2".into()),
                    field: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            failure_reason(Some(&failed)).as_deref(),
            Some("exit code 2")
        );
        let ok = Status {
            status: Some("Success".into()),
            ..Default::default()
        };
        assert_eq!(failure_reason(Some(&ok)), None);
        assert!(failure_reason(None).is_some());
    }
}
