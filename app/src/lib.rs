//! The `packetcapture-api` binary's library: configuration, wiring, HTTPS server, HTTP edge.
//!
//! Boundary: this crate is the only one that knows HTTP status codes ([`http::status_of`]) and
//! the only one that builds adapters from configuration.

pub mod config;
pub mod http;
pub mod server;
pub mod version;
pub mod wiring;

use std::process::ExitCode;

use config::Config;
use tracing_subscriber::EnvFilter;

/// Exit code for a configuration that cannot be used (sysexits' EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// Sets up logging: `LOG_LEVEL` for this service, `RUST_LOG` to override.
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .try_init();
}

/// Runs the service until SIGINT or SIGTERM.
pub fn run(config: Config) -> ExitCode {
    init_logging(&config);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("packetcapture-api: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let tls = match server::tls_config(&config.https_cert, &config.https_key) {
            Ok(tls) => tls,
            Err(e) => {
                eprintln!(
                    "packetcapture-api: {PREFIX}HTTPS_CERT / {PREFIX}HTTPS_KEY: {}",
                    packetcapture_domain::error::chain(&e),
                    PREFIX = config::PREFIX
                );
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let service = match wiring::build(&config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("packetcapture-api: invalid configuration: {}", packetcapture_domain::error::chain(&e));
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let edge = http::Edge { service: std::sync::Arc::new(service), version: version::VersionInfo::current() };
        let running = match server::serve(config.host, config.port, tls, http::routes(edge)).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("packetcapture-api: {}", packetcapture_domain::error::chain(&e));
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(addr = %running.addr, version = %version::VersionInfo::current(), "listening");
        shutdown_signal().await;
        tracing::info!("shutting down");
        running.stop().await;
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
