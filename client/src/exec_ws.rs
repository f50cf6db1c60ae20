//! Streaming exec over `GET /v1/sandboxes/{name}/exec/ws`.
//!
//! Frames (see `node-agent/API.md`): the client first sends the [`ExecRequest`] as text; the
//! server answers with text [`ExecControl`] messages (`started`, then `exited` or `error`) around
//! binary output frames whose first byte is the stream ([`STREAM_STDOUT`], [`STREAM_STDERR`]).
//! The client sends stdin as binary frames and `stdin_close` / `signal` / `resize` as text.

use crate::error::{ClientError, Result};
use crate::http::{sandbox_path, ws_error, AgentClient, WsStream};
use crate::sandboxes::Output;
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream, Stream, StreamExt};
use futures::SinkExt;
use microsandbox_wire::api::{ExecControl, ExecRequest, STREAM_STDERR, STREAM_STDOUT};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Largest stdin payload put in one binary message; bigger writes are split.
const STDIN_CHUNK: usize = 64 * 1024;
/// Messages queued for the socket before `ExecInput` calls wait.
const INPUT_QUEUE: usize = 16;

/// What a streaming exec reports, in order: `Started`, output, then `Exited` (last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// The process started.
    Started {
        /// Its pid inside the sandbox.
        pid: u32,
    },
    /// A chunk of stdout (with a tty: of the terminal).
    Stdout(Bytes),
    /// A chunk of stderr.
    Stderr(Bytes),
    /// The process ended; no event follows.
    Exited {
        /// Exit status (see `signal`).
        exit_code: i32,
        /// Signal that killed it, if any.
        signal: Option<i32>,
        /// Whether `timeout_ms` expired.
        timed_out: bool,
    },
}

/// One decoded server message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// An event for the caller.
    Event(ExecEvent),
    /// The server closed the WebSocket (with its reason, if any).
    Closed(Option<String>),
    /// Nothing for the caller (ping, pong).
    Skip,
}

/// Decodes a server message. An `error` control message becomes `Err(ClientError::Api)`.
pub(crate) fn decode_server_message(msg: Message) -> Result<Decoded> {
    match msg {
        Message::Binary(data) => match data.first() {
            Some(&STREAM_STDOUT) => Ok(Decoded::Event(ExecEvent::Stdout(data.slice(1..)))),
            Some(&STREAM_STDERR) => Ok(Decoded::Event(ExecEvent::Stderr(data.slice(1..)))),
            Some(tag) => Err(ClientError::Protocol(format!(
                "exec frame with unknown stream tag {tag}"
            ))),
            None => Err(ClientError::Protocol("empty binary exec frame".into())),
        },
        Message::Text(text) => {
            let control: ExecControl = serde_json::from_str(text.as_str()).map_err(|e| {
                ClientError::Protocol(format!("bad exec control message ({e}): {}", text.as_str()))
            })?;
            match control {
                ExecControl::Started { pid } => Ok(Decoded::Event(ExecEvent::Started { pid })),
                ExecControl::Exited {
                    exit_code,
                    signal,
                    timed_out,
                } => Ok(Decoded::Event(ExecEvent::Exited {
                    exit_code,
                    signal,
                    timed_out,
                })),
                ExecControl::Error { error } => Err(ClientError::Api(error)),
                other => Err(ClientError::Protocol(format!(
                    "unexpected client-side control message from the server: {other:?}"
                ))),
            }
        }
        Message::Close(frame) => Ok(Decoded::Closed(frame.map(|f| {
            format!("{} {}", u16::from(f.code), f.reason.as_str())
                .trim()
                .to_string()
        }))),
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(Decoded::Skip),
    }
}

/// A client control message as a text frame.
pub(crate) fn control_message(control: &ExecControl) -> Result<Message> {
    serde_json::to_string(control)
        .map(Message::text)
        .map_err(|e| ClientError::Protocol(format!("cannot encode {control:?}: {e}")))
}

/// Stdin data as binary frames of at most [`STDIN_CHUNK`] bytes (none for empty data).
pub(crate) fn stdin_messages(data: Bytes) -> impl Iterator<Item = Message> {
    let len = data.len();
    (0..len)
        .step_by(STDIN_CHUNK)
        .map(move |start| Message::Binary(data.slice(start..len.min(start + STDIN_CHUNK))))
}

