//! HTTPS serving: warp's routes as a tower service over tokio-rustls and hyper-util.
//!
//! Certificates are loaded before the socket is bound; a bad file is an error naming it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::startup::StartupError;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the rustls server configuration from PEM files (HTTP/2 and HTTP/1.1 offered).
pub fn tls_config(
    cert: &Path,
    key: &Path,
) -> Result<rustls::ServerConfig, packetcapture_tls::Error> {
    let certs = packetcapture_tls::certificates(cert)?;
    let key_der = packetcapture_tls::private_key(key)?;
    let unusable = |source: rustls::Error| packetcapture_tls::Error {
        what: "private key",
        path: key.to_owned(),
        source: source.into(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(unusable)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(unusable)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The bound address (with the real port when 0 was asked).
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Binds `host:port` (all addresses when `host` is `None`) and serves `routes` over TLS.
pub async fn serve<F>(
    host: Option<IpAddr>,
    port: u16,
    tls: rustls::ServerConfig,
    routes: F,
) -> Result<Running, StartupError>
where
    F: warp::Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    F::Future: Send,
{
    let listener = match host {
        Some(ip) => bind(SocketAddr::new(ip, port)).await?,
        None => match bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)).await {
            Ok(l) => l,
            Err(_) => bind(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port)).await?,
        },
    };
    let addr = listener
        .local_addr()
        .map_err(|e| StartupError::failure("cannot read the listening address").because(e))?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(warp::service(routes.clone()));
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                if let Err(e) = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    });
    Ok(Running { addr, stop, task })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| StartupError::failure(format!("cannot listen on {addr}")).because(e))
}
