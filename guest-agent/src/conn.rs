//! One connection: handshake, one request, its answer. Any malformed or unexpected frame ends this
//! connection only.

use crate::exec::reaper::Reaper;
use crate::{exec, fs, metrics};
use futures::{SinkExt, StreamExt};
use microsandbox_wire::guest::codec::GuestCodec;
use microsandbox_wire::guest::{
    GuestError, GuestErrorKind, GuestFrame, HelloAck, HostFrame, Request, Response,
    PROTOCOL_VERSION,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::timeout;
use tokio_util::codec::Framed;

/// How long a connection may take to send its `Hello` and its `Request`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// State shared by all connections.
pub struct Agent {
    pub reaper: Arc<Reaper>,
    /// Default working directory of execs and base of relative paths.
    pub workdir: PathBuf,
    /// Root of the procfs metrics are read from.
    pub proc_root: PathBuf,
}

type Conn<S> = Framed<S, GuestCodec>;

async fn send_error<S>(framed: &mut Conn<S>, kind: GuestErrorKind, message: impl Into<String>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = framed
        .send(GuestFrame::Error(GuestError::new(kind, message)))
        .await;
}

/// Read the next frame within the handshake timeout; `None` if the connection ended or broke.
async fn next_frame<S>(framed: &mut Conn<S>) -> Option<HostFrame>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match timeout(HANDSHAKE_TIMEOUT, framed.next()).await {
        Ok(Some(Ok(frame))) => Some(frame),
        _ => None,
    }
}

/// Serve one connection to completion.
pub async fn serve<S>(stream: S, agent: Arc<Agent>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut framed = Framed::new(stream, GuestCodec::default());
    match next_frame(&mut framed).await {
        Some(HostFrame::Hello(hello)) if hello.version == PROTOCOL_VERSION => {}
        Some(HostFrame::Hello(hello)) => {
            let msg = format!(
                "protocol version {} not supported (agent speaks {PROTOCOL_VERSION})",
                hello.version
            );
            return send_error(&mut framed, GuestErrorKind::InvalidRequest, msg).await;
        }
        Some(_) => {
            return send_error(
                &mut framed,
                GuestErrorKind::InvalidRequest,
                "expected Hello",
            )
            .await
        }
        None => return,
    }
    let ack = GuestFrame::HelloAck(HelloAck {
        version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    });
    if framed.send(ack).await.is_err() {
        return;
    }
    let request = match next_frame(&mut framed).await {
        Some(HostFrame::Request(r)) => r,
        Some(_) => {
            return send_error(
                &mut framed,
                GuestErrorKind::InvalidRequest,
                "expected Request",
            )
            .await
        }
        None => return,
    };
    dispatch(framed, request, agent).await;
}

async fn dispatch<S>(mut framed: Conn<S>, request: Request, agent: Arc<Agent>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let wd = agent.workdir.clone();
    let result: Result<Response, GuestError> = match request {
        Request::Ping => Ok(Response::Pong),
        Request::Exec(req) => {
            return exec::session::run(framed, req, agent.reaper.clone(), wd).await;
        }
        Request::ReadFile { path } => {
            match fs::resolve(&wd, &path) {
                Ok(p) => fs::read_file(&mut framed, &p, &path).await,
                Err(e) => {
                    let _ = framed.send(GuestFrame::Error(e)).await;
                }
            }
            return;
        }
        Request::WriteFile { path, mode, append } => {
            match fs::resolve(&wd, &path) {
                Ok(p) => fs::write_file(&mut framed, &p, &path, mode, append).await,
                Err(e) => {
                    let _ = framed.send(GuestFrame::Error(e)).await;
                }
            }
            return;
        }
        Request::List { path } => blocking_io(&wd, path, fs::list).await,
        Request::Stat { path } => blocking_io(&wd, path, fs::stat).await,
        Request::Mkdir { path, parents } => {
            blocking_io(&wd, path, move |p| fs::mkdir(p, parents)).await
        }
        Request::Remove { path, recursive } => {
            blocking_io(&wd, path, move |p| fs::remove(p, recursive)).await
        }
        Request::Rename { from, to } => match (fs::resolve(&wd, &from), fs::resolve(&wd, &to)) {
            (Ok(f), Ok(t)) => {
                blocking(move || {
                    fs::rename(&f, &t)
                        .map_err(|e| GuestError::from_io(&e, &format!("{from} -> {to}")))
                })
                .await
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        Request::Copy { from, to } => match (fs::resolve(&wd, &from), fs::resolve(&wd, &to)) {
            (Ok(f), Ok(t)) => blocking(move || fs::copy(&f, &t)).await,
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        Request::SetHostname { name } => blocking(move || set_hostname(&name)).await,
        Request::Metrics => {
            // Inline, not on a blocking thread: /proc reads are quick, and metrics must keep
            // working when a fork bomb has used up the sandbox's pids (no new thread possible).
            Ok(Response::Metrics(metrics::collect(&agent.proc_root)))
        }
    };
    let frame = match result {
        Ok(r) => GuestFrame::Done(r),
        Err(e) => GuestFrame::Error(e),
    };
    let _ = framed.send(frame).await;
}

/// `sethostname(2)`; names the kernel refuses (empty, over 64 bytes) are the caller's error.
fn set_hostname(name: &str) -> Result<Response, GuestError> {
    if name.is_empty() || name.len() > 64 || name.contains('\0') {
        return Err(GuestError::new(
            GuestErrorKind::InvalidRequest,
            format!("not a hostname: {name:?}"),
        ));
    }
    nix::unistd::sethostname(name)
        .map(|()| Response::Ok)
        .map_err(|e| GuestError::from_io(&e.into(), "sethostname"))
}

/// Run a blocking filesystem operation off the runtime thread.
async fn blocking<F>(f: F) -> Result<Response, GuestError>
where
    F: FnOnce() -> Result<Response, GuestError> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(GuestError::new(
            GuestErrorKind::Other,
            format!("internal error: {e}"),
        ))
    })
}

/// Resolve `path` and run an I/O operation on it, mapping errors to typed guest errors.
async fn blocking_io<F>(wd: &Path, path: String, op: F) -> Result<Response, GuestError>
where
    F: FnOnce(&Path) -> std::io::Result<Response> + Send + 'static,
{
    let resolved = fs::resolve(wd, &path)?;
    blocking(move || op(&resolved).map_err(|e| GuestError::from_io(&e, &path))).await
}
