//! Pause and resume (the runtime freezes every process of a sandbox: memory kept, no CPU), and
//! the idle suspender: a sandbox with an idle timeout is frozen once no exec or file operation
//! has run for that long, and the next one thaws it before it reaches the guest.

use microsandbox_wire::api::SandboxInfo;
use std::sync::Arc;
use std::time::Duration;

use super::entry::SandboxEntry;
use super::record::{PauseCause, Phase};
use super::SandboxManager;
use crate::error::{AgentError, IoContext};
use crate::guest::GuestClient;
use crate::sandbox::ExecGuard;

/// How often the idle suspender looks at the sandboxes that have an idle timeout.
const IDLE_TICK: Duration = Duration::from_millis(250);

impl SandboxManager {
    /// Freeze a running sandbox until [`Self::resume`]. One suspended for being idle becomes
    /// paused by request (an exec no longer thaws it); a paused one is returned as it is.
    pub async fn pause(&self, name: &str) -> Result<SandboxInfo, AgentError> {
        let entry = self.entry(name).await?;
        self.freeze_entry(&entry, PauseCause::Requested).await
    }

    /// Thaw a paused or suspended sandbox; a running one is returned as it is.
    pub async fn resume(&self, name: &str) -> Result<SandboxInfo, AgentError> {
        let entry = self.entry(name).await?;
        let mut rec = entry.record.lock().await;
        match &rec.phase {
            Phase::Running(_) => return Ok(rec.info()),
            Phase::Paused(..) => {}
            other => return Err(AgentError::not_running(name, other.state())),
        }
        self.thaw(&entry, &mut rec.phase).await?;
        rec.save(&entry.dir).at("save the state of", &entry.dir)?;
        Ok(rec.info())
    }

    /// Change the idle timeout of sandbox `name` (a Sandbox's `lifetime.idleTimeout` may change
    /// at any time); saved only when it differs.
    pub async fn set_idle_timeout(&self, name: &str, secs: Option<u64>) -> Result<(), AgentError> {
        let entry = self.entry(name).await?;
        let mut rec = entry.record.lock().await;
        if rec.request.idle_timeout_secs != secs {
            rec.request.idle_timeout_secs = secs;
            rec.save(&entry.dir).at("save the state of", &entry.dir)?;
        }
        Ok(())
    }

    /// Admit an exec (or file operation): a sandbox suspended for being idle is thawed first;
    /// one paused by request refuses (state `paused`).
    pub async fn begin_exec(
        &self,
        entry: &Arc<SandboxEntry>,
    ) -> Result<(ExecGuard, GuestClient), AgentError> {
        {
            let mut rec = entry.record.lock().await;
            if matches!(rec.phase, Phase::Paused(_, PauseCause::Idle)) {
                self.thaw(entry, &mut rec.phase).await?;
                rec.save(&entry.dir).at("save the state of", &entry.dir)?;
                tracing::debug!(sandbox = %entry.name, "resumed from idle suspension");
            }
            // Under the record's lock: the suspender cannot freeze it again before the exec
            // counts as active.
            entry.touch();
        }
        entry.begin_exec(true).await
    }

    async fn freeze_entry(
        &self,
        entry: &Arc<SandboxEntry>,
        cause: PauseCause,
    ) -> Result<SandboxInfo, AgentError> {
        // The record stays locked across the freeze: no exec is admitted half-way.
        let mut rec = entry.record.lock().await;
        let launched = match &rec.phase {
            Phase::Running(l) => l.clone(),
            Phase::Paused(l, was) => {
                if *was != cause && cause == PauseCause::Requested {
                    rec.phase = Phase::Paused(l.clone(), cause);
                    rec.save(&entry.dir).at("save the state of", &entry.dir)?;
                }
                return Ok(rec.info());
            }
            other => return Err(AgentError::not_running(&entry.name, other.state())),
        };
        if cause == PauseCause::Idle && !entry.idle_for(idle_timeout(&rec.request)) {
            return Ok(rec.info());
        }
        let rt = self.runtime_for(launched.isolation)?;
        rt.freeze(&launched, true).await?;
        rec.phase = Phase::Paused(launched, cause);
        rec.save(&entry.dir).at("save the state of", &entry.dir)?;
        tracing::info!(sandbox = %entry.name, ?cause, "frozen");
        Ok(rec.info())
    }

    /// Thaw what `phase` (paused) holds and make it running.
    async fn thaw(&self, entry: &SandboxEntry, phase: &mut Phase) -> Result<(), AgentError> {
        let Phase::Paused(launched, _) = phase else {
            return Ok(());
        };
        let launched = launched.clone();
        self.runtime_for(launched.isolation)?
            .freeze(&launched, false)
            .await?;
        entry.touch();
        *phase = Phase::Running(launched);
        Ok(())
    }

    /// Suspend, until the task is dropped, every running sandbox idle for longer than its
    /// `idle_timeout_secs`.
    pub fn spawn_idle_suspender(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let manager = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE_TICK).await;
                let Some(m) = manager.upgrade() else { return };
                let entries: Vec<_> = m.sandboxes.lock().await.values().cloned().collect();
                for e in entries {
                    let due = {
                        let rec = e.record.lock().await;
                        matches!(rec.phase, Phase::Running(_))
                            && rec.request.idle_timeout_secs.is_some()
                            && e.idle_for(idle_timeout(&rec.request))
                    };
                    if due {
                        if let Err(err) = m.freeze_entry(&e, PauseCause::Idle).await {
                            tracing::warn!(sandbox = %e.name, error = %err, "cannot suspend idle sandbox");
                        }
                    }
                }
            }
        })
    }
}

fn idle_timeout(req: &microsandbox_wire::api::CreateSandbox) -> Duration {
    Duration::from_secs(req.idle_timeout_secs.unwrap_or(u64::MAX / 4))
}
