//! The spool: one pipe per source (a node's tar stream), holding what was read but not yet
//! written out, in memory up to a small budget and then in the download's one
//! [`SpoolStorage`] file, all under one per-download byte limit.
//!
//! A pipe the writer is reading now is *direct*: once its backlog is drained, new chunks pass
//! through a small window and are not counted against the limit (the writer's pace holds the
//! reader back). Every other pipe spools; when the limit is reached its producer waits, which
//! pauses the read of its node (backpressure through the exec stream) and grows nothing.
//! Each spooled chunk is a range of the file, given back (its space freed) as soon as it is
//! read; the file is unlinked at creation, so nothing outlives the download. Descriptors:
//! one file per download, whatever the number of nodes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, OnceCell};

use crate::error::{Error, Result};
use crate::ports::{SpoolFile, SpoolStorage};

/// Bytes a direct pipe may hold ahead of its reader.
pub(crate) const DIRECT_WINDOW: u64 = 1024 * 1024;
/// The most read back from the spool file at once (consecutive ranges of one pipe).
const READ_BACK: u64 = 256 * 1024;

/// How much a download may hold, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Bytes held in memory, per download, before spooling to the file.
    pub memory: u64,
    /// Bytes held in memory and in the file together, per download.
    pub total: u64,
}

impl SpoolLimits {
    /// What one download may hold in memory before spooling to a file.
    pub const DEFAULT_MEMORY: u64 = 4 * 1024 * 1024;
    /// What one download may spool unless configured (`SPOOL_LIMIT`).
    pub const DEFAULT_TOTAL: u64 = 2 * 1024 * 1024 * 1024;
}

impl Default for SpoolLimits {
    fn default() -> Self {
        Self {
            memory: Self::DEFAULT_MEMORY,
            total: Self::DEFAULT_TOTAL,
        }
    }
}

/// Spool usage, across downloads: bytes held now and the most ever held, in memory and in
/// files. Shared by a service's downloads (and read by tests and metrics).
#[derive(Debug, Default)]
pub struct SpoolStats {
    memory: AtomicU64,
    disk: AtomicU64,
    peak_memory: AtomicU64,
    peak_disk: AtomicU64,
    files: AtomicU64,
    waits: AtomicU64,
}

impl SpoolStats {
    /// Bytes held in memory now.
    pub fn memory(&self) -> u64 {
        self.memory.load(Ordering::SeqCst)
    }

    /// Bytes held in spool files now.
    pub fn disk(&self) -> u64 {
        self.disk.load(Ordering::SeqCst)
    }

    /// The most bytes ever held in memory at once.
    pub fn peak_memory(&self) -> u64 {
        self.peak_memory.load(Ordering::SeqCst)
    }

    /// The most bytes ever held in spool files at once.
    pub fn peak_disk(&self) -> u64 {
        self.peak_disk.load(Ordering::SeqCst)
    }

    /// Spool files open now (one per download that spooled past its memory budget).
    pub fn files(&self) -> u64 {
        self.files.load(Ordering::SeqCst)
    }

