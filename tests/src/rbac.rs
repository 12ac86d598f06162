//! Kubernetes RBAC as kube-apiserver evaluates it: ClusterRoles, Roles and their bindings,
//! read from the same YAML a cluster is given (the project's `deploy/` manifests among them).
//!
//! The matching follows kube-apiserver's `RuleAllows` and `appliesToUser`
//! (`pkg/registry/rbac/validation/rule.go`): a verb, group, resource (or `resource/subresource`,
//! or `*/subresource`) and resource name must each match, `*` matching any; nothing else widens
//! a rule (`pods/*` is not a wildcard). ClusterRoleBindings are visited first, then the
//! RoleBindings of the request's namespace; the first allowing rule gives the reason
//! kube-apiserver reports. `system:masters` is allowed everything, with no reason, as the
//! privileged-group authorizer that precedes RBAC answers.

use serde::Deserialize;
use serde_json::Value;

use crate::cluster::{Attributes, UserInfo};

/// The privileged group: allowed everything before RBAC is asked.
pub const MASTERS: &str = "system:masters";

/// One rule of a Role or ClusterRole.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Verbs (`*` any).
    #[serde(default)]
    pub verbs: Vec<String>,
    /// API groups (`""` core, `*` any).
    #[serde(default)]
    pub api_groups: Vec<String>,
    /// Resources: `pods`, `pods/exec`, `*/scale`, `*`.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Names; empty allows any.
    #[serde(default)]
    pub resource_names: Vec<String>,
    /// Paths of non-resource requests (`/version`, `/apis/*`).
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
}

/// A Role (namespaced) or ClusterRole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    /// `Role` or `ClusterRole`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace (Roles only).
    pub namespace: String,
    /// Its rules.
    pub rules: Vec<PolicyRule>,
}

/// What a binding grants.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct RoleRef {
    /// `Role` or `ClusterRole`.
    pub kind: String,
    /// The role's name.
    pub name: String,
}

/// Whom a binding names.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// A service account's namespace (defaults to a RoleBinding's own).
    #[serde(default)]
    pub namespace: String,
}

/// A RoleBinding (namespaced) or ClusterRoleBinding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// `RoleBinding` or `ClusterRoleBinding`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace (RoleBindings only).
    pub namespace: String,
    /// The role it grants.
    pub role_ref: RoleRef,
    /// Whom.
    pub subjects: Vec<Subject>,
}

/// What the authorizer decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, with kube-apiserver's reason (none for `system:masters`).
    Allowed(Option<String>),
    /// No rule allows it (RBAC gives no reason for a denial).
    Denied,
}

impl Decision {
    /// True when allowed.
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Allowed(_))
    }
}

/// Every RBAC object of one cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Roles and ClusterRoles.
    pub roles: Vec<Role>,
    /// RoleBindings and ClusterRoleBindings, in the order they were added.
    pub bindings: Vec<Binding>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    rules: Option<Vec<PolicyRule>>,
    #[serde(default)]
    role_ref: Option<RoleRef>,
    #[serde(default)]
    subjects: Option<Vec<Subject>>,
}

#[derive(Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
}

