//! Request plumbing: the client handle, URL building, HTTP requests and WebSocket upgrades.

use crate::endpoint::Endpoint;
use crate::error::{decode_error, BoxError, ClientError, Result};
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::UnixConnector;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::error::Error as StdError;
use std::io;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

/// Body type of every request.
pub type ReqBody = UnsyncBoxBody<Bytes, io::Error>;

pub use microsandbox_wire::api::RELAYED_AUTHORIZATION;

/// A transport the client does not own, such as the Kubernetes API server's pod proxy
/// (`/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy`). It receives requests whose URI is only a
/// path (the relay's prefix + the agent route), adds its own scheme, host, TLS and credentials,
/// and hands back hyper's response, upgradable for WebSockets. The agent token travels in
/// [`RELAYED_AUTHORIZATION`].
pub trait Relay: Send + Sync + 'static {
    /// Sends `req` and resolves to the answer, whatever its status. A connection failure is an
    /// `Err`.
    fn send(
        &self,
        req: Request<ReqBody>,
    ) -> BoxFuture<'static, std::result::Result<Response<Incoming>, BoxError>>;
}

/// Largest error body read from a failed response.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Characters left as-is in a path segment (everything else, including `.` and `/`, is encoded,
/// so a name can never be read as another route).
pub(crate) const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');
/// Characters left as-is in a query value: unreserved characters and `/` (legal in a query).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'~')
    .remove(b'.')
    .remove(b'/');

/// `/v1/sandboxes/{name}{suffix}` with `name` percent-encoded. `suffix` is a constant route tail
/// such as `""`, `"/stop"` or `"/fs/file"`.
pub(crate) fn sandbox_path(name: &str, suffix: &str) -> String {
    format!(
        "/v1/sandboxes/{}{suffix}",
        utf8_percent_encode(name, SEGMENT)
    )
}

/// Appends `?k=v&...` to `path`, percent-encoding the values (keys are constants).
pub(crate) fn with_query(mut path: String, params: &[(&str, &str)]) -> String {
    for (i, (k, v)) in params.iter().enumerate() {
        path.push(if i == 0 { '?' } else { '&' });
        path.push_str(k);
        path.push('=');
        path.extend(utf8_percent_encode(v, QUERY_VALUE));
    }
    path
}

/// The `unix://<hex socket path>:0<path>` URI that hyperlocal's connector understands.
fn unix_uri(socket: &Path, path_and_query: &str) -> String {
    use std::fmt::Write;
    let bytes = socket.as_os_str().as_encoded_bytes();
    let mut s = String::with_capacity(7 + bytes.len() * 2 + 2 + path_and_query.len());
    s.push_str("unix://");
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s.push_str(":0");
    s.push_str(path_and_query);
    s
}

/// `e` and its sources, joined with `": "` (hyper's own messages say little on their own).
pub(crate) fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let msg = src.to_string();
        if !s.ends_with(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = src.source();
    }
    s
}

/// An `io::Error` with the kind of the first `io::Error` in `e`'s chain and the whole chain as text.
fn flatten_io(e: &(dyn StdError + 'static)) -> io::Error {
    let mut kind = io::ErrorKind::Other;
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(ioe) = err.downcast_ref::<io::Error>() {
            kind = ioe.kind();
            break;
        }
        cur = err.source();
    }
    io::Error::new(kind, error_chain(e))
}

/// A request body.
pub(crate) enum Payload {
    /// No body.
    Empty,
    /// A JSON document.
    Json(Vec<u8>),
    /// Raw bytes, streamed (`application/octet-stream`).
    Octets(ReqBody),
}

impl Payload {
    /// Serializes `value` as a JSON body.
    pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        serde_json::to_vec(value)
            .map(Payload::Json)
            .map_err(|e| ClientError::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))
    }
}

enum Transport {
    Unix(Client<UnixConnector, ReqBody>),
    Tcp(Client<HttpConnector, ReqBody>),
    /// Through a relay; every route is prefixed with `prefix`.
    Relay {
        relay: Arc<dyn Relay>,
        prefix: String,
    },
}

