//! The FFI layer against a fake libkrun: a small C library, compiled at test time, that exports
//! libkrun's symbols with libkrun.h's signatures and logs every call. Proves that plans are
//! executed in order with correctly marshalled strings and arrays, without libkrun or KVM.
//! Skipped (with a message) where no C compiler is installed.

use std::path::{Path, PathBuf};

use super::config::{KernelConfig, KernelFormat, MicrovmSettings, VmConfig};
use super::ffi::{FfiError, Libkrun};
use super::plan::VmPlan;
use super::{run_vmm, MicrovmError};

const FAKE_LIBKRUN_C: &str = r#"
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
static void logf_(const char *fmt, ...) {
    FILE *f = fopen(LOG_PATH, "a");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}
static void log_array(const char *what, const char *const arr[]) {
    FILE *f = fopen(LOG_PATH, "a");
    if (!arr) { fprintf(f, "%s NULL\n", what); fclose(f); return; }
    fprintf(f, "%s", what);
    for (int i = 0; arr[i]; i++) fprintf(f, " [%s]", arr[i]);
    fputc('\n', f);
    fclose(f);
}
#define S(s) ((s) ? (s) : "(null)")
int32_t krun_set_log_level(uint32_t level) { logf_("set_log_level %u", level); return 0; }
int32_t krun_create_ctx(void) { logf_("create_ctx"); return 7; }
int32_t krun_free_ctx(uint32_t ctx) { logf_("free_ctx %u", ctx); return 0; }
int32_t krun_get_max_vcpus(void) { return 4; }
int32_t krun_set_vm_config(uint32_t ctx, uint8_t vcpus, uint32_t ram) {
    logf_("set_vm_config %u %u %u", ctx, vcpus, ram); return vcpus ? 0 : -EINVAL;
}
int32_t krun_set_root(uint32_t ctx, const char *p) { logf_("set_root %u %s", ctx, p); return 0; }
int32_t krun_set_kernel(uint32_t ctx, const char *p, uint32_t fmt, const char *initrd, const char *cmdline) {
    logf_("set_kernel %u %s %u %s %s", ctx, p, fmt, S(initrd), S(cmdline)); return 0;
}
#ifndef NO_VIRTIOFS3
int32_t krun_add_virtiofs3(uint32_t ctx, const char *tag, const char *p, uint64_t shm, bool ro) {
    logf_("add_virtiofs3 %u %s %s %llu %d", ctx, tag, p, (unsigned long long)shm, ro); return 0;
}
#endif
int32_t krun_add_virtiofs(uint32_t ctx, const char *tag, const char *p) {
    logf_("add_virtiofs %u %s %s", ctx, tag, p); return 0;
}
int32_t krun_disable_implicit_vsock(uint32_t ctx) { logf_("disable_implicit_vsock %u", ctx); return 0; }
int32_t krun_add_vsock(uint32_t ctx, uint32_t tsi) { logf_("add_vsock %u %u", ctx, tsi); return 0; }
#ifndef NO_PORT2
int32_t krun_add_vsock_port2(uint32_t ctx, uint32_t port, const char *p, bool listen) {
    logf_("add_vsock_port2 %u %u %s %d", ctx, port, p, listen); return 0;
}
#endif
int32_t krun_add_vsock_port(uint32_t ctx, uint32_t port, const char *p) {
    logf_("add_vsock_port %u %u %s", ctx, port, p); return 0;
}
int32_t krun_set_console_output(uint32_t ctx, const char *p) { logf_("set_console_output %u %s", ctx, p); return 0; }
int32_t krun_set_rlimits(uint32_t ctx, const char *const r[]) { log_array("set_rlimits", r); return 0; }
int32_t krun_set_workdir(uint32_t ctx, const char *p) { logf_("set_workdir %u %s", ctx, p); return 0; }
int32_t krun_set_exec(uint32_t ctx, const char *p, const char *const argv[], const char *const envp[]) {
    logf_("set_exec %u %s", ctx, p); log_array("argv", argv); log_array("envp", envp); return 0;
}
int32_t krun_start_enter(uint32_t ctx) { logf_("start_enter %u", ctx); return -ENOEXEC; }
"#;

