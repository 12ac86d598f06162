//! What a request asks to do, as kube-apiserver's request-info resolver reads it from the
//! method and path (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`): the verb, API
//! group, namespace, resource, subresource and name RBAC is asked about.

use http::Method;

use crate::cluster::Attributes;

/// Namespace subresources: `/namespaces/{ns}/status` is the namespace's, not a resource.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// The attributes of a request to `path` (no query) with `method`; `params` is its query.
pub fn attributes(method: &Method, path: &str, params: &[(String, String)]) -> Attributes {
    let non_resource = || Attributes {
        verb: method.as_str().to_ascii_lowercase(),
        path: Some(path.to_owned()),
        ..Attributes::default()
    };
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        _ => return non_resource(),
    };
    let verb = match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => return non_resource(),
    };
    let mut a = Attributes {
        verb: verb.to_owned(),
        group: group.to_owned(),
        ..Attributes::default()
    };
    let mut rest = rest;
    if rest[0] == "namespaces" && rest.len() > 1 {
        a.namespace = rest[1].to_owned();
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        }
    }
    a.resource = rest[0].to_owned();
    if let Some(name) = rest.get(1) {
        a.name = (*name).to_owned();
    }
    if let Some(sub) = rest.get(2) {
        a.subresource = (*sub).to_owned();
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if a.name.is_empty() && a.verb == "get" {
        a.verb = if matches!(param("watch"), Some("true" | "1")) {
            "watch".into()
        } else {
            "list".into()
        };
        // A list narrowed to one name by `metadata.name=` is authorized for that name.
        if let Some(name) = param("fieldSelector").and_then(|f| {
            f.split(',')
                .find_map(|term| term.strip_prefix("metadata.name="))
                .map(|n| n.trim_start_matches('='))
        }) {
            a.name = name.to_owned();
        }
    }
    if a.name.is_empty() && a.verb == "delete" {
        a.verb = "deletecollection".into();
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(method: Method, path: &str, query: &[(&str, &str)]) -> Attributes {
        let params: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        attributes(&method, path, &params)
    }

    #[test]
    fn verbs_and_resources_are_read_as_kube_apiserver_reads_them() {
        let exec = a(
            Method::GET,
            "/api/v1/namespaces/tigera-fluentd/pods/fluentd-a/exec",
            &[],
        );
        assert_eq!(
            (
                exec.verb.as_str(),
                exec.resource.as_str(),
                exec.subresource.as_str()
            ),
            ("get", "pods", "exec")
        );
        assert_eq!(
            (exec.namespace.as_str(), exec.name.as_str()),
            ("tigera-fluentd", "fluentd-a")
        );
        let post = a(Method::POST, "/api/v1/namespaces/x/pods/p/exec", &[]);
        assert_eq!(post.verb, "create");
        let list = a(Method::GET, "/api/v1/namespaces/x/pods", &[]);
        assert_eq!((list.verb.as_str(), list.name.as_str()), ("list", ""));
        let watch = a(
            Method::GET,
            "/apis/projectcalico.org/v3/managedclusters",
            &[("watch", "true")],
        );
        assert_eq!(
            (watch.verb.as_str(), watch.group.as_str()),
            ("watch", "projectcalico.org")
        );
        let status = a(
            Method::PUT,
            "/apis/projectcalico.org/v3/namespaces/dev/packetcaptures/cap/status",
            &[],
        );
        assert_eq!(
            (
                status.verb.as_str(),
                status.resource.as_str(),
                status.subresource.as_str()
            ),
            ("update", "packetcaptures", "status")
        );
        let ns = a(Method::GET, "/api/v1/namespaces/dev", &[]);
        assert_eq!(
            (
                ns.resource.as_str(),
                ns.name.as_str(),
                ns.namespace.as_str()
            ),
            ("namespaces", "dev", "dev")
        );
        let review = a(
            Method::POST,
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            &[],
        );
        assert_eq!(
            (review.verb.as_str(), review.namespace.as_str()),
            ("create", "")
        );
        for path in [
            "/version",
            "/api",
            "/apis",
            "/api/v1",
            "/apis/projectcalico.org/v3",
        ] {
            let d = a(Method::GET, path, &[]);
            assert_eq!(d.path.as_deref(), Some(path));
            assert_eq!(d.verb, "get");
        }
        let gone = a(Method::DELETE, "/api/v1/namespaces/x/pods", &[]);
        assert_eq!(gone.verb, "deletecollection");
    }
}
