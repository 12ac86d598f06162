//! Builds the use cases from configuration: the one place that chooses and wires adapters.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use packetcapture_dex::{DexAuthenticator, IssuerRouted};
use packetcapture_domain::cache::{CachedAuthenticator, CachedAuthorizer};
use packetcapture_domain::{
    Authenticator, Backend, Budget, BudgetLimits, CaptureService, ClusterPorts, ClusterRouter,
    ClusterTarget, Engine, Error, FetchOptions, FileFetcher, Result, SpoolLimits,
};
use packetcapture_fluentd_exec::ExecFetcher;
use packetcapture_kubernetes::{
    AuthenticationReviewAuthenticator, ClusterClient, EntryPods, PacketCaptureLocator,
    SubjectAccessReviewAuthorizer, TokenReviewAuthenticator,
};
use packetcapture_local_fs::{LocalFetcher, TempSpool};
use packetcapture_voltron::{PortsFactory, VoltronRouter};

use crate::config::{AuthnReview, Config, FetchBackend, variable};
use crate::error::StartupError;
use crate::observe::Metrics;

/// How long a successful authentication is reused.
pub const AUTHN_TTL: Duration = Duration::from_secs(10);
/// How long an "allowed" decision is reused.
pub const ALLOWED_TTL: Duration = Duration::from_secs(10);
/// How long a "denied" decision is reused.
pub const DENIED_TTL: Duration = Duration::from_secs(5);

/// Builds the service against the local cluster (and Voltron for managed clusters).
pub async fn build(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> std::result::Result<CaptureService, StartupError> {
    let kubeconfig = || {
        StartupError::setting(
            "KUBECONFIG",
            "no usable kubeconfig and no in-cluster service account",
        )
    };
    let kube_config = kube::Config::infer()
        .await
        .map_err(|e| kubeconfig().because(e))?;
    let local = ClusterClient::from_config(kube_config.clone(), ClusterTarget::LOCAL_ALIAS, false)
        .map_err(|e| kubeconfig().because(e))?;
    let reviewer: Arc<dyn Authenticator> = match config.authn_review {
        AuthnReview::TokenReview => Arc::new(TokenReviewAuthenticator::new(local.clone())),
        AuthnReview::AuthenticationReview => {
            Arc::new(AuthenticationReviewAuthenticator::new(local.clone()))
        }
    };
    let reviewer = if config.dex.enabled {
        let dex = DexAuthenticator::new(config.dex.clone()).map_err(|e| {
            StartupError::setting(
                variable("dex_ca_file"),
                "Dex's JWKS client cannot be set up",
            )
            .because(e)
        })?;
        Arc::new(IssuerRouted::new(Arc::new(dex), reviewer)) as Arc<dyn Authenticator>
    } else {
        reviewer
    };
    let authenticator = Arc::new(
        CachedAuthenticator::new(reviewer, AUTHN_TTL)
            .observed(metrics.cache_observer("authentication")),
    );
    let factory = ports_factory(config, metrics);
    let local_ports = factory(local.clone());
    let voltron = &config.multi_cluster_forwarding;
    let router: Arc<dyn ClusterRouter> = match VoltronRouter::new(
        local_ports.clone(),
        local,
        &kube_config,
        voltron,
        factory,
    ) {
        Ok(router) => Arc::new(router),
        Err(e) if voltron.ca.is_some() => {
            return Err(StartupError::setting(
                variable("multi_cluster_forwarding_ca"),
                "Voltron's CA cannot be used",
            )
            .because(e));
        }
        Err(e) => {
            let reason = packetcapture_domain::error::chain(&e);
            tracing::warn!(error = %reason, "managed clusters cannot be reached; serving the local cluster only");
            Arc::new(LocalOnly {
                local: local_ports,
                reason,
            })
        }
    };
    let engine = engine(config)?;
    metrics.watch_budget(engine.budget.clone());
    Ok(CaptureService::new(authenticator, router)
        .with_engine(engine)
        .with_filters(Arc::new(packetcapture_libpcap::Libpcap)))
}

/// How downloads read nodes and spool, from the settings; the spool directory is checked now.
fn engine(config: &Config) -> std::result::Result<Engine, StartupError> {
    let spool = TempSpool::new(config.spool_dir.clone());
    spool.check().map_err(|e| {
        StartupError::setting(
            variable("spool_dir"),
            format!("cannot create spool files in {}", spool.dir().display()),
        )
        .because(e)
    })?;
    Ok(Engine {
        budget: Arc::new(Budget::new(budget_limits(config))),
        fetch: FetchOptions {
            concurrency: config.fetch_concurrency,
            idle_timeout: config.node_idle_timeout.0,
        },
        spool: SpoolLimits {
            total: config.spool_limit.bytes(),
            ..SpoolLimits::default()
        },
        storage: Arc::new(spool),
        stats: Arc::default(),
        digests: Arc::default(),
        listings: Arc::default(),
    })
}

/// The process's budget: the settings, and for what is unset the defaults derived from the
/// container's memory limit.
pub fn budget_limits(config: &Config) -> BudgetLimits {
    let container = container_memory_limit();
    let mut limits = BudgetLimits::for_memory_limit(container);
    if let Some(memory) = config.memory_budget {
        limits = BudgetLimits::for_memory_limit(Some(
            memory.bytes().saturating_mul(4) / 3 + BudgetLimits::PROCESS_BASE,
        ));
        limits.memory = memory.bytes();
    }
    if let Some(streams) = config.max_streams {
        limits.streams = streams;
    }
    limits.queue = config.max_queued;
    limits.wait = config.queue_timeout.0;
    tracing::info!(
        container_memory_limit = ?container,
        streams = limits.streams.get(),
        memory_mib = limits.memory / (1024 * 1024),
        queue = limits.queue,
        wait = ?limits.wait,
        "budget for downloads"
    );
    limits
}

/// The container's memory limit: cgroup v2's `memory.max`, or v1's
/// `memory.limit_in_bytes`; `None` when there is none (or it is not readable).
fn container_memory_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok())
    .and_then(|text| text.trim().parse::<u64>().ok())
    // v1 reports "no limit" as a number near 2^63.
    .filter(|bytes| *bytes < 1 << 60)
}

