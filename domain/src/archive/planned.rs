//! The zip of a finished capture, planned from the nodes' listings before any file is read:
//! its length, its entity tag and any range of its bytes are known up front ([`Layout`]), so
//! it is served like a static file (`Content-Length`, `Range`, resumable).
//!
//! Whole, it is read as every zip is (each node's tar stream, the named files in the plan's
//! order), and each file is checked against the plan before its header goes out: a file whose
//! size or time changed, or that is gone, stops the download ([`Error::FileChanged`]), so the
//! bytes never disagree with the headers. A range reads only the files it needs: the data it
//! covers, and whole files where it covers a data descriptor, the manifest or the central
//! directory, whose CRC-32s and SHA-256s no listing gives. Those digests are kept, per
//! replica, in a [`DigestCache`] filled by every download that read a file whole, with the
//! state of the digests of a file a whole download was cut in: a resume on the replica that
//! served the cut download reads only what is missing.

use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{BoxFuture, Shared};
use futures_util::{FutureExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::fetch::{Exact, Failure, NodeSource, next_chunk};
use super::layout::{Layout, PlannedEntry, manifest};
use super::output::{CHUNK_SIZE, Msg, Summary, base_name, send, tar_error};
use super::spool::Pipe;
use super::tar::{TarEvent, TarParser};
use super::zip::EntryNamer;
use crate::error::{Error, Result};
use crate::expiring::ExpiringCache;
use crate::ports::FileFetcher;
use crate::types::{BaseName, CaptureDir, EntryPoint, FileInfo, FileSlice};

/// Files whose digests a replica keeps (a few MiB at most: the key is the file's cluster, node,
/// directory, name, size and time).
pub const DIGEST_ENTRIES: usize = 16_384;
/// How long a file's digests are kept after they were computed.
pub const DIGEST_TTL: Duration = Duration::from_secs(24 * 3600);

/// What names one file of one cluster as it was listed: its digests hold while none of this
/// changes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// The cluster's name.
    pub cluster: String,
    /// The capture's directory on the node (the node included).
    pub dir: CaptureDir,
    /// The file's name.
    pub name: BaseName,
    /// Its size when listed.
    pub size: u64,
    /// Its modification time when listed.
    pub mtime: u64,
}

/// A file's CRC-32 (the zip's) and SHA-256 (the manifest's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileDigest {
    /// CRC-32 of the file's bytes.
    pub crc: u32,
    /// SHA-256 of the file's bytes.
    pub sha256: [u8; 32],
}

/// Where the digests of a file stood when its whole download was cut: the bytes hashed so far
/// and the state after them, so a resume hashes on from there instead of from the start.
#[derive(Clone)]
struct Checkpoint {
    offset: u64,
    hashing: Hashing,
}

/// The digests of files read whole, per replica, bounded in entries and time; and where they
/// stood in the files whose whole download was cut.
pub struct DigestCache {
    cache: ExpiringCache<FileKey, FileDigest>,
    cut: ExpiringCache<FileKey, Checkpoint>,
}

impl Default for DigestCache {
    fn default() -> Self {
        Self {
            cache: ExpiringCache::new(DIGEST_ENTRIES),
            cut: ExpiringCache::new(CHECKPOINTS),
        }
    }
}

/// Files cut part-way whose digests' state a replica keeps.
const CHECKPOINTS: usize = 1024;

impl std::fmt::Debug for DigestCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestCache")
            .field("entries", &self.cache.len())
            .finish()
    }
}

impl DigestCache {
    /// The digests of `key`, if a read of it was kept.
    pub fn get(&self, key: &FileKey) -> Option<FileDigest> {
        self.cache.get(key)
    }

    /// Keeps the digests of a file read whole.
    pub fn put(&self, key: FileKey, digest: FileDigest) {
        self.cache.insert(key, digest, DIGEST_TTL);
    }

    /// Where the digests of a cut file stood.
    fn checkpoint(&self, key: &FileKey) -> Option<Checkpoint> {
        self.cut.get(key)
    }

