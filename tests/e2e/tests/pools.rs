//! Warm pools in cluster mode: SandboxTemplate + SandboxWarmPool + SandboxClaim through the real
//! operator and a node-agent on a real apiserver. Run with `tests/e2e/run.sh pools`.

use kube::api::{Api, ListParams};
use kube::ResourceExt;
use microsandbox_crds::pool::{Launch, CLAIMED_FROM_LABEL, CLAIM_LABEL, LAUNCH_LABEL, POOL_LABEL};
use microsandbox_crds::{Sandbox, SandboxClaim, SandboxWarmPool};
use microsandbox_e2e::{wait_object, Cluster};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);

const TEMPLATE: &str = "apiVersion: microsandbox.dev/v1alpha1
kind: SandboxTemplate
metadata:
  name: box
spec:
  image: busybox
  isolation: container
  resources:
    memory: 64Mi
  env:
    - name: GREETING
      value: hi
  lifetime:
    shutdownAfter: 1h
  envVarsInjectionPolicy: Allowed
";

fn pool_yaml(replicas: u32) -> String {
    format!(
        "apiVersion: microsandbox.dev/v1alpha1\nkind: SandboxWarmPool\nmetadata:\n  name: box\nspec:\n  replicas: {replicas}\n  sandboxTemplateRef:\n    name: box\n"
    )
}

fn claim_yaml(name: &str, pool: &str, extra: &str) -> String {
    format!(
        "apiVersion: microsandbox.dev/v1alpha1\nkind: SandboxClaim\nmetadata:\n  name: {name}\nspec:\n  warmPoolRef:\n    name: {pool}\n{extra}"
    )
}

fn ready(c: &SandboxClaim) -> Option<(String, String)> {
    let cond = c
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((cond.status.clone(), cond.reason.clone()))
}

fn claim_is_ready(c: &SandboxClaim) -> bool {
    ready(c).is_some_and(|(s, _)| s == "True")
}

fn pool_counts(p: &SandboxWarmPool) -> (i32, i32, i32) {
    p.status
        .as_ref()
        .map(|s| (s.replicas, s.ready_replicas, s.claimed))
        .unwrap_or_default()
}

