//! Controllers and what they share.

pub mod pool;
pub mod push;
pub mod sandbox;
pub mod sealing;
pub mod secret;
pub mod volume;

use crate::metrics::Metrics;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::reflector::Store;
use kube::Client;
use microsandbox_crds::{EventAction, Reason, SandboxSnapshot, Volume};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Field manager of every server-side apply and name of the finalizer's owner.
pub const FIELD_MANAGER: &str = "microsandbox-operator";

/// State shared by the reconcilers.
pub struct Context {
    pub client: Client,
    pub recorder: microsandbox_crds::events::Events,
    pub metrics: Arc<Metrics>,
    /// Node-agent Leases (operator namespace).
    pub node_leases: Store<Lease>,
    /// Volumes (all namespaces).
    pub volumes: Store<Volume>,
    /// SandboxSnapshots (all namespaces): a Sandbox made from one runs on its node.
    pub snapshots: Store<SandboxSnapshot>,
    /// Namespaces (for the container-isolation admission label).
    pub namespaces: Store<Namespace>,
    /// How often to re-check a sandbox whose agent state may change.
    pub resync: Duration,
    /// Bindings decided but maybe not yet visible in the informer cache (`ns/name` -> node), so
    /// concurrent reconciles do not overcommit a node. Scheduling holds this lock.
    pub assumed: tokio::sync::Mutex<BTreeMap<String, String>>,
}

/// Server-side apply of `status` (a JSON object) on `obj`'s status subresource, as the
/// operator's field manager.
pub(crate) async fn apply_status<K>(
    api: &kube::Api<K>,
    obj: &K,
    status: serde_json::Value,
) -> crate::Result<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    microsandbox_crds::events::apply_status(api, obj, FIELD_MANAGER, status).await?;
    Ok(())
}

/// Publish an Event about `obj`; failures are logged, never fail the reconcile.
pub(crate) async fn publish<K>(
    ctx: &Context,
    obj: &K,
    type_: kube::runtime::events::EventType,
    reason: Reason,
    action: EventAction,
    note: String,
) where
    K: kube::Resource<DynamicType = ()>,
{
    microsandbox_crds::events::publish(&ctx.recorder, obj, type_, reason, action, note).await
}
