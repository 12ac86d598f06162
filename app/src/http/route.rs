//! The routes: what each path is (parsed strictly, refused with 400 before anything else is
//! read), its template for metrics and logs, its format, and the methods it answers.

use packetcapture_domain::{BaseName, CaptureRef, NodeName};
use warp::http::Method;

use super::failure::Failure;

/// The OpenAPI document of every route (`GET /openapi.json`).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// What a download route serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// `files.zip`: every file, as they are.
    Zip,
    /// `merged.pcapng`: every packet in one file, in time order.
    Pcapng,
}

/// A parsed path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Health,
    Version,
    OpenApi,
    Download(CaptureRef, Format),
    Files(CaptureRef),
    File(CaptureRef, NodeName, BaseName),
}

impl Route {
    /// The route's template: the `route` label of metrics and logs (never a name from the
    /// path).
    pub(crate) fn template(&self) -> &'static str {
        match self {
            Self::Health => "/health",
            Self::Version => "/version",
            Self::OpenApi => "/openapi.json",
            Self::Download(_, Format::Zip) => "/download/{namespace}/{name}/files.zip",
            Self::Download(_, Format::Pcapng) => "/download/{namespace}/{name}/merged.pcapng",
            Self::Files(_) => "/files/{namespace}/{name}",
            Self::File(..) => "/files/{namespace}/{name}/{node}/{file}",
        }
    }

    /// What a download route serves (the `format` label of the bytes counted).
    pub(crate) fn format(&self) -> Option<&'static str> {
        match self {
            Self::Download(_, Format::Zip) => Some("zip"),
            Self::Download(_, Format::Pcapng) => Some("pcapng"),
            Self::File(..) => Some("file"),
            _ => None,
        }
    }

    /// The query parameters the route takes (any other is refused, 400).
    pub(crate) fn params(&self) -> &'static [Param] {
        const SELECTION: [Param; 3] = [
            Param::repeated("node"),
            Param::once("since"),
            Param::once("until"),
        ];
        const ZIP: [Param; 4] = [
            SELECTION[0],
            SELECTION[1],
            SELECTION[2],
            Param::once("compression"),
        ];
        const MERGE: [Param; 6] = [
            SELECTION[0],
            SELECTION[1],
            SELECTION[2],
            Param::once("filter"),
            Param::once("follow"),
            Param::once("lag"),
        ];
        match self {
            Self::Download(_, Format::Zip) => &ZIP,
            Self::Download(_, Format::Pcapng) => &MERGE,
            _ => &[],
        }
    }

    /// The methods the route answers.
    pub(crate) fn allowed(&self) -> &'static [Method] {
        match self {
            Self::Files(_) => &[Method::GET, Method::DELETE],
            Self::File(..) | Self::Download(_, Format::Zip) => &[Method::GET, Method::HEAD],
            _ => &[Method::GET],
        }
    }
}

/// A query parameter of a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Param {
    /// Its name.
    pub(crate) name: &'static str,
    /// Whether it may be given more than once.
    pub(crate) repeats: bool,
}

impl Param {
    const fn once(name: &'static str) -> Self {
        Self {
            name,
            repeats: false,
        }
    }

    const fn repeated(name: &'static str) -> Self {
        Self {
            name,
            repeats: true,
        }
    }
}

