//! Test doubles of every port: mockall mocks, and in-memory fakes with real behaviour.
//!
//! The fakes are held to the same contract suites as the real adapters (see `tests/`), so
//! tests that trust them trust something checked.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::ports::{
    Authenticator, Authorizer, ByteStream, CaptureLocator, ClusterPorts, ClusterRouter,
    FileFetcher, StatusUpdate, TarStream,
};
pub use crate::ports::{
    MockAuthenticator, MockAuthorizer, MockCaptureLocator, MockClusterRouter, MockFileFetcher,
};
use crate::types::{
    BearerToken, Capture, CaptureDir, CaptureRef, ClusterId, ClusterTarget, EntryPoint, FileInfo,
    FileSet, FileSlice, NodeName, ResourceAttributes, User, Verb,
};

/// The bytes of `slice` out of a whole file's `data` (fewer when the file is shorter), in one
/// piece.
fn one_piece(data: &[u8], slice: &FileSlice) -> ByteStream {
    let from = usize::try_from(slice.start)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let to = usize::try_from(slice.start.saturating_add(slice.len))
        .unwrap_or(usize::MAX)
        .min(data.len());
    let piece = bytes::Bytes::copy_from_slice(&data[from..to]);
    Box::pin(futures_util::stream::iter([Ok(piece)]))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Authenticates by a fixed table of tokens.
#[derive(Debug, Default)]
pub struct TokenTable {
    users: Mutex<HashMap<String, User>>,
}

impl TokenTable {
    /// Adds a token for a user.
    pub fn with(self, token: &str, user: User) -> Self {
        lock(&self.users).insert(token.to_owned(), user);
        self
    }
}

#[async_trait]
impl Authenticator for TokenTable {
    async fn authenticate(&self, token: &BearerToken) -> Result<User> {
        lock(&self.users)
            .get(token.expose())
            .cloned()
            .ok_or_else(|| Error::Unauthenticated {
                reason: "the token is not valid".into(),
            })
    }
}

/// One allow rule: a subject (user name, or `group:NAME`) may use a verb on a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `NAME` for a user, `group:NAME` for a group.
    pub subject: String,
    /// The verb.
    pub verb: Verb,
    /// `resource` or `resource/subresource`; `*` for any.
    pub resource: String,
    /// Namespace, `*` for any.
    pub namespace: String,
    /// Object name, `*` for any.
    pub name: String,
}

/// Authorizes by a table of allow rules; everything else is denied.
#[derive(Debug, Default)]
pub struct RbacTable {
    rules: Mutex<Vec<Rule>>,
    /// Every question asked, in order.
    pub asked: Mutex<Vec<(User, ResourceAttributes)>>,
}

impl RbacTable {
    /// Allows `subject` to `verb` `resource` in `namespace` (any name).
    pub fn allow(self, subject: &str, verb: Verb, resource: &str, namespace: &str) -> Self {
        self.allow_named(subject, verb, resource, namespace, "*")
    }

    /// Allows `subject` to `verb` the object `name` of `resource` in `namespace`.
    pub fn allow_named(
        self,
        subject: &str,
        verb: Verb,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        lock(&self.rules).push(Rule {
            subject: subject.into(),
            verb,
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        });
        self
    }
}

#[async_trait]
impl Authorizer for RbacTable {
    async fn allowed(&self, user: &User, a: &ResourceAttributes) -> Result<bool> {
        lock(&self.asked).push((user.clone(), a.clone()));
        let resource = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        Ok(lock(&self.rules).iter().any(|r| {
            let subject = r.subject == user.name
                || r.subject
                    .strip_prefix("group:")
                    .is_some_and(|g| user.groups.iter().any(|ug| ug == g));
            subject
                && r.verb == a.verb
                && (r.resource == "*" || r.resource == resource)
                && (r.namespace == "*" || r.namespace == a.namespace)
                && (r.name == "*" || r.name == a.name)
        }))
    }
}

