//! Hundreds of nodes and concurrent downloads against the real binary: a merge of 1,000
//! streams from the spool, whole and in order (counted by Wireshark's `capinfos`); merges and
//! zips at once under a small budget, each whole or refused with 503 and `Retry-After`, with
//! execs and memory bounded (counted in the simulation and read from `/proc`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use packetcapture_tests::Scenario;

use crate::support::*;

/// One capture `load` on `nodes` nodes, `interfaces` file series each, `size` bytes a file,
/// captured at the same time.
fn scenario(nodes: usize, interfaces: u32, size: u64) -> Scenario {
    let names: Vec<String> = (1..=nodes).map(|i| format!("n{i}")).collect();
    let per_node: Vec<String> = names
        .iter()
        .map(|n| {
            format!(
                "{{node: {n}, state: Finished, files: 1, size: {size}, interfaces: {interfaces}}}"
            )
        })
        .collect();
    Scenario::from_yaml(&format!(
        "users: [{{name: jane, token: jane-token}}, {{name: bob, token: bob-token}}]
clusters:
  - name: cluster
    nodes: [{}]
    captures:
      - {{namespace: dev, name: load, sameClock: true, nodes: [{}]}}
    rbac:
      - {{subjects: [user:jane, user:bob], verbs: [get], apiGroups: [projectcalico.org], resources: [packetcaptures/files]}}
",
        names.join(", "),
        per_node.join(", ")
    ))
    .unwrap()
}

/// Every whole packet on the nodes (a cut last record left out).
fn packets_on_nodes(sim: &TestSim) -> u64 {
    let mut total = 0;
    for node in &sim.local().nodes {
        let dir = sim
            .node_dir("cluster", node)
            .join("var/log/calico/pcap/dev/load");
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let data = std::fs::read(entry.path()).unwrap();
            total += packetcapture_tests::pcap::inspect(&data).unwrap().0;
        }
    }
    total
}

