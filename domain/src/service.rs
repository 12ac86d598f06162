//! The use cases (download, listing, delete) and the request pipeline they share.
//!
//! Pipeline, in order: authenticate in the local cluster; impersonate (checked in the local
//! cluster); route to the target cluster; authorize there; locate the capture; act.

use std::sync::Arc;

use crate::archive::{
    self, DownloadStream, Engine, EntryNamer, Exact, NodeSource, StreamSource, ZipPlan,
};
use crate::bpf::Filter;
use crate::budget::Budget;
use crate::error::{Error, Result};
use crate::pcap::{FileName, files_in_window};
use crate::ports::{
    Authenticator, ByteStream, ClusterPorts, ClusterRouter, FileFetcher, FilterCompiler,
    StatusUpdate,
};
use crate::types::{
    BaseName, BearerToken, Capture, CaptureDir, CaptureRef, CaptureState, ClusterTarget,
    Compression, EntryPoint, FileInfo, FileSlice, Impersonation, NodeFiles, NodeName,
    ResourceAttributes, Selection, User, Verb, printable, service_account,
};

/// How many times a conflicting status update is tried before giving up.
pub const STATUS_UPDATE_TRIES: u32 = 3;

/// What every use case is asked with.
#[derive(Clone, Debug)]
pub struct Request {
    /// The caller's bearer token.
    pub token: BearerToken,
    /// The `Impersonate-*` headers.
    pub impersonation: Impersonation,
    /// The cluster (`X-Cluster-ID`).
    pub cluster: ClusterTarget,
    /// The capture.
    pub capture: CaptureRef,
}

/// What a zip download asks for, which decides how fresh the nodes' listings must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZipAsk {
    /// The whole zip (GET without `Range`): it may join a listing another download started
    /// (every file is checked against the plan as it is read).
    Whole,
    /// A range of it: listed now (the range's bytes and its `If-Range` rest on the listing).
    Range,
    /// Its headers only (HEAD): listed now, nothing read.
    Head,
}

/// The outcome of a download.
#[derive(Debug)]
pub enum Download {
    /// No node holds a file of the capture (for a merge: no packet in the selection).
    Empty,
    /// The zip, streaming; its first chunk is ready.
    Zip(DownloadStream),
    /// The merged pcapng, streaming; its first chunk is ready.
    Pcapng(DownloadStream),
    /// The zip of a finished capture, planned (length, entity tag, ranges) and not yet read.
    Planned(PlannedZip),
    /// A zip that would stream (its capture is not finished, or it is deflated), not started:
    /// the answer to HEAD, which reads no node.
    Unstarted,
}

/// The zip of a finished capture, stored: planned from the nodes' listings, read only when
/// asked for, whole or in part.
pub struct PlannedZip {
    plan: Arc<ZipPlan>,
    fetcher: Arc<dyn FileFetcher>,
    engine: Engine,
    user: String,
    /// The whole zip, already started (a GET without a range).
    started: Option<DownloadStream>,
}

impl std::fmt::Debug for PlannedZip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedZip")
            .field("len", &self.plan.len())
            .field("etag", &self.plan.etag())
            .finish()
    }
}

impl PlannedZip {
    /// The plan: length, entity tag, time.
    pub fn plan(&self) -> &ZipPlan {
        &self.plan
    }

    /// Starts reading the zip, whole (`None`) or the bytes `range` (within its length, not
    /// empty); resolves once the first bytes are ready. The whole zip of a GET was started
    /// when it was planned: that stream is handed out once.
    pub async fn stream(&mut self, range: Option<std::ops::Range<u64>>) -> Result<DownloadStream> {
        if range.is_none()
            && let Some(started) = self.started.take()
        {
            return Ok(started);
        }
        archive::stream_planned(
            self.fetcher.clone(),
            self.plan.clone(),
            range,
            &self.engine,
            &self.user,
        )
        .await
    }
}

