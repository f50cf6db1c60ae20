//! The agent's error type and its mapping to API errors.

use microsandbox_wire::api::{ApiError, ErrorCode, SandboxState};
use std::path::{Path, PathBuf};

use crate::image::ImageError;
use crate::runtime::RuntimeError;

/// Every failure the API can report.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("sandbox {0:?} not found")]
    NotFound(String),
    #[error("sandbox {0:?} already exists; pick another name or remove it first")]
    AlreadyExists(String),
    #[error("sandbox {name:?} is not running (state: {state})")]
    NotRunning { name: String, state: SandboxState },
    #[error("sandbox {0:?} is still being created; retry when the create call has returned")]
    StillCreating(String),
    #[error("sandbox {0:?} is draining: it accepts no new commands")]
    Draining(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A typed error reported by the guest agent.
    #[error("{0}")]
    Guest(microsandbox_wire::guest::GuestError),
    #[error("the command's output exceeded {0} bytes; use the streaming exec for large outputs")]
    OutputTooLarge(usize),
    #[error("guest agent channel: {0}")]
    GuestChannel(String),
    #[error(transparent)]
    Patch(#[from] crate::rootfs::patch::PatchError),
    #[error("volume {0:?} not found")]
    VolumeNotFound(String),
    #[error("volume {0:?} already exists")]
    VolumeAlreadyExists(String),
    #[error("volume {volume:?} is mounted by sandbox {sandbox:?}; remove the sandbox first")]
    VolumeInUse { volume: String, sandbox: String },
    #[error(
        "snapshot {snapshot:?} is the image of sandbox {sandbox:?}; remove that sandbox first"
    )]
    SnapshotInUse { snapshot: String, sandbox: String },
    #[error("no warm pool {0:?} (PUT /v1/pools/{0} makes one)")]
    PoolNotFound(String),
    #[error("volume {0:?} is being resized; try again in a moment")]
    VolumeBusy(String),
    /// A file system operation of the agent failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// What the node's file system cannot do for a volume (too large a file, growth beyond
    /// what ext4 reserved room for): the request is well formed, the node cannot serve it.
    #[error("{0}")]
    VolumeLimit(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AgentError {
    pub fn code(&self) -> ErrorCode {
        use microsandbox_wire::guest::GuestErrorKind as G;
        if self.is_node_disk_full() {
            return ErrorCode::NoSpace;
        }
        match self {
            AgentError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            AgentError::InvalidName(_) => ErrorCode::InvalidName,
            AgentError::NotFound(_) => ErrorCode::SandboxNotFound,
            AgentError::AlreadyExists(_) => ErrorCode::SandboxAlreadyExists,
            AgentError::NotRunning { .. } | AgentError::StillCreating(_) => {
                ErrorCode::SandboxNotRunning
            }
            AgentError::Draining(_) => ErrorCode::SandboxDraining,
            AgentError::Image(e) => e.code(),
            AgentError::Runtime(RuntimeError::Unavailable { .. }) => {
                ErrorCode::IsolationUnavailable
            }
            AgentError::Runtime(RuntimeError::BootFailed { .. }) => ErrorCode::GuestBootFailed,
            AgentError::Runtime(RuntimeError::InvalidMount { .. }) => ErrorCode::InvalidRequest,
            AgentError::Runtime(_) => ErrorCode::RuntimeError,
            AgentError::Guest(g) => match g.kind {
                G::NotFound => ErrorCode::PathNotFound,
                G::CommandNotFound => ErrorCode::CommandNotFound,
                G::SpawnFailed => ErrorCode::ExecFailed,
                G::InvalidRequest => ErrorCode::InvalidRequest,
                _ => ErrorCode::FsError,
            },
            AgentError::OutputTooLarge(_) => ErrorCode::ExecFailed,
            AgentError::GuestChannel(_) => ErrorCode::RuntimeError,
            AgentError::Patch(_) => ErrorCode::PatchFailed,
            AgentError::VolumeNotFound(_) => ErrorCode::VolumeNotFound,
            AgentError::VolumeAlreadyExists(_) => ErrorCode::VolumeAlreadyExists,
            AgentError::VolumeInUse { .. } | AgentError::VolumeBusy(_) => ErrorCode::VolumeInUse,
            AgentError::SnapshotInUse { .. } => ErrorCode::SnapshotInUse,
            AgentError::PoolNotFound(_) => ErrorCode::PoolNotFound,
            AgentError::VolumeLimit(_) => ErrorCode::FsError,
            AgentError::Io { .. } | AgentError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Whether the node's own disk ran out: an `ENOSPC`/`EDQUOT` in the chain of an agent-side
    /// failure, or the words the tools the agent runs (mkfs, crun, resize2fs) print for it. A
    /// guest's own full disk is not this (its quota: `fs_error` from the guest agent).
    fn is_node_disk_full(&self) -> bool {
        match self {
            AgentError::Io { .. }
            | AgentError::Internal(_)
            | AgentError::Runtime(_)
            | AgentError::Image(_)
            | AgentError::VolumeLimit(_) => {}
            _ => return false,
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) {
                    return true;
                }
            }
            source = e.source();
        }
        self.to_string().contains("No space left on device")
    }

    pub fn not_running(name: &str, state: SandboxState) -> Self {
        match state {
            SandboxState::Creating => AgentError::StillCreating(name.to_string()),
            state => AgentError::NotRunning {
                name: name.to_string(),
                state,
            },
        }
    }

    pub fn to_api(&self) -> ApiError {
        ApiError {
            code: self.code(),
            message: self.to_string(),
        }
    }
}

/// Names the operation and path of an I/O failure: `fs::create_dir_all(&d).at("create", &d)?`.
pub trait IoContext<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T, AgentError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T, AgentError> {
        self.map_err(|source| AgentError::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}