/// PacketCaptures in memory; every status write bumps the resource version.
#[derive(Debug, Default)]
pub struct CaptureTable {
    captures: Mutex<HashMap<CaptureRef, Capture>>,
    conflicts: Mutex<u32>,
}

impl CaptureTable {
    /// Adds (or replaces) a capture.
    pub fn with(self, capture: Capture) -> Self {
        lock(&self.captures).insert(capture.reference.clone(), capture);
        self
    }

    /// Makes the next `n` status writes conflict, as if another writer got there first.
    pub fn conflict_next(&self, n: u32) {
        *lock(&self.conflicts) = n;
    }

    /// The stored capture.
    pub fn current(&self, capture: &CaptureRef) -> Option<Capture> {
        lock(&self.captures).get(capture).cloned()
    }
}

#[async_trait]
impl CaptureLocator for CaptureTable {
    async fn get(&self, capture: &CaptureRef) -> Result<Option<Capture>> {
        Ok(self.current(capture))
    }

    async fn clear_file_names(&self, capture: &Capture, nodes: &[String]) -> Result<StatusUpdate> {
        let mut captures = lock(&self.captures);
        let Some(stored) = captures.get_mut(&capture.reference) else {
            return Err(Error::CaptureNotFound {
                capture: capture.reference.to_string(),
            });
        };
        let mut conflicts = lock(&self.conflicts);
        if *conflicts > 0 {
            *conflicts -= 1;
            bump(stored);
            return Ok(StatusUpdate::Conflict);
        }
        if stored.resource_version != capture.resource_version {
            return Ok(StatusUpdate::Conflict);
        }
        for node in stored.files.iter_mut().filter(|n| nodes.contains(&n.node)) {
            node.file_names.clear();
        }
        bump(stored);
        Ok(StatusUpdate::Updated)
    }
}

fn bump(capture: &mut Capture) {
    let next = capture.resource_version.parse::<u64>().unwrap_or(0) + 1;
    capture.resource_version = next.to_string();
}

/// One file held by [`NodeFileTable`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemFile {
    /// Contents.
    pub data: Vec<u8>,
    /// Modification time (Unix seconds).
    pub modified: i64,
}

/// A directory's files by name.
pub type MemDir = BTreeMap<String, MemFile>;

/// Node files in memory: `node -> directory -> name -> file`, and which nodes have an entry.
#[derive(Debug, Default)]
pub struct NodeFileTable {
    files: Mutex<HashMap<String, BTreeMap<String, MemDir>>>,
    no_entry: Mutex<Vec<String>>,
    failing_removal: Mutex<Vec<String>>,
    /// Every directory a removal was asked for, as `(node, dir)`.
    pub removals: Mutex<Vec<(String, String)>>,
    /// Every slice read, as `(node, file, start, len)`.
    pub reads: Mutex<Vec<(String, String, u64, u64)>>,
}

impl NodeFileTable {
    /// Puts a file at `dir/name` on `node`.
    pub fn with_file(self, node: &str, dir: &str, name: &str, data: &[u8], modified: i64) -> Self {
        self.put_file(node, dir, name, data, modified);
        self
    }

    /// Puts (or replaces) a file at `dir/name` on `node`, as a node writing it would.
    pub fn put_file(&self, node: &str, dir: &str, name: &str, data: &[u8], modified: i64) {
        lock(&self.files)
            .entry(node.into())
            .or_default()
            .entry(dir.into())
            .or_default()
            .insert(
                name.into(),
                MemFile {
                    data: data.to_vec(),
                    modified,
                },
            );
    }

    /// Makes `node` unreachable (no entry pod).
    pub fn without_entry(self, node: &str) -> Self {
        lock(&self.no_entry).push(node.into());
        self
    }

    /// Makes removals on `node` fail (as an `rm` on a read-only file system would).
    pub fn failing_removal_on(self, node: &str) -> Self {
        lock(&self.failing_removal).push(node.into());
        self
    }