/// One file of one node, found and sized, ready to be read whole or in part.
pub struct NodeFile {
    /// Its node.
    pub node: NodeName,
    /// Name, size and modification time now.
    pub info: FileInfo,
    /// True when the node's capture state is `Finished` (the file will not change).
    pub finished: bool,
    fetcher: std::sync::Arc<dyn FileFetcher>,
    entry: EntryPoint,
    dir: CaptureDir,
    name: BaseName,
    /// Who reads it, and the budget its read takes a node stream from.
    user: String,
    budget: Arc<Budget>,
}

impl std::fmt::Debug for NodeFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeFile")
            .field("node", &self.node)
            .field("info", &self.info)
            .field("finished", &self.finished)
            .finish()
    }
}

impl NodeFile {
    /// `len` bytes from `start` (within the size found). The stream ends with an `Err` item
    /// if fewer bytes come (the file shrank or the read failed): never a short clean end.
    pub async fn read(&self, start: u64, len: u64) -> Result<ByteStream> {
        if len == 0 {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let slice = FileSlice {
            dir: self.dir.clone(),
            name: self.name.clone(),
            start,
            len,
        };
        let stream = self.budget.stream(&self.user, "reading one file").await?;
        let inner = self.fetcher.read_file(&self.entry, &slice).await?;
        Ok(Box::pin(Exact::new(
            inner,
            len,
            &self.node,
            &self.name,
            Some(stream),
        )))
    }
}

/// What one node holds now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeListing {
    /// The node and the capture's directory on it.
    pub dir: CaptureDir,
    /// Its capture state, if reported.
    pub state: Option<CaptureState>,
    /// Its files, by name.
    pub files: Vec<FileInfo>,
}

/// The listing of a capture's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// The cluster's name (`cluster` for the local one).
    pub cluster: String,
    /// The capture.
    pub capture: CaptureRef,
    /// Per node, in status order.
    pub nodes: Vec<NodeListing>,
}

/// Empties `fileNames` of `nodes` in the capture's status, reading it again on a conflict.
async fn clear_file_names(
    ports: &ClusterPorts,
    mut capture: Capture,
    nodes: &[String],
) -> Result<()> {
    for attempt in 1..=STATUS_UPDATE_TRIES {
        match ports.locator.clear_file_names(&capture, nodes).await? {
            StatusUpdate::Updated => return Ok(()),
            StatusUpdate::Conflict => {
                tracing::debug!(capture = %capture.reference, attempt, "status update conflicted");
                if attempt < STATUS_UPDATE_TRIES {
                    capture = locate(ports, &capture.reference).await?;
                }
            }
        }
    }
    Err(Error::StatusConflict {
        capture: capture.reference.to_string(),
        tries: STATUS_UPDATE_TRIES,
    })
}

/// `work` on `node`, failed as a stall if it takes longer than `limit`.
async fn within<T>(
    limit: std::time::Duration,
    node: &NodeName,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| Error::NodeStalled {
            node: node.to_string(),
            seconds: limit.as_secs(),
        })?
}

/// The capture, or [`Error::CaptureNotFound`].
async fn locate(ports: &ClusterPorts, capture: &CaptureRef) -> Result<Capture> {
    ports
        .locator
        .get(capture)
        .await?
        .ok_or_else(|| Error::CaptureNotFound {
            capture: capture.to_string(),
        })
}

/// The service's use cases, wired to its ports.
#[derive(Clone)]
pub struct CaptureService {
    authenticator: Arc<dyn Authenticator>,
    router: Arc<dyn ClusterRouter>,
    engine: Engine,
    filters: Option<Arc<dyn FilterCompiler>>,
}

impl std::fmt::Debug for CaptureService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaptureService")
    }
}

struct Authorized {
    ports: ClusterPorts,
    capture: Capture,
    /// The effective user's name (the budget's queue is fair across users).
    user: String,
}

/// What planning a zip needs from the download that asks for it.
struct Planning<'a> {
    cluster: &'a str,
    user: &'a str,
    fetcher: &'a Arc<dyn FileFetcher>,
    reached: &'a [(EntryPoint, CaptureDir)],
    chosen: &'a [(&'a NodeFiles, Option<Vec<BaseName>>)],
    namer: &'a EntryNamer,
}

