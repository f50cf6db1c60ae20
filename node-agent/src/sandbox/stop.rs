//! Ending sandboxes: graceful stop, kill, drain; noticing one that ended on its own; tearing
//! down and removing.

use microsandbox_wire::api::{SandboxInfo, StopReason};
use std::sync::Arc;
use std::time::Duration;

use super::create::{blocking, root_of};
use super::entry::SandboxEntry;
use super::record::Phase;
use super::{cleanup, SandboxManager};
use crate::error::{AgentError, IoContext};
use crate::rootfs;
use crate::runtime::{Launched, Liveness};

/// Default grace period of a graceful stop.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a drain waits for running execs by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

impl SandboxManager {
    /// Graceful stop: SIGTERM, SIGKILL after `timeout`, then release runtime resources.
    pub async fn stop(
        &self,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<SandboxInfo, AgentError> {
        self.stop_because(name, timeout, StopReason::Stopped).await
    }

    /// Graceful stop recording `why` as the sandbox's reason (e.g. `LifetimeExpired`).
    pub async fn stop_because(
        &self,
        name: &str,
        timeout: Option<Duration>,
        why: StopReason,
    ) -> Result<SandboxInfo, AgentError> {
        let entry = self.entry(name).await?;
        self.stop_entry(&entry, timeout.unwrap_or(DEFAULT_STOP_TIMEOUT), why)
            .await
    }

    /// Immediate stop.
    pub async fn kill(&self, name: &str) -> Result<SandboxInfo, AgentError> {
        let entry = self.entry(name).await?;
        self.stop_entry(&entry, Duration::ZERO, StopReason::Killed)
            .await
    }

    /// Refuse new execs, wait for running ones (up to `timeout`), then stop gracefully.
    pub async fn drain(
        &self,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<SandboxInfo, AgentError> {
        let entry = self.entry(name).await?;
        {
            let mut rec = entry.record.lock().await;
            let launched = match &rec.phase {
                Phase::Running(l) => l.clone(),
                // Nothing of a frozen sandbox can be running a command to wait for.
                Phase::Paused(..) => {
                    drop(rec);
                    return self
                        .stop_entry(&entry, DEFAULT_STOP_TIMEOUT, StopReason::Drained)
                        .await;
                }
                other => return Err(AgentError::not_running(name, other.state())),
            };
            rec.phase = Phase::Draining(launched);
            rec.save(&entry.dir).at("save the state of", &entry.dir)?;
        }
        let limit = timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT);
        if tokio::time::timeout(limit, entry.wait_idle())
            .await
            .is_err()
        {
            tracing::info!(sandbox = %name, active = entry.active_execs(), "drain timed out; stopping");
        }
        self.stop_entry(&entry, DEFAULT_STOP_TIMEOUT, StopReason::Drained)
            .await
    }

    async fn stop_entry(
        &self,
        entry: &Arc<SandboxEntry>,
        grace: Duration,
        why: StopReason,
    ) -> Result<SandboxInfo, AgentError> {
        let (before, launched) = {
            let mut rec = entry.record.lock().await;
            let launched = match &rec.phase {
                Phase::Stopped(_) | Phase::Failed(_) => return Ok(rec.info()),
                Phase::Creating => return Err(AgentError::StillCreating(entry.name.clone())),
                Phase::Running(l) | Phase::Draining(l) | Phase::Stopping(l) => l.clone(),
                Phase::Paused(l, _) => l.clone(),
            };
            let before = std::mem::replace(&mut rec.phase, Phase::Stopping(launched.clone()));
            (before, launched)
        };
        if matches!(before, Phase::Paused(..)) {
            // Frozen processes handle no SIGTERM (and under cgroup v1 not even SIGKILL).
            let thawed = match self.runtime_for(launched.isolation) {
                Ok(rt) => rt.freeze(&launched, false).await,
                Err(e) => Err(crate::runtime::RuntimeError::Command {
                    what: "thaw".into(),
                    detail: e.to_string(),
                }),
            };
            cleanup(&entry.name, "thaw before stopping", thawed);
        }
        let stopped = self.stop_launched(entry, &launched, grace, why).await;
        if stopped.is_err() {
            // The stop did not finish: the sandbox is still what it was.
            let mut rec = entry.record.lock().await;
            if matches!(rec.phase, Phase::Stopping(_)) {
                // A paused one was thawed above.
                rec.phase = match before {
                    Phase::Paused(l, _) => Phase::Running(l),
                    other => other,
                };
            }
        }
        stopped
    }

    async fn stop_launched(
        &self,
        entry: &Arc<SandboxEntry>,
        launched: &Launched,
        grace: Duration,
        why: StopReason,
    ) -> Result<SandboxInfo, AgentError> {
        let rt = self.runtime_for(launched.isolation)?;
        if !grace.is_zero() && rt.signal(launched, libc::SIGTERM).await.is_ok() {
            let deadline = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < deadline
                && rt.liveness(launched).await == Liveness::Running
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        rt.cleanup(launched).await?;
        self.release_network(entry).await;
        unmount_root(entry).await?;
        let mut rec = entry.record.lock().await;
        rec.phase = Phase::Stopped(why);
        rec.save(&entry.dir).at("save the state of", &entry.dir)?;
        Ok(rec.info())
    }

    /// Notice a sandbox whose init died (e.g. killed from outside) and record why.
    pub(super) async fn refresh(&self, entry: &Arc<SandboxEntry>) {
        let launched = match &entry.record.lock().await.phase {
            Phase::Running(l) | Phase::Paused(l, _) | Phase::Draining(l) => l.clone(),
            // Creating: not launched yet; Stopping: the stop owns the outcome; ended: nothing runs.
            _ => return,
        };
        let Ok(rt) = self.runtime_for(launched.isolation) else {
            return;
        };
        // Only a definite answer kills: a crun call that failed (fd or pid pressure) says nothing
        // about the sandbox, so `Unknown` counts as dead only if its init is gone too.
        let dead = match rt.liveness(&launched).await {
            Liveness::Running => false,
            Liveness::Stopped => true,
            Liveness::Unknown => launched
                .pid
                .is_none_or(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()),
        };
        if !dead {
            return;
        }
        let usage = rt.usage(&launched).await;
        {
            // A stop that began meanwhile owns the outcome.
            let rec = entry.record.lock().await;
            if !matches!(
                rec.phase,
                Phase::Running(_) | Phase::Paused(..) | Phase::Draining(_)
            ) {
                return;
            }
        }
        cleanup(
            &entry.name,
            "clean up the runtime",
            rt.cleanup(&launched).await,
        );
        cleanup(&entry.name, "unmount the root", unmount_root(entry).await);
        let mut rec = entry.record.lock().await;
        if !matches!(
            rec.phase,
            Phase::Running(_) | Phase::Paused(..) | Phase::Draining(_)
        ) {
            return; // stopped by the agent in the meantime
        }
        rec.phase = Phase::Failed(if usage.oom_kills.unwrap_or(0) > 0 {
            StopReason::OomKilled
        } else {
            StopReason::InitExited
        });
        cleanup(&entry.name, "save the state", rec.save(&entry.dir));
    }

    /// Release runtime resources and the root mount (used by remove and failed creates).
    pub(super) async fn teardown(&self, entry: &Arc<SandboxEntry>) -> Result<(), AgentError> {
        let started = std::time::Instant::now();
        let launched = entry.record.lock().await.phase.launched().cloned();
        if let Some(l) = launched {
            self.runtime_for(l.isolation)?.cleanup(&l).await?;
        }
        let runtime = started.elapsed();
        self.release_network(entry).await;
        let network = started.elapsed() - runtime;
        let unmounted = unmount_root(entry).await;
        tracing::debug!(
            sandbox = %entry.name,
            runtime_ms = runtime.as_millis(),
            network_ms = network.as_millis(),
            unmount_ms = (started.elapsed() - runtime - network).as_millis(),
            "torn down"
        );
        unmounted
    }

    /// Removes the sandbox's network (after its processes are gone) and forgets it.
    pub(super) async fn release_network(&self, entry: &Arc<SandboxEntry>) {
        let att = entry.record.lock().await.network.take();
        if let Some(att) = att {
            self.network.detach(&att).await;
            let rec = entry.record.lock().await;
            if entry.dir.exists() {
                cleanup(&entry.name, "save the state", rec.save(&entry.dir));
            }
        }
    }

    /// Kill if running, release everything, forget it.
    pub async fn remove(&self, name: &str) -> Result<(), AgentError> {
        let entry = self.entry(name).await?;
        self.remove_entry(&entry).await
    }

    pub(super) async fn remove_entry(&self, entry: &Arc<SandboxEntry>) -> Result<(), AgentError> {
        let _one_at_a_time = entry.removal.lock().await;
        // A deferred removal (lease closed, grace expired) must not touch a newer sandbox that
        // reuses the name: only the current entry of that name is removed.
        let current = self
            .sandboxes
            .lock()
            .await
            .get(&entry.name)
            .is_some_and(|e| Arc::ptr_eq(e, entry));
        if !current {
            return Ok(());
        }
        if entry.record.lock().await.phase == Phase::Creating {
            return Err(AgentError::StillCreating(entry.name.clone()));
        }
        self.teardown(entry).await?;
        let socket_dir = entry.socket_dir.clone();
        let dir = entry.dir.clone();
        let removed = blocking(move || {
            crate::cleanup::remove_dir_all(&socket_dir);
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at("remove", &dir),
                _ => Ok(()),
            }
        })
        .await;
        // Only now is the name free: a new sandbox of the same name must not find the old
        // directory half removed.
        self.forget(entry).await;
        removed
    }

    /// Drop `entry` from the map if it is still the sandbox of its name.
    pub(super) async fn forget(&self, entry: &Arc<SandboxEntry>) {
        let mut map = self.sandboxes.lock().await;
        if map.get(&entry.name).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            map.remove(&entry.name);
        }
    }

    /// Remove a sandbox's directories (its state and its socket directory), logging failures.
    pub(super) async fn remove_files(&self, entry: &SandboxEntry) {
        let dirs = [entry.dir.clone(), entry.socket_dir.clone()];
        let done = blocking(move || {
            dirs.iter().for_each(|d| crate::cleanup::remove_dir_all(d));
            Ok(())
        })
        .await;
        cleanup(&entry.name, "remove its files", done);
    }
}

/// Unmount the sandbox's root (overlay and disk quota) on the blocking pool.
pub(super) async fn unmount_root(entry: &SandboxEntry) -> Result<(), AgentError> {
    let dir = entry.dir.clone();
    blocking(move || rootfs::unmount_root(&root_of(&dir)).at("unmount the root of", &dir)).await
}
