//! `msb`, `msx` and `msr` as a user runs them, against a real agent that the CLI itself starts
//! (container sandboxes of the test images; `make setup`, `make guest` first). Interactive
//! terminal sessions are not covered here.

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
            other => panic!("no binary {other}"),
        };
        let mut c = Command::new(exe);
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
    assert_eq!(missing.status.code(), Some(1));
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
fn stop_metrics_and_remove_named_sandboxes() {
    let env = Env::new();
    // A long-lived sandbox started through the SDK's crate would need this process to hold its
    // lease; msb's own verbs act on any sandbox, so create one detached through the CLI's agent.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let state = env.state.path().to_path_buf();
    let started = env.run("msb", &["server", "start", "--detach"]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    rt.block_on(async {
        std::env::set_var("MSB_STATE_DIR", &state);
        microsandbox::Sandbox::builder("cli-named")
            .image("busybox")
            .memory(64)
            .detached()
            .create()
            .await
            .unwrap();
    });
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
    assert!(env.run("msb", &["rm", "cli-named"]).status.success());
    let gone = env.run("msb", &["rm", "cli-named"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        text(&gone.stderr).contains("not found"),
        "{}",
        text(&gone.stderr)
    );
}
