//! Configuration from `PACKETCAPTURE_API_*` environment variables (figment), validated at start.
//!
//! Every variable of SPEC section 7 with its default; the original binary's names are accepted
//! as aliases (the canonical name wins when both are set). A bad value is an error naming the
//! variable; the binary exits 64 on it, never falling back silently.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use figment::Figment;
use figment::providers::Env;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use url::Url;

/// Where Voltron's CA is mounted in the manager's pod.
pub const DEFAULT_VOLTRON_CA: &str = "/manager-tls/cert";

/// The prefix of every variable.
pub const PREFIX: &str = "PACKETCAPTURE_API_";

/// `(canonical key, alias keys)`, keys as figment sees them: lower case, prefix removed.
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

/// A configuration error: which variable, what is wrong, what to do.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    /// The environment variable's full name.
    pub variable: String,
    /// What is wrong with its value.
    pub problem: String,
}

impl ConfigError {
    fn new(key: &str, problem: impl Into<String>) -> Self {
        Self {
            variable: variable_name(key),
            problem: problem.into(),
        }
    }
}

/// The name of the variable that set `key`: the alias, if only the alias is set.
pub(crate) fn variable_name(key: &str) -> String {
    let canonical = format!("{PREFIX}{}", key.to_ascii_uppercase());
    if std::env::var_os(&canonical).is_some() {
        return canonical;
    }
    ALIASES
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, aliases)| {
            aliases
                .iter()
                .map(|a| format!("{PREFIX}{}", a.to_ascii_uppercase()))
                .find(|a| std::env::var_os(a).is_some())
        })
        .unwrap_or(canonical)
}

/// Log verbosity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    Info,
    /// Problems only.
    Warn,
    /// Failures only.
    Error,
}

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

/// How the caller's token is reviewed when it is not a Dex token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthnReview {
    /// `authentication.k8s.io/v1` TokenReview.
    TokenReview,
    /// Calico's `projectcalico.org/v3` AuthenticationReview, sent with the caller's token.
    AuthenticationReview,
}

/// Where node files are read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchBackend {
    /// Exec in each node's entry pod.
    Exec,
    /// Local files under a root: `{root}/{node}/{directory}/{ns}/{name}`.
    Local(PathBuf),
}

/// Dex (OIDC) settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DexConfig {
    /// Verify Dex tokens in the service.
    pub enabled: bool,
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub client_id: String,
    /// JWKS location.
    pub jwk_url: Url,
    /// Username claim.
    pub user_claim: String,
    /// Groups claim.
    pub groups_claim: String,
    /// Username prefix (`-` for none; empty: see SPEC section 3).
    pub username_prefix: String,
    /// Prefix for each group.
    pub groups_prefix: String,
    /// CA bundle for the JWKS URL; system roots when `None`.
    pub ca_file: Option<PathBuf>,
}

/// Which pods give access to node files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPodConfig {
    /// Their namespace.
    pub namespace: String,
    /// Their label selector.
    pub selector: String,
    /// The container to exec in.
    pub container: String,
}

/// The whole configuration, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Listen address; `None` for all addresses.
    pub host: Option<IpAddr>,
    /// Listen port (0 picks a free one).
    pub port: u16,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// Server certificate chain (PEM).
    pub https_cert: PathBuf,
    /// Server key (PEM).
    pub https_key: PathBuf,
    /// Dex.
    pub dex: DexConfig,
    /// Voltron's CA (PEM).
    pub multi_cluster_forwarding_ca: PathBuf,
    /// True when the CA's variable was set (then an unusable CA stops the binary; the default
    /// path missing only disables managed clusters).
    pub multi_cluster_forwarding_ca_set: bool,
    /// Voltron's multi-cluster forwarding endpoint.
    pub multi_cluster_forwarding_endpoint: Url,
    /// Token review kind.
    pub authn_review: AuthnReview,
    /// Entry pods.
    pub entry_pod: EntryPodConfig,
    /// Node files backend.
    pub fetch_backend: FetchBackend,
}

