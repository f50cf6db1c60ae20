//! Cluster benchmark (run by `tests/e2e/bench.sh`, release builds, real apiserver + etcd):
//! 1. Sandbox CR create -> Ready p50/p99 with a cached image, against the same sandbox created
//!    directly through the node-agent API (the Kubernetes path's overhead as a ratio);
//! 2. N Sandboxes (default 1000) created in a burst -> all Ready, against the same N created
//!    directly; the operator's and the node-agent's peak RSS.
//!
//! Prints a table; no assertion (timings belong here, not in tests).

use futures::{stream, StreamExt};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use microsandbox_client::api::CreateSandbox;
use microsandbox_crds::Sandbox;
use microsandbox_e2e::{sandbox_yaml, Cluster};
use std::time::{Duration, Instant};

fn is_ready(s: Option<&Sandbox>) -> bool {
    s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
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
        network: Default::default(),
        secrets: Vec::new(),
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn wait_all_ready(c: &Cluster, n: usize, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let ready = c
            .sandboxes()
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .iter()
            .filter(|s| is_ready(Some(s)))
            .count();
        if ready >= n {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "{ready}/{n} Ready after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    let burst: usize = std::env::var("MSB_BENCH_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
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

    // 2. Burst.
    let t = Instant::now();
    stream::iter(0..burst)
        .for_each_concurrent(32, |i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &sandbox(&format!("b-{i}")))
                    .await
                    .expect("create");
            }
        })
        .await;
    let created = t.elapsed();
    wait_all_ready(&c, burst, Duration::from_secs(900)).await;
    let burst_ready = t.elapsed();
    let op_rss = op.pid().map_or(0, rss_peak_kib);
    let agent_rss = agent.proc.pid().map_or(0, rss_peak_kib);
    let t = Instant::now();
    delete_all(&c).await;
    let burst_delete = t.elapsed();

    let t = Instant::now();
    stream::iter(0..burst)
        .for_each_concurrent(32, |i| {
            let client = client.clone();
            async move {
                let req = direct_req(format!("d-{i}"));
                client.create(req.clone()).await.expect("direct create");
            }
        })
        .await;
    let direct_burst = t.elapsed();
    stream::iter(0..burst)
        .for_each_concurrent(32, |i| {
            let client = client.clone();
            async move {
                let _ = client.remove(&format!("d-{i}")).await;
            }
        })
        .await;

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
        "| {burst} Sandboxes in a burst -> all Ready | {:.1} s (objects created in {:.1} s) | {:.1} s | {:.2}x | <= 60 s |",
        burst_ready.as_secs_f64(),
        created.as_secs_f64(),
        direct_burst.as_secs_f64(),
        burst_ready.as_secs_f64() / direct_burst.as_secs_f64()
    );
    println!(
        "| {burst} Sandboxes deleted -> all gone | {:.1} s | - | - | - |",
        burst_delete.as_secs_f64()
    );
    println!(
        "| operator peak RSS (whole run) | {:.1} MiB | - | - | <= 64 MiB |",
        op_rss as f64 / 1024.0
    );
    println!(
        "| node-agent peak RSS (whole run) | {:.1} MiB | - | - | - |",
        agent_rss as f64 / 1024.0
    );
}
