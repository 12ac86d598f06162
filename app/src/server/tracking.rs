//! Requests in flight, per connection and for the whole server: a connection with none for
//! the header timeout is closed (a slow or stalled head, an idle keep-alive or HTTP/2
//! connection); shutdown knows what it drains. And each response body's end (bytes sent,
//! whole or not), reported to whoever the routes put in its [`EndHook`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Requests being answered on one connection.
#[derive(Debug)]
pub struct Connection {
    in_flight: AtomicUsize,
    idle_since: std::sync::Mutex<Instant>,
    changed: Notify,
    server: Arc<AtomicUsize>,
}

impl Connection {
    /// A connection of a server whose requests in flight `server` counts.
    pub fn new(server: Arc<AtomicUsize>) -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            idle_since: std::sync::Mutex::new(Instant::now()),
            changed: Notify::new(),
            server,
        })
    }

    /// A request starts; it ends when the guard (kept with its response body) drops.
    pub fn enter(self: &Arc<Self>) -> Guard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.server.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        Guard(self.clone())
    }

    /// Resolves once the connection had no request in flight for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                changed.await;
                continue;
            }
            let since = *self
                .idle_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            tokio::select! {
                () = tokio::time::sleep_until(since + idle) => {
                    if self.in_flight.load(Ordering::SeqCst) == 0 {
                        return;
                    }
                }
                () = changed => {}
            }
        }
    }
}

/// One request in flight.
#[derive(Debug)]
pub struct Guard(Arc<Connection>);

impl Drop for Guard {
    fn drop(&mut self) {
        let connection = &self.0;
        *connection
            .idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        connection.in_flight.fetch_sub(1, Ordering::SeqCst);
        connection.server.fetch_sub(1, Ordering::SeqCst);
        connection.changed.notify_waiters();
    }
}

/// Told once when a response body ends: the bytes sent, and whether it was sent whole (false
/// when it failed, or the client left, or it was dropped before its end).
pub trait BodyEnd: Send + std::fmt::Debug {
    /// The body ended.
    fn finish(self: Box<Self>, bytes: u64, whole: bool);
}

/// Carries a response's [`BodyEnd`] from the routes to the server in the response's
/// extensions (which must be `Clone`); taken once.
#[derive(Clone, Debug)]
pub struct EndHook(Arc<std::sync::Mutex<Option<Box<dyn BodyEnd>>>>);

impl EndHook {
    /// Wraps `end`.
    pub fn new(end: impl BodyEnd + 'static) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(Box::new(end)))))
    }

    fn take(&self) -> Option<Box<dyn BodyEnd>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// A response body that keeps its request counted in flight until it is done or dropped,
/// and reports its end (bytes sent, whole or not) to the response's [`EndHook`].
#[derive(Debug)]
pub struct Tracked<B> {
    inner: B,
    guard: Option<Guard>,
    end: Option<Box<dyn BodyEnd>>,
    bytes: u64,
    empty: bool,
}

impl<B: Body> Tracked<B> {
    /// `inner`, counted by `guard`, ending `hook` (from the response's extensions).
    pub fn new(inner: B, guard: Guard, hook: Option<EndHook>) -> Self {
        Self {
            empty: inner.is_end_stream(),
            inner,
            guard: Some(guard),
            end: hook.and_then(|h| h.take()),
            bytes: 0,
        }
    }

    fn ended(&mut self, whole: bool) {
        self.guard = None;
        self.report(whole);
    }

    /// Counts and logs the request's end (once); the request stays in flight until the body
    /// is done or dropped.
    fn report(&mut self, whole: bool) {
        if let Some(end) = self.end.take() {
            end.finish(self.bytes, whole);
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += bytes::Buf::remaining(data) as u64;
                }
                // A body that knows it is done (a whole JSON answer) may not be polled again.
                if self.inner.is_end_stream() {
                    self.report(true);
                }
            }
            Poll::Ready(None) => self.ended(true),
            Poll::Ready(Some(Err(_))) => self.ended(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            // An empty body is not always polled; any other body dropped here was cut.
            end.finish(self.bytes, self.empty);
        }
    }
}
