//! The microVM's configuration as plain data, built from a [`LaunchSpec`] and the node's
//! [`MicrovmSettings`], and validated before anything touches libkrun.
//!
//! Everything here is pure (no I/O except [`KernelConfig::from_file`], which sniffs the kernel's
//! format), so every rule is unit-tested without libkrun or KVM.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use microsandbox_wire::guest::mounts::VIRTIOFS_TAG_MAX;
use microsandbox_wire::guest::{GuestMount, GUEST_AGENT_PATH, GUEST_SOCKET_NAME, GUEST_VSOCK_PORT};
use serde::{Deserialize, Serialize};

use crate::runtime::{LaunchMount, LaunchSpec};

/// Smallest guest RAM we accept: libkrunfw's kernel plus the guest agent need about 100 MiB.
pub const MIN_MEMORY_MIB: u32 = 128;
/// `krun_set_vm_config` takes the vCPU count as a `u8`; 0 is rejected by libkrun.
pub const MAX_VCPUS: u32 = u8::MAX as u32;
/// `sun_path` is 108 bytes including the terminating NUL.
pub const UNIX_SOCKET_PATH_MAX: usize = 107;
/// libkrun hands exec path, workdir, rlimits, env and argv to its in-guest init on the *kernel
/// command line* (each value wrapped in double quotes). Linux keeps at most `COMMAND_LINE_SIZE`
/// bytes of it (2048 on x86_64 and arm64); anything longer is silently cut, so we refuse instead.
pub const KERNEL_CMDLINE_MAX: usize = 2048;
/// What libkrun itself puts on the command line before our values (its default kernel flags,
/// `init=/init.krun`, the `KRUN_*=` keys and the ` -- ` separator), rounded up.
pub const KERNEL_CMDLINE_RESERVED: usize = 320;
/// Environment variable carrying the sandbox's hostname to the guest agent: libkrun has no
/// hostname API, so the agent sets it itself (the container runtime sets it through the OCI spec).
pub const HOSTNAME_ENV: &str = "MSB_HOSTNAME";
/// File (in the runtime dir) receiving the guest console (kernel + init output).
pub const CONSOLE_LOG: &str = "console.log";
/// `RLIMIT_NPROC` on Linux (libkrun's rlimit strings take the numeric resource id).
pub const RLIMIT_NPROC: u32 = 6;

/// Arguments of the guest agent inside a microVM (argv without argv\[0\], as `krun_set_exec` wants).
pub fn guest_agent_args() -> Vec<String> {
    vec![
        "--listen".to_string(),
        format!("vsock:{GUEST_VSOCK_PORT}"),
        "--init-mounts".to_string(),
    ]
}

/// Format of a custom guest kernel, as `krun_set_kernel` understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelFormat {
    /// Raw kernel payload (on x86_64 libkrun maps it like libkrunfw's bundled kernel).
    Raw,
    /// Uncompressed `vmlinux` ELF: what x86_64 guests need.
    Elf,
    /// EFI zboot PE image with a gzip payload (arm64).
    PeGz,
    /// arm64 `Image` compressed with bzip2.
    ImageBz2,
    /// arm64 `Image` compressed with gzip.
    ImageGz,
    /// arm64 `Image` compressed with zstd.
    ImageZstd,
}

impl KernelFormat {
    /// The `KRUN_KERNEL_FORMAT_*` value (constants from libkrun-sys, which mirror libkrun.h).
    pub fn krun_value(self) -> u32 {
        match self {
            KernelFormat::Raw => libkrun_sys::KRUN_KERNEL_FORMAT_RAW,
            KernelFormat::Elf => libkrun_sys::KRUN_KERNEL_FORMAT_ELF,
            KernelFormat::PeGz => libkrun_sys::KRUN_KERNEL_FORMAT_PE_GZ,
            KernelFormat::ImageBz2 => libkrun_sys::KRUN_KERNEL_FORMAT_IMAGE_BZ2,
            KernelFormat::ImageGz => libkrun_sys::KRUN_KERNEL_FORMAT_IMAGE_GZ,
            KernelFormat::ImageZstd => libkrun_sys::KRUN_KERNEL_FORMAT_IMAGE_ZSTD,
        }
    }

