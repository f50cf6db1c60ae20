//! The Sandbox controller: `dereference -> validate -> build (schedule + status) -> apply ->
//! update_status`. Only the first and the last two touch the API; the middle is
//! [`crate::scheduler`] and [`crate::status`], both pure.
//!
//! Division of labour with the node-agent (cluster mode): the operator binds a Sandbox to a node
//! (`status.node`) and keeps its status; the node-agent on that node watches Sandboxes with
//! `status.node == <its node>`, creates and tears down the microVM, and holds its own finalizer
//! until teardown is done. The operator's own finalizer therefore only releases the binding.

use super::{Context, FIELD_MANAGER};
use crate::error::{Error, Result};
use crate::scheduler::{self, NodeInfo, Request, VolumePlacement, NODE_LEASE_PREFIX};
use crate::status::{self, AgentReport, Binding, Liveness, Observed};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use microsandbox_client::{AgentClient, ClientError, ErrorCode};
use microsandbox_crds::{Sandbox, SandboxStatus};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Finalizer the operator puts on every Sandbox.
pub const FINALIZER: &str = "microsandbox.dev/operator";
const CONTROLLER: &str = "sandbox";
/// Retry of a sandbox no node fits (capacity may free up).
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(15);
/// How long the operator waits for the agent API.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Run the controller until shutdown.
pub async fn run(ctx: Arc<Context>, sandboxes: Api<Sandbox>) {
    let controller = Controller::new(sandboxes, watcher::Config::default());
    let store = controller.store();
    controller
        .shutdown_on_signal()
        .run(
            move |obj, ctx| {
                let store = store.clone();
                async move { reconcile(obj, ctx, store).await }
            },
            error_policy,
            ctx,
        )
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(sandbox = %obj, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

fn key(s: &Sandbox) -> String {
    format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any())
}

async fn reconcile(
    obj: Arc<Sandbox>,
    ctx: Arc<Context>,
    store: kube::runtime::reflector::Store<Sandbox>,
) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let ns = obj.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(s) => apply(&s, &api, &ctx, &store).await,
            Finalizer::Cleanup(s) => cleanup(&s, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy(obj: Arc<Sandbox>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(sandbox = %key(&obj), error = %error, "reconcile failed");
    ctx.metrics.reconcile_failed(CONTROLLER, error);
    Action::requeue(Duration::from_secs(10))
}

async fn apply(
    s: &Sandbox,
    api: &Api<Sandbox>,
    ctx: &Context,
    store: &kube::runtime::reflector::Store<Sandbox>,
) -> Result<Action> {
    let now = Timestamp::now();
    let nodes = node_infos(ctx, now);

    // validate
    if let Err(errors) = s.validate() {
        let observed = Observed {
            generation: s.metadata.generation,
            binding: Binding::Invalid(errors.clone()),
            agent: None,
            deleting: false,
        };
        publish(
            ctx,
            s,
            EventType::Warning,
            microsandbox_crds::common::conditions::REASON_INVALID_SPEC,
            "Validate",
            errors.to_string(),
        )
        .await;
        update_status(api, s, &status::compute(s.status.as_ref(), &observed, now)).await?;
        // Only a change of the object can fix it.
        return Ok(Action::await_change());
    }

    // build: binding
    let binding = match s.status.as_ref().and_then(|st| st.node.clone()) {
        Some(node) => bound(&node, &nodes, now),
        None => match schedule(s, ctx, store, nodes.clone(), now).await {
            Ok(node) => {
                publish(
                    ctx,
                    s,
                    EventType::Normal,
                    "Scheduled",
                    "Schedule",
                    format!("bound to node {node}"),
                )
                .await;
                bound(&node, &nodes, now)
            }
            Err(u) => {
                let previous = s
                    .status
                    .as_ref()
                    .and_then(|st| st.conditions.iter().find(|c| c.type_ == "Scheduled"))
                    .map(|c| c.message.clone());
                if previous.as_deref() != Some(u.message.as_str()) {
                    publish(
                        ctx,
                        s,
                        EventType::Warning,
                        "FailedScheduling",
                        "Schedule",
                        u.message.clone(),
                    )
                    .await;
                }
                Binding::Unschedulable(u)
            }
        },
    };

    // build: agent report
    let agent = match &binding {
        Binding::Bound {
            endpoint: Some(endpoint),
            liveness: Liveness::Alive,
            ..
        } => agent_report(ctx, endpoint, &s.name_any()).await,
        _ => None,
    };
    let observed = Observed {
        generation: s.metadata.generation,
        binding,
        agent,
        deleting: false,
    };
    let new = status::compute(s.status.as_ref(), &observed, now);
    update_status(api, s, &new).await?;

    // When to look again: soon enough to notice an expired node lease within its duration.
    let next = match &observed.binding {
        Binding::Unschedulable(_) => UNSCHEDULABLE_RETRY,
        Binding::Bound { node, .. } => nodes
            .iter()
            .find(|n| &n.name == node)
            .and_then(|n| n.expires_at())
            .map(|t| t.duration_since(now))
            .and_then(|d| Duration::try_from(d).ok())
            .map_or(ctx.resync, |d| (d + Duration::from_secs(1)).min(ctx.resync)),
        Binding::Invalid(_) => return Ok(Action::await_change()),
    };
    Ok(Action::requeue(next))
}

/// Idempotent: tolerates Apply never having run and being called again. The node-agent holds its
/// own finalizer until the microVM is gone; the operator only forgets the binding.
async fn cleanup(s: &Sandbox, ctx: &Context) -> Result<Action> {
    ctx.assumed.lock().await.remove(&key(s));
    tracing::info!(sandbox = %key(s), node = ?s.status.as_ref().and_then(|st| st.node.as_deref()), "released");
    Ok(Action::await_change())
}

/// All parseable node-agent leases; bad ones are logged and skipped.
fn node_infos(ctx: &Context, now: Timestamp) -> Vec<NodeInfo> {
    let mut nodes: Vec<NodeInfo> = ctx
        .node_leases
        .state()
        .iter()
        .filter(|l| l.name_any().starts_with(NODE_LEASE_PREFIX))
        .filter_map(|l| match scheduler::parse_node_lease(l) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring node lease");
                None
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    ctx.metrics
        .live_nodes
        .set(nodes.iter().filter(|n| n.is_alive(now)).count() as i64);
    nodes
}

fn bound(node: &str, nodes: &[NodeInfo], now: Timestamp) -> Binding {
    let info = nodes.iter().find(|n| n.name == node);
    let liveness = match info {
        None => Liveness::Gone,
        Some(n) if n.is_alive(now) => Liveness::Alive,
        Some(n) => Liveness::Lost {
            since: n.expires_at(),
        },
    };
    Binding::Bound {
        node: node.to_string(),
        endpoint: info.and_then(|n| n.endpoint.clone()),
        liveness,
    }
}

/// Pick a node and remember it until the informer shows the binding.
async fn schedule(
    s: &Sandbox,
    ctx: &Context,
    store: &kube::runtime::reflector::Store<Sandbox>,
    mut nodes: Vec<NodeInfo>,
    now: Timestamp,
) -> Result<String, scheduler::Unschedulable> {
    let mut assumed = ctx.assumed.lock().await;
    let me = key(s);
    if let Some(node) = assumed.get(&me) {
        return Ok(node.clone());
    }
    let ns = s.namespace().unwrap_or_default();
    let all = store.state();
    let bindings: Vec<(String, scheduler::Resources)> = all
        .iter()
        .filter(|o| key(o) != me)
        .filter(|o| scheduler::holds_resources(o.status.as_ref().and_then(|st| st.phase)))
        .filter_map(|o| {
            let node = o
                .status
                .as_ref()
                .and_then(|st| st.node.clone())
                .or_else(|| assumed.get(&key(o)).cloned())?;
            Some((node, Request::of(o).resources))
        })
        .collect();
    scheduler::allocate(&mut nodes, bindings.iter().map(|(n, r)| (n.as_str(), *r)));
    let volumes: BTreeMap<String, VolumePlacement> = ctx
        .volumes
        .state()
        .iter()
        .filter(|v| v.namespace().as_deref() == Some(ns.as_str()))
        .map(|v| (v.name_any(), VolumePlacement::of(v)))
        .collect();
    let result = scheduler::schedule(&Request::of(s), &nodes, &volumes, now);
    match &result {
        Ok(node) => {
            ctx.metrics.scheduled("scheduled");
            assumed.insert(me, node.clone());
            // Forget assumptions the cache has caught up with.
            assumed.retain(|k, _| {
                !all.iter()
                    .any(|o| &key(o) == k && o.status.as_ref().is_some_and(|st| st.node.is_some()))
            });
        }
        Err(u) => ctx.metrics.scheduled(u.reason),
    }
    result
}

/// Ask the node-agent about the sandbox; `None` when it does not know it (yet) or is unreachable.
async fn agent_report(ctx: &Context, endpoint: &str, name: &str) -> Option<AgentReport> {
    let endpoint = match endpoint.parse() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(endpoint, error = %e, "bad node-agent endpoint");
            return None;
        }
    };
    let client = AgentClient::new(endpoint, ctx.agent_token.clone());
    match tokio::time::timeout(AGENT_TIMEOUT, client.get(name)).await {
        Ok(Ok(info)) => Some(AgentReport {
            state: info.state,
            image_digest: Some(info.image_digest),
            reason: info.reason,
        }),
        Ok(Err(ClientError::Api(e))) if e.code == ErrorCode::SandboxNotFound => None,
        Ok(Err(e)) => {
            tracing::debug!(sandbox = name, error = %e, "node-agent query failed");
            None
        }
        Err(_) => {
            tracing::debug!(sandbox = name, "node-agent query timed out");
            None
        }
    }
}

/// Server-side apply of the status subresource, skipped when nothing changed.
async fn update_status(api: &Api<Sandbox>, s: &Sandbox, new: &SandboxStatus) -> Result<()> {
    if s.status.as_ref() == Some(new) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": Sandbox::api_version(&()),
        "kind": Sandbox::kind(&()),
        "status": new,
    });
    api.patch_status(
        &s.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Publish an Event; failures are logged, never fail the reconcile.
async fn publish(
    ctx: &Context,
    s: &Sandbox,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &s.object_ref(&())).await {
        tracing::warn!(sandbox = %key(s), error = %e, "cannot publish event");
    }
}
