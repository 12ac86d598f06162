//! One file, or the planned zip of a finished capture, served whole or in part: `Range` and
//! `If-Range` read as RFC 9110 says, the validators (`ETag`, `Last-Modified`), and the
//! headers; HEAD reads no file on the node.

use std::sync::Arc;

use futures_util::StreamExt;
use packetcapture_domain::{NodeFile, PlannedZip, Request};
use warp::http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    ETAG, IF_RANGE, LAST_MODIFIED, RANGE,
};
use warp::http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::body::{ZIP_DISPOSITION, log_failures};
use super::failure::Failure;
use super::request::single;
use crate::observe::Metrics;

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
pub(crate) fn validators(file: &NodeFile) -> (String, Option<String>) {
    let tag = format!("\"{:x}-{:x}\"", file.info.size, file.info.modified);
    let etag = if file.finished {
        tag
    } else {
        format!("W/{tag}")
    };
    (etag, http_date(file.info.modified))
}

/// True when `If-Range` still describes the file: a strong entity tag that matches, or the
/// exact `Last-Modified` of a finished file (a date is only as strong as the file is still).
pub(crate) fn if_range_holds(
    value: &str,
    etag: &str,
    modified: Option<&str>,
    finished: bool,
) -> bool {
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return !etag.starts_with("W/") && value == etag;
    }
    finished && modified == Some(value)
}

/// What a ranged answer is about: its size and validators.
struct Representation {
    size: u64,
    etag: String,
    modified: Option<String>,
    /// The representation no longer changes (its validators are strong).
    finished: bool,
}

impl Representation {
    /// The status, first byte and length to answer, from `Range` and `If-Range`.
    fn choose(&self, headers: &HeaderMap) -> Result<(StatusCode, u64, u64), Failure> {
        let range = single(headers, RANGE.as_str())?;
        let if_range = single(headers, IF_RANGE.as_str())?;
        let mut answer = range_of(range.as_deref(), self.size);
        if let Some(condition) = &if_range
            && !if_range_holds(
                condition,
                &self.etag,
                self.modified.as_deref(),
                self.finished,
            )
        {
            answer = RangeAnswer::Whole;
        }
        match answer {
            RangeAnswer::Whole => Ok((StatusCode::OK, 0, self.size)),
            RangeAnswer::Part { start, end } => {
                Ok((StatusCode::PARTIAL_CONTENT, start, end - start + 1))
            }
            RangeAnswer::Unsatisfiable => Err(Failure::RangeNotSatisfiable { size: self.size }),
        }
    }

    /// The headers every answer carries: status, length, validators, the range sent.
    fn apply(
        &self,
        response: &mut warp::reply::Response,
        status: StatusCode,
        start: u64,
        len: u64,
    ) {
        *response.status_mut() = status;
        let h = response.headers_mut();
        h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        if let Ok(v) = HeaderValue::from_str(&self.etag) {
            h.insert(ETAG, v);
        }
        if let Some(v) = self
            .modified
            .as_deref()
            .and_then(|m| HeaderValue::from_str(m).ok())
        {
            h.insert(LAST_MODIFIED, v);
        }
        if status == StatusCode::PARTIAL_CONTENT
            && let Ok(v) =
                HeaderValue::from_str(&format!("bytes {start}-{}/{}", start + len - 1, self.size))
        {
            h.insert(CONTENT_RANGE, v);
        }
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
}

/// An HTTP date (RFC 9110) of `secs` since the Unix epoch.
fn http_date(secs: i64) -> Option<String> {
    jiff::Timestamp::from_second(secs)
        .ok()
        .map(|t| jiff::fmt::rfc2822::DateTimePrinter::new().timestamp_to_rfc9110_string(&t))
        .and_then(Result::ok)
}

/// Serves one file: whole, or the range asked for.
pub(crate) async fn serve_file(
    request: &Request,
    file: NodeFile,
    headers: &HeaderMap,
    head: bool,
    metrics: Arc<Metrics>,
) -> Result<warp::reply::Response, Failure> {
    let (etag, modified) = validators(&file);
    let representation = Representation {
        size: file.info.size,
        etag,
        modified,
        finished: file.finished,
    };
    let (status, start, len) = representation.choose(headers)?;
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
    representation.apply(&mut response, status, start, len);
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.tcpdump.pcap"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        file.info.name.replace(['"', '\\'], "_")
    )) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// Serves the planned zip of a finished capture like a static file: its exact length, a
/// strong `ETag`, `Last-Modified`, and the range asked for; HEAD reads no file.
pub(crate) async fn serve_zip(
    request: &Request,
    mut zip: PlannedZip,
    headers: &HeaderMap,
    head: bool,
    metrics: Arc<Metrics>,
) -> Result<warp::reply::Response, Failure> {
    let plan = zip.plan();
    let representation = Representation {
        size: plan.len(),
        etag: plan.etag().to_owned(),
        modified: http_date(i64::try_from(plan.last_modified()).unwrap_or(0)),
        finished: true,
    };
    // A GET without `Range` arrives with its whole zip started (`stream(None)` hands it out);
    // HEAD and ranges start nothing until here.
    let (status, start, len) = representation.choose(headers)?;
    let mut response = if head {
        Response::new(warp::hyper::body::Bytes::new().into())
    } else {
        let range = (status == StatusCode::PARTIAL_CONTENT).then_some(start..start + len);
        let stream = zip.stream(range).await?;
        let body = log_failures(
            stream,
            request.capture.to_string(),
            request.cluster.to_string(),
            metrics,
            None,
        );
        warp::reply::Reply::into_response(warp::reply::stream(body))
    };
    representation.apply(&mut response, status, start, len);
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    h.insert(
        CONTENT_DISPOSITION,
        HeaderValue::from_static(ZIP_DISPOSITION),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
