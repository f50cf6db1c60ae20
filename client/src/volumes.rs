//! Named volume calls: `/v1/volumes`.

use crate::error::Result;
use crate::http::{AgentClient, Payload, SEGMENT};
use hyper::Method;
use microsandbox_wire::api::{CreateVolume, VolumeInfo};
use percent_encoding::utf8_percent_encode;

fn volume_path(name: &str) -> String {
    format!("/v1/volumes/{}", utf8_percent_encode(name, SEGMENT))
}

impl AgentClient {
    /// `POST /v1/volumes`: a named volume with a quota, empty.
    pub async fn create_volume(&self, req: &CreateVolume) -> Result<VolumeInfo> {
        self.call_json(Method::POST, "/v1/volumes", Payload::json(req)?)
            .await
    }

    /// `GET /v1/volumes`.
    pub async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        self.call_json(Method::GET, "/v1/volumes", Payload::Empty)
            .await
    }

    /// `GET /v1/volumes/{name}`: quota and usage.
    pub async fn get_volume(&self, name: &str) -> Result<VolumeInfo> {
        self.call_json(Method::GET, &volume_path(name), Payload::Empty)
            .await
    }

    /// `PATCH /v1/volumes/{name}`: grow the quota (online, also while sandboxes use it).
    pub async fn resize_volume(&self, name: &str, quota_mib: u64) -> Result<VolumeInfo> {
        let req = microsandbox_wire::api::ResizeVolume { quota_mib };
        self.call_json(Method::PATCH, &volume_path(name), Payload::json(&req)?)
            .await
    }

    /// `DELETE /v1/volumes/{name}`: deletes it and its data (refused while a sandbox mounts it).
    pub async fn remove_volume(&self, name: &str) -> Result<()> {
        self.call_unit(Method::DELETE, &volume_path(name), Payload::Empty)
            .await
    }
}
