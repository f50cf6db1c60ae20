//! One exec conversation: spawn, stream output with backpressure, forward host input and control
//! frames, enforce the timeout, report the exit.
//!
//! Tasks of a session: one pump per output stream (stdout+stderr, or the pty master) feeding a small
//! bounded channel that this function drains into the connection (so a slow host stalls the pumps,
//! and the pipes, instead of growing buffers); one task reading host frames; one task writing stdin.
//! Stdin is written by its own task so a child that does not read its input can never stop output
//! from being drained.
//!
//! The session ends when the main process has exited and its output is drained: at the moment of
//! exit each pump notes how many bytes are still queued in its pipe (FIONREAD) and reads at least
//! those; after that it waits at most [`EXIT_GRACE`] for EOF, since a background process that
//! inherited the pipes may keep them open forever.

use super::pty::{self, PtyMaster};
use super::reaper::{exit_code, Reaper};
use super::spawn::{self, SpawnPlan, Spawned, StdioSetup};
use crate::users;
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use microsandbox_wire::guest::codec::GuestCodec;
use microsandbox_wire::guest::{
    ExecRequest, ExitStatus, GuestError, GuestErrorKind, GuestFrame, HostFrame, CHUNK_SIZE,
};
use nix::unistd::Pid;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tokio_util::codec::Framed;

/// How long to wait for output EOF after the main process exited and its queued output was read.
pub const EXIT_GRACE: Duration = Duration::from_millis(200);
/// Output frames buffered between the pumps and the connection.
const OUTPUT_QUEUE: usize = 8;
/// Stdin chunks buffered between the host reader and the stdin writer.
const STDIN_QUEUE: usize = 16;
/// Largest signal number accepted from the host (SIGRTMAX on Linux).
const MAX_SIGNAL: i32 = 64;

type Sink<S> = SplitSink<Framed<S, GuestCodec>, GuestFrame>;
type Source<S> = SplitStream<Framed<S, GuestCodec>>;

/// The child's process group; signals are delivered only until [`Group::release`].
#[derive(Clone)]
struct Group(Arc<Mutex<Option<Pid>>>);

impl Group {
    fn new(pgid: Pid) -> Self {
        Self(Arc::new(Mutex::new(Some(pgid))))
    }

    fn signal(&self, sig: i32) {
        let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pgid) = *guard {
            // SAFETY: kill takes plain integers. The group id is the child's pid (it called setsid)
            // and the session is still live, so the group is ours.
            unsafe { libc::kill(-pgid.as_raw(), sig) };
        }
    }

    /// Stop delivering signals: after the session the pgid may be reused.
    fn release(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Resolve the request into a spawn plan, or a typed error.
fn plan(req: &ExecRequest, workdir: &Path) -> Result<SpawnPlan, GuestError> {
    if req.command.is_empty() {
        return Err(GuestError::new(
            GuestErrorKind::InvalidRequest,
            "empty command",
        ));
    }
    let cwd = match &req.cwd {
        Some(c) if !c.is_empty() => workdir.join(c),
        _ => workdir.to_path_buf(),
    };
    if !cwd.is_dir() {
        return Err(GuestError::new(
            GuestErrorKind::NotFound,
            format!("working directory not found: {}", cwd.display()),
        ));
    }
    let user = match &req.user {
        Some(spec) if !spec.is_empty() => Some(
            users::resolve_from_system(spec)
                .map_err(|e| GuestError::new(GuestErrorKind::InvalidRequest, e.to_string()))?,
        ),
        _ => None,
    };
    let env = spawn::build_env(
        std::env::vars_os(),
        &req.env,
        user.as_ref(),
        req.tty.is_some(),
    );
    Ok(SpawnPlan {
        program: req.command.clone(),
        args: req.args.clone(),
        cwd,
        env,
        user,
        rlimits: req.rlimits.clone(),
    })
}

fn spawn_error(command: &str, err: &io::Error) -> GuestError {
    let kind = match err.kind() {
        io::ErrorKind::NotFound => GuestErrorKind::CommandNotFound,
        _ => GuestErrorKind::SpawnFailed,
    };
    let message = match err.kind() {
        io::ErrorKind::NotFound => format!("command not found: {command}"),
        _ => format!("failed to start {command}: {err}"),
    };
    GuestError::new(kind, message)
}

/// Where output is read from.
enum Output {
    Pipe(pipe::Receiver),
    Pty(Arc<PtyMaster>),
}

impl Output {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Output::Pipe(p) => p.read(buf).await,
            Output::Pty(m) => m.read(buf).await,
        }
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            Output::Pipe(p) => p.as_raw_fd(),
            Output::Pty(m) => m.raw_fd(),
        }
    }
}

