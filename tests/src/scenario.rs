//! The scenario file: clusters, nodes, entry pods, captures, users, RBAC and faults (YAML).
//!
//! ```yaml
//! serviceAccount: {namespace: packetcapture, name: packetcapture-api}  # the API's own identity
//! serviceRbac: deploy/base/rbac.yaml  # RBAC objects for it, in every cluster (default: the
//!                                     # project's deploy/base/rbac.yaml, built in)
//! kubernetesMinor: 33         # the version the API servers report and authorize as (35: a
//!                             # WebSocket exec also needs `create` on pods/exec)
//! users:
//!   - name: jane                # Kubernetes user name (or the email claim for kind: dex)
//!     groups: [capture-readers]
//!     kind: kubernetes           # or dex: a Dex-issued ID token; or serviceaccount, named
//!                                # system:serviceaccount:NS:NAME (its groups are added)
//!     token: jane-token          # optional; generated when absent
//! clusters:
//!   - name: cluster              # the first is the local (management or standalone) cluster
//!     nodes: [node-1, node-2]
//!     entryPods:                 # one running pod per node unless the node is listed in faults
//!       namespace: tigera-fluentd
//!       labels: {k8s-app: fluentd-node}
//!       container: fluentd
//!       names: {node-1: fluentd-node-a1}   # optional pod names (default: from a hash)
//!     captures:
//!       - namespace: dev
//!         name: web-traffic
//!         directory: /var/log/calico/pcap     # default
//!         nodes:
//!           - {node: node-1, state: Finished, files: 3, size: 200000}   # size: bytes per file
//!           # interfaces: file series (pods) on the node (1); cutLastRecord: active files end
//!           # mid-record (false)
//!     rbac:                      # shorthand: each becomes a (Cluster)Role and its binding
//!       - subjects: [user:jane, group:capture-readers, serviceaccount:ns:name]
//!         verbs: [get, delete]               # "*" for any
//!         apiGroups: [projectcalico.org]     # "" is the core group, "*" any
//!         resources: [packetcaptures/files]  # resource or resource/subresource, "*" any
//!         namespaces: [dev]                  # empty: a ClusterRole; else a Role in each
//!         names: []                          # empty: any name
//!     rbacObjects: []            # Roles, ClusterRoles and bindings as Kubernetes objects
//!     faults:                                # all optional, see [`Faults`]
//!       latencyMs: 0
//!   - name: east                 # every further cluster is managed, reached through Voltron
//!     connected: true
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A whole scenario.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    /// The service's own identity (a service account).
    #[serde(default = "default_service_account")]
    pub service_account: ServiceAccountRef,
    /// A file of RBAC objects (YAML, several documents) given to every cluster for the
    /// service; absent: the project's `deploy/base/rbac.yaml` as built in.
    #[serde(default)]
    pub service_rbac: Option<std::path::PathBuf>,
    /// The Kubernetes minor version the API servers report and authorize as.
    #[serde(default = "default_minor")]
    pub kubernetes_minor: u32,
    /// Users, valid in every cluster.
    #[serde(default)]
    pub users: Vec<UserSpec>,
    /// Clusters; the first is the local one.
    pub clusters: Vec<ClusterSpec>,
}

/// A service account reference.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ServiceAccountRef {
    /// Its Kubernetes user name.
    pub fn user_name(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

fn default_service_account() -> ServiceAccountRef {
    ServiceAccountRef {
        namespace: "packetcapture".into(),
        name: "packetcapture-api".into(),
    }
}

fn default_minor() -> u32 {
    33
}

/// The project's RBAC for the service (`deploy/base/rbac.yaml`), built in.
pub const DEPLOY_RBAC: &str = include_str!("../../deploy/base/rbac.yaml");

/// How a user's token is issued.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UserKind {
    /// A token the Kubernetes API servers know (TokenReview).
    #[default]
    Kubernetes,
    /// A Dex-issued ID token.
    Dex,
    /// A service account's token: the name is `system:serviceaccount:NS:NAME`, and its groups
    /// (`system:serviceaccounts`, `system:serviceaccounts:NS`) are added.
    #[serde(rename = "serviceaccount")]
    ServiceAccount,
}

