//! Sandbox lifecycle: create, get, list, pause, resume, stop, kill, drain, remove; attached-sandbox leases; state
//! persisted per sandbox so that a restarted agent re-adopts running sandboxes or reaps them.
//!
//! * [`record`]: what is known of one sandbox, its [`Phase`] carrying each phase's data.
//! * [`validate`]: the pure checks of a create request.
//! * `create`, `stop`, `pause`, `snapshot`, `lease`, [`pool`], [`recover`]: the manager's
//!   operations, one file each.

mod create;
mod entry;
mod lease;
mod manager;
mod pause;
pub mod pool;
mod record;
pub mod recover;
mod snapshot;
mod stop;
pub mod validate;

pub use entry::{ExecGuard, LeaseGuard, SandboxEntry};
pub use manager::SandboxManager;
pub use record::{now, ExecDefaults, PauseCause, Phase, SandboxRecord};
pub use stop::DEFAULT_STOP_TIMEOUT;

/// A cleanup step whose failure must not stop the rest: say what failed, go on.
fn cleanup<T, E: std::fmt::Display>(sandbox: &str, what: &str, result: Result<T, E>) {
    if let Err(e) = result {
        tracing::warn!(sandbox = %sandbox, error = %e, "cannot {what}");
    }
}
