//! HTTPS serving: warp's routes as a hyper service over tokio-rustls and hyper-util, with the
//! hygiene a hostile network needs and a graceful stop.
//!
//! - Certificates are loaded before the socket is bound (a bad file is an error naming it)
//!   and reloaded when their files change ([`certs`]).
//! - A TLS handshake must finish within 10 s; a connection with no request in flight for the
//!   header timeout is closed (a slow or stalled request head, an idle keep-alive or HTTP/2
//!   connection); request heads are capped at 64 KiB (431 beyond).
//! - At most `max_connections` connections at once: past that, new ones wait in the listen
//!   backlog; nothing is refused by crashing.
//! - [`Running::stop`] stops accepting, lets requests in flight finish up to the shutdown
//!   grace, then cuts what is left (a cut download is a failed transfer, never a whole-looking
//!   one) and reports both.

pub mod certs;
mod coalesce;
mod tracking;

pub use self::tracking::{BodyEnd, EndHook};

use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use warp::reply::Response;

use crate::error::StartupError;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head accepted (431 beyond).
pub const MAX_HEAD: usize = 64 * 1024;

/// How the server treats its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// A connection with no request in flight for this long is closed.
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long requests in flight may take to finish once the server stops.
    pub shutdown_grace: Duration,
    /// How often the certificate files are checked for a change.
    pub tls_reload_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(30),
            max_connections: default_max_connections(),
            shutdown_grace: Duration::from_secs(30),
            tls_reload_interval: Duration::from_secs(10),
        }
    }
}

/// The connection cap that fits the process's descriptor limit: half of it (the rest is for
/// exec connections to API servers, spool files and the runtime), at most 10,000.
pub fn default_max_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1024);
    usize::try_from(limit / 2)
        .unwrap_or(usize::MAX)
        .clamp(64, 10_000)
}

/// Raises the soft descriptor limit to the hard one, as servers do; the cap on connections
/// is derived from what results.
pub fn raise_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "the descriptor limit could not be raised");
        }
    }
}

/// What a stop did with the requests in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Requests that finished within the grace.
    pub drained: usize,
    /// Requests still running when the grace ended, cut.
    pub cut: usize,
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The bound address (with the real port when 0 was asked).
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served, when it is.
    pub metrics_addr: Option<SocketAddr>,
    /// Connections served at once.
    pub max_connections: usize,
    stop: watch::Sender<bool>,
    task: JoinHandle<StopReport>,
    metrics_task: Option<JoinHandle<()>>,
}

impl Running {
    /// Also serving metrics at `addr` (the listener task stops with the service).
    pub fn with_metrics(mut self, addr: SocketAddr, task: JoinHandle<()>) -> Self {
        self.metrics_addr = Some(addr);
        self.metrics_task = Some(task);
        self
    }

    /// Stops accepting, drains the requests in flight up to the grace, cuts the rest; the
    /// metrics are served until then.
    pub async fn stop(self) -> StopReport {
        let _ = self.stop.send(true);
        let report = self.task.await.unwrap_or_default();
        if let Some(metrics) = self.metrics_task {
            metrics.abort();
        }
        report
    }
}

/// ring with AES-128-GCM preferred to AES-256-GCM (as Go's TLS does where AES runs in
/// hardware): fewer rounds per byte on every hop a download crosses. Installed as the process
/// default, so the clients to the API servers use it too.
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    provider
}

