//! The use cases over the in-memory fakes: pipeline order, impersonation, delete rules.

use std::sync::Arc;

use futures_util::StreamExt;
use packetcapture_domain::testing::{
    CaptureTable, FakeCluster, ManagedCluster, NodeFileTable, RbacTable, StaticRouter, TokenTable,
};
use packetcapture_domain::{
    BearerToken, CaptureRef, CaptureService, CaptureState, ClusterTarget, Compression, Download,
    Error, Impersonation, Request, Selection, User, Verb, ZipAsk,
};

use crate::support::{capture, unzip};

const DIR: &str = "/var/log/calico/pcap/dev/cap";

fn cluster(state: CaptureState) -> FakeCluster {
    FakeCluster::new(
        RbacTable::default()
            .allow("jane", Verb::Get, "packetcaptures/files", "dev")
            .allow("jane", Verb::Delete, "packetcaptures/files", "dev")
            .allow("group:ops", Verb::Get, "packetcaptures/files", "*")
            .allow("gateway", Verb::Impersonate, "users", "")
            .allow("gateway", Verb::Impersonate, "groups", "")
            .allow("gateway", Verb::Impersonate, "serviceaccounts", "ops"),
        CaptureTable::default().with(capture(&[
            ("n1", &["a.pcap"], Some(state.clone())),
            ("n2", &["b.pcap"], Some(state)),
        ])),
        NodeFileTable::default()
            .with_file("n1", DIR, "a.pcap", b"AAAA", 100)
            .with_file("n2", DIR, "b.pcap", b"BB", 200),
    )
}

fn service(local: &FakeCluster) -> CaptureService {
    let tokens = TokenTable::default()
        .with("jane-token", User::named("jane"))
        .with("gw-token", User::named("gateway"))
        .with("bob-token", User::named("bob"));
    let router =
        StaticRouter::local(local.ports()).with_managed("far", ManagedCluster::Disconnected);
    CaptureService::new(Arc::new(tokens), Arc::new(router))
}

fn request(token: &str) -> Request {
    Request {
        token: BearerToken::new(token).unwrap(),
        impersonation: Impersonation::default(),
        cluster: ClusterTarget::Local,
        capture: CaptureRef::parse("dev", "cap").unwrap(),
    }
}

