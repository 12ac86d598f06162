//! The HTTP edge: routes, request parsing, and the one mapping of domain errors to statuses.
//!
//! Nothing else in the workspace knows HTTP status codes. The path is parsed (and refused with
//! 400) before any authentication; headers are validated before they reach the domain.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use packetcapture_domain::{
    BearerToken, CaptureRef, CaptureService, ClusterTarget, Compression, Download, Error,
    Impersonation, Listing, Request,
};
use serde::Serialize;
use warp::Filter;
use warp::http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use warp::http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::version::VersionInfo;

/// The body type of every response.
pub type Body = warp::hyper::body::Bytes;

/// What the routes need.
#[derive(Clone, Debug)]
pub struct Edge {
    /// The use cases.
    pub service: Arc<CaptureService>,
    /// What `/version` reports.
    pub version: VersionInfo,
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
                async move { handle(&edge, &method, path.as_str(), &headers, &query).await }
            },
        )
}

/// A parsed path.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Health,
    Version,
    Download(CaptureRef),
    Files(CaptureRef),
}

#[derive(Debug, PartialEq, Eq)]
enum RouteError {
    NotFound,
    Malformed,
}

fn parse_route(path: &str) -> Result<Route, RouteError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(RouteError::NotFound);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let capture =
        |ns: &str, name: &str| CaptureRef::parse(ns, name).map_err(|_| RouteError::Malformed);
    match segments.as_slice() {
        ["health"] => Ok(Route::Health),
        ["version"] => Ok(Route::Version),
        ["download", ns, name, "files.zip"] => Ok(Route::Download(capture(ns, name)?)),
        ["download", ..] => Err(RouteError::Malformed),
        ["files", ns, name] => Ok(Route::Files(capture(ns, name)?)),
        ["files", ..] => Err(RouteError::Malformed),
        _ => Err(RouteError::NotFound),
    }
}

async fn handle(
    edge: &Edge,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    query: &str,
) -> warp::reply::Response {
    let route = match parse_route(path) {
        Ok(route) => route,
        Err(RouteError::NotFound) => return text(StatusCode::NOT_FOUND, "not found"),
        Err(RouteError::Malformed) => {
            return text(StatusCode::BAD_REQUEST, "request URL is malformed");
        }
    };
    let allowed: &[Method] = match route {
        Route::Files(_) => &[Method::GET, Method::DELETE],
        _ => &[Method::GET],
    };
    if !allowed.contains(method) {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        let allow = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(v) = HeaderValue::from_str(&allow) {
            response.headers_mut().insert(ALLOW, v);
        }
        return response;
    }
    let result = match route {
        Route::Health => return json(StatusCode::OK, &serde_json::json!({ "status": "Ok" })),
        Route::Version => return json(StatusCode::OK, &edge.version),
        Route::Download(capture) => download(edge, capture, headers, query).await,
        Route::Files(capture) if method == Method::DELETE => delete(edge, capture, headers).await,
        Route::Files(capture) => list(edge, capture, headers).await,
    };
    result.unwrap_or_else(|e| error_response(&e, method, path))
}

async fn download(
    edge: &Edge,
    capture: CaptureRef,
    headers: &HeaderMap,
    query: &str,
) -> Result<warp::reply::Response, Error> {
    let compression = compression(query)?;
    let request = request(capture, headers)?;
    match edge.service.download(&request, compression).await? {
        Download::Empty => Ok(empty(StatusCode::NO_CONTENT)),
        Download::Zip(zip) => {
            let capture = request.capture.to_string();
            let cluster = request.cluster.to_string();
            let body = log_failures(zip, capture, cluster);
            let mut response = warp::reply::Reply::into_response(warp::reply::stream(body));
            let h = response.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/zip"));
            h.insert(
                CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=files.zip"),
            );
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
    }
}

/// Logs a failure of the body after the status line was sent; the `Err` item then makes hyper
/// abort the connection, so the client sees a failed transfer.
fn log_failures(
    zip: impl Stream<Item = Result<Bytes, Error>> + Send + Sync + 'static,
    capture: String,
    cluster: String,
) -> impl Stream<Item = Result<Bytes, Error>> + Send + Sync + 'static {
    zip.map(move |item| {
        if let Err(e) = &item {
            tracing::warn!(capture = %capture, cluster = %cluster, error = %e.chain(), "download aborted after the status line was sent");
        }
        item
    })
}

