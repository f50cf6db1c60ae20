//! Startup recovery: re-adopt sandboxes that survived an agent restart, reap the rest. Nothing is
//! left behind: no process, mount or cgroup of a sandbox the agent no longer knows.

use microsandbox_wire::api::SandboxState;
use std::sync::Arc;

use super::entry::SandboxEntry;
use super::manager::SandboxManager;
use super::record::SandboxRecord;
use crate::guest::GuestClient;
use crate::rootfs::{self, SandboxRoot};
use crate::runtime::Liveness;

/// What recovery did with one sandbox directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    Adopted(String),
    /// Kept as a stopped record (it was stopped before the restart).
    Kept(String),
    Reaped(String),
}

impl SandboxManager {
    /// Walk the sandboxes directory once at startup.
    pub async fn recover(self: &Arc<Self>) -> Vec<Recovered> {
        let mut out = Vec::new();
        let Ok(dirs) = std::fs::read_dir(self.config.sandboxes_dir()) else {
            return out;
        };
        for d in dirs.flatten() {
            let dir = d.path();
            let name = d.file_name().to_string_lossy().into_owned();
            let Ok(mut rec) = SandboxRecord::load(&dir) else {
                // No readable record: unmount whatever may be mounted and drop it.
                let _ = rootfs::unmount_root(&SandboxRoot::under(&dir));
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::remove_dir_all(self.socket_dir_of(&name));
                out.push(Recovered::Reaped(name));
                continue;
            };
            let alive = self.is_alive(&rec).await;
            let was_draining = rec.state == SandboxState::Draining;
            let entry = match (rec.state, alive) {
                (SandboxState::Running | SandboxState::Draining, true) => {
                    rec.state = SandboxState::Running;
                    if let Some(att) = &rec.network {
                        if let Err(e) = self.network.resume(att).await {
                            tracing::warn!(sandbox = %name, error = %e, "cannot resume the sandbox's network");
                        }
                    }
                    out.push(Recovered::Adopted(name.clone()));
                    SandboxEntry::new(name.clone(), dir.clone(), rec)
                }
                (SandboxState::Stopped | SandboxState::Failed, _) => {
                    out.push(Recovered::Kept(name.clone()));
                    let entry = SandboxEntry::new(name.clone(), dir.clone(), rec);
                    // A stop cut short by the restart may have left the network behind.
                    self.release_network(&entry).await;
                    entry
                }
                _ => {
                    let entry = SandboxEntry::new(name.clone(), dir.clone(), rec);
                    let _ = self.teardown(&entry).await;
                    let _ = std::fs::remove_dir_all(&dir);
                    let _ = std::fs::remove_dir_all(self.socket_dir_of(&name));
                    out.push(Recovered::Reaped(name));
                    continue;
                }
            };
            let detached = entry.record.lock().await.request.detached;
            let running = entry.record.lock().await.state == SandboxState::Running;
            if let Err(e) = entry.record.lock().await.save(&dir) {
                tracing::warn!(sandbox = %name, error = %e, "could not rewrite state");
            }
            self.sandboxes
                .lock()
                .await
                .insert(name.clone(), entry.clone());
            if running && was_draining {
                // The drain was cut short by the restart: finish it (the execs it waited for
                // died with the old agent's connections), so the sandbox does not run on.
                let m = Arc::clone(self);
                let n = name.clone();
                tokio::spawn(async move {
                    if let Err(e) = m.drain(&n, None).await {
                        tracing::warn!(sandbox = %n, error = %e, "resuming drain failed");
                    }
                });
                continue;
            }
            if running && !detached {
                // The creator must re-open its lease within the grace period.
                // Same watchdog as at create; the creator's old lease died with the agent.
                entry
                    .lease_seen
                    .store(false, std::sync::atomic::Ordering::Release);
                self.watch_lease(entry);
            }
        }
        // Sandbox links that no live record claims are leftovers of a crash.
        let mut networks = Vec::new();
        for e in self.sandboxes.lock().await.values() {
            if let Some(att) = &e.record.lock().await.network {
                networks.push(att.clone());
            }
        }
        self.network.sweep(&networks).await;
        // Anything a runtime still runs that no record claims is an orphan.
        let mut known = Vec::new();
        for e in self.sandboxes.lock().await.values() {
            if let Some(l) = &e.record.lock().await.launched {
                known.push(l.id.clone());
            }
        }
        for rt in &self.runtimes {
            for id in rt.reap_unknown(&known).await {
                out.push(Recovered::Reaped(id));
            }
        }
        out
    }

    async fn is_alive(&self, rec: &SandboxRecord) -> bool {
        let Some(launched) = &rec.launched else {
            return false;
        };
        let Ok(rt) = self.runtime_for(rec.isolation) else {
            return false;
        };
        rt.liveness(launched).await == Liveness::Running
            && GuestClient::new(launched.guest_socket.clone())
                .ping()
                .await
                .is_ok()
    }
}
