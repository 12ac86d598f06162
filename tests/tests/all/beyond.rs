//! End to end, with readers that are not ours: the merged pcapng read by Wireshark's
//! `capinfos` and `tshark`, selection, the zip's manifest checked by `sha256sum -c`, and one
//! file with Range through `curl` (a resume with `curl -C -` included).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use packetcapture_tests::Scenario;

use crate::support::*;

const SCENARIO: &str = r#"
users:
  - name: jane
    groups: [capture-readers]
    token: jane-token
clusters:
  - name: cluster
    nodes: [node-1, node-2, node-3]
    captures:
      - namespace: dev
        name: mesh
        sameClock: true
        nodes:
          - {node: node-1, state: Finished, files: 2, size: 60000, interfaces: 2, cutLastRecord: true}
          - {node: node-2, state: Finished, files: 2, size: 60000, cutLastRecord: true}
          - {node: node-3, state: Capturing, files: 1, size: 40000}
    rbac:
      - subjects: [group:capture-readers]
        verbs: [get]
        apiGroups: [projectcalico.org]
        resources: [packetcaptures/files]
        namespaces: [dev]
"#;

async fn world() -> (TestSim, ApiProcess) {
    let sim = start(&Scenario::from_yaml(SCENARIO).unwrap()).await;
    let api = start_api(&sim, &[]).await;
    (sim, api)
}

/// The whole records of a classic pcap (a cut last one left out): nanosecond timestamps.
fn whole_records(data: &[u8]) -> Vec<u64> {
    let nanos = data[..4] == 0xA1B2_3C4Du32.to_le_bytes();
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= data.len() {
        let field = |i: usize| u32::from_le_bytes(data[at + i..at + i + 4].try_into().unwrap());
        let (secs, frac, incl) = (field(0), field(4), field(8) as usize);
        if at + 16 + incl > data.len() {
            break;
        }
        let frac = if nanos {
            u64::from(frac)
        } else {
            u64::from(frac) * 1000
        };
        out.push(u64::from(secs) * 1_000_000_000 + frac);
        at += 16 + incl;
    }
    out
}

/// Per interface name (`node/caliXXX`), the timestamps of every whole packet on the nodes.
fn node_packets(sim: &TestSim) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for node in &sim.cluster("cluster").nodes {
        let dir = sim
            .node_dir("cluster", node)
            .join("var/log/calico/pcap/dev/mesh");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // `{pod}_{iface}[-{micros}].pcap`: the interface is after the `_`.
            let (_, rest) = name.trim_end_matches(".pcap").split_once('_').unwrap();
            let iface = rest.split('-').next().unwrap().to_owned();
            let data = std::fs::read(entry.path()).unwrap();
            out.entry(format!("{node}/{iface}"))
                .or_default()
                .extend(whole_records(&data));
        }
    }
    out
}

async fn save(api: &ApiProcess, path: &str, to: &Path) -> u16 {
    let r = get(api, path, Some("jane-token"), &[]).await;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.unwrap();
    if status == 200 && path.contains("merged.pcapng") {
        assert_eq!(headers["content-type"], "application/x-pcapng");
        assert_eq!(
            headers["content-disposition"],
            "attachment; filename=\"dev_mesh.pcapng\""
        );
    }
    std::fs::write(to, &body).unwrap();
    status
}