    /// Recognise a kernel file from its first bytes (at least 0x210 of them for bzImage detection).
    pub fn detect(header: &[u8]) -> Result<Self, String> {
        if header.starts_with(b"\x7fELF") {
            return Ok(KernelFormat::Elf);
        }
        // x86 boot protocol: "HdrS" at 0x202 marks a bzImage, which libkrun cannot load.
        if header.get(0x202..0x206) == Some(b"HdrS") {
            return Err(
                "this is an x86 bzImage, which libkrun cannot boot; give it the \
                        uncompressed vmlinux ELF (the kernel build's `vmlinux`, or \
                        `scripts/extract-vmlinux bzImage > vmlinux`)"
                    .to_string(),
            );
        }
        if header.starts_with(b"MZ") {
            return Ok(KernelFormat::PeGz);
        }
        if header.starts_with(&[0x1f, 0x8b]) {
            return Ok(KernelFormat::ImageGz);
        }
        if header.starts_with(b"BZh") {
            return Ok(KernelFormat::ImageBz2);
        }
        if header.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            return Ok(KernelFormat::ImageZstd);
        }
        Err(
            "unrecognised kernel format (expected a vmlinux ELF, or on arm64 a PE/gzip/bzip2/zstd \
             Image); name the format explicitly"
                .to_string(),
        )
    }
}

impl KernelFormat {
    const ALL: [KernelFormat; 6] = [
        KernelFormat::Raw,
        KernelFormat::Elf,
        KernelFormat::PeGz,
        KernelFormat::ImageBz2,
        KernelFormat::ImageGz,
        KernelFormat::ImageZstd,
    ];

    /// The name used on the command line and in plans.
    pub fn name(self) -> &'static str {
        match self {
            KernelFormat::Raw => "raw",
            KernelFormat::Elf => "elf",
            KernelFormat::PeGz => "pe-gz",
            KernelFormat::ImageBz2 => "image-bz2",
            KernelFormat::ImageGz => "image-gz",
            KernelFormat::ImageZstd => "image-zstd",
        }
    }
}

impl std::fmt::Display for KernelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KernelFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        KernelFormat::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            format!("unknown kernel format {s:?} (raw, elf, pe-gz, image-bz2, image-gz, image-zstd)")
        })
    }
}

/// A guest kernel loaded with `krun_set_kernel` instead of libkrunfw's bundled one. Needed on
/// hosts whose KVM is PVM (only a PVM-guest kernel boots there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    pub path: PathBuf,
    pub format: KernelFormat,
    pub initramfs: Option<PathBuf>,
    /// Kernel command line; `None` lets libkrun use its default.
    pub cmdline: Option<String>,
}

impl KernelConfig {
    /// A kernel whose format is detected from the file's first bytes.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        use std::io::Read;
        let bad = |reason: String| ConfigError::Kernel {
            path: path.to_path_buf(),
            reason,
        };
        let mut header = Vec::with_capacity(1024);
        std::fs::File::open(path)
            .and_then(|f| f.take(1024).read_to_end(&mut header))
            .map_err(|e| bad(format!("cannot read it: {e}")))?;
        let format = KernelFormat::detect(&header).map_err(bad)?;
        Ok(KernelConfig {
            path: path.to_path_buf(),
            format,
            initramfs: None,
            cmdline: None,
        })
    }
}

/// Node-wide microVM settings (from the agent's command line).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MicrovmSettings {
    /// Custom guest kernel; `None` uses libkrunfw's.
    pub kernel: Option<KernelConfig>,
    /// Explicit libkrun shared object; `None` searches `libkrun.so.1` then `libkrun.so`.
    pub libkrun: Option<PathBuf>,
    /// libkrun log level (0 off .. 5 trace); its log goes to the VMM's log file.
    pub log_level: u32,
}

