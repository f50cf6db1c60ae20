//! Soak: create / exec / write+read a file / remove cycles (every other one with a network and a
//! published port), beside a long-lived sandbox that execs every cycle, against one agent. The
//! agent's open fds, threads, mounts and network namespaces must come back to where they were
//! (countable leaks are bugs at any size); its RSS is sampled and the slope printed per 1000
//! cycles (memory is a benchmark figure, not an assertion).
//!
//! `MSB_SOAK_CYCLES` (default 150; `make soak` runs 10,000).

mod common;
#[path = "common/world.rs"]
mod world;

use common::*;
use futures::TryStreamExt;
use microsandbox_client::api::CreateSandbox;
use microsandbox_testkit::{slope, Footprint};
use std::time::Instant;
use world::World;

/// What is counted about the agent process and its state directory.
#[derive(Debug, Clone, Copy)]
struct Sample {
    cycle: usize,
    rss_kib: u64,
    fds: usize,
    threads: u64,
    mounts: usize,
    netns: usize,
}

fn sample(agent: &TestAgent, cycle: usize) -> Sample {
    let prefix = microsandbox_agent::network::netns_prefix(&agent.state);
    let footprint = Footprint::of(agent.pid());
    Sample {
        cycle,
        rss_kib: footprint.rss_kib,
        fds: footprint.fds,
        threads: footprint.threads,
        mounts: agent.mounts().len(),
        netns: std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .count(),
    }
}

fn request(name: &str, networked: bool, port: u16) -> CreateSandbox {
    let network = if networked {
        serde_json::json!({"policy": "public_only",
                           "publish": [{"host_port": port, "guest_port": 8080}]})
    } else {
        serde_json::json!({"policy": "none"})
    };
    serde_json::from_value(serde_json::json!({
        "name": name, "image": "busybox", "detached": true, "isolation": "container",
        "memory_mib": 64, "network": network,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_create_exec_remove_leaks_nothing() {
    let cycles: usize = std::env::var("MSB_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let world = World::new();
    let args = world.agent_args();
    let agent = TestAgent::start_with("soak", &args.iter().map(String::as_str).collect::<Vec<_>>());
    let c = agent.client();
    c.create(request("soak-long", false, 0)).await.unwrap();
    // Warm-up: the first sandboxes fill caches (image, pools of connections and threads).
    for i in 0..5 {
        let name = format!("soak-warm{i}");
        c.create(request(&name, i % 2 == 0, free_port()))
            .await
            .unwrap();
        c.remove(&name).await.unwrap();
    }
    let base = sample(&agent, 0);
    let every = (cycles / 20).max(1);
    let mut samples = vec![base];
    let started = Instant::now();
    for i in 1..=cycles {
        let name = format!("soak-{i}");
        c.create(request(&name, i % 2 == 0, free_port()))
            .await
            .unwrap_or_else(|e| panic!("cycle {i}: create: {e}"));
        let out = sh(&c, &name, "echo $((6 * 7))").await;
        assert_eq!(out.stdout_str(), "42\n", "cycle {i}");
        c.fs_write_bytes(&name, "/tmp/f", None, vec![b'x'; 64 << 10])
            .await
            .unwrap();
        let read: Vec<bytes::Bytes> = c
            .fs_read(&name, "/tmp/f")
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            read.iter().map(|b| b.len()).sum::<usize>(),
            64 << 10,
            "cycle {i}"
        );
        assert_eq!(sh(&c, "soak-long", "echo ok").await.stdout_str(), "ok\n");
        c.remove(&name)
            .await
            .unwrap_or_else(|e| panic!("cycle {i}: remove: {e}"));
        if i % every == 0 || i == cycles {
            samples.push(sample(&agent, i));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let end = *samples.last().unwrap();
    let per_1000 = |f: fn(&Sample) -> f64| {
        // The slope over the second half: after caches settle.
        let half: Vec<(f64, f64)> = samples[samples.len() / 2..]
            .iter()
            .map(|s| (s.cycle as f64, f(s)))
            .collect();
        slope(&half) * 1000.0
    };
    eprintln!(
        "soak: {cycles} cycles in {elapsed:.0} s ({:.0} ms each); agent RSS {} -> {} KiB \
         (slope {:+.0} KiB per 1000 cycles over the second half), fds {} -> {} ({:+.1}/1000), \
         threads {} -> {} ({:+.1}/1000), mounts {} -> {}, netns {} -> {}",
        elapsed * 1000.0 / cycles as f64,
        base.rss_kib,
        end.rss_kib,
        per_1000(|s| s.rss_kib as f64),
        base.fds,
        end.fds,
        per_1000(|s| s.fds as f64),
        base.threads,
        end.threads,
        per_1000(|s| s.threads as f64),
        base.mounts,
        end.mounts,
        base.netns,
        end.netns,
    );
    // Countable resources come back: nothing is held per removed sandbox. (Threads of tokio's
    // blocking pool linger up to 10 s idle, hence the margin.)
    assert_eq!(end.mounts, base.mounts, "{samples:#?}");
    assert_eq!(end.netns, base.netns, "{samples:#?}");
    assert!(end.fds <= base.fds + 4, "fds grew: {samples:#?}");
    assert!(
        end.threads <= base.threads + 16,
        "threads grew: {samples:#?}"
    );
    c.remove("soak-long").await.unwrap();
    assert_eq!(world.leftovers(), Vec::<String>::new());
}
