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
use packetcapture_domain::pcap::Window;
use packetcapture_domain::{
    BaseName, BearerToken, CaptureRef, CaptureService, ClusterId, ClusterTarget, Compression,
    Download, Error, Impersonation, Listing, NodeFile, NodeName, Request, Selection, printable,
};
use serde::Serialize;
use warp::Filter;
use warp::http::header::{
    ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE, WWW_AUTHENTICATE,
};
use warp::http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::observe::{Answered, EndHook, Metrics, RequestEnd};
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

/// The OpenAPI document of every route (`GET /openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// The longest `X-Request-ID` taken from a request; a longer or non-printable one is replaced.
const MAX_REQUEST_ID: usize = 128;

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
                async move { observed(&edge, method, path.as_str(), &headers, &query).await }
            },
        )
}

/// Answers a request inside its span (request id, and the user and cluster once known), echoes
/// its `X-Request-ID`, and hands the server what counts and logs the request when its body
/// ends.
async fn observed(
    edge: &Edge,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    query: &str,
) -> warp::reply::Response {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let id = request_id(headers);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        user = tracing::field::Empty,
        cluster = tracing::field::Empty
    );
    let parsed = parse_route(path);
    let (route, format) = match &parsed {
        Ok(route) => (route.template(), route.format()),
        Err(_) => ("other", None),
    };
    let mut response = handle(edge, &method, path, parsed, headers, query)
        .instrument(span.clone())
        .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    // Only a download that answers with a body is counted in flight and in bytes.
    let format = format.filter(|_| response.status().is_success());
    let answered = Answered {
        method,
        route,
        format,
        status: response.status(),
        started,
    };
    let end = RequestEnd::new(edge.metrics.clone(), span, answered);
    response.extensions_mut().insert(EndHook::new(end));
    response
}

/// The request's `X-Request-ID` when it is one printable token of at most 128 characters,
/// else a new UUID.
fn request_id(headers: &HeaderMap) -> String {
    let mut values = headers.get_all("x-request-id").iter();
    match (values.next().and_then(|v| v.to_str().ok()), values.next()) {
        (Some(v), None)
            if !v.is_empty()
                && v.len() <= MAX_REQUEST_ID
                && v.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            v.to_owned()
        }
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

/// What a download route serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// `files.zip`: every file, as they are.
    Zip,
    /// `merged.pcapng`: every packet in one file, in time order.
    Pcapng,
}

/// A parsed path.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Health,
    Version,
    OpenApi,
    Download(CaptureRef, Format),
    Files(CaptureRef),
    File(CaptureRef, NodeName, BaseName),
}