/// A vsock port bridged to a unix socket on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockPort {
    pub port: u32,
    pub host_socket: PathBuf,
    /// `true`: libkrun listens on `host_socket` and forwards each connection to the guest's port
    /// (the guest listens). `false`: the guest dials out and libkrun connects to `host_socket`.
    pub listen: bool,
}

/// A host directory shared with the guest over virtio-fs (a volume or bind mount), mounted by
/// the guest agent (`--mount virtiofs:TAG:...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    pub tag: String,
    pub path: PathBuf,
    /// Enforced by libkrun's virtio-fs server in the VMM (host side), whatever the guest does.
    pub read_only: bool,
}

/// One `krun_set_rlimits` entry, applied by libkrun's init inside the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

impl Rlimit {
    /// libkrun's `RESOURCE=RLIM_CUR:RLIM_MAX` string.
    pub fn to_krun_string(self) -> String {
        format!("{}={}:{}", self.resource, self.soft, self.hard)
    }
}

/// Everything one microVM is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    pub vcpus: u8,
    pub memory_mib: u32,
    /// Host directory exported (virtio-fs) as the guest's `/`.
    pub root: PathBuf,
    pub kernel: Option<KernelConfig>,
    /// Program libkrun's init executes, relative to `root` (the guest agent).
    pub exec_path: String,
    /// Its arguments, without argv\[0\].
    pub argv: Vec<String>,
    /// Its complete environment (never the host's: an explicit list is always passed).
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub vsock_ports: Vec<VsockPort>,
    pub console_output: PathBuf,
    pub rlimits: Vec<Rlimit>,
    /// Extra virtio-fs shares (volumes, binds), in mount order.
    #[serde(default)]
    pub shares: Vec<Share>,
    /// Give the guest network access through libkrun's socket impersonation (TSI): its inet
    /// sockets are opened by the VMM, which runs in the sandbox's network namespace, so the
    /// node's policy rules apply to them. Only for sandboxes with a network.
    #[serde(default)]
    pub tsi: bool,
}

/// A configuration value libkrun would reject or mangle; each variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("vcpus: {value} is outside 1..={MAX_VCPUS} (libkrun takes the vCPU count as a u8)")]
    Vcpus { value: u32 },
    #[error("memory_mib: {value} MiB is below the minimum of {MIN_MEMORY_MIB} MiB")]
    MemoryMib { value: u32 },
    #[error("root {path:?}: {reason}")]
    Root { path: PathBuf, reason: String },
    #[error("kernel {path:?}: {reason}")]
    Kernel { path: PathBuf, reason: String },
    #[error("kernel initramfs {path:?}: {reason}")]
    Initramfs { path: PathBuf, reason: String },
    #[error("kernel cmdline: {reason}")]
    KernelCmdline { reason: String },
    #[error("exec_path {value:?}: {reason}")]
    ExecPath { value: String, reason: String },
    #[error("argv[{index}] {value:?}: {reason}")]
    Argv {
        index: usize,
        value: String,
        reason: String,
    },
    #[error("env name {name:?}: {reason}")]
    EnvName { name: String, reason: String },
    #[error("env {name}: value {reason}")]
    EnvValue { name: String, reason: String },
    #[error("workdir {value:?}: {reason}")]
    Workdir { value: String, reason: String },
    #[error("vsock port {port}: {reason}")]
    VsockPort { port: u32, reason: String },
    #[error("vsock host socket {path:?} is {len} bytes long; unix socket paths are limited to {UNIX_SOCKET_PATH_MAX} (use a shorter state dir)")]
    SocketPath { path: PathBuf, len: usize },
    #[error("console_output {path:?}: {reason}")]
    ConsoleOutput { path: PathBuf, reason: String },
    #[error("mount {dest:?}: {reason}")]
    Mount { dest: String, reason: String },
    #[error("rlimit {resource}: soft limit {soft} exceeds hard limit {hard}")]
    Rlimit { resource: u32, soft: u64, hard: u64 },
    #[error("exec path, workdir, rlimits, env and argv take about {len} bytes of the guest kernel command line, over the {max}-byte limit (libkrun passes them there); shrink the environment")]
    CmdlineTooLong { len: usize, max: usize },
}