async fn members(c: &Cluster) -> Vec<Sandbox> {
    c.sandboxes()
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}=box")))
        .await
        .expect("list members")
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_take_ready_members_and_the_pool_refills() {
    let c = Cluster::new("e2e-pool").await;
    let _op = c.operator(&[]);
    let agent = c.agent("n1", &[]);
    let pools: Api<SandboxWarmPool> = Api::namespaced(c.client.clone(), &c.ns);
    let claims: Api<SandboxClaim> = Api::namespaced(c.client.clone(), &c.ns);

    // A claim of a pool that does not exist yet says so.
    c.apply(&claim_yaml("early", "nope", ""));
    let early = wait_object(&claims, "early", "WarmPoolNotFound", TIMEOUT, |c| {
        ready(c).is_some_and(|(_, r)| r == "WarmPoolNotFound")
    })
    .await;
    assert_eq!(ready(&early).unwrap().0, "False");

    // Two members boot and become Ready.
    c.apply(TEMPLATE);
    c.apply(&pool_yaml(2));
    let pool = wait_object(&pools, "box", "2 Ready", TIMEOUT, |p| {
        pool_counts(p) == (2, 2, 0)
    })
    .await;
    let st = pool.status.clone().unwrap();
    assert_eq!(
        st.selector.as_deref(),
        Some("microsandbox.dev/warm-pool=box")
    );
    assert_eq!(st.observed_generation, pool.metadata.generation);
    let before: Vec<String> = members(&c).await.iter().map(|s| s.name_any()).collect();
    assert_eq!(before.len(), 2, "{before:?}");
    for m in members(&c).await {
        assert!(m.name_any().starts_with("box-"), "{}", m.name_any());
        let owner = &m.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("SandboxWarmPool", "box")
        );
        // A member never stops on its own while it waits: shutdownAfter counts from the claim.
        assert!(m.spec.lifetime.is_none(), "{:?}", m.spec.lifetime);
    }

    // A claim takes one of them: same Sandbox, now the claim's, with the template's env.
    c.apply(&claim_yaml("c1", "box", ""));
    let c1 = wait_object(&claims, "c1", "Ready", TIMEOUT, claim_is_ready).await;
    let st = c1.status.clone().unwrap();
    assert_eq!(st.launch, Some(Launch::Warm));
    let taken = st.sandbox.expect("status.sandbox").name;
    assert!(before.contains(&taken), "{taken} not one of {before:?}");
    let s = c.sandboxes().get(&taken).await.unwrap();
    let labels = s.labels();
    assert_eq!(labels.get(CLAIM_LABEL).map(String::as_str), Some("c1"));
    assert_eq!(
        labels.get(CLAIMED_FROM_LABEL).map(String::as_str),
        Some("box")
    );
    assert_eq!(labels.get(LAUNCH_LABEL).map(String::as_str), Some("warm"));
    assert!(!labels.contains_key(POOL_LABEL), "{labels:?}");
    let owner = &s.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("SandboxClaim", "c1")
    );
    let after = s
        .spec
        .lifetime
        .as_ref()
        .and_then(|l| l.shutdown_after_secs())
        .expect("shutdownAfter set at the claim");
    assert!(after >= 3600, "{after}");
    assert_eq!(c.sh(&agent, &taken, "echo $GREETING").await, "hi\n");
    assert!(c
        .event_reasons("c1")
        .contains(&"SandboxAdopted".to_string()));

    // The pool refills to two Ready members and counts the claimed one.
    wait_object(&pools, "box", "refilled", TIMEOUT, |p| {
        pool_counts(p) == (2, 2, 1)
    })
    .await;
    let now: Vec<String> = members(&c).await.iter().map(|s| s.name_any()).collect();
    assert!(!now.contains(&taken), "{now:?}");

    // A claim with env gets a Sandbox booted for it, under its own name.
    c.apply(&claim_yaml(
        "c2",
        "box",
        "  env:\n    - name: FOO\n      value: bar\n",
    ));
    let c2 = wait_object(&claims, "c2", "Ready", TIMEOUT, claim_is_ready).await;
    let st = c2.status.clone().unwrap();
    assert_eq!(st.launch, Some(Launch::Cold));
    assert_eq!(st.sandbox.unwrap().name, "c2");
    assert_eq!(c.sh(&agent, "c2", "echo $GREETING $FOO").await, "hi bar\n");
    // The template (Allowed) refuses a claim that would replace its variable.
    c.apply(&claim_yaml(
        "c3",
        "box",
        "  env:\n    - name: GREETING\n      value: bye\n",
    ));
    wait_object(&claims, "c3", "rejected", TIMEOUT, |c| {
        ready(c).is_some_and(|(_, r)| r == "EnvVarsInjectionRejected")
    })
    .await;
    // A claim of a pool that never appears keeps saying so.
    wait_object(&claims, "early", "still without a pool", TIMEOUT, |c| {
        ready(c).is_some_and(|(_, r)| r == "WarmPoolNotFound")
    })
    .await;

    // `kubectl scale` drives the pool (the scale subresource); with no member, claims go cold.
    let (ok, _, err) = c.kubectl(&["scale", "-n", &c.ns, "swp/box", "--replicas=0"], None);
    assert!(ok, "{err}");
    wait_object(&pools, "box", "scaled to 0", TIMEOUT, |p| {
        pool_counts(p).0 == 0
    })
    .await;
    c.apply(&claim_yaml("c4", "box", ""));
    let c4 = wait_object(&claims, "c4", "Ready", TIMEOUT, claim_is_ready).await;
    assert_eq!(c4.status.unwrap().launch, Some(Launch::Cold));
    let (ok, table, err) = c.kubectl(&["get", "sbxc", "-n", &c.ns], None);
    assert!(ok, "{err}");
    let row = table.lines().find(|l| l.starts_with("c1 ")).expect("row");
    assert!(
        row.contains("True") && row.contains(&taken) && row.contains("warm"),
        "{table}"
    );

    // Deleting a claim deletes its Sandbox; deleting the pool its members.
    let (ok, _, err) = c.kubectl(
        &[
            "delete",
            "-n",
            &c.ns,
            "sbxc",
            "c1",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    );
    assert!(ok, "{err}");
    let start = Instant::now();
    while c.sandboxes().get_opt(&taken).await.unwrap().is_some() {
        assert!(start.elapsed() < TIMEOUT, "{taken} outlived its claim");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, _, err) = c.kubectl(
        &[
            "delete",
            "-n",
            &c.ns,
            "sbxc,swp,sbxt",
            "--all",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    );
    assert!(ok, "{err}");
    c.wait_no_sandboxes(TIMEOUT).await;
    assert!(agent.client().await.list().await.expect("list").is_empty());
}

/// A client done with a claim the moment it is Ready deletes it, possibly before the operator
/// holds its finalizer (it binds first, to answer in two writes), and while the operator's caches
/// still show the claim unbound. The claim's Sandbox must go with it even where no garbage
/// collector sweeps owner references (this control plane runs no kube-controller-manager). The
/// window is milliseconds wide: rounds of three claims at once, each deleted from a watch.
///
/// Found three leaks: a finalizer patch or cleanup that trusted the cache; a reconcile of a stale
/// cached claim that bound a member after the claim was gone (its status write then failed with
/// 404 and nothing reconciled the claim again); and the API server removing a claim whose
/// finalizer it had just accepted (kubernetes/kubernetes#77988: about one claim in 40 rounds
/// here), which the operator's orphan sweep now catches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_deleted_as_soon_as_it_is_ready_takes_its_sandbox_along() {
    const AT_ONCE: u32 = 3;
    let c = Cluster::new("e2e-poolrace").await;
    let _op = c.operator(&[]);
    let _agent = c.agent("n1", &[]);
    let pools: Api<SandboxWarmPool> = Api::namespaced(c.client.clone(), &c.ns);
    let claims: Api<SandboxClaim> = Api::namespaced(c.client.clone(), &c.ns);
    c.apply(TEMPLATE);
    c.apply(&pool_yaml(AT_ONCE));
    let rounds: u32 = std::env::var("MSB_CLAIM_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    for round in 0..rounds {
        wait_object(&pools, "box", "full", TIMEOUT, |p| {
            pool_counts(p).1 == AT_ONCE as i32
        })
        .await;
        let names: Vec<String> = (0..AT_ONCE).map(|i| format!("quick-{round}-{i}")).collect();
        futures::future::join_all(names.iter().map(|name| {
            let claims = claims.clone();
            async move {
                let claim: SandboxClaim =
                    serde_saphyr::from_str(&claim_yaml(name, "box", "")).unwrap();
                claims
                    .create(&kube::api::PostParams::default(), &claim)
                    .await
                    .unwrap();
                // From a watch, so the delete follows the Ready status within milliseconds.
                tokio::time::timeout(
                    TIMEOUT,
                    kube::runtime::wait::await_condition(
                        claims.clone(),
                        name,
                        |c: Option<&SandboxClaim>| c.is_some_and(claim_is_ready),
                    ),
                )
                .await
                .expect("claim Ready in time")
                .unwrap();
                claims
                    .delete(name, &kube::api::DeleteParams::default())
                    .await
                    .unwrap();
            }
        }))
        .await;
        let start = Instant::now();
        loop {
            let left: Vec<String> = c
                .sandboxes()
                .list(&ListParams::default().labels(CLAIM_LABEL))
                .await
                .unwrap()
                .items
                .iter()
                .map(|s| format!("{} (claim {})", s.name_any(), s.labels()[CLAIM_LABEL]))
                .collect();
            if left.is_empty() {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let claims_left: Vec<String> = claims
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .iter()
                    .map(|c| {
                        format!(
                            "{} deleting={} finalizers={:?} status={:?}",
                            c.name_any(),
                            c.metadata.deletion_timestamp.is_some(),
                            c.finalizers(),
                            c.status.as_ref().and_then(|s| s.sandbox.as_ref())
                        )
                    })
                    .collect();
                panic!("round {round}: Sandboxes of deleted claims are still there: {left:?}; claims: {claims_left:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
