//! Test harness: a real `microsandbox-agent` process per test, with its own state directory, the
//! static guest agent, crun, and the local registry (`make setup`) as `docker.io`'s mirror.
#![allow(dead_code)]

use microsandbox_client::api::{CreateSandbox, ExecRequest, Isolation, SandboxInfo};
use microsandbox_client::{AgentClient, Output};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn guest_agent() -> PathBuf {
    let p = std::env::var_os("MSB_GUEST_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace().join("target/x86_64-unknown-linux-gnu/release/microsandbox-guest")
        });
    assert!(
        p.is_file(),
        "static guest agent {} missing: run `make guest`",
        p.display()
    );
    p
}

/// A running agent; killed, and its sandboxes reaped, on drop.
pub struct TestAgent {
    child: Option<Child>,
    pub state: PathBuf,
    extra: Vec<String>,
}

impl TestAgent {
    /// Fresh state directory (images shared between tests through a symlink).
    pub fn start(label: &str) -> Self {
        Self::start_with(label, &[])
    }

    pub fn start_with(label: &str, extra: &[&str]) -> Self {
        let base = workspace().join("target/test-state");
        let images = base.join("images");
        std::fs::create_dir_all(&images).unwrap();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let state = base.join(format!("{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).unwrap();
        std::os::unix::fs::symlink(&images, state.join("images")).unwrap();
        Self::start_in(state, extra.iter().map(|s| s.to_string()).collect())
    }

    /// Restarted on an image store of its own (instead of the shared one), so that its pulls
    /// really download.
    pub fn with_private_images(mut self) -> Self {
        let images = self.state.join("images");
        std::fs::remove_file(&images).unwrap();
        std::fs::create_dir(&images).unwrap();
        self.restart();
        self
    }

    /// (Re)start on an existing state directory.
    pub fn start_in(state: PathBuf, extra: Vec<String>) -> Self {
        let mut agent = Self {
            child: None,
            state,
            extra,
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.join("agent.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_microsandbox-agent"))
            .arg("serve")
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--mirror")
            .arg("docker.io=127.0.0.1:5000")
            .arg("--guest-agent")
            .arg(guest_agent())
            .arg("--lease-grace-secs")
            .arg("3")
            .args(&self.extra)
            .env("MSB_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn microsandbox-agent");
        self.child = Some(child);
        let sock = self.state.join("agent.sock");
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("agent exited with {status}: {}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "agent did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("agent.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn client(&self) -> AgentClient {
        AgentClient::from_state_dir(&self.state).unwrap()
    }

    /// `kill -9` the agent (sandboxes keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same state directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Peak resident memory of the agent process (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb * 1024
    }

    pub fn crun_root(&self) -> PathBuf {
        self.state.join("crun")
    }

    /// Container ids crun still knows in this agent's root.
    pub fn crun_containers(&self) -> Vec<String> {
        let out = Command::new("crun")
            .arg("--root")
            .arg(self.crun_root())
            .arg("list")
            .arg("-q")
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            Err(_) => vec![],
        }
    }

    /// Mount points under this agent's state directory.
    pub fn mounts(&self) -> Vec<String> {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let prefix = self.state.display().to_string();
        mi.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&prefix))
            .map(String::from)
            .collect()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.kill9();
        for id in self.crun_containers() {
            let _ = Command::new("crun")
                .arg("--root")
                .arg(self.crun_root())
                .args(["delete", "--force", &id])
                .output();
        }
        for m in self.mounts() {
            let _ = Command::new("umount").args(["-l", &m]).output();
        }
        if std::env::var_os("MSB_KEEP_STATE").is_none() {
            let _ = std::fs::remove_file(self.state.join("images"));
            let _ = std::fs::remove_dir_all(&self.state);
        }
    }
}

/// A loopback port free at this moment (for published ports).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A create request for a detached container sandbox.
pub fn sandbox(name: &str, image: &str) -> CreateSandbox {
    serde_json::from_value(serde_json::json!({
        "name": name, "image": image, "detached": true, "isolation": "container", "memory_mib": 256
    }))
    .unwrap()
}

pub async fn create(client: &AgentClient, name: &str, image: &str) -> SandboxInfo {
    let info = client
        .create(sandbox(name, image))
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    assert_eq!(info.isolation, Isolation::Container);
    info
}

pub fn cmd(command: &str, args: &[&str]) -> ExecRequest {
    ExecRequest {
        command: command.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub async fn sh(client: &AgentClient, name: &str, script: &str) -> Output {
    client
        .exec(name, cmd("/bin/sh", &["-c", script]))
        .await
        .unwrap_or_else(|e| panic!("exec {script:?}: {e}"))
}

/// Runs host command `program args` (with `stdin` when given), which must succeed; its stdout.
pub fn host(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write stdin");
    drop(pipe);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Is any host process running whose cmdline mentions `needle`?
/// Zombie children of process `pid` (`pid (comm)`), after up to 2 s for commands in flight.
pub async fn zombie_children(pid: u32) -> Vec<String> {
    let read = || -> Vec<String> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|t| t.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .filter_map(|child| {
                let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
                // `pid (comm) state ...`; comm may hold spaces, so split at the last ')'.
                let (head, tail) = stat.rsplit_once(") ")?;
                tail.starts_with('Z').then(|| format!("{head})"))
            })
            .collect()
    };
    for _ in 0..20 {
        if read().is_empty() {
            return Vec::new();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    read()
}

pub fn host_process_with(needle: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
}