/// Builds the rustls server configuration (HTTP/2 and HTTP/1.1 offered) around a certificate
/// that may be reloaded. The server's cipher order wins over the client's.
pub fn tls_config(certs: Arc<certs::Reloading>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(crypto_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    Ok(config)
}

/// What the server serves: warp routes that answer every request.
pub trait Routes:
    warp::Filter<Extract = (Response,), Error = Infallible, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<F> Routes for F where
    F: warp::Filter<Extract = (Response,), Error = Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Binds `host:port` (all addresses when `host` is `None`) and serves `routes` over TLS.
pub async fn serve<F>(
    host: Option<IpAddr>,
    port: u16,
    certs: Arc<certs::Reloading>,
    routes: F,
    options: Options,
) -> Result<Running, StartupError>
where
    F: Routes,
{
    let listener = listen(host, port).await.map_err(|e| {
        let on = host.map_or_else(|| "every address".to_owned(), |h| h.to_string());
        StartupError::failure(format!("cannot listen on port {port} of {on}")).because(e)
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartupError::failure("cannot read the listening address").because(e))?;
    let tls = tls_config(certs.clone())
        .map_err(|e| StartupError::failure("cannot set up TLS").because(e))?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let (stop, stopped) = watch::channel(false);
    let max_connections = options.max_connections.max(1);
    let task = tokio::spawn(run(listener, acceptor, certs, routes, options, stopped));
    Ok(Running {
        addr,
        metrics_addr: None,
        max_connections,
        stop,
        task,
        metrics_task: None,
    })
}

async fn run<F>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    certs: Arc<certs::Reloading>,
    routes: F,
    options: Options,
    mut stopped: watch::Receiver<bool>,
) -> StopReport
where
    F: Routes,
{
    let reload = certs.watch(options.tls_reload_interval);
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (drain, draining) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stopped.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of descriptors, or a connection reset before accept: wait, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let connection = tracking::Connection::new(in_flight.clone());
        let service = TowerToHyperService::new(warp::service(routes.clone()));
        connections.spawn(serve_connection(
            tcp,
            peer,
            acceptor.clone(),
            service,
            connection,
            options.header_timeout,
            draining.clone(),
            permit,
        ));
    }
    drop(listener);
    reload.abort();
    let running = in_flight.load(Ordering::SeqCst);
    tracing::info!(
        requests = running,
        connections = connections.len(),
        "stopped accepting; draining"
    );
    let _ = drain.send(true);
    let drained = tokio::time::timeout(options.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    let cut = match drained {
        Ok(()) => 0,
        Err(_) => {
            let cut = in_flight.load(Ordering::SeqCst);
            connections.abort_all();
            while connections.join_next().await.is_some() {}
            cut
        }
    };
    let report = StopReport {
        drained: running.saturating_sub(cut),
        cut,
    };
    if cut > 0 {
        tracing::warn!(drained = report.drained, cut, grace = ?options.shutdown_grace, "shutdown grace over: requests still running were cut");
    } else {
        tracing::info!(drained = report.drained, "every request in flight finished");
    }
    report
}

#[allow(clippy::too_many_arguments)] // One connection's whole context, from the accept loop.
async fn serve_connection<S, B>(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    service: S,
    connection: Arc<tracking::Connection>,
    header_timeout: Duration,
    mut draining: watch::Receiver<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
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
    let tracked = {
        let connection = connection.clone();
        let service = Arc::new(service);
        hyper::service::service_fn(move |request| {
            let guard = connection.enter();
            let service = service.clone();
            async move {
                let response = service.call(request).await?;
                let hook = response.extensions().get::<EndHook>().cloned();
                Ok::<_, S::Error>(response.map(|body| tracking::Tracked::new(body, guard, hook)))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // hyper answers 431 when a head outgrows its read buffer (or has over 100 fields).
        .max_buf_size(MAX_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Decoded up to twice the limit so the edge can answer 431; past that h2 refuses the
        // stream or the connection itself.
        .max_header_list_size(u32::try_from(2 * MAX_HEAD).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection(TokioIo::new(coalesce::Gathered::new(tls)), tracked);
    tokio::pin!(conn);
    let idle = tokio::select! {
        served = conn.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        () = connection.idle_for(header_timeout) => true,
        _ = draining.wait_for(|draining| *draining) => false,
    };
    conn.as_mut().graceful_shutdown();
    if idle {
        // Nothing in flight: a head that never completes is not waited for.
        let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        tracing::debug!(%peer, "connection closed: no request for the header timeout");
    } else if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended with an error while draining");
    }
}

/// Binds `host:port`; without a host, every address (IPv6 and IPv4, or IPv4 alone where the
/// machine has no IPv6).
pub async fn listen(host: Option<IpAddr>, port: u16) -> std::io::Result<TcpListener> {
    match host {
        Some(ip) => TcpListener::bind(SocketAddr::new(ip, port)).await,
        None => match TcpListener::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))
            .await
        {
            Ok(l) => Ok(l),
            Err(_) => TcpListener::bind(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port)).await,
        },
    }
}
