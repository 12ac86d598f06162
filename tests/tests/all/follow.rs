//! `merged.pcapng?follow=true` against a live capture of the simulated cluster: what Wireshark's
//! `tshark` reads of the followed stream is every packet written in the window, once, in time
//! order, across rotations, records written in two halves and a node added mid-follow; the
//! stream ends when the capture finishes and at `until`; a client that leaves leaves no `tail`
//! on any node; a node whose exec dies cuts the stream visibly; a quiet capture outlives the
//! node idle timeout; `node=` and `filter=` select what is followed; BusyBox pods follow too.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use packetcapture_tests::Scenario;

use crate::support::*;

/// A capture of 3 streams on 2 nodes at 100 packets/s each, rotating every 0.7 s, finishing
/// after `finish_ms`; `faults` for the cluster (a slow exec makes the follower lag behind the
/// writer, so rotations come while bytes of the renamed file are still to be read).
fn scenario(finish_ms: u64, faults: &str) -> Scenario {
    Scenario::from_yaml(&format!(
        "users: [{{name: jane, token: jane-token}}]
clusters:
  - name: cluster
    nodes: [node-1, node-2, node-3]
    captures:
      - namespace: dev
        name: running
        live: {{rate: 100, rotateMs: 700, finishMs: {finish_ms}, splitRecords: true}}
        nodes:
          - {{node: node-1, state: Capturing, files: 1, size: 24}}
          - {{node: node-2, state: Capturing, files: 1, size: 24, interfaces: 2}}
    rbac:
      - {{subjects: [user:jane], verbs: [get], apiGroups: [projectcalico.org], resources: [packetcaptures/files]}}
    faults: {{{faults}}}
"
    ))
    .unwrap()
}

/// Packets as tshark reads them: (time in µs, interface name, payload text).
fn tshark_packets(file: &Path) -> Vec<(u64, String, String)> {
    tshark_matching(file, "")
}

