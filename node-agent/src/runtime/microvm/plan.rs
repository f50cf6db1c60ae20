//! The ordered libkrun calls that build one microVM, as data.
//!
//! The node-agent writes a [`VmPlan`] as JSON into the sandbox's runtime dir and starts
//! `microsandbox-agent vmm --plan <file>`, which replays it against the dlopen'ed libkrun
//! ([`super::ffi`]) and enters the VM. Keeping the plan as data makes the exact sequence of FFI
//! calls unit-testable on hosts without libkrun.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{KernelFormat, MicrovmSettings, VmConfig};
use crate::runtime::jail::VmmJail;

/// `KRUN_TSI_HIJACK_INET` (libkrun.h; not in libkrun-sys): the guest's AF_INET stream and
/// datagram sockets are carried out by the VMM.
pub const KRUN_TSI_HIJACK_INET: u32 = 1 << 0;

/// Bumped when the plan's JSON changes incompatibly; a VMM refuses plans of another version.
pub const PLAN_VERSION: u32 = 1;

/// One libkrun configuration call on the VM's context (the context id is implicit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case", deny_unknown_fields)]
pub enum KrunCall {
    /// `krun_set_vm_config`
    SetVmConfig { vcpus: u8, memory_mib: u32 },
    /// `krun_set_root`: the host directory shared as the guest's `/` (virtio-fs).
    SetRoot { path: PathBuf },
    /// `krun_add_virtiofs3` (`krun_add_virtiofs` when not read-only and the `3` variant is
    /// missing): share a host directory under `tag`; `read_only` is enforced by the VMM.
    AddVirtiofs {
        tag: String,
        path: PathBuf,
        read_only: bool,
    },
    /// `krun_set_kernel`: boot this kernel instead of libkrunfw's.
    SetKernel {
        path: PathBuf,
        format: KernelFormat,
        initramfs: Option<PathBuf>,
        cmdline: Option<String>,
    },
    /// `krun_disable_implicit_vsock`: without it libkrun adds a vsock device with TSI, which
    /// proxies the guest's sockets through the VMM process and so gives the guest the host's
    /// network, bypassing every network policy.
    DisableImplicitVsock,
    /// `krun_add_vsock`: the explicit vsock device (TSI feature bits; 0 = no socket hijacking).
    AddVsock { tsi_features: u32 },
    /// `krun_add_vsock_port2` (or `krun_add_vsock_port` when `listen` is false and the `2`
    /// variant is missing).
    AddVsockPort {
        port: u32,
        host_socket: PathBuf,
        listen: bool,
    },
    /// `krun_set_console_output`
    SetConsoleOutput { path: PathBuf },
    /// `krun_set_rlimits`: `RESOURCE=SOFT:HARD` strings.
    SetRlimits { rlimits: Vec<String> },
    /// `krun_set_workdir`
    SetWorkdir { path: String },
    /// `krun_set_exec`: program (relative to the root), arguments without argv\[0\], and the
    /// complete environment as `NAME=value` (always explicit: libkrun would copy the host's
    /// environment if given NULL).
    SetExec {
        path: String,
        argv: Vec<String>,
        env: Vec<String>,
    },
}

impl KrunCall {
    /// The libkrun symbol this call uses (its preferred one, for [`KrunCall::AddVsockPort`]).
    pub fn symbol(&self) -> &'static str {
        match self {
            KrunCall::SetVmConfig { .. } => "krun_set_vm_config",
            KrunCall::SetRoot { .. } => "krun_set_root",
            KrunCall::AddVirtiofs { .. } => "krun_add_virtiofs3",
            KrunCall::SetKernel { .. } => "krun_set_kernel",
            KrunCall::DisableImplicitVsock => "krun_disable_implicit_vsock",
            KrunCall::AddVsock { .. } => "krun_add_vsock",
            KrunCall::AddVsockPort { .. } => "krun_add_vsock_port2",
            KrunCall::SetConsoleOutput { .. } => "krun_set_console_output",
            KrunCall::SetRlimits { .. } => "krun_set_rlimits",
            KrunCall::SetWorkdir { .. } => "krun_set_workdir",
            KrunCall::SetExec { .. } => "krun_set_exec",
        }
    }
}

