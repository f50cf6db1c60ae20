//! # microsandbox
//!
//! Run untrusted code — AI-generated code above all — in hardware-isolated microVMs on your own
//! machines. This crate talks to the node agent of this machine (local mode), starting one when
//! none runs, with the same settings as the other SDKs (see [`agent`]), or creates Sandbox
//! objects in a Kubernetes cluster running the microsandbox operator (cluster mode, see
//! [`cluster`]). The Python and Node.js SDKs are thin layers over this crate.
//!
//! ```no_run
//! use microsandbox::{Mount, NetworkPolicy, Sandbox};
//!
//! # async fn demo() -> microsandbox::Result<()> {
//! let sb = Sandbox::builder("my-sandbox")
//!     .image("python")
//!     .memory(512)
//!     .cpus(2)
//!     .env("PYTHONDONTWRITEBYTECODE", "1")
//!     .workdir("/app")
//!     .volume("/app/src", Mount::bind("./src").readonly())
//!     .network(NetworkPolicy::public_only())
//!     .create()
//!     .await?;
//! let output = sb.exec("python", ["-c", "print('Hello!')"]).await?;
//! print!("{}", output.stdout_str());
//! sb.remove().await?;
//! # Ok(()) }
//! ```
//!
//! Errors are [`Error`] variants, one per kind of failure the agent reports
//! ([`Error::code`] gives its wire code); a command that runs past its timeout is
//! [`Error::ExecTimeout`] with the output it wrote until then.

pub mod agent;
pub mod cluster;
mod config;
mod error;
mod exec;
mod fs;
mod image;
mod pool;
pub mod repl;
mod sandbox;
mod snapshot;
mod volume;

pub use agent::Agent;
pub use cluster::{AgentAccess, Cluster, ClusterConnection, ClusterError, ClusterErrorKind};
pub use config::{Mount, NetworkPolicy, Patch, Secret};
pub use error::{Error, Result};
pub use exec::{Command, ExecEvent, ExecOutput, ExecStream};
pub use fs::Fs;
pub use image::{pull, pull_wait};
pub use microsandbox_client::api::{
    FileKind, FileStat, Isolation, Metrics, PoolInfo, PullEvent, PullPolicy, PushedSnapshot,
    SandboxInfo, SandboxState, SnapshotInfo, StopReason, VolumeInfo,
};
pub use microsandbox_client::{Endpoint, ErrorCode, ExecInput};
pub use pool::Pool;
pub use repl::{Language, Repl, RunOutput, RunStatus};
pub use sandbox::{Sandbox, SandboxBuilder};
pub use snapshot::Snapshot;
pub use volume::Volume;