impl VmConfig {
    /// The VM for one sandbox: the guest agent as init's program, its vsock port bridged to
    /// `socket_dir/agent.sock`, the console in `runtime_dir/console.log`.
    pub fn from_launch(spec: &LaunchSpec, settings: &MicrovmSettings) -> Result<Self, ConfigError> {
        let vcpus = u8::try_from(spec.cpus)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or(ConfigError::Vcpus { value: spec.cpus })?;
        let mut env = spec.env.clone();
        env.retain(|(k, _)| k != HOSTNAME_ENV);
        env.push((HOSTNAME_ENV.to_string(), spec.hostname.clone()));
        let rlimits = spec
            .pids_limit
            .map(|n| {
                // Inside a VM this only bounds non-root guest users (root bypasses RLIMIT_NPROC);
                // the host is protected by the VM's fixed RAM, not by this.
                vec![Rlimit {
                    resource: RLIMIT_NPROC,
                    soft: u64::from(n),
                    hard: u64::from(n),
                }]
            })
            .unwrap_or_default();
        let (shares, mounts) = guest_mounts(&spec.mounts);
        let mut argv = guest_agent_args();
        argv.extend(
            mounts
                .iter()
                .flat_map(|m| ["--mount".to_string(), m.to_arg()]),
        );
        let config = VmConfig {
            shares,
            tsi: spec.netns.is_some(),
            vcpus,
            memory_mib: spec.memory_mib,
            root: spec.rootfs.clone(),
            kernel: settings.kernel.clone(),
            exec_path: GUEST_AGENT_PATH.to_string(),
            argv,
            env,
            workdir: spec.workdir.clone(),
            vsock_ports: vec![VsockPort {
                port: GUEST_VSOCK_PORT,
                host_socket: spec.socket_dir.join(GUEST_SOCKET_NAME),
                listen: true,
            }],
            console_output: spec.runtime_dir.join(CONSOLE_LOG),
            rlimits,
        };
        config.validate()?;
        Ok(config)
    }

