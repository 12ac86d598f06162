//! The `packetcapture-api` binary's library: configuration, start-up and wiring, HTTPS server,
//! HTTP edge.
//!
//! Boundary: this crate is the only one that knows HTTP status codes ([`http::status_of`]) and
//! the only one that builds adapters from configuration ([`wiring`]).

pub mod config;
pub mod error;
pub mod http;
pub mod observe;
pub mod server;
pub mod startup;
pub mod version;
pub mod wiring;

use config::Config;
use error::StartupError;
use tracing_subscriber::EnvFilter;

/// Sets up logging: `LOG_LEVEL` for this service, `RUST_LOG` to override; `LOG_FORMAT` text
/// or JSON.
pub fn init_logging(config: &Config) {
    use std::io::IsTerminal;
    // kube-client logs connection failures at ERROR itself; this service logs them once, with
    // their whole chain and what was being done, so kube's own lines are kept for Debug/Trace.
    let quiet_kube = matches!(
        config.log_level,
        config::LogLevel::Info | config::LogLevel::Warn | config::LogLevel::Error
    );
    let directives = if quiet_kube {
        format!("{},kube_client=off", config.log_level.as_filter())
    } else {
        config.log_level.as_filter().into()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    match config.log_format {
        config::LogFormat::Text => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_target(false)
                .with_ansi(std::io::stdout().is_terminal())
                .try_init();
        }
        config::LogFormat::Json => {
            // One object a line: timestamp, level, target, the message and fields at the top,
            // and the request span's fields (request_id, user, cluster) under "span".
            let _ = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_env_filter(filter)
                .try_init();
        }
    }
}

/// Runs the service until SIGINT or SIGTERM, then drains it: requests in flight finish within
/// `SHUTDOWN_GRACE`, what is left is cut (a failed transfer, never a whole-looking one).
pub fn run(config: Config) -> Result<(), StartupError> {
    init_logging(&config);
    server::raise_descriptor_limit();
    let _ = server::crypto_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| StartupError::failure("cannot start the runtime").because(e))?;
    runtime.block_on(async move {
        let running = startup::start(&config).await?;
        tracing::info!(addr = %running.addr, metrics = ?running.metrics_addr, max_connections = running.max_connections, version = %version::VersionInfo::current(), "listening");
        let signal = shutdown_signal().await;
        tracing::info!(signal, grace = ?config.shutdown_grace.0, "shutting down: no new connections; requests in flight may finish");
        let report = running.stop().await;
        tracing::info!(drained = report.drained, cut = report.cut, "stopped");
        Ok(())
    })
}

/// Waits for SIGINT or SIGTERM; names the one that came.
async fn shutdown_signal() -> &'static str {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return "SIGINT";
                }
            };
        tokio::select! {
            _ = ctrl_c => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        "SIGINT"
    }
}
