//! What confines a sandbox's host-side process, shared by both runtimes.
//!
//! * [`cgroup`]: cgroup v1/v2 detection, accounting, and the cgroups the agent makes itself.
//! * [`seccomp`]: the one deny list, as an OCI profile (crun) and as a BPF program (the VMM).
//!
//! A container gets all of it from crun (the OCI spec), plus its namespaces and a reduced
//! capability set. A microVM's VMM process gets the cgroup limits, `no_new_privs` and the same
//! seccomp deny list from [`VmmJail::enter`], which the VMM runs on itself before it loads
//! libkrun; it keeps the agent's capabilities and mount namespace (its boundary is the VM; what
//! confines the VMM itself once compromised is this, not yet a capability drop or a namespace).

pub mod cgroup;
pub mod seccomp;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The jail a VMM enters before it loads libkrun, carried in its plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmJail {
    /// `cgroup.procs` files of the sandbox's cgroup (made by the agent with the limits).
    #[serde(default)]
    pub cgroup_procs: Vec<PathBuf>,
    /// `PR_SET_NO_NEW_PRIVS` and the [`seccomp::vmm_filter`].
    #[serde(default)]
    pub seccomp: bool,
}

/// Why a VMM could not enter its jail.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("cgroup: {0}")]
    Cgroup(std::io::Error),
    #[error("no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
    #[error("seccomp filter: {0}")]
    Seccomp(String),
}

impl VmmJail {
    /// True when nothing would be done (plans written before jails existed).
    pub fn is_open(&self) -> bool {
        self.cgroup_procs.is_empty() && !self.seccomp
    }

    /// Join the cgroup, then set no_new_privs and install the seccomp filter on the calling
    /// process. Call it while the process has a single thread: threads started later inherit
    /// all three.
    pub fn enter(&self) -> Result<(), JailError> {
        cgroup::join(&self.cgroup_procs).map_err(JailError::Cgroup)?;
        if self.seccomp {
            let program = seccomp::vmm_filter().map_err(|e| JailError::Seccomp(e.to_string()))?;
            // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) only sets a flag on this process.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(JailError::NoNewPrivs(std::io::Error::last_os_error()));
            }
            seccompiler::apply_filter(&program).map_err(|e| JailError::Seccomp(e.to_string()))?;
        }
        Ok(())
    }
}