/// Everything the VMM process needs: which libkrun, and the calls to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmPlan {
    pub version: u32,
    /// The sandbox's runtime id, for logs.
    pub id: String,
    /// Explicit libkrun to load; `None` searches the default names.
    pub libkrun: Option<PathBuf>,
    /// `krun_set_log_level` before the context is created.
    pub log_level: u32,
    /// vCPUs requested, checked against `krun_get_max_vcpus` where libkrun has it.
    pub vcpus: u8,
    pub calls: Vec<KrunCall>,
    /// Network namespace the VMM joins before entering the VM: the guest's sockets (libkrun's
    /// socket impersonation) then leave through the sandbox's policed link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// cgroup, no_new_privs and seccomp the VMM puts itself in after joining `netns` and
    /// before loading libkrun.
    #[serde(default, skip_serializing_if = "VmmJail::is_open")]
    pub jail: VmmJail,
}

impl VmPlan {
    /// The calls for `config`, in the order libkrun needs them.
    pub fn build(id: &str, config: &VmConfig, settings: &MicrovmSettings) -> VmPlan {
        let mut calls = vec![
            KrunCall::SetVmConfig {
                vcpus: config.vcpus,
                memory_mib: config.memory_mib,
            },
            KrunCall::SetRoot {
                path: config.root.clone(),
            },
        ];
        calls.extend(config.shares.iter().map(|s| KrunCall::AddVirtiofs {
            tag: s.tag.clone(),
            path: s.path.clone(),
            read_only: s.read_only,
        }));
        if let Some(k) = &config.kernel {
            calls.push(KrunCall::SetKernel {
                path: k.path.clone(),
                format: k.format,
                initramfs: k.initramfs.clone(),
                cmdline: k.cmdline.clone(),
            });
        }
        calls.push(KrunCall::DisableImplicitVsock);
        // Without a network (no namespace to confine the VMM's sockets) the guest gets none.
        calls.push(KrunCall::AddVsock {
            tsi_features: if config.tsi { KRUN_TSI_HIJACK_INET } else { 0 },
        });
        for v in &config.vsock_ports {
            calls.push(KrunCall::AddVsockPort {
                port: v.port,
                host_socket: v.host_socket.clone(),
                listen: v.listen,
            });
        }
        calls.push(KrunCall::SetConsoleOutput {
            path: config.console_output.clone(),
        });
        if !config.rlimits.is_empty() {
            calls.push(KrunCall::SetRlimits {
                rlimits: config.rlimits.iter().map(|r| r.to_krun_string()).collect(),
            });
        }
        if let Some(dir) = &config.workdir {
            calls.push(KrunCall::SetWorkdir { path: dir.clone() });
        }
        calls.push(KrunCall::SetExec {
            path: config.exec_path.clone(),
            argv: config.argv.clone(),
            env: config.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        });
        VmPlan {
            version: PLAN_VERSION,
            id: id.to_string(),
            libkrun: settings.libkrun.clone(),
            log_level: settings.log_level,
            vcpus: config.vcpus,
            calls,
            netns: None,
            jail: VmmJail::default(),
        }
    }

