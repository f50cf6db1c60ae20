//! libkrun microVM runtime: hardware isolation, the production path.
//!
//! * [`config`]: the VM as validated data ([`VmConfig`]) built from a [`super::LaunchSpec`].
//! * [`plan`]: the ordered libkrun calls for a config ([`VmPlan`]), serialised to JSON.
//! * [`ffi`]: libkrun `dlopen`ed at run time (the agent builds and runs without it).
//! * [`vmm`]: the `microsandbox-agent vmm --plan <file>` process that enters the VM.
//! * [`boot`]: why a VM did not boot ([`BootFailure`]), from its VMM's exit and log.
//! * [`runtime`]: [`MicrovmRuntime`], the [`super::Runtime`] that spawns and supervises VMMs.
//!
//! The guest agent is libkrun-init's program; libkrun listens on the host socket
//! `socket_dir/agent.sock` and forwards each connection to the guest's vsock port 7000.

pub mod boot;
pub mod config;
pub mod ffi;
pub mod plan;
pub mod runtime;
pub mod vmm;

#[cfg(test)]
mod fake_libkrun_tests;

use std::path::PathBuf;

pub use boot::BootFailure;
pub use config::{ConfigError, KernelConfig, KernelFormat, MicrovmSettings, VmConfig};
pub use ffi::FfiError;
pub use plan::{KrunCall, VmPlan};
pub use runtime::MicrovmRuntime;
pub use vmm::run_vmm;

/// Failures of the VMM side (plan, libkrun).
#[derive(Debug, thiserror::Error)]
pub enum MicrovmError {
    #[error("invalid microVM configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("VM plan {path:?}: {reason}")]
    Plan { path: PathBuf, reason: String },
    #[error(transparent)]
    Ffi(#[from] FfiError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
