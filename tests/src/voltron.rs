//! A simulated Voltron: routes each request by `x-cluster-id` to that managed cluster's API
//! server, streaming bodies and carrying WebSocket upgrades across.
//!
//! Answers as Voltron's muxer does (from its source, as recalled): no header or an unknown id
//! is 400 `Unknown target cluster`, a cluster whose tunnel is down is 502.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use crate::cluster::{RequestRecord, World, lock};
use crate::http::{Body, BoxError, text};

/// Voltron's state: where each managed cluster's API server is, and what it saw.
pub struct Voltron {
    /// The clusters.
    pub world: Arc<World>,
    /// Managed cluster name to API server address.
    pub upstreams: Vec<(String, SocketAddr)>,
    /// A TLS client trusting the clusters' CA.
    pub tls: Arc<rustls::ClientConfig>,
    /// Requests routed (or refused).
    pub log: std::sync::Mutex<Vec<RequestRecord>>,
}

impl Voltron {
    /// The requests Voltron saw.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.log).clone()
    }
}

/// Handles one request.
pub async fn handle(voltron: Arc<Voltron>, req: Request<Incoming>) -> Response<Body> {
    let id = req
        .headers()
        .get("x-cluster-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    lock(&voltron.log).push(RequestRecord {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        cluster_header: id.clone(),
        user: None,
        headers: Vec::new(),
    });
    let Some(id) = id else {
        return text(StatusCode::BAD_REQUEST, "Unknown target cluster \"\"");
    };
    let Some(cluster) = voltron.world.cluster(&id).filter(|c| !c.local) else {
        return text(
            StatusCode::BAD_REQUEST,
            &format!("Unknown target cluster \"{id}\""),
        );
    };
    if !cluster.connected.load(Ordering::SeqCst) {
        return text(
            StatusCode::BAD_GATEWAY,
            &format!("Cluster \"{id}\" is not connected"),
        );
    }
    let Some((_, addr)) = voltron.upstreams.iter().find(|(n, _)| *n == id) else {
        return text(
            StatusCode::BAD_GATEWAY,
            &format!("no tunnel for cluster \"{id}\""),
        );
    };
    match forward(&voltron, *addr, req).await {
        Ok(r) => r,
        Err(e) => text(StatusCode::BAD_GATEWAY, &format!("cluster \"{id}\": {e}")),
    }
}

async fn forward(
    voltron: &Voltron,
    addr: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, BoxError> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (parts, body) = req.into_parts();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(voltron.tls.clone());
    let tls = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn.with_upgrades());
    let mut upstream = Request::builder().method(&parts.method).uri(
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
    );
    for (name, value) in &parts.headers {
        if name != http::header::HOST {
            upstream = upstream.header(name, value);
        }
    }
    let mut response = sender
        .send_request(
            upstream
                .header(http::header::HOST, "localhost")
                .body(body)?,
        )
        .await?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(a), Ok(b)) = (client_upgrade.await, upstream_upgrade.await) {
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b)).await;
            }
        });
    }
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(
        parts,
        body.map_err(|e| Box::new(e) as BoxError).boxed(),
    ))
}
