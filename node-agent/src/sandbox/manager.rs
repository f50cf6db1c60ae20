//! The sandbox manager: owns every sandbox of this node.

use microsandbox_wire::api::{Isolation, Metrics, MountSpec, SandboxInfo};
use microsandbox_wire::guest::{Request, Response};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;

use super::entry::SandboxEntry;
use crate::config::AgentConfig;
use crate::error::{AgentError, IoContext};
use crate::image::ImageStore;
use crate::network::NetworkManager;
use crate::runtime::{Runtime, RuntimeError};
use crate::volume::VolumeStore;

/// Owns all sandboxes of this node.
pub struct SandboxManager {
    pub(super) config: AgentConfig,
    pub images: Arc<ImageStore>,
    pub(super) runtimes: Vec<Arc<dyn Runtime>>,
    /// Isolation levels this node cannot provide, with the reason.
    pub(super) unavailable: Vec<(Isolation, String)>,
    pub(super) sandboxes: Mutex<HashMap<String, Arc<SandboxEntry>>>,
    /// Named volumes (`<state>/volumes`).
    volumes: Arc<VolumeStore>,
    /// Sandbox networks and their policies.
    pub(super) network: NetworkManager,
    /// Warm pools.
    pub(super) pools: super::pool::Pools,
}

impl SandboxManager {
    pub fn new(
        config: AgentConfig,
        images: Arc<ImageStore>,
        runtimes: Vec<Arc<dyn Runtime>>,
        unavailable: Vec<(Isolation, String)>,
    ) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(config.sandboxes_dir())?;
        let volumes = Arc::new(VolumeStore::new(config.state_dir.join("volumes"))?);
        for (name, e) in volumes.remount_all() {
            tracing::warn!(volume = %name, error = %e, "cannot mount volume");
        }
        Ok(Arc::new(Self {
            network: NetworkManager::new(config.network.clone()),
            config,
            volumes,
            images,
            runtimes,
            unavailable,
            sandboxes: Mutex::new(HashMap::new()),
            pools: Default::default(),
        }))
    }

    /// Isolation levels this node provides, strongest first.
    pub fn isolation_levels(&self) -> Vec<Isolation> {
        let mut v: Vec<Isolation> = self.runtimes.iter().map(|r| r.isolation()).collect();
        v.sort_by_key(|i| match i {
            Isolation::Microvm => 0,
            Isolation::Container => 1,
        });
        v
    }

    pub(super) fn runtime_for(&self, isolation: Isolation) -> Result<Arc<dyn Runtime>, AgentError> {
        if let Some(r) = self.runtimes.iter().find(|r| r.isolation() == isolation) {
            return Ok(r.clone());
        }
        let reason = self
            .unavailable
            .iter()
            .find(|(i, _)| *i == isolation)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| "no runtime configured".into());
        Err(AgentError::Runtime(RuntimeError::Unavailable {
            isolation,
            reason,
        }))
    }

    /// Choose the isolation for a request: exactly what it asks, or the node's strongest.
    pub(super) fn choose_isolation(
        &self,
        wanted: Option<Isolation>,
    ) -> Result<Isolation, AgentError> {
        match wanted {
            Some(i) => self.runtime_for(i).map(|_| i),
            None => self.isolation_levels().first().copied().ok_or_else(|| {
                AgentError::Runtime(RuntimeError::Unavailable {
                    isolation: Isolation::Microvm,
                    reason: self
                        .unavailable
                        .iter()
                        .map(|(i, r)| format!("{i}: {r}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                })
            }),
        }
    }

    /// Where the guest agent's socket lives on the host. Kept short: unix socket paths are limited
    /// to 107 bytes, so it is `<state>/run/<name>/agent.sock`, not under the sandbox directory.
    pub(super) fn socket_dir_of(&self, name: &str) -> PathBuf {
        self.config.state_dir.join("run").join(name)
    }

    pub(super) fn dir_of(&self, name: &str) -> PathBuf {
        self.config.sandboxes_dir().join(name)
    }

    pub async fn entry(&self, name: &str) -> Result<Arc<SandboxEntry>, AgentError> {
        self.sandboxes
            .lock()
            .await
            .get(name)
            .cloned()
            .ok_or_else(|| AgentError::NotFound(name.to_string()))
    }

    /// The named volumes of this agent.
    pub fn volumes(&self) -> &VolumeStore {
        &self.volumes
    }

    /// Delete a named volume, unless a sandbox mounts it.
    pub async fn remove_volume(&self, name: &str) -> Result<(), AgentError> {
        let user = self.volume_user(name).await;
        self.volumes.remove(name, user).await
    }

    /// Grow named volume `name` (see [`crate::volume::VolumeStore::grow`]).
    pub async fn grow_volume(
        &self,
        name: &str,
        quota_mib: u64,
    ) -> Result<microsandbox_wire::api::VolumeInfo, AgentError> {
        self.volumes.grow(name, quota_mib).await
    }

    /// A sandbox that mounts named volume `name` (including one still being created).
    async fn volume_user(&self, name: &str) -> Option<String> {
        for e in self.sandboxes.lock().await.values() {
            let rec = e.record.lock().await;
            let mounts_it = rec
                .request
                .mounts
                .iter()
                .any(|m| matches!(m, MountSpec::Named { name: n, .. } if n == name));
            if mounts_it {
                return Some(e.name.clone());
            }
        }
        None
    }

    pub async fn get(&self, name: &str) -> Result<SandboxInfo, AgentError> {
        let entry = self.entry(name).await?;
        self.refresh(&entry).await;
        let info = entry.record.lock().await.info();
        Ok(info)
    }

    pub async fn list(&self) -> Vec<SandboxInfo> {
        let entries: Vec<_> = self.sandboxes.lock().await.values().cloned().collect();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            self.refresh(&e).await;
            out.push(e.record.lock().await.info());
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Uses of the sandbox's secret placeholders its egress proxy blocked, oldest first (with
    /// `since`, only those numbered from it on), and the number the next one gets (so
    /// `since: Some(u64::MAX)` just reads that mark).
    pub async fn secret_violations(
        &self,
        name: &str,
        since: Option<u64>,
    ) -> Result<(Vec<microsandbox_wire::api::SecretViolation>, u64), AgentError> {
        let entry = self.entry(name).await?;
        let att = entry.record.lock().await.network.clone();
        Ok(match att {
            Some(att) => self.network.violations(&att, since).await,
            None => (Vec::new(), 0),
        })
    }

    /// Resource usage: the guest's view, with the host cgroup's memory where there is one.
    /// The sandbox's own output: the console of a microVM (kernel and init), the log of a
    /// container's init (the guest agent); at most its last `tail` bytes. Kept across a stop
    /// until the next start or the removal.
    pub async fn logs(&self, name: &str, tail: Option<u64>) -> Result<Vec<u8>, AgentError> {
        let entry = self.entry(name).await?;
        let dir = entry.dir.join("runtime");
        super::create::blocking(move || {
            for file in [crate::runtime::microvm::config::CONSOLE_LOG, "guest.log"] {
                let path = dir.join(file);
                match std::fs::read(&path) {
                    Ok(data) => return Ok(tail_of(data, tail)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e).at("read the log", &path),
                }
            }
            Ok(Vec::new())
        })
        .await
    }

    /// Metrics of a running sandbox; of a paused or suspended one only what the host sees
    /// (asking its guest would need it thawed: looking is not activity).
    pub async fn metrics(&self, name: &str) -> Result<Metrics, AgentError> {
        let entry = self.entry(name).await?;
        let frozen = matches!(entry.record.lock().await.phase, super::Phase::Paused(..));
        let g = if frozen {
            Default::default()
        } else {
            let (_guard, guest) = entry.begin_exec(false).await?;
            let Response::Metrics(g) = guest.call(Request::Metrics).await? else {
                return Err(AgentError::GuestChannel(
                    "unexpected answer to metrics".into(),
                ));
            };
            g
        };
        let launched = entry.record.lock().await.phase.launched().cloned();
        let host = match launched.map(|l| (self.runtime_for(l.isolation), l)) {
            Some((Ok(rt), l)) => rt.usage(&l).await,
            _ => Default::default(),
        };
        Ok(Metrics {
            name: name.to_string(),
            cpu_usage_us: host.cpu_usage_us.unwrap_or(g.cpu_usage_us),
            memory_bytes: host.memory_bytes.unwrap_or(g.memory_bytes),
            memory_limit_bytes: host.memory_limit_bytes.or(g.memory_limit_bytes),
            disk_read_bytes: g.disk_read_bytes,
            disk_write_bytes: g.disk_write_bytes,
            net_rx_bytes: g.net_rx_bytes,
            net_tx_bytes: g.net_tx_bytes,
            processes: host.pids.map(|p| p as u32).unwrap_or(g.processes),
        })
    }

    /// Metrics of every running sandbox.
    pub async fn all_metrics(&self) -> Vec<Metrics> {
        let names: Vec<String> = self.sandboxes.lock().await.keys().cloned().collect();
        let mut out = Vec::new();
        for n in names {
            if let Ok(m) = self.metrics(&n).await {
                out.push(m);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Number of known sandboxes.
    pub async fn count(&self) -> usize {
        self.sandboxes.lock().await.len()
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }
}

/// The last `tail` bytes of `data` (all of it without a limit), starting at a line when the
/// cut falls inside one. Pure.
pub fn tail_of(mut data: Vec<u8>, tail: Option<u64>) -> Vec<u8> {
    let Some(limit) = tail.and_then(|t| usize::try_from(t).ok()) else {
        return data;
    };
    if data.len() <= limit {
        return data;
    }
    let mut start = data.len() - limit;
    if start > 0 && data[start - 1] != b'\n' {
        if let Some(nl) = data[start..].iter().position(|&b| b == b'\n') {
            start += nl + 1;
        }
    }
    data.drain(..start);
    data
}

#[cfg(test)]
mod log_tests {
    use super::tail_of;

    #[test]
    fn tails_start_at_a_line() {
        let data = b"one\ntwo\nthree\n".to_vec();
        assert_eq!(tail_of(data.clone(), None), data);
        assert_eq!(tail_of(data.clone(), Some(100)), data);
        assert_eq!(tail_of(data.clone(), Some(6)), b"three\n");
        assert_eq!(tail_of(data.clone(), Some(10)), b"two\nthree\n");
        // A cut inside a line starts at the next one.
        assert_eq!(tail_of(data.clone(), Some(13)), b"two\nthree\n");
        assert_eq!(tail_of(data.clone(), Some(7)), b"three\n");
        assert_eq!(tail_of(data, Some(0)), b"");
    }
}
