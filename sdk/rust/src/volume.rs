//! Named volumes: persistent storage of the agent, mounted with [`crate::Mount::named`].

use std::collections::BTreeMap;

use microsandbox_client::api::{CreateVolume, VolumeInfo};

use crate::agent;
use crate::error::Result;

/// Named volumes of this machine's agent.
#[derive(Debug, Clone, Copy)]
pub struct Volume;

impl Volume {
    /// Create volume `name` of `quota_mib` MiB (writes beyond it fail with ENOSPC).
    pub async fn create(name: &str, quota_mib: u64) -> Result<VolumeInfo> {
        let req = CreateVolume {
            name: name.to_string(),
            quota_mib,
            labels: BTreeMap::new(),
        };
        Ok(agent::connect().await?.create_volume(&req).await?)
    }

    pub async fn get(name: &str) -> Result<VolumeInfo> {
        Ok(agent::connect().await?.get_volume(name).await?)
    }

    pub async fn list() -> Result<Vec<VolumeInfo>> {
        Ok(agent::connect().await?.list_volumes().await?)
    }

    /// Delete a volume and its data (not while a sandbox mounts it).
    pub async fn remove(name: &str) -> Result<()> {
        Ok(agent::connect().await?.remove_volume(name).await?)
    }
}
