//! Start-up: the one place that turns the configuration into a running service (adapters
//! wired, certificates loaded before the socket is bound, the server's options), binding it
//! (port 0 works for tests) and returning a handle.

use std::num::NonZeroUsize;
use std::sync::Arc;

use crate::config::{Config, variable};
use crate::error::StartupError;
use crate::observe::Metrics;
use crate::server::{self, Running};
use crate::version::VersionInfo;
use crate::{http, wiring};

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
        server_options(config),
    )
    .await?;
    if config.metrics_port == 0 {
        return Ok(running);
    }
    let (addr, task) = http::metrics::serve(host, config.metrics_port, metrics)
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

/// How the server treats connections, from the settings. Call after the descriptor limit is
/// raised: the default connection cap is derived from it.
pub fn server_options(config: &Config) -> server::Options {
    server::Options {
        header_timeout: config.header_timeout.0,
        max_connections: config
            .max_connections
            .map_or_else(server::default_max_connections, NonZeroUsize::get),
        shutdown_grace: config.shutdown_grace.0,
        tls_reload_interval: config.tls_reload_interval.0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::result_large_err)] // figment::Jail closures return figment::Error.

    use figment::Jail;

    use super::*;
    use crate::config::PREFIX;
    use crate::config::tests::{load, variable_of};

    #[test]
    fn connection_settings_are_read_and_checked() {
        Jail::expect_with(|jail| {
            let c = load(jail, &[]).unwrap();
            let options = server_options(&c);
            assert_eq!(options.header_timeout, std::time::Duration::from_secs(30));
            assert_eq!(options.shutdown_grace, std::time::Duration::from_secs(30));
            assert_eq!(
                options.tls_reload_interval,
                std::time::Duration::from_secs(10)
            );
            assert!(
                (64..=10_000).contains(&options.max_connections),
                "sized from the descriptor limit: {}",
                options.max_connections
            );
            let c = load(
                jail,
                &[
                    ("HEADER_TIMEOUT", "5s"),
                    ("MAX_CONNECTIONS", "300"),
                    ("SHUTDOWN_GRACE", "0"),
                    ("TLS_RELOAD_INTERVAL", "1m"),
                ],
            )
            .unwrap();
            let options = server_options(&c);
            assert_eq!(options.header_timeout, std::time::Duration::from_secs(5));
            assert_eq!(options.max_connections, 300);
            assert_eq!(options.shutdown_grace, std::time::Duration::ZERO);
            assert_eq!(
                options.tls_reload_interval,
                std::time::Duration::from_secs(60)
            );
            for (var, value) in [
                ("HEADER_TIMEOUT", "0s"),
                ("TLS_RELOAD_INTERVAL", "0"),
                ("MAX_CONNECTIONS", "0"),
                ("SHUTDOWN_GRACE", "forever"),
            ] {
                let e = load(jail, &[(var, value)]).unwrap_err();
                assert_eq!(variable_of(e), format!("{PREFIX}{var}"), "{var}={value}");
            }
            Ok(())
        });
    }
}
