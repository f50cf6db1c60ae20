//! A real `microsandbox-agent` (release build) with its own state directory under
//! `target/bench-state`, and the guard that removes everything the benchmarks created: sandboxes
//! (through the API, then by force), the agent process, the crun containers of the baselines,
//! mounts and cgroups. The guard's `Drop` is the last line of defence (panics, early returns).

use crate::Res;
use futures::StreamExt;
use microsandbox_client::api::{CreateSandbox, ExecRequest};
use microsandbox_client::{AgentClient, ErrorCode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Parent cgroup of the agent's sandboxes (`node-agent/src/runtime/container/mod.rs`).
pub const AGENT_CGROUP_PARENT: &str = "microsandbox";
/// Parent cgroup of the baseline crun containers.
pub const BASELINE_CGROUP_PARENT: &str = "microsandbox-bench-baseline";
/// Prefix of every sandbox this run creates (their crun ids are `msb-<name>`).
pub const NAME_PREFIX: &str = "bench-";

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

fn env_path(var: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or(default)
}

/// Where everything lives.
#[derive(Debug, Clone)]
pub struct Paths {
    pub agent_bin: PathBuf,
    pub guest_agent: PathBuf,
    /// `target/bench-state`: shared image cache + one directory per run.
    pub base: PathBuf,
    /// This run's agent state directory.
    pub state: PathBuf,
    /// Scratch space of the baselines (bundles, files), inside `state`.
    pub scratch: PathBuf,
}

impl Paths {
    pub fn new() -> Res<Self> {
        let ws = workspace();
        let agent_bin = env_path(
            "MSB_AGENT_BIN",
            ws.join("target/release/microsandbox-agent"),
        );
        let guest_agent = env_path(
            "MSB_GUEST_AGENT",
            ws.join("target/x86_64-unknown-linux-gnu/release/microsandbox-guest"),
        );
        for (p, how) in [(&agent_bin, "make agent"), (&guest_agent, "make guest")] {
            if !p.is_file() {
                return Err(format!("{} missing: run `{how}`", p.display()).into());
            }
        }
        let base = ws.join("target/bench-state");
        let state = base.join(format!("run-{}", std::process::id()));
        let scratch = state.join("bench");
        Ok(Self {
            agent_bin,
            guest_agent,
            base,
            state,
            scratch,
        })
    }

    /// The agent's crun root (`<state>/crun`).
    pub fn agent_crun_root(&self) -> PathBuf {
        self.state.join("crun")
    }

    /// The baselines' own crun root.
    pub fn baseline_crun_root(&self) -> PathBuf {
        self.scratch.join("crun-root")
    }
}

/// The agent process plus everything the run created.
pub struct Bench {
    pub paths: Paths,
    pub client: AgentClient,
    child: Mutex<Option<Child>>,
    sandboxes: Mutex<BTreeSet<String>>,
    crun_ids: Mutex<BTreeSet<String>>,
}

impl Bench {
    /// Starts the agent on a fresh state directory (images cached in `target/bench-state/images`).
    pub fn start(paths: Paths, extra_args: &[String]) -> Res<Self> {
        let images = paths.base.join("images");
        std::fs::create_dir_all(&images)?;
        if paths.state.exists() {
            return Err(format!("{} already exists", paths.state.display()).into());
        }
        std::fs::create_dir_all(&paths.scratch)?;
        std::os::unix::fs::symlink(&images, paths.state.join("images"))?;
        let log = std::fs::File::create(paths.state.join("agent.log"))?;
        let child = Command::new(&paths.agent_bin)
            .arg("serve")
            .arg("--state-dir")
            .arg(&paths.state)
            .arg("--mirror")
            .arg("docker.io=127.0.0.1:5000")
            .arg("--guest-agent")
            .arg(&paths.guest_agent)
            .args(extra_args)
            .env("MSB_LOG", std::env::var("MSB_LOG").unwrap_or("warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Own process group: a Ctrl-C in the terminal reaches only the bench, which then
            // removes the sandboxes through the agent before stopping it.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", paths.agent_bin.display()))?;
        // From here on the guard owns the agent and the state directory.
        let mut bench = Bench {
            client: AgentClient::new(
                microsandbox_client::Endpoint::Unix(paths.state.join("agent.sock")),
                None,
            ),
            paths,
            child: Mutex::new(Some(child)),
            sandboxes: Mutex::new(BTreeSet::new()),
            crun_ids: Mutex::new(BTreeSet::new()),
        };
        let sock = bench.paths.state.join("agent.sock");
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if let Some(Ok(Some(status))) = bench.lock_child().as_mut().map(|c| c.try_wait()) {
                return Err(format!("agent exited with {status}: {}", bench.log_tail()).into());
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(format!("agent did not start: {}", bench.log_tail()).into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bench.client = AgentClient::from_state_dir(&bench.paths.state)?;
        Ok(bench)
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The agent's pid (while it runs).
    pub fn agent_pid(&self) -> Option<u32> {
        self.lock_child().as_ref().map(|c| c.id())
    }

    /// Last lines of the agent's log (for error messages).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.paths.state.join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Creates a detached container sandbox of `image` (name recorded for cleanup first).
    pub async fn create(&self, name: &str, image: &str) -> Res<()> {
        self.create_with(serde_json::from_value(serde_json::json!({
            "name": name, "image": image, "detached": true, "isolation": "container",
        }))?)
        .await
    }

    /// Creates `req` (removed by the cleanup if the benchmark stops early).
    pub async fn create_with(&self, req: CreateSandbox) -> Res<()> {
        let name = req.name.clone();
        self.sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone());
        self.client
            .create(req)
            .await
            .map_err(|e| format!("create {name}: {e}"))?;
        Ok(())
    }

    /// Removes a sandbox created by [`Bench::create`].
    pub async fn remove(&self, name: &str) -> Res<()> {
        self.client
            .remove(name)
            .await
            .map_err(|e| format!("remove {name}: {e}"))?;
        self.sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        Ok(())
    }

    /// Records a baseline crun container id (deleted by the cleanup).
    pub fn track_crun(&self, id: &str) {
        self.crun_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string());
    }

    /// Forgets a baseline container that is already gone.
    pub fn untrack_crun(&self, id: &str) {
        self.crun_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Graceful cleanup: remove every sandbox through the API, then stop the agent (SIGTERM,
    /// SIGKILL after 5 s). The synchronous part (`Drop`) then deletes whatever is left.
    pub async fn shutdown(&self) {
        let mut names: BTreeSet<String> = self
            .sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Ok(Ok(list)) =
            tokio::time::timeout(Duration::from_secs(10), self.client.list()).await
        {
            names.extend(list.into_iter().map(|s| s.name));
        }
        if !names.is_empty() {
            eprintln!("cleanup: removing {} sandbox(es)", names.len());
        }
        let removals = names.iter().map(|n| async move {
            let r = tokio::time::timeout(Duration::from_secs(30), self.client.remove(n)).await;
            match &r {
                // Its create never reached the agent (interrupted).
                Ok(Err(e)) if e.is(ErrorCode::SandboxNotFound) => {}
                Ok(Err(e)) => eprintln!("cleanup: remove {n}: {e}"),
                Err(_) => eprintln!("cleanup: remove {n}: timed out"),
                Ok(Ok(())) => {}
            }
        });
        // A few at a time: the agent serialises some of the work anyway.
        let mut removals = futures::stream::iter(removals).buffer_unordered(4);
        while removals.next().await.is_some() {}
        self.stop_agent(Duration::from_secs(5));
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    fn stop_agent(&self, grace: Duration) {
        let mut guard = self.lock_child();
        let Some(mut child) = guard.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Deletes everything still around, without the agent: crun containers of both roots,
    /// mounts under the state directory, cgroups, then the state directory itself.
    fn force_cleanup(&self) {
        self.stop_agent(Duration::ZERO);
        let baseline_ids: Vec<String> = self
            .crun_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        for root in [
            self.paths.agent_crun_root(),
            self.paths.baseline_crun_root(),
        ] {
            let mut ids = crun_list(&root);
            if root == self.paths.baseline_crun_root() {
                ids.extend(baseline_ids.iter().cloned());
            }
            ids.sort();
            ids.dedup();
            for id in ids {
                let _ = Command::new("crun")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", &id])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for m in mounts_under(&self.paths.state) {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        remove_cgroups(AGENT_CGROUP_PARENT, &format!("msb-{NAME_PREFIX}"), false);
        remove_cgroups(BASELINE_CGROUP_PARENT, "", true);
        if std::env::var_os("MSB_KEEP_STATE").is_some() {
            eprintln!("MSB_KEEP_STATE set: keeping {}", self.paths.state.display());
            return;
        }
        if mounts_under(&self.paths.state).is_empty() {
            let _ = std::fs::remove_file(self.paths.state.join("images"));
            let _ = std::fs::remove_dir_all(&self.paths.state);
        } else {
            eprintln!(
                "cleanup: mounts remain under {}; not deleting it",
                self.paths.state.display()
            );
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.force_cleanup();
    }
}

/// Container ids crun knows under `root`.
pub fn crun_list(root: &Path) -> Vec<String> {
    Command::new("crun")
        .arg("--root")
        .arg(root)
        .args(["list", "-q"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    let mut v: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(String::from)
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.len()));
    v
}

/// The cgroup directories (v1: one per controller; v2: one) of `parent/child`.
pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(rel)];
    }
    std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().join(rel))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the (empty) cgroups `parent/<prefix>*`, and `parent` itself if `parent_too`.
fn remove_cgroups(parent: &str, prefix: &str, parent_too: bool) {
    for dir in cgroup_dirs(parent) {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.path().is_dir() && e.file_name().to_string_lossy().starts_with(prefix) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        if parent_too {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// An exec request for `command args...`.
pub fn cmd(command: &str, args: &[&str]) -> ExecRequest {
    ExecRequest {
        command: command.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status").into())
}

/// Memory charged to a cgroup (v1 `memory.usage_in_bytes`, v2 `memory.current`), in bytes.
pub fn cgroup_memory(rel: &str) -> Option<u64> {
    let root = Path::new("/sys/fs/cgroup");
    let file = if root.join("cgroup.controllers").exists() {
        root.join(rel).join("memory.current")
    } else {
        root.join("memory").join(rel).join("memory.usage_in_bytes")
    };
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// CPU time (user + system) a process has used so far.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    use procfs_core::FromRead;
    let stat = procfs_core::process::Stat::from_file(format!("/proc/{pid}/stat")).ok()?;
    let ticks = stat.utime + stat.stime;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz.max(1)))
}

/// CPU time used by everything in a cgroup (v1 `cpuacct.usage`, v2 `cpu.stat` usage_usec).
pub fn cgroup_cpu(rel: &str) -> Option<Duration> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        let text = std::fs::read_to_string(root.join(rel).join("cpu.stat")).ok()?;
        let us = text
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))?
            .trim()
            .parse()
            .ok()?;
        return Some(Duration::from_micros(us));
    }
    let ns = std::fs::read_to_string(root.join("cpuacct").join(rel).join("cpuacct.usage"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_nanos(ns))
}

/// CPU used by the agent process, one sandbox's cgroup and this process, between two points.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    agent: Option<Duration>,
    sandbox: Option<Duration>,
    bench: Option<Duration>,
}

impl CpuMark {
    pub fn now(b: &Bench, sandbox: &str) -> Self {
        Self {
            agent: b.agent_pid().and_then(process_cpu),
            sandbox: cgroup_cpu(&format!("{AGENT_CGROUP_PARENT}/msb-{sandbox}")),
            bench: process_cpu(std::process::id()),
        }
    }

    /// `{agent, guest, client}` CPU milliseconds since `self`, divided by `per`.
    pub fn since(&self, later: &CpuMark, per: f64) -> serde_json::Value {
        let d = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() * 1e3 / per),
            _ => None,
        };
        serde_json::json!({
            "agent_ms": d(self.agent, later.agent),
            "sandbox_cgroup_ms": d(self.sandbox, later.sandbox),
            "bench_client_ms": d(self.bench, later.bench),
        })
    }
}

/// Sum of `VmRSS` (KiB) of the processes in a cgroup (the memory controller's directory on v1).
pub fn cgroup_rss_kib(rel: &str) -> Option<u64> {
    let root = Path::new("/sys/fs/cgroup");
    let dir = if root.join("cgroup.controllers").exists() {
        root.join(rel)
    } else {
        root.join("memory").join(rel)
    };
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    Some(
        procs
            .lines()
            .filter_map(|p| p.trim().parse().ok())
            .filter_map(|pid| rss_kib(pid).ok())
            .sum(),
    )
}
