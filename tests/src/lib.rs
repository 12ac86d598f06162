//! A simulated Calico Enterprise cluster that speaks the real protocols, for tests and demos.
//!
//! Kubernetes API servers (HTTPS, bearer tokens, RBAC on every request, discovery, pods,
//! WebSocket exec of real commands, PacketCaptures, ManagedClusters, TokenReview,
//! AuthenticationReview, SubjectAccessReview), Voltron routing by `x-cluster-id`, and Dex; all on
//! loopback, driven by a [`scenario::Scenario`], with fault knobs and live captures
//! ([`live`]). Unmodified clients (kube-rs,
//! `kubectl`) work against it. It needs nothing from the service's crates.

pub mod apiserver;
pub mod cluster;
pub mod dex;
pub mod exec;
pub mod http;
pub mod live;
pub mod pcap;
pub mod pki;
pub mod rbac;
pub mod scenario;
pub mod sim;
pub mod voltron;

pub use scenario::Scenario;
pub use sim::Sim;
