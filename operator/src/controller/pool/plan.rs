//! Pure decisions of the warm-pool and claim controllers: what a pool creates and deletes, which
//! member a claim takes, and the Sandbox spec and patch of a member and a claimed one.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use microsandbox_crds::pool::{
    UpdateStrategyType, CLAIMED_FROM_LABEL, CLAIM_LABEL, LAUNCH_LABEL, POOL_LABEL,
    TEMPLATE_HASH_LABEL,
};
use microsandbox_crds::sandbox::{Lifetime, SandboxSpec};
use microsandbox_crds::Sandbox;
use std::time::Duration;

/// How long a claim waits for a booting member before it boots a Sandbox of its own.
pub const WAIT_FOR_MEMBER: Duration = Duration::from_secs(30);

/// What a pool reconcile needs to know of one member (a Sandbox labelled with the pool).
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub created: Option<Timestamp>,
    pub ready: bool,
    pub deleting: bool,
    pub template_hash: Option<String>,
    /// When it started running (`status.startedAt`).
    pub started: Option<Timestamp>,
}

impl Member {
    pub fn of(s: &Sandbox) -> Self {
        Self {
            name: s.metadata.name.clone().unwrap_or_default(),
            created: s.metadata.creation_timestamp.as_ref().map(|t| t.0),
            ready: is_ready(s),
            deleting: s.metadata.deletion_timestamp.is_some(),
            template_hash: s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(TEMPLATE_HASH_LABEL).cloned()),
            started: s
                .status
                .as_ref()
                .and_then(|st| st.started_at.as_ref())
                .map(|t| t.0),
        }
    }
}

/// A Sandbox's Ready condition is True (Running, or Suspended: the next exec resumes it).
pub fn is_ready(s: &Sandbox) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// What a pool does in one reconcile.
#[derive(Debug, Default, PartialEq)]
pub struct PoolPlan {
    /// Members to create.
    pub create: usize,
    /// Members to delete, by name.
    pub delete: Vec<String>,
    /// Members that exist and are not being deleted.
    pub replicas: i32,
    /// Of those, Ready ones.
    pub ready: i32,
}

/// Keep `replicas` members of the template whose hash is `hash` (None: the template is gone,
/// create nothing). `creating` members were created but are not in the cache yet.
pub fn plan_pool(
    replicas: i32,
    strategy: UpdateStrategyType,
    hash: Option<&str>,
    members: &[Member],
    creating: usize,
) -> PoolPlan {
    let alive: Vec<&Member> = members.iter().filter(|m| !m.deleting).collect();
    let stale = |m: &Member| {
        strategy == UpdateStrategyType::Recreate
            && hash.is_some()
            && m.template_hash.as_deref() != hash
    };
    let mut delete: Vec<String> = alive
        .iter()
        .filter(|m| stale(m))
        .map(|m| m.name.clone())
        .collect();
    let mut kept: Vec<&Member> = alive.iter().copied().filter(|m| !stale(m)).collect();
    let want = usize::try_from(replicas.max(0)).unwrap_or(0);
    let have = kept.len() + creating;
    let mut create = 0;
    if have > want {
        // Unready first, then the newest: the oldest Ready members are the ones claims take.
        kept.sort_by(|a, b| a.ready.cmp(&b.ready).then(b.created.cmp(&a.created)));
        let excess = (have - want).min(kept.len());
        delete.extend(kept.drain(..excess).map(|m| m.name.clone()));
    } else if hash.is_some() {
        create = want - have;
    }
    PoolPlan {
        create,
        delete,
        replicas: i32::try_from(kept.len()).unwrap_or(i32::MAX),
        ready: i32::try_from(kept.iter().filter(|m| m.ready).count()).unwrap_or(i32::MAX),
    }
}

/// The member a claim takes: the oldest Ready one not already being taken.
pub fn pick(members: &[Member], taken: impl Fn(&str) -> bool) -> Option<&Member> {
    members
        .iter()
        .filter(|m| m.ready && !m.deleting && !taken(&m.name))
        .min_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)))
}

/// Whether a claim with no free Ready member waits for a booting one (true) or boots its own.
pub fn wait_for_member(members: &[Member], claim_age: Duration) -> bool {
    claim_age < WAIT_FOR_MEMBER && members.iter().any(|m| !m.ready && !m.deleting)
}

/// The spec of a pool member: the template's, without `lifetime.shutdownAfter` (that counts from
/// the claim: [`claimed_lifetime`] sets it when one takes the member).
pub fn member_spec(template: &SandboxSpec) -> SandboxSpec {
    let mut spec = template.clone();
    if let Some(l) = spec.lifetime.as_mut() {
        l.shutdown_after = None;
        if *l == Lifetime::default() {
            spec.lifetime = None;
        }
    }
    spec
}

