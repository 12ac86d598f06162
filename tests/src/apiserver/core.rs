//! The core group (`/api/v1`): namespaces, pods (lists with label and field selectors, Table
//! output), and exec.

use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::{Ctx, attrs, not_found, param};
use crate::cluster::Cluster;
use crate::exec;
use crate::http::{Body, json, status};

/// Handles `/api/v1/{rest}`.
pub async fn route(ctx: Ctx, rest: &[&str]) -> Result<Response<Body>, Response<Body>> {
    Ok(match (&ctx.method, rest) {
        (&Method::GET, ["namespaces", ns]) => {
            ctx.check(attrs("get", "", "namespaces", "", "", ns))?;
            json(
                StatusCode::OK,
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "status": {"phase": "Active"}}),
            )
        }
        (&Method::GET, ["pods"]) => {
            ctx.check(attrs("list", "", "pods", "", "", ""))?;
            list_pods(&ctx.cluster, None, &ctx.params, ctx.request.headers())
        }
        (&Method::GET, ["namespaces", ns, "pods"]) => {
            ctx.check(attrs("list", "", "pods", "", ns, ""))?;
            list_pods(&ctx.cluster, Some(ns), &ctx.params, ctx.request.headers())
        }
        (&Method::GET, ["namespaces", ns, "pods", name]) => {
            ctx.check(attrs("get", "", "pods", "", ns, name))?;
            match ctx
                .cluster
                .pods()
                .into_iter()
                .find(|p| p["metadata"]["name"] == *name && p["metadata"]["namespace"] == *ns)
            {
                Some(p) => json(StatusCode::OK, &p),
                None => not_found("pods", name),
            }
        }
        (&Method::GET | &Method::POST, ["namespaces", ns, "pods", name, "exec"]) => {
            ctx.check(attrs("create", "", "pods", "exec", ns, name))?;
            let Some(node) = ctx.cluster.pod_node(ns, name) else {
                return Ok(not_found("pods", name));
            };
            exec::handle(ctx.cluster.clone(), node, ctx.params, ctx.request).await
        }
        _ => return Err(ctx.unknown()),
    })
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
