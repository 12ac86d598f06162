//! Following a running capture: every stream's packets as they are written, merged into one
//! pcapng in time order with a bounded delay, until the capture finishes, `until` passes or
//! the client leaves.
//!
//! A watcher reads the capture's status every [`Follow::poll`] and lists a node's capture
//! directory with inode numbers when the node's status changed (Felix names a new or rotated
//! file, or the node stopped), when a worker asks, or every ten polls; at most eight at once.
//! Each `{pod}_{iface}` series is read by its own worker, file after file in rotation order: a rotated file whole, the active file followed from its first byte
//! (the node's `tail -f` follows the file it opened, also once Felix renames it). A followed file
//! is done when the listing shows its inode under a rotated name (or its node no longer
//! capturing) and every byte of its final size was read; the worker then goes on with the next
//! file of the series, so a rotation loses no packet and repeats none. A follow is trusted only
//! once a listing made after its first bytes shows the active name still on the same inode
//! (else Felix rotated between the listing and the open: it is dropped and the file is read as
//! rotated). A record whose second half is not written yet simply waits in the reader. Streams
//! that appear in the status later get workers of their own.
//!
//! The merge sends a packet once every other stream has a later one waiting or has sent nothing
//! for the lag; packets are sent as soon as they may be (no batching). Nothing here times out a
//! quiet stream: only an exec that fails ends the response, with its error.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::fetch::NodeSource;
use super::merge::{Choice, Interfaces, StreamSource};
use super::output::{Msg, Summary, send};
use crate::bpf::Program;
use crate::budget::{Budget, RETRY_AFTER, STREAM_COST};
use crate::error::{Error, Result};
use crate::pcap::{self, FileName, Packet, PcapHeader, PcapReader};
use crate::ports::{CaptureLocator, FileFetcher};
use crate::types::{
    BaseName, CaptureDir, CaptureRef, CaptureState, EntryPoint, FileSlice, FileState, NodeName,
};

/// The application named in the section header.
const APPLICATION: &str = concat!("packetcapture-api ", env!("CARGO_PKG_VERSION"));

/// What a follow reads and how.
pub struct Follow {
    /// Reaches the nodes.
    pub fetcher: Arc<dyn FileFetcher>,
    /// Reads the capture's status.
    pub locator: Arc<dyn CaptureLocator>,
    /// The capture.
    pub capture: CaptureRef,
    /// Only these nodes (empty: every node, also nodes that appear later).
    pub nodes: Vec<NodeName>,
    /// The packets kept: window (its `since` is when the follow starts unless the request
    /// gave one) and filter.
    pub choice: Choice,
    /// How long a quiet stream holds the others back.
    pub lag: Duration,
    /// How often the status and the directories are read.
    pub poll: Duration,
    /// Each followed stream takes a node stream of the process's budget while it runs.
    pub budget: Arc<Budget>,
}

/// A node's directory as the last listing saw it.
#[derive(Clone, Debug)]
struct NodeView {
    /// When the listing was started.
    listed_at: Instant,
    /// The node is still capturing.
    capturing: bool,
    /// Its pcap files.
    files: Vec<FileState>,
}

/// What a worker tells the merge.
enum Event {
    /// A packet of stream `id` (in the window, matched by the filter).
    Packet(usize, Packet, PcapHeader),
    /// Stream `id` will send nothing more.
    Ended(usize),
    /// A stream, or the watcher, failed.
    Failed(Error),
    /// A new stream: its id is its place in the list.
    Stream(StreamSource),
    /// No node of the selection captures any more and every stream was started.
    Settled,
}

