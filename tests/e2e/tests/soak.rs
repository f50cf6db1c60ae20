//! Operator soak: `MSB_OPERATOR_SOAK_OBJECTS` Sandbox objects (default 200; `make soak-operator`
//! runs 10,000) created and deleted in batches of `MSB_OPERATOR_SOAK_BATCH` (50) through the
//! operator and a node-agent on a real apiserver. After every batch (all Ready, then all gone)
//! the operator's and the agent's resident memory, open fds and threads are sampled: fds and
//! threads must come back to where they were, the memory slope over the second half is printed
//! (KiB per 1,000 objects; a figure, not an assertion), and nothing may be left behind: no
//! object, no finalizer, no sandbox on the node.

use futures::{stream, StreamExt, TryStreamExt};
use kube::api::{DeleteParams, PostParams};
use microsandbox_crds::Sandbox;
use microsandbox_e2e::{sandbox_yaml, slope, Cluster, Footprint};
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    objects: usize,
    operator: Footprint,
    agent: Footprint,
}

/// KiB per 1,000 objects of `rss` over the second half of `samples`.
fn rss_slope(samples: &[Sample], rss: impl Fn(&Sample) -> u64) -> f64 {
    let half = &samples[samples.len() / 2..];
    let points: Vec<(f64, f64)> = half
        .iter()
        .map(|s| (s.objects as f64, rss(s) as f64))
        .collect();
    slope(&points) * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_soak_over_sandbox_objects() {
    let objects = env_usize("MSB_OPERATOR_SOAK_OBJECTS", 200);
    let batch = env_usize("MSB_OPERATOR_SOAK_BATCH", 50).clamp(1, objects.max(1));
    let c = Cluster::new("e2e-soak").await;
    let op = c.operator(&[]);
    let agent = c.agent(
        "n1",
        &[
            "--capacity-sandboxes",
            &(batch + 10).to_string(),
            "--capacity-memory-mib",
            "1000000",
            "--capacity-cpus",
            "100000",
        ],
    );
    let client = agent.client().await;
    let api = c.sandboxes();
    let (op_pid, agent_pid) = (op.pid().unwrap(), agent.proc.pid().unwrap());
    let sample = |objects| Sample {
        objects,
        operator: Footprint::of(op_pid),
        agent: Footprint::of(agent_pid),
    };
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut done = 0;
    while done < objects {
        let n = batch.min(objects - done);
        let names: Vec<String> = (done..done + n).map(|i| format!("soak-{i}")).collect();
        stream::iter(names.iter().map(|name| {
            let api = api.clone();
            let obj: Sandbox = serde_saphyr::from_str(&sandbox_yaml(name, "")).unwrap();
            async move { api.create(&PostParams::default(), &obj).await }
        }))
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await
        .expect("create");
        c.wait_all_ready(n, Duration::from_secs(300)).await;
        api.delete_collection(&DeleteParams::default(), &Default::default())
            .await
            .expect("delete collection");
        c.wait_no_sandboxes(Duration::from_secs(300)).await;
        done += n;
        // The first batch warms caches, pools and the image: it is the baseline.
        samples.push(sample(done));
        if samples.len() % 10 == 0 {
            let s = samples.last().unwrap();
            eprintln!(
                "soak: {done}/{objects} objects in {:.0} s; operator {} KiB {} fds {} threads; agent {} KiB {} fds",
                started.elapsed().as_secs_f64(),
                s.operator.rss_kib,
                s.operator.fds,
                s.operator.threads,
                s.agent.rss_kib,
                s.agent.fds
            );
        }
    }
    let elapsed = started.elapsed();
    // Tokio's blocking-pool threads outlive a burst by 10 s of idleness: sample again once they
    // had the chance to go, so a high-water mark of concurrent work is not taken for a leak.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let settled = sample(objects);
    let (base, end) = (samples[0], *samples.last().unwrap());
    let op_slope = rss_slope(&samples, |s| s.operator.rss_kib);
    let agent_slope = rss_slope(&samples, |s| s.agent.rss_kib);
    eprintln!(
        "| operator soak | {objects} Sandbox objects in batches of {batch}: {:.0} s ({:.1} ms/object) |\n\
         | operator RSS | {} -> {} KiB (peak {} KiB), slope {op_slope:+.0} KiB/1000 objects over the second half |\n\
         | operator fds / threads | {} -> {} / {} -> {} |\n\
         | node-agent RSS | {} -> {} KiB, slope {agent_slope:+.0} KiB/1000 objects |\n\
         | node-agent fds / threads | {} -> {} / {} -> {} (after 12 s idle: {} / {}) |",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / objects as f64,
        base.operator.rss_kib,
        end.operator.rss_kib,
        end.operator.peak_rss_kib,
        base.operator.fds,
        end.operator.fds,
        base.operator.threads,
        end.operator.threads,
        base.agent.rss_kib,
        end.agent.rss_kib,
        base.agent.fds,
        end.agent.fds,
        base.agent.threads,
        end.agent.threads,
        settled.agent.fds,
        settled.agent.threads,
    );
    // Nothing left: every object is gone (wait_no_sandboxes), and the node runs nothing.
    assert_eq!(client.list().await.expect("agent list"), Vec::new());
    // fds and threads come back (a few of slack for connections being recycled).
    for (who, b, e) in [
        ("operator", base.operator, settled.operator),
        ("node-agent", base.agent, settled.agent),
    ] {
        assert!(e.fds <= b.fds + 8, "{who} fds grew to {e:?}: {samples:#?}");
        assert!(
            e.threads <= b.threads + 8,
            "{who} threads grew to {e:?}: {samples:#?}"
        );
    }
}
