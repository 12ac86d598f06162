//! The adapter's errors, and their conversion to domain errors at the port boundary.

use packetcapture_domain::Backend;

/// What went wrong talking to a Kubernetes API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request failed.
    #[error("the API server request failed")]
    Request {
        /// What was being done, e.g. `create tokenreview`.
        action: String,
        /// Where: `the local cluster` or `managed cluster {id}`.
        cluster: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// The client could not be configured (kubeconfig, service account, CA).
    #[error("cannot configure the Kubernetes client for {cluster}: {reason}")]
    Config {
        /// The cluster's name.
        cluster: String,
        /// What is wrong.
        reason: String,
        /// The cause, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The server answered something this adapter cannot use.
    #[error("unexpected answer: {reason}")]
    Unexpected {
        /// What was being done.
        action: String,
        /// The cluster's name.
        cluster: String,
        /// What was wrong with the answer.
        reason: String,
    },
}

impl Error {
    /// True when retrying later may help: the server was unreachable or overloaded.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Request {
                source: kube::Error::Api(s),
                ..
            } => matches!(s.code, 429 | 502 | 503 | 504),
            Self::Request {
                source: kube::Error::HyperError(_) | kube::Error::Service(_),
                ..
            } => true,
            _ => false,
        }
    }

    /// Which backend to blame: Voltron for managed clusters reached through it.
    fn backend(&self, via_voltron: bool) -> Backend {
        if via_voltron {
            Backend::Voltron
        } else {
            Backend::Kubernetes
        }
    }

    /// Converts to a domain error; `via_voltron` when the cluster is reached through Voltron.
    pub fn into_domain(self, via_voltron: bool) -> packetcapture_domain::Error {
        let backend = self.backend(via_voltron);
        let action = match &self {
            Self::Request {
                action, cluster, ..
            }
            | Self::Unexpected {
                action, cluster, ..
            } => {
                format!("{action} in {cluster}")
            }
            Self::Config { cluster, .. } => format!("configure the client for {cluster}"),
        };
        if self.is_transient() {
            packetcapture_domain::Error::unavailable(backend, action, self)
        } else {
            packetcapture_domain::Error::backend(backend, action, self)
        }
    }
}