    /// Write the plan atomically (temp file + rename), readable only by its owner: it holds the
    /// sandbox's environment.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// Parse a plan, refusing other versions.
    pub fn parse(json: &[u8]) -> Result<VmPlan, String> {
        let plan: VmPlan = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        if plan.version != PLAN_VERSION {
            return Err(format!(
                "plan version {} but this VMM speaks version {PLAN_VERSION}",
                plan.version
            ));
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::microvm::config::tests::spec;
    use crate::runtime::microvm::config::{KernelConfig, HOSTNAME_ENV};

    fn plan(settings: &MicrovmSettings) -> VmPlan {
        let cfg = VmConfig::from_launch(&spec(), settings).unwrap();
        VmPlan::build("msb-test", &cfg, settings)
    }

    fn pvm_settings() -> MicrovmSettings {
        MicrovmSettings {
            kernel: Some(KernelConfig {
                path: "/boot/vmlinux-pvm".into(),
                format: KernelFormat::Elf,
                initramfs: Some("/boot/initrd-pvm".into()),
                cmdline: Some("console=hvc0 pti=off".into()),
            }),
            libkrun: Some("/opt/krun/libkrun.so.1".into()),
            log_level: 3,
        }
    }

    #[test]
    fn default_kernel_has_no_set_kernel() {
        let p = plan(&MicrovmSettings::default());
        assert!(!p
            .calls
            .iter()
            .any(|c| matches!(c, KrunCall::SetKernel { .. })));
        assert_eq!(p.libkrun, None);
        assert_eq!(
            p.calls[0],
            KrunCall::SetVmConfig {
                vcpus: 2,
                memory_mib: 512
            }
        );
        assert_eq!(
            p.calls[1],
            KrunCall::SetRoot {
                path: "/var/lib/msb/sandboxes/test/rootfs".into()
            }
        );
    }

    #[test]
    fn custom_kernel_adds_set_kernel_with_cmdline() {
        let p = plan(&pvm_settings());
        let kernel: Vec<_> = p
            .calls
            .iter()
            .filter(|c| matches!(c, KrunCall::SetKernel { .. }))
            .collect();
        assert_eq!(
            kernel,
            [&KrunCall::SetKernel {
                path: "/boot/vmlinux-pvm".into(),
                format: KernelFormat::Elf,
                initramfs: Some("/boot/initrd-pvm".into()),
                cmdline: Some("console=hvc0 pti=off".into()),
            }]
        );
        assert_eq!(p.libkrun, Some("/opt/krun/libkrun.so.1".into()));
        assert_eq!(p.log_level, 3);
    }

    #[test]
    fn vsock_mapping_listens_on_the_host_socket_without_tsi() {
        let p = plan(&MicrovmSettings::default());
        let pos = |pred: &dyn Fn(&KrunCall) -> bool| p.calls.iter().position(pred).unwrap();
        let disable = pos(&|c| matches!(c, KrunCall::DisableImplicitVsock));
        let add = pos(&|c| *c == KrunCall::AddVsock { tsi_features: 0 });
        let port = pos(&|c| {
            *c == KrunCall::AddVsockPort {
                port: 7000,
                host_socket: "/var/lib/msb/sandboxes/test/sock/agent.sock".into(),
                listen: true,
            }
        });
        assert!(disable < add && add < port);
    }

    #[test]
    fn a_sandbox_with_a_network_gets_tsi_and_one_without_none() {
        let settings = MicrovmSettings::default();
        let mut with_net = spec();
        with_net.netns = Some("/run/netns/msbabc-test".into());
        let cfg = VmConfig::from_launch(&with_net, &settings).unwrap();
        assert!(cfg.tsi);
        let p = VmPlan::build("msb-test", &cfg, &settings);
        assert!(p.calls.contains(&KrunCall::AddVsock {
            tsi_features: KRUN_TSI_HIJACK_INET
        }));
        assert!(!VmConfig::from_launch(&spec(), &settings).unwrap().tsi);
    }

    #[test]
    fn exec_gets_agent_args_and_explicit_env() {
        let p = plan(&MicrovmSettings::default());
        let Some(KrunCall::SetExec { path, argv, env }) = p.calls.last() else {
            panic!("set_exec must come last: {:?}", p.calls);
        };
        assert_eq!(path, "/.msb/agent");
        assert_eq!(argv, &["--listen", "vsock:7000", "--init-mounts"]);
        assert_eq!(
            env,
            &[
                "PATH=/usr/bin:/bin".to_string(),
                "LANG=C.UTF-8".into(),
                format!("{HOSTNAME_ENV}=test")
            ]
        );
        assert!(p.calls.contains(&KrunCall::SetWorkdir {
            path: "/work".into()
        }));
        assert!(p.calls.contains(&KrunCall::SetRlimits {
            rlimits: vec!["6=256:256".into()]
        }));
        assert!(p.calls.contains(&KrunCall::SetConsoleOutput {
            path: "/var/lib/msb/sandboxes/test/run/console.log".into()
        }));
    }

    #[test]
    fn optional_calls_are_left_out() {
        let mut s = spec();
        s.workdir = None;
        s.pids_limit = None;
        let cfg = VmConfig::from_launch(&s, &MicrovmSettings::default()).unwrap();
        let p = VmPlan::build("msb-test", &cfg, &MicrovmSettings::default());
        assert!(!p
            .calls
            .iter()
            .any(|c| matches!(c, KrunCall::SetWorkdir { .. } | KrunCall::SetRlimits { .. })));
    }

    #[test]
    fn json_round_trip_and_version_check() {
        let p = plan(&pvm_settings());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("msb-test.vmm.json");
        p.write(&file).unwrap();
        let text = std::fs::read(&file).unwrap();
        assert_eq!(VmPlan::parse(&text).unwrap(), p);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let json = String::from_utf8(text).unwrap();
        assert!(json.contains("\"call\": \"set_kernel\""), "{json}");
        let mut old = p.clone();
        old.version = 0;
        assert!(VmPlan::parse(&serde_json::to_vec(&old).unwrap())
            .unwrap_err()
            .contains("version"));
    }
}
