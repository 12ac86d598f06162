//! The simulated cluster speaks the real protocols: kube-rs and kubectl against it, and every
//! fault knob showing its effect.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, AttachParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use packetcapture_tests::Scenario;
use packetcapture_tests::pcap::{count_packets, inspect};
use tokio::io::AsyncReadExt;

use crate::support::*;

fn captures() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("projectcalico.org", "v3", "PacketCapture"),
        "packetcaptures",
    )
}

async fn exec_output(
    client: &kube::Client,
    pod: &str,
    cmd: &[&str],
) -> (
    Vec<u8>,
    Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "tigera-fluentd");
    let params = AttachParams::default()
        .container("fluentd")
        .stderr(false)
        .max_stdout_buf_size(1 << 20);
    let mut p = pods
        .exec(
            pod,
            cmd.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            &params,
        )
        .await
        .unwrap();
    let status = p.take_status().unwrap();
    let mut stdout = p.stdout().unwrap();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    // kube leaves stdout open when the connection is lost, so read until the status resolves.
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = stdout.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let status = status.await;
    let _ = tokio::time::timeout(Duration::from_millis(500), reader).await;
    let out = received.lock().unwrap().clone();
    (out, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_lists_pods_reads_captures_and_execs_tar() {
    let sim = start_default().await;
    let client = kube_client(&sim, 0, &sim.admin_token()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "tigera-fluentd");
    let on_node_2 = pods
        .list(
            &ListParams::default()
                .labels("k8s-app=fluentd-node")
                .fields("spec.nodeName=node-2,status.phase=Running"),
        )
        .await
        .unwrap();
    assert_eq!(on_node_2.items.len(), 1);
    let pod = on_node_2.items[0].metadata.name.clone().unwrap();
    assert_eq!(pod, sim.local().entry_pod_name("node-2"));

    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "dev", &captures());
    let web = api.get("web-traffic").await.unwrap();
    let files = web.data["status"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(files[1]["node"], "node-2");
    assert_eq!(files[1]["state"], "Finished");
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &captures());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        4
    );
    assert!(api.get_opt("nope").await.unwrap().is_none());

    let (tar_bytes, status) = exec_output(
        &client,
        &pod,
        &[
            "tar",
            "-c",
            "-f",
            "-",
            "-C",
            "/var/log/calico/pcap/dev",
            "web-traffic",
        ],
    )
    .await;
    assert_eq!(status.unwrap().status.as_deref(), Some("Success"));
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut seen = 0;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().unwrap().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        let on_disk = std::fs::read(
            sim.node_dir("cluster", "node-2")
                .join("var/log/calico/pcap/dev")
                .join(&path),
        )
        .unwrap();
        assert_eq!(data, on_disk, "{}", path.display());
        assert!(count_packets(&data).unwrap() > 10);
        seen += 1;
    }
    assert_eq!(seen, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_pods_and_captures_and_execs_tar_byte_for_byte() {
    let sim = start_default().await;
    let pods = kubectl(&sim, &["get", "pods", "-n", "tigera-fluentd"]);
    let listing = String::from_utf8_lossy(&pods.stdout);
    assert!(
        pods.status.success(),
        "{}",
        String::from_utf8_lossy(&pods.stderr)
    );
    assert!(listing.contains("Running"), "{listing}");
    let pod = sim.local().entry_pod_name("node-1");
    assert!(listing.contains(&pod), "{listing}");

    let raw = kubectl(
        &sim,
        &["get", "--raw", "/apis/projectcalico.org/v3/packetcaptures"],
    );
    let list: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 4);
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["status"]["files"][0]["state"] == "Capturing")
    );

    let exec = kubectl(
        &sim,
        &[
            "-n",
            "tigera-fluentd",
            "exec",
            &pod,
            "--",
            "tar",
            "cf",
            "-",
            "-C",
            "/var/log/calico/pcap",
            ".",
        ],
    );
    assert!(
        exec.status.success(),
        "{}",
        String::from_utf8_lossy(&exec.stderr)
    );
    let extract = sim.dir.path().join("extracted");
    std::fs::create_dir_all(&extract).unwrap();
    tar::Archive::new(exec.stdout.as_slice())
        .unpack(&extract)
        .unwrap();
    let node_files = files_under(
        &sim.node_dir("cluster", "node-1")
            .join("var/log/calico/pcap"),
    );
    assert!(node_files.len() >= 4);
    assert_eq!(
        files_under(&extract),
        node_files,
        "extracted files are byte-identical to the node's"
    );
    for (name, _) in &node_files {
        let path = walk_find(&extract, name);
        // An active file may end with a cut record (the default scenario cuts node-1's).
        assert!(
            inspect(&std::fs::read(path).unwrap()).is_some_and(|(packets, _)| packets > 0),
            "{name} parses as pcap"
        );
    }
}

