//! Wire types shared by every part of microsandbox.
//!
//! * [`guest`]: the host <-> guest-agent protocol (length-prefixed postcard frames).
//! * [`api`]: the JSON bodies of the node-agent HTTP/WebSocket API.

pub mod api;
pub mod guest;
