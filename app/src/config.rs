//! Configuration from `PACKETCAPTURE_API_*` environment variables (figment), typed and checked
//! at start.
//!
//! One typed shape: [`Config`] holds each adapter's own configuration (`dex`, `entry_pod`,
//! `multi_cluster_forwarding`) and the service's settings, each field with its default in
//! place. Variables map to fields by name: `PACKETCAPTURE_API_LOG_LEVEL` is `log_level`,
//! `PACKETCAPTURE_API_DEX_ISSUER` is `dex.issuer` (a [`SECTIONS`] prefix names the section).
//! The original binary's names are accepted as aliases (the canonical name wins when both
//! are set). A variable set to the empty string counts as unset. A bad value, or a variable
//! this binary does not know, stops it naming the variable.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::str::FromStr;

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use packetcapture_dex::DexConfig;
use packetcapture_domain::{BudgetLimits, FetchOptions, SpoolLimits};
use packetcapture_kubernetes::EntryPodConfig;
use packetcapture_voltron::VoltronConfig;
use serde::Deserialize;
use smart_default::SmartDefault;

use crate::error::StartupError;

/// The prefix of every variable.
pub const PREFIX: &str = "PACKETCAPTURE_API_";

/// Sections: a key starting with `{section}_` is the field after it in that section.
pub const SECTIONS: &[&str] = &["dex", "entry_pod", "multi_cluster_forwarding"];

/// `(canonical key, alias keys)`, keys as the provider sees them: lower case, prefix removed.
const ALIASES: &[(&str, &[&str])] = &[
    ("dex_issuer", &["oidc_auth_issuer"]),
    ("dex_client_id", &["oidc_auth_client_id"]),
    ("dex_jwk_url", &["oidc_auth_jwksurl"]),
    ("dex_user_claim", &["oidc_auth_username_claim"]),
    ("dex_groups_claim", &["oidc_auth_groups_claim"]),
    ("dex_username_prefix", &["oidc_auth_username_prefix"]),
    ("dex_groups_prefix", &["oidc_auth_groups_prefix"]),
    ("multi_cluster_forwarding_ca", &["multiclusterforwardingca"]),
    (
        "multi_cluster_forwarding_endpoint",
        &["multiclusterforwardingendpoint"],
    ),
];

/// The whole configuration, typed. Every field's default is SPEC's.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, SmartDefault)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listen address: an IP or `localhost`; unset for all addresses.
    pub host: Option<ListenHost>,
    /// Listen port (0 picks a free one).
    #[default(8444)]
    pub port: u16,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// Log lines as text or as JSON objects.
    pub log_format: LogFormat,
    /// The plain-HTTP port serving `GET /metrics` (0 turns it off).
    #[default(9091)]
    pub metrics_port: u16,
    /// Server certificate chain (PEM).
    #[default("/certs/https/tls.crt")]
    pub https_cert: PathBuf,
    /// Server key (PEM).
    #[default("/certs/https/tls.key")]
    pub https_key: PathBuf,
    /// Dex (OIDC) token verification.
    pub dex: DexConfig,
    /// Voltron, for managed clusters.
    pub multi_cluster_forwarding: VoltronConfig,
    /// How tokens that are not Dex's are reviewed.
    pub authn_review: AuthnReview,
    /// The pods that reach node files.
    pub entry_pod: EntryPodConfig,
    /// Where node files are read from.
    pub fetch_backend: FetchBackend,
    /// The root of node files for the `local` backend: `{root}/{node}/{directory}/...`.
    pub local_root: Option<PathBuf>,
    /// Nodes a download reads at once.
    #[default(_code = "FetchOptions::DEFAULT_CONCURRENCY")]
    pub fetch_concurrency: NonZeroUsize,
    /// Where downloads spool what waits its turn (unlinked files); the system temp dir when
    /// unset.
    pub spool_dir: Option<PathBuf>,
    /// What one download may spool, in memory and files together.
    #[default(Size(bytesize::ByteSize::b(SpoolLimits::DEFAULT_TOTAL)))]
    pub spool_limit: Size,
    /// A node that sends nothing this long fails its download.
    #[default(Duration(FetchOptions::DEFAULT_IDLE_TIMEOUT))]
    pub node_idle_timeout: Duration,
    /// Node streams (execs) open at once, across requests; unset: as many as `memory_budget`
    /// holds, within the budget's default bounds.
    pub max_streams: Option<NonZeroUsize>,
    /// Memory held for downloads at once, across requests; unset: derived from the
    /// container's memory limit (cgroup `memory.max`).
    pub memory_budget: Option<Size>,
    /// Requests that may wait for node streams or memory at once (a quarter per user).
    #[default(BudgetLimits::DEFAULT_QUEUE)]
    pub max_queued: usize,
    /// How long a request waits for node streams or memory before it is refused (503).
    #[default(Duration(BudgetLimits::DEFAULT_WAIT))]
    pub queue_timeout: Duration,
    /// A connection whose request head is not complete this long after it was accepted (or
    /// after its previous response), or that has no request in flight this long, is closed.
    #[default(Duration(std::time::Duration::from_secs(30)))]
    pub header_timeout: Duration,
    /// Connections served at once (more wait in the listen backlog); unset: half the
    /// process's descriptor limit, at most 10,000.
    pub max_connections: Option<NonZeroUsize>,
    /// How long requests in flight may run once SIGTERM or SIGINT arrives; the rest are cut.
    #[default(Duration(std::time::Duration::from_secs(30)))]
    pub shutdown_grace: Duration,
    /// How often the serving certificate's files are checked for a change.
    #[default(Duration(std::time::Duration::from_secs(10)))]
    pub tls_reload_interval: Duration,
}

