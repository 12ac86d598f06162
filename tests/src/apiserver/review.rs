//! Reviews: `authentication.k8s.io/v1` TokenReview and `authorization.k8s.io/v1`
//! SubjectAccessReview, answered from the scenario's users and RBAC.

use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::{Ctx, attrs, body_json};
use crate::cluster::{Attributes, UserInfo};
use crate::http::{Body, json};

/// Handles `/apis/authentication.k8s.io/v1/{rest}`.
pub async fn authentication(ctx: Ctx, rest: &[&str]) -> Result<Response<Body>, Response<Body>> {
    if !(ctx.method == Method::POST && rest == ["tokenreviews"]) {
        return Err(ctx.unknown());
    }
    ctx.check(attrs(
        "create",
        "authentication.k8s.io",
        "tokenreviews",
        "",
        "",
        "",
    ))?;
    let world = ctx.world.clone();
    let body = body_json(ctx.request).await?;
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let status = match world.users.get(token) {
        Some(u) => {
            json!({"authenticated": true, "user": {"username": u.name, "uid": u.uid, "groups": u.groups, "extra": u.extra}})
        }
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    Ok(json(
        StatusCode::CREATED,
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {}, "spec": body["spec"], "status": status}),
    ))
}

/// Handles `/apis/authorization.k8s.io/v1/{rest}`.
pub async fn authorization(ctx: Ctx, rest: &[&str]) -> Result<Response<Body>, Response<Body>> {
    if !(ctx.method == Method::POST && rest == ["subjectaccessreviews"]) {
        return Err(ctx.unknown());
    }
    ctx.check(attrs(
        "create",
        "authorization.k8s.io",
        "subjectaccessreviews",
        "",
        "",
        "",
    ))?;
    let cluster = ctx.cluster.clone();
    let body = body_json(ctx.request).await?;
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
    Ok(json(
        StatusCode::CREATED,
        &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "metadata": {},
        "spec": spec, "status": {"allowed": allowed, "reason": reason}}),
    ))
}
