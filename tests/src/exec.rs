//! Exec over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`), running the real command.
//!
//! The command runs without a shell, with the entry pod's node directory standing in for the
//! pod's file system: absolute paths in its arguments are mapped under the node's directory
//! (for `tar`, an absolute member becomes `-C {node} relative`, so member names are what a real
//! `tar` in the pod writes), and the node's directory is taken out of what it prints on stderr
//! (and on stdout for the listing programs), so messages name the pod's paths.
//!
//! Framing as kube-apiserver's stream translator sends it (recorded from a real one): an empty
//! stdout frame first, stdout in frames of at most 32 KiB, stderr as it comes, one channel-3
//! `Status` (`command terminated with exit code N`; a command that cannot start is an
//! `InternalError` with code 500), then close 1000 with an empty reason; no pings. The socket
//! is read all along (pings are answered, a client leaving kills the command).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::cluster::Cluster;
use crate::http::{Body, full, status};

/// Programs an exec may run (also the BusyBox applets linked when the `busybox` knob is on).
pub const ALLOWED: &[&str] = &[
    "tar",
    "find",
    "rm",
    "ls",
    "cat",
    "stat",
    "sha256sum",
    "du",
    "sleep",
    "echo",
    "true",
    "env",
    "dd",
    "tail",
    "head",
    "test",
];

/// A command as it runs in the simulation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// The program's name.
    pub program: String,
    /// Its arguments, paths mapped under the node's directory.
    pub args: Vec<String>,
    /// Variables set by a leading `env NAME=VALUE...`.
    pub env: Vec<(String, String)>,
    /// The directory the command works on, when it names one (tar's member, rm's path): where
    /// the `shrinkAfter` knob truncates files.
    pub target: Option<PathBuf>,
}

/// Subprotocols, in order of preference.
const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// The largest stdout frame kube-apiserver's stream translator sends (data bytes).
pub const MAX_FRAME: usize = 32 * 1024;

/// Programs whose stdout is text naming paths (the node's directory is taken out of it).
const LISTINGS: &[&str] = &["find", "stat", "ls", "du", "sha256sum"];

/// Why a command cannot be mapped into the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unmapped {
    /// No command at all.
    Empty,
    /// The program is not in the pod: the container runtime refuses to start it.
    NotFound(String),
    /// `env` was asked to run a program the pod does not have: `env` exits 127.
    EnvNotFound(String),
}

/// Maps a command's arguments into the node's directory; the program must be allowed. A
/// leading `env NAME=VALUE...` sets variables for the command (as `env` itself would).
pub fn map_command(root: &Path, argv: &[String]) -> Result<Mapped, Unmapped> {
    let mut env = Vec::new();
    let mut argv = argv;
    let mut through_env = false;
    if argv
        .first()
        .is_some_and(|p| p.rsplit('/').next() == Some("env"))
    {
        through_env = true;
        argv = &argv[1..];
        while let Some((name, value)) = argv.first().and_then(|a| a.split_once('=')) {
            env.push((name.to_owned(), value.to_owned()));
            argv = &argv[1..];
        }
    }
    let (program, args, target) = map_program(root, argv).map_err(|e| match e {
        Unmapped::NotFound(p) if through_env => Unmapped::EnvNotFound(p),
        e => e,
    })?;
    Ok(Mapped {
        program,
        args,
        env,
        target,
    })
}