    /// Keeps where the digests of a cut file stand.
    fn keep_checkpoint(&self, key: FileKey, checkpoint: Checkpoint) {
        self.cut.insert(key, checkpoint, DIGEST_TTL);
    }

    /// Files cut part-way whose digests' state is kept.
    pub fn checkpoints(&self) -> usize {
        self.cut.len()
    }

    /// Files whose digests are kept.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// True when no digest is kept.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

/// What a listing in flight gives those waiting on it: the files, or (for the one that
/// started it) its error.
type Listed = std::result::Result<Vec<FileInfo>, Arc<Mutex<Option<Error>>>>;
type Flight = Shared<BoxFuture<'static, Listed>>;

/// Listings of finished captures' directories in flight, per replica: whole downloads of one
/// capture that arrive while a node's listing runs share it instead of each running its own,
/// so a burst of downloads lists each node about once. Nothing is kept once a listing is done:
/// a download that arrives later lists again. (Each file is checked against its plan as it is
/// read, so a listing shared past a change fails a download, never corrupts one.)
#[derive(Default)]
pub struct ListingFlights {
    flights: Arc<Mutex<HashMap<(String, CaptureDir), Flight>>>,
}

impl std::fmt::Debug for ListingFlights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListingFlights")
            .field("in_flight", &lock(&self.flights).len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ListingFlights {
    /// The files of `dir` in `cluster`: from the listing in flight, or from `list` (shared with
    /// whoever asks while it runs). One that joined a listing that failed lists for itself,
    /// so it reports its own error.
    pub async fn list<F, Fut>(
        &self,
        cluster: &str,
        dir: &CaptureDir,
        list: F,
    ) -> Result<Vec<FileInfo>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Vec<FileInfo>>> + Send + 'static,
    {
        let key = (cluster.to_owned(), dir.clone());
        let (flight, leads) = {
            let mut flights = lock(&self.flights);
            match flights.get(&key) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let all = self.flights.clone();
                    let done = key.clone();
                    let listing = list();
                    let flight = async move {
                        let listed = listing.await.map_err(|e| Arc::new(Mutex::new(Some(e))));
                        lock(&all).remove(&done);
                        listed
                    }
                    .boxed()
                    .shared();
                    flights.insert(key, flight.clone());
                    (flight, true)
                }
            }
        };
        match flight.await {
            Ok(files) => Ok(files),
            Err(error) if leads => Err(lock(&error)
                .take()
                .unwrap_or_else(|| Error::Internal("a listing's error went missing".into()))),
            Err(_) => list().await,
        }
    }

    /// Listings in flight now.
    pub fn in_flight(&self) -> usize {
        lock(&self.flights).len()
    }
}

/// One node's part of the plan.
#[derive(Clone, Debug)]
pub(crate) struct PlannedNode {
    /// How it is read: its named files, in the plan's order.
    pub(crate) source: NodeSource,
    /// Its entries: `first..first + count`.
    pub(crate) first: usize,
}

/// The zip of a finished capture, planned.
#[derive(Clone, Debug)]
pub struct ZipPlan {
    layout: Layout,
    nodes: Vec<PlannedNode>,
    /// Per file entry (the manifest has none), what names it.
    keys: Vec<FileKey>,
    etag: String,
}