/// Build the fake into `dir`; `None` (after saying why) when there is no C compiler.
fn build_fake(dir: &Path, extra: &[&str]) -> Option<(PathBuf, PathBuf)> {
    let src = dir.join("fake_libkrun.c");
    let lib = dir.join("libkrun-fake.so");
    let log = dir.join("calls.log");
    std::fs::write(&src, FAKE_LIBKRUN_C).unwrap();
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg(format!("-DLOG_PATH=\"{}\"", log.display()))
        .args(extra)
        .status();
    match status {
        Ok(s) if s.success() => Some((lib, log)),
        other => {
            eprintln!("SKIP fake libkrun test: cannot compile the fake library ({other:?})");
            None
        }
    }
}

fn pvm_plan(lib: &Path) -> VmPlan {
    let settings = MicrovmSettings {
        kernel: Some(KernelConfig {
            path: "/boot/vmlinux-pvm".into(),
            format: KernelFormat::Elf,
            initramfs: None,
            cmdline: Some("console=hvc0".into()),
        }),
        libkrun: Some(lib.to_path_buf()),
        log_level: 2,
    };
    let config = VmConfig::from_launch(&super::config::tests::spec(), &settings).unwrap();
    VmPlan::build("msb-test", &config, &settings)
}

#[test]
fn plan_is_replayed_in_order_with_marshalled_strings() {
    let dir = tempfile::tempdir().unwrap();
    let Some((lib, log)) = build_fake(dir.path(), &[]) else {
        return;
    };
    let mut plan = pvm_plan(&lib);
    // Keep the stale-socket removal inside the temp dir.
    let socket = dir.path().join("agent.sock");
    for call in &mut plan.calls {
        if let super::KrunCall::AddVsockPort { host_socket, .. } = call {
            host_socket.clone_from(&socket);
        }
    }
    let plan_path = dir.path().join("msb-test.vmm.json");
    plan.write(&plan_path).unwrap();

    let err = run_vmm(&plan_path).unwrap_err();
    assert!(
        matches!(
            &err,
            MicrovmError::Ffi(FfiError::Call {
                symbol: "krun_start_enter",
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("ENOEXEC"), "{err}");

    let calls = std::fs::read_to_string(&log).unwrap();
    let expected = format!(
        "set_log_level 2
create_ctx
set_vm_config 7 2 512
set_root 7 /var/lib/msb/sandboxes/test/rootfs
set_kernel 7 /boot/vmlinux-pvm 1 (null) console=hvc0
disable_implicit_vsock 7
add_vsock 7 0
add_vsock_port2 7 7000 {} 1
set_console_output 7 /var/lib/msb/sandboxes/test/run/console.log
set_rlimits [6=256:256]
set_workdir 7 /work
set_exec 7 /.msb/agent
argv [--listen] [vsock:7000] [--init-mounts]
envp [PATH=/usr/bin:/bin] [LANG=C.UTF-8] [MSB_HOSTNAME=test]
start_enter 7
",
        socket.display()
    );
    assert_eq!(calls, expected);
}

#[test]
fn vcpus_above_the_hypervisor_limit_are_refused_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    let Some((lib, log)) = build_fake(dir.path(), &[]) else {
        return;
    };
    let mut plan = pvm_plan(&lib);
    plan.vcpus = 8; // the fake's krun_get_max_vcpus says 4
    let plan_path = dir.path().join("msb-test.vmm.json");
    plan.write(&plan_path).unwrap();
    let err = run_vmm(&plan_path).unwrap_err();
    assert!(
        matches!(
            err,
            MicrovmError::Ffi(FfiError::TooManyVcpus { wanted: 8, max: 4 })
        ),
        "{err}"
    );
    assert!(!std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("create_ctx"));
}

#[test]
fn libkrun_without_vsock_port2_cannot_serve_a_listening_guest() {
    let dir = tempfile::tempdir().unwrap();
    let Some((lib, log)) = build_fake(dir.path(), &["-DNO_PORT2"]) else {
        return;
    };
    let krun = Libkrun::open(Some(&lib)).unwrap();
    assert!(krun.symbols().contains(&("krun_add_vsock_port2", false)));
    let ctx = krun.create_ctx().unwrap();
    let listen = super::KrunCall::AddVsockPort {
        port: 7000,
        host_socket: dir.path().join("a.sock"),
        listen: true,
    };
    let err = krun.apply(ctx, &listen).unwrap_err();
    assert!(
        matches!(
            err,
            FfiError::MissingSymbol {
                symbol: "krun_add_vsock_port2",
                ..
            }
        ),
        "{err}"
    );
    // Guest-initiated connections still work through the old call.
    let dial_out = super::KrunCall::AddVsockPort {
        port: 7001,
        host_socket: dir.path().join("b.sock"),
        listen: false,
    };
    krun.apply(ctx, &dial_out).unwrap();
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("add_vsock_port 7 7001"));
}

#[test]
fn errno_of_a_failing_call_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let Some((lib, _log)) = build_fake(dir.path(), &[]) else {
        return;
    };
    let krun = Libkrun::open(Some(&lib)).unwrap();
    assert_eq!(krun.path(), lib.as_path());
    let err = krun
        .apply(
            7,
            &super::KrunCall::SetVmConfig {
                vcpus: 0,
                memory_mib: 128,
            },
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "krun_set_vm_config(vcpus=0, ram_mib=128) failed: EINVAL: Invalid argument"
    );
}

