//! Running processes: spawning, reaping, terminals, and the exec conversation.

pub mod pty;
pub mod reaper;
pub mod session;
pub mod spawn;
