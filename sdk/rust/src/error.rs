//! The SDK's error type: the agent's typed error codes as variants, plus what can go wrong
//! before the agent answers.

use microsandbox_client::{ClientError, ErrorCode};

use crate::exec::ExecOutput;

/// Everything an SDK call can fail with. Match on the variant, or ask [`Error::code`] for the
/// agent's error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No sandbox (or volume, pool, image, path) of that name.
    #[error("{message}")]
    NotFound { code: ErrorCode, message: String },
    /// The name is taken.
    #[error("{message}")]
    AlreadyExists { code: ErrorCode, message: String },
    /// The sandbox is not running (stopped, failed, draining, still being created).
    #[error("{message}")]
    NotRunning { code: ErrorCode, message: String },
    /// The command does not exist in the sandbox.
    #[error("{message}")]
    CommandNotFound { message: String },
    /// A command ran past its timeout and was killed; `output` holds what it wrote until then.
    #[error("the command timed out and was killed")]
    ExecTimeout { output: Box<ExecOutput> },
    /// The request itself is wrong (bad name, size, mount, ...): nothing was changed.
    #[error("{message}")]
    InvalidRequest { code: ErrorCode, message: String },
    /// Any other error the agent answered with.
    #[error("{message}")]
    Agent { code: ErrorCode, message: String },
    /// No agent answers, and none could be started.
    #[error("{0}")]
    AgentUnreachable(String),
    /// No `microsandbox-agent` binary to start.
    #[error("{0}")]
    AgentNotInstalled(String),
    /// The connection broke or the agent's answer did not follow the API.
    #[error(transparent)]
    Transport(ClientError),
    /// A local file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Cluster mode: the Kubernetes API, the operator or a node refused or failed (match on
    /// its [`ClusterErrorKind`](crate::cluster::ClusterErrorKind)).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

impl Error {
    /// The agent's error code, for errors the agent answered with.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::NotFound { code, .. }
            | Error::AlreadyExists { code, .. }
            | Error::NotRunning { code, .. }
            | Error::InvalidRequest { code, .. }
            | Error::Agent { code, .. } => Some(*code),
            Error::CommandNotFound { .. } => Some(ErrorCode::CommandNotFound),
            _ => None,
        }
    }
}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        let ClientError::Api(api) = e else {
            return match e {
                ClientError::Unreachable { .. } => Error::AgentUnreachable(e.to_string()),
                other => Error::Transport(other),
            };
        };
        let (code, message) = (api.code, api.message);
        match code {
            ErrorCode::SandboxNotFound
            | ErrorCode::VolumeNotFound
            | ErrorCode::PoolNotFound
            | ErrorCode::ImageNotFound
            | ErrorCode::ImageNotPresent
            | ErrorCode::PathNotFound => Error::NotFound { code, message },
            ErrorCode::SandboxAlreadyExists | ErrorCode::VolumeAlreadyExists => {
                Error::AlreadyExists { code, message }
            }
            ErrorCode::SandboxNotRunning | ErrorCode::SandboxDraining => {
                Error::NotRunning { code, message }
            }
            ErrorCode::CommandNotFound => Error::CommandNotFound { message },
            ErrorCode::InvalidRequest | ErrorCode::InvalidName => {
                Error::InvalidRequest { code, message }
            }
            _ => Error::Agent { code, message },
        }
    }
}

/// `Result` with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use microsandbox_client::ApiError;

    #[test]
    fn agent_codes_become_variants() {
        let api = |code| {
            Error::from(ClientError::Api(ApiError {
                code,
                message: "m".into(),
            }))
        };
        assert!(matches!(
            api(ErrorCode::SandboxNotFound),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            api(ErrorCode::CommandNotFound),
            Error::CommandNotFound { .. }
        ));
        assert!(matches!(
            api(ErrorCode::SandboxDraining),
            Error::NotRunning { .. }
        ));
        assert!(matches!(
            api(ErrorCode::InvalidName),
            Error::InvalidRequest { .. }
        ));
        let other = api(ErrorCode::GuestBootFailed);
        assert_eq!(other.code(), Some(ErrorCode::GuestBootFailed));
        assert_eq!(other.to_string(), "m");
    }
}
