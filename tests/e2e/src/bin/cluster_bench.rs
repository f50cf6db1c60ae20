//! Cluster benchmark (run by `tests/e2e/bench.sh`, release builds, real apiserver + etcd):
//! 1. Sandbox CR create -> Ready p50/p99 with a cached image, against the same sandbox created
//!    directly through the node-agent API (the Kubernetes path's overhead as a ratio);
//! 2. the scaling curve: bursts of 100, 250, 500 and 1000 Sandboxes (`MSB_BENCH_BURST`) created
//!    -> all Ready and deleted -> all gone, each against the same count created and removed
//!    directly, with the cost per sandbox; the operator's and the node-agent's peak RSS.
//!
//! 3. SandboxClaim -> Ready p50/p99 from a warm pool (each claim with the pool full again),
//!    against the Sandbox create -> Ready of (1). In (1) and (3) each sample starts once the
//!    previous one's sandbox is torn down (a teardown running alongside added ~40 ms to a
//!    create on this 2-core machine).
//!
//! Prints a table; no assertion (timings belong here, not in tests).

use futures::{stream, StreamExt};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use microsandbox_client::api::CreateSandbox;
use microsandbox_crds::{Sandbox, SandboxClaim, SandboxWarmPool};
use microsandbox_e2e::{sandbox_yaml, Cluster, Footprint};
use std::time::{Duration, Instant};

fn is_ready(s: Option<&Sandbox>) -> bool {
    s.is_some_and(microsandbox_e2e::is_ready)
}

fn sandbox(name: &str) -> Sandbox {
    serde_saphyr::from_str(&sandbox_yaml(name, "")).expect("sandbox yaml")
}

