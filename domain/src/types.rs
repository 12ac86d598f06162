//! Validated domain values: names, identities, capture status, files; hostile input stops here.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::Error;

/// Checks a DNS-1123 label: 1 to 63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Checks a DNS-1123 subdomain: at most 253 characters, dot-separated DNS-1123 labels.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

macro_rules! validated_name {
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:path, $rule:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `value`; the error names what was wrong.
            pub fn new(value: &str) -> Result<Self, Error> {
                if $check(value) {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(Error::InvalidName { what: $what, value: printable(value), rule: $rule })
                }
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_name!(
    /// A Kubernetes namespace name (DNS-1123 label).
    Namespace, "namespace", is_dns1123_label, "a DNS-1123 label"
);
validated_name!(
    /// A PacketCapture name (DNS-1123 subdomain).
    CaptureName, "capture name", is_dns1123_subdomain, "a DNS-1123 subdomain"
);
validated_name!(
    /// A managed cluster id as sent in `X-Cluster-ID` (DNS-1123 subdomain).
    ClusterId, "cluster id", is_dns1123_subdomain, "a DNS-1123 subdomain"
);
validated_name!(
    /// A node's host name, as written in a capture's status (DNS-1123 subdomain).
    NodeName, "node name", is_dns1123_subdomain, "a DNS-1123 subdomain"
);

/// Renders hostile input safely for messages: control characters escaped, length capped.
pub fn printable(value: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = value
        .chars()
        .take(MAX)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// Which cluster a request addresses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClusterTarget {
    /// The cluster the service runs in (standalone or management).
    Local,
    /// A managed cluster reached through Voltron.
    Managed(ClusterId),
}

impl ClusterTarget {
    /// The id the Calico components give the management cluster itself.
    pub const LOCAL_ALIAS: &'static str = "cluster";

    /// Reads an `X-Cluster-ID` value: absent, empty or `cluster` is the local cluster.
    pub fn from_header(value: Option<&str>) -> Result<Self, Error> {
        match value.map(str::trim) {
            None | Some("") | Some(Self::LOCAL_ALIAS) => Ok(Self::Local),
            Some(id) => ClusterId::new(id).map(Self::Managed),
        }
    }

    /// The name shown to users: the managed cluster's id, or `cluster` for the local one.
    pub fn name(&self) -> &str {
        match self {
            Self::Local => Self::LOCAL_ALIAS,
            Self::Managed(id) => id.as_str(),
        }
    }
}

impl fmt::Display for ClusterTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A bearer token. Its `Debug` never shows the secret, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BearerToken(String);

impl BearerToken {
    /// Wraps a token; empty or non-visible-ASCII tokens are refused.
    pub fn new(token: &str) -> Result<Self, Error> {
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(token.to_owned()))
        } else {
            Err(Error::Unauthenticated {
                reason: "the bearer token is empty or malformed".into(),
            })
        }
    }

    /// The secret itself, for adapters that must send it on.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// An authenticated (or impersonated) user, as Kubernetes knows users.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct User {
    /// The user name, e.g. `jane@example.com` or `system:serviceaccount:ns:sa`.
    pub name: String,
    /// The uid, empty when unknown.
    pub uid: String,
    /// Group memberships.
    pub groups: Vec<String>,
    /// Extra attributes, keyed by lower-case key.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// A user with a name only.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }
}

/// What the `Impersonate-*` headers asked for; empty when none were sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Impersonation {
    /// `Impersonate-User`.
    pub user: Option<String>,
    /// Each `Impersonate-Group`.
    pub groups: Vec<String>,
    /// Each `Impersonate-Extra-{key}`, key lower-cased and percent-decoded.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Impersonation {
    /// True when no impersonation header was sent.
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.groups.is_empty() && self.extra.is_empty()
    }
}

/// A verb checked by a SubjectAccessReview.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// Read files (download, listing).
    Get,
    /// Remove files.
    Delete,
    /// Act as another user, group or extra.
    Impersonate,
}

impl Verb {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Delete => "delete",
            Self::Impersonate => "impersonate",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `resourceAttributes` of a SubjectAccessReview.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceAttributes {
    /// The verb.
    pub verb: Verb,
    /// API group, empty for the core group.
    pub group: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource, empty for none.
    pub subresource: String,
    /// Namespace, empty for cluster-scoped checks.
    pub namespace: String,
    /// Object name, empty for all.
    pub name: String,
}

impl ResourceAttributes {
    /// `{verb} packetcaptures/files` on one capture.
    pub fn capture_files(verb: Verb, capture: &CaptureRef) -> Self {
        Self {
            verb,
            group: "projectcalico.org".into(),
            resource: "packetcaptures".into(),
            subresource: "files".into(),
            namespace: capture.namespace.to_string(),
            name: capture.name.to_string(),
        }
    }

