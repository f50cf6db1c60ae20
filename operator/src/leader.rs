//! Leader election with a `coordination.k8s.io/v1` Lease, hand-written (a small renew loop)
//! rather than the kube-leader-election crate, which trails kube's major versions; the decision
//! itself is a pure function and unit-tested.
//!
//! The leader renews every `renew_every`; a standby takes over once `spec.renewTime +
//! leaseDurationSeconds` has passed. Updates carry the Lease's resourceVersion, so two replicas
//! racing for an expired lease cannot both win. A leader that fails to renew before its own lease
//! would expire steps down (the process exits and restarts as a standby).

use crate::error::{Error, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::sync::watch;

/// Settings of the election.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

/// What to do with the current Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it (a new holder, so leaseTransitions + 1).
    Acquire,
    /// Someone else holds a live lease.
    Standby,
}

/// Decide from the Lease's spec (`None`: no Lease yet).
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(0).into());
    match &spec.renew_time {
        Some(t) if now.duration_since(t.0) <= duration => Decision::Standby,
        _ => Decision::Acquire,
    }
}

/// The spec we write when we renew or acquire.
pub fn next_spec(
    old: Option<&LeaseSpec>,
    decision: Decision,
    cfg: &LeaderConfig,
    now: Timestamp,
) -> LeaseSpec {
    let old = old.cloned().unwrap_or_default();
    let acquiring = decision == Decision::Acquire;
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(
            i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(i32::MAX),
        ),
        acquire_time: if acquiring {
            Some(MicroTime(now))
        } else {
            old.acquire_time.clone()
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: if acquiring && old.holder_identity.is_some() {
            Some(old.lease_transitions.unwrap_or(0) + 1)
        } else {
            old.lease_transitions.or(Some(0))
        },
        ..old
    }
}

/// One round: returns whether we hold the lease afterwards.
async fn try_once(api: &Api<Lease>, cfg: &LeaderConfig) -> Result<bool> {
    let now = Timestamp::now();
    let current = api.get_opt(&cfg.lease_name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    let decision = decide(spec, &cfg.identity, now);
    if decision == Decision::Standby {
        return Ok(false);
    }
    let new_spec = next_spec(spec, decision, cfg, now);
    let result = match current {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.lease_name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(new_spec),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Some(mut lease) => {
            // metadata.resourceVersion makes this a compare-and-swap.
            lease.spec = Some(new_spec);
            api.replace(&cfg.lease_name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        // Another replica won the race (409 Conflict / 409 AlreadyExists).
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Run the election forever. `leader` turns true once we hold the lease. Returns an error when
/// leadership is lost (the caller exits so no two leaders reconcile).
pub async fn run(api: Api<Lease>, cfg: LeaderConfig, leader: watch::Sender<bool>) -> Result<()> {
    let mut last_renew: Option<tokio::time::Instant> = None;
    loop {
        match try_once(&api, &cfg).await {
            Ok(true) => {
                if !*leader.borrow() {
                    tracing::info!(identity = %cfg.identity, lease = %cfg.lease_name, "became leader");
                    let _ = leader.send(true);
                }
                last_renew = Some(tokio::time::Instant::now());
            }
            Ok(false) => {
                if *leader.borrow() {
                    return Err(Error::LeaderElection(
                        "another replica holds the lease".into(),
                    ));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "leader lease update failed");
                if *leader.borrow() && last_renew.is_some_and(|t| t.elapsed() >= cfg.lease_duration)
                {
                    return Err(Error::LeaderElection(format!(
                        "could not renew the lease within its duration: {e}"
                    )));
                }
            }
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    fn spec(holder: &str, renewed_secs_ago: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                now() - SignedDuration::from_secs(renewed_secs_ago),
            )),
            lease_transitions: Some(2),
            acquire_time: Some(MicroTime(now() - SignedDuration::from_secs(100))),
            ..Default::default()
        }
    }

    fn cfg() -> LeaderConfig {
        LeaderConfig {
            namespace: "ns".into(),
            lease_name: "microsandbox-operator".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "me", now()), Decision::Acquire);
        assert_eq!(decide(Some(&spec("me", 100)), "me", now()), Decision::Renew);
        assert_eq!(
            decide(Some(&spec("other", 5)), "me", now()),
            Decision::Standby
        );
        assert_eq!(
            decide(Some(&spec("other", 15)), "me", now()),
            Decision::Standby
        );
        assert_eq!(
            decide(Some(&spec("other", 16)), "me", now()),
            Decision::Acquire
        );
        assert_eq!(decide(Some(&spec("", 1)), "me", now()), Decision::Acquire);
        let mut no_renew = spec("other", 0);
        no_renew.renew_time = None;
        assert_eq!(decide(Some(&no_renew), "me", now()), Decision::Acquire);
    }

    #[test]
    fn renew_keeps_acquire_time_and_transitions() {
        let old = spec("me", 5);
        let s = next_spec(Some(&old), Decision::Renew, &cfg(), now());
        assert_eq!(s.holder_identity.as_deref(), Some("me"));
        assert_eq!(s.renew_time, Some(MicroTime(now())));
        assert_eq!(s.acquire_time, old.acquire_time);
        assert_eq!(s.lease_transitions, Some(2));
        assert_eq!(s.lease_duration_seconds, Some(15));
    }

    #[test]
    fn takeover_counts_a_transition() {
        let s = next_spec(Some(&spec("other", 60)), Decision::Acquire, &cfg(), now());
        assert_eq!(s.holder_identity.as_deref(), Some("me"));
        assert_eq!(s.acquire_time, Some(MicroTime(now())));
        assert_eq!(s.lease_transitions, Some(3));
        let first = next_spec(None, Decision::Acquire, &cfg(), now());
        assert_eq!(first.lease_transitions, Some(0));
    }
}
