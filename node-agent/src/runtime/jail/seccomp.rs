//! Seccomp filter of every sandbox's host-side process: allow by default, refuse (EPERM) the
//! syscalls that reach kernel attack surface a sandbox has no business with: module loading,
//! kexec, keyrings, BPF, perf, namespaces creation and joining, mounting, ptrace of other
//! processes, clock and swap control. Together with the dropped capabilities and
//! `noNewPrivileges` this mirrors the intent of Docker's default profile; it is a deny list.
//!
//! One list, two forms: [`oci_profile`] for crun (container sandboxes: names, resolved by
//! libseccomp), and [`vmm_filter`] for the microVM's VMM process (a BPF program compiled here by
//! `seccompiler`, installed by the VMM on itself before libkrun starts any thread).

use std::collections::BTreeMap;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder,
};
use oci_spec::OciSpecError;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

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

/// The `linux.seccomp` section of an OCI runtime spec: allow by default, EPERM for [`DENIED`].
pub fn oci_profile() -> Result<LinuxSeccomp, OciSpecError> {
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
            Arch::ScmpArchAarch64,
        ])
        .syscalls(vec![LinuxSyscallBuilder::default()
            .names(DENIED.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(1u32)
            .build()?])
        .build()
}

/// The x86_64 number of a syscall of [`DENIED`]; `None` for those this architecture lacks or
/// never implemented (`vm86`, `stime`, `create_module`, ...): they do nothing through the 64-bit
/// ABI, and the filter kills a process that switches to another ABI (see [`vmm_filter`]).
pub fn syscall_number(name: &str) -> Option<i64> {
    let n = match name {
        "acct" => libc::SYS_acct,
        "add_key" => libc::SYS_add_key,
        "bpf" => libc::SYS_bpf,
        "clock_adjtime" => libc::SYS_clock_adjtime,
        "clock_settime" => libc::SYS_clock_settime,
        "delete_module" => libc::SYS_delete_module,
        "finit_module" => libc::SYS_finit_module,
        "fsconfig" => libc::SYS_fsconfig,
        "fsmount" => libc::SYS_fsmount,
        "fsopen" => libc::SYS_fsopen,
        "fspick" => libc::SYS_fspick,
        "init_module" => libc::SYS_init_module,
        "io_uring_enter" => libc::SYS_io_uring_enter,
        "io_uring_register" => libc::SYS_io_uring_register,
        "io_uring_setup" => libc::SYS_io_uring_setup,
        "ioperm" => libc::SYS_ioperm,
        "iopl" => libc::SYS_iopl,
        "kcmp" => libc::SYS_kcmp,
        "kexec_file_load" => libc::SYS_kexec_file_load,
        "kexec_load" => libc::SYS_kexec_load,
        "keyctl" => libc::SYS_keyctl,
        "lookup_dcookie" => libc::SYS_lookup_dcookie,
        "mount" => libc::SYS_mount,
        "mount_setattr" => libc::SYS_mount_setattr,
        "move_mount" => libc::SYS_move_mount,
        "nfsservctl" => libc::SYS_nfsservctl,
        "open_by_handle_at" => libc::SYS_open_by_handle_at,
        "open_tree" => libc::SYS_open_tree,
        "perf_event_open" => libc::SYS_perf_event_open,
        "pivot_root" => libc::SYS_pivot_root,
        "process_vm_readv" => libc::SYS_process_vm_readv,
        "process_vm_writev" => libc::SYS_process_vm_writev,
        "ptrace" => libc::SYS_ptrace,
        "quotactl" => libc::SYS_quotactl,
        "reboot" => libc::SYS_reboot,
        "request_key" => libc::SYS_request_key,
        "setns" => libc::SYS_setns,
        "settimeofday" => libc::SYS_settimeofday,
        "swapoff" => libc::SYS_swapoff,
        "swapon" => libc::SYS_swapon,
        "sysfs" => libc::SYS_sysfs,
        "umount2" => libc::SYS_umount2,
        "unshare" => libc::SYS_unshare,
        "uselib" => libc::SYS_uselib,
        "userfaultfd" => libc::SYS_userfaultfd,
        "ustat" => libc::SYS_ustat,
        // umount, stime, vm86, vm86old: 32-bit only; create_module, get_kernel_syms,
        // query_module: never implemented on x86_64 (ENOSYS).
        _ => return None,
    };
    Some(n)
}