/// The files of a node's listing a planned zip holds: all of them, or the `wanted` ones (the
/// selection's window); the files of the status (or the wanted ones) the listing lacks are
/// logged as gone.
fn planned_files(
    dir: &CaptureDir,
    mut files: Vec<FileInfo>,
    status: &NodeFiles,
    wanted: Option<&[BaseName]>,
) -> Vec<FileInfo> {
    if let Some(wanted) = wanted {
        files.retain(|f| wanted.iter().any(|w| w.as_str() == f.name));
    }
    let named: Vec<&str> = match wanted {
        Some(wanted) => wanted.iter().map(BaseName::as_str).collect(),
        None => status.file_names.iter().map(String::as_str).collect(),
    };
    let gone: Vec<&str> = named
        .into_iter()
        .filter(|n| !files.iter().any(|f| f.name == *n))
        .collect();
    if !gone.is_empty() {
        tracing::warn!(node = %dir.node(), files = ?gone, "files of the capture are gone from their node (removed after the capture's status listed them): left out");
    }
    files
}

/// The status' file names of `node` that may hold packets in the selection's window,
/// validated as base names.
fn selected_files(
    capture: &CaptureRef,
    node: &NodeFiles,
    selection: &Selection,
) -> Result<Vec<BaseName>> {
    files_in_window(&node.file_names, &selection.window)
        .into_iter()
        .map(|name| {
            BaseName::new(name).map_err(|_| Error::InvalidStatus {
                capture: capture.to_string(),
                reason: format!(
                    "file name \"{}\" of node {} is not a plain file name",
                    printable(name),
                    printable(&node.node)
                ),
            })
        })
        .collect()
}

impl Authorized {
    /// The status entries of the selected nodes (each must be in the status), in status order.
    fn selected_nodes(&self, selection: &Selection) -> Result<Vec<&NodeFiles>> {
        if let Some(missing) = selection
            .nodes
            .iter()
            .find(|n| !self.capture.files.iter().any(|f| f.node == n.as_str()))
        {
            return Err(Error::NodeNotInCapture {
                node: missing.to_string(),
                capture: self.capture.reference.to_string(),
            });
        }
        Ok(self
            .capture
            .files
            .iter()
            .filter(|f| selection.has_node(&f.node))
            .collect())
    }

    /// Each node's capture directory (validated from the status) and how it is reached.
    async fn reach_all(&self, nodes: &[&NodeFiles]) -> Result<Vec<(EntryPoint, CaptureDir)>> {
        let dirs = nodes
            .iter()
            .map(|node| CaptureDir::new(&node.node, &node.directory, &self.capture.reference))
            .collect::<Result<Vec<_>>>()?;
        let names: Vec<NodeName> = dirs.iter().map(|d| d.node().clone()).collect();
        let entries = self.ports.fetcher.entry_points(&names).await?;
        Ok(entries.into_iter().zip(dirs).collect())
    }
}

impl CaptureService {
    /// Wires the use cases to an authenticator (local cluster) and a router.
    pub fn new(authenticator: Arc<dyn Authenticator>, router: Arc<dyn ClusterRouter>) -> Self {
        Self {
            authenticator,
            router,
            engine: Engine::default(),
            filters: None,
        }
    }

    /// Merges may be filtered, with expressions `compiler` compiles.
    pub fn with_filters(mut self, compiler: Arc<dyn FilterCompiler>) -> Self {
        self.filters = Some(compiler);
        self
    }

