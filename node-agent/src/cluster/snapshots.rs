//! The node-agent's SandboxSnapshot controller: takes the snapshots of the Sandboxes that run on
//! this node (a running one is paused for the copy and resumed after), reports `phase`, `node`,
//! `digest` and `Ready`, pushes a taken snapshot to the registry of `spec.push` (with the
//! credentials the operator sealed to this node, `status.pushCredentials`) and reports
//! `pushedImage` and `Pushed`, and removes the snapshot from the node when its object is deleted
//! (the finalizer stays while a Sandbox made from it exists). Every node-agent sees every snapshot;
//! each acts only on those whose Sandbox (or, once taken, whose `status.node`) is its own.

use super::names;
use super::{ClusterError, FIELD_MANAGER};
use crate::error::AgentError;
use crate::image::PushAuth;
use crate::sandbox::SandboxManager;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::watcher;
use kube::ResourceExt;
use microsandbox_crds::common::{condition, set_condition};
use microsandbox_crds::sealed::Binding;
use microsandbox_crds::snapshot::{registry_host, SandboxSnapshotStatus, SnapshotPush};
use microsandbox_crds::{
    ConditionType, EventAction, Reason, Sandbox, SandboxSnapshot, SnapshotPhase,
};
use microsandbox_wire::api::{SandboxState, SnapshotInfo};
use std::sync::Arc;
use std::time::Duration;

/// Finalizer this agent holds on the snapshots it keeps.
pub const FINALIZER: &str = "microsandbox.dev/node-agent";
/// How soon a snapshot whose Sandbox is not on a node yet (or failed to be taken) is looked at
/// again.
const RETRY: Duration = Duration::from_secs(5);
/// How soon a failed push is tried again.
const PUSH_RETRY: Duration = Duration::from_secs(30);

pub struct Context {
    pub manager: Arc<SandboxManager>,
    /// This node-agent's sealing key: opens the push credentials sealed to it.
    pub key: Arc<microsandbox_crds::sealed::SealingKey>,
    pub node: String,
    pub client: kube::Client,
    pub recorder: microsandbox_crds::events::Events,
}

/// This node's name for snapshot object `snap` (name + uid digits, as for sandboxes): unique
/// across namespaces, and never what an object can name as its image.
pub fn local_name(snap: &SandboxSnapshot) -> Result<String, ClusterError> {
    let uid = snap.uid().ok_or(ClusterError::MissingField("uid"))?;
    Ok(names::local_name(&snap.name_any(), &uid))
}

