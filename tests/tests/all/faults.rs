//! The fault matrix: every fault the simulation can make, one row each, with the documented
//! outcome; after every row no exec is left open, nothing on the nodes changed, and the
//! service still answers and downloads whole.

use std::collections::BTreeMap;
use std::path::Path;
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
}

/// What a row expects.
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

async fn ask(api: &ApiProcess, sim: &TestSim, what: Ask, expect: &Expect) -> Outcome {
    let (path, user, headers): (&str, &str, Vec<(&str, &str)>) = match what {
        Ask::Download => ("/download/dev/web-traffic/files.zip", "jane", vec![]),
        Ask::Managed => (
            "/download/dev/web-traffic/files.zip",
            "jane",
            vec![("X-Cluster-ID", "east")],
        ),
        Ask::DexUser => ("/files/dev/web-traffic", "dana@example.com", vec![]),
    };
    let Ok(mut r) = api
        .http
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
    else {
        // Over HTTP/2 an abort may overtake the response head.
        return Outcome::Aborted;
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

struct Row {
    name: &'static str,
    faults: fn(&mut Faults),
    ask: Ask,
    expect: Expect,
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
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
        },
        Row {
            name: "API server answers 503",
            faults: |f| f.api_server_error = Some(503),
            ask: Ask::Download,
            expect: Expect::Status(503, "Kubernetes API unavailable while trying to"),
        },
        Row {
            name: "API server slow (300 ms a request)",
            faults: |f| f.latency_ms = 300,
            ask: Ask::Download,
            expect: Expect::Whole,
        },
        Row {
            name: "API server down",
            faults: |f| f.api_server_down = true,
            ask: Ask::Download,
            expect: Expect::Status(503, "Kubernetes API unavailable while trying to"),
        },
        Row {
            name: "exec cut mid-stream",
            faults: |f| {
                f.exec_cut_after = Some(250_000);
                f.exec_bandwidth = Some(4_000_000);
            },
            ask: Ask::Download,
            expect: Expect::Failed("reading files on node"),
        },
        Row {
            name: "exec exits non-zero",
            faults: |f| f.exec_exit_status = Some(2),
            ask: Ask::Download,
            expect: Expect::Failed("reading files on node"),
        },
        Row {
            name: "entry pod missing",
            faults: |f| f.missing_entry_pods = vec!["node-2".into()],
            ask: Ask::Download,
            expect: Expect::Status(502, "no running entry pod found on node node-2"),
        },
        Row {
            name: "node stalls",
            faults: |f| f.exec_stall_after = Some(100_000),
            ask: Ask::Download,
            expect: Expect::Failed("sent nothing for 1 s"),
        },
        Row {
            name: "file shrinks while read",
            faults: |f| {
                f.shrink_after = Some(100_000);
                f.exec_bandwidth = Some(4_000_000);
            },
            ask: Ask::Download,
            expect: Expect::Failed("could not be read whole"),
        },
        Row {
            name: "file cannot be opened",
            faults: |f| f.run_as_uid = running_as_root().then_some(65534),
            ask: Ask::Download,
            expect: Expect::Failed("could not be read whole"),
        },
        Row {
            name: "Dex down",
            faults: |f| f.dex_down = true,
            ask: Ask::DexUser,
            expect: Expect::Status(503, "identity provider unavailable"),
        },
        Row {
            name: "Voltron down",
            faults: |f| f.voltron_down = true,
            ask: Ask::Managed,
            expect: Expect::Status(503, "Voltron unavailable"),
        },
        Row {
            name: "client gone",
            faults: |f| f.exec_bandwidth = Some(500_000),
            ask: Ask::Download,
            expect: Expect::ClientGone,
        },
    ];
    let before = node_files(&sim);
    let backup = Backup::of(&sim.out.join("nodes"));
    for row in rows {
        if row.name == "file cannot be opened" {
            std::fs::set_permissions(
                &unreadable,
                std::os::unix::fs::PermissionsExt::from_mode(0o000),
            )
            .unwrap();
        }
        sim.local().set_faults(row.faults);
        let outcome = ask(&api, &sim, row.ask, &row.expect).await;
        sim.local().set_faults(|f| *f = Faults::default());
        backup.restore();
        let name = row.name;
        match (&row.expect, &outcome) {
            (Expect::Status(code, text), Outcome::Status(got, body)) => {
                assert_eq!(got, code, "{name}: {body}");
                assert!(body.contains(text), "{name}: {body}");
            }
            (Expect::Failed(text), Outcome::Status(got, body)) => {
                assert_eq!(*got, 502, "{name}: {body}");
                assert!(body.contains(text), "{name}: {body}");
            }
            (Expect::Failed(_) | Expect::ClientGone, Outcome::Aborted) => {}
            (Expect::Whole, Outcome::Whole(body)) => {
                assert_eq!(
                    zip_digests(body),
                    capture_dir(&sim, "cluster", "dev", "web-traffic"),
                    "{name}"
                );
            }
            (_, other) => panic!("{name}: unexpected outcome {other:?}"),
        }
        // Nothing left running, nothing changed, still serving.
        let started = Instant::now();
        while sim
            .local()
            .running_execs
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
        {
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{name}: an exec still runs"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(node_files(&sim), before, "{name}: the nodes' files changed");
        let health = get(&api, "/health", None, &[]).await;
        assert_eq!(health.status(), 200, "{name}: /health");
        match ask(&api, &sim, Ask::Download, &Expect::Whole).await {
            Outcome::Whole(body) => assert_eq!(
                zip_digests(&body),
                capture_dir(&sim, "cluster", "dev", "web-traffic"),
                "{name}: the next download"
            ),
            other => panic!("{name}: the next download came to {other:?}"),
        }
    }
    assert!(
        api.log_text().contains("download aborted"),
        "aborts are logged"
    );
}
