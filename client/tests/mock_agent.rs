//! The client against small in-process mock agents (HTTP on a unix socket or TCP, WebSockets).

use bytes::Bytes;
use futures::{SinkExt, StreamExt, TryStreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use microsandbox_client::api::{ExecRequest, PullEvent, PullImage, PullPolicy};
use microsandbox_client::{AgentClient, ClientError, Endpoint, ErrorCode, ExecEvent};
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as WsReq, Response as WsResp,
};
use tokio_tungstenite::tungstenite::Message;

type RespBody = BoxBody<Bytes, std::io::Error>;
const TOKEN: &str = "s3cret";

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<RespBody> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

fn api_error(status: StatusCode, code: &str, message: &str) -> Response<RespBody> {
    full(
        status,
        format!(r#"{{"code":"{code}","message":{message:?}}}"#),
    )
}

/// Serves `handler` on a fresh unix socket; returns the socket path (and the dir keeping it).
fn serve_unix<F, Fut>(handler: F) -> (tempfile::TempDir, PathBuf)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<RespBody>> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let h = handler.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (dir, sock)
}

fn authorized(req: &Request<Incoming>) -> bool {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some("Bearer s3cret")
}

/// A tiny agent: auth, a few routes, echo of paths in errors.
async fn agent(req: Request<Incoming>) -> Response<RespBody> {
    if !authorized(&req) {
        return api_error(StatusCode::UNAUTHORIZED, "unauthorized", "bad token");
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    match (req.method().as_str(), path.as_str()) {
        ("GET", "/v1/info") => full(
            StatusCode::OK,
            r#"{"version":"0.1.0","node":"n1","isolation":["microvm","container"],"sandboxes":0}"#,
        ),
        ("GET", "/v1/sandboxes") => full(StatusCode::OK, "[]"),
        ("DELETE", "/v1/sandboxes/gone") => full(StatusCode::NO_CONTENT, ""),
        ("POST", "/v1/sandboxes/x/exec") => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let r: ExecRequest = serde_json::from_slice(&body).unwrap();
            assert_eq!(r.command, "echo");
            full(
                StatusCode::OK,
                r#"{"exit_code":3,"signal":null,"timed_out":false,"stdout_b64":"aGkK","stderr_b64":""}"#,
            )
        }
        ("POST", "/v1/images/pull") => {
            // Events split at awkward places, in separate chunks.
            let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(Bytes::from_static(
                    b"{\"event\":\"resolved\",\"refer",
                ))),
                Ok(Frame::data(Bytes::from_static(
                    b"ence\":\"docker.io/library/alpine:3\"}\n{\"event\":\"manifest\",",
                ))),
                Ok(Frame::data(Bytes::from_static(
                    b"\"digest\":\"sha256:m\",\"layers\":1}\n",
                ))),
                Ok(Frame::data(Bytes::from_static(
                    b"{\"event\":\"done\",\"digest\":\"sha256:m\"}\n",
                ))),
            ];
            let stream = futures::stream::iter(chunks).then(|c| async {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                c
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            *r.status_mut() = StatusCode::OK;
            r
        }
        ("GET", "/v1/sandboxes/x/fs/file") if query != "path=/data/big%20file" => {
            api_error(StatusCode::NOT_FOUND, "path_not_found", &query)
        }
        ("GET", "/v1/sandboxes/x/fs/file") => {
            // 4 MiB in 64 KiB chunks.
            let stream = futures::stream::iter(0..64u8)
                .map(|i| Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![i; 64 * 1024]))));
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        ("PUT", "/v1/sandboxes/x/fs/file") => {
            assert_eq!(query, "path=/up&mode=416&append=false");
            let mut body = req.into_body();
            let mut n = 0u64;
            let mut sum = 0u64;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return full(StatusCode::BAD_REQUEST, "truncated upload");
                };
                if let Ok(data) = frame.into_data() {
                    n += data.len() as u64;
                    sum += data.iter().map(|&b| b as u64).sum::<u64>();
                }
            }
            // The test uploads byte i = i % 251.
            assert_eq!(sum, (0..n).map(|i| i % 251).sum::<u64>());
            full(StatusCode::OK, format!(r#"{{"bytes":{n}}}"#))
        }
        ("POST", "/v1/sandboxes/x/fs/mkdir") => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], br#"{"path":"/a/b","recursive":true}"#);
            full(StatusCode::NO_CONTENT, "")
        }
        ("GET", "/v1/sandboxes/plain/metrics") => full(StatusCode::BAD_GATEWAY, "proxy says no"),
        _ => api_error(
            StatusCode::NOT_FOUND,
            "sandbox_not_found",
            &format!("{path}?{query}"),
        ),
    }
}

