//! [`MicrovmRuntime`]: one VMM process (`microsandbox-agent vmm --plan …`) per sandbox.

use std::collections::HashMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use microsandbox_wire::api::Isolation;
use microsandbox_wire::guest::GUEST_AGENT_PATH;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

use super::boot::BootFailure;
use super::config::{MicrovmSettings, VmConfig, CONSOLE_LOG};
use super::plan::{KrunCall, VmPlan};
use crate::runtime::jail::cgroup::{self, CgroupLimits, CgroupMode, CgroupPaths, CGROUP_ROOT};
use crate::runtime::jail::VmmJail;
use crate::runtime::procfs;
use crate::runtime::{
    HostUsage, LaunchMount, LaunchSpec, Launched, Liveness, Runtime, RuntimeError,
};

/// Log of the VMM process (its stdout/stderr: our messages and libkrun's), in the runtime dir.
pub const VMM_LOG: &str = "vmm.log";
/// Default time for the guest agent to answer on its socket after the VMM starts.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// Memory a VMM may use beyond its guest's RAM (its own threads, virtio queues, file caches).
pub const VMM_OVERHEAD_MIB: u64 = 256;
/// Tasks (threads) a VMM may have: vCPUs, device workers, virtio-fs threads.
pub const VMM_MAX_TASKS: u32 = 512;

/// Runs sandboxes as libkrun microVMs.
pub struct MicrovmRuntime {
    settings: MicrovmSettings,
    vmm_exe: PathBuf,
    boot_timeout: Duration,
    /// VMMs started by this agent process, by sandbox id; kept to reap them. VMMs adopted after
    /// an agent restart are not here and are recognised by their command line instead.
    children: Arc<Mutex<HashMap<String, Child>>>,
    /// How this host mounts cgroups, and where: each VMM runs in a cgroup of its own.
    cgroups: CgroupMode,
    cgroup_root: PathBuf,
}

impl MicrovmRuntime {
    /// A runtime that starts VMMs by re-executing the current binary (`<exe> vmm --plan …`).
    /// Does not check the host: see [`MicrovmRuntime::probe`].
    pub fn new(settings: MicrovmSettings) -> Self {
        // /proc/self/exe still works if the binary was replaced on disk since we started.
        let vmm_exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        MicrovmRuntime {
            settings,
            vmm_exe,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            children: Arc::default(),
            cgroups: CgroupMode::detect(),
            cgroup_root: PathBuf::from(CGROUP_ROOT),
        }
    }

    /// Make the VMMs' cgroups below `root` in `mode` instead of the host's (tests).
    pub fn with_cgroups(mut self, mode: CgroupMode, root: impl Into<PathBuf>) -> Self {
        self.cgroups = mode;
        self.cgroup_root = root.into();
        self
    }

    fn cgroup(&self, id: &str) -> CgroupPaths {
        CgroupPaths::under(&self.cgroup_root, self.cgroups, &cgroup::sandbox_cgroup(id))
    }

    /// [`MicrovmRuntime::new`] if this host can boot microVMs with these settings, otherwise
    /// [`RuntimeError::Unavailable`] with doctor's precise reason.
    pub fn probe(settings: MicrovmSettings) -> Result<Self, RuntimeError> {
        let report = crate::doctor::diagnose_with(&crate::doctor::DoctorOptions::from(&settings));
        match crate::doctor::microvm_verdict(&report) {
            Ok(()) => Ok(MicrovmRuntime::new(settings)),
            Err(reason) => Err(RuntimeError::Unavailable {
                isolation: Isolation::Microvm,
                reason,
            }),
        }
    }

    /// Use another binary for the VMM (it must implement the `vmm --plan <file>` subcommand),
    /// e.g. the agent binary from an integration test.
    pub fn with_vmm_exe(mut self, exe: impl Into<PathBuf>) -> Self {
        self.vmm_exe = exe.into();
        self
    }

