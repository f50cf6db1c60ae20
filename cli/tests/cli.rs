//! `msb`, `msx`, `msr` and `msi` as a user runs them, against a real agent that the CLI itself
//! starts (container sandboxes of the test images; `make setup`, `make guest` first).
//! Interactive sessions run on a pseudo-terminal made here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Env {
    state: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self, bin: &str) -> Command {
        let exe = match bin {
            "msb" => env!("CARGO_BIN_EXE_msb"),
            "msx" => env!("CARGO_BIN_EXE_msx"),
            "msr" => env!("CARGO_BIN_EXE_msr"),
            "msi" => env!("CARGO_BIN_EXE_msi"),
            other => panic!("no binary {other}"),
        };
        self.cmd_at(Path::new(exe))
    }

    /// `program` with this test's agent settings.
    fn cmd_at(&self, program: &Path) -> Command {
        let exe = env!("CARGO_BIN_EXE_msb");
        let mut c = Command::new(program);
        let target = Path::new(exe).parent().unwrap().to_path_buf();
        let agent = std::env::var_os("MSB_AGENT_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("microsandbox-agent"));
        let guest = std::env::var_os("MSB_GUEST_AGENT")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                target
                    .parent()
                    .unwrap()
                    .join("x86_64-unknown-linux-gnu/release/microsandbox-guest")
            });
        c.env("MSB_STATE_DIR", self.state.path())
            .env("MSB_AGENT_BIN", agent)
            .env("MSB_GUEST_AGENT", guest)
            .env(
                "MSB_MIRRORS",
                std::env::var("MSB_TEST_MIRROR")
                    .unwrap_or_else(|_| "docker.io=127.0.0.1:5000".into()),
            )
            .env_remove("MSB_AGENT_SOCKET")
            .env_remove("MSB_HOST_ROOTS");
        c
    }

    fn run(&self, bin: &str, args: &[&str]) -> Output {
        self.cmd(bin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Start the agent with `msb server start` and a detached busybox sandbox `name` on it (a
    /// long-lived sandbox made through the SDK's crate would need this process to hold its
    /// lease; msb's verbs act on any sandbox).
    fn detached_sandbox(&self, name: &str) {
        let started = self.run("msb", &["server", "start", "--detach"]);
        assert!(started.status.success(), "{}", text(&started.stderr));
        let state = self.state.path().to_path_buf();
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            std::env::set_var("MSB_STATE_DIR", &state);
            microsandbox::Sandbox::builder(name)
                .image("busybox")
                .memory(64)
                .detached()
                .create()
                .await
                .unwrap();
        });
    }

    fn run_in(&self, dir: &Path, bin: &str, args: &[&str]) -> Output {
        self.cmd(bin)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Stop the agent the CLI started for this test (its pid is on its socket's owner; the
        // simplest handle is its command line).
        let want = format!("--state-dir\0{}", self.state.path().display());
        for p in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
                continue;
            };
            if String::from_utf8_lossy(&cmdline).contains(&want) {
                if let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() {
                    let _stopped = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            }
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn temporary_sandboxes_exit_codes_stdin_and_listing() {
    let env = Env::new();
    let started = env.run("msb", &["server", "start", "--detach"]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    assert!(text(&started.stdout).contains("agent started"));

    let hi = env.run("msx", &["busybox", "echo", "hi"]);
    assert_eq!(
        (hi.status.code(), text(&hi.stdout).as_str()),
        (Some(0), "hi\n"),
        "{}",
        text(&hi.stderr)
    );
    // The command's own exit status; 124 for a timeout; 127 for a missing program.
    assert_eq!(
        env.run("msx", &["busybox", "sh", "-c", "exit 7"])
            .status
            .code(),
        Some(7)
    );
    assert_eq!(
        env.run("msb", &["exe", "--timeout", "0.5", "busybox", "sleep", "5"])
            .status
            .code(),
        Some(124)
    );
    let missing = env.run("msx", &["busybox", "no-such-program"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(
        text(&missing.stderr).contains("command not found"),
        "{}",
        text(&missing.stderr)
    );
    // `msx python -c ...` runs the image's python.
    let py = env.run("msx", &["python", "-c", "print(6*7)"]);
    assert_eq!(text(&py.stdout), "42\n", "{}", text(&py.stderr));
    let js = env.run("msx", &["node", "-e", "console.log(6*7)"]);
    assert_eq!(text(&js.stdout), "42\n", "{}", text(&js.stderr));
    // stdin reaches the command; with no command the image's own program reads it.
    let mut child = env
        .cmd("msx")
        .args(["python"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"print('from stdin')\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "from stdin\n");
    // An unknown image is an error that names it.
    let bad = env.run("msx", &["no-such-image-xyz", "true"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("no-such-image-xyz"),
        "{}",
        text(&bad.stderr)
    );
    // Temporary sandboxes are gone afterwards.
    let ls = env.run("msb", &["--json", "ls"]);
    let list: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(list, serde_json::json!([]));

    let status = env.run("msb", &["server", "status", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        info["isolation"].as_array().is_some_and(|a| !a.is_empty()),
        "{info}"
    );

    let pulled = env.run("msb", &["pull", "busybox"]);
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    assert!(
        text(&pulled.stdout).starts_with("sha256:"),
        "{}",
        text(&pulled.stdout)
    );
    let completions = env.run("msb", &["completions", "bash"]);
    assert!(text(&completions.stdout).contains("msb") && completions.status.success());
    // Usage errors exit 2, as clap's.
    assert_eq!(env.run("msb", &["exe"]).status.code(), Some(2));
    assert_eq!(env.run("msb", &["stop"]).status.code(), Some(2));
}

#[test]
fn sandboxfile_projects() {
    let env = Env::new();
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    std::fs::create_dir(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/data.txt"), "project file\n").unwrap();
    assert!(env.run_in(dir, "msb", &["init"]).status.success());
    assert_eq!(
        env.run_in(dir, "msb", &["init"]).status.code(),
        Some(2),
        "a second init refuses"
    );
    let add = env.run_in(
        dir,
        "msb",
        &[
            "add",
            "app",
            "--image",
            "python",
            "--cpus",
            "1",
            "--memory",
            "256",
            "--start",
            "python -c \"print(\\\"hello\\\")\"",
            "--script",
            "cat=cat /app/src/data.txt",
            "--script",
            "args=echo \"$@\"",
            "-v",
            "./src:/app/src:ro",
        ],
    );
    assert!(add.status.success(), "{}", text(&add.stderr));
    let file = std::fs::read_to_string(dir.join("Sandboxfile")).unwrap();
    assert!(
        file.contains("image: python") && file.contains("start:"),
        "{file}"
    );

    let run = env.run_in(dir, "msb", &["run", "--sandbox", "app"]);
    assert_eq!(text(&run.stdout), "hello\n", "{}", text(&run.stderr));
    assert_eq!(
        text(&env.run_in(dir, "msr", &["app~cat"]).stdout),
        "project file\n"
    );
    assert_eq!(
        text(&env.run_in(dir, "msr", &["app~args", "a", "b"]).stdout),
        "a b\n"
    );
    // Upstream's spelling: the sandbox as the first argument.
    let run = env.run_in(dir, "msb", &["run", "app"]);
    assert_eq!(text(&run.stdout), "hello\n", "{}", text(&run.stderr));
    // No start script: msr opens the sandbox's shell (here reading a script from stdin), and
    // upstream's `envs` list sets the environment.
    let add = env.run_in(
        dir,
        "msb",
        &["add", "sh", "--image", "busybox", "--memory", "64"],
    );
    assert!(add.status.success(), "{}", text(&add.stderr));
    let file = std::fs::read_to_string(dir.join("Sandboxfile")).unwrap();
    std::fs::write(
        dir.join("Sandboxfile"),
        file.replace(
            "    image: busybox\n",
            "    image: busybox\n    envs: [\"WHO=upstream\"]\n",
        ),
    )
    .unwrap();
    let shell = env
        .cmd("msr")
        .arg("sh")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"echo hello $WHO\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        text(&shell.stdout),
        "hello upstream\n",
        "{}",
        text(&shell.stderr)
    );
    let unknown = env.run_in(dir, "msr", &["app~nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown.stderr).contains("no script \"nope\""),
        "{}",
        text(&unknown.stderr)
    );
    // A broken Sandboxfile is reported with its line.
    std::fs::write(
        dir.join("Sandboxfile"),
        "sandboxes:\n  app:\n    image: python\n    memroy: 1\n",
    )
    .unwrap();
    let broken = env.run_in(dir, "msr", &["app"]);
    assert!(
        text(&broken.stderr).contains("Sandboxfile:4:"),
        "{}",
        text(&broken.stderr)
    );
}

#[test]
fn snapshots_and_warm_pools() {
    let env = Env::new();
    env.detached_sandbox("cli-snap");
    let wrote = env.run(
        "msb",
        &["exec", "cli-snap", "--", "sh", "-c", "echo kept > /tmp/f"],
    );
    assert!(wrote.status.success(), "{}", text(&wrote.stderr));
    // A running sandbox is refused (its files would change under the copy), unless --pause.
    let running = env.run("msb", &["snapshot", "create", "cli-snap", "cli-s1"]);
    assert_eq!(running.status.code(), Some(1), "{}", text(&running.stderr));
    let made = env.run(
        "msb",
        &[
            "--json", "snapshot", "create", "cli-snap", "cli-s1", "--pause",
        ],
    );
    assert!(made.status.success(), "{}", text(&made.stderr));
    let snap: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let image = snap["image"].as_str().unwrap().to_string();
    assert!(text(&env.run("msb", &["ls"]).stdout).contains("running"));
    let ls = text(&env.run("msb", &["snapshot", "ls"]).stdout);
    assert!(ls.starts_with("NAME") && ls.contains("cli-s1"), "{ls}");
    // A temporary sandbox from the snapshot sees its files.
    let from = env.run("msb", &["exe", "--image", &image, "--", "cat", "/tmp/f"]);
    assert_eq!(text(&from.stdout), "kept\n", "{}", text(&from.stderr));
    // Pushed to the local registry: `REFERENCE DIGEST`, and a sandbox from the pushed image
    // sees the file too.
    let reference = format!("127.0.0.1:5000/msb-test/cli-s1:{}", std::process::id());
    let pushed = env.run("msb", &["snapshot", "push", "cli-s1", &reference]);
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));
    assert!(
        text(&pushed.stdout).starts_with(&format!("{reference} sha256:")),
        "{}",
        text(&pushed.stdout)
    );
    // A Kubernetes Secret means nothing to the local agent: a usage error.
    let secret = env.run(
        "msb",
        &[
            "snapshot", "push", "cli-s1", &reference, "--secret", "creds",
        ],
    );
    assert_eq!(secret.status.code(), Some(2), "{}", text(&secret.stderr));
    assert!(text(&secret.stderr).contains("--cluster only"));
    let pulled = env.run(
        "msb",
        &["exe", "--image", &reference, "--", "cat", "/tmp/f"],
    );
    assert_eq!(text(&pulled.stdout), "kept\n", "{}", text(&pulled.stderr));
    assert!(env
        .run("msb", &["snapshot", "rm", "cli-s1"])
        .status
        .success());
    assert!(text(&env.run("msb", &["snapshot", "ls"]).stdout)
        .lines()
        .all(|l| !l.contains("cli-s1")));

    // A warm pool; `msb exe --pool` takes its started member.
    let created = env.run(
        "msb",
        &[
            "pool",
            "create",
            "cli-pool",
            "--size",
            "1",
            "--image",
            "busybox",
            "--memory",
            "64",
            "--isolation",
            "container",
        ],
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
    let ready = || {
        for _ in 0..600 {
            let pools: serde_json::Value =
                serde_json::from_slice(&env.run("msb", &["--json", "pool", "ls"]).stdout).unwrap();
            if pools[0]["ready"] == 1 {
                return pools[0].clone();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the pool never had a started member");
    };
    ready();
    let warm = env.run(
        "msb",
        &[
            "exe",
            "--image",
            "busybox",
            "--memory",
            "64",
            "--pool",
            "cli-pool",
            "--",
            "sh",
            "-c",
            "echo warm",
        ],
    );
    assert_eq!(text(&warm.stdout), "warm\n", "{}", text(&warm.stderr));
    assert_eq!(ready()["claimed"], 1);
    assert!(text(&env.run("msb", &["pool", "ls"]).stdout).contains("cli-pool"));
    assert!(env.run("msb", &["pool", "rm", "cli-pool"]).status.success());
    let gone = env.run("msb", &["pool", "rm", "cli-pool"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        text(&gone.stderr).contains("cli-pool"),
        "{}",
        text(&gone.stderr)
    );
    let bad = env.run(
        "msb",
        &[
            "pool",
            "create",
            "p",
            "--size",
            "1",
            "--image",
            "busybox",
            "--isolation",
            "vm",
        ],
    );
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn stop_metrics_and_remove_named_sandboxes() {
    let env = Env::new();
    env.detached_sandbox("cli-named");
    let ls = text(&env.run("msb", &["ls"]).stdout);
    assert!(
        ls.starts_with("NAME") && ls.contains("cli-named") && ls.contains("running"),
        "{ls}"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&env.run("msb", &["--json", "metrics", "cli-named"]).stdout)
            .unwrap();
    assert_eq!(m["name"], "cli-named");
    assert!(m["memory_bytes"].as_u64().unwrap() > 0);
    let stopped = env.run("msb", &["stop", "cli-named", "--timeout", "1"]);
    assert_eq!(
        text(&stopped.stdout),
        "cli-named stopped\n",
        "{}",
        text(&stopped.stderr)
    );
    assert!(text(&env.run("msb", &["ls"]).stdout).contains("stopped"));
    // Started again, files as the stop left them; exec with the command's exit code; cp both
    // ways; logs.
    let again = env.run("msb", &["start", "cli-named"]);
    assert_eq!(
        text(&again.stdout),
        "cli-named running\n",
        "{}",
        text(&again.stderr)
    );
    // Paused: listed so, commands refused; resumed: running again.
    let paused = env.run("msb", &["pause", "cli-named"]);
    assert_eq!(
        text(&paused.stdout),
        "cli-named paused\n",
        "{}",
        text(&paused.stderr)
    );
    assert!(text(&env.run("msb", &["ls"]).stdout).contains("paused"));
    let refused = env.run("msb", &["exec", "cli-named", "--", "true"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("paused"),
        "{}",
        text(&refused.stderr)
    );
    let resumed = env.run("msb", &["resume", "cli-named"]);
    assert_eq!(
        text(&resumed.stdout),
        "cli-named running\n",
        "{}",
        text(&resumed.stderr)
    );
    let ran = env.run(
        "msb",
        &["exec", "cli-named", "--", "sh", "-c", "echo hi; exit 3"],
    );
    assert_eq!(
        (ran.status.code(), text(&ran.stdout).as_str()),
        (Some(3), "hi\n")
    );
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in.txt"), "to the sandbox\n").unwrap();
    let up = host.path().join("in.txt").display().to_string();
    assert!(env
        .run("msb", &["cp", &up, "cli-named:/tmp/in.txt"])
        .status
        .success());
    let cat = env.run("msb", &["exec", "cli-named", "--", "cat", "/tmp/in.txt"]);
    assert_eq!(text(&cat.stdout), "to the sandbox\n");
    let down = host.path().join("out.txt").display().to_string();
    assert!(env
        .run("msb", &["cp", "cli-named:/tmp/in.txt", &down])
        .status
        .success());
    assert_eq!(std::fs::read_to_string(&down).unwrap(), "to the sandbox\n");
    assert_eq!(env.run("msb", &["cp", "./a", "./b"]).status.code(), Some(2));
    let logs = env.run("msb", &["logs", "cli-named"]);
    assert!(logs.status.success(), "{}", text(&logs.stderr));
    assert!(env
        .run("msb", &["logs", "cli-named", "--tail", "0"])
        .stdout
        .is_empty());
    assert!(env.run("msb", &["rm", "cli-named"]).status.success());
    let gone = env.run("msb", &["rm", "cli-named"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        text(&gone.stderr).contains("not found"),
        "{}",
        text(&gone.stderr)
    );
}

#[test]
fn launchers_install_run_and_uninstall() {
    let env = Env::new();
    let bin = tempfile::tempdir().unwrap();
    let dir = bin.path().display().to_string();
    let made = env.run(
        "msi",
        &["busybox", "bb-echo", "--program", "echo", "--dir", &dir],
    );
    assert!(made.status.success(), "{}", text(&made.stderr));
    let launcher = bin.path().join("bb-echo");
    let out = env
        .cmd_at(&launcher)
        .args(["passed", "through"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "passed through\n",
        "{}",
        text(&out.stderr)
    );
    // As the README writes it: `msb install --image IMAGE [NAME]` / `msi IMAGE [NAME]`; with no
    // --program the launcher's arguments are the command; without any, what `msx IMAGE` runs
    // (the image's namesake program, here busybox's, else a shell).
    let made = env.run(
        "msb",
        &["install", "--image", "busybox", "bb", "--dir", &dir],
    );
    assert!(made.status.success(), "{}", text(&made.stderr));
    let out = env
        .cmd_at(&bin.path().join("bb"))
        .args(["sh", "-c", "echo in $0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "in sh\n", "{}", text(&out.stderr));
    let out = env
        .cmd_at(&bin.path().join("bb"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("BusyBox is a multi-call binary"),
        "{}",
        text(&out.stderr)
    );
    // With --mount-cwd the launcher sees the directory it runs in.
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("note.txt"), "here\n").unwrap();
    let cat = env.run(
        "msb",
        &[
            "install",
            "busybox",
            "bb-cat",
            "--program",
            "cat",
            "--mount-cwd",
            "--dir",
            &dir,
        ],
    );
    assert!(cat.status.success(), "{}", text(&cat.stderr));
    let out = env
        .cmd_at(&bin.path().join("bb-cat"))
        .arg("note.txt")
        .current_dir(work.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "here\n", "{}", text(&out.stderr));
    // Existing files are not replaced unless they are launchers and --force says so.
    std::fs::write(bin.path().join("mine"), "#!/bin/sh\n").unwrap();
    assert_eq!(
        env.run("msi", &["busybox", "mine", "--dir", &dir, "--force"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        env.run("msi", &["busybox", "bb-echo", "--dir", &dir])
            .status
            .code(),
        Some(2)
    );
    assert!(env
        .run("msi", &["busybox", "bb-echo", "--dir", &dir, "--force"])
        .status
        .success());
    assert!(env
        .run("msb", &["uninstall", "bb-echo", "--dir", &dir])
        .status
        .success());
    assert!(!launcher.exists());
    assert_eq!(
        env.run("msb", &["uninstall", "mine", "--dir", &dir])
            .status
            .code(),
        Some(2)
    );
    assert!(bin.path().join("mine").exists());
}

/// `msb shell` on a pseudo-terminal: an interactive shell of the terminal's size, which follows
/// a resize of the window.
#[test]
fn interactive_shell_through_a_pty() {
    use nix::pty::{openpty, Winsize};
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, OwnedFd};

    let env = Env::new();
    env.detached_sandbox("cli-pty");
    let size = |rows, cols| Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&size(30, 100)), None).unwrap();
    let slave: OwnedFd = pty.slave;
    let mut cmd = env.cmd("msb");
    cmd.args(["shell", "cli-pty"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: runs in the forked child before exec; setsid and ioctl(TIOCSCTTY) are
    // async-signal-safe and only make the pty (fd 0) the child's controlling terminal, so that
    // resizing it sends the child SIGWINCH.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(slave);
    let master = std::fs::File::from(pty.master);
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut reader = master.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut wait_for = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !seen.contains(want) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!("no {want:?} in the terminal; it shows:\n{seen}"),
            }
        }
    };
    let mut w = master.try_clone().unwrap();
    w.write_all(b"stty size; echo sum=$((6*7))\n").unwrap();
    wait_for("30 100");
    wait_for("sum=42");
    // Resize the window: the session follows.
    // SAFETY: TIOCSWINSZ on the pty master with a valid winsize; the fd is open.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size(40, 120)) };
    assert_eq!(r, 0);
    std::thread::sleep(std::time::Duration::from_millis(500));
    w.write_all(b"stty size\n").unwrap();
    wait_for("40 120");
    w.write_all(b"exit 5\n").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(5), "the shell's exit code:\n{seen}");
    assert!(env.run("msb", &["rm", "cli-pty"]).status.success());
}
