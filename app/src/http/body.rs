//! Response bodies: one line of text for errors, JSON answers (the listing's wire format), an
//! empty body, and a download's body that logs how it ended.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::Stream;
use packetcapture_domain::{Error, Listing, Summary};
use serde::Serialize;
use warp::http::header::CONTENT_TYPE;
use warp::http::{HeaderValue, Response, StatusCode};

use crate::observe::Metrics;

/// How every zip is named to the browser.
pub(crate) const ZIP_DISPOSITION: &str = "attachment; filename=files.zip";

pub(crate) fn text(status: StatusCode, message: &str) -> warp::reply::Response {
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

pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> warp::reply::Response {
    let mut response = warp::reply::Reply::into_response(warp::reply::json(value));
    *response.status_mut() = status;
    response
}

pub(crate) fn empty(status: StatusCode) -> warp::reply::Response {
    let mut response = Response::new(warp::hyper::body::Bytes::new().into());
    *response.status_mut() = status;
    response
}

/// The listing's wire format.
#[derive(Debug, Serialize)]
pub(crate) struct ListingBody {
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

/// Logs how the body ended when it did not end whole: a failure after the status line was
/// sent (the `Err` item then makes hyper abort the connection, so the client sees a failed
/// transfer), or the client leaving (hyper then drops the body without polling it to its end).
/// A filtered merge that ends whole logs and counts the packets it read and kept.
pub(crate) fn log_failures(
    zip: impl Stream<Item = Result<Bytes, Error>> + Send + Sync + 'static,
    capture: String,
    cluster: String,
    metrics: Arc<Metrics>,
    filtered: Option<Arc<OnceLock<Summary>>>,
) -> impl Stream<Item = Result<Bytes, Error>> + Send + Sync + 'static {
    Watched {
        inner: Box::pin(zip),
        capture,
        cluster,
        metrics,
        filtered,
        span: tracing::Span::current(),
        ended: false,
    }
}

/// A download's body that logs its end unless it is the end of the stream.
struct Watched<S> {
    inner: std::pin::Pin<Box<S>>,
    capture: String,
    cluster: String,
    metrics: Arc<Metrics>,
    /// A filtered merge's summary, once it is done.
    filtered: Option<Arc<OnceLock<Summary>>>,
    /// The request's span: the lines below carry its id.
    span: tracing::Span,
    /// The stream ended, or failed and said so: nothing left to log on drop.
    ended: bool,
}

impl<S: Stream<Item = Result<Bytes, Error>>> Stream for Watched<S> {
    type Item = Result<Bytes, Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.inner.as_mut().poll_next(cx));
        let span = self.span.clone();
        let _entered = span.enter();
        match &item {
            None => {
                self.ended = true;
                if let Some(summary) = self.filtered.as_ref().and_then(|s| s.get()) {
                    self.metrics.filtered(summary.read, summary.packets);
                    tracing::info!(capture = %self.capture, cluster = %self.cluster, packets_read = summary.read, packets_kept = summary.packets, "filtered merge");
                }
            }
            Some(Err(Error::ClientGone)) => {
                self.ended = true;
                tracing::info!(capture = %self.capture, cluster = %self.cluster, "the client left during the download");
            }
            Some(Err(e)) => {
                self.ended = true;
                self.metrics.node_failure(e);
                tracing::warn!(capture = %self.capture, cluster = %self.cluster, error = %e.chain(), "download aborted after the status line was sent");
            }
            Some(Ok(_)) => {}
        }
        std::task::Poll::Ready(item)
    }
}

impl<S> Drop for Watched<S> {
    fn drop(&mut self) {
        let _entered = self.span.enter();
        if !self.ended {
            tracing::info!(capture = %self.capture, cluster = %self.cluster, "the client left during the download");
        }
    }
}
