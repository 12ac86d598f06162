//! The spool: one pipe per source (a node's tar stream), holding what was read but not yet
//! written out, in memory up to a small budget and then in [`SpoolStorage`] files, all under
//! one per-download byte limit.
//!
//! A pipe the writer is reading now is *direct*: once its backlog is drained, new chunks pass
//! through a small window and are not counted against the limit (the writer's pace holds the
//! reader back). Every other pipe spools; when the limit is reached its producer waits, which
//! pauses the read of its node (backpressure through the exec stream) and grows nothing.
//! Spool files are unlinked at creation and dropped as soon as they are read, so nothing
//! outlives the download.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::ports::{SpoolFile, SpoolStorage};

/// Bytes a direct pipe may hold ahead of its reader.
const DIRECT_WINDOW: u64 = 1024 * 1024;
/// The most read back from a spool file at once.
const READ_BACK: usize = 256 * 1024;

/// How much a download may hold, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Bytes held in memory, per download, before spooling to files.
    pub memory: u64,
    /// Bytes held in memory and files together, per download.
    pub total: u64,
    /// Size of one spool file; a file is dropped once it was read whole.
    pub file: u64,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        Self {
            memory: 4 * 1024 * 1024,
            total: 2 * 1024 * 1024 * 1024,
            file: 64 * 1024 * 1024,
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

    /// Spool files open now.
    pub fn files(&self) -> u64 {
        self.files.load(Ordering::SeqCst)
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

/// One download's spool: its limits, its storage, what it holds.
pub(crate) struct Spool {
    storage: Arc<dyn SpoolStorage>,
    limits: SpoolLimits,
    held: Mutex<Held>,
    /// Signalled when bytes are released.
    freed: Notify,
    stats: Arc<SpoolStats>,
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
            stats,
        })
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
}

/// A run of spooled bytes.
enum Segment {
    /// Chunks in memory.
    Memory(VecDeque<Bytes>),
    /// A spool file: bytes `read..written` are waiting; `sealed` once nothing more is added.
    Disk {
        file: Arc<dyn SpoolFile>,
        written: u64,
        read: u64,
        sealed: bool,
    },
}

#[derive(Default)]
struct PipeState {
    /// What was spooled, oldest first.
    segments: VecDeque<Segment>,
    /// Direct chunks, after the segments.
    direct: VecDeque<Bytes>,
    direct_bytes: u64,
    is_direct: bool,
    /// The producer is writing to the last (disk) segment: the reader must not drop it.
    writing: bool,
    /// `Some` once the producer is done: `Ok` at a clean end, `Err` after a failure (whose
    /// error the download's failure holds).
    end: Option<std::result::Result<(), ()>>,
}

/// One source's bytes, from its producer to the writer. One producer, one reader.
pub(crate) struct Pipe {
    spool: Arc<Spool>,
    state: Mutex<PipeState>,
    /// Signalled when there is something to read.
    readable: Notify,
    /// Signalled when the reader made room or the pipe turned direct.
    writable: Notify,
}

/// What the reader does next, decided under the lock and done outside it.
enum Step {
    Chunk(Bytes),
    ReadDisk(Arc<dyn SpoolFile>, u64, usize),
    End(std::result::Result<(), ()>),
    Wait,
}

impl Pipe {
    pub(crate) fn new(spool: Arc<Spool>) -> Arc<Self> {
        Arc::new(Self {
            spool,
            state: Mutex::new(PipeState::default()),
            readable: Notify::new(),
            writable: Notify::new(),
        })
    }

    /// The writer reads this pipe now: new chunks go direct once the backlog is drained.
    pub(crate) fn make_direct(&self) {
        lock(&self.state).is_direct = true;
        self.writable.notify_waiters();
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
                    if state.segments.is_empty() && state.direct_bytes < DIRECT_WINDOW {
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
            if let Some(memory) = reserved {
                return self.spool_chunk(chunk, memory).await;
            }
            tokio::select! {
                _ = writable => {}
                _ = freed => {}
            }
        }
    }

