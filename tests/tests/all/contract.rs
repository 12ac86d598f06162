//! Port contracts: each port's behaviour written once, run against the domain's in-memory fake
//! and against the real adapters on the simulated cluster, so the fakes the unit tests trust
//! are held to what the real ones do.

use std::sync::Arc;

use futures_util::StreamExt;
use packetcapture_domain::testing::{
    CaptureTable, NodeFileTable, RbacTable, StaticRouter, TokenTable,
};
use packetcapture_domain::{
    Authenticator, Authorizer, BaseName, BearerToken, Capture, CaptureDir, CaptureLocator,
    CaptureRef, ClusterPorts, ClusterRouter, ClusterTarget, Error, FileFetcher, FileSet, NodeName,
    ResourceAttributes, StatusUpdate, User, Verb,
};
use packetcapture_fluentd_exec::ExecFetcher;
use packetcapture_kubernetes::{
    AuthenticationReviewAuthenticator, ClusterClient, EntryPodConfig, EntryPods,
    PacketCaptureLocator, SubjectAccessReviewAuthorizer, TokenReviewAuthenticator,
};
use packetcapture_local_fs::LocalFetcher;

use crate::support::*;

async fn cluster_client(sim: &TestSim, index: usize) -> ClusterClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&sim.kubeconfig(index, &sim.service_token())).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    ClusterClient::from_config(config, &sim.api_servers[index].0, false).unwrap()
}

// ---- Authenticator ----

