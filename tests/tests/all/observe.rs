//! Operability, end to end against the real binary: the Prometheus metrics after known
//! traffic (parsed by the Prometheus project's own Python parser), and JSON log lines with
//! request ids, free of tokens.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use packetcapture_tests::Scenario;

use crate::support::*;

const SCENARIO: &str = r#"
users:
  - name: jane
    token: jane-token-0123456789
  - name: bob
    token: bob-token-0123456789
clusters:
  - name: cluster
    nodes: [node-1, node-2]
    captures:
      - namespace: dev
        name: mesh
        nodes:
          - {node: node-1, state: Finished, files: 2, size: 30000}
          - {node: node-2, state: Finished, files: 1, size: 20000}
      - namespace: dev
        name: broken
        nodes:
          - {node: node-1, state: Finished, files: 1, size: 20000}
    rbac:
      - subjects: [user:jane]
        verbs: [get]
        apiGroups: [projectcalico.org]
        resources: [packetcaptures/files]
        namespaces: [dev]
"#;

/// One sample: metric name and labels → value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Parses OpenMetrics text with `prometheus_client.openmetrics.parser` (strict: a malformed
/// exposition fails the test).
fn parse_openmetrics(text: &str) -> Samples {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .into_iter()
        .map(|(name, labels, value)| ((name, labels), value))
        .collect()
}

