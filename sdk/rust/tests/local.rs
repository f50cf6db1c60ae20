//! The SDK against a real node agent that the SDK itself starts (local mode), running busybox
//! sandboxes in containers (this machine's KVM cannot boot a guest; the microVM path has its own
//! suite in node-agent). Needs root, crun, the local registry with the test images
//! (`make setup`), the static guest agent (`make guest`) and an agent binary (`MSB_AGENT_BIN`,
//! else the debug build beside this test).

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use microsandbox::{
    agent, Error, ErrorCode, ExecEvent, Isolation, Mount, Patch, Pool, Sandbox, SandboxState,
    Snapshot, Volume,
};

fn agent_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("MSB_AGENT_BIN") {
        return bin.into();
    }
    // target/debug/deps/local-<hash> -> target/debug/microsandbox-agent
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("microsandbox-agent")
}

fn guest_agent() -> PathBuf {
    std::env::var_os("MSB_GUEST_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            let target = exe.ancestors().nth(3).unwrap().to_path_buf();
            target.join("x86_64-unknown-linux-gnu/release/microsandbox-guest")
        })
}

/// One test: the process environment is set once, for an agent of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_end_to_end() {
    let state = tempfile::tempdir().unwrap();
    let (bin, guest) = (agent_binary(), guest_agent());
    assert!(bin.is_file(), "no agent binary at {}", bin.display());
    assert!(
        guest.is_file(),
        "no static guest agent at {}: run `make guest`",
        guest.display()
    );
    // Edition 2021: set_var is safe; nothing else runs in this test binary.
    std::env::set_var(agent::ENV_STATE_DIR, state.path());
    std::env::set_var(agent::ENV_AGENT_BIN, &bin);
    std::env::set_var("MSB_GUEST_AGENT", &guest);
    std::env::set_var(
        "MSB_MIRRORS",
        std::env::var("MSB_TEST_MIRROR").unwrap_or_else(|_| "docker.io=127.0.0.1:5000".into()),
    );
    std::env::remove_var(agent::ENV_SOCKET);
    // The agent the SDK starts is the user's own (--local): binds of any readable directory.
    std::env::remove_var("MSB_HOST_ROOTS");

    // The first call starts the agent; it is ours to stop at the end, also when the scenario
    // panics.
    let pid = agent::start(state.path())
        .await
        .unwrap()
        .expect("a new agent");
    let _stop = StopOnDrop(pid);
    tokio::time::timeout(Duration::from_secs(300), scenario(state.path().into()))
        .await
        .expect("the scenario finished in time");
}

/// SIGTERM to the agent this test started, however the test ends.
struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _gone = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

