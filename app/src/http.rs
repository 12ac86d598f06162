//! The HTTP edge: routes, request parsing, and the one mapping of failures to statuses.
//!
//! Nothing else in the workspace knows HTTP status codes, and here only [`status_of`] chooses
//! one for a failure. The path is parsed (and refused with 400) before any authentication;
//! headers and query values are parsed into typed values before they reach the domain.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use packetcapture_domain::{
    BearerToken, CaptureRef, CaptureService, ClusterId, ClusterTarget, Compression, Download,
    Error, Impersonation, Listing, Request, printable,
};
use serde::Serialize;
use warp::Filter;
use warp::http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use warp::http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::version::VersionInfo;

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

impl Route {
    /// The methods the route answers.
    fn allowed(&self) -> &'static [Method] {
        match self {
            Self::Files(_) => &[Method::GET, Method::DELETE],
            _ => &[Method::GET],
        }
    }
}

/// Why a request failed: at the edge (path, method) or in the use case.
#[derive(Debug)]
pub enum Failure {
    /// No such route.
    NotFound,
    /// A known route with a malformed path.
    MalformedUrl,
    /// A known route with another method; the methods it answers.
    MethodNotAllowed(&'static [Method]),
    /// The use case failed.
    Domain(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Domain(e)
    }
}

fn parse_route(path: &str) -> Result<Route, Failure> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(Failure::NotFound);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let capture =
        |ns: &str, name: &str| CaptureRef::parse(ns, name).map_err(|_| Failure::MalformedUrl);
    match segments.as_slice() {
        ["health"] => Ok(Route::Health),
        ["version"] => Ok(Route::Version),
        ["download", ns, name, "files.zip"] => Ok(Route::Download(capture(ns, name)?)),
        ["download", ..] => Err(Failure::MalformedUrl),
        ["files", ns, name] => Ok(Route::Files(capture(ns, name)?)),
        ["files", ..] => Err(Failure::MalformedUrl),
        _ => Err(Failure::NotFound),
    }
}

async fn handle(
    edge: &Edge,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    query: &str,
) -> warp::reply::Response {
    answer(edge, method, path, headers, query)
        .await
        .unwrap_or_else(|failure| error_response(&failure, method, path))
}

