//! A simulated Kubernetes API server: what kube-rs and kubectl need, as the real one answers.
// A refusal is a ready response: returning it as the error keeps each handler flat.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::cluster::{Attributes, Cluster, RequestRecord, UserInfo, World, lock};
use crate::exec;
use crate::http::{Body, json, status};

/// The minor version reported; kubectl picks its exec protocol from it (≥ 30: WebSocket).
pub const MINOR: &str = "33";

fn query_params(uri: &http::Uri) -> Vec<(String, String)> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Handles one request to `cluster`'s API server.
pub async fn handle(
    world: Arc<World>,
    cluster: Arc<Cluster>,
    req: Request<Incoming>,
) -> Response<Body> {
    let faults = cluster.faults();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let path = req.uri().path().to_owned();
    let cluster_header = req
        .headers()
        .get("x-cluster-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if path == "/version" {
        cluster.record(RequestRecord {
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            cluster_header,
            user: None,
        });
        return json(
            StatusCode::OK,
            &json!({"major": "1", "minor": MINOR, "gitVersion": format!("v1.{MINOR}.0-sim"), "platform": "linux/amd64",
                    "goVersion": "go1.24", "compiler": "gc", "gitCommit": "sim", "gitTreeState": "clean", "buildDate": "2026-11-01T00:00:00Z"}),
        );
    }
    let user = match authenticate(&world, &cluster, &req) {
        Ok(u) => u,
        Err(r) => {
            cluster.record(RequestRecord {
                method: req.method().to_string(),
                uri: req.uri().to_string(),
                cluster_header,
                user: None,
            });
            return r;
        }
    };
    cluster.record(RequestRecord {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        cluster_header,
        user: Some(user.name.clone()),
    });
    if let Some(r) = discovery(&cluster, &path, req.headers()) {
        return r;
    }
    if let Some(code) = faults.api_server_error {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return status(
            code,
            "InternalError",
            &format!("simulated API server failure ({})", code.as_u16()),
        );
    }
    route(world, cluster, user, req).await
}

fn authenticate(
    world: &World,
    cluster: &Cluster,
    req: &Request<Incoming>,
) -> Result<UserInfo, Response<Body>> {
    let unauthorized = || status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    let header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    let token = header.strip_prefix("Bearer ").ok_or_else(unauthorized)?;
    let user = world
        .users
        .get(token.trim())
        .cloned()
        .ok_or_else(unauthorized)?;
    impersonate(cluster, user, req.headers())
}

/// Applies `Impersonate-*` headers as the API server does.
fn impersonate(
    cluster: &Cluster,
    user: UserInfo,
    headers: &http::HeaderMap,
) -> Result<UserInfo, Response<Body>> {
    let text = |v: &http::HeaderValue| v.to_str().unwrap_or_default().to_owned();
    let target = headers.get("impersonate-user").map(text);
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .map(text)
        .collect();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix("impersonate-extra-") {
            extra.entry(key.to_owned()).or_default().push(text(value));
        }
    }
    let Some(target) = target else {
        if groups.is_empty() && extra.is_empty() {
            return Ok(user);
        }
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "requested impersonation without a user",
        ));
    };
    let forbidden = |what: &str| {
        status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "{what} is forbidden: User \"{}\" cannot impersonate resource",
                user.name
            ),
        )
    };
    let mut checks = Vec::new();
    match target
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, name)) => checks.push(attrs("impersonate", "", "serviceaccounts", "", ns, name)),
        None => checks.push(attrs("impersonate", "", "users", "", "", &target)),
    }
    for g in &groups {
        checks.push(attrs("impersonate", "", "groups", "", "", g));
    }
    for (k, values) in &extra {
        for v in values {
            checks.push(attrs(
                "impersonate",
                "authentication.k8s.io",
                "userextras",
                k,
                "",
                v,
            ));
        }
    }
    for a in &checks {
        if !cluster.allowed(&user, a) {
            return Err(forbidden(&format!("{} \"{}\"", a.resource, a.name)));
        }
    }
    let mut groups = groups;
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    Ok(UserInfo {
        name: target,
        uid: String::new(),
        groups,
        extra,
    })
}

fn attrs(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
    Attributes {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
        subresource: sub.into(),
        namespace: ns.into(),
        name: name.into(),
    }
}

