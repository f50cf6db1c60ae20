//! Snapshots of a sandbox's files: its writable layer, saved while it is stopped or paused (so no
//! process changes it half-way), as an image of the node's image store.

use microsandbox_wire::api::{PushedSnapshot, SnapshotInfo};

use super::create::root_of;
use super::record::Phase;
use super::SandboxManager;
use crate::error::AgentError;
use crate::image::{snapshot, ImageRecord};

/// A snapshot name: what a sandbox name may be (a DNS label).
fn check_name(name: &str) -> Result<(), AgentError> {
    microsandbox_wire::api::validate_name(name).map_err(AgentError::InvalidRequest)
}

fn info(rec: &ImageRecord) -> SnapshotInfo {
    SnapshotInfo {
        name: snapshot::name_of(&rec.reference)
            .unwrap_or_default()
            .to_string(),
        image: rec.reference.clone(),
        digest: rec.digest.clone(),
        layers: rec.layers.len(),
    }
}

impl SandboxManager {
    /// Save sandbox `name`'s files as snapshot `snapshot` (replacing one of that name). The
    /// sandbox must be stopped, failed or paused: a running one could change them meanwhile.
    pub async fn snapshot(&self, name: &str, snapshot: &str) -> Result<SnapshotInfo, AgentError> {
        check_name(snapshot)?;
        let entry = self.entry(name).await?;
        // Held across the copy: no resume, start or removal changes the layer meanwhile.
        let rec = entry.record.lock().await;
        match &rec.phase {
            Phase::Stopped(_) | Phase::Failed(_) | Phase::Paused(..) => {}
            other => {
                return Err(AgentError::InvalidRequest(format!(
                    "sandbox {name} is {}: pause or stop it before a snapshot (a running \
                     sandbox could change its files half-way)",
                    other.state()
                )))
            }
        }
        let base = self
            .images
            .cached(&rec.request.image)?
            .filter(|b| b.digest == rec.image_digest)
            .ok_or_else(|| {
                AgentError::InvalidRequest(format!(
                    "the image {} of sandbox {name} changed or is gone since it was created",
                    rec.request.image
                ))
            })?;
        let upper = root_of(&entry.dir).upper;
        if !upper.is_dir() {
            return Err(AgentError::InvalidRequest(format!(
                "the files of sandbox {name} are not mounted (a stopped sandbox with a disk \
                 limit): pause it instead of stopping it for a snapshot"
            )));
        }
        let saved = self.images.save_snapshot(snapshot, &base, &upper).await?;
        Ok(info(&saved))
    }

    /// The snapshots of this node.
    pub fn snapshots(&self) -> Vec<SnapshotInfo> {
        self.images.snapshots().iter().map(info).collect()
    }

    /// Push snapshot `name` to a registry as image `reference` with `credentials`.
    pub async fn push_snapshot(
        &self,
        name: &str,
        reference: &str,
        credentials: crate::image::PushAuth,
    ) -> Result<PushedSnapshot, AgentError> {
        check_name(name)?;
        let (reference, digest) = self
            .images
            .push_snapshot(name, reference, credentials)
            .await?;
        Ok(PushedSnapshot { reference, digest })
    }

    /// Delete snapshot `name`, unless a sandbox was made from it (its layer is that sandbox's
    /// file system: an overlay must not lose a lower layer under it).
    pub async fn remove_snapshot(&self, name: &str) -> Result<SnapshotInfo, AgentError> {
        check_name(name)?;
        let reference = snapshot::reference(name);
        let no_mirrors = std::collections::BTreeMap::new();
        for e in self.sandboxes.lock().await.values() {
            let image = e.record.lock().await.request.image.clone();
            let same = crate::image::resolve(&image, &no_mirrors)
                .is_ok_and(|r| r.canonical.whole() == reference);
            if same {
                return Err(AgentError::SnapshotInUse {
                    snapshot: name.to_string(),
                    sandbox: e.name.clone(),
                });
            }
        }
        Ok(info(&self.images.remove_snapshot(name).await?))
    }
}