/// A user.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// User name (the email for Dex users).
    pub name: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Token kind.
    #[serde(default)]
    pub kind: UserKind,
    /// A fixed token; generated when absent.
    #[serde(default)]
    pub token: Option<String>,
}

/// One cluster.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    /// `cluster` for the local one, the managed cluster's id otherwise.
    pub name: String,
    /// For managed clusters: whether its tunnel is up.
    #[serde(default = "yes")]
    pub connected: bool,
    /// Node names.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Entry pods.
    #[serde(default)]
    pub entry_pods: EntryPodSpec,
    /// PacketCaptures.
    #[serde(default)]
    pub captures: Vec<CaptureSpec>,
    /// Allow rules (shorthand for Roles and bindings).
    #[serde(default)]
    pub rbac: Vec<RuleSpec>,
    /// RBAC objects (Role, ClusterRole, RoleBinding, ClusterRoleBinding) as Kubernetes has them.
    #[serde(default)]
    pub rbac_objects: Vec<serde_json::Value>,
    /// Faults.
    #[serde(default)]
    pub faults: Faults,
}

fn yes() -> bool {
    true
}

/// Entry pods: one per node.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EntryPodSpec {
    /// Namespace.
    pub namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Container name.
    pub container: String,
    /// Pod names by node; a node not named gets `{label value}-{hash of the node}`.
    #[serde(default)]
    pub names: BTreeMap<String, String>,
}

impl Default for EntryPodSpec {
    fn default() -> Self {
        Self {
            namespace: "tigera-fluentd".into(),
            labels: [("k8s-app".to_owned(), "fluentd-node".to_owned())].into(),
            container: "fluentd".into(),
            names: BTreeMap::new(),
        }
    }
}

/// A PacketCapture and its files.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CaptureSpec {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The node directory holding `{ns}/{name}/`.
    #[serde(default = "default_directory")]
    pub directory: String,
    /// Per node.
    #[serde(default)]
    pub nodes: Vec<CaptureNodeSpec>,
    /// Every node captures in the same hours, so packets interleave across nodes (what a
    /// capture over many nodes looks like); by default each node starts a day after the
    /// previous one, which keeps the nodes' packets apart in time.
    #[serde(default, rename = "sameClock")]
    pub same_clock: bool,
    /// The capture runs: packets are appended to its capturing nodes' active files, which
    /// rotate, until it finishes ([`crate::live::LiveSpec`]).
    #[serde(default)]
    pub live: Option<crate::live::LiveSpec>,
}

fn default_directory() -> String {
    "/var/log/calico/pcap".into()
}

/// A capture's files on one node.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CaptureNodeSpec {
    /// The node.
    pub node: String,
    /// Its state (`Finished`, `Capturing`, ...); absent leaves the state out.
    #[serde(default)]
    pub state: Option<String>,
    /// How many files per interface (the active one plus rotated ones).
    #[serde(default)]
    pub files: u32,
    /// Bytes per file (each a valid pcap of about this size).
    #[serde(default = "default_size")]
    pub size: u64,
    /// Interfaces (pods) captured on the node, each its own file series; 1 when absent.
    #[serde(default)]
    pub interfaces: u32,
    /// Active files end in the middle of their last record, as Felix's can (it writes a
    /// record's header and data in two writes).
    #[serde(default, rename = "cutLastRecord")]
    pub cut_last_record: bool,
}

fn default_size() -> u64 {
    64 * 1024
}

/// An allow rule: shorthand for a ClusterRole and ClusterRoleBinding (no namespaces), or a
/// Role and RoleBinding in each namespace.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    /// `user:NAME`, `group:NAME`, or `serviceaccount:NS:NAME`.
    pub subjects: Vec<String>,
    /// Verbs, `*` for any.
    pub verbs: Vec<String>,
    /// API groups (`""` core), `*` for any.
    #[serde(default = "any")]
    pub api_groups: Vec<String>,
    /// Resources (`resource` or `resource/subresource`), `*` for any.
    pub resources: Vec<String>,
    /// Namespaces; empty for any (and for cluster-scoped resources).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Names; empty for any.
    #[serde(default)]
    pub names: Vec<String>,
}