fn map_program(
    root: &Path,
    argv: &[String],
) -> Result<(String, Vec<String>, Option<PathBuf>), Unmapped> {
    let program = argv.first().ok_or(Unmapped::Empty)?;
    let name = program.rsplit('/').next().unwrap_or(program);
    if !ALLOWED.contains(&name) {
        return Err(Unmapped::NotFound(program.clone()));
    }
    let under = |p: &str| match p.trim_start_matches('/') {
        "" => root.display().to_string(),
        rel => root.join(rel).display().to_string(),
    };
    let mut args = Vec::new();
    let mut target = None;
    let rest = &argv[1..];
    if name == "tar" {
        // `dir` is the directory the pod's tar would be in; `effective` the one our -C set.
        let mut dir = root.display().to_string();
        let mut effective = dir.clone();
        let mut i = 0;
        while i < rest.len() {
            let a = &rest[i];
            if (a == "-C" || a == "--directory" || a == "-f" || a == "--file") && i + 1 < rest.len()
            {
                let value = &rest[i + 1];
                let mapped = if value.starts_with('/') {
                    under(value)
                } else {
                    value.clone()
                };
                if a == "-C" || a == "--directory" {
                    dir = if value.starts_with('/') {
                        mapped.clone()
                    } else {
                        format!("{dir}/{value}")
                    };
                    effective = dir.clone();
                }
                args.push(a.clone());
                args.push(mapped);
                i += 2;
                continue;
            }
            if let Some(value) = a.strip_prefix("--directory=") {
                dir = if value.starts_with('/') {
                    under(value)
                } else {
                    format!("{dir}/{value}")
                };
                effective = dir.clone();
                args.push(format!("--directory={dir}"));
            } else if a.starts_with('/') {
                // An absolute member: archived relative to the pod's root, as tar itself does.
                let top = root.display().to_string();
                if effective != top {
                    args.extend(["-C".to_owned(), top.clone()]);
                    effective = top;
                }
                target = Some(root.join(a.trim_start_matches('/')));
                args.push(a.trim_start_matches('/').to_owned());
            } else {
                if !a.starts_with('-') && effective != dir {
                    args.extend(["-C".to_owned(), dir.clone()]);
                    effective = dir.clone();
                }
                if !a.starts_with('-') {
                    target = Some(Path::new(&dir).join(a));
                }
                args.push(a.clone());
            }
            i += 1;
        }
    } else {
        // Absolute paths, and dd's `if=/path`, are under the node's directory.
        let path_of = |a: &str| -> Option<String> {
            if a.starts_with('/') {
                Some(a.to_owned())
            } else if name == "dd" {
                a.strip_prefix("if=")
                    .filter(|p| p.starts_with('/'))
                    .map(str::to_owned)
            } else {
                None
            }
        };
        args = rest
            .iter()
            .map(|a| match (path_of(a), a.starts_with("if=")) {
                (Some(p), true) => format!("if={}", under(&p)),
                (Some(p), false) => under(&p),
                (None, _) => a.clone(),
            })
            .collect();
        target = rest
            .iter()
            .rev()
            .find_map(|a| path_of(a))
            .map(|a| PathBuf::from(under(&a)));
    }
    Ok((name.to_owned(), args, target))
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Handles an exec request: checks, upgrades, runs.
pub async fn handle(
    cluster: Arc<Cluster>,
    node: String,
    params: Vec<(String, String)>,
    req: Request<Incoming>,
) -> Response<Body> {
    let container = params
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.clone());
    if let Some(c) = &container
        && *c != cluster.entry.container
    {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "container {c} is not valid for pod {}",
                cluster.entry_pod_name(&node)
            ),
        );
    }
    let command: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least 1 command",
        );
    }
    let upgrade = header(&req, "upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let Some(key) = header(&req, "sec-websocket-key")
        .map(str::to_owned)
        .filter(|_| upgrade)
    else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Upgrade request required",
        );
    };
    let offered: Vec<String> = header(&req, "sec-websocket-protocol")
        .unwrap_or("")
        .split(',')
        .map(|p| p.trim().to_owned())
        .collect();
    let Some(protocol) = PROTOCOLS.iter().find(|p| offered.iter().any(|o| o == *p)) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "no supported exec subprotocol (v5.channel.k8s.io, v4.channel.k8s.io)",
        );
    };
    let wants = |name: &str, default: bool| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v == "true" || v == "1")
            .unwrap_or(default)
    };
    let streams = Streams {
        stdout: wants("stdout", true),
        stderr: wants("stderr", true),
    };
    let root = cluster.node_root.join(&node);
    let mapped = map_command(&root, &command);
    let kubelet = cluster.kubelet_address(&node);
    let unreachable = cluster.faults().kubelet_down.contains(&node).then(|| {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(command.iter().map(|c| ("command", c.as_str())))
            .append_pair("error", "1")
            .append_pair("output", "1")
            .finish();
        let pod = cluster.entry_pod_name(&node);
        let dial = format!("dial tcp {kubelet}:10250: connect: connection refused");
        (
            format!(
                "error sending request: Post \"https://{kubelet}:10250/exec/{}/{pod}/{}?{query}\": {dial}",
                cluster.entry.namespace, cluster.entry.container
            ),
            dial,
        )
    });
    if let Some((_, dial)) = &unreachable
        && *protocol != PROTOCOLS[0]
    {
        // Without the stream translator (v4 only) the API server dials the kubelet before it
        // upgrades: a plain 500, with no reason.
        return crate::http::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &crate::http::status_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                &format!("error dialing backend: {dial}"),
                None,
            ),
        );
    }
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let counted = Counted::start(&cluster);
        match unreachable {
            Some((message, _)) => {
                let (mut sink, _) = ws.split();
                let _ = sink.send(frame(1, &[])).await;
                end(&mut sink, internal_error(&message), &counted).await;
            }
            None => run(ws, &cluster, &node, root, mapped, streams, &counted).await,
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        "sec-websocket-accept",
        derive_accept_key(key.as_bytes())
            .parse()
            .expect("a header value"),
    );
    h.insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_static(protocol),
    );
    r
}

