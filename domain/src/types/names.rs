//! Validated names from requests and statuses: namespaces, captures, clusters, nodes.

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

            /// A name written in the code (a default): a literal that breaks the rule is a bug
            /// of this program, not of its input, and panics; each default is built by a unit
            /// test.
            #[track_caller]
            pub fn from_static(value: &'static str) -> Self {
                match Self::new(value) {
                    Ok(name) => name,
                    Err(e) => panic!("a {} literal in the code is invalid: {e}", $what),
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

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(value: &str) -> Result<Self, Error> {
                Self::new(value)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::new(text.trim()).map_err(serde::de::Error::custom)
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

/// Checks a file's base name: 1 to 255 bytes, not `.` or `..`, no `/`, no control
/// characters (NUL included).
pub fn is_base_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s != "."
        && s != ".."
        && !s.contains('/')
        && !s.chars().any(char::is_control)
}

validated_name!(
    /// A capture file's base name (no path separator, not `.` or `..`, no control characters).
    BaseName, "file name", is_base_name, "a file name without /, NUL or control characters, not . or .."
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn printable_escapes_control_characters_and_caps_the_length() {
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(printable(&"x".repeat(100)).chars().count(), 81);
    }
}
