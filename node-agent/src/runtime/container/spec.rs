//! The OCI runtime spec (`config.json`) of a container sandbox. Pure: unit-tested without crun.

use oci_spec::runtime::{
    Capabilities, Capability, Linux, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder,
    PosixRlimitType, Process, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use oci_spec::OciSpecError;
use std::collections::HashMap;
use std::path::PathBuf;

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
const CAPS: [Capability; 12] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
    Capability::Setfcap,
];

/// A mount of the spec.
fn mount(
    dest: &str,
    typ: &str,
    source: impl Into<PathBuf>,
    options: &[&str],
) -> Result<Mount, OciSpecError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
}

/// The mounts every sandbox gets: the kernel file systems and the guest agent, read-only.
fn base_mounts(spec: &LaunchSpec) -> Result<Vec<Mount>, OciSpecError> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            GUEST_AGENT_PATH,
            "bind",
            &spec.guest_agent,
            &["bind", "ro", "nosuid", "nodev"],
        )?,
    ])
}

/// The OCI mounts of a sandbox's extra file systems.
fn extra_mounts(spec: &LaunchSpec) -> Result<Vec<Mount>, OciSpecError> {
    spec.mounts
        .iter()
        .map(|m| match m {
            LaunchMount::Bind {
                source,
                dest,
                readonly,
            } => mount(
                dest,
                "bind",
                source,
                &[
                    "rbind",
                    if *readonly { "ro" } else { "rw" },
                    "nosuid",
                    "nodev",
                ],
            ),
            LaunchMount::Tmpfs { dest, size_mib } => mount(
                dest,
                "tmpfs",
                "tmpfs",
                &["nosuid", "nodev", "mode=1777", &format!("size={size_mib}m")],
            ),
        })
        .collect()
}

/// The guest agent's process: PID 1 of the sandbox.
fn process(spec: &LaunchSpec, opts: &SpecOptions) -> Result<Process, OciSpecError> {
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
    let caps: Capabilities = CAPS.into_iter().collect();
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    // Nothing inheritable or ambient: a program the agent runs gains no capability by exec.
    capabilities.set_inheritable(None).set_ambient(None);
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        // The listening socket is bound on the host and handed over as fd 3 (crun
        // --preserve-fds): nothing inside the sandbox can replace or impersonate it.
        .args(vec![
            GUEST_AGENT_PATH.to_string(),
            "--listen".into(),
            GUEST_LISTEN_FD.into(),
        ])
        .env(env)
        .cwd("/")
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(opts.nofile)
            .soft(opts.nofile)
            .build()?])
        .no_new_privileges(true)
        .build()?;
    // Shield the guest agent from the memory cgroup's OOM killer (its children raise their own
    // score back to 0) so that a memory bomb, not the agent, is killed. Only possible where the
    // host lets us lower scores (CAP_SYS_RESOURCE); elsewhere the bomb's larger RSS decides.
    process.set_oom_score_adj(opts.agent_oom_score_adj);
    Ok(process)
}

/// Namespaces, cgroup limits, seccomp and masked paths.
fn linux(spec: &LaunchSpec, opts: &SpecOptions) -> Result<Linux, OciSpecError> {
    let memory = i64::from(spec.memory_mib) * 1024 * 1024;
    let period: u64 = 100_000;
    let quota = i64::from(spec.cpus.max(1)) * period as i64;
    let mut memory_limits = LinuxMemoryBuilder::default().limit(memory).swap(memory);
    if !opts.cgroup_v2 {
        // v1 only: keep the kernel from swapping sandbox memory when swap accounting is off.
        memory_limits = memory_limits.swappiness(0u64);
    }
    let namespace = |typ| LinuxNamespaceBuilder::default().typ(typ).build();
    // The agent wired this namespace (veth, address, route) and polices it from outside.
    let network = match &spec.netns {
        Some(path) => LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path(path)
            .build()?,
        None => namespace(LinuxNamespaceType::Network)?,
    };
    let paths = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut linux = LinuxBuilder::default()
        .namespaces(vec![
            namespace(LinuxNamespaceType::Pid)?,
            namespace(LinuxNamespaceType::Ipc)?,
            namespace(LinuxNamespaceType::Uts)?,
            namespace(LinuxNamespaceType::Mount)?,
            network,
            namespace(LinuxNamespaceType::Cgroup)?,
        ])
        .cgroups_path(PathBuf::from(&opts.cgroups_path))
        .resources(
            LinuxResourcesBuilder::default()
                .memory(memory_limits.build()?)
                .cpu(
                    LinuxCpuBuilder::default()
                        .quota(quota)
                        .period(period)
                        .build()?,
                )
                .pids(
                    LinuxPidsBuilder::default()
                        .limit(i64::from(spec.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT)))
                        .build()?,
                )
                .devices(vec![LinuxDeviceCgroupBuilder::default()
                    .allow(false)
                    .access("rwm")
                    .build()?])
                .build()?,
        )
        .seccomp(crate::runtime::jail::seccomp::oci_profile()?)
        .masked_paths(paths(&[
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
            "/sys/fs/cgroup",
        ]))
        .readonly_paths(paths(&[
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ]))
        .build()?;
    linux.set_sysctl(spec.netns.as_ref().map(|_| {
        // Unprivileged ICMP echo sockets (ping without NET_RAW), this namespace only.
        HashMap::from([(
            "net.ipv4.ping_group_range".to_string(),
            "0 2147483647".to_string(),
        )])
    }));
    // Fields the builder fills from its defaults that this spec leaves unset.
    linux
        .set_uid_mappings(None)
        .set_gid_mappings(None)
        .set_devices(None);
    Ok(linux)
}

/// Build the spec.
pub fn oci_spec(spec: &LaunchSpec, opts: &SpecOptions) -> Result<Spec, OciSpecError> {
    let mut mounts = base_mounts(spec)?;
    mounts.extend(extra_mounts(spec)?);
    let mut oci = SpecBuilder::default()
        .version("1.0.2")
        .process(process(spec, opts)?)
        .root(
            RootBuilder::default()
                .path(&spec.rootfs)
                .readonly(false)
                .build()?,
        )
        .hostname(spec.hostname.clone())
        .mounts(mounts)
        .linux(linux(spec, opts)?)
        .build()?;
    oci.set_annotations(None);
    Ok(oci)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The spec as crun reads it.
    fn oci_json(spec: &LaunchSpec, opts: &SpecOptions) -> Value {
        serde_json::to_value(oci_spec(spec, opts).unwrap()).unwrap()
    }

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
        let s = oci_json(
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
        let empty = oci_json(&launch(), &opts);
        assert_eq!(empty["linux"]["namespaces"][4], json!({"type": "network"}));
        assert!(empty["linux"]["sysctl"].is_null());
        let wired = LaunchSpec {
            netns: Some("/run/netns/msb-x".into()),
            ..launch()
        };
        let s = oci_json(&wired, &opts);
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
        let s = oci_json(
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
        let s = oci_json(
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
