//! Kubernetes adapter: token and authentication reviews, SubjectAccessReviews, PacketCaptures,
//! entry pods; kube-rs over the wire, converted to domain values here.
//!
//! Boundary: everything that speaks to a Kubernetes API server, except exec (the fluentd-exec
//! adapter) and Voltron routing (the voltron adapter, which builds clients with [`client`]).

pub mod authn;
pub mod authz;
pub mod captures;
pub mod client;
pub mod error;
pub mod pods;

pub use authn::{AuthenticationReviewAuthenticator, TokenReviewAuthenticator};
pub use authz::SubjectAccessReviewAuthorizer;
pub use captures::PacketCaptureLocator;
pub use client::ClusterClient;
pub use error::Error;
pub use pods::{ContainerName, EntryPodConfig, EntryPods, LabelSelector};