fn discovery(cluster: &Cluster, path: &str, _headers: &http::HeaderMap) -> Option<Response<Body>> {
    let group = |name: &str, version: &str| {
        json!({"name": name, "versions": [{"groupVersion": format!("{name}/{version}"), "version": version}],
               "preferredVersion": {"groupVersion": format!("{name}/{version}"), "version": version}})
    };
    let resource = |name: &str, kind: &str, namespaced: bool, verbs: &[&str]| json!({"name": name, "singularName": name.trim_end_matches('s'), "namespaced": namespaced, "kind": kind, "verbs": verbs});
    let list = |gv: &str, resources: Vec<Value>| json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources});
    let body = match path {
        "/api" => json!({"kind": "APIVersions", "versions": ["v1"],
                          "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        "/apis" => json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            group("projectcalico.org", "v3"), group("authentication.k8s.io", "v1"), group("authorization.k8s.io", "v1")]}),
        "/api/v1" => list(
            "v1",
            vec![
                {
                    let mut pods = resource("pods", "Pod", true, &["get", "list"]);
                    pods["shortNames"] = json!(["po"]);
                    pods
                },
                json!({"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]}),
                resource("namespaces", "Namespace", false, &["get"]),
            ],
        ),
        "/apis/projectcalico.org/v3" => {
            let mut resources = vec![
                resource("packetcaptures", "PacketCapture", true, &["get", "list"]),
                json!({"name": "packetcaptures/status", "singularName": "", "namespaced": true, "kind": "PacketCapture", "verbs": ["get", "update"]}),
                resource(
                    "authenticationreviews",
                    "AuthenticationReview",
                    false,
                    &["create"],
                ),
            ];
            if cluster.local {
                resources.push(resource(
                    "managedclusters",
                    "ManagedCluster",
                    false,
                    &["get", "list"],
                ));
            }
            list("projectcalico.org/v3", resources)
        }
        "/apis/authentication.k8s.io/v1" => list(
            "authentication.k8s.io/v1",
            vec![resource("tokenreviews", "TokenReview", false, &["create"])],
        ),
        "/apis/authorization.k8s.io/v1" => list(
            "authorization.k8s.io/v1",
            vec![resource(
                "subjectaccessreviews",
                "SubjectAccessReview",
                false,
                &["create"],
            )],
        ),
        _ => return None,
    };
    Some(json(StatusCode::OK, &body))
}

fn forbidden(user: &UserInfo, a: &Attributes) -> Response<Body> {
    let what = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!(
            "{what} \"{}\" is forbidden: User \"{}\" cannot {} resource \"{what}\" in API group \"{}\" {scope}",
            a.name, user.name, a.verb, a.group
        ),
    )
}

fn not_found(kind: &str, name: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{kind} \"{name}\" not found"),
    )
}

async fn body_json(req: Request<Incoming>) -> Result<Value, Response<Body>> {
    let bytes: Bytes = req
        .into_body()
        .collect()
        .await
        .map_err(|_| {
            status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "reading the body failed",
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("invalid JSON: {e}"),
        )
    })
}