/// Starts following; resolves once the section header is ready to send.
pub(crate) async fn run(follow: Follow, tx: mpsc::Sender<Msg>) -> Result<Summary> {
    let (events_tx, mut events) = mpsc::channel::<Event>(256);
    let (lag, until) = (follow.lag, follow.choice.window.until);
    let mut tasks = JoinSet::new();
    tasks.spawn(watch_capture(
        Arc::new(FollowShared {
            follow,
            relist: tokio::sync::Notify::new(),
        }),
        events_tx,
    ));
    let mut out = BytesMut::new();
    pcap::section_header(&mut out, APPLICATION);
    send(&tx, Msg::Data(vec![out.split().freeze()])).await?;
    let result = merge(&mut events, lag, until, HOLD_PER_STREAM, &tx, &mut out).await;
    tasks.abort_all();
    result
}

/// What the watcher and its workers share.
struct FollowShared {
    follow: Follow,
    /// Wakes the watcher before its next poll: a follow that got its first bytes waits for a
    /// listing to trust them, and its stream holds the merge back meanwhile.
    relist: tokio::sync::Notify,
}

/// One stream in the merge.
struct Merging {
    heads: VecDeque<(Packet, PcapHeader)>,
    /// The last packet (or the stream's start).
    last: Instant,
    ended: bool,
    source: StreamSource,
}

/// Packet bytes the merge may hold per stream while a quiet one holds them back; past it, it
/// takes no more until the lag lets some go (the nodes' `tail`s wait meanwhile: nothing is
/// lost, a busy capture followed with a long lag stays within memory).
const HOLD_PER_STREAM: usize = STREAM_COST as usize;
/// A followed file's packets held until the follow is confirmed (see [`follow_file`]); past
/// it, reading waits for the confirming listing.
const UNCONFIRMED_LIMIT: usize = STREAM_COST as usize;

