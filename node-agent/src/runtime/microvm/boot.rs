//! Why a microVM did not boot, read from how its VMM ended and what it logged. Pure.

use std::fmt;

/// How a VMM that exited before its guest agent answered failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootFailure {
    /// KVM stopped the guest with `KVM_EXIT_INTERNAL_ERROR`: this host's virtualization cannot
    /// run that guest kernel (on nested PVM hosts only a PVM-guest kernel runs).
    KvmInternalError,
    /// libkrun's init ran but could not start the guest agent (its exit codes 125-127).
    Init { code: i32, meaning: &'static str },
    /// The VMM exited for another reason (its log says which).
    VmmExited { status: String },
}

impl BootFailure {
    /// Classify from the VMM's exit (`code`: its exit code, `status`: how it ended, for people)
    /// and the end of its log.
    pub fn classify(code: Option<i32>, status: &str, log: &str) -> BootFailure {
        if log.contains("KVM_EXIT_INTERNAL_ERROR") {
            return BootFailure::KvmInternalError;
        }
        let meaning = match code {
            Some(125) => Some("could not set up the guest environment"),
            Some(126) => Some("found the guest agent but could not execute it"),
            Some(127) => Some("could not find the guest agent in the root"),
            _ => None,
        };
        match (code, meaning) {
            (Some(code), Some(meaning)) => BootFailure::Init { code, meaning },
            _ => BootFailure::VmmExited {
                status: status.to_string(),
            },
        }
    }
}

impl fmt::Display for BootFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootFailure::KvmInternalError => f.write_str(
                "the guest kernel stopped with KVM_EXIT_INTERNAL_ERROR: this host's KVM cannot \
                 run it (nested PVM hosts boot only a PVM-guest kernel: pass one with --kernel; \
                 `microsandbox-agent doctor` checks the host)",
            ),
            BootFailure::Init { code, meaning } => write!(
                f,
                "the VMM exited ({code}): libkrun's init {meaning} before the guest agent came up"
            ),
            BootFailure::VmmExited { status } => {
                write!(
                    f,
                    "the VMM exited ({status}) before the guest agent came up"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_internal_error_wins_over_the_exit_code() {
        let log = "vmm x: entering the VM\n[ERROR krun_vmm::linux::vstate] Received KVM_EXIT_INTERNAL_ERROR signal\n";
        let f = BootFailure::classify(Some(1), "exit status: 1", log);
        assert_eq!(f, BootFailure::KvmInternalError);
        assert!(f.to_string().contains("--kernel"), "{f}");
    }

    #[test]
    fn init_codes_are_named_and_others_keep_the_status() {
        assert_eq!(
            BootFailure::classify(Some(127), "exit status: 127", ""),
            BootFailure::Init {
                code: 127,
                meaning: "could not find the guest agent in the root"
            }
        );
        let other = BootFailure::classify(None, "signal: 9 (SIGKILL)", "");
        assert_eq!(
            other.to_string(),
            "the VMM exited (signal: 9 (SIGKILL)) before the guest agent came up"
        );
    }
}
