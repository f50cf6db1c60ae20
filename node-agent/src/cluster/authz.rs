//! Kubernetes users on the node-agent API (cluster mode), the way the kubelet serves `exec`:
//! a bearer token that is not the agent's own is checked with a TokenReview, and the user must
//! be allowed `create` on the `sandboxes/exec` subresource of the Sandbox object the sandbox
//! belongs to (a SubjectAccessReview). RBAC thus decides who may run code in which sandbox.
//! Kubernetes users reach only the data plane of one sandbox (exec, files, metrics, get, the
//! secret violations);
//! lifecycle goes through the Sandbox object, so create/stop/remove stay with the local token.
//! Answers are cached briefly (keyed by a hash of the token, never the token itself).

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long an answer is reused.
const CACHE_FOR: Duration = Duration::from_secs(30);
/// Cached answers kept at most (the cache is cleared when full).
const CACHE_MAX: usize = 4096;

/// The sandbox a Kubernetes user may reach through `method path`, or `None` when the route is
/// for the agent's own token only. Pure.
pub fn sandbox_scope<'a>(method: &str, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix("/v1/sandboxes/")?;
    let (name, sub) = match rest.split_once('/') {
        Some((n, s)) => (n, s),
        None => (rest, ""),
    };
    if name.is_empty() {
        return None;
    }
    let ok = match (method, sub) {
        ("GET", "")
        | ("GET", "metrics")
        | ("GET", "logs")
        | ("GET", "secrets/violations")
        | ("POST", "exec")
        | ("GET", "exec/ws") => true,
        (_, s) => s.starts_with("fs/"),
    };
    ok.then_some(name)
}

/// Why a Kubernetes user was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("the bearer token is neither this agent's nor a valid Kubernetes token")]
    Unauthenticated,
    #[error("Kubernetes users may only exec, use files and read metrics and logs of a sandbox; manage it through its Sandbox object")]
    RouteNotAllowed,
    #[error("sandbox {0:?} does not belong to a Sandbox object")]
    NotAClusterSandbox(String),
    #[error("{user} may not create sandboxes/exec on Sandbox {namespace}/{name}")]
    Forbidden {
        user: String,
        namespace: String,
        name: String,
    },
    #[error("cannot check the token with the Kubernetes API: {0}")]
    Unavailable(String),
}

/// A map whose entries expire after [`CACHE_FOR`]; cleared when it reaches [`CACHE_MAX`].
struct Expiring<K, V> {
    map: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: std::hash::Hash + Eq, V: Clone> Expiring<K, V> {
    fn new() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }

    async fn get(&self, k: &K) -> Option<V> {
        self.map
            .lock()
            .await
            .get(k)
            .filter(|(_, t)| t.elapsed() < CACHE_FOR)
            .map(|(v, _)| v.clone())
    }

    async fn put(&self, k: K, v: V) {
        let mut map = self.map.lock().await;
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(k, (v, Instant::now()));
    }
}

/// SHA-256 of a token: the cache key, so no token is kept in memory longer than a request.
type TokenHash = [u8; 32];

/// Token and access reviews against the API server, cached.
pub struct ClusterAuth {
    client: kube::Client,
    users: Expiring<TokenHash, Option<UserInfo>>,
    access: Expiring<(TokenHash, String, String), bool>,
}

#[derive(Debug, Clone)]
struct UserInfo {
    name: String,
    uid: Option<String>,
    groups: Vec<String>,
    extra: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

impl ClusterAuth {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            users: Expiring::new(),
            access: Expiring::new(),
        }
    }

    /// Whether `token` may reach sandbox `object` (`namespace`, `name` of its Sandbox).
    pub async fn check(&self, token: &str, namespace: &str, name: &str) -> Result<(), Denied> {
        let key: TokenHash = Sha256::digest(token.as_bytes()).into();
        let user = self.user(key, token).await?;
        let access_key = (key, namespace.to_string(), name.to_string());
        let allowed = match self.access.get(&access_key).await {
            Some(ok) => ok,
            None => {
                let ok = self.review_access(&user, namespace, name).await?;
                self.access.put(access_key, ok).await;
                ok
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(Denied::Forbidden {
                user: user.name,
                namespace: namespace.into(),
                name: name.into(),
            })
        }
    }

    async fn user(&self, key: TokenHash, token: &str) -> Result<UserInfo, Denied> {
        let user = match self.users.get(&key).await {
            Some(u) => u,
            None => {
                let u = self.review_token(token).await?;
                self.users.put(key, u.clone()).await;
                u
            }
        };
        user.ok_or(Denied::Unauthenticated)
    }

    async fn review_token(&self, token: &str) -> Result<Option<UserInfo>, Denied> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let out = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Denied::Unavailable(e.to_string()))?;
        let Some(status) = out.status.filter(|s| s.authenticated == Some(true)) else {
            return Ok(None);
        };
        let user = status.user.unwrap_or_default();
        Ok(Some(UserInfo {
            name: user.username.unwrap_or_default(),
            uid: user.uid,
            groups: user.groups.unwrap_or_default(),
            extra: user.extra,
        }))
    }

    async fn review_access(
        &self,
        user: &UserInfo,
        namespace: &str,
        name: &str,
    ) -> Result<bool, Denied> {
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: user.uid.clone(),
                groups: Some(user.groups.clone()),
                extra: user.extra.clone(),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(microsandbox_crds::GROUP.into()),
                    resource: Some("sandboxes".into()),
                    subresource: Some("exec".into()),
                    verb: Some("create".into()),
                    namespace: Some(namespace.into()),
                    name: Some(name.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let out = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Denied::Unavailable(e.to_string()))?;
        Ok(out.status.is_some_and(|s| s.allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_data_plane_of_one_sandbox() {
        for (m, p, want) in [
            ("GET", "/v1/sandboxes/web-1", Some("web-1")),
            ("POST", "/v1/sandboxes/web-1/exec", Some("web-1")),
            ("GET", "/v1/sandboxes/web-1/exec/ws", Some("web-1")),
            ("GET", "/v1/sandboxes/web-1/metrics", Some("web-1")),
            (
                "GET",
                "/v1/sandboxes/web-1/secrets/violations",
                Some("web-1"),
            ),
            ("GET", "/v1/sandboxes/web-1/fs/file", Some("web-1")),
            ("PUT", "/v1/sandboxes/web-1/fs/file", Some("web-1")),
            ("POST", "/v1/sandboxes/web-1/fs/mkdir", Some("web-1")),
            ("DELETE", "/v1/sandboxes/web-1", None),
            ("POST", "/v1/sandboxes/web-1/stop", None),
            ("POST", "/v1/sandboxes/web-1/kill", None),
            ("POST", "/v1/sandboxes/web-1/drain", None),
            ("GET", "/v1/sandboxes/web-1/lease", None),
            ("GET", "/v1/sandboxes", None),
            ("POST", "/v1/sandboxes", None),
            ("GET", "/v1/sandboxes/", None),
            ("GET", "/v1/metrics", None),
            ("POST", "/v1/images/pull", None),
            ("GET", "/v1/info", None),
        ] {
            assert_eq!(sandbox_scope(m, p), want, "{m} {p}");
        }
    }
}
