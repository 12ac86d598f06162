//! The concurrent engine end to end: many nodes, memory and descriptors bounded, the spool
//! never outliving a download.

use std::time::{Duration, Instant};

use packetcapture_tests::Scenario;

use crate::support::*;

/// A capture on `nodes` nodes, `files` files of `size` bytes each.
fn many_nodes(nodes: usize, files: u32, size: u64, faults: &str) -> Scenario {
    let names: Vec<String> = (1..=nodes).map(|i| format!("n{i}")).collect();
    let per_node: Vec<String> = names
        .iter()
        .map(|n| format!("{{node: {n}, state: Finished, files: {files}, size: {size}}}"))
        .collect();
    Scenario::from_yaml(&format!(
        "users: [{{name: jane, token: jane-token}}]
clusters:
  - name: cluster
    nodes: [{}]
    captures:
      - {{namespace: dev, name: wide, nodes: [{}]}}
    rbac:
      - {{subjects: [user:jane], verbs: [get], apiGroups: [projectcalico.org], resources: [packetcaptures/files]}}
    faults: {{{faults}}}
",
        names.join(", "),
        per_node.join(", ")
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_on_64_nodes_downloads_byte_identical_with_memory_and_descriptors_bounded() {
    let sim = start(&many_nodes(64, 2, 256 * 1024, "")).await;
    let api = start_api(&sim, &[("PACKETCAPTURE_API_LOG_LEVEL", "info")]).await;
    let before = api.open_fds().len();
    let url = format!("{}/download/dev/wide/files.zip", api.url);
    let mut r = api
        .http
        .get(url)
        .bearer_auth("jane-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = Vec::new();
    let mut most_fds = 0;
    let mut at_most = Vec::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
        let fds = api.open_fds();
        eprintln!(
            "fds {} execs {}",
            fds.len(),
            sim.local()
                .running_execs
                .load(std::sync::atomic::Ordering::SeqCst)
        );
        if fds.len() > most_fds {
            most_fds = fds.len();
            at_most = fds;
        }
    }

    assert_eq!(
        zip_digests(&body),
        capture_dir(&sim, "cluster", "dev", "wide"),
        "every file of every node, byte-identical"
    );
    assert_eq!(zip_digests(&body).len(), 128);
    // 16 execs at once (one connection each), one spool file, a few connections to the
    // API server: not one of each per node.
    assert!(
        most_fds <= before + 16 + 8,
        "{most_fds} descriptors open at most, {before} before the download: {at_most:?}"
    );
    let peak = api.status_kib("VmHWM");
    assert!(
        peak < 96 * 1024,
        "peak RSS {peak} KiB for 32 MiB from 64 nodes"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        api.open_fds().len() <= before + 4,
        "descriptors back near {before} after the download: {:?}",
        api.open_fds()
    );
}

/// The spool files a process has open: unlinked files in `dir`.
fn spool_fds(api: &ApiProcess, dir: &std::path::Path) -> usize {
    let dir = dir.display().to_string();
    api.open_fds()
        .iter()
        .filter(|target| target.starts_with(&dir))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_files_have_no_name_and_nothing_is_left_after_a_download_an_abort_or_a_kill() {
    // Four nodes; each exec trickles at 2 MB/s, so while n1 is written the others spool.
    let sim = start(&many_nodes(
        4,
        2,
        3 * 1024 * 1024,
        "execBandwidth: 20000000",
    ))
    .await;
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().display().to_string();
    let env = [
        ("PACKETCAPTURE_API_SPOOL_DIR", spool_dir.as_str()),
        ("PACKETCAPTURE_API_LOG_LEVEL", "info"),
    ];
    let mut api = start_api(&sim, &env).await;
    let url = format!("{}/download/dev/wide/files.zip", api.url);
    let listing = || std::fs::read_dir(spool.path()).unwrap().count();

    // A whole download: spool files were used, none has a name, none is left.
    let mut r = api
        .http
        .get(&url)
        .bearer_auth("jane-token")
        .send()
        .await
        .unwrap();
    let mut body = Vec::new();
    let mut used = 0;
    while let Some(chunk) = r.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
        used = used.max(spool_fds(&api, spool.path()));
        assert_eq!(listing(), 0, "a spool file never has a name");
    }
    assert!(
        used > 0,
        "the waiting nodes spooled to files in {spool_dir}"
    );
    assert_eq!(
        zip_digests(&body),
        capture_dir(&sim, "cluster", "dev", "wide")
    );
    assert_eq!(
        spool_fds(&api, spool.path()),
        0,
        "no spool file open after it"
    );

    // A client that leaves mid-download.
    let mut r = api
        .http
        .get(&url)
        .bearer_auth("jane-token")
        .send()
        .await
        .unwrap();
    let started = Instant::now();
    while spool_fds(&api, spool.path()) == 0 && started.elapsed() < Duration::from_secs(5) {
        r.chunk().await.unwrap();
    }
    assert!(spool_fds(&api, spool.path()) > 0);
    drop(r);
    let started = Instant::now();
    while spool_fds(&api, spool.path()) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "spool files still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A crash mid-download: nothing can be left, because nothing ever had a name.
    let mut r = api
        .http
        .get(&url)
        .bearer_auth("jane-token")
        .send()
        .await
        .unwrap();
    while spool_fds(&api, spool.path()) == 0 {
        r.chunk().await.unwrap();
    }
    api.kill_now();
    assert_eq!(listing(), 0, "nothing in {spool_dir} after kill -9");
}
