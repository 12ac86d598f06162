//! The fault matrix: every fault the simulation can make, one row each, with the documented
//! outcome and its reason (the error body, or the log line of an aborted transfer); after
//! every row no exec is left open, the service changed nothing on the nodes (checked before
//! the files a fault damaged are put back), and it still answers and downloads whole.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use packetcapture_tests::scenario::Faults;

use crate::support::*;

/// What a request came to.
#[derive(Debug)]
enum Outcome {
    /// An error status before any byte of a body, with its one-line message.
    Status(u16, String),
    /// 200 and the whole body.
    Whole(Vec<u8>),
    /// 200, then the transfer failed.
    Aborted,
    /// No response at all: not even a status line.
    NoResponse(String),
}

/// What a row expects.
#[derive(Clone, Copy)]
enum Expect {
    /// This status, its message containing this text.
    Status(u16, &'static str),
    /// A failed download: 502 (message containing the text) before the first byte, or an
    /// aborted transfer after it, which of the two depending on timing.
    Failed(&'static str),
    /// A whole download.
    Whole,
    /// The client leaves after the first bytes.
    ClientGone,
}

/// The request a row makes.
#[derive(Clone, Copy)]
enum Ask {
    /// jane downloads dev/web-traffic in the local cluster.
    Download,
    /// jane downloads dev/web-traffic in managed cluster east.
    Managed,
    /// dana (a Dex user) lists dev/web-traffic.
    DexUser,
}

/// Asks over HTTP/2, or HTTP/1.1 when `http1`.
async fn ask(api: &ApiProcess, sim: &TestSim, what: Ask, expect: &Expect, http1: bool) -> Outcome {
    let (path, user, headers): (&str, &str, Vec<(&str, &str)>) = match what {
        Ask::Download => ("/download/dev/web-traffic/files.zip", "jane", vec![]),
        Ask::Managed => (
            "/download/dev/web-traffic/files.zip",
            "jane",
            vec![("X-Cluster-ID", "east")],
        ),
        Ask::DexUser => ("/files/dev/web-traffic", "dana@example.com", vec![]),
    };
    let client = if http1 { &api.http1 } else { &api.http };
    let mut r = match client
        .get(format!("{}{path}", api.url))
        .bearer_auth(sim.token(user))
        .headers(
            headers
                .iter()
                .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
                .collect(),
        )
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::NoResponse(format!("{e:?}")),
    };
    let status = r.status().as_u16();
    if status != 200 {
        return Outcome::Status(status, r.text().await.unwrap_or_default());
    }
    let mut body = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if matches!(expect, Expect::ClientGone) {
                    return Outcome::Aborted;
                }
            }
            Ok(None) => return Outcome::Whole(body),
            Err(_) => return Outcome::Aborted,
        }
    }
}

/// Every file on every simulated node, with its digest.
fn node_files(sim: &TestSim) -> BTreeMap<String, String> {
    let root = sim.out.join("nodes");
    let mut all = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(&root).unwrap().display().to_string();
                all.insert(name, digest_file(&path));
            }
        }
    }
    all
}

/// Copies every node file aside (for the rows whose fault damages them) and puts them back.
struct Backup {
    files: Vec<(std::path::PathBuf, Vec<u8>)>,
}

impl Backup {
    fn of(root: &Path) -> Self {
        let mut files = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let data = std::fs::read(&path).unwrap();
                    files.push((path, data));
                }
            }
        }
        Self { files }
    }

    fn restore(&self) {
        for (path, data) in &self.files {
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
            std::fs::write(path, data).unwrap();
        }
    }
}

#[derive(Clone, Copy)]
struct Row {
    name: &'static str,
    faults: fn(&mut Faults),
    ask: Ask,
    expect: Expect,
    /// The fault itself damages node files (the simulation cuts them to 1000 bytes): only the
    /// files it did not cut are compared with what they were.
    cuts_files: bool,
}

