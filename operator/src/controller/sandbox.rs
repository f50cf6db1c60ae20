//! The Sandbox controller: `dereference -> validate -> build (schedule + status) -> apply ->
//! update_status`. Only the first and the last two touch the API; the middle is
//! [`crate::scheduler`] and [`crate::status`], both pure.
//!
//! Division of labour with the node-agent (cluster mode): the operator binds a Sandbox to a node
//! (`status.node`) and keeps its status; the node-agent on that node watches Sandboxes with
//! `status.node == <its node>` (a selectable field), creates and tears down the sandbox, reports
//! in `status.agent` (its own server-side-apply field manager), and holds its own finalizer until
//! teardown is done. The operator derives phase and conditions from that report, so it never
//! needs the node-agent's API token; its own finalizer only releases the binding. The operator
//! also enforces `lifetime.ttlAfterFinished` (deletes the object); the node-agent enforces
//! `lifetime.shutdownAfter`.

use super::sealing::{self, Sealing};
use super::{publish, Context};
use crate::error::{Error, Result};
use crate::scheduler::{self, LeaseChanges, NodeInfo, Request, VolumePlacement, NODE_LEASE_PREFIX};
use crate::status::{self, AgentReport, Binding, Liveness, Observed};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;
use microsandbox_crds::common::{condition, set_condition};
use microsandbox_crds::{
    ConditionType, EventAction, Isolation, Reason, Sandbox, SandboxPhase, SandboxStatus,
};
use microsandbox_wire::api::{SandboxState, StopReason};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Finalizer the operator puts on every Sandbox.
pub const FINALIZER: &str = "microsandbox.dev/operator";
const CONTROLLER: &str = "sandbox";
/// Retry of a sandbox no node fits (capacity may free up).
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(5);
/// Reconciles in flight at once.
const RECONCILE_CONCURRENCY: u16 = 16;
/// Label a namespace needs before Sandboxes with `isolation: container` are admitted in it.
pub const ALLOW_CONTAINER_LABEL: &str = "microsandbox.dev/allow-container-isolation";