/// The node-agent API request equivalent to [`sandbox`].
fn direct_req(name: String) -> CreateSandbox {
    CreateSandbox {
        name,
        image: "busybox".into(),
        memory_mib: 64,
        cpus: 1,
        env: Default::default(),
        workdir: None,
        isolation: Some(microsandbox_client::api::Isolation::Container),
        pull_policy: Default::default(),
        detached: true,
        pids_limit: None,
        labels: Default::default(),
        patches: Vec::new(),
        mounts: Vec::new(),
        disk_mib: None,
        // The CRD's default (the Sandbox objects above leave it out): the same network work.
        network: microsandbox_client::api::NetworkSpec {
            policy: microsandbox_client::api::NetworkPolicy::PublicOnly,
            ..Default::default()
        },
        secrets: Vec::new(),
        idle_timeout_secs: None,
        pool: None,
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One burst of the scaling curve.
struct Burst {
    n: usize,
    /// All objects posted.
    created: Duration,
    /// All objects Ready.
    ready: Duration,
    /// `delete_collection` -> all gone.
    deleted: Duration,
    /// The same count created through the node-agent API.
    direct: Duration,
    direct_removed: Duration,
}

impl Burst {
    /// Milliseconds per sandbox of `d`.
    fn per(&self, d: Duration) -> f64 {
        ms(d) / self.n as f64
    }
}

/// `samples` claims, one at a time, each from a full pool of 2: claim -> Ready, sorted.
async fn warm_claims(c: &Cluster, samples: usize) -> Vec<Duration> {
    let template = sandbox_yaml("bench", "").replace("kind: Sandbox\n", "kind: SandboxTemplate\n");
    c.apply(&template);
    c.apply("apiVersion: microsandbox.dev/v1alpha1\nkind: SandboxWarmPool\nmetadata:\n  name: bench\nspec:\n  replicas: 2\n  sandboxTemplateRef:\n    name: bench\n");
    let pools: Api<SandboxWarmPool> = Api::namespaced(c.client.clone(), &c.ns);
    let claims: Api<SandboxClaim> = Api::namespaced(c.client.clone(), &c.ns);
    let full = |p: Option<&SandboxWarmPool>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.ready_replicas == 2 && s.replicas == 2)
    };
    let claimed = |c: Option<&SandboxClaim>| {
        c.and_then(|c| c.status.as_ref()).is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    };
    let mut out = Vec::new();
    for i in 0..samples {
        tokio::time::timeout(
            Duration::from_secs(120),
            await_condition(pools.clone(), "bench", full),
        )
        .await
        .expect("pool full in time")
        .expect("watch");
        let name = format!("claim-{i}");
        let claim: SandboxClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "microsandbox.dev/v1alpha1",
            "kind": "SandboxClaim",
            "metadata": {"name": name},
            "spec": {"warmPoolRef": {"name": "bench"}}
        }))
        .expect("claim");
        let t = Instant::now();
        claims
            .create(&PostParams::default(), &claim)
            .await
            .expect("create claim");
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(claims.clone(), &name, claimed),
        )
        .await
        .expect("claim Ready in time")
        .expect("watch");
        out.push(t.elapsed());
        claims
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete claim");
        // As for (1): the next claim starts once this one's Sandbox is torn down.
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(claims.clone(), &name, |c: Option<&SandboxClaim>| {
                c.is_none()
            }),
        )
        .await
        .expect("claim gone in time")
        .expect("watch");
        let taken =
            kube::api::ListParams::default().labels(&format!("microsandbox.dev/claim={name}"));
        // A claim the API server removed at the moment the operator added its finalizer
        // (kubernetes/kubernetes#77988) has its Sandbox deleted by the operator's orphan sweep,
        // within seconds.
        let gone_at = Instant::now();
        loop {
            let left = c.sandboxes().list(&taken).await.expect("list").items;
            if left.is_empty() {
                break;
            }
            assert!(
                gone_at.elapsed() < Duration::from_secs(60),
                "{name}: its Sandbox stays after the claim went: {:?}",
                left.iter()
                    .map(|s| s.metadata.name.clone())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (ok, _, err) = c.kubectl(
        &[
            "delete",
            "-n",
            &c.ns,
            "sbxc,swp,sbxt",
            "--all",
            "--wait=true",
        ],
        None,
    );
    assert!(ok, "{err}");
    delete_all(c).await;
    out.sort();
    out
}

async fn delete_all(c: &Cluster) {
    c.sandboxes()
        .delete_collection(&DeleteParams::default(), &Default::default())
        .await
        .expect("delete collection");
    c.wait_no_sandboxes(Duration::from_secs(600)).await;
}

#[tokio::main]
async fn main() {
    let samples: usize = std::env::var("MSB_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    // The scaling curve's burst sizes, smallest first (MSB_BENCH_BURST=N runs just N).
    let sizes: Vec<usize> = std::env::var("MSB_BENCH_BURST")
        .unwrap_or_else(|_| "100,250,500,1000".into())
        .split(',')
        .map(|v| {
            v.trim()
                .parse()
                .expect("MSB_BENCH_BURST: sizes like 100,250")
        })
        .collect();
    let burst = sizes.iter().copied().max().expect("a burst size");
    let c = Cluster::new("bench").await;
    let op = c.operator(&[]);
    let agent = c.agent(
        "n1",
        &[
            "--capacity-sandboxes",
            &(burst + 10).to_string(),
            "--capacity-memory-mib",
            "1000000",
            "--capacity-cpus",
            "100000",
        ],
    );
    let api = c.sandboxes();
    let client = agent.client().await;

    // Warm the image cache (and the agent) with one sandbox each way.
    api.create(&PostParams::default(), &sandbox("warm"))
        .await
        .expect("create");
    tokio::time::timeout(
        Duration::from_secs(120),
        await_condition(api.clone(), "warm", is_ready),
    )
    .await
    .expect("warm-up Ready")
    .expect("watch");
    delete_all(&c).await;

    // 1. Latency, one at a time.
    let mut cr = Vec::new();
    for i in 0..samples {
        let name = format!("lat-{i}");
        let t = Instant::now();
        api.create(&PostParams::default(), &sandbox(&name))
            .await
            .expect("create");
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(api.clone(), &name, is_ready),
        )
        .await
        .expect("Ready in time")
        .expect("watch");
        cr.push(t.elapsed());
        api.delete(&name, &DeleteParams::default())
            .await
            .expect("delete");
        // Each sample starts on an idle node: the last one's teardown is done.
        c.wait_no_sandboxes(Duration::from_secs(60)).await;
    }
    delete_all(&c).await;
    let mut direct = Vec::new();
    for i in 0..samples {
        let req = direct_req(format!("direct-{i}"));
        let t = Instant::now();
        client.create(req.clone()).await.expect("direct create");
        direct.push(t.elapsed());
        client.remove(&req.name).await.expect("remove");
    }
    cr.sort();
    direct.sort();

    // 3. Claims from a warm pool of the same Sandbox.
    let claims = warm_claims(&c, samples).await;

    // 2. Bursts of growing size: the cost per sandbox should not grow with the count.
    let mut curve = Vec::new();
    for &n in &sizes {
        let t = Instant::now();
        stream::iter(0..n)
            .for_each_concurrent(32, |i| {
                let api = api.clone();
                async move {
                    api.create(&PostParams::default(), &sandbox(&format!("b{n}-{i}")))
                        .await
                        .expect("create");
                }
            })
            .await;
        let created = t.elapsed();
        c.wait_all_ready(n, Duration::from_secs(900)).await;
        let ready = t.elapsed();
        let t = Instant::now();
        delete_all(&c).await;
        let deleted = t.elapsed();

        let t = Instant::now();
        stream::iter(0..n)
            .for_each_concurrent(32, |i| {
                let client = client.clone();
                async move {
                    let req = direct_req(format!("d{n}-{i}"));
                    client.create(req.clone()).await.expect("direct create");
                }
            })
            .await;
        let direct = t.elapsed();
        let t = Instant::now();
        stream::iter(0..n)
            .for_each_concurrent(32, |i| {
                let client = client.clone();
                async move {
                    client.remove(&format!("d{n}-{i}")).await.expect("remove");
                }
            })
            .await;
        let direct_removed = t.elapsed();
        curve.push(Burst {
            n,
            created,
            ready,
            deleted,
            direct,
            direct_removed,
        });
    }
    let op_rss = op.pid().map_or(0, |p| Footprint::of(p).peak_rss_kib);
    let agent_rss = agent
        .proc
        .pid()
        .map_or(0, |p| Footprint::of(p).peak_rss_kib);

    println!("| benchmark | ours (Kubernetes path) | baseline (node-agent API directly) | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| Sandbox create -> Ready p50 ({samples} samples, cached image) | {:.1} ms | {:.1} ms | {:.2}x | p50 <= 300 ms |",
        ms(pct(&cr, 0.5)),
        ms(pct(&direct, 0.5)),
        ms(pct(&cr, 0.5)) / ms(pct(&direct, 0.5))
    );
    println!(
        "| Sandbox create -> Ready p99 | {:.1} ms | {:.1} ms | {:.2}x | - |",
        ms(pct(&cr, 0.99)),
        ms(pct(&direct, 0.99)),
        ms(pct(&cr, 0.99)) / ms(pct(&direct, 0.99))
    );
    println!(
        "| SandboxClaim -> Ready p50, from a warm pool | {:.1} ms | {:.1} ms (Sandbox create -> Ready) | {:.2}x | <= 50 ms |",
        ms(pct(&claims, 0.5)),
        ms(pct(&cr, 0.5)),
        ms(pct(&claims, 0.5)) / ms(pct(&cr, 0.5))
    );
    println!(
        "| SandboxClaim -> Ready p99, from a warm pool | {:.1} ms | {:.1} ms | {:.2}x | - |",
        ms(pct(&claims, 0.99)),
        ms(pct(&cr, 0.99)),
        ms(pct(&claims, 0.99)) / ms(pct(&cr, 0.99))
    );
    let last = curve.last().expect("at least one burst size");
    println!(
        "| {} Sandboxes in a burst -> all Ready | {:.1} s (objects created in {:.1} s) | {:.1} s | {:.2}x | <= 3x |",
        last.n,
        last.ready.as_secs_f64(),
        last.created.as_secs_f64(),
        last.direct.as_secs_f64(),
        last.ready.as_secs_f64() / last.direct.as_secs_f64()
    );
    println!(
        "| {} Sandboxes deleted -> all gone | {:.1} s | {:.1} s | {:.2}x | - |",
        last.n,
        last.deleted.as_secs_f64(),
        last.direct_removed.as_secs_f64(),
        last.deleted.as_secs_f64() / last.direct_removed.as_secs_f64()
    );
    println!(
        "| operator peak RSS (whole run) | {:.1} MiB | - | - | <= 32 MiB |",
        op_rss as f64 / 1024.0
    );
    println!(
        "| node-agent peak RSS (whole run) | {:.1} MiB | - | - | - |",
        agent_rss as f64 / 1024.0
    );

    println!();
    println!("Scaling curve: cost per sandbox of a burst (target: within 1.5x from the smallest to the largest burst, both paths)");
    println!();
    println!("| burst | all Ready | per sandbox | agent API | per sandbox | ratio | deleted | per sandbox | agent API removed | per sandbox |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for b in &curve {
        println!(
            "| {} | {:.1} s | {:.1} ms | {:.1} s | {:.1} ms | {:.2}x | {:.1} s | {:.1} ms | {:.1} s | {:.1} ms |",
            b.n,
            b.ready.as_secs_f64(),
            b.per(b.ready),
            b.direct.as_secs_f64(),
            b.per(b.direct),
            b.ready.as_secs_f64() / b.direct.as_secs_f64(),
            b.deleted.as_secs_f64(),
            b.per(b.deleted),
            b.direct_removed.as_secs_f64(),
            b.per(b.direct_removed),
        );
    }
    if let (Some(first), Some(last)) = (curve.first(), curve.last()) {
        let growth = |f: fn(&Burst) -> Duration| last.per(f(last)) / first.per(f(first));
        println!();
        println!(
            "Per-sandbox growth {} -> {}: Kubernetes create {:.2}x, agent API create {:.2}x, Kubernetes delete {:.2}x, agent API remove {:.2}x",
            first.n,
            last.n,
            growth(|b| b.ready),
            growth(|b| b.direct),
            growth(|b| b.deleted),
            growth(|b| b.direct_removed),
        );
    }
}
