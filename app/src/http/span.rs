//! Each request in a span of its own (its request id, and the user and cluster once known),
//! its `X-Request-ID` echoed, and what counts and logs it when its body ends handed to the
//! server in the response's extensions.

use std::sync::Arc;
use std::time::Instant;

use warp::http::{HeaderMap, HeaderValue, Method};

use crate::observe::{Answered, Metrics, RequestEnd};
use crate::server::EndHook;

/// The longest `X-Request-ID` taken from a request; a longer or non-printable one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// A request being answered: its id, its span, when it came.
pub(crate) struct RequestSpan {
    id: String,
    /// The span the request is answered in.
    pub(crate) span: tracing::Span,
    started: Instant,
}

impl RequestSpan {
    /// The request's span, with its id (from `X-Request-ID`, or a new one).
    pub(crate) fn start(headers: &HeaderMap) -> Self {
        let id = request_id(headers);
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            user = tracing::field::Empty,
            cluster = tracing::field::Empty
        );
        Self {
            id,
            span,
            started: Instant::now(),
        }
    }

    /// Echoes the request id and hands the server what counts and logs the request when its
    /// body ends (`route`: its template; `format`: what a download serves).
    pub(crate) fn finish(
        self,
        mut response: warp::reply::Response,
        metrics: Arc<Metrics>,
        method: Method,
        route: &'static str,
        format: Option<&'static str>,
    ) -> warp::reply::Response {
        if let Ok(v) = HeaderValue::from_str(&self.id) {
            response.headers_mut().insert("x-request-id", v);
        }
        // Only a download that answers with a body is counted in flight and in bytes.
        let format = format.filter(|_| response.status().is_success());
        let answered = Answered {
            method,
            route,
            format,
            status: response.status(),
            started: self.started,
        };
        let end = RequestEnd::new(metrics, self.span, answered);
        response.extensions_mut().insert(EndHook::new(end));
        response
    }
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
