//! The microsandbox operator: binds Sandboxes to node-agents and keeps their status.
//!
//! Pure logic ([`scheduler`], [`status`], [`leader::decide`]) is unit-tested without a cluster;
//! [`controller`] holds the API side; `main.rs` only wires things together.

pub mod controller;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod scheduler;
pub mod status;
pub mod uninstall;

pub use error::{Error, Result};