fn any() -> Vec<String> {
    vec!["*".into()]
}

impl RuleSpec {
    /// The Kubernetes objects this rule stands for, named `scenario-{index}`.
    pub fn to_objects(&self, index: usize) -> Result<Vec<serde_json::Value>, String> {
        let name = format!("scenario-{index}");
        let subjects = self
            .subjects
            .iter()
            .map(|s| match s.split_once(':') {
                Some(("user", n)) => Ok(serde_json::json!({"kind": "User", "name": n})),
                Some(("group", n)) => Ok(serde_json::json!({"kind": "Group", "name": n})),
                Some(("serviceaccount", rest)) => match rest.split_once(':') {
                    Some((ns, n)) => Ok(
                        serde_json::json!({"kind": "ServiceAccount", "name": n, "namespace": ns}),
                    ),
                    None => Err(format!("{s}: a service account is serviceaccount:NS:NAME")),
                },
                _ => Err(format!(
                    "{s}: a subject is user:NAME, group:NAME or serviceaccount:NS:NAME"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rule = serde_json::json!({
            "apiGroups": self.api_groups, "resources": self.resources,
            "verbs": self.verbs, "resourceNames": self.names,
        });
        let rbac = "rbac.authorization.k8s.io/v1";
        let pair = |role: &str, binding: &str, namespace: Option<&str>| {
            let meta = match namespace {
                Some(ns) => serde_json::json!({"name": name, "namespace": ns}),
                None => serde_json::json!({"name": name}),
            };
            [
                serde_json::json!({"apiVersion": rbac, "kind": role, "metadata": meta, "rules": [rule]}),
                serde_json::json!({"apiVersion": rbac, "kind": binding, "metadata": meta,
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role, "name": name},
                    "subjects": subjects}),
            ]
        };
        Ok(if self.namespaces.is_empty() {
            pair("ClusterRole", "ClusterRoleBinding", None).into()
        } else {
            self.namespaces
                .iter()
                .flat_map(|ns| pair("Role", "RoleBinding", Some(ns)))
                .collect()
        })
    }
}

/// Fault knobs (and the tools knob) of one cluster. All can also be changed while the
/// simulation runs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Faults {
    /// Delay before every API answer, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Cap on each exec stream's stdout, bytes per second.
    #[serde(default)]
    pub exec_bandwidth: Option<u64>,
    /// Cut each exec's connection (no status, no close frame) after this many stdout bytes.
    #[serde(default)]
    pub exec_cut_after: Option<u64>,
    /// Report this exit status for every exec but a listing (`find`, `stat`, ...), whatever
    /// the command did: a tool that fails on the files it reads.
    #[serde(default)]
    pub exec_exit_status: Option<i32>,
    /// Nodes whose entry pod is missing.
    #[serde(default)]
    pub missing_entry_pods: Vec<String>,
    /// Nodes whose kubelet does not answer: an exec there gets its upgrade, then an
    /// `InternalError` status naming the kubelet's address (as kube-apiserver's stream
    /// translator reports it); with only `v4.channel.k8s.io` offered, a 500 before the upgrade.
    #[serde(default)]
    pub kubelet_down: Vec<String>,
    /// Answer every API request (but discovery and `/version`) with this 5xx status.
    #[serde(default)]
    pub api_server_error: Option<u16>,
    /// Dex answers nothing (its connections are closed at once). Local cluster only.
    #[serde(default)]
    pub dex_down: bool,
    /// This cluster's API server answers nothing (its connections are closed at once).
    #[serde(default)]
    pub api_server_down: bool,
    /// Voltron answers nothing. Local cluster only.
    #[serde(default)]
    pub voltron_down: bool,
    /// Each exec sends this many stdout bytes, then nothing more (the connection stays open).
    #[serde(default)]
    pub exec_stall_after: Option<u64>,
    /// Once an exec sent this many stdout bytes, every file in the directory it reads is cut
    /// to 1000 bytes (a file that shrinks while it is read).
    #[serde(default)]
    pub shrink_after: Option<u64>,
    /// Execs run as this uid and gid (with the simulation running as root), so files the knob
    /// `chmod`s away cannot be read.
    #[serde(default)]
    pub run_as_uid: Option<u32>,
    /// Entry pods have BusyBox applets instead of the GNU tools (Debian's `busybox` package).
    #[serde(default)]
    pub busybox: bool,
    /// Exec faults of single nodes, over the cluster's (`{node-3: {execCutAfter: 300000}}`):
    /// one node fails while the others stream.
    #[serde(default)]
    pub nodes: BTreeMap<String, ExecFaults>,
}

/// The faults an exec on one node may have; set ones win over the cluster's.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecFaults {
    /// As [`Faults::exec_bandwidth`].
    #[serde(default)]
    pub exec_bandwidth: Option<u64>,
    /// As [`Faults::exec_cut_after`].
    #[serde(default)]
    pub exec_cut_after: Option<u64>,
    /// As [`Faults::exec_exit_status`].
    #[serde(default)]
    pub exec_exit_status: Option<i32>,
    /// As [`Faults::exec_stall_after`].
    #[serde(default)]
    pub exec_stall_after: Option<u64>,
    /// As [`Faults::shrink_after`].
    #[serde(default)]
    pub shrink_after: Option<u64>,
}

impl Faults {
    /// The faults of an exec on `node`: the cluster's, with the node's own over them.
    pub fn on_node(&self, node: &str) -> Faults {
        let mut f = self.clone();
        if let Some(n) = self.nodes.get(node) {
            f.exec_bandwidth = n.exec_bandwidth.or(f.exec_bandwidth);
            f.exec_cut_after = n.exec_cut_after.or(f.exec_cut_after);
            f.exec_exit_status = n.exec_exit_status.or(f.exec_exit_status);
            f.exec_stall_after = n.exec_stall_after.or(f.exec_stall_after);
            f.shrink_after = n.shrink_after.or(f.shrink_after);
        }
        f
    }
}

impl Scenario {
    /// Parses and checks a scenario.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let s: Scenario = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<(), String> {
        if self.clusters.is_empty() {
            return Err(
                "a scenario needs at least one cluster (the first is the local one)".into(),
            );
        }
        for c in &self.clusters {
            self.policy(c)?;
            for cap in &c.captures {
                for n in &cap.nodes {
                    if !c.nodes.contains(&n.node) {
                        return Err(format!(
                            "capture {}/{} in cluster {} names node {} which is not in its nodes",
                            cap.namespace, cap.name, c.name, n.node
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every RBAC object of cluster `c`: what kube-apiserver bootstraps, Calico's own, the
    /// service's (`serviceRbac`), then the cluster's `rbac` rules and `rbacObjects`.
    pub fn policy(&self, c: &ClusterSpec) -> Result<crate::rbac::Policy, String> {
        let mut policy = crate::rbac::Policy::bootstrap();
        policy.extend(crate::rbac::Policy::calico());
        let service = match &self.service_rbac {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("serviceRbac {}: {e}", path.display()))?,
            None => DEPLOY_RBAC.to_owned(),
        };
        policy.extend(
            crate::rbac::Policy::from_yaml(&service).map_err(|e| format!("serviceRbac: {e}"))?,
        );
        for (i, rule) in c.rbac.iter().enumerate() {
            for object in rule.to_objects(i)? {
                policy.add(object)?;
            }
        }
        for object in &c.rbac_objects {
            policy.add(object.clone())?;
        }
        Ok(policy)
    }

    /// The built-in scenario: a management cluster with two namespaces, three nodes, a finished
    /// and a running capture, a user who may and one who may not; and one managed cluster.
    pub fn default_scenario() -> Self {
        Self::from_yaml(DEFAULT).expect("the built-in scenario is valid")
    }

    /// The demo's scenario (`packetcapture-sim` without `--scenario`): the built-in one and a
    /// live capture, `dev/web-live`, that keeps capturing on node-1 and node-3 (20 packets/s
    /// per stream, a rotation every 3 s) for `make demo` to follow.
    pub fn demo_scenario() -> Self {
        let mut scenario = Self::default_scenario();
        let live: CaptureSpec =
            serde_norway::from_str(DEMO_LIVE).expect("the demo's capture is valid");
        scenario.clusters[0].captures.push(live);
        scenario.check().expect("the demo's scenario is valid");
        scenario
    }
}

const DEMO_LIVE: &str = r#"
namespace: dev
name: web-live
live: {rate: 20, rotateMs: 3000}
nodes:
  - {node: node-1, state: Capturing, files: 1, size: 24}
  - {node: node-3, state: Capturing, files: 1, size: 24}
"#;

const DEFAULT: &str = r#"
users:
  - name: jane
    groups: [capture-readers]
    token: jane-token
  - name: bob
    groups: [developers]
    token: bob-token
  - name: ops-admin
    groups: [platform]
    token: ops-admin-token
  - name: gateway
    token: gateway-token
  - name: dana@example.com
    kind: dex
    groups: [capture-readers]
clusters:
  - name: cluster
    nodes: [node-1, node-2, node-3]
    captures:
      - namespace: dev
        name: web-traffic
        nodes:
          - {node: node-1, state: Finished, files: 3, size: 300000, cutLastRecord: true}
          - {node: node-2, state: Finished, files: 2, size: 200000}
          - {node: node-3, state: Finished, files: 1, size: 100000}
      - namespace: dev
        name: dns-live
        nodes:
          - {node: node-1, state: Capturing, files: 1, size: 50000}
          - {node: node-2, state: WaitingForTraffic, files: 0}
      - namespace: payments
        name: checkout
        nodes:
          - {node: node-2, state: Finished, files: 2, size: 150000}
      - namespace: dev
        name: scheduled
        nodes:
          - {node: node-3, state: Scheduled, files: 0}
    rbac:
      - subjects: [group:capture-readers]
        verbs: [get]
        apiGroups: [projectcalico.org]
        resources: [packetcaptures/files]
        namespaces: [dev]
      - subjects: [user:ops-admin]
        verbs: [get, delete]
        apiGroups: [projectcalico.org]
        resources: [packetcaptures/files]
      - subjects: [user:gateway]
        verbs: [impersonate]
        apiGroups: ["", authentication.k8s.io]
        resources: [users, groups, serviceaccounts, userextras/scopes]
  - name: east
    nodes: [east-node-1, east-node-2]
    captures:
      - namespace: dev
        name: web-traffic
        nodes:
          - {node: east-node-1, state: Finished, files: 2, size: 120000}
          - {node: east-node-2, state: Finished, files: 1, size: 80000}
    rbac:
      - subjects: [group:capture-readers]
        verbs: [get]
        apiGroups: [projectcalico.org]
        resources: [packetcaptures/files]
        namespaces: [dev]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_scenario_parses_and_a_bad_one_is_explained() {
        let s = Scenario::default_scenario();
        assert_eq!(s.clusters[0].name, "cluster");
        let demo = Scenario::demo_scenario();
        assert!(
            demo.clusters[0]
                .captures
                .iter()
                .any(|c| c.name == "web-live" && c.live.is_some())
        );
        assert_eq!(s.clusters[1].name, "east");
        let err = Scenario::from_yaml(
            "clusters: [{name: c, captures: [{namespace: a, name: b, nodes: [{node: x}]}]}]",
        )
        .unwrap_err();
        assert!(err.contains("names node x"), "{err}");
        assert!(
            Scenario::from_yaml("clusters: [{name: c, bogus: 1}]")
                .unwrap_err()
                .contains("bogus")
        );
    }
}