/// Sends packets in time order as the lag allows; ends when every stream ended after the
/// capture settled, or once `until` (wall clock, nanoseconds) is past by the lag. Holds at
/// most `hold_per_stream` bytes of packets per stream (1 MiB at least) before it stops taking
/// more.
async fn merge(
    events: &mut mpsc::Receiver<Event>,
    lag: Duration,
    until: Option<u64>,
    hold_per_stream: usize,
    tx: &mpsc::Sender<Msg>,
    out: &mut BytesMut,
) -> Result<Summary> {
    let mut held = 0usize;
    let mut streams: Vec<Merging> = Vec::new();
    let mut settled = false;
    let mut interfaces = Interfaces::new(0);
    let mut summary = Summary::default();
    let tick = (lag / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    loop {
        // Everything that may go now.
        loop {
            let now = Instant::now();
            let Some(i) = (0..streams.len())
                .filter(|i| !streams[*i].heads.is_empty())
                .min_by_key(|i| (streams[*i].heads[0].0.ts, *i))
            else {
                break;
            };
            let held_back = streams.iter().enumerate().any(|(j, s)| {
                j != i && !s.ended && s.heads.is_empty() && now.duration_since(s.last) < lag
            });
            if held_back {
                break;
            }
            let Some((packet, header)) = streams[i].heads.pop_front() else {
                break;
            };
            held = held.saturating_sub(packet.data.len());
            let id = interfaces.id(out, i, &streams[i].source, header);
            pcap::packet(out, id, &packet);
            summary.packets += 1;
            summary.read += 1;
            summary.bytes += packet.data.len() as u64;
        }
        if !out.is_empty() {
            send(tx, Msg::Data(vec![out.split().freeze()])).await?;
        }
        let all_done = streams.iter().all(|s| s.ended && s.heads.is_empty());
        if settled && all_done {
            return Ok(summary);
        }
        if let Some(until) = until
            && wall_nanos() > until.saturating_add(lag.as_nanos() as u64)
            && streams.iter().all(|s| s.heads.is_empty())
        {
            return Ok(summary);
        }
        let full = held >= hold_per_stream.saturating_mul(streams.len()).max(1 << 20);
        let event = tokio::select! {
            biased;
            () = tx.closed() => return Err(Error::ClientGone),
            e = events.recv(), if !full => e,
            () = tokio::time::sleep(tick) => continue,
        };
        match event {
            Some(Event::Packet(id, packet, header)) => {
                if let Some(s) = streams.get_mut(id) {
                    s.last = Instant::now();
                    held += packet.data.len();
                    s.heads.push_back((packet, header));
                }
            }
            Some(Event::Ended(id)) => {
                if let Some(s) = streams.get_mut(id) {
                    s.ended = true;
                }
            }
            Some(Event::Stream(source)) => {
                interfaces.add_stream();
                streams.push(Merging {
                    heads: VecDeque::new(),
                    last: Instant::now(),
                    ended: false,
                    source,
                });
            }
            Some(Event::Settled) => settled = true,
            Some(Event::Failed(e)) => return Err(e),
            None => return Err(Error::Internal("the follow's watcher stopped".into())),
        }
    }
}

/// The wall clock in nanoseconds since the Unix epoch (packets' time scale).
pub(crate) fn wall_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Reads the status and the directories every poll, publishes each node's view, starts a
/// worker per new stream; says when the capture settled.
async fn watch_capture(shared: Arc<FollowShared>, events: mpsc::Sender<Event>) {
    if let Err(e) = watch_loop(&shared, &events).await {
        let _ = events.send(Event::Failed(e)).await;
    }
}

struct NodeWatch {
    entry: EntryPoint,
    dir: CaptureDir,
    view: watch::Sender<NodeView>,
    streams: HashSet<String>,
    /// The node's state and file names in the status when it was last listed.
    seen: Option<(Option<CaptureState>, Vec<String>)>,
    /// When it was last listed.
    listed: Instant,
    /// A worker of this node asked for a listing (to confirm a follow).
    wanted: Arc<std::sync::atomic::AtomicBool>,
}

/// How many nodes are listed at once.
const LISTINGS_AT_ONCE: usize = 8;

/// A node is listed when its status changed (Felix names a new or rotated file, or the node
/// stopped), when a worker asks, or when it was not listed for this many polls: listing every
/// node every poll would be an exec per node twice a second on the API server.
const POLLS_BETWEEN_LISTINGS: u32 = 10;

async fn watch_loop(shared: &Arc<FollowShared>, events: &mpsc::Sender<Event>) -> Result<()> {
    let mut nodes: BTreeMap<String, NodeWatch> = BTreeMap::new();
    let mut workers = JoinSet::new();
    let mut next_id = 0usize;
    let mut settled = false;
    let fallback = shared.follow.poll * POLLS_BETWEEN_LISTINGS;
    loop {
        let listed_at = Instant::now();
        let capture = shared
            .follow
            .locator
            .get(&shared.follow.capture)
            .await?
            .ok_or_else(|| Error::CaptureNotFound {
                capture: shared.follow.capture.to_string(),
            })?;
        let mut any_capturing = false;
        // The nodes to list now: (key, entry, dir, capturing, what the status says).
        let mut due = Vec::new();
        for status in &capture.files {
            let Ok(node) = NodeName::new(&status.node) else {
                continue;
            };
            if !shared.follow.nodes.is_empty() && !shared.follow.nodes.contains(&node) {
                continue;
            }
            let capturing = status.state == Some(CaptureState::Capturing);
            any_capturing |= capturing;
            if !nodes.contains_key(node.as_str()) {
                let dir = CaptureDir::new(node.as_str(), &status.directory, &shared.follow.capture)
                    .map_err(|_| Error::InvalidStatus {
                        capture: shared.follow.capture.to_string(),
                        reason: format!("node {node} has an invalid directory"),
                    })?;
                let entry = shared.follow.fetcher.entry_point(&node).await?;
                let (view, _) = watch::channel(NodeView {
                    listed_at,
                    capturing,
                    files: Vec::new(),
                });
                nodes.insert(
                    node.to_string(),
                    NodeWatch {
                        entry,
                        dir,
                        view,
                        streams: HashSet::new(),
                        seen: None,
                        listed: listed_at,
                        wanted: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                    },
                );
            }
            let Some(watched) = nodes.get_mut(node.as_str()) else {
                continue;
            };
            let said = (status.state.clone(), status.file_names.clone());
            let asked = watched
                .wanted
                .swap(false, std::sync::atomic::Ordering::SeqCst);
            if asked || watched.seen.as_ref() != Some(&said) || watched.listed.elapsed() >= fallback
            {
                due.push((
                    node.to_string(),
                    watched.entry.clone(),
                    watched.dir.clone(),
                    capturing,
                    said,
                ));
            }
        }
        let fetcher = &shared.follow.fetcher;
        let mut listings = futures_util::stream::iter(due.into_iter().map(
            |(key, entry, dir, capturing, said)| async move {
                let files = fetcher.inodes(&entry, &dir).await;
                (key, capturing, said, files)
            },
        ))
        .buffer_unordered(LISTINGS_AT_ONCE);
        while let Some((key, capturing, said, files)) = listings.next().await {
            let Some(watched) = nodes.get_mut(&key) else {
                continue;
            };
            let files: Vec<FileState> = files?
                .into_iter()
                .filter(|f| f.name.ends_with(".pcap") && BaseName::new(&f.name).is_ok())
                .collect();
            let stems: Vec<String> = files
                .iter()
                .map(|f| FileName::parse(&f.name).stream)
                .collect();
            watched.seen = Some(said);
            watched.listed = listed_at;
            watched.view.send_replace(NodeView {
                listed_at,
                capturing,
                files,
            });
            for stem in stems {
                if !watched.streams.insert(stem.clone()) {
                    continue;
                }
                let source =
                    stream_source(&shared.follow.capture, &watched.entry, &watched.dir, &stem);
                events
                    .send(Event::Stream(source))
                    .await
                    .map_err(|_| Error::ClientGone)?;
                workers.spawn(worker(Worker {
                    id: next_id,
                    shared: shared.clone(),
                    entry: watched.entry.clone(),
                    dir: watched.dir.clone(),
                    stem,
                    view: watched.view.subscribe(),
                    wanted: watched.wanted.clone(),
                    events: events.clone(),
                }));
                next_id += 1;
            }
        }
        drop(listings);
        if !any_capturing && !settled {
            settled = true;
            let _ = events.send(Event::Settled).await;
        }
        let pause = shared
            .follow
            .poll
            .saturating_sub(listed_at.elapsed())
            .max(Duration::from_millis(20));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shared.relist.notified() => {}
        }
    }
}

