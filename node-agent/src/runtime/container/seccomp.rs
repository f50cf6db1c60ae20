//! Seccomp filter for container sandboxes: allow by default, refuse (EPERM) the syscalls that reach
//! kernel attack surface a sandbox has no business with: module loading, kexec, keyrings, BPF, perf,
//! namespaces creation and joining, mounting, ptrace of other processes, clock and swap control.
//! Together with the dropped capabilities and `noNewPrivileges` this mirrors the intent of Docker's
//! default profile; it is a deny list, so the microVM remains the strong boundary.

use serde_json::{json, Value};

/// Syscalls refused with EPERM.
pub const DENIED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// The `linux.seccomp` section of an OCI runtime spec.
pub fn profile() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
        "syscalls": [{
            "names": DENIED,
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1
        }]
    })
}