/// `tshark`'s view: per packet, epoch time (nanoseconds) and interface name.
fn tshark_packets(file: &Path) -> Vec<(u64, String)> {
    tshark_fields(
        file.to_str().unwrap(),
        std::process::Stdio::null(),
        "",
        &["frame.time_epoch", "frame.interface_name"],
    )
    .0
    .into_iter()
    .map(|row| (epoch_nanos(&row[0]), row[1].clone()))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_merged_file_holds_every_whole_packet_in_time_order_one_interface_per_stream() {
    let (sim, api) = world().await;
    let file = sim.dir.path().join("mesh.pcapng");
    assert_eq!(
        save(&api, "/download/dev/mesh/merged.pcapng", &file).await,
        200
    );
    let expected = node_packets(&sim);
    assert_eq!(expected.len(), 4, "node-1 has two interfaces: {expected:?}");
    let info = run("capinfos", &[file.to_str().unwrap()]);
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(info.contains("pcapng"), "{info}");
    assert!(info.contains("Strict time order:   True"), "{info}");
    assert!(
        info.contains(&format!("Number of packets:   {total}")),
        "every whole packet, the cut ones dropped ({total}):\n{info}"
    );
    assert!(info.contains("Number of interfaces in file: 4"), "{info}");
    assert_eq!(
        packetcapture_tests::pcap::count_pcapng_packets(&std::fs::read(&file).unwrap()),
        Some(total as u64),
        "the bench's own counter agrees with capinfos"
    );
    assert!(info.contains("nanoseconds (9)"), "{info}");
    let packets = tshark_packets(&file);
    let mut by_interface: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (ts, iface) in &packets {
        by_interface.entry(iface.clone()).or_default().push(*ts);
    }
    let mut expected_sorted = expected.clone();
    for v in expected_sorted.values_mut() {
        v.sort_unstable();
    }
    assert_eq!(
        by_interface, expected_sorted,
        "each stream's packets, to the nanosecond, under its node/interface name"
    );
    assert!(packets.windows(2).all(|w| w[0].0 <= w[1].0));
    // The nodes capture at the same time (sameClock), so time order interleaves them.
    let switches = packets.windows(2).filter(|w| w[0].1 != w[1].1).count();
    assert!(
        switches > total / 4,
        "{switches} changes of interface in {total} packets"
    );
    let cut = api
        .log_text()
        .matches("dropped the cut last record")
        .count();
    assert_eq!(
        cut, 3,
        "the two cut active files of node-1 and the one of node-2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_by_node_and_window_on_both_downloads() {
    let (sim, api) = world().await;
    let expected = node_packets(&sim);
    let node2: Vec<u64> = expected
        .iter()
        .filter(|(k, _)| k.starts_with("node-2/"))
        .flat_map(|(_, v)| v.clone())
        .collect();
    let mut sorted = node2.clone();
    sorted.sort_unstable();
    // A window in the middle of node-2's packets, in RFC 3339 with nanoseconds.
    let since = sorted[sorted.len() / 4];
    let until = sorted[sorted.len() * 3 / 4];
    let rfc = |ns: u64| {
        jiff::Timestamp::from_nanosecond(i128::from(ns))
            .unwrap()
            .to_string()
    };
    let path = format!(
        "/download/dev/mesh/merged.pcapng?node=node-2&since={}&until={}",
        rfc(since),
        rfc(until)
    );
    let file = sim.dir.path().join("window.pcapng");
    assert_eq!(save(&api, &path, &file).await, 200);
    let got = tshark_packets(&file);
    let want = sorted
        .iter()
        .filter(|t| **t >= since && **t < until)
        .count();
    assert_eq!(got.len(), want, "exactly the packets of the window");
    assert!(
        got.iter()
            .all(|(t, i)| *t >= since && *t < until && i.starts_with("node-2/"))
    );

    // The zip keeps exactly node-2's files that hold a packet of the window (each rotated
    // file's name says when it ended): windows at the start, the middle and the end of its
    // packets, and at least one of them leaves a file out.
    let dir = sim
        .node_dir("cluster", "node-2")
        .join("var/log/calico/pcap/dev/mesh");
    let files: Vec<(String, Vec<u64>)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, whole_records(&std::fs::read(e.path()).unwrap()))
        })
        .collect();
    let n = sorted.len();
    let mut left_out = 0;
    for (since, until) in [
        (sorted[0], sorted[n / 8]),
        (since, until),
        (sorted[n * 7 / 8], sorted[n - 1] + 1),
    ] {
        let zip_path = format!(
            "/download/dev/mesh/files.zip?node=node-2&since={}&until={}",
            rfc(since),
            rfc(until)
        );
        let r = get(&api, &zip_path, Some("jane-token"), &[]).await;
        assert_eq!(r.status(), 200);
        let names: Vec<String> = zip_digests(&r.bytes().await.unwrap())
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let mut holding: Vec<String> = files
            .iter()
            .filter(|(_, packets)| packets.iter().any(|t| *t >= since && *t < until))
            .map(|(name, _)| name.clone())
            .collect();
        holding.sort();
        assert_eq!(names, holding, "{zip_path}: the window's files of node-2");
        left_out += files.len() - names.len();
    }
    assert!(left_out > 0, "some window leaves a file out: {files:?}");

    let (status, body) = text(
        get(
            &api,
            "/download/dev/mesh/merged.pcapng?node=node-9",
            Some("jane-token"),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (400, "node node-9 is not a node of packetcapture dev/mesh\n")
    );
    let (status, _) = text(
        get(
            &api,
            "/download/dev/mesh/files.zip?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            Some("jane-token"),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(status, 400, "a reversed window");
    let (status, _) = text(
        get(
            &api,
            "/download/dev/mesh/merged.pcapng?since=2030-01-01T00:00:00Z",
            Some("jane-token"),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(status, 204, "no packet in the window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unzip_and_sha256sum_check_pass_and_catch_a_changed_file() {
    let (sim, api) = world().await;
    let dir = sim.dir.path().join("unzipped");
    std::fs::create_dir_all(&dir).unwrap();
    let zip = dir.join("files.zip");
    assert_eq!(save(&api, "/download/dev/mesh/files.zip", &zip).await, 200);
    run(
        "unzip",
        &["-q", zip.to_str().unwrap(), "-d", dir.to_str().unwrap()],
    );
    let check = |dir: &PathBuf| {
        Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(dir)
            .output()
            .unwrap()
    };
    let ok = check(&dir);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let lines = String::from_utf8_lossy(&ok.stdout).lines().count();
    assert_eq!(lines, 7, "every file of the capture is checked");
    let victim = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".pcap"))
        .unwrap()
        .path();
    let mut data = std::fs::read(&victim).unwrap();
    data[100] ^= 0xff;
    std::fs::write(&victim, data).unwrap();
    assert!(!check(&dir).status.success(), "a changed file is caught");
}

fn curl(api: &ApiProcess, sim: &TestSim, args: &[&str]) -> (String, Vec<u8>) {
    let headers = sim.dir.path().join("headers.txt");
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(sim.out.join("ca.crt"))
        .args(["-H", "Authorization: Bearer jane-token", "-D"])
        .arg(&headers)
        .args(args)
        .output()
        .expect("curl is installed");
    let _ = api;
    (
        std::fs::read_to_string(&headers).unwrap_or_default(),
        out.stdout,
    )
}

fn header_value<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_file_answers_every_range_case_over_http2_and_http1_and_curl_resumes_it() {
    let (sim, api) = world().await;
    let listing: serde_json::Value = serde_json::from_slice(
        &get(&api, "/files/dev/mesh", Some("jane-token"), &[])
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let node2 = listing["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "node-2")
        .unwrap();
    let path = node2["files"][0]["path"].as_str().unwrap().to_owned();
    let name = node2["files"][0]["name"].as_str().unwrap();
    assert_eq!(path, format!("/files/dev/mesh/node-2/{name}"));
    let disk = std::fs::read(
        sim.node_dir("cluster", "node-2")
            .join("var/log/calico/pcap/dev/mesh")
            .join(name),
    )
    .unwrap();
    let size = disk.len();
    let url = format!("{}{path}", api.url);

    // Every case over HTTP/2 and over HTTP/1.1.
    for (flag, proto) in [("--http2", "HTTP/2"), ("--http1.1", "HTTP/1.1")] {
        let (h, body) = curl(&api, &sim, &[flag, &url]);
        assert!(h.starts_with(&format!("{proto} 200")), "{h}");
        assert_eq!(body, disk);
        assert_eq!(header_value(&h, "accept-ranges"), Some("bytes"));
        assert_eq!(
            header_value(&h, "content-length"),
            Some(size.to_string().as_str())
        );
        let etag = header_value(&h, "etag").unwrap().to_owned();
        assert!(
            etag.starts_with('"'),
            "a Finished node's file has a strong tag: {etag}"
        );
        assert!(header_value(&h, "last-modified").unwrap().ends_with(" GMT"));

        // HEAD: the same headers, no body, and no read on the node.
        let reads = || {
            sim.local()
                .requests()
                .iter()
                .filter(|r| r.uri.contains("/exec") && r.uri.contains("command=dd"))
                .count()
        };
        let before = reads();
        let (h, body) = curl(&api, &sim, &[flag, "-I", &url]);
        assert!(h.starts_with(&format!("{proto} 200")), "{h}");
        assert!(body.is_empty() || String::from_utf8_lossy(&body).starts_with("HTTP/"));
        assert_eq!(
            header_value(&h, "content-length"),
            Some(size.to_string().as_str())
        );
        assert_eq!(header_value(&h, "etag"), Some(etag.as_str()));
        assert_eq!(reads(), before, "HEAD reads nothing on the node");
        let (h, _) = curl(&api, &sim, &[flag, "-I", "-r", "0-9", &url]);
        assert!(h.starts_with(&format!("{proto} 206")), "{h}");
        assert_eq!(header_value(&h, "content-length"), Some("10"));

        let (h, body) = curl(&api, &sim, &[flag, "-r", "100-199", &url]);
        assert!(h.starts_with(&format!("{proto} 206")), "{h}");
        assert_eq!(body, &disk[100..200]);
        assert_eq!(reads(), before + 1, "a GET reads on the node");
        assert_eq!(
            header_value(&h, "content-range"),
            Some(format!("bytes 100-199/{size}").as_str())
        );
        let (h, body) = curl(&api, &sim, &[flag, "-r", "-50", &url]);
        assert!(h.starts_with(&format!("{proto} 206")), "{h}");
        assert_eq!(body, &disk[size - 50..]);
        let (h, body) = curl(&api, &sim, &[flag, "-r", &format!("{}-", size - 10), &url]);
        assert!(h.starts_with(&format!("{proto} 206")), "{h}");
        assert_eq!(body, &disk[size - 10..]);
        let (h, _) = curl(&api, &sim, &[flag, "-r", &format!("{size}-"), &url]);
        assert!(h.starts_with(&format!("{proto} 416")), "{h}");
        assert_eq!(
            header_value(&h, "content-range"),
            Some(format!("bytes */{size}").as_str())
        );
        let (h, body) = curl(&api, &sim, &[flag, "-r", "0-9,20-29", &url]);
        assert!(
            h.starts_with(&format!("{proto} 200")),
            "several ranges are answered whole: {h}"
        );
        assert_eq!(body, disk);
        let (h, body) = curl(
            &api,
            &sim,
            &[flag, "-r", "0-9", "-H", "If-Range: \"stale\"", &url],
        );
        assert!(
            h.starts_with(&format!("{proto} 200")),
            "a stale If-Range gets the whole file: {h}"
        );
        assert_eq!(body, disk);
        let (h, body) = curl(
            &api,
            &sim,
            &[flag, "-r", "0-9", "-H", &format!("If-Range: {etag}"), &url],
        );
        assert!(h.starts_with(&format!("{proto} 206")), "{h}");
        assert_eq!(body, &disk[..10]);
        // If-Range with a date: the exact Last-Modified of a finished file holds, any other
        // date does not (the whole file).
        let modified = header_value(&h, "last-modified").unwrap().to_owned();
        let (h, body) = curl(
            &api,
            &sim,
            &[
                flag,
                "-r",
                "0-9",
                "-H",
                &format!("If-Range: {modified}"),
                &url,
            ],
        );
        assert!(h.starts_with(&format!("{proto} 206")), "{h}");
        assert_eq!(body, &disk[..10]);
        let (h, body) = curl(
            &api,
            &sim,
            &[
                flag,
                "-r",
                "0-9",
                "-H",
                "If-Range: Sun, 06 Nov 1994 08:49:37 GMT",
                &url,
            ],
        );
        assert!(h.starts_with(&format!("{proto} 200")), "an older date: {h}");
        assert_eq!(body, disk);

        // A download cut after 1000 bytes, resumed by curl to the exact file.
        let out = sim.dir.path().join("resumed.pcap");
        std::fs::write(&out, &disk[..1000]).unwrap();
        let (h, _) = curl(
            &api,
            &sim,
            &[flag, "-C", "-", "-o", out.to_str().unwrap(), &url],
        );
        assert!(h.starts_with(&format!("{proto} 206")), "{h}");
        assert_eq!(std::fs::read(&out).unwrap(), disk);
    }

    // A node still capturing: the tag is weak, and a file not in the status is 404.
    let node3 = listing["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "node-3")
        .unwrap();
    let growing = format!("{}{}", api.url, node3["files"][0]["path"].as_str().unwrap());
    let (h, _) = curl(&api, &sim, &[&growing]);
    assert!(header_value(&h, "etag").unwrap().starts_with("W/"), "{h}");
    for (path, status) in [
        ("/files/dev/mesh/node-2/nothing.pcap", 404),
        ("/files/dev/mesh/node-9/x.pcap", 404),
        ("/files/dev/mesh/node-2/..", 400),
        ("/files/dev/mesh/node-2/a%2Fb", 400),
        ("/files/dev/mesh/node-2/a%00b", 400),
    ] {
        let (code, _) = text(get(&api, path, Some("jane-token"), &[]).await).await;
        assert_eq!(code, status, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_entry_pods_serve_ranges_and_merges_too() {
    let (sim, api) = world().await;
    sim.local().set_faults(|f| f.busybox = true);
    let listing: serde_json::Value = serde_json::from_slice(
        &get(&api, "/files/dev/mesh", Some("jane-token"), &[])
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let node = listing["nodes"][1]["node"].as_str().unwrap();
    let file = &listing["nodes"][1]["files"][1];
    let path = file["path"].as_str().unwrap();
    let whole = std::fs::read(
        sim.node_dir("cluster", node)
            .join("var/log/calico/pcap/dev/mesh")
            .join(file["name"].as_str().unwrap()),
    )
    .unwrap();
    let (h, body) = curl(&api, &sim, &["-r", "10-19", &format!("{}{path}", api.url)]);
    assert!(h.starts_with("HTTP/2 206"), "{h}");
    assert!(
        h.to_ascii_lowercase()
            .contains(&format!("content-range: bytes 10-19/{}", whole.len())),
        "{h}"
    );
    assert_eq!(body, whole[10..20], "bytes 10 to 19 of {node}'s file");
    let file = sim.dir.path().join("bb.pcapng");
    assert_eq!(
        save(&api, "/download/dev/mesh/merged.pcapng", &file).await,
        200
    );
    let total: usize = node_packets(&sim).values().map(Vec::len).sum();
    assert!(
        run("capinfos", &[file.to_str().unwrap()])
            .contains(&format!("Number of packets:   {total}"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_pcap_fails_the_merge_with_502_naming_it() {
    let (sim, api) = world().await;
    let dir = sim
        .node_dir("cluster", "node-3")
        .join("var/log/calico/pcap/dev/mesh");
    let victim = std::fs::read_dir(&dir).unwrap().flatten().next().unwrap();
    std::fs::write(victim.path(), b"PK\x03\x04 a zip, not a capture").unwrap();
    let (status, body) = text(
        get(
            &api,
            "/download/dev/mesh/merged.pcapng",
            Some("jane-token"),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(status, 502);
    assert!(
        body.contains(&format!(
            "file {} on node node-3 is not a pcap file",
            victim.file_name().to_string_lossy()
        )),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_the_status_lists_but_the_node_no_longer_has_is_left_out_of_every_answer() {
    for busybox in [false, true] {
        let (sim, api) = world().await;
        sim.local().set_faults(|f| f.busybox = busybox);
        // Felix's retention removes a rotated file; the status still lists it.
        let dir = sim
            .node_dir("cluster", "node-1")
            .join("var/log/calico/pcap/dev/mesh");
        let mut rotated: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains('-'))
            .collect();
        rotated.sort();
        let gone = rotated[0].clone();
        std::fs::remove_file(dir.join(&gone)).unwrap();
        let on_nodes = capture_dir(&sim, "cluster", "dev", "mesh");
        assert!(!on_nodes.iter().any(|(n, _)| n.ends_with(&gone)));

        // The listing shows what is on the node.
        let (status, body) =
            text(get(&api, "/files/dev/mesh", Some("jane-token"), &[]).await).await;
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains(&gone), "{body}");
        assert!(body.contains(&rotated[1]), "{body}");

        // Both zips, whole directory and named files (a window names them), hold what is there.
        for path in [
            "/download/dev/mesh/files.zip",
            "/download/dev/mesh/files.zip?since=2000-01-01T00:00:00Z",
        ] {
            let r = get(&api, path, Some("jane-token"), &[]).await;
            assert_eq!(r.status(), 200, "{path} (busybox: {busybox})");
            assert_eq!(zip_digests(&r.bytes().await.unwrap()), on_nodes, "{path}");
        }

        // The merge holds every whole packet of the files that are there.
        let file = sim.dir.path().join("left-out.pcapng");
        assert_eq!(
            save(&api, "/download/dev/mesh/merged.pcapng", &file).await,
            200
        );
        let total: usize = node_packets(&sim).values().map(Vec::len).sum();
        assert_eq!(
            packetcapture_tests::pcap::count_pcapng_packets(&std::fs::read(&file).unwrap()),
            Some(total as u64),
            "busybox: {busybox}"
        );

        // The file itself is not found, and the log names what was left out.
        let (status, body) = text(
            get(
                &api,
                &format!("/files/dev/mesh/node-1/{gone}"),
                Some("jane-token"),
                &[],
            )
            .await,
        )
        .await;
        assert_eq!(status, 404, "{body}");
        let log = api.log_text();
        assert!(
            log.lines()
                .any(|l| l.contains("gone from their node") && l.contains(&gone)),
            "{log}"
        );
    }
}