/// The packets of `file` tshark's display filter `display` keeps (all when empty).
fn tshark_matching(file: &Path, display: &str) -> Vec<(u64, String, String)> {
    tshark_fields(
        file.to_str().unwrap(),
        std::process::Stdio::null(),
        display,
        &["frame.time_epoch", "frame.interface_name", "data.data"],
    )
    .0
    .into_iter()
    .map(|row| {
        let data = &row[2];
        let bytes: Vec<u8> = (0..data.len() / 2)
            .map(|i| u8::from_str_radix(&data[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        (
            epoch_nanos(&row[0]) / 1_000,
            row[1].clone(),
            String::from_utf8(bytes).unwrap(),
        )
    })
    .collect()
}

/// Follows until the response ends: the bytes and whether it ended cleanly.
async fn follow_to_end(api: &ApiProcess, query: &str) -> (Vec<u8>, bool) {
    let mut r = get(
        api,
        &format!("/download/dev/running/merged.pcapng?follow=true&{query}"),
        Some("jane-token"),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-pcapng");
    let mut body = Vec::new();
    // A follow that never ends is a failure, not a hung suite.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        match tokio::time::timeout_at(deadline, r.chunk()).await {
            Ok(Ok(Some(c))) => body.extend_from_slice(&c),
            Ok(Ok(None)) => return (body, true),
            Ok(Err(_)) => return (body, false),
            Err(_) => panic!(
                "the follow was still going after 90 s ({} bytes); the service's log:\n{}",
                body.len(),
                api.log_text()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_capture_gives_every_packet_once_in_time_order_until_it_finishes() {
    every_packet_once_in_time_order("execBandwidth: 2000").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_entry_pods_follow_as_well() {
    every_packet_once_in_time_order("execBandwidth: 2000, busybox: true").await;
}

/// Follows a capture from before it began to its end (a node joins a second in) and checks
/// what tshark reads against every packet the simulation wrote.
async fn every_packet_once_in_time_order(faults: &str) {
    let sim = start(&scenario(60_000, faults)).await;
    if faults.contains("busybox") && sim.local().busybox_bin.is_none() {
        panic!("busybox is not installed: .ci/run installs it (apt-get install busybox)");
    }
    let api = start_api(&sim, &[("PACKETCAPTURE_API_LOG_LEVEL", "info")]).await;
    let live = sim.local().live("dev", "running").unwrap();
    // A node joins the capture a second into the follow; the capture finishes 1.5 s later
    // (timed from here, not from the cluster's start, which a loaded machine delays).
    let cluster = sim.local();
    let adder = tokio::spawn({
        let cluster = cluster.clone();
        let live = live.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            cluster
                .add_live_stream("dev", "running", "node-3", "late")
                .unwrap();
            live.finish_in(Duration::from_millis(1500));
        }
    });
    // From before the capture began: what is on disk first, then what comes.
    let (body, whole) = follow_to_end(&api, "lag=3000&since=2020-01-01T00:00:00Z").await;
    adder.await.unwrap();
    assert!(whole, "the response ends cleanly when the capture finishes");
    assert!(live.finished());
    let file = sim.dir.path().join("followed.pcapng");
    std::fs::write(&file, &body).unwrap();
    let got = tshark_packets(&file);
    let written = live.written();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for w in &written {
        want.insert(
            packetcapture_tests::live::payload(&w.stream, w.seq),
            w.ts / 1000,
        );
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (micros, iface, text) in &got {
        *seen.entry(text.clone()).or_default() += 1;
        assert_eq!(want.get(text), Some(micros), "{text}: its time");
        assert!(
            text.starts_with(&format!("{iface}#")),
            "{text} under interface {iface}"
        );
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "no packet twice: {:?}",
        seen.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    let missing: Vec<&String> = want.keys().filter(|k| !seen.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} packets missing: {missing:?}",
        missing.len(),
        want.len()
    );
    // Time order within the lag (3 s): a packet may come after a later one only when its
    // stream was silent, or not known yet, for less than the lag; never by more.
    let mut latest = 0u64;
    for (micros, _, text) in &got {
        assert!(
            latest.saturating_sub(*micros) < 3_000_000,
            "{text} came {} µs after a later packet",
            latest - micros
        );
        latest = latest.max(*micros);
    }
    let capture = cluster.capture("dev", "running").unwrap();
    let rotated = capture["status"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["fileNames"].as_array().unwrap().clone())
        .filter(|n| n.as_str().unwrap().contains('-'))
        .count();
    assert!(
        rotated >= 6,
        "the streams rotated while followed ({rotated} rotated files)"
    );
    assert!(
        got.iter().any(|(_, iface, _)| iface.starts_with("node-3/")),
        "the node added mid-follow is in"
    );
    assert!(
        written.iter().any(|w| w.seq % 10 == 5),
        "records written in two halves are among them"
    );
}

/// The time `ms` milliseconds from now: nanoseconds since the epoch, and as RFC 3339.
fn until_in(ms: u64) -> (u128, String) {
    let until_ns = (std::time::SystemTime::now() + Duration::from_millis(ms))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let until = jiff::Timestamp::from_nanosecond(i128::try_from(until_ns).unwrap())
        .unwrap()
        .to_string();
    (until_ns, until)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_ends_at_until_and_a_client_that_leaves_leaves_no_tail() {
    let sim = start(&scenario(60_000, "")).await;
    let api = start_api(&sim, &[]).await;
    // until 1.5 s from now: the response ends by itself, every packet before it.
    let (until_ns, until) = until_in(1500);
    let started = Instant::now();
    let (body, whole) = follow_to_end(&api, &format!("lag=200&until={until}")).await;
    assert!(whole, "ends cleanly at until");
    assert!(started.elapsed() < Duration::from_secs(30));
    let file = sim.dir.path().join("until.pcapng");
    std::fs::write(&file, &body).unwrap();
    let got = tshark_packets(&file);
    assert!(!got.is_empty());
    assert!(got.iter().all(|(t, _, _)| u128::from(*t) * 1000 < until_ns));
    assert_execs_end_within_a_second(sim.local()).await;

    // A client that leaves mid-follow: every tail on every node ends.
    let mut r = get(
        &api,
        "/download/dev/running/merged.pcapng?follow=true",
        Some("jane-token"),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    r.chunk().await.unwrap();
    let t = Instant::now();
    while sim.local().running_execs.load(Ordering::SeqCst) < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the streams are followed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(r);
    assert_execs_end_within_a_second(sim.local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_exec_dies_cuts_the_followed_stream_and_the_log_names_it() {
    let sim = start(&scenario(60_000, "")).await;
    let api = start_api(&sim, &[("PACKETCAPTURE_API_LOG_LEVEL", "info")]).await;
    sim.local().set_faults(|f| {
        f.nodes.insert(
            "node-1".into(),
            packetcapture_tests::scenario::ExecFaults {
                exec_cut_after: Some(2_000),
                ..Default::default()
            },
        );
    });
    let (_, whole) = follow_to_end(&api, "lag=200").await;
    assert!(!whole, "the client sees a cut stream, never a clean end");
    let log = api.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("download aborted") && l.contains("node-1")),
        "the log names the node:\n{log}"
    );
    assert_execs_end_within_a_second(sim.local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_and_lag_are_checked() {
    let sim = start(&scenario(60_000, "")).await;
    let api = start_api(&sim, &[]).await;
    for (query, message) in [
        (
            "follow=yes",
            "invalid follow \"yes\": must be true or false",
        ),
        (
            "lag=10",
            "invalid lag \"10\": must be given with follow=true only",
        ),
        (
            "follow=true&lag=20000",
            "invalid lag \"20000\": must be milliseconds from 0 to 10000",
        ),
    ] {
        let (status, body) = text(
            get(
                &api,
                &format!("/download/dev/running/merged.pcapng?{query}"),
                Some("jane-token"),
                &[],
            )
            .await,
        )
        .await;
        assert_eq!((status, body.trim_end()), (400, message), "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_capture_filtered_on_the_server_keeps_what_tshark_keeps() {
    let sim = start(&scenario(60_000, "")).await;
    let api = start_api(&sim, &[]).await;
    let live = sim.local().live("dev", "running").unwrap();
    live.finish_in(Duration::from_millis(2000));
    // The same window twice at once: everything, and only one source port (one stream's
    // packets), compiled by libpcap on the service.
    let query = "lag=300&since=2020-01-01T00:00:00Z";
    let filtered_query = format!("{query}&filter=udp%20src%20port%2040001");
    let (all, filtered) = tokio::join!(
        follow_to_end(&api, query),
        follow_to_end(&api, &filtered_query)
    );
    assert!(all.1 && filtered.1, "both end cleanly");
    let (all_file, filtered_file) = (
        sim.dir.path().join("all.pcapng"),
        sim.dir.path().join("filtered.pcapng"),
    );
    std::fs::write(&all_file, &all.0).unwrap();
    std::fs::write(&filtered_file, &filtered.0).unwrap();
    let payloads = |packets: Vec<(u64, String, String)>| {
        let mut p: Vec<String> = packets.into_iter().map(|(_, _, text)| text).collect();
        p.sort();
        p
    };
    let kept = payloads(tshark_packets(&filtered_file));
    let want = payloads(tshark_matching(&all_file, "udp.srcport == 40001"));
    let everything = tshark_packets(&all_file).len();
    assert!(
        !kept.is_empty() && kept.len() < everything,
        "{} of {everything}",
        kept.len()
    );
    assert_eq!(kept, want, "the server's filter and tshark's agree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_followed_capture_is_not_cut_by_the_node_idle_timeout() {
    // Capturing, but nothing is written: the follow waits, past NODE_IDLE_TIMEOUT, until `until`.
    let sim = start(
        &Scenario::from_yaml(
            "users: [{name: jane, token: jane-token}]
clusters:
  - name: cluster
    nodes: [node-1]
    captures:
      - namespace: dev
        name: running
        nodes:
          - {node: node-1, state: Capturing, files: 1, size: 2000}
    rbac:
      - {subjects: [user:jane], verbs: [get], apiGroups: [projectcalico.org], resources: [packetcaptures/files]}
",
        )
        .unwrap(),
    )
    .await;
    let api = start_api(&sim, &[("PACKETCAPTURE_API_NODE_IDLE_TIMEOUT", "1s")]).await;
    let (_, until) = until_in(3000);
    let started = Instant::now();
    let (body, whole) = follow_to_end(&api, &format!("until={until}")).await;
    assert!(whole, "a quiet follow ends cleanly at until");
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "it lasted until until"
    );
    assert!(body.len() >= 28, "the section header came at once");
    assert_execs_end_within_a_second(sim.local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selects_the_streams_followed() {
    let sim = start(&scenario(60_000, "")).await;
    let api = start_api(&sim, &[]).await;
    let live = sim.local().live("dev", "running").unwrap();
    live.finish_in(Duration::from_millis(1500));
    let (body, whole) = follow_to_end(&api, "node=node-2&lag=200&since=2020-01-01T00:00:00Z").await;
    assert!(whole);
    let file = sim.dir.path().join("node-2.pcapng");
    std::fs::write(&file, &body).unwrap();
    let got = tshark_packets(&file);
    let mut interfaces: Vec<&str> = got.iter().map(|(_, iface, _)| iface.as_str()).collect();
    interfaces.sort_unstable();
    interfaces.dedup();
    assert_eq!(
        interfaces.len(),
        2,
        "node-2's two interfaces only: {interfaces:?}"
    );
    assert!(
        interfaces.iter().all(|i| i.starts_with("node-2/")),
        "{interfaces:?}"
    );
    // Every packet node-2 wrote, once.
    let mut want: Vec<String> = live
        .written()
        .iter()
        .filter(|w| w.stream.starts_with("node-2/"))
        .map(|w| packetcapture_tests::live::payload(&w.stream, w.seq))
        .collect();
    want.sort();
    let mut seen: Vec<String> = got.into_iter().map(|(_, _, text)| text).collect();
    seen.sort();
    assert_eq!(seen, want);
}