fn stream_source(
    capture: &CaptureRef,
    entry: &EntryPoint,
    dir: &CaptureDir,
    stem: &str,
) -> StreamSource {
    let node = entry.node.to_string();
    let (name, description) = match stem.split_once('_') {
        Some((pod, iface)) => (
            format!("{node}/{iface}"),
            format!("packetcapture {capture}, pod {pod}, interface {iface}, node {node}"),
        ),
        None => (
            format!("{node}/{stem}"),
            format!("packetcapture {capture}, file {stem}, node {node}"),
        ),
    };
    StreamSource {
        source: NodeSource {
            entry: entry.clone(),
            dir: dir.clone(),
            files: None,
        },
        name,
        description,
    }
}

struct Worker {
    id: usize,
    /// The follow (fetcher, budget, choice) and the watcher's relist notice.
    shared: Arc<FollowShared>,
    entry: EntryPoint,
    dir: CaptureDir,
    stem: String,
    view: watch::Receiver<NodeView>,
    /// Set to have this node listed at the next poll.
    wanted: Arc<std::sync::atomic::AtomicBool>,
    events: mpsc::Sender<Event>,
}

async fn worker(mut w: Worker) {
    // One node stream of the budget while the stream is read.
    let result = match w.shared.follow.budget.try_reserve(1, STREAM_COST) {
        Some(_reserved) => read_stream(&mut w).await,
        None => Err(Error::Busy {
            reason: format!(
                "no node stream was free for {}'s series {}",
                w.entry.node, w.stem
            ),
            retry_after: RETRY_AFTER,
        }),
    };
    let last = match result {
        Ok(()) => Event::Ended(w.id),
        Err(e) => Event::Failed(e),
    };
    let _ = w.events.send(last).await;
}

