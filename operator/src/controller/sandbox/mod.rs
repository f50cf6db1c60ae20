//! The Sandbox controller: gather facts (validate, schedule, read the secrets to seal) -> decide
//! ([`plan`], pure, on [`crate::scheduler`] and [`crate::status`]) -> execute the plan (Events,
//! status, delete, requeue). Only gathering and executing touch the API.
//!
//! Division of labour with the node-agent (cluster mode): the operator binds a Sandbox to a node
//! (`status.node`) and keeps its status; the node-agent on that node watches Sandboxes with
//! `status.node == <its node>` (a selectable field), creates and tears down the sandbox, reports
//! in `status.agent` (its own server-side-apply field manager), and holds its own finalizer until
//! teardown is done. The operator derives phase and conditions from that report, so it never
//! needs the node-agent's API token; its own finalizer only releases the binding. The operator
//! also enforces `lifetime.ttlAfterFinished` (deletes the object); the node-agent enforces
//! `lifetime.shutdownAfter`.

mod plan;

use super::sealing;
use super::{publish, Context};
use crate::error::{Error, Result, Step};
use crate::scheduler::{self, LeaseChanges, NodeInfo, Request, VolumePlacement, NODE_LEASE_PREFIX};
use crate::status::{AgentReport, Binding, Liveness};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use microsandbox_crds::{Isolation, Reason, Sandbox, SandboxPhase, SandboxStatus};
use microsandbox_wire::api::{SandboxState, StopReason};
use plan::{Facts, Next};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Finalizer the operator puts on every Sandbox.
pub const FINALIZER: &str = "microsandbox.dev/operator";
const CONTROLLER: &str = "sandbox";
/// Reconciles in flight at once.
const RECONCILE_CONCURRENCY: u16 = 16;
/// Label a namespace needs before Sandboxes with `isolation: container` are admitted in it.
pub const ALLOW_CONTAINER_LABEL: &str = "microsandbox.dev/allow-container-isolation";

/// Run the controller until shutdown.
pub async fn run(ctx: Arc<Context>, sandboxes: Api<Sandbox>, leases: Api<Lease>) {
    // The cache keeps every Sandbox: without their managedFields (never read here; most of an
    // object's size) the operator's memory stays small with thousands of them.
    let (store, writer) = kube::runtime::reflector::store();
    let objects = kube::runtime::reflector(
        writer,
        watcher(sandboxes, watcher::Config::default())
            .modify(|s: &mut Sandbox| s.managed_fields_mut().clear()),
    )
    .default_backoff()
    .touched_objects();
    let controller = Controller::for_stream(objects, store.clone());
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
    let facts_now = Timestamp::now();
    let nodes = node_infos(ctx, facts_now);
    // Gather: validation, the binding (scheduling a new one), the agent's report, sealing.
    let mut newly_bound = false;
    let binding = match s.validate() {
        Err(errors) => Binding::Invalid(errors),
        Ok(()) => match s.status.as_ref().and_then(|st| st.node.clone()) {
            Some(node) => bound(&node, &nodes, facts_now),
            None => {
                match admit(s, ctx).and(schedule(s, ctx, store, nodes.clone(), facts_now).await) {
                    Ok(node) => {
                        newly_bound = true;
                        bound(&node, &nodes, facts_now)
                    }
                    Err(u) => Binding::Unschedulable(u),
                }
            }
        },
    };
    let (agent, sealing, lease_expires) = match &binding {
        Binding::Bound { node, .. } => {
            let agent = agent_report(s);
            let info = nodes.iter().find(|n| &n.name == node);
            let done = agent.as_ref().is_some_and(|a| plan::finished(a.state));
            let started = agent
                .as_ref()
                .is_some_and(|a| a.state != SandboxState::Creating);
            let key = info.and_then(|n| n.sealing_key.as_deref());
            let sealing = sealing::ensure(s, ctx, node, key, started, done)
                .await
                .map_err(|e| Error::step(Step::ReadSecrets, e))?;
            (agent, Some(sealing), info.and_then(|n| n.expires_at()))
        }
        _ => (None, None, None),
    };
    // Decide.
    let plan = plan::plan(Facts {
        sandbox: s,
        now: facts_now,
        resync: ctx.resync,
        binding,
        newly_bound,
        agent,
        sealing,
        lease_expires,
    });
    // Execute.
    for e in plan.events {
        publish(ctx, s, e.type_, e.reason, e.action, e.note).await;
    }
    update_status(api, s, &plan.status)
        .await
        .map_err(|e| Error::step(Step::UpdateStatus, e))?;
    if plan.delete {
        tracing::info!(sandbox = %key(s), "ttlAfterFinished reached; deleting");
        api.delete(&s.name_any(), &Default::default())
            .await
            .map_err(|e| Error::step(Step::Delete, e.into()))?;
    }
    Ok(match plan.next {
        Next::Requeue(d) => Action::requeue(d),
        Next::AwaitChange => Action::await_change(),
    })
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

/// The node that keeps SandboxSnapshot `ns/name`, once it is Ready.
fn snapshot_node(ctx: &Context, ns: &str, name: &str) -> Result<String, scheduler::Unschedulable> {
    let key = kube::runtime::reflector::ObjectRef::new(name).within(ns);
    let Some(snap) = ctx.snapshots.get(&key) else {
        return Err(scheduler::Unschedulable {
            reason: Reason::SnapshotNotFound,
            message: format!("SandboxSnapshot {name:?} does not exist in this namespace"),
        });
    };
    snap.ready_node()
        .map(str::to_string)
        .ok_or_else(|| scheduler::Unschedulable {
            reason: Reason::SnapshotNotReady,
            message: format!("SandboxSnapshot {name:?} is not Ready yet"),
        })
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
    // One pass over the cache (no nested scans: a burst of a thousand objects schedules each
    // against all the others): what every other sandbox holds, and which assumptions the cache
    // has caught up with.
    let mut caught_up = std::collections::HashSet::new();
    let mut bindings: Vec<(String, scheduler::Resources)> = Vec::new();
    for o in store.state() {
        let k = key(&o);
        let node = o.status.as_ref().and_then(|st| st.node.clone());
        if node.is_some() && assumed.contains_key(&k) {
            caught_up.insert(k.clone());
        }
        if k == me || !scheduler::holds_resources(o.status.as_ref().and_then(|st| st.phase)) {
            continue;
        }
        if let Some(node) = node.or_else(|| assumed.get(&k).cloned()) {
            bindings.push((node, Request::of(&o).resources));
        }
    }
    scheduler::allocate(&mut nodes, bindings.iter().map(|(n, r)| (n.as_str(), *r)));
    let volumes: BTreeMap<String, VolumePlacement> = ctx
        .volumes
        .state()
        .iter()
        .filter(|v| v.namespace().as_deref() == Some(ns.as_str()))
        .map(|v| (v.name_any(), VolumePlacement::of(v)))
        .collect();
    let mut request = Request::of(s);
    if let Some(r) = &s.spec.snapshot_ref {
        request.node = Some(snapshot_node(ctx, &ns, &r.name)?);
    }
    let result = scheduler::schedule(&request, &nodes, &volumes, now);
    match &result {
        Ok(node) => {
            ctx.metrics.scheduled("scheduled");
            assumed.retain(|k, _| !caught_up.contains(k));
            assumed.insert(me, node.clone());
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
            SandboxPhase::Paused => SandboxState::Paused,
            SandboxPhase::Suspended => SandboxState::Suspended,
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