struct Inner {
    endpoint: Endpoint,
    /// `Bearer <token>`, or why the token cannot be put in a header.
    auth: std::result::Result<Option<HeaderValue>, String>,
    /// Header the token goes in: `Authorization`, or [`RELAYED_AUTHORIZATION`] through a relay.
    auth_header: HeaderName,
    transport: Transport,
}

/// `Bearer <token>` as a sensitive header value, or why it cannot be one.
fn bearer(token: Option<String>) -> std::result::Result<Option<HeaderValue>, String> {
    match token {
        None => Ok(None),
        Some(t) => match HeaderValue::from_str(&format!("Bearer {}", t.trim())) {
            Ok(mut v) => {
                v.set_sensitive(true);
                Ok(Some(v))
            }
            Err(_) => Err("the agent token contains characters not allowed in a header".into()),
        },
    }
}

/// Handle on a node agent. Cheap to clone (shares one connection pool); all methods are async and
/// need a tokio runtime.
#[derive(Clone)]
pub struct AgentClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("endpoint", &self.inner.endpoint)
            .field("token", &matches!(self.inner.auth, Ok(Some(_))))
            .finish()
    }
}

impl AgentClient {
    /// A client of the agent at `endpoint`, sending `Authorization: Bearer <token>` when a token
    /// is given. Connects lazily: errors surface on the first call.
    ///
    /// An [`Endpoint::Relayed`] has no transport of its own: use [`AgentClient::relayed`]; here
    /// every call on it fails as unreachable.
    pub fn new(endpoint: Endpoint, token: Option<String>) -> Self {
        let builder = Client::builder(TokioExecutor::new());
        let transport = match &endpoint {
            Endpoint::Unix(_) | Endpoint::Relayed(_) => {
                Transport::Unix(builder.build(UnixConnector))
            }
            Endpoint::Tcp(_) => {
                let mut http = HttpConnector::new();
                http.set_nodelay(true);
                Transport::Tcp(builder.build(http))
            }
        };
        AgentClient {
            inner: Arc::new(Inner {
                endpoint,
                auth: bearer(token),
                auth_header: AUTHORIZATION,
                transport,
            }),
        }
    }

    /// A client of the agent behind `relay`, whose routes all start with `prefix` (e.g.
    /// `/api/v1/namespaces/ms/pods/agent-x:7070/proxy`). `token` goes in
    /// [`RELAYED_AUTHORIZATION`]; `name` says where this is in messages.
    pub fn relayed(
        relay: Arc<dyn Relay>,
        prefix: &str,
        token: Option<String>,
        name: impl Into<String>,
    ) -> Self {
        AgentClient {
            inner: Arc::new(Inner {
                endpoint: Endpoint::Relayed(name.into()),
                auth: bearer(token),
                auth_header: HeaderName::from_static(RELAYED_AUTHORIZATION),
                transport: Transport::Relay {
                    relay,
                    prefix: prefix.trim_end_matches('/').to_string(),
                },
            }),
        }
    }