/// The lifetime of a member taken at `now`: the template's, with `shutdownAfter` moved so it
/// counts from the claim (the node-agent counts it from the boot, `started`).
pub fn claimed_lifetime(
    template: Option<&Lifetime>,
    started: Option<Timestamp>,
    now: Timestamp,
) -> Option<Lifetime> {
    let template = template?;
    let mut l = template.clone();
    if let Some(after) = template.shutdown_after_secs() {
        let waited = started
            .map(|s| now.duration_since(s))
            .unwrap_or(SignedDuration::ZERO)
            .as_secs()
            .max(0);
        l.shutdown_after = Some(format!(
            "{}s",
            after.saturating_add(u64::try_from(waited).unwrap_or(0))
        ));
    }
    Some(l)
}

/// The JSON patch that moves member `member` of `pool` to `claim` (a controller owner
/// reference). Its first operation tests that the member still belongs to the pool, so of two
/// operators (or reconciles) taking the same member only one succeeds.
pub fn adoption_patch(
    pool: &str,
    claim: &str,
    owner: &serde_json::Value,
    lifetime: Option<&Lifetime>,
) -> serde_json::Value {
    let label = |key: &str| format!("/metadata/labels/{}", key.replace('/', "~1"));
    let mut ops = vec![
        serde_json::json!({"op": "test", "path": label(POOL_LABEL), "value": pool}),
        serde_json::json!({"op": "remove", "path": label(POOL_LABEL)}),
        serde_json::json!({"op": "add", "path": label(CLAIMED_FROM_LABEL), "value": pool}),
        serde_json::json!({"op": "add", "path": label(CLAIM_LABEL), "value": claim}),
        serde_json::json!({"op": "add", "path": label(LAUNCH_LABEL), "value": "warm"}),
        serde_json::json!({"op": "add", "path": "/metadata/ownerReferences", "value": [owner]}),
    ];
    if let Some(l) = lifetime {
        ops.push(serde_json::json!({"op": "add", "path": "/spec/lifetime", "value": l}));
    }
    serde_json::Value::Array(ops)
}

/// A claimed Sandbox whose claim is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub namespace: String,
    pub sandbox: String,
    pub sandbox_uid: Option<String>,
    pub claim: String,
    pub claim_uid: String,
}

