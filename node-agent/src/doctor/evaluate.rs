//! Judging [`HostFacts`]: one [`Check`] per concern, each saying which isolation levels a failure
//! rules out. Pure, so every verdict is tested on synthetic hosts.

use microsandbox_wire::api::Isolation;

use super::facts::{HostFacts, KVM_API_VERSION};
use super::parse::CgroupMode;
use super::{Check, Status};

const MICROVM: &[Isolation] = &[Isolation::Microvm];
const CONTAINER: &[Isolation] = &[Isolation::Container];
const BOTH: &[Isolation] = &[Isolation::Microvm, Isolation::Container];

fn check(name: &str, status: Status, affects: &[Isolation], message: impl Into<String>) -> Check {
    Check {
        name: name.to_string(),
        status,
        affects: affects.to_vec(),
        message: message.into(),
    }
}

/// All checks, in display order.
pub fn checks(f: &HostFacts) -> Vec<Check> {
    let mut out = kvm_checks(f);
    out.extend(libkrun_checks(f));
    out.extend(container_checks(f));
    out
}

fn kvm_checks(f: &HostFacts) -> Vec<Check> {
    use Status::*;
    let mut out = Vec::new();
    let k = &f.kvm;
    out.push(if !k.exists {
        check("kvm device", Fail, MICROVM, "/dev/kvm does not exist: load kvm_intel or kvm_amd (or kvm_pvm), or on a cloud VM enable nested virtualization")
    } else if !k.char_device {
        check("kvm device", Fail, MICROVM, "/dev/kvm exists but is not a character device")
    } else if let Some(e) = &k.open_error {
        check("kvm device", Fail, MICROVM, format!("cannot open /dev/kvm read-write: {e} (run the agent as root or add its user to the kvm group)"))
    } else {
        check("kvm device", Ok, MICROVM, "/dev/kvm opens read-write")
    });
    if let Some(v) = k.api_version {
        out.push(if v == KVM_API_VERSION {
            match &k.create_vm_error {
                None => check(
                    "kvm api",
                    Ok,
                    MICROVM,
                    format!("KVM_GET_API_VERSION = {v}; KVM_CREATE_VM works"),
                ),
                Some(e) => check(
                    "kvm api",
                    Fail,
                    MICROVM,
                    format!("KVM_GET_API_VERSION = {v} but KVM_CREATE_VM fails: {e}"),
                ),
            }
        } else {
            check(
                "kvm api",
                Fail,
                MICROVM,
                format!("KVM_GET_API_VERSION = {v}, expected {KVM_API_VERSION}"),
            )
        });
    }
    let flag = if f.cpu.vmx {
        Some("vmx (Intel VT-x)")
    } else if f.cpu.svm {
        Some("svm (AMD-V)")
    } else {
        None
    };
    out.push(match (flag, f.pvm) {
        (Some(flag), _) => check(
            "cpu virtualization",
            Ok,
            MICROVM,
            format!("{flag} in /proc/cpuinfo"),
        ),
        (None, true) => check(
            "cpu virtualization",
            Warn,
            MICROVM,
            "no vmx/svm flag: KVM here is PVM (kvm_pvm), software-nested virtualization",
        ),
        (None, false) if k.api_version.is_some() => check(
            "cpu virtualization",
            Warn,
            MICROVM,
            "no vmx/svm flag in /proc/cpuinfo, yet /dev/kvm answers",
        ),
        (None, false) => check(
            "cpu virtualization",
            Fail,
            MICROVM,
            format!(
                "no vmx/svm flag in /proc/cpuinfo{}: this CPU exposes no hardware virtualization",
                if f.cpu.hypervisor {
                    " (this host is itself a VM without nested virtualization)"
                } else {
                    ""
                }
            ),
        ),
    });
    if f.pvm {
        out.push(match &f.kernel {
            Some(kernel) => check("pvm guest kernel", Warn, MICROVM, format!(
                "KVM is PVM (kvm_pvm): only a PVM-guest kernel boots; using {} and assuming it is one",
                kernel.path.display()
            )),
            None => check("pvm guest kernel", Fail, MICROVM,
                "KVM is PVM (kvm_pvm): only a PVM-guest kernel boots; libkrunfw's standard kernel dies \
                 with KVM_EXIT_INTERNAL_ERROR. Build a kernel with CONFIG_PVM_GUEST and pass it with --kernel"),
        });
    }
    out
}