    pub fn with_boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    pub fn settings(&self) -> &MicrovmSettings {
        &self.settings
    }

    /// Validate, write the plan, put the guest agent into the root and spawn the VMM (blocking).
    fn prepare_and_spawn(
        settings: &MicrovmSettings,
        vmm_exe: &Path,
        spec: &LaunchSpec,
        cgroup: &CgroupPaths,
    ) -> Result<(Child, PathBuf), RuntimeError> {
        let config = VmConfig::from_launch(spec, settings)
            .map_err(|e| command_error("microVM configuration", e))?;
        if !spec.rootfs.is_dir() {
            return Err(command_error(
                "microVM root",
                format!("{:?} is not a directory", spec.rootfs),
            ));
        }
        std::fs::create_dir_all(&spec.runtime_dir)?;
        std::fs::create_dir_all(&spec.socket_dir)?;
        install_guest_agent(&spec.guest_agent, &spec.rootfs)?;
        let mut plan = VmPlan::build(&spec.id, &config, settings);
        plan.netns = spec.netns.clone();
        let limits = CgroupLimits {
            memory_bytes: (u64::from(config.memory_mib) + VMM_OVERHEAD_MIB) << 20,
            cpus: u32::from(config.vcpus),
            pids: VMM_MAX_TASKS,
        };
        plan.jail = VmmJail {
            cgroup_procs: cgroup
                .create(&limits)
                .map_err(|e| command_error("the VMM's cgroup", e))?,
            seccomp: true,
        };
        let plan_path = spec.runtime_dir.join(procfs::plan_file_name(&spec.id));
        plan.write(&plan_path)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(spec.runtime_dir.join(VMM_LOG))?;
        let mut cmd = Command::new(vmm_exe);
        cmd.arg("vmm")
            .arg("--plan")
            .arg(&plan_path)
            // libkrun names the VMM thread "VM:$HOSTNAME".
            .env("HOSTNAME", &spec.id)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: the closure runs between fork and exec and only calls setsid(2), which is
        // async-signal-safe and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(|e| {
            command_error("starting the VMM", format!("{}: {e}", vmm_exe.display()))
        })?;
        let socket = config.vsock_ports[0].host_socket.clone();
        Ok((child, socket))
    }

    /// Wait until the guest agent answers on `socket`, or the VMM dies, or time runs out.
    async fn wait_ready(&self, spec: &LaunchSpec, socket: &Path) -> Result<(), RuntimeError> {
        let started = Instant::now();
        loop {
            let exited = {
                let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
                children
                    .get_mut(&spec.id)
                    .and_then(|c| c.try_wait().ok().flatten())
            };
            if let Some(status) = exited {
                let log = logs(spec);
                let failure = BootFailure::classify(status.code(), &status.to_string(), &log);
                return Err(RuntimeError::BootFailed { failure, log });
            }
            if guest_answers(socket).await {
                return Ok(());
            }
            if started.elapsed() >= self.boot_timeout {
                return Err(RuntimeError::GuestTimeout(self.boot_timeout, logs(spec)));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The VMM's arguments if `launched.pid` is still this sandbox's VMM.
    fn our_vmm(launched: &Launched) -> Option<(u32, Vec<String>)> {
        let pid = launched.pid?;
        let args = procfs::cmdline(pid);
        procfs::vmm_plan_arg(&args, &launched.id)?;
        Some((pid, args))
    }

    /// SIGKILL and reap a VMM this process started; `false` if it has none for `id`.
    async fn kill_and_reap(&self, id: &str) -> bool {
        let Some(mut child) = self
            .children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
        else {
            return false;
        };
        let _ = child.kill();
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        true
    }
}

#[async_trait]
impl Runtime for MicrovmRuntime {
    fn isolation(&self) -> Isolation {
        Isolation::Microvm
    }

    async fn start(&self, spec: &LaunchSpec) -> Result<Launched, RuntimeError> {
        // virtio-fs shares directories; a missing one would panic a libkrun vCPU thread and
        // hang the VM instead of failing, so both are refused here.
        for m in &spec.mounts {
            if let LaunchMount::Bind { source, dest, .. } = m {
                if !source.is_dir() {
                    return Err(RuntimeError::InvalidMount {
                        dest: dest.clone(),
                        reason: format!(
                            "{} is not a directory; microVMs share directories only (virtio-fs), bind its directory instead",
                            source.display()
                        ),
                    });
                }
            }
        }
        {
            let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(child) = children.get_mut(&spec.id) {
                if let Ok(None) = child.try_wait() {
                    let detail = format!("{} already runs (VMM pid {})", spec.id, child.id());
                    return Err(command_error("microVM start", detail));
                }
                children.remove(&spec.id);
            }
        }
        if self.cgroups == CgroupMode::None {
            return Err(RuntimeError::Unavailable {
                isolation: Isolation::Microvm,
                reason: "no cgroup file system at /sys/fs/cgroup: a VMM cannot be confined".into(),
            });
        }
        let (settings, exe, owned) = (self.settings.clone(), self.vmm_exe.clone(), spec.clone());
        let cgroup = self.cgroup(&spec.id);
        let cg = cgroup.clone();
        let spawned = tokio::task::spawn_blocking(move || {
            Self::prepare_and_spawn(&settings, &exe, &owned, &cg)
        })
        .await
        .map_err(|e| command_error("starting the VMM", e))
        .and_then(|r| r);
        let (child, socket) = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                cgroup.remove();
                return Err(e);
            }
        };
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.id.clone(), child);
        if let Err(e) = self.wait_ready(spec, &socket).await {
            self.kill_and_reap(&spec.id).await;
            crate::cleanup::remove_file(&socket);
            cgroup.remove();
            return Err(e);
        }
        Ok(Launched {
            id: spec.id.clone(),
            isolation: Isolation::Microvm,
            pid: Some(pid),
            guest_socket: socket,
            cgroup: Some(cgroup::sandbox_cgroup(&spec.id)),
        })
    }

    async fn signal(&self, launched: &Launched, signal: i32) -> Result<(), RuntimeError> {
        let signal = Signal::try_from(signal).map_err(|e| command_error("signal", e))?;
        // Signal only a process that is provably this sandbox's VMM (PIDs get reused).
        let Some((pid, _)) = Self::our_vmm(launched) else {
            return Ok(());
        };
        kill(Pid::from_raw(pid_t(pid)), signal)
            .map_err(|e| command_error(&format!("kill {pid}"), e))
    }

    async fn freeze(&self, launched: &Launched, frozen: bool) -> Result<(), RuntimeError> {
        // The VMM's cgroup (v2) freezes every thread, vCPUs included, without the VMM seeing a
        // signal; elsewhere SIGSTOP/SIGCONT of the VMM process does the same.
        if let Some(cg) = &launched.cgroup {
            let paths = CgroupPaths::under(&self.cgroup_root, self.cgroups, cg);
            let done = tokio::task::spawn_blocking(move || paths.freeze(frozen))
                .await
                .map_err(|e| command_error("freeze", e))?
                .map_err(|e| command_error("freeze the VMM's cgroup", e))?;
            if done {
                return Ok(());
            }
        }
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        self.signal(launched, signal).await
    }

    async fn liveness(&self, launched: &Launched) -> Liveness {
        {
            let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(child) = children.get_mut(&launched.id) {
                return match child.try_wait() {
                    Ok(None) => Liveness::Running,
                    _ => Liveness::Stopped,
                };
            }
        }
        match Self::our_vmm(launched) {
            Some((pid, _)) => match procfs::stat(pid) {
                Some(s) if s.state != 'Z' && s.state != 'X' => Liveness::Running,
                _ => Liveness::Stopped,
            },
            None => Liveness::Unknown,
        }
    }

    async fn cleanup(&self, launched: &Launched) -> Result<(), RuntimeError> {
        if !self.kill_and_reap(&launched.id).await {
            // Adopted VMM (started by an earlier agent): kill it and wait for it to vanish.
            if let Some((pid, _)) = Self::our_vmm(launched) {
                let _ = kill(Pid::from_raw(pid_t(pid)), Signal::SIGKILL);
                let deadline = Instant::now() + Duration::from_secs(5);
                while Self::our_vmm(launched).is_some() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if Self::our_vmm(launched).is_some() {
                    return Err(command_error(
                        "stopping the VMM",
                        format!("pid {pid} survived SIGKILL for 5 s"),
                    ));
                }
            }
        }
        if launched.cgroup.is_some() {
            self.cgroup(&launched.id).remove();
        }
        match std::fs::remove_file(&launched.guest_socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn usage(&self, launched: &Launched) -> HostUsage {
        let Some((pid, args)) = Self::our_vmm(launched) else {
            return HostUsage::default();
        };
        let memory_limit_bytes = procfs::vmm_plan_arg(&args, &launched.id)
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| VmPlan::parse(&b).ok())
            .and_then(|plan| {
                plan.calls.iter().find_map(|c| match c {
                    KrunCall::SetVmConfig { memory_mib, .. } => Some(u64::from(*memory_mib) << 20),
                    _ => None,
                })
            });
        let jail = match &launched.cgroup {
            Some(_) => self.cgroup(&launched.id).usage(),
            None => HostUsage::default(),
        };
        HostUsage {
            // The VMM's resident memory: guest RAM it has touched plus the VMM's own.
            memory_bytes: procfs::rss_bytes(pid),
            memory_limit_bytes,
            cpu_usage_us: procfs::stat(pid)
                .map(|s| s.cpu_ticks.saturating_mul(1_000_000) / procfs::clock_ticks_per_second()),
            oom_kills: jail.oom_kills,
            pids: jail.pids,
        }
    }
}