    /// Check every field against what libkrun (and the guest kernel command line) accepts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 {
            return Err(ConfigError::Vcpus { value: 0 });
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(ConfigError::MemoryMib {
                value: self.memory_mib,
            });
        }
        host_path(&self.root).map_err(|reason| ConfigError::Root {
            path: self.root.clone(),
            reason,
        })?;
        if let Some(kernel) = &self.kernel {
            validate_kernel(kernel)?;
        }
        guest_value(&self.exec_path, true).map_err(|reason| ConfigError::ExecPath {
            value: self.exec_path.clone(),
            reason,
        })?;
        for (index, arg) in self.argv.iter().enumerate() {
            guest_value(arg, false).map_err(|reason| ConfigError::Argv {
                index,
                value: arg.clone(),
                reason,
            })?;
        }
        let mut names = BTreeSet::new();
        for (name, value) in &self.env {
            env_name(name).map_err(|reason| ConfigError::EnvName {
                name: name.clone(),
                reason,
            })?;
            if !names.insert(name.as_str()) {
                return Err(ConfigError::EnvName {
                    name: name.clone(),
                    reason: "is set twice".into(),
                });
            }
            guest_value(value, false).map_err(|reason| ConfigError::EnvValue {
                name: name.clone(),
                reason,
            })?;
        }
        if let Some(dir) = &self.workdir {
            guest_value(dir, true).map_err(|reason| ConfigError::Workdir {
                value: dir.clone(),
                reason,
            })?;
        }
        let mut ports = BTreeSet::new();
        for v in &self.vsock_ports {
            if v.port == 0 || v.port == u32::MAX {
                return Err(ConfigError::VsockPort {
                    port: v.port,
                    reason: "is reserved".into(),
                });
            }
            if !ports.insert(v.port) {
                return Err(ConfigError::VsockPort {
                    port: v.port,
                    reason: "is mapped twice".into(),
                });
            }
            host_path(&v.host_socket).map_err(|reason| ConfigError::VsockPort {
                port: v.port,
                reason: format!("host socket: {reason}"),
            })?;
            let len = v.host_socket.as_os_str().len();
            if len > UNIX_SOCKET_PATH_MAX {
                return Err(ConfigError::SocketPath {
                    path: v.host_socket.clone(),
                    len,
                });
            }
        }
        host_path(&self.console_output).map_err(|reason| ConfigError::ConsoleOutput {
            path: self.console_output.clone(),
            reason,
        })?;
        let mut tags = BTreeSet::new();
        for s in &self.shares {
            let bad = |reason: String| ConfigError::Mount {
                dest: s.tag.clone(),
                reason,
            };
            if s.tag.is_empty() || s.tag.len() > VIRTIOFS_TAG_MAX || !tags.insert(s.tag.as_str()) {
                return Err(bad(format!(
                    "virtio-fs tag {:?} is empty, longer than {VIRTIOFS_TAG_MAX} bytes or used twice",
                    s.tag
                )));
            }
            host_path(&s.path).map_err(|r| bad(format!("host path {:?} {r}", s.path)))?;
        }
        for r in &self.rlimits {
            if r.soft > r.hard {
                return Err(ConfigError::Rlimit {
                    resource: r.resource,
                    soft: r.soft,
                    hard: r.hard,
                });
            }
        }
        let len = self.estimated_cmdline_len();
        if len > KERNEL_CMDLINE_MAX {
            return Err(ConfigError::CmdlineTooLong {
                len,
                max: KERNEL_CMDLINE_MAX,
            });
        }
        Ok(())
    }

    /// Bytes of guest kernel command line this configuration needs (an upper estimate that
    /// mirrors how libkrun quotes and joins the values).
    pub fn estimated_cmdline_len(&self) -> usize {
        let quoted = |s: usize| s + 3; // `"…"` plus the separating space
        let mut len = KERNEL_CMDLINE_RESERVED + self.exec_path.len();
        len += self.workdir.as_ref().map_or(0, |w| w.len());
        len += self
            .rlimits
            .iter()
            .map(|r| r.to_krun_string().len() + 1)
            .sum::<usize>();
        len += self
            .env
            .iter()
            .map(|(k, v)| quoted(k.len() + 1 + v.len()))
            .sum::<usize>();
        len += self.argv.iter().map(|a| quoted(a.len())).sum::<usize>();
        len += self
            .kernel
            .as_ref()
            .and_then(|k| k.cmdline.as_ref())
            .map_or(0, |c| c.len() + 1);
        len
    }
}

fn validate_kernel(kernel: &KernelConfig) -> Result<(), ConfigError> {
    host_path(&kernel.path).map_err(|reason| ConfigError::Kernel {
        path: kernel.path.clone(),
        reason,
    })?;
    if let Some(initramfs) = &kernel.initramfs {
        host_path(initramfs).map_err(|reason| ConfigError::Initramfs {
            path: initramfs.clone(),
            reason,
        })?;
    }
    if let Some(cmdline) = &kernel.cmdline {
        if cmdline.chars().any(|c| c.is_control()) {
            return Err(ConfigError::KernelCmdline {
                reason: "contains a control character (NUL, newline…)".into(),
            });
        }
    }
    Ok(())
}