/// The stream's files not read yet, in order: rotated ones by rotation time, then the active.
fn pending<'a>(view: &'a NodeView, stem: &str, done: &HashSet<u64>) -> Vec<&'a FileState> {
    let mut files: Vec<(&FileState, FileName)> = view
        .files
        .iter()
        .map(|f| (f, FileName::parse(&f.name)))
        .filter(|(f, n)| n.stream == stem && !done.contains(&f.inode))
        .collect();
    files.sort_by_key(|(_, n)| n.order_key());
    files.into_iter().map(|(f, _)| f).collect()
}

/// Parses bytes of one file into packets and hands those the choice keeps to the merge.
struct FileReader {
    reader: PcapReader,
    program: Option<(PcapHeader, Arc<Program>)>,
}

impl FileReader {
    fn new() -> Self {
        Self {
            reader: PcapReader::new(),
            program: None,
        }
    }

    /// The packets of `data` that are kept (`held` collects them instead of sending when the
    /// follow is not trusted yet).
    async fn push(
        &mut self,
        w: &Worker,
        node: &str,
        file: &str,
        data: Bytes,
        held: Option<&mut Vec<(Packet, PcapHeader)>>,
    ) -> Result<()> {
        self.reader.push(data);
        let mut kept = Vec::new();
        loop {
            let packet = self.reader.next_packet().map_err(|e| Error::NotACapture {
                node: node.to_owned(),
                file: file.to_owned(),
                reason: e.to_string(),
            })?;
            let (Some(packet), Some(header)) = (packet, self.reader.header()) else {
                break;
            };
            if !w.shared.follow.choice.window.contains(packet.ts) {
                continue;
            }
            if let Some(filter) = &w.shared.follow.choice.filter {
                let program = match &self.program {
                    Some((h, p))
                        if (h.link_type, h.snaplen) == (header.link_type, header.snaplen) =>
                    {
                        p.clone()
                    }
                    _ => {
                        let p = filter.program(header.link_type, header.snaplen).await?;
                        self.program = Some((header, p.clone()));
                        p
                    }
                };
                if !program.matches(&packet.data, packet.orig_len) {
                    continue;
                }
            }
            kept.push((packet, header));
        }
        match held {
            Some(held) => held.extend(kept),
            None => {
                for (packet, header) in kept {
                    w.events
                        .send(Event::Packet(w.id, packet, header))
                        .await
                        .map_err(|_| Error::ClientGone)?;
                }
            }
        }
        Ok(())
    }
}

async fn read_stream(w: &mut Worker) -> Result<()> {
    let node = w.entry.node.to_string();
    let mut done: HashSet<u64> = HashSet::new();
    let mut first = true;
    loop {
        let view = w.view.borrow_and_update().clone();
        let files = pending(&view, &w.stem, &done);
        let Some(next) = files.first().map(|f| (*f).clone()) else {
            if !view.capturing {
                return Ok(());
            }
            w.view.changed().await.map_err(|_| Error::ClientGone)?;
            continue;
        };
        let parsed = FileName::parse(&next.name);
        // On the first pass, rotated files before the window are skipped by their names.
        if first
            && parsed.rotated.is_some_and(|micros| {
                w.shared
                    .follow
                    .choice
                    .window
                    .since
                    .is_some_and(|since| micros.saturating_mul(1_000) < since)
            })
        {
            done.insert(next.inode);
            continue;
        }
        let name = BaseName::new(&next.name).map_err(|_| {
            Error::Internal(format!("a listed name {} is not a base name", next.name))
        })?;
        if parsed.rotated.is_some() || !view.capturing {
            // A file that no longer grows: read whole.
            read_whole(w, &node, &name, next.size).await?;
            done.insert(next.inode);
            continue;
        }
        first = false;
        if follow_file(w, &node, &name, next.inode).await? {
            done.insert(next.inode);
        }
    }
}

