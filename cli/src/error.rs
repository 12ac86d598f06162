//! What can go wrong, and the exit code each failure gives.

use http::StatusCode;

/// The exit codes, as `--help` lists them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  done (also when there was nothing to download: the server answered 204)
  1  a local failure: kubeconfig, file, TLS set-up
  2  bad arguments
  3  not authenticated (401): no valid token
  4  not allowed (403)
  5  not found (404): no such capture, managed cluster or file
  6  refused (400, 409, 416): the request, or the capture's state, does not allow it
  7  the server, a cluster or a node failed (5xx), or the server cannot be reached
  8  the transfer was cut after it started: nothing was saved as whole (a single file, or
     the zip of a finished capture, keeps FILE.part; run the same command again to resume)
  130 interrupted (Ctrl-C): the same as 8; with --follow, Ctrl-C is the way to stop and
     gives 0 (what was followed is saved)";

/// A failure of one command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Arguments that cannot be used.
    #[error("{0}")]
    Usage(String),
    /// Something on this machine failed.
    #[error("{0}")]
    Local(String),
    /// The server could not be reached or the connection failed before an answer.
    #[error("cannot reach the server: {0}")]
    Network(String),
    /// The server answered with an error.
    #[error("{message} ({status})")]
    Server {
        /// Its status.
        status: StatusCode,
        /// Its one-line message.
        message: String,
    },
    /// Ctrl-C during a transfer.
    #[error("interrupted after {bytes} bytes: {kept}")]
    Interrupted {
        /// Bytes received.
        bytes: u64,
        /// What was kept.
        kept: String,
    },
    /// The reader of standard output went away (a closed pipe).
    #[error("the reader of the output went away after {bytes} bytes")]
    OutputClosed {
        /// Bytes written.
        bytes: u64,
    },
    /// The body stopped before its end.
    #[error("the transfer was cut after {bytes} bytes: {reason}")]
    Cut {
        /// Bytes received.
        bytes: u64,
        /// What ended it, and what was kept.
        reason: String,
    },
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Local(_) | Self::OutputClosed { .. } => 1,
            Self::Usage(_) => 2,
            Self::Server { status, .. } => match status.as_u16() {
                401 => 3,
                403 => 4,
                404 => 5,
                400 | 409 | 416 => 6,
                _ => 7,
            },
            Self::Network(_) => 7,
            Self::Cut { .. } => 8,
            Self::Interrupted { .. } => 130,
        }
    }
}