    /// The files now in `dir` on `node`.
    pub fn files_in(&self, node: &str, dir: &str) -> MemDir {
        lock(&self.files)
            .get(node)
            .and_then(|d| d.get(dir))
            .cloned()
            .unwrap_or_default()
    }
}

#[async_trait]
impl FileFetcher for NodeFileTable {
    async fn entry_point(&self, node: &NodeName) -> Result<EntryPoint> {
        if lock(&self.no_entry).iter().any(|n| n == node.as_str()) {
            return Err(Error::NoEntryPod {
                node: node.to_string(),
            });
        }
        Ok(EntryPoint {
            node: node.clone(),
            handle: format!("mem-{node}"),
        })
    }

    async fn archive(&self, entry: &EntryPoint, set: &FileSet) -> Result<TarStream> {
        let files = self.files_in(entry.node.as_str(), set.dir.path());
        let Some(names) = &set.names else {
            return Ok(tar_of(
                files.iter().map(|(name, file)| (name.as_str(), file)),
                None,
            ));
        };
        // A named file that is not there is left out, as the real fetchers leave it.
        let present = names
            .iter()
            .filter_map(|name| files.get(name.as_str()).map(|f| (name.as_str(), f)));
        Ok(tar_of(present, None))
    }

    async fn read_file(&self, entry: &EntryPoint, slice: &FileSlice) -> Result<ByteStream> {
        let FileSlice { dir, name, .. } = slice;
        lock(&self.reads).push((
            entry.node.to_string(),
            name.to_string(),
            slice.start,
            slice.len,
        ));
        let files = self.files_in(entry.node.as_str(), dir.path());
        let data = files.get(name.as_str()).map(|f| f.data.clone());
        let Some(data) = data else {
            return Err(Error::FileNotFound {
                node: entry.node.to_string(),
                file: name.to_string(),
                capture: dir.path().to_owned(),
            });
        };
        Ok(one_piece(&data, slice))
    }

    async fn list(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<Vec<FileInfo>> {
        Ok(self
            .files_in(entry.node.as_str(), dir.path())
            .into_iter()
            .map(|(name, f)| FileInfo {
                name,
                size: f.data.len() as u64,
                modified: f.modified,
            })
            .collect())
    }

    async fn remove(&self, entry: &EntryPoint, dir: &CaptureDir) -> Result<()> {
        let node = entry.node.to_string();
        lock(&self.removals).push((node.clone(), dir.path().to_owned()));
        if lock(&self.failing_removal).contains(&node) {
            return Err(Error::NodeFiles {
                node,
                action: "removing files",
                source: "rm: cannot remove: Read-only file system".into(),
            });
        }
        if let Some(dirs) = lock(&self.files).get_mut(node.as_str()) {
            dirs.remove(dir.path());
        }
        Ok(())
    }
}

/// A tar stream of `files` in order; it fails with `failure` after them, if given.
fn tar_of<'a>(
    files: impl Iterator<Item = (&'a str, &'a MemFile)>,
    failure: Option<Error>,
) -> TarStream {
    let mut builder = tar::Builder::new(Vec::new());
    let mut built = Ok(());
    for (name, file) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(file.data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(u64::try_from(file.modified).unwrap_or(0));
        header.set_entry_type(tar::EntryType::Regular);
        if let Err(e) = builder.append_data(&mut header, name, file.data.as_slice()) {
            built = Err(e);
            break;
        }
    }
    let bytes = match failure {
        // A failed tar sends no end-of-archive block.
        Some(_) => built.map(|()| builder.get_ref().clone()),
        None => built.and_then(|()| builder.into_inner()),
    };
    // In pieces of 64 KiB, as an exec's frames come (and so a reader's pace holds it back).
    let mut items: Vec<Result<bytes::Bytes>> = match bytes {
        Ok(bytes) => bytes
            .chunks(64 * 1024)
            .map(|piece| Ok(bytes::Bytes::copy_from_slice(piece)))
            .collect(),
        Err(e) => vec![Err(Error::Internal(format!(
            "building a tar in memory: {e}"
        )))],
    };
    if let Some(e) = failure {
        items.push(Err(e));
    }
    Box::pin(futures_util::stream::iter(items))
}

