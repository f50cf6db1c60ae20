//! Container runtime: an existing OCI runtime (Debian's `crun`) runs the guest agent as PID 1 with
//! pid/mount/ipc/uts/net/cgroup namespaces, cgroup v1 or v2 limits (memory, cpu, pids), a seccomp
//! filter, a reduced capability set and `noNewPrivileges`. Weaker than a microVM: the sandbox shares
//! the host kernel, so the API labels it `container` and never substitutes it for `microvm`.

mod launch_ns;
pub mod reaper;
mod spec;

pub use super::jail::cgroup::{CgroupMode, CgroupPaths};
pub use spec::{oci_spec, SpecOptions};

use async_trait::async_trait;
use microsandbox_wire::api::Isolation;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

use super::{HostUsage, LaunchSpec, Launched, Liveness, Runtime, RuntimeError};

/// Runs sandboxes with crun.
pub struct ContainerRuntime {
    crun: PathBuf,
    /// crun's state directory (`--root`), private to this agent.
    state_root: PathBuf,
    cgroups: CgroupMode,
    /// Where crun starts from; `None` (old kernel) starts it in the agent's namespace.
    launch_ns: Option<launch_ns::LaunchNamespace>,
}

pub use super::jail::cgroup::CGROUP_PARENT;

impl ContainerRuntime {
    /// Find crun and detect the cgroup mode; refuse with the reason when this host cannot run it.
    /// crun keeps its state under `state_dir/crun` and starts from a mount namespace without
    /// the mounts below `state_dir` and `/run/netns` (see [`launch_ns`]).
    pub fn probe(state_dir: &Path) -> Result<Self, RuntimeError> {
        let state_root = state_dir.join("crun");
        let unavailable = |reason: String| RuntimeError::Unavailable {
            isolation: Isolation::Container,
            reason,
        };
        let crun = find_in_path("crun").ok_or_else(|| {
            unavailable("crun not found in PATH (Debian: apt-get install crun)".into())
        })?;
        let cgroups = CgroupMode::detect();
        if cgroups == CgroupMode::None {
            return Err(unavailable(
                "no cgroup filesystem mounted at /sys/fs/cgroup".into(),
            ));
        }
        std::fs::create_dir_all(&state_root)?;
        let hidden = [state_dir.to_path_buf(), PathBuf::from("/run/netns")];
        let launch_ns = launch_ns::LaunchNamespace::new(&hidden)
            .inspect_err(
                |e| tracing::info!(error = %e, "crun starts in the agent's mount namespace"),
            )
            .ok();
        Ok(Self {
            crun,
            state_root,
            cgroups,
            launch_ns,
        })
    }

    pub fn cgroup_mode(&self) -> CgroupMode {
        self.cgroups
    }

    fn crun(&self) -> Command {
        let mut c = Command::new(&self.crun);
        c.arg("--root").arg(&self.state_root);
        c.stdin(Stdio::null());
        c
    }