async fn route(
    world: Arc<World>,
    cluster: Arc<Cluster>,
    user: UserInfo,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let params = query_params(req.uri());
    let method = req.method().clone();
    let check = |a: Attributes| {
        if cluster.allowed(&user, &a) {
            Ok(())
        } else {
            Err(forbidden(&user, &a))
        }
    };
    macro_rules! allow {
        ($a:expr) => {
            if let Err(r) = check($a) {
                return r;
            }
        };
    }
    match (method.clone(), s.as_slice()) {
        (Method::GET, ["api", "v1", "namespaces", ns]) => {
            allow!(attrs("get", "", "namespaces", "", "", ns));
            json(
                StatusCode::OK,
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "status": {"phase": "Active"}}),
            )
        }
        (Method::GET, ["api", "v1", "pods"]) => {
            allow!(attrs("list", "", "pods", "", "", ""));
            list_pods(&cluster, None, &params, req.headers())
        }
        (Method::GET, ["api", "v1", "namespaces", ns, "pods"]) => {
            allow!(attrs("list", "", "pods", "", ns, ""));
            list_pods(&cluster, Some(ns), &params, req.headers())
        }
        (Method::GET, ["api", "v1", "namespaces", ns, "pods", name]) => {
            allow!(attrs("get", "", "pods", "", ns, name));
            match cluster
                .pods()
                .into_iter()
                .find(|p| p["metadata"]["name"] == *name && p["metadata"]["namespace"] == *ns)
            {
                Some(p) => json(StatusCode::OK, &p),
                None => not_found("pods", name),
            }
        }
        (Method::GET | Method::POST, ["api", "v1", "namespaces", ns, "pods", name, "exec"]) => {
            allow!(attrs("create", "", "pods", "exec", ns, name));
            let Some(node) = cluster.pod_node(ns, name) else {
                return not_found("pods", name);
            };
            exec::handle(cluster.clone(), node, params, req).await
        }
        (Method::GET, ["apis", "projectcalico.org", "v3", "packetcaptures"]) => {
            allow!(attrs(
                "list",
                "projectcalico.org",
                "packetcaptures",
                "",
                "",
                ""
            ));
            capture_list(&cluster, None)
        }
        (
            Method::GET,
            [
                "apis",
                "projectcalico.org",
                "v3",
                "namespaces",
                ns,
                "packetcaptures",
            ],
        ) => {
            allow!(attrs(
                "list",
                "projectcalico.org",
                "packetcaptures",
                "",
                ns,
                ""
            ));
            capture_list(&cluster, Some(ns))
        }
        (
            Method::GET,
            [
                "apis",
                "projectcalico.org",
                "v3",
                "namespaces",
                ns,
                "packetcaptures",
                name,
            ],
        )
        | (
            Method::GET,
            [
                "apis",
                "projectcalico.org",
                "v3",
                "namespaces",
                ns,
                "packetcaptures",
                name,
                "status",
            ],
        ) => {
            let sub = if s.len() == 8 { "status" } else { "" };
            allow!(attrs(
                "get",
                "projectcalico.org",
                "packetcaptures",
                sub,
                ns,
                name
            ));
            match lock(&cluster.captures).get(&((*ns).to_owned(), (*name).to_owned())) {
                Some(o) => json(StatusCode::OK, o),
                None => not_found("packetcaptures.projectcalico.org", name),
            }
        }
        (
            Method::PUT,
            [
                "apis",
                "projectcalico.org",
                "v3",
                "namespaces",
                ns,
                "packetcaptures",
                name,
                "status",
            ],
        ) => {
            allow!(attrs(
                "update",
                "projectcalico.org",
                "packetcaptures",
                "status",
                ns,
                name
            ));
            let (ns, name) = ((*ns).to_owned(), (*name).to_owned());
            let body = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let mut captures = lock(&cluster.captures);
            let Some(stored) = captures.get_mut(&(ns, name.clone())) else {
                return not_found("packetcaptures.projectcalico.org", &name);
            };
            if body["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on packetcaptures.projectcalico.org \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                    ),
                );
            }
            stored["status"] = body["status"].clone();
            stored["metadata"]["resourceVersion"] = json!(cluster.next_version());
            json(StatusCode::OK, stored)
        }
        (Method::GET, ["apis", "projectcalico.org", "v3", "managedclusters"]) => {
            allow!(attrs(
                "list",
                "projectcalico.org",
                "managedclusters",
                "",
                "",
                ""
            ));
            let items = if cluster.local {
                managed_clusters(&world)
            } else {
                Vec::new()
            };
            json(
                StatusCode::OK,
                &json!({"apiVersion": "projectcalico.org/v3", "kind": "ManagedClusterList", "metadata": {}, "items": items}),
            )
        }
        (Method::GET, ["apis", "projectcalico.org", "v3", "managedclusters", name]) => {
            allow!(attrs(
                "get",
                "projectcalico.org",
                "managedclusters",
                "",
                "",
                name
            ));
            let found = if cluster.local {
                managed_clusters(&world)
                    .into_iter()
                    .find(|m| m["metadata"]["name"] == *name)
            } else {
                None
            };
            match found {
                Some(m) => json(StatusCode::OK, &m),
                None => not_found("managedclusters.projectcalico.org", name),
            }
        }
        (Method::POST, ["apis", "authentication.k8s.io", "v1", "tokenreviews"]) => {
            allow!(attrs(
                "create",
                "authentication.k8s.io",
                "tokenreviews",
                "",
                "",
                ""
            ));
            let body = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let token = body["spec"]["token"].as_str().unwrap_or_default();
            let status = match world.users.get(token) {
                Some(u) => {
                    json!({"authenticated": true, "user": {"username": u.name, "uid": u.uid, "groups": u.groups, "extra": u.extra}})
                }
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            };
            json(
                StatusCode::CREATED,
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {}, "spec": body["spec"], "status": status}),
            )
        }
        (Method::POST, ["apis", "projectcalico.org", "v3", "authenticationreviews"]) => {
            allow!(attrs(
                "create",
                "projectcalico.org",
                "authenticationreviews",
                "",
                "",
                ""
            ));
            json(
                StatusCode::CREATED,
                &json!({"apiVersion": "projectcalico.org/v3", "kind": "AuthenticationReview", "metadata": {},
                "status": {"name": user.name, "uid": user.uid, "groups": user.groups, "extra": user.extra}}),
            )
        }
        (Method::POST, ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"]) => {
            allow!(attrs(
                "create",
                "authorization.k8s.io",
                "subjectaccessreviews",
                "",
                "",
                ""
            ));
            let body = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let spec = &body["spec"];
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let subject = UserInfo {
                name: spec["user"].as_str().unwrap_or_default().to_owned(),
                uid: spec["uid"].as_str().unwrap_or_default().to_owned(),
                groups: strings(&spec["groups"]),
                extra: spec["extra"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), strings(v))).collect())
                    .unwrap_or_default(),
            };
            let r = &spec["resourceAttributes"];
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            let a = Attributes {
                verb: text(&r["verb"]),
                group: text(&r["group"]),
                resource: text(&r["resource"]),
                subresource: text(&r["subresource"]),
                namespace: text(&r["namespace"]),
                name: text(&r["name"]),
            };
            let allowed = cluster.allowed(&subject, &a);
            let reason = if allowed {
                "allowed by a scenario rule"
            } else {
                ""
            };
            json(
                StatusCode::CREATED,
                &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "metadata": {},
                "spec": spec, "status": {"allowed": allowed, "reason": reason}}),
            )
        }
        _ if matches!(method, Method::GET) => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ),
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("the server does not allow this method on the requested resource ({path})"),
        ),
    }
}

