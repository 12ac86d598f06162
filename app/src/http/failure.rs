//! Why a request failed, and the one mapping of failures to statuses: nothing else in the
//! workspace knows HTTP status codes, and here only [`status_of`] chooses one for a failure.

use packetcapture_domain::Error;
use warp::http::header::{ALLOW, CONTENT_RANGE, RETRY_AFTER, WWW_AUTHENTICATE};
use warp::http::{HeaderValue, Method, StatusCode};

use super::body::text;
use crate::server::MAX_HEAD;

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
    /// A query parameter the route does not take; the ones it takes.
    UnknownParameter {
        /// The parameter, escaped.
        name: String,
        /// What the route takes.
        takes: Vec<&'static str>,
    },
    /// A query parameter given twice that the route takes once.
    RepeatedParameter {
        /// The parameter.
        name: &'static str,
    },
    /// A `Range` that holds nothing of a file of `size` bytes.
    RangeNotSatisfiable {
        /// The file's size.
        size: u64,
    },
    /// The use case failed.
    Domain(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Domain(e)
    }
}

/// The status for a failure: the one place that decides it. Exhaustive over the domain's
/// errors, so a new variant does not compile until it has a status.
pub fn status_of(failure: &Failure) -> StatusCode {
    let error = match failure {
        Failure::NotFound => return StatusCode::NOT_FOUND,
        Failure::MalformedUrl
        | Failure::UnknownParameter { .. }
        | Failure::RepeatedParameter { .. } => return StatusCode::BAD_REQUEST,
        Failure::MethodNotAllowed(_) => return StatusCode::METHOD_NOT_ALLOWED,
        Failure::HeadTooLarge => return StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        Failure::RangeNotSatisfiable { .. } => return StatusCode::RANGE_NOT_SATISFIABLE,
        Failure::Domain(error) => error,
    };
    match error {
        Error::InvalidName { .. }
        | Error::MissingImpersonationUser
        | Error::NodeNotInCapture { .. }
        | Error::EmptyWindow { .. }
        | Error::BadFilter { .. }
        | Error::TooManyStreams { .. } => StatusCode::BAD_REQUEST,
        Error::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::CannotFollow => StatusCode::NOT_IMPLEMENTED,
        Error::SpoolExhausted { .. } => StatusCode::INSUFFICIENT_STORAGE,
        Error::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
        Error::ImpersonationDenied { .. } | Error::Forbidden { .. } => StatusCode::FORBIDDEN,
        Error::ClusterNotFound { .. }
        | Error::CaptureNotFound { .. }
        | Error::FileNotFound { .. } => StatusCode::NOT_FOUND,
        Error::CaptureNotFinished { .. }
        | Error::CaptureStateUnknown { .. }
        | Error::FileChanged { .. } => StatusCode::CONFLICT,
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
        // A full spool directory is the server's storage; anything else, a passing failure.
        Error::Spool { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        Error::Spool { .. } => StatusCode::SERVICE_UNAVAILABLE,
        // A client that left is answered nothing; counted as the server's, should it be.
        Error::ZipWrite { .. } | Error::ClientGone | Error::Internal(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// The one-line message the client reads.
pub(crate) fn message_of(failure: &Failure, status: StatusCode) -> String {
    match failure {
        Failure::NotFound => "not found".into(),
        Failure::MalformedUrl => "request URL is malformed".into(),
        Failure::MethodNotAllowed(_) => "method not allowed".into(),
        Failure::HeadTooLarge => format!(
            "request header fields are larger than {} KiB: send fewer or shorter headers",
            MAX_HEAD / 1024
        ),
        Failure::RangeNotSatisfiable { size } => {
            format!("the range is outside the download's {size} bytes")
        }
        Failure::UnknownParameter { name, takes } if takes.is_empty() => {
            format!("unknown query parameter \"{name}\": this route takes none")
        }
        Failure::UnknownParameter { name, takes } => format!(
            "unknown query parameter \"{name}\": this route takes {}",
            takes.join(", ")
        ),
        Failure::RepeatedParameter { name } => {
            format!("query parameter \"{name}\" is given more than once; give it once")
        }
        Failure::Domain(_) if status == StatusCode::INTERNAL_SERVER_ERROR => {
            "internal server error".into()
        }
        Failure::Domain(error) => error.to_string(),
    }
}

pub(crate) fn error_response(
    failure: &Failure,
    method: &Method,
    path: &str,
) -> warp::reply::Response {
    let status = status_of(failure);
    let mut response = text(status, &message_of(failure, status));
    if let Failure::Domain(error) = failure {
        if status.is_server_error() {
            tracing::warn!(%method, path, status = status.as_u16(), error = %error.chain(), "request failed");
        } else {
            tracing::info!(%method, path, status = status.as_u16(), error = %error.chain(), "request refused");
        }
    }
    match failure {
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
        Failure::RangeNotSatisfiable { size } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(CONTENT_RANGE, v);
            }
        }
        Failure::Domain(Error::Busy { retry_after, .. }) => {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
        }
        Failure::Domain(_)
        | Failure::NotFound
        | Failure::MalformedUrl
        | Failure::HeadTooLarge
        | Failure::UnknownParameter { .. }
        | Failure::RepeatedParameter { .. } => {}
    }
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(kind: std::io::ErrorKind) -> Failure {
        Failure::Domain(Error::Spool {
            action: "write to the spool file",
            source: std::io::Error::new(kind, "/spool: the cause"),
        })
    }

    #[test]
    fn a_full_spool_directory_is_507_and_other_spool_failures_503() {
        assert_eq!(
            status_of(&spool(std::io::ErrorKind::StorageFull)),
            StatusCode::INSUFFICIENT_STORAGE
        );
        assert_eq!(
            status_of(&spool(std::io::ErrorKind::PermissionDenied)),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
