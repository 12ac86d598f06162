//! A simulated Kubernetes API server: what kube-rs and kubectl need, as the real one answers.
//!
//! This module runs kube-apiserver's filter chain in its order: authentication (bearer tokens;
//! none is `system:anonymous`), impersonation, then authorization of every request by RBAC
//! objects with the verb kube-apiserver derives from the method and path ([`request`]); then it
//! records, applies faults and dispatches by API group: [`discovery`], [`core`] (pods, exec),
//! [`calico`] (PacketCaptures, ManagedClusters, AuthenticationReview), [`review`]
//! (TokenReview, SubjectAccessReview and the self reviews). Refusals are `Status` bodies worded
//! as kube-apiserver words them (`../shared/realkube/` recorded a real one).
// A refusal is a ready response: returning it as the error keeps each handler flat.
#![allow(clippy::result_large_err)]

mod calico;
mod core;
mod discovery;
pub mod request;
mod review;
mod selector;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::cluster::{Attributes, Cluster, RequestRecord, UserInfo, World};
use crate::http::{Body, json, status, status_with, text};

/// kube-apiserver's `Status` `details`: name, group and kind (the plural resource), each
/// left out when empty, as Go's `omitempty` does.
pub fn details(name: &str, group: &str, kind: &str) -> Value {
    let mut d = serde_json::Map::new();
    for (key, value) in [("name", name), ("group", group), ("kind", kind)] {
        if !value.is_empty() {
            d.insert(key.into(), Value::String(value.into()));
        }
    }
    Value::Object(d)
}

/// `pods` for the core group, `packetcaptures.projectcalico.org` otherwise.
fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

/// The query's parameters, decoded.
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

