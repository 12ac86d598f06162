//! A kube client for one cluster, with the cluster's name for messages.

use kube::Client;

use crate::error::Error;

/// A kube client and what to call its cluster in messages.
#[derive(Clone)]
pub struct ClusterClient {
    /// The client.
    pub client: Client,
    /// A client with the same server and CA but no credentials, for requests that carry the
    /// caller's own token (AuthenticationReview).
    pub anonymous: Client,
    /// `cluster` for the local one, else the managed cluster's id.
    pub name: String,
    /// True when requests go through Voltron.
    pub via_voltron: bool,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("name", &self.name)
            .field("via_voltron", &self.via_voltron)
            .finish()
    }
}

impl ClusterClient {
    /// A client from a kube configuration.
    pub fn from_config(
        mut config: kube::Config,
        name: &str,
        via_voltron: bool,
    ) -> Result<Self, Error> {
        // A 503 or 429 is answered at once (the client may retry) rather than retried here
        // for as long as kube's backoff lasts while the caller waits.
        config.default_retry = false;
        let mut anonymous_config = config.clone();
        anonymous_config.auth_info = kube::config::AuthInfo::default();
        let build = |c: kube::Config| {
            Client::try_from(c).map_err(|e| Error::Config {
                cluster: name.into(),
                reason: "the client could not be built".into(),
                source: Some(Box::new(e)),
            })
        };
        Ok(Self {
            client: build(config)?,
            anonymous: build(anonymous_config)?,
            name: name.into(),
            via_voltron,
        })
    }

    /// Where this cluster is, for messages: `the local cluster` or `managed cluster {id}`.
    pub fn place(&self) -> String {
        if self.via_voltron {
            format!("managed cluster {}", self.name)
        } else {
            "the local cluster".into()
        }
    }

    /// Wraps a kube error with what was being done.
    pub fn err(
        &self,
        action: impl Into<String>,
        source: kube::Error,
    ) -> packetcapture_domain::Error {
        Error::Request {
            action: action.into(),
            cluster: self.place(),
            source,
        }
        .into_domain(self.via_voltron)
    }

    /// An answer that cannot be used.
    pub fn unexpected(
        &self,
        action: impl Into<String>,
        reason: impl Into<String>,
    ) -> packetcapture_domain::Error {
        Error::Unexpected {
            action: action.into(),
            cluster: self.place(),
            reason: reason.into(),
        }
        .into_domain(self.via_voltron)
    }
}