impl Policy {
    /// Reads the RBAC objects of a multi-document YAML text (a rendered kustomization, or
    /// manifests as written); other kinds are skipped. A malformed RBAC object is an error.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let mut policy = Self::default();
        for doc in serde_norway::Deserializer::from_str(text) {
            let value = Value::deserialize(doc).map_err(|e| e.to_string())?;
            if !value.is_null() {
                policy.add(value)?;
            }
        }
        Ok(policy)
    }

    /// Adds one object (an RBAC kind; others are skipped).
    pub fn add(&mut self, value: Value) -> Result<(), String> {
        let object: Object = serde_json::from_value(value).map_err(|e| e.to_string())?;
        let kind = object.kind.as_str();
        if !matches!(
            kind,
            "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding"
        ) {
            return Ok(());
        }
        if object.api_version != "rbac.authorization.k8s.io/v1" {
            return Err(format!(
                "{kind} {}: apiVersion must be rbac.authorization.k8s.io/v1, not {:?}",
                object.metadata.name, object.api_version
            ));
        }
        let namespaced = kind.starts_with("Role");
        if object.metadata.name.is_empty() || namespaced == object.metadata.namespace.is_empty() {
            return Err(format!(
                "{kind} {:?}: needs a name{}",
                object.metadata.name,
                if namespaced {
                    " and a namespace"
                } else {
                    " and no namespace"
                }
            ));
        }
        if kind.ends_with("Binding") {
            let role_ref = object
                .role_ref
                .ok_or_else(|| format!("{kind} {} has no roleRef", object.metadata.name))?;
            if kind == "ClusterRoleBinding" && role_ref.kind != "ClusterRole" {
                return Err(format!(
                    "ClusterRoleBinding {} can only refer to a ClusterRole",
                    object.metadata.name
                ));
            }
            self.bindings.push(Binding {
                kind: kind.to_owned(),
                name: object.metadata.name,
                namespace: object.metadata.namespace,
                role_ref,
                subjects: object.subjects.unwrap_or_default(),
            });
        } else {
            self.roles.push(Role {
                kind: kind.to_owned(),
                name: object.metadata.name,
                namespace: object.metadata.namespace,
                rules: object.rules.unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// Adds every object of `other`.
    pub fn extend(&mut self, other: Policy) {
        self.roles.extend(other.roles);
        self.bindings.extend(other.bindings);
    }

    /// The ClusterRoles and bindings kube-apiserver bootstraps that a client of the simulation
    /// meets: `system:basic-user` (self reviews), `system:discovery` and
    /// `system:public-info-viewer` (discovery, `/version`), all for authenticated users, the
    /// last for anonymous ones too.
    pub fn bootstrap() -> Self {
        Self::from_yaml(BOOTSTRAP).expect("the bootstrap policy is valid")
    }

    /// What Calico Enterprise's API server adds for the simulation's clients: every
    /// authenticated user may create an `AuthenticationReview` (it reviews the caller's own
    /// token, so each caller sends it as itself).
    pub fn calico() -> Self {
        Self::from_yaml(CALICO).expect("the Calico policy is valid")
    }

    /// Decides as kube-apiserver's privileged-group and RBAC authorizers do.
    pub fn authorize(&self, user: &UserInfo, a: &Attributes) -> Decision {
        if user.groups.iter().any(|g| g == MASTERS) {
            return Decision::Allowed(None);
        }
        let cluster = self
            .bindings
            .iter()
            .filter(|b| b.kind == "ClusterRoleBinding");
        let local = self
            .bindings
            .iter()
            .filter(|b| b.kind == "RoleBinding" && !a.namespace.is_empty())
            .filter(|b| b.namespace == a.namespace);
        for binding in cluster.chain(local) {
            let Some(subject) = binding
                .subjects
                .iter()
                .find(|s| applies_to(user, s, &binding.namespace))
            else {
                continue;
            };
            let Some(role) = self.role_of(binding) else {
                continue;
            };
            if role.rules.iter().any(|r| rule_allows(r, a)) {
                return Decision::Allowed(Some(format!(
                    "RBAC: allowed by {}",
                    describe(binding, subject)
                )));
            }
        }
        Decision::Denied
    }

    fn role_of(&self, binding: &Binding) -> Option<&Role> {
        self.roles.iter().find(|r| {
            r.kind == binding.role_ref.kind
                && r.name == binding.role_ref.name
                && (r.kind == "ClusterRole" || r.namespace == binding.namespace)
        })
    }
}

/// `RoleBinding "name/ns" of Role "role" to ServiceAccount "sa/ns"`, as kube-apiserver words it.
fn describe(binding: &Binding, subject: &Subject) -> String {
    let name = if binding.kind == "RoleBinding" {
        format!("{}/{}", binding.name, binding.namespace)
    } else {
        binding.name.clone()
    };
    let whom = if subject.kind == "ServiceAccount" {
        let ns = if subject.namespace.is_empty() {
            &binding.namespace
        } else {
            &subject.namespace
        };
        format!("{} \"{}/{ns}\"", subject.kind, subject.name)
    } else {
        format!("{} \"{}\"", subject.kind, subject.name)
    };
    format!(
        "{} \"{name}\" of {} \"{}\" to {whom}",
        binding.kind, binding.role_ref.kind, binding.role_ref.name
    )
}

fn applies_to(user: &UserInfo, subject: &Subject, binding_namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => user.name == subject.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let ns = if subject.namespace.is_empty() {
                binding_namespace
            } else {
                &subject.namespace
            };
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{}", subject.name)
        }
        _ => false,
    }
}

fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

/// kube-apiserver's `RuleAllows`.
pub fn rule_allows(rule: &PolicyRule, a: &Attributes) -> bool {
    if !has(&rule.verbs, &a.verb) {
        return false;
    }
    if let Some(path) = &a.path {
        return rule.non_resource_urls.iter().any(|u| {
            u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
        });
    }
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource = rule.resources.iter().any(|r| {
        r == "*"
            || *r == combined
            || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
    });
    let name = rule.resource_names.is_empty() || rule.resource_names.contains(&a.name);
    has(&rule.api_groups, &a.group) && resource && name
}

const CALICO: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: calico-authentication-review}
rules:
  - apiGroups: [projectcalico.org]
    resources: [authenticationreviews]
    verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: calico-authentication-review}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: calico-authentication-review}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:authenticated"}]
"#;

const BOOTSTRAP: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:basic-user"}
rules:
  - apiGroups: [authorization.k8s.io]
    resources: [selfsubjectaccessreviews, selfsubjectrulesreviews]
    verbs: [create]
  - apiGroups: [authentication.k8s.io]
    resources: [selfsubjectreviews]
    verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:basic-user"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:basic-user"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:authenticated"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:discovery"}
