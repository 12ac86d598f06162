//! The HTTP edge: the routes, and each request answered by a use case.
//!
//! Nothing else in the workspace knows HTTP status codes, and here only
//! [`failure::status_of`] chooses one for a failure. The path is parsed (and refused with 400)
//! before any authentication ([`route`]); headers and query values are read into typed values
//! before they reach the domain ([`request`]); one file, or a finished capture's zip, is served
//! with `Range` ([`range`]); bodies are written by [`body`]; each request runs in its span
//! ([`span`]). [`metrics`] is the metrics port's listener.

mod body;
pub mod failure;
pub mod metrics;
mod range;
mod request;
mod route;
mod span;

use std::convert::Infallible;
use std::sync::Arc;

use packetcapture_domain::{CaptureRef, CaptureService, Download, ZipAsk};
use warp::Filter;
use warp::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use warp::http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use self::body::{ListingBody, ZIP_DISPOSITION, empty, json, log_failures};
pub use self::failure::status_of;
use self::failure::{Failure, error_response};
pub use self::range::{RangeAnswer, range_of};
use self::range::{serve_file, serve_zip};
use self::request::{compression, follow, head_size, query_pairs, request, selection};
pub use self::route::OPENAPI;
use self::route::{Format, Route, check_params, parse_route};
use self::span::RequestSpan;
use crate::observe::Metrics;
use crate::server::MAX_HEAD;
use crate::version::VersionInfo;

/// What the routes need.
#[derive(Clone, Debug)]
pub struct Edge {
    /// The use cases.
    pub service: Arc<CaptureService>,
    /// What `/version` reports.
    pub version: VersionInfo,
    /// Counted for every request.
    pub metrics: Arc<Metrics>,
}

/// Every route of the service as one warp filter that never rejects.
pub fn routes(
    edge: Edge,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    let edge = Arc::new(edge);
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .then(
            move |method: Method, path: warp::path::FullPath, headers: HeaderMap, query: String| {
                let edge = edge.clone();
                async move {
                    use tracing::Instrument;
                    let span = RequestSpan::start(&headers);
                    let parsed = parse_route(path.as_str());
                    let (route, format) = match &parsed {
                        Ok(route) => (route.template(), route.format()),
                        Err(_) => ("other", None),
                    };
                    let response = handle(&edge, &method, path.as_str(), parsed, &headers, &query)
                        .instrument(span.span.clone())
                        .await;
                    span.finish(response, edge.metrics.clone(), method, route, format)
                }
            },
        )
}

async fn handle(
    edge: &Edge,
    method: &Method,
    path: &str,
    route: Result<Route, Failure>,
    headers: &HeaderMap,
    query: &str,
) -> warp::reply::Response {
    answer(edge, method, route, headers, query)
        .await
        .unwrap_or_else(|failure| {
            if let Failure::Domain(error) = &failure {
                edge.metrics.node_failure(error);
            }
            error_response(&failure, method, path)
        })
}

async fn answer(
    edge: &Edge,
    method: &Method,
    route: Result<Route, Failure>,
    headers: &HeaderMap,
    query: &str,
) -> Result<warp::reply::Response, Failure> {
    // HTTP/1.1 heads past the limit never get here (hyper answers 431 itself); an HTTP/2 header
    // list is decoded up to twice the limit and refused here with the same status.
    if head_size(headers) > MAX_HEAD {
        return Err(Failure::HeadTooLarge);
    }
    let route = route?;
    if !route.allowed().contains(method) {
        return Err(Failure::MethodNotAllowed(route.allowed()));
    }
    // Every parameter is one the route takes: a misspelt one is refused, never ignored.
    let pairs = query_pairs(query)?;
    check_params(&pairs, route.params())?;
    Ok(match route {
        Route::Health => json(StatusCode::OK, &serde_json::json!({ "status": "Ok" })),
        Route::Version => json(StatusCode::OK, &edge.version),
        Route::OpenApi => {
            let mut response = Response::new(OPENAPI.into());
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Route::Download(capture, format) => {
            let head = method == Method::HEAD;
            download(edge, capture, format, headers, &pairs, head).await?
        }
        Route::File(capture, node, name) => {
            let request = request(capture, headers)?;
            let file = edge.service.file(&request, &node, &name).await?;
            let head = method == Method::HEAD;
            serve_file(&request, file, headers, head, edge.metrics.clone()).await?
        }
        Route::Files(capture) if method == Method::DELETE => {
            edge.service.delete(&request(capture, headers)?).await?;
            empty(StatusCode::NO_CONTENT)
        }
        Route::Files(capture) => {
            let listing = edge.service.list(&request(capture, headers)?).await?;
            json(StatusCode::OK, &ListingBody::from(listing))
        }
    })
}

async fn download(
    edge: &Edge,
    capture: CaptureRef,
    format: Format,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    head: bool,
) -> Result<warp::reply::Response, Failure> {
    let selection = selection(pairs)?;
    let request = request(capture, headers)?;
    let download = match format {
        Format::Zip => {
            let compression = compression(pairs)?;
            let ask = if head {
                ZipAsk::Head
            } else if headers.contains_key(warp::http::header::RANGE) {
                ZipAsk::Range
            } else {
                ZipAsk::Whole
            };
            edge.service
                .download(&request, compression, &selection, ask)
                .await?
        }
        Format::Pcapng => match follow(pairs)? {
            Some(lag) => edge.service.follow(&request, &selection, lag).await?,
            None => edge.service.merged(&request, &selection).await?,
        },
    };
    let (stream, content_type, disposition) = match download {
        Download::Empty => return Ok(empty(StatusCode::NO_CONTENT)),
        Download::Planned(zip) => {
            return serve_zip(&request, zip, headers, head, edge.metrics.clone()).await;
        }
        Download::Unstarted => {
            // HEAD of a zip that streams: its headers, nothing read, no length to tell.
            let mut response = empty(StatusCode::OK);
            let h = response.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/zip"));
            h.insert(
                CONTENT_DISPOSITION,
                HeaderValue::from_static(ZIP_DISPOSITION),
            );
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Ok(response);
        }
        Download::Zip(zip) => (zip, "application/zip", ZIP_DISPOSITION.to_owned()),
        Download::Pcapng(pcapng) => (
            pcapng,
            "application/x-pcapng",
            format!(
                "attachment; filename=\"{}_{}.pcapng\"",
                request.capture.namespace, request.capture.name
            ),
        ),
    };
    let capture = request.capture.to_string();
    let cluster = request.cluster.to_string();
    let filtered = selection.filter.is_some().then(|| stream.summary());
    let body = log_failures(stream, capture, cluster, edge.metrics.clone(), filtered);
    let mut response = warp::reply::Reply::into_response(warp::reply::stream(body));
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