/// Reads `size` bytes of a file that no longer grows.
async fn read_whole(w: &Worker, node: &str, name: &BaseName, size: u64) -> Result<()> {
    let slice = FileSlice {
        dir: w.dir.clone(),
        name: name.clone(),
        start: 0,
        len: size,
    };
    let mut stream = w.shared.follow.fetcher.read_file(&w.entry, &slice).await?;
    let mut file = FileReader::new();
    while let Some(chunk) = stream.next().await {
        file.push(w, node, name.as_str(), chunk?, None).await?;
    }
    Ok(())
}

/// Follows the active file of inode `inode`: true once all of it was read (it was renamed, or
/// its node stopped capturing, and its final size is in; or it is gone); false when it cannot
/// be known that the follow opened `inode` (Felix rotated around the open) and the series must
/// go on from `inode` read whole under its rotated name.
///
/// Which file `tail` opened is known only from a listing started after its first bytes: if
/// that listing still shows the active name on `inode`, the name pointed there since the
/// listing that found `inode` (a name only ever moves to newer files), so the open was ours.
/// Until then packets are held; if `inode` was renamed first, they are dropped and the file is
/// read whole instead (the packets of whichever file the follow opened come again either way:
/// `inode` read whole, or the newer file followed next).
async fn follow_file(w: &mut Worker, node: &str, name: &BaseName, inode: u64) -> Result<bool> {
    let mut stream = w
        .shared
        .follow
        .fetcher
        .follow(&w.entry, &w.dir, name)
        .await?;
    let mut file = FileReader::new();
    let mut consumed = 0u64;
    // Packets held until a listing after the first bytes says which file was opened.
    let mut held: Option<Vec<(Packet, PcapHeader)>> = Some(Vec::new());
    let mut first_bytes: Option<Instant> = None;
    // Bytes of the packets held.
    let mut unconfirmed = 0usize;
    // What the latest listing says of this file; read again only when a listing comes (not
    // for every chunk: a directory may hold hundreds of rotated files).
    let mut view = Seen::of(&mut w.view, inode);
    loop {
        let ours = &view.ours;
        if held.is_some()
            && let Some(at) = first_bytes
            && view.listed_at <= at
        {
            // Not confirmed by the listings so far: ask until a listing after the first bytes.
            w.wanted.store(true, std::sync::atomic::Ordering::SeqCst);
            w.shared.relist.notify_one();
        }
        if held.is_some()
            && let Some(at) = first_bytes
            && view.listed_at > at
        {
            match ours {
                Some(f) if f.name == name.as_str() => {
                    for (packet, header) in held.take().unwrap_or_default() {
                        w.events
                            .send(Event::Packet(w.id, packet, header))
                            .await
                            .map_err(|_| Error::ClientGone)?;
                    }
                }
                _ => {
                    tracing::debug!(node, file = %name, inode, "renamed before the follow was confirmed: read whole");
                    return Ok(ours.is_none());
                }
            }
        }
        if held.is_none() {
            match ours {
                None => return Ok(true),
                Some(f) if (f.name != name.as_str() || !view.capturing) && consumed >= f.size => {
                    return Ok(true);
                }
                Some(_) => {}
            }
        }
        tokio::select! {
            chunk = stream.next(), if held.is_none() || unconfirmed < UNCONFIRMED_LIMIT => match chunk {
                Some(Ok(data)) => {
                    if first_bytes.is_none() {
                        first_bytes = Some(Instant::now());
                    }
                    consumed += data.len() as u64;
                    let before = held.as_ref().map_or(0, Vec::len);
                    file.push(w, node, name.as_str(), data, held.as_mut()).await?;
                    if let Some(held) = &held {
                        unconfirmed += held[before..].iter().map(|(p, _)| p.data.len()).sum::<usize>();
                    }
                }
                Some(Err(e)) if first_bytes.is_none() => {
                    // Felix renames the active file, then creates the next one: a follow
                    // opened in between finds no file. Once a later listing shows the name
                    // moved on, the series goes on; otherwise the failure stands.
                    let failed = Instant::now();
                    while w.view.borrow().listed_at <= failed {
                        w.view.changed().await.map_err(|_| Error::ClientGone)?;
                    }
                    return match Seen::of(&mut w.view, inode).ours {
                        Some(f) if f.name == name.as_str() => Err(e),
                        ours => {
                            tracing::debug!(node, file = %name, inode, error = %e, "the follow found no file across a rotation");
                            Ok(ours.is_none())
                        }
                    };
                }
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(Error::Internal(format!(
                        "the follow of {name} on node {node} ended by itself"
                    )));
                }
            },
            changed = w.view.changed() => {
                changed.map_err(|_| Error::ClientGone)?;
                view = Seen::of(&mut w.view, inode);
            }
        }
    }
}

