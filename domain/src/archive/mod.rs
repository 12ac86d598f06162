//! The download engine: every node's tar stream in, one download out (a zip, or a merged
//! pcapng), produced while it is read.
//!
//! Nodes are read concurrently ([`fetch`]: up to `concurrency` at once, in status order), each
//! into a pipe of the download's [`spool`]; a writer turns the pipes into the download and
//! hands it to the body through [`output`]. The zip writer ([`zip`]) takes the nodes in status
//! order, one at a time, parsing their tar streams ([`tar`]) into whole, uninterleaved zip
//! entries, so the same capture gives the same zip; the merge ([`merge`]) reads every stream
//! at once. A finished capture's stored zip is planned first ([`planned`], on the byte layout
//! of [`layout`]): its length, tag and any range are known before a file is read. The node being written passes through
//! directly; the others spool (memory, then files) up to a per-download limit, past which
//! their reads pause. Invariants:
//! - nothing is sent before the first regular file is found, so "no file" is told apart (the
//!   caller answers 204) before any byte exists;
//! - a node's tar stream counts only if it ends with an end-of-archive block and every entry's
//!   data is whole, and its read ends cleanly (an exec's success);
//! - the first failure of any node, or the client leaving, stops the download at once: every
//!   read is dropped (closing its exec) and the zip's central directory is never sent, so a
//!   partial download can never open as a whole archive.

mod fetch;
pub mod follow;
mod layout;
mod merge;
mod output;
mod planned;
mod spool;
mod tar;
mod zip;

use std::sync::Arc;

use tokio::sync::mpsc;

pub(crate) use self::fetch::Exact;
pub use self::fetch::{FetchOptions, NodeSource};
pub use self::layout::{Layout, PlannedEntry};
pub use self::merge::{Choice, StreamSource};
use self::output::Msg;
pub use self::output::{CHANNEL_CHUNKS, CHUNK_SIZE, DownloadStream, Summary};
pub use self::planned::{
    DIGEST_ENTRIES, DIGEST_TTL, DigestCache, FileDigest, FileKey, ListingFlights, ZipPlan,
};
pub use self::spool::{MemorySpool, SpoolLimits, SpoolStats};
pub use self::tar::{TarError, TarEvent, TarParser};
pub use self::zip::{EntryNamer, MANIFEST};
use crate::budget::{Budget, Reservation, SPOOLED_STREAM_COST, STREAM_COST};
use crate::error::{Error, Result};
use crate::ports::{FileFetcher, SpoolStorage};
use crate::types::Compression;

/// How downloads read nodes and where they spool.
#[derive(Clone)]
pub struct Engine {
    /// Concurrency and idle timeout.
    pub fetch: FetchOptions,
    /// What one download may hold.
    pub spool: SpoolLimits,
    /// Where spooled bytes go past the memory budget.
    pub storage: Arc<dyn SpoolStorage>,
    /// Spool usage across downloads.
    pub stats: Arc<SpoolStats>,
    /// The process's node streams and memory for downloads, shared by every request.
    pub budget: Arc<Budget>,
    /// The digests of files read whole, for ranges of finished captures' zips.
    pub digests: Arc<DigestCache>,
    /// Listings of finished captures' directories in flight, shared by whole zips.
    pub listings: Arc<ListingFlights>,
}

impl Default for Engine {
    /// Default options, spooling to memory only ([`MemorySpool`]), the budget of a process
    /// without a memory limit: for tests and tools; the service gives a file-backed storage
    /// and its own budget.
    fn default() -> Self {
        Self {
            fetch: FetchOptions::default(),
            spool: SpoolLimits::default(),
            storage: Arc::new(MemorySpool::default()),
            stats: Arc::default(),
            budget: Arc::new(Budget::new(crate::budget::BudgetLimits::default())),
            digests: Arc::default(),
            listings: Arc::default(),
        }
    }
}

