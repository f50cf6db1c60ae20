//! Client errors as Python exceptions of the `microsandbox.errors` module.

use microsandbox_client::ClientError;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// What went wrong, in the terms `microsandbox.errors._from_native(kind, code, message)` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorParts {
    /// `api`, `unreachable`, `protocol`, `io` or `websocket`.
    pub kind: &'static str,
    /// The agent's error code (`sandbox_not_found`...) for `api` errors.
    pub code: Option<String>,
    /// Human-readable message (for `api` errors, the agent's message alone).
    pub message: String,
}

impl From<&ClientError> for ErrorParts {
    fn from(e: &ClientError) -> Self {
        let (kind, code, message) = match e {
            ClientError::Api(api) => (
                "api",
                serde_json::to_value(api.code)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from)),
                api.message.clone(),
            ),
            ClientError::Unreachable { .. } => ("unreachable", None, e.to_string()),
            ClientError::Protocol(_) => ("protocol", None, e.to_string()),
            ClientError::Io(_) => ("io", None, e.to_string()),
            ClientError::WebSocket(_) => ("websocket", None, e.to_string()),
            _ => ("other", None, e.to_string()),
        };
        ErrorParts {
            kind,
            code,
            message,
        }
    }
}

impl From<&microsandbox::Error> for ErrorParts {
    fn from(e: &microsandbox::Error) -> Self {
        use microsandbox::Error;
        let (kind, code) = match e {
            Error::Cluster(c) => ("cluster", Some(c.kind.as_str().to_string())),
            Error::Transport(t) => return ErrorParts::from(t),
            Error::AgentUnreachable(_) | Error::AgentNotInstalled(_) => ("unreachable", None),
            Error::Io(_) => ("io", None),
            other => match other.code() {
                Some(code) => ("api", Some(code.as_str().to_string())),
                None => ("other", None),
            },
        };
        ErrorParts {
            kind,
            code,
            message: match e {
                Error::Cluster(c) => c.message.clone(),
                other => other.to_string(),
            },
        }
    }
}

/// Converts a client error into the matching `microsandbox.errors` exception. Takes the GIL, so
/// it can be called from inside the futures this module hands to Python.
pub fn to_pyerr(e: ClientError) -> PyErr {
    raise(ErrorParts::from(&e))
}

/// The same for an error of the `microsandbox` crate (cluster mode's included).
pub fn sdk_to_pyerr(e: microsandbox::Error) -> PyErr {
    raise(ErrorParts::from(&e))
}

/// The same for a cluster-mode error.
pub fn cluster_to_pyerr(e: microsandbox::ClusterError) -> PyErr {
    sdk_to_pyerr(e.into())
}

fn raise(parts: ErrorParts) -> PyErr {
    Python::attach(|py| {
        let made = py
            .import("microsandbox.errors")
            .and_then(|m| m.getattr("_from_native"))
            .and_then(|f| f.call1((parts.kind, parts.code.clone(), parts.message.clone())));
        match made {
            Ok(exc) => PyErr::from_value(exc),
            // Only if the package itself is broken: still say what happened.
            Err(_) => PyRuntimeError::new_err(format!("{}: {}", parts.kind, parts.message)),
        }
    })
}

/// `Result<T, ClientError>` to `PyResult<T>`.
pub trait IntoPyResult<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, ClientError> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_pyerr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microsandbox_client::{ApiError, ErrorCode};

    #[test]
    fn api_errors_keep_their_code() {
        let e = ClientError::Api(ApiError {
            code: ErrorCode::SandboxNotFound,
            message: "no sandbox \"x\"".into(),
        });
        let p = ErrorParts::from(&e);
        assert_eq!(p.kind, "api");
        assert_eq!(p.code.as_deref(), Some("sandbox_not_found"));
        assert_eq!(p.message, "no sandbox \"x\"");
    }

    #[test]
    fn transport_errors_have_no_code() {
        let p = ErrorParts::from(&ClientError::Protocol("bad".into()));
        assert_eq!((p.kind, p.code), ("protocol", None));
        let p = ErrorParts::from(&ClientError::WebSocket("closed".into()));
        assert_eq!(p.kind, "websocket");
        assert!(p.message.contains("closed"));
    }
}
