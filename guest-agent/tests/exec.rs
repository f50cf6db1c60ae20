mod common;

use common::*;
use futures::SinkExt;
use microsandbox_wire::guest::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn echo_exact_bytes() {
    let agent = Agent::start();
    let out = agent
        .exec(ExecRequest {
            command: "echo".into(),
            args: vec!["hello".into(), "world".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(out.stdout, b"hello world\n");
    assert!(out.stderr.is_empty());
    assert_eq!(
        out.status,
        ExitStatus {
            code: 0,
            signal: None,
            timed_out: false
        }
    );
    assert!(out.pid > 0);
}

#[tokio::test]
async fn stderr_is_separate() {
    let agent = Agent::start();
    let out = agent.sh("echo out; echo err >&2; echo out2").await;
    assert_eq!(out.stdout, b"out\nout2\n");
    assert_eq!(out.stderr, b"err\n");
}

#[tokio::test]
async fn exit_codes_and_signals() {
    let agent = Agent::start();
    let out = agent.sh("exit 3").await;
    assert_eq!(out.status.code, 3);
    assert_eq!(out.status.signal, None);
    let out = agent.sh("kill -9 $$").await;
    assert_eq!(out.status.code, 137);
    assert_eq!(out.status.signal, Some(9));
    assert!(!out.status.timed_out);
}

#[tokio::test]
async fn binary_output_is_byte_exact() {
    let agent = Agent::start();
    let data = pattern(10 * 1024 * 1024 + 17, 42);
    let file = agent.path("blob");
    std::fs::write(&file, &data).unwrap();
    let out = agent
        .exec(ExecRequest {
            command: "cat".into(),
            args: vec![file.to_str().unwrap().into()],
            ..Default::default()
        })
        .await;
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "output differs from the file");
    assert_eq!(out.status.code, 0);
}

#[tokio::test]
async fn hundred_mib_with_slow_reader_loses_nothing() {
    let agent = Agent::start();
    let block = pattern(1024 * 1024, 7);
    let file = agent.path("block");
    std::fs::write(&file, &block).unwrap();
    let script = format!(
        "for i in $(seq 100); do cat {}; done; echo tail >&2",
        file.display()
    );
    let mut conn = agent.request(Request::Exec(sh(&script))).await;
    // Read nothing for a while: the process must block on its pipe, not the agent buffer it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = collect_exec(&mut conn).await;
    assert_eq!(out.stdout.len(), 100 * block.len());
    for (i, chunk) in out.stdout.chunks(block.len()).enumerate() {
        assert!(chunk == &block[..], "block {i} differs");
    }
    assert_eq!(out.stderr, b"tail\n");
    assert_eq!(out.status.code, 0);
}

#[tokio::test]
async fn stdin_round_trip() {
    let agent = Agent::start();
    let input = pattern(5 * 1024 * 1024 + 3, 9);
    let conn = agent
        .request(Request::Exec(ExecRequest {
            command: "cat".into(),
            stdin: true,
            ..Default::default()
        }))
        .await;
    let (mut sink, mut stream) = futures::StreamExt::split(conn);
    // Write all input while output is read concurrently: the agent must keep draining stdout
    // while stdin is being written (cat blocks on a full stdout pipe otherwise).
    let writer = {
        let input = input.clone();
        tokio::spawn(async move {
            for chunk in input.chunks(64 * 1024) {
                sink.send(HostFrame::Stdin(chunk.to_vec().into()))
                    .await
                    .unwrap();
            }
            sink.send(HostFrame::StdinClose).await.unwrap();
            sink
        })
    };
    let mut out = Vec::new();
    let status = loop {
        let frame = tokio::time::timeout(
            Duration::from_secs(60),
            futures::StreamExt::next(&mut stream),
        )
        .await
        .expect("timeout")
        .expect("connection ended")
        .unwrap();
        match frame {
            GuestFrame::Started { .. } => {}
            GuestFrame::Stdout(d) => out.extend_from_slice(&d),
            GuestFrame::Exited(st) => break st,
            other => panic!("unexpected {other:?}"),
        }
    };
    let _sink = writer.await.unwrap();
    assert_eq!(out.len(), input.len());
    assert!(out == input);
    assert_eq!(status.code, 0);

    // Without `stdin`, stdin is /dev/null: cat ends at once.
    let out = agent
        .exec(ExecRequest {
            command: "cat".into(),
            ..Default::default()
        })
        .await;
    assert!(out.stdout.is_empty());
    assert_eq!(out.status.code, 0);
}

#[tokio::test]
async fn tty_has_terminal_and_size() {
    let agent = Agent::start();
    let tty = Some(TtySize {
        rows: 40,
        cols: 120,
    });
    let out = agent
        .exec(ExecRequest {
            command: "tty".into(),
            tty,
            ..Default::default()
        })
        .await;
    let s = out.stdout_str();
    assert!(s.starts_with("/dev/pts/"), "tty printed {s:?}");
    assert!(s.ends_with("\r\n"), "pty output has ONLCR: {s:?}");
    assert_eq!(out.status.code, 0);

    let out = agent
        .exec(ExecRequest {
            command: "stty".into(),
            args: vec!["size".into()],
            tty,
            ..Default::default()
        })
        .await;
    assert_eq!(out.stdout_str(), "40 120\r\n");

    // A controlling terminal: /dev/tty opens; TERM defaults.
    let mut req = sh("echo ok > /dev/tty; echo $TERM");
    req.tty = tty;
    let out = agent.exec(req).await;
    assert_eq!(out.stdout_str(), "ok\r\nxterm-256color\r\n");
}

#[tokio::test]
async fn tty_resize_and_input() {
    let agent = Agent::start();
    let mut req = sh("read line; echo \"got:$line\"; stty size");
    req.tty = Some(TtySize { rows: 24, cols: 80 });
    let mut conn = agent.request(Request::Exec(req)).await;
    assert!(matches!(next(&mut conn).await, GuestFrame::Started { .. }));
    conn.send(HostFrame::Resize {
        rows: 50,
        cols: 100,
    })
    .await
    .unwrap();
    conn.send(HostFrame::Stdin(b"hi there\n".to_vec().into()))
        .await
        .unwrap();
    let mut out = Vec::new();
    let status = loop {
        match next(&mut conn).await {
            GuestFrame::Stdout(d) => out.extend_from_slice(&d),
            GuestFrame::Exited(st) => break st,
            other => panic!("unexpected {other:?}"),
        }
    };
    let s = String::from_utf8_lossy(&out);
    assert!(s.contains("got:hi there\r\n"), "{s:?}");
    assert!(s.ends_with("50 100\r\n"), "{s:?}");
    assert_eq!(status.code, 0);
}

#[tokio::test]
async fn tty_stdin_close_sends_eof() {
    let agent = Agent::start();
    let mut conn = agent
        .request(Request::Exec(ExecRequest {
            command: "cat".into(),
            tty: Some(TtySize { rows: 24, cols: 80 }),
            stdin: true,
            ..Default::default()
        }))
        .await;
    assert!(matches!(next(&mut conn).await, GuestFrame::Started { .. }));
    conn.send(HostFrame::Stdin(b"abc\n".to_vec().into()))
        .await
        .unwrap();
    conn.send(HostFrame::StdinClose).await.unwrap();
    let mut out = Vec::new();
    let status = loop {
        match next(&mut conn).await {
            GuestFrame::Stdout(d) => out.extend_from_slice(&d),
            GuestFrame::Exited(st) => break st,
            other => panic!("unexpected {other:?}"),
        }
    };
    // Echo of the input plus cat's copy.
    assert_eq!(String::from_utf8_lossy(&out), "abc\r\nabc\r\n");
    assert_eq!(status.code, 0);
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let agent = Agent::start();
    let mut req = sh("sleep 100 & echo $!; sleep 100");
    req.timeout_ms = Some(500);
    let started = Instant::now();
    let out = agent.exec(req).await;
    let elapsed = started.elapsed();
    assert!(out.status.timed_out);
    assert_eq!(out.status.signal, Some(9));
    assert_eq!(out.status.code, 137);
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let bg: i32 = out.stdout_str().trim().parse().unwrap();
    assert!(
        agent.wait_gone(bg, Duration::from_secs(3)).await,
        "background child {bg} survived"
    );
    assert!(
        agent
            .wait_gone(out.pid as i32, Duration::from_secs(3))
            .await
    );
}

#[tokio::test]
async fn finishes_without_timeout_flag_when_fast() {
    let agent = Agent::start();
    let mut req = sh("echo fast");
    req.timeout_ms = Some(10_000);
    let out = agent.exec(req).await;
    assert_eq!(out.stdout, b"fast\n");
    assert!(!out.status.timed_out);
}

#[tokio::test]
async fn signal_frame_reaches_the_process() {
    let agent = Agent::start();
    let mut conn = agent
        .request(Request::Exec(ExecRequest {
            command: "sleep".into(),
            args: vec!["100".into()],
            ..Default::default()
        }))
        .await;
    assert!(matches!(next(&mut conn).await, GuestFrame::Started { .. }));
    let started = Instant::now();
    conn.send(HostFrame::Signal(15)).await.unwrap();
    let out = loop {
        match next(&mut conn).await {
            GuestFrame::Exited(st) => break st,
            GuestFrame::Stdout(_) | GuestFrame::Stderr(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(out.signal, Some(15));
    assert_eq!(out.code, 143);
    assert!(!out.timed_out);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn host_disconnect_kills_the_group() {
    let agent = Agent::start();
    let mut conn = agent
        .request(Request::Exec(sh("sleep 100 & echo $! $$; wait")))
        .await;
    assert!(matches!(next(&mut conn).await, GuestFrame::Started { .. }));
    let line = match next(&mut conn).await {
        GuestFrame::Stdout(d) => String::from_utf8(d.to_vec()).unwrap(),
        other => panic!("unexpected {other:?}"),
    };
    let pids: Vec<i32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    assert!(agent.alive(pids[0]).await && agent.alive(pids[1]).await);
    drop(conn);
    for pid in pids {
        assert!(
            agent.wait_gone(pid, Duration::from_secs(3)).await,
            "{pid} survived"
        );
    }
}

#[tokio::test]
async fn background_holder_of_pipes_does_not_block_exit() {
    let agent = Agent::start();
    let started = Instant::now();
    let out = agent.sh("sleep 3 & echo done").await;
    assert_eq!(out.stdout, b"done\n");
    assert_eq!(out.status.code, 0);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn output_written_just_before_exit_is_complete() {
    let agent = Agent::start();
    for _ in 0..20 {
        let out = agent.sh("head -c 300000 /dev/zero; printf end").await;
        assert_eq!(out.stdout.len(), 300_003);
        assert!(out.stdout.ends_with(b"end"));
    }
}

#[tokio::test]
async fn cwd_env_and_hidden_agent_vars() {
    let agent = Agent::start_with_env(&[("MSB_SECRET", "x"), ("AGENT_VAR", "inherited")]);
    let mut req = sh("pwd; echo \"$FOO|$AGENT_VAR|${MSB_SECRET-unset}\"");
    req.cwd = Some("/tmp".into());
    req.env = vec![("FOO".into(), "bar baz".into())];
    let out = agent.exec(req).await;
    assert_eq!(out.stdout_str(), "/tmp\nbar baz|inherited|unset\n");

    let mut req = sh("echo $AGENT_VAR");
    req.env = vec![("AGENT_VAR".into(), "overridden".into())];
    assert_eq!(agent.exec(req).await.stdout_str(), "overridden\n");
}

#[tokio::test]
async fn default_workdir_from_msb_workdir() {
    let agent = Agent::start_with_env(&[("MSB_WORKDIR", "/usr")]);
    assert_eq!(agent.sh("pwd").await.stdout_str(), "/usr\n");
}

#[tokio::test]
async fn runs_as_requested_user() {
    if !nix_is_root() {
        return;
    }
    let agent = Agent::start();
    let mut req = sh("id -u; id -g; id -G");
    req.user = Some("65534:65533".into());
    let out = agent.exec(req).await;
    assert_eq!(out.stdout_str(), "65534\n65533\n65533\n", "{:?}", out);

    // By name, from /etc/passwd.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    if let Some(line) = passwd.lines().find(|l| l.starts_with("nobody:")) {
        let uid = line.split(':').nth(2).unwrap();
        let mut req = sh("id -u");
        req.user = Some("nobody".into());
        assert_eq!(agent.exec(req).await.stdout_str(), format!("{uid}\n"));
    }

    let mut req = sh("id -u");
    req.user = Some("no-such-user-here".into());
    let mut conn = agent.request(Request::Exec(req)).await;
    match next(&mut conn).await {
        GuestFrame::Error(e) => assert_eq!(e.kind, GuestErrorKind::InvalidRequest),
        other => panic!("unexpected {other:?}"),
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .map(|l| l.split_whitespace().nth(1) == Some("0"))
        .unwrap_or(false)
}

#[tokio::test]
async fn rlimits_apply() {
    let agent = Agent::start();
    let mut req = sh("ulimit -n; ulimit -Hn");
    req.rlimits = vec![Rlimit {
        resource: RlimitResource::Nofile,
        soft: 123,
        hard: 456,
    }];
    let out = agent.exec(req).await;
    assert_eq!(out.stdout_str(), "123\n456\n");
}

#[tokio::test]
async fn runs_in_own_session() {
    let agent = Agent::start();
    // sid == pgid == pid of the shell.
    let out = agent
        .sh("set -- $(sed 's/.*) //' /proc/$$/stat); echo $$ $3 $4")
        .await;
    let s = out.stdout_str();
    let v: Vec<&str> = s.split_whitespace().collect();
    assert_eq!(v.len(), 3, "{s:?}");
    assert_eq!(v[0], v[1], "pgid");
    assert_eq!(v[0], v[2], "sid");
}

#[tokio::test]
async fn spawn_failures_are_typed() {
    let agent = Agent::start();
    let mut conn = agent
        .request(Request::Exec(ExecRequest {
            command: "definitely-not-a-command-xyz".into(),
            ..Default::default()
        }))
        .await;
    match next(&mut conn).await {
        GuestFrame::Error(e) => {
            assert_eq!(e.kind, GuestErrorKind::CommandNotFound);
            assert!(
                e.message.contains("definitely-not-a-command-xyz"),
                "{}",
                e.message
            );
        }
        other => panic!("unexpected {other:?}"),
    }

    let file = agent.path("not-executable");
    std::fs::write(&file, "data").unwrap();
    let mut conn = agent
        .request(Request::Exec(ExecRequest {
            command: file.to_str().unwrap().into(),
            ..Default::default()
        }))
        .await;
    match next(&mut conn).await {
        GuestFrame::Error(e) => {
            assert_eq!(e.kind, GuestErrorKind::SpawnFailed);
            assert!(e.message.contains("not-executable"), "{}", e.message);
        }
        other => panic!("unexpected {other:?}"),
    }

    let mut req = sh("true");
    req.cwd = Some("/no/such/dir".into());
    let mut conn = agent.request(Request::Exec(req)).await;
    match next(&mut conn).await {
        GuestFrame::Error(e) => assert_eq!(e.kind, GuestErrorKind::NotFound),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn fifty_concurrent_execs() {
    let agent = std::sync::Arc::new(Agent::start());
    let mut tasks = Vec::new();
    for i in 0..50 {
        let agent = agent.clone();
        tasks.push(tokio::spawn(async move {
            let out = agent
                .sh(&format!(
                    "sleep 0.2; echo {i}; echo e{i} >&2; exit {}",
                    i % 7
                ))
                .await;
            assert_eq!(out.stdout_str(), format!("{i}\n"));
            assert_eq!(out.stderr, format!("e{i}\n").into_bytes());
            assert_eq!(out.status.code, i % 7);
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    // Concurrent, not serialized (50 x 0.2 s = 10 s).
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn orphans_are_reaped() {
    let agent = Agent::start();
    // The shell exits at once; its child becomes an orphan of the agent (a subreaper here).
    let out = agent.sh("sleep 0.3 & echo $!").await;
    let pid: i32 = out.stdout_str().trim().parse().unwrap();
    // Not a zombie for long: gone entirely after it exits.
    let deadline = Instant::now() + Duration::from_secs(5);
    while agent.proc_state(pid).await.is_some() {
        assert!(Instant::now() < deadline, "orphan {pid} not reaped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn children_inherit_only_stdio_and_default_sigpipe() {
    let agent = std::sync::Arc::new(Agent::start());
    // Other sessions running at the same time must not leak their descriptors into this one.
    let a = agent.clone();
    let busy = tokio::spawn(async move { a.sh("sleep 0.5").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // `ls` itself holds fd 3 (the directory it lists).
    let ls = ExecRequest {
        command: "ls".into(),
        args: vec!["-1".into(), "/proc/self/fd".into()],
        ..Default::default()
    };
    let out = agent.exec(ls.clone()).await;
    assert_eq!(out.stdout_str(), "0\n1\n2\n3\n");
    let mut req = ls.clone();
    req.stdin = true;
    let mut conn = agent.request(Request::Exec(req)).await;
    conn.send(HostFrame::StdinClose).await.unwrap();
    assert_eq!(collect_exec(&mut conn).await.stdout_str(), "0\n1\n2\n3\n");
    let mut req = ls;
    req.tty = Some(TtySize { rows: 10, cols: 10 });
    assert_eq!(agent.exec(req).await.stdout_str(), "0\r\n1\r\n2\r\n3\r\n");
    busy.await.unwrap();
    // SIGPIPE is back to its default: `yes` dies when `head` is done.
    let started = Instant::now();
    let out = agent.sh("yes | head -c 4").await;
    assert_eq!(out.stdout, b"y\ny\n");
    assert!(started.elapsed() < Duration::from_secs(5));
}