    /// A client of the local agent whose state directory is `dir`: socket `dir/agent.sock`,
    /// token read from `dir/agent.token`. A missing token file means the agent never started
    /// there and yields [`ClientError::Unreachable`].
    pub fn from_state_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let endpoint = Endpoint::Unix(dir.join("agent.sock"));
        let token_path = dir.join("agent.token");
        let token = match std::fs::read_to_string(&token_path) {
            Ok(t) => t.trim().to_string(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ClientError::Unreachable {
                    endpoint,
                    source: Box::new(io::Error::new(
                        e.kind(),
                        format!("no token file {}", token_path.display()),
                    )),
                });
            }
            Err(e) => {
                return Err(ClientError::Io(io::Error::new(
                    e.kind(),
                    format!("reading {}: {e}", token_path.display()),
                )));
            }
        };
        Ok(Self::new(endpoint, Some(token)))
    }

    /// Where this client connects.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    fn auth(&self) -> Result<Option<HeaderValue>> {
        self.inner
            .auth
            .clone()
            .map_err(|m| ClientError::Io(io::Error::new(io::ErrorKind::InvalidInput, m)))
    }

    fn unreachable(&self, source: io::Error) -> ClientError {
        ClientError::Unreachable {
            endpoint: self.inner.endpoint.clone(),
            source: Box::new(source),
        }
    }

    fn uri(&self, path_and_query: &str) -> Result<Uri> {
        let s = match (&self.inner.transport, &self.inner.endpoint) {
            (Transport::Relay { prefix, .. }, _) => format!("{prefix}{path_and_query}"),
            (_, Endpoint::Unix(sock)) => unix_uri(sock, path_and_query),
            (_, Endpoint::Tcp(addr)) => format!("http://{addr}{path_and_query}"),
            (_, Endpoint::Relayed(_)) => {
                return Err(self.unreachable(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a relayed endpoint needs AgentClient::relayed",
                )))
            }
        };
        s.parse().map_err(|e| {
            ClientError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot build a request URL for {}: {e}",
                    self.inner.endpoint
                ),
            ))
        })
    }

    /// Sends a request (with the bearer token if `auth`), whatever the answer's status.
    async fn round_trip(
        &self,
        method: Method,
        path_and_query: &str,
        payload: Payload,
        auth: bool,
    ) -> Result<Response<Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(self.uri(path_and_query)?);
        if auth {
            if let Some(auth) = self.auth()? {
                req = req.header(&self.inner.auth_header, auth);
            }
        }
        let body: ReqBody = match payload {
            Payload::Empty => Empty::new().map_err(|never| match never {}).boxed_unsync(),
            Payload::Json(v) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(v))
                    .map_err(|never| match never {})
                    .boxed_unsync()
            }
            Payload::Octets(b) => {
                req = req.header(CONTENT_TYPE, "application/octet-stream");
                b
            }
        };
        let req = req.body(body).map_err(|e| {
            ClientError::Io(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
        })?;
        let result = match &self.inner.transport {
            Transport::Unix(c) => c.request(req).await,
            Transport::Tcp(c) => c.request(req).await,
            Transport::Relay { relay, .. } => {
                return relay.send(req).await.map_err(|e| {
                    let io = flatten_io(e.as_ref());
                    match e.downcast_ref::<hyper_util::client::legacy::Error>() {
                        Some(h) if !h.is_connect() => ClientError::Io(io),
                        _ => self.unreachable(io),
                    }
                })
            }
        };
        result.map_err(|e| {
            if e.is_connect() {
                self.unreachable(flatten_io(&e))
            } else {
                ClientError::Io(flatten_io(&e))
            }
        })
    }

    /// Sends a request; returns the response if its status is 2xx, else the decoded error.
    pub(crate) async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        payload: Payload,
    ) -> Result<Response<Incoming>> {
        let resp = self
            .round_trip(method, path_and_query, payload, true)
            .await?;
        check_status(resp).await
    }

    /// `method path` with a JSON body (or none); decodes a JSON answer.
    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        payload: Payload,
    ) -> Result<T> {
        let resp = self.send(method, path_and_query, payload).await?;
        read_json(resp).await
    }

    /// `method path` with a JSON body (or none); discards the (normally empty) answer.
    pub(crate) async fn call_unit(
        &self,
        method: Method,
        path_and_query: &str,
        payload: Payload,
    ) -> Result<()> {
        let resp = self.send(method, path_and_query, payload).await?;
        // Drain so the connection goes back to the pool.
        resp.into_body().collect().await.map_err(body_error)?;
        Ok(())
    }

    /// `GET /healthz` (no auth): `Ok` if the agent is up and answering.
    pub async fn health(&self) -> Result<()> {
        let resp = self
            .round_trip(Method::GET, "/healthz", Payload::Empty, false)
            .await?;
        let resp = check_status(resp).await?;
        resp.into_body().collect().await.map_err(body_error)?;
        Ok(())
    }

    /// Opens a WebSocket on `path_and_query`, with the bearer token on the upgrade request.
    /// A refused upgrade decodes the agent's error like any other response.
    pub(crate) async fn websocket(&self, path_and_query: &str) -> Result<WsStream> {
        if let Transport::Relay { .. } = &self.inner.transport {
            return self.relayed_websocket(path_and_query).await;
        }
        let url = format!("ws://{}{path_and_query}", self.inner.endpoint.authority());
        let mut req = url.into_client_request().map_err(|e| {
            ClientError::Io(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
        })?;
        if let Some(auth) = self.auth()? {
            req.headers_mut().insert(AUTHORIZATION, auth);
        }
        let io: Box<dyn WsIo> = match &self.inner.endpoint {
            Endpoint::Relayed(_) => unreachable!("handled by relayed_websocket"),
            Endpoint::Unix(path) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| self.unreachable(e))?,
            ),
            Endpoint::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| self.unreachable(e))?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
        };
        match tokio_tungstenite::client_async(req, io).await {
            Ok((ws, _response)) => Ok(ws),
            Err(WsError::Http(resp)) => Err(decode_error(
                resp.status(),
                resp.body().as_deref().unwrap_or_default(),
            )),
            Err(e) => Err(ws_error(e)),
        }
    }
}

