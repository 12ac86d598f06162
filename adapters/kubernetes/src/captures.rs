//! The capture locator: `projectcalico.org/v3` PacketCaptures, read and status-updated.

use async_trait::async_trait;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use packetcapture_domain::{
    Capture, CaptureLocator, CaptureRef, CaptureState, NodeFiles, Result, StatusUpdate,
};
use serde_json::Value;

use crate::client::ClusterClient;

/// The PacketCapture resource.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("projectcalico.org", "v3", "PacketCapture"),
        "packetcaptures",
    )
}

/// Reads PacketCaptures of one cluster.
#[derive(Debug, Clone)]
pub struct PacketCaptureLocator {
    cluster: ClusterClient,
}

impl PacketCaptureLocator {
    /// Locates in `cluster`.
    pub fn new(cluster: ClusterClient) -> Self {
        Self { cluster }
    }

    fn api(&self, capture: &CaptureRef) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.cluster.client.clone(),
            capture.namespace.as_str(),
            &resource(),
        )
    }
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// Reads `status.files` leniently: wrong types count as absent, validation happens where the
/// values are used.
pub fn node_files(status: Option<&Value>) -> Vec<NodeFiles> {
    let Some(files) = status
        .and_then(|s| s.get("files"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    files
        .iter()
        .map(|f| NodeFiles {
            node: f.get("node").and_then(text).unwrap_or_default(),
            directory: f.get("directory").and_then(text).unwrap_or_default(),
            file_names: f
                .get("fileNames")
                .and_then(Value::as_array)
                .map(|names| names.iter().filter_map(text).collect())
                .unwrap_or_default(),
            state: f
                .get("state")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(CaptureState::parse),
        })
        .collect()
}

fn to_capture(reference: &CaptureRef, object: &DynamicObject) -> Capture {
    Capture {
        reference: reference.clone(),
        resource_version: object.metadata.resource_version.clone().unwrap_or_default(),
        files: node_files(object.data.get("status")),
    }
}

#[async_trait]
impl CaptureLocator for PacketCaptureLocator {
    async fn get(&self, capture: &CaptureRef) -> Result<Option<Capture>> {
        let object = self
            .api(capture)
            .get_opt(capture.name.as_str())
            .await
            .map_err(|e| self.cluster.err(format!("get packetcapture {capture}"), e))?;
        Ok(object.map(|o| to_capture(capture, &o)))
    }

    async fn clear_file_names(&self, capture: &Capture, nodes: &[String]) -> Result<StatusUpdate> {
        let reference = &capture.reference;
        let api = self.api(reference);
        let Some(mut object) = api.get_opt(reference.name.as_str()).await.map_err(|e| {
            self.cluster
                .err(format!("get packetcapture {reference}"), e)
        })?
        else {
            return Err(packetcapture_domain::Error::CaptureNotFound {
                capture: reference.to_string(),
            });
        };
        if object.metadata.resource_version.as_deref() != Some(capture.resource_version.as_str()) {
            return Ok(StatusUpdate::Conflict);
        }
        if let Some(files) = object
            .data
            .get_mut("status")
            .and_then(|s| s.get_mut("files"))
            .and_then(Value::as_array_mut)
        {
            for entry in files {
                let node = entry
                    .get("node")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if nodes.iter().any(|n| n == node)
                    && let Some(map) = entry.as_object_mut()
                {
                    map.insert("fileNames".into(), Value::Array(Vec::new()));
                }
            }
        }
        match api
            .replace_status(reference.name.as_str(), &PostParams::default(), &object)
            .await
        {
            Ok(_) => Ok(StatusUpdate::Updated),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(StatusUpdate::Conflict),
            Err(e) => Err(self
                .cluster
                .err(format!("update the status of packetcapture {reference}"), e)),
        }
    }
}