impl Route {
    /// The route's template: the `route` label of metrics and logs (never a name from the
    /// path).
    fn template(&self) -> &'static str {
        match self {
            Self::Health => "/health",
            Self::Version => "/version",
            Self::OpenApi => "/openapi.json",
            Self::Download(_, Format::Zip) => "/download/{namespace}/{name}/files.zip",
            Self::Download(_, Format::Pcapng) => "/download/{namespace}/{name}/merged.pcapng",
            Self::Files(_) => "/files/{namespace}/{name}",
            Self::File(..) => "/files/{namespace}/{name}/{node}/{file}",
        }
    }

    /// What a download route serves (the `format` label of the bytes counted).
    fn format(&self) -> Option<&'static str> {
        match self {
            Self::Download(_, Format::Zip) => Some("zip"),
            Self::Download(_, Format::Pcapng) => Some("pcapng"),
            Self::File(..) => Some("file"),
            _ => None,
        }
    }

    /// The methods the route answers.
    fn allowed(&self) -> &'static [Method] {
        match self {
            Self::Files(_) => &[Method::GET, Method::DELETE],
            Self::File(..) => &[Method::GET, Method::HEAD],
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
    /// The request's header fields are larger than the server takes.
    HeadTooLarge,
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
    // Node and file segments may be percent-encoded; what they decode to is checked (a `/`,
    // `..` or NUL is refused), never trusted.
    let decoded = |segment: &str| {
        percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| Failure::MalformedUrl)
    };
    match segments.as_slice() {
        ["health"] => Ok(Route::Health),
        ["version"] => Ok(Route::Version),
        ["openapi.json"] => Ok(Route::OpenApi),
        ["download", ns, name, "files.zip"] => Ok(Route::Download(capture(ns, name)?, Format::Zip)),
        ["download", ns, name, "merged.pcapng"] => {
            Ok(Route::Download(capture(ns, name)?, Format::Pcapng))
        }
        ["download", ..] => Err(Failure::MalformedUrl),
        ["files", ns, name] => Ok(Route::Files(capture(ns, name)?)),
        ["files", ns, name, node, file] => Ok(Route::File(
            capture(ns, name)?,
            NodeName::new(&decoded(node)?).map_err(|_| Failure::MalformedUrl)?,
            BaseName::new(&decoded(file)?).map_err(|_| Failure::MalformedUrl)?,
        )),
        ["files", ..] => Err(Failure::MalformedUrl),
        _ => Err(Failure::NotFound),
    }
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
    if head_size(headers) > crate::server::MAX_HEAD {
        return Err(Failure::HeadTooLarge);
    }
    let route = route?;
    if !route.allowed().contains(method) {
        return Err(Failure::MethodNotAllowed(route.allowed()));
    }
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
        Route::Download(capture, format) => download(edge, capture, format, headers, query).await?,
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
    query: &str,
) -> Result<warp::reply::Response, Error> {
    let pairs = query_pairs(query)?;
    let selection = selection(&pairs)?;
    let request = request(capture, headers)?;
    let download = match format {
        Format::Zip => {
            let compression = compression(&pairs)?;
            edge.service
                .download(&request, compression, &selection)
                .await?
        }
        Format::Pcapng => edge.service.merged(&request, &selection).await?,
    };
    let (stream, content_type, disposition) = match download {
        Download::Empty => return Ok(empty(StatusCode::NO_CONTENT)),
        Download::Zip(zip) => (
            zip,
            "application/zip",
            "attachment; filename=files.zip".to_owned(),
        ),
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
    let body = log_failures(stream, capture, cluster, edge.metrics.clone());
    let mut response = warp::reply::Reply::into_response(warp::reply::stream(body));
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// The whole file (no range, a range to ignore, several ranges, or a stale `If-Range`).
    Whole,
    /// Bytes `start..=end`.
    Part {
        /// The first byte.
        start: u64,
        /// The last byte.
        end: u64,
    },
    /// Nothing of the file is in the range: 416.
    Unsatisfiable,
}

/// Reads `Range` (one `bytes=` range: `a-b`, `a-`, `-n`) against `size` (RFC 9110 section
/// 14). Malformed headers are ignored (the whole file), as are several ranges (answered whole
/// rather than as multipart).
pub fn range_of(value: Option<&str>, size: u64) -> RangeAnswer {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeAnswer::Whole;
    };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Whole;
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            None => RangeAnswer::Whole,
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(_) if size == 0 => RangeAnswer::Unsatisfiable,
            Some(n) => RangeAnswer::Part {
                start: size - n.min(size),
                end: size - 1,
            },
        },
        (start, "") => match number(start) {
            None => RangeAnswer::Whole,
            Some(a) if a >= size => RangeAnswer::Unsatisfiable,
            Some(a) => RangeAnswer::Part {
                start: a,
                end: size - 1,
            },
        },
        (start, end) => match (number(start), number(end)) {
            (Some(a), Some(b)) if b >= a => {
                if a >= size {
                    RangeAnswer::Unsatisfiable
                } else {
                    RangeAnswer::Part {
                        start: a,
                        end: b.min(size - 1),
                    }
                }
            }
            _ => RangeAnswer::Whole,
        },
    }
}

/// The validators of a file: a strong `ETag` once its node finished (the file no longer
/// changes), a weak one while it may grow; and `Last-Modified`.
fn validators(file: &NodeFile) -> (String, Option<String>) {
    let tag = format!("\"{:x}-{:x}\"", file.info.size, file.info.modified);
    let etag = if file.finished {
        tag
    } else {
        format!("W/{tag}")
    };
    let modified = jiff::Timestamp::from_second(file.info.modified)
        .ok()
        .map(|t| jiff::fmt::rfc2822::DateTimePrinter::new().timestamp_to_rfc9110_string(&t))
        .and_then(Result::ok);
    (etag, modified)
}

/// True when `If-Range` still describes the file: a strong entity tag that matches, or the
/// exact `Last-Modified` of a finished file (a date is only as strong as the file is still).
fn if_range_holds(value: &str, etag: &str, modified: Option<&str>, finished: bool) -> bool {
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return !etag.starts_with("W/") && value == etag;
    }
    finished && modified == Some(value)
}

