//! Entry pods: the pod on each node through which its capture files are reached.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use packetcapture_domain::{EntryPoint, Error, NodeName, Result};

use crate::client::ClusterClient;

/// Which pods are entry pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPodConfig {
    /// Their namespace (`tigera-fluentd`).
    pub namespace: String,
    /// Their label selector (`k8s-app=fluentd-node`).
    pub selector: String,
    /// The container that mounts the capture directory (`fluentd`).
    pub container: String,
}

/// Finds the entry pod of a node.
#[derive(Debug, Clone)]
pub struct EntryPods {
    cluster: ClusterClient,
    config: EntryPodConfig,
}

impl EntryPods {
    /// Looks in `cluster`.
    pub fn new(cluster: ClusterClient, config: EntryPodConfig) -> Self {
        Self { cluster, config }
    }

    /// The configuration.
    pub fn config(&self) -> &EntryPodConfig {
        &self.config
    }

    /// The cluster.
    pub fn cluster(&self) -> &ClusterClient {
        &self.cluster
    }

    /// A running entry pod on `node` that has the container; of several, the first by name.
    pub async fn find(&self, node: &NodeName) -> Result<EntryPoint> {
        let api: Api<Pod> = Api::namespaced(self.cluster.client.clone(), &self.config.namespace);
        let params = ListParams::default()
            .labels(&self.config.selector)
            .fields(&format!("spec.nodeName={node},status.phase=Running"));
        let pods = api.list(&params).await.map_err(|e| {
            self.cluster.err(
                format!(
                    "list pods {} in namespace {} on node {node}",
                    self.config.selector, self.config.namespace
                ),
                e,
            )
        })?;
        let mut names: Vec<String> = pods
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str()))
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter(|p| {
                p.spec
                    .as_ref()
                    .is_some_and(|s| s.containers.iter().any(|c| c.name == self.config.container))
            })
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        match names.into_iter().next() {
            Some(pod) => Ok(EntryPoint {
                node: node.clone(),
                handle: pod,
            }),
            None => Err(Error::NoEntryPod {
                node: node.to_string(),
            }),
        }
    }
}
