//! The microVM runtime against the real libkrun and libkrunfw (built and fetched by
//! `scripts/libkrun.sh`; `make test` points `MSB_LIBKRUN_DIR` at them and puts that directory on
//! `LD_LIBRARY_PATH`, where libkrun finds libkrunfw).
//!
//! Everything up to the guest kernel is real: the agent's `vmm` subcommand jails itself (cgroup,
//! no_new_privs, seccomp), loads libkrun, makes every call of the plan (each must be accepted)
//! and enters the VM. Where the guest then cannot run (these PVM hosts: only a PVM-guest kernel
//! boots), `start` must fail within a bounded time with a typed error that says so, and leave no
//! VMM process, socket, or cgroup behind. Where the guest boots, the same start succeeds and the
//! test execs in it. Without `MSB_LIBKRUN_DIR` it prints `SKIP ...` and passes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use microsandbox_agent::doctor::{self, DoctorOptions, Status};
use microsandbox_agent::runtime::jail::cgroup::{sandbox_cgroup, CgroupMode, CgroupPaths};
use microsandbox_agent::runtime::microvm::{BootFailure, MicrovmRuntime, MicrovmSettings};
use microsandbox_agent::runtime::{LaunchMount, LaunchSpec, Runtime, RuntimeError};

fn libkrun_dir() -> Option<PathBuf> {
    std::env::var_os("MSB_LIBKRUN_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn busybox_root(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static installed");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    root
}

fn spec(dir: &Path, id: &str) -> LaunchSpec {
    let share = dir.join("share");
    std::fs::create_dir_all(&share).unwrap();
    LaunchSpec {
        id: id.into(),
        hostname: "realkrun".into(),
        rootfs: busybox_root(dir),
        runtime_dir: dir.join("run"),
        guest_agent: PathBuf::from(std::env::var("MSB_GUEST_AGENT").unwrap_or_else(|_| {
            env!("CARGO_BIN_EXE_microsandbox-agent").to_string() // any executable file
        })),
        socket_dir: dir.join("sock"),
        memory_mib: 256,
        cpus: 1,
        pids_limit: Some(256),
        env: vec![("PATH".into(), "/bin".into())],
        workdir: None,
        mounts: vec![
            LaunchMount::Bind {
                source: share,
                dest: "/data".into(),
                readonly: true,
            },
            LaunchMount::Tmpfs {
                dest: "/scratch".into(),
                size_mib: 16,
            },
        ],
        netns: None,
    }
}

#[test]
fn doctor_loads_the_real_libkrun_and_libkrunfw() {
    let Some(dir) = libkrun_dir() else {
        eprintln!("SKIP doctor_loads_the_real_libkrun_and_libkrunfw: MSB_LIBKRUN_DIR is not set");
        return;
    };
    let report = doctor::diagnose_with(&DoctorOptions {
        kernel: None,
        libkrun: Some(dir.join("libkrun.so.1")),
    });
    for name in ["libkrun", "libkrunfw"] {
        let check = report
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} check"));
        assert_eq!(check.status, Status::Ok, "{check:?}");
    }
}

