//! Boots a real libkrun microVM with the guest agent as its init's program, runs a command in it,
//! and tears it down. Runs only where doctor says microVMs can boot; otherwise it prints
//! `SKIP microvm_boot_e2e: <reason>` (see it with `--nocapture`) and passes.
//!
//! Environment:
//! * `MSB_TEST_ROOTFS`: a root file system directory (e.g. the busybox image, unpacked); it is
//!   copied, never modified.
//! * `MSB_GUEST_AGENT`: the static guest-agent binary.
//! * `MSB_KERNEL`: a custom guest kernel (required on PVM hosts: a PVM-guest vmlinux).
//! * `MSB_LIBKRUN`: an explicit libkrun shared object (optional).

use std::path::PathBuf;
use std::time::Duration;

use microsandbox_agent::doctor::{self, DoctorOptions};
use microsandbox_agent::guest::GuestClient;
use microsandbox_agent::runtime::microvm::{KernelConfig, MicrovmRuntime, MicrovmSettings};
use microsandbox_agent::runtime::{LaunchSpec, Liveness, Runtime};
use microsandbox_wire::guest::ExecRequest;

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Why this host cannot run the test, if it cannot.
fn skip_reason() -> Option<String> {
    let options = DoctorOptions {
        kernel: env_path("MSB_KERNEL"),
        libkrun: env_path("MSB_LIBKRUN"),
    };
    let report = doctor::diagnose_with(&options);
    if let Err(why) = doctor::microvm_verdict(&report) {
        return Some(format!("this host cannot boot microVMs: {why}"));
    }
    for var in ["MSB_TEST_ROOTFS", "MSB_GUEST_AGENT"] {
        match env_path(var) {
            None => return Some(format!("{var} is not set")),
            Some(p) if !p.exists() => return Some(format!("{var}={} does not exist", p.display())),
            Some(_) => {}
        }
    }
    None
}

#[tokio::test]
async fn microvm_boot_e2e() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIP microvm_boot_e2e: {reason}");
        return;
    }
    let source_rootfs = env_path("MSB_TEST_ROOTFS").unwrap();
    let guest_agent = env_path("MSB_GUEST_AGENT").unwrap();
    let kernel = env_path("MSB_KERNEL").map(|k| KernelConfig::from_file(&k).expect("MSB_KERNEL"));

    // Short paths: the host socket path must fit in sun_path.
    let dir = tempfile::Builder::new()
        .prefix("msbvm")
        .tempdir_in("/tmp")
        .unwrap();
    let rootfs = dir.path().join("rootfs");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&source_rootfs)
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(
        copied.success(),
        "copying {} failed",
        source_rootfs.display()
    );

    let spec = LaunchSpec {
        id: "msb-vmboot".into(),
        hostname: "vmboot".into(),
        rootfs,
        runtime_dir: dir.path().join("run"),
        guest_agent,
        socket_dir: dir.path().join("sock"),
        memory_mib: 256,
        cpus: 1,
        pids_limit: Some(512),
        env: vec![(
            "PATH".into(),
            "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
        )],
        workdir: None,
        mounts: Vec::new(),
        netns: None,
    };
    let settings = MicrovmSettings {
        kernel,
        libkrun: env_path("MSB_LIBKRUN"),
        log_level: 2,
    };
    let runtime = MicrovmRuntime::new(settings)
        .with_vmm_exe(env!("CARGO_BIN_EXE_microsandbox-agent"))
        .with_boot_timeout(Duration::from_secs(60));

    let launched = runtime
        .start(&spec)
        .await
        .expect("microVM boots and its guest agent answers");
    assert_eq!(runtime.liveness(&launched).await, Liveness::Running);

    let guest = GuestClient::new(launched.guest_socket.clone());
    guest.ping().await.expect("guest agent answers ping");
    let out = guest
        .exec_collect(
            ExecRequest {
                command: "sh".into(),
                args: vec!["-c".into(), "echo hello from $(uname -s)".into()],
                ..Default::default()
            },
            None,
        )
        .await
        .expect("exec in the microVM");
    assert_eq!(
        out.status.code,
        0,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from Linux"
    );

    let usage = runtime.usage(&launched).await;
    assert!(usage.memory_bytes.is_some_and(|b| b > 0));
    assert_eq!(usage.memory_limit_bytes, Some(256 << 20));

    runtime.cleanup(&launched).await.unwrap();
    assert_ne!(runtime.liveness(&launched).await, Liveness::Running);
    assert!(!launched.guest_socket.exists());
}

/// The whole start path up to libkrun, through the real `vmm` subcommand: on a host without
/// libkrun the VMM must fail fast and `start` must say why (from the VMM's log).
#[tokio::test]
async fn vmm_without_libkrun_reports_why() {
    if microsandbox_agent::runtime::microvm::ffi::Libkrun::open(None).is_ok() {
        eprintln!("SKIP vmm_without_libkrun_reports_why: libkrun is installed here");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("msbvm")
        .tempdir_in("/tmp")
        .unwrap();
    let agent = dir.path().join("agent");
    std::fs::write(&agent, b"not really an agent").unwrap();
    let spec = LaunchSpec {
        id: "msb-nokrun".into(),
        hostname: "nokrun".into(),
        rootfs: dir.path().join("rootfs"),
        runtime_dir: dir.path().join("run"),
        guest_agent: agent,
        socket_dir: dir.path().join("sock"),
        memory_mib: 256,
        cpus: 1,
        pids_limit: None,
        env: vec![],
        workdir: None,
        mounts: Vec::new(),
        netns: None,
    };
    std::fs::create_dir_all(&spec.rootfs).unwrap();
    let runtime = MicrovmRuntime::new(MicrovmSettings::default())
        .with_vmm_exe(env!("CARGO_BIN_EXE_microsandbox-agent"))
        .with_boot_timeout(Duration::from_secs(20));
    let err = runtime.start(&spec).await.unwrap_err().to_string();
    eprintln!("start error (expected): {err}");
    assert!(
        err.contains("exited") && err.contains("cannot load libkrun"),
        "{err}"
    );
}