    /// Downloads read nodes and spool as `engine` says.
    pub fn with_engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// How downloads read nodes and spool.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Downloads the capture's files as one zip: every file of the selected nodes, or, with a
    /// time window, the files whose packets may fall in it (decided from their names). When
    /// every selected node finished and the zip is stored, it is planned from the nodes'
    /// listings ([`Download::Planned`]); otherwise it streams as the nodes are read, unless
    /// `ask` is [`ZipAsk::Head`] (then nothing is read: [`Download::Unstarted`]).
    pub async fn download(
        &self,
        request: &Request,
        compression: Compression,
        selection: &Selection,
        ask: ZipAsk,
    ) -> Result<Download> {
        if selection.filter.is_some() {
            return Err(Error::BadFilter {
                message: "files.zip carries the files whole; filter packets with merged.pcapng"
                    .into(),
            });
        }
        let authorized = self.authorize(request, Verb::Get).await?;
        let selected = authorized.selected_nodes(selection)?;
        let finished = selected
            .iter()
            .all(|n| n.state == Some(CaptureState::Finished));
        let mut chosen = Vec::new();
        for node in selected {
            if node.file_names.is_empty() {
                continue;
            }
            let files = if selection.window.is_all() {
                None
            } else {
                let files = selected_files(&authorized.capture.reference, node, selection)?;
                if files.is_empty() {
                    continue;
                }
                Some(files)
            };
            chosen.push((node, files));
        }
        if chosen.is_empty() {
            return Ok(Download::Empty);
        }
        // Every entry point is resolved (in one go) before anything is sent, so a missing one
        // is an error status rather than a cut download.
        let nodes: Vec<&NodeFiles> = chosen.iter().map(|(n, _)| *n).collect();
        let reached = authorized.reach_all(&nodes).await?;
        let status: Vec<NodeFiles> = nodes.iter().map(|n| (*n).clone()).collect();
        let namer = EntryNamer::from_status(&status);
        let fetcher = authorized.ports.fetcher.clone();
        let user = &authorized.user;
        if finished && compression == Compression::Stored {
            let zip = Planning {
                cluster: request.cluster.name(),
                user,
                fetcher: &fetcher,
                reached: &reached,
                chosen: &chosen,
                namer: &namer,
            };
            return self.planned(zip, ask).await;
        }
        if ask == ZipAsk::Head {
            return Ok(Download::Unstarted);
        }
        let sources = reached
            .into_iter()
            .zip(chosen.iter().map(|(_, files)| files.clone()))
            .map(|((entry, dir), files)| NodeSource { entry, dir, files })
            .collect();
        match archive::stream_zip(fetcher, sources, namer, compression, &self.engine, user).await? {
            Some(zip) => Ok(Download::Zip(zip)),
            None => Ok(Download::Empty),
        }
    }

    /// Plans the zip of a finished capture from the nodes' listings; for a whole zip, starts
    /// it. A whole zip may join listings other downloads started; should one of them have
    /// missed a change that the read finds before the first byte, it is planned again from
    /// listings of its own.
    async fn planned(&self, zip: Planning<'_>, ask: ZipAsk) -> Result<Download> {
        let mut shared = (ask == ZipAsk::Whole).then_some(zip.cluster);
        loop {
            let listed = self
                .listings(zip.user, zip.fetcher, zip.reached, shared)
                .await?;
            let planned = zip
                .reached
                .iter()
                .cloned()
                .zip(listed)
                .zip(zip.chosen)
                .map(|(((entry, dir), files), (status, wanted))| {
                    let files = planned_files(&dir, files, status, wanted.as_deref());
                    (entry, dir, files)
                })
                .collect();
            let Some(plan) = ZipPlan::new(zip.cluster, planned, zip.namer.clone())? else {
                return Ok(Download::Empty);
            };
            let mut planned = PlannedZip {
                plan: Arc::new(plan),
                fetcher: zip.fetcher.clone(),
                engine: self.engine.clone(),
                user: zip.user.to_owned(),
                started: None,
            };
            if ask != ZipAsk::Whole {
                return Ok(Download::Planned(planned));
            }
            match planned.stream(None).await {
                Ok(stream) => {
                    planned.started = Some(stream);
                    return Ok(Download::Planned(planned));
                }
                Err(Error::FileChanged { .. }) if shared.is_some() => shared = None,
                Err(e) => return Err(e),
            }
        }
    }

    /// Lists the directories of `reached` nodes, as many at once as a download reads, in
    /// order. With `shared` (a cluster's name), a listing of the same directory that another
    /// download started and that still runs is joined instead.
    async fn listings(
        &self,
        user: &str,
        fetcher: &Arc<dyn FileFetcher>,
        reached: &[(EntryPoint, CaptureDir)],
        shared: Option<&str>,
    ) -> Result<Vec<Vec<FileInfo>>> {
        let idle = self.engine.fetch.idle_timeout;
        let flights = &self.engine.listings;
        let listings = reached.iter().map(|(entry, dir)| {
            let list = move || {
                let (fetcher, entry, dir) = (fetcher.clone(), entry.clone(), dir.clone());
                async move { within(idle, dir.node(), fetcher.list(&entry, &dir)).await }
            };
            async move {
                match shared {
                    Some(cluster) => flights.list(cluster, dir, list).await,
                    None => list().await,
                }
            }
        });
        let budget = &self.engine.budget;
        let first = budget.stream(user, "a listing").await?;
        budget
            .run_each(
                first,
                self.engine.fetch.concurrency.get(),
                listings.collect(),
            )
            .await
            .into_iter()
            .collect()
    }

