//! The node-agent's Sandbox controller: for every Sandbox bound to this node (`status.node`, a
//! selectable field, so the watch carries only ours) create the sandbox, report it in
//! `status.agent`, stop it when `lifetime.shutdownAfter` is up, and remove it before letting the
//! object go (finalizer). A sweep removes sandboxes whose object is gone (e.g. a finalizer
//! stripped by hand while this agent was down).

use super::names::{self, LABEL_UID};
use super::sealing;
use super::{report, ClusterError, Prerequisite, FIELD_MANAGER};
use crate::error::AgentError;
use crate::sandbox::SandboxManager;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::ResourceExt;
use microsandbox_crds::sealed::SealingKey;
use microsandbox_crds::{
    AgentReport, EventAction, Reason, Sandbox, SandboxPhase, SandboxSnapshot, Volume, VolumePhase,
};
use microsandbox_wire::api::{MountSpec, SandboxInfo, SandboxState};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Finalizer this agent holds on the Sandboxes it runs.
pub const FINALIZER: &str = "microsandbox.dev/node-agent";
/// How often a running sandbox's state is re-read (exits and OOM kills show up within this).
const POLL: Duration = Duration::from_secs(10);
/// Reconciles in flight at once.
const RECONCILE_CONCURRENCY: u16 = 16;
/// A create that takes longer than this is reported as `Creating` first (image pulls); a fast
/// one is reported once, as `Running`, which halves the status writes of a burst.
const REPORT_CREATING_AFTER: Duration = Duration::from_millis(300);
/// Most `SecretBlocked` Events published per sandbox and reconcile (the rest are counted).
const MAX_VIOLATION_EVENTS: usize = 10;
/// How often orphaned sandboxes are looked for.
const SWEEP: Duration = Duration::from_secs(30);

/// What the reconciler needs.
pub struct Context {
    pub manager: Arc<SandboxManager>,
    /// Opens the secrets the operator sealed to this agent.
    pub key: Arc<SealingKey>,
    pub node: String,
    pub client: kube::Client,
    pub recorder: microsandbox_crds::events::Events,
    /// Per Sandbox uid: the secret-violation mark up to which Events were published.
    pub violations_published: std::sync::Mutex<HashMap<String, u64>>,
}

/// Run the controller and the orphan sweep until the task is dropped.
pub async fn run(ctx: Arc<Context>, api: Api<Sandbox>) {
    let config = watcher::Config::default().fields(&format!("status.node={}", ctx.node));
    let controller = Controller::new(api, config);
    let store = controller.store();
    let sweeper = tokio::spawn(sweep(store, ctx.manager.clone()));
    controller
        // Bounded: sandboxes are created a few at a time (the node's CPUs are the limit) over a
        // few reused API connections.
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "sandbox reconcile failed");
            }
        })
        .await;
    sweeper.abort();
}

