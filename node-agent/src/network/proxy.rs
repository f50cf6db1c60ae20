//! The egress proxy of a sandbox that has secrets. nftables redirects the sandbox's TCP to
//! ports 443 and 80 here (the original destination comes from conntrack, `SO_ORIGINAL_DST`):
//!
//! - HTTPS is terminated with a certificate for the requested server name signed by the
//!   sandbox's CA (which the guest trusts), then re-encrypted to the real server, whose
//!   certificate must verify for that name against the node's roots (`--upstream-ca` adds
//!   some). In each request a secret's placeholder is replaced by its value when that verified
//!   name is on the secret's `allow_hosts`; a placeholder going anywhere else blocks the request
//!   (403) and is recorded as a [`SecretViolation`].
//! - Plain HTTP is relayed as is, but never carries a value: any placeholder blocks.
//!
//! The proxy connects upstream on the sandbox's behalf, so it first applies the same egress
//! decision nftables would ([`Egress::permits`]). Headers and the request target are rewritten;
//! bodies pass untouched (a placeholder in a body reaches the server as the placeholder).

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use microsandbox_wire::api::SecretViolation;
use openssl::ssl::{NameType, Ssl, SslAcceptor, SslConnector, SslMethod};
use std::net::{SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::{TcpListener, TcpStream};
use tokio_openssl::SslStream;

use super::egress::Egress;
use super::host::Uplink;
use super::secrets::{Rewrite, SandboxCa, Secrets};
use super::violations::Violations;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, hyper::Error>;

/// Request bodies up to this length are scanned for placeholders.
const MAX_SCANNED_BODY: u64 = 1 << 20;

/// One sandbox's proxy.
pub struct Proxy {
    pub sandbox: String,
    pub egress: Arc<Egress>,
    pub secrets: Secrets,
    pub ca: Arc<SandboxCa>,
    pub upstream: SslConnector,
    pub uplink: Uplink,
    pub violations: Arc<Mutex<Violations>>,
}

fn text(status: StatusCode, msg: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    r
}

/// The destination a redirected connection was meant for.
fn original_dst(conn: &TcpStream) -> std::io::Result<SocketAddrV4> {
    let sa = nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::OriginalDst)?;
    Ok(SocketAddrV4::new(
        u32::from_be(sa.sin_addr.s_addr).into(),
        u16::from_be(sa.sin_port),
    ))
}