/// What a [`ScriptedFetcher`] node's stream does once its data is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScriptEnd {
    /// Ends cleanly.
    Clean,
    /// Fails with this message (as an exec whose status says failure).
    Fail(String),
    /// Sends nothing more and never ends (a stalled node).
    Hang,
}

/// How a [`ScriptedFetcher`] node's stream behaves.
#[derive(Clone, Debug)]
pub struct Script {
    /// The bytes it sends (usually a tar stream).
    pub data: Vec<u8>,
    /// Bytes per read.
    pub chunk: usize,
    /// Pause before each read.
    pub pause: std::time::Duration,
    /// What happens after the data.
    pub end: ScriptEnd,
}

impl Script {
    /// Sends `data` in 64 KiB reads at once, then ends cleanly.
    pub fn clean(data: Vec<u8>) -> Self {
        Self {
            data,
            chunk: 64 * 1024,
            pause: std::time::Duration::ZERO,
            end: ScriptEnd::Clean,
        }
    }
}

/// Counters of a [`ScriptedFetcher`].
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Streams open now.
    pub open: AtomicUsize,
    /// The most streams open at once.
    pub max_open: AtomicUsize,
    /// Streams opened in all.
    pub opened: AtomicUsize,
}

/// A fetcher whose nodes stream scripted bytes, counting open streams and bytes sent per
/// node: for the engine's tests of concurrency, failures, stalls and backpressure.
#[derive(Debug, Default)]
pub struct ScriptedFetcher {
    scripts: Mutex<HashMap<String, Arc<Script>>>,
    /// Open-stream counters.
    pub counters: Arc<StreamCounters>,
    sent: Arc<Mutex<HashMap<String, u64>>>,
}

impl ScriptedFetcher {
    /// Scripts `node`'s stream.
    pub fn with(self, node: &str, script: Script) -> Self {
        lock(&self.scripts).insert(node.into(), Arc::new(script));
        self
    }

