//! Discovery: `/api`, `/apis` and the resource lists kubectl and kube-rs ask for.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::http::{Body, json};

/// The discovery document at `path`, if it is one.
pub fn discovery(cluster: &Cluster, path: &str) -> Option<Response<Body>> {
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
