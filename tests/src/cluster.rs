//! The state of the simulated clusters: users, RBAC, captures, entry pods, faults, and the
//! node file systems on disk.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};

use crate::pcap;
use crate::rbac::{Decision, Policy};
use crate::scenario::{ClusterSpec, EntryPodSpec, Faults, Scenario, UserKind};

/// Locks, ignoring poisoning (a panicked test thread must not wedge the simulation).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A user as the API servers know it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Uid.
    pub uid: String,
    /// Groups (with `system:authenticated`).
    pub groups: Vec<String>,
    /// Extra.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What an API request asks to do, for RBAC (kube-apiserver's authorizer attributes).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Attributes {
    /// Verb.
    pub verb: String,
    /// API group (`""` core).
    pub group: String,
    /// Resource.
    pub resource: String,
    /// Subresource.
    pub subresource: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The path of a non-resource request (`/version`); `None` for a resource request.
    pub path: Option<String>,
}

impl Attributes {
    /// A resource request's attributes.
    pub fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        Self {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
            path: None,
        }
    }
}

/// One request as a cluster saw it.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The `x-cluster-id` header, if any.
    pub cluster_header: Option<String>,
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// Its headers but `Authorization`, names lower-cased, in the order sent.
    pub headers: Vec<(String, String)>,
}

/// One simulated cluster.
pub struct Cluster {
    /// `cluster` for the local one, the managed cluster's id otherwise.
    pub name: String,
    /// True for the first cluster.
    pub local: bool,
    /// For managed clusters: the tunnel is up.
    pub connected: AtomicBool,
    /// Node names.
    pub nodes: Vec<String>,
    /// `nodes/{cluster}` under the output directory: each node's file system.
    pub node_root: PathBuf,
    /// Entry pods.
    pub entry: EntryPodSpec,
    /// PacketCapture objects by `(namespace, name)`.
    pub captures: Mutex<BTreeMap<(String, String), Value>>,
    resource_version: AtomicU64,
    /// RBAC objects, changeable at run time.
    pub policy: Mutex<Policy>,
    /// Faults, changeable at run time.
    pub faults: Mutex<Faults>,
    /// Requests seen.
    pub log: Mutex<Vec<RequestRecord>>,
    /// Execs currently running.
    pub running_execs: AtomicU64,
    /// The most execs that ran at once (since start, or since [`Cluster::reset_peak_execs`]).
    pub peak_execs: AtomicU64,
    /// Execs started since the cluster started.
    pub execs_started: AtomicU64,
    /// Bytes of stdout the execs have sent (their clients read them, or their sockets took
    /// them): flat while a client has stopped reading.
    pub exec_stdout_bytes: AtomicU64,
    /// A folder of BusyBox applet links (when BusyBox is installed), for the `busybox` knob.
    pub busybox_bin: Option<PathBuf>,
    /// Live captures ([`crate::live`]).
    pub(crate) live: Mutex<Vec<Arc<crate::live::Live>>>,
}

