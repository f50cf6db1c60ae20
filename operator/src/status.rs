//! A Sandbox's status from what the operator knows: whether and where it is bound, whether that
//! node's agent is alive, and what the agent reports about the sandbox. Pure, so every transition
//! is unit-tested; `lastTransitionTime` moves only when a condition's status changes
//! ([`microsandbox_crds::common::set_condition`]).

use crate::scheduler::Unschedulable;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use microsandbox_crds::common::{condition, set_condition};
use microsandbox_crds::{ConditionType, Reason, SandboxPhase, SandboxStatus, ValidationErrors};
use microsandbox_wire::api::{SandboxState, StopReason};

/// Where the sandbox stands with respect to nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum Binding {
    /// The spec breaks a rule (it will not be scheduled until it changes).
    Invalid(ValidationErrors),
    /// No node fits.
    Unschedulable(Unschedulable),
    /// Bound to `node`.
    Bound {
        node: String,
        endpoint: Option<String>,
        /// API server pod-proxy path to the node's agent.
        proxy: Option<String>,
        liveness: Liveness,
    },
}

/// Whether the bound node's agent is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// The lease expired at this time (or the node never renewed: `None`).
    Lost {
        since: Option<Timestamp>,
    },
    /// No lease exists for the node.
    Gone,
}

/// What the node-agent says about the sandbox (`GET /v1/sandboxes/{name}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReport {
    pub state: SandboxState,
    pub image_digest: Option<String>,
    /// Why it stopped or failed, e.g. `oom-killed`.
    pub reason: Option<StopReason>,
}

/// Everything the status is computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub generation: Option<i64>,
    pub binding: Binding,
    /// `None`: the agent has not reported (not created yet, or unreachable).
    pub agent: Option<AgentReport>,
    /// The object has a deletionTimestamp.
    pub deleting: bool,
}

/// The new status. `old` supplies transition times, `startedAt` and the last known phase while
/// the node is lost.
pub fn compute(old: Option<&SandboxStatus>, observed: &Observed, now: Timestamp) -> SandboxStatus {
    let mut status = old.cloned().unwrap_or_default();
    let generation = observed.generation;
    let t = Time(now);
    status.observed_generation = generation;
    let mut set = |type_: ConditionType, ok: bool, reason: Reason, message: String| {
        set_condition(
            &mut status.conditions,
            condition(type_, ok, reason, message, generation, t.clone()),
        );
    };

    let (phase, ready, reason, message) = match &observed.binding {
        Binding::Invalid(errors) => {
            let msg = errors.to_string();
            set(
                ConditionType::Scheduled,
                false,
                Reason::InvalidSpec,
                msg.clone(),
            );
            (SandboxPhase::Failed, false, Reason::InvalidSpec, msg)
        }
        Binding::Unschedulable(u) => {
            set(ConditionType::Scheduled, false, u.reason, u.message.clone());
            (
                SandboxPhase::Pending,
                false,
                Reason::NotScheduled,
                format!("waiting for a node: {}", u.message),
            )
        }
        Binding::Bound {
            node,
            endpoint,
            proxy,
            liveness,
        } => {
            set(
                ConditionType::Scheduled,
                true,
                Reason::Bound,
                format!("bound to node {node}"),
            );
            let bound = bound_phase(
                node,
                *liveness,
                observed.agent.as_ref(),
                status.phase,
                observed.deleting,
            );
            status.node = Some(node.clone());
            status.agent_endpoint = endpoint.clone();
            status.agent_proxy = proxy.clone();
            if let Some(a) = &observed.agent {
                if let Some(d) = a.image_digest.as_ref().filter(|d| !d.is_empty()) {
                    status.image_digest = Some(d.clone());
                }
            }
            bound
        }
    };
    if phase == SandboxPhase::Running && status.started_at.is_none() {
        status.started_at = Some(Time(now));
    }
    status.phase = Some(phase);
    set_condition(
        &mut status.conditions,
        condition(
            ConditionType::Ready,
            ready,
            reason,
            message,
            generation,
            Time(now),
        ),
    );
    status
}

