//! The one error of starting the service: which variable to fix (if a setting is at fault),
//! what is wrong, the cause, and the exit code. A leaf: every start-up step returns it.

use packetcapture_domain::BoxError;
use packetcapture_domain::error::chain;

/// Exit code for a configuration that cannot be used (sysexits' EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for any other failure to start.
pub const EXIT_FAILURE: u8 = 1;

/// Why the service could not start: the variable to fix (if a setting is at fault), what is
/// wrong, the cause, and the exit code that says which kind of failure it is.
#[derive(Debug, thiserror::Error)]
#[error("{}{problem}", .variable.as_ref().map(|v| format!("{v}: ")).unwrap_or_default())]
pub struct StartupError {
    variable: Option<String>,
    problem: String,
    #[source]
    source: Option<BoxError>,
    exit_code: u8,
}

impl StartupError {
    /// A setting cannot be used (exit 64).
    pub fn setting(variable: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            variable: Some(variable.into()),
            problem: problem.into(),
            source: None,
            exit_code: EXIT_CONFIG,
        }
    }

    /// Something else failed (exit 1).
    pub fn failure(problem: impl Into<String>) -> Self {
        Self {
            variable: None,
            problem: problem.into(),
            source: None,
            exit_code: EXIT_FAILURE,
        }
    }

    /// Keeps `source` as the cause.
    pub fn because(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The variable to fix, if a setting is at fault.
    pub fn variable(&self) -> Option<&str> {
        self.variable.as_deref()
    }

    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        self.exit_code
    }

    /// The message and every cause, for the one line printed before exiting.
    pub fn report(&self) -> String {
        chain(self)
    }
}