impl Engine {
    /// The memory a zip download holds besides its node streams: the spool's memory, the
    /// node being written, the output batches and the zip writer.
    pub fn zip_cost(&self) -> u64 {
        self.spool.memory + spool::DIRECT_WINDOW + OUTPUT_COST + ZIP_WRITER_COST
    }

    /// The memory a merge of `streams` holds when every stream is read at once.
    pub fn live_merge_cost(&self, streams: usize) -> u64 {
        OUTPUT_COST + streams as u64 * STREAM_COST
    }

    /// The memory a merge of `streams` holds when it reads `open` of them at once into the
    /// spool and merges from there.
    pub fn spooled_merge_cost(&self, streams: usize, open: usize) -> u64 {
        self.spool.memory
            + OUTPUT_COST
            + open as u64 * STREAM_COST
            + streams as u64 * SPOOLED_STREAM_COST
    }
}

/// The output of a download: the batches in the channel and the one being filled.
const OUTPUT_COST: u64 = (CHANNEL_CHUNKS as u64 + 2) * CHUNK_SIZE as u64;
/// The zip writer's own state (the Deflate compressor's included).
const ZIP_WRITER_COST: u64 = 1024 * 1024;

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("fetch", &self.fetch)
            .field("spool", &self.spool)
            .finish()
    }
}

/// Starts a download of `nodes`' files for `user`. Reserves first what the zip needs to finish
/// (one node stream and its buffers; more nodes are read at once only while the budget has
/// streams to spare), waiting its turn if need be. Resolves once the first file is found
/// (`Some(stream)`), or once every node was read and none held a file (`None`), or on an error
/// before the first byte. After that, errors arrive as an `Err` item of the stream.
pub async fn stream_zip(
    fetcher: Arc<dyn FileFetcher>,
    nodes: Vec<NodeSource>,
    namer: EntryNamer,
    compression: Compression,
    engine: &Engine,
    user: &str,
) -> Result<Option<DownloadStream>> {
    read_zip(
        fetcher,
        nodes,
        engine,
        user,
        move |pipes, failure, tx| async move {
            zip::assemble(pipes, namer, compression, &failure, &tx).await
        },
    )
    .await
}

/// Reserves what a zip needs to finish (one node stream and its buffers; more nodes are read
/// at once only while the budget has streams to spare), reads `nodes` in order into pipes of
/// one spool, and runs `writer` over the pipes.
async fn read_zip<W, F>(
    fetcher: Arc<dyn FileFetcher>,
    nodes: Vec<NodeSource>,
    engine: &Engine,
    user: &str,
    writer: W,
) -> Result<Option<DownloadStream>>
where
    W: FnOnce(Vec<(NodeSource, Arc<spool::Pipe>)>, Arc<fetch::Failure>, mpsc::Sender<Msg>) -> F
        + Send
        + 'static,
    F: std::future::Future<Output = Result<Summary>> + Send,
{
    let reserved = engine
        .budget
        .reserve(user, "a zip download", 1, engine.zip_cost() + STREAM_COST)
        .await?;
    let spool = spool::Spool::new(engine.storage.clone(), engine.spool, engine.stats.clone());
    let with_pipes: Vec<_> = nodes
        .into_iter()
        .map(|node| (node, spool::Pipe::new(spool.clone())))
        .collect();
    let writer_pipes = with_pipes.clone();
    let reads = fetch::Reads {
        options: engine.fetch,
        reserved: 1,
        extra: Some(engine.budget.clone()),
    };
    launch(fetcher, with_pipes, reads, reserved, move |failure, tx| {
        writer(writer_pipes, failure, tx)
    })
    .await
}