#[tokio::test]
async fn real_libkrun_takes_the_whole_plan_and_a_failed_boot_is_a_typed_error() {
    let Some(dir) = libkrun_dir() else {
        eprintln!("SKIP real_libkrun_...: MSB_LIBKRUN_DIR is not set");
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("msbkr")
        .tempdir_in("/tmp")
        .unwrap();
    let id = format!("msb-realkrun-{}", std::process::id());
    let spec = spec(tmp.path(), &id);
    let settings = MicrovmSettings {
        kernel: None,
        libkrun: Some(dir.join("libkrun.so.1")),
        log_level: 2,
    };
    let boot_timeout = Duration::from_secs(60);
    let runtime = MicrovmRuntime::new(settings)
        .with_vmm_exe(env!("CARGO_BIN_EXE_microsandbox-agent"))
        .with_boot_timeout(boot_timeout);
    let cgroup = CgroupPaths::new(CgroupMode::detect(), &sandbox_cgroup(&id));

    // While it starts: find the VMM and read its jail from /proc.
    let watcher = {
        let id = id.clone();
        tokio::spawn(async move {
            // The last view of the live VMM, kept once it is jailed (it jails itself first).
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut seen = None;
            while Instant::now() < deadline {
                match vmm_pid(&id) {
                    Some(pid) => {
                        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                            .unwrap_or_default();
                        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                            .unwrap_or_default();
                        let jailed = status.contains("Seccomp:\t2");
                        if !status.is_empty() {
                            seen = Some((status, cgroups));
                        }
                        if jailed {
                            break;
                        }
                    }
                    None if seen.is_some() => break,
                    None => {}
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        })
    };
    let started = Instant::now();
    let result = runtime.start(&spec).await;
    let took = started.elapsed();
    let jail = watcher.await.unwrap();
    let log = std::fs::read_to_string(spec.runtime_dir.join("vmm.log")).unwrap_or_default();
    eprintln!("start took {took:?}\n--- vmm.log ---\n{log}");

    // The VMM jailed itself before libkrun ran a single thread.
    let (status, cgroups) = jail.expect("the VMM process was never seen");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    assert!(
        cgroups.contains(&format!("/microsandbox/{id}")),
        "{cgroups}"
    );
    // libkrun accepted every call of the plan (the VMM logs this after the last one).
    assert!(log.contains("entering the VM"), "{log}");
    assert!(
        took < boot_timeout + Duration::from_secs(15),
        "start took {took:?}"
    );

    match result {
        Ok(launched) => {
            // A host whose KVM boots the guest: it must work end to end.
            eprintln!("the guest booted on this host");
            runtime.cleanup(&launched).await.unwrap();
        }
        Err(RuntimeError::BootFailed { failure, log }) => {
            eprintln!(
                "typed boot failure (expected on hosts that cannot run the guest): {failure}"
            );
            assert!(!log.is_empty());
            if log.contains("KVM_EXIT_INTERNAL_ERROR") {
                assert_eq!(failure, BootFailure::KvmInternalError);
            }
        }
        Err(other) => panic!("not a typed boot failure: {other:?}"),
    }
    // Nothing left: no VMM, no socket, no cgroup.
    assert_eq!(vmm_pid(&id), None, "a VMM process is left");
    assert!(
        !spec.socket_dir.join("agent.sock").exists(),
        "the socket is left"
    );
    assert!(!cgroup.exists(), "the VMM's cgroup is left");
}

/// Crash at every step, the VMM's share (issue: kill -9 the VMM process): the VMM is killed at a
/// random moment of its start — before, during or after its jail and libkrun's setup. `start`
/// must answer with a typed error (never hang, never panic) and leave no VMM process, socket or
/// cgroup. Where a guest boots, a VMM killed after the boot is the guest dying: the runtime must
/// see it gone and clean up the same way. `MSB_CRASH_ROUNDS` rounds (default 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmm_killed_at_any_moment_of_its_start_leaves_nothing() {
    let Some(dir) = libkrun_dir() else {
        eprintln!("SKIP a_vmm_killed_...: MSB_LIBKRUN_DIR is not set");
        return;
    };
    let rounds: u64 = std::env::var("MSB_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (mut killed, mut missed) = (0, 0);
    for round in 0..rounds {
        let tmp = tempfile::Builder::new()
            .prefix("msbkk")
            .tempdir_in("/tmp")
            .unwrap();
        let id = format!("msb-vmmkill-{}-{round}", std::process::id());
        let spec = spec(tmp.path(), &id);
        let runtime = MicrovmRuntime::new(MicrovmSettings {
            kernel: None,
            libkrun: Some(dir.join("libkrun.so.1")),
            log_level: 2,
        })
        .with_vmm_exe(env!("CARGO_BIN_EXE_microsandbox-agent"))
        .with_boot_timeout(Duration::from_secs(60));
        let cgroup = CgroupPaths::new(CgroupMode::detect(), &sandbox_cgroup(&id));
        // Spread the kill over the start: 0 .. 40 ms after the VMM appears.
        let delay = Duration::from_millis(round * 40 / rounds.max(1));
        let killer = {
            let id = id.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline {
                    if let Some(pid) = vmm_pid(&id) {
                        tokio::time::sleep(delay).await;
                        let pid = nix::unistd::Pid::from_raw(pid as i32);
                        return nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)
                            .is_ok();
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                false
            })
        };
        let result = tokio::time::timeout(Duration::from_secs(90), runtime.start(&spec))
            .await
            .expect("start answers after its VMM is killed");
        let landed = killer.await.unwrap();
        match result {
            Ok(launched) => {
                // It booted before the kill (or the kill hit a booted guest): must be seen gone.
                if landed {
                    let mut gone = false;
                    for _ in 0..100 {
                        if runtime.liveness(&launched).await
                            != microsandbox_agent::runtime::Liveness::Running
                        {
                            gone = true;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    assert!(gone, "a killed VMM still counts as running");
                }
                runtime.cleanup(&launched).await.unwrap();
            }
            Err(RuntimeError::BootFailed { failure, .. }) => {
                eprintln!("round {round}: kill after {delay:?} landed={landed}: {failure}")
            }
            Err(other) => panic!("round {round}: not a typed boot failure: {other:?}"),
        }
        if landed {
            killed += 1;
        } else {
            missed += 1;
        }
        assert_eq!(vmm_pid(&id), None, "round {round}: a VMM process is left");
        assert!(
            !spec.socket_dir.join("agent.sock").exists(),
            "round {round}: the socket is left"
        );
        assert!(!cgroup.exists(), "round {round}: the VMM's cgroup is left");
    }
    eprintln!("VMM kill: {killed} rounds killed it mid-start, {missed} found it already gone");
}

/// The pid of the VMM of sandbox `id` (`... vmm --plan <runtime dir>/<id>.vmm.json`).
fn vmm_pid(id: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        let alive = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        (alive && cmd.contains("\0vmm\0--plan\0") && cmd.contains(&format!("{id}.vmm.json")))
            .then_some(pid)
    })
}