fn client(sock: PathBuf) -> AgentClient {
    AgentClient::new(Endpoint::Unix(sock), Some(TOKEN.into()))
}

#[tokio::test]
async fn json_routes_and_errors() {
    let (_dir, sock) = serve_unix(agent);
    let c = client(sock.clone());
    let info = c.info().await.unwrap();
    assert_eq!(info.node, "n1");
    assert!(c.list().await.unwrap().is_empty());
    c.remove("gone").await.unwrap();
    // Connection reuse: many calls on one client, concurrently.
    let calls = (0..20).map(|_| c.info());
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }

    let err = c.get("a/../b").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SandboxNotFound));
    assert!(
        err.to_string().contains("/v1/sandboxes/a%2F%2E%2E%2Fb"),
        "{err}"
    );

    match c.metrics("plain").await.unwrap_err() {
        ClientError::Protocol(m) => {
            assert!(m.contains("502") && m.contains("proxy says no"), "{m}")
        }
        other => panic!("{other:?}"),
    }

    let bad = AgentClient::new(Endpoint::Unix(sock), Some("wrong".into()));
    assert_eq!(
        bad.info().await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );

    let out = c
        .exec(
            "x",
            ExecRequest {
                command: "echo".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((out.exit_code, out.stdout.as_slice()), (3, &b"hi\n"[..]));
    c.fs_mkdir("x", "/a/b", true).await.unwrap();
}

#[tokio::test]
async fn tcp_endpoint() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req| async {
                    Ok::<_, Infallible>(agent(req).await)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let c = AgentClient::new(Endpoint::Tcp(addr.to_string()), Some(TOKEN.into()));
    assert_eq!(c.info().await.unwrap().version, "0.1.0");
}

#[tokio::test]
async fn unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let c = client(dir.path().join("agent.sock"));
    let err = c.info().await.unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    assert!(
        err.to_string().contains("microsandbox-agent serve"),
        "{err}"
    );
    let err = c
        .exec_stream("x", ExecRequest::default())
        .await
        .unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    let err = AgentClient::from_state_dir(dir.path()).unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");

    std::fs::write(dir.path().join("agent.token"), format!("{TOKEN}\n")).unwrap();
    let c = AgentClient::from_state_dir(dir.path()).unwrap();
    assert_eq!(c.endpoint(), &Endpoint::Unix(dir.path().join("agent.sock")));
    assert!(c.health().await.unwrap_err().is_unreachable());
}

#[tokio::test]
async fn pull_stream() {
    let (_dir, sock) = serve_unix(agent);
    let c = client(sock);
    let req = PullImage {
        image: "alpine:3".into(),
        policy: PullPolicy::Always,
    };
    let events: Vec<PullEvent> = c
        .pull_image(req.clone())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[2],
        PullEvent::Done {
            digest: "sha256:m".into()
        }
    );
    assert_eq!(c.pull_image_wait(req).await.unwrap(), "sha256:m");
}

