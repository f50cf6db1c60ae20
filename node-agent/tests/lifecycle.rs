//! Lifecycle: stop / kill / drain / remove leave nothing behind; attached sandboxes die with their
//! creator's lease; an agent killed with -9 re-adopts running sandboxes and reaps broken ones.

mod common;

use common::*;
use microsandbox_client::api::{SandboxState, StopSandbox};
use microsandbox_client::ErrorCode;
use std::time::Duration;

fn leftovers(agent: &TestAgent, id: &str) -> Vec<String> {
    let mut left = vec![];
    if agent.crun_containers().iter().any(|c| c == id) {
        left.push(format!("crun container {id}"));
    }
    let name = id.trim_start_matches("msb-");
    let mine: Vec<String> = agent
        .mounts()
        .into_iter()
        .filter(|m| m.contains(&format!("/sandboxes/{name}/")))
        .collect();
    if !mine.is_empty() {
        left.push(format!("mounts {mine:?}"));
    }
    for ctl in ["memory", "pids", "cpu", "unified", ""] {
        let p = std::path::Path::new("/sys/fs/cgroup")
            .join(ctl)
            .join("microsandbox")
            .join(id);
        if p.exists() {
            left.push(format!("cgroup {}", p.display()));
        }
    }
    if host_process_with(&format!("{}/sandboxes/{name}/", agent.state.display())) {
        left.push("host process referencing the sandbox".into());
    }
    left
}