/// Run the controller until shutdown.
pub async fn run(ctx: Arc<Context>, sandboxes: Api<Sandbox>, leases: Api<Lease>) {
    let controller = Controller::new(sandboxes, watcher::Config::default());
    let store = controller.store();
    let watch_store = store.clone();
    let changes = std::sync::Mutex::new(LeaseChanges::default());
    controller
        // A node that appears, comes back or changes what it offers may settle sandboxes at once
        // (bound ones become Ready again, pending ones fit); plain renewals trigger nothing.
        .watches(leases, watcher::Config::default(), move |lease| {
            let Ok(node) = scheduler::parse_node_lease(&lease) else {
                return Vec::new();
            };
            let changed = changes.lock().map(|mut c| c.observe(&node)).unwrap_or(true);
            if !changed {
                return Vec::new();
            }
            watch_store
                .state()
                .iter()
                .filter(|s| {
                    let bound = s.status.as_ref().and_then(|st| st.node.as_deref());
                    bound.is_none() || bound == Some(node.name.as_str())
                })
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect()
        })
        // Bounded: a burst of a thousand objects reuses a few API connections instead of
        // opening one per reconcile (CPU and memory both went to TLS handshakes and buffers).
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
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
            Reason::InvalidSpec,
            EventAction::Validate,
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
        None => match admit(s, ctx).and(schedule(s, ctx, store, nodes.clone(), now).await) {
            Ok(node) => {
                publish(
                    ctx,
                    s,
                    EventType::Normal,
                    Reason::Scheduled,
                    EventAction::Schedule,
                    format!("bound to node {node}"),
                )
                .await;
                bound(&node, &nodes, now)
            }
            Err(u) => {
                let previous = s
                    .status
                    .as_ref()
                    .and_then(|st| {
                        st.conditions
                            .iter()
                            .find(|c| c.type_ == ConditionType::Scheduled)
                    })
                    .map(|c| c.message.clone());
                if previous.as_deref() != Some(u.message.as_str()) {
                    publish(
                        ctx,
                        s,
                        EventType::Warning,
                        Reason::FailedScheduling,
                        EventAction::Schedule,
                        u.message.clone(),
                    )
                    .await;
                }
                Binding::Unschedulable(u)
            }
        },
    };

    // build: agent report (only one written for this incarnation of the object counts)
    let agent = match &binding {
        Binding::Bound { .. } => agent_report(s),
        _ => None,
    };
    let observed = Observed {
        generation: s.metadata.generation,
        binding,
        agent,
        deleting: false,
    };
    let mut new = status::compute(s.status.as_ref(), &observed, now);
    let unsealed = match &observed.binding {
        Binding::Bound { node, .. } => {
            seal_secrets(s, ctx, node, &nodes, &observed, &mut new, now).await?
        }
        _ => false,
    };
    update_status(api, s, &new).await?;

    // lifetime.ttlAfterFinished: delete the object once it has been finished that long.
    if let Some(wait) = ttl_remaining(s, &new, now) {
        if wait.is_zero() {
            tracing::info!(sandbox = %key(s), "ttlAfterFinished reached; deleting");
            publish(
                ctx,
                s,
                EventType::Normal,
                Reason::TtlExpired,
                EventAction::Delete,
                "lifetime.ttlAfterFinished reached".into(),
            )
            .await;
            api.delete(&s.name_any(), &Default::default()).await?;
            return Ok(Action::await_change());
        }
        return Ok(Action::requeue(wait.min(ctx.resync)));
    }

    // When to look again: soon enough to notice an expired node lease within its duration.
    let next = match &observed.binding {
        _ if unsealed => UNSCHEDULABLE_RETRY,
        Binding::Unschedulable(_) => UNSCHEDULABLE_RETRY,
        Binding::Bound { node, .. }
            if !observed.agent.as_ref().is_some_and(|a| finished(a.state)) =>
        {
            nodes
                .iter()
                .find(|n| &n.name == node)
                .and_then(|n| n.expires_at())
                .map(|t| t.duration_since(now))
                .and_then(|d| Duration::try_from(d).ok())
                .map_or(ctx.resync, |d| (d + Duration::from_secs(1)).min(ctx.resync))
        }
        Binding::Bound { .. } => ctx.resync,
        Binding::Invalid(_) => return Ok(Action::await_change()),
    };
    Ok(Action::requeue(next))
}

/// Fill `status.sealedSecrets` and the `SecretsSealed` condition of a sandbox bound to `node`;
/// true when its secrets cannot be sealed yet (retry soon).
async fn seal_secrets(
    s: &Sandbox,
    ctx: &Context,
    node: &str,
    nodes: &[NodeInfo],
    observed: &Observed,
    new: &mut SandboxStatus,
    now: Timestamp,
) -> Result<bool> {
    let node_key = nodes
        .iter()
        .find(|n| n.name == node)
        .and_then(|n| n.sealing_key.as_deref());
    let done = observed.agent.as_ref().is_some_and(|a| finished(a.state));
    let started = observed
        .agent
        .as_ref()
        .is_some_and(|a| a.state != SandboxState::Creating);
    let previous_key = new.sealed_secrets.as_ref().map(|p| p.recipient.clone());
    let (ok, reason, message) = match sealing::ensure(s, ctx, node, node_key, started, done).await?
    {
        Sealing::None => {
            new.sealed_secrets = None;
            return Ok(false);
        }
        Sealing::Sealed(p) => {
            let fresh = new.sealed_secrets.as_ref() != Some(&p);
            if fresh {
                tracing::info!(sandbox = %key(s), node, "secrets sealed to the node's key");
                if previous_key.is_some_and(|k| k != p.recipient) {
                    let why = format!("node {node} announced a new sealing key before the sandbox started; sealed again");
                    publish(
                        ctx,
                        s,
                        EventType::Warning,
                        Reason::SecretsResealed,
                        EventAction::Seal,
                        why,
                    )
                    .await;
                }
            }
            new.sealed_secrets = Some(p);
            (
                true,
                Reason::Sealed,
                format!("sealed to the key of node {node}"),
            )
        }
        Sealing::Unresolved(reason, message) => (false, reason, message),
    };
    let previous = new
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::SecretsSealed)
        .map(|c| c.message.clone());
    if !ok && previous.as_deref() != Some(message.as_str()) {
        publish(
            ctx,
            s,
            EventType::Warning,
            reason,
            EventAction::Seal,
            message.clone(),
        )
        .await;
    }
    set_condition(
        &mut new.conditions,
        condition(
            ConditionType::SecretsSealed,
            ok,
            reason,
            message,
            s.metadata.generation,
            Time(now),
        ),
    );
    Ok(!ok)
}