/// Bit that marks a syscall number of the x32 ABI (same audit arch as x86_64).
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// x32 numbers of the [`DENIED`] syscalls that x32 does not share with x86_64 (its own entries
/// 512-547, from the kernel's syscall_64.tbl); the shared ones are `n | X32_SYSCALL_BIT`.
fn x32_only_number(name: &str) -> Option<i64> {
    Some(match name {
        "ptrace" => 521,
        "kexec_load" => 528,
        "process_vm_readv" => 539,
        "process_vm_writev" => 540,
        _ => return None,
    })
}

/// Every number under which a [`DENIED`] syscall can be called on x86_64: the 64-bit one, the
/// same with the x32 bit, and x32's own where it has one.
pub fn denied_numbers() -> Vec<i64> {
    let mut numbers: Vec<i64> = DENIED
        .iter()
        .flat_map(|name| {
            let native = syscall_number(name);
            let x32 = x32_only_number(name).map(|n| n | X32_SYSCALL_BIT);
            [native, native.map(|n| n | X32_SYSCALL_BIT), x32]
        })
        .flatten()
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    numbers
}

/// The VMM's filter: [`DENIED`] answers EPERM through the 64-bit and the x32 ABI (both share the
/// x86_64 audit arch), everything else is allowed; a syscall made through the i386 ABI (int 0x80)
/// kills the process (seccompiler's arch check).
pub fn vmm_filter() -> Result<BpfProgram, seccompiler::BackendError> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = denied_numbers()
        .into_iter()
        .map(|n| (n, Vec::new())) // no argument conditions: every call matches
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )?;
    filter.try_into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_denied_name_is_a_syscall_of_x86_64_or_a_known_32_bit_one() {
        let missing: Vec<_> = DENIED
            .iter()
            .filter(|n| syscall_number(n).is_none())
            .collect();
        assert_eq!(
            missing,
            [
                &"create_module",
                &"get_kernel_syms",
                &"query_module",
                &"stime",
                &"umount",
                &"vm86",
                &"vm86old"
            ]
        );
    }

    #[test]
    fn x32_numbers_are_denied_too() {
        let numbers = denied_numbers();
        let unshare = libc::SYS_unshare;
        assert!(numbers.contains(&unshare));
        assert!(numbers.contains(&(unshare | X32_SYSCALL_BIT)));
        assert!(numbers.contains(&(521 | X32_SYSCALL_BIT)), "x32 ptrace");
        assert!(
            numbers.contains(&(540 | X32_SYSCALL_BIT)),
            "x32 process_vm_writev"
        );
    }

    #[test]
    fn vmm_filter_compiles() {
        let program = vmm_filter().unwrap();
        // Arch check + one comparison per denied syscall at least.
        assert!(program.len() > DENIED.len(), "{}", program.len());
    }

    /// The filter really refuses a denied syscall and leaves others alone (in a child process:
    /// a seccomp filter cannot be removed).
    #[test]
    fn vmm_filter_refuses_denied_syscalls_in_a_process() {
        let program = vmm_filter().unwrap();
        // SAFETY: the child only calls async-signal-safe functions (prctl, seccomp via
        // apply_filter's syscall, unshare, getpid, _exit) and never returns into the test harness.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = (|| {
                    // SAFETY: plain prctl with constant arguments.
                    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                        return 10;
                    }
                    if seccompiler::apply_filter(&program).is_err() {
                        return 11;
                    }
                    // SAFETY: unshare with a flag the filter refuses; nothing to clean up.
                    let r = unsafe { libc::unshare(libc::CLONE_NEWUTS) };
                    let errno = std::io::Error::last_os_error().raw_os_error();
                    if r != -1 || errno != Some(libc::EPERM) {
                        return 12;
                    }
                    // SAFETY: getpid has no preconditions.
                    if unsafe { libc::getpid() } <= 0 {
                        return 13;
                    }
                    0
                })();
                // SAFETY: _exit ends the forked child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