async fn zip_names(download: Download) -> Vec<String> {
    let stream = match download {
        Download::Zip(stream) => stream,
        Download::Planned(mut zip) => zip.stream(None).await.unwrap(),
        other => panic!("expected a zip, got {other:?}"),
    };
    let bytes: Vec<u8> = stream
        .map(|c| c.unwrap())
        .collect::<Vec<_>>()
        .await
        .concat();
    unzip(&bytes).unwrap().into_iter().map(|e| e.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_user_downloads_every_node_file() {
    let local = cluster(CaptureState::Finished);
    let download = service(&local)
        .download(
            &request("jane-token"),
            Compression::Stored,
            &Selection::default(),
            ZipAsk::Whole,
        )
        .await
        .unwrap();
    assert_eq!(zip_names(download).await, ["a.pcap", "b.pcap"]);
}

#[tokio::test]
async fn an_unknown_token_is_unauthenticated_before_anything_else() {
    let local = cluster(CaptureState::Finished);
    let err = service(&local)
        .download(
            &request("nope"),
            Compression::Stored,
            &Selection::default(),
            ZipAsk::Whole,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err:?}");
    assert!(local.rbac.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_user_without_rbac_is_forbidden_with_a_message_naming_user_verb_and_namespace() {
    let local = cluster(CaptureState::Finished);
    let err = service(&local)
        .delete(&request("bob-token"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "bob is not authorized to delete packetcaptures/files in namespace dev"
    );
}

#[tokio::test]
async fn a_missing_capture_is_not_found_after_authorization() {
    let local = cluster(CaptureState::Finished);
    let mut req = request("jane-token");
    req.capture = CaptureRef::parse("dev", "other").unwrap();
    let err = service(&local).list(&req).await.unwrap_err();
    assert_eq!(err.to_string(), "packetcapture dev/other not found");
}

#[tokio::test]
async fn a_disconnected_managed_cluster_is_refused() {
    let local = cluster(CaptureState::Finished);
    let mut req = request("jane-token");
    req.cluster = ClusterTarget::Managed("far".parse().unwrap());
    assert!(matches!(
        service(&local).list(&req).await,
        Err(Error::ClusterNotConnected { .. })
    ));
    req.cluster = ClusterTarget::Managed("nowhere".parse().unwrap());
    let err = service(&local).list(&req).await.unwrap_err();
    assert_eq!(err.to_string(), "managed cluster nowhere not found");
}

#[tokio::test]
async fn impersonation_runs_the_request_as_the_impersonated_user() {
    let local = cluster(CaptureState::Finished);
    let mut req = request("gw-token");
    req.impersonation = Impersonation {
        user: Some("jane".into()),
        ..Impersonation::default()
    };
    let listing = service(&local).list(&req).await.unwrap();
    assert_eq!(listing.nodes.len(), 2);
    let asked = local.rbac.asked.lock().unwrap().clone();
    let (last_user, last_attrs) = asked.last().unwrap();
    assert_eq!(last_user.name, "jane");
    assert_eq!(last_user.groups, ["system:authenticated"]);
    assert_eq!(last_attrs.verb, Verb::Get);
}

#[tokio::test]
async fn impersonating_a_group_the_caller_may_use_grants_the_group() {
    let local = cluster(CaptureState::Finished);
    let mut req = request("gw-token");
    req.impersonation = Impersonation {
        user: Some("sam".into()),
        groups: vec!["ops".into()],
        ..Impersonation::default()
    };
    service(&local).list(&req).await.unwrap();
}

#[tokio::test]
async fn impersonating_a_service_account_gets_its_groups() {
    let local = cluster(CaptureState::Finished);
    let mut req = request("gw-token");
    req.impersonation = Impersonation {
        user: Some("system:serviceaccount:ops:robot".into()),
        ..Impersonation::default()
    };
    let err = service(&local).list(&req).await.unwrap_err();
    assert!(matches!(err, Error::Forbidden { .. }), "{err:?}");
    let asked = local.rbac.asked.lock().unwrap().clone();
    assert_eq!(asked[0].1.resource, "serviceaccounts");
    assert_eq!(
        asked.last().unwrap().0.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:ops",
            "system:authenticated"
        ]
    );
}

#[tokio::test]
async fn impersonation_without_permission_is_denied_and_groups_without_a_user_are_refused() {
    let local = cluster(CaptureState::Finished);
    let mut req = request("jane-token");
    req.impersonation = Impersonation {
        user: Some("root".into()),
        ..Impersonation::default()
    };
    let err = service(&local).list(&req).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "jane is not allowed to impersonate user root"
    );

    let mut req = request("gw-token");
    req.impersonation = Impersonation {
        groups: vec!["ops".into()],
        ..Impersonation::default()
    };
    let err = service(&local).list(&req).await.unwrap_err();
    assert_eq!(err.to_string(), "missing impersonation headers");

    let mut req = request("gw-token");
    req.impersonation = Impersonation {
        user: Some("sam".into()),
        extra: [("scopes".to_owned(), vec!["view".to_owned()])].into(),
        ..Impersonation::default()
    };
    let err = service(&local).list(&req).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "gateway is not allowed to impersonate extra scopes=view"
    );
}

#[tokio::test]
async fn delete_refuses_unfinished_captures_and_unknown_states() {
    let local = cluster(CaptureState::Capturing);
    let err = service(&local)
        .delete(&request("jane-token"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "capture state is not Finished");

    let local = FakeCluster::new(
        RbacTable::default().allow("jane", Verb::Delete, "packetcaptures/files", "dev"),
        CaptureTable::default().with(capture(&[("n1", &["a.pcap"], None)])),
        NodeFileTable::default(),
    );
    let err = service(&local)
        .delete(&request("jane-token"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "capture state cannot be determined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_files_clears_the_status_and_is_idempotent() {
    let local = cluster(CaptureState::Finished);
    let svc = service(&local);
    local.captures.conflict_next(2);
    svc.delete(&request("jane-token")).await.unwrap();
    assert!(local.files.files_in("n1", DIR).is_empty());
    let stored = local
        .captures
        .current(&CaptureRef::parse("dev", "cap").unwrap())
        .unwrap();
    assert!(stored.files.iter().all(|n| n.file_names.is_empty()));
    svc.delete(&request("jane-token")).await.unwrap();
    assert!(matches!(
        svc.download(
            &request("jane-token"),
            Compression::Stored,
            &Selection::default(),
            ZipAsk::Whole
        )
        .await
        .unwrap(),
        Download::Empty
    ));
}

#[tokio::test]
async fn delete_removes_on_every_node_of_the_status_even_those_listing_no_file() {
    // n3 lists no file (a repeated delete, or a status edited by hand) but still holds one.
    let local = FakeCluster::new(
        RbacTable::default().allow("jane", Verb::Delete, "packetcaptures/files", "dev"),
        CaptureTable::default().with(capture(&[
            ("n1", &["a.pcap"], Some(CaptureState::Finished)),
            ("n3", &[], Some(CaptureState::Finished)),
        ])),
        NodeFileTable::default()
            .with_file("n1", DIR, "a.pcap", b"AAAA", 100)
            .with_file("n3", DIR, "left.pcap", b"L", 300),
    );
    service(&local)
        .delete(&request("jane-token"))
        .await
        .unwrap();
    assert!(
        local.files.files_in("n3", DIR).is_empty(),
        "n3's files removed too"
    );
    let mut asked: Vec<_> = local.files.removals.lock().unwrap().clone();
    asked.sort();
    assert_eq!(
        asked,
        [
            ("n1".to_owned(), DIR.to_owned()),
            ("n3".to_owned(), DIR.to_owned())
        ]
    );
}

#[tokio::test]
async fn a_failing_removal_names_its_node_and_leaves_that_node_s_status() {
    let local = FakeCluster::new(
        RbacTable::default().allow("jane", Verb::Delete, "packetcaptures/files", "dev"),
        CaptureTable::default().with(capture(&[
            ("n1", &["a.pcap"], Some(CaptureState::Finished)),
            ("n2", &["b.pcap"], Some(CaptureState::Finished)),
        ])),
        NodeFileTable::default()
            .with_file("n1", DIR, "a.pcap", b"AAAA", 100)
            .with_file("n2", DIR, "b.pcap", b"BB", 200)
            .failing_removal_on("n2"),
    );
    let err = service(&local)
        .delete(&request("jane-token"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "removing files on node n2 failed");
    let stored = local
        .captures
        .current(&CaptureRef::parse("dev", "cap").unwrap())
        .unwrap();
    assert!(
        stored.files[0].file_names.is_empty(),
        "n1's files are gone: cleared"
    );
    assert_eq!(stored.files[1].file_names, ["b.pcap"], "n2's are not: kept");
    assert!(local.files.files_in("n1", DIR).is_empty());
    assert_eq!(local.files.files_in("n2", DIR).len(), 1);
}

#[tokio::test]
async fn delete_gives_up_after_three_conflicts() {
    let local = cluster(CaptureState::Finished);
    local.captures.conflict_next(3);
    let err = service(&local)
        .delete(&request("jane-token"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::StatusConflict { tries: 3, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_node_without_entry_pod_fails_before_anything_is_sent() {
    let local = FakeCluster::new(
        RbacTable::default().allow("jane", Verb::Get, "packetcaptures/files", "dev"),
        CaptureTable::default().with(capture(&[
            ("n1", &["a.pcap"], None),
            ("n2", &["b.pcap"], None),
        ])),
        NodeFileTable::default()
            .with_file("n1", DIR, "a.pcap", b"A", 1)
            .without_entry("n2"),
    );
    let err = service(&local)
        .download(
            &request("jane-token"),
            Compression::Stored,
            &Selection::default(),
            ZipAsk::Whole,
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no running entry pod found on node n2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_gone_from_every_node_download_as_empty() {
    let local = FakeCluster::new(
        RbacTable::default().allow("jane", Verb::Get, "packetcaptures/files", "dev"),
        CaptureTable::default().with(capture(&[("n1", &["a.pcap"], None)])),
        NodeFileTable::default(),
    );
    let download = service(&local)
        .download(
            &request("jane-token"),
            Compression::Stored,
            &Selection::default(),
            ZipAsk::Whole,
        )
        .await
        .unwrap();
    assert!(matches!(download, Download::Empty));
}

#[tokio::test]
async fn listing_shows_files_per_node_with_sizes_and_states() {
    let local = cluster(CaptureState::Finished);
    let listing = service(&local).list(&request("jane-token")).await.unwrap();
    assert_eq!(listing.cluster, "cluster");
    assert_eq!(listing.nodes[0].dir.path(), DIR);
    assert_eq!(listing.nodes[0].files[0].name, "a.pcap");
    assert_eq!(listing.nodes[0].files[0].size, 4);
    assert_eq!(listing.nodes[1].state, Some(CaptureState::Finished));
}

#[tokio::test]
async fn a_hostile_status_directory_is_refused() {
    let mut cap = capture(&[("n1", &["a.pcap"], None)]);
    cap.files[0].directory = "/var/../../etc".into();
    let local = FakeCluster::new(
        RbacTable::default().allow("jane", Verb::Get, "packetcaptures/files", "dev"),
        CaptureTable::default().with(cap),
        NodeFileTable::default(),
    );
    let err = service(&local)
        .download(
            &request("jane-token"),
            Compression::Stored,
            &Selection::default(),
            ZipAsk::Whole,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidStatus { .. }), "{err:?}");
}
