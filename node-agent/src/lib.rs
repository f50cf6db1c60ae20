//! microsandbox node-agent: pulls OCI images, assembles sandbox roots, runs sandboxes through a
//! [`runtime::Runtime`], talks to each sandbox's guest agent and serves the authenticated API.

pub mod api;
pub mod cleanup;
pub mod cluster;
pub mod config;
pub mod doctor;
pub mod error;
pub mod guest;
pub mod image;
pub mod network;
pub mod private_file;
pub mod rootfs;
pub mod runtime;
pub mod sandbox;
pub mod serve;
pub mod volume;
