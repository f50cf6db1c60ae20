//! What is known about a sandbox: its request, its lifecycle [`Phase`] with the data each phase
//! owns, persisted in `<state>/sandboxes/<name>/state.json`.

use microsandbox_wire::api::{CreateSandbox, Isolation, SandboxInfo, SandboxState, StopReason};
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::network::Attachment;
use crate::runtime::Launched;

/// Where a sandbox is in its life, with what that phase owns.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Being pulled, mounted and booted by a create call (nothing runs yet).
    Creating,
    /// Its init runs; execs are admitted.
    Running(Launched),
    /// Its processes are frozen (memory kept, no CPU); execs wait for a resume, which an idle
    /// suspension gets from the next exec and a requested pause only from `resume`.
    Paused(Launched, PauseCause),
    /// New execs are refused; running ones are waited for, then it is stopped.
    Draining(Launched),
    /// The agent is stopping it (signal, grace period, cleanup); execs are refused.
    Stopping(Launched),
    /// Stopped by the agent; nothing of it runs.
    Stopped(StopReason),
    /// It ended on its own (init exited, OOM); nothing of it runs.
    Failed(StopReason),
}

impl Phase {
    /// The state clients see. A stop in progress is `draining`: on its way to stopped, refusing
    /// new work.
    pub fn state(&self) -> SandboxState {
        match self {
            Phase::Creating => SandboxState::Creating,
            Phase::Running(_) => SandboxState::Running,
            Phase::Paused(_, PauseCause::Requested) => SandboxState::Paused,
            Phase::Paused(_, PauseCause::Idle) => SandboxState::Suspended,
            Phase::Draining(_) | Phase::Stopping(_) => SandboxState::Draining,
            Phase::Stopped(_) => SandboxState::Stopped,
            Phase::Failed(_) => SandboxState::Failed,
        }
    }

    /// What runs, while something does.
    pub fn launched(&self) -> Option<&Launched> {
        match self {
            Phase::Running(l) | Phase::Paused(l, _) | Phase::Draining(l) | Phase::Stopping(l) => {
                Some(l)
            }
            Phase::Creating | Phase::Stopped(_) | Phase::Failed(_) => None,
        }
    }

    pub fn reason(&self) -> Option<&StopReason> {
        match self {
            Phase::Stopped(r) | Phase::Failed(r) => Some(r),
            _ => None,
        }
    }

    /// Stopped or failed: nothing left to stop.
    pub fn is_ended(&self) -> bool {
        matches!(self, Phase::Stopped(_) | Phase::Failed(_))
    }
}

/// Why a sandbox is frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseCause {
    /// `pause` was asked for (a Sandbox's `spec.paused`).
    Requested,
    /// No exec or file operation for its idle timeout.
    Idle,
}

/// Defaults of a sandbox's commands set after it started (a warm-pool claim's env and workdir;
/// its launch environment is the pool template's), applied by the agent to each exec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecDefaults {
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
}

impl ExecDefaults {
    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.workdir.is_none()
    }

    /// `req` with these defaults under it (its own env and cwd win). Pure.
    pub fn apply(
        &self,
        mut req: microsandbox_wire::api::ExecRequest,
    ) -> microsandbox_wire::api::ExecRequest {
        for (k, v) in &self.env {
            req.env.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if req.cwd.is_none() {
            req.cwd = self.workdir.clone();
        }
        req
    }
}

/// Everything the agent keeps about one sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RecordFile", into = "RecordFile")]
pub struct SandboxRecord {
    pub request: CreateSandbox,
    pub isolation: Isolation,
    pub image_digest: String,
    pub created_at: u64,
    pub phase: Phase,
    /// The sandbox's network on the host, from its attach during create until it is released
    /// (at stop, or at removal of a failed sandbox).
    pub network: Option<Attachment>,
    /// Variables of its secrets (never the values, which are gone once it stops: a sandbox
    /// with secrets cannot be started again).
    pub secret_envs: Vec<String>,
    /// Defaults of its commands set after it started (a warm-pool claim's).
    pub exec_defaults: ExecDefaults,
}

/// The on-disk form of a record (the layout older agents wrote and read).
#[derive(Serialize, Deserialize)]
struct RecordFile {
    request: CreateSandbox,
    isolation: Isolation,
    image_digest: String,
    state: SandboxState,
    created_at: u64,
    launched: Option<Launched>,
    reason: Option<StopReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    network: Option<Attachment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    secret_envs: Vec<String>,
    #[serde(default, skip_serializing_if = "ExecDefaults::is_empty")]
    exec_defaults: ExecDefaults,
}

impl TryFrom<RecordFile> for SandboxRecord {
    type Error = String;

