//! What a command can fail with, and the exit status each failure gives.

use crate::sandboxfile::SandboxfileError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Sdk(#[from] microsandbox::Error),
    #[error(transparent)]
    Sandboxfile(#[from] SandboxfileError),
    /// The arguments do not make sense together.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Mcp(#[from] microsandbox_mcp::ServeError),
}

impl From<microsandbox::ClusterError> for CliError {
    fn from(e: microsandbox::ClusterError) -> Self {
        CliError::Sdk(e.into())
    }
}

impl CliError {
    /// 2 for usage errors (as clap), 127 for a command the sandbox does not have (as a shell
    /// and `docker run` say it), 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Sdk(microsandbox::Error::CommandNotFound { .. }) => 127,
            _ => 1,
        }
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;
