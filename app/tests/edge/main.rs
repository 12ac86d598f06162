//! Edge tests, one binary: every row of SPEC sections 2 to 6 through the HTTP layer, with the
//! domain's fakes and mocks behind it; and the HTTPS server on a loopback socket.
#![allow(clippy::unwrap_used, missing_docs)]

mod hygiene;
mod routes;
mod support;
mod tls;