fn walk_find(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            let found = walk_find(&p, name);
            if found.exists() {
                return found;
            }
        } else if e.file_name() == name {
            return p;
        }
    }
    dir.join("\0missing")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_reports_a_failing_command_s_exit_code() {
    let sim = start_default().await;
    let pod = sim.local().entry_pod_name("node-1");
    let out = kubectl(
        &sim,
        &[
            "-n",
            "tigera-fluentd",
            "exec",
            &pod,
            "--",
            "ls",
            "/no/such/dir",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(
        &sim,
        &["-n", "tigera-fluentd", "exec", &pod, "--", "sh", "-c", "id"],
    );
    assert!(!out.status.success(), "no shell in the simulation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_decides_every_request_and_every_review() {
    let sim = start_default().await;
    let bob = kube_client(&sim, 0, &sim.token("bob")).await;
    let pods: Api<Pod> = Api::namespaced(bob, "tigera-fluentd");
    match pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403),
        other => panic!("bob may not list pods: {other:?}"),
    }
    let nobody = kube_client(&sim, 0, "not-a-token").await;
    let pods: Api<Pod> = Api::namespaced(nobody, "tigera-fluentd");
    assert!(
        matches!(pods.list(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 401)
    );

    let client = kube_client(&sim, 0, &sim.service_token()).await;
    let sar = |user: &str, groups: Vec<String>, ns: &str| {
        use k8s_openapi::api::authorization::v1::*;
        SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.into()),
                groups: Some(groups),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some("get".into()),
                    group: Some("projectcalico.org".into()),
                    resource: Some("packetcaptures".into()),
                    subresource: Some("files".into()),
                    namespace: Some(ns.into()),
                    name: Some("web-traffic".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    };
    let reviews: Api<k8s_openapi::api::authorization::v1::SubjectAccessReview> =
        Api::all(client.clone());
    let allowed =
        |r: k8s_openapi::api::authorization::v1::SubjectAccessReview| r.status.unwrap().allowed;
    let pp = PostParams::default();
    assert!(allowed(
        reviews
            .create(&pp, &sar("jane", vec!["capture-readers".into()], "dev"))
            .await
            .unwrap()
    ));
    assert!(!allowed(
        reviews
            .create(
                &pp,
                &sar("jane", vec!["capture-readers".into()], "payments")
            )
            .await
            .unwrap()
    ));
    assert!(!allowed(
        reviews
            .create(&pp, &sar("bob", vec!["developers".into()], "dev"))
            .await
            .unwrap()
    ));

    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    let reviews: Api<TokenReview> = Api::all(client);
    let review = |token: &str| TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            audiences: None,
        },
        ..Default::default()
    };
    let jane = reviews
        .create(&pp, &review(&sim.token("jane")))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(jane.authenticated, Some(true));
    assert_eq!(jane.user.unwrap().username.as_deref(), Some("jane"));
    let bad = reviews
        .create(&pp, &review("forged"))
        .await
        .unwrap()
        .status
        .unwrap();
    // kube-apiserver leaves `authenticated` out of a failed review.
    assert_eq!(bad.authenticated, None);
    assert_eq!(bad.error.as_deref(), Some("invalid bearer token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_on_api_requests_needs_permission() {
    let sim = start_default().await;
    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&sim.kubeconfig(0, &sim.token("gateway"))).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    config.auth_info.impersonate = Some("ops-admin".into());
    let as_admin = kube::Client::try_from(config.clone()).unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(as_admin, "dev", &captures());
    // ops-admin may get files but not packetcaptures: the impersonated identity is what counts.
    assert!(matches!(api.get("web-traffic").await, Err(kube::Error::Api(s)) if s.code == 403));
    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&sim.kubeconfig(0, &sim.token("jane"))).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    config.auth_info.impersonate = Some("ops-admin".into());
    let api: Api<DynamicObject> =
        Api::namespaced_with(kube::Client::try_from(config).unwrap(), "dev", &captures());
    let err = api.get("web-traffic").await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403 && s.message.contains("cannot impersonate")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_status_write_is_a_conflict() {
    let sim = start_default().await;
    let client = kube_client(&sim, 0, &sim.service_token()).await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, "dev", &captures());
    let mut object = api.get("web-traffic").await.unwrap();
    object.data["status"]["files"][0]["fileNames"] = serde_json::json!([]);
    let updated = api
        .replace_status("web-traffic", &PostParams::default(), &object)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        object.metadata.resource_version
    );
    match api
        .replace_status("web-traffic", &PostParams::default(), &object)
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409),
        other => panic!("a stale write must conflict: {other:?}"),
    }
    let now = api.get("web-traffic").await.unwrap();
    assert_eq!(
        now.data["status"]["files"][0]["fileNames"],
        serde_json::json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_latency_delays_every_answer() {
    let sim = start_default().await;
    sim.local().set_faults(|f| f.latency_ms = 300);
    let client = kube_client(&sim, 0, &sim.service_token()).await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, "dev", &captures());
    let t = Instant::now();
    api.get("web-traffic").await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_api_server_error_answers_5xx() {
    let sim = start_default().await;
    sim.local().set_faults(|f| f.api_server_error = Some(500));
    let client = kube_client(&sim, 0, &sim.service_token()).await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, "dev", &captures());
    assert!(matches!(api.get("web-traffic").await, Err(kube::Error::Api(s)) if s.code == 500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_missing_entry_pod_removes_the_node_s_pod() {
    let sim = start_default().await;
    sim.local()
        .set_faults(|f| f.missing_entry_pods = vec!["node-2".into()]);
    let client = kube_client(&sim, 0, &sim.service_token()).await;
    let pods: Api<Pod> = Api::namespaced(client, "tigera-fluentd");
    let names: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.spec?.node_name)
        .collect();
    assert_eq!(names, ["node-1", "node-3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_exec_exit_status_is_reported() {
    let sim = start_default().await;
    sim.local().set_faults(|f| f.exec_exit_status = Some(3));
    let client = kube_client(&sim, 0, &sim.service_token()).await;
    let (out, status) = exec_output(
        &client,
        &sim.local().entry_pod_name("node-1"),
        &["echo", "hi"],
    )
    .await;
    assert_eq!(out, b"hi\n");
    let status = status.unwrap();
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(
        status.details.unwrap().causes.unwrap()[0]
            .message
            .as_deref(),
        Some("3")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_exec_cut_ends_the_stream_without_a_status() {
    let sim = start_default().await;
    sim.local().set_faults(|f| f.exec_cut_after = Some(100_000));
    let client = kube_client(&sim, 0, &sim.service_token()).await;
    let (out, status) = exec_output(
        &client,
        &sim.local().entry_pod_name("node-1"),
        &["tar", "cf", "-", "/var/log/calico/pcap"],
    )
    .await;
    assert_eq!(out.len(), 100_000);
    assert!(status.is_none(), "a cut exec sends no status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_exec_bandwidth_caps_each_stream() {
    let sim = start_default().await;
    sim.local()
        .set_faults(|f| f.exec_bandwidth = Some(1_000_000));
    let client = kube_client(&sim, 0, &sim.service_token()).await;
    let t = Instant::now();
    let (out, status) = exec_output(
        &client,
        &sim.local().entry_pod_name("node-1"),
        &["tar", "cf", "-", "/var/log/calico/pcap/dev/web-traffic"],
    )
    .await;
    assert_eq!(status.unwrap().status.as_deref(), Some("Success"));
    let expected = Duration::from_secs_f64(out.len() as f64 / 1_000_000.0);
    assert!(
        t.elapsed() >= expected.mul_f64(0.9),
        "{} bytes in {:?}",
        out.len(),
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_ends_the_exec() {
    let sim = start_default().await;
    let client = kube_client(&sim, 0, &sim.service_token()).await;
    let pods: Api<Pod> = Api::namespaced(client, "tigera-fluentd");
    let p = pods
        .exec(
            &sim.local().entry_pod_name("node-1"),
            vec!["sleep", "30"],
            &AttachParams::default().stderr(false),
        )
        .await
        .unwrap();
    for _ in 0..50 {
        if sim
            .local()
            .running_execs
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sim.local()
            .running_execs
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    drop(p);
    assert_execs_end_within_a_second(sim.local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voltron_routes_by_cluster_id_and_refuses_unknown_or_disconnected_ones() {
    let sim = start_default().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(sim.out.join("voltron-ca.crt")).unwrap())
            .unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let url = format!(
        "https://localhost:{}/apis/projectcalico.org/v3/namespaces/dev/packetcaptures/web-traffic",
        sim.voltron_addr.port()
    );
    let token = sim.service_token();
    let r = http
        .get(&url)
        .bearer_auth(&token)
        .header("x-cluster-id", "east")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["status"]["files"][0]["node"], "east-node-1");
    assert!(
        sim.cluster("east")
            .requests()
            .iter()
            .any(|r| r.cluster_header.as_deref() == Some("east"))
    );
    let r = http
        .get(&url)
        .bearer_auth(&token)
        .header("x-cluster-id", "west")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    sim.cluster("east")
        .connected
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let r = http
        .get(&url)
        .bearer_auth(&token)
        .header("x-cluster-id", "east")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(sim.voltron.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_exec_is_authorized_as_get_and_from_1_35_also_as_create() {
    let yaml = |minor: u32| {
        format!(
            r#"
kubernetesMinor: {minor}
users:
  - {{name: creator, token: creator-token}}
  - {{name: getter, token: getter-token}}
clusters:
  - name: cluster
    nodes: [node-1]
    rbac:
      - {{subjects: ["user:creator"], verbs: [create], apiGroups: [""], resources: [pods/exec], namespaces: [tigera-fluentd]}}
      - {{subjects: ["user:getter"], verbs: [get], apiGroups: [""], resources: [pods/exec], namespaces: [tigera-fluentd]}}
"#
        )
    };
    async fn exec_as(sim: &TestSim, user: &str) -> Result<(), kube::Error> {
        let pod = sim.local().entry_pod_name("node-1");
        let client = kube_client(sim, 0, &sim.token(user)).await;
        let pods: Api<Pod> = Api::namespaced(client, "tigera-fluentd");
        pods.exec(
            &pod,
            vec!["true"],
            &AttachParams::default().container("fluentd"),
        )
        .await
        .map(|_| ())
    }
    let sim = start(&Scenario::from_yaml(&yaml(33)).unwrap()).await;
    let pod = sim.local().entry_pod_name("node-1");
    // `create` alone: the upgrade (a GET) is refused before it happens, in kube-apiserver's words.
    match exec_as(&sim, "creator").await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert_eq!(s.reason, "Forbidden");
            assert_eq!(
                s.message,
                format!(
                    "pods \"{pod}\" is forbidden: User \"creator\" cannot get resource \"pods/exec\" in API group \"\" in the namespace \"tigera-fluentd\""
                )
            );
            let details = s.details.unwrap();
            assert_eq!(
                (details.name.as_str(), details.kind.as_str()),
                (pod.as_str(), "pods")
            );
        }
        other => panic!("create alone must not open an exec: {other:?}"),
    }
    assert!(
        exec_as(&sim, "getter").await.is_ok(),
        "get opens it on 1.33"
    );
    drop(sim);
    let sim = start(&Scenario::from_yaml(&yaml(35)).unwrap()).await;
    match exec_as(&sim, "getter").await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message.contains("cannot create resource \"pods/exec\""),
                "{}",
                s.message
            );
        }
        other => panic!("from 1.35 get alone must not open an exec: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_capture_grows_rotates_as_felix_does_and_finishes() {
    let sim = start(
        &packetcapture_tests::Scenario::from_yaml(
            "users: [{name: jane, token: jane-token}]
clusters:
  - name: cluster
    nodes: [node-1]
    captures:
      - namespace: dev
        name: running
        live: {rate: 200, rotateMs: 400, finishMs: 1500, splitRecords: true}
        nodes:
          - {node: node-1, state: Capturing, files: 1, size: 24}
",
        )
        .unwrap(),
    )
    .await;
    let live = sim.local().live("dev", "running").unwrap();
    while !live.finished() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let capture = sim.local().capture("dev", "running").unwrap();
    let status = &capture["status"]["files"][0];
    assert_eq!(status["state"], "Finished");
    let names: Vec<&str> = status["fileNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(names.len() >= 3, "rotated at least twice: {names:?}");
    // Every packet written is in the files, once; none is left half written.
    let dir = sim
        .node_dir("cluster", "node-1")
        .join("var/log/calico/pcap/dev/running");
    let mut on_disk = 0;
    for name in &names {
        let data = std::fs::read(dir.join(name)).unwrap();
        let (packets, cut) = packetcapture_tests::pcap::inspect(&data).unwrap();
        assert_eq!(cut, 0, "{name} ends on a whole record once finished");
        on_disk += packets;
    }
    let written = live.written();
    assert_eq!(on_disk, written.len() as u64);
    assert!(
        written.len() > 20,
        "the writer ran: {} packets",
        written.len()
    );
    assert!(
        written
            .windows(2)
            .all(|w| w[0].ts <= w[1].ts && w[0].seq + 1 == w[1].seq)
    );
}
