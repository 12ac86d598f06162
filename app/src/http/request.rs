//! A request's headers and query read into typed values before they reach the domain: the
//! cluster, the bearer token and impersonation (in the pipeline's order), node and time
//! selection, compression, a header sent once, and the head's size.

use std::collections::BTreeMap;

use packetcapture_domain::bpf::FilterExpression;
use packetcapture_domain::pcap::Window;
use packetcapture_domain::{
    BearerToken, CaptureRef, ClusterId, ClusterTarget, Compression, Error, Impersonation, NodeName,
    Request, Selection, printable,
};
use warp::http::{HeaderMap, HeaderValue};

/// The query's `key=value` pairs, in order.
pub(crate) fn query_pairs(query: &str) -> Result<Vec<(String, String)>, Error> {
    serde_urlencoded::from_str(query).map_err(|_| Error::InvalidName {
        what: "query",
        value: printable(query),
        rule: "a URL-encoded query",
    })
}

/// Reads `?node=` (repeatable) and `?since=`/`?until=` (RFC 3339, fractional seconds
/// allowed; since inclusive, until exclusive).
pub(crate) fn selection(pairs: &[(String, String)]) -> Result<Selection, Error> {
    let nodes = pairs
        .iter()
        .filter(|(k, _)| k == "node")
        .map(|(_, v)| NodeName::new(v.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let instant = |key: &'static str| -> Result<Option<(u64, String)>, Error> {
        let Some((_, value)) = pairs.iter().rev().find(|(k, _)| k == key) else {
            return Ok(None);
        };
        let invalid = || Error::InvalidName {
            what: key,
            value: printable(value),
            rule: "an RFC 3339 time such as 2026-11-30T10:00:00Z or 2026-11-30T11:00:00.5+01:00",
        };
        let ts: jiff::Timestamp = value.trim().parse().map_err(|_| invalid())?;
        let nanos = u64::try_from(ts.as_nanosecond()).map_err(|_| invalid())?;
        Ok(Some((nanos, value.clone())))
    };
    let since = instant("since")?;
    let until = instant("until")?;
    if let (Some((s, since)), Some((u, until))) = (&since, &until)
        && s >= u
    {
        return Err(Error::EmptyWindow {
            since: printable(since),
            until: printable(until),
        });
    }
    let filter = pairs
        .iter()
        .rev()
        .find(|(k, _)| k == "filter")
        .map(|(_, v)| FilterExpression::new(v))
        .transpose()?;
    Ok(Selection {
        nodes,
        window: Window {
            since: since.map(|(n, _)| n),
            until: until.map(|(n, _)| n),
        },
        filter,
    })
}

/// The lag a follow waits for a quiet stream unless `?lag=` says otherwise.
pub(crate) const DEFAULT_LAG: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest `?lag=`, in milliseconds.
const MAX_LAG_MS: u64 = 10_000;

/// Reads `?follow=` (`true` or `false`, any case; absent: false) and `?lag=` (milliseconds,
/// 0 to 10000, only with `follow=true`): the lag when following, `None` when not.
pub(crate) fn follow(pairs: &[(String, String)]) -> Result<Option<std::time::Duration>, Error> {
    let value = |key: &str| pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v);
    let following = match value("follow").map(|v| v.to_ascii_lowercase()) {
        None => false,
        Some(v) if v == "true" => true,
        Some(v) if v == "false" => false,
        Some(v) => {
            return Err(Error::InvalidName {
                what: "follow",
                value: printable(&v),
                rule: "true or false",
            });
        }
    };
    let lag = match value("lag") {
        None => DEFAULT_LAG,
        Some(v) if !following => {
            return Err(Error::InvalidName {
                what: "lag",
                value: printable(v),
                rule: "given with follow=true only",
            });
        }
        Some(v) => match v.trim().parse::<u64>() {
            Ok(ms) if ms <= MAX_LAG_MS => std::time::Duration::from_millis(ms),
            _ => {
                return Err(Error::InvalidName {
                    what: "lag",
                    value: printable(v),
                    rule: "milliseconds from 0 to 10000",
                });
            }
        },
    };
    Ok(following.then_some(lag))
}

/// Reads `?compression=`: `stored` (or `none`, the default) or `deflate`, any case.
pub(crate) fn compression(pairs: &[(String, String)]) -> Result<Compression, Error> {
    let Some((_, value)) = pairs.iter().rev().find(|(k, _)| k == "compression") else {
        return Ok(Compression::Stored);
    };
    match value.to_ascii_lowercase().as_str() {
        "stored" | "none" => Ok(Compression::Stored),
        "deflate" => Ok(Compression::Deflate),
        _ => Err(Error::InvalidName {
            what: "compression",
            value: printable(value),
            rule: "one of stored, deflate",
        }),
    }
}

