//! Start-up: the one error type of starting the service, and the one place that builds it
//! from configuration and binds it (port 0 works for tests), returning a handle.

use std::sync::Arc;

use packetcapture_domain::BoxError;
use packetcapture_domain::error::chain;

use crate::config::{Config, variable};
use crate::observe::{self, Metrics};
use crate::server::{self, Running};
use crate::version::VersionInfo;
use crate::{http, wiring};

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

/// Builds the service from `config` (certificates loaded before the socket is bound) and
/// serves it; the handle knows the bound address.
pub async fn start(config: &Config) -> Result<Running, StartupError> {
    let certs =
        server::certs::Reloading::new(&config.https_cert, &config.https_key).map_err(|e| {
            let key = if e.what == "certificates" {
                "https_cert"
            } else {
                "https_key"
            };
            StartupError::setting(variable(key), "the server's TLS material cannot be used")
                .because(e)
        })?;
    let metrics = Metrics::new();
    let service = wiring::build(config, &metrics).await?;
    let edge = http::Edge {
        service: Arc::new(service),
        version: VersionInfo::current(),
        metrics: metrics.clone(),
    };
    let host = config.host.map(|h| h.0);
    let running = server::serve(
        host,
        config.port,
        certs,
        http::routes(edge),
        config.server_options(),
    )
    .await?;
    if config.metrics_port == 0 {
        return Ok(running);
    }
    let (addr, task) = observe::serve(host, config.metrics_port, metrics)
        .await
        .map_err(|e| {
            StartupError::setting(
                variable("metrics_port"),
                format!("cannot listen on port {}", config.metrics_port),
            )
            .because(e)
        })?;
    Ok(running.with_metrics(addr, task))
}
