//! The voltron adapter: a `ClusterRouter` that reaches managed clusters through Voltron.
//!
//! Each managed cluster gets a kube client pointed at Voltron's multi-cluster forwarding
//! endpoint, trusting Voltron's CA, carrying the service's own credentials and the header
//! `x-cluster-id: {id}` on every request (exec upgrades included). The ManagedCluster is checked
//! in the management (local) cluster first: absent is not found, not connected is unavailable;
//! that answer is cached briefly. Clients are cached, at most [`MAX_CLIENTS`].

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use packetcapture_domain::{
    ClusterId, ClusterPorts, ClusterRouter, ClusterTarget, Error as DomainError, Result,
};
use packetcapture_kubernetes::ClusterClient;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::time::Instant;

/// Most managed-cluster clients kept.
pub const MAX_CLIENTS: usize = 64;
/// How long a ManagedCluster check is trusted.
pub const STATUS_TTL: Duration = Duration::from_secs(5);

/// Setup failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Voltron's CA could not be read.
    #[error("cannot read Voltron's CA from {path}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The endpoint is not usable as a URL.
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
    clients: Mutex<(HashMap<ClusterId, ClusterPorts>, VecDeque<ClusterId>)>,
    presence: Mutex<HashMap<ClusterId, (Instant, Presence)>>,
}

impl VoltronRouter {
    /// `local`: the local cluster's ports; `management`: its client (for ManagedClusters);
    /// `credentials`: the service's own kube configuration, whose auth is reused for Voltron.
    pub fn new(
        local: ClusterPorts,
        management: ClusterClient,
        credentials: &kube::Config,
        endpoint: &str,
        ca_file: &Path,
        factory: PortsFactory,
    ) -> std::result::Result<Self, Error> {
        let ca: Vec<Vec<u8>> = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| Error::Ca {
                path: ca_file.into(),
                source: e.into(),
            })?
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Ca {
                path: ca_file.into(),
                source: e.into(),
            })?;
        if ca.is_empty() {
            return Err(Error::Ca {
                path: ca_file.into(),
                source: "no PEM certificate in the file".into(),
            });
        }
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
            clients: Mutex::new((HashMap::new(), VecDeque::new())),
            presence: Mutex::new(HashMap::new()),
        })
    }

    async fn presence(&self, id: &ClusterId) -> Result<Presence> {
        if let Some((at, p)) = self
            .presence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            && at.elapsed() < STATUS_TTL
        {
            return Ok(*p);
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
        let mut cache = self
            .presence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= MAX_CLIENTS * 4 {
            cache.clear();
        }
        cache.insert(id.clone(), (Instant::now(), presence));
        Ok(presence)
    }

    fn ports(&self, id: &ClusterId) -> Result<ClusterPorts> {
        let mut guard = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (clients, order) = &mut *guard;
        if let Some(ports) = clients.get(id) {
            return Ok(ports.clone());
        }
        let mut config = self.base.clone();
        let value = http::HeaderValue::from_str(id.as_str())
            .map_err(|_| DomainError::Internal(format!("cluster id {id} is not a header value")))?;
        config
            .headers
            .push((http::HeaderName::from_static("x-cluster-id"), value));
        let client = ClusterClient::from_config(config, id.as_str(), true)
            .map_err(|e| e.into_domain(true))?;
        let ports = (self.factory)(client);
        if clients.len() >= MAX_CLIENTS
            && let Some(oldest) = order.pop_front()
        {
            clients.remove(&oldest);
        }
        clients.insert(id.clone(), ports.clone());
        order.push_back(id.clone());
        Ok(ports)
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
