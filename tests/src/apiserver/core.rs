//! The core group (`/api/v1`): namespaces, pods (lists with label and field selectors, Table
//! output), and exec.

use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::selector::{FieldSelector, LabelSelector};
use super::{Ctx, not_found, param};
use crate::cluster::Cluster;
use crate::exec;
use crate::http::{Body, json, status};

/// Handles `/api/v1/{rest}` (already authorized).
pub async fn route(ctx: Ctx, rest: &[&str]) -> Result<Response<Body>, Response<Body>> {
    Ok(match (&ctx.method, rest) {
        (&Method::GET, ["namespaces", ns]) => json(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "status": {"phase": "Active"}}),
        ),
        (&Method::GET, ["pods"]) => {
            list_pods(&ctx.cluster, None, &ctx.params, ctx.request.headers())
        }
        (&Method::GET, ["namespaces", ns, "pods"]) => {
            list_pods(&ctx.cluster, Some(ns), &ctx.params, ctx.request.headers())
        }
        (&Method::GET, ["namespaces", ns, "pods", name]) => {
            match ctx
                .cluster
                .pods()
                .into_iter()
                .find(|p| p["metadata"]["name"] == *name && p["metadata"]["namespace"] == *ns)
            {
                Some(p) => json(StatusCode::OK, &p),
                None => not_found("", "pods", name),
            }
        }
        (&Method::GET | &Method::POST, ["namespaces", ns, "pods", name, "exec"]) => {
            let Some(node) = ctx.cluster.pod_node(ns, name) else {
                return Ok(not_found("", "pods", name));
            };
            exec::handle(ctx.cluster.clone(), node, ctx.params, ctx.request).await
        }
        _ => return Err(ctx.unknown()),
    })
}

/// The field labels kube-apiserver supports for pods.
const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
];

/// A pod's field label value (as its JSON holds it; absent is empty, as in Go).
fn pod_field(pod: &Value, field: &str) -> String {
    let v = match field {
        "spec.hostNetwork" => {
            return pod["spec"]["hostNetwork"]
                .as_bool()
                .unwrap_or(false)
                .to_string();
        }
        "status.podIPs" => &pod["status"]["podIP"],
        other => {
            let mut v = pod;
            for part in other.split('.') {
                v = &v[part];
            }
            v
        }
    };
    v.as_str().unwrap_or_default().to_owned()
}

fn list_pods(
    cluster: &Cluster,
    ns: Option<&str>,
    params: &[(String, String)],
    headers: &http::HeaderMap,
) -> Response<Body> {
    let labels = LabelSelector::parse(param(params, "labelSelector").unwrap_or(""));
    let fields = FieldSelector::parse(param(params, "fieldSelector").unwrap_or(""), POD_FIELDS);
    let (labels, fields) = match (labels, fields) {
        (Ok(l), Ok(f)) => (l, f),
        (Err(e), _) | (_, Err(e)) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    let items: Vec<Value> = cluster
        .pods()
        .into_iter()
        .filter(|pod| ns.is_none_or(|ns| pod["metadata"]["namespace"] == ns))
        .filter(|pod| {
            labels.matches(&|k: &str| pod["metadata"]["labels"][k].as_str().map(str::to_owned))
        })
        .filter(|pod| fields.matches(&|f: &str| pod_field(pod, f)))
        .collect();
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