/// The raw values, as strings, before validation.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct Raw {
    #[serde(deserialize_with = "text")]
    port: String,
    #[serde(deserialize_with = "text")]
    host: String,
    #[serde(deserialize_with = "text")]
    log_level: String,
    #[serde(deserialize_with = "text")]
    https_cert: String,
    #[serde(deserialize_with = "text")]
    https_key: String,
    #[serde(deserialize_with = "text")]
    dex_enabled: String,
    #[serde(deserialize_with = "text")]
    dex_issuer: String,
    #[serde(deserialize_with = "text")]
    dex_client_id: String,
    #[serde(deserialize_with = "text")]
    dex_jwk_url: String,
    #[serde(deserialize_with = "text")]
    dex_user_claim: String,
    #[serde(deserialize_with = "text")]
    dex_groups_claim: String,
    #[serde(deserialize_with = "text")]
    dex_username_prefix: String,
    #[serde(deserialize_with = "text")]
    dex_groups_prefix: String,
    #[serde(deserialize_with = "text")]
    dex_ca_file: String,
    #[serde(deserialize_with = "text")]
    multi_cluster_forwarding_ca: String,
    #[serde(deserialize_with = "text")]
    multi_cluster_forwarding_endpoint: String,
    #[serde(deserialize_with = "text")]
    authn_review: String,
    #[serde(deserialize_with = "text")]
    entry_pod_namespace: String,
    #[serde(deserialize_with = "text")]
    entry_pod_selector: String,
    #[serde(deserialize_with = "text")]
    entry_pod_container: String,
    #[serde(deserialize_with = "text")]
    fetch_backend: String,
    #[serde(deserialize_with = "text")]
    local_root: String,
}

impl Default for Raw {
    fn default() -> Self {
        Self {
            port: "8444".into(),
            host: String::new(),
            log_level: "Info".into(),
            https_cert: "/certs/https/tls.crt".into(),
            https_key: "/certs/https/tls.key".into(),
            dex_enabled: "false".into(),
            dex_issuer: "https://127.0.0.1:5556/dex".into(),
            dex_client_id: "tigera-manager".into(),
            dex_jwk_url: "https://tigera-dex.tigera-dex.svc.cluster.local:5556/dex/keys".into(),
            dex_user_claim: "email".into(),
            dex_groups_claim: String::new(),
            dex_username_prefix: String::new(),
            dex_groups_prefix: String::new(),
            dex_ca_file: String::new(),
            multi_cluster_forwarding_ca: String::new(),
            multi_cluster_forwarding_endpoint: "https://localhost:9443".into(),
            authn_review: "tokenreview".into(),
            entry_pod_namespace: "tigera-fluentd".into(),
            entry_pod_selector: "k8s-app=fluentd-node".into(),
            entry_pod_container: "fluentd".into(),
            fetch_backend: "exec".into(),
            local_root: String::new(),
        }
    }
}

/// Accepts any scalar as text: figment types `8444` as a number and `true` as a boolean.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Text;
    impl Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a single value")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_char<E: de::Error>(self, v: char) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(Text)
}

impl Config {
    /// Reads and validates the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_figment(figment())
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let raw: Raw = figment.extract().map_err(|e| {
            let key = e.path.first().cloned().unwrap_or_default();
            ConfigError::new(&key, format!("{} (set it to a single value)", e.kind))
        })?;
        raw.validate()
    }
}

/// The providers: aliases first, canonical names over them.
fn figment() -> Figment {
    Figment::new()
        .merge(Env::prefixed(PREFIX).filter_map(alias_of))
        .merge(Env::prefixed(PREFIX).filter(|k| !is_alias(k)))
}

fn alias_of(key: &figment::value::UncasedStr) -> Option<figment::value::Uncased<'_>> {
    ALIASES
        .iter()
        .find(|(_, aliases)| aliases.iter().any(|a| key == *a))
        .map(|(canonical, _)| (*canonical).into())
}

fn is_alias(key: &figment::value::UncasedStr) -> bool {
    ALIASES
        .iter()
        .any(|(_, aliases)| aliases.iter().any(|a| key == *a))
}