/// A duration: `30s`, `2m`, `1h 30m`, or a number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde_with::DeserializeFromStr)]
pub struct Duration(pub std::time::Duration);

impl FromStr for Duration {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if let Ok(seconds) = value.parse::<u64>() {
            return Ok(Self(std::time::Duration::from_secs(seconds)));
        }
        humantime::parse_duration(value)
            .map(Self)
            .map_err(|e| format!("\"{value}\" is not a duration such as 30s or 2m: {e}"))
    }
}

/// A size in bytes: `512MiB`, `2GiB`, `100MB`, or a number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde_with::DeserializeFromStr)]
pub struct Size(pub bytesize::ByteSize);

impl Size {
    /// In bytes.
    pub fn bytes(self) -> u64 {
        self.0.as_u64()
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let value = value.trim();
        value
            .parse::<bytesize::ByteSize>()
            .map(Self)
            .map_err(|e| format!("\"{value}\" is not a size such as 512MiB or 2GiB: {e}"))
    }
}

/// A listen address: an IP, or `localhost` for 127.0.0.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde_with::DeserializeFromStr)]
pub struct ListenHost(pub IpAddr);

impl FromStr for ListenHost {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value.trim() {
            "localhost" => Ok(Self(IpAddr::from([127, 0, 0, 1]))),
            h => h.parse().map(Self).map_err(|_| {
                format!("\"{h}\" is not an IP address; leave it unset to listen on all addresses")
            }),
        }
    }
}

/// Reads an enum case-insensitively from one of its spellings.
macro_rules! one_of {
    ($ty:ident { $($variant:ident => [$($text:literal),+]),+ $(,)? }) => {
        impl FromStr for $ty {
            type Err = String;

            fn from_str(value: &str) -> Result<Self, String> {
                match value.trim().to_ascii_lowercase().as_str() {
                    $($($text)|+ => Ok(Self::$variant),)+
                    other => Err(format!(
                        "\"{other}\" is not one of {}",
                        [$(stringify!($variant)),+].join(", ")
                    )),
                }
            }
        }
    };
}

/// Log verbosity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde_with::DeserializeFromStr)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    #[default]
    Info,
    /// Problems only.
    Warn,
    /// Failures only.
    Error,
}

one_of!(LogLevel {
    Trace => ["trace"],
    Debug => ["debug"],
    Info => ["info"],
    Warn => ["warn", "warning"],
    Error => ["error"],
});