async fn list(
    edge: &Edge,
    capture: CaptureRef,
    headers: &HeaderMap,
) -> Result<warp::reply::Response, Error> {
    let request = request(capture, headers)?;
    let listing = edge.service.list(&request).await?;
    Ok(json(StatusCode::OK, &ListingBody::from(listing)))
}

async fn delete(
    edge: &Edge,
    capture: CaptureRef,
    headers: &HeaderMap,
) -> Result<warp::reply::Response, Error> {
    let request = request(capture, headers)?;
    edge.service.delete(&request).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

fn compression(query: &str) -> Result<Compression, Error> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|_| Error::InvalidName {
            what: "query",
            value: packetcapture_domain::printable(query),
            rule: "a URL-encoded query",
        })?;
    match pairs.iter().rev().find(|(k, _)| k == "compression") {
        Some((_, value)) => Compression::parse(value),
        None => Ok(Compression::Stored),
    }
}

/// Reads the cluster, the token and the impersonation headers, in the pipeline's order.
fn request(capture: CaptureRef, headers: &HeaderMap) -> Result<Request, Error> {
    let cluster = ClusterTarget::from_header(single(headers, "x-cluster-id")?.as_deref())?;
    let token = bearer(headers)?;
    let impersonation = impersonation(headers)?;
    Ok(Request {
        token,
        impersonation,
        cluster,
        capture,
    })
}

fn header_text<'h>(name: &str, value: &'h HeaderValue) -> Result<&'h str, Error> {
    value.to_str().map_err(|_| Error::InvalidName {
        what: "header",
        value: name.to_owned(),
        rule: "visible ASCII",
    })
}

fn single(headers: &HeaderMap, name: &str) -> Result<Option<String>, Error> {
    let mut values = headers.get_all(name).iter();
    let first = values
        .next()
        .map(|v| header_text(name, v).map(str::to_owned))
        .transpose()?;
    if values.next().is_some() {
        return Err(Error::InvalidName {
            what: "header",
            value: name.to_owned(),
            rule: "sent once",
        });
    }
    Ok(first)
}

fn bearer(headers: &HeaderMap) -> Result<BearerToken, Error> {
    let value = single(headers, "authorization")
        .map_err(|_| Error::Unauthenticated {
            reason: "the Authorization header is malformed".into(),
        })?
        .ok_or_else(|| Error::Unauthenticated {
            reason: "no Authorization: Bearer header".into(),
        })?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.as_str(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Error::Unauthenticated {
            reason: "the Authorization header is not a Bearer token".into(),
        });
    }
    BearerToken::new(token.trim())
}

fn impersonation(headers: &HeaderMap) -> Result<Impersonation, Error> {
    let user = single(headers, "impersonate-user")?;
    let groups = headers
        .get_all("impersonate-group")
        .iter()
        .map(|v| header_text("impersonate-group", v).map(str::to_owned))
        .collect::<Result<Vec<_>, _>>()?;
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix("impersonate-extra-") else {
            continue;
        };
        let key = percent_encoding::percent_decode_str(key)
            .decode_utf8()
            .map_err(|_| Error::InvalidName {
                what: "impersonation extra key",
                value: packetcapture_domain::printable(key),
                rule: "percent-encoded UTF-8",
            })?
            .to_lowercase();
        extra
            .entry(key)
            .or_default()
            .push(header_text(name.as_str(), value)?.to_owned());
    }
    Ok(Impersonation {
        user,
        groups,
        extra,
    })
}

