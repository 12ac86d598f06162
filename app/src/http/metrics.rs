//! The metrics listener: `GET /metrics` in plain HTTP on a port of its own (the OpenMetrics
//! text Prometheus scrapes); any other path or method is refused through the edge's one
//! failure mapping.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::task::JoinHandle;
use warp::Filter;
use warp::http::header::CONTENT_TYPE;
use warp::http::{HeaderValue, Method, Response, StatusCode};

use super::failure::{Failure, error_response};
use crate::observe::{CONTENT_TYPE as METRICS_TYPE, Metrics};

/// How long the metrics listener waits for a request head.
const SCRAPE_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a metrics connection stays open.
const SCRAPE_CONNECTION_LIMIT: Duration = Duration::from_secs(60);

/// Serves `GET /metrics` in plain HTTP on `host:port` until the task is aborted.
pub async fn serve(
    host: Option<IpAddr>,
    port: u16,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = crate::server::listen(host, port).await?;
    let bound = listener.local_addr()?;
    let routes = routes(metrics);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let service = TowerToHyperService::new(warp::service(routes.clone()));
            tokio::spawn(async move {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                // A scraper sends its head at once; a connection that does not is closed.
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(SCRAPE_HEAD_TIMEOUT);
                let connection = builder.serve_connection(TokioIo::new(tcp), service);
                // A scrape is one short request; nothing keeps a connection past a minute.
                let _ = tokio::time::timeout(SCRAPE_CONNECTION_LIMIT, connection).await;
            });
        }
    });
    Ok((bound, task))
}

/// The listener's one route, as a warp filter that never rejects.
fn routes(
    metrics: Arc<Metrics>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone + Send + Sync + 'static
{
    warp::method()
        .and(warp::path::full())
        .map(move |method: Method, path: warp::path::FullPath| {
            answer(&metrics, &method, path.as_str())
        })
}

fn answer(metrics: &Metrics, method: &Method, path: &str) -> warp::reply::Response {
    match (method, path) {
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(metrics.encode().into());
            *response.status_mut() = StatusCode::OK;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_TYPE));
            response
        }
        (_, "/metrics") => error_response(&Failure::MethodNotAllowed(&[Method::GET]), method, path),
        _ => error_response(&Failure::NotFound, method, path),
    }
}