impl LogLevel {
    /// As a tracing filter directive.
    pub fn as_filter(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde_with::DeserializeFromStr)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

one_of!(LogFormat {
    Text => ["text"],
    Json => ["json"],
});

/// How the caller's token is reviewed when it is not a Dex token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde_with::DeserializeFromStr)]
pub enum AuthnReview {
    /// `authentication.k8s.io/v1` TokenReview.
    #[default]
    TokenReview,
    /// Calico's `projectcalico.org/v3` AuthenticationReview, sent with the caller's token.
    AuthenticationReview,
}

one_of!(AuthnReview {
    TokenReview => ["tokenreview"],
    AuthenticationReview => ["authenticationreview"],
});

/// Where node files are read from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde_with::DeserializeFromStr)]
pub enum FetchBackend {
    /// Exec in each node's entry pod.
    #[default]
    Exec,
    /// Local files under `LOCAL_ROOT`: `{root}/{node}/{directory}/{ns}/{name}`.
    Local,
}

one_of!(FetchBackend {
    Exec => ["exec"],
    Local => ["local"],
});

impl Config {
    /// Reads and checks the process environment.
    pub fn from_env() -> Result<Self, StartupError> {
        let config: Self = Figment::from(Environment)
            .extract_lossy()
            .map_err(|e| setting_error(&e))?;
        config.check()?;
        Ok(config)
    }

    /// The rules that span several settings.
    fn check(&self) -> Result<(), StartupError> {
        if self.fetch_backend == FetchBackend::Local {
            match &self.local_root {
                None => {
                    return Err(StartupError::setting(
                        variable("local_root"),
                        "must be set to an absolute directory when FETCH_BACKEND is local",
                    ));
                }
                Some(root) if !root.is_absolute() => {
                    return Err(StartupError::setting(
                        variable("local_root"),
                        format!("\"{}\" is not an absolute path", root.display()),
                    ));
                }
                Some(_) => {}
            }
        }
        for (key, value) in [
            ("header_timeout", self.header_timeout),
            ("tls_reload_interval", self.tls_reload_interval),
            ("node_idle_timeout", self.node_idle_timeout),
        ] {
            if value.0.is_zero() {
                return Err(StartupError::setting(
                    variable(key),
                    "must be longer than zero",
                ));
            }
        }
        Ok(())
    }
}

/// The variable a figment error is about, and what is wrong, as a start-up error.
fn setting_error(e: &figment::Error) -> StartupError {
    use figment::error::Kind;
    let problem = match &e.kind {
        Kind::UnknownField(field, expected) => {
            // The path ends with the unknown field; its section is what comes before.
            let section = &e.path[..e.path.len().saturating_sub(1)];
            let closest = expected
                .iter()
                .map(|known| (strsim::jaro_winkler(field, known), *known))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, known)| {
                    let key: Vec<&str> =
                        section.iter().map(String::as_str).chain([known]).collect();
                    format!("; did you mean {}?", variable(&key.join("_")))
                })
                .unwrap_or_default();
            format!("this binary has no such setting{closest}")
        }
        other => other.to_string(),
    };
    StartupError::setting(variable(&e.path.join("_")), problem)
}

/// The full name of the variable that sets `key`: the alias, if only the alias is set.
pub fn variable(key: &str) -> String {
    let canonical = format!("{PREFIX}{}", key.to_ascii_uppercase());
    if set(&canonical) {
        return canonical;
    }
    ALIASES
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, aliases)| {
            aliases
                .iter()
                .map(|a| format!("{PREFIX}{}", a.to_ascii_uppercase()))
                .find(|a| set(a))
        })
        .unwrap_or(canonical)
}