/// The status and client message for a domain error; the one place that decides them.
pub fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::InvalidName { .. } | Error::MissingImpersonationUser => StatusCode::BAD_REQUEST,
        Error::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
        Error::ImpersonationDenied { .. } | Error::Forbidden { .. } => StatusCode::FORBIDDEN,
        Error::ClusterNotFound { .. } | Error::CaptureNotFound { .. } => StatusCode::NOT_FOUND,
        Error::CaptureNotFinished { .. } | Error::CaptureStateUnknown { .. } => {
            StatusCode::CONFLICT
        }
        Error::ClusterNotConnected { .. } | Error::Unavailable { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Error::InvalidStatus { .. }
        | Error::NoEntryPod { .. }
        | Error::Backend { .. }
        | Error::NodeFiles { .. }
        | Error::TruncatedArchive { .. }
        | Error::StatusConflict { .. } => StatusCode::BAD_GATEWAY,
        Error::ZipWrite { .. } | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(error: &Error, method: &Method, path: &str) -> warp::reply::Response {
    let status = status_of(error);
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        "internal server error".to_owned()
    } else {
        error.to_string()
    };
    if status.is_server_error() {
        tracing::warn!(%method, path, status = status.as_u16(), error = %error.chain(), "request failed");
    } else {
        tracing::info!(%method, path, status = status.as_u16(), error = %error.chain(), "request refused");
    }
    let mut response = text(status, &message);
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn text(status: StatusCode, message: &str) -> warp::reply::Response {
    let mut body = message.replace(['\r', '\n'], " ");
    body.push('\n');
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(status: StatusCode, value: &impl Serialize) -> warp::reply::Response {
    let mut response = warp::reply::Reply::into_response(warp::reply::json(value));
    *response.status_mut() = status;
    response
}

fn empty(status: StatusCode) -> warp::reply::Response {
    let mut response = Response::new(warp::hyper::body::Bytes::new().into());
    *response.status_mut() = status;
    response
}

/// The listing's wire format.
#[derive(Debug, Serialize)]
struct ListingBody {
    namespace: String,
    name: String,
    cluster: String,
    nodes: Vec<NodeBody>,
}

#[derive(Debug, Serialize)]
struct NodeBody {
    node: String,
    state: Option<String>,
    directory: String,
    files: Vec<FileBody>,
}

#[derive(Debug, Serialize)]
struct FileBody {
    name: String,
    size: u64,
    modified: String,
}

impl From<Listing> for ListingBody {
    fn from(l: Listing) -> Self {
        Self {
            namespace: l.capture.namespace.to_string(),
            name: l.capture.name.to_string(),
            cluster: l.cluster,
            nodes: l
                .nodes
                .into_iter()
                .map(|n| NodeBody {
                    node: n.node,
                    state: n.state.map(|s| s.as_str().to_owned()),
                    directory: n.directory,
                    files: n
                        .files
                        .into_iter()
                        .map(|f| FileBody {
                            name: f.name,
                            size: f.size,
                            modified: jiff::Timestamp::from_second(f.modified)
                                .map(|t| t.to_string())
                                .unwrap_or_default(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_strictly() {
        let c = |ns: &str, n: &str| CaptureRef::parse(ns, n).unwrap();
        assert_eq!(
            parse_route("/download/dev/cap/files.zip"),
            Ok(Route::Download(c("dev", "cap")))
        );
        assert_eq!(
            parse_route("/files/dev/cap.v2"),
            Ok(Route::Files(c("dev", "cap.v2")))
        );
        assert_eq!(parse_route("/health"), Ok(Route::Health));
        for bad in [
            "/download/dev/cap/other.zip",
            "/download/dev/../files.zip",
            "/download/dev//files.zip",
            "/download/dev/a%2Fb/files.zip",
            "/download/dev/cap/files.zip/",
            "/download/dev/cap/x/files.zip",
            "/download/Dev/cap/files.zip",
            "/files/dev",
            "/files/dev/cap/extra",
        ] {
            assert_eq!(parse_route(bad), Err(RouteError::Malformed), "{bad}");
        }
        assert_eq!(parse_route("/nothing"), Err(RouteError::NotFound));
        assert_eq!(parse_route("/"), Err(RouteError::NotFound));
    }
}