    /// The impersonation checks Kubernetes makes for a user name.
    pub fn impersonate_user(name: &str) -> Self {
        let base = Self {
            verb: Verb::Impersonate,
            group: String::new(),
            resource: "users".into(),
            subresource: String::new(),
            namespace: String::new(),
            name: name.into(),
        };
        match name
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
        {
            Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() => Self {
                resource: "serviceaccounts".into(),
                namespace: ns.into(),
                name: sa.into(),
                ..base
            },
            _ => base,
        }
    }

    /// Impersonating a group.
    pub fn impersonate_group(group: &str) -> Self {
        Self {
            resource: "groups".into(),
            ..Self::impersonate_user_base(group)
        }
    }

    /// Impersonating an extra value under `key`.
    pub fn impersonate_extra(key: &str, value: &str) -> Self {
        Self {
            group: "authentication.k8s.io".into(),
            resource: "userextras".into(),
            subresource: key.into(),
            ..Self::impersonate_user_base(value)
        }
    }

    fn impersonate_user_base(name: &str) -> Self {
        Self {
            verb: Verb::Impersonate,
            group: String::new(),
            resource: "users".into(),
            subresource: String::new(),
            namespace: String::new(),
            name: name.into(),
        }
    }
}

/// Names one PacketCapture.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CaptureRef {
    /// Its namespace.
    pub namespace: Namespace,
    /// Its name.
    pub name: CaptureName,
}

impl CaptureRef {
    /// Validates both parts.
    pub fn parse(namespace: &str, name: &str) -> Result<Self, Error> {
        Ok(Self {
            namespace: Namespace::new(namespace)?,
            name: CaptureName::new(name)?,
        })
    }
}

impl fmt::Display for CaptureRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `status.files[].state` of a PacketCapture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaptureState {
    /// Writing packets.
    Capturing,
    /// Done; files are complete.
    Finished,
    /// Waiting for its start time.
    Scheduled,
    /// Failed on the node.
    Error,
    /// Started, no packet seen yet.
    WaitingForTraffic,
    /// A value this service does not know (kept, printable, for messages).
    Other(String),
}

impl CaptureState {
    /// Reads the status field's text.
    pub fn parse(value: &str) -> Self {
        match value {
            "Capturing" => Self::Capturing,
            "Finished" => Self::Finished,
            "Scheduled" => Self::Scheduled,
            "Error" => Self::Error,
            "WaitingForTraffic" => Self::WaitingForTraffic,
            other => Self::Other(printable(other)),
        }
    }

    /// The status spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Capturing => "Capturing",
            Self::Finished => "Finished",
            Self::Scheduled => "Scheduled",
            Self::Error => "Error",
            Self::WaitingForTraffic => "WaitingForTraffic",
            Self::Other(s) => s,
        }
    }
}

/// One `status.files[]` entry: what a node reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFiles {
    /// The node's name, as written by the node (validated when used).
    pub node: String,
    /// Directory holding `{ns}/{name}/` on the node.
    pub directory: String,
    /// File names the node reported.
    pub file_names: Vec<String>,
    /// Capture state on that node, if reported.
    pub state: Option<CaptureState>,
}

/// A PacketCapture as far as this service cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    /// Which capture.
    pub reference: CaptureRef,
    /// `metadata.resourceVersion`, for optimistic concurrency on status updates.
    pub resource_version: String,
    /// `status.files`, in order.
    pub files: Vec<NodeFiles>,
}

/// Where a capture's files live on one node: `{directory}/{ns}/{name}`, validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CaptureDir {
    node: NodeName,
    path: String,
}

impl CaptureDir {
    /// Validates the node name and the status' directory (absolute, no `.`/`..`, no control
    /// characters) and joins `{ns}/{name}` to it.
    pub fn new(node: &str, directory: &str, capture: &CaptureRef) -> Result<Self, Error> {
        let node = NodeName::new(node).map_err(|_| Error::InvalidStatus {
            capture: capture.to_string(),
            reason: format!(
                "node name \"{}\" is not a DNS-1123 subdomain",
                printable(node)
            ),
        })?;
        let bad = |why: &str| Error::InvalidStatus {
            capture: capture.to_string(),
            reason: format!(
                "directory \"{}\" of node {node} {why}",
                printable(directory)
            ),
        };
        if !directory.starts_with('/') {
            return Err(bad("is not an absolute path"));
        }
        if directory.chars().any(char::is_control) {
            return Err(bad("contains control characters"));
        }
        if directory.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(bad("contains . or .. segments"));
        }
        let mut path = String::with_capacity(directory.len() + 64);
        let segments = directory.split('/').filter(|s| !s.is_empty());
        for segment in segments.chain([capture.namespace.as_str(), capture.name.as_str()]) {
            path.push('/');
            path.push_str(segment);
        }
        Ok(Self { node, path })
    }

    /// The node.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// The absolute path of the capture's directory on the node.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// One file as it is on a node now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// Base name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub modified: i64,
}

