//! Sandbox lifecycle: create, get, list, stop, kill, drain, remove; attached-sandbox leases; state
//! persisted per sandbox so that a restarted agent re-adopts running sandboxes or reaps them.

mod entry;
mod manager;
mod record;
pub mod recover;

pub use entry::{ExecGuard, LeaseGuard, SandboxEntry};
pub use manager::SandboxManager;
pub use record::{now, SandboxRecord};
