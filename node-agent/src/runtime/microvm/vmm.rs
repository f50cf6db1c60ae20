//! The VMM process: `microsandbox-agent vmm --plan <file>`.
//!
//! `krun_start_enter` takes over the calling process for the VM's lifetime (and `exit()`s when the
//! guest stops), so each VM runs in its own process: the agent re-executes itself with this hidden
//! subcommand, which replays the [`VmPlan`] against libkrun and enters the VM.

use std::convert::Infallible;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use super::ffi::Libkrun;
use super::plan::{KrunCall, VmPlan};
use super::MicrovmError;

/// Run the VM described by the plan at `plan_path`. Never returns on success: libkrun exits the
/// process with the guest's exit status when the VM stops. Call it before starting any async
/// runtime (libkrun starts its own threads and owns the process from here on).
pub fn run_vmm(plan_path: &Path) -> Result<Infallible, MicrovmError> {
    let bytes = std::fs::read(plan_path).map_err(|e| MicrovmError::Plan {
        path: plan_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let plan = VmPlan::parse(&bytes).map_err(|reason| MicrovmError::Plan {
        path: plan_path.to_path_buf(),
        reason,
    })?;
    if let Some(netns) = &plan.netns {
        join_netns(netns).map_err(|e| MicrovmError::Plan {
            path: plan_path.to_path_buf(),
            reason: format!("joining network namespace {}: {e}", netns.display()),
        })?;
    }
    plan.jail.enter().map_err(|e| MicrovmError::Plan {
        path: plan_path.to_path_buf(),
        reason: format!("entering the VMM jail: {e}"),
    })?;
    let krun = Libkrun::open(plan.libkrun.as_deref())?;
    eprintln!("vmm {}: using {}", plan.id, krun.path().display());
    krun.set_log_level(plan.log_level)?;
    if let Some(max) = krun.max_vcpus()? {
        if i32::from(plan.vcpus) > max {
            return Err(super::ffi::FfiError::TooManyVcpus {
                wanted: plan.vcpus,
                max,
            }
            .into());
        }
    }
    let ctx = krun.create_ctx()?;
    if let Err(e) = configure(&krun, ctx, &plan) {
        krun.free_ctx(ctx);
        return Err(e);
    }
    eprintln!("vmm {}: entering the VM", plan.id);
    Err(krun.start_enter(ctx).into())
}

/// Moves this (still single-threaded) process into the network namespace at `path`.
fn join_netns(path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let file = std::fs::File::open(path)?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(Into::into)
}

fn configure(krun: &Libkrun, ctx: u32, plan: &VmPlan) -> Result<(), MicrovmError> {
    for call in &plan.calls {
        if let KrunCall::AddVsockPort {
            host_socket,
            listen: true,
            ..
        } = call
        {
            remove_stale_socket(host_socket)?;
        }
        krun.apply(ctx, call)?;
    }
    Ok(())
}

/// libkrun binds the host socket itself; a socket left by an earlier VM would make that fail.
/// Anything that is not a socket is left alone (and libkrun's bind error will name it).
fn remove_stale_socket(path: &Path) -> Result<(), MicrovmError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => Ok(std::fs::remove_file(path)?),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_or_bad_plans_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = run_vmm(&missing).unwrap_err();
        assert!(matches!(err, MicrovmError::Plan { .. }), "{err}");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, b"{\"version\": 1}").unwrap();
        let err = run_vmm(&bad).unwrap_err();
        assert!(err.to_string().contains("bad.json"), "{err}");
    }

    #[test]
    fn stale_sockets_are_removed_other_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        remove_stale_socket(&sock).unwrap();
        assert!(!sock.exists());
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        remove_stale_socket(&file).unwrap();
        assert!(file.exists());
        remove_stale_socket(&dir.path().join("none")).unwrap();
    }
}
