//! Named volumes: persistent storage with a quota that outlives the sandboxes mounting it
//! (`<state>/volumes/<name>/{volume.json,disk.img,data/}`).

pub mod disk;

use crate::error::{AgentError, IoContext};
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

/// Write `volume.json` atomically (a torn record would make the volume vanish).
fn write_record(dir: &Path, rec: &Record) -> std::io::Result<()> {
    let tmp = dir.join("volume.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(rec).map_err(std::io::Error::from)?)?;
    std::fs::rename(tmp, dir.join("volume.json"))
}

/// Marks a volume as being resized for as long as it lives (also when the resize is dropped).
struct Resizing<'a> {
    set: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    name: String,
}

impl<'a> Resizing<'a> {
    fn mark(set: &'a std::sync::Mutex<std::collections::HashSet<String>>, name: &str) -> Self {
        set.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        Self {
            set,
            name: name.to_string(),
        }
    }
}

impl Drop for Resizing<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.name);
    }
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
        let (image, data) = (dir.join("disk.img"), self.data_dir(&req.name));
        let made = (|| -> Result<(), AgentError> {
            std::fs::create_dir_all(&dir).at("create", &dir)?;
            disk::create(&image, req.quota_mib << 20)
                .map_err(|e| too_large(e, req.quota_mib, "create the disk image", &image))?;
            disk::mount(&image, &data).at("mount the volume at", &data)?;
            write_record(&dir, &rec).at("save the record of", &dir)
        })();
        if let Err(e) = made {
            if let Err(u) = disk::unmount(&data) {
                tracing::warn!(volume = %req.name, error = %u, "cannot unmount the failed volume");
            }
            if let Err(r) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(volume = %req.name, error = %r, "cannot remove the failed volume");
            }
            return Err(e);
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

    /// Grow volume `name` to `quota_mib` ([`disk::grow`]: offline when no sandbox holds it,
    /// else online, and its sandboxes see the space at once). No sandbox may mount it
    /// meanwhile ([`Self::resolve`] answers `VolumeBusy`). Shrinking is refused: the data might
    /// not fit.
    pub async fn grow(&self, name: &str, quota_mib: u64) -> Result<VolumeInfo, AgentError> {
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
            let (image, data) = (dir.join("disk.img"), self.data_dir(name));
            let limit = disk::growth_limit(&image).at("read the file system of", &image)?;
            if quota_mib << 20 > limit {
                return Err(AgentError::VolumeLimit(format!(
                    "volume {name} can grow to at most {} MiB (ext4 grows in place to about 1024 times the size it was created with); create a larger volume instead",
                    limit >> 20
                )));
            }
            let _busy = Resizing::mark(&self.resizing, name);
            let grown = image.clone();
            tokio::task::spawn_blocking(move || disk::grow(&image, &data, quota_mib << 20))
                .await
                .map_err(|e| AgentError::Internal(format!("volume growth: {e}")))?
                .map_err(|e| too_large(e, quota_mib, "grow", &grown))?;
            rec.quota_mib = quota_mib;
            write_record(&dir, &rec).at("save the record of", &dir)?;
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
        disk::mount(&self.vol_dir(name).join("disk.img"), &data)
            .at("mount the volume at", &data)?;
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
        let (data, dir) = (self.data_dir(name), self.vol_dir(name));
        disk::unmount(&data).at("unmount", &data)?;
        std::fs::remove_dir_all(&dir).at("remove", &dir)
    }

    pub fn root(&self) -> &Path {
        &self.dir
    }
}

/// A quota the node's file system cannot hold in one file (EFBIG: ext4 with 4 KiB blocks stops
/// just short of 16 TiB) is a limit of the node, not an internal error: `fs_error` (422).
///
/// Likewise a growth ext4 cannot make: a file system made with N blocks reserves descriptor room
/// to grow to about 1024 N, and resize2fs refuses beyond ("too many block group descriptors").
fn too_large(e: std::io::Error, quota_mib: u64, op: &'static str, path: &Path) -> AgentError {
    if e.kind() == std::io::ErrorKind::FileTooLarge {
        AgentError::VolumeLimit(format!(
            "quota_mib {quota_mib} is more than this node's file system holds in one file; choose a smaller quota"
        ))
    } else if e.kind() == std::io::ErrorKind::PermissionDenied {
        // Online growth on a node that withholds CAP_SYS_RESOURCE: the volume is unchanged.
        AgentError::VolumeLimit(format!("cannot {op} {}: {e}", path.display()))
    } else if e.to_string().contains("too many block group descriptors") {
        AgentError::VolumeLimit(format!(
            "quota_mib {quota_mib} is more than this volume can grow to (ext4 grows to about 1024 times the size it was created with); create a larger volume instead"
        ))
    } else {
        AgentError::Io {
            op,
            path: path.to_path_buf(),
            source: e,
        }
    }
}
