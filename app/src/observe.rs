//! What an operator watches: the Prometheus metrics (served on a port of their own by
//! [`crate::http::metrics`]) and the one log line every request ends with, carrying its
//! request id.
//!
//! No label carries a namespace, capture, node, user or token: `route` is the route's
//! template, `reason` and `format` are fixed words.

use std::sync::Arc;
use std::time::Instant;

use http::{Method, StatusCode};
use packetcapture_domain::cache::LookupObserver;
use packetcapture_domain::{Budget, Error};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::server::BodyEnd;

/// The content type of what `/metrics` serves.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FormatLabel {
    format: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabel {
    cache: &'static str,
}

type HistogramFamily = Family<RouteLabel, Histogram, fn() -> Histogram>;

/// The service's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
    download_bytes: Family<FormatLabel, Counter>,
    downloads_in_flight: Gauge,
    node_failures: Family<ReasonLabel, Counter>,
    cache_hits: Family<CacheLabel, Counter>,
    cache_misses: Family<CacheLabel, Counter>,
    filter_read: Counter,
    filter_kept: Counter,
    budget: Arc<std::sync::OnceLock<Arc<Budget>>>,
}

/// The budget's figures, read at each scrape.
#[derive(Debug)]
struct BudgetCollector(Arc<std::sync::OnceLock<Arc<Budget>>>);

