//! Authenticators by review: Kubernetes TokenReview, or Calico's AuthenticationReview.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Api;
use kube::api::PostParams;
use packetcapture_domain::{Authenticator, BearerToken, Error, Result, User};
use serde::Deserialize;

use crate::client::ClusterClient;

/// Reviews tokens with `authentication.k8s.io/v1` TokenReview.
#[derive(Debug, Clone)]
pub struct TokenReviewAuthenticator {
    cluster: ClusterClient,
}

impl TokenReviewAuthenticator {
    /// Reviews in `cluster` (the local one).
    pub fn new(cluster: ClusterClient) -> Self {
        Self { cluster }
    }
}

#[async_trait]
impl Authenticator for TokenReviewAuthenticator {
    async fn authenticate(&self, token: &BearerToken) -> Result<User> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.expose().to_owned()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.cluster.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| self.cluster.err("create tokenreview", e))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let reason = status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "the token is not valid".into());
            return Err(Error::Unauthenticated { reason });
        }
        let user = status.user.unwrap_or_default();
        let name = user.username.filter(|n| !n.is_empty()).ok_or_else(|| {
            self.cluster.unexpected(
                "create tokenreview",
                "an authenticated review without a user name",
            )
        })?;
        Ok(User {
            name,
            uid: user.uid.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
        })
    }
}

/// Reviews tokens with Calico's `projectcalico.org/v3` AuthenticationReview, sent with the
/// caller's own token: the API server authenticates it and answers who it is.
#[derive(Debug, Clone)]
pub struct AuthenticationReviewAuthenticator {
    cluster: ClusterClient,
}

impl AuthenticationReviewAuthenticator {
    /// Reviews in `cluster` (the local one).
    pub fn new(cluster: ClusterClient) -> Self {
        Self { cluster }
    }
}

#[derive(Debug, Deserialize)]
struct AuthenticationReview {
    #[serde(default)]
    status: AuthenticationReviewStatus,
}

#[derive(Debug, Default, Deserialize)]
struct AuthenticationReviewStatus {
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    extra: BTreeMap<String, Vec<String>>,
}

#[async_trait]
impl Authenticator for AuthenticationReviewAuthenticator {
    async fn authenticate(&self, token: &BearerToken) -> Result<User> {
        const ACTION: &str = "create authenticationreview";
        let body = serde_json::to_vec(&serde_json::json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "AuthenticationReview",
            "metadata": {},
            "spec": {},
        }))
        .map_err(|e| Error::Internal(format!("serializing an AuthenticationReview: {e}")))?;
        let request = http::Request::post("/apis/projectcalico.org/v3/authenticationreviews")
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| {
                Error::Internal(format!("building an AuthenticationReview request: {e}"))
            })?;
        let review: AuthenticationReview = match self.cluster.anonymous.request(request).await {
            Ok(r) => r,
            Err(kube::Error::Api(s)) if s.code == 401 => {
                return Err(Error::Unauthenticated {
                    reason: "the token is not valid".into(),
                });
            }
            Err(e) => return Err(self.cluster.err(ACTION, e)),
        };
        if review.status.name.is_empty() {
            return Err(Error::Unauthenticated {
                reason: "the token names no user".into(),
            });
        }
        Ok(User {
            name: review.status.name,
            uid: review.status.uid,
            groups: review.status.groups,
            extra: review.status.extra,
        })
    }
}
