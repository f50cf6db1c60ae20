//! Runtimes: what turns a prepared root filesystem into a running sandbox whose PID 1 is the guest
//! agent. Two implementations behind one trait:
//!
//! * [`microvm`]: libkrun microVM (hardware isolation; the production path).
//! * [`container`]: crun with namespaces, cgroups, seccomp (weaker: shares the host kernel).
//!
//! Either way the node-agent reaches the guest agent through a unix socket on the host
//! ([`Launched::guest_socket`]); for a microVM libkrun bridges that socket to a vsock port.

pub mod container;
pub mod jail;
pub mod microvm;
pub mod procfs;

use async_trait::async_trait;
use microsandbox_wire::api::Isolation;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Everything a runtime needs to start one sandbox. Built by the sandbox manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// Unique runtime id (`msb-<name>`); container id / VM process name.
    pub id: String,
    /// Hostname inside the sandbox.
    pub hostname: String,
    /// The sandbox's root filesystem, already assembled (overlay merged dir), writable.
    pub rootfs: PathBuf,
    /// Per-sandbox directory the runtime may use for its own files (bundle, logs, pid file).
    pub runtime_dir: PathBuf,
    /// Host path of the static guest-agent binary; exposed read-only at
    /// [`microsandbox_wire::guest::GUEST_AGENT_PATH`] inside the sandbox.
    pub guest_agent: PathBuf,
    /// Host directory where the guest agent's socket must appear (bind-mounted at
    /// [`microsandbox_wire::guest::GUEST_SOCKET_DIR`] for containers).
    pub socket_dir: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    pub pids_limit: Option<u32>,
    /// Environment of the guest agent, inherited by every exec.
    pub env: Vec<(String, String)>,
    /// Default working directory of execs.
    pub workdir: Option<String>,
    /// Extra file systems, resolved and checked by the manager.
    #[serde(default)]
    pub mounts: Vec<LaunchMount>,
    /// Network namespace to join (`/run/netns/...`), wired by the agent; `None`: an empty one.
    #[serde(default)]
    pub netns: Option<PathBuf>,
}

/// A file system mounted into the sandbox at `dest` (absolute, without `..`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LaunchMount {
    /// A host directory or file (a named volume's mounted data, or a confined bind).
    Bind {
        source: PathBuf,
        dest: String,
        readonly: bool,
    },
    /// Memory-backed scratch space.
    Tmpfs { dest: String, size_mib: u32 },
}

/// A running sandbox as the runtime knows it. Persisted in the sandbox's state file so that a
/// restarted agent can re-adopt or reap it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launched {
    pub id: String,
    pub isolation: Isolation,
    /// Host PID of the sandbox's init (container PID 1 / VMM process).
    pub pid: Option<u32>,
    /// Unix socket (on the host) connected to the guest agent.
    pub guest_socket: PathBuf,
    /// cgroup paths (relative to each controller root) holding the sandbox, for metrics and cleanup.
    pub cgroup: Option<String>,
}

/// Errors of a runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// This host cannot provide the isolation: the reason says why (from `doctor`'s probes).
    #[error("{isolation} isolation is not available on this node: {reason}")]
    Unavailable {
        isolation: Isolation,
        reason: String,
    },
    /// A mount the request asked for cannot be made by this runtime (the caller's to fix).
    #[error("mount {dest}: {reason}")]
    InvalidMount { dest: String, reason: String },
    /// A runtime command failed.
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    /// A microVM's VMM exited before its guest agent came up; `log` is the end of its log and
    /// the guest console.
    #[error("microVM did not boot: {failure}\n{log}")]
    BootFailed {
        failure: microvm::BootFailure,
        log: String,
    },
    /// The guest agent did not come up in time.
    #[error("guest agent did not start within {0:?}: {1}")]
    GuestTimeout(std::time::Duration, String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The OCI runtime spec of a container could not be built (a value the spec refuses).
    #[error("container spec: {0}")]
    Spec(String),
}

/// Liveness of a launched sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Running,
    Stopped,
    /// Gone from the runtime entirely.
    Unknown,
}

/// Cgroup-level resource usage (host view), when the runtime has a cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostUsage {
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_usage_us: Option<u64>,
    pub oom_kills: Option<u64>,
    pub pids: Option<u64>,
}

/// A way of running sandboxes.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Isolation level provided.
    fn isolation(&self) -> Isolation;
    /// Start the sandbox and return once its guest agent's socket exists.
    async fn start(&self, spec: &LaunchSpec) -> Result<Launched, RuntimeError>;
    /// Send a signal to the sandbox's init (SIGTERM for graceful stop, SIGKILL to kill).
    async fn signal(&self, launched: &Launched, signal: i32) -> Result<(), RuntimeError>;
    /// Freeze (`true`) or thaw every process of the sandbox: memory stays, CPU use stops.
    async fn freeze(&self, launched: &Launched, frozen: bool) -> Result<(), RuntimeError>;
    /// Is it still running?
    async fn liveness(&self, launched: &Launched) -> Liveness;
    /// Remove every trace of the sandbox from the runtime (processes, cgroups, runtime state).
    /// Must succeed when the sandbox is already partly or wholly gone.
    async fn cleanup(&self, launched: &Launched) -> Result<(), RuntimeError>;
    /// Host-side usage from the sandbox's cgroup, where there is one.
    async fn usage(&self, launched: &Launched) -> HostUsage;
    /// Remove sandboxes this runtime still runs but the agent has no record of (e.g. the agent
    /// died between starting one and persisting it). Returns the ids reaped.
    async fn reap_unknown(&self, _known: &[String]) -> Vec<String> {
        Vec::new()
    }
}
