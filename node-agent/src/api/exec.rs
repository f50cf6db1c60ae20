//! Exec routes: collected (`POST .../exec`) and streaming (`GET .../exec/ws`).

use base64::Engine;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use microsandbox_wire::api::{self, ExecControl, ExecOutput, STREAM_STDERR, STREAM_STDOUT};
use microsandbox_wire::guest::{self, GuestFrame, HostFrame, Request, RlimitResource};
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::ws::{Message, WebSocket};
use warp::Filter;

use super::sandboxes::{ctx_filter, json_filter};
use super::{reply, Ctx};
use crate::error::AgentError;

/// Translate an API exec request into the guest protocol.
pub fn to_guest(req: &api::ExecRequest, stream: bool) -> Result<guest::ExecRequest, AgentError> {
    if req.command.is_empty() {
        return Err(AgentError::InvalidRequest(
            "command must not be empty".into(),
        ));
    }
    let rlimits = req
        .rlimits
        .iter()
        .map(|r| {
            let resource = RlimitResource::parse(&r.resource).ok_or_else(|| {
                AgentError::InvalidRequest(format!("unknown rlimit {:?}", r.resource))
            })?;
            if r.soft > r.hard {
                return Err(AgentError::InvalidRequest(format!(
                    "rlimit {}: soft {} exceeds hard {}",
                    r.resource, r.soft, r.hard
                )));
            }
            Ok(guest::Rlimit {
                resource,
                soft: r.soft,
                hard: r.hard,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(guest::ExecRequest {
        command: req.command.clone(),
        args: req.args.clone(),
        cwd: req.cwd.clone(),
        env: req
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        user: req.user.clone(),
        timeout_ms: req.timeout_ms,
        rlimits,
        stdin: stream && req.stdin,
        tty: if stream {
            req.tty.map(|t| guest::TtySize {
                rows: t.rows,
                cols: t.cols,
            })
        } else {
            None
        },
    })
}

async fn collected(c: Ctx, name: String, req: api::ExecRequest) -> Result<ExecOutput, AgentError> {
    let entry = c.manager.entry(&name).await?;
    let req = entry.record.lock().await.exec_defaults.apply(req);
    let greq = to_guest(&req, false)?;
    let stdin = match &req.stdin_b64 {
        Some(b) => Some(Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| AgentError::InvalidRequest(format!("stdin_b64: {e}")))?,
        )),
        None => None,
    };
    let (_guard, guest) = c.manager.begin_exec(&entry).await?;
    let (_, mark) = c.manager.secret_violations(&name, Some(u64::MAX)).await?;
    let out = guest.exec_collect(greq, stdin).await?;
    // The proxy records a violation before it answers the request, so whatever the command
    // was refused is recorded by the time it has exited.
    let (secret_violations, _) = c.manager.secret_violations(&name, Some(mark)).await?;
    let b64 = &base64::engine::general_purpose::STANDARD;
    Ok(ExecOutput {
        exit_code: out.status.code,
        signal: out.status.signal,
        timed_out: out.status.timed_out,
        stdout_b64: b64.encode(&out.stdout),
        stderr_b64: b64.encode(&out.stderr),
        secret_violations,
    })
}

/// How long a finished streaming exec waits for the client's side of the closing handshake.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let collect = warp::path!("sandboxes" / String / "exec")
        .and(warp::post())
        .and(ctx_filter(ctx.clone()))
        .and(json_filter::<api::ExecRequest>())
        .then(|name: String, c: Ctx, req: api::ExecRequest| async move {
            reply::result(collected(c, name, req).await)
        });
    let ws = warp::path!("sandboxes" / String / "exec" / "ws")
        .and(warp::ws())
        .and(ctx_filter(ctx))
        .then(|name: String, ws: warp::ws::Ws, c: Ctx| async move {
            // Resolve the sandbox before upgrading so that errors are plain HTTP errors.
            match c.manager.entry(&name).await {
                Err(e) => reply::error(&e),
                Ok(entry) => ws
                    .max_message_size(guest::MAX_FRAME)
                    .on_upgrade(move |socket| async move {
                        let mut socket = socket;
                        let result = async {
                            let (guard, client) = c.manager.begin_exec(&entry).await?;
                            let defaults = entry.record.lock().await.exec_defaults.clone();
                            stream_exec(&mut socket, client, &defaults)
                                .await
                                .map(|()| drop(guard))
                        }
                        .await;
                        if let Err(e) = result {
                            let msg = ExecControl::Error { error: e.to_api() };
                            let _ = socket.send(control(&msg)).await;
                        }
                        let _ = socket.send(Message::close()).await;
                        // The closing handshake: read until the client's Close (or EOF). A
                        // socket closed with unread input is reset, and through a proxy (the
                        // API server's) a reset can overtake the last frames on their way.
                        let _ = tokio::time::timeout(CLOSE_WAIT, async {
                            while let Some(Ok(_)) = socket.next().await {}
                        })
                        .await;
                    })
                    .into_response(),
            }
        });
    collect.or(ws).unify().boxed()
}

fn control(m: &ExecControl) -> Message {
    Message::text(serde_json::to_string(m).unwrap_or_default())
}

fn tagged(tag: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(tag);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// Relay one streaming exec between the client's WebSocket and the guest connection.
async fn stream_exec(
    socket: &mut WebSocket,
    client: crate::guest::GuestClient,
    defaults: &crate::sandbox::ExecDefaults,
) -> Result<(), AgentError> {
    let first = loop {
        match socket.next().await {
            Some(Ok(m)) if m.is_text() => break m,
            Some(Ok(m)) if m.is_close() => return Ok(()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(AgentError::InvalidRequest(e.to_string())),
            None => return Ok(()),
        }
    };
    let req: api::ExecRequest =
        serde_json::from_str(first.to_str().unwrap_or("")).map_err(|e| {
            AgentError::InvalidRequest(format!("first message must be an ExecRequest: {e}"))
        })?;
    let greq = to_guest(&defaults.apply(req), true)?;
    let conn = client.open(Request::Exec(greq)).await?;
    let (mut gsink, mut gstream) = conn.split();
    let (mut wsink, mut wstream) = socket.split();
    // Client -> guest. Ends when the client goes away, or when the guest stops taking input
    // (its process may have exited already: what it wrote is still to be relayed).
    let inbound = async {
        while let Some(Ok(m)) = wstream.next().await {
            let frame = if m.is_binary() {
                HostFrame::Stdin(Bytes::copy_from_slice(m.as_bytes()))
            } else if m.is_text() {
                match serde_json::from_str::<ExecControl>(m.to_str().unwrap_or("")) {
                    Ok(ExecControl::StdinClose) => HostFrame::StdinClose,
                    Ok(ExecControl::Signal { signal }) => HostFrame::Signal(signal),
                    Ok(ExecControl::Resize { rows, cols }) => HostFrame::Resize { rows, cols },
                    _ => continue,
                }
            } else if m.is_close() {
                break;
            } else {
                continue;
            };
            if gsink.send(frame).await.is_err() {
                return InboundEnd::GuestClosed;
            }
        }
        // Client went away: the guest kills the process group when its connection drops.
        InboundEnd::ClientGone
    };
    // Guest -> client.
    let outbound = async {
        loop {
            let msg = match gstream.next().await {
                Some(Ok(GuestFrame::Started { pid })) => control(&ExecControl::Started { pid }),
                Some(Ok(GuestFrame::Stdout(d))) => tagged(STREAM_STDOUT, &d),
                Some(Ok(GuestFrame::Stderr(d))) => tagged(STREAM_STDERR, &d),
                Some(Ok(GuestFrame::Exited(s))) => {
                    let _ = wsink
                        .send(control(&ExecControl::Exited {
                            exit_code: s.code,
                            signal: s.signal,
                            timed_out: s.timed_out,
                        }))
                        .await;
                    return Ok(());
                }
                Some(Ok(GuestFrame::Error(e))) => return Err(AgentError::Guest(e)),
                Some(Ok(other)) => {
                    return Err(AgentError::GuestChannel(format!(
                        "unexpected frame {other:?}"
                    )))
                }
                Some(Err(e)) => return Err(AgentError::GuestChannel(e.to_string())),
                None => {
                    return Err(AgentError::GuestChannel(
                        "guest closed the exec connection".into(),
                    ))
                }
            };
            if wsink.send(msg).await.is_err() {
                return Ok(());
            }
        }
    };
    tokio::pin!(outbound);
    let ended = tokio::select! {
        r = &mut outbound => return r,
        ended = inbound => ended,
    };
    match ended {
        // Nobody to relay to.
        InboundEnd::ClientGone => Ok(()),
        // The guest took no more input (say, stdin closed after the process exited): its output
        // and exit status still reach the client.
        InboundEnd::GuestClosed => outbound.await,
    }
}

/// Why the client -> guest half of a streaming exec ended.
enum InboundEnd {
    ClientGone,
    GuestClosed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlimits_are_validated() {
        let mut r = api::ExecRequest {
            command: "x".into(),
            ..Default::default()
        };
        r.rlimits.push(api::Rlimit {
            resource: "nofile".into(),
            soft: 10,
            hard: 20,
        });
        assert_eq!(
            to_guest(&r, false).unwrap().rlimits[0].resource,
            RlimitResource::Nofile
        );
        r.rlimits[0].resource = "bogus".into();
        assert!(matches!(
            to_guest(&r, false),
            Err(AgentError::InvalidRequest(_))
        ));
        r.rlimits[0] = api::Rlimit {
            resource: "cpu".into(),
            soft: 5,
            hard: 1,
        };
        assert!(to_guest(&r, false).is_err());
    }

    #[test]
    fn tty_and_stdin_only_when_streaming() {
        let r = api::ExecRequest {
            command: "sh".into(),
            stdin: true,
            tty: Some(api::TtySize { rows: 24, cols: 80 }),
            ..Default::default()
        };
        let g = to_guest(&r, false).unwrap();
        assert!(!g.stdin && g.tty.is_none());
        let g = to_guest(&r, true).unwrap();
        assert!(g.stdin && g.tty.is_some());
        assert!(to_guest(&api::ExecRequest::default(), true).is_err());
    }
}