/// PacketCaptures of one namespace, or of all.
fn capture_list(cluster: &Cluster, namespace: Option<&str>) -> Response<Body> {
    let items: Vec<Value> = lock(&cluster.captures)
        .iter()
        .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
        .map(|(_, v)| v.clone())
        .collect();
    json(
        StatusCode::OK,
        &json!({"apiVersion": "projectcalico.org/v3", "kind": "PacketCaptureList",
                "metadata": {"resourceVersion": cluster.next_version()}, "items": items}),
    )
}

fn managed_clusters(world: &World) -> Vec<Value> {
    world
        .clusters
        .iter()
        .filter(|c| !c.local)
        .map(|c| {
            let up = c.connected.load(std::sync::atomic::Ordering::SeqCst);
            json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "ManagedCluster",
                "metadata": {"name": c.name, "resourceVersion": "1", "creationTimestamp": "2026-11-01T08:00:00Z"},
                "spec": {},
                "status": {"conditions": [{
                    "type": "ManagedClusterConnected",
                    "status": if up { "True" } else { "False" },
                    "reason": if up { "Connected" } else { "NotConnected" },
                }]},
            })
        })
        .collect()
}

/// `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated.
fn selector_matches(selector: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<bool, String> {
    for part in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ok = if let Some((k, v)) = part.split_once("!=") {
            get(k.trim()).as_deref() != Some(v.trim())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            get(k.trim()).as_deref() == Some(v.trim())
        } else if let Some(k) = part.strip_prefix('!') {
            get(k.trim()).is_none()
        } else if part.contains(' ') || part.contains('(') {
            return Err(format!("unable to parse requirement: {part}"));
        } else {
            get(part).is_some()
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn list_pods(
    cluster: &Cluster,
    ns: Option<&str>,
    params: &[(String, String)],
    headers: &http::HeaderMap,
) -> Response<Body> {
    let labels = param(params, "labelSelector").unwrap_or("");
    let fields = param(params, "fieldSelector").unwrap_or("");
    let mut items = Vec::new();
    for pod in cluster.pods() {
        if ns.is_some_and(|ns| pod["metadata"]["namespace"] != ns) {
            continue;
        }
        let label = |k: &str| pod["metadata"]["labels"][k].as_str().map(str::to_owned);
        let field = |k: &str| match k {
            "spec.nodeName" => pod["spec"]["nodeName"].as_str().map(str::to_owned),
            "status.phase" => pod["status"]["phase"].as_str().map(str::to_owned),
            "metadata.name" => pod["metadata"]["name"].as_str().map(str::to_owned),
            "metadata.namespace" => pod["metadata"]["namespace"].as_str().map(str::to_owned),
            _ => None,
        };
        for part in fields.split(',').filter(|p| !p.is_empty()) {
            let key = part.split(['=', '!']).next().unwrap_or_default();
            if ![
                "spec.nodeName",
                "status.phase",
                "metadata.name",
                "metadata.namespace",
            ]
            .contains(&key)
            {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("field label not supported: {key}"),
                );
            }
        }
        match (
            selector_matches(labels, &label),
            selector_matches(fields, &field),
        ) {
            (Ok(true), Ok(true)) => items.push(pod),
            (Err(e), _) | (_, Err(e)) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
            _ => {}
        }
    }
    let wants_table = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"));
    if wants_table {
        let rows: Vec<Value> = items
            .iter()
            .map(|p| {
                json!({"cells": [p["metadata"]["name"], "1/1", p["status"]["phase"], 0, "27d"],
                       "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": p["metadata"]}})
            })
            .collect();
        let mut r = json(
            StatusCode::OK,
            &json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "1"},
                "columnDefinitions": [
                    {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0},
                    {"name": "Ready", "type": "string", "format": "", "description": "Ready", "priority": 0},
                    {"name": "Status", "type": "string", "format": "", "description": "Status", "priority": 0},
                    {"name": "Restarts", "type": "integer", "format": "", "description": "Restarts", "priority": 0},
                    {"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0}],
                "rows": rows}),
        );
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io"),
        );
        return r;
    }
    json(
        StatusCode::OK,
        &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}),
    )
}
