//! Checks of a create request that need no I/O: name, labels, sizes, mount paths, network and
//! secrets. The sizes are the limits of the isolation that will run it, so a request a microVM
//! cannot take fails here, as the caller's mistake, before anything is pulled or mounted.

use microsandbox_wire::api::{validate_labels, validate_name, CreateSandbox, Isolation, MountSpec};
use microsandbox_wire::guest::{GUEST_AGENT_PATH, GUEST_SOCKET_DIR};
use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::path::Path;

use crate::error::AgentError;
use crate::network::NetworkManager;
use crate::runtime::microvm::config as vm;

/// `sun_path` is 108 bytes including the terminating NUL.
pub const UNIX_SOCKET_PATH_MAX: usize = vm::UNIX_SOCKET_PATH_MAX;
/// A disk quota (MiB): 16 MiB to 16 TiB.
pub const DISK_MIB: RangeInclusive<u64> = 16..=16 * 1024 * 1024;

/// What one isolation level can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub min_memory_mib: u32,
    pub max_cpus: u32,
}

impl Limits {
    pub fn of(isolation: Isolation) -> Self {
        match isolation {
            // The guest kernel and agent need their RAM; libkrun counts vCPUs in a u8.
            Isolation::Microvm => Limits {
                min_memory_mib: vm::MIN_MEMORY_MIB,
                max_cpus: vm::MAX_VCPUS,
            },
            Isolation::Container => Limits {
                min_memory_mib: 16,
                max_cpus: 256,
            },
        }
    }
}

/// Check `req` for a sandbox of `isolation` whose guest socket will be `socket`.
pub fn create_request(
    req: &CreateSandbox,
    isolation: Isolation,
    socket: &Path,
) -> Result<(), AgentError> {
    let invalid = |m: String| Err(AgentError::InvalidRequest(m));
    validate_name(&req.name).map_err(AgentError::InvalidName)?;
    validate_labels(&req.labels).map_err(AgentError::InvalidRequest)?;
    if let Some(d) = req.disk_mib.filter(|d| !DISK_MIB.contains(d)) {
        return invalid(format!(
            "disk_mib must be {}..={}, got {d}",
            DISK_MIB.start(),
            DISK_MIB.end()
        ));
    }
    NetworkManager::check(&req.network, &req.secrets)?;
    let limits = Limits::of(isolation);
    if req.memory_mib < limits.min_memory_mib {
        return invalid(format!(
            "memory_mib {} is too small (minimum {} for {isolation} isolation)",
            req.memory_mib, limits.min_memory_mib
        ));
    }
    if req.cpus == 0 || req.cpus > limits.max_cpus {
        return invalid(format!(
            "cpus {} must be 1..={} for {isolation} isolation",
            req.cpus, limits.max_cpus
        ));
    }
    if socket.as_os_str().len() > UNIX_SOCKET_PATH_MAX {
        return invalid(format!(
            "guest socket path {} exceeds the {UNIX_SOCKET_PATH_MAX}-byte unix socket limit: use a shorter state directory or name",
            socket.display()
        ));
    }
    mounts(&req.mounts, req.memory_mib)
}

/// Mount destinations: absolute, not `/`, without `..`, not the guest agent's, each once; tmpfs
/// sizes within the sandbox's memory (its pages count against the memory limit anyway).
pub fn mounts(mounts: &[MountSpec], memory_mib: u32) -> Result<(), AgentError> {
    let mut dests = HashSet::new();
    for m in mounts {
        let dest = m.path();
        let bad = |why: &str| {
            Err(AgentError::InvalidRequest(format!(
                "mount at {dest:?}: {why}"
            )))
        };
        if !dest.starts_with('/') || dest == "/" || dest.split('/').any(|c| c == "..") {
            return bad("the path must be absolute, not '/', without '..'");
        }
        if dest.starts_with(GUEST_SOCKET_DIR) || dest == GUEST_AGENT_PATH {
            return bad("the path is reserved for the guest agent");
        }
        if !dests.insert(dest.trim_end_matches('/')) {
            return bad("two mounts at the same path");
        }
        if let MountSpec::Tmpfs { size_mib, .. } = m {
            if *size_mib == 0 || *size_mib > memory_mib {
                return bad(&format!(
                    "tmpfs size_mib must be 1..={memory_mib} (the sandbox's memory)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> CreateSandbox {
        serde_json::from_str(json).unwrap()
    }

    fn check(r: &CreateSandbox, i: Isolation) -> Result<(), String> {
        create_request(r, i, Path::new("/s/run/a/agent.sock")).map_err(|e| e.to_string())
    }

    #[test]
    fn sizes_follow_the_isolation() {
        let small = req(r#"{"name":"a","image":"x","memory_mib":64}"#);
        assert!(check(&small, Isolation::Container).is_ok());
        let err = check(&small, Isolation::Microvm).unwrap_err();
        assert!(err.contains("minimum 128 for microvm"), "{err}");
        let wide = req(r#"{"name":"a","image":"x","cpus":256}"#);
        assert!(check(&wide, Isolation::Container).is_ok());
        assert!(check(&wide, Isolation::Microvm)
            .unwrap_err()
            .contains("1..=255"));
        let none = req(r#"{"name":"a","image":"x","cpus":0}"#);
        assert!(check(&none, Isolation::Container).is_err());
        let disk = req(r#"{"name":"a","image":"x","disk_mib":8}"#);
        assert!(check(&disk, Isolation::Container)
            .unwrap_err()
            .contains("got 8"));
    }

    #[test]
    fn names_and_socket_paths() {
        let r = req(r#"{"name":"Bad_Name","image":"x"}"#);
        assert!(matches!(
            create_request(&r, Isolation::Container, Path::new("/s")),
            Err(AgentError::InvalidName(_))
        ));
        let r = req(r#"{"name":"a","image":"x"}"#);
        let long = format!("/{}/agent.sock", "d".repeat(100));
        let err = create_request(&r, Isolation::Container, Path::new(&long)).unwrap_err();
        assert!(err.to_string().contains("107-byte"), "{err}");
    }

    #[test]
    fn mount_destinations() {
        let m = |json: &str| -> Vec<MountSpec> { serde_json::from_str(json).unwrap() };
        let ok = m(r#"[{"kind":"tmpfs","path":"/tmp","size_mib":64},
                      {"kind":"named","name":"v","path":"/data"}]"#);
        assert!(mounts(&ok, 512).is_ok());
        for (bad, why) in [
            (
                r#"[{"kind":"tmpfs","path":"tmp","size_mib":1}]"#,
                "absolute",
            ),
            (r#"[{"kind":"tmpfs","path":"/","size_mib":1}]"#, "absolute"),
            (
                r#"[{"kind":"tmpfs","path":"/a/../b","size_mib":1}]"#,
                "absolute",
            ),
            (
                r#"[{"kind":"tmpfs","path":"/a","size_mib":1},
                 {"kind":"tmpfs","path":"/a/","size_mib":1}]"#,
                "same path",
            ),
            (
                r#"[{"kind":"tmpfs","path":"/a","size_mib":1024}]"#,
                "1..=512",
            ),
            (r#"[{"kind":"tmpfs","path":"/a","size_mib":0}]"#, "1..=512"),
        ] {
            let err = mounts(&m(bad), 512).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let reserved = format!(r#"[{{"kind":"tmpfs","path":"{GUEST_AGENT_PATH}","size_mib":1}}]"#);
        assert!(mounts(&m(&reserved), 512)
            .unwrap_err()
            .to_string()
            .contains("reserved"));
    }
}