    async fn crun_ok(&self, what: &str, args: &[&str]) -> Result<String, RuntimeError> {
        let out = reaper::run(
            self.crun()
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .await
        .map_err(|e| RuntimeError::Command {
            what: format!("crun {what}"),
            detail: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(RuntimeError::Command {
                what: format!("crun {what}"),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn cgroup_path(id: &str) -> String {
        super::jail::cgroup::sandbox_cgroup(id)
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(|d| Path::new(d).join(name)))
        .find(|p| p.is_file())
}

/// Wait until a unix socket accepts connections, or the deadline passes.
pub async fn wait_for_socket(
    path: &Path,
    timeout: Duration,
    alive: impl Fn() -> bool,
) -> Result<(), RuntimeError> {
    let start = Instant::now();
    let mut delay = Duration::from_micros(200);
    loop {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Ok(());
        }
        if !alive() {
            return Err(RuntimeError::GuestTimeout(
                start.elapsed(),
                "sandbox init exited before the guest agent listened".into(),
            ));
        }
        if start.elapsed() > timeout {
            return Err(RuntimeError::GuestTimeout(
                timeout,
                format!("no listener on {}", path.display()),
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(20));
    }
}

/// Whether `pid` runs (a zombie does not).
fn pid_alive(pid: u32) -> bool {
    crate::runtime::procfs::alive(pid)
}

/// Collect the exit status of a container init that was reparented to this agent (it is the
/// child subreaper, see `serve`), so no zombie outlives the sandbox. Not our child: nothing to do.
async fn reap(pid: u32) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    let pid = nix::unistd::Pid::from_raw(raw);
    for _ in 0..100 {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => tokio::time::sleep(Duration::from_millis(10)).await,
            _ => return,
        }
    }
}

/// Reaps this agent's zombie children that lived in a PID namespace below the agent's (sandbox
/// processes orphaned by a killed crun; the commands the agent runs itself live in its own
/// namespace, so no child the agent waits for is taken). Returns how many.
fn reap_sandbox_zombies() -> usize {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    let me = std::process::id().to_string();
    let mut reaped = 0;
    for pid in reaper::children() {
        let Ok(pid) = i32::try_from(pid) else {
            continue;
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
        };
        let nested = field("NSpid:").split_whitespace().count() > 1;
        if field("State:").starts_with('Z') && field("PPid:") == me && nested {
            let _ = waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
            reaped += 1;
        }
    }
    reaped
}

#[async_trait]
impl Runtime for ContainerRuntime {
    fn isolation(&self) -> Isolation {
        Isolation::Container
    }

    async fn start(&self, spec: &LaunchSpec) -> Result<Launched, RuntimeError> {
        let cgroup = Self::cgroup_path(&spec.id);
        let (staged, carry) = match &self.launch_ns {
            Some(_) => launch_ns::plan(spec, &spec.runtime_dir.join("binds")),
            None => (spec.clone(), Vec::new()),
        };
        let config = oci_spec(
            &staged,
            &SpecOptions {
                cgroups_path: cgroup.clone(),
                cgroup_v2: self.cgroups == CgroupMode::Unified,
                nofile: nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                    .map(|(_, hard)| hard.min(65536))
                    .unwrap_or(1024),
                agent_oom_score_adj: None,
            },
        )
        .map_err(|e| RuntimeError::Spec(e.to_string()))?;
        std::fs::create_dir_all(&spec.runtime_dir)?;
        std::fs::create_dir_all(&spec.socket_dir)?;
        let socket = spec
            .socket_dir
            .join(microsandbox_wire::guest::GUEST_SOCKET_NAME);
        crate::cleanup::remove_file(&socket);
        // Bound here, on the host, and inherited by the guest agent: the directory is never
        // visible inside the sandbox, so no process there can plant or replace the socket.
        let listener = std::os::unix::net::UnixListener::bind(&socket)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::write(
            spec.runtime_dir.join("config.json"),
            serde_json::to_vec_pretty(&config).map_err(std::io::Error::other)?,
        )?;
        // A leftover container of the same id (crash between runs) would make `run` fail.
        // Checking crun's state directory first saves a crun process on every normal create.
        if self.state_root.join(&spec.id).exists() {
            let deleted = self
                .crun_ok("delete", &["delete", "--force", &spec.id])
                .await;
            crate::cleanup::warn_on_err(
                format_args!("delete leftover container {}", spec.id),
                deleted,
            );
        }
        // The container inherits crun's stdio, so both go to files: a pipe would stay open for
        // the sandbox's whole life.
        let log_path = spec.runtime_dir.join("guest.log");
        let log = std::fs::File::create(&log_path)?;
        let pid_file = spec.runtime_dir.join("init.pid");
        let launch = match &self.launch_ns {
            Some(ns) => {
                launch_ns::make_placeholders(&carry)?;
                Some(ns.prepare(&carry)?)
            }
            None => None,
        };
        let mut run = self.crun();
        let listen_fd = listener.as_raw_fd();
        // SAFETY: runs in the forked child just before exec; setns/unshare/move_mount change only
        // the child's mount namespace, dup2/fcntl only its descriptor table, and none allocates.
        // The launch namespace comes first: fd 3 may be one of its descriptors. fd 3 then
        // becomes the listener without FD_CLOEXEC, which `crun --preserve-fds 1` hands to the
        // container's init.
        unsafe {
            run.pre_exec(move || {
                if let Some(launch) = &launch {
                    launch.enter()?;
                }
                if listen_fd == 3 {
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(listen_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        run.arg("run")
            .arg("--detach")
            .arg("--preserve-fds")
            .arg("1")
            .arg("--bundle")
            .arg(&spec.runtime_dir)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(&spec.id)
            .stdout(log.try_clone()?)
            .stderr(log);
        let status = reaper::run(&mut run)
            .await
            .map_err(|e| RuntimeError::Command {
                what: "crun run".into(),
                detail: e.to_string(),
            })?
            .status;
        // The container holds its own copy now.
        drop(listener);
        // What a failed start may leave (a crun killed mid-run leaves its state and cgroups):
        // removed rather than leaked.
        let orphan = Launched {
            id: spec.id.clone(),
            isolation: Isolation::Container,
            pid: None,
            guest_socket: socket.clone(),
            cgroup: Some(cgroup.clone()),
        };
        if !status.success() {
            crate::cleanup::warn_on_err(
                "clean up the failed container",
                self.cleanup(&orphan).await,
            );
            return Err(RuntimeError::Command {
                what: "crun run".into(),
                detail: std::fs::read_to_string(&log_path)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            });
        }
        let pid: u32 = match std::fs::read_to_string(&pid_file)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                t.trim()
                    .parse()
                    .map_err(|e: std::num::ParseIntError| e.to_string())
            }) {
            Ok(pid) => pid,
            Err(e) => {
                // The container runs but we cannot track it: remove it rather than leak it.
                crate::cleanup::warn_on_err(
                    "clean up the failed container",
                    self.cleanup(&orphan).await,
                );
                return Err(RuntimeError::Command {
                    what: "crun run".into(),
                    detail: format!("bad pid file: {e}"),
                });
            }
        };
        // crun's intermediate process (see `reaper`) usually has the PID just below the init's:
        // reaped now; the periodic sweep finds it where it does not.
        reaper::reap_strays_soon(
            (1..=3).filter_map(|d| pid.checked_sub(d)),
            Duration::from_millis(200),
        )
        .await;
        // Shield the guest agent from the sandbox's OOM killer (set from the host: the sandbox
        // itself lacks CAP_SYS_RESOURCE). Its children reset their score to 0 before exec, so a
        // memory bomb, not the agent, is what the kernel kills.
        if let Err(e) = std::fs::write(format!("/proc/{pid}/oom_score_adj"), "-998") {
            tracing::debug!(error = %e, "could not lower the guest agent's oom_score_adj");
        }
        let launched = Launched {
            id: spec.id.clone(),
            isolation: Isolation::Container,
            pid: Some(pid),
            guest_socket: socket.clone(),
            cgroup: Some(cgroup),
        };
        if let Err(e) = wait_for_socket(&socket, Duration::from_secs(10), || pid_alive(pid)).await {
            let log =
                std::fs::read_to_string(spec.runtime_dir.join("guest.log")).unwrap_or_default();
            crate::cleanup::warn_on_err(
                "clean up the failed container",
                self.cleanup(&launched).await,
            );
            return Err(RuntimeError::Command {
                what: "guest agent start".into(),
                detail: format!("{e}; guest log: {}", log.trim()),
            });
        }
        Ok(launched)
    }

    async fn signal(&self, launched: &Launched, signal: i32) -> Result<(), RuntimeError> {
        self.crun_ok("kill", &["kill", &launched.id, &signal.to_string()])
            .await
            .map(|_| ())
    }

    async fn freeze(&self, launched: &Launched, frozen: bool) -> Result<(), RuntimeError> {
        // crun uses the cgroup freezer (v1 or v2) and waits until the cgroup is frozen.
        let verb = if frozen { "pause" } else { "resume" };
        self.crun_ok(verb, &[verb, &launched.id]).await.map(|_| ())
    }

    async fn liveness(&self, launched: &Launched) -> Liveness {
        // Polled for every sandbox (cluster mode: each one every few seconds): the common answer
        // comes from /proc, not from starting a crun process per sandbox.
        if let (Some(pid), Some(cgroup)) = (launched.pid, &launched.cgroup) {
            if crate::runtime::procfs::runs_in_cgroup(pid, cgroup) {
                return Liveness::Running;
            }
        }
        match self.crun_ok("state", &["state", &launched.id]).await {
            Ok(json) => {
                let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
                match v["status"].as_str() {
                    Some("running") | Some("created") | Some("paused") => Liveness::Running,
                    _ => Liveness::Stopped,
                }
            }
            Err(_) => Liveness::Unknown,
        }
    }

    async fn cleanup(&self, launched: &Launched) -> Result<(), RuntimeError> {
        // The sandbox's processes: killed with its init, those reparented to this agent are its
        // zombies then, reaped below by PID (a scan of every child of the agent would cost a
        // read per sandbox on the node, for every removal).
        let members = launched
            .cgroup
            .as_ref()
            .map(|cg| CgroupPaths::new(self.cgroups, cg).procs())
            .unwrap_or_default();
        // Fails when nothing runs any more (the usual case after a graceful stop): `delete`
        // below is what must succeed.
        let _already_dead = self
            .crun_ok("kill", &["kill", "--all", &launched.id, "KILL"])
            .await;
        if let Err(e) = self
            .crun_ok("delete", &["delete", "--force", &launched.id])
            .await
        {
            if self.liveness(launched).await != Liveness::Unknown {
                return Err(e);
            }
        }
        if let Some(pid) = launched.pid {
            reap(pid).await;
        }
        for &pid in &members {
            if let Ok(pid) = u32::try_from(pid) {
                reap(pid).await;
            }
        }
        if let Some(cg) = &launched.cgroup {
            let cg = CgroupPaths::new(self.cgroups, cg);
            // A start cut short (crun killed before it recorded the container) can leave its
            // init in the cgroup, out of crun's reach; killed, it is a zombie child of this
            // agent (the child subreaper) and keeps the cgroup busy until reaped here.
            // A zombie no longer shows in `cgroup.procs`, so then zombies of sandbox processes
            // (in a PID namespace of their own) that are this agent's children are reaped too.
            let mut clean = launched.pid.is_some();
            for _ in 0..200 {
                let left = cg.procs();
                for &pid in &left {
                    let _gone = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    reap(pid as u32).await;
                }
                // Scanning the agent's children costs a read per sandbox: only when the init
                // is unknown (a start cut short) or the cgroup still had processes.
                if left.is_empty() && (clean || reap_sandbox_zombies() == 0) {
                    break;
                }
                clean = false;
            }
            // A process killed just now may still be exiting: in no `cgroup.procs`, yet its
            // cgroup is busy until it is gone and reaped (seen when crun was killed mid-start).
            for _ in 0..100 {
                if cg.try_remove() {
                    break;
                }
                reap_sandbox_zombies();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            cg.remove();
        }
        crate::cleanup::remove_file(&launched.guest_socket);
        Ok(())
    }

    async fn reap_unknown(&self, known: &[String]) -> Vec<String> {
        let Ok(out) = self.crun_ok("list", &["list", "-q"]).await else {
            return Vec::new();
        };
        let mut reaped = Vec::new();
        for id in out.lines().map(str::trim).filter(|id| !id.is_empty()) {
            if known.iter().any(|k| k == id) {
                continue;
            }
            let orphan = Launched {
                id: id.to_string(),
                isolation: Isolation::Container,
                pid: None,
                guest_socket: PathBuf::new(),
                cgroup: Some(Self::cgroup_path(id)),
            };
            if self.cleanup(&orphan).await.is_ok() {
                reaped.push(id.to_string());
            }
        }
        reaped
    }

    async fn usage(&self, launched: &Launched) -> HostUsage {
        match &launched.cgroup {
            Some(cg) => CgroupPaths::new(self.cgroups, cg).usage(),
            None => HostUsage::default(),
        }
    }
}