impl Proxy {
    /// Accepts redirected connections until dropped; `tls` for the HTTPS port.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: bool) {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.clone().handle(conn, tls).await {
                    tracing::debug!(sandbox = %me.sandbox, error = %e, "proxied connection ended");
                }
            });
        }
    }

    async fn handle(self: Arc<Self>, conn: TcpStream, tls: bool) -> Result<(), BoxError> {
        let orig = original_dst(&conn)?;
        if !self.egress.permits(*orig.ip(), Instant::now()) {
            // What nftables does to the same packets: nothing gets through.
            return Ok(());
        }
        let _ = conn.set_nodelay(true);
        if !tls {
            let me = self.clone();
            let service =
                hyper::service::service_fn(move |req| me.clone().forward(req, None, orig));
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(conn), service)
                .with_upgrades()
                .await?;
            return Ok(());
        }
        let ca = self.ca.clone();
        let fallback = orig.ip().to_string();
        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
        acceptor.set_servername_callback(move |ssl, _alert| {
            let name = ssl
                .servername(NameType::HOST_NAME)
                .map(str::to_string)
                .unwrap_or_else(|| fallback.clone());
            let (cert, key) = ca
                .leaf(&name)
                .map_err(|_| openssl::ssl::SniError::ALERT_FATAL)?;
            ssl.set_certificate(&cert)
                .and_then(|()| ssl.set_private_key(&key))
                .map_err(|_| openssl::ssl::SniError::ALERT_FATAL)
        });
        // HTTP/1.1 only: the guest's client must not pick h2.
        acceptor.set_alpn_select_callback(|_, client| {
            openssl::ssl::select_next_proto(b"\x08http/1.1", client)
                .ok_or(openssl::ssl::AlpnError::NOACK)
        });
        let ssl = Ssl::new(acceptor.build().context())?;
        let mut stream = SslStream::new(ssl, conn)?;
        Pin::new(&mut stream).accept().await?;
        let host = stream
            .ssl()
            .servername(NameType::HOST_NAME)
            .map(str::to_string)
            .unwrap_or_else(|| orig.ip().to_string());
        let me = self.clone();
        let service = hyper::service::service_fn(move |req| {
            me.clone().forward(req, Some(host.clone()), orig)
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await?;
        Ok(())
    }

    fn record(&self, env: &str, host: &str, reason: &str) {
        tracing::warn!(sandbox = %self.sandbox, secret = %env, %host, reason, "secret placeholder blocked");
        let mut v = self.violations.lock().unwrap_or_else(|e| e.into_inner());
        v.record(SecretViolation {
            secret: env.to_string(),
            host: host.to_string(),
            reason: reason.to_string(),
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        });
    }

    /// Rewrites one request, or says which secret blocked it.
    fn rewrite(
        &self,
        req: Request<Incoming>,
        host: &str,
        tls: bool,
    ) -> Result<Request<Incoming>, String> {
        let (mut parts, body) = req.into_parts();
        let target = parts.uri.to_string();
        match self.secrets.rewrite(&target, host, tls) {
            Rewrite::Blocked { env } => return Err(env),
            Rewrite::Pass(t) => {
                if t != target {
                    parts.uri = t.parse().map_err(|_| String::new())?;
                }
            }
        }
        for value in parts.headers.values_mut() {
            let Ok(s) = value.to_str() else { continue };
            match self.secrets.rewrite(s, host, tls) {
                Rewrite::Blocked { env } => return Err(env),
                Rewrite::Pass(std::borrow::Cow::Owned(new)) => {
                    let mut v = HeaderValue::from_str(&new).map_err(|_| String::new())?;
                    v.set_sensitive(true);
                    *value = v;
                }
                Rewrite::Pass(_) => {}
            }
        }
        Ok(Request::from_parts(parts, body))
    }

    /// The 403 for a placeholder of secret `env` going to `host`, recorded as a violation.
    fn blocked(&self, env: &str, host: &str, tls: bool) -> Response<Body> {
        let reason = if tls {
            format!("{host} is not on the allowed hosts of secret {env}")
        } else {
            "secrets are only sent over HTTPS".to_string()
        };
        self.record(env, host, &reason);
        text(
            StatusCode::FORBIDDEN,
            format!("microsandbox: blocked: {reason}\n"),
        )
    }

    /// Rewrites the body of a request that declares a length of at most [`MAX_SCANNED_BODY`]
    /// (JSON and form posts carrying a key): placeholders become values for allowed hosts and
    /// block elsewhere, as in headers. Longer or streamed (chunked) bodies pass unscanned: a
    /// placeholder in them reaches the server as the placeholder, never as the value.
    async fn rewrite_body(
        &self,
        req: Request<Incoming>,
        host: &str,
        tls: bool,
    ) -> Result<Result<Request<Body>, String>, hyper::Error> {
        let (mut parts, body) = req.into_parts();
        let declared = parts
            .headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if !declared.is_some_and(|n| n > 0 && n <= MAX_SCANNED_BODY) {
            return Ok(Ok(Request::from_parts(parts, body.boxed())));
        }
        let bytes = body.collect().await?.to_bytes();
        let bytes = match self.secrets.rewrite_bytes(&bytes, host, tls) {
            Err(env) => return Ok(Err(env)),
            Ok(None) => bytes,
            Ok(Some(v)) => {
                parts
                    .headers
                    .insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(v.len()));
                Bytes::from(v)
            }
        };
        let body = Full::new(bytes).map_err(|never| match never {}).boxed();
        Ok(Ok(Request::from_parts(parts, body)))
    }

    async fn forward(
        self: Arc<Self>,
        req: Request<Incoming>,
        sni: Option<String>,
        orig: SocketAddrV4,
    ) -> Result<Response<Body>, hyper::Error> {
        let tls = sni.is_some();
        let host = sni.clone().unwrap_or_else(|| {
            req.headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.rsplit_once(':').map_or(h, |(n, _)| n).to_string())
                .unwrap_or_else(|| orig.ip().to_string())
        });
        let req = match self.rewrite(req, &host, tls) {
            Ok(r) => r,
            Err(env) if env.is_empty() => {
                return Ok(text(
                    StatusCode::BAD_REQUEST,
                    "microsandbox: bad request\n".into(),
                ))
            }
            Err(env) => return Ok(self.blocked(&env, &host, tls)),
        };
        let req = match self.rewrite_body(req, &host, tls).await? {
            Ok(r) => r,
            Err(env) => return Ok(self.blocked(&env, &host, tls)),
        };
        match self.upstream(req, sni.as_deref(), orig).await {
            Ok(resp) => Ok(resp.map(BodyExt::boxed)),
            Err(e) => Ok(text(
                StatusCode::BAD_GATEWAY,
                format!("microsandbox: upstream {host} ({orig}): {e}\n"),
            )),
        }
    }

    async fn upstream(
        &self,
        req: Request<Body>,
        sni: Option<&str>,
        orig: SocketAddrV4,
    ) -> Result<Response<Incoming>, BoxError> {
        let tcp = self.uplink.connect(SocketAddr::V4(orig)).await?;
        match sni {
            Some(name) => {
                let ssl = self.upstream.configure()?.into_ssl(name)?;
                let mut stream = SslStream::new(ssl, tcp)?;
                Pin::new(&mut stream).connect().await?;
                send(TokioIo::new(stream), req).await
            }
            None => send(TokioIo::new(tcp), req).await,
        }
    }
}

async fn send<T>(io: TokioIo<T>, req: Request<Body>) -> Result<Response<Incoming>, BoxError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}

/// The TLS client of the proxy: the node's roots plus `extra` PEM files.
pub fn upstream_connector(extra: &[std::path::PathBuf]) -> Result<SslConnector, BoxError> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_default_verify_paths()?;
    for path in extra {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in openssl::x509::X509::stack_from_pem(&pem)? {
            b.cert_store_mut().add_cert(cert)?;
        }
    }
    b.set_alpn_protos(b"\x08http/1.1")?;
    Ok(b.build())
}
