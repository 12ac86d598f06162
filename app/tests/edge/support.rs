//! A world of fakes behind the routes, and request helpers.

use std::io::{Cursor, Read};
use std::sync::Arc;

use packetcapture_api::http::{Edge, routes};
use packetcapture_api::version::VersionInfo;
use packetcapture_domain::testing::{
    CaptureTable, FakeCluster, ManagedCluster, NodeFileTable, RbacTable, StaticRouter, TokenTable,
};
use packetcapture_domain::{
    Capture, CaptureRef, CaptureService, CaptureState, ClusterPorts, ClusterRouter, NodeFiles,
    User, Verb,
};
use warp::http::Response;

pub const DIR: &str = "/var/log/calico/pcap";

pub fn capture(name: &str, nodes: &[(&str, &[&str], Option<CaptureState>)]) -> Capture {
    Capture {
        reference: CaptureRef::parse("dev", name).unwrap(),
        resource_version: "1".into(),
        files: nodes
            .iter()
            .map(|(node, names, state)| NodeFiles {
                node: (*node).into(),
                directory: DIR.into(),
                file_names: names.iter().map(|s| (*s).to_owned()).collect(),
                state: state.clone(),
            })
            .collect(),
    }
}

/// The local cluster of the tests: `jane` may get and delete in `dev`; `bob` may nothing;
/// `gateway` may impersonate users, groups, extras and service accounts of `ops`.
pub fn local_cluster() -> FakeCluster {
    let finished = Some(CaptureState::Finished);
    FakeCluster::new(
        RbacTable::default()
            .allow("jane", Verb::Get, "packetcaptures/files", "dev")
            .allow("jane", Verb::Delete, "packetcaptures/files", "dev")
            .allow("group:auditors", Verb::Get, "packetcaptures/files", "dev")
            .allow("robot", Verb::Get, "packetcaptures/files", "dev")
            .allow("gateway", Verb::Impersonate, "users", "")
            .allow("gateway", Verb::Impersonate, "groups", "")
            .allow("gateway", Verb::Impersonate, "userextras/scopes", "")
            .allow("gateway", Verb::Impersonate, "serviceaccounts", "ops"),
        CaptureTable::default()
            .with(capture(
                "done",
                &[
                    ("node-1", &["a.pcap"], finished.clone()),
                    ("node-2", &["b.pcap"], finished.clone()),
                ],
            ))
            .with(capture(
                "running",
                &[("node-1", &["c.pcap"], Some(CaptureState::Capturing))],
            ))
            .with(capture("stateless", &[("node-1", &["c.pcap"], None)]))
            // Still capturing on both nodes: its zip streams as the nodes are read.
            .with(capture(
                "live",
                &[
                    ("node-1", &["a.pcap"], Some(CaptureState::Capturing)),
                    ("node-2", &["b.pcap"], Some(CaptureState::Capturing)),
                ],
            ))
            .with(capture("empty", &[("node-1", &[], finished.clone())]))
            .with(capture(
                "gone",
                &[("node-1", &["x.pcap"], finished.clone())],
            ))
            .with(capture("orphan", &[("node-9", &["o.pcap"], finished)])),
        NodeFileTable::default()
            .with_file(
                "node-1",
                &format!("{DIR}/dev/done"),
                "a.pcap",
                b"pcap-a",
                1_700_000_000,
            )
            .with_file(
                "node-2",
                &format!("{DIR}/dev/done"),
                "b.pcap",
                &[7u8; 100_000],
                1_700_000_100,
            )
            .with_file(
                "node-1",
                &format!("{DIR}/dev/live"),
                "a.pcap",
                b"pcap-a",
                1_700_000_000,
            )
            .with_file(
                "node-2",
                &format!("{DIR}/dev/live"),
                "b.pcap",
                &[7u8; 100_000],
                1_700_000_100,
            )
            .without_entry("node-9"),
    )
}

pub fn tokens() -> TokenTable {
    TokenTable::default()
        .with("jane-token", User::named("jane"))
        .with("bob-token", User::named("bob"))
        .with("gw-token", User::named("gateway"))
}

pub fn edge_with(router: Arc<dyn ClusterRouter>) -> Edge {
    Edge {
        service: Arc::new(CaptureService::new(Arc::new(tokens()), router)),
        version: VersionInfo::current(),
        metrics: packetcapture_api::observe::Metrics::new(),
    }
}

pub fn edge(local: &FakeCluster) -> Edge {
    let router = StaticRouter::local(local.ports())
        .with_managed("east", ManagedCluster::Connected(managed_cluster().ports()))
        .with_managed("west", ManagedCluster::Disconnected);
    edge_with(Arc::new(router))
}

/// A managed cluster where only `jane` may get, with its own `done` capture.
pub fn managed_cluster() -> FakeCluster {
    FakeCluster::new(
        RbacTable::default().allow("jane", Verb::Get, "packetcaptures/files", "dev"),
        CaptureTable::default().with(capture(
            "done",
            &[("east-1", &["east.pcap"], Some(CaptureState::Finished))],
        )),
        NodeFileTable::default().with_file(
            "east-1",
            &format!("{DIR}/dev/done"),
            "east.pcap",
            b"east",
            5,
        ),
    )
}

pub fn ports_of(cluster: &FakeCluster) -> ClusterPorts {
    cluster.ports()
}

/// Sends a request through the routes as the server would (repeated headers kept).
pub async fn send(
    edge: Edge,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response<bytes::Bytes> {
    use http_body_util::BodyExt;
    use tower_service::Service;
    let mut request = warp::http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = warp::service(routes(edge)).call(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Response::from_parts(parts, bytes)
}

pub fn body(r: &Response<bytes::Bytes>) -> String {
    String::from_utf8_lossy(r.body()).into_owned()
}

pub fn header<'a>(r: &'a Response<bytes::Bytes>, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Entry names and contents of a zip body.
/// The last entry, the `SHA256SUMS` manifest, is checked against the others and left out.
pub fn entries(bytes: &[u8]) -> Vec<(String, Vec<u8>, zip::CompressionMethod)> {
    use sha2::{Digest, Sha256};
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut all: Vec<(String, Vec<u8>, zip::CompressionMethod)> = (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().unwrap().into_owned(), data, f.compression())
        })
        .collect();
    let (name, manifest, _) = all.pop().expect("a zip with files has a manifest");
    assert_eq!(name, "SHA256SUMS");
    let expected: String = all
        .iter()
        .map(|(name, data, _)| {
            let digest: String = Sha256::digest(data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("{digest}  {name}\n")
        })
        .collect();
    assert_eq!(String::from_utf8(manifest).unwrap(), expected);
    all
}