fn mounts_spec() -> crate::runtime::LaunchSpec {
    use crate::runtime::LaunchMount;
    let mut spec = super::config::tests::spec();
    spec.mounts = vec![
        LaunchMount::Bind {
            source: "/srv/volumes/data".into(),
            dest: "/data".into(),
            readonly: true,
        },
        LaunchMount::Tmpfs {
            dest: "/scratch".into(),
            size_mib: 16,
        },
        LaunchMount::Bind {
            source: "/srv/work".into(),
            dest: "/data/work".into(),
            readonly: false,
        },
    ];
    spec
}

#[test]
fn volumes_become_virtiofs_shares_and_guest_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let Some((lib, log)) = build_fake(dir.path(), &[]) else {
        return;
    };
    let settings = MicrovmSettings {
        libkrun: Some(lib.clone()),
        ..Default::default()
    };
    let config = VmConfig::from_launch(&mounts_spec(), &settings).unwrap();
    let plan = VmPlan::build("msb-test", &config, &settings);
    let krun = Libkrun::open(Some(&lib)).unwrap();
    let ctx = krun.create_ctx().unwrap();
    for call in &plan.calls {
        krun.apply(ctx, call).unwrap();
    }
    let calls = std::fs::read_to_string(&log).unwrap();
    let shares: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("add_virtiofs"))
        .collect();
    // Read-only is the VMM's flag (host side); no DAX window.
    assert_eq!(
        shares,
        [
            "add_virtiofs3 7 msb0 /srv/volumes/data 0 1",
            "add_virtiofs3 7 msb1 /srv/work 0 0"
        ]
    );
    // The guest agent mounts them, in order (the nested one after its parent).
    let argv = calls.lines().find(|l| l.starts_with("argv")).unwrap();
    assert_eq!(
        argv,
        "argv [--listen] [vsock:7000] [--init-mounts] [--mount] [virtiofs:msb0:ro:/data] \
         [--mount] [tmpfs:16:/scratch] [--mount] [virtiofs:msb1:rw:/data/work]"
    );
}

#[test]
fn libkrun_without_virtiofs3_never_shares_read_only_volumes_writable() {
    let dir = tempfile::tempdir().unwrap();
    let Some((lib, log)) = build_fake(dir.path(), &["-DNO_VIRTIOFS3"]) else {
        return;
    };
    let krun = Libkrun::open(Some(&lib)).unwrap();
    assert!(krun.symbols().contains(&("krun_add_virtiofs3", false)));
    let ctx = krun.create_ctx().unwrap();
    let share = |read_only| super::KrunCall::AddVirtiofs {
        tag: "msb0".into(),
        path: "/srv/data".into(),
        read_only,
    };
    let err = krun.apply(ctx, &share(true)).unwrap_err();
    assert!(
        matches!(
            err,
            FfiError::MissingSymbol {
                symbol: "krun_add_virtiofs3",
                ..
            }
        ),
        "{err}"
    );
    krun.apply(ctx, &share(false)).unwrap();
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.contains("add_virtiofs 7 msb0 /srv/data"), "{calls}");
    assert_eq!(calls.matches("add_virtiofs").count(), 1, "{calls}");
}
