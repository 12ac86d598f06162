//! HTTPS serving for the simulated components, and response helpers.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::pki::ServerCert;

/// Errors inside bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body.
pub type Body = BoxBody<Bytes, BoxError>;

/// A full body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// A plain text response.
pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{message}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A Kubernetes `Status` failure response without `details` (as kube-apiserver's 400, 401
/// and 5xx are).
pub fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json(code, &status_body(code, Some(reason), message, None))
}

/// A Kubernetes `Status` failure response with `details` (as kube-apiserver's 403, 404, 409
/// and 422 are).
pub fn status_with(
    code: StatusCode,
    reason: &str,
    message: &str,
    details: serde_json::Value,
) -> Response<Body> {
    json(
        code,
        &status_body(code, Some(reason), message, Some(details)),
    )
}

/// A `Status` body; a `None` reason leaves the field out (as an upgrade-proxy error has none).
pub fn status_body(
    code: StatusCode,
    reason: Option<&str>,
    message: &str,
    details: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
    });
    if let Some(reason) = reason {
        body["reason"] = reason.into();
    }
    if let Some(details) = details {
        body["details"] = details;
    }
    body["code"] = code.as_u16().into();
    body
}

/// A rustls server configuration from PEM (HTTP/2 and HTTP/1.1 offered).
pub fn tls_config(cert: &ServerCert) -> Arc<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("valid PEM");
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("valid key PEM");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("a usable certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A server that runs until its handle is dropped or stopped.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Server {
    /// Stops accepting.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves `handler` over TLS on a loopback port (0 picks one). `refuse` is checked per
/// connection: when it returns true the connection is closed at once (a service that is down).
pub async fn serve<H, F>(
    port: u16,
    tls: Arc<rustls::ServerConfig>,
    handler: H,
    refuse: Arc<dyn Fn() -> bool + Send + Sync>,
) -> std::io::Result<Server>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                _ = stopped.changed() => break,
            };
            if refuse() {
                drop(tcp);
                continue;
            }
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req, peer).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(Server { addr, stop })
}
