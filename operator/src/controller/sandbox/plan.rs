//! The decision of one Sandbox reconcile, pure: from what the reconcile found out ([`Facts`]) to
//! what it must do ([`Plan`]: the status to apply, Events to publish, whether to delete the
//! object, when to look again). The caller gathers the facts (scheduling, sealing) and executes
//! the plan; every transition is unit-tested here without an API server.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use microsandbox_crds::common::{condition, set_condition};
use microsandbox_crds::{ConditionType, EventAction, Reason, Sandbox, SandboxPhase, SandboxStatus};
use microsandbox_wire::api::SandboxState;
use std::time::Duration;

use super::super::sealing::Sealing;
use crate::status::{self, Binding, Observed};

/// Retry of a sandbox no node fits (capacity may free up) or whose secrets cannot be sealed yet.
pub const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(5);

/// What one reconcile found out about a (non-deleted) Sandbox.
pub struct Facts<'a> {
    pub sandbox: &'a Sandbox,
    pub now: Timestamp,
    /// How often a bound sandbox is looked at anyway.
    pub resync: Duration,
    /// Invalid spec, unschedulable, or bound (with the node's liveness).
    pub binding: Binding,
    /// The binding was made by this reconcile.
    pub newly_bound: bool,
    /// The node-agent's report (only one written for this incarnation of the object).
    pub agent: Option<status::AgentReport>,
    /// For a bound sandbox: what its sealed secrets should be.
    pub sealing: Option<Sealing>,
    /// When the bound node's lease expires, if it is alive.
    pub lease_expires: Option<Timestamp>,
}

/// An Event to publish about the Sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedEvent {
    pub type_: EventType,
    pub reason: Reason,
    pub action: EventAction,
    pub note: String,
}

/// When to reconcile again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Requeue(Duration),
    /// Only a change of the object (or of what it watches) helps.
    AwaitChange,
}

/// What one reconcile must do, in this order: publish, apply the status, delete, requeue.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub events: Vec<PlannedEvent>,
    pub status: SandboxStatus,
    /// `lifetime.ttlAfterFinished` elapsed: delete the object.
    pub delete: bool,
    pub next: Next,
}

/// Decide. Pure.
pub fn plan(f: Facts<'_>) -> Plan {
    let s = f.sandbox;
    let mut events = Vec::new();
    let mut event = |type_, reason, action, note: String| {
        events.push(PlannedEvent {
            type_,
            reason,
            action,
            note,
        })
    };
    match &f.binding {
        Binding::Invalid(errors) => event(
            EventType::Warning,
            Reason::InvalidSpec,
            EventAction::Validate,
            errors.to_string(),
        ),
        Binding::Bound { node, .. } if f.newly_bound => event(
            EventType::Normal,
            Reason::Scheduled,
            EventAction::Schedule,
            format!("bound to node {node}"),
        ),
        Binding::Unschedulable(u)
            if previous_message(s, ConditionType::Scheduled) != Some(&u.message) =>
        {
            event(
                EventType::Warning,
                Reason::FailedScheduling,
                EventAction::Schedule,
                u.message.clone(),
            )
        }
        _ => {}
    }
    let observed = Observed {
        generation: s.metadata.generation,
        binding: f.binding,
        agent: f.agent,
        deleting: false,
    };
    let mut new = status::compute(s.status.as_ref(), &observed, f.now);
    if let Binding::Invalid(_) = observed.binding {
        // Only a change of the object can fix it.
        return Plan {
            events,
            status: new,
            delete: false,
            next: Next::AwaitChange,
        };
    }
    let unsealed = match (&observed.binding, f.sealing) {
        (Binding::Bound { node, .. }, Some(sealing)) => {
            let sealed = seal(s, node, sealing, &mut new, f.now);
            if let Some(e) = sealed.event {
                events.push(e);
            }
            !sealed.ok
        }
        _ => false,
    };

    if let Some(wait) = ttl_remaining(s, &new, f.now) {
        if wait.is_zero() {
            events.push(PlannedEvent {
                type_: EventType::Normal,
                reason: Reason::TtlExpired,
                action: EventAction::Delete,
                note: "lifetime.ttlAfterFinished reached".into(),
            });
            return Plan {
                events,
                status: new,
                delete: true,
                next: Next::AwaitChange,
            };
        }
        return Plan {
            events,
            status: new,
            delete: false,
            next: Next::Requeue(wait.min(f.resync)),
        };
    }

    // When to look again: soon enough to notice an expired node lease within its duration.
    let next = match &observed.binding {
        _ if unsealed => UNSCHEDULABLE_RETRY,
        Binding::Unschedulable(_) => UNSCHEDULABLE_RETRY,
        Binding::Bound { .. } if !observed.agent.as_ref().is_some_and(|a| finished(a.state)) => f
            .lease_expires
            .map(|t| t.duration_since(f.now))
            .and_then(|d| Duration::try_from(d).ok())
            .map_or(f.resync, |d| (d + Duration::from_secs(1)).min(f.resync)),
        Binding::Bound { .. } | Binding::Invalid(_) => f.resync,
    };
    Plan {
        events,
        status: new,
        delete: false,
        next: Next::Requeue(next),
    }
}

pub fn finished(state: SandboxState) -> bool {
    matches!(state, SandboxState::Stopped | SandboxState::Failed)
}

fn previous_message(s: &Sandbox, type_: ConditionType) -> Option<&String> {
    s.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| &c.message)
}

struct Sealed {
    ok: bool,
    event: Option<PlannedEvent>,
}