    /// Merges the packets of the selection into one pcapng in timestamp order: one stream
    /// (interface) per node and `{pod}_{iface}` file series, read at once.
    pub async fn merged(&self, request: &Request, selection: &Selection) -> Result<Download> {
        let authorized = self.authorize(request, Verb::Get).await?;
        let filter = self.filter(selection).await?;
        let reference = &authorized.capture.reference;
        let mut chosen = Vec::new();
        for node in authorized.selected_nodes(selection)? {
            let files = selected_files(reference, node, selection)?;
            if !files.is_empty() {
                chosen.push((node, files));
            }
        }
        if chosen.is_empty() {
            return Ok(Download::Empty);
        }
        let nodes: Vec<&NodeFiles> = chosen.iter().map(|(n, _)| *n).collect();
        let reached = authorized.reach_all(&nodes).await?;
        let mut streams = Vec::new();
        for ((entry, dir), (_, files)) in reached.into_iter().zip(chosen) {
            let mut series: std::collections::BTreeMap<String, Vec<(FileName, BaseName)>> =
                std::collections::BTreeMap::new();
            for file in files {
                let parsed = FileName::parse(file.as_str());
                series
                    .entry(parsed.stream.clone())
                    .or_default()
                    .push((parsed, file));
            }
            for (stream, mut members) in series {
                members.sort_by_key(|(parsed, _)| parsed.order_key());
                let node = dir.node().to_string();
                let (name, description) = match members[0].0.pod_and_interface() {
                    Some((pod, iface)) => (
                        format!("{node}/{iface}"),
                        format!(
                            "packetcapture {reference}, pod {pod}, interface {iface}, node {node}"
                        ),
                    ),
                    None => (
                        format!("{node}/{stream}"),
                        format!("packetcapture {reference}, file {stream}, node {node}"),
                    ),
                };
                streams.push(StreamSource {
                    source: NodeSource {
                        entry: entry.clone(),
                        dir: dir.clone(),
                        files: Some(members.into_iter().map(|(_, f)| f).collect()),
                    },
                    name,
                    description,
                });
            }
        }
        let fetcher = authorized.ports.fetcher.clone();
        let choice = archive::Choice {
            window: selection.window,
            filter,
        };
        let user = &authorized.user;
        match archive::stream_pcapng(fetcher, streams, choice, &self.engine, user).await? {
            Some(stream) => Ok(Download::Pcapng(stream)),
            None => Ok(Download::Empty),
        }
    }

    /// Follows a running capture: its packets as they are written, merged into one pcapng in
    /// time order within `lag`, from `since` (the selection's, or now) until `until`, until
    /// every node of the status stopped capturing, or until the client leaves.
    pub async fn follow(
        &self,
        request: &Request,
        selection: &Selection,
        lag: std::time::Duration,
    ) -> Result<Download> {
        let authorized = self.authorize(request, Verb::Get).await?;
        let filter = self.filter(selection).await?;
        authorized.selected_nodes(selection)?;
        let window = crate::pcap::Window {
            since: Some(
                selection
                    .window
                    .since
                    .unwrap_or_else(archive::follow::wall_nanos),
            ),
            until: selection.window.until,
        };
        let follow = archive::follow::Follow {
            fetcher: authorized.ports.fetcher.clone(),
            locator: authorized.ports.locator.clone(),
            capture: authorized.capture.reference.clone(),
            nodes: selection.nodes.clone(),
            choice: archive::Choice { window, filter },
            lag,
            poll: (lag / 2).clamp(
                std::time::Duration::from_millis(100),
                std::time::Duration::from_millis(500),
            ),
            budget: self.engine.budget.clone(),
        };
        let stream = archive::stream_follow(follow, &self.engine, &authorized.user).await?;
        Ok(Download::Pcapng(stream))
    }