fn finished(state: SandboxState) -> bool {
    matches!(state, SandboxState::Stopped | SandboxState::Failed)
}

/// Idempotent: tolerates Apply never having run and being called again. The node-agent holds its
/// own finalizer until the microVM is gone; the operator only forgets the binding.
async fn cleanup(s: &Sandbox, ctx: &Context) -> Result<Action> {
    ctx.assumed.lock().await.remove(&key(s));
    tracing::info!(sandbox = %key(s), node = ?s.status.as_ref().and_then(|st| st.node.as_deref()), "released");
    Ok(Action::await_change())
}

/// All parseable node-agent leases; bad ones are logged and skipped.
pub(crate) fn node_infos(ctx: &Context, now: Timestamp) -> Vec<NodeInfo> {
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
        proxy: info.and_then(|n| n.proxy.clone()),
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
        Err(u) => ctx.metrics.scheduled(u.reason.as_str()),
    }
    result
}

/// The node-agent's report from `status.agent`, if it was written for this object (same uid).
fn agent_report(s: &Sandbox) -> Option<AgentReport> {
    let r = s.status.as_ref()?.agent.as_ref()?;
    if s.metadata.uid.as_deref() != Some(r.uid.as_str()) {
        return None;
    }
    Some(AgentReport {
        state: match r.state {
            SandboxPhase::Pending | SandboxPhase::Creating => SandboxState::Creating,
            SandboxPhase::Running => SandboxState::Running,
            SandboxPhase::Stopping => SandboxState::Draining,
            SandboxPhase::Stopped => SandboxState::Stopped,
            SandboxPhase::Failed => SandboxState::Failed,
        },
        image_digest: r.image_digest.clone(),
        reason: r.reason.clone().map(StopReason::from),
    })
}

/// `isolation: container` only in namespaces labelled [`ALLOW_CONTAINER_LABEL`]`=true`.
fn admit(s: &Sandbox, ctx: &Context) -> Result<(), scheduler::Unschedulable> {
    if s.spec.isolation != Isolation::Container {
        return Ok(());
    }
    let ns = s.namespace().unwrap_or_default();
    let allowed = ctx
        .namespaces
        .get(&kube::runtime::reflector::ObjectRef::new(&ns))
        .is_some_and(|n| n.labels().get(ALLOW_CONTAINER_LABEL).map(String::as_str) == Some("true"));
    if allowed {
        Ok(())
    } else {
        Err(scheduler::Unschedulable {
            reason: Reason::IsolationNotAllowed,
            message: format!(
                "isolation: container is not allowed in namespace {ns:?}; label it {ALLOW_CONTAINER_LABEL}=true or use isolation: microvm"
            ),
        })
    }
}

/// Time left before a finished sandbox's object is deleted (`None`: no TTL or not finished).
fn ttl_remaining(s: &Sandbox, new: &SandboxStatus, now: Timestamp) -> Option<Duration> {
    let ttl = s.spec.lifetime.as_ref()?.ttl_after_finished.as_deref()?;
    let ttl = microsandbox_crds::units::parse_duration(ttl)?;
    if !matches!(
        new.phase,
        Some(SandboxPhase::Stopped | SandboxPhase::Failed)
    ) {
        return None;
    }
    let since = new
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Ready)?
        .last_transition_time
        .0;
    let elapsed = Duration::try_from(now.duration_since(since)).unwrap_or_default();
    Some(Duration::from_secs(ttl).saturating_sub(elapsed))
}

/// Server-side apply of the status subresource, skipped when nothing changed.
async fn update_status(api: &Api<Sandbox>, s: &Sandbox, new: &SandboxStatus) -> Result<()> {
    if s.status.as_ref() == Some(new) {
        return Ok(());
    }
    // `status.agent` belongs to the node-agent's field manager: never claim it.
    let mut mine = new.clone();
    mine.agent = None;
    super::apply_status(api, s, serde_json::to_value(mine)?).await
}
