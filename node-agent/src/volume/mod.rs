//! Named volumes: persistent storage with a quota that outlives the sandboxes mounting it
//! (`<state>/volumes/<name>/{volume.json,disk.img,data/}`).

pub mod disk;

use crate::error::AgentError;
use microsandbox_wire::api::{validate_labels, validate_name, CreateVolume, VolumeInfo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::sync::Mutex;

/// Smallest and largest quota accepted, in MiB.
pub const MIN_QUOTA_MIB: u64 = 1;
pub const MAX_QUOTA_MIB: u64 = 16 * 1024 * 1024;

/// What is persisted about a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    quota_mib: u64,
    created_at: u64,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The agent's named volumes.
pub struct VolumeStore {
    dir: PathBuf,
    /// Serialises create/remove (each volume is a few mounts and files, never hot).
    lock: Mutex<()>,
    /// Volumes being grown offline: [`Self::resolve`] refuses them meanwhile.
    resizing: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl VolumeStore {
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            lock: Mutex::new(()),
            resizing: Default::default(),
        })
    }

    fn vol_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Where volume `name`'s data is mounted.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.vol_dir(name).join("data")
    }

    fn record(&self, name: &str) -> Option<Record> {
        let text = std::fs::read_to_string(self.vol_dir(name).join("volume.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Mount every volume again (after an agent or node restart).
    pub fn remount_all(&self) -> Vec<(String, std::io::Error)> {
        let mut failed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return failed;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if self.record(&name).is_none() {
                continue;
            }
            if let Err(err) = disk::mount(&e.path().join("disk.img"), &self.data_dir(&name)) {
                failed.push((name, err));
            }
        }
        failed
    }

    pub async fn create(&self, req: CreateVolume) -> Result<VolumeInfo, AgentError> {
        validate_name(&req.name).map_err(AgentError::InvalidName)?;
        validate_labels(&req.labels).map_err(AgentError::InvalidRequest)?;
        if !(MIN_QUOTA_MIB..=MAX_QUOTA_MIB).contains(&req.quota_mib) {
            return Err(AgentError::InvalidRequest(format!(
                "quota_mib must be {MIN_QUOTA_MIB}..={MAX_QUOTA_MIB}, got {}",
                req.quota_mib
            )));
        }
        let _guard = self.lock.lock().await;
        let dir = self.vol_dir(&req.name);
        if dir.exists() {
            return Err(AgentError::VolumeAlreadyExists(req.name));
        }
        let rec = Record {
            quota_mib: req.quota_mib,
            created_at: crate::sandbox::now(),
            labels: req.labels.clone(),
        };
        let made = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            disk::create(&dir.join("disk.img"), req.quota_mib << 20)?;
            disk::mount(&dir.join("disk.img"), &self.data_dir(&req.name))?;
            std::fs::write(dir.join("volume.json"), serde_json::to_vec(&rec)?)
        })();
        if let Err(e) = made {
            let _ = disk::unmount(&self.data_dir(&req.name));
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        self.info(&req.name)
    }

    pub fn info(&self, name: &str) -> Result<VolumeInfo, AgentError> {
        let rec = self
            .record(name)
            .ok_or_else(|| AgentError::VolumeNotFound(name.to_string()))?;
        Ok(VolumeInfo {
            name: name.to_string(),
            quota_mib: rec.quota_mib,
            used_bytes: disk::used_bytes(&self.data_dir(name)).unwrap_or(0),
            created_at: rec.created_at,
            labels: rec.labels,
        })
    }

    pub fn list(&self) -> Vec<VolumeInfo> {
        let mut out: Vec<VolumeInfo> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| self.info(&e.file_name().to_string_lossy()).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Grow volume `name` to `quota_mib`; `in_use` tells (after the volume is marked as being
    /// resized, so no new sandbox mounts it) whether a sandbox mounts it: then it grows online
    /// and its sandboxes see the space at once, else offline. Shrinking is refused: the data
    /// might not fit.
    pub async fn grow<F>(
        &self,
        name: &str,
        quota_mib: u64,
        in_use: F,
    ) -> Result<VolumeInfo, AgentError>
    where
        F: std::future::Future<Output = bool>,
    {
        let _guard = self.lock.lock().await;
        let mut rec = self
            .record(name)
            .ok_or_else(|| AgentError::VolumeNotFound(name.to_string()))?;
        if quota_mib < rec.quota_mib || quota_mib > MAX_QUOTA_MIB {
            return Err(AgentError::InvalidRequest(format!(
                "quota_mib of volume {name} can only grow, from {} up to {MAX_QUOTA_MIB}; got {quota_mib}",
                rec.quota_mib
            )));
        }
        if quota_mib > rec.quota_mib {
            let dir = self.vol_dir(name);
            let (image, data, bytes) = (dir.join("disk.img"), self.data_dir(name), quota_mib << 20);
            self.resizing_set().insert(name.to_string());
            let grown = if in_use.await {
                disk::grow_online(&image, &data, bytes)
            } else {
                disk::grow_offline(&image, &data, bytes)
            };
            self.resizing_set().remove(name);
            grown?;
            rec.quota_mib = quota_mib;
            std::fs::write(
                dir.join("volume.json"),
                serde_json::to_vec(&rec).map_err(std::io::Error::from)?,
            )?;
            tracing::info!(volume = %name, quota_mib, "volume grown");
        }
        self.info(name)
    }

    fn resizing_set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.resizing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The mounted data directory of an existing volume.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, AgentError> {
        if self.record(name).is_none() {
            return Err(AgentError::VolumeNotFound(name.to_string()));
        }
        if self.resizing_set().contains(name) {
            return Err(AgentError::VolumeBusy(name.to_string()));
        }
        let data = self.data_dir(name);
        disk::mount(&self.vol_dir(name).join("disk.img"), &data)?;
        Ok(data)
    }

    /// Delete a volume and its data; `in_use` names a sandbox that mounts it, if any.
    pub async fn remove(&self, name: &str, in_use: Option<String>) -> Result<(), AgentError> {
        let _guard = self.lock.lock().await;
        if self.record(name).is_none() {
            return Err(AgentError::VolumeNotFound(name.to_string()));
        }
        if let Some(sandbox) = in_use {
            return Err(AgentError::VolumeInUse {
                volume: name.to_string(),
                sandbox,
            });
        }
        disk::unmount(&self.data_dir(name))?;
        std::fs::remove_dir_all(self.vol_dir(name))?;
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.dir
    }
}