/// Starts the download of a finished capture's planned zip, whole (`range: None`) or the
/// bytes `range`, for `user`. Whole, it is read like any zip (reserving the same); a range
/// reads one file at a time on one node stream. Resolves once its first bytes are ready, or
/// with the error that came before them.
pub async fn stream_planned(
    fetcher: Arc<dyn FileFetcher>,
    plan: Arc<ZipPlan>,
    range: Option<std::ops::Range<u64>>,
    engine: &Engine,
    user: &str,
) -> Result<DownloadStream> {
    let Some(range) = range else {
        let cache = engine.digests.clone();
        let sources = plan.sources();
        let stream = read_zip(
            fetcher,
            sources,
            engine,
            user,
            move |pipes, failure, tx| async move {
                planned::assemble(pipes, plan, cache, &failure, &tx).await
            },
        )
        .await?;
        return stream.ok_or_else(|| Error::Internal("a planned zip sent nothing".into()));
    };
    let reserved = engine
        .budget
        .reserve(user, "a zip range", 1, OUTPUT_COST + STREAM_COST)
        .await?;
    let reads = planned::RangeReads {
        fetcher,
        cache: engine.digests.clone(),
        idle: engine.fetch.idle_timeout,
    };
    spawn_writer(
        reserved,
        "the range of a planned zip",
        move |tx| async move { planned::assemble_range(plan, range, reads, &tx).await },
    )
    .await
}

/// Runs `writer` in a task of its own, which holds `reserved` until the writer is done, and
/// resolves with the stream once its first bytes are ready, or with the error that came
/// before them (`what` names the download in the error of a writer that sent nothing).
async fn spawn_writer<W, F>(reserved: Reservation, what: &str, writer: W) -> Result<DownloadStream>
where
    W: FnOnce(mpsc::Sender<Msg>) -> F,
    F: std::future::Future<Output = Result<Summary>> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(CHANNEL_CHUNKS);
    let written = writer(tx.clone());
    tokio::spawn(async move {
        let result = written.await;
        drop(reserved);
        let msg = match result {
            Ok(summary) => Msg::Done(summary),
            // A client that left is told nothing.
            Err(Error::ClientGone) => return,
            Err(e) => Msg::Failed(e),
        };
        let _ = tx.send(msg).await;
    });
    match rx.recv().await {
        Some(Msg::Data(first)) => Ok(DownloadStream::new(first, rx)),
        Some(Msg::Failed(e)) => Err(e),
        _ => Err(Error::Internal(format!(
            "{what} stopped before its first byte"
        ))),
    }
}

/// Starts a merge of `streams` into one pcapng of the packets `choice` keeps (its window,
/// its filter), for `user`.
/// Resolves once the first packet is known (`Some(stream)`), or once every stream was read
/// and none held a packet in the window (`None`), or on an error before the first byte.
///
/// A merge needs each stream's next packet. When the budget can hold every stream open at
/// once, all are read at once, live (and reserved together, so two merges never wait on each
/// other). Beyond that, streams are read a few at a time into the spool and merged from
/// there: execs and memory stay bounded, at the cost of the spool's disk (about the
/// capture's size: every stream must have begun before the first packet is known) and of
/// time. A merge that would not fit even so is [`Error::TooManyStreams`].
pub async fn stream_pcapng(
    fetcher: Arc<dyn FileFetcher>,
    streams: Vec<StreamSource>,
    choice: merge::Choice,
    engine: &Engine,
    user: &str,
) -> Result<Option<DownloadStream>> {
    let n = streams.len();
    let limits = engine.budget.limits();
    let live_max =
        usize::try_from(limits.memory.saturating_sub(engine.live_merge_cost(0)) / STREAM_COST)
            .unwrap_or(usize::MAX)
            .min(limits.streams.get());
    let live = n <= live_max;
    let open = if live {
        n
    } else {
        engine.fetch.concurrency.get().min(live_max).max(1)
    };
    let cost = if live {
        engine.live_merge_cost(n)
    } else {
        engine.spooled_merge_cost(n, open)
    };
    if !engine.budget.fits(open, cost) {
        return Err(Error::TooManyStreams {
            streams: n,
            budget_mib: limits.memory / (1024 * 1024),
        });
    }
    let reserved = engine.budget.reserve(user, "a merge", open, cost).await?;
    let with_pipes: Vec<_> = if live {
        let spool = spool::Spool::new(engine.storage.clone(), engine.spool, engine.stats.clone());
        streams
            .into_iter()
            .map(|stream| {
                let pipe = spool::Pipe::with_window(spool.clone(), merge::STREAM_WINDOW);
                (stream, pipe)
            })
            .collect()
    } else {
        tracing::info!(
            streams = n,
            open,
            "merging from the spool: more streams than may be open at once"
        );
        let spool = spool::Spool::without_waiting(
            engine.storage.clone(),
            engine.spool,
            engine.stats.clone(),
            n,
        );
        streams
            .into_iter()
            .map(|stream| {
                let pipe =
                    spool::Pipe::with_sizes(spool.clone(), merge::STREAM_WINDOW, merge::READ_BACK);
                (stream, pipe)
            })
            .collect()
    };
    let sources: Vec<_> = with_pipes
        .iter()
        .map(|(stream, pipe)| (stream.source.clone(), pipe.clone()))
        .collect();
    let reads = fetch::Reads {
        options: FetchOptions {
            concurrency: std::num::NonZeroUsize::new(open).unwrap_or(std::num::NonZeroUsize::MIN),
            ..engine.fetch
        },
        reserved: open,
        extra: None,
    };
    launch(fetcher, sources, reads, reserved, move |failure, tx| async move {
        merge::assemble(with_pipes, choice, live, &failure, &tx).await
    })
    .await
}

