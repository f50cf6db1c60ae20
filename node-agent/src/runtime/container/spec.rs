//! The OCI runtime spec (`config.json`) of a container sandbox. Pure: unit-tested without crun.

use serde_json::{json, Value};

use crate::runtime::{LaunchMount, LaunchSpec};
use microsandbox_wire::guest::GUEST_AGENT_PATH;

/// The guest agent's listen address in a container: the host-bound socket, inherited as fd 3.
pub const GUEST_LISTEN_FD: &str = "fd:3";

/// Host-dependent knobs.
#[derive(Debug, Clone)]
pub struct SpecOptions {
    pub cgroups_path: String,
    pub cgroup_v2: bool,
    /// RLIMIT_NOFILE for the sandbox: 65536 capped by the agent's own hard limit.
    pub nofile: u64,
    /// oom_score_adj of the guest agent, when the host lets us lower it (see `oci_spec`).
    pub agent_oom_score_adj: Option<i32>,
}

/// Default process limit when the sandbox does not set one (contains fork bombs).
pub const DEFAULT_PIDS_LIMIT: u32 = 1024;

/// Capabilities kept by the guest agent (Docker's default set minus NET_RAW and MKNOD): enough to
/// switch users and manage its own processes, nothing that reaches the host.
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
    "CAP_SETFCAP",
];

/// Build the spec.
/// The OCI mounts of a sandbox's extra file systems.
fn extra_mounts(spec: &LaunchSpec) -> Vec<Value> {
    spec.mounts
        .iter()
        .map(|m| match m {
            LaunchMount::Bind {
                source,
                dest,
                readonly,
            } => json!({
                "destination": dest, "type": "bind", "source": source,
                "options": ["rbind", if *readonly { "ro" } else { "rw" }, "nosuid", "nodev"]
            }),
            LaunchMount::Tmpfs { dest, size_mib } => json!({
                "destination": dest, "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", format!("size={size_mib}m")]
            }),
        })
        .collect()
}

