//! Host side of the guest-agent protocol: one connection per conversation (see
//! `microsandbox_wire::guest`).

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use microsandbox_wire::guest::codec::HostCodec;
use microsandbox_wire::guest::{
    ExitStatus, GuestFrame, Hello, HostFrame, Request, Response, PROTOCOL_VERSION,
};
use std::path::PathBuf;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

use crate::error::AgentError;

/// How long connecting plus the Hello/HelloAck exchange may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A framed connection to a guest agent, past the handshake.
pub type GuestConn = Framed<UnixStream, HostCodec>;

/// Connects to one sandbox's guest agent.
#[derive(Debug, Clone)]
pub struct GuestClient {
    socket: PathBuf,
}

/// Most output a collected exec may return (stdout + stderr). More would let sandboxed code grow the
/// agent's memory without bound; the streaming exec has no such limit.
pub const COLLECT_LIMIT: usize = 128 * 1024 * 1024;

fn too_much(stdout: &[u8], stderr: &[u8]) -> Option<AgentError> {
    (stdout.len() + stderr.len() > COLLECT_LIMIT)
        .then_some(AgentError::OutputTooLarge(COLLECT_LIMIT))
}

/// Collected result of an exec.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

fn channel_err(e: impl std::fmt::Display) -> AgentError {
    AgentError::GuestChannel(e.to_string())
}

impl GuestClient {
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    /// Open a connection and send `request`.
    pub async fn open(&self, request: Request) -> Result<GuestConn, AgentError> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.open_inner(request))
            .await
            .map_err(|_| channel_err("guest agent did not answer the handshake in time"))?
    }

    async fn open_inner(&self, request: Request) -> Result<GuestConn, AgentError> {
        // The socket's directory is writable from inside the sandbox: refuse anything but a
        // socket there (e.g. a symlink planted to redirect us to another sandbox's agent).
        use std::os::unix::fs::FileTypeExt;
        match std::fs::symlink_metadata(&self.socket) {
            Ok(m) if m.file_type().is_socket() => {}
            Ok(_) => {
                return Err(channel_err(format!(
                    "{} is not a socket",
                    self.socket.display()
                )))
            }
            Err(e) => return Err(channel_err(format!("{}: {e}", self.socket.display()))),
        }
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| channel_err(format!("connect {}: {e}", self.socket.display())))?;
        let mut conn = Framed::new(stream, HostCodec::default());
        // Hello and the request go out together (one write, no extra round trip): the guest reads
        // them in order and answers HelloAck, or Error if it refuses our version.
        conn.feed(HostFrame::Hello(Hello {
            version: PROTOCOL_VERSION,
        }))
        .await
        .map_err(channel_err)?;
        conn.feed(HostFrame::Request(request))
            .await
            .map_err(channel_err)?;
        conn.flush().await.map_err(channel_err)?;
        match conn.next().await {
            Some(Ok(GuestFrame::HelloAck(_))) => {}
            Some(Ok(GuestFrame::Error(e))) => return Err(AgentError::Guest(e)),
            Some(Ok(other)) => return Err(channel_err(format!("unexpected frame {other:?}"))),
            Some(Err(e)) => return Err(channel_err(e)),
            None => return Err(channel_err("guest closed the connection during handshake")),
        }
        Ok(conn)
    }

    /// A request answered by a single `Done`/`Error`.
    pub async fn call(&self, request: Request) -> Result<Response, AgentError> {
        let mut conn = self.open(request).await?;
        next_done(&mut conn).await
    }

    /// Liveness probe.
    pub async fn ping(&self) -> Result<(), AgentError> {
        match self.call(Request::Ping).await? {
            Response::Pong => Ok(()),
            other => Err(channel_err(format!("unexpected answer to ping: {other:?}"))),
        }
    }

    /// Run a command to completion, collecting its output.
    pub async fn exec_collect(
        &self,
        req: microsandbox_wire::guest::ExecRequest,
        stdin: Option<Bytes>,
    ) -> Result<Collected, AgentError> {
        let wants_stdin = stdin.is_some();
        let mut conn = self
            .open(Request::Exec(microsandbox_wire::guest::ExecRequest {
                stdin: wants_stdin,
                ..req
            }))
            .await?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut stdin = stdin;
        loop {
            match conn.next().await {
                Some(Ok(GuestFrame::Started { .. })) => {
                    if let Some(data) = stdin.take() {
                        // Feed stdin without blocking output: the writer runs on its own task.
                        let (mut sink, mut stream) = conn.split();
                        let writer = tokio::spawn(async move {
                            for chunk in data.chunks(microsandbox_wire::guest::CHUNK_SIZE) {
                                sink.send(HostFrame::Stdin(Bytes::copy_from_slice(chunk)))
                                    .await?;
                            }
                            sink.send(HostFrame::StdinClose).await?;
                            Ok::<_, microsandbox_wire::guest::codec::CodecError>(sink)
                        });
                        let status = collect_rest(&mut stream, &mut stdout, &mut stderr).await?;
                        let _ = writer.await;
                        return Ok(Collected {
                            status,
                            stdout,
                            stderr,
                        });
                    }
                }
                Some(Ok(GuestFrame::Stdout(d))) => {
                    stdout.extend_from_slice(&d);
                    if let Some(e) = too_much(&stdout, &stderr) {
                        return Err(e);
                    }
                }
                Some(Ok(GuestFrame::Stderr(d))) => {
                    stderr.extend_from_slice(&d);
                    if let Some(e) = too_much(&stdout, &stderr) {
                        return Err(e);
                    }
                }
                Some(Ok(GuestFrame::Exited(status))) => {
                    return Ok(Collected {
                        status,
                        stdout,
                        stderr,
                    })
                }
                Some(Ok(GuestFrame::Error(e))) => return Err(AgentError::Guest(e)),
                Some(Ok(other)) => return Err(channel_err(format!("unexpected frame {other:?}"))),
                Some(Err(e)) => return Err(channel_err(e)),
                None => return Err(channel_err("guest closed the connection during exec")),
            }
        }
    }
}

