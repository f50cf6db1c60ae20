//! In-memory handle of one sandbox: its record plus the counters that drain and leases need.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{Mutex, Notify};

use super::record::{Phase, SandboxRecord};
use crate::error::AgentError;
use crate::guest::GuestClient;

/// One sandbox known to the agent.
pub struct SandboxEntry {
    /// The name clients use (a claimed pool sandbox's differs from its directories' names).
    pub name: String,
    pub dir: PathBuf,
    /// Where its guest agent's socket lives (named at creation, like `dir`).
    pub socket_dir: PathBuf,
    pub record: Mutex<SandboxRecord>,
    active_execs: AtomicUsize,
    execs_done: Notify,
    /// When an exec or file operation last began or ended (the idle suspender's clock).
    last_active: std::sync::Mutex<Instant>,
    leases: AtomicUsize,
    pub lease_seen: std::sync::atomic::AtomicBool,
    /// Held by a removal: a second one (the creator's lease closing while it also asks for the
    /// removal) waits for the first and then finds nothing left to do.
    pub removal: Mutex<()>,
}

/// Held while an exec (or file transfer) runs; drain waits for all of them.
pub struct ExecGuard {
    entry: Arc<SandboxEntry>,
    /// Its end counts as activity (the idle clock starts again); a metrics call's does not.
    activity: bool,
}

impl Drop for ExecGuard {
    fn drop(&mut self) {
        if self.activity {
            self.entry.touch();
        }
        if self.entry.active_execs.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.entry.execs_done.notify_waiters();
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
    pub fn new(
        name: String,
        dir: PathBuf,
        socket_dir: PathBuf,
        record: SandboxRecord,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            dir,
            socket_dir,
            record: Mutex::new(record),
            active_execs: AtomicUsize::new(0),
            execs_done: Notify::new(),
            last_active: std::sync::Mutex::new(Instant::now()),
            leases: AtomicUsize::new(0),
            lease_seen: Default::default(),
            removal: Mutex::new(()),
        })
    }

    /// Note activity now.
    pub fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// No exec runs and none began or ended for `timeout`.
    pub fn idle_for(&self, timeout: std::time::Duration) -> bool {
        self.active_execs() == 0
            && self
                .last_active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed()
                >= timeout
    }

    /// Admit a new exec if the sandbox is running and not draining (callers go through
    /// `SandboxManager::begin_exec`, which thaws an idle-suspended sandbox first).
    pub(super) async fn begin_exec(
        self: &Arc<Self>,
        activity: bool,
    ) -> Result<(ExecGuard, GuestClient), AgentError> {
        let rec = self.record.lock().await;
        let socket = match &rec.phase {
            Phase::Running(launched) => launched.guest_socket.clone(),
            Phase::Draining(_) | Phase::Stopping(_) => {
                return Err(AgentError::Draining(self.name.clone()))
            }
            other => return Err(AgentError::not_running(&self.name, other.state())),
        };
        self.active_execs.fetch_add(1, Ordering::AcqRel);
        let guard = ExecGuard {
            entry: self.clone(),
            activity,
        };
        Ok((guard, GuestClient::new(socket)))
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
