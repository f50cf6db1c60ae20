//! Which host paths a sandbox may be given: bind mounts and copy patches read the host.
//!
//! * [`HostAccess::Roots`]: only under the configured `--host-root`s (cluster nodes and shared
//!   agents: the caller is not the machine's owner).
//! * [`HostAccess::Owner`]: `--local`, an agent that serves the one user who started it on their
//!   own machine (the SDKs start it so; its socket is that user's alone). Any path that user can
//!   read, except the kernel's pseudo file systems and the agent's own state (its token and keys
//!   must never reach a sandbox).

use std::path::{Path, PathBuf};

/// Host paths never given to a sandbox in [`HostAccess::Owner`] mode, besides the agent's state.
const KERNEL_PATHS: [&str; 3] = ["/proc", "/sys", "/dev"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAccess {
    Roots(Vec<PathBuf>),
    Owner {
        /// The agent's state directory (and anything else private to it).
        private: Vec<PathBuf>,
    },
}

impl Default for HostAccess {
    fn default() -> Self {
        HostAccess::Roots(Vec::new())
    }
}

impl HostAccess {
    /// `src` with symlinks resolved, if a sandbox may be given it.
    pub fn resolve(&self, src: &Path) -> Result<PathBuf, String> {
        if !src.is_absolute() {
            return Err(format!("host path {} must be absolute", src.display()));
        }
        let real = src
            .canonicalize()
            .map_err(|e| format!("host path {}: {e}", src.display()))?;
        match self {
            HostAccess::Roots(roots) => {
                let allowed = roots
                    .iter()
                    .filter_map(|r| r.canonicalize().ok())
                    .any(|r| real.starts_with(&r));
                if allowed {
                    Ok(real)
                } else if roots.is_empty() {
                    Err(format!(
                        "host path {} is not allowed: this agent has no --host-root",
                        src.display()
                    ))
                } else {
                    Err(format!(
                        "host path {} (resolved: {}) is outside the agent's --host-root list",
                        src.display(),
                        real.display()
                    ))
                }
            }
            HostAccess::Owner { private } => {
                let forbidden = KERNEL_PATHS
                    .iter()
                    .map(PathBuf::from)
                    .chain(private.iter().filter_map(|p| p.canonicalize().ok()))
                    .find(|p| real.starts_with(p) || p.starts_with(&real));
                if let Some(p) = forbidden {
                    return Err(format!(
                        "host path {} (resolved: {}) is not allowed: it is or holds {}, which is \
                         never given to a sandbox",
                        src.display(),
                        real.display(),
                        p.display()
                    ));
                }
                nix::unistd::access(&real, nix::unistd::AccessFlags::R_OK).map_err(|e| {
                    format!(
                        "host path {} is not readable by this user: {e}",
                        src.display()
                    )
                })?;
                Ok(real)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_confine_and_owner_reads_anything_but_private_and_kernel_paths() {
        let home = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join("src")).unwrap();
        let roots = HostAccess::Roots(vec![home.path().to_path_buf()]);
        assert!(roots.resolve(&home.path().join("src")).is_ok());
        let outside = roots.resolve(other.path()).unwrap_err();
        assert!(
            outside.contains("outside the agent's --host-root"),
            "{outside}"
        );
        assert!(HostAccess::default()
            .resolve(home.path())
            .unwrap_err()
            .contains("no --host-root"));

        let owner = HostAccess::Owner {
            private: vec![state.path().to_path_buf()],
        };
        assert!(owner.resolve(other.path()).is_ok());
        assert!(owner.resolve(&home.path().join("src")).is_ok());
        for bad in [
            state.path().to_path_buf(),
            state.path().join("."),
            "/proc/self".into(),
            "/".into(),
        ] {
            let err = owner.resolve(&bad).unwrap_err();
            assert!(err.contains("never given to a sandbox"), "{bad:?}: {err}");
        }
        // A symlink into the state directory resolves to it.
        std::os::unix::fs::symlink(state.path(), other.path().join("sneaky")).unwrap();
        assert!(owner.resolve(&other.path().join("sneaky")).is_err());
        assert!(owner
            .resolve(Path::new("relative"))
            .unwrap_err()
            .contains("absolute"));
    }
}
