//! In-memory handle of one sandbox: its record plus the counters that drain and leases need.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{Mutex, Notify};

use super::record::{Phase, SandboxRecord};
use crate::error::AgentError;
use crate::guest::GuestClient;

/// One sandbox known to the agent.
pub struct SandboxEntry {
    pub name: String,
    pub dir: PathBuf,
    pub record: Mutex<SandboxRecord>,
    active_execs: AtomicUsize,
    execs_done: Notify,
    leases: AtomicUsize,
    pub lease_seen: std::sync::atomic::AtomicBool,
    /// Held by a removal: a second one (the creator's lease closing while it also asks for the
    /// removal) waits for the first and then finds nothing left to do.
    pub removal: Mutex<()>,
}

/// Held while an exec (or file transfer) runs; drain waits for all of them.
pub struct ExecGuard(Arc<SandboxEntry>);

impl Drop for ExecGuard {
    fn drop(&mut self) {
        if self.0.active_execs.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.execs_done.notify_waiters();
        }
    }
}

/// Held by an open lease connection of an attached sandbox.
pub struct LeaseGuard {
    pub(super) entry: Arc<SandboxEntry>,
    pub(super) on_release: Option<Box<dyn FnOnce(Arc<SandboxEntry>) + Send>>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if self.entry.leases.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(f) = self.on_release.take() {
                f(self.entry.clone());
            }
        }
    }
}

impl SandboxEntry {
    pub fn new(name: String, dir: PathBuf, record: SandboxRecord) -> Arc<Self> {
        Arc::new(Self {
            name,
            dir,
            record: Mutex::new(record),
            active_execs: AtomicUsize::new(0),
            execs_done: Notify::new(),
            leases: AtomicUsize::new(0),
            lease_seen: Default::default(),
            removal: Mutex::new(()),
        })
    }

    /// Admit a new exec if the sandbox is running and not draining.
    pub async fn begin_exec(self: &Arc<Self>) -> Result<(ExecGuard, GuestClient), AgentError> {
        let rec = self.record.lock().await;
        let socket = match &rec.phase {
            Phase::Running(launched) => launched.guest_socket.clone(),
            Phase::Draining(_) | Phase::Stopping(_) => {
                return Err(AgentError::Draining(self.name.clone()))
            }
            other => return Err(AgentError::not_running(&self.name, other.state())),
        };
        self.active_execs.fetch_add(1, Ordering::AcqRel);
        Ok((ExecGuard(self.clone()), GuestClient::new(socket)))
    }

    pub fn active_execs(&self) -> usize {
        self.active_execs.load(Ordering::Acquire)
    }

    /// Wait until no exec runs.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.execs_done.notified();
            if self.active_execs() == 0 {
                return;
            }
            notified.await;
        }
    }

    pub(super) fn add_lease(&self) {
        self.leases.fetch_add(1, Ordering::AcqRel);
        self.lease_seen.store(true, Ordering::Release);
    }

    pub fn leases(&self) -> usize {
        self.leases.load(Ordering::Acquire)
    }
}