impl AgentClient {
    /// A WebSocket through the relay: an HTTP/1.1 upgrade request sent like any other, then the
    /// upgraded connection.
    async fn relayed_websocket(&self, path_and_query: &str) -> Result<WsStream> {
        use hyper::header::{CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
        use tokio_tungstenite::tungstenite::handshake::client::generate_key;
        use tokio_tungstenite::tungstenite::protocol::Role;
        let key = generate_key();
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(self.uri(path_and_query)?)
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "websocket")
            .header(SEC_WEBSOCKET_VERSION, "13")
            .header(SEC_WEBSOCKET_KEY, &key);
        if let Some(auth) = self.auth()? {
            req = req.header(&self.inner.auth_header, auth);
        }
        let req = req
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .map_err(|e| {
                ClientError::Io(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
            })?;
        let Transport::Relay { relay, .. } = &self.inner.transport else {
            unreachable!("called for relays only")
        };
        let resp = relay
            .send(req)
            .await
            .map_err(|e| self.unreachable(flatten_io(e.as_ref())))?;
        if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status();
            let body = read_capped(resp.into_body(), MAX_ERROR_BODY).await?;
            return Err(decode_error(status, &body));
        }
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        if resp
            .headers()
            .get("sec-websocket-accept")
            .map(|v| v.as_bytes())
            != Some(accept.as_bytes())
        {
            return Err(ClientError::WebSocket(
                "the relay answered the upgrade without a valid Sec-WebSocket-Accept".into(),
            ));
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .map_err(|e| ClientError::Io(flatten_io(&e)))?;
        let io: Box<dyn WsIo> = Box::new(hyper_util::rt::TokioIo::new(upgraded));
        Ok(WebSocketStream::from_raw_socket(io, Role::Client, None).await)
    }
}

/// Byte stream a WebSocket runs over (unix or TCP).
pub(crate) trait WsIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> WsIo for T {}

/// A WebSocket to the agent.
pub(crate) type WsStream = WebSocketStream<Box<dyn WsIo>>;

/// Maps a WebSocket error: I/O stays I/O, the rest is [`ClientError::WebSocket`].
pub(crate) fn ws_error(e: WsError) -> ClientError {
    match e {
        WsError::Io(e) => ClientError::Io(e),
        other => ClientError::WebSocket(other.to_string()),
    }
}

/// Passes a 2xx response through; decodes any other into the agent's error.
async fn check_status(resp: Response<Incoming>) -> Result<Response<Incoming>> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = read_capped(resp.into_body(), MAX_ERROR_BODY).await?;
    Err(decode_error(status, &body))
}