fn sample(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    *samples
        .get(&(name.to_owned(), labels.clone()))
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {samples:#?}"))
}

const ZIP_ROUTE: &str = "/download/{namespace}/{name}/files.zip";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_and_name_no_capture_user_or_token() {
    let sim = start(&Scenario::from_yaml(SCENARIO).unwrap()).await;
    let api = start_api(&sim, &[]).await;
    let mut zip_bytes = 0;
    for _ in 0..2 {
        let r = get(
            &api,
            "/download/dev/mesh/files.zip",
            Some("jane-token-0123456789"),
            &[],
        )
        .await;
        assert_eq!(r.status(), 200);
        zip_bytes += r.bytes().await.unwrap().len();
    }
    let r = get(&api, "/download/dev/mesh/files.zip", None, &[]).await;
    assert_eq!(r.status(), 401);
    let r = get(
        &api,
        "/download/dev/mesh/files.zip",
        Some("bob-token-0123456789"),
        &[],
    )
    .await;
    assert_eq!(r.status(), 403);
    // A node file that is not a pcap fails a merge.
    let dir = sim
        .node_dir("cluster", "node-1")
        .join("var/log/calico/pcap/dev/broken");
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        std::fs::write(f.path(), b"not a pcap").unwrap();
    }
    let r = get(
        &api,
        "/download/dev/broken/merged.pcapng",
        Some("jane-token-0123456789"),
        &[],
    )
    .await;
    assert_eq!(r.status(), 502);
    // The listing, and one file: HEAD, a range, a range past its end.
    let jane = Some("jane-token-0123456789");
    let listing = get(&api, "/files/dev/mesh", jane, &[]).await;
    assert_eq!(listing.status(), 200);
    let listing: serde_json::Value =
        serde_json::from_slice(&listing.bytes().await.unwrap()).unwrap();
    let file = listing["nodes"][0]["files"][0]["path"].as_str().unwrap();
    let head = head(&api, file, Some("jane-token-0123456789"), &[]).await;
    assert_eq!(head.status(), 200);
    let part = get(&api, file, jane, &[("Range", "bytes=0-9")]).await;
    assert_eq!(part.status(), 206);
    let part_bytes = part.bytes().await.unwrap().len();
    assert_eq!(part_bytes, 10);
    let past = get(&api, file, jane, &[("Range", "bytes=99999999-")]).await;
    assert_eq!(past.status(), 416);

    let metrics = reqwest::get(format!("{}/metrics", api.metrics_url))
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = metrics.text().await.unwrap();
    for secret in ["jane", "bob", "token", "mesh", "broken", "dev/", "node-1"] {
        assert!(
            !text.contains(secret),
            "a label carries {secret:?}:\n{text}"
        );
    }
    let s = parse_openmetrics(&text);
    let requests = "packetcapture_api_http_requests_total";
    let by_code = |code: &str| {
        sample(
            &s,
            requests,
            &[("route", ZIP_ROUTE), ("method", "GET"), ("code", code)],
        )
    };
    assert_eq!(by_code("200"), 2.0);
    assert_eq!(by_code("401"), 1.0);
    assert_eq!(by_code("403"), 1.0);
    assert_eq!(
        sample(
            &s,
            requests,
            &[
                ("route", "/download/{namespace}/{name}/merged.pcapng"),
                ("method", "GET"),
                ("code", "502")
            ]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &s,
            "packetcapture_api_download_bytes_total",
            &[("format", "zip")]
        ),
        zip_bytes as f64
    );
    let file_route = "/files/{namespace}/{name}/{node}/{file}";
    for (route, method, code) in [
        ("/files/{namespace}/{name}", "GET", "200"),
        (file_route, "HEAD", "200"),
        (file_route, "GET", "206"),
        (file_route, "GET", "416"),
    ] {
        assert_eq!(
            sample(
                &s,
                requests,
                &[("route", route), ("method", method), ("code", code)]
            ),
            1.0,
            "{method} {route} {code}"
        );
    }
    assert_eq!(
        sample(
            &s,
            "packetcapture_api_http_request_duration_seconds_count",
            &[("route", file_route)]
        ),
        3.0
    );
    assert_eq!(
        sample(&s, "packetcapture_api_downloads_in_flight", &[]),
        0.0
    );
    assert_eq!(
        sample(
            &s,
            "packetcapture_api_http_request_duration_seconds_count",
            &[("route", ZIP_ROUTE)]
        ),
        4.0
    );
    assert_eq!(
        sample(
            &s,
            "packetcapture_api_node_fetch_failures_total",
            &[("reason", "not_a_pcap")]
        ),
        1.0
    );
    // Authentication: jane's first download a miss, her second, her merge and her four
    // requests of the listing and the file hits, bob a miss. Authorization asks per capture:
    // jane's merge of another capture is a miss too, the listing and the file hits.
    let cache = |name: &str, cache: &str| sample(&s, name, &[("cache", cache)]);
    assert_eq!(
        cache("packetcapture_api_cache_hits_total", "authentication"),
        6.0
    );
    assert_eq!(
        cache("packetcapture_api_cache_misses_total", "authentication"),
        2.0
    );
    assert_eq!(
        cache("packetcapture_api_cache_hits_total", "authorization"),
        5.0
    );
    assert_eq!(
        cache("packetcapture_api_cache_misses_total", "authorization"),
        3.0
    );

    let other = reqwest::get(format!("{}/", api.metrics_url)).await.unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_end_each_request_with_one_line_and_its_id_and_never_a_token() {
    let sim = start(&Scenario::from_yaml(SCENARIO).unwrap()).await;
    let api = start_api(
        &sim,
        &[
            ("PACKETCAPTURE_API_LOG_FORMAT", "json"),
            ("PACKETCAPTURE_API_LOG_LEVEL", "debug"),
        ],
    )
    .await;
    let r = get(
        &api,
        "/download/dev/mesh/files.zip",
        Some("jane-token-0123456789"),
        &[("x-request-id", "trace-42")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "trace-42");
    let sent = r.bytes().await.unwrap().len();
    let r = get(
        &api,
        "/files/dev/mesh",
        Some("bob-token-0123456789"),
        &[("x-request-id", "bad id with spaces")],
    )
    .await;
    assert_eq!(r.status(), 403);
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(generated, "bad id with spaces");
    assert_eq!(generated.len(), 36, "a UUID: {generated}");

    // The line is written when the body ends, which the client sees first: wait for it.
    let mut lines = Vec::new();
    for _ in 0..50 {
        let log = api.log_text();
        lines = log
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("not one JSON object a line ({e}): {l}"))
            })
            .collect();
        if lines
            .iter()
            .filter(|l| l["message"] == "request finished")
            .count()
            >= 3
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        !api.log_text().contains("token-0123456789"),
        "a token reached the log"
    );
    for l in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(l.get(key).is_some(), "{key} missing in {l}");
        }
    }
    let finished = |id: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "request finished" && l["span"]["request_id"] == id)
            .unwrap_or_else(|| panic!("no last line for {id} in {lines:#?}"))
            .clone()
    };
    let download = finished("trace-42");
    assert_eq!(download["method"], "GET");
    assert_eq!(download["route"], ZIP_ROUTE);
    assert_eq!(download["status"], 200);
    assert_eq!(download["bytes"], sent);
    assert_eq!(download["whole"], true);
    assert!(download["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(download["span"]["user"], "jane");
    assert_eq!(download["span"]["cluster"], "cluster");
    let refused = finished(&generated);
    assert_eq!(refused["status"], 403);
    assert_eq!(refused["whole"], true, "a whole error body: {refused}");
    assert_eq!(refused["route"], "/files/{namespace}/{name}");
    assert_eq!(refused["span"]["user"], "bob");
    // Every line written while the download ran carries its id.
    assert!(
        lines
            .iter()
            .filter(|l| l["span"]["request_id"] == "trace-42")
            .count()
            > 1
    );
}