    /// The selection's filter, compiled for Ethernet now (Calico's captures are Ethernet), so
    /// a malformed expression is refused before any node is read; other link types compile
    /// when met.
    async fn filter(&self, selection: &Selection) -> Result<Option<Arc<Filter>>> {
        let Some(expression) = &selection.filter else {
            return Ok(None);
        };
        let compiler = self.filters.clone().ok_or_else(|| Error::BadFilter {
            message: "this service cannot filter packets (no filter compiler)".into(),
        })?;
        let filter = Filter::new(expression.clone(), compiler);
        filter
            .program(crate::pcap::LINKTYPE_ETHERNET, crate::pcap::DEFAULT_SNAPLEN)
            .await?;
        Ok(Some(Arc::new(filter)))
    }

    /// One file of one node: it must be in that node's `fileNames` and on the node now.
    pub async fn file(
        &self,
        request: &Request,
        node: &NodeName,
        name: &BaseName,
    ) -> Result<NodeFile> {
        let authorized = self.authorize(request, Verb::Get).await?;
        let not_found = || Error::FileNotFound {
            node: node.to_string(),
            file: name.to_string(),
            capture: authorized.capture.reference.to_string(),
        };
        let status = authorized
            .capture
            .files
            .iter()
            .find(|f| f.node == node.as_str() && f.file_names.iter().any(|n| n == name.as_str()))
            .ok_or_else(not_found)?;
        let (entry, dir) = authorized
            .reach_all(&[status])
            .await?
            .pop()
            .ok_or_else(|| Error::Internal("a reached node went missing".into()))?;
        let fetcher = authorized.ports.fetcher.clone();
        let idle = self.engine.fetch.idle_timeout;
        let budget = self.engine.budget.clone();
        let listed = {
            let _stream = budget.stream(&authorized.user, "reading one file").await?;
            within(idle, node, fetcher.list(&entry, &dir)).await?
        };
        let info = listed
            .into_iter()
            .find(|f| f.name == name.as_str())
            .ok_or_else(not_found)?;
        Ok(NodeFile {
            node: node.clone(),
            info,
            finished: status.state == Some(CaptureState::Finished),
            fetcher,
            entry,
            dir,
            name: name.clone(),
            user: authorized.user.clone(),
            budget,
        })
    }

    /// Lists the files on every node of the capture as they are now.
    pub async fn list(&self, request: &Request) -> Result<Listing> {
        let authorized = self.authorize(request, Verb::Get).await?;
        let all: Vec<&NodeFiles> = authorized.capture.files.iter().collect();
        let reached = authorized.reach_all(&all).await?;
        let listed = self
            .listings(&authorized.user, &authorized.ports.fetcher, &reached, None)
            .await?;
        let nodes = reached
            .into_iter()
            .zip(listed)
            .zip(&authorized.capture.files)
            .map(|(((_, dir), mut files), node)| {
                files.sort_by(|a, b| a.name.cmp(&b.name));
                NodeListing {
                    dir,
                    state: node.state.clone(),
                    files,
                }
            })
            .collect();
        Ok(Listing {
            cluster: request.cluster.name().to_owned(),
            capture: authorized.capture.reference,
            nodes,
        })
    }