    /// Bytes `node`'s streams sent so far.
    pub fn sent(&self, node: &str) -> u64 {
        lock(&self.sent).get(node).copied().unwrap_or(0)
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// The most streams open at once.
    pub fn max_open(&self) -> usize {
        self.counters.max_open.load(Ordering::SeqCst)
    }
}

/// Counts a stream open while it lives.
struct OpenGuard(Arc<StreamCounters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl FileFetcher for ScriptedFetcher {
    async fn entry_point(&self, node: &NodeName) -> Result<EntryPoint> {
        Ok(EntryPoint {
            node: node.clone(),
            handle: format!("scripted-{node}"),
        })
    }

    async fn archive(&self, entry: &EntryPoint, _: &FileSet) -> Result<TarStream> {
        let script = lock(&self.scripts)
            .get(entry.node.as_str())
            .cloned()
            .unwrap_or_else(|| Arc::new(Script::clean(Vec::new())));
        let counters = self.counters.clone();
        let now = counters.open.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_open.fetch_max(now, Ordering::SeqCst);
        counters.opened.fetch_add(1, Ordering::SeqCst);
        let guard = Arc::new(OpenGuard(counters));
        let node = entry.node.to_string();
        let sent = self.sent.clone();
        let chunks = futures_util::stream::unfold(0usize, move |at| {
            let (script, guard, node, sent) =
                (script.clone(), guard.clone(), node.clone(), sent.clone());
            async move {
                let _alive = guard;
                if !script.pause.is_zero() {
                    tokio::time::sleep(script.pause).await;
                }
                if at < script.data.len() {
                    let end = (at + script.chunk.max(1)).min(script.data.len());
                    *lock(&sent).entry(node).or_default() += (end - at) as u64;
                    let chunk = bytes::Bytes::copy_from_slice(&script.data[at..end]);
                    return Some((Ok(chunk), end));
                }
                match &script.end {
                    ScriptEnd::Clean => None,
                    ScriptEnd::Fail(_) if at == usize::MAX => None,
                    // As an exec adapter reports a failed read: the node, what failed.
                    ScriptEnd::Fail(message) => Some((
                        Err(Error::NodeFiles {
                            node: node.clone(),
                            action: "reading files",
                            source: message.clone().into(),
                        }),
                        usize::MAX,
                    )),
                    ScriptEnd::Hang => std::future::pending().await,
                }
            }
        });
        Ok(Box::pin(chunks))
    }

    /// The node's scripted bytes from `start`, at most `len`, in one piece.
    async fn read_file(&self, entry: &EntryPoint, slice: &FileSlice) -> Result<ByteStream> {
        let data = lock(&self.scripts)
            .get(entry.node.as_str())
            .map(|s| s.data.clone())
            .unwrap_or_default();
        Ok(one_piece(&data, slice))
    }

    async fn list(&self, _: &EntryPoint, _: &CaptureDir) -> Result<Vec<FileInfo>> {
        Ok(Vec::new())
    }

    async fn remove(&self, _: &EntryPoint, _: &CaptureDir) -> Result<()> {
        Ok(())
    }
}

/// How a managed cluster answers in [`StaticRouter`].
#[derive(Clone, Debug)]
pub enum ManagedCluster {
    /// Connected, with its ports.
    Connected(ClusterPorts),
    /// Known but not connected.
    Disconnected,
}

/// Routes to a fixed set of clusters.
#[derive(Clone, Debug)]
pub struct StaticRouter {
    local: ClusterPorts,
    managed: HashMap<ClusterId, ManagedCluster>,
}

impl StaticRouter {
    /// A router with only the local cluster.
    pub fn local(local: ClusterPorts) -> Self {
        Self {
            local,
            managed: HashMap::new(),
        }
    }

    /// Adds a managed cluster.
    pub fn with_managed(mut self, id: &str, cluster: ManagedCluster) -> Self {
        self.managed.insert(
            ClusterId::new(id).expect("a valid cluster id in a test"),
            cluster,
        );
        self
    }
}

#[async_trait]
impl ClusterRouter for StaticRouter {
    async fn route(&self, target: &ClusterTarget) -> Result<ClusterPorts> {
        match target {
            ClusterTarget::Local => Ok(self.local.clone()),
            ClusterTarget::Managed(id) => match self.managed.get(id) {
                Some(ManagedCluster::Connected(ports)) => Ok(ports.clone()),
                Some(ManagedCluster::Disconnected) => {
                    Err(Error::ClusterNotConnected { id: id.to_string() })
                }
                None => Err(Error::ClusterNotFound { id: id.to_string() }),
            },
        }
    }
}

/// Ports of one in-memory cluster, keeping the concrete fakes reachable for assertions.
#[derive(Clone, Debug)]
pub struct FakeCluster {
    /// RBAC.
    pub rbac: Arc<RbacTable>,
    /// Captures.
    pub captures: Arc<CaptureTable>,
    /// Node files.
    pub files: Arc<NodeFileTable>,
}

impl FakeCluster {
    /// Bundles the fakes.
    pub fn new(rbac: RbacTable, captures: CaptureTable, files: NodeFileTable) -> Self {
        Self {
            rbac: Arc::new(rbac),
            captures: Arc::new(captures),
            files: Arc::new(files),
        }
    }

    /// As ports.
    pub fn ports(&self) -> ClusterPorts {
        ClusterPorts {
            authorizer: self.rbac.clone(),
            locator: self.captures.clone(),
            fetcher: self.files.clone(),
        }
    }
}