impl ZipPlan {
    /// The plan of `nodes`' files (each node: how it is reached, its directory, its files as
    /// listed), nodes in this order and each node's files by name; entry names from `namer`.
    /// `None` when no node holds a file.
    pub fn new(
        cluster: &str,
        nodes: Vec<(EntryPoint, CaptureDir, Vec<FileInfo>)>,
        mut namer: EntryNamer,
    ) -> Result<Option<Self>> {
        let mut entries = Vec::new();
        let mut keys = Vec::new();
        let mut planned = Vec::new();
        for (entry, dir, mut files) in nodes {
            if files.is_empty() {
                continue;
            }
            files.sort_by(|a, b| a.name.cmp(&b.name));
            let first = entries.len();
            let mut names = Vec::with_capacity(files.len());
            for file in files {
                let name = BaseName::new(&file.name).map_err(|_| Error::NodeFiles {
                    node: dir.node().to_string(),
                    action: "listing files",
                    source: format!(
                        "the listing holds a name that is not a plain file name: {:?}",
                        file.name
                    )
                    .into(),
                })?;
                let mtime = u64::try_from(file.modified).unwrap_or(0);
                entries.push(PlannedEntry {
                    name: namer.name(dir.node(), name.as_str()),
                    size: file.size,
                    mtime,
                });
                keys.push(FileKey {
                    cluster: cluster.to_owned(),
                    dir: dir.clone(),
                    name: name.clone(),
                    size: file.size,
                    mtime,
                });
                names.push(name);
            }
            planned.push(PlannedNode {
                source: NodeSource {
                    entry,
                    dir,
                    files: Some(names),
                },
                first,
            });
        }
        if entries.is_empty() {
            return Ok(None);
        }
        let etag = entity_tag(&entries, &keys);
        Ok(Some(Self {
            layout: Layout::new(entries),
            nodes: planned,
            keys,
            etag,
        }))
    }

    /// The zip's length in bytes.
    pub fn len(&self) -> u64 {
        self.layout.len()
    }

    /// Always false: a plan has at least one file.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// A strong entity tag (quoted): it changes when any file's name, node, size or time
    /// changes, or the selection does.
    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// The newest file's modification time, seconds since the Unix epoch.
    pub fn last_modified(&self) -> u64 {
        self.layout.newest()
    }

    /// The files in the zip (the manifest left out).
    pub fn files(&self) -> usize {
        self.keys.len()
    }

    /// The layout (for tests and tools).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The nodes to read for the whole zip, each with its named files, and the pipes.
    pub(crate) fn sources(&self) -> Vec<NodeSource> {
        self.nodes.iter().map(|n| n.source.clone()).collect()
    }
}

/// `"z-{32 hex digits}"`: a SHA-256 of the format's version and of every entry's name, node,
/// directory, file name, size and time.
fn entity_tag(entries: &[PlannedEntry], keys: &[FileKey]) -> String {
    use std::fmt::Write as _;
    let mut hash = Sha256::new();
    hash.update(b"packetcapture-zip/1\0");
    for (entry, key) in entries.iter().zip(keys) {
        for part in [
            entry.name.as_bytes(),
            key.dir.node().as_str().as_bytes(),
            key.dir.path().as_bytes(),
            key.name.as_str().as_bytes(),
        ] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        hash.update(entry.size.to_le_bytes());
        hash.update(entry.mtime.to_le_bytes());
    }
    let digest = hash.finalize();
    let mut tag = String::from("\"z-");
    for byte in &digest[..16] {
        let _ = write!(tag, "{byte:02x}");
    }
    tag.push('"');
    tag
}

/// Output handed to the body in batches of [`CHUNK_SIZE`], the first piece at once.
struct Out<'a> {
    tx: &'a mpsc::Sender<Msg>,
    pieces: Vec<Bytes>,
    len: usize,
    sent: bool,
}

impl<'a> Out<'a> {
    fn new(tx: &'a mpsc::Sender<Msg>) -> Self {
        Self {
            tx,
            pieces: Vec::new(),
            len: 0,
            sent: false,
        }
    }

    async fn push(&mut self, piece: Bytes) -> Result<()> {
        if piece.is_empty() {
            return Ok(());
        }
        self.len += piece.len();
        self.pieces.push(piece);
        if !self.sent || self.len >= CHUNK_SIZE {
            self.flush().await?;
        }
        Ok(())
    }