fn error_policy(s: Arc<Sandbox>, error: &ClusterError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(sandbox = %s.name_any(), error = %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(s: Arc<Sandbox>, ctx: Arc<Context>) -> Result<Action, ClusterError> {
    if s.status.as_ref().and_then(|st| st.node.as_deref()) != Some(ctx.node.as_str()) {
        return Ok(Action::await_change());
    }
    let ns = s
        .namespace()
        .ok_or(ClusterError::MissingField("namespace"))?;
    let api: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, s, |event| async {
        match event {
            Finalizer::Apply(s) => apply(&s, &api, &ctx).await,
            Finalizer::Cleanup(s) => cleanup(&s, &ctx).await,
        }
    })
    .await
    .map_err(|e| ClusterError::Finalizer(Box::new(e)))
}

/// The object's uid and this agent's name for it.
fn identity(s: &Sandbox) -> Result<(String, String), ClusterError> {
    let uid = s.uid().ok_or(ClusterError::MissingField("uid"))?;
    Ok((names::local_name(&s.name_any(), &uid), uid))
}

async fn apply(s: &Sandbox, api: &Api<Sandbox>, ctx: &Context) -> Result<Action, ClusterError> {
    let (local, uid) = identity(s)?;
    let reported = s
        .status
        .as_ref()
        .and_then(|st| st.agent.as_ref())
        .filter(|r| r.uid == uid);
    match ctx.manager.get(&local).await {
        Ok(mut info) => {
            let mut next = POLL;
            let shutdown_after = s
                .spec
                .lifetime
                .as_ref()
                .and_then(|l| l.shutdown_after.as_deref())
                .and_then(microsandbox_crds::units::parse_duration);
            if let Some(changed) = pause_as_asked(s, ctx, &local, &info).await? {
                info = changed;
            }
            let idle = s.spec.lifetime.as_ref().and_then(|l| l.idle_timeout_secs());
            ctx.manager.set_idle_timeout(&local, idle).await?;
            if matches!(
                info.state,
                SandboxState::Running | SandboxState::Paused | SandboxState::Suspended
            ) {
                let now = crate::sandbox::now();
                if let Some(left) = report::lifetime_left(info.created_at, shutdown_after, now) {
                    if left.is_zero() {
                        tracing::info!(sandbox = %local, "lifetime.shutdownAfter reached; stopping");
                        info = ctx
                            .manager
                            .stop_because(
                                &local,
                                None,
                                microsandbox_wire::api::StopReason::LifetimeExpired,
                            )
                            .await?;
                        publish(
                            ctx,
                            s,
                            EventType::Normal,
                            Reason::LifetimeExpired,
                            EventAction::Stop,
                            "lifetime.shutdownAfter reached".into(),
                        )
                        .await;
                    } else {
                        next = next.min(left);
                    }
                }
            }
            write(api, s, reported, report::of(&info, &uid)).await?;
            publish_violations(ctx, s, &local, &uid).await;
            Ok(Action::requeue(next))
        }
        Err(AgentError::NotFound(_)) => {
            if let Some(r) = reported.filter(|r| r.state != SandboxPhase::Creating) {
                // It ran here and is gone (state wiped, removed by hand): say so; never recreate
                // behind the user's back, their files are gone.
                if r.state != SandboxPhase::Failed {
                    let why = format!("the sandbox is gone from node {}", ctx.node);
                    let failure =
                        Failure::new(&local, &uid, Reason::SandboxLost, EventAction::Observe, why);
                    return fail(ctx, api, s, reported, failure).await;
                }
                return Ok(Action::await_change());
            }
            let ids = (local.as_str(), uid.as_str());
            let secrets = match sealing::of(s, &ctx.key, &ctx.node) {
                Prerequisite::Ready(v) => v,
                unmet => {
                    return not_yet(ctx, api, s, reported, ids, Reason::SecretsUnusable, unmet)
                        .await
                }
            };
            let mounts = match mounts_for(s, ctx).await? {
                Prerequisite::Ready(m) => m,
                unmet => {
                    return not_yet(ctx, api, s, reported, ids, Reason::InvalidVolumes, unmet).await
                }
            };
            let image = match image_for(s, ctx).await? {
                Prerequisite::Ready(i) => i,
                unmet => {
                    return not_yet(ctx, api, s, reported, ids, Reason::SnapshotNotReady, unmet)
                        .await
                }
            };
            let creating = report::without_sandbox(&local, &uid, SandboxPhase::Creating, None);
            let mut req = s.spec.agent_request(&local);
            req.image = image;
            req.mounts = mounts;
            req.secrets = secrets;
            req.labels = names::labels(&s.namespace().unwrap_or_default(), &s.name_any(), &uid);
            let create = ctx.manager.create(req);
            tokio::pin!(create);
            let mut last = reported.cloned();
            let result = tokio::select! {
                r = &mut create => r,
                () = tokio::time::sleep(REPORT_CREATING_AFTER) => {
                    write(api, s, last.as_ref(), creating.clone()).await?;
                    last = Some(creating);
                    create.await
                }
            };
            match result {
                Ok(info) => {
                    write(api, s, last.as_ref(), report::of(&info, &uid)).await?;
                    Ok(Action::requeue(POLL))
                }
                // Another reconcile of the same object raced us (cannot happen under one
                // controller, but cheap to tolerate): look again.
                Err(AgentError::AlreadyExists(_)) => Ok(Action::requeue(Duration::ZERO)),
                // A named volume is being grown right now: try again shortly.
                Err(AgentError::VolumeBusy(_)) => Ok(Action::requeue(Duration::from_secs(2))),
                Err(e) => {
                    let failure = Failure::new(
                        &local,
                        &uid,
                        Reason::CreateFailed,
                        EventAction::Create,
                        e.to_string(),
                    );
                    fail(ctx, api, s, last.as_ref(), failure).await
                }
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Freeze or thaw the sandbox as `spec.paused` says (an idle-suspended one counts as running:
/// a pause makes it paused by request); `Some` with its new state when it changed.
async fn pause_as_asked(
    s: &Sandbox,
    ctx: &Context,
    local: &str,
    info: &SandboxInfo,
) -> Result<Option<SandboxInfo>, ClusterError> {
    let (action, reason, note) = match (info.state, s.spec.paused) {
        (SandboxState::Running | SandboxState::Suspended, true) => (
            EventAction::Pause,
            Reason::Paused,
            "spec.paused: processes frozen",
        ),
        (SandboxState::Paused, false) => (
            EventAction::Resume,
            Reason::Resumed,
            "spec.paused is false: resumed",
        ),
        _ => return Ok(None),
    };
    let changed = if s.spec.paused {
        ctx.manager.pause(local).await?
    } else {
        ctx.manager.resume(local).await?
    };
    tracing::info!(sandbox = %local, paused = s.spec.paused, "spec.paused applied");
    publish(ctx, s, EventType::Normal, reason, action, note.into()).await;
    Ok(Some(changed))
}

/// Why a Sandbox failed on this node, as an Event and a `Failed` report.
struct Failure<'a> {
    local: &'a str,
    uid: &'a str,
    reason: Reason,
    action: EventAction,
    why: String,
}

impl<'a> Failure<'a> {
    fn new(local: &'a str, uid: &'a str, reason: Reason, action: EventAction, why: String) -> Self {
        Self {
            local,
            uid,
            reason,
            action,
            why,
        }
    }
}

/// Publish the failure as a Warning Event, report `Failed`, and wait for a change of the object.
async fn fail(
    ctx: &Context,
    api: &Api<Sandbox>,
    s: &Sandbox,
    reported: Option<&AgentReport>,
    f: Failure<'_>,
) -> Result<Action, ClusterError> {
    publish(
        ctx,
        s,
        EventType::Warning,
        f.reason,
        f.action,
        f.why.clone(),
    )
    .await;
    let failed = report::without_sandbox(f.local, f.uid, SandboxPhase::Failed, Some(f.why));
    write(api, s, reported, failed).await?;
    Ok(Action::await_change())
}

/// A Sandbox's `spec.volumes` as agent mounts, once its named Volumes are provisioned here.
type Mounts = Prerequisite<Vec<MountSpec>>;

/// What apply returns for a prerequisite that is not met: look again soon while waiting; fail the
/// Sandbox (`reason`) when it can never be met.
async fn not_yet<T>(
    ctx: &Context,
    api: &Api<Sandbox>,
    s: &Sandbox,
    reported: Option<&AgentReport>,
    (local, uid): (&str, &str),
    reason: Reason,
    unmet: Prerequisite<T>,
) -> Result<Action, ClusterError> {
    match unmet {
        Prerequisite::Invalid(why) => {
            let failure = Failure::new(local, uid, reason, EventAction::Create, why);
            fail(ctx, api, s, reported, failure).await
        }
        Prerequisite::Wait(why) => {
            tracing::debug!(sandbox = %local, why, "waiting before creating");
            Ok(Action::requeue(Duration::from_secs(2)))
        }
        Prerequisite::Ready(_) => Ok(Action::requeue(Duration::ZERO)),
    }
}

/// The image to boot: `spec.image`, or the node's copy of the SandboxSnapshot `spec.snapshotRef`
/// names (same namespace, Ready, kept here). An object never names a node's own image
/// (`microsandbox.local/`) itself: that could start from another namespace's snapshot.
async fn image_for(s: &Sandbox, ctx: &Context) -> Result<Prerequisite<String>, ClusterError> {
    let Some(r) = &s.spec.snapshot_ref else {
        if s.spec
            .image
            .starts_with(microsandbox_crds::sandbox::LOCAL_IMAGE_PREFIX)
        {
            return Ok(Prerequisite::Invalid(format!(
                "image {:?} is a node's own snapshot: use spec.snapshotRef",
                s.spec.image
            )));
        }
        return Ok(Prerequisite::Ready(s.spec.image.clone()));
    };
    let api: Api<SandboxSnapshot> =
        Api::namespaced(ctx.client.clone(), &s.namespace().unwrap_or_default());
    let Some(snap) = api.get_opt(&r.name).await? else {
        return Ok(Prerequisite::Invalid(format!(
            "SandboxSnapshot {:?} does not exist in this namespace",
            r.name
        )));
    };
    match snap.ready_node() {
        Some(n) if n == ctx.node => {
            let local = super::snapshots::local_name(&snap)?;
            Ok(Prerequisite::Ready(crate::image::snapshot::reference(
                &local,
            )))
        }
        Some(n) => Ok(Prerequisite::Invalid(format!(
            "SandboxSnapshot {:?} is kept on node {n}, not {}",
            r.name, ctx.node
        ))),
        None => Ok(Prerequisite::Wait(format!(
            "SandboxSnapshot {:?} is not Ready",
            r.name
        ))),
    }
}

async fn mounts_for(s: &Sandbox, ctx: &Context) -> Result<Mounts, ClusterError> {
    let ns = s.namespace().unwrap_or_default();
    let vols: Api<Volume> = Api::namespaced(ctx.client.clone(), &ns);
    let mut out = Vec::new();
    for m in &s.spec.volumes {
        if let Some(n) = &m.named {
            let Some(v) = vols.get_opt(&n.name).await? else {
                return Ok(Mounts::Invalid(format!(
                    "Volume {:?} does not exist",
                    n.name
                )));
            };
            let st = v.status.clone().unwrap_or_default();
            if st.node.as_deref() != Some(ctx.node.as_str()) {
                return Ok(Mounts::Invalid(format!(
                    "Volume {:?} lives on node {:?}, not {}",
                    n.name, st.node, ctx.node
                )));
            }
            if st.phase != Some(VolumePhase::Ready) {
                return Ok(Mounts::Wait(format!(
                    "Volume {:?} is not provisioned yet",
                    n.name
                )));
            }
            out.push(MountSpec::Named {
                name: super::volumes::local_name(&v)?,
                path: m.path.clone(),
                readonly: m.read_only,
            });
        } else if let Some(t) = &m.tmpfs {
            let Some(bytes) = microsandbox_crds::units::parse_quantity(&t.size) else {
                return Ok(Mounts::Invalid(format!(
                    "tmpfs size {:?} is not a quantity",
                    t.size
                )));
            };
            out.push(MountSpec::Tmpfs {
                path: m.path.clone(),
                size_mib: u32::try_from(microsandbox_crds::units::bytes_to_mib(bytes))
                    .unwrap_or(u32::MAX),
            });
        } else if let Some(b) = &m.bind {
            out.push(MountSpec::Bind {
                host_path: b.host_path.clone(),
                path: m.path.clone(),
                readonly: m.read_only,
            });
        }
    }
    Ok(Mounts::Ready(out))
}

/// Publish a Warning Event (`SecretBlocked`) for each use of a secret placeholder the egress
/// proxy blocked since the last call, so `kubectl describe sandbox` shows it.
async fn publish_violations(ctx: &Context, s: &Sandbox, local: &str, uid: &str) {
    if s.spec.secrets.is_empty() {
        return;
    }
    let from = ctx
        .violations_published
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(uid)
        .copied()
        .unwrap_or(0);
    let Ok((new, next)) = ctx.manager.secret_violations(local, Some(from)).await else {
        return;
    };
    for v in new.iter().take(MAX_VIOLATION_EVENTS) {
        let note = format!(
            "secret {} sent to {} was blocked: {}",
            v.secret, v.host, v.reason
        );
        publish(
            ctx,
            s,
            EventType::Warning,
            Reason::SecretBlocked,
            EventAction::Egress,
            note,
        )
        .await;
    }
    if new.len() > MAX_VIOLATION_EVENTS {
        let more = new.len() - MAX_VIOLATION_EVENTS;
        let note =
            format!("{more} more blocked uses of secrets (see the agent's secrets/violations)");
        publish(
            ctx,
            s,
            EventType::Warning,
            Reason::SecretBlocked,
            EventAction::Egress,
            note,
        )
        .await;
    }
    ctx.violations_published
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(uid.to_string(), next);
}

/// Remove the sandbox; idempotent (a missing sandbox is already cleaned up).
async fn cleanup(s: &Sandbox, ctx: &Context) -> Result<Action, ClusterError> {
    let (local, uid) = identity(s)?;
    ctx.violations_published
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&uid);
    match ctx.manager.remove(&local).await {
        Ok(()) | Err(AgentError::NotFound(_)) => {
            tracing::info!(sandbox = %local, object = %s.name_any(), "removed");
            Ok(Action::await_change())
        }
        Err(e) => Err(e.into()),
    }
}

/// Server-side apply of `status.agent` under this agent's field manager, skipped when unchanged.
async fn write(
    api: &Api<Sandbox>,
    s: &Sandbox,
    old: Option<&AgentReport>,
    new: AgentReport,
) -> Result<(), ClusterError> {
    if old == Some(&new) {
        return Ok(());
    }
    let status = serde_json::json!({ "agent": new });
    microsandbox_crds::events::apply_status(api, s, FIELD_MANAGER, status).await?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    s: &Sandbox,
    type_: EventType,
    reason: Reason,
    action: EventAction,
    note: String,
) {
    microsandbox_crds::events::publish(&ctx.recorder, s, type_, reason, action, note).await
}

/// Remove cluster-mode sandboxes whose object no longer exists.
async fn sweep(store: Store<Sandbox>, manager: Arc<SandboxManager>) {
    if store.wait_until_ready().await.is_err() {
        return;
    }
    loop {
        let live: HashSet<String> = store.state().iter().filter_map(|s| s.uid()).collect();
        for info in manager.list().await {
            let Some(uid) = info.labels.get(LABEL_UID) else {
                continue;
            };
            if !live.contains(uid) {
                tracing::info!(sandbox = %info.name, uid, "its Sandbox object is gone; removing");
                if let Err(e) = manager.remove(&info.name).await {
                    tracing::warn!(sandbox = %info.name, error = %e, "cannot remove orphan");
                }
            }
        }
        tokio::time::sleep(SWEEP).await;
    }
}