impl Collector for BudgetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(budget) = self.0.get() else {
            return Ok(());
        };
        let (stats, limits) = (budget.stats(), budget.limits());
        let gauges: [(&str, &str, u64); 5] = [
            (
                "node_streams_reserved",
                "Node streams (execs) open or reserved now, across requests",
                stats.streams(),
            ),
            (
                "node_streams_limit",
                "The most node streams open at once (MAX_STREAMS)",
                limits.streams.get() as u64,
            ),
            (
                "download_memory_reserved_bytes",
                "Memory reserved for downloads now",
                stats.memory(),
            ),
            (
                "download_memory_limit_bytes",
                "The most memory held for downloads at once (MEMORY_BUDGET)",
                limits.memory,
            ),
            (
                "requests_queued",
                "Requests waiting for node streams or memory now",
                stats.queued(),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let counters: [(&str, &str, u64); 2] = [
            (
                "requests_waited",
                "Requests that waited for node streams or memory",
                stats.waited(),
            ),
            (
                "requests_refused_busy",
                "Requests refused with 503 because the budget stayed full or the queue was full",
                stats.refused(),
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

fn duration_histogram() -> Histogram {
    // 1 ms to about 9 minutes: small answers and whole-capture downloads.
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

impl Metrics {
    /// Every metric at zero.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("packetcapture_api");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by route template, method and status code",
            requests.clone(),
        );
        let durations = HistogramFamily::new_with_constructor(duration_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to the end of its response body, by route template",
            durations.clone(),
        );
        let download_bytes = Family::<FormatLabel, Counter>::default();
        registry.register(
            "download_bytes",
            "Response body bytes sent by downloads: zip, pcapng or file",
            download_bytes.clone(),
        );
        let downloads_in_flight = Gauge::default();
        registry.register(
            "downloads_in_flight",
            "Downloads whose response has not ended",
            downloads_in_flight.clone(),
        );
        let node_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "node_fetch_failures",
            "Reads of node files that failed, by reason",
            node_failures.clone(),
        );
        let cache_hits = Family::<CacheLabel, Counter>::default();
        registry.register(
            "cache_hits",
            "Lookups answered by the authentication or authorization cache",
            cache_hits.clone(),
        );
        let cache_misses = Family::<CacheLabel, Counter>::default();
        registry.register(
            "cache_misses",
            "Lookups the authentication or authorization cache passed on",
            cache_misses.clone(),
        );
        for cache in ["authentication", "authorization"] {
            // Present from the start, so a rate() has a zero to start from.
            let _ = cache_hits.get_or_create(&CacheLabel { cache });
            let _ = cache_misses.get_or_create(&CacheLabel { cache });
        }
        let filter_read = Counter::default();
        registry.register(
            "filter_packets_read",
            "Packets filtered merges read (in their window, before the filter)",
            filter_read.clone(),
        );
        let filter_kept = Counter::default();
        registry.register(
            "filter_packets_kept",
            "Packets filtered merges kept (their filter matched)",
            filter_kept.clone(),
        );
        let budget = Arc::new(std::sync::OnceLock::new());
        registry.register_collector(Box::new(BudgetCollector(budget.clone())));
        Arc::new(Self {
            registry,
            requests,
            durations,
            download_bytes,
            downloads_in_flight,
            node_failures,
            cache_hits,
            cache_misses,
            filter_read,
            filter_kept,
            budget,
        })
    }

    /// Reports `budget`'s figures from now on (the service's one budget; set once).
    pub fn watch_budget(&self, budget: Arc<Budget>) {
        let _ = self.budget.set(budget);
    }

    /// The metrics in the OpenMetrics text format (which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        out
    }

    /// A hook for a cache's lookups (`cache`: `authentication` or `authorization`).
    pub fn cache_observer(self: &Arc<Self>, cache: &'static str) -> LookupObserver {
        let this = self.clone();
        Arc::new(move |hit| {
            let family = if hit {
                &this.cache_hits
            } else {
                &this.cache_misses
            };
            family.get_or_create(&CacheLabel { cache }).inc();
        })
    }

    /// Counts what a filtered merge read and kept.
    pub fn filtered(&self, read: u64, kept: u64) {
        self.filter_read.inc_by(read);
        self.filter_kept.inc_by(kept);
    }

    /// Counts a node's failure that has no [`Error`] (a short file read: `file_read`).
    pub fn count_node_failure(&self, reason: &'static str) {
        self.node_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a failure if it is a node's.
    pub fn node_failure(&self, error: &Error) {
        if let Some(reason) = node_failure_reason(error) {
            self.count_node_failure(reason);
        }
    }
}

/// The reason label of a failure to read a node's files, or `None` for other failures.
pub fn node_failure_reason(error: &Error) -> Option<&'static str> {
    Some(match error {
        Error::NoEntryPod { .. } => "no_entry_pod",
        Error::NodeFiles { .. } => "exec_failed",
        Error::TruncatedArchive { .. } => "truncated",
        Error::FileUnreadable { .. } => "file_unreadable",
        Error::FileChanged { .. } => "file_changed",
        Error::NodeStalled { .. } => "stalled",
        Error::NotACapture { .. } => "not_a_pcap",
        _ => return None,
    })
}

/// What is known of a request once it is answered (its body may still be on its way).
#[derive(Debug)]
pub struct Answered {
    /// The request's method.
    pub method: Method,
    /// Its route template (`other` when no route matched).
    pub route: &'static str,
    /// A download's kind, counted in flight until its body ends.
    pub format: Option<&'static str>,
    /// The status answered.
    pub status: StatusCode,
    /// When the request arrived.
    pub started: Instant,
}

/// What the metrics and the last log line of a request need when its body ends.
#[derive(Debug)]
pub struct RequestEnd {
    metrics: Arc<Metrics>,
    span: tracing::Span,
    request: Answered,
    done: bool,
}

impl RequestEnd {
    /// Starts counting `request` (a download is in flight from now) for its end.
    pub fn new(metrics: Arc<Metrics>, span: tracing::Span, request: Answered) -> Self {
        if request.format.is_some() {
            metrics.downloads_in_flight.inc();
        }
        Self {
            metrics,
            span,
            request,
            done: false,
        }
    }

    fn record(&mut self, bytes: u64, whole: bool) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let seconds = self.request.started.elapsed().as_secs_f64();
        let m = &self.metrics;
        m.requests
            .get_or_create(&RequestLabels {
                route: self.request.route,
                method: self.request.method.as_str().to_owned(),
                code: self.request.status.as_u16(),
            })
            .inc();
        m.durations
            .get_or_create(&RouteLabel {
                route: self.request.route,
            })
            .observe(seconds);
        if let Some(format) = self.request.format {
            m.downloads_in_flight.dec();
            m.download_bytes
                .get_or_create(&FormatLabel { format })
                .inc_by(bytes);
        }
        self.span.in_scope(|| {
            tracing::info!(
                method = %self.request.method,
                route = self.request.route,
                status = self.request.status.as_u16(),
                bytes,
                duration_ms = (seconds * 1000.0 * 1000.0).round() / 1000.0,
                whole,
                "request finished"
            );
        });
    }
}

impl BodyEnd for RequestEnd {
    /// The response body ended (`whole`: it was sent to its end; otherwise it failed or the
    /// client left) after `bytes` bytes: counts it and writes the request's last line.
    fn finish(mut self: Box<Self>, bytes: u64, whole: bool) {
        self.record(bytes, whole);
    }
}

impl Drop for RequestEnd {
    fn drop(&mut self) {
        // A response dropped before its body was polled (the connection closed first).
        self.record(0, false);
    }
}