/// How an adapter reaches a node's files: the node and, for exec, the entry pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EntryPoint {
    /// The node.
    pub node: NodeName,
    /// The backend's handle for it (entry pod name for exec, the node for local files).
    pub handle: String,
}

/// Compression of zip entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// No compression (pcap rarely compresses well and Stored is several times faster).
    #[default]
    Stored,
    /// Deflate, for slow links.
    Deflate,
}

impl Compression {
    /// Reads the `compression` query value.
    pub fn parse(value: &str) -> Result<Self, Error> {
        match value.to_ascii_lowercase().as_str() {
            "stored" | "none" => Ok(Self::Stored),
            "deflate" => Ok(Self::Deflate),
            _ => Err(Error::InvalidName {
                what: "compression",
                value: printable(value),
                rule: "one of stored, deflate",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture() -> CaptureRef {
        CaptureRef::parse("dev", "cap-1").unwrap()
    }

    #[test]
    fn dns_names_follow_kubernetes_rules() {
        assert!(is_dns1123_label("a-1"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label("A"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain(".."));
        assert!(!is_dns1123_subdomain("a/b"));
        assert!(!is_dns1123_subdomain(&"a.".repeat(127)));
    }

    #[test]
    fn cluster_header_local_aliases_and_validation() {
        assert_eq!(
            ClusterTarget::from_header(None).unwrap(),
            ClusterTarget::Local
        );
        assert_eq!(
            ClusterTarget::from_header(Some("")).unwrap(),
            ClusterTarget::Local
        );
        assert_eq!(
            ClusterTarget::from_header(Some("cluster")).unwrap(),
            ClusterTarget::Local
        );
        assert_eq!(
            ClusterTarget::from_header(Some("east-1")).unwrap(),
            ClusterTarget::Managed(ClusterId::new("east-1").unwrap())
        );
        assert!(ClusterTarget::from_header(Some("a/b")).is_err());
        assert!(ClusterTarget::from_header(Some("a\nb")).is_err());
        assert!(ClusterTarget::from_header(Some(&"a".repeat(300))).is_err());
    }

    #[test]
    fn token_debug_never_shows_the_secret() {
        let t = BearerToken::new("s3cr3t").unwrap();
        assert!(!format!("{t:?}").contains("s3cr3t"));
        assert!(BearerToken::new("").is_err());
        assert!(BearerToken::new("a b").is_err());
    }

    #[test]
    fn capture_dir_joins_and_refuses_hostile_directories() {
        let d = CaptureDir::new("node-1", "/var/log/calico/pcap/", &capture()).unwrap();
        assert_eq!(d.path(), "/var/log/calico/pcap/dev/cap-1");
        let d = CaptureDir::new("node-1", "/", &capture()).unwrap();
        assert_eq!(d.path(), "/dev/cap-1");
        for bad in ["relative/dir", "/var/../etc", "/var/./x", "/var/\n", ""] {
            assert!(
                CaptureDir::new("node-1", bad, &capture()).is_err(),
                "{bad:?}"
            );
        }
        assert!(CaptureDir::new("../node", "/var", &capture()).is_err());
    }

    #[test]
    fn impersonating_a_service_account_checks_serviceaccounts_in_its_namespace() {
        let a = ResourceAttributes::impersonate_user("system:serviceaccount:ops:robot");
        assert_eq!(
            (a.resource.as_str(), a.namespace.as_str(), a.name.as_str()),
            ("serviceaccounts", "ops", "robot")
        );
        let a = ResourceAttributes::impersonate_user("jane");
        assert_eq!((a.resource.as_str(), a.name.as_str()), ("users", "jane"));
        let a = ResourceAttributes::impersonate_extra("scopes", "view");
        assert_eq!(
            (
                a.group.as_str(),
                a.resource.as_str(),
                a.subresource.as_str(),
                a.name.as_str()
            ),
            ("authentication.k8s.io", "userextras", "scopes", "view")
        );
    }
}