/// One followed file as a node's latest listing saw it.
struct Seen {
    /// When that listing started.
    listed_at: Instant,
    /// The node was capturing.
    capturing: bool,
    /// The file (by inode): its name and size then; `None` when gone.
    ours: Option<FileState>,
}

impl Seen {
    /// From the latest listing (marked seen).
    fn of(view: &mut watch::Receiver<NodeView>, inode: u64) -> Self {
        let latest = view.borrow_and_update();
        Self {
            listed_at: latest.listed_at,
            capturing: latest.capturing,
            ours: latest.files.iter().find(|f| f.inode == inode).cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcap::LINKTYPE_ETHERNET;

    fn source(node: &str) -> StreamSource {
        let capture = CaptureRef::parse("dev", "cap").expect("a capture");
        let node_name = NodeName::new(node).expect("a node");
        StreamSource {
            source: NodeSource {
                entry: EntryPoint {
                    node: node_name,
                    handle: node.to_owned(),
                },
                dir: CaptureDir::new(node, "/var/log/calico/pcap", &capture).expect("a dir"),
                files: None,
            },
            name: format!("{node}/eth0"),
            description: String::new(),
        }
    }

    fn packet(ts: u64) -> Event {
        Event::Packet(
            0,
            Packet {
                ts,
                orig_len: 1000,
                data: Bytes::from(vec![7u8; 1000]),
            },
            PcapHeader {
                link_type: LINKTYPE_ETHERNET,
                snaplen: 65535,
                nanos: true,
            },
        )
    }

    /// A busy stream held back by a quiet one: the merge takes packets only up to its hold
    /// (1 MiB here), so the busy stream's sender waits; once the lag passes they go out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quiet_stream_holds_back_no_more_than_the_hold() {
        let (events_tx, mut events) = mpsc::channel::<Event>(4);
        let (tx, mut rx) = mpsc::channel::<Msg>(16);
        // The client reads everything sent.
        let reading = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let lag = Duration::from_millis(600);
        let merging = tokio::spawn(async move {
            let mut out = BytesMut::new();
            merge(&mut events, lag, None, 1, &tx, &mut out).await
        });
        events_tx.send(Event::Stream(source("busy"))).await.unwrap();
        events_tx
            .send(Event::Stream(source("quiet")))
            .await
            .unwrap();
        let started = Instant::now();
        let mut sent = 0u64;
        // 3 MiB of packets: with a 1 MiB hold at most about 1 MiB is taken before the lag.
        let mut before_lag = 0u64;
        while sent < 3_000 {
            events_tx.send(packet(1_000 + sent)).await.unwrap();
            sent += 1;
            if started.elapsed() < lag / 2 {
                before_lag = sent;
            }
        }
        assert!(
            before_lag <= 1_100,
            "{before_lag} packets of 1000 bytes were taken while the quiet stream held them back"
        );
        events_tx.send(Event::Ended(0)).await.unwrap();
        events_tx.send(Event::Ended(1)).await.unwrap();
        events_tx.send(Event::Settled).await.unwrap();
        let summary = merging.await.unwrap().unwrap();
        assert_eq!(summary.packets, 3_000, "every packet went out in the end");
        reading.abort();
    }
}
