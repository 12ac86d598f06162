//! `projectcalico.org/v3`: PacketCaptures (get, list, status update with optimistic
//! concurrency), ManagedClusters (the local cluster's view of its managed clusters), and
//! AuthenticationReview (who the caller's own token is).

use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::{Ctx, attrs, body_json, not_found};
use crate::cluster::{Cluster, World, lock};
use crate::http::{Body, json, status};

/// Handles `/apis/projectcalico.org/v3/{rest}`.
pub async fn route(ctx: Ctx, rest: &[&str]) -> Result<Response<Body>, Response<Body>> {
    const GROUP: &str = "projectcalico.org";
    let cluster = ctx.cluster.clone();
    Ok(match (&ctx.method, rest) {
        (&Method::GET, ["packetcaptures"]) => {
            ctx.check(attrs("list", GROUP, "packetcaptures", "", "", ""))?;
            capture_list(&cluster, None)
        }
        (&Method::GET, ["namespaces", ns, "packetcaptures"]) => {
            ctx.check(attrs("list", GROUP, "packetcaptures", "", ns, ""))?;
            capture_list(&cluster, Some(ns))
        }
        (&Method::GET, ["namespaces", ns, "packetcaptures", name, tail @ ..])
            if tail.is_empty() || tail == ["status"] =>
        {
            let sub = if tail.is_empty() { "" } else { "status" };
            ctx.check(attrs("get", GROUP, "packetcaptures", sub, ns, name))?;
            match lock(&cluster.captures).get(&((*ns).to_owned(), (*name).to_owned())) {
                Some(o) => json(StatusCode::OK, o),
                None => not_found("packetcaptures.projectcalico.org", name),
            }
        }
        (&Method::PUT, ["namespaces", ns, "packetcaptures", name, "status"]) => {
            ctx.check(attrs("update", GROUP, "packetcaptures", "status", ns, name))?;
            let (ns, name) = ((*ns).to_owned(), (*name).to_owned());
            let body = body_json(ctx.request).await?;
            let mut captures = lock(&cluster.captures);
            let Some(stored) = captures.get_mut(&(ns, name.clone())) else {
                return Ok(not_found("packetcaptures.projectcalico.org", &name));
            };
            if body["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
                return Ok(status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on packetcaptures.projectcalico.org \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                    ),
                ));
            }
            stored["status"] = body["status"].clone();
            stored["metadata"]["resourceVersion"] = json!(cluster.next_version());
            json(StatusCode::OK, stored)
        }
        (&Method::GET, ["managedclusters"]) => {
            ctx.check(attrs("list", GROUP, "managedclusters", "", "", ""))?;
            let items = if cluster.local {
                managed_clusters(&ctx.world)
            } else {
                Vec::new()
            };
            json(
                StatusCode::OK,
                &json!({"apiVersion": "projectcalico.org/v3", "kind": "ManagedClusterList", "metadata": {}, "items": items}),
            )
        }
        (&Method::GET, ["managedclusters", name]) => {
            ctx.check(attrs("get", GROUP, "managedclusters", "", "", name))?;
            let found = if cluster.local {
                managed_clusters(&ctx.world)
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
        (&Method::POST, ["authenticationreviews"]) => {
            ctx.check(attrs("create", GROUP, "authenticationreviews", "", "", ""))?;
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