#[tokio::test]
async fn fs_streaming() {
    let (_dir, sock) = serve_unix(agent);
    let c = client(sock);
    let tmp = tempfile::tempdir().unwrap();

    let dl = tmp.path().join("dl");
    let n = c.fs_read_to_file("x", "/data/big file", &dl).await.unwrap();
    assert_eq!(n, 64 * 64 * 1024);
    let data = std::fs::read(&dl).unwrap();
    assert_eq!(data.len() as u64, n);
    assert!(
        data[..64 * 1024].iter().all(|&b| b == 0)
            && data[63 * 64 * 1024..].iter().all(|&b| b == 63)
    );

    // A failed read creates nothing.
    let missing = tmp.path().join("missing");
    let err = c.fs_read_to_file("x", "/nope", &missing).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::PathNotFound));
    assert!(!missing.exists());

    // Upload 3 MiB + 7 bytes from disk, mode from the file (0o640 = 416).
    let up = tmp.path().join("up");
    let content: Vec<u8> = (0..3 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
    std::fs::write(&up, &content).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&up, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    let n = c.fs_write_from_file("x", &up, "/up").await.unwrap();
    assert_eq!(n, content.len() as u64);

    // The agent refusing an upload early (without reading it) still gives its typed error.
    let err = c
        .fs_write_from_file("nosuch", &up, "/up")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SandboxNotFound), "{err:?}");
    // A failing body aborts the upload.
    let failing = futures::stream::iter([
        Ok(Bytes::from_static(b"abc")),
        Err(std::io::Error::other("disk on fire")),
    ]);
    let err = c
        .fs_write("x", "/up", Some(0o640), false, failing)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Io(e) if e.to_string().contains("disk on fire")),
        "{err:?}"
    );

    let chunks = c.fs_read("x", "/data/big file").await.unwrap();
    let total = chunks
        .try_fold(0usize, |acc, b| async move { Ok(acc + b.len()) })
        .await
        .unwrap();
    assert_eq!(total, 64 * 64 * 1024);
}

/// Serves one WebSocket connection per accept with `on_ws`, after checking the path and token.
fn serve_ws<F, Fut>(expected_path: &'static str, on_ws: F) -> (tempfile::TempDir, PathBuf)
where
    F: Fn(tokio_tungstenite::WebSocketStream<tokio::net::UnixStream>) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let on_ws = Arc::new(on_ws);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let on_ws = on_ws.clone();
            tokio::spawn(async move {
                #[allow(clippy::result_large_err)] // the type is tungstenite's
                let check = |req: &WsReq, resp: WsResp| -> Result<WsResp, ErrorResponse> {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok());
                    if req.uri().path() != expected_path || auth != Some("Bearer s3cret") {
                        let mut e = ErrorResponse::new(Some(
                            r#"{"code":"sandbox_not_found","message":"nope"}"#.into(),
                        ));
                        *e.status_mut() = StatusCode::NOT_FOUND;
                        return Err(e);
                    }
                    Ok(resp)
                };
                if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await {
                    on_ws(ws).await;
                }
            });
        }
    });
    (dir, sock)
}