    /// Times a node's read waited because its download's spool was full (backpressure on
    /// the node, until the writer reads the spool back).
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::SeqCst)
    }

    fn add(&self, disk: bool, n: u64) {
        let (now, peak) = if disk {
            (&self.disk, &self.peak_disk)
        } else {
            (&self.memory, &self.peak_memory)
        };
        let held = now.fetch_add(n, Ordering::SeqCst) + n;
        peak.fetch_max(held, Ordering::SeqCst);
    }

    fn sub(&self, disk: bool, n: u64) {
        let now = if disk { &self.disk } else { &self.memory };
        now.fetch_sub(n, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What one download holds.
#[derive(Debug, Default)]
struct Held {
    total: u64,
    memory: u64,
}

/// The download's spool file, counted open while it lives.
struct OpenFile {
    file: Box<dyn SpoolFile>,
    stats: Arc<SpoolStats>,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        self.stats.files.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One download's spool: its limits, its storage, what it holds.
pub(crate) struct Spool {
    storage: Arc<dyn SpoolStorage>,
    limits: SpoolLimits,
    held: Mutex<Held>,
    /// Signalled when bytes are released.
    freed: Notify,
    /// Created at the first chunk that does not fit in memory.
    file: OnceCell<Arc<OpenFile>>,
    /// Where the next chunk written to the file goes.
    end: AtomicU64,
    stats: Arc<SpoolStats>,
    /// A merge of this many streams, none of which may wait for room (it needs every
    /// stream's first packet before it reads on): past the limit it fails instead.
    no_wait: Option<usize>,
}

impl Spool {
    pub(crate) fn new(
        storage: Arc<dyn SpoolStorage>,
        limits: SpoolLimits,
        stats: Arc<SpoolStats>,
    ) -> Arc<Self> {
        Arc::new(Self {
            storage,
            limits,
            held: Mutex::new(Held::default()),
            freed: Notify::new(),
            file: OnceCell::new(),
            end: AtomicU64::new(0),
            stats,
            no_wait: None,
        })
    }

    /// A spool whose pipes never wait for room: past its limit a push fails with
    /// [`Error::SpoolExhausted`] (a merge of `streams` streams from the spool).
    pub(crate) fn without_waiting(
        storage: Arc<dyn SpoolStorage>,
        limits: SpoolLimits,
        stats: Arc<SpoolStats>,
        streams: usize,
    ) -> Arc<Self> {
        let mut spool = Self::new(storage, limits, stats);
        if let Some(s) = Arc::get_mut(&mut spool) {
            s.no_wait = Some(streams);
        }
        spool
    }

    /// Takes `n` bytes of the limit if they fit (a download holding nothing may always take
    /// one chunk, so a limit smaller than a chunk cannot wedge it); `Some(in memory)`.
    fn reserve(&self, n: u64) -> Option<bool> {
        let mut held = lock(&self.held);
        if held.total > 0 && held.total + n > self.limits.total {
            return None;
        }
        held.total += n;
        let memory = held.memory + n <= self.limits.memory;
        if memory {
            held.memory += n;
        }
        Some(memory)
    }

    fn release(&self, memory: bool, n: u64) {
        {
            let mut held = lock(&self.held);
            held.total -= n;
            if memory {
                held.memory -= n;
            }
        }
        self.stats.sub(!memory, n);
        self.freed.notify_waiters();
    }

    async fn file(&self) -> Result<Arc<OpenFile>> {
        self.file
            .get_or_try_init(|| async {
                let storage = self.storage.clone();
                let file = blocking(move || storage.create())
                    .await
                    .map_err(|e| spool_error("create the spool file", e))?;
                self.stats.files.fetch_add(1, Ordering::SeqCst);
                Ok(Arc::new(OpenFile {
                    file,
                    stats: self.stats.clone(),
                }))
            })
            .await
            .cloned()
    }
}

/// A spooled chunk: in memory, or a range of the spool file.
enum Item {
    Memory(Bytes),
    Disk { offset: u64, len: u64 },
}

#[derive(Default)]
struct PipeState {
    /// What was spooled, oldest first.
    spooled: VecDeque<Item>,
    /// Direct chunks, after the spooled ones.
    direct: VecDeque<Bytes>,
    direct_bytes: u64,
    is_direct: bool,
    /// `Some` once the producer is done: `Ok` at a clean end, `Err` after a failure (whose
    /// error the download's failure holds).
    end: Option<std::result::Result<(), ()>>,
}

/// One source's bytes, from its producer to the writer. One producer, one reader.
pub(crate) struct Pipe {
    spool: Arc<Spool>,
    /// Bytes a direct pipe may hold ahead of its reader.
    window: u64,
    /// The most read back from the spool file at once.
    read_back: u64,
    state: Mutex<PipeState>,
    /// Signalled when there is something to read.
    readable: Notify,
    /// Signalled when the reader made room or the pipe turned direct.
    writable: Notify,
    /// Signalled when the pipe turns direct.
    turned_direct: Notify,
}

/// What the reader does next, decided under the lock and done outside it.
enum Step {
    Chunk(Bytes),
    /// Ranges of the file, in order, read back as one chunk.
    ReadDisk(Vec<(u64, u64)>),
    End(std::result::Result<(), ()>),
    Wait,
}

impl Pipe {
    pub(crate) fn new(spool: Arc<Spool>) -> Arc<Self> {
        Self::with_window(spool, DIRECT_WINDOW)
    }

    /// A pipe whose direct window is `window` bytes (a merge reads many pipes at once).
    pub(crate) fn with_window(spool: Arc<Spool>, window: u64) -> Arc<Self> {
        Self::with_sizes(spool, window, READ_BACK)
    }

    /// A pipe with its direct window and its read-back size (a merge that reads every stream
    /// from the spool keeps each one's read-back small).
    pub(crate) fn with_sizes(spool: Arc<Spool>, window: u64, read_back: u64) -> Arc<Self> {
        Arc::new(Self {
            spool,
            window,
            read_back,
            state: Mutex::new(PipeState::default()),
            readable: Notify::new(),
            writable: Notify::new(),
            turned_direct: Notify::new(),
        })
    }

    /// The writer reads this pipe now: new chunks go direct once the backlog is drained.
    pub(crate) fn make_direct(&self) {
        lock(&self.state).is_direct = true;
        self.writable.notify_waiters();
        self.turned_direct.notify_waiters();
    }

    /// True once the writer reads this pipe.
    pub(crate) fn is_direct(&self) -> bool {
        lock(&self.state).is_direct
    }

    /// Resolves once the writer reads this pipe (at once if it already does).
    pub(crate) async fn direct(&self) {
        let turned = self.turned_direct.notified();
        tokio::pin!(turned);
        turned.as_mut().enable();
        if !self.is_direct() {
            turned.await;
        }
    }

    /// Resolves once a direct pipe has room for another chunk (at once for a pipe that
    /// spools: its [`Pipe::push`] waits for the spool instead).
    pub(crate) async fn room(&self) {
        loop {
            let writable = self.writable.notified();
            tokio::pin!(writable);
            writable.as_mut().enable();
            {
                let state = lock(&self.state);
                if !state.is_direct
                    || (state.spooled.is_empty() && state.direct_bytes < self.window)
                {
                    return;
                }
            }
            writable.await;
        }
    }

    /// Adds a chunk, waiting for room.
    pub(crate) async fn push(&self, chunk: Bytes) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len() as u64;
        loop {
            let writable = self.writable.notified();
            let freed = self.spool.freed.notified();
            tokio::pin!(writable, freed);
            writable.as_mut().enable();
            freed.as_mut().enable();
            let reserved = {
                let mut state = lock(&self.state);
                if state.is_direct {
                    // The reader is here: wait for it to drain the backlog, then use the window.
                    if state.spooled.is_empty() && state.direct_bytes < self.window {
                        state.direct_bytes += n;
                        state.direct.push_back(chunk);
                        drop(state);
                        self.readable.notify_one();
                        return Ok(());
                    }
                    None
                } else {
                    self.spool.reserve(n)
                }
            };
            match reserved {
                Some(true) => {
                    self.spool.stats.add(false, n);
                    self.append(Item::Memory(chunk));
                    return Ok(());
                }
                Some(false) => return self.spool_to_file(chunk).await,
                None => {
                    if let (Some(streams), false) = (self.spool.no_wait, self.is_direct()) {
                        return Err(Error::SpoolExhausted {
                            streams,
                            limit_mib: self.spool.limits.total / (1024 * 1024),
                        });
                    }
                    if !self.is_direct() {
                        self.spool.stats.waits.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            tokio::select! {
                _ = writable => {}
                _ = freed => {}
            }
        }
    }

    /// Writes a chunk whose bytes were reserved to the spool file, then makes it readable.
    async fn spool_to_file(&self, chunk: Bytes) -> Result<()> {
        let n = chunk.len() as u64;
        let file = self.spool.file().await?;
        let offset = self.spool.end.fetch_add(n, Ordering::SeqCst);
        blocking(move || file.file.write_at(&chunk, offset))
            .await
            .map_err(|e| spool_error("write to the spool file", e))?;
        self.spool.stats.add(true, n);
        self.append(Item::Disk { offset, len: n });
        Ok(())
    }

    fn append(&self, item: Item) {
        lock(&self.state).spooled.push_back(item);
        self.readable.notify_one();
    }

    /// The producer is done: cleanly (`Ok`) or after a failure.
    pub(crate) fn finish(&self, end: std::result::Result<(), ()>) {
        lock(&self.state).end = Some(end);
        self.readable.notify_one();
    }

    /// The next chunk; `None` at a clean end, `Some(Err(()))` after the producer failed.
    pub(crate) async fn next(&self) -> Option<std::result::Result<Bytes, ()>> {
        loop {
            let readable = self.readable.notified();
            tokio::pin!(readable);
            readable.as_mut().enable();
            match self.step() {
                Step::Chunk(chunk) => return Some(Ok(chunk)),
                Step::End(Ok(())) => return None,
                Step::End(Err(())) => return Some(Err(())),
                Step::ReadDisk(ranges) => return Some(self.read_back(ranges).await),
                Step::Wait => readable.await,
            }
        }
    }

    /// Reads spooled ranges back (as one chunk), gives their space back, and drops them from
    /// the pipe.
    async fn read_back(&self, ranges: Vec<(u64, u64)>) -> std::result::Result<Bytes, ()> {
        let Some(file) = self.spool.file.get().cloned() else {
            return Err(());
        };
        let total: u64 = ranges.iter().map(|(_, len)| len).sum();
        let (reader, wanted) = (file.clone(), ranges.clone());
        let data = blocking(move || {
            let size = usize::try_from(total).map_err(std::io::Error::other)?;
            let mut buf = BytesMut::zeroed(size);
            let mut at = 0;
            for (offset, len) in wanted {
                let end = at + usize::try_from(len).map_err(std::io::Error::other)?;
                let mut done = at;
                while done < end {
                    let from = offset + (done - at) as u64;
                    match reader.file.read_at(&mut buf[done..end], from)? {
                        0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                        n => done += n,
                    }
                }
                at = end;
            }
            Ok(buf.freeze())
        })
        .await
        .map_err(|e| tracing::warn!(error = %e, "reading the spool file failed"))?;
        // Only now, with the bytes in hand, are the ranges dropped and their space given back:
        // a read abandoned half-way leaves them to be read again.
        let read = ranges.len();
        tokio::task::spawn_blocking(move || {
            for (offset, len) in ranges {
                if let Err(e) = file.file.discard(offset, len) {
                    tracing::debug!(error = %e, "the spool file cannot give space back early");
                    break;
                }
            }
        });
        let mut state = lock(&self.state);
        state.spooled.drain(..read);
        let drained = state.spooled.is_empty();
        drop(state);
        self.spool.release(false, total);
        if drained {
            self.writable.notify_one();
        }
        Ok(data)
    }

    fn step(&self) -> Step {
        let mut state = lock(&self.state);
        match state.spooled.front() {
            Some(Item::Disk { .. }) => {
                let mut ranges = Vec::new();
                let mut total = 0;
                for item in &state.spooled {
                    match item {
                        Item::Disk { offset, len }
                            if total == 0 || total + len <= self.read_back =>
                        {
                            ranges.push((*offset, *len));
                            total += len;
                        }
                        _ => break,
                    }
                }
                Step::ReadDisk(ranges)
            }
            Some(Item::Memory(_)) => {
                let Some(Item::Memory(chunk)) = state.spooled.pop_front() else {
                    return Step::Wait;
                };
                let drained = state.spooled.is_empty();
                drop(state);
                self.spool.release(true, chunk.len() as u64);
                if drained {
                    self.writable.notify_one();
                }
                Step::Chunk(chunk)
            }
            None => {
                if let Some(chunk) = state.direct.pop_front() {
                    state.direct_bytes -= chunk.len() as u64;
                    drop(state);
                    self.writable.notify_one();
                    return Step::Chunk(chunk);
                }
                match state.end {
                    Some(end) => Step::End(end),
                    None => Step::Wait,
                }
            }
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let state = lock(&self.state);
        for item in &state.spooled {
            match item {
                Item::Memory(chunk) => self.spool.stats.sub(false, chunk.len() as u64),
                Item::Disk { len, .. } => self.spool.stats.sub(true, *len),
            }
        }
    }
}

fn spool_error(action: &'static str, source: std::io::Error) -> Error {
    Error::Spool { action, source }
}

/// Runs blocking file IO off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

/// Spool "files" in memory: the default storage of tools and tests (the service spools to
/// an unlinked file on disk). Counts the files alive and the bytes they hold.
#[derive(Debug, Default)]
pub struct MemorySpool {
    usage: Arc<MemoryUsage>,
}

/// What a [`MemorySpool`] holds now.
#[derive(Debug, Default)]
pub struct MemoryUsage {
    files: AtomicU64,
    bytes: AtomicU64,
}

impl MemorySpool {
    /// Files alive now.
    pub fn files(&self) -> u64 {
        self.usage.files.load(Ordering::SeqCst)
    }

    /// Bytes held by the files alive now (written and not discarded).
    pub fn bytes(&self) -> u64 {
        self.usage.bytes.load(Ordering::SeqCst)
    }
}

impl SpoolStorage for MemorySpool {
    fn create(&self) -> std::io::Result<Box<dyn SpoolFile>> {
        self.usage.files.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(MemoryFile {
            ranges: Mutex::new(std::collections::BTreeMap::new()),
            usage: self.usage.clone(),
        }))
    }
}

/// Written ranges by offset (the engine writes and discards whole ranges).
struct MemoryFile {
    ranges: Mutex<std::collections::BTreeMap<u64, Vec<u8>>>,
    usage: Arc<MemoryUsage>,
}

impl SpoolFile for MemoryFile {
    fn write_at(&self, data: &[u8], offset: u64) -> std::io::Result<()> {
        self.usage
            .bytes
            .fetch_add(data.len() as u64, Ordering::SeqCst);
        lock(&self.ranges).insert(offset, data.to_vec());
        Ok(())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let ranges = lock(&self.ranges);
        let Some((start, data)) = ranges.range(..=offset).next_back() else {
            return Ok(0);
        };
        let from = usize::try_from(offset - start).map_err(std::io::Error::other)?;
        let available = data.get(from..).unwrap_or_default();
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        Ok(n)
    }

    fn discard(&self, offset: u64, _len: u64) -> std::io::Result<()> {
        if let Some(data) = lock(&self.ranges).remove(&offset) {
            self.usage
                .bytes
                .fetch_sub(data.len() as u64, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl Drop for MemoryFile {
    fn drop(&mut self) {
        let held: u64 = lock(&self.ranges).values().map(|d| d.len() as u64).sum();
        self.usage.bytes.fetch_sub(held, Ordering::SeqCst);
        self.usage.files.fetch_sub(1, Ordering::SeqCst);
    }
}