    /// Appends a chunk whose bytes were reserved to the spool: to memory, or to a file.
    async fn spool_chunk(&self, chunk: Bytes, memory: bool) -> Result<()> {
        let n = chunk.len() as u64;
        if memory {
            self.spool.stats.add(false, n);
            let mut state = lock(&self.state);
            match state.segments.back_mut() {
                Some(Segment::Memory(chunks)) => chunks.push_back(chunk),
                _ => {
                    seal(&mut state.segments);
                    state
                        .segments
                        .push_back(Segment::Memory(VecDeque::from([chunk])));
                }
            }
            drop(state);
            self.readable.notify_one();
            return Ok(());
        }
        let limit = self.spool.limits.file;
        let tail = {
            let mut state = lock(&self.state);
            state.writing = true;
            match state.segments.back() {
                Some(Segment::Disk {
                    file,
                    written,
                    sealed: false,
                    ..
                }) if *written + n <= limit.max(n) => Some((file.clone(), *written)),
                _ => None,
            }
        };
        let written = self.write_to_disk(chunk, tail).await;
        lock(&self.state).writing = false;
        self.readable.notify_one();
        written
    }

    /// Writes a reserved chunk to the tail file (or a new one) and makes it readable.
    async fn write_to_disk(
        &self,
        chunk: Bytes,
        tail: Option<(Arc<dyn SpoolFile>, u64)>,
    ) -> Result<()> {
        let n = chunk.len() as u64;
        let (file, offset, new) = match tail {
            Some((file, offset)) => (file, offset, false),
            None => {
                let storage = self.spool.storage.clone();
                let file: Arc<dyn SpoolFile> = blocking(move || storage.create())
                    .await
                    .map_err(|e| spool_error("create a spool file", e))?
                    .into();
                (file, 0, true)
            }
        };
        let writer = file.clone();
        blocking(move || writer.write_at(&chunk, offset))
            .await
            .map_err(|e| spool_error("write to a spool file", e))?;
        self.spool.stats.add(true, n);
        let mut state = lock(&self.state);
        if new {
            seal(&mut state.segments);
            self.spool.stats.files.fetch_add(1, Ordering::SeqCst);
            state.segments.push_back(Segment::Disk {
                file,
                written: n,
                read: 0,
                sealed: false,
            });
        } else if let Some(Segment::Disk { written, .. }) = state.segments.back_mut() {
            *written += n;
        }
        Ok(())
    }

    /// The producer is done: cleanly (`Ok`) or after a failure.
    pub(crate) fn finish(&self, end: std::result::Result<(), ()>) {
        let mut state = lock(&self.state);
        seal(&mut state.segments);
        state.end = Some(end);
        drop(state);
        self.readable.notify_one();
    }

    /// The next chunk; `None` at a clean end, `Some(Err(()))` after the producer failed.
    pub(crate) async fn next(&self) -> Option<std::result::Result<Bytes, ()>> {
        loop {
            let readable = self.readable.notified();
            tokio::pin!(readable);
            readable.as_mut().enable();
            let step = self.step();
            match step {
                Step::Chunk(chunk) => return Some(Ok(chunk)),
                Step::End(Ok(())) => return None,
                Step::End(Err(())) => return Some(Err(())),
                Step::ReadDisk(file, offset, len) => {
                    let read = blocking(move || {
                        let mut buf = BytesMut::zeroed(len);
                        let n = file.read_at(&mut buf, offset)?;
                        buf.truncate(n);
                        Ok(buf.freeze())
                    })
                    .await;
                    let Ok(data) = read else {
                        return Some(Err(()));
                    };
                    if data.is_empty() {
                        return Some(Err(()));
                    }
                    let mut state = lock(&self.state);
                    if let Some(Segment::Disk { read, .. }) = state.segments.front_mut() {
                        *read += data.len() as u64;
                    }
                    return Some(Ok(data));
                }
                Step::Wait => readable.await,
            }
        }
    }