    /// The part of `bytes` (which lie at `at` in the zip) that falls in `range`.
    async fn push_within(&mut self, at: u64, bytes: &[u8], range: &Range<u64>) -> Result<()> {
        if let Some(part) = within(at, bytes.len() as u64, range) {
            let slice = &bytes[to_usize(part.start - at)..to_usize(part.end - at)];
            self.push(Bytes::copy_from_slice(slice)).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.pieces.is_empty() {
            return Ok(());
        }
        self.len = 0;
        self.sent = true;
        send(self.tx, Msg::Data(std::mem::take(&mut self.pieces))).await
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The part of `at..at + len` inside `range`, if any.
fn within(at: u64, len: u64, range: &Range<u64>) -> Option<Range<u64>> {
    let start = at.max(range.start);
    let end = (at + len).min(range.end);
    (start < end).then_some(start..end)
}

/// A file being hashed.
#[derive(Clone)]
struct Hashing {
    crc: crc32fast::Hasher,
    sha: Sha256,
}

impl Hashing {
    fn new() -> Self {
        Self {
            crc: crc32fast::Hasher::new(),
            sha: Sha256::new(),
        }
    }

    fn update(&mut self, data: &[u8]) {
        self.crc.update(data);
        self.sha.update(data);
    }

    fn finish(self) -> FileDigest {
        FileDigest {
            crc: self.crc.finalize(),
            sha256: self.sha.finalize().into(),
        }
    }
}

/// How a whole download digests a file: it hashes it, or, where this replica kept the file's
/// digests from an earlier read of the same size and time, it checks the bytes' CRC-32 against
/// the kept one and gives the kept SHA-256 (SHA-256 is a third of a download's CPU, CRC-32 a
/// thirtieth). Bytes that differ under the same size and time are a changed file.
enum Digesting {
    Hash(Hashing),
    Check {
        crc: crc32fast::Hasher,
        kept: FileDigest,
    },
}

impl Digesting {
    fn new(kept: Option<FileDigest>) -> Self {
        match kept {
            Some(kept) => Self::Check {
                crc: crc32fast::Hasher::new(),
                kept,
            },
            None => Self::Hash(Hashing::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Hash(hashing) => hashing.update(data),
            Self::Check { crc, .. } => crc.update(data),
        }
    }

    /// The file's digests, or the CRC-32s of bytes that are not the kept ones (found, kept).
    fn finish(self) -> std::result::Result<FileDigest, (u32, u32)> {
        match self {
            Self::Hash(hashing) => Ok(hashing.finish()),
            Self::Check { crc, kept } => {
                let crc = crc.finalize();
                if crc == kept.crc {
                    Ok(kept)
                } else {
                    Err((crc, kept.crc))
                }
            }
        }
    }
}

/// Writes the manifest entry and the central directory from every file's digest.
async fn finish(
    layout: &Layout,
    digests: &[FileDigest],
    out: &mut Out<'_>,
    range: &Range<u64>,
) -> Result<()> {
    let m = layout.manifest_index();
    let sums: Vec<[u8; 32]> = digests.iter().map(|d| d.sha256).collect();
    let text = manifest(layout, &sums);
    if text.len() as u64 != layout.entry(m).size {
        return Err(Error::Internal(format!(
            "the manifest has {} bytes, {} were planned",
            text.len(),
            layout.entry(m).size
        )));
    }
    let crc = crc32fast::hash(&text);
    let (at, header) = layout.header(m);
    out.push_within(at, header, range).await?;
    out.push_within(layout.data(m).start, &text, range).await?;
    out.push_within(
        layout.descriptor_range(m).start,
        &layout.descriptor(m, crc),
        range,
    )
    .await?;
    let mut crcs: Vec<u32> = digests.iter().map(|d| d.crc).collect();
    crcs.push(crc);
    out.push_within(layout.tail_range().start, &layout.tail(&crcs), range)
        .await?;
    out.flush().await
}

/// Writes the whole zip of `plan` from every node's tar stream (the named files, in the plan's
/// order), checking each file against the plan, keeping each file's digests in `cache`.
pub(crate) async fn assemble(
    nodes: Vec<(NodeSource, Arc<Pipe>)>,
    plan: Arc<ZipPlan>,
    cache: Arc<DigestCache>,
    failure: &Failure,
    tx: &mpsc::Sender<Msg>,
) -> Result<Summary> {
    let mut current = None;
    let written = write_whole(nodes, &plan, &cache, &mut current, failure, tx).await;
    // Cut inside a file (the client left, a node failed) that did not change: a resume hashes
    // on from where this download stopped.
    if let Err(e) = &written
        && !matches!(e, Error::FileChanged { .. })
        && let Some(Current {
            index,
            digesting: Digesting::Hash(hashing),
            offset,
        }) = current
    {
        cache.keep_checkpoint(plan.keys[index].clone(), Checkpoint { offset, hashing });
    }
    written
}

/// The file a whole download is writing: its entry, its digests so far, the bytes they cover.
struct Current {
    index: usize,
    digesting: Digesting,
    offset: u64,
}

async fn write_whole(
    nodes: Vec<(NodeSource, Arc<Pipe>)>,
    plan: &ZipPlan,
    cache: &DigestCache,
    current: &mut Option<Current>,
    failure: &Failure,
    tx: &mpsc::Sender<Msg>,
) -> Result<Summary> {
    let layout = &plan.layout;
    let everything = 0..layout.len();
    let mut out = Out::new(tx);
    let mut summary = Summary::default();
    let mut digests = Vec::with_capacity(plan.keys.len());
    for ((source, pipe), planned) in nodes.into_iter().zip(&plan.nodes) {
        pipe.make_direct();
        let node = source.dir.node();
        let count = source.files.as_ref().map_or(0, Vec::len);
        let end = planned.first + count;
        let mut next = planned.first;
        let mut tar = TarParser::new();
        // A planned file the node did not send: its own verdict (a file it could not open)
        // comes at the end of its stream, so the rest is read, not sent, to learn it.
        let mut skipped: Option<Error> = None;
        let changed = |file: &str, reason: String| Error::FileChanged {
            node: node.to_string(),
            file: file.to_owned(),
            reason,
        };
        loop {
            let Some(mut chunk) = next_chunk(&pipe, failure, tx).await? else {
                break;
            };
            while let Some(event) = tar.next(&mut chunk).map_err(|e| tar_error(node, e))? {
                if skipped.is_some() {
                    continue;
                }
                match event {
                    TarEvent::File { path, size, mtime } => {
                        let name = base_name(&path).unwrap_or_default();
                        let Some(key) = plan.keys.get(next).filter(|_| next < end) else {
                            return Err(changed(name, "it was not in the listing".into()));
                        };
                        if key.name.as_str() != name {
                            skipped = Some(changed(
                                key.name.as_str(),
                                format!("it is gone (the node sent {name} in its place)"),
                            ));
                            continue;
                        }
                        if (size, mtime) != (key.size, key.mtime) {
                            return Err(changed(
                                name,
                                format!(
                                    "{size} bytes modified at {mtime}, listed as {} bytes modified at {}",
                                    key.size, key.mtime
                                ),
                            ));
                        }
                        out.push(Bytes::copy_from_slice(layout.header(next).1))
                            .await?;
                        *current = Some(Current {
                            index: next,
                            digesting: Digesting::new(cache.get(key)),
                            offset: 0,
                        });
                        next += 1;
                    }
                    TarEvent::Data(data) => {
                        if let Some(file) = current.as_mut() {
                            file.digesting.update(&data);
                            file.offset += data.len() as u64;
                            summary.bytes += data.len() as u64;
                            out.push(data).await?;
                        }
                    }
                    TarEvent::FileEnd => {
                        if let Some(Current {
                            index: i,
                            digesting,
                            ..
                        }) = current.take()
                        {
                            let key = &plan.keys[i];
                            let digest = digesting.finish().map_err(|(found, kept)| {
                                changed(
                                    key.name.as_str(),
                                    format!(
                                        "its bytes (CRC-32 {found:08x}) are not those read \
                                         earlier with the same size and time ({kept:08x})"
                                    ),
                                )
                            })?;
                            // Hashed, or checked against the kept digests: either way they
                            // hold for another 24 h.
                            cache.put(key.clone(), digest);
                            digests.push(digest);
                            summary.files += 1;
                            out.push(Bytes::from(layout.descriptor(i, digest.crc)))
                                .await?;
                        }
                    }
                    TarEvent::End => {}
                }
            }
        }
        if let Some(error) = skipped {
            return Err(error);
        }
        tar.finish().map_err(|e| tar_error(node, e))?;
        if let Some(missing) = plan.keys.get(next).filter(|_| next < end) {
            return Err(changed(missing.name.as_str(), "it is gone".into()));
        }
    }
    finish(layout, &digests, &mut out, &everything).await?;
    Ok(summary)
}

/// How a range reads files.
pub(crate) struct RangeReads {
    pub(crate) fetcher: Arc<dyn FileFetcher>,
    pub(crate) cache: Arc<DigestCache>,
    pub(crate) idle: Duration,
}

/// Writes the bytes `range` of `plan`'s zip: the files it covers, and the digests of those
/// whose data descriptor it covers (all of them when it covers the manifest or the central
/// directory) from the cache, or by reading the file whole.
pub(crate) async fn assemble_range(
    plan: Arc<ZipPlan>,
    range: Range<u64>,
    reads: RangeReads,
    tx: &mpsc::Sender<Msg>,
) -> Result<Summary> {
    let layout = &plan.layout;
    let m = layout.manifest_index();
    let touches = |r: Range<u64>| within(r.start, r.end - r.start, &range).is_some();
    let every_digest = touches(layout.data(m))
        || touches(layout.descriptor_range(m))
        || touches(layout.tail_range());
    let mut out = Out::new(tx);
    let mut summary = Summary::default();
    let mut digests = Vec::with_capacity(plan.keys.len());
    for planned in &plan.nodes {
        let source = &planned.source;
        for (k, name) in source.files.iter().flatten().enumerate() {
            let i = planned.first + k;
            let key = &plan.keys[i];
            let (at, header) = layout.header(i);
            out.push_within(at, header, &range).await?;
            let data = layout.data(i);
            let wanted = within(data.start, key.size, &range);
            let needs_digest = every_digest || touches(layout.descriptor_range(i));
            let known = if needs_digest {
                reads.cache.get(key)
            } else {
                None
            };
            let digest = if needs_digest && known.is_none() {
                // Read to the end for the digests, from where a cut download left them (or
                // from the start), or from where the range begins if that is earlier; only
                // the part in the range goes out.
                let (mut hashing, hashed) = reads
                    .cache
                    .checkpoint(key)
                    .filter(|c| c.offset <= key.size)
                    .map_or((Hashing::new(), 0), |c| (c.hashing, c.offset));
                let sent_from = wanted.as_ref().map_or(key.size, |w| w.start - data.start);
                let from = hashed.min(sent_from);
                let mut at = from;
                let mut stream = open(&reads, source, name, from, key.size - from).await?;
                while let Some(chunk) = next_read(&mut stream, &reads, source, tx).await? {
                    let len = chunk.len() as u64;
                    if at + len > hashed {
                        hashing.update(&chunk[to_usize(hashed.saturating_sub(at))..]);
                    }
                    if let Some(part) = within(data.start + at, len, &range) {
                        let start = part.start - data.start - at;
                        let end = part.end - data.start - at;
                        out.push(chunk.slice(to_usize(start)..to_usize(end)))
                            .await?;
                    }
                    at += len;
                }
                summary.files += 1;
                summary.bytes += key.size - from;
                let digest = hashing.finish();
                reads.cache.put(key.clone(), digest);
                Some(digest)
            } else {
                if let Some(part) = &wanted {
                    let mut stream = open(
                        &reads,
                        source,
                        name,
                        part.start - data.start,
                        part.end - part.start,
                    )
                    .await?;
                    while let Some(chunk) = next_read(&mut stream, &reads, source, tx).await? {
                        summary.bytes += chunk.len() as u64;
                        out.push(chunk).await?;
                    }
                    summary.files += 1;
                }
                known
            };
            if let Some(digest) = digest {
                let descriptor = layout.descriptor(i, digest.crc);
                out.push_within(layout.descriptor_range(i).start, &descriptor, &range)
                    .await?;
                digests.push(digest);
            }
        }
    }
    if every_digest {
        finish(layout, &digests, &mut out, &range).await?;
    } else {
        let (at, header) = layout.header(m);
        out.push_within(at, header, &range).await?;
        out.flush().await?;
    }
    Ok(summary)
}

/// Opens `len` bytes of `name` from `start`, counted exactly.
async fn open(
    reads: &RangeReads,
    source: &NodeSource,
    name: &BaseName,
    start: u64,
    len: u64,
) -> Result<Exact> {
    let slice = FileSlice {
        dir: source.dir.clone(),
        name: name.clone(),
        start,
        len,
    };
    let inner = if len == 0 {
        Box::pin(futures_util::stream::empty()) as crate::ports::ByteStream
    } else {
        reads.fetcher.read_file(&source.entry, &slice).await?
    };
    Ok(Exact::new(inner, len, source.dir.node(), name, None))
}

/// The next chunk of a file read, within the idle timeout, unless the client left.
async fn next_read(
    stream: &mut Exact,
    reads: &RangeReads,
    source: &NodeSource,
    tx: &mpsc::Sender<Msg>,
) -> Result<Option<Bytes>> {
    tokio::select! {
        biased;
        () = tx.closed() => Err(Error::ClientGone),
        next = tokio::time::timeout(reads.idle, stream.next()) => match next {
            Err(_) => Err(Error::NodeStalled {
                node: source.dir.node().to_string(),
                seconds: reads.idle.as_secs(),
            }),
            Ok(next) => next.transpose(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::types::CaptureRef;

    fn dir(node: &str) -> CaptureDir {
        CaptureDir::new(
            node,
            "/var/log/calico/pcap",
            &CaptureRef::parse("dev", "cap").unwrap(),
        )
        .unwrap()
    }

    fn file(name: &str) -> FileInfo {
        FileInfo {
            name: name.into(),
            size: 1,
            modified: 1,
        }
    }

    #[tokio::test]
    async fn downloads_asking_while_a_listing_runs_share_it_and_later_ones_list_again() {
        let flights = ListingFlights::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let list = || {
            let (runs, gate) = (runs.clone(), gate.clone());
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                gate.notified().await;
                Ok(vec![file("a.pcap")])
            }
        };
        let (n1, n2) = (dir("n1"), dir("n2"));
        let first = flights.list("cluster", &n1, list);
        let second = flights.list("cluster", &n1, list);
        let other_node = flights.list("cluster", &n2, list);
        let opened = async {
            tokio::task::yield_now().await;
            assert_eq!(flights.in_flight(), 2, "one listing per directory");
            gate.notify_waiters();
        };
        let (a, b, c, ()) = tokio::join!(first, second, other_node, opened);
        assert_eq!(a.unwrap(), vec![file("a.pcap")]);
        assert_eq!(b.unwrap(), vec![file("a.pcap")]);
        assert_eq!(c.unwrap(), vec![file("a.pcap")]);
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "n1 listed once for two downloads"
        );
        assert_eq!(flights.in_flight(), 0, "nothing kept once done");
        gate.notify_one();
        flights.list("cluster", &n1, list).await.unwrap();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "a later download lists again"
        );
    }

    #[tokio::test]
    async fn the_one_that_started_a_failed_listing_gets_its_error_the_others_list_for_themselves() {
        let flights = ListingFlights::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let list = || {
            let runs = runs.clone();
            async move {
                let n = runs.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Err(Error::NodeStalled {
                    node: format!("n1 (run {n})"),
                    seconds: 1,
                })
            }
        };
        let n1 = dir("n1");
        let (a, b) = tokio::join!(
            flights.list("cluster", &n1, list),
            flights.list("cluster", &n1, list)
        );
        assert!(matches!(a, Err(Error::NodeStalled { node, .. }) if node == "n1 (run 0)"));
        assert!(matches!(b, Err(Error::NodeStalled { node, .. }) if node == "n1 (run 1)"));
    }
}