/// Cuts every regular file under `dir` to 1000 bytes (the `shrinkAfter` knob).
fn shrink_files(target: &Path) {
    // A command that names files (tar of members, dd) shrinks its file's directory.
    let dir = if target.is_file() {
        target.parent().unwrap_or(target)
    } else {
        target
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file())
            && let Ok(file) = std::fs::OpenOptions::new().write(true).open(entry.path())
        {
            let _ = file.set_len(1000);
        }
    }
}

/// Which output streams the client asked for.
#[derive(Clone, Copy)]
struct Streams {
    stdout: bool,
    stderr: bool,
}

/// The writing half of an exec's WebSocket.
type Sink =
    futures_util::stream::SplitSink<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>, Message>;

/// Sends the status frame, then a normal close, as the API server ends an exec.
/// An exec counted in [`Cluster::running_execs`] from its upgrade until its command is over:
/// ended when its status frame is about to go (a client that starts its next exec on reading
/// the status is never counted twice), or when it is dropped.
struct Counted<'a> {
    cluster: &'a Cluster,
    ended: std::sync::atomic::AtomicBool,
}

impl<'a> Counted<'a> {
    fn start(cluster: &'a Cluster) -> Self {
        cluster.exec_started();
        Self {
            cluster,
            ended: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn end(&self) {
        if !self.ended.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.cluster.exec_ended();
        }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.end();
    }
}

async fn end(sink: &mut Sink, status: Message, counted: &Counted<'_>) {
    counted.end();
    let _ = sink.send(status).await;
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// The status frame for a command that ran and exited with `code`.
fn exit_frame(code: i32) -> Message {
    let status = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({"metadata": {}, "status": "Failure",
               "message": format!("command terminated with non-zero exit code: command terminated with exit code {code}"),
               "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    };
    frame(3, status.to_string().as_bytes())
}

/// The status frame of an error the API server reports itself (`InternalError`, code 500):
/// the cause is the error, the message says "Internal error occurred: " before it.
fn internal_error(cause: &str) -> Message {
    let status = json!({"metadata": {}, "status": "Failure", "message": format!("Internal error occurred: {cause}"),
                        "reason": "InternalError", "details": {"causes": [{"message": cause}]}, "code": 500});
    frame(3, status.to_string().as_bytes())
}

/// The status frame for a command the container runtime could not start.
fn cannot_start(program: &str, why: &str) -> Message {
    internal_error(&format!(
        "Internal error occurred: error executing command in container: exec: \"{program}\": {why}"
    ))
}

/// `text` with every occurrence of the node's directory taken out, so paths read as the pod's.
fn in_pod(text: &[u8], root: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.windows(root.len()).position(|w| w == root) {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at + root.len()..];
    }
    out.extend_from_slice(rest);
    out
}

async fn run(
    ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    cluster: &Cluster,
    node: &str,
    root: PathBuf,
    mapped: Result<Mapped, Unmapped>,
    streams: Streams,
    counted: &Counted<'_>,
) {
    let (mut sink, mut stream) = ws.split();
    // kube-apiserver's translator opens every exec with an empty stdout frame.
    if sink.send(frame(1, &[])).await.is_err() {
        return;
    }
    // Read all along: answers pings, and notices a client that leaves.
    let (gone_tx, mut gone) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = gone_tx.send(true);
    });
    let faults = cluster.faults().on_node(node);
    let Mapped {
        program,
        args,
        env,
        target,
    } = match mapped {
        Ok(m) => m,
        Err(unmapped) => {
            let status = match unmapped {
                Unmapped::Empty => internal_error("you must specify at least 1 command"),
                Unmapped::NotFound(p) => cannot_start(&p, "executable file not found in $PATH"),
                Unmapped::EnvNotFound(p) => {
                    let _ = sink
                        .send(frame(
                            2,
                            format!("env: '{p}': No such file or directory\n").as_bytes(),
                        ))
                        .await;
                    exit_frame(127)
                }
            };
            end(&mut sink, status, counted).await;
            reader.abort();
            return;
        }
    };
    // The entry pod's tools: GNU's from the system, or BusyBox applets only.
    let (path, executable) = match (&cluster.busybox_bin, faults.busybox) {
        (Some(bin), true) => (bin.display().to_string(), bin.join(&program)),
        (None, true) => {
            let why = "the busybox knob is on but busybox is not installed";
            end(&mut sink, cannot_start(&program, why), counted).await;
            reader.abort();
            return;
        }
        (_, false) => (
            "/usr/local/bin:/usr/bin:/bin".to_owned(),
            PathBuf::from(&program),
        ),
    };
    let mut command = tokio::process::Command::new(&executable);
    command
        .args(&args)
        .current_dir(&root)
        .env_clear()
        .env("PATH", path)
        .env("LC_ALL", "C")
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(uid) = faults.run_as_uid {
        command.uid(uid).gid(uid);
    }
    let child = command.spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            end(&mut sink, cannot_start(&program, &e.to_string()), counted).await;
            reader.abort();
            return;
        }
    };
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (mut out_open, mut err_open) = (true, true);
    // Under a bandwidth cap, small frames keep the stream smooth rather than bursty.
    let mut out_buf = vec![
        0u8;
        if faults.exec_bandwidth.is_some() {
            8 * 1024
        } else {
            MAX_FRAME
        }
    ];
    let root_text = root.display().to_string().into_bytes();
    let listing = LISTINGS.contains(&program.as_str());
    let mut err_buf = vec![0u8; 8 * 1024];
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut shrunk = false;
    while out_open || err_open {
        if faults.exec_stall_after.is_some_and(|stall| sent >= stall) {
            // Stalled: nothing more is sent, the connection stays open until the client leaves.
            let _ = gone.changed().await;
            drop(child);
            return;
        }
        if let (Some(after), Some(dir), false) = (faults.shrink_after, &target, shrunk)
            && sent >= after
        {
            shrunk = true;
            shrink_files(dir);
        }
        tokio::select! {
            _ = gone.changed() => {
                // The client left: the command dies with the connection.
                drop(child);
                return;
            }
            n = stdout.read(&mut out_buf), if out_open => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(mut n) => {
                    // A frame carries what the command has written by now, up to the frame
                    // size (as the API server's copy from the kubelet's stream does), not one
                    // pipe read: fill on while more is ready at once.
                    while n < out_buf.len() {
                        match stdout.read(&mut out_buf[n..]).now_or_never() {
                            Some(Ok(more)) if more > 0 => n += more,
                            _ => break,
                        }
                    }
                    let mut chunk = &out_buf[..n];
                    if let Some(cut) = faults.exec_cut_after
                        && sent + chunk.len() as u64 >= cut
                    {
                        chunk = &chunk[..(cut - sent.min(cut)) as usize];
                        if !chunk.is_empty() {
                            let _ = sink.send(frame(1, chunk)).await;
                        }
                        // Cut: no status, no close frame; the connection just ends.
                        drop(child);
                        reader.abort();
                        return;
                    }
                    if streams.stdout {
                        let message = if listing {
                            frame(1, &in_pod(chunk, &root_text))
                        } else {
                            frame(1, chunk)
                        };
                        if sink.send(message).await.is_err() {
                            return;
                        }
                        cluster
                            .exec_stdout_bytes
                            .fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    }
                    sent += chunk.len() as u64;
                    if let Some(rate) = faults.exec_bandwidth.filter(|r| *r > 0) {
                        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            },
            n = stderr.read(&mut err_buf), if err_open => match n {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => {
                    let text = in_pod(&err_buf[..n], &root_text);
                    if streams.stderr && sink.send(frame(2, &text)).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
    let code = match child.wait().await {
        Ok(s) => s.code().unwrap_or(137),
        Err(_) => 137,
    };
    // Listings keep their own status: the knob stands for a tool failing on the files it reads.
    let code = if LISTINGS.contains(&program.as_str()) {
        code
    } else {
        faults.exec_exit_status.unwrap_or(code)
    };
    end(&mut sink, exit_frame(code), counted).await;
    // Give the client a moment to answer the close, then drop the connection.
    let _ = tokio::time::timeout(Duration::from_secs(2), gone.changed()).await;
    reader.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn tar_members_and_directories_map_under_the_node() {
        let root = Path::new("/sim/n1");
        let Mapped {
            program: p,
            args: a,
            ..
        } = map_command(
            root,
            &s(&[
                "tar",
                "-c",
                "-f",
                "-",
                "--ignore-failed-read",
                "-C",
                "/",
                "--",
                "var/log/x",
            ]),
        )
        .unwrap();
        assert_eq!(p, "tar");
        assert_eq!(
            a,
            s(&[
                "-c",
                "-f",
                "-",
                "--ignore-failed-read",
                "-C",
                "/sim/n1",
                "--",
                "var/log/x"
            ])
        );
        let m = map_command(root, &s(&["tar", "cf", "-", "/var/log/x"])).unwrap();
        assert_eq!(m.args, s(&["cf", "-", "var/log/x"]));
        assert_eq!(m.target, Some(PathBuf::from("/sim/n1/var/log/x")));
        let Mapped { args: a, .. } = map_command(
            root,
            &s(&["tar", "cf", "-", "-C", "/data", "a", "/etc/b", "c"]),
        )
        .unwrap();
        assert_eq!(
            a,
            s(&[
                "cf",
                "-",
                "-C",
                "/sim/n1/data",
                "a",
                "-C",
                "/sim/n1",
                "etc/b",
                "-C",
                "/sim/n1/data",
                "c"
            ])
        );
        let m = map_command(root, &s(&["/bin/rm", "-rf", "--", "/var/log/x"])).unwrap();
        assert_eq!(m.args, s(&["-rf", "--", "/sim/n1/var/log/x"]));
        let m = map_command(
            root,
            &s(&[
                "env",
                "LC_ALL=C",
                "find",
                "/var/log/x",
                "-exec",
                "stat",
                "{}",
                "+",
            ]),
        )
        .unwrap();
        assert_eq!(m.program, "find");
        assert_eq!(m.env, [("LC_ALL".to_owned(), "C".to_owned())]);
        assert_eq!(m.args[0], "/sim/n1/var/log/x");
        assert_eq!(
            map_command(root, &s(&["sh", "-c", "id"])),
            Err(Unmapped::NotFound("sh".into()))
        );
        assert_eq!(
            map_command(root, &s(&["env", "LC_ALL=C", "nope-tar"])),
            Err(Unmapped::EnvNotFound("nope-tar".into()))
        );
        assert_eq!(map_command(root, &[]), Err(Unmapped::Empty));
    }
}
