//! The process's budget for reading nodes: node streams (execs) open at once and memory held
//! for downloads, shared by every request.
//!
//! A download reserves, before its status line is sent, what it needs to finish: its own
//! buffers and the node streams it must hold open at once (a zip: one; a live merge: all of
//! its streams). More streams than that (a zip's extra concurrency) are taken only when free,
//! so an admitted download always finishes without waiting for anything another holds. A
//! request that does not fit waits its turn (first come, first served) in a bounded queue
//! where no user may hold more than a quarter of the places, up to a time limit; past the
//! queue or the time it is refused with [`Error::Busy`], which says when to try again.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// The memory one open node stream costs: its TLS session and WebSocket, the frames in flight
/// (at most two of 32 KiB) and its next packet. Measured on a merge of 200 streams as the
/// process's resident memory per stream (158 KiB between 50 and 200 streams), rounded up.
pub const STREAM_COST: u64 = 160 * 1024;

/// The memory a stream costs while it waits in the spool for a merge (its read-back buffer
/// and its next packet).
pub const SPOOLED_STREAM_COST: u64 = 64 * 1024;

/// When a refused request may try again.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// What the budget allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetLimits {
    /// Node streams (execs) open at once, across requests.
    pub streams: NonZeroUsize,
    /// Bytes held for downloads at once, across requests.
    pub memory: u64,
    /// Requests that may wait for their turn at once; one user may hold a quarter of them.
    pub queue: usize,
    /// How long a request waits for its turn before it is refused.
    pub wait: Duration,
}

impl BudgetLimits {
    /// The most node streams open at once unless configured or derived from less memory.
    pub const MAX_DEFAULT_STREAMS: usize = 512;
    /// The fewest node streams the derived default allows.
    pub const MIN_DEFAULT_STREAMS: usize = 16;
    /// What the process needs besides downloads (runtime, TLS, caches, the allocator).
    pub const PROCESS_BASE: u64 = 48 * 1024 * 1024;
    /// The memory for downloads without a container limit.
    pub const UNLIMITED_MEMORY: u64 = 1024 * 1024 * 1024;
    /// Requests that may wait for their turn unless configured.
    pub const DEFAULT_QUEUE: usize = 64;
    /// How long a request may wait unless configured.
    pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

    /// The defaults for a process whose memory is limited to `container` bytes (cgroup
    /// `memory.max`; `None` when unlimited): three quarters of what the process's base leaves
    /// for downloads, and as many streams as that memory holds, within
    /// [`Self::MIN_DEFAULT_STREAMS`]..=[`Self::MAX_DEFAULT_STREAMS`].
    pub fn for_memory_limit(container: Option<u64>) -> Self {
        let memory = match container {
            Some(limit) => limit.saturating_sub(Self::PROCESS_BASE) / 4 * 3,
            None => Self::UNLIMITED_MEMORY,
        };
        let streams = usize::try_from(memory / STREAM_COST)
            .unwrap_or(usize::MAX)
            .clamp(Self::MIN_DEFAULT_STREAMS, Self::MAX_DEFAULT_STREAMS);
        Self {
            streams: NonZeroUsize::new(streams).unwrap_or(NonZeroUsize::MIN),
            memory,
            queue: Self::DEFAULT_QUEUE,
            wait: Self::DEFAULT_WAIT,
        }
    }
}

impl Default for BudgetLimits {
    /// As for a process without a memory limit.
    fn default() -> Self {
        Self::for_memory_limit(None)
    }
}

/// What the budget holds now, for metrics.
#[derive(Debug, Default)]
pub struct BudgetStats {
    streams: AtomicU64,
    memory: AtomicU64,
    queued: AtomicU64,
    refused: AtomicU64,
    waited: AtomicU64,
}

impl BudgetStats {
    /// Node streams reserved now (open, or about to open).
    pub fn streams(&self) -> u64 {
        self.streams.load(Ordering::SeqCst)
    }