fn bound_phase(
    node: &str,
    liveness: Liveness,
    agent: Option<&AgentReport>,
    last: Option<SandboxPhase>,
    deleting: bool,
) -> (SandboxPhase, bool, Reason, String) {
    match liveness {
        Liveness::Alive => {}
        Liveness::Lost { since } => {
            let when = since.map_or_else(|| "never renewed".into(), |t| format!("expired at {t}"));
            // The agent cannot say what happened: keep the last known phase.
            return (
                last.unwrap_or(SandboxPhase::Pending),
                false,
                Reason::NodeLost,
                format!("node-agent on {node} is not renewing its lease ({when})"),
            );
        }
        Liveness::Gone => {
            return (
                last.unwrap_or(SandboxPhase::Pending),
                false,
                Reason::NodeLost,
                format!("node-agent on {node} has no lease (agent removed or never started)"),
            );
        }
    }
    if deleting {
        return (
            SandboxPhase::Stopping,
            false,
            Reason::Stopping,
            "the Sandbox is being deleted".into(),
        );
    }
    let Some(a) = agent else {
        return (
            SandboxPhase::Creating,
            false,
            Reason::WaitingForAgent,
            format!("waiting for the node-agent on {node} to create the sandbox"),
        );
    };
    let why = |default: &str| {
        a.reason
            .as_ref()
            .map_or_else(|| default.to_string(), |r| r.to_string())
    };
    match a.state {
        SandboxState::Creating => (
            SandboxPhase::Creating,
            false,
            Reason::Creating,
            "pulling the image and booting".into(),
        ),
        SandboxState::Running => (
            SandboxPhase::Running,
            true,
            Reason::Running,
            format!("running on {node}"),
        ),
        SandboxState::Paused => (
            SandboxPhase::Paused,
            false,
            Reason::Paused,
            format!("paused on {node} (spec.paused)"),
        ),
        // Still Ready: the next exec or file operation resumes it.
        SandboxState::Suspended => (
            SandboxPhase::Suspended,
            true,
            Reason::Suspended,
            format!("suspended on {node} after lifetime.idleTimeout; the next exec resumes it"),
        ),
        SandboxState::Draining => (
            SandboxPhase::Stopping,
            false,
            Reason::Stopping,
            why("draining"),
        ),
        SandboxState::Stopped if a.reason == Some(StopReason::LifetimeExpired) => (
            SandboxPhase::Stopped,
            false,
            Reason::LifetimeExpired,
            "lifetime.shutdownAfter elapsed".into(),
        ),
        SandboxState::Stopped => (
            SandboxPhase::Stopped,
            false,
            Reason::Stopped,
            why("stopped"),
        ),
        SandboxState::Failed => (SandboxPhase::Failed, false, Reason::Failed, why("failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use k8s_openapi::jiff::SignedDuration;
    use microsandbox_crds::FieldError;

    fn t0() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    fn later(secs: i64) -> Timestamp {
        t0() + SignedDuration::from_secs(secs)
    }

    fn bound(liveness: Liveness, agent: Option<SandboxState>) -> Observed {
        Observed {
            generation: Some(1),
            binding: Binding::Bound {
                node: "n1".into(),
                endpoint: Some("http://10.0.0.1:7070".into()),
                proxy: Some("/api/v1/namespaces/ms/pods/agent-1:7070/proxy".into()),
                liveness,
            },
            agent: agent.map(|state| AgentReport {
                state,
                image_digest: Some("sha256:abc".into()),
                reason: None,
            }),
            deleting: false,
        }
    }

    fn cond(s: &SandboxStatus, type_: ConditionType) -> &Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn unschedulable_is_pending_with_the_reason() {
        let obs = Observed {
            generation: Some(3),
            binding: Binding::Unschedulable(Unschedulable {
                reason: Reason::Unschedulable,
                message: "0/2 nodes are available: 2 too many sandboxes".into(),
            }),
            agent: None,
            deleting: false,
        };
        let s = compute(None, &obs, t0());
        assert_eq!(s.phase, Some(SandboxPhase::Pending));
        assert_eq!(s.node, None);
        assert_eq!(s.observed_generation, Some(3));
        let sch = cond(&s, ConditionType::Scheduled);
        assert_eq!(sch.status, "False");
        assert_eq!(sch.reason, Reason::Unschedulable);
        assert_eq!(sch.message, "0/2 nodes are available: 2 too many sandboxes");
        assert_eq!(sch.observed_generation, Some(3));
        let ready = cond(&s, ConditionType::Ready);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, Reason::NotScheduled);
    }

    #[test]
    fn invalid_spec_fails_with_the_messages() {
        let obs = Observed {
            generation: Some(1),
            binding: Binding::Invalid(ValidationErrors(vec![FieldError {
                field: "spec.resources.cpus".into(),
                message: "cpus must be between 1 and 64".into(),
            }])),
            agent: None,
            deleting: false,
        };
        let s = compute(None, &obs, t0());
        assert_eq!(s.phase, Some(SandboxPhase::Failed));
        let sch = cond(&s, ConditionType::Scheduled);
        assert_eq!(sch.reason, Reason::InvalidSpec);
        assert_eq!(
            sch.message,
            "spec.resources.cpus: cpus must be between 1 and 64"
        );
    }

    #[test]
    fn lifecycle_creating_running_stopped() {
        let s1 = compute(None, &bound(Liveness::Alive, None), t0());
        assert_eq!(s1.phase, Some(SandboxPhase::Creating));
        assert_eq!(s1.node.as_deref(), Some("n1"));
        assert_eq!(s1.agent_endpoint.as_deref(), Some("http://10.0.0.1:7070"));
        assert_eq!(
            s1.agent_proxy.as_deref(),
            Some("/api/v1/namespaces/ms/pods/agent-1:7070/proxy")
        );
        assert_eq!(cond(&s1, ConditionType::Scheduled).status, "True");
        assert_eq!(
            cond(&s1, ConditionType::Ready).reason,
            Reason::WaitingForAgent
        );
        assert_eq!(s1.started_at, None);

        let s2 = compute(
            Some(&s1),
            &bound(Liveness::Alive, Some(SandboxState::Creating)),
            later(1),
        );
        assert_eq!(s2.phase, Some(SandboxPhase::Creating));
        assert_eq!(cond(&s2, ConditionType::Ready).reason, Reason::Creating);

        let s3 = compute(
            Some(&s2),
            &bound(Liveness::Alive, Some(SandboxState::Running)),
            later(2),
        );
        assert_eq!(s3.phase, Some(SandboxPhase::Running));
        assert_eq!(s3.started_at, Some(Time(later(2))));
        assert_eq!(s3.image_digest.as_deref(), Some("sha256:abc"));
        let ready = cond(&s3, ConditionType::Ready);
        assert_eq!(ready.status, "True");
        assert_eq!(ready.last_transition_time, Time(later(2)));

        // Running again later: startedAt and the transition time stay.
        let s4 = compute(
            Some(&s3),
            &bound(Liveness::Alive, Some(SandboxState::Running)),
            later(60),
        );
        assert_eq!(s4, s3);

        let mut stopped = bound(Liveness::Alive, Some(SandboxState::Stopped));
        stopped.agent.as_mut().unwrap().reason = Some(StopReason::OomKilled);
        let s5 = compute(Some(&s4), &stopped, later(90));
        assert_eq!(s5.phase, Some(SandboxPhase::Stopped));
        let ready = cond(&s5, ConditionType::Ready);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", Reason::Stopped.as_str())
        );
        assert_eq!(ready.message, "oom-killed");
        assert_eq!(ready.last_transition_time, Time(later(90)));
        assert_eq!(s5.started_at, Some(Time(later(2))));
    }

    #[test]
    fn scheduled_transition_time_is_kept_while_status_stays() {
        let s1 = compute(None, &bound(Liveness::Alive, None), t0());
        let s2 = compute(
            Some(&s1),
            &bound(Liveness::Alive, Some(SandboxState::Running)),
            later(10),
        );
        assert_eq!(
            cond(&s2, ConditionType::Scheduled).last_transition_time,
            Time(t0())
        );
        // Ready: False -> True moves its time.
        assert_eq!(
            cond(&s2, ConditionType::Ready).last_transition_time,
            Time(later(10))
        );
    }

    #[test]
    fn pending_then_bound_moves_scheduled_transition() {
        let pending = Observed {
            generation: Some(1),
            binding: Binding::Unschedulable(Unschedulable {
                reason: Reason::Unschedulable,
                message: "0/0 nodes are available".into(),
            }),
            agent: None,
            deleting: false,
        };
        let s1 = compute(None, &pending, t0());
        // Still pending later, with a new message: time stays.
        let s2 = compute(Some(&s1), &pending, later(30));
        assert_eq!(
            cond(&s2, ConditionType::Scheduled).last_transition_time,
            Time(t0())
        );
        let s3 = compute(Some(&s2), &bound(Liveness::Alive, None), later(40));
        assert_eq!(
            cond(&s3, ConditionType::Scheduled).last_transition_time,
            Time(later(40))
        );
        assert_eq!(cond(&s3, ConditionType::Scheduled).status, "True");
    }

    #[test]
    fn lost_node_keeps_phase_and_says_so() {
        let running = compute(
            None,
            &bound(Liveness::Alive, Some(SandboxState::Running)),
            t0(),
        );
        let lost = compute(
            Some(&running),
            &bound(
                Liveness::Lost {
                    since: Some(later(40)),
                },
                None,
            ),
            later(45),
        );
        assert_eq!(lost.phase, Some(SandboxPhase::Running));
        let ready = cond(&lost, ConditionType::Ready);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, Reason::NodeLost);
        assert_eq!(
            ready.message,
            "node-agent on n1 is not renewing its lease (expired at 2025-06-01T12:00:40Z)"
        );
        assert_eq!(ready.last_transition_time, Time(later(45)));

        // Agent back: Ready again with a new transition time.
        let back = compute(
            Some(&lost),
            &bound(Liveness::Alive, Some(SandboxState::Running)),
            later(50),
        );
        assert_eq!(cond(&back, ConditionType::Ready).status, "True");
        assert_eq!(
            cond(&back, ConditionType::Ready).last_transition_time,
            Time(later(50))
        );
        assert_eq!(back.started_at, Some(Time(t0())));
    }

    #[test]
    fn node_without_lease_is_lost() {
        let s = compute(None, &bound(Liveness::Gone, None), t0());
        assert_eq!(s.phase, Some(SandboxPhase::Pending));
        assert_eq!(cond(&s, ConditionType::Ready).reason, Reason::NodeLost);
        let s = compute(None, &bound(Liveness::Lost { since: None }, None), t0());
        assert!(cond(&s, ConditionType::Ready)
            .message
            .contains("never renewed"));
    }

    #[test]
    fn deleting_is_stopping() {
        let mut obs = bound(Liveness::Alive, Some(SandboxState::Running));
        obs.deleting = true;
        let s = compute(None, &obs, t0());
        assert_eq!(s.phase, Some(SandboxPhase::Stopping));
        assert_eq!(cond(&s, ConditionType::Ready).reason, Reason::Stopping);
    }

    #[test]
    fn agent_failure_and_drain() {
        let mut failed = bound(Liveness::Alive, Some(SandboxState::Failed));
        failed.agent.as_mut().unwrap().reason = Some("image pull failed".into());
        let s = compute(None, &failed, t0());
        assert_eq!(s.phase, Some(SandboxPhase::Failed));
        assert_eq!(cond(&s, ConditionType::Ready).reason, Reason::Failed);
        assert_eq!(cond(&s, ConditionType::Ready).message, "image pull failed");

        let s = compute(
            None,
            &bound(Liveness::Alive, Some(SandboxState::Draining)),
            t0(),
        );
        assert_eq!(s.phase, Some(SandboxPhase::Stopping));
    }

    #[test]
    fn paused_is_not_ready_and_suspended_is() {
        let s = compute(
            None,
            &bound(Liveness::Alive, Some(SandboxState::Paused)),
            t0(),
        );
        assert_eq!(s.phase, Some(SandboxPhase::Paused));
        let ready = cond(&s, ConditionType::Ready);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Paused")
        );
        let s = compute(
            None,
            &bound(Liveness::Alive, Some(SandboxState::Suspended)),
            t0(),
        );
        assert_eq!(s.phase, Some(SandboxPhase::Suspended));
        let ready = cond(&s, ConditionType::Ready);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Suspended")
        );
    }
}