async fn collect_rest<S>(
    stream: &mut S,
    stdout: &mut Vec<u8>,
    stderr: &mut Vec<u8>,
) -> Result<ExitStatus, AgentError>
where
    S: futures::Stream<Item = Result<GuestFrame, microsandbox_wire::guest::codec::CodecError>>
        + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(GuestFrame::Stdout(d))) => {
                stdout.extend_from_slice(&d);
                if let Some(e) = too_much(stdout, stderr) {
                    return Err(e);
                }
            }
            Some(Ok(GuestFrame::Stderr(d))) => {
                stderr.extend_from_slice(&d);
                if let Some(e) = too_much(stdout, stderr) {
                    return Err(e);
                }
            }
            Some(Ok(GuestFrame::Exited(status))) => return Ok(status),
            Some(Ok(GuestFrame::Error(e))) => return Err(AgentError::Guest(e)),
            Some(Ok(other)) => return Err(channel_err(format!("unexpected frame {other:?}"))),
            Some(Err(e)) => return Err(channel_err(e)),
            None => return Err(channel_err("guest closed the connection during exec")),
        }
    }
}

/// Wait for the `Done`/`Error` that ends a simple request.
pub async fn next_done(conn: &mut GuestConn) -> Result<Response, AgentError> {
    match conn.next().await {
        Some(Ok(GuestFrame::Done(r))) => Ok(r),
        Some(Ok(GuestFrame::Error(e))) => Err(AgentError::Guest(e)),
        Some(Ok(other)) => Err(channel_err(format!("unexpected frame {other:?}"))),
        Some(Err(e)) => Err(channel_err(e)),
        None => Err(channel_err("guest closed the connection")),
    }
}
