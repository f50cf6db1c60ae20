//! Filesystem snapshots kept by this machine's agent ([`crate::Sandbox::snapshot`] makes one).

use microsandbox_client::api::{PushedSnapshot, SnapshotInfo};

use crate::agent;
use crate::cluster::ClusterConnection;
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

    /// Push snapshot `name` to a registry as image `reference` (e.g.
    /// `registry.example.com/team/base:1`): sandboxes on any machine or node that can pull it
    /// start from it with `.image(&pushed.reference)`. Credentials are the agent's
    /// (`--registry-auth`).
    pub async fn push(name: &str, reference: &str) -> Result<PushedSnapshot> {
        Ok(agent::connect()
            .await?
            .push_snapshot(name, reference)
            .await?)
    }

    /// The SandboxSnapshots of `cluster`'s namespace that are taken (and not being deleted).
    pub async fn list_in(cluster: &ClusterConnection) -> Result<Vec<SnapshotInfo>> {
        Ok(cluster
            .snapshot_objects()
            .await?
            .iter()
            .filter(|s| s.ready_node().is_some() && s.metadata.deletion_timestamp.is_none())
            .map(info_of)
            .collect())
    }

    /// Push SandboxSnapshot `name` of `cluster` to a registry as image `reference`, with the
    /// registry credentials of docker-config Secret `secret` of the namespace (`kubectl create
    /// secret docker-registry`; the operator seals them to the snapshot's node, whose agent
    /// pushes). Waits until it is pushed.
    pub async fn push_in(
        cluster: &ClusterConnection,
        name: &str,
        reference: &str,
        secret: Option<&str>,
    ) -> Result<PushedSnapshot> {
        let snap = cluster.push_snapshot(name, reference, secret).await?;
        let pushed = snap.status.and_then(|s| s.pushed_image).unwrap_or_default();
        let digest = pushed
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        Ok(PushedSnapshot {
            reference: reference.to_string(),
            digest,
        })
    }

    /// Delete SandboxSnapshot `name` of `cluster` (its node removes it once no Sandbox made
    /// from it exists).
    pub async fn remove_in(cluster: &ClusterConnection, name: &str) -> Result<()> {
        Ok(cluster.delete_snapshot(name).await?)
    }
}

/// A SandboxSnapshot object as a [`SnapshotInfo`] (`image`: `snapshot://NAME`).
pub(crate) fn info_of(snap: &microsandbox_crds::SandboxSnapshot) -> SnapshotInfo {
    let name = kube::ResourceExt::name_any(snap);
    let status = snap.status.clone().unwrap_or_default();
    SnapshotInfo {
        image: format!("{}{name}", crate::cluster::object::SNAPSHOT_SCHEME),
        name,
        digest: status.digest.unwrap_or_default(),
        layers: status
            .layers
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(0),
    }
}
