use microsandbox_wire::api::ErrorCode;

/// Failures of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {0:?} not found in its registry (check the name and tag)")]
    NotFound(String),
    #[error("registry {registry} is unreachable: {detail} (is it running? air-gapped hosts need a mirror: --mirror docker.io=HOST:PORT)")]
    Unreachable { registry: String, detail: String },
    #[error("registry {registry} refused our credentials for {reference}: {detail}")]
    Unauthorized {
        registry: String,
        reference: String,
        detail: String,
    },
    #[error("image {0:?} is not present locally and the pull policy is `never`")]
    NotPresent(String),
    #[error("pulling {reference} failed: {detail}")]
    PullFailed { reference: String, detail: String },
    #[error("layer {digest} could not be extracted: {detail}")]
    Extract { digest: String, detail: String },
    #[error("image store i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl ImageError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ImageError::InvalidReference { .. } => ErrorCode::InvalidRequest,
            ImageError::NotFound(_) => ErrorCode::ImageNotFound,
            ImageError::Unreachable { .. } => ErrorCode::RegistryUnreachable,
            ImageError::NotPresent(_) => ErrorCode::ImageNotPresent,
            ImageError::Unauthorized { .. }
            | ImageError::PullFailed { .. }
            | ImageError::Extract { .. } => ErrorCode::ImagePullFailed,
            ImageError::Io(_) => ErrorCode::Internal,
        }
    }
}