/// Bytes waiting to be read from a pipe or pty master.
fn queued_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int) };
    if rc < 0 {
        0
    } else {
        n.max(0) as usize
    }
}

/// Read one output stream into frames until EOF (or the post-exit grace runs out).
async fn pump(
    mut src: Output,
    frame: FrameFn,
    tx: mpsc::Sender<GuestFrame>,
    mut exited: watch::Receiver<bool>,
) {
    // Pipe reads never return more than the pipe buffer (64 KiB by default); a bigger buffer only
    // costs page faults on every exec.
    let mut buf = vec![0u8; CHUNK_SIZE.min(64 * 1024)];
    // After exit: bytes still owed from the main process, then the EOF deadline.
    let mut owed: Option<usize> = None;
    let mut deadline: Option<Instant> = None;
    loop {
        tokio::select! {
            r = src.read(&mut buf) => match r {
                Ok(0) => return,
                Ok(n) => {
                    if let Some(o) = owed.as_mut() {
                        *o = o.saturating_sub(n);
                        if *o == 0 && deadline.is_none() {
                            deadline = Some(Instant::now() + EXIT_GRACE);
                        }
                    }
                    if tx.send(frame(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            },
            _ = async { exited.wait_for(|e| *e).await.is_ok() }, if owed.is_none() => {
                let n = queued_bytes(src.raw_fd());
                owed = Some(n);
                if n == 0 {
                    deadline = Some(Instant::now() + EXIT_GRACE);
                }
            }
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => return,
        }
    }
}

enum StdinTarget {
    Pipe(pipe::Sender),
    Pty(Arc<PtyMaster>),
}

/// Write host stdin chunks to the child; closes the pipe (or sends EOF, ^D, on a pty) at the end.
async fn stdin_writer(mut rx: mpsc::Receiver<Bytes>, target: StdinTarget) {
    let mut target = Some(target);
    while let Some(data) = rx.recv().await {
        let ok = match target.as_mut() {
            Some(StdinTarget::Pipe(p)) => p.write_all(&data).await.is_ok(),
            Some(StdinTarget::Pty(m)) => m.write_all(&data).await.is_ok(),
            None => continue,
        };
        if !ok {
            // The child closed its stdin: discard the rest, keep the host reader flowing.
            target = None;
        }
    }
    if let Some(StdinTarget::Pty(m)) = target {
        let _ = m.write_all(&[0x04]).await;
    }
}

/// Handle frames from the host during the exec. The host going away kills the process group.
async fn host_reader<S: AsyncRead + AsyncWrite + Unpin>(
    mut source: Source<S>,
    mut stdin: Option<mpsc::Sender<Bytes>>,
    group: Group,
    master: Option<Arc<PtyMaster>>,
) {
    while let Some(frame) = source.next().await {
        match frame {
            Ok(HostFrame::Stdin(data)) => {
                if let Some(tx) = &stdin {
                    if tx.send(data).await.is_err() {
                        stdin = None;
                    }
                }
            }
            Ok(HostFrame::StdinClose) => stdin = None,
            Ok(HostFrame::Signal(sig)) if (0..=MAX_SIGNAL).contains(&sig) => group.signal(sig),
            Ok(HostFrame::Resize { rows, cols }) => {
                if let Some(m) = &master {
                    let _ = pty::set_winsize(m.raw_fd(), rows, cols);
                }
            }
            // Frames that make no sense here are ignored.
            Ok(_) => {}
            Err(_) => break,
        }
    }
    group.signal(libc::SIGKILL);
}

/// Serve an `Exec` request on `framed` (handshake and request already consumed).
pub async fn run<S>(
    mut framed: Framed<S, GuestCodec>,
    req: ExecRequest,
    reaper: Arc<Reaper>,
    workdir: PathBuf,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let plan = match plan(&req, &workdir) {
        Ok(p) => p,
        Err(e) => {
            let _ = framed.send(GuestFrame::Error(e)).await;
            return;
        }
    };

    let pty = match req.tty {
        Some(size) => match pty::open(size.rows, size.cols) {
            Ok(p) => Some(p),
            Err(e) => {
                let err = GuestError::new(
                    GuestErrorKind::SpawnFailed,
                    format!("cannot allocate a pty: {e}"),
                );
                let _ = framed.send(GuestFrame::Error(err)).await;
                return;
            }
        },
        None => None,
    };
    let (master, setup) = match pty {
        Some((master, slave)) => (Some(master), StdioSetup::Pty { slave }),
        None => (None, StdioSetup::Pipes { stdin: req.stdin }),
    };

    let spawned = reaper.spawn(|| {
        let s = spawn::spawn(&plan, setup)?;
        Ok((s.pid, s))
    });
    let (
        Spawned {
            pid,
            stdin,
            stdout,
            stderr,
        },
        exit_rx,
    ) = match spawned {
        Ok(s) => s,
        Err(e) => {
            let _ = framed
                .send(GuestFrame::Error(spawn_error(&req.command, &e)))
                .await;
            return;
        }
    };
    let started = Instant::now();
    let group = Group::new(pid);

    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    let (out_tx, mut out_rx) = mpsc::channel(OUTPUT_QUEUE);
    let (exited_tx, exited_rx) = watch::channel(false);
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(STDIN_QUEUE);

    let io = match wire_io(master, stdin, stdout, stderr) {
        Ok(io) => io,
        Err(e) => {
            group.signal(libc::SIGKILL);
            let err = GuestError::new(GuestErrorKind::Other, format!("exec i/o setup: {e}"));
            let _ = framed.send(GuestFrame::Error(err)).await;
            return;
        }
    };
    for (src, frame) in io.outputs {
        tasks.push(tokio::spawn(pump(
            src,
            frame,
            out_tx.clone(),
            exited_rx.clone(),
        )));
    }
    let stdin_tx = match io.stdin {
        Some(target) => {
            tasks.push(tokio::spawn(stdin_writer(stdin_rx, target)));
            Some(stdin_tx)
        }
        None => None,
    };
    let master = io.master;
    drop(out_tx);

    let (mut sink, source): (Sink<S>, Source<S>) = framed.split();
    let finish = |tasks: &mut Vec<JoinHandle<()>>, group: &Group| {
        group.release();
        for t in tasks.drain(..) {
            t.abort();
        }
    };
    if sink
        .send(GuestFrame::Started {
            pid: pid.as_raw() as u32,
        })
        .await
        .is_err()
    {
        group.signal(libc::SIGKILL);
        finish(&mut tasks, &group);
        return;
    }
    tasks.push(tokio::spawn(host_reader(
        source,
        stdin_tx,
        group.clone(),
        master,
    )));

    let timeout = req.timeout_ms.map(|ms| started + Duration::from_millis(ms));
    let mut exit_rx = exit_rx;
    let mut status = None;
    let mut outputs_open = true;
    let mut timed_out = false;
    while status.is_none() || outputs_open {
        tokio::select! {
            frame = out_rx.recv(), if outputs_open => match frame {
                Some(frame) => {
                    if sink.send(frame).await.is_err() {
                        // Host gone: nobody to report to.
                        group.signal(libc::SIGKILL);
                        finish(&mut tasks, &group);
                        return;
                    }
                }
                None => outputs_open = false,
            },
            st = &mut exit_rx, if status.is_none() => {
                status = Some(st.ok());
                let _ = exited_tx.send(true);
            }
            _ = sleep_until(timeout.unwrap_or_else(Instant::now)),
                if timeout.is_some() && !timed_out && status.is_none() => {
                group.signal(libc::SIGKILL);
                timed_out = true;
            }
        }
    }
    finish(&mut tasks, &group);

    let (code, signal) = match status.flatten() {
        Some(st) => exit_code(&st),
        None => (-1, None),
    };
    let _ = sink
        .send(GuestFrame::Exited(ExitStatus {
            code,
            signal,
            timed_out,
        }))
        .await;
    let _ = sink.close().await;
}

/// Builds an output frame from a chunk.
type FrameFn = fn(Bytes) -> GuestFrame;

/// The parent's side of the child's stdio, ready for async use.
struct SessionIo {
    outputs: Vec<(Output, FrameFn)>,
    stdin: Option<StdinTarget>,
    master: Option<Arc<PtyMaster>>,
}

fn wire_io(
    master: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
) -> io::Result<SessionIo> {
    if let Some(fd) = master {
        let m = Arc::new(PtyMaster::new(fd)?);
        return Ok(SessionIo {
            outputs: vec![(Output::Pty(m.clone()), GuestFrame::Stdout as FrameFn)],
            stdin: Some(StdinTarget::Pty(m.clone())),
            master: Some(m),
        });
    }
    let mut outputs: Vec<(Output, FrameFn)> = Vec::new();
    if let Some(fd) = stdout {
        outputs.push((
            Output::Pipe(pipe::Receiver::from_owned_fd(fd)?),
            GuestFrame::Stdout,
        ));
    }
    if let Some(fd) = stderr {
        outputs.push((
            Output::Pipe(pipe::Receiver::from_owned_fd(fd)?),
            GuestFrame::Stderr,
        ));
    }
    let stdin = match stdin {
        Some(fd) => Some(StdinTarget::Pipe(pipe::Sender::from_owned_fd(fd)?)),
        None => None,
    };
    Ok(SessionIo {
        outputs,
        stdin,
        master: None,
    })
}
