//! Startup recovery: re-adopt sandboxes that survived an agent restart, reap the rest. Nothing is
//! left behind: no process, mount or cgroup of a sandbox the agent no longer knows.

use std::sync::Arc;

use super::cleanup;
use super::create::{blocking, root_of};
use super::entry::SandboxEntry;
use super::manager::SandboxManager;
use super::record::{Phase, SandboxRecord};
use crate::guest::GuestClient;
use crate::rootfs;
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
            let rec = match SandboxRecord::load(&dir) {
                Ok(rec) => rec,
                Err(e) => {
                    // No readable record: unmount whatever may be mounted and drop it.
                    tracing::warn!(sandbox = %name, error = %e, "unreadable state; reaping");
                    let (socket_dir, n) = (self.socket_dir_of(&name), name.clone());
                    let reaped = blocking(move || {
                        cleanup(&n, "unmount", rootfs::unmount_root(&root_of(&dir)));
                        crate::cleanup::remove_dir_all(&dir);
                        crate::cleanup::remove_dir_all(&socket_dir);
                        Ok(())
                    })
                    .await;
                    cleanup(&name, "reap", reaped);
                    out.push(Recovered::Reaped(name));
                    continue;
                }
            };
            // Its clients' name (a claimed pool sandbox's is not its directory's).
            let key = rec.request.name.clone();
            let socket_dir = self.socket_dir_of(&name);
            // Pools are declared again by their users after a restart: unclaimed members are
            // reaped, never handed out by a pool that no longer knows them.
            let alive = self.is_alive(&rec).await && !super::pool::is_unclaimed_member(&rec);
            let (entry, resume_drain) = match (&rec.phase, alive) {
                (
                    Phase::Running(_) | Phase::Paused(..) | Phase::Draining(_) | Phase::Stopping(_),
                    true,
                ) => {
                    if let Some(att) = &rec.network {
                        if let Err(e) = self.network.resume(att).await {
                            tracing::warn!(sandbox = %name, error = %e, "cannot resume the sandbox's network");
                        }
                    }
                    // A drain (or stop) cut short by the restart is finished below.
                    // A paused one stays frozen (the freezer outlives the agent).
                    let resume_drain = matches!(rec.phase, Phase::Draining(_) | Phase::Stopping(_));
                    let mut rec = rec;
                    if let (true, Some(l)) = (resume_drain, rec.phase.launched().cloned()) {
                        rec.phase = Phase::Running(l);
                    }
                    out.push(Recovered::Adopted(name.clone()));
                    (
                        SandboxEntry::new(key.clone(), dir.clone(), socket_dir, rec),
                        resume_drain,
                    )
                }
                (Phase::Stopped(_) | Phase::Failed(_), _) => {
                    out.push(Recovered::Kept(name.clone()));
                    let entry = SandboxEntry::new(key.clone(), dir.clone(), socket_dir, rec);
                    // A stop cut short by the restart may have left the network behind.
                    self.release_network(&entry).await;
                    (entry, false)
                }
                _ => {
                    let entry = SandboxEntry::new(key.clone(), dir.clone(), socket_dir, rec);
                    cleanup(&name, "tear down", self.teardown(&entry).await);
                    self.remove_files(&entry).await;
                    out.push(Recovered::Reaped(name));
                    continue;
                }
            };
            let (detached, running) = {
                let rec = entry.record.lock().await;
                (rec.request.detached, matches!(rec.phase, Phase::Running(_)))
            };
            if let Err(e) = entry.record.lock().await.save(&dir) {
                tracing::warn!(sandbox = %name, error = %e, "could not rewrite state");
            }
            self.sandboxes
                .lock()
                .await
                .insert(key.clone(), entry.clone());
            if running && resume_drain {
                // The drain was cut short by the restart: finish it (the execs it waited for
                // died with the old agent's connections), so the sandbox does not run on.
                let m = Arc::clone(self);
                let n = key.clone();
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
            if let Some(l) = e.record.lock().await.phase.launched() {
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
        let Some(launched) = rec.phase.launched() else {
            return false;
        };
        let Ok(rt) = self.runtime_for(launched.isolation) else {
            return false;
        };
        // A frozen guest cannot answer a ping: its init being there is what can be known.
        let frozen = matches!(rec.phase, Phase::Paused(..));
        rt.liveness(launched).await == Liveness::Running
            && (frozen
                || GuestClient::new(launched.guest_socket.clone())
                    .ping()
                    .await
                    .is_ok())
    }
}