fn capinfos(file: &std::path::Path) -> String {
    // -M: exact numbers (not "10 k").
    let out = std::process::Command::new("capinfos")
        .arg("-M")
        .arg(file)
        .output()
        .expect("capinfos is installed (make tools installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_of_1000_streams_comes_whole_and_in_order_with_execs_and_memory_bounded() {
    let sim = start(&scenario(500, 2, 6_000)).await;
    // At most 64 streams may be open: the 1,000 are read 16 at a time into the spool.
    let api = start_api(&sim, &[("PACKETCAPTURE_API_MAX_STREAMS", "64")]).await;
    let r = get(
        &api,
        "/download/dev/load/merged.pcapng",
        Some("jane-token"),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let file = sim.dir.path().join("thousand.pcapng");
    std::fs::write(&file, r.bytes().await.unwrap()).unwrap();
    let info = capinfos(&file);
    let expected = packets_on_nodes(&sim);
    assert!(
        info.contains(&format!("Number of packets:   {expected}")),
        "every whole packet of the 1,000 files ({expected}):\n{info}"
    );
    assert!(info.contains("Strict time order:   True"), "{info}");
    assert!(
        info.contains("Number of interfaces in file: 1000"),
        "{info}"
    );
    let peak_execs = sim.local().peak_execs.load(Ordering::SeqCst);
    assert!(
        peak_execs <= 16,
        "{peak_execs} execs open at once; the merge reads 16 at a time"
    );
    // A live merge of 1,000 streams would hold about 160 MiB; from the spool, a few KiB each.
    let peak = api.status_kib("VmHWM") / 1024;
    assert!(peak < 128, "peak RSS {peak} MiB");
    assert!(api.log_text().contains("merging from the spool"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_merges_and_zips_stay_within_the_budget_each_whole_or_refused() {
    let sim = start(&scenario(200, 1, 20_000)).await;
    let api = start_api(
        &sim,
        &[
            ("PACKETCAPTURE_API_MEMORY_BUDGET", "40MiB"),
            ("PACKETCAPTURE_API_MAX_STREAMS", "256"),
            ("PACKETCAPTURE_API_QUEUE_TIMEOUT", "15s"),
        ],
    )
    .await;
    // Warm the caches and the process (TLS, clients): what it holds before any download.
    assert_eq!(
        get(&api, "/files/dev/load", Some("jane-token"), &[])
            .await
            .status(),
        200
    );
    let base = api.status_kib("VmRSS") / 1024;
    sim.local().reset_peak_execs();
    let expected_files = capture_dir(&sim, "cluster", "dev", "load");
    let expected_packets = packets_on_nodes(&sim);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (http, url) = (api.http.clone(), api.url.clone());
        let token = if i % 2 == 0 {
            "jane-token"
        } else {
            "bob-token"
        };
        let path = if i < 8 { "merged.pcapng" } else { "files.zip" };
        tasks.push(tokio::spawn(async move {
            let r = http
                .get(format!("{url}/download/dev/load/{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = r.bytes().await.map(|b| b.to_vec());
            (path, status, retry, body)
        }));
    }
    let (mut whole, mut refused) = (0, 0);
    for task in tasks {
        let (path, status, retry, body) = task.await.unwrap();
        let body = body.unwrap_or_else(|e| panic!("{path}: a cut transfer: {e}"));
        match status {
            200 if path == "files.zip" => {
                assert_eq!(zip_digests(&body), expected_files);
                whole += 1;
            }
            200 => {
                assert_eq!(
                    packetcapture_tests::pcap::count_pcapng_packets(&body),
                    Some(expected_packets)
                );
                whole += 1;
            }
            503 => {
                assert!(retry.is_some_and(|s| s.parse::<u64>().unwrap() > 0));
                assert!(String::from_utf8_lossy(&body).contains("busy"));
                refused += 1;
            }
            other => panic!("{path}: {other} {}", String::from_utf8_lossy(&body)),
        }
    }
    assert!(whole >= 2, "{whole} whole, {refused} refused");
    let peak_execs = sim.local().peak_execs.load(Ordering::SeqCst);
    assert!(peak_execs <= 256, "{peak_execs} execs open at once");
    // Unbounded, eight merges of 200 streams hold about 250 MiB at once.
    let peak = api.status_kib("VmHWM") / 1024;
    assert!(
        peak <= base + 40 + 24,
        "peak RSS {peak} MiB, {base} MiB before, a 40 MiB budget"
    );
    let metrics = reqwest::get(format!("{}/metrics", api.metrics_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("packetcapture_api_node_streams_limit 256"),
        "{metrics}"
    );
    assert!(metrics.contains("packetcapture_api_node_streams_reserved 0"));
    assert!(metrics.contains("packetcapture_api_requests_queued 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_get_a_node_stream_in_time_is_503_with_retry_after() {
    let mut scenario = scenario(2, 1, 2_000_000);
    scenario.clusters[0].faults.exec_bandwidth = Some(500_000);
    let sim = start(&scenario).await;
    let api = start_api(
        &sim,
        &[
            ("PACKETCAPTURE_API_MAX_STREAMS", "1"),
            ("PACKETCAPTURE_API_QUEUE_TIMEOUT", "1s"),
        ],
    )
    .await;
    // A slow zip holds the one stream (about 8 s at 500 KB/s).
    let slow = api
        .http
        .get(format!("{}/download/dev/load/files.zip", api.url))
        .bearer_auth("jane-token")
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    let started = std::time::Instant::now();
    let (status, body) = text(get(&api, "/files/dev/load", Some("bob-token"), &[]).await).await;
    assert_eq!(status, 503, "{body}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(body.contains("waited 1 s"), "{body}");
    let r = get(&api, "/files/dev/load", Some("bob-token"), &[]).await;
    assert_eq!(r.headers()["retry-after"], "5");
    drop(slow);
    let metrics = reqwest::get(format!("{}/metrics", api.metrics_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("packetcapture_api_requests_refused_busy_total 2"),
        "{metrics}"
    );
}

/// A TLS connection to the API at `url` (HTTP/1.1, trusting the simulation's CA in `out`),
/// once the server has accepted it and shaken hands.
async fn connect_to(
    url: &str,
    out: &std::path::Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_file_iter(out.join("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let addr = url.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// `GET /health` on `connection`: the status line.
async fn health_on(
    connection: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    connection
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 1024];
    let n = connection.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_caps_the_connections_served_and_the_next_one_waits_its_turn() {
    let sim = start_default().await;
    let api = start_api(
        &sim,
        &[
            ("PACKETCAPTURE_API_MAX_CONNECTIONS", "3"),
            ("PACKETCAPTURE_API_HEADER_TIMEOUT", "60s"),
        ],
    )
    .await;
    assert!(api.log_text().contains("max_connections=3"));
    // The start-up check's pooled connection is one of the three.
    assert_eq!(get(&api, "/health", None, &[]).await.status(), 200);
    let mut held = Vec::new();
    let mut waiting = loop {
        let connecting = tokio::spawn({
            let (url, out) = (api.url.clone(), sim.out.clone());
            async move { connect_to(&url, &out).await }
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        if !connecting.is_finished() {
            break connecting;
        }
        held.push(connecting.await.unwrap());
        assert!(
            held.len() <= 3,
            "more connections served than MAX_CONNECTIONS"
        );
    };
    assert_eq!(held.len(), 2, "two more besides the pooled one");
    for c in &mut held {
        assert_eq!(health_on(c).await, "HTTP/1.1 200 OK");
    }
    // One closes: the waiting one is served.
    drop(held.pop());
    let mut next = tokio::time::timeout(Duration::from_secs(3), &mut waiting)
        .await
        .expect("the waiting connection is served once one closes")
        .unwrap();
    assert_eq!(health_on(&mut next).await, "HTTP/1.1 200 OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_connection_cap_is_half_the_raised_descriptor_limit() {
    let sim = start_default().await;
    // The soft limit raised to the hard one and halved; never below 64. (The ceiling of
    // 10,000 needs a hard limit above 20,000, which an unprivileged test cannot set.)
    for (limits, cap) in [("300:1000", 500), ("60:60", 64)] {
        let log = sim.dir.path().join(format!("limit-{cap}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut child = std::process::Command::new("prlimit")
            .arg(format!("--nofile={limits}"))
            .arg("--")
            .arg(api_binary())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(sim_env(&sim))
            .env("PACKETCAPTURE_API_PORT", free_port().to_string())
            .env("PACKETCAPTURE_API_METRICS_PORT", "0")
            .env("PACKETCAPTURE_API_LOG_FORMAT", "json")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("prlimit (util-linux) runs the binary");
        let started = std::time::Instant::now();
        let line = loop {
            let text = std::fs::read_to_string(&log).unwrap();
            if let Some(line) = text.lines().find(|l| l.contains("\"listening\"")) {
                break line.to_owned();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10) && child.try_wait().unwrap().is_none(),
                "no 'listening' line with descriptors {limits}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let _ = child.kill();
        let _ = child.wait();
        let fields: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            fields["max_connections"], cap,
            "descriptors {limits} (soft:hard): {line}"
        );
    }
}