async fn answer(
    edge: &Edge,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    query: &str,
) -> Result<warp::reply::Response, Failure> {
    let route = parse_route(path)?;
    if !route.allowed().contains(method) {
        return Err(Failure::MethodNotAllowed(route.allowed()));
    }
    Ok(match route {
        Route::Health => json(StatusCode::OK, &serde_json::json!({ "status": "Ok" })),
        Route::Version => json(StatusCode::OK, &edge.version),
        Route::Download(capture) => download(edge, capture, headers, query).await?,
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

/// Reads `?compression=`: `stored` (or `none`, the default) or `deflate`, any case.
fn compression(query: &str) -> Result<Compression, Error> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|_| Error::InvalidName {
            what: "query",
            value: printable(query),
            rule: "a URL-encoded query",
        })?;
    let Some((_, value)) = pairs.iter().rev().find(|(k, _)| k == "compression") else {
        return Ok(Compression::Stored);
    };
    match value.to_ascii_lowercase().as_str() {
        "stored" | "none" => Ok(Compression::Stored),
        "deflate" => Ok(Compression::Deflate),
        _ => Err(Error::InvalidName {
            what: "compression",
            value: printable(value),
            rule: "one of stored, deflate",
        }),
    }
}

/// Reads `X-Cluster-ID`: absent, empty or `cluster` is the local cluster; anything else must
/// be a managed cluster's id (a DNS-1123 subdomain).
fn cluster_target(value: Option<&str>) -> Result<ClusterTarget, Error> {
    match value.map(str::trim) {
        None | Some("") | Some(ClusterTarget::LOCAL_ALIAS) => Ok(ClusterTarget::Local),
        Some(id) => ClusterId::new(id).map(ClusterTarget::Managed),
    }
}

/// Reads the cluster, the token and the impersonation headers, in the pipeline's order.
fn request(capture: CaptureRef, headers: &HeaderMap) -> Result<Request, Error> {
    let cluster = cluster_target(single(headers, "x-cluster-id")?.as_deref())?;
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
                value: printable(key),
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

/// The status for a failure: the one place that decides it. Exhaustive over the domain's
/// errors, so a new variant does not compile until it has a status.
pub fn status_of(failure: &Failure) -> StatusCode {
    let error = match failure {
        Failure::NotFound => return StatusCode::NOT_FOUND,
        Failure::MalformedUrl => return StatusCode::BAD_REQUEST,
        Failure::MethodNotAllowed(_) => return StatusCode::METHOD_NOT_ALLOWED,
        Failure::Domain(error) => error,
    };
    match error {
        Error::InvalidName { .. } | Error::MissingImpersonationUser => StatusCode::BAD_REQUEST,
        Error::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
        Error::ImpersonationDenied { .. } | Error::Forbidden { .. } => StatusCode::FORBIDDEN,
        Error::ClusterNotFound { .. } | Error::CaptureNotFound { .. } => StatusCode::NOT_FOUND,
        Error::CaptureNotFinished { .. } | Error::CaptureStateUnknown { .. } => {
            StatusCode::CONFLICT
        }
        Error::ClusterNotConnected { .. }
        | Error::Backend {
            transient: true, ..
        } => StatusCode::SERVICE_UNAVAILABLE,
        Error::InvalidStatus { .. }
        | Error::NoEntryPod { .. }
        | Error::Backend {
            transient: false, ..
        }
        | Error::NodeFiles { .. }
        | Error::TruncatedArchive { .. }
        | Error::NodeStalled { .. }
        | Error::FileUnreadable { .. }
        | Error::StatusConflict { .. } => StatusCode::BAD_GATEWAY,
        Error::Spool { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::ZipWrite { .. } | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The one-line message the client reads.
fn message_of(failure: &Failure, status: StatusCode) -> String {
    match failure {
        Failure::NotFound => "not found".into(),
        Failure::MalformedUrl => "request URL is malformed".into(),
        Failure::MethodNotAllowed(_) => "method not allowed".into(),
        Failure::Domain(_) if status == StatusCode::INTERNAL_SERVER_ERROR => {
            "internal server error".into()
        }
        Failure::Domain(error) => error.to_string(),
    }
}

fn error_response(failure: &Failure, method: &Method, path: &str) -> warp::reply::Response {
    let status = status_of(failure);
    let mut response = text(status, &message_of(failure, status));
    match failure {
        Failure::Domain(error) if status.is_server_error() => {
            tracing::warn!(%method, path, status = status.as_u16(), error = %error.chain(), "request failed");
        }
        Failure::Domain(error) => {
            tracing::info!(%method, path, status = status.as_u16(), error = %error.chain(), "request refused");
        }
        Failure::MethodNotAllowed(allowed) => {
            let allow = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(v) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(ALLOW, v);
            }
        }
        Failure::NotFound | Failure::MalformedUrl => {}
    }
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
                    node: n.dir.node().to_string(),
                    state: n.state.map(|s| s.as_str().to_owned()),
                    directory: n.dir.path().to_owned(),
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
            parse_route("/download/dev/cap/files.zip").ok(),
            Some(Route::Download(c("dev", "cap")))
        );
        assert_eq!(
            parse_route("/files/dev/cap.v2").ok(),
            Some(Route::Files(c("dev", "cap.v2")))
        );
        assert_eq!(parse_route("/health").ok(), Some(Route::Health));
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
            assert!(
                matches!(parse_route(bad), Err(Failure::MalformedUrl)),
                "{bad}"
            );
        }
        assert!(matches!(parse_route("/nothing"), Err(Failure::NotFound)));
        assert!(matches!(parse_route("/"), Err(Failure::NotFound)));
    }

    #[test]
    fn cluster_header_local_aliases_and_validation() {
        assert_eq!(cluster_target(None).unwrap(), ClusterTarget::Local);
        assert_eq!(cluster_target(Some("")).unwrap(), ClusterTarget::Local);
        assert_eq!(
            cluster_target(Some("cluster")).unwrap(),
            ClusterTarget::Local
        );
        assert_eq!(
            cluster_target(Some("east-1")).unwrap(),
            ClusterTarget::Managed(ClusterId::new("east-1").unwrap())
        );
        assert!(cluster_target(Some("a/b")).is_err());
        assert!(cluster_target(Some("a\nb")).is_err());
        assert!(cluster_target(Some(&"a".repeat(300))).is_err());
    }

    #[test]
    fn compression_is_stored_unless_deflate_is_asked() {
        assert_eq!(compression("").unwrap(), Compression::Stored);
        assert_eq!(
            compression("compression=DEFLATE").unwrap(),
            Compression::Deflate
        );
        assert_eq!(
            compression("compression=none").unwrap(),
            Compression::Stored
        );
        assert!(compression("compression=zstd").is_err());
    }

    /// Oracles written from Kubernetes' own definitions, independent of the domain's checks.
    mod oracle {
        pub fn label(s: &str) -> bool {
            let re = regex::Regex::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap();
            s.len() <= 63 && re.is_match(s)
        }

        pub fn subdomain(s: &str) -> bool {
            let re = regex::Regex::new(
                "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
            )
            .unwrap();
            s.len() <= 253 && re.is_match(s) && s.split('.').all(|l| l.len() <= 63)
        }
    }

    /// Path segments and header values, hostile ones likely: from a small alphabet of the
    /// characters that matter, of the lengths where the rules change.
    fn segment() -> impl proptest::strategy::Strategy<Value = String> {
        "[a-z0-9.%/A-Z_\\- ]{0,70}"
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        #[test]
        fn capture_paths_are_accepted_exactly_when_kubernetes_would_name_them_so(
            ns in segment(),
            name in segment(),
            tail in proptest::sample::select(vec!["files.zip", "other.zip", "", "files.zip/"]),
        ) {
            let download = parse_route(&format!("/download/{ns}/{name}/{tail}"));
            let files = parse_route(&format!("/files/{ns}/{name}"));
            let valid = oracle::label(&ns) && oracle::subdomain(&name);
            proptest::prop_assert_eq!(
                download.is_ok(),
                valid && tail == "files.zip",
                "/download/{}/{}/{}", ns, name, tail
            );
            proptest::prop_assert_eq!(files.is_ok(), valid, "/files/{}/{}", ns, name);
            if let Err(f) = download {
                let malformed = matches!(f, Failure::MalformedUrl);
                proptest::prop_assert!(malformed);
            }
        }

        #[test]
        fn cluster_ids_are_local_or_a_subdomain_and_nothing_else(id in proptest::option::of(segment())) {
            let parsed = cluster_target(id.as_deref());
            let given = id.clone().unwrap_or_default();
            let local = id.as_deref().is_none_or(|v| matches!(v.trim(), "" | "cluster"));
            match parsed {
                Ok(ClusterTarget::Local) => proptest::prop_assert!(local),
                Ok(ClusterTarget::Managed(m)) => {
                    proptest::prop_assert!(!local);
                    proptest::prop_assert!(oracle::subdomain(m.as_str()));
                    proptest::prop_assert_eq!(m.as_str(), given.trim());
                }
                Err(e) => {
                    proptest::prop_assert!(!local && !oracle::subdomain(given.trim()));
                    let invalid_name = matches!(e, Error::InvalidName { .. });
                    proptest::prop_assert!(invalid_name);
                }
            }
        }

        #[test]
        fn compression_takes_the_last_value_and_refuses_any_other(query in "[a-zA-Z=&%0-9+.]{0,40}") {
            let pairs: Result<Vec<(String, String)>, _> = serde_urlencoded::from_str(&query);
            let result = compression(&query);
            match pairs {
                Err(_) => proptest::prop_assert!(result.is_err()),
                Ok(pairs) => {
                    let last = pairs.iter().rev().find(|(k, _)| k == "compression");
                    let expected = match last.map(|(_, v)| v.to_ascii_lowercase()) {
                        None => Some(Compression::Stored),
                        Some(v) if v == "stored" || v == "none" => Some(Compression::Stored),
                        Some(v) if v == "deflate" => Some(Compression::Deflate),
                        Some(_) => None,
                    };
                    proptest::prop_assert_eq!(result.ok(), expected);
                }
            }
        }

        #[test]
        fn impersonation_headers_never_panic_and_extras_need_valid_percent_encoding(
            user in proptest::option::of("[ -~]{0,20}"),
            groups in proptest::collection::vec("[ -~]{0,12}", 0..3),
            key in "[a-z0-9%-]{1,12}",
            value in "[ -~]{0,12}",
        ) {
            let mut headers = HeaderMap::new();
            if let Some(u) = &user {
                headers.insert("impersonate-user", HeaderValue::from_str(u).unwrap());
            }
            for g in &groups {
                headers.append("impersonate-group", HeaderValue::from_str(g).unwrap());
            }
            let name = format!("impersonate-extra-{key}");
            let header = warp::http::header::HeaderName::from_bytes(name.as_bytes()).unwrap();
            headers.insert(header, HeaderValue::from_str(&value).unwrap());
            let decoded = percent_encoding::percent_decode_str(&key).decode_utf8();
            match impersonation(&headers) {
                Ok(i) => {
                    proptest::prop_assert_eq!(i.user, user);
                    proptest::prop_assert_eq!(i.groups, groups);
                    let key = decoded.unwrap().to_lowercase();
                    proptest::prop_assert_eq!(i.extra.get(&key), Some(&vec![value]));
                }
                Err(_) => proptest::prop_assert!(decoded.is_err()),
            }
        }
    }
}
