//! Managed clusters through the simulated Voltron, end to end.

use crate::support::*;

/// Status and body of a GET as `token`.
async fn get_bytes(
    api: &ApiProcess,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> (u16, bytes::Bytes) {
    let r = get(api, path, Some(token), headers).await;
    (r.status().as_u16(), r.bytes().await.unwrap())
}

fn files_of(sim: &TestSim, cluster: &str) -> Vec<(String, String)> {
    capture_dir(sim, cluster, "dev", "web-traffic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_capture_name_returns_each_cluster_s_own_files_through_voltron() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    let jane = sim.token("jane");
    let (status, local) = get_bytes(&api, "/download/dev/web-traffic/files.zip", &jane, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(zip_digests(&local), files_of(&sim, "cluster"));
    let (status, east) = get_bytes(
        &api,
        "/download/dev/web-traffic/files.zip",
        &jane,
        &[("X-Cluster-ID", "east")],
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&east));
    assert_eq!(zip_digests(&east), files_of(&sim, "east"));
    let seen = sim.voltron.requests();
    assert!(
        seen.iter()
            .any(|r| r.uri.contains("/exec") && r.cluster_header.as_deref() == Some("east")),
        "exec went through Voltron"
    );
    assert!(
        seen.iter().any(|r| r.uri.contains("subjectaccessreviews")),
        "authorization went to the managed cluster"
    );
    assert!(
        !sim.local()
            .requests()
            .iter()
            .any(|r| r.uri.contains("/packetcaptures/web-traffic") && r.cluster_header.is_some()),
        "the management cluster's API server saw no forwarded request"
    );
    assert!(
        sim.cluster("east")
            .requests()
            .iter()
            .all(|r| !r.uri.contains("tokenreviews")),
        "authentication stays local"
    );
    let (status, listing) = get_bytes(
        &api,
        "/files/dev/web-traffic",
        &jane,
        &[("x-cluster-id", "east")],
    )
    .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&listing).unwrap();
    assert_eq!(v["cluster"], "east");
    assert_eq!(v["nodes"][0]["node"], "east-node-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_allowed_in_one_cluster_only_gets_200_there_and_403_in_the_other() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    let admin = sim.token("ops-admin");
    assert_eq!(
        get_bytes(&api, "/files/dev/web-traffic", &admin, &[])
            .await
            .0,
        200
    );
    let (status, body) = get_bytes(
        &api,
        "/files/dev/web-traffic",
        &admin,
        &[("X-Cluster-ID", "east")],
    )
    .await;
    assert_eq!(
        (status, String::from_utf8_lossy(&body).as_ref()),
        (
            403,
            "ops-admin is not authorized to get packetcaptures/files in namespace dev\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_disconnected_and_malformed_cluster_ids_are_refused() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    let jane = sim.token("jane");
    let (status, body) = get_bytes(
        &api,
        "/files/dev/web-traffic",
        &jane,
        &[("X-Cluster-ID", "west")],
    )
    .await;
    assert_eq!(
        (status, String::from_utf8_lossy(&body).as_ref()),
        (404, "managed cluster west not found\n")
    );
    sim.cluster("east")
        .connected
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // The ManagedCluster answer is cached for a few seconds; a fresh API sees the new state.
    let api = start_api(&sim, &[]).await;
    let (status, body) = get_bytes(
        &api,
        "/files/dev/web-traffic",
        &jane,
        &[("X-Cluster-ID", "east")],
    )
    .await;
    assert_eq!(
        (status, String::from_utf8_lossy(&body).as_ref()),
        (503, "managed cluster east is not connected\n")
    );
    let long = "a".repeat(300);
    for bad in ["a/b", long.as_str(), "East"] {
        let (status, _) = get_bytes(
            &api,
            "/files/dev/web-traffic",
            &jane,
            &[("X-Cluster-ID", bad)],
        )
        .await;
        assert_eq!(status, 400, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voltron_down_is_503_saying_so() {
    let sim = start_default().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("https://127.0.0.1:{closed}");
    let api = start_api(
        &sim,
        &[(
            "PACKETCAPTURE_API_MULTI_CLUSTER_FORWARDING_ENDPOINT",
            &endpoint,
        )],
    )
    .await;
    let (status, body) = get_bytes(
        &api,
        "/files/dev/web-traffic",
        &sim.token("jane"),
        &[("X-Cluster-ID", "east")],
    )
    .await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("Voltron unavailable while trying to"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_s_impersonation_headers_work_for_managed_clusters() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    let headers = [
        ("X-Cluster-ID", "east"),
        ("Impersonate-User", "jane"),
        ("Impersonate-Group", "capture-readers"),
    ];
    let (status, zip) = get_bytes(
        &api,
        "/download/dev/web-traffic/files.zip",
        &sim.token("gateway"),
        &headers,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&zip));
    assert_eq!(zip_digests(&zip), files_of(&sim, "east"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_cluster_serves_the_merge_one_file_its_ranges_and_head_through_voltron() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    let jane = sim.token("jane");
    let east = [("X-Cluster-ID", "east")];
    let dir = |node: &str| {
        sim.node_dir("east", node)
            .join("var/log/calico/pcap/dev/web-traffic")
    };
    let mut files: Vec<(String, std::path::PathBuf)> = Vec::new();
    for node in ["east-node-1", "east-node-2"] {
        for entry in std::fs::read_dir(dir(node)).unwrap().flatten() {
            files.push((node.to_owned(), entry.path()));
        }
    }
    let packets: u64 = files
        .iter()
        .map(|(_, p)| {
            packetcapture_tests::pcap::inspect(&std::fs::read(p).unwrap())
                .unwrap()
                .0
        })
        .sum();

    // The merge: every packet of east's files, none of the local cluster's.
    let (status, merged) = get_bytes(
        &api,
        "/download/dev/web-traffic/merged.pcapng",
        &jane,
        &east,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&merged));
    assert_eq!(
        packetcapture_tests::pcap::count_pcapng_packets(&merged),
        Some(packets)
    );

    // One file, a range of it, and HEAD: east's bytes, read through Voltron.
    let (node, path) = &files[0];
    let disk = std::fs::read(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy();
    let file_path = format!("/files/dev/web-traffic/{node}/{name}");
    let (status, whole) = get_bytes(&api, &file_path, &jane, &east).await;
    assert_eq!(status, 200);
    assert_eq!(whole, disk);
    let r = get(
        &api,
        &file_path,
        Some(&jane),
        &[("X-Cluster-ID", "east"), ("Range", "bytes=100-199")],
    )
    .await;
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 100-199/{}", disk.len()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), disk[100..200]);
    let reads = || {
        sim.voltron
            .requests()
            .iter()
            .filter(|r| r.uri.contains("command=dd") && r.cluster_header.as_deref() == Some("east"))
            .count()
    };
    let before = reads();
    assert!(before >= 2, "the reads went through Voltron");
    let r = head(&api, &file_path, Some(&jane), &[("X-Cluster-ID", "east")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        disk.len().to_string().as_str()
    );
    assert!(r.bytes().await.unwrap().is_empty());
    assert_eq!(reads(), before, "HEAD reads nothing on the node");
    // The same name in the local cluster is not east's file.
    let (status, _) = get_bytes(&api, &file_path, &jane, &[]).await;
    assert_eq!(
        status, 404,
        "east's node is not a node of the local capture"
    );
}
