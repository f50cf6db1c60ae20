//! What is persisted about a sandbox (`<state>/sandboxes/<name>/state.json`).

use microsandbox_wire::api::{CreateSandbox, Isolation, SandboxInfo, SandboxState};
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::runtime::Launched;

/// Persistent record of one sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub request: CreateSandbox,
    pub isolation: Isolation,
    pub image_digest: String,
    pub state: SandboxState,
    pub created_at: u64,
    pub launched: Option<Launched>,
    pub reason: Option<String>,
    /// The sandbox's network on the host, while it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::Attachment>,
}

impl SandboxRecord {
    pub fn info(&self) -> SandboxInfo {
        SandboxInfo {
            name: self.request.name.clone(),
            image: self.request.image.clone(),
            image_digest: self.image_digest.clone(),
            isolation: self.isolation,
            state: self.state,
            memory_mib: self.request.memory_mib,
            cpus: self.request.cpus,
            detached: self.request.detached,
            created_at: self.created_at,
            reason: self.reason.clone(),
            labels: self.request.labels.clone(),
        }
    }

    /// Write atomically (temp file + rename) so a crash never leaves half a record.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join("state.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, dir.join("state.json"))
    }

    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let text = std::fs::read(dir.join("state.json"))?;
        serde_json::from_slice(&text).map_err(std::io::Error::other)
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let rec = SandboxRecord {
            request: serde_json::from_str(r#"{"name":"a","image":"busybox"}"#).unwrap(),
            isolation: Isolation::Container,
            image_digest: "sha256:x".into(),
            state: SandboxState::Running,
            created_at: 7,
            launched: None,
            reason: None,
            network: Some(crate::network::Attachment {
                netns: "msb-a".into(),
                addressing: crate::network::plan::Addressing::new(
                    "10.213.0.0/16".parse().unwrap(),
                    3,
                )
                .unwrap(),
                spec: serde_json::from_str(r#"{"policy":"public_only","allow":["a.test"]}"#)
                    .unwrap(),
                secrets_file: Some("/state/sandboxes/a/secrets.json".into()),
            }),
        };
        rec.save(dir.path()).unwrap();
        assert_eq!(SandboxRecord::load(dir.path()).unwrap(), rec);
        assert_eq!(rec.info().name, "a");
    }
}