fn set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// True for the variables Kubernetes injects for a Service named `packetcapture-api` in the
/// pod's namespace (`..._SERVICE_HOST`, `..._SERVICE_PORT[_NAME]`, `..._PORT=tcp://...`,
/// `..._PORT_443_TCP[_PROTO|_PORT|_ADDR]`): they are not settings, so they are left out.
fn is_service_link(key: &str, value: &str) -> bool {
    let protocol_url = ["tcp://", "udp://", "sctp://"]
        .iter()
        .any(|p| value.starts_with(p));
    let port_protocol = key.strip_prefix("PORT_").is_some_and(|rest| {
        let mut parts = rest.split('_');
        parts.next().is_some_and(|n| n.parse::<u16>().is_ok())
            && parts
                .next()
                .is_some_and(|p| ["TCP", "UDP", "SCTP"].contains(&p))
    });
    key == "SERVICE_HOST"
        || key == "SERVICE_PORT"
        || key.starts_with("SERVICE_PORT_")
        || (key == "PORT" && protocol_url)
        || port_protocol
}

/// The `PACKETCAPTURE_API_*` variables as figment data: keys lower-cased and nested by
/// [`SECTIONS`], aliases resolved, values kept as text (typed by `extract_lossy`), empty
/// values left out.
struct Environment;