async fn scenario(state: PathBuf) {
    let name = format!("rs-sdk-{}", std::process::id());
    // A directory that is neither the agent's nor this process's working directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let host_dir = elsewhere.path().join("shared");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("in.txt"), "from the host\n").unwrap();
    let vol = format!("rs-vol-{}", std::process::id());
    Volume::create(&vol, 16).await.unwrap();

    let mut sb = Sandbox::builder(&name)
        .image("busybox")
        .memory(128)
        .isolation(Isolation::Container)
        .env("GREETING", "hello")
        .workdir("/tmp")
        .volume("/host", Mount::bind(&host_dir).readonly())
        .volume("/data", Mount::named(&vol))
        .volume("/scratch", Mount::tmpfs(8))
        .patch(Patch::text("/etc/motd", "patched\n"))
        .create()
        .await
        .unwrap();
    assert_eq!(sb.info().state, SandboxState::Running);

    // Collected execs, the environment, the mounts and the patch.
    let out = sb
        .exec(
            "sh",
            ["-c", "echo $GREETING; pwd; cat /host/in.txt /etc/motd"],
        )
        .await
        .unwrap();
    assert!(out.success());
    assert_eq!(out.stdout_str(), "hello\n/tmp\nfrom the host\npatched\n");
    let failed = sb.shell("echo oops >&2; exit 3").await.unwrap();
    assert_eq!(
        (failed.exit_code, failed.stderr_str().as_ref()),
        (3, "oops\n")
    );
    assert!(!failed.success());
    assert!(
        sb.shell("touch /host/x").await.unwrap().exit_code != 0,
        "read-only bind"
    );
    assert!(sb
        .shell("echo keep > /data/f && cat /data/f")
        .await
        .unwrap()
        .success());

    // Typed errors.
    let missing = sb
        .exec("no-such-program", Vec::<String>::new())
        .await
        .unwrap_err();
    assert!(
        matches!(missing, Error::CommandNotFound { .. }),
        "{missing:?}"
    );
    let timed = sb
        .command("sh")
        .args(["-c", "echo partial; sleep 30"])
        .timeout(Duration::from_millis(500))
        .run()
        .await
        .unwrap_err();
    let Error::ExecTimeout { output } = timed else {
        panic!("expected a timeout, got {timed:?}")
    };
    assert!(output.timed_out && output.stdout_str() == "partial\n");
    let dup = Sandbox::builder(&name)
        .image("busybox")
        .create()
        .await
        .unwrap_err();
    assert!(matches!(dup, Error::AlreadyExists { .. }), "{dup:?}");
    // The agent's own state (its token) is never given to a sandbox.
    let private = Sandbox::builder(format!("{name}-x"))
        .image("busybox")
        .isolation(Isolation::Container)
        .volume("/s", Mount::bind(&state))
        .create()
        .await
        .unwrap_err();
    assert!(
        matches!(&private, Error::InvalidRequest { message, .. } if message.contains("never given")),
        "{private:?}"
    );

    // Stdin, and a streamed exec with typed events.
    let cat = sb
        .command("cat")
        .stdin(b"\x00bytes".to_vec())
        .run()
        .await
        .unwrap();
    assert_eq!(cat.stdout, b"\x00bytes");
    let mut events = sb
        .command("sh")
        .args(["-c", "for i in 1 2 3; do echo $i; done; exit 4"])
        .stream()
        .await
        .unwrap();
    let (mut stdout, mut exit) = (Vec::new(), None);
    while let Some(ev) = events.next().await {
        match ev.unwrap() {
            ExecEvent::Started { pid } => assert!(pid > 0),
            ExecEvent::Stdout(data) => stdout.extend_from_slice(&data),
            ExecEvent::Stderr(_) => {}
            ExecEvent::Exited { exit_code, .. } => exit = Some(exit_code),
        }
    }
    assert_eq!(
        (stdout.as_slice(), exit),
        (b"1\n2\n3\n".as_slice(), Some(4))
    );
    let interactive = sb.command("cat").stream().await.unwrap();
    let input = interactive.input();
    input.write_stdin(b"typed\n".to_vec()).await.unwrap();
    input.close_stdin().await.unwrap();
    assert_eq!(interactive.wait().await.unwrap().stdout_str(), "typed\n");

    // Files.
    let fs = sb.fs();
    fs.mkdir("/tmp/d/e").await.unwrap();
    fs.write("/tmp/d/e/f.txt", "content").await.unwrap();
    assert_eq!(
        fs.read_to_string("/tmp/d/e/f.txt").await.unwrap(),
        "content"
    );
    assert_eq!(fs.stat("/tmp/d/e/f.txt").await.unwrap().size, 7);
    fs.copy("/tmp/d/e/f.txt", "/tmp/d/g.txt").await.unwrap();
    let names: Vec<String> = fs
        .list("/tmp/d")
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert!(
        names.iter().any(|p| p.ends_with("/e")) && names.iter().any(|p| p.ends_with("/g.txt")),
        "{names:?}"
    );
    fs.remove("/tmp/d").await.unwrap();
    assert!(matches!(
        fs.stat("/tmp/d").await.unwrap_err(),
        Error::NotFound { .. }
    ));

    // Metrics, listing, stop (still listed), start again, remove.
    sb.fs()
        .write("/tmp/kept", b"before the stop".to_vec())
        .await
        .unwrap();
    sb.shell("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
        .await
        .unwrap();
    let m = sb.metrics().await.unwrap();
    assert!(m.cpu_usage_us > 0 && m.memory_bytes > 0);
    assert!(Sandbox::list()
        .await
        .unwrap()
        .iter()
        .any(|i| i.name == name));
    let stopped = sb.stop(Some(Duration::from_secs(2))).await.unwrap();
    assert_eq!(stopped.state, SandboxState::Stopped);
    assert_eq!(
        Sandbox::get(&name).await.unwrap().info().state,
        SandboxState::Stopped
    );
    let not_running = sb.shell("true").await.unwrap_err();
    assert!(
        matches!(not_running, Error::NotRunning { .. }),
        "{not_running:?}"
    );
    // Started again: its files as the stop left them.
    assert_eq!(sb.start().await.unwrap().state, SandboxState::Running);
    assert_eq!(
        sb.fs().read_to_string("/tmp/kept").await.unwrap(),
        "before the stop"
    );
    // Paused: commands refused (state paused); resumed: running again.
    assert_eq!(sb.pause().await.unwrap().state, SandboxState::Paused);
    let paused = sb.shell("true").await.unwrap_err();
    assert!(matches!(paused, Error::NotRunning { .. }), "{paused:?}");
    // Its files saved while paused; a sandbox made from the snapshot starts with them.
    let snap = sb.snapshot(&format!("{name}-snap")).await.unwrap();
    assert_eq!(sb.resume().await.unwrap().state, SandboxState::Running);
    sb.remove().await.unwrap();
    let from = Sandbox::builder(format!("{name}-from"))
        .image(&snap.image)
        .isolation(Isolation::Container)
        .create()
        .await
        .unwrap();
    assert_eq!(
        from.fs().read_to_string("/tmp/kept").await.unwrap(),
        "before the stop"
    );
    let in_use = Snapshot::remove(&snap.name).await.unwrap_err();
    assert_eq!(in_use.code(), Some(ErrorCode::SnapshotInUse), "{in_use:?}");
    from.remove().await.unwrap();
    assert!(Snapshot::list().await.unwrap().contains(&snap));
    Snapshot::remove(&snap.name).await.unwrap();
    assert!(Snapshot::list().await.unwrap().is_empty());

    // A warm pool: a create naming it takes a started member, its own name and env applied.
    let template = |member: String| {
        Sandbox::builder(member)
            .image("busybox")
            .memory(64)
            .isolation(Isolation::Container)
    };
    let pool = format!("{name}-pool");
    assert_eq!(
        Pool::create(&pool, 1, template("template".into()))
            .await
            .unwrap()
            .size,
        1
    );
    let ready = |want: u32| {
        let pool = pool.clone();
        async move {
            for _ in 0..600 {
                let pools = Pool::list().await.unwrap();
                if pools.iter().any(|p| p.name == pool && p.ready == want) {
                    return pools;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!(
                "pool {pool} never had {want} ready: {:?}",
                Pool::list().await
            );
        }
    };
    ready(1).await;
    let claimed = template(format!("{name}-claimed"))
        .env("WHO", "rust")
        .pool(&pool)
        .create()
        .await
        .unwrap();
    assert_eq!(
        claimed
            .info()
            .labels
            .get("microsandbox.dev/launch")
            .map(String::as_str),
        Some("warm")
    );
    assert_eq!(
        claimed
            .shell("echo $WHO; hostname")
            .await
            .unwrap()
            .stdout_str(),
        format!("rust\n{name}-claimed\n")
    );
    let pools = ready(1).await; // refilled
    assert_eq!(pools.iter().find(|p| p.name == pool).unwrap().claimed, 1);
    claimed.remove().await.unwrap();
    Pool::remove(&pool).await.unwrap();
    let twice = Pool::remove(&pool).await.unwrap_err();
    assert!(
        matches!(
            twice,
            Error::NotFound {
                code: ErrorCode::PoolNotFound,
                ..
            }
        ),
        "{twice:?}"
    );
    // Idle for its timeout: suspended; the next command resumes it transparently.
    let sleepy = Sandbox::builder(format!("{name}-idle"))
        .image("busybox")
        .isolation(Isolation::Container)
        .idle_timeout(Duration::from_secs(1))
        .create()
        .await
        .unwrap();
    let mut state = SandboxState::Running;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = Sandbox::get(sleepy.name()).await.unwrap().info().state;
        if state == SandboxState::Suspended {
            break;
        }
    }
    assert_eq!(state, SandboxState::Suspended);
    assert_eq!(sleepy.shell("echo hi").await.unwrap().stdout_str(), "hi\n");
    sleepy.remove().await.unwrap();
    assert!(matches!(
        Sandbox::get(&name).await.unwrap_err(),
        Error::NotFound { .. }
    ));
    Volume::remove(&vol).await.unwrap();
    assert!(!Volume::list().await.unwrap().iter().any(|v| v.name == vol));

    // Code run: a Python program on the python image.
    let py = Sandbox::builder(format!("{name}-py"))
        .image("python")
        .isolation(Isolation::Container)
        .create()
        .await
        .unwrap();
    let out = py
        .exec(
            "python3",
            ["-c", "import sys; print(6 * 7, sys.version_info[0])"],
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "42 3\n");
    py.remove().await.unwrap();
}
