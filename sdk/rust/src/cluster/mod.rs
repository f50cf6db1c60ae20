//! Cluster mode: the same API, with sandboxes as Kubernetes `Sandbox` objects.
//!
//! ```no_run
//! use microsandbox::{Cluster, Sandbox};
//!
//! # async fn demo() -> microsandbox::Result<()> {
//! let cluster = Cluster::new().namespace("jobs").connect().await?;
//! let sb = Sandbox::builder("job-1").image("python").cluster(&cluster).create().await?;
//! println!("{}", sb.exec("python", ["-c", "print(1)"]).await?.stdout_str());
//! sb.remove().await?;
//! # Ok(()) }
//! ```
//!
//! Creating posts a `Sandbox` object, watches it until Ready (no polling) and deletes it again
//! if that fails, times out or the future is dropped. The microsandbox operator schedules it
//! onto a node; exec, files and metrics then go to that node's agent, authenticated with the
//! user's own bearer token, which the agent checks against RBAC (`create` on
//! `sandboxes/exec`). A kubeconfig that authenticates with client certificates only has no
//! token to present (use one: `kubectl create token`).
//!
//! The agent is reached as [`AgentAccess`] says: `Direct` to `status.agentEndpoint`, `Proxy`
//! through the API server's pod proxy (`status.agentProxy`, same TLS connection and
//! credentials as every other Kubernetes call; needs `get`/`create` on `pods/proxy` of the
//! microsandbox namespace), or `Auto`: direct inside a pod, else the proxy when offered.
//!
//! Secrets become, per secret, a core `Secret` holding the value and a `Secret`
//! (microsandbox.dev) naming it, both owned by the Sandbox; the operator seals the values to
//! the node-agent that runs it. The Python and Node.js SDKs' cluster mode is this module.

mod connection;
pub mod object;
mod relay;

pub use connection::ClusterConnection;

use std::path::PathBuf;
use std::time::Duration;

/// How exec and files reach the node-agent of a cluster sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AgentAccess {
    /// Direct inside a pod, else the API server proxy when the agent offers it.
    #[default]
    Auto,
    /// Straight to `status.agentEndpoint` (needs a route to the node network).
    Direct,
    /// Through the API server's pod proxy (`status.agentProxy`).
    Proxy,
}

impl std::str::FromStr for AgentAccess {
    type Err = ClusterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(AgentAccess::Auto),
            "direct" => Ok(AgentAccess::Direct),
            "proxy" => Ok(AgentAccess::Proxy),
            other => Err(ClusterError::new(
                ClusterErrorKind::Config,
                format!("agent access must be auto, direct or proxy, not {other:?}"),
            )),
        }
    }
}

/// Where cluster-mode sandboxes live; [`Cluster::connect`] opens it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cluster {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    /// How long creating waits for Ready (default 120 s).
    pub ready_timeout: Duration,
    pub agent_access: AgentAccess,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            kubeconfig: None,
            context: None,
            namespace: None,
            ready_timeout: Duration::from_secs(120),
            agent_access: AgentAccess::Auto,
        }
    }
}

impl Cluster {
    /// As kubectl: `$KUBECONFIG`, `~/.kube/config`, then the pod's ServiceAccount; the
    /// context's namespace.
    pub fn new() -> Self {
        Self::default()
    }

    /// This kubeconfig file instead.
    pub fn kubeconfig(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }

    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    pub fn agent_access(mut self, access: AgentAccess) -> Self {
        self.agent_access = access;
        self
    }

    /// The cluster the environment asks for: `MICROSANDBOX_MODE=cluster` (with `KUBECONFIG`,
    /// `MICROSANDBOX_CONTEXT`, `MICROSANDBOX_NAMESPACE`, `MICROSANDBOX_READY_TIMEOUT` seconds,
    /// `MICROSANDBOX_AGENT_ACCESS`), else `None` (local mode).
    pub fn from_env() -> Result<Option<Cluster>, ClusterError> {
        Self::from_env_with(&|k| std::env::var(k).ok())
    }