pub fn oci_spec(spec: &LaunchSpec, opts: &SpecOptions) -> Value {
    let mut env: Vec<String> = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "HOME=/root".into(),
    ];
    for (k, v) in &spec.env {
        env.retain(|e| !e.starts_with(&format!("{k}=")));
        env.push(format!("{k}={v}"));
    }
    if let Some(w) = &spec.workdir {
        env.push(format!("MSB_WORKDIR={w}"));
    }
    let memory = u64::from(spec.memory_mib) * 1024 * 1024;
    let period: u64 = 100_000;
    let quota = i64::from(spec.cpus.max(1)) * period as i64;
    let mut memory_limits = json!({ "limit": memory, "swap": memory });
    if !opts.cgroup_v2 {
        // v1 only: keep the kernel from swapping sandbox memory when swap accounting is off.
        memory_limits["swappiness"] = json!(0);
    }
    let mut spec_json = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            // The listening socket is bound on the host and handed over as fd 3 (crun
            // --preserve-fds): nothing inside the sandbox can replace or impersonate it.
            "args": [GUEST_AGENT_PATH, "--listen", GUEST_LISTEN_FD],
            "env": env,
            "cwd": "/",
            "capabilities": {
                "bounding": CAPS, "effective": CAPS, "permitted": CAPS
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": opts.nofile, "soft": opts.nofile }],
            "noNewPrivileges": true
        },
        "root": { "path": spec.rootfs, "readonly": false },
        "hostname": spec.hostname,
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": GUEST_AGENT_PATH, "type": "bind", "source": spec.guest_agent, "options": ["bind", "ro", "nosuid", "nodev"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" },
                { "type": "network" }, { "type": "cgroup" }
            ],
            "cgroupsPath": opts.cgroups_path,
            "resources": {
                "memory": memory_limits,
                "cpu": { "quota": quota, "period": period },
                "pids": { "limit": spec.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT) },
                "devices": [{ "allow": false, "access": "rwm" }]
            },
            "seccomp": crate::runtime::jail::seccomp::oci_profile(),
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi", "/sys/fs/cgroup"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    });
    if let Some(netns) = &spec.netns {
        // The agent wired this namespace (veth, address, route) and polices it from outside.
        spec_json["linux"]["namespaces"][4] = json!({ "type": "network", "path": netns });
        // Unprivileged ICMP echo sockets (ping without NET_RAW), this namespace only.
        spec_json["linux"]["sysctl"] = json!({ "net.ipv4.ping_group_range": "0 2147483647" });
    }
    if let Some(mounts) = spec_json["mounts"].as_array_mut() {
        mounts.extend(extra_mounts(spec));
    }
    // Shield the guest agent from the memory cgroup's OOM killer (its children raise their own
    // score back to 0) so that a memory bomb, not the agent, is killed. Only possible where the
    // host lets us lower scores (CAP_SYS_RESOURCE); elsewhere the bomb's larger RSS decides.
    if let Some(adj) = opts.agent_oom_score_adj {
        spec_json["process"]["oomScoreAdj"] = json!(adj);
    }
    spec_json
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn launch() -> LaunchSpec {
        LaunchSpec {
            id: "msb-a".into(),
            hostname: "a".into(),
            rootfs: PathBuf::from("/s/a/rootfs"),
            runtime_dir: PathBuf::from("/s/a/runtime"),
            guest_agent: PathBuf::from("/opt/guest"),
            socket_dir: PathBuf::from("/s/a/run"),
            memory_mib: 256,
            cpus: 2,
            pids_limit: None,
            env: vec![("PATH".into(), "/x".into()), ("A".into(), "1".into())],
            workdir: Some("/app".into()),
            mounts: Vec::new(),
            netns: None,
        }
    }

    #[test]
    fn limits_and_hardening() {
        let s = oci_spec(
            &launch(),
            &SpecOptions {
                cgroups_path: "/microsandbox/msb-a".into(),
                cgroup_v2: false,
                nofile: 1024,
                agent_oom_score_adj: None,
            },
        );
        let r = &s["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 256 * 1024 * 1024);
        assert_eq!(r["memory"]["swap"], 256 * 1024 * 1024);
        assert_eq!(r["cpu"]["quota"], 200_000);
        assert_eq!(r["pids"]["limit"], DEFAULT_PIDS_LIMIT);
        assert_eq!(s["process"]["noNewPrivileges"], true);
        let caps = s["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert!(!caps
            .iter()
            .any(|c| c == "CAP_SYS_ADMIN" || c == "CAP_NET_RAW" || c == "CAP_SYS_PTRACE"));
        let ns: Vec<&str> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for want in ["pid", "mount", "network", "ipc", "uts", "cgroup"] {
            assert!(ns.contains(&want), "{want} namespace missing");
        }
        let denied = s["linux"]["seccomp"]["syscalls"][0]["names"]
            .as_array()
            .unwrap();
        assert!(denied.iter().any(|n| n == "kexec_load") && denied.iter().any(|n| n == "bpf"));
    }

    #[test]
    fn network_namespace_is_the_agents_when_wired() {
        let opts = SpecOptions {
            cgroups_path: "/msb/x".into(),
            cgroup_v2: true,
            nofile: 1024,
            agent_oom_score_adj: None,
        };
        let empty = oci_spec(&launch(), &opts);
        assert_eq!(empty["linux"]["namespaces"][4], json!({"type": "network"}));
        assert!(empty["linux"]["sysctl"].is_null());
        let wired = LaunchSpec {
            netns: Some("/run/netns/msb-x".into()),
            ..launch()
        };
        let s = oci_spec(&wired, &opts);
        assert_eq!(
            s["linux"]["namespaces"][4],
            json!({"type": "network", "path": "/run/netns/msb-x"})
        );
        assert_eq!(
            s["linux"]["sysctl"]["net.ipv4.ping_group_range"],
            "0 2147483647"
        );
    }

    #[test]
    fn agent_is_pid1_and_mounted_readonly() {
        let s = oci_spec(
            &launch(),
            &SpecOptions {
                cgroups_path: "/x".into(),
                cgroup_v2: true,
                nofile: 1024,
                agent_oom_score_adj: None,
            },
        );
        assert_eq!(s["process"]["args"][0], GUEST_AGENT_PATH);
        let m = s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == GUEST_AGENT_PATH)
            .unwrap();
        assert!(m["options"].as_array().unwrap().iter().any(|o| o == "ro"));
        assert!(s["linux"]["resources"]["memory"]
            .get("swappiness")
            .is_none());
    }

    #[test]
    fn env_overrides_and_workdir() {
        let s = oci_spec(
            &launch(),
            &SpecOptions {
                cgroups_path: "/x".into(),
                cgroup_v2: true,
                nofile: 1024,
                agent_oom_score_adj: None,
            },
        );
        let env: Vec<&str> = s["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(env.contains(&"PATH=/x"));
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
        assert!(env.contains(&"MSB_WORKDIR=/app"));
    }
}