/// Claimed Sandboxes (label [`CLAIM_LABEL`], controlled by a SandboxClaim) whose claim uid is
/// not among `claims` (the uids of the claims that exist), not already being deleted.
pub fn orphans<'a>(
    sandboxes: impl IntoIterator<Item = &'a Sandbox>,
    claims: &std::collections::HashSet<&str>,
) -> Vec<Orphan> {
    sandboxes
        .into_iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter_map(|s| {
            let claim = s.metadata.labels.as_ref()?.get(CLAIM_LABEL)?;
            let owner = s
                .metadata
                .owner_references
                .as_ref()?
                .iter()
                .find(|o| o.controller == Some(true) && o.kind == "SandboxClaim")?;
            (!claims.contains(owner.uid.as_str())).then(|| Orphan {
                namespace: s.metadata.namespace.clone().unwrap_or_default(),
                sandbox: s.metadata.name.clone().unwrap_or_default(),
                sandbox_uid: s.metadata.uid.clone(),
                claim: claim.clone(),
                claim_uid: owner.uid.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_sandbox_whose_claim_uid_is_gone_is_an_orphan() {
        let sandbox = |name: &str, claim: Option<(&str, &str)>, deleting: bool| {
            let mut s: Sandbox = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"image": "busybox"},
            }))
            .unwrap();
            if let Some((claim, uid)) = claim {
                s.metadata.labels = Some([(CLAIM_LABEL.to_string(), claim.to_string())].into());
                s.metadata.owner_references = Some(vec![serde_json::from_value(
                    serde_json::json!({"apiVersion": "microsandbox.dev/v1alpha1",
                        "kind": "SandboxClaim", "name": claim, "uid": uid, "controller": true}),
                )
                .unwrap()]);
            }
            if deleting {
                s.metadata.deletion_timestamp = Some(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
                );
            }
            s
        };
        let all = [
            sandbox("kept", Some(("a", "uid-a")), false),
            sandbox("orphan", Some(("b", "uid-b")), false),
            sandbox("recreated-claim", Some(("a", "uid-old-a")), false),
            sandbox("going", Some(("c", "uid-c")), true),
            sandbox("member", None, false),
        ];
        let live = std::collections::HashSet::from(["uid-a"]);
        let found: Vec<String> = orphans(&all, &live)
            .into_iter()
            .map(|o| o.sandbox)
            .collect();
        assert_eq!(found, ["orphan", "recreated-claim"]);
    }

    fn member(name: &str, secs: i64, ready: bool) -> Member {
        Member {
            name: name.into(),
            created: Some(Timestamp::from_second(secs).unwrap()),
            ready,
            deleting: false,
            template_hash: Some("h1".into()),
            started: None,
        }
    }

    #[test]
    fn a_pool_fills_up_to_replicas_counting_creates_in_flight() {
        let p = plan_pool(3, UpdateStrategyType::OnReplenish, Some("h1"), &[], 0);
        assert_eq!(p.create, 3);
        let m = [member("a", 1, true)];
        let p = plan_pool(3, UpdateStrategyType::OnReplenish, Some("h1"), &m, 1);
        assert_eq!((p.create, p.replicas, p.ready), (1, 1, 1));
        // No template: nothing new.
        let p = plan_pool(3, UpdateStrategyType::OnReplenish, None, &m, 0);
        assert_eq!(p.create, 0);
        assert!(p.delete.is_empty());
    }

    #[test]
    fn scaling_down_deletes_unready_then_newest() {
        let m = [
            member("old", 1, true),
            member("new", 3, true),
            member("booting", 2, false),
        ];
        let p = plan_pool(1, UpdateStrategyType::OnReplenish, Some("h1"), &m, 0);
        assert_eq!(p.delete, ["booting", "new"]);
        assert_eq!((p.create, p.replicas, p.ready), (0, 1, 1));
        let p = plan_pool(0, UpdateStrategyType::OnReplenish, Some("h1"), &m, 0);
        assert_eq!(p.delete.len(), 3);
    }

    #[test]
    fn recreate_replaces_members_of_an_older_template_on_replenish_keeps_them() {
        let mut old = member("old", 1, true);
        old.template_hash = Some("h0".into());
        let m = [old, member("cur", 2, true)];
        let p = plan_pool(2, UpdateStrategyType::Recreate, Some("h1"), &m, 0);
        assert_eq!(p.delete, ["old"]);
        assert_eq!(p.create, 1);
        let p = plan_pool(2, UpdateStrategyType::OnReplenish, Some("h1"), &m, 0);
        assert_eq!((p.create, p.delete.len()), (0, 0));
    }

    #[test]
    fn deleting_members_do_not_count() {
        let mut gone = member("gone", 1, true);
        gone.deleting = true;
        let p = plan_pool(1, UpdateStrategyType::OnReplenish, Some("h1"), &[gone], 0);
        assert_eq!((p.create, p.replicas), (1, 0));
        assert!(p.delete.is_empty());
    }

    #[test]
    fn a_claim_takes_the_oldest_ready_member_not_taken() {
        let m = [
            member("b", 2, true),
            member("a", 1, true),
            member("z", 0, false),
        ];
        assert_eq!(pick(&m, |_| false).unwrap().name, "a");
        assert_eq!(pick(&m, |n| n == "a").unwrap().name, "b");
        assert!(pick(&m, |_| true).is_none());
        assert!(wait_for_member(&m, Duration::from_secs(1)));
        assert!(!wait_for_member(&m, WAIT_FOR_MEMBER));
        assert!(!wait_for_member(&m[..2], Duration::from_secs(1)));
    }

    #[test]
    fn shutdown_after_counts_from_the_claim() {
        let t = Lifetime {
            shutdown_after: Some("10m".into()),
            idle_timeout: Some("1m".into()),
            ..Default::default()
        };
        let started = Timestamp::from_second(1000).unwrap();
        let now = Timestamp::from_second(1090).unwrap();
        let l = claimed_lifetime(Some(&t), Some(started), now).unwrap();
        assert_eq!(l.shutdown_after.as_deref(), Some("690s"));
        assert_eq!(l.idle_timeout.as_deref(), Some("1m"));
        assert!(claimed_lifetime(None, Some(started), now).is_none());
        // Members never stop on their own while they wait.
        let spec: SandboxSpec = serde_json::from_value(serde_json::json!({
            "image": "python:3.12", "lifetime": {"shutdownAfter": "10m"}
        }))
        .unwrap();
        assert_eq!(member_spec(&spec).lifetime, None);
    }

    #[test]
    fn adoption_tests_the_pool_label_first() {
        let owner = serde_json::json!({"kind": "SandboxClaim", "name": "c", "uid": "u"});
        let p = adoption_patch("py", "c", &owner, None);
        assert_eq!(p[0]["op"], "test");
        assert_eq!(p[0]["path"], "/metadata/labels/microsandbox.dev~1warm-pool");
        assert_eq!(p[0]["value"], "py");
        assert_eq!(p.as_array().unwrap().len(), 6);
    }
}
