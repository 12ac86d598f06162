//! One running exec: its stdout as a reader that fails at its end unless the exec's status
//! frame said Success, and the tail of its stderr for messages.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Api;
use kube::api::{AttachParams, AttachedProcess};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::{Command, Error};

/// Stdout buffered between the WebSocket and the reader (kube's default is 1 KiB).
const STDOUT_BUFFER: usize = 256 * 1024;
/// How much of stderr is kept for messages.
const STDERR_TAIL: usize = 2048;

/// The exit status as text, from a status frame; `None` for Success.
pub(crate) fn failure_reason(status: Option<&Status>) -> Option<String> {
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

/// A running exec: stdout as a reader that fails at its end unless the status was Success.
pub(crate) struct Running {
    program: &'static str,
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
    /// Starts `command` in `container` of `pod`.
    pub(crate) async fn start(
        api: &Api<Pod>,
        pod: &str,
        container: &str,
        command: &Command<'_>,
    ) -> Result<Self, Error> {
        let params = AttachParams::default()
            .container(container)
            .stdin(false)
            .stdout(true)
            .stderr(true)
            .max_stdout_buf_size(STDOUT_BUFFER);
        let argv = command.argv();
        let program = command.program();
        tracing::debug!(pod, ?argv, "exec");
        let mut process = api
            .exec(pod, argv, &params)
            .await
            .map_err(|source| Error::Start {
                command: program,
                pod: pod.to_owned(),
                source,
            })?;
        let missing = |what: &str| Error::Failed {
            command: program,
            pod: pod.to_owned(),
            reason: format!("the exec has no {what}"),
            stderr: String::new(),
        };
        let stdout = process.stdout().ok_or_else(|| missing("stdout"))?;
        let status = process.take_status().ok_or_else(|| missing("status"))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_task = process.stderr().map(|reader| {
            let tail = stderr.clone();
            tokio::spawn(keep_tail(reader, tail))
        });
        Ok(Running {
            program,
            pod: pod.to_owned(),
            stdout: Box::pin(stdout),
            status: Some(Box::pin(status)),
            stderr,
            stderr_task,
            _process: process,
            final_status: None,
            done: false,
        })
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// All of stderr, once it ended (or after a second: kube may leave it open on a lost link).
    pub(crate) async fn whole_stderr(&mut self) -> String {
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), task).await;
        }
        self.stderr()
    }

    /// Ends the stream: cleanly if the status said Success, else with an error read.
    fn finish(&mut self, status: Option<Status>) -> Poll<io::Result<()>> {
        self.done = true;
        match failure_reason(status.as_ref()) {
            None => {
                let stderr = self.stderr();
                if !stderr.trim().is_empty() {
                    tracing::debug!(pod = %self.pod, command = self.program, stderr = %stderr.trim(), "exec wrote to stderr");
                }
                Poll::Ready(Ok(()))
            }
            Some(reason) => {
                let err = Error::Failed {
                    command: self.program,
                    pod: self.pod.clone(),
                    reason,
                    stderr: self.stderr(),
                };
                Poll::Ready(Err(io::Error::other(err)))
            }
        }
    }
}

/// Keeps the last [`STDERR_TAIL`] bytes of a command's stderr.
async fn keep_tail(mut reader: impl AsyncRead + Unpin, tail: Arc<Mutex<String>>) {
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

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    use super::*;

    #[test]
    fn a_status_without_success_is_a_failure_naming_the_exit_code() {
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
