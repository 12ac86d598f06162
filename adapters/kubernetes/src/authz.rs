//! The authorizer: `authorization.k8s.io/v1` SubjectAccessReview in one cluster.

use async_trait::async_trait;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes as K8sAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;
use packetcapture_domain::{Authorizer, ResourceAttributes, Result, User};

use crate::client::ClusterClient;

/// Asks the cluster's API server whether a user may do something.
#[derive(Debug, Clone)]
pub struct SubjectAccessReviewAuthorizer {
    cluster: ClusterClient,
}

impl SubjectAccessReviewAuthorizer {
    /// Reviews in `cluster`.
    pub fn new(cluster: ClusterClient) -> Self {
        Self { cluster }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// The review Kubernetes is asked.
pub fn review(user: &User, a: &ResourceAttributes) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: non_empty(&user.uid),
            groups: (!user.groups.is_empty()).then(|| user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            resource_attributes: Some(K8sAttributes {
                verb: Some(a.verb.as_str().to_owned()),
                group: Some(a.group.clone()),
                resource: Some(a.resource.clone()),
                subresource: non_empty(&a.subresource),
                namespace: non_empty(&a.namespace),
                name: non_empty(&a.name),
                ..K8sAttributes::default()
            }),
            non_resource_attributes: None,
        },
        ..SubjectAccessReview::default()
    }
}

#[async_trait]
impl Authorizer for SubjectAccessReviewAuthorizer {
    async fn allowed(&self, user: &User, attributes: &ResourceAttributes) -> Result<bool> {
        let api: Api<SubjectAccessReview> = Api::all(self.cluster.client.clone());
        let answer = api
            .create(&PostParams::default(), &review(user, attributes))
            .await
            .map_err(|e| self.cluster.err("create subjectaccessreview", e))?;
        let status = answer.status.unwrap_or_default();
        if let Some(err) = status.evaluation_error.as_deref().filter(|e| !e.is_empty()) {
            tracing::debug!(user = %user.name, error = err, "subjectaccessreview evaluation error");
        }
        Ok(status.allowed && status.denied != Some(true))
    }
}
