//! The PacketCapture API over HTTPS, through kube-rs's client: kube reads the kubeconfig's
//! token, token file or exec credential plugin and refreshes it; only the server's URL, its
//! CA and the cluster header are ours.

use std::path::PathBuf;

use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use kube::config::{KubeConfigOptions, Kubeconfig};
use secrecy::SecretString;

use crate::error::CliError;

/// Where the API is and who the caller is.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// The API's base URL (e.g. `https://manager:9443/packet-capture`).
    pub server: String,
    /// A PEM bundle to trust instead of the system's roots.
    pub certificate_authority: Option<PathBuf>,
    /// Skip verifying the server's certificate.
    pub insecure: bool,
    /// A bearer token (else the kubeconfig's user).
    pub token: Option<String>,
    /// A managed cluster's id (`X-Cluster-ID`).
    pub cluster: Option<String>,
    /// The kubeconfig context whose user is taken (else the current one).
    pub context: Option<String>,
    /// A kubeconfig file (else `KUBECONFIG` or `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
}

/// A client of the API.
#[derive(Clone)]
pub struct Api {
    client: kube::Client,
    base_path: String,
}

/// Characters escaped in one path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` as one URL path segment or query value.
pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, SEGMENT).to_string()
}

impl Api {
    /// A client for `connection`.
    pub async fn connect(connection: &Connection) -> Result<Self, CliError> {
        let server: http::Uri = connection
            .server
            .parse()
            .ok()
            .filter(|u: &http::Uri| {
                matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some()
            })
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--server {:?} is not an http(s) URL with a host",
                    connection.server
                ))
            })?;
        let mut config = match &connection.token {
            Some(token) => {
                let mut config = kube::Config::new(server.clone());
                config.auth_info.token = Some(SecretString::from(token.clone()));
                config
            }
            None => {
                let options = KubeConfigOptions {
                    context: connection.context.clone(),
                    ..KubeConfigOptions::default()
                };
                let loaded = match &connection.kubeconfig {
                    Some(path) => {
                        let file = Kubeconfig::read_from(path).map_err(|e| {
                            CliError::Local(format!(
                                "cannot read kubeconfig {}: {e}",
                                path.display()
                            ))
                        })?;
                        kube::Config::from_custom_kubeconfig(file, &options).await
                    }
                    None => kube::Config::from_kubeconfig(&options).await,
                };
                let mut config = loaded.map_err(|e| {
                    CliError::Local(format!(
                        "no token: pass --token, or use a kubeconfig whose user has one ({e})"
                    ))
                })?;
                // Only the user is the kubeconfig's: the server, and whom to trust, are ours.
                config.cluster_url = server.clone();
                config.root_cert = None;
                config.root_cert_file = None;
                config.tls_server_name = None;
                config.proxy_url = None;
                config
            }
        };
        config.root_cert_file = connection.certificate_authority.clone();
        config.accept_invalid_certs = connection.insecure;
        config.default_retry = false;
        if let Some(cluster) = &connection.cluster {
            let value = HeaderValue::from_str(cluster).map_err(|_| {
                CliError::Usage(format!("--cluster {cluster:?} is not a header value"))
            })?;
            config
                .headers
                .push((HeaderName::from_static("x-cluster-id"), value));
        }
        let client = kube::Client::try_from(config)
            .map_err(|e| CliError::Local(format!("cannot set up the HTTPS client: {e}")))?;
        Ok(Self {
            client,
            base_path: server.path().trim_end_matches('/').to_owned(),
        })
    }

    /// Sends `method path` (a path below the server's) with `headers`.
    pub async fn send(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(HeaderName, String)],
    ) -> Result<Response<kube::client::Body>, CliError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_path));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(kube::client::Body::empty())
            .map_err(|e| CliError::Local(format!("cannot build the request: {e}")))?;
        self.client.send(request).await.map_err(|e| {
            let mut message = error_chain(&e);
            if message.contains("certificate") {
                message.push_str(
                    " (trust the server's CA with --certificate-authority FILE, or pass \
                     --insecure-skip-tls-verify)",
                );
            }
            CliError::Network(message)
        })
    }

    /// Sends a request and reads a JSON answer; any status but 200 is the server's error.
    pub async fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let response = self.send(http::Method::GET, path, &[]).await?;
        if response.status() != StatusCode::OK {
            return Err(refusal(response).await);
        }
        let body = read_all(response).await?;
        serde_json::from_slice(&body).map_err(|e| {
            CliError::Local(format!("the server's answer is not the expected JSON: {e}"))
        })
    }
}

/// The whole body.
pub async fn read_all(response: Response<kube::client::Body>) -> Result<bytes::Bytes, CliError> {
    use http_body_util::BodyExt;
    response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| CliError::Network(error_chain(&e)))
}

/// The server's refusal: its status and its one-line message.
pub async fn refusal(response: Response<kube::client::Body>) -> CliError {
    let status = response.status();
    let message = match read_all(response).await {
        Ok(body) => String::from_utf8_lossy(&body).trim().to_owned(),
        Err(e) => e.to_string(),
    };
    CliError::Server { status, message }
}

/// An error and its causes on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
