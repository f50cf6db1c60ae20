//! Zombies crun leaves with this agent. `crun run --detach` starts the container's init from an
//! intermediate process that exits once the init runs; the crun this agent started has exited
//! by then, so the intermediate is reparented to the agent (the child subreaper, or PID 1 of a
//! pod) and stays a zombie until the agent reaps it: one per sandbox created (1,700 after 1,700
//! creates, found while measuring removal at scale).
//!
//! The agent's own crun commands are its children too, and tokio waits for each of them by PID:
//! reaping one of those first would fail that command. So every crun process the agent runs is
//! registered ([`run`]) from before it can exit until tokio has collected it, and only zombies
//! outside the register are reaped.

use std::collections::BTreeSet;
use std::process::Output;
use std::sync::Mutex;
use std::time::Duration;
use tokio::process::Command;

/// PIDs of the crun processes this agent started and waits for itself.
static OURS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Run `cmd` to completion (as `Command::output`), its PID registered while it may be a zombie.
pub async fn run(cmd: &mut Command) -> std::io::Result<Output> {
    let child = {
        // Held across spawn: a sweep never sees the child before it is registered.
        let mut ours = OURS.lock().unwrap_or_else(|e| e.into_inner());
        let child = cmd.spawn()?;
        if let Some(pid) = child.id() {
            ours.insert(pid);
        }
        child
    };
    let pid = child.id();
    let out = child.wait_with_output().await;
    if let Some(pid) = pid {
        OURS.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
    }
    out
}

/// What a sweep needs to know of one child of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub pid: u32,
    pub state: char,
    pub comm: String,
}

/// The children that are crun processes this agent does not wait for itself.
pub fn strays<'a>(children: &'a [Child], ours: &BTreeSet<u32>) -> Vec<&'a Child> {
    children
        .iter()
        .filter(|c| c.comm == "crun" && !ours.contains(&c.pid))
        .collect()
}

/// The stray crun processes among `candidates` (PIDs): children of this agent it does not wait
/// for itself.
fn strays_among(candidates: impl IntoIterator<Item = u32>) -> Vec<Child> {
    let me = std::process::id() as i32;
    // Registration and this check under one lock: no crun of ours exits unregistered meanwhile.
    let ours = OURS.lock().unwrap_or_else(|e| e.into_inner());
    let children: Vec<Child> = candidates
        .into_iter()
        .filter_map(|pid| {
            let stat: procfs_core::process::Stat =
                procfs_core::FromRead::from_file(format!("/proc/{pid}/stat")).ok()?;
            (stat.ppid == me).then_some(Child {
                pid,
                state: stat.state,
                comm: stat.comm,
            })
        })
        .collect();
    strays(&children, &ours).into_iter().cloned().collect()
}

/// Reap the stray zombies among this agent's children; returns how many.
pub fn reap_zombie_strays() -> usize {
    strays_among(children())
        .into_iter()
        .filter(|c| c.state == 'Z' && reap_now(c.pid))
        .count()
}

/// Reap the strays among `candidates`, waiting up to `within` for those still exiting (crun's
/// intermediate exits just after the init it started runs).
pub async fn reap_strays_soon(candidates: impl IntoIterator<Item = u32>, within: Duration) {
    let mut left: Vec<u32> = strays_among(candidates).iter().map(|c| c.pid).collect();
    let deadline = tokio::time::Instant::now() + within;
    while !left.is_empty() && tokio::time::Instant::now() < deadline {
        left.retain(|&pid| !reap_now(pid));
        if !left.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// `waitpid(pid, WNOHANG)`: whether it was collected (or is no child of ours any more).
fn reap_now(pid: u32) -> bool {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let Ok(raw) = i32::try_from(pid) else {
        return true;
    };
    !matches!(
        waitpid(nix::unistd::Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)),
        Ok(WaitStatus::StillAlive)
    )
}

/// How often every child of the agent is checked for strays the reap at create missed.
const SWEEP: Duration = Duration::from_secs(30);

/// Reap strays every [`SWEEP`], for the life of the process.
pub fn spawn_sweep() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        loop {
            tokio::time::sleep(SWEEP).await;
            match tokio::task::spawn_blocking(reap_zombie_strays).await {
                Ok(0) | Err(_) => {}
                Ok(n) => tracing::debug!(reaped = n, "stray crun zombies"),
            }
        }
    })
}

/// Every child of this agent, from `/proc/self/task/*/children`.
pub fn children() -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cruns_the_agent_does_not_wait_for_are_strays() {
        let child = |pid, state, comm: &str| Child {
            pid,
            state,
            comm: comm.into(),
        };
        let children = [
            child(10, 'Z', "crun"),  // the intermediate of a `crun run --detach`
            child(11, 'Z', "crun"),  // a crun command of ours, exited, not yet collected
            child(12, 'S', "crun"),  // a crun command of ours, running
            child(13, 'S', "crun"),  // an intermediate still exiting
            child(14, 'Z', "agent"), // a sandbox's init: reaped with its sandbox
            child(15, 'S', "agent"),
        ];
        let ours = BTreeSet::from([11, 12]);
        let pids: Vec<u32> = strays(&children, &ours).iter().map(|c| c.pid).collect();
        assert_eq!(pids, [10, 13]);
    }
}