impl Provider for Environment {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("{PREFIX}* environment variables"))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut canonical = Vec::new();
        let mut aliased = Vec::new();
        for (name, value) in std::env::vars_os() {
            let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
                continue;
            };
            let Some(key) = name.strip_prefix(PREFIX) else {
                continue;
            };
            if value.is_empty() || is_service_link(key, value) {
                continue;
            }
            let key = key.to_ascii_lowercase();
            match ALIASES
                .iter()
                .find(|(_, aliases)| aliases.contains(&key.as_str()))
            {
                Some((target, _)) => aliased.push(((*target).to_owned(), value.to_owned())),
                None => canonical.push((key, value.to_owned())),
            }
        }
        let mut dict = Dict::new();
        // Aliases first, so the canonical name wins.
        for (key, value) in aliased.into_iter().chain(canonical) {
            let value = Value::from(value);
            match SECTIONS.iter().find_map(|s| {
                key.strip_prefix(s)
                    .and_then(|rest| rest.strip_prefix('_'))
                    .map(|field| (*s, field))
            }) {
                Some((section, field)) => {
                    let entry = dict
                        .entry(section.to_owned())
                        .or_insert_with(|| Value::from(Dict::new()));
                    if let Value::Dict(_, fields) = entry {
                        fields.insert(field.to_owned(), value);
                    }
                }
                None => {
                    dict.insert(key, value);
                }
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::result_large_err)] // figment::Jail closures return figment::Error.

    use figment::Jail;
    use packetcapture_tls::HttpUrl;

    use super::*;

    /// The configuration read from `vars` (names without the prefix) alone.
    pub(crate) fn load(jail: &mut Jail, vars: &[(&str, &str)]) -> Result<Config, StartupError> {
        jail.clear_env();
        for (k, v) in vars {
            jail.set_env(format!("{PREFIX}{k}"), v);
        }
        Config::from_env()
    }

    /// The variable a start-up error names.
    pub(crate) fn variable_of(e: StartupError) -> String {
        e.variable().unwrap_or_default().to_owned()
    }

    #[test]
    fn defaults_match_the_spec() {
        Jail::expect_with(|jail| {
            let c = load(jail, &[]).unwrap();
            assert_eq!(c.port, 8444);
            assert_eq!(c.host, None);
            assert_eq!(c.log_level, LogLevel::Info);
            assert_eq!(c.https_cert, PathBuf::from("/certs/https/tls.crt"));
            assert!(!c.dex.enabled);
            assert_eq!(c.dex.issuer.as_str(), "https://127.0.0.1:5556/dex");
            assert_eq!(c.dex.client_id, "tigera-manager");
            assert_eq!(c.dex.groups_claim, "groups");
            assert_eq!(
                c.multi_cluster_forwarding.endpoint.as_str(),
                "https://localhost:9443/"
            );
            assert_eq!(c.authn_review, AuthnReview::TokenReview);
            assert_eq!(c.entry_pod.selector.as_str(), "k8s-app=fluentd-node");
            assert_eq!(c.fetch_backend, FetchBackend::Exec);
            assert_eq!(
                c.multi_cluster_forwarding.ca_path(),
                PathBuf::from("/manager-tls/cert")
            );
            assert_eq!(
                c.multi_cluster_forwarding.ca, None,
                "the default is not an explicit setting"
            );
            let c = load(jail, &[("MULTICLUSTERFORWARDINGCA", "/etc/voltron/ca.crt")]).unwrap();
            assert_eq!(
                c.multi_cluster_forwarding.ca,
                Some(PathBuf::from("/etc/voltron/ca.crt")),
                "set through the original name"
            );
            Ok(())
        });
    }

    #[test]
    fn a_bad_port_names_the_variable() {
        Jail::expect_with(|jail| {
            let e = load(jail, &[("PORT", "abc")]).unwrap_err();
            assert_eq!(variable_of(e), "PACKETCAPTURE_API_PORT");
            let e = load(jail, &[("PORT", "70000")]).unwrap_err();
            assert_eq!(variable_of(e), "PACKETCAPTURE_API_PORT");
            Ok(())
        });
    }

    #[test]
    fn values_are_read_case_insensitively_where_the_spec_says_so() {
        Jail::expect_with(|jail| {
            let c = load(
                jail,
                &[
                    ("LOG_LEVEL", "dEbUg"),
                    ("DEX_ENABLED", "False"),
                    ("PORT", "0"),
                ],
            )
            .unwrap();
            assert_eq!(c.log_level, LogLevel::Debug);
            assert!(!c.dex.enabled);
            assert_eq!(c.port, 0);
            let c = load(jail, &[("DEX_ENABLED", "TRUE"), ("DEX_CLIENT_ID", "12345")]).unwrap();
            assert!(c.dex.enabled);
            assert_eq!(c.dex.client_id, "12345");
            Ok(())
        });
    }

    #[test]
    fn the_original_names_are_aliases_and_the_canonical_name_wins() {
        Jail::expect_with(|jail| {
            let c = load(
                jail,
                &[
                    ("OIDC_AUTH_ISSUER", "https://dex.example/dex"),
                    ("MULTICLUSTERFORWARDINGENDPOINT", "https://voltron:9443"),
                ],
            )
            .unwrap();
            assert_eq!(c.dex.issuer.as_str(), "https://dex.example/dex");
            assert_eq!(
                c.multi_cluster_forwarding.endpoint,
                "https://voltron:9443".parse::<HttpUrl>().unwrap()
            );
            let c = load(
                jail,
                &[
                    ("OIDC_AUTH_ISSUER", "https://old/dex"),
                    ("DEX_ISSUER", "https://new/dex"),
                ],
            )
            .unwrap();
            assert_eq!(c.dex.issuer.as_str(), "https://new/dex");
            let e = load(jail, &[("OIDC_AUTH_JWKSURL", "not a url")]).unwrap_err();
            assert_eq!(variable_of(e), "PACKETCAPTURE_API_OIDC_AUTH_JWKSURL");
            Ok(())
        });
    }

    #[test]
    fn every_kind_of_bad_value_is_refused_with_its_variable() {
        Jail::expect_with(|jail| {
            for (var, value) in [
                ("HOST", "not-an-ip"),
                ("LOG_LEVEL", "loud"),
                ("DEX_ENABLED", "maybe"),
                ("DEX_JWK_URL", "ftp://x/keys"),
                ("MULTI_CLUSTER_FORWARDING_ENDPOINT", "localhost:9443"),
                ("AUTHN_REVIEW", "magic"),
                ("ENTRY_POD_NAMESPACE", "Bad_NS"),
                ("ENTRY_POD_SELECTOR", "k8s-app in (a b)"),
                ("ENTRY_POD_CONTAINER", "Bad_Container"),
                ("FETCH_BACKEND", "ftp"),
            ] {
                let e = load(jail, &[(var, value)]).unwrap_err();
                assert_eq!(
                    e.variable(),
                    Some(format!("{PREFIX}{var}").as_str()),
                    "{var}={value}: {e}"
                );
                assert_eq!(e.exit_code(), 64);
            }
            let e = load(jail, &[("FETCH_BACKEND", "local")]).unwrap_err();
            assert_eq!(variable_of(e), "PACKETCAPTURE_API_LOCAL_ROOT");
            let c = load(
                jail,
                &[("FETCH_BACKEND", "Local"), ("LOCAL_ROOT", "/srv/nodes")],
            )
            .unwrap();
            assert_eq!(
                (c.fetch_backend, c.local_root),
                (FetchBackend::Local, Some("/srv/nodes".into()))
            );
            Ok(())
        });
    }

    #[test]
    fn durations_and_sizes_read_as_people_write_them() {
        Jail::expect_with(|jail| {
            let c = load(
                jail,
                &[
                    ("NODE_IDLE_TIMEOUT", "2m"),
                    ("SPOOL_LIMIT", "512MiB"),
                    ("FETCH_CONCURRENCY", "4"),
                ],
            )
            .unwrap();
            assert_eq!(c.node_idle_timeout.0, std::time::Duration::from_secs(120));
            assert_eq!(c.spool_limit.bytes(), 512 << 20);
            assert_eq!(c.fetch_concurrency.get(), 4);
            let c = load(
                jail,
                &[("NODE_IDLE_TIMEOUT", "45"), ("SPOOL_LIMIT", "1000")],
            )
            .unwrap();
            assert_eq!(c.node_idle_timeout.0, std::time::Duration::from_secs(45));
            assert_eq!(c.spool_limit.bytes(), 1000);
            for (var, value) in [
                ("NODE_IDLE_TIMEOUT", "soon"),
                ("SPOOL_LIMIT", "lots"),
                ("FETCH_CONCURRENCY", "0"),
            ] {
                let e = load(jail, &[(var, value)]).unwrap_err();
                assert_eq!(variable_of(e), format!("{PREFIX}{var}"), "{var}={value}");
            }
            Ok(())
        });
    }

    #[test]
    fn an_empty_value_counts_as_unset() {
        Jail::expect_with(|jail| {
            let c = load(
                jail,
                &[
                    ("PORT", ""),
                    ("ENTRY_POD_CONTAINER", ""),
                    ("DEX_ENABLED", ""),
                ],
            )
            .unwrap();
            assert_eq!(c, Config::default());
            Ok(())
        });
    }

    #[test]
    fn kubernetes_service_links_are_not_settings() {
        Jail::expect_with(|jail| {
            let c = load(
                jail,
                &[
                    ("SERVICE_HOST", "10.96.0.7"),
                    ("SERVICE_PORT", "443"),
                    ("SERVICE_PORT_HTTPS", "443"),
                    ("PORT", "tcp://10.96.0.7:443"),
                    ("PORT_443_TCP", "tcp://10.96.0.7:443"),
                    ("PORT_443_TCP_PROTO", "tcp"),
                    ("PORT_443_TCP_PORT", "443"),
                    ("PORT_443_TCP_ADDR", "10.96.0.7"),
                ],
            )
            .unwrap();
            assert_eq!(c.port, 8444, "a service link is not the listen port");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_variable_stops_the_binary_naming_the_closest_known_one() {
        Jail::expect_with(|jail| {
            let e = load(jail, &[("LOG_LEVLE", "Debug")]).unwrap_err();
            assert_eq!(variable_of(e), "PACKETCAPTURE_API_LOG_LEVLE");
            let e = load(jail, &[("LOG_LEVLE", "Debug")]).unwrap_err();
            assert!(
                e.to_string()
                    .contains("did you mean PACKETCAPTURE_API_LOG_LEVEL?"),
                "{e}"
            );
            let e = load(jail, &[("DEX_ISUER", "https://x")]).unwrap_err();
            assert!(
                e.to_string()
                    .contains("did you mean PACKETCAPTURE_API_DEX_ISSUER?"),
                "{e}"
            );
            let e = load(jail, &[("COMPLETELY_DIFFERENT", "1")]).unwrap_err();
            assert!(!e.to_string().contains("did you mean"), "{e}");
            Ok(())
        });
    }
}
