//! One exec, read straight off its WebSocket: stdout frames become chunks without a copy,
//! stderr is kept (its tail) for messages, and the status frame decides how the stream ends:
//! cleanly after a Success, with an error item after anything else, a lost connection
//! included.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::AttachParams;
use packetcapture_domain::archive::{TarEvent, TarParser};
use packetcapture_domain::{EntryPoint, NodeName};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::verdict::{Exit, Verdict};
use crate::{Command, Error};

/// How much of stderr is kept for messages.
const STDERR_TAIL: usize = 2048;
/// Exec channels.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;

type Socket = tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// How the command ended, from its status frame (`None`: there was none).
pub(crate) fn exit_of(status: Option<&Status>) -> Exit {
    match status {
        None => Exit::Failed("the exec ended without a status (connection lost?)".into()),
        Some(s) if s.status.as_deref() == Some("Success") => Exit::Success,
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
                .and_then(|code| code.parse::<i32>().ok());
            match code {
                Some(code) => Exit::Code(code),
                None => Exit::Failed(
                    s.message
                        .clone()
                        .or_else(|| s.reason.clone())
                        .unwrap_or_else(|| "failure".into()),
                ),
            }
        }
    }
}

/// The WebSocket's buffers: frames are at most 32 KiB (kube-apiserver's), so a small read
/// buffer is enough; tungstenite's default reserves 128 KiB per socket, and every open node
/// stream has one.
fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
}

/// Bytes the WebSocket reads at once (a frame larger than this is read in more reads).
const READ_BUFFER: usize = 4 * 1024;

/// Opens the exec's WebSocket as kube-rs's `Client::connect` does (the upgrade headers, a
/// refusal as the API server's `Status`, the accept key and subprotocol checked), with this
/// adapter's buffer sizes.
async fn upgrade(
    client: &kube::Client,
    request: http::Request<Vec<u8>>,
) -> Result<Socket, kube::Error> {
    use http::header::{self, HeaderValue};
    use kube::client::UpgradeConnectionError as Upgrade;
    use tokio_tungstenite::tungstenite::handshake;
    let (mut parts, body) = request.into_parts();
    let key = handshake::client::generate_key();
    let h = &mut parts.headers;
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
    );
    let accept = handshake::derive_accept_key(key.as_bytes());
    h.insert(
        header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(&key).map_err(|e| {
            kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e.into()))
        })?,
    );
    let response = client
        .send(http::Request::from_parts(
            parts,
            kube::client::Body::from(body),
        ))
        .await?;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        use http_body_util::BodyExt;
        let bytes = response.into_body().collect().await?.to_bytes();
        let refusal = serde_json::from_slice::<kube::core::Status>(&bytes).unwrap_or_else(|_| {
            kube::core::Status::failure(String::from_utf8_lossy(&bytes).trim(), "")
                .with_code(status.as_u16())
        });
        return Err(kube::Error::Api(refusal.boxed()));
    }
    if status != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(kube::Error::UpgradeConnection(Upgrade::ProtocolSwitch(
            status,
        )));
    }
    let headers = response.headers();
    let is = |name: header::HeaderName, value: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case(value))
    };
    if !is(header::UPGRADE, "websocket") {
        return Err(kube::Error::UpgradeConnection(
            Upgrade::MissingUpgradeWebSocketHeader,
        ));
    }
    if !is(header::CONNECTION, "upgrade") {
        return Err(kube::Error::UpgradeConnection(
            Upgrade::MissingConnectionUpgradeHeader,
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_ACCEPT)
        .map(HeaderValue::as_bytes)
        != Some(accept.as_bytes())
    {
        return Err(kube::Error::UpgradeConnection(
            Upgrade::SecWebSocketAcceptKeyMismatch,
        ));
    }
    if !is(header::SEC_WEBSOCKET_PROTOCOL, "v5.channel.k8s.io")
        && !is(header::SEC_WEBSOCKET_PROTOCOL, "v4.channel.k8s.io")
    {
        return Err(kube::Error::UpgradeConnection(
            Upgrade::SecWebSocketProtocolMismatch,
        ));
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| kube::Error::UpgradeConnection(Upgrade::GetPendingUpgrade(e)))?;
    Ok(tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        Some(websocket_config()),
    )
    .await)
}

/// A running exec.
pub(crate) struct Exec {
    /// For a tar stream: which file it is in, for a tool that does not name the file it could
    /// not read whole.
    tar: Option<TarParser>,
    current_file: Option<String>,
    command: Command,
    node: NodeName,
    program: &'static str,
    pod: String,
    socket: Socket,
    stderr: String,
    done: bool,
}

impl Exec {
    /// Starts `command` in `container` of the entry pod in `namespace`.
    pub(crate) async fn start(
        client: &kube::Client,
        namespace: &str,
        container: &str,
        entry: &EntryPoint,
        command: Command,
    ) -> Result<Self, Error> {
        let pod = entry.handle.as_str();
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
        let socket = upgrade(client, request).await.map_err(start)?;
        let tar =
            matches!(command, Command::Archive(_) | Command::ArchiveFiles(..)).then(TarParser::new);
        Ok(Self {
            tar,
            current_file: None,
            command,
            node: entry.node.clone(),
            program,
            pod: pod.to_owned(),
            socket,
            stderr: String::new(),
            done: false,
        })
    }