/// Builds one cluster's ports from its client, per configuration.
fn ports_factory(config: &Config, metrics: &Arc<Metrics>) -> PortsFactory {
    let entry = config.entry_pod.clone();
    // One observer for every cluster's authorization cache.
    let observer = metrics.cache_observer("authorization");
    let backend = config.fetch_backend;
    let root = config.local_root.clone().unwrap_or_default();
    Arc::new(move |client: ClusterClient| {
        let fetcher: Arc<dyn FileFetcher> = match backend {
            FetchBackend::Exec => Arc::new(ExecFetcher::new(EntryPods::new(
                client.clone(),
                entry.clone(),
            ))),
            FetchBackend::Local => Arc::new(LocalFetcher::new(root.clone())),
        };
        ClusterPorts {
            authorizer: Arc::new(
                CachedAuthorizer::new(
                    Arc::new(SubjectAccessReviewAuthorizer::new(client.clone())),
                    ALLOWED_TTL,
                    DENIED_TTL,
                )
                .observed(observer.clone()),
            ),
            locator: Arc::new(PacketCaptureLocator::new(client)),
            fetcher,
        }
    })
}

/// The router when Voltron cannot be used: managed clusters are unavailable, with the reason.
struct LocalOnly {
    local: ClusterPorts,
    reason: String,
}

#[async_trait]
impl ClusterRouter for LocalOnly {
    async fn route(&self, target: &ClusterTarget) -> Result<ClusterPorts> {
        match target {
            ClusterTarget::Local => Ok(self.local.clone()),
            ClusterTarget::Managed(id) => Err(Error::unavailable(
                Backend::Voltron,
                format!("route to managed cluster {id}"),
                self.reason.clone(),
            )),
        }
    }
}