/// Reads `X-Cluster-ID`: absent, empty or `cluster` is the local cluster; anything else must
/// be a managed cluster's id (a DNS-1123 subdomain).
pub(crate) fn cluster_target(value: Option<&str>) -> Result<ClusterTarget, Error> {
    match value.map(str::trim) {
        None | Some("") | Some(ClusterTarget::LOCAL_ALIAS) => Ok(ClusterTarget::Local),
        Some(id) => ClusterId::new(id).map(ClusterTarget::Managed),
    }
}

/// Reads the cluster, the token and the impersonation headers, in the pipeline's order.
pub(crate) fn request(capture: CaptureRef, headers: &HeaderMap) -> Result<Request, Error> {
    let cluster = cluster_target(single(headers, "x-cluster-id")?.as_deref())?;
    let token = bearer(headers)?;
    let impersonation = impersonation(headers)?;
    tracing::Span::current().record("cluster", tracing::field::display(&cluster));
    Ok(Request {
        token,
        impersonation,
        cluster,
        capture,
    })
}

pub(crate) fn header_text<'h>(name: &str, value: &'h HeaderValue) -> Result<&'h str, Error> {
    value.to_str().map_err(|_| Error::InvalidName {
        what: "header",
        value: name.to_owned(),
        rule: "visible ASCII",
    })
}

pub(crate) fn single(headers: &HeaderMap, name: &str) -> Result<Option<String>, Error> {
    let mut values = headers.get_all(name).iter();
    let first = values
        .next()
        .map(|v| header_text(name, v).map(str::to_owned))
        .transpose()?;
    if values.next().is_some() {
        return Err(Error::InvalidName {
            what: "header",
            value: name.to_owned(),
            rule: "sent once",
        });
    }
    Ok(first)
}

pub(crate) fn bearer(headers: &HeaderMap) -> Result<BearerToken, Error> {
    let value = single(headers, "authorization")
        .map_err(|_| Error::Unauthenticated {
            reason: "the Authorization header is malformed".into(),
        })?
        .ok_or_else(|| Error::Unauthenticated {
            reason: "no Authorization: Bearer header".into(),
        })?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.as_str(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Error::Unauthenticated {
            reason: "the Authorization header is not a Bearer token".into(),
        });
    }
    BearerToken::new(token.trim())
}

pub(crate) fn impersonation(headers: &HeaderMap) -> Result<Impersonation, Error> {
    let user = single(headers, "impersonate-user")?;
    let groups = headers
        .get_all("impersonate-group")
        .iter()
        .map(|v| header_text("impersonate-group", v).map(str::to_owned))
        .collect::<Result<Vec<_>, _>>()?;
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix("impersonate-extra-") else {
            continue;
        };
        let key = percent_encoding::percent_decode_str(key)
            .decode_utf8()
            .map_err(|_| Error::InvalidName {
                what: "impersonation extra key",
                value: printable(key),
                rule: "percent-encoded UTF-8",
            })?
            .to_lowercase();
        extra
            .entry(key)
            .or_default()
            .push(header_text(name.as_str(), value)?.to_owned());
    }
    Ok(Impersonation {
        user,
        groups,
        extra,
    })
}

