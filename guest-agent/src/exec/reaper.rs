//! The one place that waits for child processes.
//!
//! As PID 1 (or a child subreaper) the agent inherits every orphan of the sandbox and must reap them,
//! which means calling `waitpid(-1)`. Any other waiting (tokio::process, `Child::wait`) would race
//! with it for exit statuses, so no other code ever waits: processes are spawned through
//! [`Reaper::spawn`], which registers the pid and hands back a receiver for its status.
//!
//! Spawning and registering happen while holding the same lock the reaper holds around
//! `waitpid(-1)`, so a child can never be reaped before its waiter is registered; statuses of pids
//! nobody registered belong to orphans and are dropped.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// Central child reaper. Cheap to share via `Arc`.
#[derive(Default)]
pub struct Reaper {
    waiters: Mutex<HashMap<Pid, oneshot::Sender<WaitStatus>>>,
}

impl Reaper {
    /// Create the reaper and start its task. Must be called inside the runtime, before any spawn.
    pub fn start() -> io::Result<Arc<Self>> {
        let reaper = Arc::new(Self::default());
        let mut sigchld = signal(SignalKind::child())?;
        let task = reaper.clone();
        tokio::spawn(async move {
            loop {
                task.reap_all();
                // SIGCHLD is the trigger; the periodic tick is only a safety net.
                tokio::select! {
                    _ = sigchld.recv() => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        });
        Ok(reaper)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Pid, oneshot::Sender<WaitStatus>>> {
        // A poisoned lock only means a panic elsewhere; the map itself is always consistent.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `spawn` (which must start exactly one child and return its pid) with the reaper locked,
    /// and register that pid. Returns `spawn`'s value and a receiver for the child's exit status.
    pub fn spawn<T>(
        &self,
        spawn: impl FnOnce() -> io::Result<(Pid, T)>,
    ) -> io::Result<(T, oneshot::Receiver<WaitStatus>)> {
        let mut waiters = self.lock();
        let (pid, value) = spawn()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid, tx);
        Ok((value, rx))
    }

    /// Reap every child that has exited, dispatching statuses to registered waiters.
    pub fn reap_all(&self) {
        let mut waiters = self.lock();
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    if !matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                        continue;
                    }
                    if let Some(tx) = waiters.remove(&pid) {
                        // The session may have gone away already; nothing to do then.
                        let _ = tx.send(status);
                    }
                }
                Err(Errno::EINTR) => continue,
                // ECHILD: no children at all.
                Err(_) => break,
            }
        }
    }
}

/// Become a child subreaper when not PID 1, so orphaned grandchildren are reparented to (and reaped
/// by) the agent instead of the real init.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integer arguments and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Map a wait status to the wire's exit code convention: the exit code, or `128 + signal`.
pub fn exit_code(status: &WaitStatus) -> (i32, Option<i32>) {
    match *status {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
        _ => (-1, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn maps_exit_codes() {
        let pid = Pid::from_raw(42);
        assert_eq!(exit_code(&WaitStatus::Exited(pid, 0)), (0, None));
        assert_eq!(exit_code(&WaitStatus::Exited(pid, 3)), (3, None));
        assert_eq!(
            exit_code(&WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            (137, Some(9))
        );
        assert_eq!(
            exit_code(&WaitStatus::Signaled(pid, Signal::SIGTERM, true)),
            (143, Some(15))
        );
    }
}