/// Refuses a query parameter `params` does not list, or one given twice that may be given
/// once.
pub(crate) fn check_params(pairs: &[(String, String)], params: &[Param]) -> Result<(), Failure> {
    for (i, (name, _)) in pairs.iter().enumerate() {
        match params.iter().find(|p| p.name == name) {
            None => {
                return Err(Failure::UnknownParameter {
                    name: packetcapture_domain::printable(name),
                    takes: params.iter().map(|p| p.name).collect(),
                });
            }
            Some(p) if !p.repeats && pairs[..i].iter().any(|(n, _)| n == name) => {
                return Err(Failure::RepeatedParameter { name: p.name });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Parses a path strictly: an unknown path is [`Failure::NotFound`], a known one with a name
/// that breaks Kubernetes' rules [`Failure::MalformedUrl`].
pub(crate) fn parse_route(path: &str) -> Result<Route, Failure> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(Failure::NotFound);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let capture =
        |ns: &str, name: &str| CaptureRef::parse(ns, name).map_err(|_| Failure::MalformedUrl);
    // Node and file segments may be percent-encoded; what they decode to is checked (a `/`,
    // `..` or NUL is refused), never trusted.
    let decoded = |segment: &str| {
        percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| Failure::MalformedUrl)
    };
    match segments.as_slice() {
        ["health"] => Ok(Route::Health),
        ["version"] => Ok(Route::Version),
        ["openapi.json"] => Ok(Route::OpenApi),
        ["download", ns, name, "files.zip"] => Ok(Route::Download(capture(ns, name)?, Format::Zip)),
        ["download", ns, name, "merged.pcapng"] => {
            Ok(Route::Download(capture(ns, name)?, Format::Pcapng))
        }
        ["download", ..] => Err(Failure::MalformedUrl),
        ["files", ns, name] => Ok(Route::Files(capture(ns, name)?)),
        ["files", ns, name, node, file] => Ok(Route::File(
            capture(ns, name)?,
            NodeName::new(&decoded(node)?).map_err(|_| Failure::MalformedUrl)?,
            BaseName::new(&decoded(file)?).map_err(|_| Failure::MalformedUrl)?,
        )),
        ["files", ..] => Err(Failure::MalformedUrl),
        _ => Err(Failure::NotFound),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_has_every_route_with_its_methods_and_nothing_else() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let c = || CaptureRef::parse("dev", "cap").unwrap();
        let node = || NodeName::new("node-1").unwrap();
        let file = || BaseName::new("a.pcap").unwrap();
        let routes = [
            Route::Health,
            Route::Version,
            Route::OpenApi,
            Route::Download(c(), Format::Zip),
            Route::Download(c(), Format::Pcapng),
            Route::Files(c()),
            Route::File(c(), node(), file()),
        ];
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), routes.len(), "{:?}", paths.keys());
        for route in &routes {
            let item = paths
                .get(route.template())
                .unwrap_or_else(|| panic!("{} is not in the document", route.template()));
            let mut documented: Vec<String> = item
                .as_object()
                .unwrap()
                .keys()
                .map(|m| m.to_ascii_uppercase())
                .collect();
            documented.sort();
            let mut answered: Vec<String> = route.allowed().iter().map(|m| m.to_string()).collect();
            answered.sort();
            assert_eq!(documented, answered, "{}", route.template());
        }
    }

    #[test]
    fn paths_parse_strictly() {
        let c = |ns: &str, n: &str| CaptureRef::parse(ns, n).unwrap();
        assert_eq!(
            parse_route("/download/dev/cap/files.zip").ok(),
            Some(Route::Download(c("dev", "cap"), Format::Zip))
        );
        assert_eq!(
            parse_route("/download/dev/cap/merged.pcapng").ok(),
            Some(Route::Download(c("dev", "cap"), Format::Pcapng))
        );
        assert_eq!(
            parse_route("/files/dev/cap/node-1/web%20a_cali1-17.pcap").ok(),
            Some(Route::File(
                c("dev", "cap"),
                NodeName::new("node-1").unwrap(),
                BaseName::new("web a_cali1-17.pcap").unwrap()
            ))
        );
        assert_eq!(
            parse_route("/files/dev/cap.v2").ok(),
            Some(Route::Files(c("dev", "cap.v2")))
        );
        assert_eq!(parse_route("/health").ok(), Some(Route::Health));
        for bad in [
            "/download/dev/cap/other.zip",
            "/download/dev/../files.zip",
            "/download/dev//files.zip",
            "/download/dev/a%2Fb/files.zip",
            "/download/dev/cap/files.zip/",
            "/download/dev/cap/x/files.zip",
            "/download/Dev/cap/files.zip",
            "/files/dev",
            "/files/dev/cap/extra",
            "/download/dev/cap/merged.pcap",
            "/files/dev/cap/node-1/..",
            "/files/dev/cap/node-1/.",
            "/files/dev/cap/node-1/a%2Fb.pcap",
            "/files/dev/cap/node-1/a%00.pcap",
            "/files/dev/cap/node-1/%ff.pcap",
            "/files/dev/cap/node-1/",
            "/files/dev/cap/Node_1/a.pcap",
            "/files/dev/cap/node-1/a.pcap/x",
        ] {
            assert!(
                matches!(parse_route(bad), Err(Failure::MalformedUrl)),
                "{bad}"
            );
        }
        assert!(matches!(parse_route("/nothing"), Err(Failure::NotFound)));
        assert!(matches!(parse_route("/"), Err(Failure::NotFound)));
    }

    /// Oracles written from Kubernetes' own definitions, independent of the domain's checks.
    pub(crate) mod oracle {
        pub fn label(s: &str) -> bool {
            let re = regex::Regex::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap();
            s.len() <= 63 && re.is_match(s)
        }

        pub fn subdomain(s: &str) -> bool {
            let re = regex::Regex::new(
                "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
            )
            .unwrap();
            s.len() <= 253 && re.is_match(s) && s.split('.').all(|l| l.len() <= 63)
        }
    }

    /// Path segments and header values: valid names (labels at 1, 62, 63 and 64 characters,
    /// dotted subdomains), valid names with one character changed to one that matters, and
    /// anything from a small alphabet of such characters, so about half are valid.
    pub(crate) fn segment() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let label = || {
            prop_oneof![
                "[a-z0-9]",
                "[a-z0-9][-a-z0-9]{0,20}[a-z0-9]",
                // At the 63-character limit: 62, 63 and 64.
                "[a-z0-9][-a-z0-9]{60,62}[a-z0-9]",
            ]
        };
        let subdomain = proptest::collection::vec(label(), 1..4).prop_map(|l| l.join("."));
        let valid = prop_oneof![label(), subdomain];
        let changed = (
            valid.clone(),
            any::<proptest::sample::Index>(),
            proptest::sample::select(vec!['.', '%', '/', 'A', '_', '-', ' ', '\0', 'é']),
        )
            .prop_map(|(name, at, c): (String, proptest::sample::Index, char)| {
                let mut chars: Vec<char> = name.chars().collect();
                let i = at.index(chars.len());
                chars[i] = c;
                chars.into_iter().collect()
            });
        prop_oneof![
            3 => valid,
            2 => changed,
            1 => "[a-z0-9.%/A-Z_\\- ]{0,70}",
        ]
    }

    #[test]
    fn the_segment_strategy_reaches_valid_names_and_the_63_character_edge() {
        use proptest::strategy::{Strategy, ValueTree};
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let samples: Vec<String> = (0..2000)
            .map(|_| segment().new_tree(&mut runner).unwrap().current())
            .collect();
        let valid = samples.iter().filter(|s| oracle::label(s)).count();
        let at = |len: usize, ok: bool| {
            samples
                .iter()
                .any(|s| s.len() == len && oracle::label(s) == ok)
        };
        assert!(
            (600..=1400).contains(&valid),
            "{valid} of 2000 segments are valid labels"
        );
        assert!(
            at(63, true) && at(64, false) && at(62, true),
            "labels at the 63-character limit"
        );
        assert!(
            samples
                .iter()
                .any(|s| s.contains('.') && oracle::subdomain(s))
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        #[test]
        fn capture_paths_are_accepted_exactly_when_kubernetes_would_name_them_so(
            ns in segment(),
            name in segment(),
            tail in proptest::sample::select(vec!["files.zip", "other.zip", "", "files.zip/"]),
        ) {
            let download = parse_route(&format!("/download/{ns}/{name}/{tail}"));
            let files = parse_route(&format!("/files/{ns}/{name}"));
            let valid = oracle::label(&ns) && oracle::subdomain(&name);
            proptest::prop_assert_eq!(
                download.is_ok(),
                valid && tail == "files.zip",
                "/download/{}/{}/{}", ns, name, tail
            );
            // A `/` inside a segment makes another path: `/files/a/b/c/d` is one file's route,
            // and rightly so; the listing's route is taken exactly for a valid capture.
            proptest::prop_assert_eq!(
                matches!(files, Ok(Route::Files(_))),
                valid,
                "/files/{}/{}", ns, name
            );
            if let Err(f) = download {
                let malformed = matches!(f, Failure::MalformedUrl);
                proptest::prop_assert!(malformed);
            }
        }
    }
}