fn libkrun_checks(f: &HostFacts) -> Vec<Check> {
    use Status::*;
    let mut out = Vec::new();
    let l = &f.libkrun;
    out.push(match (&l.path, &l.load_error) {
        (Some(path), _) if l.missing_symbols.is_empty() => check("libkrun", Ok, MICROVM, match &l.real_path {
            Some(real) if real != path => format!("{} ({})", path.display(), real.display()),
            _ => path.display().to_string(),
        }),
        (Some(path), _) => check("libkrun", Fail, MICROVM, format!(
            "{} lacks {} (too old for this agent); install a newer libkrun",
            path.display(),
            l.missing_symbols.join(", ")
        )),
        (None, e) => check("libkrun", Fail, MICROVM, format!(
            "{}; install libkrun (Fedora, Arch, Debian trixie+, Homebrew ship it) or pass --libkrun",
            e.as_deref().unwrap_or("not found")
        )),
    });
    let fw = &f.libkrunfw;
    out.push(match (&fw.soname, &f.kernel) {
        (Some(soname), _) => {
            let version = fw
                .abi_version
                .map(|v| format!(", ABI {v}"))
                .unwrap_or_default();
            let at = fw
                .path
                .as_ref()
                .map(|p| format!(" at {}", p.display()))
                .unwrap_or_default();
            check("libkrunfw", Ok, MICROVM, format!("{soname}{at}{version}"))
        }
        (None, Some(_)) => check(
            "libkrunfw",
            Ok,
            MICROVM,
            "not found, not needed: a custom kernel is configured",
        ),
        (None, None) => check(
            "libkrunfw",
            Fail,
            MICROVM,
            format!(
                "{}; install libkrunfw (libkrun's bundled guest kernel) or pass --kernel",
                fw.load_error.as_deref().unwrap_or("not found")
            ),
        ),
    });
    if let Some(kernel) = &f.kernel {
        out.push(match &kernel.format {
            std::result::Result::Ok(format) => check(
                "guest kernel",
                Ok,
                MICROVM,
                format!("{} ({format})", kernel.path.display()),
            ),
            Err(e) => check("guest kernel", Fail, MICROVM, e.clone()),
        });
    }
    out
}

fn container_checks(f: &HostFacts) -> Vec<Check> {
    use Status::*;
    let mut out = Vec::new();
    out.push(match (&f.crun.path, &f.crun.version, &f.crun.error) {
        (Some(p), Some(v), _) if f.crun.seccomp => check(
            "crun",
            Ok,
            CONTAINER,
            format!("crun {v} at {}", p.display()),
        ),
        (Some(p), Some(v), _) => check(
            "crun",
            Fail,
            CONTAINER,
            format!("crun {v} at {} was built without seccomp", p.display()),
        ),
        (_, _, e) => check(
            "crun",
            Fail,
            CONTAINER,
            format!(
                "crun {}; install it (Debian: apt-get install crun)",
                e.as_deref().unwrap_or("unusable")
            ),
        ),
    });
    let c = &f.cgroup;
    out.push(match c.mode {
        CgroupMode::Unified => check("cgroups", Ok, CONTAINER, "v2 (unified)"),
        CgroupMode::Legacy => check("cgroups", Ok, CONTAINER, "v1"),
        CgroupMode::Hybrid if c.v2_controllers.is_empty() => {
            check("cgroups", Ok, CONTAINER, "hybrid: v1 controllers, no controller left on the v2 hierarchy")
        }
        CgroupMode::Hybrid => {
            let fix: Vec<String> = c
                .v2_controllers
                .iter()
                .map(|k| format!("mkdir -p /sys/fs/cgroup/{k} && mount -t cgroup -o {k} cgroup /sys/fs/cgroup/{k}"))
                .collect();
            check("cgroups", Fail, CONTAINER, format!(
                "hybrid, with {} on the v2 hierarchy: crun refuses hybrid hosts until it moves to v1; fix: {}",
                c.v2_controllers.join(", "),
                fix.join("; ")
            ))
        }
        CgroupMode::None => check("cgroups", Fail, CONTAINER, "no cgroup file system is mounted"),
    });
    out.push(match f.overlayfs {
        Some(true) => check("overlayfs", Ok, BOTH, "overlay in /proc/filesystems"),
        Some(false) => check("overlayfs", Fail, BOTH, "overlay is not in /proc/filesystems (modprobe overlay); sandbox roots are overlay mounts"),
        None => check("overlayfs", Fail, BOTH, "cannot read /proc/filesystems"),
    });
    out.push(match f.seccomp_mode {
        Some(_) => check("seccomp", Ok, CONTAINER, "supported by the kernel"),
        None => check(
            "seccomp",
            Fail,
            CONTAINER,
            "the kernel has no seccomp (no Seccomp field in /proc/self/status)",
        ),
    });
    out.push(match f.max_user_namespaces {
        Some(0) => check(
            "user namespaces",
            Warn,
            &[],
            "disabled (max_user_namespaces = 0); not required",
        ),
        Some(n) => check(
            "user namespaces",
            Ok,
            &[],
            format!("max_user_namespaces = {n}"),
        ),
        None => check(
            "user namespaces",
            Warn,
            &[],
            "unknown (no /proc/sys/user/max_user_namespaces); not required",
        ),
    });
    out.push(if f.euid == 0 {
        check("privileges", Ok, CONTAINER, "running as root")
    } else {
        check(
            "privileges",
            Fail,
            CONTAINER,
            format!(
                "running as uid {}: the container runtime needs root",
                f.euid
            ),
        )
    });
    out
}