impl Raw {
    fn validate(self) -> Result<Config, ConfigError> {
        let port = self.port.trim().parse::<u16>().map_err(|_| {
            ConfigError::new(
                "port",
                format!("\"{}\" is not a port number (0 to 65535)", self.port),
            )
        })?;
        let host = match self.host.trim() {
            "" => None,
            "localhost" => Some(IpAddr::from([127, 0, 0, 1])),
            h => Some(h.parse().map_err(|_| {
                ConfigError::new(
                    "host",
                    format!(
                        "\"{h}\" is not an IP address; leave it empty to listen on all addresses"
                    ),
                )
            })?),
        };
        let log_level = match self.log_level.trim().to_ascii_lowercase().as_str() {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" | "warning" => LogLevel::Warn,
            "error" => LogLevel::Error,
            other => {
                return Err(ConfigError::new(
                    "log_level",
                    format!("\"{other}\" is not one of Trace, Debug, Info, Warn, Error"),
                ));
            }
        };
        let dex = DexConfig {
            enabled: boolean("dex_enabled", &self.dex_enabled)?,
            // Kept exactly as configured: `iss` is compared as a string.
            issuer: url("dex_issuer", &self.dex_issuer)
                .map(|_| self.dex_issuer.trim().to_owned())?,
            client_id: non_empty("dex_client_id", self.dex_client_id)?,
            jwk_url: url("dex_jwk_url", &self.dex_jwk_url)?,
            user_claim: non_empty("dex_user_claim", self.dex_user_claim)?,
            groups_claim: if self.dex_groups_claim.trim().is_empty() {
                "groups".into()
            } else {
                self.dex_groups_claim.trim().into()
            },
            username_prefix: self.dex_username_prefix,
            groups_prefix: self.dex_groups_prefix,
            ca_file: optional_path(&self.dex_ca_file),
        };
        let authn_review = match self.authn_review.trim().to_ascii_lowercase().as_str() {
            "tokenreview" => AuthnReview::TokenReview,
            "authenticationreview" => AuthnReview::AuthenticationReview,
            other => {
                return Err(ConfigError::new(
                    "authn_review",
                    format!("\"{other}\" is not one of tokenreview, authenticationreview"),
                ));
            }
        };
        let entry_pod = EntryPodConfig {
            namespace: dns_label("entry_pod_namespace", &self.entry_pod_namespace)?,
            selector: label_selector("entry_pod_selector", &self.entry_pod_selector)?,
            container: dns_label("entry_pod_container", &self.entry_pod_container)?,
        };
        let fetch_backend = match self.fetch_backend.trim().to_ascii_lowercase().as_str() {
            "exec" => FetchBackend::Exec,
            "local" => {
                let root = optional_path(&self.local_root).ok_or_else(|| {
                    ConfigError::new(
                        "local_root",
                        "must be set to an absolute directory when FETCH_BACKEND is local",
                    )
                })?;
                if !root.is_absolute() {
                    return Err(ConfigError::new(
                        "local_root",
                        format!("\"{}\" is not an absolute path", root.display()),
                    ));
                }
                FetchBackend::Local(root)
            }
            other => {
                return Err(ConfigError::new(
                    "fetch_backend",
                    format!("\"{other}\" is not one of exec, local"),
                ));
            }
        };
        Ok(Config {
            host,
            port,
            log_level,
            https_cert: path("https_cert", &self.https_cert)?,
            https_key: path("https_key", &self.https_key)?,
            dex,
            multi_cluster_forwarding_ca: optional_path(&self.multi_cluster_forwarding_ca)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_VOLTRON_CA)),
            multi_cluster_forwarding_ca_set: optional_path(&self.multi_cluster_forwarding_ca)
                .is_some(),
            multi_cluster_forwarding_endpoint: url(
                "multi_cluster_forwarding_endpoint",
                &self.multi_cluster_forwarding_endpoint,
            )?,
            authn_review,
            entry_pod,
            fetch_backend,
        })
    }
}

fn boolean(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        other => Err(ConfigError::new(
            key,
            format!("\"{other}\" is not a boolean (true or false)"),
        )),
    }
}

