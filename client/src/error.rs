//! Errors of the client.

use crate::endpoint::Endpoint;
use hyper::StatusCode;
use microsandbox_wire::api::{ApiError, ErrorCode};

/// Result of client calls.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest error body kept in a [`ClientError::Protocol`] message.
const MAX_ERROR_TEXT: usize = 1024;

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The agent answered with its typed error (`{"code": ..., "message": ...}`).
    #[error("{0}")]
    Api(#[from] ApiError),
    /// Connecting to the agent failed.
    #[error(
        "cannot reach the node agent at {endpoint}: {source} \
         (is the agent running? start it with `microsandbox-agent serve`)"
    )]
    Unreachable {
        /// Where the client tried to connect.
        endpoint: Endpoint,
        /// Why the connection failed.
        #[source]
        source: BoxError,
    },
    /// The agent's answer did not follow the API (unexpected status, bad JSON, truncated stream...).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// I/O failure: the connection broke mid-request, a local file could not be read or written,
    /// or an argument could not be put in a request.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// WebSocket failure after the handshake, or a closed exec/lease connection.
    #[error("websocket error: {0}")]
    WebSocket(String),
}

impl ClientError {
    /// The server's error code, when this is an [`ClientError::Api`] error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            _ => None,
        }
    }

    /// Whether this is the server's error `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code() == Some(code)
    }

    /// Whether the agent could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }
}

/// Decodes a non-2xx response: the API's JSON error if the body is one, else a
/// [`ClientError::Protocol`] carrying the status and (the start of) the body text.
pub(crate) fn decode_error(status: StatusCode, body: &[u8]) -> ClientError {
    if let Ok(e) = serde_json::from_slice::<ApiError>(body) {
        return ClientError::Api(e);
    }
    if let Some(e) = kubernetes_status(status, body) {
        return e;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut end = text.len().min(MAX_ERROR_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let ellipsis = if end < text.len() { "..." } else { "" };
    if text.is_empty() {
        ClientError::Protocol(format!("unexpected HTTP status {status}"))
    } else {
        ClientError::Protocol(format!(
            "unexpected HTTP status {status}: {}{ellipsis}",
            &text[..end]
        ))
    }
}

/// A Kubernetes `Status` answer of a relaying API server (pod proxy): RBAC refusals become the
/// agent's own `unauthorized`/`forbidden`, anything else a protocol error with its message.
fn kubernetes_status(status: StatusCode, body: &[u8]) -> Option<ClientError> {
    #[derive(serde::Deserialize)]
    struct Status {
        kind: String,
        #[serde(default)]
        message: String,
    }
    let s = serde_json::from_slice::<Status>(body)
        .ok()
        .filter(|s| s.kind == "Status")?;
    let message = format!("API server: {}", s.message);
    Some(match status {
        StatusCode::UNAUTHORIZED => ClientError::Api(ApiError {
            code: ErrorCode::Unauthorized,
            message,
        }),
        StatusCode::FORBIDDEN => ClientError::Api(ApiError {
            code: ErrorCode::Forbidden,
            message,
        }),
        _ => ClientError::Protocol(format!(
            "unexpected HTTP status {status} from the {message}"
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_body() {
        let e = decode_error(
            StatusCode::NOT_FOUND,
            br#"{"code":"sandbox_not_found","message":"no sandbox \"x\""}"#,
        );
        assert_eq!(e.code(), Some(ErrorCode::SandboxNotFound));
        assert!(e.is(ErrorCode::SandboxNotFound));
        assert_eq!(e.to_string(), "sandbox_not_found: no sandbox \"x\"");
    }

    #[test]
    fn kubernetes_status_body() {
        let body = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"a\" is forbidden: User \"bob\" cannot get resource \"pods/proxy\"","reason":"Forbidden","code":403}"#;
        let e = decode_error(StatusCode::FORBIDDEN, body);
        assert_eq!(e.code(), Some(ErrorCode::Forbidden));
        assert!(
            e.to_string()
                .contains("API server: pods \"a\" is forbidden"),
            "{e}"
        );
        let body = br#"{"kind":"Status","status":"Failure","message":"error trying to reach service: dial tcp 10.0.0.1:7070: connect: connection refused","code":503}"#;
        match decode_error(StatusCode::SERVICE_UNAVAILABLE, body) {
            ClientError::Protocol(m) => assert_eq!(
                m,
                "unexpected HTTP status 503 Service Unavailable from the API server: error trying \
                 to reach service: dial tcp 10.0.0.1:7070: connect: connection refused"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn non_json_body() {
        let e = decode_error(StatusCode::BAD_GATEWAY, b"upstream down\n");
        assert!(e.code().is_none());
        match e {
            ClientError::Protocol(m) => {
                assert_eq!(m, "unexpected HTTP status 502 Bad Gateway: upstream down")
            }
            other => panic!("{other:?}"),
        }
        // Unknown code: not an ApiError either.
        let e = decode_error(
            StatusCode::IM_A_TEAPOT,
            br#"{"code":"teapot","message":"x"}"#,
        );
        assert!(matches!(e, ClientError::Protocol(m) if m.contains("418") && m.contains("teapot")));
        let e = decode_error(StatusCode::INTERNAL_SERVER_ERROR, b"");
        assert!(
            matches!(e, ClientError::Protocol(m) if m == "unexpected HTTP status 500 Internal Server Error")
        );
    }

    #[test]
    fn long_body_truncated_on_char_boundary() {
        let body = "é".repeat(2000);
        match decode_error(StatusCode::BAD_REQUEST, body.as_bytes()) {
            ClientError::Protocol(m) => {
                assert!(m.ends_with("..."));
                assert!(m.len() < 1200);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unreachable_hint() {
        let e = ClientError::Unreachable {
            endpoint: Endpoint::Unix("/s/agent.sock".into()),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        let s = e.to_string();
        assert!(s.contains("unix:/s/agent.sock"), "{s}");
        assert!(s.contains("microsandbox-agent serve"), "{s}");
        assert!(e.is_unreachable());
    }
}