/// Serves one file: whole, or the range asked for.
async fn serve_file(
    request: &Request,
    file: NodeFile,
    headers: &HeaderMap,
    head: bool,
    metrics: Arc<Metrics>,
) -> Result<warp::reply::Response, Error> {
    let size = file.info.size;
    let (etag, modified) = validators(&file);
    let range = single(headers, RANGE.as_str())?;
    let if_range = single(headers, IF_RANGE.as_str())?;
    let mut answer = range_of(range.as_deref(), size);
    if let Some(condition) = &if_range
        && !if_range_holds(condition, &etag, modified.as_deref(), file.finished)
    {
        answer = RangeAnswer::Whole;
    }
    let (status, start, len) = match answer {
        RangeAnswer::Whole => (StatusCode::OK, 0, size),
        RangeAnswer::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        RangeAnswer::Unsatisfiable => {
            let mut response = text(
                StatusCode::RANGE_NOT_SATISFIABLE,
                &format!("the range is outside the file's {size} bytes"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(CONTENT_RANGE, v);
            }
            return Ok(response);
        }
    };
    // HEAD: the same headers, and no read on the node.
    let mut response = if head {
        Response::new(warp::hyper::body::Bytes::new().into())
    } else {
        let stream = file.read(start, len).await?;
        let capture = request.capture.to_string();
        let cluster = request.cluster.to_string();
        let name = file.info.name.clone();
        let body = stream.map(move |item| {
            item.inspect_err(|e| {
                metrics.count_node_failure("file_read");
                tracing::warn!(capture = %capture, cluster = %cluster, file = %name, error = %packetcapture_domain::error::chain(e), "file transfer aborted after the status line was sent");
            })
        });
        // warp's bodies must be Sync; a stream is polled by one task at a time, which
        // SyncStream states without a lock.
        let body = sync_wrapper::SyncStream::new(body);
        warp::reply::Reply::into_response(warp::reply::stream(body))
    };
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.tcpdump.pcap"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    if let Some(v) = modified.and_then(|m| HeaderValue::from_str(&m).ok()) {
        h.insert(LAST_MODIFIED, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        file.info.name.replace(['"', '\\'], "_")
    )) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
    {
        h.insert(CONTENT_RANGE, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Logs a failure of the body after the status line was sent; the `Err` item then makes hyper
/// abort the connection, so the client sees a failed transfer.
fn log_failures(
    zip: impl Stream<Item = Result<Bytes, Error>> + Send + Sync + 'static,
    capture: String,
    cluster: String,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = Result<Bytes, Error>> + Send + Sync + 'static {
    zip.map(move |item| {
        if let Err(e) = &item {
            metrics.node_failure(e);
            tracing::warn!(capture = %capture, cluster = %cluster, error = %e.chain(), "download aborted after the status line was sent");
        }
        item
    })
}

/// The query's `key=value` pairs, in order.
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, Error> {
    serde_urlencoded::from_str(query).map_err(|_| Error::InvalidName {
        what: "query",
        value: printable(query),
        rule: "a URL-encoded query",
    })
}

/// Reads `?node=` (repeatable) and `?since=`/`?until=` (RFC 3339, fractional seconds
/// allowed; since inclusive, until exclusive).
fn selection(pairs: &[(String, String)]) -> Result<Selection, Error> {
    let nodes = pairs
        .iter()
        .filter(|(k, _)| k == "node")
        .map(|(_, v)| NodeName::new(v.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let instant = |key: &'static str| -> Result<Option<(u64, String)>, Error> {
        let Some((_, value)) = pairs.iter().rev().find(|(k, _)| k == key) else {
            return Ok(None);
        };
        let invalid = || Error::InvalidName {
            what: key,
            value: printable(value),
            rule: "an RFC 3339 time such as 2026-11-30T10:00:00Z or 2026-11-30T11:00:00.5+01:00",
        };
        let ts: jiff::Timestamp = value.trim().parse().map_err(|_| invalid())?;
        let nanos = u64::try_from(ts.as_nanosecond()).map_err(|_| invalid())?;
        Ok(Some((nanos, value.clone())))
    };
    let since = instant("since")?;
    let until = instant("until")?;
    if let (Some((s, since)), Some((u, until))) = (&since, &until)
        && s >= u
    {
        return Err(Error::EmptyWindow {
            since: printable(since),
            until: printable(until),
        });
    }
    Ok(Selection {
        nodes,
        window: Window {
            since: since.map(|(n, _)| n),
            until: until.map(|(n, _)| n),
        },
    })
}

/// Reads `?compression=`: `stored` (or `none`, the default) or `deflate`, any case.
fn compression(pairs: &[(String, String)]) -> Result<Compression, Error> {
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
    tracing::Span::current().record("cluster", tracing::field::display(&cluster));
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

/// The size of a header list as HTTP/2 counts it (RFC 9113 §6.5.2): name, value and 32 bytes
/// per field.
fn head_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// The status for a failure: the one place that decides it. Exhaustive over the domain's
/// errors, so a new variant does not compile until it has a status.
pub fn status_of(failure: &Failure) -> StatusCode {
    let error = match failure {
        Failure::NotFound => return StatusCode::NOT_FOUND,
        Failure::MalformedUrl => return StatusCode::BAD_REQUEST,
        Failure::MethodNotAllowed(_) => return StatusCode::METHOD_NOT_ALLOWED,
        Failure::HeadTooLarge => return StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        Failure::Domain(error) => error,
    };
    match error {
        Error::InvalidName { .. }
        | Error::MissingImpersonationUser
        | Error::NodeNotInCapture { .. }
        | Error::EmptyWindow { .. }
        | Error::TooManyStreams { .. } => StatusCode::BAD_REQUEST,
        Error::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
        Error::ImpersonationDenied { .. } | Error::Forbidden { .. } => StatusCode::FORBIDDEN,
        Error::ClusterNotFound { .. }
        | Error::CaptureNotFound { .. }
        | Error::FileNotFound { .. } => StatusCode::NOT_FOUND,
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
        | Error::NotACapture { .. }
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
        Failure::HeadTooLarge => format!(
            "request header fields are larger than {} KiB: send fewer or shorter headers",
            crate::server::MAX_HEAD / 1024
        ),
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
        Failure::NotFound | Failure::MalformedUrl | Failure::HeadTooLarge => {}
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
    /// Where this one file is served (with Range): `/files/{ns}/{name}/{node}/{file}`.
    path: String,
}

/// Characters escaped in a path segment: everything but unreserved ones.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl From<Listing> for ListingBody {
    fn from(l: Listing) -> Self {
        let (ns, name) = (l.capture.namespace.to_string(), l.capture.name.to_string());
        Self {
            nodes: l
                .nodes
                .into_iter()
                .map(|n| {
                    let node = n.dir.node().to_string();
                    NodeBody {
                        state: n.state.map(|s| s.as_str().to_owned()),
                        directory: n.dir.path().to_owned(),
                        files: n
                            .files
                            .into_iter()
                            .map(|f| FileBody {
                                path: format!(
                                    "/files/{ns}/{name}/{node}/{}",
                                    percent_encoding::utf8_percent_encode(&f.name, SEGMENT)
                                ),
                                name: f.name,
                                size: f.size,
                                modified: jiff::Timestamp::from_second(f.modified)
                                    .map(|t| t.to_string())
                                    .unwrap_or_default(),
                            })
                            .collect(),
                        node,
                    }
                })
                .collect(),
            namespace: ns,
            name,
            cluster: l.cluster,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_has_every_route_with_its_methods_and_nothing_else() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let c = || CaptureRef::parse("dev", "cap").unwrap();
        let node = || NodeName::new("node-1").unwrap();
        let file = || BaseName::new("a.pcap").unwrap();
        let routes = [
            Route::Health,
            Route::Version,
            Route::OpenApi,
            Route::Download(c(), Format::Zip),
            Route::Download(c(), Format::Pcapng),
            Route::Files(c()),
            Route::File(c(), node(), file()),
        ];
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), routes.len(), "{:?}", paths.keys());
        for route in &routes {
            let item = paths
                .get(route.template())
                .unwrap_or_else(|| panic!("{} is not in the document", route.template()));
            let mut documented: Vec<String> = item
                .as_object()
                .unwrap()
                .keys()
                .map(|m| m.to_ascii_uppercase())
                .collect();
            documented.sort();
            let mut answered: Vec<String> = route.allowed().iter().map(|m| m.to_string()).collect();
            answered.sort();
            assert_eq!(documented, answered, "{}", route.template());
        }
    }

    #[test]
    fn paths_parse_strictly() {
        let c = |ns: &str, n: &str| CaptureRef::parse(ns, n).unwrap();
        assert_eq!(
            parse_route("/download/dev/cap/files.zip").ok(),
            Some(Route::Download(c("dev", "cap"), Format::Zip))
        );
        assert_eq!(
            parse_route("/download/dev/cap/merged.pcapng").ok(),
            Some(Route::Download(c("dev", "cap"), Format::Pcapng))
        );
        assert_eq!(
            parse_route("/files/dev/cap/node-1/web%20a_cali1-17.pcap").ok(),
            Some(Route::File(
                c("dev", "cap"),
                NodeName::new("node-1").unwrap(),
                BaseName::new("web a_cali1-17.pcap").unwrap()
            ))
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
            "/download/dev/cap/merged.pcap",
            "/files/dev/cap/node-1/..",
            "/files/dev/cap/node-1/.",
            "/files/dev/cap/node-1/a%2Fb.pcap",
            "/files/dev/cap/node-1/a%00.pcap",
            "/files/dev/cap/node-1/%ff.pcap",
            "/files/dev/cap/node-1/",
            "/files/dev/cap/Node_1/a.pcap",
            "/files/dev/cap/node-1/a.pcap/x",
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

    fn compression_of(query: &str) -> Result<Compression, Error> {
        compression(&query_pairs(query)?)
    }

    #[test]
    fn compression_is_stored_unless_deflate_is_asked() {
        assert_eq!(compression_of("").unwrap(), Compression::Stored);
        assert_eq!(
            compression_of("compression=DEFLATE").unwrap(),
            Compression::Deflate
        );
        assert_eq!(
            compression_of("compression=none").unwrap(),
            Compression::Stored
        );
        assert!(compression_of("compression=zstd").is_err());
    }

    fn selection_of(query: &str) -> Result<Selection, Error> {
        selection(&query_pairs(query)?)
    }

    #[test]
    fn selection_reads_nodes_and_an_rfc3339_window() {
        let s = selection_of("node=node-1&node=node-2&since=2026-11-30T10:00:00Z&until=2026-11-30T11:00:00.5%2B01:00").unwrap();
        assert_eq!(s.nodes.len(), 2);
        let ten = 1_796_032_800u64 * 1_000_000_000;
        assert_eq!(s.window.since, Some(ten));
        assert_eq!(
            s.window.until,
            Some(ten + 500_000_000),
            "11:00:00.5 at +01:00 is 10:00:00.5 UTC"
        );
        assert_eq!(selection_of("").unwrap(), Selection::default());
        for bad in [
            "node=Node_1",
            "since=yesterday",
            "until=2026-11-30",
            "since=2026-11-30T10:00:00",
        ] {
            assert!(
                matches!(selection_of(bad), Err(Error::InvalidName { .. })),
                "{bad}"
            );
        }
        for reversed in [
            "since=2026-11-30T11:00:00Z&until=2026-11-30T10:00:00Z",
            "since=2026-11-30T10:00:00Z&until=2026-11-30T10:00:00Z",
        ] {
            assert!(
                matches!(selection_of(reversed), Err(Error::EmptyWindow { .. })),
                "{reversed}"
            );
        }
    }

    #[test]
    fn ranges_read_as_rfc_9110_says() {
        use RangeAnswer::{Part, Unsatisfiable, Whole};
        let r = |v: &str, size| range_of(Some(v), size);
        assert_eq!(range_of(None, 100), Whole);
        assert_eq!(r("bytes=0-9", 100), Part { start: 0, end: 9 });
        assert_eq!(r("bytes=90-200", 100), Part { start: 90, end: 99 });
        assert_eq!(r("bytes=50-", 100), Part { start: 50, end: 99 });
        assert_eq!(r("bytes=-10", 100), Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-500", 100), Part { start: 0, end: 99 });
        assert_eq!(r("bytes=100-", 100), Unsatisfiable);
        assert_eq!(r("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(r("bytes=-0", 100), Unsatisfiable);
        assert_eq!(r("bytes=0-", 0), Unsatisfiable);
        assert_eq!(r("bytes=-5", 0), Unsatisfiable);
        for ignored in [
            "bytes=9-1",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=",
            "bytes=--1",
            "bytes=+1-2",
        ] {
            assert_eq!(r(ignored, 100), Whole, "{ignored}");
        }
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let date = "Tue, 14 Nov 2023 22:13:20 GMT";
        assert!(if_range_holds("\"a-b\"", "\"a-b\"", Some(date), true));
        assert!(!if_range_holds("\"a-c\"", "\"a-b\"", Some(date), true));
        assert!(
            !if_range_holds("W/\"a-b\"", "W/\"a-b\"", Some(date), false),
            "weak never matches"
        );
        assert!(if_range_holds(date, "\"a-b\"", Some(date), true));
        assert!(
            !if_range_holds(date, "W/\"a-b\"", Some(date), false),
            "a growing file's date is weak"
        );
        assert!(!if_range_holds(
            "Wed, 15 Nov 2023 22:13:20 GMT",
            "\"a-b\"",
            Some(date),
            true
        ));
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
            let result = compression_of(&query);
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
