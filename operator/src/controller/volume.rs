//! The Volume controller: gives each Volume a node (`status.node`) once, so the Sandboxes that
//! mount it can be scheduled there. The node-agent of that node provisions the directory and
//! reports `phase`, `used` and the `Provisioned` condition under its own field manager; the
//! operator only writes `node`, `observedGeneration` and the `Scheduled` condition (and `phase:
//! Pending` while there is no node).

use super::{publish, Context};
use crate::error::{Error, Result};
use crate::scheduler::{self, VolumePlacement};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::ResourceExt;
use microsandbox_crds::common::{condition, set_condition};
use microsandbox_crds::{ConditionType, EventAction, Reason, Volume, VolumePhase};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const CONTROLLER: &str = "volume";
/// Retry of a volume no node fits.
const UNPLACED_RETRY: Duration = Duration::from_secs(15);

/// Run the controller until shutdown.
pub async fn run(ctx: Arc<Context>, volumes: Api<Volume>) {
    let controller = Controller::new(volumes, watcher::Config::default());
    let store = controller.store();
    controller
        .shutdown_on_signal()
        .run(
            move |obj, ctx| {
                let store = store.clone();
                async move { reconcile(obj, ctx, store).await }
            },
            |obj, error: &Error, ctx| {
                tracing::warn!(volume = %obj.name_any(), error = %error, "reconcile failed");
                ctx.metrics.reconcile_failed(CONTROLLER, error);
                Action::requeue(Duration::from_secs(10))
            },
            ctx,
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::warn!(error = %e, "volume reconcile failed");
            }
        })
        .await;
}

async fn reconcile(
    v: Arc<Volume>,
    ctx: Arc<Context>,
    store: kube::runtime::reflector::Store<Volume>,
) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    if v.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = v.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<Volume> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Timestamp::now();
    let generation = v.metadata.generation;
    let mut conds = v
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let set = |conds: &mut Vec<_>, ok: bool, reason: Reason, message: String| {
        set_condition(
            conds,
            condition(
                ConditionType::Scheduled,
                ok,
                reason,
                message,
                generation,
                Time(now),
            ),
        )
    };

    if let Err(errors) = v.validate() {
        set(&mut conds, false, Reason::InvalidSpec, errors.to_string());
        publish(
            &ctx,
            v.as_ref(),
            EventType::Warning,
            Reason::InvalidSpec,
            EventAction::Place,
            errors.to_string(),
        )
        .await;
        apply_status(&api, &v, None, Some(VolumePhase::Failed), conds).await?;
        return Ok(Action::await_change());
    }

    if let Some(node) = v.status.as_ref().and_then(|s| s.node.clone()) {
        // Placed for good; keep the condition current (observedGeneration).
        set(
            &mut conds,
            true,
            Reason::Placed,
            format!("data lives on node {node}"),
        );
        apply_status(&api, &v, Some(node), None, conds).await?;
        return Ok(Action::await_change());
    }

    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for other in store.state() {
        if let Some(n) = other.status.as_ref().and_then(|s| s.node.clone()) {
            *per_node.entry(n).or_default() += 1;
        }
    }
    let nodes = super::sandbox::node_infos(&ctx, now);
    match scheduler::place_volume(&VolumePlacement::of(&v), &nodes, &per_node, now) {
        Ok(node) => {
            set(
                &mut conds,
                true,
                Reason::Placed,
                format!("data lives on node {node}"),
            );
            publish(
                &ctx,
                v.as_ref(),
                EventType::Normal,
                Reason::Placed,
                EventAction::Place,
                format!("placed on node {node}"),
            )
            .await;
            apply_status(&api, &v, Some(node), None, conds).await?;
            Ok(Action::await_change())
        }
        Err(u) => {
            set(&mut conds, false, u.reason, u.message.clone());
            publish(
                &ctx,
                v.as_ref(),
                EventType::Warning,
                u.reason,
                EventAction::Place,
                u.message,
            )
            .await;
            apply_status(&api, &v, None, Some(VolumePhase::Pending), conds).await?;
            Ok(Action::requeue(UNPLACED_RETRY))
        }
    }
}

/// Server-side apply of the operator's part of the status, skipped when nothing changed.
async fn apply_status(
    api: &Api<Volume>,
    v: &Volume,
    node: Option<String>,
    phase: Option<VolumePhase>,
    conds: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) -> Result<()> {
    let old = v.status.clone().unwrap_or_default();
    let unchanged = old.node == node
        && (phase.is_none() || old.phase == phase)
        && old.conditions == conds
        && old.observed_generation == v.metadata.generation;
    if unchanged {
        return Ok(());
    }
    let mut status = serde_json::json!({
        "observedGeneration": v.metadata.generation,
        "conditions": conds.into_iter().filter(|c| c.type_ == ConditionType::Scheduled).collect::<Vec<_>>(),
    });
    if let Some(n) = node {
        status["node"] = n.into();
    }
    if let Some(p) = phase {
        status["phase"] = serde_json::to_value(p)?;
    }
    super::apply_status(api, v, status).await
}
