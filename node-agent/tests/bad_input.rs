//! Bad input gets a clear typed error, and the agent keeps serving.

mod common;

use common::*;
use microsandbox_client::api::{ExecRequest, StopSandbox};
use microsandbox_client::{AgentClient, Endpoint, ErrorCode};

#[tokio::test]
async fn typed_errors_and_the_agent_keeps_serving() {
    let agent = TestAgent::start("bad");
    let c = agent.client();

    let err = c
        .create(sandbox("nope", "no-such-image-anywhere"))
        .await
        .unwrap_err();
    assert!(err.is(ErrorCode::ImageNotFound), "{err}");

    let err = c
        .create(sandbox("unreach", "127.0.0.1:1/library/busybox"))
        .await
        .unwrap_err();
    assert!(err.is(ErrorCode::RegistryUnreachable), "{err}");

    for bad in ["Bad_Name", "-x", "a/b", ""] {
        let err = c.create(sandbox(bad, "busybox")).await.unwrap_err();
        assert!(err.is(ErrorCode::InvalidName), "{bad:?}: {err}");
    }

    let err = c
        .create(sandbox("bad-ref", "UPPER::case"))
        .await
        .unwrap_err();
    assert!(err.is(ErrorCode::InvalidRequest), "{err}");

    create(&c, "dup", "busybox").await;
    let err = c.create(sandbox("dup", "busybox")).await.unwrap_err();
    assert!(err.is(ErrorCode::SandboxAlreadyExists), "{err}");

    c.stop(
        "dup",
        StopSandbox {
            timeout_ms: Some(500),
        },
    )
    .await
    .unwrap();
    let err = c.exec("dup", cmd("true", &[])).await.unwrap_err();
    assert!(err.is(ErrorCode::SandboxNotRunning), "{err}");

    let err = c.exec("ghost", cmd("true", &[])).await.unwrap_err();
    assert!(err.is(ErrorCode::SandboxNotFound), "{err}");

    create(&c, "fs", "busybox").await;
    let err = c.fs_stat("fs", "/definitely/not/here").await.unwrap_err();
    assert!(err.is(ErrorCode::PathNotFound), "{err}");
    let err = c
        .exec(
            "fs",
            ExecRequest {
                rlimits: vec![],
                ..cmd("", &[])
            },
        )
        .await
        .unwrap_err();
    assert!(err.is(ErrorCode::InvalidRequest), "{err}");

    // A collected exec cannot grow the agent's memory without bound: past the cap the command is
    // stopped and the caller is told to stream instead.
    let err = c
        .exec("fs", cmd("head", &["-c", "200000000", "/dev/zero"]))
        .await
        .unwrap_err();
    assert!(
        err.is(ErrorCode::ExecFailed) && err.to_string().contains("streaming"),
        "{err}"
    );
    assert_eq!(
        sh(&c, "fs", "echo still-here").await.stdout_str(),
        "still-here\n"
    );

    // Unauthenticated and wrongly authenticated requests are refused.
    let sock = Endpoint::Unix(agent.state.join("agent.sock"));
    for token in [None, Some("wrong".to_string())] {
        let anon = AgentClient::new(sock.clone(), token);
        let err = anon.list().await.unwrap_err();
        assert!(err.is(ErrorCode::Unauthorized), "{err}");
        assert!(anon.health().await.is_ok());
    }

    // Malformed JSON bodies are typed errors, not hangs or crashes.
    let token = std::fs::read_to_string(agent.state.join("agent.token")).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(agent.state.join("agent.sock"))
        .args([
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "content-type: application/json",
        ])
        .args(["-d", "{\"name\": 5", "http://localhost/v1/sandboxes"])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("\"invalid_request\""), "{body}");

    // Still serving, state consistent.
    let names: Vec<String> = c
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["dup".to_string(), "fs".to_string()]);
    c.remove("dup").await.unwrap();
    c.remove("fs").await.unwrap();
}