    /// Removes the capture's files from every node and clears them from its status.
    pub async fn delete(&self, request: &Request) -> Result<()> {
        let authorized = self.authorize(request, Verb::Delete).await?;
        for node in &authorized.capture.files {
            match &node.state {
                Some(CaptureState::Finished) => {}
                Some(state) => {
                    return Err(Error::CaptureNotFinished {
                        node: node.node.clone(),
                        state: state.as_str().into(),
                    });
                }
                None => {
                    return Err(Error::CaptureStateUnknown {
                        node: node.node.clone(),
                    });
                }
            }
        }
        // Every node of the status, files listed or not (a repeated delete, or files left
        // after a status edit, are removed too); all reached before anything is removed.
        let all: Vec<&NodeFiles> = authorized.capture.files.iter().collect();
        let targets = authorized.reach_all(&all).await?;
        let idle = self.engine.fetch.idle_timeout;
        let removals: Vec<_> = targets
            .into_iter()
            .map(|(entry, dir)| {
                let fetcher = authorized.ports.fetcher.clone();
                async move {
                    let removed = within(idle, dir.node(), fetcher.remove(&entry, &dir)).await;
                    (dir, removed)
                }
            })
            .collect();
        let mut failure = None;
        let mut cleared = Vec::new();
        let budget = &self.engine.budget;
        let first = budget.stream(&authorized.user, "a delete").await?;
        let concurrency = self.engine.fetch.concurrency.get();
        for (dir, removed) in budget.run_each(first, concurrency, removals).await {
            match removed {
                Ok(()) => {
                    tracing::info!(capture = %authorized.capture.reference, node = %dir.node(), "removed capture files");
                    cleared.push(dir.node().to_string());
                }
                Err(e) => {
                    tracing::warn!(capture = %authorized.capture.reference, node = %dir.node(), error = %e.chain(), "removing capture files failed");
                    failure.get_or_insert(e);
                }
            }
        }
        // Only the nodes whose files are gone, and that list any, are cleared in the status.
        let Authorized { ports, capture, .. } = authorized;
        let listed: Vec<String> = capture
            .files
            .iter()
            .filter(|n| !n.file_names.is_empty() && cleared.contains(&n.node))
            .map(|n| n.node.clone())
            .collect();
        if !listed.is_empty() {
            clear_file_names(&ports, capture, &listed).await?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn authorize(&self, request: &Request, verb: Verb) -> Result<Authorized> {
        let caller = self.authenticator.authenticate(&request.token).await?;
        let user = self.impersonate(caller, &request.impersonation).await?;
        // The request's span (opened by the edge) names who it runs for, in every line after.
        tracing::Span::current().record("user", user.name.as_str());
        let ports = self.router.route(&request.cluster).await?;
        let attributes = ResourceAttributes::capture_files(verb, &request.capture);
        if !ports.authorizer.allowed(&user, &attributes).await? {
            return Err(Error::Forbidden {
                user: user.name,
                verb,
                namespace: request.capture.namespace.to_string(),
            });
        }
        let capture = locate(&ports, &request.capture).await?;
        Ok(Authorized {
            ports,
            capture,
            user: user.name,
        })
    }

    /// Applies the impersonation headers the way the Kubernetes API server does.
    async fn impersonate(&self, caller: User, wanted: &Impersonation) -> Result<User> {
        if wanted.is_empty() {
            return Ok(caller);
        }
        let Some(name) = wanted.user.as_deref().filter(|n| !n.is_empty()) else {
            return Err(Error::MissingImpersonationUser);
        };
        let local = self.router.route(&ClusterTarget::Local).await?;
        let mut checks = vec![(
            ResourceAttributes::impersonate_user(name),
            format!("user {name}"),
        )];
        for group in &wanted.groups {
            checks.push((
                ResourceAttributes::impersonate_group(group),
                format!("group {group}"),
            ));
        }
        for (key, values) in &wanted.extra {
            for value in values {
                checks.push((
                    ResourceAttributes::impersonate_extra(key, value),
                    format!("extra {key}={value}"),
                ));
            }
        }
        for (attributes, target) in checks {
            if !local.authorizer.allowed(&caller, &attributes).await? {
                return Err(Error::ImpersonationDenied {
                    user: caller.name,
                    target,
                });
            }
        }
        let mut groups = wanted.groups.clone();
        if groups.is_empty()
            && let Some((ns, _)) = service_account(name)
        {
            groups = vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
            ];
        }
        let anonymous = name == "system:anonymous";
        let has_all = groups
            .iter()
            .any(|g| g == "system:authenticated" || g == "system:unauthenticated");
        if !anonymous && !has_all {
            groups.push("system:authenticated".into());
        }
        tracing::debug!(caller = %caller.name, user = %name, "impersonating");
        Ok(User {
            name: name.to_owned(),
            uid: String::new(),
            groups,
            extra: wanted.extra.clone(),
        })
    }
}