/// A host path handed to libkrun: absolute, and representable as a C string.
/// The virtio-fs shares and guest mounts of a sandbox's mounts (tags `msb0`, `msb1`, ...). Pure.
pub fn guest_mounts(mounts: &[LaunchMount]) -> (Vec<Share>, Vec<GuestMount>) {
    let mut shares = Vec::new();
    let mut guest = Vec::new();
    for m in mounts {
        match m {
            LaunchMount::Bind {
                source,
                dest,
                readonly,
            } => {
                let tag = format!("msb{}", shares.len());
                shares.push(Share {
                    tag: tag.clone(),
                    path: source.clone(),
                    read_only: *readonly,
                });
                guest.push(GuestMount::Virtiofs {
                    tag,
                    dest: dest.clone(),
                    readonly: *readonly,
                });
            }
            LaunchMount::Tmpfs { dest, size_mib } => guest.push(GuestMount::Tmpfs {
                dest: dest.clone(),
                size_mib: *size_mib,
            }),
        }
    }
    (shares, guest)
}

fn host_path(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err("must be an absolute path".into());
    }
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err("contains a NUL byte".into());
    }
    if path.to_str().is_none() {
        return Err("is not valid UTF-8 (libkrun rejects such paths)".into());
    }
    Ok(())
}

/// A string that travels on the guest kernel command line inside double quotes.
fn guest_value(value: &str, absolute_path: bool) -> Result<(), String> {
    if absolute_path && !value.starts_with('/') {
        return Err("must be an absolute path inside the guest".into());
    }
    if value.contains('"') {
        return Err("contains '\"', which libkrun cannot quote on the kernel command line".into());
    }
    if value.chars().any(|c| c.is_control()) {
        return Err("contains a control character (NUL, newline, tab…)".into());
    }
    Ok(())
}