async fn authenticator_contract(a: &dyn Authenticator, token: &str) {
    let user = a
        .authenticate(&BearerToken::new(token).unwrap())
        .await
        .unwrap();
    assert_eq!(user.name, "jane");
    assert!(
        user.groups.iter().any(|g| g == "capture-readers"),
        "{:?}",
        user.groups
    );
    let err = a
        .authenticate(&BearerToken::new("forged-token").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticator_contract_holds_for_the_fake_and_both_reviews() {
    let sim = start_default().await;
    let jane = User {
        name: "jane".into(),
        groups: vec!["capture-readers".into(), "system:authenticated".into()],
        ..User::default()
    };
    authenticator_contract(
        &TokenTable::default().with("jane-token", jane),
        "jane-token",
    )
    .await;
    let client = cluster_client(&sim, 0).await;
    authenticator_contract(
        &TokenReviewAuthenticator::new(client.clone()),
        &sim.token("jane"),
    )
    .await;
    authenticator_contract(
        &AuthenticationReviewAuthenticator::new(client),
        &sim.token("jane"),
    )
    .await;
}

// ---- Authorizer ----

async fn authorizer_contract(a: &dyn Authorizer) {
    let capture = |ns: &str| CaptureRef::parse(ns, "web-traffic").unwrap();
    let jane = User {
        name: "jane".into(),
        groups: vec!["capture-readers".into()],
        ..User::default()
    };
    let bob = User {
        name: "bob".into(),
        groups: vec!["developers".into()],
        ..User::default()
    };
    let admin = User::named("ops-admin");
    let files = |verb, ns| ResourceAttributes::capture_files(verb, &capture(ns));
    assert!(
        a.allowed(&jane, &files(Verb::Get, "dev")).await.unwrap(),
        "by group, in its namespace"
    );
    assert!(
        !a.allowed(&jane, &files(Verb::Get, "payments"))
            .await
            .unwrap(),
        "not in another namespace"
    );
    assert!(
        !a.allowed(&jane, &files(Verb::Delete, "dev")).await.unwrap(),
        "not another verb"
    );
    assert!(!a.allowed(&bob, &files(Verb::Get, "dev")).await.unwrap());
    assert!(
        a.allowed(&admin, &files(Verb::Delete, "payments"))
            .await
            .unwrap(),
        "by user, any namespace"
    );
    let gateway = User::named("gateway");
    assert!(
        a.allowed(&gateway, &ResourceAttributes::impersonate_user("jane"))
            .await
            .unwrap()
    );
    assert!(
        a.allowed(
            &gateway,
            &ResourceAttributes::impersonate_group("capture-readers")
        )
        .await
        .unwrap()
    );
    assert!(
        !a.allowed(&jane, &ResourceAttributes::impersonate_user("ops-admin"))
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorizer_contract_holds_for_the_fake_and_subject_access_reviews() {
    let fake = RbacTable::default()
        .allow(
            "group:capture-readers",
            Verb::Get,
            "packetcaptures/files",
            "dev",
        )
        .allow("ops-admin", Verb::Get, "packetcaptures/files", "*")
        .allow("ops-admin", Verb::Delete, "packetcaptures/files", "*")
        .allow("gateway", Verb::Impersonate, "users", "*")
        .allow("gateway", Verb::Impersonate, "groups", "*");
    authorizer_contract(&fake).await;
    let sim = start_default().await;
    authorizer_contract(&SubjectAccessReviewAuthorizer::new(
        cluster_client(&sim, 0).await,
    ))
    .await;
}

// ---- CaptureLocator ----

async fn locator_contract(l: &dyn CaptureLocator) {
    let web = CaptureRef::parse("dev", "web-traffic").unwrap();
    let capture = l.get(&web).await.unwrap().expect("the capture exists");
    let nodes: Vec<&str> = capture.files.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(nodes, ["node-1", "node-2", "node-3"]);
    assert!(
        capture
            .files
            .iter()
            .all(|n| n.state == Some(packetcapture_domain::CaptureState::Finished))
    );
    assert_eq!(capture.files[0].file_names.len(), 3);
    assert!(
        l.get(&CaptureRef::parse("dev", "missing").unwrap())
            .await
            .unwrap()
            .is_none()
    );

    assert_eq!(
        l.clear_file_names(&capture, &["node-2".into()])
            .await
            .unwrap(),
        StatusUpdate::Updated
    );
    let after = l.get(&web).await.unwrap().unwrap();
    assert!(after.files[1].file_names.is_empty());
    assert_eq!(
        after.files[0].file_names, capture.files[0].file_names,
        "other nodes untouched"
    );
    assert_ne!(after.resource_version, capture.resource_version);
    assert_eq!(
        l.clear_file_names(&capture, &["node-1".into()])
            .await
            .unwrap(),
        StatusUpdate::Conflict,
        "stale version"
    );
    assert_eq!(
        l.get(&web).await.unwrap().unwrap().files[0]
            .file_names
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locator_contract_holds_for_the_fake_and_packetcaptures() {
    let sim = start_default().await;
    let object =
        sim.local().captures.lock().unwrap()[&("dev".to_owned(), "web-traffic".to_owned())].clone();
    let as_domain = Capture {
        reference: CaptureRef::parse("dev", "web-traffic").unwrap(),
        resource_version: object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned(),
        files: packetcapture_kubernetes::captures::node_files(object.get("status")),
    };
    locator_contract(&CaptureTable::default().with(as_domain)).await;
    locator_contract(&PacketCaptureLocator::new(cluster_client(&sim, 0).await)).await;
}

// ---- FileFetcher ----

fn dir(node: &str, name: &str) -> CaptureDir {
    CaptureDir::new(
        node,
        "/var/log/calico/pcap",
        &CaptureRef::parse("dev", name).unwrap(),
    )
    .unwrap()
}

async fn tar_files(
    f: &dyn FileFetcher,
    entry: &packetcapture_domain::EntryPoint,
    d: &CaptureDir,
) -> Vec<(String, Vec<u8>)> {
    let mut bytes = Vec::new();
    let mut stream = f.archive(entry, &FileSet::all(d.clone())).await.unwrap();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut files = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let name = e
                .path()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            files.push((name, data));
        }
    }
    assert!(
        bytes.len() >= 1024 && bytes[bytes.len() - 1024..].iter().all(|b| *b == 0),
        "ends with end-of-archive blocks"
    );
    files.sort();
    files
}

async fn fetcher_contract(f: &dyn FileFetcher, expected: &[(String, Vec<u8>)]) {
    let node = NodeName::new("node-1").unwrap();
    let entry = f.entry_point(&node).await.unwrap();
    assert_eq!(entry.node, node);
    let err = f
        .entry_point(&NodeName::new("node-9").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NoEntryPod { node } if node == "node-9"),
        "{err:?}"
    );
    let names = |ns: &[&str]| {
        ns.iter()
            .map(|n| NodeName::new(n).unwrap())
            .collect::<Vec<_>>()
    };
    let both = f.entry_points(&names(&["node-2", "node-1"])).await.unwrap();
    assert_eq!(
        both.iter().map(|e| e.node.as_str()).collect::<Vec<_>>(),
        ["node-2", "node-1"],
        "in the order asked"
    );
    assert_eq!(both[1], entry);
    let err = f
        .entry_points(&names(&["node-1", "node-9"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NoEntryPod { node } if node == "node-9"),
        "{err:?}"
    );

    let web = dir("node-1", "web-traffic");
    assert_eq!(tar_files(f, &entry, &web).await, expected);
    assert!(
        tar_files(f, &entry, &dir("node-1", "gone"))
            .await
            .is_empty(),
        "a missing directory is an empty archive"
    );

    let listed = f.list(&entry, &web).await.unwrap();
    let mut names: Vec<(String, u64)> = listed.iter().map(|i| (i.name.clone(), i.size)).collect();
    names.sort();
    assert_eq!(
        names,
        expected
            .iter()
            .map(|(n, d)| (n.clone(), d.len() as u64))
            .collect::<Vec<_>>()
    );
    assert!(listed.iter().all(|i| i.modified > 1_600_000_000));
    assert!(
        f.list(&entry, &dir("node-1", "gone"))
            .await
            .unwrap()
            .is_empty()
    );

    f.remove(&entry, &web).await.unwrap();
    assert!(f.list(&entry, &web).await.unwrap().is_empty());
    f.remove(&entry, &web).await.unwrap();
}

fn node_1_files(sim: &TestSim) -> Vec<(String, Vec<u8>)> {
    let d = sim
        .node_dir("cluster", "node-1")
        .join("var/log/calico/pcap/dev/web-traffic");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetcher_contract_holds_for_the_fake_exec_and_local_files() {
    let sim = start_default().await;
    let expected = node_1_files(&sim);
    assert_eq!(expected.len(), 3);
    let mut fake = NodeFileTable::default().without_entry("node-9");
    for (name, data) in &expected {
        fake = fake.with_file(
            "node-1",
            "/var/log/calico/pcap/dev/web-traffic",
            name,
            data,
            1_700_000_000,
        );
    }
    fetcher_contract(&fake, &expected).await;

    let pods = EntryPods::new(cluster_client(&sim, 0).await, EntryPodConfig::default());
    fetcher_contract(&ExecFetcher::new(pods), &expected).await;

    let sim = start_default().await;
    fetcher_contract(
        &LocalFetcher::new(sim.out.join("nodes/cluster")),
        &node_1_files(&sim),
    )
    .await;
}

/// What following needs of a fetcher: `inodes` lists each file with its size and inode; a
/// `follow` gives the file's bytes so far, then what is appended, also once the file is renamed
/// (it follows the file it opened, not the name), and ends only when dropped. `node_dir` is
/// where node-1's capture directory of `dev/web-traffic` is on this machine.
async fn follow_contract(f: &dyn FileFetcher, node_dir: &std::path::Path) {
    let node = NodeName::new("node-1").unwrap();
    let entry = f.entry_point(&node).await.unwrap();
    let d = dir("node-1", "web-traffic");
    let active = node_dir.join("live_cali0.pcap");
    std::fs::write(&active, b"first").unwrap();
    let listed = f.inodes(&entry, &d).await.unwrap();
    let mine = listed
        .iter()
        .find(|s| s.name == "live_cali0.pcap")
        .expect("the new file is listed");
    assert_eq!(mine.size, 5);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(mine.inode, std::fs::metadata(&active).unwrap().ino());
    assert_eq!(
        listed.len(),
        std::fs::read_dir(node_dir).unwrap().count(),
        "every file"
    );

    let name = BaseName::new("live_cali0.pcap").unwrap();
    let mut followed = f.follow(&entry, &d, &name).await.unwrap();
    let mut got = Vec::new();
    let mut until = async |got: &mut Vec<u8>, want: &[u8]| {
        while got.len() < want.len() {
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), followed.next())
                .await
                .expect("followed bytes come")
                .expect("the follow goes on")
                .unwrap();
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got.as_slice(), want);
    };
    until(&mut got, b"first").await;
    let append = |data: &[u8], path: &std::path::Path| {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap()
            .write_all(data)
            .unwrap();
    };
    append(b", second", &active);
    until(&mut got, b"first, second").await;
    // Renamed as Felix rotates it, a new file under the old name: the follow stays on the first.
    let rotated = node_dir.join("live_cali0-1700000000000000.pcap");
    std::fs::rename(&active, &rotated).unwrap();
    std::fs::write(&active, b"NEW FILE").unwrap();
    append(b", third", &rotated);
    until(&mut got, b"first, second, third").await;
    drop(followed);
    std::fs::remove_file(&active).unwrap();
    std::fs::remove_file(&rotated).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_contract_holds_for_exec_with_gnu_and_busybox_tools_and_local_files() {
    let sim = start_default().await;
    let node_dir = sim
        .node_dir("cluster", "node-1")
        .join("var/log/calico/pcap/dev/web-traffic");
    follow_contract(&exec_fetcher(&sim).await, &node_dir).await;
    if sim.local().busybox_bin.is_none() {
        panic!("busybox is not installed: .ci/run installs it (apt-get install busybox)");
    }
    sim.local().set_faults(|f| f.busybox = true);
    follow_contract(&exec_fetcher(&sim).await, &node_dir).await;
    follow_contract(&LocalFetcher::new(sim.out.join("nodes/cluster")), &node_dir).await;
}

async fn exec_fetcher(sim: &TestSim) -> ExecFetcher {
    ExecFetcher::new(EntryPods::new(
        cluster_client(sim, 0).await,
        EntryPodConfig::default(),
    ))
}

/// The bytes of node-1's archive of `dev/web-traffic`, and how its stream ended.
async fn raw_archive(f: &dyn FileFetcher) -> (Vec<u8>, Option<Error>) {
    let node = NodeName::new("node-1").unwrap();
    let entry = f.entry_point(&node).await.unwrap();
    let mut stream = f
        .archive(&entry, &FileSet::all(dir("node-1", "web-traffic")))
        .await
        .unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(e) => return (bytes, Some(e)),
        }
    }
    (bytes, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_fetcher_contract_holds_with_busybox_tools() {
    let sim = start_default().await;
    if sim.local().busybox_bin.is_none() {
        panic!("busybox is not installed: .ci/run installs it (apt-get install busybox)");
    }
    sim.local().set_faults(|f| f.busybox = true);
    let expected = node_1_files(&sim);
    let fetcher = exec_fetcher(&sim).await;
    let (bytes, end) = raw_archive(&fetcher).await;
    assert!(end.is_none());
    assert_ne!(
        bytes.len() % 10240,
        0,
        "BusyBox tar ran (GNU tar pads its output to 10 KiB records)"
    );
    fetcher_contract(&fetcher, &expected).await;
}

/// A node-1 file that cannot be read whole ends the archive with `FileUnreadable` naming it:
/// one of `files`.
fn assert_unreadable(end: Option<Error>, files: &[String]) {
    let e = end.expect("the archive must end with an error, not cleanly");
    match e {
        Error::FileUnreadable { node, file, reason } => {
            assert_eq!(node, "node-1");
            assert!(
                files.contains(&file),
                "{file} ({reason}) is not one of {files:?}"
            );
        }
        other => panic!("expected FileUnreadable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_shrinks_while_read_fails_the_archive_with_gnu_and_busybox_tools() {
    for busybox in [false, true] {
        let sim = start_default().await;
        // Once 100 KB went out, node-1's files (300 KB each) are cut to 1000 bytes.
        sim.local().set_faults(|f| {
            f.busybox = busybox;
            f.shrink_after = Some(100_000);
        });
        let names: Vec<String> = node_1_files(&sim).into_iter().map(|f| f.0).collect();
        let (_, end) = raw_archive(&exec_fetcher(&sim).await).await;
        assert_unreadable(end, &names);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_cannot_be_opened_fails_the_archive_with_gnu_and_busybox_tools() {
    for busybox in [false, true] {
        let sim = start_default().await;
        let (name, _) = node_1_files(&sim)[1].clone();
        let path = sim
            .node_dir("cluster", "node-1")
            .join("var/log/calico/pcap/dev/web-traffic")
            .join(&name);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o000))
            .unwrap();
        // Root reads anything: the execs then run as nobody.
        let root =
            std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
        sim.local().set_faults(|f| {
            f.busybox = busybox;
            f.run_as_uid = root.unwrap_or(false).then_some(65534);
        });
        let (_, end) = raw_archive(&exec_fetcher(&sim).await).await;
        assert_unreadable(end, std::slice::from_ref(&name));
    }
}

// ---- ClusterRouter ----

async fn router_contract(r: &dyn ClusterRouter) {
    let local = r.route(&ClusterTarget::Local).await.unwrap();
    let web = CaptureRef::parse("dev", "web-traffic").unwrap();
    assert_eq!(
        local.locator.get(&web).await.unwrap().unwrap().files[0].node,
        "node-1"
    );
    let east = r
        .route(&ClusterTarget::Managed("east".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(
        east.locator.get(&web).await.unwrap().unwrap().files[0].node,
        "east-node-1",
        "the managed cluster's own capture"
    );
    let err = r
        .route(&ClusterTarget::Managed("west".parse().unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ClusterNotConnected { .. }), "{err:?}");
    let err = r
        .route(&ClusterTarget::Managed("north".parse().unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ClusterNotFound { .. }), "{err:?}");
}

const TWO_MANAGED: &str = r#"
clusters:
  - name: cluster
    nodes: [node-1]
    captures: [{namespace: dev, name: web-traffic, nodes: [{node: node-1, state: Finished, files: 1, size: 1000}]}]
  - name: east
    nodes: [east-node-1]
    captures: [{namespace: dev, name: web-traffic, nodes: [{node: east-node-1, state: Finished, files: 1, size: 1000}]}]
  - name: west
    connected: false
    nodes: [west-node-1]
"#;

fn ports(client: ClusterClient) -> ClusterPorts {
    ClusterPorts {
        authorizer: Arc::new(SubjectAccessReviewAuthorizer::new(client.clone())),
        locator: Arc::new(PacketCaptureLocator::new(client.clone())),
        fetcher: Arc::new(LocalFetcher::new("/nonexistent")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_contract_holds_for_the_fake_and_voltron() {
    let sim = start(&packetcapture_tests::Scenario::from_yaml(TWO_MANAGED).unwrap()).await;
    let local = cluster_client(&sim, 0).await;
    let east = cluster_client(&sim, 1).await;
    let fake = StaticRouter::local(ports(local.clone()))
        .with_managed(
            "east",
            packetcapture_domain::testing::ManagedCluster::Connected(ports(east)),
        )
        .with_managed(
            "west",
            packetcapture_domain::testing::ManagedCluster::Disconnected,
        );
    router_contract(&fake).await;

    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&sim.kubeconfig(0, &sim.service_token())).unwrap();
    let credentials = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let voltron = packetcapture_voltron::VoltronRouter::new(
        ports(local.clone()),
        local,
        &credentials,
        &packetcapture_voltron::VoltronConfig {
            ca: Some(sim.out.join("voltron-ca.crt")),
            endpoint: format!("https://127.0.0.1:{}", sim.voltron_addr.port())
                .parse()
                .unwrap(),
        },
        Arc::new(ports),
    )
    .unwrap();
    router_contract(&voltron).await;
    assert!(
        sim.voltron
            .requests()
            .iter()
            .any(|r| r.cluster_header.as_deref() == Some("east"))
    );
}