/// True for a WebSocket upgrade request.
fn is_websocket(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
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
    let record = |user: Option<&UserInfo>| RequestRecord {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        cluster_header: req
            .headers()
            .get("x-cluster-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        user: user.map(|u| u.name.clone()),
        headers: req
            .headers()
            .iter()
            .filter(|(name, _)| *name != http::header::AUTHORIZATION)
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let user = match authenticate(&world, &cluster, &req) {
        Ok(u) => u,
        Err(refusal) => {
            cluster.record(record(None));
            return refusal;
        }
    };
    cluster.record(record(Some(&user)));
    let params = query_params(req.uri());
    let asked = request::attributes(req.method(), &path, &params);
    // From 1.35 a WebSocket upgrade to exec (a GET) also needs `create`
    // (AuthorizePodWebsocketUpgradeCreatePermission).
    let mut checks = vec![asked.clone()];
    if world.minor >= 35 && is_websocket(&req) && asked.subresource == "exec" {
        checks.push(Attributes {
            verb: "create".into(),
            ..asked
        });
    }
    for a in &checks {
        if !cluster.authorize(&user, a).allowed() {
            return forbidden(&user, a);
        }
    }
    if path == "/version" {
        let minor = world.minor;
        return json(
            StatusCode::OK,
            &json!({"major": "1", "minor": minor.to_string(), "gitVersion": format!("v1.{minor}.0-sim"), "platform": "linux/amd64",
                    "goVersion": "go1.24", "compiler": "gc", "gitCommit": "sim", "gitTreeState": "clean", "buildDate": "2026-11-01T00:00:00Z"}),
        );
    }
    if let Some(r) = discovery::discovery(&cluster, &path) {
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
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let ctx = Ctx {
        params,
        method: req.method().clone(),
        world,
        cluster,
        user,
        request: req,
    };
    let answer = match s.as_slice() {
        ["api", "v1", rest @ ..] => core::route(ctx, rest).await,
        ["apis", "projectcalico.org", "v3", rest @ ..] => calico::route(ctx, rest).await,
        ["apis", "authentication.k8s.io", "v1", rest @ ..] => {
            review::authentication(ctx, rest).await
        }
        ["apis", "authorization.k8s.io", "v1", rest @ ..] => review::authorization(ctx, rest).await,
        _ => Err(ctx.unknown()),
    };
    answer.unwrap_or_else(|refusal| refusal)
}

/// One authenticated and authorized request, as the group handlers see it.
struct Ctx {
    world: Arc<World>,
    cluster: Arc<Cluster>,
    user: UserInfo,
    method: Method,
    params: Vec<(String, String)>,
    request: Request<Incoming>,
}

impl Ctx {
    /// The answer for a path or method no handler knows.
    fn unknown(&self) -> Response<Body> {
        let path = self.request.uri().path();
        if self.method == Method::GET {
            status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            )
        } else {
            status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!(
                    "the server does not allow this method on the requested resource ({path})"
                ),
            )
        }
    }
}

/// The bearer token's user; no `Authorization` header is `system:anonymous` (RBAC then
/// decides), a token nobody issued is 401. Then impersonation.
fn authenticate(
    world: &World,
    cluster: &Cluster,
    req: &Request<Incoming>,
) -> Result<UserInfo, Response<Body>> {
    let unauthorized = || status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    let Some(header) = req.headers().get(http::header::AUTHORIZATION) else {
        return Ok(UserInfo {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..UserInfo::default()
        });
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    let user = world
        .users
        .get(token.trim())
        .cloned()
        .ok_or_else(unauthorized)?;
    impersonate(cluster, user, req)
}

/// Applies `Impersonate-*` headers as kube-apiserver's impersonation filter does: each thing
/// asked for is authorized (`impersonate` on `serviceaccounts`, `users`, `groups`,
/// `userextras/{key}`), then the request runs as that user. A service account impersonated
/// without groups gets its own; `system:authenticated` is always added.
fn impersonate(
    cluster: &Cluster,
    user: UserInfo,
    req: &Request<Incoming>,
) -> Result<UserInfo, Response<Body>> {
    let headers = req.headers();
    let text_of = |v: &http::HeaderValue| v.to_str().unwrap_or_default().to_owned();
    let target = headers
        .get("impersonate-user")
        .map(text_of)
        .filter(|t| !t.is_empty());
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .map(text_of)
        .collect();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut requests = Vec::new();
    if let Some(target) = &target {
        requests.push(match service_account(target) {
            Some((ns, name)) => format!("{{ServiceAccount {ns} {name}    }}"),
            None => format!("{{User  {target}    }}"),
        });
    }
    requests.extend(groups.iter().map(|g| format!("{{Group  {g}    }}")));
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix("impersonate-extra-") {
            let key = url::form_urlencoded::parse(format!("k={key}").as_bytes())
                .next()
                .map(|(_, v)| v.to_lowercase())
                .unwrap_or_default();
            let value = text_of(value);
            requests.push(format!(
                "{{UserExtra  {value}  authentication.k8s.io/v1  {key}}}"
            ));
            extra.entry(key).or_default().push(value);
        }
    }
    let Some(target) = target else {
        if requests.is_empty() {
            return Ok(user);
        }
        return Err(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!(
                "Internal Server Error: \"{}\": requested [{}] without impersonating a user",
                req.uri().path_and_query().map_or("/", |p| p.as_str()),
                requests.join(" ")
            ),
        ));
    };
    let mut checks = Vec::new();
    let mut new_groups = groups.clone();
    match service_account(&target) {
        Some((ns, name)) => {
            checks.push(Attributes::resource(
                "impersonate",
                "",
                "serviceaccounts",
                "",
                ns,
                name,
            ));
            if groups.is_empty() {
                new_groups = vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{ns}"),
                ];
            }
        }
        None => checks.push(Attributes::resource(
            "impersonate",
            "",
            "users",
            "",
            "",
            &target,
        )),
    }
    for g in &groups {
        checks.push(Attributes::resource("impersonate", "", "groups", "", "", g));
    }
    for (k, values) in &extra {
        for v in values {
            checks.push(Attributes::resource(
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
        if !cluster.authorize(&user, a).allowed() {
            return Err(forbidden(&user, a));
        }
    }
    if target != "system:anonymous"
        && !new_groups
            .iter()
            .any(|g| g == "system:authenticated" || g == "system:unauthenticated")
    {
        new_groups.push("system:authenticated".into());
    }
    Ok(UserInfo {
        name: target,
        uid: String::new(),
        groups: new_groups,
        extra,
    })
}

/// `(namespace, name)` of `system:serviceaccount:NS:NAME`.
fn service_account(user: &str) -> Option<(&str, &str)> {
    user.strip_prefix("system:serviceaccount:")?
        .split_once(':')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'))
}

/// kube-apiserver's 403: `pods "x" is forbidden: User "u" cannot get resource "pods/exec" in
/// API group "" in the namespace "ns"`, with details.
fn forbidden(user: &UserInfo, a: &Attributes) -> Response<Body> {
    let reason = match &a.path {
        Some(path) => format!("User \"{}\" cannot {} path \"{path}\"", user.name, a.verb),
        None => {
            let resource = if a.subresource.is_empty() {
                a.resource.clone()
            } else {
                format!("{}/{}", a.resource, a.subresource)
            };
            let scope = if a.namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace \"{}\"", a.namespace)
            };
            format!(
                "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
                user.name, a.verb, a.group
            )
        }
    };
    let what = qualified(&a.group, &a.resource);
    let message = match (a.path.is_some(), a.name.is_empty()) {
        (true, _) => format!("forbidden: {reason}"),
        (false, true) => format!("{what} is forbidden: {reason}"),
        (false, false) => format!("{what} \"{}\" is forbidden: {reason}", a.name),
    };
    status_with(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &message,
        details(&a.name, &a.group, &a.resource),
    )
}

/// kube-apiserver's 404 for an object: `packetcaptures.projectcalico.org "x" not found`.
fn not_found(group: &str, resource: &str, name: &str) -> Response<Body> {
    status_with(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{name}\" not found", qualified(group, resource)),
        details(name, group, resource),
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
