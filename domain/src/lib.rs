//! Domain core of the PacketCapture API: ports, use cases, validated types, archive engine.
//!
//! Boundary: this crate does no network or process IO and knows nothing of Kubernetes
//! clients, HTTP servers or status codes. Adapters implement the [`ports`]; the binary's edge
//! maps [`Error`] to HTTP. With the `test-util` feature, [`testing`] offers mockall mocks and
//! in-memory fakes of every port.

pub mod archive;
pub mod bpf;
pub mod budget;
pub mod cache;
pub mod error;
pub mod expiring;
pub mod pcap;
pub mod ports;
pub mod service;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod types;

pub use archive::{DownloadStream, Engine, FetchOptions, SpoolLimits, SpoolStats, Summary};
pub use budget::{Budget, BudgetLimits, BudgetStats};
pub use error::{Backend, BoxError, Error, Result};
pub use ports::{
    Authenticator, Authorizer, ByteStream, CaptureLocator, ClusterPorts, ClusterRouter,
    FileFetcher, FilterCompiler, SpoolFile, SpoolStorage, StatusUpdate, TarStream,
};
pub use service::{
    CaptureService, Download, Listing, NodeFile, NodeListing, PlannedZip, Request, ZipAsk,
};
pub use types::*;
