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

/// Runs `write` on `TARGET.part`, then makes it `target` (synced, renamed); when `write`
/// fails the part file is removed, so nothing that looks whole is left.
pub async fn into_part<T>(
    target: &Path,
    write: impl AsyncFnOnce(&mut tokio::fs::File) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let part = part_of(target);
    let mut out = tokio::fs::File::create(&part)
        .await
        .map_err(|e| CliError::Local(format!("cannot create {}: {e}", part.display())))?;
    let written = match write(&mut out).await {
        Ok(written) => written,
        Err(e) => {
            drop(out);
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    out.sync_all()
        .await
        .map_err(|e| CliError::Local(format!("cannot write {}: {e}", part.display())))?;
    tokio::fs::rename(&part, target).await.map_err(|e| {
        CliError::Local(format!(
            "cannot rename {} to {}: {e}",
            part.display(),
            target.display()
        ))
    })?;
    Ok(written)
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
        result = body_to(response, &mut buffered, bar, kept, false) => result,
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

/// How a followed download ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowEnd {
    /// The server ended the stream (the capture finished, or `until` passed).
    Ended,
    /// Ctrl-C, or the reader of standard output went away (Wireshark closed).
    Stopped,
}

/// Writes a followed body to `out` as it comes, each piece flushed at once (a live view must
/// not wait for a buffer to fill), until the server ends it, Ctrl-C comes or the reader of
/// the pipe leaves; both of the latter are a clean end. Returns the bytes written and how it
/// ended; a cut stream is an error, as for any download.
pub async fn receive_live(
    response: http::Response<kube::client::Body>,
    out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    bar: &ProgressBar,
    kept: &str,
) -> Result<(u64, FollowEnd), CliError> {
    let from = bar.position();
    let result = tokio::select! {
        result = body_to(response, &mut *out, bar, kept, true) => result.map(|n| (n, FollowEnd::Ended)),
        _ = tokio::signal::ctrl_c() => Ok((bar.position() - from, FollowEnd::Stopped)),
    };
    match result {
        Err(CliError::OutputClosed { bytes }) => Ok((bytes, FollowEnd::Stopped)),
        other => {
            out.flush()
                .await
                .map_err(|e| CliError::Local(format!("cannot write the download: {e}")))?;
            other
        }
    }
}

/// How much of a download is gathered before it is written out.
const WRITE_BUFFER: usize = 1 << 20;

async fn body_to(
    response: http::Response<kube::client::Body>,
    out: &mut (impl tokio::io::AsyncWrite + Unpin + Send + ?Sized),
    bar: &ProgressBar,
    cut_note: &str,
    flush_each: bool,
) -> Result<u64, CliError> {
    let mut body = response.into_body();
    let mut written = 0u64;
    let mut blocks = WholeBlocks::default();
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    // A live view gets whole pcapng blocks only, so whenever it is stopped
                    // what was written reads as a whole capture.
                    let data = if flush_each { blocks.push(&data) } else { data };
                    let mut wrote = out.write_all(&data).await;
                    if flush_each && wrote.is_ok() {
                        wrote = out.flush().await;
                    }
                    match wrote {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                            bar.abandon();
                            return Err(CliError::OutputClosed { bytes: written });
                        }
                        Err(e) => {
                            return Err(CliError::Local(format!("cannot write the download: {e}")));
                        }
                    }
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

#[cfg(test)]
mod tests {
    use super::WholeBlocks;
    use bytes::Bytes;

    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let len = (12 + body.len()) as u32;
        let mut b = kind.to_le_bytes().to_vec();
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(body);
        b.extend_from_slice(&len.to_le_bytes());
        b
    }

    #[test]
    fn only_whole_blocks_come_out_whatever_the_pieces() {
        let mut stream = block(
            0x0A0D_0D0A,
            &[
                0x4D, 0x3C, 0x2B, 0x1A, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        );
        stream.extend(block(1, &[1, 0, 0, 0, 0, 0, 0, 0]));
        stream.extend(block(6, &[7; 40]));
        stream.extend(block(6, &[8; 20]));
        let ends = [28usize, 48, 100, 132];
        for piece in [1usize, 3, 7, 13, 64, 200] {
            let mut blocks = WholeBlocks::default();
            let mut out = Vec::new();
            for chunk in stream.chunks(piece) {
                let got = blocks.push(&Bytes::copy_from_slice(chunk));
                out.extend_from_slice(&got);
                assert!(
                    out.is_empty() || ends.contains(&out.len()),
                    "piece {piece}: {} bytes out",
                    out.len()
                );
            }
            assert_eq!(out, stream, "piece {piece}");
        }
    }

    #[test]
    fn what_is_not_pcapng_passes_through() {
        let mut blocks = WholeBlocks::default();
        let text = Bytes::from_static(b"PK\x03\x04 not a pcapng at all");
        assert_eq!(blocks.push(&text), text);
        let more = Bytes::from_static(b"more");
        assert_eq!(blocks.push(&more), more);
    }
}

/// Splits a pcapng byte stream at block boundaries: [`WholeBlocks::push`] gives back the whole
/// blocks received so far and holds a block's first part until the rest comes. A stream that
/// does not look like pcapng (a block length that cannot be) is passed through as it comes.
#[derive(Default)]
struct WholeBlocks {
    held: bytes::BytesMut,
    /// Bytes of `held` known to be whole blocks.
    whole: usize,
    /// The section's byte order, from its header (`None` before it).
    big_endian: Option<bool>,
    passthrough: bool,
}

impl WholeBlocks {
    /// The shortest block: type, two lengths.
    const MIN: usize = 12;

    fn push(&mut self, data: &bytes::Bytes) -> bytes::Bytes {
        if self.passthrough {
            return data.clone();
        }
        self.held.extend_from_slice(data);
        loop {
            let rest = &self.held[self.whole..];
            if rest.len() < Self::MIN {
                break;
            }
            let kind = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            if kind == 0x0A0D_0D0A {
                // A section header: its byte-order magic says how lengths are written.
                self.big_endian = Some(rest[8..12] == [0x1A, 0x2B, 0x3C, 0x4D]);
            }
            let field = [rest[4], rest[5], rest[6], rest[7]];
            let len = match self.big_endian {
                Some(true) => u32::from_be_bytes(field),
                Some(false) => u32::from_le_bytes(field),
                None => {
                    self.passthrough = true;
                    return self.held.split().freeze();
                }
            } as usize;
            if len < Self::MIN || !len.is_multiple_of(4) {
                self.passthrough = true;
                return self.held.split().freeze();
            }
            if rest.len() < len {
                break;
            }
            self.whole += len;
        }
        let out = self.held.split_to(self.whole).freeze();
        self.whole = 0;
        out
    }
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
