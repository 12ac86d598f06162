//! One exec, read straight off its WebSocket: stdout frames become chunks without a copy,
//! stderr is kept (its tail) for messages, and the status frame decides how the stream ends:
//! cleanly after a Success, with an error item after anything else, a lost connection
//! included.

use std::io;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::AttachParams;
use tokio_tungstenite::tungstenite::Message;

use crate::{Command, Error};

/// How much of stderr is kept for messages.
const STDERR_TAIL: usize = 2048;
/// Exec channels.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;

type Socket = tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

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

/// A running exec.
pub(crate) struct Exec {
    program: &'static str,
    pod: String,
    socket: Socket,
    stderr: String,
    done: bool,
}

impl Exec {
    /// Starts `command` in `container` of `pod` in `namespace`.
    pub(crate) async fn start(
        client: &kube::Client,
        namespace: &str,
        pod: &str,
        container: &str,
        command: &Command<'_>,
    ) -> Result<Self, Error> {
        let program = command.program();
        let params = AttachParams::default()
            .container(container)
            .stdin(false)
            .stdout(true)
            .stderr(true);
        let argv = command.argv();
        tracing::debug!(pod, ?argv, "exec");
        let start = |source| Error::Start {
            command: program,
            pod: pod.to_owned(),
            source,
        };
        let pods = <Pod as kube::Resource>::url_path(&(), Some(namespace));
        let request = kube::core::Request::new(pods)
            .exec(pod, argv, &params)
            .map_err(|e| start(kube::Error::BuildRequest(e)))?;
        let socket = client.connect(request).await.map_err(start)?.into_stream();
        Ok(Self {
            program,
            pod: pod.to_owned(),
            socket,
            stderr: String::new(),
            done: false,
        })
    }

    /// The next stdout chunk; `None` after a Success status, an error after anything else.
    async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        if self.done {
            return None;
        }
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Binary(frame))) if frame.len() > 1 => match frame[0] {
                    STDOUT => return Some(Ok(frame.slice(1..))),
                    STDERR => self.keep_stderr(&frame[1..]),
                    STATUS => {
                        self.done = true;
                        let status = serde_json::from_slice::<Status>(&frame[1..]).ok();
                        return self.end(status.as_ref());
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None => {
                    self.done = true;
                    return self.end(None);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(io::Error::other(Error::Output {
                        command: self.program,
                        pod: self.pod.clone(),
                        source: io::Error::other(e),
                    })));
                }
            }
        }
    }

    /// How the stream ends, given the status (`None`: there was none).
    fn end(&self, status: Option<&Status>) -> Option<io::Result<Bytes>> {
        match failure_reason(status) {
            None => {
                if !self.stderr.trim().is_empty() {
                    tracing::debug!(pod = %self.pod, command = self.program, stderr = %self.stderr.trim(), "exec wrote to stderr");
                }
                None
            }
            Some(reason) => Some(Err(io::Error::other(Error::Failed {
                command: self.program,
                pod: self.pod.clone(),
                reason,
                stderr: self.stderr.clone(),
            }))),
        }
    }

    fn keep_stderr(&mut self, data: &[u8]) {
        let t = &mut self.stderr;
        t.push_str(&String::from_utf8_lossy(data));
        if t.len() > STDERR_TAIL {
            let cut = t.len() - STDERR_TAIL;
            let cut = (cut..t.len())
                .find(|i| t.is_char_boundary(*i))
                .unwrap_or(t.len());
            t.drain(..cut);
        }
    }

    /// What the command wrote to stderr (its tail).
    pub(crate) fn stderr(&self) -> &str {
        &self.stderr
    }

    /// Stdout as a stream of chunks (the exec closes when it is dropped).
    pub(crate) fn into_stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send {
        futures_util::stream::unfold(self, |mut exec| async move {
            let chunk = exec.next_chunk().await?;
            Some((chunk, exec))
        })
    }

    /// All of stdout, up to `limit` bytes (more is an error); the exec must succeed.
    pub(crate) async fn output(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk().await {
            out.extend_from_slice(&chunk?);
            if out.len() > limit {
                return Err(io::Error::other(Error::Parse {
                    command: self.program,
                    pod: self.pod.clone(),
                    reason: format!("more than {limit} bytes of output"),
                }));
            }
        }
        Ok(out)
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
