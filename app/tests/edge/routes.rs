//! SPEC sections 2 to 6 through the routes: statuses, messages, headers.

use std::sync::Arc;

use packetcapture_domain::testing::{MockCaptureLocator, StaticRouter};
use packetcapture_domain::{Backend, ClusterPorts, Error};

use crate::support::*;

const JANE: (&str, &str) = ("authorization", "Bearer jane-token");
const BOB: (&str, &str) = ("authorization", "Bearer bob-token");
const GATEWAY: (&str, &str) = ("authorization", "Bearer gw-token");

fn assert_text(r: &warp::http::Response<bytes::Bytes>, status: u16, message: &str) {
    assert_eq!(r.status().as_u16(), status, "body: {}", body(r));
    assert_eq!(body(r), format!("{message}\n"));
    assert_eq!(header(r, "content-type"), Some("text/plain; charset=utf-8"));
}

#[tokio::test]
async fn health_answers_ok_without_a_token() {
    let r = send(edge(&local_cluster()), "GET", "/health", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(body(&r), r#"{"status":"Ok"}"#);
    assert_eq!(header(&r, "content-type"), Some("application/json"));
}

#[tokio::test]
async fn version_reports_the_build() {
    let r = send(edge(&local_cluster()), "GET", "/version", &[]).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    for field in ["buildDate", "gitCommit", "gitTag", "buildVersion"] {
        assert!(
            v[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field} in {v}"
        );
    }
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_are_405_with_allow() {
    let e = edge(&local_cluster());
    assert_text(
        &send(e.clone(), "GET", "/nothing/here", &[]).await,
        404,
        "not found",
    );
    let r = send(e.clone(), "POST", "/download/dev/done/files.zip", &[JANE]).await;
    assert_text(&r, 405, "method not allowed");
    assert_eq!(header(&r, "allow"), Some("GET, HEAD"));
    let r = send(
        e.clone(),
        "HEAD",
        "/download/dev/done/merged.pcapng",
        &[JANE],
    )
    .await;
    assert_eq!(header(&r, "allow"), Some("GET"));
    let r = send(e.clone(), "PUT", "/files/dev/done", &[JANE]).await;
    assert_eq!(header(&r, "allow"), Some("GET, DELETE"));
    let r = send(e, "DELETE", "/health", &[]).await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "allow")),
        (405, Some("GET"))
    );
}

#[tokio::test]
async fn malformed_paths_are_400_before_authentication() {
    let e = edge(&local_cluster());
    for path in [
        "/download/dev/done/other.zip",
        "/download/dev/done/files.zip/",
        "/download/dev//files.zip",
        "/download/dev/%2e%2e/files.zip",
        "/download/dev/a%2Fb/files.zip",
        "/download/DEV/done/files.zip",
        "/download/dev/done/extra/files.zip",
        "/files/dev",
        "/files/dev/done/more",
        "/files/-dev/done",
    ] {
        assert_text(
            &send(e.clone(), "GET", path, &[]).await,
            400,
            "request URL is malformed",
        );
    }
}

#[tokio::test]
async fn a_missing_or_unknown_token_is_401_with_a_bearer_challenge() {
    let e = edge(&local_cluster());
    for headers in [
        vec![],
        vec![("authorization", "Bearer nope")],
        vec![("authorization", "Basic amFuZTpw")],
    ] {
        let r = send(e.clone(), "GET", "/download/dev/done/files.zip", &headers).await;
        assert_eq!(r.status(), 401, "{headers:?}");
        assert_eq!(header(&r, "www-authenticate"), Some("Bearer"));
        assert!(body(&r).starts_with("authentication failed: "));
    }
}

#[tokio::test]
async fn a_malformed_cluster_id_is_400_before_authentication() {
    let e = edge(&local_cluster());
    let long = "a".repeat(300);
    for id in ["a/b", "UPPER", long.as_str(), "a b"] {
        let r = send(e.clone(), "GET", "/files/dev/done", &[("x-cluster-id", id)]).await;
        assert_eq!(r.status(), 400, "{id}: {}", body(&r));
        assert!(body(&r).starts_with("invalid cluster id"), "{}", body(&r));
    }
}