/// Copy the guest agent to [`GUEST_AGENT_PATH`] inside `rootfs` (virtio-fs has no bind mounts).
/// The root comes from an untrusted image, so nothing in it is followed: a `.msb` that is not a
/// real directory is replaced, and the binary is written to a fresh file and renamed into place.
pub fn install_guest_agent(agent: &Path, rootfs: &Path) -> Result<(), RuntimeError> {
    let relative = GUEST_AGENT_PATH.trim_start_matches('/');
    let target = rootfs.join(relative);
    let dir = target.parent().unwrap_or(rootfs);
    for ancestor in relative_dirs(rootfs, dir) {
        match std::fs::symlink_metadata(&ancestor) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                std::fs::remove_file(&ancestor)?;
                std::fs::create_dir(&ancestor)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&ancestor)?,
            Err(e) => return Err(e.into()),
        }
    }
    let tmp = dir.join(format!(".agent.{}.tmp", std::process::id()));
    crate::cleanup::remove_file(&tmp);
    let mut src = std::fs::File::open(agent)
        .map_err(|e| command_error("guest agent", format!("{}: {e}", agent.display())))?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o755)
        .open(&tmp)?;
    std::io::copy(&mut src, &mut dst)?;
    dst.set_permissions(std::fs::Permissions::from_mode(0o755))?;
    drop(dst);
    std::fs::rename(&tmp, &target)?;
    Ok(())
}

