mod common;

use common::*;
use futures::{SinkExt, StreamExt};
use microsandbox_wire::guest::codec::HostCodec;
use microsandbox_wire::guest::*;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

#[tokio::test]
async fn ping() {
    let agent = Agent::start();
    assert_eq!(agent.ok(Request::Ping).await, Response::Pong);
}

#[tokio::test]
async fn set_hostname_renames_the_guest_and_refuses_what_is_no_hostname() {
    let agent = Agent::start_in_own_uts();
    assert_eq!(
        agent
            .ok(Request::SetHostname {
                name: "claimed-1".into()
            })
            .await,
        Response::Ok
    );
    let out = agent.exec(sh("hostname")).await;
    assert_eq!(out.stdout_str().trim(), "claimed-1");
    for bad in [String::new(), "x".repeat(65)] {
        let e = agent.err(Request::SetHostname { name: bad }).await;
        assert_eq!(e.kind, GuestErrorKind::InvalidRequest, "{e:?}");
    }
    let out = agent.exec(sh("hostname")).await;
    assert_eq!(
        out.stdout_str().trim(),
        "claimed-1",
        "unchanged by refusals"
    );
    assert_ne!(
        nix::unistd::gethostname().unwrap().to_string_lossy(),
        "claimed-1",
        "the test's own host keeps its name"
    );
}

#[tokio::test]
async fn version_mismatch_is_refused() {
    let agent = Agent::start();
    let stream = UnixStream::connect(&agent.sock).await.unwrap();
    let mut conn = Framed::new(stream, HostCodec::default());
    conn.send(HostFrame::Hello(Hello {
        version: PROTOCOL_VERSION + 1,
    }))
    .await
    .unwrap();
    match next(&mut conn).await {
        GuestFrame::Error(e) => assert_eq!(e.kind, GuestErrorKind::InvalidRequest),
        other => panic!("unexpected {other:?}"),
    }
    assert!(conn.next().await.is_none());
}

#[tokio::test]
async fn request_before_hello_is_refused() {
    let agent = Agent::start();
    let stream = UnixStream::connect(&agent.sock).await.unwrap();
    let mut conn = Framed::new(stream, HostCodec::default());
    conn.send(HostFrame::Request(Request::Ping)).await.unwrap();
    match next(&mut conn).await {
        GuestFrame::Error(e) => assert_eq!(e.kind, GuestErrorKind::InvalidRequest),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn garbage_closes_only_that_connection() {
    let mut agent = Agent::start();
    // Malformed body.
    let mut raw = UnixStream::connect(&agent.sock).await.unwrap();
    raw.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let mut conn = Framed::new(raw, HostCodec::default());
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), conn.next())
        .await
        .expect("agent kept a malformed connection open");
    assert!(!matches!(end, Some(Ok(_))), "answered garbage: {end:?}");
    // Oversized length prefix.
    let mut raw = UnixStream::connect(&agent.sock).await.unwrap();
    raw.write_all(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    // Garbage after a valid handshake.
    let mut conn = agent.connect().await;
    conn.get_mut().write_all(&[0, 0, 0, 1, 0xee]).await.unwrap();
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), conn.next())
        .await
        .expect("agent kept a malformed connection open");
    assert!(!matches!(end, Some(Ok(_))), "answered garbage: {end:?}");
    // Connect and hang up immediately.
    drop(UnixStream::connect(&agent.sock).await.unwrap());

    // Another connection in flight is unaffected, and the agent still serves.
    let mut busy = agent.request(Request::Exec(sh("sleep 0.3; echo ok"))).await;
    let mut raw = UnixStream::connect(&agent.sock).await.unwrap();
    raw.write_all(b"\x00\x00\x00\x02zz").await.unwrap();
    drop(raw);
    let out = collect_exec(&mut busy).await;
    assert_eq!(out.stdout, b"ok\n");
    assert_eq!(agent.ok(Request::Ping).await, Response::Pong);
    assert!(agent.is_running());
}

#[tokio::test]
async fn metrics_reflect_activity() {
    let agent = Agent::start();
    let Response::Metrics(before) = agent.ok(Request::Metrics).await else {
        panic!()
    };
    assert!(before.processes >= 1);
    assert!(before.memory_bytes > 0);
    assert_eq!(before.memory_limit_bytes, None);
    // Burn ~0.5 s of CPU in a child (reaped, so accounted through the agent's cutime).
    let out = agent
        .sh("i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")
        .await;
    assert_eq!(out.status.code, 0);
    let Response::Metrics(after) = agent.ok(Request::Metrics).await else {
        panic!()
    };
    assert!(
        after.cpu_usage_us >= before.cpu_usage_us + 100_000,
        "cpu {} -> {}",
        before.cpu_usage_us,
        after.cpu_usage_us
    );
}

#[tokio::test]
async fn sigterm_stops_the_agent() {
    // Under a wrapper (MSB_TEST_AGENT_BIN) the signal would hit the wrapper, not the agent.
    if std::env::var_os("MSB_TEST_AGENT_BIN").is_some() {
        return;
    }
    let mut agent = Agent::start();
    assert_eq!(agent.ok(Request::Ping).await, Response::Pong);
    let status = agent.terminate().expect("agent ignored SIGTERM");
    assert!(status.success(), "{status:?}");
}
