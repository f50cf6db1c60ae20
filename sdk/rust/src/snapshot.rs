//! Filesystem snapshots kept by this machine's agent ([`crate::Sandbox::snapshot`] makes one).

use microsandbox_client::api::SnapshotInfo;

use crate::agent;
use crate::error::Result;

/// Snapshots of this machine's agent: a sandbox's files saved as an image that new sandboxes
/// start from (`Sandbox::builder(..).image(&snapshot.image)`).
#[derive(Debug, Clone, Copy)]
pub struct Snapshot;

impl Snapshot {
    /// The snapshots of this machine's agent.
    pub async fn list() -> Result<Vec<SnapshotInfo>> {
        Ok(agent::connect().await?.snapshots().await?)
    }

    /// Delete snapshot `name` (refused while a sandbox made from it exists).
    pub async fn remove(name: &str) -> Result<()> {
        Ok(agent::connect().await?.remove_snapshot(name).await?)
    }
}