/// `dir` and its ancestors below `root`, outermost first.
fn relative_dirs(root: &Path, dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| *a != root && a.starts_with(root))
        .map(Path::to_path_buf)
        .collect();
    dirs.reverse();
    dirs
}

/// Does something accept connections on `socket` and keep them open? libkrun accepts on the
/// host socket as soon as the VMM runs, then closes the connection if nothing listens on the
/// guest's vsock port yet; the guest agent instead waits silently for our `Hello`.
async fn guest_answers(socket: &Path) -> bool {
    let Ok(mut stream) = tokio::net::UnixStream::connect(socket).await else {
        return false;
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(150), stream.read(&mut byte)).await {
        Err(_) => true,     // still open, nothing said: the agent is waiting for us
        Ok(Ok(n)) => n > 0, // 0 = closed by libkrun: no listener in the guest yet
        Ok(Err(_)) => false,
    }
}

/// The end of the VMM log and the guest console, for error messages.
fn logs(spec: &LaunchSpec) -> String {
    let vmm = procfs::tail(&spec.runtime_dir.join(VMM_LOG), 20);
    let console = procfs::tail(&spec.runtime_dir.join(CONSOLE_LOG), 20);
    format!("--- {VMM_LOG} (last lines) ---\n{vmm}\n--- {CONSOLE_LOG} (last lines) ---\n{console}")
}