    fn step(&self) -> Step {
        let mut state = lock(&self.state);
        loop {
            match state.segments.front_mut() {
                Some(Segment::Memory(chunks)) => {
                    let chunk = chunks.pop_front();
                    if chunks.is_empty() {
                        state.segments.pop_front();
                        if state.segments.is_empty() {
                            self.writable.notify_one();
                        }
                    }
                    if let Some(chunk) = chunk {
                        drop(state);
                        self.spool.release(true, chunk.len() as u64);
                        return Step::Chunk(chunk);
                    }
                }
                Some(Segment::Disk {
                    file,
                    written,
                    read,
                    sealed,
                }) => {
                    if *read < *written {
                        let len = usize::try_from(*written - *read)
                            .unwrap_or(usize::MAX)
                            .min(READ_BACK);
                        return Step::ReadDisk(file.clone(), *read, len);
                    }
                    let (bytes, sealed) = (*written, *sealed);
                    // An unsealed file read to its end is done with when its producer waits
                    // for the backlog to drain (direct, not writing).
                    let done_with = state.segments.len() == 1 && state.is_direct && !state.writing;
                    if !(sealed || done_with) {
                        return Step::Wait;
                    }
                    state.segments.pop_front();
                    self.spool.stats.files.fetch_sub(1, Ordering::SeqCst);
                    self.spool.release(false, bytes);
                    if state.segments.is_empty() {
                        self.writable.notify_one();
                    }
                }
                None => {
                    if let Some(chunk) = state.direct.pop_front() {
                        state.direct_bytes -= chunk.len() as u64;
                        drop(state);
                        self.writable.notify_one();
                        return Step::Chunk(chunk);
                    }
                    return match state.end {
                        Some(end) => Step::End(end),
                        None => Step::Wait,
                    };
                }
            }
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let state = lock(&self.state);
        for segment in &state.segments {
            match segment {
                Segment::Memory(chunks) => {
                    let n: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                    self.spool.stats.sub(false, n);
                }
                Segment::Disk { written, .. } => {
                    self.spool.stats.sub(true, *written);
                    self.spool.stats.files.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }
}

/// Marks the last segment complete: nothing more is appended to it.
fn seal(segments: &mut VecDeque<Segment>) {
    if let Some(Segment::Disk { sealed, .. }) = segments.back_mut() {
        *sealed = true;
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
/// unlinked files on disk). Counts the files alive and the bytes they hold.
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

    /// Bytes held by the files alive now.
    pub fn bytes(&self) -> u64 {
        self.usage.bytes.load(Ordering::SeqCst)
    }
}

impl SpoolStorage for MemorySpool {
    fn create(&self) -> std::io::Result<Box<dyn SpoolFile>> {
        self.usage.files.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(MemoryFile {
            data: Mutex::new(Vec::new()),
            usage: self.usage.clone(),
        }))
    }
}

struct MemoryFile {
    data: Mutex<Vec<u8>>,
    usage: Arc<MemoryUsage>,
}

impl SpoolFile for MemoryFile {
    fn write_at(&self, data: &[u8], offset: u64) -> std::io::Result<()> {
        let mut file = lock(&self.data);
        let offset = usize::try_from(offset).map_err(std::io::Error::other)?;
        let end = offset + data.len();
        if file.len() < end {
            self.usage
                .bytes
                .fetch_add((end - file.len()) as u64, Ordering::SeqCst);
            file.resize(end, 0);
        }
        file[offset..end].copy_from_slice(data);
        Ok(())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let file = lock(&self.data);
        let offset = usize::try_from(offset).map_err(std::io::Error::other)?;
        let available = file.get(offset..).unwrap_or_default();
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        Ok(n)
    }
}

impl Drop for MemoryFile {
    fn drop(&mut self) {
        let len = lock(&self.data).len() as u64;
        self.usage.bytes.fetch_sub(len, Ordering::SeqCst);
        self.usage.files.fetch_sub(1, Ordering::SeqCst);
    }
}
