//! Cluster mode (`serve --cluster`): the agent registers its node with a Lease, runs the
//! Sandboxes the operator binds to it and reports on them. Everything goes through the same
//! [`SandboxManager`] as the local API, so both see the same sandboxes.

pub mod authz;
pub mod lease;
pub mod names;
pub mod report;
pub mod sandboxes;
pub mod sealing;
pub mod snapshots;
pub mod volumes;

use crate::error::AgentError;
use crate::sandbox::SandboxManager;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::runtime::events::Reporter;
use microsandbox_crds::events::Events;
use microsandbox_crds::{Sandbox, SandboxSnapshot, Volume};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Field manager of every write of this agent (the Lease, `status.agent`).
pub const FIELD_MANAGER: &str = "microsandbox-node-agent";

/// Settings of cluster mode.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Kubernetes node name (the Lease is `microsandbox-node-<node>`).
    pub node: String,
    /// Namespace of the node Leases (the operator's).
    pub lease_namespace: String,
    /// Watch Sandboxes of this namespace only (default: all).
    pub watch_namespace: Option<String>,
    /// Agent API base URL announced to the operator and clients.
    pub endpoint: Option<String>,
    /// API server path that proxies to this agent's pod (`pods/proxy`), see [`proxy_path`].
    pub proxy: Option<String>,
    pub lease_duration: Duration,
    pub capacity_memory_mib: u64,
    pub capacity_cpus: u64,
    pub capacity_sandboxes: u64,
    /// Labels mirrored on the Lease (what Volume `placement.nodeSelector` matches).
    pub node_labels: BTreeMap<String, String>,
    /// Public half of the sealing key, announced on the Lease (set by `serve` once the key is
    /// loaded; see [`sealing`]).
    pub sealing_key: Option<String>,
}

/// Something a Sandbox needs before this agent can create it (its volumes, its secrets).
#[derive(Debug, PartialEq)]
pub enum Prerequisite<T> {
    Ready(T),
    /// Not yet (a Volume not provisioned, secrets not sealed): look again soon.
    Wait(String),
    /// Never here (a missing Volume, secrets that do not open): the Sandbox fails.
    Invalid(String),
}

/// The API server path proxying to port `port` of pod `namespace/pod`:
/// `/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy`. Clients append the agent's routes.
pub fn proxy_path(namespace: &str, pod: &str, port: u16) -> String {
    format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy")
}

impl ClusterConfig {
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Self {
            node: "n".into(),
            lease_namespace: "microsandbox-system".into(),
            watch_namespace: None,
            endpoint: None,
            proxy: None,
            lease_duration: Duration::from_secs(15),
            capacity_memory_mib: 4096,
            capacity_cpus: 4,
            capacity_sandboxes: 100,
            node_labels: BTreeMap::new(),
            sealing_key: None,
        }
    }
}

/// Why cluster mode failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("no Kubernetes configuration (kubeconfig or in-cluster): {0}")]
    Config(String),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<ClusterError>>),
    #[error("object has no {0}")]
    MissingField(&'static str),
}

/// Connect to the API server (kubeconfig or in-cluster, as kubectl would); fails fast so
/// `serve` reports a bad configuration at start.
pub async fn connect() -> Result<kube::Client, ClusterError> {
    kube::Client::try_default()
        .await
        .map_err(|e| ClusterError::Config(e.to_string()))
}

/// Renew the node Lease and run the Sandbox controller until the future is dropped.
pub async fn run(
    client: kube::Client,
    cfg: ClusterConfig,
    manager: Arc<SandboxManager>,
    key: Arc<microsandbox_crds::sealed::SealingKey>,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &cfg.lease_namespace);
    let renew = tokio::spawn(lease::renew(
        leases,
        cfg.clone(),
        manager.isolation_levels(),
    ));
    let sandboxes: Api<Sandbox> = match &cfg.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let ctx = Arc::new(sandboxes::Context {
        manager,
        key,
        node: cfg.node.clone(),
        recorder: Events::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(cfg.node.clone()),
            },
        ),
        client,
        violations_published: Default::default(),
    });
    let volume_api: Api<Volume> = match &cfg.watch_namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let volume_ctx = Arc::new(volumes::Context {
        manager: ctx.manager.clone(),
        node: cfg.node.clone(),
        client: ctx.client.clone(),
    });
    let snapshot_api: Api<SandboxSnapshot> = match &cfg.watch_namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let snapshot_ctx = Arc::new(snapshots::Context {
        manager: ctx.manager.clone(),
        key: ctx.key.clone(),
        node: cfg.node.clone(),
        client: ctx.client.clone(),
        recorder: ctx.recorder.clone(),
    });
    tracing::info!(node = %cfg.node, lease_namespace = %cfg.lease_namespace, "cluster mode");
    tokio::join!(
        sandboxes::run(ctx, sandboxes),
        volumes::run(volume_ctx, volume_api),
        snapshots::run(snapshot_ctx, snapshot_api)
    );
    renew.abort();
}