/// Whether `isolation` can run, given the checks: the messages of the failing checks otherwise.
pub fn verdict(checks: &[Check], isolation: Isolation) -> Result<(), String> {
    let failures: Vec<String> = checks
        .iter()
        .filter(|c| c.status == Status::Fail && c.affects.contains(&isolation))
        .map(|c| format!("{}: {}", c.name, c.message))
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::super::facts::*;
    use super::super::parse::{CgroupMount, CpuVirt};
    use super::*;

    /// A host that can run both: Intel KVM, libkrun + libkrunfw, crun, cgroup v2.
    fn good_host() -> HostFacts {
        HostFacts {
            kvm: KvmFacts {
                exists: true,
                char_device: true,
                open_error: None,
                api_version: Some(12),
                create_vm_error: None,
            },
            cpu: CpuVirt {
                vmx: true,
                svm: false,
                hypervisor: false,
            },
            kvm_modules: vec!["kvm".into(), "kvm_intel".into()],
            pvm: false,
            libkrun: LibkrunFacts {
                path: Some("/usr/lib64/libkrun.so.1".into()),
                real_path: Some("/usr/lib64/libkrun.so.1.15.1".into()),
                load_error: None,
                missing_symbols: vec![],
            },
            libkrunfw: LibkrunfwFacts {
                path: Some("/usr/lib64/libkrunfw.so.5".into()),
                soname: Some("libkrunfw.so.5".into()),
                abi_version: Some(5),
                load_error: None,
            },
            kernel: None,
            crun: CrunFacts {
                path: Some("/usr/bin/crun".into()),
                version: Some("1.19".into()),
                seccomp: true,
                error: None,
            },
            cgroup: CgroupFacts {
                mode: CgroupMode::Unified,
                mounts: vec![CgroupMount {
                    mount_point: "/sys/fs/cgroup".into(),
                    version: 2,
                    controllers: vec![],
                }],
                v2_controllers: vec!["cpu".into(), "memory".into(), "pids".into()],
            },
            overlayfs: Some(true),
            seccomp_mode: Some(0),
            max_user_namespaces: Some(1000),
            euid: 0,
        }
    }

    /// Our build machines: PVM, no vmx/svm, no libkrun, hybrid cgroups with hugetlb on v2.
    fn our_host() -> HostFacts {
        let mut f = good_host();
        f.cpu = CpuVirt {
            vmx: false,
            svm: false,
            hypervisor: true,
        };
        f.kvm_modules = vec!["kvm".into(), "kvm_pvm".into()];
        f.pvm = true;
        f.libkrun = LibkrunFacts {
            load_error: Some(
                "cannot load libkrun: libkrun.so.1: cannot open shared object file".into(),
            ),
            ..Default::default()
        };
        f.libkrunfw = LibkrunfwFacts {
            load_error: Some("libkrunfw.so.5: not found".into()),
            ..Default::default()
        };
        f.crun.version = Some("1.8.1".into());
        f.cgroup.mode = CgroupMode::Hybrid;
        f.cgroup.v2_controllers = vec!["hugetlb".into()];
        f
    }

    fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name}"))
    }

    #[test]
    fn good_host_runs_both() {
        let c = checks(&good_host());
        assert!(c.iter().all(|c| c.status == Status::Ok), "{c:#?}");
        assert_eq!(verdict(&c, Isolation::Microvm), Ok(()));
        assert_eq!(verdict(&c, Isolation::Container), Ok(()));
        assert!(find(&c, "libkrun").message.contains("libkrun.so.1.15.1"));
    }

    #[test]
    fn pvm_host_without_kernel_explains_why() {
        let c = checks(&our_host());
        assert_eq!(find(&c, "cpu virtualization").status, Status::Warn);
        let pvm = find(&c, "pvm guest kernel");
        assert_eq!(pvm.status, Status::Fail);
        assert!(
            pvm.message.contains("KVM_EXIT_INTERNAL_ERROR") && pvm.message.contains("--kernel")
        );
        let why = verdict(&c, Isolation::Microvm).unwrap_err();
        assert!(
            why.contains("pvm guest kernel") && why.contains("libkrun"),
            "{why}"
        );
        let why = verdict(&c, Isolation::Container).unwrap_err();
        assert!(
            why.contains("hugetlb") && why.contains("mount -t cgroup -o hugetlb"),
            "{why}"
        );
    }

    #[test]
    fn pvm_host_with_kernel_and_fixed_cgroups() {
        let mut f = our_host();
        f.kernel = Some(KernelFacts {
            path: "/boot/vmlinux-pvm".into(),
            format: Ok("elf".into()),
        });
        f.libkrun = good_host().libkrun;
        f.cgroup.v2_controllers.clear();
        let c = checks(&f);
        assert_eq!(find(&c, "pvm guest kernel").status, Status::Warn);
        assert_eq!(
            find(&c, "libkrunfw").status,
            Status::Ok,
            "a custom kernel replaces libkrunfw"
        );
        assert_eq!(verdict(&c, Isolation::Microvm), Ok(()));
        assert_eq!(verdict(&c, Isolation::Container), Ok(()));
    }

    #[test]
    fn kvm_problems() {
        let mut f = good_host();
        f.kvm = KvmFacts {
            exists: true,
            char_device: true,
            open_error: Some("Permission denied (os error 13)".into()),
            ..Default::default()
        };
        let why = verdict(&checks(&f), Isolation::Microvm).unwrap_err();
        assert!(
            why.contains("Permission denied") && why.contains("kvm group"),
            "{why}"
        );
        assert_eq!(verdict(&checks(&f), Isolation::Container), Ok(()));

        f.kvm = KvmFacts::default();
        f.cpu = CpuVirt {
            hypervisor: true,
            ..Default::default()
        };
        let c = checks(&f);
        assert!(find(&c, "kvm device").message.contains("does not exist"));
        assert!(find(&c, "cpu virtualization").message.contains("nested"));

        f.kvm = KvmFacts {
            exists: true,
            char_device: true,
            api_version: Some(11),
            ..Default::default()
        };
        assert_eq!(find(&checks(&f), "kvm api").status, Status::Fail);
    }

    #[test]
    fn old_libkrun_names_missing_symbols() {
        let mut f = good_host();
        f.libkrun.missing_symbols = vec!["krun_add_vsock_port2".into()];
        let why = verdict(&checks(&f), Isolation::Microvm).unwrap_err();
        assert!(why.contains("krun_add_vsock_port2"), "{why}");
    }

    #[test]
    fn container_requirements() {
        let mut f = good_host();
        f.crun = CrunFacts {
            error: Some("not found in PATH".into()),
            ..Default::default()
        };
        f.euid = 1000;
        f.overlayfs = Some(false);
        let c = checks(&f);
        let why = verdict(&c, Isolation::Container).unwrap_err();
        assert!(
            why.contains("crun not found in PATH")
                && why.contains("uid 1000")
                && why.contains("overlay"),
            "{why}"
        );
        // overlayfs is needed by both; user namespaces by neither.
        assert!(verdict(&c, Isolation::Microvm)
            .unwrap_err()
            .contains("overlay"));
        f.max_user_namespaces = Some(0);
        assert!(find(&checks(&f), "user namespaces").affects.is_empty());
    }
}