#[tokio::test]
async fn an_allowed_user_downloads_every_file_as_a_zip_with_its_length_once_finished() {
    let e = edge(&local_cluster());
    let mut bodies = Vec::new();
    // Finished: planned, with its length and validators. Still capturing: streamed.
    for (capture, planned) in [("done", true), ("live", false)] {
        let path = format!("/download/dev/{capture}/files.zip");
        let r = send(e.clone(), "GET", &path, &[JANE]).await;
        assert_eq!(r.status(), 200, "{capture}: {}", body(&r));
        assert_eq!(header(&r, "content-type"), Some("application/zip"));
        assert_eq!(
            header(&r, "content-disposition"),
            Some("attachment; filename=files.zip")
        );
        let length = header(&r, "content-length").map(|v| v.parse::<usize>().unwrap());
        if planned {
            assert_eq!(length, Some(r.body().len()), "{capture}");
            assert_eq!(header(&r, "accept-ranges"), Some("bytes"));
            assert!(header(&r, "etag").unwrap().starts_with("\"z-"));
            assert_eq!(
                header(&r, "last-modified"),
                Some("Tue, 14 Nov 2023 22:15:00 GMT"),
                "the newest file's time"
            );
            assert_eq!(header(&r, "cache-control"), Some("no-cache"));
        } else {
            assert_eq!((length, header(&r, "etag")), (None, None), "{capture}");
            assert_eq!(header(&r, "cache-control"), Some("no-store"));
        }
        let files = entries(r.body());
        assert_eq!(files.len(), 2);
        assert_eq!(
            (files[0].0.as_str(), files[0].1.as_slice()),
            ("a.pcap", &b"pcap-a"[..])
        );
        assert_eq!((files[1].0.as_str(), files[1].1.len()), ("b.pcap", 100_000));
        assert_eq!(files[0].2, zip::CompressionMethod::Stored);
        bodies.push(r.body().clone());
    }
    let ranged = send(
        e.clone(),
        "GET",
        "/download/dev/done/files.zip",
        &[JANE, ("range", "bytes=10-99")],
    )
    .await;
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.body().as_ref(), &bodies[0][10..100]);
    let len = bodies[0].len();
    assert_eq!(
        header(&ranged, "content-range"),
        Some(format!("bytes 10-99/{len}").as_str())
    );
    let past = send(
        e.clone(),
        "GET",
        "/download/dev/done/files.zip",
        &[JANE, ("range", &format!("bytes={len}-"))],
    )
    .await;
    assert_eq!(past.status(), 416);
    assert_eq!(
        header(&past, "content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    // A capture still running ignores the range.
    let live = send(
        e,
        "GET",
        "/download/dev/live/files.zip",
        &[JANE, ("range", "bytes=10-99")],
    )
    .await;
    assert_eq!(live.status(), 200);
    assert_eq!(live.body().len(), bodies[1].len());
}

#[tokio::test]
async fn deflate_is_chosen_by_query_and_an_unknown_compression_is_400() {
    let e = edge(&local_cluster());
    let r = send(
        e.clone(),
        "GET",
        "/download/dev/done/files.zip?compression=deflate",
        &[JANE],
    )
    .await;
    assert_eq!(r.status(), 200);
    let files = entries(r.body());
    assert_eq!(files[1].2, zip::CompressionMethod::Deflated);
    assert_eq!(files[1].1, vec![7u8; 100_000]);
    assert!(r.body().len() < 50_000);
    let r = send(
        e,
        "GET",
        "/download/dev/done/files.zip?compression=zstd",
        &[JANE],
    )
    .await;
    assert_text(
        &r,
        400,
        "invalid compression \"zstd\": must be one of stored, deflate",
    );
}

#[tokio::test]
async fn no_file_anywhere_is_204_with_an_empty_body() {
    let e = edge(&local_cluster());
    for capture in ["empty", "gone"] {
        let r = send(
            e.clone(),
            "GET",
            &format!("/download/dev/{capture}/files.zip"),
            &[JANE],
        )
        .await;
        assert_eq!(r.status(), 204, "{capture}: {}", body(&r));
        assert!(r.body().is_empty());
    }
}

#[tokio::test]
async fn a_user_without_rbac_is_403_naming_user_verb_and_namespace() {
    let e = edge(&local_cluster());
    let r = send(e.clone(), "GET", "/download/dev/done/files.zip", &[BOB]).await;
    assert_text(
        &r,
        403,
        "bob is not authorized to get packetcaptures/files in namespace dev",
    );
    let r = send(e, "DELETE", "/files/dev/done", &[BOB]).await;
    assert_text(
        &r,
        403,
        "bob is not authorized to delete packetcaptures/files in namespace dev",
    );
}

#[tokio::test]
async fn an_unknown_capture_is_404() {
    let r = send(
        edge(&local_cluster()),
        "GET",
        "/download/dev/nope/files.zip",
        &[JANE],
    )
    .await;
    assert_text(&r, 404, "packetcapture dev/nope not found");
}

#[tokio::test]
async fn a_node_without_entry_pod_is_502_naming_the_node() {
    let r = send(
        edge(&local_cluster()),
        "GET",
        "/download/dev/orphan/files.zip",
        &[JANE],
    )
    .await;
    assert_text(&r, 502, "no running entry pod found on node node-9");
}

#[tokio::test]
async fn managed_clusters_are_routed_and_refused_when_unknown_or_disconnected() {
    let e = edge(&local_cluster());
    let r = send(
        e.clone(),
        "GET",
        "/download/dev/done/files.zip",
        &[JANE, ("X-Cluster-ID", "east")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(entries(r.body())[0].0, "east.pcap");
    let r = send(
        e.clone(),
        "GET",
        "/download/dev/done/files.zip",
        &[JANE, ("x-cluster-id", "cluster")],
    )
    .await;
    assert_eq!(
        entries(r.body())[0].0,
        "a.pcap",
        "`cluster` is the local cluster"
    );
    let r = send(
        e.clone(),
        "GET",
        "/files/dev/done",
        &[JANE, ("x-cluster-id", "north")],
    )
    .await;
    assert_text(&r, 404, "managed cluster north not found");
    let r = send(
        e,
        "GET",
        "/files/dev/done",
        &[JANE, ("x-cluster-id", "west")],
    )
    .await;
    assert_text(&r, 503, "managed cluster west is not connected");
}

#[tokio::test]
async fn impersonating_a_user_runs_the_request_as_that_user() {
    let local = local_cluster();
    let r = send(
        edge(&local),
        "GET",
        "/files/dev/done",
        &[GATEWAY, ("impersonate-user", "jane")],
    )
    .await;
    assert_eq!(r.status(), 200, "{}", body(&r));
    let asked = local.rbac.asked.lock().unwrap().clone();
    assert_eq!(asked[0].1.resource, "users");
    assert_eq!(asked.last().unwrap().0.name, "jane");
}

#[tokio::test]
async fn impersonating_a_service_account_checks_serviceaccounts_in_its_namespace() {
    let local = local_cluster();
    let r = send(
        edge(&local),
        "GET",
        "/files/dev/done",
        &[
            GATEWAY,
            ("impersonate-user", "system:serviceaccount:ops:robot"),
        ],
    )
    .await;
    assert_text(
        &r,
        403,
        "system:serviceaccount:ops:robot is not authorized to get packetcaptures/files in namespace dev",
    );
    let asked = local.rbac.asked.lock().unwrap().clone();
    assert_eq!(
        (
            asked[0].1.resource.as_str(),
            asked[0].1.namespace.as_str(),
            asked[0].1.name.as_str()
        ),
        ("serviceaccounts", "ops", "robot")
    );
}

#[tokio::test]
async fn impersonated_groups_and_extras_are_checked_and_carried() {
    let local = local_cluster();
    let r = send(
        edge(&local),
        "GET",
        "/files/dev/done",
        &[
            GATEWAY,
            ("impersonate-user", "sam"),
            ("impersonate-group", "auditors"),
            ("impersonate-group", "others"),
            ("impersonate-extra-Scopes", "view"),
            ("impersonate-extra-scopes", "list"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200, "{}", body(&r));
    let asked = local.rbac.asked.lock().unwrap().clone();
    let checked: Vec<_> = asked
        .iter()
        .map(|(_, a)| (a.resource.clone(), a.subresource.clone(), a.name.clone()))
        .collect();
    assert!(checked.contains(&("groups".into(), String::new(), "others".into())));
    assert!(checked.contains(&("userextras".into(), "scopes".into(), "list".into())));
    let (user, _) = asked.last().unwrap();
    assert_eq!(user.groups, ["auditors", "others", "system:authenticated"]);
    assert_eq!(user.extra["scopes"], ["view", "list"]);
}

#[tokio::test]
async fn a_percent_encoded_extra_key_is_decoded() {
    let local = local_cluster();
    let r = send(
        edge(&local),
        "GET",
        "/files/dev/done",
        &[
            GATEWAY,
            ("impersonate-user", "sam"),
            ("impersonate-extra-sc%6Fpes", "view"),
            ("impersonate-group", "auditors"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200, "{}", body(&r));
    let asked = local.rbac.asked.lock().unwrap().clone();
    assert!(
        asked.iter().any(|(_, a)| a.subresource == "scopes"),
        "the decoded key is checked: {asked:?}"
    );
    let (user, _) = asked.last().unwrap();
    assert_eq!(user.extra["scopes"], ["view"], "and carried decoded");
}

#[tokio::test]
async fn impersonating_a_group_the_caller_may_not_is_403_naming_the_group() {
    // gateway may impersonate users and groups; jane may impersonate nothing.
    let local = local_cluster();
    let r = send(
        edge(&local),
        "GET",
        "/files/dev/done",
        &[
            JANE,
            ("impersonate-user", "jane"),
            ("impersonate-group", "admins"),
        ],
    )
    .await;
    assert_text(&r, 403, "jane is not allowed to impersonate user jane");
    let local = local_cluster();
    let rbac_without_groups = packetcapture_domain::testing::RbacTable::default()
        .allow(
            "gateway",
            packetcapture_domain::Verb::Impersonate,
            "users",
            "",
        )
        .allow(
            "auditor",
            packetcapture_domain::Verb::Get,
            "packetcaptures/files",
            "dev",
        );
    let cluster = packetcapture_domain::testing::FakeCluster {
        rbac: Arc::new(rbac_without_groups),
        ..local
    };
    let r = send(
        edge(&cluster),
        "GET",
        "/files/dev/done",
        &[
            GATEWAY,
            ("impersonate-user", "auditor"),
            ("impersonate-group", "admins"),
        ],
    )
    .await;
    assert_text(
        &r,
        403,
        "gateway is not allowed to impersonate group admins",
    );
}

#[tokio::test]
async fn a_header_sent_twice_is_refused_not_guessed() {
    let e = edge(&local_cluster());
    let r = send(
        e.clone(),
        "GET",
        "/files/dev/done",
        &[JANE, ("authorization", "Bearer bob-token")],
    )
    .await;
    assert_eq!(r.status(), 401, "two Authorization headers: {}", body(&r));
    assert_eq!(header(&r, "www-authenticate"), Some("Bearer"));
    let r = send(
        e,
        "GET",
        "/files/dev/done",
        &[JANE, ("x-cluster-id", "east"), ("x-cluster-id", "west")],
    )
    .await;
    assert_text(
        &r,
        400,
        "invalid header \"x-cluster-id\": must be sent once",
    );
}

#[tokio::test]
async fn a_user_who_may_not_read_learns_nothing_of_whether_a_capture_exists() {
    let e = edge(&local_cluster());
    let missing = send(e.clone(), "GET", "/files/dev/no-such-capture", &[BOB]).await;
    let present = send(e, "GET", "/files/dev/done", &[BOB]).await;
    assert_text(
        &missing,
        403,
        "bob is not authorized to get packetcaptures/files in namespace dev",
    );
    assert_eq!(body(&missing), body(&present), "403 either way, same words");
}

#[tokio::test]
async fn impersonation_without_a_user_is_400_and_without_permission_is_403() {
    let e = edge(&local_cluster());
    let r = send(
        e.clone(),
        "GET",
        "/files/dev/done",
        &[GATEWAY, ("impersonate-group", "auditors")],
    )
    .await;
    assert_text(&r, 400, "missing impersonation headers");
    let r = send(
        e.clone(),
        "GET",
        "/files/dev/done",
        &[GATEWAY, ("impersonate-extra-scopes", "view")],
    )
    .await;
    assert_text(&r, 400, "missing impersonation headers");
    let r = send(
        e.clone(),
        "GET",
        "/files/dev/done",
        &[JANE, ("impersonate-user", "admin")],
    )
    .await;
    assert_text(&r, 403, "jane is not allowed to impersonate user admin");
    let r = send(
        e,
        "GET",
        "/files/dev/done",
        &[
            GATEWAY,
            ("impersonate-user", "system:serviceaccount:kube-system:root"),
        ],
    )
    .await;
    assert_text(
        &r,
        403,
        "gateway is not allowed to impersonate user system:serviceaccount:kube-system:root",
    );
}

#[tokio::test]
async fn listing_shows_each_node_with_its_files() {
    let r = send(edge(&local_cluster()), "GET", "/files/dev/done", &[JANE]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["namespace"], "dev");
    assert_eq!(v["name"], "done");
    assert_eq!(v["cluster"], "cluster");
    assert_eq!(v["nodes"][0]["node"], "node-1");
    assert_eq!(v["nodes"][0]["state"], "Finished");
    assert_eq!(v["nodes"][0]["directory"], "/var/log/calico/pcap/dev/done");
    assert_eq!(
        v["nodes"][0]["files"][0],
        serde_json::json!({"name": "a.pcap", "size": 6, "modified": "2023-11-14T22:13:20Z",
                           "path": "/files/dev/done/node-1/a.pcap"})
    );
    assert_eq!(v["nodes"][1]["files"][0]["size"], 100_000);
}

#[tokio::test]
async fn delete_needs_every_node_finished() {
    let e = edge(&local_cluster());
    assert_text(
        &send(e.clone(), "DELETE", "/files/dev/running", &[JANE]).await,
        409,
        "capture state is not Finished",
    );
    assert_text(
        &send(e, "DELETE", "/files/dev/stateless", &[JANE]).await,
        409,
        "capture state cannot be determined",
    );
}

#[tokio::test]
async fn delete_removes_the_files_clears_the_status_and_is_repeatable() {
    let local = local_cluster();
    let e = edge(&local);
    local.captures.conflict_next(2);
    let r = send(e.clone(), "DELETE", "/files/dev/done", &[JANE]).await;
    assert_eq!(r.status(), 204, "{}", body(&r));
    assert!(r.body().is_empty());
    assert!(
        local
            .files
            .files_in("node-1", &format!("{DIR}/dev/done"))
            .is_empty()
    );
    let stored = local
        .captures
        .current(&packetcapture_domain::CaptureRef::parse("dev", "done").unwrap())
        .unwrap();
    assert!(stored.files.iter().all(|n| n.file_names.is_empty()));
    assert_eq!(
        send(e.clone(), "DELETE", "/files/dev/done", &[JANE])
            .await
            .status(),
        204
    );
    assert_eq!(
        send(e, "GET", "/download/dev/done/files.zip", &[JANE])
            .await
            .status(),
        204
    );
}

#[tokio::test]
async fn delete_still_conflicting_after_three_tries_is_502() {
    let local = local_cluster();
    local.captures.conflict_next(3);
    let r = send(edge(&local), "DELETE", "/files/dev/done", &[JANE]).await;
    assert_text(
        &r,
        502,
        "updating the status of packetcapture dev/done conflicted 3 times; try again",
    );
}

fn failing_locator(error: fn() -> Error) -> Arc<StaticRouter> {
    let local = local_cluster();
    let mut locator = MockCaptureLocator::new();
    locator.expect_get().returning(move |_| Err(error()));
    Arc::new(StaticRouter::local(ClusterPorts {
        locator: Arc::new(locator),
        ..ports_of(&local)
    }))
}

#[tokio::test]
async fn an_unreachable_api_server_is_503_and_a_failing_one_502() {
    let unreachable = || {
        Error::unavailable(
            Backend::Kubernetes,
            "get packetcapture dev/done in the local cluster",
            "connection refused",
        )
    };
    let r = send(
        edge_with(failing_locator(unreachable)),
        "GET",
        "/files/dev/done",
        &[JANE],
    )
    .await;
    assert_text(
        &r,
        503,
        "Kubernetes API unavailable while trying to get packetcapture dev/done in the local cluster",
    );
    let failing = || {
        Error::backend(
            Backend::Kubernetes,
            "get packetcapture dev/done in the local cluster",
            "500 Internal Server Error",
        )
    };
    let r = send(
        edge_with(failing_locator(failing)),
        "GET",
        "/download/dev/done/files.zip",
        &[JANE],
    )
    .await;
    assert_text(
        &r,
        502,
        "Kubernetes API failed to get packetcapture dev/done in the local cluster",
    );
}

#[tokio::test]
async fn a_bug_is_a_generic_500() {
    let bug = || Error::Internal("invariant broken: secret detail".into());
    let r = send(
        edge_with(failing_locator(bug)),
        "GET",
        "/files/dev/done",
        &[JANE],
    )
    .await;
    assert_text(&r, 500, "internal server error");
}

#[tokio::test]
async fn a_query_parameter_the_route_does_not_take_or_gives_twice_is_400_naming_it() {
    let e = edge(&local_cluster());
    for (path, message) in [
        (
            "/download/dev/done/merged.pcapng?sinse=2026-11-30T10:00:00Z",
            "unknown query parameter \"sinse\": this route takes node, since, until, filter, follow, lag",
        ),
        (
            "/download/dev/done/files.zip?nodes=node-1",
            "unknown query parameter \"nodes\": this route takes node, since, until, compression",
        ),
        (
            "/download/dev/done/merged.pcapng?compression=deflate",
            "unknown query parameter \"compression\": this route takes node, since, until, filter, follow, lag",
        ),
        (
            "/files/dev/done?x=1",
            "unknown query parameter \"x\": this route takes none",
        ),
        (
            "/health?verbose",
            "unknown query parameter \"verbose\": this route takes none",
        ),
        (
            "/download/dev/done/files.zip?since=2026-11-30T10:00:00Z&since=2026-11-30T11:00:00Z",
            "query parameter \"since\" is given more than once; give it once",
        ),
        (
            "/download/dev/done/files.zip?compression=stored&compression=deflate",
            "query parameter \"compression\" is given more than once; give it once",
        ),
    ] {
        let r = send(e.clone(), "GET", path, &[JANE]).await;
        assert_text(&r, 400, message);
    }
    // node= repeats; the others, once each, are fine.
    let r = send(
        e,
        "GET",
        "/download/dev/done/files.zip?node=node-1&node=node-1&since=2000-01-01T00:00:00Z&compression=stored",
        &[JANE],
    )
    .await;
    assert_eq!(r.status(), 200);
}