/// The log written since `from`, once it holds `text` (within five seconds).
async fn wait_for_log(api: &ApiProcess, from: usize, text: &str) -> String {
    let started = Instant::now();
    loop {
        let log = api.log_text().get(from..).unwrap_or_default().to_owned();
        if log.contains(text) {
            return log;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no \"{text}\" in the log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_ends_as_documented_and_leaves_nothing_behind() {
    let sim = start_default().await;
    let api = start_api(&sim, &[("PACKETCAPTURE_API_NODE_IDLE_TIMEOUT", "1s")]).await;
    let node_1 = sim
        .node_dir("cluster", "node-1")
        .join("var/log/calico/pcap/dev/web-traffic");
    let unreadable = std::fs::read_dir(&node_1)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .min()
        .unwrap();
    let rows = [
        Row {
            name: "API server answers 500",
            faults: |f| f.api_server_error = Some(500),
            ask: Ask::Download,
            expect: Expect::Status(502, "Kubernetes API failed to"),
            cuts_files: false,
        },
        Row {
            name: "API server answers 503",
            faults: |f| f.api_server_error = Some(503),
            ask: Ask::Download,
            expect: Expect::Status(503, "Kubernetes API unavailable while trying to"),
            cuts_files: false,
        },
        Row {
            name: "API server slow (300 ms a request)",
            faults: |f| f.latency_ms = 300,
            ask: Ask::Download,
            expect: Expect::Whole,
            cuts_files: false,
        },
        Row {
            name: "API server down",
            faults: |f| f.api_server_down = true,
            ask: Ask::Download,
            expect: Expect::Status(503, "Kubernetes API unavailable while trying to"),
            cuts_files: false,
        },
        Row {
            name: "exec cut mid-stream",
            faults: |f| {
                f.exec_cut_after = Some(250_000);
                f.exec_bandwidth = Some(4_000_000);
            },
            ask: Ask::Download,
            expect: Expect::Failed("reading files on node"),
            cuts_files: false,
        },
        Row {
            name: "exec exits non-zero",
            faults: |f| f.exec_exit_status = Some(2),
            ask: Ask::Download,
            expect: Expect::Failed("reading files on node"),
            cuts_files: false,
        },
        Row {
            name: "entry pod missing",
            faults: |f| f.missing_entry_pods = vec!["node-2".into()],
            ask: Ask::Download,
            expect: Expect::Status(502, "no running entry pod found on node node-2"),
            cuts_files: false,
        },
        Row {
            name: "node stalls",
            faults: |f| f.exec_stall_after = Some(100_000),
            ask: Ask::Download,
            expect: Expect::Failed("sent nothing for 1 s"),
            cuts_files: false,
        },
        Row {
            name: "file shrinks while read",
            faults: |f| {
                f.shrink_after = Some(100_000);
                f.exec_bandwidth = Some(4_000_000);
            },
            ask: Ask::Download,
            expect: Expect::Failed("could not be read whole"),
            cuts_files: true,
        },
        Row {
            name: "file cannot be opened",
            faults: |f| f.run_as_uid = running_as_root().then_some(65534),
            ask: Ask::Download,
            expect: Expect::Failed("could not be read whole"),
            cuts_files: false,
        },
        Row {
            name: "Dex down",
            faults: |f| f.dex_down = true,
            ask: Ask::DexUser,
            expect: Expect::Status(503, "identity provider unavailable"),
            cuts_files: false,
        },
        Row {
            name: "Voltron down",
            faults: |f| f.voltron_down = true,
            ask: Ask::Managed,
            expect: Expect::Status(503, "Voltron unavailable"),
            cuts_files: false,
        },
        Row {
            name: "client gone",
            faults: |f| f.exec_bandwidth = Some(500_000),
            ask: Ask::Download,
            expect: Expect::ClientGone,
            cuts_files: false,
        },
    ];
    let before = node_files(&sim);
    let backup = Backup::of(&sim.out.join("nodes"));
    // Every row over HTTP/2, then over HTTP/1.1.
    for (http1, proto) in [(false, "HTTP/2"), (true, "HTTP/1.1")] {
        for row in rows {
            let name = format!("{} ({proto})", row.name);
            if row.name == "file cannot be opened" {
                std::fs::set_permissions(
                    &unreadable,
                    std::os::unix::fs::PermissionsExt::from_mode(0o000),
                )
                .unwrap();
            }
            let log_before = api.log_text().len();
            sim.local().set_faults(row.faults);
            let outcome = ask(&api, &sim, row.ask, &row.expect, http1).await;
            sim.local().set_faults(|f| *f = Faults::default());
            // What the service did to the nodes, before anything is put back.
            let now = node_files(&sim);
            for (file, digest) in &before {
                let cut = row.cuts_files
                    && std::fs::metadata(sim.out.join("nodes").join(file))
                        .is_ok_and(|m| m.len() == 1000);
                if !cut {
                    assert_eq!(now.get(file), Some(digest), "{name}: {file} changed");
                }
            }
            assert_eq!(now.len(), before.len(), "{name}: files came or went");
            backup.restore();
            match (&row.expect, &outcome) {
                (Expect::Status(code, text), Outcome::Status(got, body)) => {
                    assert_eq!(got, code, "{name}: {body}");
                    assert!(body.contains(text), "{name}: {body}");
                }
                (Expect::Failed(text), Outcome::Status(got, body)) => {
                    assert_eq!(*got, 502, "{name}: {body}");
                    assert!(body.contains(text), "{name}: {body}");
                }
                (Expect::Failed(text), Outcome::Aborted) => {
                    // The documented reason, in the line that logs the abort.
                    let log = wait_for_log(&api, log_before, "download aborted").await;
                    let line = log
                        .lines()
                        .find(|l| l.contains("download aborted"))
                        .unwrap_or_default();
                    assert!(line.contains(text), "{name}: the abort's reason: {line}");
                }
                (Expect::ClientGone, Outcome::Aborted) => {
                    wait_for_log(&api, log_before, "the client left during the download").await;
                }
                (Expect::Whole, Outcome::Whole(body)) => {
                    assert_eq!(
                        zip_digests(body),
                        capture_dir(&sim, "cluster", "dev", "web-traffic"),
                        "{name}"
                    );
                }
                (_, Outcome::NoResponse(error)) => panic!("{name}: no response at all: {error}"),
                (_, other) => panic!("{name}: unexpected outcome {other:?}"),
            }
            // Nothing left running, nothing changed, still serving.
            let started = Instant::now();
            while sim.local().running_execs.load(Ordering::SeqCst) > 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(3),
                    "{name}: an exec still runs"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let health = get(&api, "/health", None, &[]).await;
            assert_eq!(health.status(), 200, "{name}: /health");
            match ask(&api, &sim, Ask::Download, &Expect::Whole, http1).await {
                Outcome::Whole(body) => assert_eq!(
                    zip_digests(&body),
                    capture_dir(&sim, "cluster", "dev", "web-traffic"),
                    "{name}: the next download"
                ),
                other => panic!("{name}: the next download came to {other:?}"),
            }
        }
    }
    assert!(
        api.log_text().contains("download aborted"),
        "aborts are logged"
    );
}

/// Four nodes of two 1 MB files, every exec trickling at 2 MB/s; `fault` on node n3 only.
async fn one_node_fails(fault: &str, path: &str) {
    let nodes: Vec<String> = (1..=4).map(|i| format!("n{i}")).collect();
    let scenario = packetcapture_tests::Scenario::from_yaml(&format!(
        "users: [{{name: jane, token: jane-token}}]
clusters:
  - name: cluster
    nodes: [{}]
    captures:
      - {{namespace: dev, name: four, sameClock: true, nodes: [{}]}}
    rbac:
      - {{subjects: [user:jane], verbs: [get], apiGroups: [projectcalico.org], resources: [packetcaptures/files]}}
    faults: {{execBandwidth: 2000000, nodes: {{n3: {{{fault}}}}}}}
",
        nodes.join(", "),
        nodes
            .iter()
            .map(|n| format!("{{node: {n}, state: Finished, files: 2, size: 1000000}}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .unwrap();
    let sim = start(&scenario).await;
    let api = start_api(&sim, &[("PACKETCAPTURE_API_NODE_IDLE_TIMEOUT", "1s")]).await;
    let before = node_files(&sim);
    let mut r = get(&api, path, Some("jane-token"), &[]).await;
    assert_eq!(
        r.status(),
        200,
        "{fault}: the first bytes come before the failure"
    );
    let mut received = 0;
    let mut streaming = 0;
    let failed = loop {
        match r.chunk().await {
            Ok(Some(chunk)) => {
                received += chunk.len();
                streaming = streaming.max(sim.local().running_execs.load(Ordering::SeqCst));
            }
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(
        failed,
        "{fault} on {path}: the transfer is cut, never ended cleanly"
    );
    assert!(received > 0);
    assert!(
        streaming >= 3,
        "{fault}: the other nodes were streaming when n3 failed ({streaming} execs)"
    );
    assert_execs_end_within_a_second(sim.local()).await;
    assert_eq!(
        node_files(&sim)
            .into_iter()
            .filter(|(f, _)| !f.contains("/n3/"))
            .collect::<BTreeMap<_, _>>(),
        before
            .into_iter()
            .filter(|(f, _)| !f.contains("/n3/"))
            .collect::<BTreeMap<_, _>>(),
        "{fault}: the other nodes' files are untouched"
    );
    let log = api.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("download aborted") && l.contains("n3")),
        "{fault}: the log names the node:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_failing_mid_transfer_cuts_the_download_and_closes_every_exec() {
    for fault in [
        "execCutAfter: 600000",
        "execExitStatus: 2",
        "execStallAfter: 600000",
        "shrinkAfter: 300000",
    ] {
        one_node_fails(fault, "/download/dev/four/files.zip").await;
        one_node_fails(fault, "/download/dev/four/merged.pcapng").await;
    }
}