    /// The next stdout chunk; `None` after a Success status, an error after anything else.
    async fn next_chunk(&mut self) -> Option<packetcapture_domain::Result<Bytes>> {
        if self.done {
            return None;
        }
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Binary(frame))) if frame.len() > 1 => match frame[0] {
                    STDOUT => {
                        let chunk = frame.slice(1..);
                        self.follow(chunk.clone());
                        return Some(Ok(chunk));
                    }
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
                    return Some(Err(self.failed(Error::Output {
                        command: self.program,
                        pod: self.pod.clone(),
                        source: std::io::Error::other(e),
                    })));
                }
            }
        }
    }

    /// How the stream ends, given the status (`None`: there was none): as the command's
    /// verdict on its exit and stderr says.
    fn end(&self, status: Option<&Status>) -> Option<packetcapture_domain::Result<Bytes>> {
        let exit = exit_of(status);
        match self.command.verdict(&exit, &self.stderr) {
            Verdict::Whole => {
                if !self.stderr.trim().is_empty() {
                    tracing::debug!(pod = %self.pod, command = self.program, %exit, stderr = %self.stderr.trim(), "exec wrote to stderr");
                }
                None
            }
            Verdict::LeftOut(files) => {
                let files: Vec<&str> = files
                    .iter()
                    .map(|f| f.rsplit('/').next().unwrap_or(f))
                    .collect();
                tracing::warn!(node = %self.node, pod = %self.pod, ?files, "files of the capture are gone from their node (removed after the capture's status listed them): left out");
                None
            }
            Verdict::ShortRead => match &self.current_file {
                Some(file) => Some(Err(self.unreadable(file, "it shrank while it was read"))),
                None => Some(Err(self.failed(Error::Failed {
                    command: self.program,
                    pod: self.pod.clone(),
                    reason: format!("{exit}: a file shrank while it was read (short read)"),
                    stderr: String::new(),
                }))),
            },
            Verdict::FileUnreadable { file, reason } => Some(Err(self.unreadable(&file, &reason))),
            Verdict::Failed { reason } => Some(Err(self.failed(Error::Failed {
                command: self.program,
                pod: self.pod.clone(),
                reason,
                stderr: String::new(),
            }))),
        }
    }

    /// The exec's failure as the domain reports a node's: the node, what was being done, and
    /// why.
    fn failed(&self, e: Error) -> packetcapture_domain::Error {
        crate::node_error(&self.node, &self.command, e)
    }

    /// The error for a file that could not be read whole (named by its base name).
    fn unreadable(&self, file: &str, reason: &str) -> packetcapture_domain::Error {
        let file = file.rsplit('/').next().unwrap_or(file).to_owned();
        packetcapture_domain::Error::FileUnreadable {
            node: self.node.to_string(),
            file,
            reason: reason.to_owned(),
        }
    }

    /// Keeps track of the file a tar stream is in (its headers only; data is not copied).
    fn follow(&mut self, mut chunk: Bytes) {
        let Some(tar) = self.tar.as_mut() else {
            return;
        };
        loop {
            match tar.next(&mut chunk) {
                Ok(Some(TarEvent::File { path, .. })) => {
                    self.current_file = Some(String::from_utf8_lossy(&path).into_owned());
                }
                Ok(Some(TarEvent::FileEnd | TarEvent::End)) => self.current_file = None,
                Ok(Some(TarEvent::Data(_))) => {}
                Ok(None) => return,
                Err(_) => {
                    // The engine's own parser reports a malformed stream; nothing to follow.
                    self.tar = None;
                    return;
                }
            }
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

    /// Stdout as a stream of chunks (the exec closes when it is dropped).
    pub(crate) fn into_stream(
        self,
    ) -> impl Stream<Item = packetcapture_domain::Result<Bytes>> + Send {
        futures_util::stream::unfold(self, |mut exec| async move {
            let chunk = exec.next_chunk().await?;
            Some((chunk, exec))
        })
    }

    /// All of stdout, up to `limit` bytes (more is an error); the exec must succeed.
    pub(crate) async fn output(&mut self, limit: usize) -> packetcapture_domain::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk().await {
            out.extend_from_slice(&chunk?);
            if out.len() > limit {
                return Err(self.failed(Error::Parse {
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
    fn a_status_frame_gives_the_exit_code() {
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
        assert_eq!(exit_of(Some(&failed)), Exit::Code(2));
        let ok = Status {
            status: Some("Success".into()),
            ..Default::default()
        };
        assert_eq!(exit_of(Some(&ok)), Exit::Success);
        assert!(matches!(exit_of(None), Exit::Failed(_)));
    }
}