/// Sending half of a streaming exec: stdin, signals, terminal size. Cheap to clone; the
/// connection closes once the [`ExecStream`] and every `ExecInput` are dropped.
#[derive(Debug, Clone)]
pub struct ExecInput {
    tx: mpsc::Sender<Message>,
}

impl ExecInput {
    async fn send(&self, msg: Message) -> Result<()> {
        self.tx
            .send(msg)
            .await
            .map_err(|_| ClientError::WebSocket("exec connection is closed".into()))
    }

    /// Writes to the process's stdin (the request needs `stdin: true`). Waits when the socket
    /// is backed up.
    pub async fn write_stdin(&self, data: impl Into<Bytes>) -> Result<()> {
        for msg in stdin_messages(data.into()) {
            self.send(msg).await?;
        }
        Ok(())
    }

    /// Closes the process's stdin (it reads EOF).
    pub async fn close_stdin(&self) -> Result<()> {
        self.send(control_message(&ExecControl::StdinClose)?).await
    }

    /// Sends `signal` (e.g. 15 for SIGTERM) to the process group.
    pub async fn signal(&self, signal: i32) -> Result<()> {
        self.send(control_message(&ExecControl::Signal { signal })?)
            .await
    }

    /// Resizes the terminal of a tty exec.
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        self.send(control_message(&ExecControl::Resize { rows, cols })?)
            .await
    }
}

/// Receiving half of a streaming exec: a [`Stream`] of [`ExecEvent`]s ending after
/// [`ExecEvent::Exited`]. A failed exec yields `Err(ClientError::Api)`; a connection that ends
/// before `Exited` yields `Err(ClientError::WebSocket)`. Dropping it (and every [`ExecInput`])
/// closes the connection.
pub struct ExecStream {
    reader: SplitStream<WsStream>,
    input: ExecInput,
    pid: Option<u32>,
    done: bool,
}

impl std::fmt::Debug for ExecStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecStream")
            .field("pid", &self.pid)
            .field("done", &self.done)
            .finish()
    }
}

impl ExecStream {
    /// A handle to send stdin, signals and resizes (usable from other tasks).
    pub fn input(&self) -> ExecInput {
        self.input.clone()
    }

    /// The process's pid, once [`ExecEvent::Started`] was received.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The next event; `None` after `Exited` or an error.
    pub async fn next_event(&mut self) -> Option<Result<ExecEvent>> {
        self.next().await
    }

    /// Collects the rest of the output until the process exits.
    pub async fn wait_output(mut self) -> Result<Output> {
        let mut out = Output::default();
        while let Some(ev) = self.next().await {
            match ev? {
                ExecEvent::Started { .. } => {}
                ExecEvent::Stdout(b) => out.stdout.extend_from_slice(&b),
                ExecEvent::Stderr(b) => out.stderr.extend_from_slice(&b),
                ExecEvent::Exited {
                    exit_code,
                    signal,
                    timed_out,
                } => {
                    out.exit_code = exit_code;
                    out.signal = signal;
                    out.timed_out = timed_out;
                    return Ok(out);
                }
            }
        }
        Err(ClientError::WebSocket(
            "exec stream ended before the process exited".into(),
        ))
    }

    fn finish(&mut self, item: Result<ExecEvent>) -> Poll<Option<Result<ExecEvent>>> {
        self.done = true;
        Poll::Ready(Some(item))
    }
}

impl Stream for ExecStream {
    type Item = Result<ExecEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        while !this.done {
            let msg = match ready!(this.reader.poll_next_unpin(cx)) {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => return this.finish(Err(ws_error(e))),
                None => {
                    return this.finish(Err(ClientError::WebSocket(
                        "exec connection closed before the process exited".into(),
                    )))
                }
            };
            match decode_server_message(msg) {
                Ok(Decoded::Skip) => continue,
                Ok(Decoded::Event(ev)) => {
                    match ev {
                        ExecEvent::Started { pid } => this.pid = Some(pid),
                        ExecEvent::Exited { .. } => this.done = true,
                        _ => {}
                    }
                    return Poll::Ready(Some(Ok(ev)));
                }
                Ok(Decoded::Closed(reason)) => {
                    let reason = reason.map(|r| format!(" ({r})")).unwrap_or_default();
                    return this.finish(Err(ClientError::WebSocket(format!(
                        "exec connection closed before the process exited{reason}"
                    ))));
                }
                Err(e) => return this.finish(Err(e)),
            }
        }
        Poll::Ready(None)
    }
}