    /// Bytes reserved for downloads now.
    pub fn memory(&self) -> u64 {
        self.memory.load(Ordering::SeqCst)
    }

    /// Requests waiting for their turn now.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::SeqCst)
    }

    /// Requests refused so far (queue full, or waited too long).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Requests that had to wait for their turn so far.
    pub fn waited(&self) -> u64 {
        self.waited.load(Ordering::SeqCst)
    }
}

/// Who is waiting.
#[derive(Debug, Default)]
struct Waiting {
    total: usize,
    by_user: HashMap<String, usize>,
}

/// The process's budget.
#[derive(Debug)]
pub struct Budget {
    limits: BudgetLimits,
    streams: Arc<Semaphore>,
    /// In KiB.
    memory: Arc<Semaphore>,
    waiting: Mutex<Waiting>,
    stats: Arc<BudgetStats>,
}

/// A part of the budget, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    _streams: Option<OwnedSemaphorePermit>,
    _memory: Option<OwnedSemaphorePermit>,
    streams: u64,
    bytes: u64,
    stats: Arc<BudgetStats>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.stats.streams.fetch_sub(self.streams, Ordering::SeqCst);
        self.stats.memory.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// A place in the queue, given back when dropped.
struct Queued<'a> {
    budget: &'a Budget,
    user: String,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut waiting = self
            .budget
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        waiting.total -= 1;
        if let Some(n) = waiting.by_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                waiting.by_user.remove(&self.user);
            }
        }
        self.budget.stats.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Budget {
    /// A budget of `limits`.
    pub fn new(limits: BudgetLimits) -> Self {
        Self {
            streams: Arc::new(Semaphore::new(limits.streams.get())),
            memory: Arc::new(Semaphore::new(kib(limits.memory) as usize)),
            limits,
            waiting: Mutex::default(),
            stats: Arc::default(),
        }
    }

    /// What it allows.
    pub fn limits(&self) -> BudgetLimits {
        self.limits
    }

    /// What it holds now.
    pub fn stats(&self) -> Arc<BudgetStats> {
        self.stats.clone()
    }

    /// Whether `streams` and `bytes` could ever be held at once.
    pub fn fits(&self, streams: usize, bytes: u64) -> bool {
        streams <= self.limits.streams.get() && bytes <= self.limits.memory
    }

    /// Reserves `streams` node streams and `bytes` of memory for `user`'s request (`what`
    /// names it in a refusal), waiting its turn if need be.
    pub async fn reserve(
        &self,
        user: &str,
        what: &str,
        streams: usize,
        bytes: u64,
    ) -> Result<Reservation> {
        if !self.fits(streams, bytes) {
            return Err(Error::Internal(format!(
                "{what} needs {streams} node streams and {} KiB, more than the whole budget",
                kib(bytes)
            )));
        }
        if let Some(r) = self.try_reserve(streams, bytes) {
            return Ok(r);
        }
        let _place = self.queue(user, what)?;
        self.stats.waited.fetch_add(1, Ordering::SeqCst);
        tracing::info!(
            what,
            streams,
            kib = kib(bytes),
            "waiting for node streams or memory held by other downloads"
        );
        let wait = async {
            let memory = self
                .memory
                .clone()
                .acquire_many_owned(kib(bytes))
                .await
                .map_err(|_| Error::Internal("the budget is closed".into()))?;
            let stream_permits = match u32::try_from(streams) {
                Ok(0) => None,
                Ok(n) => Some(
                    self.streams
                        .clone()
                        .acquire_many_owned(n)
                        .await
                        .map_err(|_| Error::Internal("the budget is closed".into()))?,
                ),
                Err(_) => return Err(Error::Internal("too many streams".into())),
            };
            Ok(self.held(stream_permits, Some(memory), streams, bytes))
        };
        match tokio::time::timeout(self.limits.wait, wait).await {
            Ok(reserved) => reserved,
            Err(_) => {
                self.stats.refused.fetch_add(1, Ordering::SeqCst);
                Err(self.busy(format!(
                    "{what} waited {} s for node streams and memory held by other downloads",
                    self.limits.wait.as_secs()
                )))
            }
        }
    }

    /// Reserves `streams` and `bytes` if they are free now, without waiting.
    pub fn try_reserve(&self, streams: usize, bytes: u64) -> Option<Reservation> {
        let memory = self
            .memory
            .clone()
            .try_acquire_many_owned(kib(bytes))
            .ok()?;
        let stream_permits = match u32::try_from(streams).ok()? {
            0 => None,
            n => Some(self.streams.clone().try_acquire_many_owned(n).ok()?),
        };
        Some(self.held(stream_permits, Some(memory), streams, bytes))
    }

    /// Reserves one node stream for `user`'s `what`, waiting its turn if need be.
    pub async fn stream(&self, user: &str, what: &str) -> Result<Reservation> {
        self.reserve(user, what, 1, STREAM_COST).await
    }

    /// Runs `tasks` (each reads one node) in order, at most `concurrency` at once: one on
    /// `held` (a stream the caller reserved), each further one on a stream taken while the
    /// budget has one to spare. The results, in order.
    pub async fn run_each<T, F>(
        &self,
        held: Reservation,
        concurrency: usize,
        tasks: Vec<F>,
    ) -> Vec<T>
    where
        F: std::future::Future<Output = T>,
    {
        use futures_util::StreamExt;
        let mut results = Vec::with_capacity(tasks.len());
        let mut spare = vec![held];
        let mut running = futures_util::stream::FuturesOrdered::new();
        let mut tasks = tasks.into_iter();
        loop {
            while running.len() < concurrency.max(1) {
                let Some(stream) = spare.pop().or_else(|| self.try_reserve(1, STREAM_COST)) else {
                    break;
                };
                let Some(task) = tasks.next() else {
                    spare.push(stream);
                    break;
                };
                running.push_back(async move { (task.await, stream) });
            }
            match running.next().await {
                Some((result, stream)) => {
                    results.push(result);
                    spare.push(stream);
                }
                None => return results,
            }
        }
    }

    fn held(
        &self,
        streams: Option<OwnedSemaphorePermit>,
        memory: Option<OwnedSemaphorePermit>,
        n: usize,
        bytes: u64,
    ) -> Reservation {
        self.stats.streams.fetch_add(n as u64, Ordering::SeqCst);
        self.stats.memory.fetch_add(bytes, Ordering::SeqCst);
        Reservation {
            _streams: streams,
            _memory: memory,
            streams: n as u64,
            bytes,
            stats: self.stats.clone(),
        }
    }

    /// A place in the queue for `user`, or a refusal when the queue (or the user's quarter of
    /// it) is full.
    fn queue(&self, user: &str, what: &str) -> Result<Queued<'_>> {
        let mut waiting = self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let per_user = (self.limits.queue / 4).max(1);
        let mine = waiting.by_user.get(user).copied().unwrap_or(0);
        if waiting.total >= self.limits.queue || mine >= per_user {
            drop(waiting);
            self.stats.refused.fetch_add(1, Ordering::SeqCst);
            let why = if mine >= per_user {
                format!(
                    "{what} cannot wait: {user} already has {mine} requests waiting for node streams or memory"
                )
            } else {
                format!(
                    "{what} cannot wait: {} requests are already waiting for node streams or memory",
                    waiting_total(self)
                )
            };
            return Err(self.busy(why));
        }
        waiting.total += 1;
        *waiting.by_user.entry(user.to_owned()).or_default() += 1;
        self.stats.queued.fetch_add(1, Ordering::SeqCst);
        Ok(Queued {
            budget: self,
            user: user.to_owned(),
        })
    }

    fn busy(&self, reason: String) -> Error {
        Error::Busy {
            reason,
            retry_after: RETRY_AFTER,
        }
    }
}