/// The size of a header list as HTTP/2 counts it (RFC 9113 §6.5.2): name, value and 32 bytes
/// per field.
pub(crate) fn head_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::route::tests::{oracle, segment};

    #[test]
    fn cluster_header_local_aliases_and_validation() {
        assert_eq!(cluster_target(None).unwrap(), ClusterTarget::Local);
        assert_eq!(cluster_target(Some("")).unwrap(), ClusterTarget::Local);
        assert_eq!(
            cluster_target(Some("cluster")).unwrap(),
            ClusterTarget::Local
        );
        assert_eq!(
            cluster_target(Some("east-1")).unwrap(),
            ClusterTarget::Managed(ClusterId::new("east-1").unwrap())
        );
        assert!(cluster_target(Some("a/b")).is_err());
        assert!(cluster_target(Some("a\nb")).is_err());
        assert!(cluster_target(Some(&"a".repeat(300))).is_err());
    }

    fn compression_of(query: &str) -> Result<Compression, Error> {
        compression(&query_pairs(query)?)
    }

    #[test]
    fn compression_is_stored_unless_deflate_is_asked() {
        assert_eq!(compression_of("").unwrap(), Compression::Stored);
        assert_eq!(
            compression_of("compression=DEFLATE").unwrap(),
            Compression::Deflate
        );
        assert_eq!(
            compression_of("compression=none").unwrap(),
            Compression::Stored
        );
        assert!(compression_of("compression=zstd").is_err());
    }

    fn selection_of(query: &str) -> Result<Selection, Error> {
        selection(&query_pairs(query)?)
    }

    #[test]
    fn selection_reads_nodes_and_an_rfc3339_window() {
        let s = selection_of("node=node-1&node=node-2&since=2026-11-30T10:00:00Z&until=2026-11-30T11:00:00.5%2B01:00").unwrap();
        assert_eq!(s.nodes.len(), 2);
        let ten = 1_796_032_800u64 * 1_000_000_000;
        assert_eq!(s.window.since, Some(ten));
        assert_eq!(
            s.window.until,
            Some(ten + 500_000_000),
            "11:00:00.5 at +01:00 is 10:00:00.5 UTC"
        );
        assert_eq!(selection_of("").unwrap(), Selection::default());
        for bad in [
            "node=Node_1",
            "since=yesterday",
            "until=2026-11-30",
            "since=2026-11-30T10:00:00",
        ] {
            assert!(
                matches!(selection_of(bad), Err(Error::InvalidName { .. })),
                "{bad}"
            );
        }
        for reversed in [
            "since=2026-11-30T11:00:00Z&until=2026-11-30T10:00:00Z",
            "since=2026-11-30T10:00:00Z&until=2026-11-30T10:00:00Z",
        ] {
            assert!(
                matches!(selection_of(reversed), Err(Error::EmptyWindow { .. })),
                "{reversed}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        #[test]
        fn cluster_ids_are_local_or_a_subdomain_and_nothing_else(id in proptest::option::of(segment())) {
            let parsed = cluster_target(id.as_deref());
            let given = id.clone().unwrap_or_default();
            let local = id.as_deref().is_none_or(|v| matches!(v.trim(), "" | "cluster"));
            match parsed {
                Ok(ClusterTarget::Local) => proptest::prop_assert!(local),
                Ok(ClusterTarget::Managed(m)) => {
                    proptest::prop_assert!(!local);
                    proptest::prop_assert!(oracle::subdomain(m.as_str()));
                    proptest::prop_assert_eq!(m.as_str(), given.trim());
                }
                Err(e) => {
                    proptest::prop_assert!(!local && !oracle::subdomain(given.trim()));
                    let invalid_name = matches!(e, Error::InvalidName { .. });
                    proptest::prop_assert!(invalid_name);
                }
            }
        }

        #[test]
        fn compression_takes_the_last_value_and_refuses_any_other(query in "[a-zA-Z=&%0-9+.]{0,40}") {
            let pairs: Result<Vec<(String, String)>, _> = serde_urlencoded::from_str(&query);
            let result = compression_of(&query);
            match pairs {
                Err(_) => proptest::prop_assert!(result.is_err()),
                Ok(pairs) => {
                    let last = pairs.iter().rev().find(|(k, _)| k == "compression");
                    let expected = match last.map(|(_, v)| v.to_ascii_lowercase()) {
                        None => Some(Compression::Stored),
                        Some(v) if v == "stored" || v == "none" => Some(Compression::Stored),
                        Some(v) if v == "deflate" => Some(Compression::Deflate),
                        Some(_) => None,
                    };
                    proptest::prop_assert_eq!(result.ok(), expected);
                }
            }
        }

        #[test]
        fn impersonation_headers_never_panic_and_extras_need_valid_percent_encoding(
            user in proptest::option::of("[ -~]{0,20}"),
            groups in proptest::collection::vec("[ -~]{0,12}", 0..3),
            key in "[a-z0-9%-]{1,12}",
            value in "[ -~]{0,12}",
        ) {
            let mut headers = HeaderMap::new();
            if let Some(u) = &user {
                headers.insert("impersonate-user", HeaderValue::from_str(u).unwrap());
            }
            for g in &groups {
                headers.append("impersonate-group", HeaderValue::from_str(g).unwrap());
            }
            let name = format!("impersonate-extra-{key}");
            let header = warp::http::header::HeaderName::from_bytes(name.as_bytes()).unwrap();
            headers.insert(header, HeaderValue::from_str(&value).unwrap());
            let decoded = percent_encoding::percent_decode_str(&key).decode_utf8();
            match impersonation(&headers) {
                Ok(i) => {
                    proptest::prop_assert_eq!(i.user, user);
                    proptest::prop_assert_eq!(i.groups, groups);
                    let key = decoded.unwrap().to_lowercase();
                    proptest::prop_assert_eq!(i.extra.get(&key), Some(&vec![value]));
                }
                Err(_) => proptest::prop_assert!(decoded.is_err()),
            }
        }
    }
}
