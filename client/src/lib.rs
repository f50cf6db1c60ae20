//! Rust client of the microsandbox node-agent API (`node-agent/API.md`).
//!
//! ```no_run
//! # async fn demo() -> microsandbox_client::Result<()> {
//! use microsandbox_client::{AgentClient, api::{CreateSandbox, ExecRequest}};
//!
//! let client = AgentClient::from_state_dir("/var/lib/microsandbox")?;
//! let sandbox: CreateSandbox = serde_json::from_value(serde_json::json!({
//!     "name": "demo", "image": "python:3.12", "detached": true,
//! })).unwrap();
//! client.create(sandbox).await?;
//! let out = client
//!     .exec("demo", ExecRequest { command: "python3".into(), args: vec!["-V".into()], ..Default::default() })
//!     .await?;
//! println!("{}", out.stdout_str());
//! client.remove("demo").await?;
//! # Ok(()) }
//! ```
//!
//! Transport: HTTP/1.1 over the agent's unix socket or TCP, with pooled connections; every call
//! sends `Authorization: Bearer <token>` when a token is set. Non-2xx answers become
//! [`ClientError::Api`] (the agent's typed error) or [`ClientError::Protocol`].

mod endpoint;
mod error;
mod exec_ws;
mod fs;
mod http;
mod images;
mod lease;
mod sandboxes;
mod volumes;

pub use endpoint::Endpoint;
pub use error::{BoxError, ClientError, Result};
pub use exec_ws::{ExecEvent, ExecInput, ExecStream};
pub use http::{AgentClient, Relay, ReqBody, RELAYED_AUTHORIZATION};
pub use lease::Lease;
pub use sandboxes::{encode_stdin, Output};

/// The API's JSON types (from `microsandbox-wire`).
pub use microsandbox_wire::api;
pub use microsandbox_wire::api::{ApiError, ErrorCode};