/// Reads a whole JSON response.
pub(crate) async fn read_json<T: DeserializeOwned>(resp: Response<Incoming>) -> Result<T> {
    let body = resp.into_body().collect().await.map_err(body_error)?;
    let bytes = body.to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        ClientError::Protocol(format!(
            "unexpected response body ({e}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(256)])
        ))
    })
}

/// Reads at most `cap` bytes of a body (the rest is dropped with the connection).
async fn read_capped(mut body: Incoming, cap: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while out.len() < cap {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(body_error(e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let take = data.len().min(cap - out.len());
                    out.extend_from_slice(&data[..take]);
                }
            }
        }
    }
    Ok(out)
}

/// Turns a body I/O error from hyper into an `io::Error`.
pub(crate) fn body_error(e: hyper::Error) -> ClientError {
    ClientError::Io(flatten_io(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_paths_are_encoded() {
        assert_eq!(sandbox_path("my-box-1", ""), "/v1/sandboxes/my-box-1");
        assert_eq!(sandbox_path("a", "/exec/ws"), "/v1/sandboxes/a/exec/ws");
        assert_eq!(
            sandbox_path("../x", "/stop"),
            "/v1/sandboxes/%2E%2E%2Fx/stop"
        );
        assert_eq!(
            sandbox_path("a?b#c d%", ""),
            "/v1/sandboxes/a%3Fb%23c%20d%25"
        );
        assert_eq!(sandbox_path("é", ""), "/v1/sandboxes/%C3%A9");
    }

    #[test]
    fn queries_are_encoded() {
        let p = with_query(
            sandbox_path("a", "/fs/file"),
            &[("path", "/tmp/x y+z&w=1?#%.txt")],
        );
        assert_eq!(
            p,
            "/v1/sandboxes/a/fs/file?path=/tmp/x%20y%2Bz%26w%3D1%3F%23%25.txt"
        );
        let p = with_query(
            "/x".into(),
            &[("path", "/é"), ("mode", "420"), ("append", "false")],
        );
        assert_eq!(p, "/x?path=/%C3%A9&mode=420&append=false");
        assert_eq!(with_query("/x".into(), &[]), "/x");
    }

    #[test]
    fn urls_parse_for_both_transports() {
        let c = AgentClient::new(Endpoint::Unix("/run/ms/agent.sock".into()), None);
        let u = c
            .uri(&with_query("/v1/x".into(), &[("path", "/a b")]))
            .unwrap();
        assert_eq!(u.scheme_str(), Some("unix"));
        assert_eq!(u.host(), Some("2f72756e2f6d732f6167656e742e736f636b"));
        assert_eq!(u.path(), "/v1/x");
        assert_eq!(u.query(), Some("path=/a%20b"));
        // Same encoding as hyperlocal's own helper.
        let theirs: Uri = hyperlocal::Uri::new("/run/ms/agent.sock", "/v1/x").into();
        assert_eq!(c.uri("/v1/x").unwrap(), theirs);

        let c = AgentClient::new(Endpoint::Tcp("127.0.0.1:7070".into()), Some("t".into()));
        let u = c.uri("/v1/info").unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:7070/v1/info");
        assert!(AgentClient::new(Endpoint::Tcp("bad host".into()), None)
            .uri("/")
            .is_err());
    }

    #[test]
    fn bad_token_is_an_error_not_a_panic() {
        let c = AgentClient::new(Endpoint::Tcp("h:1".into()), Some("a\nb".into()));
        assert!(matches!(c.auth(), Err(ClientError::Io(_))));
        let c = AgentClient::new(Endpoint::Tcp("h:1".into()), Some(" tok\n".into()));
        assert_eq!(c.auth().unwrap().unwrap(), "Bearer tok");
    }

    #[test]
    fn error_chain_joins_sources() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
        let flat = flatten_io(&e);
        assert_eq!(flat.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(flat.to_string(), "client error (Connect): refused");
    }
}
