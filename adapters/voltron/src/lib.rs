//! The voltron adapter: a `ClusterRouter` that reaches managed clusters through Voltron.
//!
//! Each managed cluster gets a kube client pointed at Voltron's multi-cluster forwarding
//! endpoint, trusting Voltron's CA, carrying the service's own credentials and the header
//! `x-cluster-id: {id}` on every request (exec upgrades included). The ManagedCluster is checked
//! in the management (local) cluster first: absent is not found, not connected is unavailable;
//! that answer is cached briefly. Clients are cached, at most [`MAX_CLIENTS`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use packetcapture_domain::expiring::ExpiringCache;
use packetcapture_domain::{
    ClusterId, ClusterPorts, ClusterRouter, ClusterTarget, Error as DomainError, Result,
};
use packetcapture_kubernetes::ClusterClient;
use packetcapture_tls::HttpUrl;
use serde::Deserialize;
use smart_default::SmartDefault;

/// Most managed-cluster clients kept.
pub const MAX_CLIENTS: usize = 64;
/// How long a managed cluster's client is reused before it is built afresh.
pub const CLIENT_TTL: Duration = Duration::from_secs(3600);
/// How long a ManagedCluster check is trusted.
pub const STATUS_TTL: Duration = Duration::from_secs(5);
/// Where Voltron's CA is mounted in the manager's pod.
pub const DEFAULT_CA: &str = "/manager-tls/cert";

/// Voltron settings (`PACKETCAPTURE_API_MULTI_CLUSTER_FORWARDING_*`), with SPEC's defaults.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct VoltronConfig {
    /// Voltron's CA (PEM). `None`: the file mounted at [`DEFAULT_CA`], whose absence only
    /// disables managed clusters; a file set explicitly must be usable.
    pub ca: Option<PathBuf>,
    /// Voltron's multi-cluster forwarding endpoint.
    #[default(_code = "default_endpoint()")]
    pub endpoint: HttpUrl,
}

fn default_endpoint() -> HttpUrl {
    HttpUrl::from_static("https://localhost:9443")
}

impl VoltronConfig {
    /// The CA file to read: the one set, or the default mount.
    pub fn ca_path(&self) -> &Path {
        self.ca.as_deref().unwrap_or(Path::new(DEFAULT_CA))
    }
}

/// Setup failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Voltron's CA could not be read.
    #[error("cannot use Voltron's CA")]
    Ca(#[source] packetcapture_tls::Error),
    /// The endpoint is not usable as a URI.
    #[error("the multi-cluster forwarding endpoint {endpoint} is not a valid URI")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
    },
}

/// Builds a cluster's ports from its client (authorizer, locator, fetcher).
pub type PortsFactory = Arc<dyn Fn(ClusterClient) -> ClusterPorts + Send + Sync>;

/// The ManagedCluster resource.
fn managed_clusters() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("projectcalico.org", "v3", "ManagedCluster"),
        "managedclusters",
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presence {
    Connected,
    Disconnected,
    Absent,
}

/// Routes the local cluster to its ports, and managed clusters through Voltron.
pub struct VoltronRouter {
    local: ClusterPorts,
    management: ClusterClient,
    base: kube::Config,
    factory: PortsFactory,
    clients: ExpiringCache<ClusterId, ClusterPorts>,
    presence: ExpiringCache<ClusterId, Presence>,
}

impl VoltronRouter {
    /// `local`: the local cluster's ports; `management`: its client (for ManagedClusters);
    /// `credentials`: the service's own kube configuration, whose auth is reused for Voltron.
    pub fn new(
        local: ClusterPorts,
        management: ClusterClient,
        credentials: &kube::Config,
        config: &VoltronConfig,
        factory: PortsFactory,
    ) -> std::result::Result<Self, Error> {
        let ca = packetcapture_tls::certificates(config.ca_path())
            .map_err(Error::Ca)?
            .into_iter()
            .map(|der| der.to_vec())
            .collect();
        let endpoint = config.endpoint.as_str();
        let uri: http::Uri = endpoint.parse().map_err(|_| Error::Endpoint {
            endpoint: endpoint.into(),
        })?;
        let mut base = kube::Config::new(uri);
        base.root_cert = Some(ca);
        base.auth_info = credentials.auth_info.clone();
        base.default_namespace = "default".into();
        Ok(Self {
            local,
            management,
            base,
            factory,
            clients: ExpiringCache::new(MAX_CLIENTS),
            presence: ExpiringCache::new(MAX_CLIENTS * 4),
        })
    }

    async fn presence(&self, id: &ClusterId) -> Result<Presence> {
        if let Some(presence) = self.presence.get(id) {
            return Ok(presence);
        }
        let api: Api<DynamicObject> =
            Api::all_with(self.management.client.clone(), &managed_clusters());
        let object = api
            .get_opt(id.as_str())
            .await
            .map_err(|e| self.management.err(format!("get managedcluster {id}"), e))?;
        let presence = match object {
            None => Presence::Absent,
            Some(o) if connected(&o) => Presence::Connected,
            Some(_) => Presence::Disconnected,
        };
        self.presence.insert(id.clone(), presence, STATUS_TTL);
        Ok(presence)
    }

    fn ports(&self, id: &ClusterId) -> Result<ClusterPorts> {
        self.clients.get_or_insert_with(id, CLIENT_TTL, || {
            let mut config = self.base.clone();
            let value = http::HeaderValue::from_str(id.as_str()).map_err(|_| {
                DomainError::Internal(format!("cluster id {id} is not a header value"))
            })?;
            config
                .headers
                .push((http::HeaderName::from_static("x-cluster-id"), value));
            let client = ClusterClient::from_config(config, id.as_str(), true)
                .map_err(|e| e.into_domain(true))?;
            Ok((self.factory)(client))
        })
    }
}

/// `status.conditions[]` has `ManagedClusterConnected` with status `True`.
fn connected(object: &DynamicObject) -> bool {
    object
        .data
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(serde_json::Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.get("type").and_then(serde_json::Value::as_str) == Some("ManagedClusterConnected")
                    && c.get("status").and_then(serde_json::Value::as_str) == Some("True")
            })
        })
}

#[async_trait]
impl ClusterRouter for VoltronRouter {
    async fn route(&self, target: &ClusterTarget) -> Result<ClusterPorts> {
        let id = match target {
            ClusterTarget::Local => return Ok(self.local.clone()),
            ClusterTarget::Managed(id) => id,
        };
        match self.presence(id).await? {
            Presence::Absent => Err(DomainError::ClusterNotFound { id: id.to_string() }),
            Presence::Disconnected => Err(DomainError::ClusterNotConnected { id: id.to_string() }),
            Presence::Connected => self.ports(id),
        }
    }
}