impl Cluster {
    fn new(spec: &ClusterSpec, local: bool, out: &Path, policy: Policy) -> std::io::Result<Self> {
        let node_root = out.join("nodes").join(&spec.name);
        for node in &spec.nodes {
            std::fs::create_dir_all(node_root.join(node))?;
        }
        let cluster = Self {
            name: spec.name.clone(),
            local,
            connected: AtomicBool::new(spec.connected),
            nodes: spec.nodes.clone(),
            node_root,
            entry: spec.entry_pods.clone(),
            captures: Mutex::new(BTreeMap::new()),
            resource_version: AtomicU64::new(1000),
            policy: Mutex::new(policy),
            faults: Mutex::new(spec.faults.clone()),
            log: Mutex::new(Vec::new()),
            running_execs: AtomicU64::new(0),
            peak_execs: AtomicU64::new(0),
            execs_started: AtomicU64::new(0),
            exec_stdout_bytes: AtomicU64::new(0),
            busybox_bin: busybox_applets(out)?,
            live: Mutex::new(Vec::new()),
        };
        for (index, capture) in spec.captures.iter().enumerate() {
            let mut files = Vec::new();
            for (n, node) in capture.nodes.iter().enumerate() {
                let rel = format!(
                    "{}/{}/{}",
                    capture.directory.trim_matches('/'),
                    capture.namespace,
                    capture.name
                );
                let dir = cluster.node_root.join(&node.node).join(&rel);
                std::fs::create_dir_all(&dir)?;
                let pod = format!(
                    "{}-{}",
                    capture.name.split('.').next().unwrap_or("app"),
                    short_hash(&node.node, 5)
                );
                let mut names = Vec::new();
                // Each interface is a series: rotated files oldest first, then the active one,
                // an hour apart (Felix rotates hourly); interfaces capture at the same time.
                for iface in 0..node.interfaces.max(1) {
                    let stem = format!(
                        "{pod}_cali{}",
                        short_hash(&format!("{}{iface}", node.node), 11)
                    );
                    for j in 0..node.files {
                        let day = index as u32 * 10 + if capture.same_clock { 0 } else { n as u32 };
                        let hour = day * 24 + j;
                        let start = 1_700_000_000 + hour * 3600;
                        let active = j + 1 == node.files;
                        let name = if active {
                            format!("{stem}.pcap")
                        } else {
                            // Rotated at the end of its hour.
                            format!("{stem}-{}.pcap", u64::from(start + 3600) * 1_000_000)
                        };
                        let seed = seed_of(&format!(
                            "{}/{}/{}/{}/{name}",
                            spec.name, capture.namespace, capture.name, node.node
                        ));
                        let path = dir.join(&name);
                        let file = std::io::BufWriter::with_capacity(
                            1 << 20,
                            std::fs::File::create(&path)?,
                        );
                        pcap::write_pcap(file, node.size, seed, start)?;
                        if active && node.cut_last_record {
                            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                            let len = f.metadata()?.len();
                            // Every record is over 60 bytes: 7 bytes less cuts the last one.
                            f.set_len(len.saturating_sub(7).max(24))?;
                        }
                        names.push(name);
                    }
                }
                names.sort();
                let mut entry =
                    json!({"node": node.node, "directory": capture.directory, "fileNames": names});
                if let Some(state) = &node.state {
                    entry["state"] = json!(state);
                }
                files.push(entry);
            }
            let object = json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "PacketCapture",
                "metadata": {
                    "name": capture.name,
                    "namespace": capture.namespace,
                    "uid": format!("{}-{}", short_hash(&capture.namespace, 8), short_hash(&capture.name, 12)),
                    "resourceVersion": cluster.next_version(),
                    "creationTimestamp": "2026-11-01T10:00:00Z",
                },
                "spec": {"selector": "all()"},
                "status": {"files": files},
            });
            lock(&cluster.captures)
                .insert((capture.namespace.clone(), capture.name.clone()), object);
            if let Some(live) = &capture.live {
                cluster.start_live(&capture.namespace, &capture.name, live.clone());
            }
        }
        Ok(cluster)
    }

    /// A new resource version.
    pub fn next_version(&self) -> String {
        self.resource_version
            .fetch_add(1, Ordering::SeqCst)
            .to_string()
    }

    /// The faults now.
    pub fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// Changes the faults.
    pub fn set_faults(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut lock(&self.faults));
    }

    /// The entry pod name of a node.
    pub fn entry_pod_name(&self, node: &str) -> String {
        if let Some(name) = self.entry.names.get(node) {
            return name.clone();
        }
        let prefix = self
            .entry
            .labels
            .values()
            .next()
            .map(String::as_str)
            .unwrap_or("entry");
        format!("{prefix}-{}", short_hash(node, 5))
    }

    /// The address of a node's kubelet (127.0.0.2 for the first node, as in the recording of
    /// a real cluster).
    pub fn kubelet_address(&self, node: &str) -> String {
        let index = self.nodes.iter().position(|n| n == node).unwrap_or(0);
        format!("127.0.0.{}", index + 2)
    }

    /// The entry pods that exist now (nodes whose pod is "missing" have none).
    pub fn pods(&self) -> Vec<Value> {
        let missing = self.faults().missing_entry_pods;
        self.nodes
            .iter()
            .filter(|n| !missing.contains(n))
            .map(|node| {
                json!({
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": self.entry_pod_name(node),
                        "namespace": self.entry.namespace,
                        "labels": self.entry.labels,
                        "uid": short_hash(&format!("pod-{node}"), 16),
                        "resourceVersion": "1",
                        "creationTimestamp": "2026-11-01T09:00:00Z",
                    },
                    "spec": {
                        "nodeName": node,
                        "containers": [{"name": self.entry.container, "image": "quay.io/tigera/fluentd:sim"}],
                    },
                    "status": {
                        "phase": "Running",
                        "podIP": "10.65.0.10",
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "containerStatuses": [{"name": self.entry.container, "ready": true, "restartCount": 0}],
                    },
                })
            })
            .collect()
    }

    /// The node a pod runs on.
    pub fn pod_node(&self, namespace: &str, pod: &str) -> Option<String> {
        if namespace != self.entry.namespace {
            return None;
        }
        let missing = self.faults().missing_entry_pods;
        self.nodes
            .iter()
            .find(|n| !missing.contains(n) && self.entry_pod_name(n) == pod)
            .cloned()
    }

    /// What RBAC decides for `user` acting as `a` says.
    pub fn authorize(&self, user: &UserInfo, a: &Attributes) -> Decision {
        lock(&self.policy).authorize(user, a)
    }

    /// Adds RBAC objects (YAML) while the cluster runs, as `kubectl apply` would.
    pub fn apply_rbac(&self, yaml: &str) -> Result<(), String> {
        let more = Policy::from_yaml(yaml)?;
        lock(&self.policy).extend(more);
        Ok(())
    }

    /// The PacketCapture `namespace/name` as stored now.
    pub fn capture(&self, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.captures)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Adds or replaces a PacketCapture (its `metadata.namespace` and `name` say which), with a
    /// new resource version, as `kubectl apply` would.
    pub fn put_capture(&self, mut object: Value) {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        object["metadata"]["resourceVersion"] = json!(self.next_version());
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(short_hash(&format!("{ns}/{name}"), 16));
        }
        lock(&self.captures).insert((ns, name), object);
    }

    /// An exec started (its upgrade is done).
    pub fn exec_started(&self) {
        self.execs_started.fetch_add(1, Ordering::SeqCst);
        let now = self.running_execs.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_execs.fetch_max(now, Ordering::SeqCst);
    }

    /// An exec ended.
    pub fn exec_ended(&self) {
        self.running_execs.fetch_sub(1, Ordering::SeqCst);
    }

    /// Starts counting the peak of execs anew from those running now.
    pub fn reset_peak_execs(&self) {
        self.peak_execs
            .store(self.running_execs.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Records a request.
    pub fn record(&self, record: RequestRecord) {
        lock(&self.log).push(record);
    }

    /// The requests seen so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.log).clone()
    }
}