/// Environment names become `NAME=value` kernel parameters: the kernel keeps names containing
/// a '.' (module parameters) for itself, so only portable shell names are accepted.
fn env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err("is empty".into());
    };
    if !(first.is_ascii_alphabetic() || first == '_') {
        return Err("must start with a letter or '_'".into());
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("may only contain ASCII letters, digits and '_'".into());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec() -> LaunchSpec {
        LaunchSpec {
            id: "msb-test".into(),
            hostname: "test".into(),
            rootfs: "/var/lib/msb/sandboxes/test/rootfs".into(),
            runtime_dir: "/var/lib/msb/sandboxes/test/run".into(),
            guest_agent: "/usr/libexec/microsandbox-guest".into(),
            socket_dir: "/var/lib/msb/sandboxes/test/sock".into(),
            memory_mib: 512,
            cpus: 2,
            pids_limit: Some(256),
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("LANG".into(), "C.UTF-8".into()),
            ],
            workdir: Some("/work".into()),
            mounts: Vec::new(),
            netns: None,
        }
    }

    #[test]
    fn mounts_become_shares_and_guest_arguments() {
        let mut s = spec();
        s.mounts = vec![
            LaunchMount::Bind {
                source: "/srv/a".into(),
                dest: "/a".into(),
                readonly: true,
            },
            LaunchMount::Tmpfs {
                dest: "/t".into(),
                size_mib: 8,
            },
        ];
        let cfg = VmConfig::from_launch(&s, &MicrovmSettings::default()).unwrap();
        assert_eq!(
            cfg.shares,
            [Share {
                tag: "msb0".into(),
                path: "/srv/a".into(),
                read_only: true
            }]
        );
        assert_eq!(
            cfg.argv[3..],
            ["--mount", "virtiofs:msb0:ro:/a", "--mount", "tmpfs:8:/t"]
        );
        // A destination libkrun cannot carry on the kernel command line is refused up front.
        s.mounts = vec![LaunchMount::Tmpfs {
            dest: "/a\"b".into(),
            size_mib: 8,
        }];
        assert!(matches!(
            VmConfig::from_launch(&s, &MicrovmSettings::default()),
            Err(ConfigError::Argv { .. })
        ));
        s.mounts = vec![LaunchMount::Bind {
            source: "relative".into(),
            dest: "/a".into(),
            readonly: false,
        }];
        assert!(matches!(
            VmConfig::from_launch(&s, &MicrovmSettings::default()),
            Err(ConfigError::Mount { .. })
        ));
    }

    #[test]
    fn builds_from_launch_spec() {
        let cfg = VmConfig::from_launch(&spec(), &MicrovmSettings::default()).unwrap();
        assert_eq!(cfg.vcpus, 2);
        assert_eq!(cfg.memory_mib, 512);
        assert_eq!(cfg.exec_path, GUEST_AGENT_PATH);
        assert_eq!(cfg.argv, ["--listen", "vsock:7000", "--init-mounts"]);
        assert_eq!(cfg.vsock_ports.len(), 1);
        assert_eq!(cfg.vsock_ports[0].port, GUEST_VSOCK_PORT);
        assert!(cfg.vsock_ports[0].listen);
        assert_eq!(
            cfg.vsock_ports[0].host_socket,
            Path::new("/var/lib/msb/sandboxes/test/sock/agent.sock")
        );
        assert_eq!(
            cfg.console_output,
            Path::new("/var/lib/msb/sandboxes/test/run/console.log")
        );
        assert!(cfg.env.contains(&("PATH".into(), "/usr/bin:/bin".into())));
        assert!(cfg.env.contains(&(HOSTNAME_ENV.into(), "test".into())));
        assert_eq!(
            cfg.rlimits,
            [Rlimit {
                resource: RLIMIT_NPROC,
                soft: 256,
                hard: 256
            }]
        );
    }

    #[test]
    fn vcpus_must_fit_libkrun() {
        for bad in [0, 256, 1000] {
            let mut s = spec();
            s.cpus = bad;
            assert_eq!(
                VmConfig::from_launch(&s, &MicrovmSettings::default()),
                Err(ConfigError::Vcpus { value: bad })
            );
        }
        let mut s = spec();
        s.cpus = 255;
        assert!(VmConfig::from_launch(&s, &MicrovmSettings::default()).is_ok());
    }

    #[test]
    fn memory_has_a_floor() {
        let mut s = spec();
        s.memory_mib = 64;
        let err = VmConfig::from_launch(&s, &MicrovmSettings::default()).unwrap_err();
        assert_eq!(err, ConfigError::MemoryMib { value: 64 });
        assert!(err.to_string().starts_with("memory_mib:"));
    }

    #[test]
    fn env_names_and_values_are_checked() {
        let check = |name: &str, value: &str| {
            let mut s = spec();
            s.env = vec![(name.into(), value.into())];
            VmConfig::from_launch(&s, &MicrovmSettings::default())
        };
        assert!(matches!(check("", "x"), Err(ConfigError::EnvName { .. })));
        assert!(matches!(check("1A", "x"), Err(ConfigError::EnvName { .. })));
        assert!(matches!(
            check("a.b", "x"),
            Err(ConfigError::EnvName { .. })
        ));
        assert!(matches!(
            check("A=B", "x"),
            Err(ConfigError::EnvName { .. })
        ));
        assert!(matches!(
            check("A", "say \"hi\""),
            Err(ConfigError::EnvValue { .. })
        ));
        assert!(matches!(
            check("A", "two\nlines"),
            Err(ConfigError::EnvValue { .. })
        ));
        assert!(check("_OK_1", "with spaces and = signs").is_ok());
        let mut s = spec();
        s.env.push(("PATH".into(), "/again".into()));
        assert!(matches!(
            VmConfig::from_launch(&s, &MicrovmSettings::default()),
            Err(ConfigError::EnvName { reason, .. }) if reason == "is set twice"
        ));
    }

    #[test]
    fn hostname_env_is_ours() {
        let mut s = spec();
        s.env.push((HOSTNAME_ENV.into(), "spoofed".into()));
        let cfg = VmConfig::from_launch(&s, &MicrovmSettings::default()).unwrap();
        let values: Vec<_> = cfg.env.iter().filter(|(k, _)| k == HOSTNAME_ENV).collect();
        assert_eq!(values, [&(HOSTNAME_ENV.to_string(), "test".to_string())]);
    }

    #[test]
    fn paths_are_checked() {
        let mut s = spec();
        s.rootfs = "relative/rootfs".into();
        assert!(matches!(
            VmConfig::from_launch(&s, &MicrovmSettings::default()),
            Err(ConfigError::Root { .. })
        ));
        let mut s = spec();
        s.workdir = Some("work".into());
        assert!(matches!(
            VmConfig::from_launch(&s, &MicrovmSettings::default()),
            Err(ConfigError::Workdir { .. })
        ));
        let mut s = spec();
        s.socket_dir = PathBuf::from(format!("/{}", "d".repeat(100)));
        let err = VmConfig::from_launch(&s, &MicrovmSettings::default()).unwrap_err();
        assert!(
            matches!(err, ConfigError::SocketPath { len: 112, .. }),
            "{err}"
        );
    }

    #[test]
    fn kernel_is_checked() {
        let mut settings = MicrovmSettings {
            kernel: Some(KernelConfig {
                path: "/boot/vmlinux-pvm".into(),
                format: KernelFormat::Elf,
                initramfs: None,
                cmdline: Some("console=hvc0 pti=off".into()),
            }),
            ..Default::default()
        };
        assert!(VmConfig::from_launch(&spec(), &settings).is_ok());
        settings.kernel.as_mut().unwrap().cmdline = Some("a\nb".into());
        assert!(matches!(
            VmConfig::from_launch(&spec(), &settings),
            Err(ConfigError::KernelCmdline { .. })
        ));
        settings.kernel.as_mut().unwrap().cmdline = None;
        settings.kernel.as_mut().unwrap().path = "vmlinux".into();
        assert!(matches!(
            VmConfig::from_launch(&spec(), &settings),
            Err(ConfigError::Kernel { .. })
        ));
    }

    #[test]
    fn oversized_environment_is_refused() {
        let mut s = spec();
        s.env = (0..40)
            .map(|i| (format!("VAR_{i}"), "x".repeat(50)))
            .collect();
        let err = VmConfig::from_launch(&s, &MicrovmSettings::default()).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::CmdlineTooLong {
                    max: KERNEL_CMDLINE_MAX,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn kernel_format_detection() {
        assert_eq!(
            KernelFormat::detect(b"\x7fELF\x02\x01\x01"),
            Ok(KernelFormat::Elf)
        );
        assert_eq!(KernelFormat::detect(b"MZ\x00\x00"), Ok(KernelFormat::PeGz));
        assert_eq!(
            KernelFormat::detect(&[0x1f, 0x8b, 8, 0]),
            Ok(KernelFormat::ImageGz)
        );
        assert_eq!(KernelFormat::detect(b"BZh91AY"), Ok(KernelFormat::ImageBz2));
        assert_eq!(
            KernelFormat::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Ok(KernelFormat::ImageZstd)
        );
        let mut bzimage = vec![0u8; 0x210];
        bzimage[0x202..0x206].copy_from_slice(b"HdrS");
        assert!(KernelFormat::detect(&bzimage)
            .unwrap_err()
            .contains("vmlinux"));
        assert!(KernelFormat::detect(b"garbage").is_err());
        assert_eq!("pe-gz".parse::<KernelFormat>(), Ok(KernelFormat::PeGz));
        assert!("zip".parse::<KernelFormat>().is_err());
        assert_eq!(KernelFormat::Elf.krun_value(), 1);
        assert_eq!(KernelFormat::ImageZstd.krun_value(), 5);
    }

    #[test]
    fn kernel_from_file_sniffs_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        std::fs::write(&path, b"\x7fELF\x02\x01\x01\x00rest").unwrap();
        let k = KernelConfig::from_file(&path).unwrap();
        assert_eq!(k.format, KernelFormat::Elf);
        assert!(matches!(
            KernelConfig::from_file(&dir.path().join("missing")),
            Err(ConfigError::Kernel { .. })
        ));
    }
}
