//! The Volume controller: gives each Volume a node (`status.node`) once, so the Sandboxes that
//! mount it can be scheduled there. The node-agent of that node provisions the directory and
//! reports `phase`, `used` and the `Provisioned` condition under its own field manager; the
//! operator only writes `node`, `observedGeneration` and the `Scheduled` condition (and `phase:
//! Pending` while there is no node).

use super::{publish, Context};
use crate::error::{Error, Result, Step};
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
    // Gather: where the Volume is, or where it can go.
    let placement = match v.validate() {
        Err(errors) => Placement::Invalid(errors),
        Ok(()) => match v.status.as_ref().and_then(|s| s.node.clone()) {
            Some(node) => Placement::Kept(node),
            None => {
                let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
                for other in store.state() {
                    if let Some(n) = other.status.as_ref().and_then(|s| s.node.clone()) {
                        *per_node.entry(n).or_default() += 1;
                    }
                }
                let nodes = super::sandbox::node_infos(&ctx, now);
                match scheduler::place_volume(&VolumePlacement::of(&v), &nodes, &per_node, now) {
                    Ok(node) => Placement::New(node),
                    Err(u) => Placement::Unplaced(u),
                }
            }
        },
    };
    // Decide, then execute.
    let plan = plan(&v, placement, now);
    if let Some((type_, reason, note)) = plan.event {
        publish(&ctx, v.as_ref(), type_, reason, EventAction::Place, note).await;
    }
    apply_status(&api, &v, plan.node, plan.phase, plan.conditions)
        .await
        .map_err(|e| Error::step(Step::UpdateStatus, e))?;
    Ok(plan.next)
}

/// Where a Volume's data lives, as one reconcile found out.
enum Placement {
    /// The spec breaks a rule: only a change of the object helps.
    Invalid(microsandbox_crds::ValidationErrors),
    /// Placed earlier, for good.
    Kept(String),
    /// Placed by this reconcile.
    New(String),
    /// No node can hold it yet.
    Unplaced(scheduler::Unschedulable),
}

/// What a Volume reconcile must do.
struct VolumePlan {
    event: Option<(EventType, Reason, String)>,
    node: Option<String>,
    phase: Option<VolumePhase>,
    conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    next: Action,
}

/// Decide. Pure.
fn plan(v: &Volume, placement: Placement, now: Timestamp) -> VolumePlan {
    let mut conditions = v
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let (ok, reason, message) = match &placement {
        Placement::Invalid(errors) => (false, Reason::InvalidSpec, errors.to_string()),
        Placement::Kept(node) | Placement::New(node) => {
            (true, Reason::Placed, format!("data lives on node {node}"))
        }
        Placement::Unplaced(u) => (false, u.reason, u.message.clone()),
    };
    set_condition(
        &mut conditions,
        condition(
            ConditionType::Scheduled,
            ok,
            reason,
            message.clone(),
            v.metadata.generation,
            Time(now),
        ),
    );
    let (event, node, phase, next) = match placement {
        Placement::Invalid(_) => (
            Some((EventType::Warning, reason, message)),
            None,
            Some(VolumePhase::Failed),
            Action::await_change(),
        ),
        // Placed for good; keep the condition current (observedGeneration).
        Placement::Kept(node) => (None, Some(node), None, Action::await_change()),
        Placement::New(node) => (
            Some((
                EventType::Normal,
                Reason::Placed,
                format!("placed on node {node}"),
            )),
            Some(node),
            None,
            Action::await_change(),
        ),
        Placement::Unplaced(_) => (
            Some((EventType::Warning, reason, message)),
            None,
            Some(VolumePhase::Pending),
            Action::requeue(UNPLACED_RETRY),
        ),
    };
    VolumePlan {
        event,
        node,
        phase,
        conditions,
        next,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn volume() -> Volume {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "microsandbox.dev/v1alpha1", "kind": "Volume",
            "metadata": {"name": "data", "namespace": "ns", "generation": 2},
            "spec": {"size": "1Gi"},
        }))
        .unwrap()
    }

    fn t0() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn placing_announces_the_node_once() {
        let v = volume();
        let p = plan(&v, Placement::New("n1".into()), t0());
        let (type_, reason, note) = p.event.unwrap();
        assert_eq!((type_, reason), (EventType::Normal, Reason::Placed));
        assert_eq!(note, "placed on node n1");
        assert_eq!(p.node.as_deref(), Some("n1"));
        assert_eq!(p.conditions[0].reason, Reason::Placed);
        assert_eq!(p.conditions[0].observed_generation, Some(2));
        let kept = plan(&v, Placement::Kept("n1".into()), t0());
        assert!(kept.event.is_none());
        assert_eq!(kept.node.as_deref(), Some("n1"));
    }

    #[test]
    fn unplaced_is_pending_and_retried_invalid_is_failed() {
        let v = volume();
        let u = scheduler::Unschedulable {
            reason: Reason::Unschedulable,
            message: "no node has 1Gi free".into(),
        };
        let p = plan(&v, Placement::Unplaced(u), t0());
        assert_eq!(p.phase, Some(VolumePhase::Pending));
        assert_eq!(p.event.unwrap().1, Reason::Unschedulable);
        assert_eq!(p.conditions[0].status, "False");
        let errors = microsandbox_crds::ValidationErrors(vec![microsandbox_crds::FieldError {
            field: "spec.size".into(),
            message: "too big".into(),
        }]);
        let p = plan(&v, Placement::Invalid(errors), t0());
        assert_eq!(p.phase, Some(VolumePhase::Failed));
        assert_eq!(p.event.unwrap().1, Reason::InvalidSpec);
        assert!(p.node.is_none());
    }
}
