//! Builds the use cases from configuration: the one place that chooses and wires adapters.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use packetcapture_dex::{DexAuthenticator, DexConfig, IssuerRouted};
use packetcapture_domain::cache::{CachedAuthenticator, CachedAuthorizer};
use packetcapture_domain::{
    Authenticator, Backend, CaptureService, ClusterPorts, ClusterRouter, ClusterTarget, Error,
    FileFetcher, Result,
};
use packetcapture_fluentd_exec::ExecFetcher;
use packetcapture_kubernetes::{
    AuthenticationReviewAuthenticator, ClusterClient, EntryPodConfig, EntryPods,
    PacketCaptureLocator, SubjectAccessReviewAuthorizer, TokenReviewAuthenticator,
};
use packetcapture_local_fs::LocalFetcher;
use packetcapture_voltron::{PortsFactory, VoltronRouter};

use crate::config::{AuthnReview, Config, FetchBackend, PREFIX};

/// How long a successful authentication is reused.
pub const AUTHN_TTL: Duration = Duration::from_secs(10);
/// How long an "allowed" decision is reused.
pub const ALLOWED_TTL: Duration = Duration::from_secs(10);
/// How long a "denied" decision is reused.
pub const DENIED_TTL: Duration = Duration::from_secs(5);

/// Why the service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    /// A setting cannot be used; the binary exits 64.
    #[error("{variable}: {problem}")]
    Config {
        /// The variable to fix.
        variable: String,
        /// What is wrong.
        problem: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// Builds the service against the local cluster (and Voltron for managed clusters).
pub async fn build(config: &Config) -> std::result::Result<CaptureService, WiringError> {
    let kube_config = kube::Config::infer()
        .await
        .map_err(|e| WiringError::Config {
            variable: "KUBECONFIG".into(),
            problem: "no usable kubeconfig and no in-cluster service account".into(),
            source: Some(Box::new(e)),
        })?;
    let local = ClusterClient::from_config(kube_config.clone(), "cluster", false).map_err(|e| {
        WiringError::Config {
            variable: "KUBECONFIG".into(),
            problem: "the local cluster's client could not be built".into(),
            source: Some(Box::new(e)),
        }
    })?;
    let reviewer: Arc<dyn Authenticator> = match config.authn_review {
        AuthnReview::TokenReview => Arc::new(TokenReviewAuthenticator::new(local.clone())),
        AuthnReview::AuthenticationReview => {
            Arc::new(AuthenticationReviewAuthenticator::new(local.clone()))
        }
    };
    let reviewer = if config.dex.enabled {
        let d = &config.dex;
        let dex = DexAuthenticator::new(DexConfig {
            issuer: d.issuer.clone(),
            client_id: d.client_id.clone(),
            jwks_url: d.jwk_url.to_string(),
            username_claim: d.user_claim.clone(),
            groups_claim: d.groups_claim.clone(),
            username_prefix: d.username_prefix.clone(),
            groups_prefix: d.groups_prefix.clone(),
            ca_file: d.ca_file.clone(),
        })
        .map_err(|e| WiringError::Config {
            variable: format!("{PREFIX}DEX_CA_FILE"),
            problem: "Dex's JWKS client cannot be set up".into(),
            source: Some(Box::new(e)),
        })?;
        Arc::new(IssuerRouted::new(Arc::new(dex), reviewer)) as Arc<dyn Authenticator>
    } else {
        reviewer
    };
    let authenticator = Arc::new(CachedAuthenticator::new(reviewer, AUTHN_TTL));
    let factory = ports_factory(config);
    let local_ports = factory(local.clone());
    let ca = &config.multi_cluster_forwarding_ca;
    let router: Arc<dyn ClusterRouter> = match VoltronRouter::new(
        local_ports.clone(),
        local,
        &kube_config,
        config.multi_cluster_forwarding_endpoint.as_str(),
        ca,
        factory,
    ) {
        Ok(router) => Arc::new(router),
        Err(e) if config.multi_cluster_forwarding_ca_set => {
            return Err(WiringError::Config {
                variable: crate::config::variable_name("multi_cluster_forwarding_ca"),
                problem: "Voltron's CA cannot be used".into(),
                source: Some(Box::new(e)),
            });
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
    Ok(CaptureService::new(authenticator, router))
}

/// Builds one cluster's ports from its client, per configuration.
fn ports_factory(config: &Config) -> PortsFactory {
    let entry = EntryPodConfig {
        namespace: config.entry_pod.namespace.clone(),
        selector: config.entry_pod.selector.clone(),
        container: config.entry_pod.container.clone(),
    };
    let backend = config.fetch_backend.clone();
    Arc::new(move |client: ClusterClient| {
        let fetcher: Arc<dyn FileFetcher> = match &backend {
            FetchBackend::Exec => Arc::new(ExecFetcher::new(EntryPods::new(
                client.clone(),
                entry.clone(),
            ))),
            FetchBackend::Local(root) => Arc::new(LocalFetcher::new(root.clone())),
        };
        ClusterPorts {
            authorizer: Arc::new(CachedAuthorizer::new(
                Arc::new(SubjectAccessReviewAuthorizer::new(client.clone())),
                ALLOWED_TTL,
                DENIED_TTL,
            )),
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