/// Links every allowed program to BusyBox in `{out}/busybox-bin`, if BusyBox is installed.
fn busybox_applets(out: &Path) -> std::io::Result<Option<PathBuf>> {
    let Some(busybox) = ["/usr/bin/busybox", "/bin/busybox"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
    else {
        return Ok(None);
    };
    let bin = out.join("busybox-bin");
    std::fs::create_dir_all(&bin)?;
    for applet in crate::exec::ALLOWED {
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink(busybox, &link)?;
        }
    }
    Ok(Some(bin))
}

/// A short, stable, lower-case alphanumeric hash.
pub fn short_hash(s: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = seed_of(s);
    (0..len)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h = (h / ALPHABET.len() as u64) ^ h.rotate_left(17).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            c
        })
        .collect()
}

fn seed_of(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Everything the simulation knows: users and clusters.
pub struct World {
    /// Tokens to users, valid in every cluster.
    pub users: HashMap<String, UserInfo>,
    /// User name to token, for writing `tokens/{user}`.
    pub tokens: BTreeMap<String, String>,
    /// Clusters; the first is the local one.
    pub clusters: Vec<Arc<Cluster>>,
    /// The service account's user name.
    pub service_user: String,
    /// The service account's token.
    pub service_token: String,
    /// The administrator's token (`system:masters`).
    pub admin_token: String,
    /// The Kubernetes minor version the API servers report and authorize as.
    pub minor: u32,
}

/// The administrator's user name.
pub const ADMIN: &str = "kubernetes-admin";

impl World {
    /// Builds the clusters and writes their node files under `out`.
    pub fn build(
        scenario: &Scenario,
        out: &Path,
        dex_tokens: &BTreeMap<String, String>,
    ) -> std::io::Result<Self> {
        let mut users = HashMap::new();
        let mut tokens = BTreeMap::new();
        let sa = &scenario.service_account;
        let service_user = sa.user_name();
        let service_token = format!("sim-sa-{}", random_token());
        users.insert(service_token.clone(), service_account_user(&service_user));
        tokens.insert(sa.name.clone(), service_token.clone());
        // The cluster's administrator (kubeadm's name; `system:masters`), for tools and tests
        // that look at the cluster rather than act as the service.
        let admin_token = format!("sim-admin-{}", random_token());
        users.insert(
            admin_token.clone(),
            UserInfo {
                name: ADMIN.into(),
                uid: short_hash(ADMIN, 12),
                groups: vec![crate::rbac::MASTERS.into(), "system:authenticated".into()],
                extra: BTreeMap::new(),
            },
        );
        tokens.insert(ADMIN.into(), admin_token.clone());
        for u in &scenario.users {
            let token = match (u.kind, &u.token) {
                (crate::scenario::UserKind::Dex, _) => {
                    dex_tokens.get(&u.name).cloned().unwrap_or_default()
                }
                (_, Some(t)) => t.clone(),
                (_, None) => format!("sim-{}-{}", u.name, random_token()),
            };
            if token.is_empty() {
                continue;
            }
            let user = if u.kind == UserKind::ServiceAccount {
                let mut user = service_account_user(&u.name);
                user.groups.splice(0..0, u.groups.iter().cloned());
                user
            } else {
                let mut groups = u.groups.clone();
                groups.push("system:authenticated".into());
                UserInfo {
                    name: u.name.clone(),
                    uid: short_hash(&u.name, 12),
                    groups,
                    extra: BTreeMap::new(),
                }
            };
            users.insert(token.clone(), user);
            tokens.insert(u.name.clone(), token);
        }
        let mut clusters = Vec::new();
        for (i, spec) in scenario.clusters.iter().enumerate() {
            let policy = scenario.policy(spec).map_err(std::io::Error::other)?;
            clusters.push(Arc::new(Cluster::new(spec, i == 0, out, policy)?));
        }
        Ok(Self {
            users,
            tokens,
            clusters,
            service_user,
            service_token,
            admin_token,
            minor: scenario.kubernetes_minor,
        })
    }

    /// The local cluster.
    pub fn local(&self) -> &Arc<Cluster> {
        &self.clusters[0]
    }

    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// A service account's user as its token authenticates: `system:serviceaccount:NS:NAME`, its
/// groups, and the credential id a bound token carries.
fn service_account_user(name: &str) -> UserInfo {
    let ns = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(ns, _)| ns)
        .unwrap_or_default();
    UserInfo {
        name: name.to_owned(),
        uid: short_hash(name, 12),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
        extra: [(
            "authentication.kubernetes.io/credential-id".to_owned(),
            vec![format!("JTI={}", uuid_like(name))],
        )]
        .into(),
    }
}

/// A UUID-shaped stable string.
fn uuid_like(s: &str) -> String {
    let h = format!("{:016x}{:016x}", seed_of(s), seed_of(&format!("{s}#")));
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// 24 random hex characters.
pub fn random_token() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
