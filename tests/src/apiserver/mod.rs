//! A simulated Kubernetes API server: what kube-rs and kubectl need, as the real one answers.
//!
//! This module authenticates (bearer tokens, impersonation), records, applies faults and
//! dispatches by API group: [`discovery`], [`core`] (pods, exec), [`calico`] (PacketCaptures,
//! ManagedClusters, AuthenticationReview), [`review`] (TokenReview, SubjectAccessReview).
// A refusal is a ready response: returning it as the error keeps each handler flat.
#![allow(clippy::result_large_err)]

mod calico;
mod core;
mod discovery;
mod review;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::cluster::{Attributes, Cluster, RequestRecord, UserInfo, World};
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
        params: query_params(req.uri()),
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

/// One authenticated request, as the group handlers see it.
struct Ctx {
    world: Arc<World>,
    cluster: Arc<Cluster>,
    user: UserInfo,
    method: Method,
    params: Vec<(String, String)>,
    request: Request<Incoming>,
}

impl Ctx {
    /// Refuses unless the user may act as `a` says (403 as the API server words it).
    fn check(&self, a: Attributes) -> Result<(), Response<Body>> {
        if self.cluster.allowed(&self.user, &a) {
            Ok(())
        } else {
            Err(forbidden(&self.user, &a))
        }
    }

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
