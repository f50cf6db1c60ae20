//! 7. Pause, resume and idle suspension: what a frozen sandbox still costs next to an idle
//!    running one (CPU over a window, host memory of the cgroups, the agent's CPU), how long a
//!    pause and a resume take, and an exec that first resumes a sandbox suspended for being idle
//!    against the same exec on a running sandbox.

use crate::harness::{cgroup_cpu, cgroup_memory, cmd, process_cpu, Bench, AGENT_CGROUP_PARENT};
use crate::report::{Report, Row, Target};
use crate::stats::{ms, Samples};
use crate::Res;
use futures::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};

const IMAGE: &str = "busybox";
/// How long CPU use is watched for each state.
const WINDOW: Duration = Duration::from_secs(5);

/// CPU time of all `names`' cgroups, their memory, and the agent's CPU time.
fn usage(b: &Bench, names: &[String]) -> (Duration, u64, Duration) {
    let (mut cpu, mut mem) = (Duration::ZERO, 0);
    for n in names {
        let rel = format!("{AGENT_CGROUP_PARENT}/msb-{n}");
        cpu += cgroup_cpu(&rel).unwrap_or_default();
        mem += cgroup_memory(&rel).unwrap_or(0);
    }
    let agent = b.agent_pid().and_then(process_cpu).unwrap_or_default();
    (cpu, mem, agent)
}

/// CPU used over [`WINDOW`] (sandboxes', agent's) and the memory at its end.
async fn over_window(b: &Bench, names: &[String]) -> (Duration, u64, Duration) {
    let (cpu0, _, agent0) = usage(b, names);
    tokio::time::sleep(WINDOW).await;
    let (cpu1, mem, agent1) = usage(b, names);
    (
        cpu1.saturating_sub(cpu0),
        mem,
        agent1.saturating_sub(agent0),
    )
}

pub async fn bench_pause(b: &Bench, n: usize, iters: usize, rep: &mut Report) -> Res<()> {
    eprintln!(
        "[pause] {n} idle sandboxes running, then paused; {iters} resumes from idle suspension"
    );
    let names: Vec<String> = (0..n).map(|i| format!("bench-frz-{i:03}")).collect();
    let created: Vec<Res<()>> = futures::stream::iter(names.iter().map(|n| b.create(n, IMAGE)))
        .buffer_unordered(4)
        .collect()
        .await;
    created.into_iter().collect::<Res<Vec<()>>>()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (run_cpu, run_mem, run_agent) = over_window(b, &names).await;
    let mut pause = Samples::default();
    for name in &names {
        let t = Instant::now();
        b.client
            .pause(name)
            .await
            .map_err(|e| format!("pause {name}: {e}"))?;
        pause.push(t.elapsed());
    }
    let (frz_cpu, frz_mem, frz_agent) = over_window(b, &names).await;
    let mut resume = Samples::default();
    for name in &names {
        let t = Instant::now();
        b.client
            .resume(name)
            .await
            .map_err(|e| format!("resume {name}: {e}"))?;
        resume.push(t.elapsed());
    }
    for name in &names {
        b.remove(name).await?;
    }

    // Idle suspension: an exec that finds the sandbox suspended vs one that finds it running.
    let sleepy = "bench-sleepy".to_string();
    let mut req: microsandbox_client::api::CreateSandbox = serde_json::from_value(json!({
        "name": sleepy, "image": IMAGE, "detached": true, "isolation": "container",
    }))?;
    req.idle_timeout_secs = Some(1);
    b.create_with(req).await?;
    let (mut woken, mut awake) = (Samples::default(), Samples::default());
    for _ in 0..iters {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = b.client.get(&sleepy).await?.state;
            if state == microsandbox_client::api::SandboxState::Suspended {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{sleepy} not suspended after 10 s (state {state})").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let t = Instant::now();
        b.client.exec(&sleepy, cmd("true", &[])).await?;
        woken.push(t.elapsed());
        let t = Instant::now();
        b.client.exec(&sleepy, cmd("true", &[])).await?;
        awake.push(t.elapsed());
    }
    b.remove(&sleepy).await?;

    let per_ms = |d: Duration| ms(d) / n as f64;
    let kib = |bytes: u64| bytes as f64 / 1024.0 / n as f64;
    let row = |benchmark: String, unit, ours, baseline: Option<(f64, String)>| Row {
        section: 7,
        benchmark,
        unit,
        ours,
        baseline,
        higher_is_better: false,
        target: Target::None,
    };
    let running = format!("{n} idle running");
    rep.row(row(
        format!(
            "CPU of {n} paused sandboxes over {} s, per sandbox",
            WINDOW.as_secs()
        ),
        "ms",
        per_ms(frz_cpu),
        Some((per_ms(run_cpu), running.clone())),
    ));
    rep.row(row(
        format!("host memory (cgroup) of a paused sandbox ({n} paused)"),
        "KiB",
        kib(frz_mem),
        Some((kib(run_mem), running.clone())),
    ));
    rep.row(row(
        format!(
            "agent CPU over {} s with {n} paused sandboxes",
            WINDOW.as_secs()
        ),
        "ms",
        ms(frz_agent),
        Some((ms(run_agent), running)),
    ));
    rep.row(row(
        "pause p50 / resume p50".into(),
        "ms",
        ms(pause.p50()),
        Some((ms(resume.p50()), "resume".into())),
    ));
    rep.row(Row {
        section: 7,
        benchmark: format!("exec `true` that resumes an idle-suspended sandbox, p50 ({iters}x)"),
        unit: "ms",
        ours: ms(woken.p50()),
        baseline: Some((ms(awake.p50()), "the same exec, sandbox running".into())),
        higher_is_better: false,
        target: Target::None,
    });
    rep.detail(
        "pause",
        json!({
            "sandboxes": n,
            "window_s": WINDOW.as_secs(),
            "running": {"cgroup_cpu_ms": ms(run_cpu), "cgroup_bytes": run_mem, "agent_cpu_ms": ms(run_agent)},
            "paused": {"cgroup_cpu_ms": ms(frz_cpu), "cgroup_bytes": frz_mem, "agent_cpu_ms": ms(frz_agent)},
            "pause": pause.summary(),
            "resume": resume.summary(),
            "exec_resuming": woken.summary(),
            "exec_running": awake.summary(),
        }),
    );
    rep.note(format!(
        "pause: a paused (or idle-suspended) sandbox keeps its memory (host memory is unchanged: \
         {:.0} vs {:.0} KiB per sandbox) and its network, records and mounts; its processes get no \
         CPU at all ({:.2} vs {:.2} ms per sandbox over {} s). It costs the node its memory, not \
         its CPUs.",
        kib(frz_mem),
        kib(run_mem),
        per_ms(frz_cpu),
        per_ms(run_cpu),
        WINDOW.as_secs()
    ));
    Ok(())
}