/// Forwards queued messages to the socket; closes it when every sender is gone.
async fn write_loop(mut sink: SplitSink<WsStream, Message>, mut rx: mpsc::Receiver<Message>) {
    while let Some(msg) = rx.recv().await {
        if sink.send(msg).await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

impl AgentClient {
    /// Starts `req` in sandbox `name` over the streaming exec WebSocket. Set `stdin: true` to
    /// write stdin through [`ExecStream::input`], and `tty` for a terminal.
    pub async fn exec_stream(&self, name: &str, req: ExecRequest) -> Result<ExecStream> {
        let mut ws = self.websocket(&sandbox_path(name, "/exec/ws")).await?;
        let first = serde_json::to_string(&req)
            .map_err(|e| ClientError::Protocol(format!("cannot encode exec request: {e}")))?;
        ws.send(Message::text(first)).await.map_err(ws_error)?;
        let (sink, reader) = ws.split();
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        tokio::spawn(write_loop(sink, rx));
        Ok(ExecStream {
            reader,
            input: ExecInput { tx },
            pid: None,
            done: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microsandbox_wire::api::ErrorCode;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    fn event(msg: Message) -> ExecEvent {
        match decode_server_message(msg).unwrap() {
            Decoded::Event(ev) => ev,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn binary_frames() {
        assert_eq!(
            event(Message::binary(b"\x01hello".to_vec())),
            ExecEvent::Stdout(Bytes::from_static(b"hello"))
        );
        assert_eq!(
            event(Message::binary(b"\x02e".to_vec())),
            ExecEvent::Stderr(Bytes::from_static(b"e"))
        );
        assert_eq!(
            event(Message::binary(vec![1])),
            ExecEvent::Stdout(Bytes::new())
        );
        assert!(matches!(
            decode_server_message(Message::binary(vec![3, 0])),
            Err(ClientError::Protocol(_))
        ));
        assert!(matches!(
            decode_server_message(Message::binary(vec![])),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn control_frames() {
        assert_eq!(
            event(Message::text(r#"{"type":"started","pid":42}"#)),
            ExecEvent::Started { pid: 42 }
        );
        assert_eq!(
            event(Message::text(
                r#"{"type":"exited","exit_code":137,"signal":9,"timed_out":true}"#
            )),
            ExecEvent::Exited {
                exit_code: 137,
                signal: Some(9),
                timed_out: true
            }
        );
        let err = decode_server_message(Message::text(
            r#"{"type":"error","error":{"code":"sandbox_not_running","message":"stopped"}}"#,
        ))
        .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::SandboxNotRunning));
        assert!(matches!(
            decode_server_message(Message::text("nope")),
            Err(ClientError::Protocol(_))
        ));
        assert!(matches!(
            decode_server_message(Message::text(r#"{"type":"stdin_close"}"#)),
            Err(ClientError::Protocol(_))
        ));
        assert_eq!(
            decode_server_message(Message::Ping(Bytes::new())).unwrap(),
            Decoded::Skip
        );
        let close = Message::Close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "bye".into(),
        }));
        assert_eq!(
            decode_server_message(close).unwrap(),
            Decoded::Closed(Some("1001 bye".into()))
        );
    }

    #[test]
    fn client_messages() {
        let text = |m: Message| match m {
            Message::Text(t) => t.as_str().to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            text(control_message(&ExecControl::StdinClose).unwrap()),
            r#"{"type":"stdin_close"}"#
        );
        assert_eq!(
            text(control_message(&ExecControl::Signal { signal: 15 }).unwrap()),
            r#"{"type":"signal","signal":15}"#
        );
        assert_eq!(
            text(control_message(&ExecControl::Resize { rows: 24, cols: 80 }).unwrap()),
            r#"{"type":"resize","rows":24,"cols":80}"#
        );
    }

    #[test]
    fn stdin_is_chunked() {
        assert_eq!(stdin_messages(Bytes::new()).count(), 0);
        let data = Bytes::from(vec![7u8; STDIN_CHUNK * 2 + 5]);
        let msgs: Vec<_> = stdin_messages(data.clone()).collect();
        let lens: Vec<_> = msgs
            .iter()
            .map(|m| match m {
                Message::Binary(b) => b.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lens, vec![STDIN_CHUNK, STDIN_CHUNK, 5]);
    }
}
