//! Bearer-token authentication. The token lives in a 0600 file in the state directory, created
//! with 32 random bytes on first start.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use warp::Filter;

use crate::cluster::authz::{self, ClusterAuth, Denied};
use crate::cluster::names;
use crate::sandbox::SandboxManager;

/// The API token.
#[derive(Clone)]
pub struct Token(Arc<String>);

impl Token {
    pub fn new(s: String) -> Self {
        Token(Arc::new(s))
    }

    /// The token itself (for this agent's own in-process clients).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Rejection: missing or wrong token.
#[derive(Debug)]
pub struct Unauthorized;
impl warp::reject::Reject for Unauthorized {}

/// Read the token file, or create it (0600) with a fresh random token.
pub fn load_or_create_token(path: &Path) -> std::io::Result<Token> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let t = existing.trim().to_string();
        if !t.is_empty() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            return Ok(Token::new(t));
        }
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    crate::private_file::write(path, token.as_bytes())?;
    Ok(Token::new(token))
}

/// Rejection: a Kubernetes user the cluster does not allow here.
#[derive(Debug)]
pub struct Forbidden(pub String);
impl warp::reject::Reject for Forbidden {}

/// Who may call the API: the holder of the agent's token (everything), and in cluster mode
/// Kubernetes users that RBAC allows into one sandbox (see [`crate::cluster::authz`]).
#[derive(Clone)]
pub struct Auth {
    pub token: Token,
    pub cluster: Option<Arc<ClusterAuth>>,
    pub manager: Arc<SandboxManager>,
}

/// Filter passing only authenticated and authorised requests.
pub fn require(auth: Auth) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>(
            microsandbox_wire::api::RELAYED_AUTHORIZATION,
        ))
        .and_then(
            move |method: warp::http::Method,
                  path: warp::path::FullPath,
                  direct: Option<String>,
                  relayed: Option<String>| {
                let auth = auth.clone();
                async move {
                    // Through the API server's pod proxy the token comes in the relayed header:
                    // the API server consumes `Authorization` (its own credentials).
                    let header = direct.or(relayed);
                    let presented = header
                        .as_deref()
                        .and_then(|h| h.strip_prefix("Bearer "))
                        .map(str::trim);
                    match presented {
                        Some(t) if auth.token.matches(t) => Ok(()),
                        Some(t) if auth.cluster.is_some() => {
                            kubernetes_user(&auth, t, method.as_str(), path.as_str()).await
                        }
                        _ => Err(warp::reject::custom(Unauthorized)),
                    }
                }
            },
        )
        .untuple_one()
}

async fn kubernetes_user(
    auth: &Auth,
    token: &str,
    method: &str,
    path: &str,
) -> Result<(), warp::Rejection> {
    let Some(cluster) = &auth.cluster else {
        return Err(warp::reject::custom(Unauthorized));
    };
    let deny = |d: Denied| match d {
        Denied::Unauthenticated => warp::reject::custom(Unauthorized),
        other => warp::reject::custom(Forbidden(other.to_string())),
    };
    let sandbox =
        authz::sandbox_scope(method, path).ok_or_else(|| deny(Denied::RouteNotAllowed))?;
    let object = auth
        .manager
        .get(sandbox)
        .await
        .ok()
        .and_then(|info| info.labels.get(names::LABEL_OBJECT).cloned())
        .ok_or_else(|| deny(Denied::NotAClusterSandbox(sandbox.to_string())))?;
    let (namespace, name) = object
        .split_once('/')
        .ok_or_else(|| deny(Denied::NotAClusterSandbox(sandbox.to_string())))?;
    cluster.check(token, namespace, name).await.map_err(deny)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        let a = load_or_create_token(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create_token(&p).unwrap();
        assert!(b.matches(&a.0));
        assert!(!a.matches("wrong"));
        assert!(!a.matches(""));
    }
}
