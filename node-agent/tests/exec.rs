//! Exec behaviour against real container sandboxes.

mod common;

use common::*;
use futures::StreamExt;
use microsandbox_client::api::{ExecRequest, Rlimit, TtySize};
use microsandbox_client::{encode_stdin, ExecEvent};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn exit_codes_and_exact_bytes() {
    let agent = TestAgent::start("exec-bytes");
    let c = agent.client();
    create(&c, "bytes", "busybox").await;

    let out = sh(&c, "bytes", "printf 'out\\n'; printf 'err\\n' >&2; exit 7").await;
    assert_eq!(out.exit_code, 7);
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert!(!out.success());

    // Every byte value, including invalid UTF-8, survives.
    let out = sh(
        &c,
        "bytes",
        "i=0; while [ $i -lt 256 ]; do printf \"\\\\$(printf %o $i)\"; i=$((i+1)); done",
    )
    .await;
    let all: Vec<u8> = (0..=255u8).collect();
    assert_eq!(out.stdout, all);

    let out = c
        .exec("bytes", cmd("echo", &["héllo wörld ✓ 🦀"]))
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "héllo wörld ✓ 🦀\n");

    let err = c
        .exec("bytes", cmd("/no/such/binary", &[]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    c.remove("bytes").await.unwrap();
}

#[tokio::test]
async fn hundred_mib_output_nothing_lost() {
    let agent = TestAgent::start("exec-100m");
    let c = agent.client();
    create(&c, "big", "busybox").await;
    // Deterministic pseudo-random data: hash it in the guest and on the host.
    let script =
        "head -c 104857600 /dev/urandom > /tmp/blob && sha256sum /tmp/blob | cut -d' ' -f1";
    let want = sh(&c, "big", script).await.stdout_str().trim().to_string();
    let out = c.exec("big", cmd("cat", &["/tmp/blob"])).await.unwrap();
    assert_eq!(out.stdout.len(), 104_857_600);
    assert_eq!(hex::encode(Sha256::digest(&out.stdout)), want);

    // The same through the stream, chunk by chunk.
    let mut s = c
        .exec_stream("big", cmd("cat", &["/tmp/blob"]))
        .await
        .unwrap();
    let mut h = Sha256::new();
    let mut n = 0usize;
    while let Some(ev) = s.next().await {
        match ev.unwrap() {
            ExecEvent::Stdout(d) => {
                n += d.len();
                h.update(&d)
            }
            ExecEvent::Exited { exit_code, .. } => {
                assert_eq!(exit_code, 0);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(n, 104_857_600);
    assert_eq!(hex::encode(h.finalize()), want);
    c.remove("big").await.unwrap();
}

#[tokio::test]
async fn stdin_collected_and_streamed() {
    let agent = TestAgent::start("exec-stdin");
    let c = agent.client();
    create(&c, "stdin", "busybox").await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let req = ExecRequest {
        stdin_b64: Some(encode_stdin(&data)),
        ..cmd("cat", &[])
    };
    let out = c.exec("stdin", req).await.unwrap();
    assert_eq!(out.stdout, data);

    let s = c
        .exec_stream(
            "stdin",
            ExecRequest {
                stdin: true,
                ..cmd("sh", &["-c", "read a; echo got:$a; cat"])
            },
        )
        .await
        .unwrap();
    let input = s.input();
    input.write_stdin(&b"first\nsecond"[..]).await.unwrap();
    input.close_stdin().await.unwrap();
    let out = s.wait_output().await.unwrap();
    assert_eq!(out.stdout_str(), "got:first\nsecond");
    c.remove("stdin").await.unwrap();
}

/// Closing stdin right away, as a client with nothing to send does, never costs output: the
/// agent used to end the relay when the guest stopped taking input (say, after a quick process
/// exited), dropping its last output and exit status.
#[tokio::test]
async fn stdin_closed_at_once_loses_no_output() {
    let agent = TestAgent::start("exec-stdin-close");
    let c = agent.client();
    create(&c, "quick", "busybox").await;
    let streamed = |args: &'static [&'static str]| {
        let c = c.clone();
        async move {
            let s = c
                .exec_stream(
                    "quick",
                    ExecRequest {
                        stdin: true,
                        ..cmd("sh", args)
                    },
                )
                .await
                .unwrap();
            // Close stdin after the process is likely done, as a client that is slower to get
            // to it does: the guest takes no more input then.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let _maybe_gone = s.input().close_stdin().await;
            s.wait_output().await.unwrap()
        }
    };
    for _ in 0..10 {
        let out = streamed(&["-c", "echo hi; exit 3"]).await;
        assert_eq!((out.stdout_str().as_ref(), out.exit_code), ("hi\n", 3));
    }
    // A reader slower than the guest writes (as a Go client copying into its own buffers).
    for _ in 0..3 {
        let mut s = c
            .exec_stream(
                "quick",
                ExecRequest {
                    stdin: true,
                    ..cmd("head", &["-c", "16777216", "/dev/zero"])
                },
            )
            .await
            .unwrap();
        s.input().close_stdin().await.unwrap();
        let (mut bytes, mut exited) = (0, false);
        while let Some(ev) = s.next().await {
            match ev.unwrap() {
                ExecEvent::Stdout(d) => {
                    bytes += d.len();
                    tokio::time::sleep(std::time::Duration::from_micros(200)).await;
                }
                ExecEvent::Exited { exit_code, .. } => exited = exit_code == 0,
                _ => {}
            }
        }
        assert_eq!((bytes, exited), (16 << 20, true));
    }
    c.remove("quick").await.unwrap();
}

#[tokio::test]
async fn tty_and_resize() {
    let agent = TestAgent::start("exec-tty");
    let c = agent.client();
    create(&c, "tty", "busybox").await;
    let req = ExecRequest {
        tty: Some(TtySize {
            rows: 33,
            cols: 101,
        }),
        stdin: true,
        ..cmd("sh", &["-c", "tty; stty size; read x; stty size"])
    };
    let mut s = c.exec_stream("tty", req).await.unwrap();
    let input = s.input();
    let mut seen = String::new();
    let mut resized = false;
    while let Some(ev) = s.next().await {
        match ev.unwrap() {
            ExecEvent::Stdout(d) => {
                seen.push_str(&String::from_utf8_lossy(&d));
                if !resized && seen.contains("33 101") {
                    resized = true;
                    input.resize(40, 120).await.unwrap();
                    input.write_stdin(&b"go\r"[..]).await.unwrap();
                }
            }
            ExecEvent::Exited { exit_code, .. } => {
                assert_eq!(exit_code, 0, "{seen}");
                break;
            }
            _ => {}
        }
    }
    assert!(seen.contains("/dev/pts/"), "{seen}");
    assert!(seen.contains("33 101"), "{seen}");
    assert!(seen.contains("40 120"), "{seen}");
    c.remove("tty").await.unwrap();
}

#[tokio::test]
async fn timeout_kills_the_process_group() {
    let agent = TestAgent::start("exec-timeout");
    let c = agent.client();
    create(&c, "slow", "busybox").await;
    let req = ExecRequest {
        timeout_ms: Some(500),
        ..cmd("sh", &["-c", "sleep 100 & sleep 100"])
    };
    let started = std::time::Instant::now();
    let out = c.exec("slow", req).await.unwrap();
    assert!(out.timed_out);
    assert_ne!(out.exit_code, 0);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // No sleeper survives in the sandbox.
    let ps = sh(&c, "slow", "ps -o comm | grep -c sleep || true").await;
    assert_eq!(
        ps.stdout_str().trim(),
        "0",
        "sleepers left: {}",
        ps.stdout_str()
    );
    c.remove("slow").await.unwrap();
}

#[tokio::test]
async fn signals_rlimits_env_cwd_user() {
    let agent = TestAgent::start("exec-opts");
    let c = agent.client();
    create(&c, "opts", "busybox").await;
    let mut s = c.exec_stream("opts", cmd("sleep", &["100"])).await.unwrap();
    let input = s.input();
    match s.next().await.unwrap().unwrap() {
        ExecEvent::Started { .. } => {}
        other => panic!("{other:?}"),
    }
    input.signal(15).await.unwrap();
    let out = s.wait_output().await.unwrap();
    assert_eq!(out.signal, Some(15));
    assert_eq!(out.exit_code, 128 + 15);

    let req = ExecRequest {
        rlimits: vec![Rlimit {
            resource: "nofile".into(),
            soft: 42,
            hard: 42,
        }],
        env: [("GREETING".to_string(), "hi there".to_string())].into(),
        cwd: Some("/tmp".into()),
        user: Some("sandbox".into()),
        ..cmd("sh", &["-c", "ulimit -n; echo $GREETING; pwd; id -u"])
    };
    let out = c.exec("opts", req).await.unwrap();
    assert_eq!(out.stdout_str(), "42\nhi there\n/tmp\n1000\n");
    c.remove("opts").await.unwrap();
}

#[tokio::test]
async fn fifty_concurrent_execs() {
    let agent = TestAgent::start("exec-50");
    let c = agent.client();
    create(&c, "many", "busybox").await;
    let futs = (0..50).map(|i| {
        let c = c.clone();
        async move {
            (
                i,
                c.exec("many", cmd("sh", &["-c", &format!("echo {i}; sleep 0.2")]))
                    .await
                    .unwrap(),
            )
        }
    });
    for (i, out) in futures::future::join_all(futs).await {
        assert_eq!(out.stdout_str(), format!("{i}\n"));
        assert_eq!(out.exit_code, 0);
    }
    c.remove("many").await.unwrap();
}

#[tokio::test]
async fn python_image_runs_python() {
    let agent = TestAgent::start("exec-python");
    let c = agent.client();
    create(&c, "py", "python").await;
    let out = c
        .exec("py", cmd("python3", &["-c", "print('Hello!')"]))
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "Hello!\n");
    c.remove("py").await.unwrap();
}