#[tokio::test]
async fn exec_websocket() {
    let (_dir, sock) = serve_ws("/v1/sandboxes/x/exec/ws", |mut ws| async move {
        let first = ws.next().await.unwrap().unwrap();
        let req: ExecRequest = serde_json::from_str(first.to_text().unwrap()).unwrap();
        assert_eq!((req.command.as_str(), req.stdin), ("cat", true));
        ws.send(Message::text(r#"{"type":"started","pid":7}"#))
            .await
            .unwrap();
        ws.send(Message::binary(b"\x02warming up".to_vec()))
            .await
            .unwrap();
        // Echo stdin to stdout until stdin_close; record control messages.
        let mut controls = Vec::new();
        while let Some(msg) = ws.next().await {
            match msg.unwrap() {
                Message::Binary(data) => {
                    let mut out = vec![1u8];
                    out.extend_from_slice(&data);
                    ws.send(Message::binary(out)).await.unwrap();
                }
                Message::Text(t) if t.as_str() == r#"{"type":"stdin_close"}"# => break,
                Message::Text(t) => controls.push(t.as_str().to_string()),
                _ => {}
            }
        }
        assert_eq!(
            controls,
            [
                r#"{"type":"signal","signal":28}"#,
                r#"{"type":"resize","rows":30,"cols":100}"#
            ]
        );
        ws.send(Message::text(
            r#"{"type":"exited","exit_code":0,"signal":null,"timed_out":false}"#,
        ))
        .await
        .unwrap();
        let _ = ws.close(None).await;
    });
    let c = client(sock.clone());
    let req = ExecRequest {
        command: "cat".into(),
        stdin: true,
        ..Default::default()
    };
    let mut s = c.exec_stream("x", req.clone()).await.unwrap();
    assert_eq!(
        s.next_event().await.unwrap().unwrap(),
        ExecEvent::Started { pid: 7 }
    );
    assert_eq!(s.pid(), Some(7));
    assert_eq!(
        s.next_event().await.unwrap().unwrap(),
        ExecEvent::Stderr(Bytes::from_static(b"warming up"))
    );
    let input = s.input();
    let writer = tokio::spawn(async move {
        input.write_stdin(&b"hello "[..]).await.unwrap();
        input.write_stdin(Bytes::new()).await.unwrap(); // no-op
        input.write_stdin(b"world".to_vec()).await.unwrap();
        input.signal(28).await.unwrap();
        input.resize(30, 100).await.unwrap();
        input.close_stdin().await.unwrap();
    });
    let out = s.wait_output().await.unwrap();
    writer.await.unwrap();
    assert_eq!(out.stdout_str(), "hello world");
    assert!(out.success());

    // Wrong route: the refused upgrade is decoded like any HTTP error.
    let err = c.exec_stream("y", req).await.unwrap_err();
    assert!(
        err.code() == Some(ErrorCode::SandboxNotFound)
            || matches!(&err, ClientError::Protocol(m) if m.contains("404")),
        "{err:?}"
    );
}

#[tokio::test]
async fn exec_websocket_error_and_truncation() {
    let (_dir, sock) = serve_ws("/v1/sandboxes/x/exec/ws", |mut ws| async move {
        let first = ws.next().await.unwrap().unwrap();
        let req: ExecRequest = serde_json::from_str(first.to_text().unwrap()).unwrap();
        if req.command == "fail" {
            ws.send(Message::text(
                r#"{"type":"error","error":{"code":"exec_failed","message":"no such file"}}"#,
            ))
            .await
            .unwrap();
        } else {
            ws.send(Message::text(r#"{"type":"started","pid":1}"#))
                .await
                .unwrap();
        }
        let _ = ws.close(None).await;
    });
    let c = client(sock);
    let mut s = c
        .exec_stream(
            "x",
            ExecRequest {
                command: "fail".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        s.next_event().await.unwrap().unwrap_err().code(),
        Some(ErrorCode::ExecFailed)
    );
    assert!(s.next_event().await.is_none());

    let s = c
        .exec_stream(
            "x",
            ExecRequest {
                command: "true".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        s.wait_output().await,
        Err(ClientError::WebSocket(_))
    ));
}

#[tokio::test]
async fn lease_held_until_dropped() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let (_dir, sock) = serve_ws("/v1/sandboxes/att/lease", move |mut ws| {
        let tx = tx.clone();
        async move {
            ws.send(Message::Ping(Bytes::from_static(b"hb")))
                .await
                .unwrap();
            while let Some(msg) = ws.next().await {
                match msg {
                    Ok(Message::Pong(p)) if &p[..] == b"hb" => tx.send("pong").unwrap(),
                    Ok(Message::Close(_)) => {
                        tx.send("close").unwrap();
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            tx.send("ended").unwrap();
        }
    });
    let c = client(sock);
    let lease = c.hold_lease("att").await.unwrap();
    assert_eq!(lease.name(), "att");
    assert_eq!(rx.recv().await, Some("pong"));
    assert!(lease.is_held());
    drop(lease);
    assert_eq!(rx.recv().await, Some("close"));
    assert_eq!(rx.recv().await, Some("ended"));

    // release() waits; lost() reports a lease the agent ended.
    let lease = c.hold_lease("att").await.unwrap();
    assert_eq!(rx.recv().await, Some("pong"));
    lease.release().await;
    assert_eq!(rx.recv().await, Some("close"));

    assert!(c.hold_lease("other").await.is_err());
}

#[tokio::test]
async fn lease_lost_when_agent_closes() {
    let (_dir, sock) = serve_ws("/v1/sandboxes/att/lease", |mut ws| async move {
        let _ = ws.close(None).await;
        while ws.next().await.is_some() {}
    });
    let mut lease = client(sock).hold_lease("att").await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), lease.lost())
        .await
        .unwrap();
    assert!(!lease.is_held());
}