#[tokio::test]
async fn stop_kill_drain_remove_leave_nothing() {
    let agent = TestAgent::start("life");
    let c = agent.client();
    for name in ["s-stop", "s-kill", "s-drain", "s-rm"] {
        create(&c, name, "busybox").await;
    }
    // crun's intermediate process of each create is reparented to the agent: reaped, not left
    // as a zombie per sandbox.
    let zombies = zombie_children(agent.pid()).await;
    assert!(
        zombies.is_empty(),
        "zombie children of the agent: {zombies:?}"
    );
    // Graceful stop.
    let info = c
        .stop(
            "s-stop",
            StopSandbox {
                timeout_ms: Some(2000),
            },
        )
        .await
        .unwrap();
    assert_eq!(info.state, SandboxState::Stopped);
    let err = c.exec("s-stop", cmd("true", &[])).await.unwrap_err();
    assert!(err.is(ErrorCode::SandboxNotRunning), "{err}");
    // Kill.
    assert_eq!(c.kill("s-kill").await.unwrap().state, SandboxState::Stopped);
    // Drain waits for the running exec, refuses new ones meanwhile.
    let c2 = c.clone();
    let running = tokio::spawn(async move {
        c2.exec("s-drain", cmd("sh", &["-c", "sleep 1; echo done"]))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c3 = c.clone();
    let drain = tokio::spawn(async move { c3.drain("s-drain", StopSandbox::default()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = c.exec("s-drain", cmd("true", &[])).await.unwrap_err();
    assert!(err.is(ErrorCode::SandboxDraining), "{err}");
    assert_eq!(running.await.unwrap().unwrap().stdout_str(), "done\n");
    assert_eq!(drain.await.unwrap().unwrap().state, SandboxState::Stopped);

    for name in ["s-stop", "s-kill", "s-drain", "s-rm"] {
        c.remove(name).await.unwrap();
        let left = leftovers(&agent, &format!("msb-{name}"));
        assert!(left.is_empty(), "{name}: {left:?}");
        assert!(c
            .get(name)
            .await
            .unwrap_err()
            .is(ErrorCode::SandboxNotFound));
    }
    assert!(!agent.state.join("sandboxes/s-rm").exists());
    let zombies = zombie_children(agent.pid()).await;
    assert!(
        zombies.is_empty(),
        "zombie children of the agent: {zombies:?}"
    );
}

#[tokio::test]
async fn attached_sandbox_dies_with_its_lease_detached_survives() {
    let agent = TestAgent::start("lease");
    let c = agent.client();
    let mut req = sandbox("attached", "busybox");
    req.detached = false;
    c.create(req).await.unwrap();
    let lease = c.hold_lease("attached").await.unwrap();
    create(&c, "detached", "busybox").await;
    // Past the grace period, the lease keeps it alive.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        c.get("attached").await.unwrap().state,
        SandboxState::Running
    );
    drop(lease);
    let mut gone = false;
    for _ in 0..100 {
        if c.get("attached").await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "attached sandbox survived its lease");
    assert!(leftovers(&agent, "msb-attached").is_empty());
    // An attached sandbox whose creator never takes a lease is removed after the grace period.
    let mut req = sandbox("orphan", "busybox");
    req.detached = false;
    c.create(req).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(c
        .get("orphan")
        .await
        .unwrap_err()
        .is(ErrorCode::SandboxNotFound));
    assert_eq!(
        c.get("detached").await.unwrap().state,
        SandboxState::Running
    );
    c.remove("detached").await.unwrap();
}

#[tokio::test]
async fn agent_kill9_restart_readopts_or_reaps() {
    let mut agent = TestAgent::start("restart");
    let c = agent.client();
    create(&c, "keeper", "busybox").await;
    create(&c, "victim", "busybox").await;
    create(&c, "stray", "busybox").await;
    sh(&c, "keeper", "echo state > /tmp/marker").await;
    agent.kill9();
    // A sandbox whose record is lost (as if the agent died before persisting it) is an orphan.
    std::fs::remove_file(agent.state.join("sandboxes/stray/state.json")).unwrap();
    // While the agent is down, the victim's init dies.
    let root = agent.crun_root();
    host(
        "crun",
        &[
            "--root",
            root.to_str().unwrap(),
            "kill",
            "msb-victim",
            "KILL",
        ],
        None,
    );
    std::thread::sleep(Duration::from_millis(300));
    agent.restart();
    let c = agent.client();
    // The survivor is re-adopted with its state intact.
    let out = sh(&c, "keeper", "cat /tmp/marker").await;
    assert_eq!(out.stdout_str(), "state\n");
    // The dead one is reaped: no record, no container, no mount, no cgroup.
    assert!(c
        .get("victim")
        .await
        .unwrap_err()
        .is(ErrorCode::SandboxNotFound));
    assert!(
        leftovers(&agent, "msb-victim").is_empty(),
        "{:?}",
        leftovers(&agent, "msb-victim")
    );
    assert!(c
        .get("stray")
        .await
        .unwrap_err()
        .is(ErrorCode::SandboxNotFound));
    assert!(
        leftovers(&agent, "msb-stray").is_empty(),
        "{:?}",
        leftovers(&agent, "msb-stray")
    );
    // Names stay unique across the restart.
    let err = c.create(sandbox("keeper", "busybox")).await.unwrap_err();
    assert!(err.is(ErrorCode::SandboxAlreadyExists), "{err}");
    c.remove("keeper").await.unwrap();
    assert!(leftovers(&agent, "msb-keeper").is_empty());
}

#[tokio::test]
async fn a_drain_cut_short_by_an_agent_crash_is_finished_after_restart() {
    let mut agent = TestAgent::start("drain-restart");
    let c = agent.client();
    c.create(sandbox("d1", "busybox")).await.unwrap();
    let c2 = agent.client();
    let _long = tokio::spawn(async move { c2.exec("d1", cmd("sleep", &["30"])).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let c3 = agent.client();
    let _drain = tokio::spawn(async move {
        c3.drain(
            "d1",
            StopSandbox {
                timeout_ms: Some(60_000),
            },
        )
        .await
    });
    // Draining: waiting for the long exec.
    let start = std::time::Instant::now();
    while c.get("d1").await.unwrap().state != SandboxState::Draining {
        assert!(start.elapsed().as_secs() < 10, "never draining");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    agent.kill9();
    agent.restart();
    let c = agent.client();
    let start = std::time::Instant::now();
    loop {
        let state = c.get("d1").await.unwrap().state;
        if state == SandboxState::Stopped {
            break;
        }
        assert!(
            start.elapsed().as_secs() < 30,
            "the drain was not finished after the restart: {state:?}; log:\n{}",
            agent.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // It takes no new commands.
    assert!(c.exec("d1", cmd("true", &[])).await.is_err());
}

#[tokio::test]
async fn the_guest_socket_cannot_be_reached_or_replaced_from_inside() {
    let agent = TestAgent::start("socket-handoff");
    let c = agent.client();
    c.create(sandbox("s1", "busybox")).await.unwrap();
    // The host-bound socket is inherited as a descriptor: no directory of it exists inside, so a
    // process in the sandbox has nothing to unlink, replace or listen on.
    let out = sh(
        &c,
        "s1",
        "ls -la /.msb/run 2>&1; test -e /.msb/run/agent.sock && echo present || echo absent",
    )
    .await;
    assert!(out.stdout_str().ends_with("absent\n"), "{out:?}");
    // The agent keeps serving through it.
    assert_eq!(sh(&c, "s1", "echo still").await.stdout_str(), "still\n");
}

/// CPU time of the sandbox's cgroup, as its metrics say (the host's view: also while frozen).
async fn cpu_us(c: &microsandbox_client::AgentClient, name: &str) -> u64 {
    c.metrics(name).await.unwrap().cpu_usage_us
}

#[tokio::test]
async fn pause_freezes_resume_thaws_and_a_restart_keeps_it_paused() {
    let mut agent = TestAgent::start("pause");
    let c = agent.client();
    create(&c, "frozen", "busybox").await;
    // A busy loop in the background, so "frozen" is visible as CPU time that stops growing.
    sh(
        &c,
        "frozen",
        "nohup sh -c 'while :; do :; done' >/dev/null 2>&1 &",
    )
    .await;
    let info = c.pause("frozen").await.unwrap();
    assert_eq!(info.state, SandboxState::Paused);
    assert_eq!(c.get("frozen").await.unwrap().state, SandboxState::Paused);
    let crun_state = std::process::Command::new("crun")
        .arg("--root")
        .arg(agent.crun_root())
        .args(["state", "msb-frozen"])
        .output()
        .unwrap();
    let crun_state = String::from_utf8_lossy(&crun_state.stdout).to_string();
    assert!(crun_state.contains("\"paused\""), "{crun_state}");
    let before = cpu_us(&c, "frozen").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        cpu_us(&c, "frozen").await,
        before,
        "CPU time grew while paused"
    );
    // Paused by request: commands are refused, not a reason to thaw.
    let err = c.exec("frozen", cmd("true", &[])).await.unwrap_err();
    assert!(err.is(ErrorCode::SandboxNotRunning), "{err}");
    assert!(err.to_string().contains("paused"), "{err}");
    // Pausing twice is harmless.
    assert_eq!(c.pause("frozen").await.unwrap().state, SandboxState::Paused);

    // The freezer outlives the agent: a restarted agent finds it paused.
    agent.kill9();
    agent.restart();
    let c = agent.client();
    assert_eq!(c.get("frozen").await.unwrap().state, SandboxState::Paused);
    let info = c.resume("frozen").await.unwrap();
    assert_eq!(info.state, SandboxState::Running);
    let before = cpu_us(&c, "frozen").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        cpu_us(&c, "frozen").await > before,
        "CPU time still after resume"
    );
    assert_eq!(sh(&c, "frozen", "echo back").await.stdout_str(), "back\n");
    // A resume of a running sandbox is harmless; a stopped one cannot be paused.
    assert_eq!(
        c.resume("frozen").await.unwrap().state,
        SandboxState::Running
    );

    // Stopping a paused sandbox leaves nothing behind (the frozen processes are thawed to die).
    c.pause("frozen").await.unwrap();
    let info = c.stop("frozen", StopSandbox::default()).await.unwrap();
    assert_eq!(info.state, SandboxState::Stopped);
    let err = c.pause("frozen").await.unwrap_err();
    assert!(err.is(ErrorCode::SandboxNotRunning), "{err}");
    c.remove("frozen").await.unwrap();
    let left = leftovers(&agent, "msb-frozen");
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn an_idle_sandbox_is_suspended_and_the_next_exec_resumes_it() {
    let agent = TestAgent::start("idle");
    let c = agent.client();
    let mut req = sandbox("sleepy", "busybox");
    req.idle_timeout_secs = Some(1);
    c.create(req).await.unwrap();
    // A command that runs longer than the timeout keeps it awake.
    let out = sh(&c, "sleepy", "sleep 2; echo awake").await;
    assert_eq!(out.stdout_str(), "awake\n");
    assert_eq!(c.get("sleepy").await.unwrap().state, SandboxState::Running);
    // Then, idle: suspended within a few ticks of the timeout.
    let mut state = SandboxState::Running;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = c.get("sleepy").await.unwrap().state;
        if state == SandboxState::Suspended {
            break;
        }
    }
    assert_eq!(state, SandboxState::Suspended);
    // Looking does not wake it.
    c.metrics("sleepy").await.unwrap();
    assert_eq!(
        c.get("sleepy").await.unwrap().state,
        SandboxState::Suspended
    );
    // The next command does, transparently.
    assert_eq!(sh(&c, "sleepy", "echo hi").await.stdout_str(), "hi\n");
    assert_eq!(c.get("sleepy").await.unwrap().state, SandboxState::Running);
    // File operations count too.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        c.get("sleepy").await.unwrap().state,
        SandboxState::Suspended
    );
    c.fs_write_bytes("sleepy", "/tmp/f", None, &b"data"[..])
        .await
        .unwrap();
    assert_eq!(c.get("sleepy").await.unwrap().state, SandboxState::Running);
    // A requested pause is not undone by an exec.
    c.pause("sleepy").await.unwrap();
    let err = c.exec("sleepy", cmd("true", &[])).await.unwrap_err();
    assert!(err.is(ErrorCode::SandboxNotRunning), "{err}");
    c.remove("sleepy").await.unwrap();
    let left = leftovers(&agent, "msb-sleepy");
    assert!(left.is_empty(), "{left:?}");
}
