//! End to end: the simulated cluster and the real `packetcapture-api` binary, over HTTPS.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_capture_downloads_byte_identical_for_a_user_who_may() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    let admin = sim.token("ops-admin");
    for (ns, name) in [
        ("dev", "web-traffic"),
        ("dev", "dns-live"),
        ("payments", "checkout"),
    ] {
        let r = get(
            &api,
            &format!("/download/{ns}/{name}/files.zip"),
            Some(&admin),
            &[],
        )
        .await;
        assert_eq!(r.status(), 200, "{ns}/{name}");
        assert_eq!(r.headers()["content-type"], "application/zip");
        assert_eq!(
            r.headers()["content-disposition"],
            "attachment; filename=files.zip"
        );
        // Finished everywhere: planned, with its length; dns-live still captures: streamed.
        let finished = name != "dns-live";
        let length = r
            .headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap().parse::<usize>().unwrap());
        assert_eq!(
            r.headers()["cache-control"],
            if finished { "no-cache" } else { "no-store" }
        );
        assert_eq!(length.is_some(), finished, "{ns}/{name}");
        let body = r.bytes().await.unwrap();
        if let Some(length) = length {
            assert_eq!(length, body.len(), "{ns}/{name}");
        }
        assert_eq!(
            zip_digests(&body),
            capture_dir(&sim, "cluster", ns, name),
            "{ns}/{name}"
        );
    }
    let three_nodes = get(
        &api,
        "/download/dev/web-traffic/files.zip",
        Some(&sim.token("jane")),
        &[],
    )
    .await;
    assert_eq!(zip_digests(&three_nodes.bytes().await.unwrap()).len(), 6);
    let r = get(&api, "/download/dev/scheduled/files.zip", Some(&admin), &[]).await;
    assert_eq!(r.status(), 204, "a capture without files");
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_the_spec_s_status_message_and_headers() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    let jane = sim.token("jane");
    let r = get(&api, "/download/dev/web-traffic/files.zip", None, &[]).await;
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(text(r).await.0, 401);
    assert_eq!(
        text(
            get(
                &api,
                "/download/dev/web-traffic/files.zip",
                Some("forged"),
                &[]
            )
            .await
        )
        .await
        .0,
        401
    );
    assert_eq!(
        text(
            get(
                &api,
                "/download/dev/web-traffic/files.zip",
                Some(&sim.token("bob")),
                &[]
            )
            .await
        )
        .await,
        (
            403,
            "bob is not authorized to get packetcaptures/files in namespace dev\n".into()
        )
    );
    assert_eq!(
        text(
            get(
                &api,
                "/download/payments/checkout/files.zip",
                Some(&jane),
                &[]
            )
            .await
        )
        .await,
        (
            403,
            "jane is not authorized to get packetcaptures/files in namespace payments\n".into()
        )
    );
    assert_eq!(
        text(get(&api, "/download/dev/nope/files.zip", Some(&jane), &[]).await).await,
        (404, "packetcapture dev/nope not found\n".into())
    );
    let r = get(&api, "/download/dev/web-traffic/other.zip", None, &[]).await;
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(text(r).await, (400, "request URL is malformed\n".into()));
    let r = api
        .http
        .post(format!("{}/download/dev/web-traffic/files.zip", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers()["allow"].to_str().unwrap()),
        (405, "GET, HEAD")
    );
    assert_eq!(text(get(&api, "/nothing", None, &[]).await).await.0, 404);
    let (status, body) = text(get(&api, "/version", None, &[]).await).await;
    assert_eq!(status, 200);
    assert!(body.contains("gitCommit"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_shows_what_is_on_the_nodes_now() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    let (status, body) = text(
        get(
            &api,
            "/files/dev/web-traffic",
            Some(&sim.token("jane")),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["cluster"], "cluster");
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        let node = n["node"].as_str().unwrap();
        let dir = sim
            .node_dir("cluster", node)
            .join("var/log/calico/pcap/dev/web-traffic");
        for f in n["files"].as_array().unwrap() {
            let path = dir.join(f["name"].as_str().unwrap());
            assert_eq!(
                f["size"].as_u64().unwrap(),
                std::fs::metadata(&path).unwrap().len(),
                "{}",
                path.display()
            );
            assert!(f["modified"].as_str().unwrap().ends_with('Z'));
        }
        assert_eq!(n["state"], "Finished");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_needs_finished_then_removes_files_and_status() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    let admin = sim.token("ops-admin");
    let delete = |path: &'static str| {
        let (http, url, admin) = (api.http.clone(), api.url.clone(), admin.clone());
        async move {
            http.delete(format!("{url}{path}"))
                .bearer_auth(admin)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        text(delete("/files/dev/dns-live").await).await,
        (409, "capture state is not Finished\n".into())
    );
    let jane = api
        .http
        .delete(format!("{}/files/dev/web-traffic", api.url))
        .bearer_auth(sim.token("jane"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        text(jane).await,
        (
            403,
            "jane is not authorized to delete packetcaptures/files in namespace dev\n".into()
        )
    );
    assert_eq!(delete("/files/dev/web-traffic").await.status(), 204);
    assert!(
        capture_dir(&sim, "cluster", "dev", "web-traffic").is_empty(),
        "files removed from every node"
    );
    let stored =
        sim.local().captures.lock().unwrap()[&("dev".to_owned(), "web-traffic".to_owned())].clone();
    for f in stored["status"]["files"].as_array().unwrap() {
        assert_eq!(f["fileNames"], serde_json::json!([]));
    }
    assert_eq!(
        get(
            &api,
            "/download/dev/web-traffic/files.zip",
            Some(&admin),
            &[]
        )
        .await
        .status(),
        204
    );
    assert_eq!(
        delete("/files/dev/web-traffic").await.status(),
        204,
        "a second delete is 204 again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_name_on_two_nodes_is_kept_apart_by_the_node_in_front() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    // The same name on node-1 and node-2 (different bytes), reported by both in the status.
    for (node, data) in [("node-1", b"from one".as_slice()), ("node-2", b"from two")] {
        let dir = sim
            .node_dir("cluster", node)
            .join("var/log/calico/pcap/dev/web-traffic");
        std::fs::write(dir.join("shared_eth0.pcap"), data).unwrap();
    }
    {
        let mut captures = sim.local().captures.lock().unwrap();
        let capture = captures
            .get_mut(&("dev".to_owned(), "web-traffic".to_owned()))
            .unwrap();
        for entry in capture["status"]["files"].as_array_mut().unwrap() {
            if entry["node"] != "node-3" {
                entry["fileNames"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!("shared_eth0.pcap"));
            }
        }
    }
    let r = get(
        &api,
        "/download/dev/web-traffic/files.zip",
        Some(&sim.token("jane")),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let entries = zip_digests(&r.bytes().await.unwrap());
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert!(names.contains(&"node-1/shared_eth0.pcap"), "{names:?}");
    assert!(names.contains(&"node-2/shared_eth0.pcap"), "{names:?}");
    assert!(!names.contains(&"shared_eth0.pcap"));
    assert_eq!(entries, capture_dir(&sim, "cluster", "dev", "web-traffic"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_directory_is_gone_has_no_files() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    std::fs::remove_dir_all(
        sim.node_dir("cluster", "node-3")
            .join("var/log/calico/pcap/dev/web-traffic"),
    )
    .unwrap();
    let r = get(
        &api,
        "/download/dev/web-traffic/files.zip",
        Some(&sim.token("jane")),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        zip_digests(&r.bytes().await.unwrap()),
        capture_dir(&sim, "cluster", "dev", "web-traffic")
    );
    let (_, listing) = text(
        get(
            &api,
            "/files/dev/web-traffic",
            Some(&sim.token("jane")),
            &[],
        )
        .await,
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(v["nodes"][2]["files"], serde_json::json!([]));
    for node in ["node-1", "node-2"] {
        std::fs::remove_dir_all(
            sim.node_dir("cluster", node)
                .join("var/log/calico/pcap/dev/web-traffic"),
        )
        .unwrap();
    }
    assert_eq!(
        get(
            &api,
            "/download/dev/web-traffic/files.zip",
            Some(&sim.token("jane")),
            &[]
        )
        .await
        .status(),
        204
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_failures_are_502_or_503_naming_what_failed() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    sim.local().set_faults(|f| f.api_server_error = Some(503));
    let (status, body) = text(
        get(
            &api,
            "/download/dev/web-traffic/files.zip",
            Some(&sim.token("jane")),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("Kubernetes API unavailable while trying to create tokenreview"),
        "{body}"
    );
    sim.local().set_faults(|f| f.api_server_error = Some(500));
    let (status, body) = text(
        get(
            &api,
            "/files/dev/web-traffic",
            Some(&sim.token("ops-admin")),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("Kubernetes API failed to"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_entry_pod_is_502_naming_the_node() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    sim.local()
        .set_faults(|f| f.missing_entry_pods = vec!["node-2".into()]);
    let (status, body) = text(
        get(
            &api,
            "/download/dev/web-traffic/files.zip",
            Some(&sim.token("jane")),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (502, "no running entry pod found on node node-2\n")
    );
}

/// Downloads as jane, reading until the end or a failure: `(bytes received, failed)`. The
/// response head must come (the status line is sent once the first file is found): a server
/// that answers nothing at all fails this, it is not a "failed transfer".
async fn download_until_failure(api: &ApiProcess, sim: &TestSim) -> (Vec<u8>, bool) {
    let url = format!("{}/download/dev/web-traffic/files.zip", api.url);
    let mut r = api
        .http
        .get(url)
        .bearer_auth(sim.token("jane"))
        .send()
        .await
        .expect("a response head before the failure");
    assert_eq!(
        r.status(),
        200,
        "the first file was found before the failure"
    );
    let mut received = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(c)) => received.extend_from_slice(&c),
            Ok(None) => return (received, false),
            Err(_) => return (received, true),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_cut_mid_stream_fails_the_transfer_and_leaves_no_whole_zip() {
    let sim = start_default().await;
    // One node at a time: node-1's first file is sent before its exec is cut.
    let api = start_api(&sim, &[("PACKETCAPTURE_API_FETCH_CONCURRENCY", "1")]).await;
    // Trickling, so the first file is surely on its way when the cut comes.
    sim.local().set_faults(|f| {
        f.exec_cut_after = Some(250_000);
        f.exec_bandwidth = Some(2_000_000);
    });
    let (received, failed) = download_until_failure(&api, &sim).await;
    assert!(failed, "the client must see a failed transfer");
    // The zip had begun (its first entry's header) when the cut came.
    assert!(
        received.starts_with(b"PK\x03\x04"),
        "the zip had begun before the cut: {} bytes",
        received.len()
    );
    assert!(
        zip::ZipArchive::new(std::io::Cursor::new(received)).is_err(),
        "what arrived does not open as a zip"
    );
    assert!(
        api.log_text().contains("download aborted"),
        "the abort is logged:\n{}",
        api.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_that_fails_at_the_end_fails_the_transfer() {
    let sim = start_default().await;
    let api = start_api(&sim, &[("PACKETCAPTURE_API_FETCH_CONCURRENCY", "1")]).await;
    sim.local().set_faults(|f| {
        f.exec_exit_status = Some(2);
        f.exec_bandwidth = Some(2_000_000);
    });
    let (received, failed) = download_until_failure(&api, &sim).await;
    assert!(failed);
    assert!(!received.is_empty(), "a head and bytes, then the cut");
    assert!(zip::ZipArchive::new(std::io::Cursor::new(received)).is_err());
    assert!(api.log_text().contains("exit code 2"), "{}", api.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_ends_the_exec_within_a_second() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    sim.local().set_faults(|f| f.exec_bandwidth = Some(100_000));
    let mut r = get(
        &api,
        "/download/dev/web-traffic/files.zip",
        Some(&sim.token("jane")),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    r.chunk().await.unwrap();
    assert!(
        sim.local()
            .running_execs
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
    drop(r);
    assert_execs_end_within_a_second(sim.local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_download_in_flight_finish_whole_then_exits_zero() {
    let sim = start_default().await;
    let mut api = start_api(&sim, &[]).await;
    // About two seconds per node: the download is surely running when SIGTERM comes.
    sim.local().set_faults(|f| f.exec_bandwidth = Some(500_000));
    let mut r = get(
        &api,
        "/download/dev/web-traffic/files.zip",
        Some(&sim.token("jane")),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut received = r.chunk().await.unwrap().unwrap().to_vec();
    api.terminate();
    while let Some(chunk) = r.chunk().await.expect("a download in flight is not cut") {
        received.extend_from_slice(&chunk);
    }
    assert_eq!(
        zip_digests(&received),
        capture_dir(&sim, "cluster", "dev", "web-traffic")
    );
    let status = api
        .exit_within(std::time::Duration::from_secs(10))
        .await
        .expect("the service exits once drained");
    assert!(status.success(), "{status}:\n{}", api.log_text());
    let log = api.log_text();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("drained=1 cut=0"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_outlives_the_shutdown_grace_is_cut_and_the_service_exits_zero() {
    let sim = start_default().await;
    let mut api = start_api(&sim, &[("PACKETCAPTURE_API_SHUTDOWN_GRACE", "1s")]).await;
    sim.local().set_faults(|f| f.exec_bandwidth = Some(50_000));
    let (received, failed) = {
        let mut r = get(
            &api,
            "/download/dev/web-traffic/files.zip",
            Some(&sim.token("jane")),
            &[],
        )
        .await;
        assert_eq!(r.status(), 200);
        let mut received = r.chunk().await.unwrap().unwrap().to_vec();
        api.terminate();
        loop {
            match r.chunk().await {
                Ok(Some(c)) => received.extend_from_slice(&c),
                Ok(None) => break (received, false),
                Err(_) => break (received, true),
            }
        }
    };
    assert!(failed, "a cut download is a failed transfer");
    assert!(zip::ZipArchive::new(std::io::Cursor::new(received)).is_err());
    let status = api
        .exit_within(std::time::Duration::from_secs(10))
        .await
        .expect("the service exits after the grace");
    assert!(status.success(), "{status}:\n{}", api.log_text());
    let log = api.log_text();
    assert!(log.contains("drained=0 cut=1"), "{log}");
    assert_execs_end_within_a_second(sim.local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_is_checked_by_the_cluster() {
    let sim = start_default().await;
    let api = start_api(&sim, &[]).await;
    let gw = sim.token("gateway");
    let r = get(
        &api,
        "/files/dev/web-traffic",
        Some(&gw),
        &[
            ("Impersonate-User", "jane"),
            ("Impersonate-Group", "capture-readers"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = get(
        &api,
        "/files/dev/web-traffic",
        Some(&gw),
        &[("Impersonate-User", "jane")],
    )
    .await;
    assert_eq!(
        text(r).await,
        (
            403,
            "jane is not authorized to get packetcaptures/files in namespace dev\n".into()
        )
    );
    let r = get(
        &api,
        "/files/dev/web-traffic",
        Some(&sim.token("bob")),
        &[("Impersonate-User", "ops-admin")],
    )
    .await;
    assert_eq!(
        text(r).await,
        (
            403,
            "bob is not allowed to impersonate user ops-admin\n".into()
        )
    );
    let r = get(
        &api,
        "/files/dev/web-traffic",
        Some(&gw),
        &[("Impersonate-Group", "capture-readers")],
    )
    .await;
    assert_eq!(
        text(r).await,
        (400, "missing impersonation headers\n".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_review_and_local_files_are_alternatives() {
    let sim = start_default().await;
    let root = sim.out.join("nodes/cluster").display().to_string();
    let api = start_api(
        &sim,
        &[
            ("PACKETCAPTURE_API_AUTHN_REVIEW", "authenticationreview"),
            ("PACKETCAPTURE_API_FETCH_BACKEND", "local"),
            ("PACKETCAPTURE_API_LOCAL_ROOT", &root),
        ],
    )
    .await;
    let r = get(
        &api,
        "/download/dev/web-traffic/files.zip",
        Some(&sim.token("jane")),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        zip_digests(&r.bytes().await.unwrap()),
        capture_dir(&sim, "cluster", "dev", "web-traffic")
    );
    assert!(
        sim.local()
            .requests()
            .iter()
            .any(|r| r.uri.contains("authenticationreviews") && r.user.as_deref() == Some("jane"))
    );
    assert_eq!(
        sim.local()
            .requests()
            .iter()
            .filter(|r| r.uri.contains("/exec"))
            .count(),
        0,
        "no exec with local files"
    );
    assert_eq!(
        get(
            &api,
            "/download/dev/web-traffic/files.zip",
            Some("forged"),
            &[]
        )
        .await
        .status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_setting_stops_the_binary_with_exit_64_naming_it() {
    let out = std::process::Command::new(api_binary())
        .env_clear()
        .env("PACKETCAPTURE_API_PORT", "abc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PACKETCAPTURE_API_PORT"));
    let out = std::process::Command::new(api_binary())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("packetcapture-api "));
}