pub async fn run(ctx: Arc<Context>, api: Api<SandboxSnapshot>) {
    Controller::new(api, watcher::Config::default())
        .run(
            reconcile,
            |s, e: &ClusterError, _| {
                tracing::warn!(snapshot = %s.name_any(), error = %e, "snapshot reconcile failed");
                Action::requeue(RETRY)
            },
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// Whose snapshot this is.
#[derive(Debug, PartialEq, Eq)]
enum Owner {
    /// Taken, or to be taken, here.
    Here,
    /// Another node's.
    Elsewhere,
    /// Its Sandbox is not on a node yet.
    Undecided,
}

/// Pure: the node of a snapshot is `status.node` once taken, else its Sandbox's node.
fn owner(snap_node: Option<&str>, sandbox_node: Option<&str>, me: &str) -> Owner {
    match snap_node.or(sandbox_node) {
        Some(n) if n == me => Owner::Here,
        Some(_) => Owner::Elsewhere,
        None => Owner::Undecided,
    }
}

async fn reconcile(snap: Arc<SandboxSnapshot>, ctx: Arc<Context>) -> Result<Action, ClusterError> {
    let ns = snap
        .namespace()
        .ok_or(ClusterError::MissingField("namespace"))?;
    let api: Api<SandboxSnapshot> = Api::namespaced(ctx.client.clone(), &ns);
    let sandboxes: Api<Sandbox> = Api::namespaced(ctx.client.clone(), &ns);
    let snap_node = snap.status.as_ref().and_then(|s| s.node.clone());
    let sandbox = if snap_node.is_some() {
        None
    } else {
        sandboxes.get_opt(&snap.spec.sandbox_ref.name).await?
    };
    let sandbox_node = sandbox
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.node.clone());
    match owner(snap_node.as_deref(), sandbox_node.as_deref(), &ctx.node) {
        Owner::Here => {}
        Owner::Elsewhere => return Ok(Action::await_change()),
        Owner::Undecided => {
            // Any node may say so (the same words each time: the apply is idempotent).
            if snap.metadata.deletion_timestamp.is_none() {
                let (reason, why) = match &sandbox {
                    None => (
                        Reason::SandboxNotFound,
                        format!("Sandbox {:?} does not exist", snap.spec.sandbox_ref.name),
                    ),
                    Some(_) => (
                        Reason::SnapshotNotReady,
                        "its Sandbox is not on a node yet".to_string(),
                    ),
                };
                write(&api, &snap, pending(&snap, reason, why)).await?;
            }
            return Ok(Action::requeue(RETRY));
        }
    }
    finalizer(&api, FINALIZER, snap, |event| async {
        match event {
            Finalizer::Apply(s) => take(&s, sandbox.as_ref(), &api, &sandboxes, &ctx).await,
            Finalizer::Cleanup(s) => remove(&s, &ctx).await,
        }
    })
    .await
    .map_err(|e| ClusterError::Finalizer(Box::new(e)))
}

/// The status of a snapshot not taken (yet).
fn pending(snap: &SandboxSnapshot, reason: Reason, why: String) -> SandboxSnapshotStatus {
    let phase = if reason == Reason::SnapshotFailed {
        SnapshotPhase::Failed
    } else {
        SnapshotPhase::Pending
    };
    SandboxSnapshotStatus {
        phase: Some(phase),
        conditions: vec![condition(
            ConditionType::Ready,
            false,
            reason,
            why,
            snap.metadata.generation,
            Time(Timestamp::now()),
        )],
        ..Default::default()
    }
}

/// The status of a snapshot taken on `node`.
fn taken(
    snap: &SandboxSnapshot,
    node: &str,
    info: &SnapshotInfo,
    source: &str,
) -> SandboxSnapshotStatus {
    SandboxSnapshotStatus {
        phase: Some(SnapshotPhase::Ready),
        node: Some(node.to_string()),
        digest: Some(info.digest.clone()),
        layers: i64::try_from(info.layers).ok(),
        source_image: Some(source.to_string()),
        conditions: vec![condition(
            ConditionType::Ready,
            true,
            Reason::SnapshotTaken,
            format!("kept on node {node}"),
            snap.metadata.generation,
            Time(Timestamp::now()),
        )],
        ..Default::default()
    }
}

async fn take(
    snap: &SandboxSnapshot,
    sandbox: Option<&Sandbox>,
    api: &Api<SandboxSnapshot>,
    sandboxes: &Api<Sandbox>,
    ctx: &Context,
) -> Result<Action, ClusterError> {
    let local = local_name(snap)?;
    let done = snap.status.as_ref().and_then(|s| s.phase) == Some(SnapshotPhase::Ready);
    if done {
        if ctx.manager.snapshots().iter().any(|s| s.name == local) {
            return push(snap, &local, api, ctx).await;
        }
        let why = format!(
            "the snapshot is gone from node {} (its state was wiped)",
            ctx.node
        );
        let mut status = pending(snap, Reason::SnapshotFailed, why);
        status.node = Some(ctx.node.clone());
        write(api, snap, status).await?;
        return Ok(Action::await_change());
    }
    let sandbox = match sandbox {
        Some(s) => s.clone(),
        None => match sandboxes.get_opt(&snap.spec.sandbox_ref.name).await? {
            Some(s) => s,
            None => return Ok(Action::requeue(RETRY)),
        },
    };
    let uid = sandbox.uid().ok_or(ClusterError::MissingField("uid"))?;
    let sandbox_local = names::local_name(&sandbox.name_any(), &uid);
    match copy(ctx, &sandbox_local, &local).await {
        Ok(info) => {
            let source = ctx
                .manager
                .get(&sandbox_local)
                .await
                .map(|i| i.image)
                .unwrap_or_else(|_| sandbox.spec.image.clone());
            write(api, snap, taken(snap, &ctx.node, &info, &source)).await?;
            let note = format!(
                "Sandbox {} saved on node {} ({} layers)",
                sandbox.name_any(),
                ctx.node,
                info.layers
            );
            publish(ctx, snap, EventType::Normal, Reason::SnapshotTaken, note).await;
            Ok(Action::await_change())
        }
        // Not created on this node yet: look again soon.
        Err(AgentError::NotFound(_)) => Ok(Action::requeue(RETRY)),
        Err(e) => {
            let why = e.to_string();
            write(
                api,
                snap,
                pending(snap, Reason::SnapshotFailed, why.clone()),
            )
            .await?;
            publish(ctx, snap, EventType::Warning, Reason::SnapshotFailed, why).await;
            Ok(Action::requeue(RETRY * 2))
        }
    }
}

/// Why a due push cannot start: the credentials it needs are not (yet) sealed to this node.
fn credentials_missing(
    snap: &SandboxSnapshot,
    push: &SnapshotPush,
    me: &str,
) -> Result<Option<String>, ClusterError> {
    let Some(secret) = &push.secret_ref else {
        return Ok(None);
    };
    let registry = crate::image::resolve(&push.image, &Default::default())
        .map(|r| registry_host(r.canonical.registry()))
        .map_err(|e| AgentError::InvalidRequest(e.to_string()))?;
    let sealed = snap
        .status
        .as_ref()
        .and_then(|s| s.push_credentials.as_ref());
    Ok(match sealed {
        Some(c) if c.secret == secret.name && c.registry == registry && c.sealed.recipient == me => None,
        _ => Some(format!(
            "waiting for the operator to seal the credentials of Secret {:?} for {registry} to this node",
            secret.name
        )),
    })
}

/// `spec.push` of a snapshot taken here: push it (with the sealed credentials when it names a
/// Secret), report `pushedImage` and `Pushed`.
async fn push(
    snap: &SandboxSnapshot,
    local: &str,
    api: &Api<SandboxSnapshot>,
    ctx: &Context,
) -> Result<Action, ClusterError> {
    let Some(push) = snap.push_due().cloned() else {
        return Ok(Action::await_change());
    };
    let report = |ok: bool, reason: Reason, why: String, pushed: Option<String>| {
        let mut status = snap.status.clone().unwrap_or_default();
        if pushed.is_some() {
            status.pushed_image = pushed;
        }
        set_condition(
            &mut status.conditions,
            condition(
                ConditionType::Pushed,
                ok,
                reason,
                why,
                snap.metadata.generation,
                Time(Timestamp::now()),
            ),
        );
        status
    };
    if let Some(why) = credentials_missing(snap, &push, &ctx.key.public_b64())? {
        write(api, snap, report(false, Reason::PushPending, why, None)).await?;
        return Ok(Action::requeue(RETRY));
    }
    let credentials = match &snap
        .status
        .as_ref()
        .and_then(|s| s.push_credentials.clone())
    {
        Some(c) if push.secret_ref.is_some() => {
            let (ns, name) = (snap.namespace().unwrap_or_default(), snap.name_any());
            let uid = snap.uid().unwrap_or_default();
            let binding = Binding {
                namespace: &ns,
                name: &name,
                uid: &uid,
                node: &ctx.node,
            };
            match ctx.key.open_credentials(&c.sealed, binding) {
                Ok(creds) => PushAuth::Given(creds),
                Err(e) => {
                    let why = format!("the sealed push credentials do not open: {e}");
                    write(api, snap, report(false, Reason::PushFailed, why, None)).await?;
                    return Ok(Action::requeue(PUSH_RETRY));
                }
            }
        }
        // Never the node's own credentials for a namespace's push.
        _ => PushAuth::Anonymous,
    };
    match ctx
        .manager
        .push_snapshot(local, &push.image, credentials)
        .await
    {
        Ok(pushed) => {
            let image = format!("{}@{}", push.image, pushed.digest);
            let why = format!("pushed as {image}");
            write(
                api,
                snap,
                report(true, Reason::SnapshotPushed, why.clone(), Some(image)),
            )
            .await?;
            publish(ctx, snap, EventType::Normal, Reason::SnapshotPushed, why).await;
            Ok(Action::await_change())
        }
        Err(e) => {
            let why = format!("push to {}: {e}", push.image);
            write(
                api,
                snap,
                report(false, Reason::PushFailed, why.clone(), None),
            )
            .await?;
            publish(ctx, snap, EventType::Warning, Reason::PushFailed, why).await;
            Ok(Action::requeue(PUSH_RETRY))
        }
    }
}

/// Save `sandbox`'s files as snapshot `local`: a running sandbox is paused for the copy and
/// resumed after, whatever the copy did.
async fn copy(ctx: &Context, sandbox: &str, local: &str) -> Result<SnapshotInfo, AgentError> {
    let info = ctx.manager.get(sandbox).await?;
    let paused_here = info.state == SandboxState::Running;
    if paused_here {
        ctx.manager.pause(sandbox).await?;
    }
    let saved = ctx.manager.snapshot(sandbox, local).await;
    if paused_here {
        ctx.manager.resume(sandbox).await?;
    }
    saved
}

async fn remove(snap: &SandboxSnapshot, ctx: &Context) -> Result<Action, ClusterError> {
    let local = local_name(snap)?;
    match ctx.manager.remove_snapshot(&local).await {
        Ok(_) | Err(AgentError::Image(crate::image::ImageError::NotFound(_))) => {
            Ok(Action::await_change())
        }
        // A Sandbox made from it still runs: the finalizer stays until it is gone.
        Err(e) => Err(e.into()),
    }
}

/// What this node-agent applies as the status: `status`, with what it wrote before and does not
/// restate (the pushed image, its other condition) carried over, since a server-side apply
/// removes the fields its manager no longer names; never the operator's `pushCredentials`.
fn merged(
    old: Option<&SandboxSnapshotStatus>,
    mut status: SandboxSnapshotStatus,
) -> SandboxSnapshotStatus {
    status.push_credentials = None;
    if let Some(old) = old {
        if status.pushed_image.is_none() {
            status.pushed_image = old.pushed_image.clone();
        }
        for c in &old.conditions {
            let ours = [ConditionType::Ready, ConditionType::Pushed]
                .iter()
                .any(|t| c.type_ == *t);
            if ours && !status.conditions.iter().any(|n| n.type_ == c.type_) {
                status.conditions.push(c.clone());
            }
        }
    }
    status
}

/// Apply `status` unless it says what the object already says (ignoring transition times).
async fn write(
    api: &Api<SandboxSnapshot>,
    snap: &SandboxSnapshot,
    status: SandboxSnapshotStatus,
) -> Result<(), ClusterError> {
    let status = merged(snap.status.as_ref(), status);
    let same = |a: &SandboxSnapshotStatus, b: &SandboxSnapshotStatus| {
        let key = |s: &SandboxSnapshotStatus| {
            (
                s.phase,
                s.node.clone(),
                s.digest.clone(),
                s.pushed_image.clone(),
                s.conditions
                    .iter()
                    .map(|c| {
                        (
                            c.type_.clone(),
                            c.status.clone(),
                            c.reason.clone(),
                            c.message.clone(),
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        };
        key(a) == key(b)
    };
    if snap.status.as_ref().is_some_and(|old| same(old, &status)) {
        return Ok(());
    }
    let value = serde_json::to_value(&status).map_err(|e| AgentError::Internal(e.to_string()))?;
    microsandbox_crds::events::apply_status(api, snap, FIELD_MANAGER, value).await?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    snap: &SandboxSnapshot,
    type_: EventType,
    reason: Reason,
    note: String,
) {
    microsandbox_crds::events::publish(
        &ctx.recorder,
        snap,
        type_,
        reason,
        EventAction::Snapshot,
        note,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_write_keeps_what_this_agent_wrote_and_never_takes_the_operators_fields() {
        let cond = |t: ConditionType, ok: bool| {
            condition(
                t,
                ok,
                Reason::SnapshotTaken,
                "m",
                None,
                Time(Timestamp::now()),
            )
        };
        let old = SandboxSnapshotStatus {
            pushed_image: Some("reg.test/a:1@sha256:00".into()),
            push_credentials: Some(microsandbox_crds::snapshot::SealedPushCredentials {
                registry: "reg.test".into(),
                secret: "creds".into(),
                secret_version: "1".into(),
                sealed: microsandbox_crds::SealedSecrets {
                    recipient: "K".into(),
                    enc: String::new(),
                    ciphertext: String::new(),
                },
            }),
            conditions: vec![
                cond(ConditionType::Ready, true),
                cond(ConditionType::Pushed, true),
            ],
            ..Default::default()
        };
        let new = SandboxSnapshotStatus {
            conditions: vec![cond(ConditionType::Ready, false)],
            ..Default::default()
        };
        let m = merged(Some(&old), new);
        assert_eq!(m.pushed_image, old.pushed_image);
        assert!(m.push_credentials.is_none());
        let types: Vec<(&str, &str)> = m
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(types, [("Ready", "False"), ("Pushed", "True")]);
        assert!(merged(None, SandboxSnapshotStatus::default())
            .conditions
            .is_empty());
    }

    #[test]
    fn a_snapshot_belongs_to_its_node_then_to_its_sandboxs() {
        assert_eq!(owner(Some("n1"), Some("n2"), "n1"), Owner::Here);
        assert_eq!(owner(Some("n2"), Some("n1"), "n1"), Owner::Elsewhere);
        assert_eq!(owner(None, Some("n1"), "n1"), Owner::Here);
        assert_eq!(owner(None, Some("n2"), "n1"), Owner::Elsewhere);
        assert_eq!(owner(None, None, "n1"), Owner::Undecided);
    }
}
