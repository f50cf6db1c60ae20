//! Probing the host: every read, `dlopen` and ioctl doctor does, collected as plain data
//! ([`HostFacts`]) that [`super::evaluate`] judges without further I/O.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::parse::{self, CgroupMode, CgroupMount, CpuVirt};
use super::DoctorOptions;
use crate::runtime::microvm::config::KernelConfig;
use crate::runtime::microvm::ffi::{self, Libkrun, LIBKRUNFW_NAMES};

/// The KVM API version every usable /dev/kvm reports (stable since Linux 2.6.22).
pub const KVM_API_VERSION: i32 = 12;

/// Everything doctor found out about the host.
#[derive(Debug, Clone, Serialize)]
pub struct HostFacts {
    pub kvm: KvmFacts,
    pub cpu: CpuVirt,
    /// Loaded KVM modules (`kvm`, `kvm_intel`, `kvm_amd`, `kvm_pvm`).
    pub kvm_modules: Vec<String>,
    /// KVM is provided by PVM (`kvm_pvm`): only PVM-guest kernels boot.
    pub pvm: bool,
    pub libkrun: LibkrunFacts,
    pub libkrunfw: LibkrunfwFacts,
    pub kernel: Option<KernelFacts>,
    pub crun: CrunFacts,
    pub cgroup: CgroupFacts,
    /// `overlay` in /proc/filesystems (`None`: unreadable).
    pub overlayfs: Option<bool>,
    /// The `Seccomp:` field of /proc/self/status (`None`: kernel without seccomp).
    pub seccomp_mode: Option<u32>,
    /// /proc/sys/user/max_user_namespaces.
    pub max_user_namespaces: Option<u64>,
    pub euid: u32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct KvmFacts {
    pub exists: bool,
    pub char_device: bool,
    /// Why `open("/dev/kvm", O_RDWR)` failed.
    pub open_error: Option<String>,
    pub api_version: Option<i32>,
    /// Why `KVM_CREATE_VM` failed.
    pub create_vm_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LibkrunFacts {
    /// Where it was loaded from (the loader's resolved path).
    pub path: Option<PathBuf>,
    /// The real file behind `path` (its name usually carries the full version).
    pub real_path: Option<PathBuf>,
    pub load_error: Option<String>,
    /// Symbols the microVM runtime needs that this build lacks.
    pub missing_symbols: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LibkrunfwFacts {
    pub path: Option<PathBuf>,
    /// The soname that loaded (`libkrunfw.so.5` or `.4`).
    pub soname: Option<String>,
    /// `krunfw_get_version()`: the kernel-bundle ABI version.
    pub abi_version: Option<u32>,
    pub load_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelFacts {
    pub path: PathBuf,
    /// Detected format, or why it cannot be used.
    pub format: Result<String, String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CrunFacts {
    pub path: Option<PathBuf>,
    pub version: Option<String>,
    /// Built with `+SECCOMP`.
    pub seccomp: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CgroupFacts {
    pub mode: CgroupMode,
    pub mounts: Vec<CgroupMount>,
    /// Controllers enabled on the v2 hierarchy (in hybrid mode they block crun 1.8).
    pub v2_controllers: Vec<String>,
}

/// Probe everything. Blocking (file reads, `dlopen`, `crun --version`): call it from a
/// blocking context (`tokio::task::spawn_blocking` in async code).
pub fn probe(options: &DoctorOptions) -> HostFacts {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let mut kvm_modules: Vec<String> = read("/proc/modules")
        .map(|t| parse::modules(&t))
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m == "kvm" || m.starts_with("kvm_"))
        .collect();
    // Built-in or module-less kernels have no /proc/modules entry but do have /sys/module/<name>.
    for m in ["kvm", "kvm_intel", "kvm_amd", "kvm_pvm"] {
        if !kvm_modules.iter().any(|k| k == m) && Path::new("/sys/module").join(m).exists() {
            kvm_modules.push(m.to_string());
        }
    }
    let pvm = kvm_modules.iter().any(|m| m == "kvm_pvm");
    HostFacts {
        kvm: probe_kvm(Path::new("/dev/kvm")),
        cpu: read("/proc/cpuinfo")
            .map(|t| parse::cpu_virt(&t))
            .unwrap_or_default(),
        kvm_modules,
        pvm,
        libkrun: probe_libkrun(options),
        libkrunfw: probe_libkrunfw(),
        kernel: options.kernel.as_deref().map(probe_kernel),
        crun: probe_crun(),
        cgroup: probe_cgroup(),
        overlayfs: read("/proc/filesystems")
            .map(|t| parse::filesystems(&t).iter().any(|f| f == "overlay")),
        seccomp_mode: read("/proc/self/status").and_then(|t| parse::seccomp_mode(&t)),
        max_user_namespaces: read("/proc/sys/user/max_user_namespaces")
            .and_then(|t| t.trim().parse().ok()),
        euid: nix::unistd::geteuid().as_raw(),
    }
}

/// `/dev/kvm`: present, a char device, openable read-write, API 12, can create a VM.
pub fn probe_kvm(path: &Path) -> KvmFacts {
    let mut facts = KvmFacts::default();
    let Ok(meta) = std::fs::metadata(path) else {
        return facts;
    };
    facts.exists = true;
    facts.char_device = meta.file_type().is_char_device();
    if !facts.char_device {
        return facts;
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            facts.open_error = Some(e.to_string());
            return facts;
        }
    };
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int; `file` is an open fd.
    let version = unsafe { libc::ioctl(file.as_raw_fd(), nix::request_code_none!(0xAE, 0x00), 0) };
    facts.api_version = Some(version);
    // SAFETY: KVM_CREATE_VM's argument is the machine type (0 = default); it returns a new fd
    // (or -1), which we take ownership of below and close at once.
    let vm = unsafe { libc::ioctl(file.as_raw_fd(), nix::request_code_none!(0xAE, 0x01), 0) };
    if vm < 0 {
        facts.create_vm_error = Some(std::io::Error::last_os_error().to_string());
    } else {
        // SAFETY: `vm` is a fresh fd returned by the kernel and owned by nobody else.
        drop(unsafe { OwnedFd::from_raw_fd(vm) });
    }
    facts
}

/// Symbols every microVM start uses; `krun_set_kernel` too when a custom kernel is configured.
pub fn required_libkrun_symbols(custom_kernel: bool) -> Vec<&'static str> {
    let mut v = vec![
        "krun_set_vm_config",
        "krun_set_root",
        "krun_disable_implicit_vsock",
        "krun_add_vsock",
        "krun_add_vsock_port2",
        "krun_set_console_output",
        "krun_set_exec",
    ];
    if custom_kernel {
        v.push("krun_set_kernel");
    }
    v
}

fn probe_libkrun(options: &DoctorOptions) -> LibkrunFacts {
    match Libkrun::open(options.libkrun.as_deref()) {
        Err(e) => LibkrunFacts {
            load_error: Some(e.to_string()),
            ..Default::default()
        },
        Ok(lib) => {
            let present = lib.symbols();
            let missing_symbols = required_libkrun_symbols(options.kernel.is_some())
                .into_iter()
                .filter(|s| !present.iter().any(|(name, ok)| name == s && *ok))
                .map(str::to_string)
                .collect();
            LibkrunFacts {
                path: Some(lib.path().to_path_buf()),
                real_path: std::fs::canonicalize(lib.path()).ok(),
                load_error: None,
                missing_symbols,
            }
        }
    }
}

fn probe_libkrunfw() -> LibkrunfwFacts {
    let mut errors = Vec::new();
    for name in LIBKRUNFW_NAMES {
        // SAFETY: libkrunfw is a data library (a kernel image plus two getters) with no
        // initialisers of consequence; it is unloaded when `lib` drops at the end of this scope.
        let lib = match unsafe { libloading::Library::new(name) } {
            Ok(lib) => lib,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        // SAFETY: `krunfw_get_kernel` is only looked up (for its address), never called through
        // this type.
        let kernel = unsafe { lib.get::<*const std::ffi::c_void>(b"krunfw_get_kernel") };
        let Ok(kernel) = kernel else {
            errors.push(format!("{name}: no krunfw_get_kernel symbol"));
            continue;
        };
        let path = ffi::loaded_path(*kernel);
        // SAFETY: libkrunfw declares `uint32_t krunfw_get_version(void)` (libkrunfw's
        // bin2cbundle.py), the type we resolve it with.
        let get_version =
            unsafe { lib.get::<unsafe extern "C" fn() -> u32>(b"krunfw_get_version") };
        let abi_version = match get_version {
            // SAFETY: no arguments, returns a constant; `lib` stays loaded during the call.
            Ok(f) => Some(unsafe { f() }),
            Err(_) => None,
        };
        return LibkrunfwFacts {
            path,
            soname: Some(name.to_string()),
            abi_version,
            load_error: None,
        };
    }
    LibkrunfwFacts {
        load_error: Some(errors.join("; ")),
        ..Default::default()
    }
}

fn probe_kernel(path: &Path) -> KernelFacts {
    let format = KernelConfig::from_file(path)
        .map(|k| k.format.to_string())
        .map_err(|e| e.to_string());
    KernelFacts {
        path: path.to_path_buf(),
        format,
    }
}

fn probe_crun() -> CrunFacts {
    let Some(path) = find_in_path("crun") else {
        return CrunFacts {
            error: Some("not found in PATH".into()),
            ..Default::default()
        };
    };
    match std::process::Command::new(&path).arg("--version").output() {
        Err(e) => CrunFacts {
            path: Some(path),
            error: Some(format!("cannot run it: {e}")),
            ..Default::default()
        },
        Ok(out) => match parse::crun_version(&String::from_utf8_lossy(&out.stdout)) {
            Some((version, seccomp)) => CrunFacts {
                path: Some(path),
                version: Some(version),
                seccomp,
                error: None,
            },
            None => CrunFacts {
                path: Some(path),
                error: Some(format!(
                    "unexpected `crun --version` output ({})",
                    out.status
                )),
                ..Default::default()
            },
        },
    }
}

fn probe_cgroup() -> CgroupFacts {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse::cgroup_mounts(&t))
        .unwrap_or_default();
    let mode = parse::cgroup_mode(&mounts);
    let v2_controllers = mounts
        .iter()
        .find(|m| m.version == 2)
        .and_then(|m| std::fs::read_to_string(m.mount_point.join("cgroup.controllers")).ok())
        .map(|t| parse::controllers(&t))
        .unwrap_or_default();
    CgroupFacts {
        mode,
        mounts,
        v2_controllers,
    }
}

/// First executable `name` in `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_kvm_device() {
        let f = probe_kvm(Path::new("/nonexistent/kvm"));
        assert!(!f.exists && f.api_version.is_none());
    }

    #[test]
    fn regular_file_is_not_kvm() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("kvm");
        std::fs::write(&fake, b"").unwrap();
        let f = probe_kvm(&fake);
        assert!(f.exists && !f.char_device && f.api_version.is_none());
    }

    #[test]
    fn probing_this_host_does_not_panic() {
        let facts = probe(&DoctorOptions::default());
        // Every host has a cgroup answer and an euid; the rest depends on the machine.
        let _ = serde_json::to_string(&facts).unwrap();
    }

    #[test]
    fn path_lookup() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("definitely-not-a-command-msb").is_none());
    }
}