rules:
  - nonResourceURLs: [/api, /api/*, /apis, /apis/*, /healthz, /livez, /openapi, /openapi/*, /readyz, /version, /version/]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:discovery"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:discovery"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:authenticated"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:public-info-viewer"}
rules:
  - nonResourceURLs: [/healthz, /livez, /readyz, /version, /version/]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:public-info-viewer"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:public-info-viewer"}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:authenticated"}
  - {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:unauthenticated"}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ..UserInfo::default()
        }
    }

    fn attrs(
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> Attributes {
        Attributes::resource(verb, group, resource, sub, ns, name)
    }

    const POLICY: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: exec, namespace: tigera-fluentd}
rules:
  - {apiGroups: [""], resources: [pods], verbs: [list]}
  - {apiGroups: [""], resources: [pods/exec], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: exec, namespace: tigera-fluentd}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: exec}
subjects: [{kind: ServiceAccount, name: api, namespace: pc}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: files}
rules:
  - {apiGroups: [projectcalico.org], resources: [packetcaptures/files], verbs: [get], resourceNames: [cap]}
  - {apiGroups: ["*"], resources: ["*/status"], verbs: [update]}
  - {apiGroups: [""], resources: ["userextras/*"], verbs: [impersonate]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: files, namespace: dev}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: files}
subjects: [{kind: Group, name: readers}, {kind: ServiceAccount, name: jane}]
"#;

    #[test]
    fn rules_match_as_kube_apiserver_matches_them() {
        let p = Policy::from_yaml(POLICY).unwrap();
        let sa = user("system:serviceaccount:pc:api", &[]);
        let exec = |verb| attrs(verb, "", "pods", "exec", "tigera-fluentd", "fluentd-x");
        assert_eq!(
            p.authorize(&sa, &exec("create")),
            Decision::Allowed(Some(
                "RBAC: allowed by RoleBinding \"exec/tigera-fluentd\" of Role \"exec\" to ServiceAccount \"api/pc\"".into()
            ))
        );
        // The verb a WebSocket exec is authorized with: not granted.
        assert_eq!(p.authorize(&sa, &exec("get")), Decision::Denied);
        // A Role grants nothing outside its namespace.
        assert!(
            !p.authorize(&sa, &attrs("list", "", "pods", "", "dev", ""))
                .allowed()
        );
        // A RoleBinding's ServiceAccount without a namespace is of the binding's namespace.
        let jane = user("system:serviceaccount:dev:jane", &[]);
        let files = |name| {
            attrs(
                "get",
                "projectcalico.org",
                "packetcaptures",
                "files",
                "dev",
                name,
            )
        };
        assert!(p.authorize(&jane, &files("cap")).allowed());
        assert_eq!(p.authorize(&jane, &files("other")), Decision::Denied);
        let reader = user("dana", &["readers"]);
        assert_eq!(
            p.authorize(&reader, &files("cap")),
            Decision::Allowed(Some(
                "RBAC: allowed by RoleBinding \"files/dev\" of ClusterRole \"files\" to Group \"readers\"".into()
            ))
        );
        // `*/status` matches any resource's status; `userextras/*` is no wildcard.
        assert!(
            p.authorize(
                &reader,
                &attrs("update", "x", "things", "status", "dev", "a")
            )
            .allowed()
        );
        assert!(
            !p.authorize(
                &reader,
                &attrs("impersonate", "", "userextras", "scopes", "dev", "a")
            )
            .allowed()
        );
        // system:masters needs no rule and gets no reason.
        assert_eq!(
            p.authorize(&user("admin", &[MASTERS]), &exec("get")),
            Decision::Allowed(None)
        );
    }

    #[test]
    fn non_resource_paths_and_malformed_objects() {
        let p = Policy::bootstrap();
        let get = |path: &str| Attributes {
            verb: "get".into(),
            path: Some(path.into()),
            ..Attributes::default()
        };
        let anonymous = user("system:anonymous", &["system:unauthenticated"]);
        assert!(p.authorize(&anonymous, &get("/version")).allowed());
        assert!(!p.authorize(&anonymous, &get("/apis")).allowed());
        let someone = user("x", &["system:authenticated"]);
        assert!(
            p.authorize(&someone, &get("/apis/projectcalico.org/v3"))
                .allowed()
        );
        assert!(!p.authorize(&someone, &get("/metrics")).allowed());
        let err = Policy::from_yaml(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: x}\n",
        )
        .unwrap_err();
        assert!(err.contains("namespace"), "{err}");
        // Other kinds are skipped.
        let p = Policy::from_yaml(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, namespace: b}\n",
        )
        .unwrap();
        assert_eq!(p, Policy::default());
    }
}
