//! A Sandbox's status from what the operator knows: whether and where it is bound, whether that
//! node's agent is alive, and what the agent reports about the sandbox. Pure, so every transition
//! is unit-tested; `lastTransitionTime` moves only when a condition's status changes
//! ([`microsandbox_crds::common::set_condition`]).

use crate::scheduler::Unschedulable;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use microsandbox_crds::common::{condition, conditions, set_condition};
use microsandbox_crds::{SandboxPhase, SandboxStatus, ValidationErrors};
use microsandbox_wire::api::SandboxState;

/// Ready=False: the sandbox waits for a node.
pub const REASON_NOT_SCHEDULED: &str = "NotScheduled";
/// Ready=False: bound, the agent has not reported the sandbox yet.
pub const REASON_WAITING_FOR_AGENT: &str = "WaitingForAgent";
/// Ready=False: the node-agent stopped renewing its lease.
pub const REASON_NODE_LOST: &str = "NodeLost";
/// Ready=False: image pull and boot in progress.
pub const REASON_CREATING: &str = "Creating";
/// Ready=True.
pub const REASON_RUNNING: &str = "Running";
/// Ready=False: the sandbox is draining or the object is being deleted.
pub const REASON_STOPPING: &str = "Stopping";
/// Ready=False: shut down.
pub const REASON_STOPPED: &str = "Stopped";
/// Ready=False: the sandbox failed on its node.
pub const REASON_FAILED: &str = "Failed";
/// Scheduled=True.
pub const REASON_BOUND: &str = "Bound";

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
    pub reason: Option<String>,
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
    let mut set = |type_: &str, ok: bool, reason: &str, message: String| {
        set_condition(
            &mut status.conditions,
            condition(type_, ok, reason, message, generation, t.clone()),
        );
    };

    let (phase, ready, reason, message) = match &observed.binding {
        Binding::Invalid(errors) => {
            let msg = errors.to_string();
            set(
                conditions::SCHEDULED,
                false,
                conditions::REASON_INVALID_SPEC,
                msg.clone(),
            );
            (
                SandboxPhase::Failed,
                false,
                conditions::REASON_INVALID_SPEC,
                msg,
            )
        }
        Binding::Unschedulable(u) => {
            set(conditions::SCHEDULED, false, u.reason, u.message.clone());
            (
                SandboxPhase::Pending,
                false,
                REASON_NOT_SCHEDULED,
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
                conditions::SCHEDULED,
                true,
                REASON_BOUND,
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
            conditions::READY,
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
) -> (SandboxPhase, bool, &'static str, String) {
    match liveness {
        Liveness::Alive => {}
        Liveness::Lost { since } => {
            let when = since.map_or_else(|| "never renewed".into(), |t| format!("expired at {t}"));
            // The agent cannot say what happened: keep the last known phase.
            return (
                last.unwrap_or(SandboxPhase::Pending),
                false,
                REASON_NODE_LOST,
                format!("node-agent on {node} is not renewing its lease ({when})"),
            );
        }
        Liveness::Gone => {
            return (
                last.unwrap_or(SandboxPhase::Pending),
                false,
                REASON_NODE_LOST,
                format!("node-agent on {node} has no lease (agent removed or never started)"),
            );
        }
    }
    if deleting {
        return (
            SandboxPhase::Stopping,
            false,
            REASON_STOPPING,
            "the Sandbox is being deleted".into(),
        );
    }
    let Some(a) = agent else {
        return (
            SandboxPhase::Creating,
            false,
            REASON_WAITING_FOR_AGENT,
            format!("waiting for the node-agent on {node} to create the sandbox"),
        );
    };
    let why = |default: &str| a.reason.clone().unwrap_or_else(|| default.to_string());
    match a.state {
        SandboxState::Creating => (
            SandboxPhase::Creating,
            false,
            REASON_CREATING,
            "pulling the image and booting".into(),
        ),
        SandboxState::Running => (
            SandboxPhase::Running,
            true,
            REASON_RUNNING,
            format!("running on {node}"),
        ),
        SandboxState::Draining => (
            SandboxPhase::Stopping,
            false,
            REASON_STOPPING,
            why("draining"),
        ),
        SandboxState::Stopped
            if a.reason.as_deref() == Some(conditions::REASON_LIFETIME_EXPIRED) =>
        {
            (
                SandboxPhase::Stopped,
                false,
                conditions::REASON_LIFETIME_EXPIRED,
                "lifetime.shutdownAfter elapsed".into(),
            )
        }
        SandboxState::Stopped => (SandboxPhase::Stopped, false, REASON_STOPPED, why("stopped")),
        SandboxState::Failed => (SandboxPhase::Failed, false, REASON_FAILED, why("failed")),
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

    fn cond<'a>(s: &'a SandboxStatus, type_: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn unschedulable_is_pending_with_the_reason() {
        let obs = Observed {
            generation: Some(3),
            binding: Binding::Unschedulable(Unschedulable {
                reason: conditions::REASON_UNSCHEDULABLE,
                message: "0/2 nodes are available: 2 too many sandboxes".into(),
            }),
            agent: None,
            deleting: false,
        };
        let s = compute(None, &obs, t0());
        assert_eq!(s.phase, Some(SandboxPhase::Pending));
        assert_eq!(s.node, None);
        assert_eq!(s.observed_generation, Some(3));
        let sch = cond(&s, conditions::SCHEDULED);
        assert_eq!(sch.status, "False");
        assert_eq!(sch.reason, conditions::REASON_UNSCHEDULABLE);
        assert_eq!(sch.message, "0/2 nodes are available: 2 too many sandboxes");
        assert_eq!(sch.observed_generation, Some(3));
        let ready = cond(&s, conditions::READY);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, REASON_NOT_SCHEDULED);
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
        let sch = cond(&s, conditions::SCHEDULED);
        assert_eq!(sch.reason, conditions::REASON_INVALID_SPEC);
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
        assert_eq!(cond(&s1, conditions::SCHEDULED).status, "True");
        assert_eq!(
            cond(&s1, conditions::READY).reason,
            REASON_WAITING_FOR_AGENT
        );
        assert_eq!(s1.started_at, None);

        let s2 = compute(
            Some(&s1),
            &bound(Liveness::Alive, Some(SandboxState::Creating)),
            later(1),
        );
        assert_eq!(s2.phase, Some(SandboxPhase::Creating));
        assert_eq!(cond(&s2, conditions::READY).reason, REASON_CREATING);

        let s3 = compute(
            Some(&s2),
            &bound(Liveness::Alive, Some(SandboxState::Running)),
            later(2),
        );
        assert_eq!(s3.phase, Some(SandboxPhase::Running));
        assert_eq!(s3.started_at, Some(Time(later(2))));
        assert_eq!(s3.image_digest.as_deref(), Some("sha256:abc"));
        let ready = cond(&s3, conditions::READY);
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
        stopped.agent.as_mut().unwrap().reason = Some("oom-killed".into());
        let s5 = compute(Some(&s4), &stopped, later(90));
        assert_eq!(s5.phase, Some(SandboxPhase::Stopped));
        let ready = cond(&s5, conditions::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", REASON_STOPPED)
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
            cond(&s2, conditions::SCHEDULED).last_transition_time,
            Time(t0())
        );
        // Ready: False -> True moves its time.
        assert_eq!(
            cond(&s2, conditions::READY).last_transition_time,
            Time(later(10))
        );
    }

    #[test]
    fn pending_then_bound_moves_scheduled_transition() {
        let pending = Observed {
            generation: Some(1),
            binding: Binding::Unschedulable(Unschedulable {
                reason: conditions::REASON_UNSCHEDULABLE,
                message: "0/0 nodes are available".into(),
            }),
            agent: None,
            deleting: false,
        };
        let s1 = compute(None, &pending, t0());
        // Still pending later, with a new message: time stays.
        let s2 = compute(Some(&s1), &pending, later(30));
        assert_eq!(
            cond(&s2, conditions::SCHEDULED).last_transition_time,
            Time(t0())
        );
        let s3 = compute(Some(&s2), &bound(Liveness::Alive, None), later(40));
        assert_eq!(
            cond(&s3, conditions::SCHEDULED).last_transition_time,
            Time(later(40))
        );
        assert_eq!(cond(&s3, conditions::SCHEDULED).status, "True");
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
        let ready = cond(&lost, conditions::READY);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, REASON_NODE_LOST);
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
        assert_eq!(cond(&back, conditions::READY).status, "True");
        assert_eq!(
            cond(&back, conditions::READY).last_transition_time,
            Time(later(50))
        );
        assert_eq!(back.started_at, Some(Time(t0())));
    }

    #[test]
    fn node_without_lease_is_lost() {
        let s = compute(None, &bound(Liveness::Gone, None), t0());
        assert_eq!(s.phase, Some(SandboxPhase::Pending));
        assert_eq!(cond(&s, conditions::READY).reason, REASON_NODE_LOST);
        let s = compute(None, &bound(Liveness::Lost { since: None }, None), t0());
        assert!(cond(&s, conditions::READY)
            .message
            .contains("never renewed"));
    }

    #[test]
    fn deleting_is_stopping() {
        let mut obs = bound(Liveness::Alive, Some(SandboxState::Running));
        obs.deleting = true;
        let s = compute(None, &obs, t0());
        assert_eq!(s.phase, Some(SandboxPhase::Stopping));
        assert_eq!(cond(&s, conditions::READY).reason, REASON_STOPPING);
    }

    #[test]
    fn agent_failure_and_drain() {
        let mut failed = bound(Liveness::Alive, Some(SandboxState::Failed));
        failed.agent.as_mut().unwrap().reason = Some("image pull failed".into());
        let s = compute(None, &failed, t0());
        assert_eq!(s.phase, Some(SandboxPhase::Failed));
        assert_eq!(cond(&s, conditions::READY).reason, REASON_FAILED);
        assert_eq!(cond(&s, conditions::READY).message, "image pull failed");

        let s = compute(
            None,
            &bound(Liveness::Alive, Some(SandboxState::Draining)),
            t0(),
        );
        assert_eq!(s.phase, Some(SandboxPhase::Stopping));
    }
}
