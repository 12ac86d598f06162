//! Reviews: `authentication.k8s.io/v1` TokenReview and SelfSubjectReview,
//! `authorization.k8s.io/v1` SubjectAccessReview and SelfSubjectAccessReview, answered from
//! the scenario's users and RBAC objects, in kube-apiserver's shapes (a failed TokenReview has
//! no `authenticated`; a denial has no reason; validation failures are 422).

use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::{Ctx, body_json};
use crate::cluster::{Attributes, UserInfo};
use crate::http::{Body, json, status, status_with};

/// The audience the simulated service-account tokens are issued for.
const AUDIENCE: &str = "https://kubernetes.default.svc";

/// `user` as a review's `userInfo` (`extra` only when there is some).
fn user_info(user: &UserInfo) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    info
}

/// Handles `/apis/authentication.k8s.io/v1/{rest}` (already authorized).
pub async fn authentication(ctx: Ctx, rest: &[&str]) -> Result<Response<Body>, Response<Body>> {
    if ctx.method != Method::POST {
        return Err(ctx.unknown());
    }
    match rest {
        ["tokenreviews"] => token_review(ctx).await,
        ["selfsubjectreviews"] => {
            let user = ctx.user.clone();
            let mut info = user_info(&user);
            // The self review leaves the uid out for an impersonated user, as it has none.
            if user.uid.is_empty() {
                info.as_object_mut().map(|o| o.remove("uid"));
            }
            Ok(json(
                StatusCode::CREATED,
                &json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                        "metadata": {"creationTimestamp": "2026-11-01T10:00:00Z"}, "status": {"userInfo": info}}),
            ))
        }
        _ => Err(ctx.unknown()),
    }
}

async fn token_review(ctx: Ctx) -> Result<Response<Body>, Response<Body>> {
    let world = ctx.world.clone();
    let body = body_json(ctx.request).await?;
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    if token.is_empty() {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "token is required for TokenReview in authentication",
        ));
    }
    let review_status = match world.users.get(token) {
        Some(u) => {
            json!({"authenticated": true, "user": user_info(u), "audiences": [AUDIENCE]})
        }
        // The simulation's tokens are opaque, so a token nobody issued fails as a token that
        // is no JWT does on a real server.
        None => json!({"user": {}, "error": "invalid bearer token"}),
    };
    Ok(json(
        StatusCode::CREATED,
        &json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": null}, "spec": body["spec"], "status": review_status}),
    ))
}

/// Handles `/apis/authorization.k8s.io/v1/{rest}` (already authorized).
pub async fn authorization(ctx: Ctx, rest: &[&str]) -> Result<Response<Body>, Response<Body>> {
    if ctx.method != Method::POST {
        return Err(ctx.unknown());
    }
    let kind = match rest {
        ["subjectaccessreviews"] => "SubjectAccessReview",
        ["selfsubjectaccessreviews"] => "SelfSubjectAccessReview",
        _ => return Err(ctx.unknown()),
    };
    let cluster = ctx.cluster.clone();
    let caller = ctx.user.clone();
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
    let subject = if kind == "SelfSubjectAccessReview" {
        caller
    } else {
        UserInfo {
            name: spec["user"].as_str().unwrap_or_default().to_owned(),
            uid: spec["uid"].as_str().unwrap_or_default().to_owned(),
            groups: strings(&spec["groups"]),
            extra: spec["extra"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), strings(v))).collect())
                .unwrap_or_default(),
        }
    };
    let invalid = |field: &str, value: &str, why: &str| {
        let cause = format!("Invalid value: {value}: {why}");
        status_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!(".authorization.k8s.io \"\" is invalid: {field}: {cause}"),
            json!({"group": "authorization.k8s.io", "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": field}]}),
        )
    };
    if kind == "SubjectAccessReview" && subject.name.is_empty() && subject.groups.is_empty() {
        return Err(invalid(
            "spec.user",
            "\"\"",
            "at least one of user or group must be specified",
        ));
    }
    let resource = spec["resourceAttributes"].as_object();
    let non_resource = spec["nonResourceAttributes"].as_object();
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let a = match (resource, non_resource) {
        (Some(r), None) => Attributes {
            verb: text(r.get("verb")),
            group: text(r.get("group")),
            resource: text(r.get("resource")),
            subresource: text(r.get("subresource")),
            namespace: text(r.get("namespace")),
            name: text(r.get("name")),
            path: None,
        },
        (None, Some(n)) => Attributes {
            verb: text(n.get("verb")),
            path: Some(text(n.get("path"))),
            ..Attributes::default()
        },
        (r, _) => {
            let shown = if r.is_some() { "{...}" } else { "\"null\"" };
            return Err(invalid(
                "spec.resourceAttributes",
                shown,
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
    };
    let review_status = match cluster.authorize(&subject, &a) {
        crate::rbac::Decision::Allowed(Some(reason)) => json!({"allowed": true, "reason": reason}),
        crate::rbac::Decision::Allowed(None) => json!({"allowed": true}),
        crate::rbac::Decision::Denied => json!({"allowed": false}),
    };
    Ok(json(
        StatusCode::CREATED,
        &json!({"kind": kind, "apiVersion": "authorization.k8s.io/v1", "metadata": {"creationTimestamp": null},
        "spec": spec, "status": review_status}),
    ))
}