fn url(key: &str, value: &str) -> Result<Url, ConfigError> {
    let parsed = Url::parse(value.trim())
        .map_err(|e| ConfigError::new(key, format!("\"{value}\" is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host().is_none() {
        return Err(ConfigError::new(
            key,
            format!("\"{value}\" must be an http(s) URL with a host"),
        ));
    }
    Ok(parsed)
}

fn non_empty(key: &str, value: String) -> Result<String, ConfigError> {
    let v = value.trim();
    if v.is_empty() {
        Err(ConfigError::new(key, "must not be empty"))
    } else {
        Ok(v.to_owned())
    }
}

fn path(key: &str, value: &str) -> Result<PathBuf, ConfigError> {
    optional_path(value).ok_or_else(|| ConfigError::new(key, "must be a file path"))
}

fn optional_path(value: &str) -> Option<PathBuf> {
    let v = value.trim();
    (!v.is_empty()).then(|| PathBuf::from(v))
}

fn dns_label(key: &str, value: &str) -> Result<String, ConfigError> {
    let v = value.trim();
    if packetcapture_domain::is_dns1123_label(v) {
        Ok(v.to_owned())
    } else {
        Err(ConfigError::new(
            key,
            format!("\"{v}\" is not a DNS-1123 label"),
        ))
    }
}

/// Accepts equality-based selectors (`k=v`, `k==v`, `k!=v`, `k`, `!k`), comma-separated.
fn label_selector(key: &str, value: &str) -> Result<String, ConfigError> {
    let v = value.trim();
    let valid_part = |part: &str| {
        let part = part.trim();
        let (k, val) = if let Some((k, val)) = part.split_once("!=") {
            (k, Some(val))
        } else if let Some((k, val)) = part.split_once("==") {
            (k, Some(val))
        } else if let Some((k, val)) = part.split_once('=') {
            (k, Some(val))
        } else {
            (part.strip_prefix('!').unwrap_or(part), None)
        };
        let ok_key = !k.trim().is_empty()
            && k.trim()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        let ok_val = val.is_none_or(|v| {
            v.trim()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
        ok_key && ok_val
    };
    if !v.is_empty() && v.split(',').all(valid_part) {
        Ok(v.to_owned())
    } else {
        Err(ConfigError::new(
            key,
            format!("\"{v}\" is not a label selector such as k8s-app=fluentd-node"),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::result_large_err)] // figment::Jail closures return figment::Error.

    use figment::Jail;

    use super::*;

    fn load(jail: &mut Jail, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        jail.clear_env();
        for (k, v) in vars {
            jail.set_env(format!("{PREFIX}{k}"), v);
        }
        Config::from_env()
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
            assert_eq!(c.dex.issuer, "https://127.0.0.1:5556/dex");
            assert_eq!(c.dex.client_id, "tigera-manager");
            assert_eq!(c.dex.groups_claim, "groups");
            assert_eq!(
                c.multi_cluster_forwarding_endpoint.as_str(),
                "https://localhost:9443/"
            );
            assert_eq!(c.authn_review, AuthnReview::TokenReview);
            assert_eq!(c.entry_pod.selector, "k8s-app=fluentd-node");
            assert_eq!(c.fetch_backend, FetchBackend::Exec);
            assert_eq!(
                c.multi_cluster_forwarding_ca,
                PathBuf::from(DEFAULT_VOLTRON_CA)
            );
            assert!(
                !c.multi_cluster_forwarding_ca_set,
                "the default is not an explicit setting"
            );
            let c = load(jail, &[("MULTICLUSTERFORWARDINGCA", "/etc/voltron/ca.crt")]).unwrap();
            assert!(
                c.multi_cluster_forwarding_ca_set,
                "set through the original name"
            );
            assert_eq!(
                c.multi_cluster_forwarding_ca,
                PathBuf::from("/etc/voltron/ca.crt")
            );
            Ok(())
        });
    }

    #[test]
    fn a_bad_port_names_the_variable() {
        Jail::expect_with(|jail| {
            let e = load(jail, &[("PORT", "abc")]).unwrap_err();
            assert_eq!(e.variable, "PACKETCAPTURE_API_PORT");
            let e = load(jail, &[("PORT", "70000")]).unwrap_err();
            assert_eq!(e.variable, "PACKETCAPTURE_API_PORT");
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
            assert_eq!(c.dex.issuer, "https://dex.example/dex");
            assert_eq!(
                c.multi_cluster_forwarding_endpoint.host_str(),
                Some("voltron")
            );
            let c = load(
                jail,
                &[
                    ("OIDC_AUTH_ISSUER", "https://old/dex"),
                    ("DEX_ISSUER", "https://new/dex"),
                ],
            )
            .unwrap();
            assert_eq!(c.dex.issuer, "https://new/dex");
            let e = load(jail, &[("OIDC_AUTH_JWKSURL", "not a url")]).unwrap_err();
            assert_eq!(e.variable, "PACKETCAPTURE_API_OIDC_AUTH_JWKSURL");
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
                ("ENTRY_POD_CONTAINER", ""),
                ("FETCH_BACKEND", "ftp"),
            ] {
                let e = load(jail, &[(var, value)]).unwrap_err();
                assert_eq!(e.variable, format!("{PREFIX}{var}"), "{var}={value}: {e}");
            }
            let e = load(jail, &[("FETCH_BACKEND", "local")]).unwrap_err();
            assert_eq!(e.variable, "PACKETCAPTURE_API_LOCAL_ROOT");
            let c = load(
                jail,
                &[("FETCH_BACKEND", "Local"), ("LOCAL_ROOT", "/srv/nodes")],
            )
            .unwrap();
            assert_eq!(c.fetch_backend, FetchBackend::Local("/srv/nodes".into()));
            Ok(())
        });
    }
}