/// Put the sealing outcome into `new`: `status.sealedSecrets` and the `SecretsSealed` condition,
/// with a Warning when the values were sealed again to a new key or when sealing is stuck for a
/// new reason.
fn seal(
    s: &Sandbox,
    node: &str,
    sealing: Sealing,
    new: &mut SandboxStatus,
    now: Timestamp,
) -> Sealed {
    let previous_key = new.sealed_secrets.as_ref().map(|p| p.recipient.clone());
    let mut event = None;
    let (ok, reason, message) = match sealing {
        Sealing::None => {
            new.sealed_secrets = None;
            return Sealed { ok: true, event };
        }
        Sealing::Sealed(p) => {
            let fresh = new.sealed_secrets.as_ref() != Some(&p);
            if fresh && previous_key.is_some_and(|k| k != p.recipient) {
                event = Some(PlannedEvent {
                    type_: EventType::Warning,
                    reason: Reason::SecretsResealed,
                    action: EventAction::Seal,
                    note: format!("node {node} announced a new sealing key before the sandbox started; sealed again"),
                });
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
        event = Some(PlannedEvent {
            type_: EventType::Warning,
            reason,
            action: EventAction::Seal,
            note: message.clone(),
        });
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
    Sealed { ok, event }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Unschedulable;
    use crate::status::{AgentReport, Liveness};
    use k8s_openapi::jiff::SignedDuration;

    fn t0() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    fn sandbox(lifetime: Option<&str>) -> Sandbox {
        let mut v = serde_json::json!({
            "apiVersion": "microsandbox.dev/v1alpha1", "kind": "Sandbox",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u1", "generation": 1},
            "spec": {"image": "python:3.12"},
        });
        if let Some(ttl) = lifetime {
            v["spec"]["lifetime"] = serde_json::json!({ "ttlAfterFinished": ttl });
        }
        serde_json::from_value(v).unwrap()
    }

    fn bound_to(node: &str) -> Binding {
        Binding::Bound {
            node: node.into(),
            endpoint: None,
            proxy: None,
            liveness: Liveness::Alive,
        }
    }

    fn facts(s: &Sandbox, binding: Binding, now: Timestamp) -> Facts<'_> {
        Facts {
            sandbox: s,
            now,
            resync: Duration::from_secs(60),
            binding,
            newly_bound: false,
            agent: None,
            sealing: None,
            lease_expires: None,
        }
    }

    fn reasons(p: &Plan) -> Vec<Reason> {
        p.events.iter().map(|e| e.reason).collect()
    }

    #[test]
    fn a_new_binding_is_announced_once() {
        let s = sandbox(None);
        let mut f = facts(&s, bound_to("n1"), t0());
        f.newly_bound = true;
        let p = plan(f);
        assert_eq!(reasons(&p), [Reason::Scheduled]);
        assert_eq!(p.events[0].note, "bound to node n1");
        assert_eq!(p.status.node.as_deref(), Some("n1"));
        // Bound, no report yet, no lease expiry known: look again at the resync interval.
        assert_eq!(p.next, Next::Requeue(Duration::from_secs(60)));
        assert!(reasons(&plan(facts(&s, bound_to("n1"), t0()))).is_empty());
    }

    #[test]
    fn unschedulable_warns_only_when_the_reason_changes() {
        let u = || Unschedulable {
            reason: Reason::Unschedulable,
            message: "no node offers microvm".into(),
        };
        let mut s = sandbox(None);
        let first = plan(facts(&s, Binding::Unschedulable(u()), t0()));
        assert_eq!(reasons(&first), [Reason::FailedScheduling]);
        assert_eq!(first.next, Next::Requeue(UNSCHEDULABLE_RETRY));
        s.status = Some(first.status);
        let again = plan(facts(&s, Binding::Unschedulable(u()), t0()));
        assert!(again.events.is_empty(), "{:?}", again.events);
    }

    #[test]
    fn an_invalid_spec_waits_for_a_change() {
        let s = sandbox(None);
        let errors = microsandbox_crds::ValidationErrors(vec![microsandbox_crds::FieldError {
            field: "spec.volumes[0].path".into(),
            message: "must be absolute".into(),
        }]);
        let p = plan(facts(&s, Binding::Invalid(errors), t0()));
        assert_eq!(p.events[0].note, "spec.volumes[0].path: must be absolute");
        assert_eq!(reasons(&p), [Reason::InvalidSpec]);
        assert_eq!(p.next, Next::AwaitChange);
        assert!(!p.delete);
    }

    #[test]
    fn a_finished_sandbox_is_deleted_after_its_ttl() {
        let mut s = sandbox(Some("30s"));
        let stopped = |s: &Sandbox, now| {
            let mut f = facts(s, bound_to("n1"), now);
            f.agent = Some(AgentReport {
                state: SandboxState::Stopped,
                image_digest: None,
                reason: None,
            });
            plan(f)
        };
        let first = stopped(&s, t0());
        assert!(!first.delete);
        assert_eq!(first.next, Next::Requeue(Duration::from_secs(30)));
        s.status = Some(first.status);
        let later = stopped(&s, t0() + SignedDuration::from_secs(31));
        assert!(later.delete);
        assert_eq!(reasons(&later), [Reason::TtlExpired]);
        assert_eq!(later.next, Next::AwaitChange);
    }

    #[test]
    fn unsealable_secrets_retry_soon_and_warn_once() {
        let mut s = sandbox(None);
        let stuck = || Some(Sealing::Unresolved(Reason::NoSealingKey, "no key".into()));
        let mut f = facts(&s, bound_to("n1"), t0());
        f.sealing = stuck();
        let p = plan(f);
        assert_eq!(reasons(&p), [Reason::NoSealingKey]);
        assert_eq!(p.next, Next::Requeue(UNSCHEDULABLE_RETRY));
        s.status = Some(p.status);
        let mut f = facts(&s, bound_to("n1"), t0());
        f.sealing = stuck();
        assert!(plan(f).events.is_empty());
    }
}
