//! Attached sandboxes live as long as their creator's lease connection: a lease that closes, or
//! never opens within the grace period, removes the sandbox.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::entry::{LeaseGuard, SandboxEntry};
use super::{cleanup, SandboxManager};
use crate::error::AgentError;

impl SandboxManager {
    /// Remove an attached sandbox whose creator never opened a lease within the grace period.
    pub(super) fn watch_lease(self: &Arc<Self>, entry: Arc<SandboxEntry>) {
        let me = Arc::downgrade(self);
        let grace = self.config.lease_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if entry.leases() == 0 && !entry.lease_seen.load(Ordering::Acquire) {
                if let Some(m) = me.upgrade() {
                    tracing::info!(sandbox = %entry.name, "attached sandbox got no lease in time; removing");
                    cleanup(&entry.name, "remove", m.remove_entry(&entry).await);
                }
            }
        });
    }

    /// Register a lease for an attached sandbox; dropping the guard removes the sandbox.
    pub async fn lease(self: &Arc<Self>, name: &str) -> Result<LeaseGuard, AgentError> {
        let entry = self.entry(name).await?;
        let detached = entry.record.lock().await.request.detached;
        entry.add_lease();
        let me = Arc::downgrade(self);
        Ok(LeaseGuard {
            entry,
            on_release: (!detached).then(|| {
                Box::new(move |entry: Arc<SandboxEntry>| {
                    tokio::spawn(async move {
                        if let Some(m) = me.upgrade() {
                            tracing::info!(sandbox = %entry.name, "lease closed; removing attached sandbox");
                            cleanup(&entry.name, "remove", m.remove_entry(&entry).await);
                        }
                    });
                }) as Box<dyn FnOnce(Arc<SandboxEntry>) + Send>
            }),
        })
    }
}
