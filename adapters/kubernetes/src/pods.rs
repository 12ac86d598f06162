//! Entry pods: the pod on each node through which its capture files are reached.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use packetcapture_domain::{EntryPoint, Error, Namespace, NodeName, Result, is_dns1123_label};
use serde::Deserialize;
use smart_default::SmartDefault;

use crate::client::ClusterClient;

/// Which pods are entry pods (`PACKETCAPTURE_API_ENTRY_POD_*`), with SPEC's defaults (the
/// fluentd DaemonSet; newer releases use `calico-system`, `k8s-app=calico-node`,
/// `calico-node`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct EntryPodConfig {
    /// Their namespace.
    #[default(_code = "Namespace::from_static(\"tigera-fluentd\")")]
    pub namespace: Namespace,
    /// Their label selector.
    #[default(_code = "LabelSelector(\"k8s-app=fluentd-node\".into())")]
    pub selector: LabelSelector,
    /// The container that mounts the capture directory.
    #[default(_code = "ContainerName(\"fluentd\".into())")]
    pub container: ContainerName,
}

/// `as_str` and `Display` for validated text.
macro_rules! text {
    ($($ty:ident),+) => {$(
        impl $ty {
            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )+};
}

text!(LabelSelector, ContainerName);

/// An equality-based label selector: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated.
#[derive(Clone, Debug, PartialEq, Eq, serde_with::DeserializeFromStr)]
pub struct LabelSelector(String);

impl FromStr for LabelSelector {
    type Err = String;

    fn from_str(value: &str) -> std::result::Result<Self, String> {
        let v = value.trim();
        let valid_part = |part: &str| {
            let part = part.trim();
            let (key, val) = if let Some((k, val)) = part.split_once("!=") {
                (k, Some(val))
            } else if let Some((k, val)) = part.split_once("==") {
                (k, Some(val))
            } else if let Some((k, val)) = part.split_once('=') {
                (k, Some(val))
            } else {
                (part.strip_prefix('!').unwrap_or(part), None)
            };
            let key = key.trim();
            let ok_key = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
            let ok_val = val.is_none_or(|v| {
                v.trim()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
            ok_key && ok_val
        };
        if !v.is_empty() && v.split(',').all(valid_part) {
            Ok(Self(v.to_owned()))
        } else {
            Err(format!(
                "\"{v}\" is not a label selector such as k8s-app=fluentd-node"
            ))
        }
    }
}

/// A container name (DNS-1123 label).
#[derive(Clone, Debug, PartialEq, Eq, serde_with::DeserializeFromStr)]
pub struct ContainerName(String);

impl FromStr for ContainerName {
    type Err = String;

    fn from_str(value: &str) -> std::result::Result<Self, String> {
        let v = value.trim();
        if is_dns1123_label(v) {
            Ok(Self(v.to_owned()))
        } else {
            Err(format!("\"{v}\" is not a DNS-1123 label"))
        }
    }
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
        let mut found = self.find_all(std::slice::from_ref(node)).await?;
        found
            .pop()
            .ok_or_else(|| Error::Internal("an entry point lookup returned nothing".into()))
    }

    /// The entry pod of each of `nodes`, in order, from one list of the entry pods; the first
    /// node without one is [`Error::NoEntryPod`].
    pub async fn find_all(&self, nodes: &[NodeName]) -> Result<Vec<EntryPoint>> {
        let api: Api<Pod> =
            Api::namespaced(self.cluster.client.clone(), self.config.namespace.as_str());
        // One node: ask the API server for that node's pods only; several: all entry pods.
        let fields = match nodes {
            [node] => format!("spec.nodeName={node},status.phase=Running"),
            _ => "status.phase=Running".to_owned(),
        };
        let params = ListParams::default()
            .labels(self.config.selector.as_str())
            .fields(&fields);
        let pods = api.list(&params).await.map_err(|e| {
            let scope = match nodes {
                [node] => format!(" on node {node}"),
                _ => String::new(),
            };
            self.cluster.err(
                format!(
                    "list pods {} in namespace {}{scope}",
                    self.config.selector, self.config.namespace
                ),
                e,
            )
        })?;
        let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for pod in pods.items {
            let spec = pod.spec.as_ref();
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let has_container = spec.is_some_and(|s| {
                s.containers
                    .iter()
                    .any(|c| c.name == self.config.container.as_str())
            });
            if let (true, true, None, Some(node), Some(name)) = (
                running,
                has_container,
                pod.metadata.deletion_timestamp.as_ref(),
                spec.and_then(|s| s.node_name.clone()),
                pod.metadata.name,
            ) {
                by_node.entry(node).or_default().push(name);
            }
        }
        nodes
            .iter()
            .map(|node| {
                let pod = by_node
                    .get(node.as_str())
                    .and_then(|names| names.iter().min())
                    .ok_or_else(|| Error::NoEntryPod {
                        node: node.to_string(),
                    })?;
                Ok(EntryPoint {
                    node: node.clone(),
                    handle: pod.clone(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_container_names_are_checked() {
        for good in [
            "k8s-app=fluentd-node",
            "a==b,!c",
            "k8s-app!=x, tier",
            "example.com/app=x",
        ] {
            assert!(good.parse::<LabelSelector>().is_ok(), "{good}");
        }
        for bad in ["", "k8s-app in (a b)", "=x", "a=b c"] {
            assert!(bad.parse::<LabelSelector>().is_err(), "{bad}");
        }
        assert!("calico-node".parse::<ContainerName>().is_ok());
        assert!("Bad_Name".parse::<ContainerName>().is_err());
    }
}