    /// [`Cluster::from_env`] over these variables. Pure.
    pub fn from_env_with(
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Cluster>, ClusterError> {
        let config = |m: String| ClusterError::new(ClusterErrorKind::Config, m);
        let mode = env("MICROSANDBOX_MODE").unwrap_or_default();
        match mode.trim().to_ascii_lowercase().as_str() {
            "" | "local" => return Ok(None),
            "cluster" => {}
            other => {
                return Err(config(format!(
                    "MICROSANDBOX_MODE must be 'local' or 'cluster', not {other:?}"
                )))
            }
        }
        let mut c = Cluster::new();
        if let Some(t) = env("MICROSANDBOX_READY_TIMEOUT").filter(|t| !t.is_empty()) {
            let secs: f64 = t.parse().map_err(|_| {
                config(format!(
                    "MICROSANDBOX_READY_TIMEOUT must be seconds, not {t:?}"
                ))
            })?;
            if !(secs.is_finite() && secs > 0.0) {
                return Err(config(format!(
                    "MICROSANDBOX_READY_TIMEOUT must be positive, not {t:?}"
                )));
            }
            c.ready_timeout = Duration::from_secs_f64(secs);
        }
        c.agent_access = env("MICROSANDBOX_AGENT_ACCESS")
            .unwrap_or_default()
            .parse()?;
        c.context = env("MICROSANDBOX_CONTEXT").filter(|s| !s.is_empty());
        c.namespace = env("MICROSANDBOX_NAMESPACE").filter(|s| !s.is_empty());
        Ok(Some(c))
    }

    /// Connect (reads the kubeconfig; no request is made yet).
    pub async fn connect(&self) -> Result<ClusterConnection, ClusterError> {
        ClusterConnection::open(self.clone()).await
    }
}

/// What kind of cluster-mode failure (the Python SDK maps these to its exception classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
#[non_exhaustive]
pub enum ClusterErrorKind {
    /// No usable kubeconfig, context or token.
    Config,
    /// RBAC refused.
    Forbidden,
    AlreadyExists,
    NotFound,
    /// The Sandbox has no running sandbox on a node (yet, or any more).
    NotRunning,
    VolumeAlreadyExists,
    VolumeNotFound,
    /// The API server (or the CRD's validation) refused the object.
    Invalid,
    /// Something cluster mode cannot do (bind mounts of this machine, copy patches, ports).
    Unsupported,
    /// No node can take it (by the ready timeout).
    Unschedulable,
    /// It failed on its node.
    Failed,
    /// Not Ready by the ready timeout.
    Timeout,
    /// Any other API or watch failure.
    Api,
}

impl ClusterErrorKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A cluster-mode failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ClusterError {
    pub kind: ClusterErrorKind,
    pub message: String,
}

impl ClusterError {
    pub fn new(kind: ClusterErrorKind, message: impl Into<String>) -> Self {
        ClusterError {
            kind,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_selects_the_mode() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(Cluster::from_env_with(&env(&[])).unwrap(), None);
        assert_eq!(
            Cluster::from_env_with(&env(&[("MICROSANDBOX_MODE", "local")])).unwrap(),
            None
        );
        let c = Cluster::from_env_with(&env(&[
            ("MICROSANDBOX_MODE", "Cluster"),
            ("MICROSANDBOX_NAMESPACE", "jobs"),
            ("MICROSANDBOX_READY_TIMEOUT", "2.5"),
            ("MICROSANDBOX_AGENT_ACCESS", "proxy"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.namespace.as_deref(), Some("jobs"));
        assert_eq!(c.ready_timeout, Duration::from_millis(2500));
        assert_eq!(c.agent_access, AgentAccess::Proxy);
        for bad in [
            &[("MICROSANDBOX_MODE", "k8s")][..],
            &[
                ("MICROSANDBOX_MODE", "cluster"),
                ("MICROSANDBOX_READY_TIMEOUT", "soon"),
            ],
            &[
                ("MICROSANDBOX_MODE", "cluster"),
                ("MICROSANDBOX_READY_TIMEOUT", "-1"),
            ],
            &[
                ("MICROSANDBOX_MODE", "cluster"),
                ("MICROSANDBOX_AGENT_ACCESS", "ssh"),
            ],
        ] {
            let e = Cluster::from_env_with(&env(bad)).unwrap_err();
            assert_eq!(e.kind, ClusterErrorKind::Config, "{bad:?}");
        }
        assert_eq!(ClusterErrorKind::AlreadyExists.as_str(), "already_exists");
    }
}
