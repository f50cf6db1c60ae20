//! Resource limits under hostile workloads, and metrics.

mod common;

use common::*;
use microsandbox_client::api::{CreateSandbox, SandboxState};
use std::time::Duration;

fn limited(name: &str, memory_mib: u32, pids: Option<u32>) -> CreateSandbox {
    serde_json::from_value(serde_json::json!({
        "name": name, "image": "busybox", "detached": true, "isolation": "container",
        "memory_mib": memory_mib, "pids_limit": pids
    }))
    .unwrap()
}

#[tokio::test]
async fn memory_bomb_is_killed_agent_and_neighbour_keep_working() {
    let agent = TestAgent::start("membomb");
    let c = agent.client();
    c.create(limited("bomb", 64, None)).await.unwrap();
    c.create(limited("neighbour", 64, None)).await.unwrap();
    // Grow a shell variable until the cgroup's OOM killer ends it.
    let out = sh(
        &c,
        "bomb",
        "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done",
    )
    .await;
    assert_eq!(out.signal, Some(9), "bomb was not SIGKILLed: {out:?}");
    assert_eq!(out.exit_code, 137);
    // The sandbox (its guest agent) survives and keeps serving.
    assert_eq!(sh(&c, "bomb", "echo alive").await.stdout_str(), "alive\n");
    let m = c.metrics("bomb").await.unwrap();
    assert_eq!(m.memory_limit_bytes, Some(64 << 20));
    assert_eq!(
        sh(&c, "neighbour", "echo fine").await.stdout_str(),
        "fine\n"
    );
    assert!(c.info().await.is_ok());
    for n in ["bomb", "neighbour"] {
        c.remove(n).await.unwrap();
    }
}

#[tokio::test]
async fn fork_bomb_is_contained_by_the_pids_limit() {
    let agent = TestAgent::start("forkbomb");
    let c = agent.client();
    c.create(limited("forky", 256, Some(64))).await.unwrap();
    c.create(limited("calm", 64, None)).await.unwrap();
    let req = microsandbox_client::api::ExecRequest {
        timeout_ms: Some(3000),
        ..cmd("sh", &["-c", "bomb() { bomb | bomb & }; bomb; sleep 5"])
    };
    let _ = c.exec("forky", req).await;
    let m = c.metrics("forky").await.unwrap();
    assert!(m.processes <= 64, "pids limit exceeded: {}", m.processes);
    // Once the bomb is gone, the sandbox itself is usable again.
    let mut recovered = false;
    for _ in 0..50 {
        if let Ok(out) = c.exec("forky", cmd("echo", &["back"])).await {
            if out.stdout_str() == "back\n" {
                recovered = true;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recovered, "sandbox did not recover after the fork bomb");
    // Host and neighbour unaffected; the agent still answers.
    assert_eq!(sh(&c, "calm", "echo ok").await.stdout_str(), "ok\n");
    assert_eq!(c.get("forky").await.unwrap().state, SandboxState::Running);
    for n in ["forky", "calm"] {
        c.remove(n).await.unwrap();
    }
}

#[tokio::test]
async fn metrics_move_under_load() {
    let agent = TestAgent::start("metrics");
    let c = agent.client();
    create(&c, "busy", "busybox").await;
    let before = c.metrics("busy").await.unwrap();
    sh(&c, "busy", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; head -c 20000000 /dev/zero > /tmp/f; sync").await;
    let c2 = c.clone();
    let hog = tokio::spawn(async move {
        sh(
            &c2,
            "busy",
            "head -c 30000000 /dev/zero | tr '\\0' a > /dev/shm/x; sleep 2",
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = c.metrics("busy").await.unwrap();
    hog.await.unwrap();
    assert!(
        during.cpu_usage_us > before.cpu_usage_us,
        "{before:?} -> {during:?}"
    );
    assert!(
        during.memory_bytes > before.memory_bytes,
        "{before:?} -> {during:?}"
    );
    assert!(
        during.processes > before.processes,
        "{before:?} -> {during:?}"
    );
    let all = c.all_metrics().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].name, "busy");
    c.remove("busy").await.unwrap();
}

#[tokio::test]
async fn disk_limit_gives_enospc_in_the_guest_and_leaves_nothing() {
    let agent = TestAgent::start("disklimit");
    let c = agent.client();
    let req: CreateSandbox = serde_json::from_value(serde_json::json!({
        "name": "filler", "image": "busybox", "detached": true, "isolation": "container",
        "memory_mib": 64, "disk_mib": 16
    }))
    .unwrap();
    c.create(req).await.unwrap();
    let out = sh(
        &c,
        "filler",
        "dd if=/dev/zero of=/var/big bs=1M count=64 2>&1; echo rc=$?",
    )
    .await;
    assert!(
        out.stdout_str().contains("No space left on device"),
        "{out:?}"
    );
    let img = agent.state.join("sandboxes/filler/rw.img");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 16 << 20);
    // The image's files still work; a neighbour without a limit is unaffected.
    assert_eq!(
        sh(&c, "filler", "rm /var/big; echo ok").await.stdout_str(),
        "ok\n"
    );
    c.remove("filler").await.unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = agent.state.join("sandboxes/filler");
    assert!(
        !mounts.contains(dir.to_str().unwrap()),
        "mounts left under {}",
        dir.display()
    );
    assert!(!dir.exists());
    let bad: CreateSandbox = serde_json::from_value(serde_json::json!({
        "name": "tiny", "image": "busybox", "detached": true, "isolation": "container",
        "disk_mib": 1
    }))
    .unwrap();
    assert!(c.create(bad).await.is_err());
}
