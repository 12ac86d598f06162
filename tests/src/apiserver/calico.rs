//! `projectcalico.org/v3`: PacketCaptures (get, list, status update with optimistic
//! concurrency), ManagedClusters (the local cluster's view of its managed clusters), and
//! AuthenticationReview (who the caller's own token is).

use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::{Ctx, body_json, details, not_found};
use crate::cluster::{Cluster, World, lock};
use crate::http::{Body, json, status, status_with};

/// Handles `/apis/projectcalico.org/v3/{rest}` (already authorized).
pub async fn route(ctx: Ctx, rest: &[&str]) -> Result<Response<Body>, Response<Body>> {
    const GROUP: &str = "projectcalico.org";
    let cluster = ctx.cluster.clone();
    Ok(match (&ctx.method, rest) {
        (&Method::GET, ["packetcaptures"]) => capture_list(&cluster, None),
        (&Method::GET, ["namespaces", ns, "packetcaptures"]) => capture_list(&cluster, Some(ns)),
        (&Method::GET, ["namespaces", ns, "packetcaptures", name, tail @ ..])
            if tail.len() <= 1 =>
        {
            // A subresource a custom resource does not serve (`packetcaptures/files`) is the
            // object's 404, as kube-apiserver answers.
            let found = lock(&cluster.captures)
                .get(&((*ns).to_owned(), (*name).to_owned()))
                .cloned();
            match found {
                Some(o) if tail.is_empty() || tail == ["status"] => json(StatusCode::OK, &o),
                _ => not_found(GROUP, "packetcaptures", name),
            }
        }
        (&Method::PUT, ["namespaces", ns, "packetcaptures", name, "status"]) => {
            let (ns, name) = ((*ns).to_owned(), (*name).to_owned());
            let body = body_json(ctx.request).await?;
            put_status(&cluster, &ns, &name, &body)
        }
        (&Method::GET, ["managedclusters"]) => {
            let items = if cluster.local {
                managed_clusters(&ctx.world)
            } else {
                Vec::new()
            };
            json(
                StatusCode::OK,
                &json!({"apiVersion": "projectcalico.org/v3", "kind": "ManagedClusterList", "metadata": {"resourceVersion": "1", "continue": ""}, "items": items}),
            )
        }
        (&Method::GET, ["managedclusters", name]) => {
            let found = if cluster.local {
                managed_clusters(&ctx.world)
                    .into_iter()
                    .find(|m| m["metadata"]["name"] == *name)
            } else {
                None
            };
            match found {
                Some(m) => json(StatusCode::OK, &m),
                None => not_found(GROUP, "managedclusters", name),
            }
        }
        (&Method::POST, ["authenticationreviews"]) => {
            let user = &ctx.user;
            json(
                StatusCode::CREATED,
                &json!({"apiVersion": "projectcalico.org/v3", "kind": "AuthenticationReview", "metadata": {},
                "status": {"name": user.name, "uid": user.uid, "groups": user.groups, "extra": user.extra}}),
            )
        }
        _ => return Err(ctx.unknown()),
    })
}

/// `PUT .../packetcaptures/{name}/status` as kube-apiserver answers a custom resource's status
/// update: the body's name must be the path's (400); a resourceVersion is required (422); a
/// stale one is 409; an object deleted since the body was read is 409 (a UID precondition that
/// fails), not 404; only `status` changes, and the resourceVersion moves on.
fn put_status(cluster: &Cluster, ns: &str, name: &str, body: &Value) -> Response<Body> {
    const GROUP: &str = "projectcalico.org";
    let body_name = body["metadata"]["name"].as_str().unwrap_or_default();
    if !body_name.is_empty() && body_name != name {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            ),
        );
    }
    let qualified = format!("packetcaptures.{GROUP}");
    let version = body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    if version.is_empty() {
        let cause = "Invalid value: 0x0: must be specified for an update";
        let mut d = details(name, GROUP, "packetcaptures");
        d["causes"] = json!([{"reason": "FieldValueInvalid", "message": cause, "field": "metadata.resourceVersion"}]);
        return status_with(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!("{qualified} \"{name}\" is invalid: metadata.resourceVersion: {cause}"),
            d,
        );
    }
    let conflict = |why: &str| {
        status_with(
            StatusCode::CONFLICT,
            "Conflict",
            &format!("Operation cannot be fulfilled on {qualified} \"{name}\": {why}"),
            details(name, GROUP, "packetcaptures"),
        )
    };
    let mut captures = lock(&cluster.captures);
    let Some(stored) = captures.get_mut(&(ns.to_owned(), name.to_owned())) else {
        let uid = body["metadata"]["uid"].as_str().unwrap_or_default();
        if uid.is_empty() {
            return not_found(GROUP, "packetcaptures", name);
        }
        return conflict(&format!(
            "StorageError: invalid object, Code: 4, Key: /registry/{GROUP}/packetcaptures/{ns}/{name}, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in precondition: {uid}, UID in object meta: "
        ));
    };
    let uid = body["metadata"]["uid"].as_str().unwrap_or_default();
    let stored_uid = stored["metadata"]["uid"].as_str().unwrap_or_default();
    if !uid.is_empty() && uid != stored_uid {
        return conflict(&format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {stored_uid}"
        ));
    }
    if stored["metadata"]["resourceVersion"] != version {
        return conflict(
            "the object has been modified; please apply your changes to the latest version and try again",
        );
    }
    stored["status"] = body["status"].clone();
    stored["metadata"]["resourceVersion"] = json!(cluster.next_version());
    json(StatusCode::OK, stored)
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
                "metadata": {"continue": "", "resourceVersion": cluster.next_version()}, "items": items}),
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