fn waiting_total(budget: &Budget) -> usize {
    budget
        .waiting
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(streams: usize, memory: u64, queue: usize, wait_ms: u64) -> BudgetLimits {
        BudgetLimits {
            streams: NonZeroUsize::new(streams).unwrap(),
            memory,
            queue,
            wait: Duration::from_millis(wait_ms),
        }
    }

    #[test]
    fn defaults_follow_the_container_s_memory() {
        let l = BudgetLimits::for_memory_limit(Some(256 * 1024 * 1024));
        assert_eq!(l.memory, 156 * 1024 * 1024);
        assert_eq!(l.streams.get(), 512, "156 MiB holds more than 512 streams");
        let small = BudgetLimits::for_memory_limit(Some(64 * 1024 * 1024));
        assert_eq!(small.memory, 12 * 1024 * 1024);
        assert_eq!(small.streams.get(), 76);
        let tiny = BudgetLimits::for_memory_limit(Some(32 * 1024 * 1024));
        assert_eq!((tiny.memory, tiny.streams.get()), (0, 16));
        assert_eq!(BudgetLimits::default().memory, 1024 * 1024 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_its_turn_then_is_refused_with_a_time_to_retry() {
        let budget = Arc::new(Budget::new(limits(4, 1 << 20, 8, 1000)));
        let first = budget.reserve("jane", "a merge", 4, 1000).await.unwrap();
        assert_eq!(budget.stats().streams(), 4);
        // Waits, and gets its turn when the first is done.
        let b = budget.clone();
        let second = tokio::spawn(async move { b.reserve("bob", "a merge", 3, 1000).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(budget.stats().queued(), 1);
        drop(first);
        let second = second.await.unwrap().unwrap();
        assert_eq!((budget.stats().streams(), budget.stats().queued()), (3, 0));
        // Waits too long: refused, saying when to retry.
        match budget.reserve("bob", "a merge", 4, 1000).await {
            Err(Error::Busy { retry_after, .. }) => assert_eq!(retry_after, RETRY_AFTER),
            other => panic!("expected Busy, got {other:?}"),
        }
        assert_eq!(budget.stats().refused(), 1);
        drop(second);
        assert_eq!((budget.stats().streams(), budget.stats().memory()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn no_user_holds_more_than_a_quarter_of_the_queue() {
        let budget = Arc::new(Budget::new(limits(1, 1 << 20, 8, 60_000)));
        let held = budget.reserve("jane", "a file", 1, 10).await.unwrap();
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let b = budget.clone();
            waiting.push(tokio::spawn(async move {
                b.reserve("jane", "a file", 1, 10).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(budget.stats().queued(), 2);
        // jane's third is refused at once; bob still gets a place.
        assert!(matches!(
            budget.reserve("jane", "a file", 1, 10).await,
            Err(Error::Busy { reason, .. }) if reason.contains("jane already has 2")
        ));
        let b = budget.clone();
        let bob = tokio::spawn(async move { b.reserve("bob", "a file", 1, 10).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(budget.stats().queued(), 3);
        drop(held);
        for w in waiting {
            drop(w.await.unwrap().unwrap());
        }
        drop(bob.await.unwrap().unwrap());
        assert_eq!(budget.stats().queued(), 0);
    }

    #[test]
    fn try_reserve_takes_only_what_is_free() {
        let budget = Budget::new(limits(2, 100 * 1024, 8, 10));
        let a = budget.try_reserve(1, STREAM_COST.min(50 * 1024)).unwrap();
        assert!(
            budget.try_reserve(1, 60 * 1024).is_none(),
            "memory is short"
        );
        let b = budget.try_reserve(1, 10 * 1024).unwrap();
        assert!(budget.try_reserve(1, 0).is_none(), "streams are short");
        drop((a, b));
        assert!(budget.try_reserve(2, 100 * 1024).is_some());
    }
}