    fn try_from(f: RecordFile) -> Result<Self, String> {
        let reason = || f.reason.clone().unwrap_or(StopReason::Stopped);
        let phase = match (f.state, f.launched) {
            (SandboxState::Creating, _) => Phase::Creating,
            (SandboxState::Running, Some(l)) => Phase::Running(l),
            (SandboxState::Paused, Some(l)) => Phase::Paused(l, PauseCause::Requested),
            (SandboxState::Suspended, Some(l)) => Phase::Paused(l, PauseCause::Idle),
            (SandboxState::Draining, Some(l)) => Phase::Draining(l),
            (
                SandboxState::Running
                | SandboxState::Paused
                | SandboxState::Suspended
                | SandboxState::Draining,
                None,
            ) => return Err(format!("{:?} record without a launched sandbox", f.state)),
            (SandboxState::Stopped, _) => Phase::Stopped(reason()),
            (SandboxState::Failed, _) => Phase::Failed(reason()),
        };
        Ok(SandboxRecord {
            request: f.request,
            isolation: f.isolation,
            image_digest: f.image_digest,
            created_at: f.created_at,
            phase,
            network: f.network,
            secret_envs: f.secret_envs,
            exec_defaults: f.exec_defaults,
        })
    }
}

impl From<SandboxRecord> for RecordFile {
    fn from(r: SandboxRecord) -> Self {
        RecordFile {
            state: r.phase.state(),
            launched: r.phase.launched().cloned(),
            reason: r.phase.reason().cloned(),
            request: r.request,
            isolation: r.isolation,
            image_digest: r.image_digest,
            created_at: r.created_at,
            network: r.network,
            secret_envs: r.secret_envs,
            exec_defaults: r.exec_defaults,
        }
    }
}

impl SandboxRecord {
    /// A record for a sandbox about to be created.
    pub fn creating(request: CreateSandbox, isolation: Isolation) -> Self {
        SandboxRecord {
            request,
            isolation,
            image_digest: String::new(),
            created_at: now(),
            phase: Phase::Creating,
            network: None,
            secret_envs: Vec::new(),
            exec_defaults: ExecDefaults::default(),
        }
    }

    pub fn info(&self) -> SandboxInfo {
        SandboxInfo {
            name: self.request.name.clone(),
            image: self.request.image.clone(),
            image_digest: self.image_digest.clone(),
            isolation: self.isolation,
            state: self.phase.state(),
            memory_mib: self.request.memory_mib,
            cpus: self.request.cpus,
            detached: self.request.detached,
            created_at: self.created_at,
            reason: self.phase.reason().cloned(),
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
            created_at: 7,
            phase: Phase::Failed(StopReason::OomKilled),
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
            secret_envs: vec!["API_KEY".into()],
            exec_defaults: ExecDefaults {
                env: [("A".to_string(), "1".to_string())].into(),
                workdir: Some("/w".into()),
            },
        };
        rec.save(dir.path()).unwrap();
        assert_eq!(SandboxRecord::load(dir.path()).unwrap(), rec);
        assert_eq!(rec.info().name, "a");
        assert_eq!(rec.info().reason, Some(StopReason::OomKilled));
    }

    #[test]
    fn reads_the_layout_older_agents_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{"request":{"name":"a","image":"busybox"},"isolation":"container",
            "image_digest":"sha256:x","state":"stopped","created_at":7,"launched":null,
            "reason":"drained"}"#;
        std::fs::write(dir.path().join("state.json"), old).unwrap();
        let rec = SandboxRecord::load(dir.path()).unwrap();
        assert_eq!(rec.phase, Phase::Stopped(StopReason::Drained));
        // A running record must say what runs: without it, it is not a record this agent reads.
        let running = old.replace(r#""stopped""#, r#""running""#);
        std::fs::write(dir.path().join("state.json"), running).unwrap();
        assert!(SandboxRecord::load(dir.path()).is_err());
    }

    #[test]
    fn paused_records_keep_their_cause() {
        let dir = tempfile::tempdir().unwrap();
        let launched = Launched {
            id: "msb-a".into(),
            isolation: Isolation::Container,
            pid: Some(42),
            guest_socket: "/run/a.sock".into(),
            cgroup: Some("/microsandbox/msb-a".into()),
        };
        for (cause, state) in [
            (PauseCause::Requested, SandboxState::Paused),
            (PauseCause::Idle, SandboxState::Suspended),
        ] {
            let mut rec = SandboxRecord::creating(
                serde_json::from_str(r#"{"name":"a","image":"busybox"}"#).unwrap(),
                Isolation::Container,
            );
            rec.phase = Phase::Paused(launched.clone(), cause);
            rec.save(dir.path()).unwrap();
            let back = SandboxRecord::load(dir.path()).unwrap();
            assert_eq!(back, rec);
            assert_eq!(back.info().state, state);
            assert_eq!(back.phase.launched(), Some(&launched));
        }
    }
}