fn command_error(what: &str, detail: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Command {
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

fn pid_t(pid: u32) -> libc::pid_t {
    libc::pid_t::try_from(pid).unwrap_or(libc::pid_t::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::microvm::config::tests::spec;

    #[test]
    fn guest_agent_is_copied_without_following_image_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&rootfs).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // A hostile image points /.msb at a host directory.
        std::os::unix::fs::symlink(&outside, rootfs.join(".msb")).unwrap();
        let agent = dir.path().join("agent-bin");
        std::fs::write(&agent, b"\x7fELF agent").unwrap();
        install_guest_agent(&agent, &rootfs).unwrap();
        let installed = rootfs.join(".msb/agent");
        assert_eq!(std::fs::read(&installed).unwrap(), b"\x7fELF agent");
        assert!(std::fs::symlink_metadata(rootfs.join(".msb"))
            .unwrap()
            .is_dir());
        assert_eq!(
            std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // Reinstalling replaces the file (and a symlink planted at the file's place).
        std::fs::remove_file(&installed).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &installed).unwrap();
        install_guest_agent(&agent, &rootfs).unwrap();
        assert!(std::fs::symlink_metadata(&installed).unwrap().is_file());
    }

    #[test]
    fn relative_dirs_are_outermost_first() {
        assert_eq!(
            relative_dirs(Path::new("/r"), Path::new("/r/a/b")),
            [PathBuf::from("/r/a"), PathBuf::from("/r/a/b")]
        );
        assert!(relative_dirs(Path::new("/r"), Path::new("/r")).is_empty());
    }

    #[tokio::test]
    async fn guest_answers_only_when_the_connection_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        assert!(!guest_answers(&sock).await);
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        // Like libkrun with no guest listener: accept, then close at once.
        let closer = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
            listener
        });
        assert!(!guest_answers(&sock).await);
        let listener = closer.await.unwrap();
        // Like the guest agent: accept and wait for the host to speak.
        let holder = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(s);
        });
        assert!(guest_answers(&sock).await);
        holder.abort();
    }

    /// A fake VMM that dies at once: start must fail with its log, and leave nothing running.
    #[tokio::test]
    async fn vmm_dying_early_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-vmm");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"libkrun: cannot open /dev/kvm\" >&2\nexit 3\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, b"agent").unwrap();
        let mut s = spec();
        s.rootfs = dir.path().join("rootfs");
        s.runtime_dir = dir.path().join("run");
        s.socket_dir = dir.path().join("sock");
        s.guest_agent = agent;
        std::fs::create_dir_all(&s.rootfs).unwrap();
        let cg = dir.path().join("cgroup");
        let rt = MicrovmRuntime::new(MicrovmSettings::default())
            .with_vmm_exe(&script)
            .with_boot_timeout(Duration::from_secs(10))
            .with_cgroups(CgroupMode::Legacy, &cg);
        let err = rt.start(&s).await.unwrap_err().to_string();
        assert!(err.contains("exited"), "{err}");
        assert!(err.contains("cannot open /dev/kvm"), "{err}");
        // The plan jails the VMM: its cgroup (guest RAM + overhead), no_new_privs + seccomp.
        let plan = VmPlan::parse(&std::fs::read(s.runtime_dir.join("msb-test.vmm.json")).unwrap())
            .unwrap();
        assert!(plan.jail.seccomp);
        assert_eq!(plan.jail.cgroup_procs.len(), 4, "{:?}", plan.jail);
        let limit =
            std::fs::read_to_string(cg.join("memory/microsandbox/msb-test/memory.limit_in_bytes"))
                .unwrap();
        let memory = u64::from(s.memory_mib);
        assert_eq!(limit, ((memory + VMM_OVERHEAD_MIB) << 20).to_string());
        assert!(s.rootfs.join(".msb/agent").exists());
        assert!(rt.children.lock().unwrap().is_empty());
    }

    /// A fake VMM that never opens the socket: start times out, and the VMM is killed.
    #[tokio::test]
    async fn silent_vmm_times_out_and_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-vmm");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, b"agent").unwrap();
        let mut s = spec();
        s.rootfs = dir.path().join("rootfs");
        s.runtime_dir = dir.path().join("run");
        s.socket_dir = dir.path().join("sock");
        s.guest_agent = agent;
        std::fs::create_dir_all(&s.rootfs).unwrap();
        let rt = MicrovmRuntime::new(MicrovmSettings::default())
            .with_vmm_exe(&script)
            .with_boot_timeout(Duration::from_millis(300))
            .with_cgroups(CgroupMode::Unified, dir.path().join("cgroup"));
        let err = rt.start(&s).await.unwrap_err();
        assert!(matches!(err, RuntimeError::GuestTimeout(..)), "{err}");
        assert!(rt.children.lock().unwrap().is_empty());
    }

    /// A single-file bind is the caller's mistake (virtio-fs shares directories), not a limit of
    /// the node: an invalid request, refused before any VMM starts.
    #[tokio::test]
    async fn file_binds_are_an_invalid_request() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, b"x").unwrap();
        let mut s = spec();
        s.runtime_dir = dir.path().join("run");
        s.mounts = vec![LaunchMount::Bind {
            source: file,
            dest: "/etc/app.toml".into(),
            readonly: true,
        }];
        let rt = MicrovmRuntime::new(MicrovmSettings::default())
            .with_vmm_exe("/nonexistent/vmm")
            .with_cgroups(CgroupMode::Legacy, dir.path().join("cgroup"));
        let err = rt.start(&s).await.unwrap_err();
        assert!(
            matches!(&err, RuntimeError::InvalidMount { dest, .. } if dest == "/etc/app.toml"),
            "{err}"
        );
        let code = crate::error::AgentError::Runtime(err).code();
        assert_eq!(code, microsandbox_wire::api::ErrorCode::InvalidRequest);
        assert!(!s.runtime_dir.exists(), "nothing was prepared");
    }

    #[tokio::test]
    async fn foreign_or_missing_pids_are_never_touched() {
        let launched = Launched {
            id: "msb-nope".into(),
            isolation: Isolation::Microvm,
            // Our own test process: alive, but not a VMM for msb-nope.
            pid: Some(std::process::id()),
            guest_socket: "/nonexistent/agent.sock".into(),
            cgroup: None,
        };
        let rt = MicrovmRuntime::new(MicrovmSettings::default());
        assert_eq!(rt.liveness(&launched).await, Liveness::Unknown);
        rt.signal(&launched, libc::SIGKILL).await.unwrap();
        assert_eq!(rt.usage(&launched).await, HostUsage::default());
        let gone = Launched {
            pid: None,
            ..launched
        };
        assert_eq!(rt.liveness(&gone).await, Liveness::Unknown);
        rt.cleanup(&gone).await.unwrap();
    }
}
