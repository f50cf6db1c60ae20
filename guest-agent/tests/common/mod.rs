//! Harness: start the built agent as a normal process on a unix socket in a tempdir and talk the
//! protocol to it.
#![allow(dead_code)]

use futures::{SinkExt, StreamExt};
use microsandbox_wire::guest::codec::HostCodec;
use microsandbox_wire::guest::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

pub type Conn = Framed<UnixStream, HostCodec>;

pub struct Agent {
    child: Child,
    pub sock: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Agent {
    pub fn start() -> Self {
        Self::start_with_env(&[])
    }

    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        Self::spawn(env, false)
    }

    /// An agent in a UTS namespace of its own, as in a microVM (so it may set the hostname).
    pub fn start_in_own_uts() -> Self {
        Self::spawn(&[], true)
    }

    fn spawn(env: &[(&str, &str)], own_uts: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("run/agent.sock");
        // MSB_TEST_AGENT_BIN runs the suite against another build (e.g. the static release binary).
        let bin = std::env::var("MSB_TEST_AGENT_BIN")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_microsandbox-guest").to_string());
        let mut cmd = Command::new(bin);
        if own_uts {
            use std::os::unix::process::CommandExt;
            // SAFETY: unshare(2) only, in the child before exec.
            unsafe {
                cmd.pre_exec(|| {
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let child = cmd
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            // Deterministic defaults: the agent's TERM would otherwise leak into tty execs.
            .env_remove("TERM")
            .envs(env.iter().copied())
            .spawn()
            .expect("start agent");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "agent did not start listening");
            std::thread::sleep(Duration::from_millis(10));
        }
        Agent { child, sock, dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Send SIGTERM and wait (up to 5 s) for the agent to exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Connect and complete the handshake.
    pub async fn connect(&self) -> Conn {
        let stream = UnixStream::connect(&self.sock).await.unwrap();
        let mut conn = Framed::new(stream, HostCodec::default());
        conn.send(HostFrame::Hello(Hello {
            version: PROTOCOL_VERSION,
        }))
        .await
        .unwrap();
        match next(&mut conn).await {
            GuestFrame::HelloAck(ack) => {
                assert_eq!(ack.version, PROTOCOL_VERSION);
                assert!(!ack.agent_version.is_empty());
            }
            other => panic!("expected HelloAck, got {other:?}"),
        }
        conn
    }

    /// Connect and send `req`.
    pub async fn request(&self, req: Request) -> Conn {
        let mut conn = self.connect().await;
        conn.send(HostFrame::Request(req)).await.unwrap();
        conn
    }

    /// A request answered by a single frame.
    pub async fn call(&self, req: Request) -> GuestFrame {
        let mut conn = self.request(req).await;
        next(&mut conn).await
    }

    pub async fn ok(&self, req: Request) -> Response {
        match self.call(req.clone()).await {
            GuestFrame::Done(r) => r,
            other => panic!("{req:?} failed: {other:?}"),
        }
    }

    pub async fn err(&self, req: Request) -> GuestError {
        match self.call(req.clone()).await {
            GuestFrame::Error(e) => e,
            other => panic!("{req:?} should fail, got {other:?}"),
        }
    }

    pub async fn exec(&self, req: ExecRequest) -> ExecOutput {
        let mut conn = self.request(Request::Exec(req)).await;
        collect_exec(&mut conn).await
    }

    pub async fn sh(&self, script: &str) -> ExecOutput {
        self.exec(sh(script)).await
    }

    pub async fn write_file(&self, path: &Path, data: &[u8], mode: u32, append: bool) -> u64 {
        let mut conn = self
            .request(Request::WriteFile {
                path: path.to_str().unwrap().into(),
                mode,
                append,
            })
            .await;
        for chunk in data.chunks(100_000) {
            conn.send(HostFrame::Stdin(chunk.to_vec().into()))
                .await
                .unwrap();
        }
        conn.send(HostFrame::StdinClose).await.unwrap();
        match next(&mut conn).await {
            GuestFrame::Done(Response::Written { bytes }) => bytes,
            other => panic!("write failed: {other:?}"),
        }
    }

    pub async fn read_file(&self, path: &Path) -> Result<Vec<u8>, GuestError> {
        let mut conn = self
            .request(Request::ReadFile {
                path: path.to_str().unwrap().into(),
            })
            .await;
        let mut out = Vec::new();
        loop {
            match next(&mut conn).await {
                GuestFrame::Data(d) => {
                    assert!(d.len() <= CHUNK_SIZE);
                    out.extend_from_slice(&d);
                }
                GuestFrame::DataEnd => return Ok(out),
                GuestFrame::Error(e) => return Err(e),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sh(script: &str) -> ExecRequest {
    ExecRequest {
        command: "sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    }
}

pub async fn next(conn: &mut Conn) -> GuestFrame {
    match tokio::time::timeout(Duration::from_secs(60), conn.next()).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(other) => panic!("connection ended: {other:?}"),
        Err(_) => panic!("timed out waiting for a frame"),
    }
}

#[derive(Debug)]
pub struct ExecOutput {
    pub pid: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
}

impl ExecOutput {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Read `Started`, output and `Exited`.
pub async fn collect_exec(conn: &mut Conn) -> ExecOutput {
    let pid = match next(conn).await {
        GuestFrame::Started { pid } => pid,
        other => panic!("expected Started, got {other:?}"),
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    loop {
        match next(conn).await {
            GuestFrame::Stdout(d) => {
                assert!(d.len() <= CHUNK_SIZE);
                stdout.extend_from_slice(&d)
            }
            GuestFrame::Stderr(d) => stderr.extend_from_slice(&d),
            GuestFrame::Exited(status) => {
                return ExecOutput {
                    pid,
                    stdout,
                    stderr,
                    status,
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

impl Agent {
    /// State letter of `pid` as the agent sees it (its own /proc, so this also works when the
    /// agent runs in its own pid namespace), or `None` if there is no such process.
    pub async fn proc_state(&self, pid: i32) -> Option<char> {
        let out = self
            .exec(ExecRequest {
                command: "cat".into(),
                args: vec![format!("/proc/{pid}/stat")],
                ..Default::default()
            })
            .await;
        if out.status.code != 0 {
            return None;
        }
        let text = out.stdout_str();
        text.rsplit(')').next()?.trim_start().chars().next()
    }

    /// True while `pid` exists and is not a zombie.
    pub async fn alive(&self, pid: i32) -> bool {
        !matches!(self.proc_state(pid).await, None | Some('Z'))
    }

    /// Wait until `pid` is not alive; false on timeout.
    pub async fn wait_gone(&self, pid: i32, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if !self.alive(pid).await {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), covering all byte values and invalid UTF-8.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
