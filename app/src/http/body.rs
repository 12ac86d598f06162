//! Response bodies: one line of text for errors, JSON answers (the listing's wire format), an
//! empty body.

use packetcapture_domain::Listing;
use serde::Serialize;
use warp::http::header::CONTENT_TYPE;
use warp::http::{HeaderValue, Response, StatusCode};

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
