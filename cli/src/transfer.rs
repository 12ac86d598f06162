//! Receiving a body: into `OUT.part`, renamed to `OUT` only when the body ended whole, with a
//! progress bar on a terminal and one summary line otherwise.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::AsyncWriteExt;

use crate::api::error_chain;
use crate::error::CliError;

/// Where a download goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Standard output (`-o -`).
    Stdout,
    /// A file, written as `FILE.part` first.
    File(PathBuf),
}

impl Destination {
    /// `-o` as given, else `default`.
    pub fn from_arg(arg: Option<&str>, default: String) -> Self {
        match arg {
            Some("-") => Self::Stdout,
            Some(path) => Self::File(PathBuf::from(path)),
            None => Self::File(PathBuf::from(default)),
        }
    }
}

/// `FILE.part`.
pub fn part_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// A progress display: a bar on a terminal (bytes, rate, ETA when the total is known), hidden
/// otherwise.
pub fn progress(total: Option<u64>, already: u64, label: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr_with_hz(8)
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), target).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => ProgressBar::with_draw_target(None, target).with_style(
            ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(label.to_owned());
    bar.set_position(already);
    bar.enable_steady_tick(Duration::from_millis(125));
    bar
}

/// Writes `response`'s body to `out`, counting on `bar`, until it ends, fails or Ctrl-C
/// comes. Returns the bytes written by this call; `kept` says what a cut leaves behind.
pub async fn receive(
    response: http::Response<kube::client::Body>,
    out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    bar: &ProgressBar,
    kept: &str,
) -> Result<u64, CliError> {
    let from = bar.position();
    // Written a megabyte at a time: tokio's files and stdout make every write a hand-off to a
    // blocking thread, and the body arrives in pieces of about 16 KiB.
    let mut buffered = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, out);
    let result = tokio::select! {
        result = body_to(response, &mut buffered, bar, kept) => result,
        _ = tokio::signal::ctrl_c() => {
            bar.abandon();
            Err(CliError::Interrupted { bytes: bar.position() - from, kept: kept.to_owned() })
        }
    };
    // What was received is kept whatever happened (a cut single file is resumed from it).
    let flushed = buffered
        .flush()
        .await
        .map_err(|e| CliError::Local(format!("cannot write the download: {e}")));
    let written = result?;
    flushed?;
    Ok(written)
}

/// How much of a download is gathered before it is written out.
const WRITE_BUFFER: usize = 1 << 20;

async fn body_to(
    response: http::Response<kube::client::Body>,
    out: &mut (impl tokio::io::AsyncWrite + Unpin + Send),
    bar: &ProgressBar,
    cut_note: &str,
) -> Result<u64, CliError> {
    let mut body = response.into_body();
    let mut written = 0u64;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    out.write_all(&data)
                        .await
                        .map_err(|e| CliError::Local(format!("cannot write the download: {e}")))?;
                    written += data.len() as u64;
                    bar.inc(data.len() as u64);
                }
            }
            Some(Err(e)) => {
                bar.abandon();
                return Err(CliError::Cut {
                    bytes: written,
                    reason: format!("{} ({cut_note})", error_chain(&e)),
                });
            }
        }
    }
    Ok(written)
}

/// Says what was saved: the bar's last state on a terminal, one line otherwise.
pub fn saved(bar: &ProgressBar, what: &str, bytes: u64, started: Instant) {
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "saved {what}: {} ({bytes} bytes) in {seconds:.1} s",
        HumanBytes(bytes)
    );
}
