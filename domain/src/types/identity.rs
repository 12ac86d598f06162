//! Who asks and what they may do: bearer tokens, users, impersonation, access checks.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;

use crate::error::Error;
use crate::types::CaptureRef;

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

    /// The claims of a JWT, read without verifying its signature: only for choices that a
    /// forged token cannot abuse (who verifies it, how long a verified answer is kept).
    /// `None` unless the token is a JWT with a JSON object payload.
    pub fn unverified_claims(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        let mut parts = self.0.split('.');
        let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        match serde_json::from_slice(&bytes).ok()? {
            serde_json::Value::Object(claims) => Some(claims),
            _ => None,
        }
    }

    /// The unverified `exp` of a JWT; see [`BearerToken::unverified_claims`].
    pub fn unverified_expiry(&self) -> Option<SystemTime> {
        let exp = self.unverified_claims()?.get("exp")?.as_f64()?;
        (exp.is_finite() && exp >= 0.0).then(|| UNIX_EPOCH + Duration::from_secs_f64(exp))
    }

    /// The unverified `iss` of a JWT; see [`BearerToken::unverified_claims`].
    pub fn unverified_issuer(&self) -> Option<String> {
        self.unverified_claims()?
            .get("iss")?
            .as_str()
            .map(str::to_owned)
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// The namespace and name of a Kubernetes service account user name
/// (`system:serviceaccount:{ns}:{name}`), or `None` for any other user.
pub fn service_account(user: &str) -> Option<(&str, &str)> {
    let (namespace, name) = user
        .strip_prefix("system:serviceaccount:")?
        .split_once(':')?;
    (!namespace.is_empty() && !name.is_empty()).then_some((namespace, name))
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

    /// The impersonation check Kubernetes makes for a user name: `serviceaccounts` in its
    /// namespace for a service account, else `users`.
    pub fn impersonate_user(name: &str) -> Self {
        match service_account(name) {
            Some((namespace, account)) => Self {
                resource: "serviceaccounts".into(),
                namespace: namespace.into(),
                ..Self::impersonate("users", account)
            },
            None => Self::impersonate("users", name),
        }
    }

    /// Impersonating a group.
    pub fn impersonate_group(group: &str) -> Self {
        Self::impersonate("groups", group)
    }

    /// Impersonating an extra value under `key`.
    pub fn impersonate_extra(key: &str, value: &str) -> Self {
        Self {
            group: "authentication.k8s.io".into(),
            subresource: key.into(),
            ..Self::impersonate("userextras", value)
        }
    }

    fn impersonate(resource: &str, name: &str) -> Self {
        Self {
            verb: Verb::Impersonate,
            group: String::new(),
            resource: resource.into(),
            subresource: String::new(),
            namespace: String::new(),
            name: name.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> BearerToken {
        let e = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        BearerToken::new(&format!("{}.{}.sig", e(r#"{"alg":"RS256"}"#), e(payload))).unwrap()
    }

    #[test]
    fn token_debug_never_shows_the_secret() {
        let t = BearerToken::new("s3cr3t").unwrap();
        assert!(!format!("{t:?}").contains("s3cr3t"));
        assert!(BearerToken::new("").is_err());
        assert!(BearerToken::new("a b").is_err());
    }

    #[test]
    fn unverified_claims_read_exp_and_iss_of_jwts_only() {
        let t = jwt(r#"{"exp":2000000000,"iss":"https://dex"}"#);
        assert_eq!(
            t.unverified_expiry(),
            Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
        assert_eq!(t.unverified_issuer().as_deref(), Some("https://dex"));
        let padded = BearerToken::new(&format!(
            "{}=.{}==.sig",
            "eyJhbGciOiJSUzI1NiJ9",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"exp":5}"#)
        ))
        .unwrap();
        assert_eq!(
            padded.unverified_expiry(),
            Some(UNIX_EPOCH + Duration::from_secs(5)),
            "= padding is tolerated"
        );
        for opaque in ["opaque", "a.!!!.c", "a.b.c.d"] {
            let t = BearerToken::new(opaque).unwrap();
            assert_eq!(t.unverified_claims(), None, "{opaque}");
        }
        assert_eq!(jwt("[1]").unverified_claims(), None, "not an object");
        assert_eq!(jwt(r#"{"exp":-1}"#).unverified_expiry(), None);
    }

    #[test]
    fn service_account_names_are_told_apart() {
        assert_eq!(
            service_account("system:serviceaccount:ops:robot"),
            Some(("ops", "robot"))
        );
        assert_eq!(service_account("system:serviceaccount:ops:"), None);
        assert_eq!(service_account("system:serviceaccount:ops"), None);
        assert_eq!(service_account("jane"), None);
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
        let a = ResourceAttributes::impersonate_group("admins");
        assert_eq!((a.resource.as_str(), a.name.as_str()), ("groups", "admins"));
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