/// Starts following a running capture ([`follow`]) for `user`: resolves with the stream once
/// its section header is ready (sent at once, so a live viewer starts), or with the error that
/// stopped it first. The follow holds one node stream of the budget for its watcher and one
/// per stream it reads.
pub async fn stream_follow(
    follow: follow::Follow,
    engine: &Engine,
    user: &str,
) -> Result<DownloadStream> {
    let reserved = engine
        .budget
        .reserve(user, "a follow", 1, STREAM_COST)
        .await?;
    spawn_writer(reserved, "the follow", move |tx| follow::run(follow, tx)).await
}

/// Runs the reads of `sources` and `writer` in one task (a chunk read is written without a
/// thread hand-off) and resolves once the writer sent its first data, finished without any,
/// or failed first.
async fn launch<W, F>(
    fetcher: Arc<dyn FileFetcher>,
    sources: Vec<(NodeSource, Arc<spool::Pipe>)>,
    reads: fetch::Reads,
    reserved: Reservation,
    writer: W,
) -> Result<Option<DownloadStream>>
where
    W: FnOnce(Arc<fetch::Failure>, mpsc::Sender<Msg>) -> F + Send + 'static,
    F: std::future::Future<Output = Result<Summary>> + Send,
{
    let failure = Arc::new(fetch::Failure::default());
    let (tx, mut rx) = mpsc::channel(CHANNEL_CHUNKS);
    let task = tokio::spawn(async move {
        // What was reserved for the download is held until it is done, and given back before
        // the body learns its end.
        let reserved = reserved;
        let mut reads = Box::pin(fetch::run(fetcher, sources, reads, failure.clone()));
        let write = writer(failure, tx.clone());
        tokio::pin!(write);
        let mut reading = true;
        let result = loop {
            tokio::select! {
                result = &mut write => break result,
                () = &mut reads, if reading => reading = false,
            }
        };
        // Whatever is still being read is no longer wanted: dropping it closes its exec.
        drop(reads);
        drop(reserved);
        let msg = match result {
            Ok(summary) => Msg::Done(summary),
            Err(e) => Msg::Failed(e),
        };
        // The receiver may be gone (client left); nothing more to tell then.
        let _ = tx.send(msg).await;
    });
    match rx.recv().await {
        Some(Msg::Data(first)) => Ok(Some(DownloadStream::new(first, rx))),
        Some(Msg::Done(_)) => Ok(None),
        Some(Msg::Failed(e)) => Err(e),
        None => Err(match task.await {
            Err(e) if e.is_panic() => Error::Internal("the archive engine panicked".into()),
            _ => Error::Internal("the archive engine stopped without a result".into()),
        }),
    }
}
