//! `microsandbox-bench`: the node agent's performance next to baselines measured in the same run
//! (machines are noisy, so only ratios against same-run baselines mean anything).
//!
//! Starts the release agent (`target/release/microsandbox-agent`, guest agent from
//! `MSB_GUEST_AGENT` or `target/x86_64-unknown-linux-gnu/release/microsandbox-guest`) on a state
//! directory under `target/bench-state`, with the local registry (`make setup`) as docker.io's
//! mirror, pulls busybox once and measures:
//!
//! 1. create -> first output: `create` (detached, container) + streaming exec of `echo x` until its
//!    first stdout byte (`/bin/true` prints nothing, so `echo x` stands in), vs `crun run` of a
//!    bundle over a copy of the same rootfs running `echo x`, until its first stdout byte.
//! 2. exec round trip p50/p99 of `/bin/true` (collected exec) vs `crun exec <id> /bin/true`.
//! 3. exec stdout throughput: `head -c N /dev/zero` streamed over the exec WebSocket vs the same
//!    static busybox `head` run on the host into a pipe read by this process.
//! 4. host<->guest copy of a random file (`fs_write_from_file` / `fs_read_to_file`) vs
//!    `std::fs::copy` of the same file on the host.
//! 5. idle memory per sandbox with N running: agent RSS growth / N, and the sandboxes' cgroup
//!    memory / N (vs the cgroup memory of an idle `crun` container running `sleep`).
//! 6. HTTP download through a sandbox's `public_only` link vs on the host's loopback (`net`).
//! 7. pause/resume: CPU and memory of N paused sandboxes vs N idle running ones, pause and
//!    resume latency, an exec that resumes an idle-suspended sandbox vs one on a running one.
//! 8. snapshot of a 100 MiB writable layer vs a host copy; create from it vs from the image.
//! 9. create from a warm pool (claim) vs the same create booted, p50/p99.
//!
//! Knobs: `MSB_BENCH_SANDBOXES` (100), `MSB_BENCH_CREATE_ITERS` (20), `MSB_BENCH_EXEC_ITERS` (500),
//! `MSB_BENCH_STREAM_MIB` (512), `MSB_BENCH_COPY_MIB` (256), `MSB_BENCH_NET_MIB` (256),
//! `MSB_BENCH_REPS` (3), `MSB_BENCH_ONLY` (comma list of create,exec,stream,copy,memory,net,pause,snapshot,pool),
//! `MSB_KEEP_STATE`.
//! Prints a markdown table and writes `target/bench-results.json`.

mod baseline;
mod harness;
mod net;
mod pause;
mod pool;
mod report;
mod snapshot;
mod stats;

use baseline::Baseline;
use futures::StreamExt;
use harness::{
    cgroup_memory, cmd, rss_kib, Bench, CpuMark, Paths, AGENT_CGROUP_PARENT, NAME_PREFIX,
};
use microsandbox_client::api::PullImage;
use microsandbox_client::ExecEvent;
use report::{Report, Row, Target};
use serde_json::json;
use stats::{mb_per_s, ms, Samples};
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const IMAGE: &str = "busybox";
const MIB: u64 = 1024 * 1024;

/// Benchmark knobs (environment).
#[derive(Debug, Clone)]
struct Config {
    sandboxes: usize,
    create_iters: usize,
    exec_iters: usize,
    stream_mib: u64,
    copy_mib: u64,
    net_mib: u64,
    reps: usize,
    only: Option<Vec<String>>,
}

fn env_num<T: std::str::FromStr>(var: &str, default: T) -> Res<T> {
    match std::env::var(var) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{var}={v:?} is not a valid number").into()),
        Err(_) => Ok(default),
    }
}

impl Config {
    fn from_env() -> Res<Self> {
        let c = Config {
            sandboxes: env_num("MSB_BENCH_SANDBOXES", 100)?,
            create_iters: env_num("MSB_BENCH_CREATE_ITERS", 20)?,
            exec_iters: env_num("MSB_BENCH_EXEC_ITERS", 500)?,
            stream_mib: env_num("MSB_BENCH_STREAM_MIB", 512)?,
            copy_mib: env_num("MSB_BENCH_COPY_MIB", 256)?,
            net_mib: env_num("MSB_BENCH_NET_MIB", 256)?,
            reps: env_num("MSB_BENCH_REPS", 3)?,
            only: std::env::var("MSB_BENCH_ONLY").ok().map(|s| {
                s.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            }),
        };
        if c.sandboxes == 0
            || c.create_iters == 0
            || c.exec_iters == 0
            || c.reps == 0
            || c.stream_mib == 0
            || c.copy_mib == 0
            || c.net_mib == 0
        {
            return Err("benchmark sizes must be at least 1".into());
        }
        Ok(c)
    }

    fn enabled(&self, what: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == what))
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "sandboxes": self.sandboxes,
            "create_iters": self.create_iters,
            "exec_iters": self.exec_iters,
            "stream_mib": self.stream_mib,
            "copy_mib": self.copy_mib,
            "net_mib": self.net_mib,
            "reps": self.reps,
            "only": self.only,
        })
    }
}

fn host_info() -> serde_json::Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": read("/proc/sys/kernel/osrelease"),
        "loadavg_at_end": read("/proc/loadavg"),
        "cgroup_v2": Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Sandbox uplinks live in namespaces of this run, with no route to a real network.
    let world = match net::NetWorld::new() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: network namespaces for the benchmark: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bench = match Paths::new().and_then(|p| Bench::start(p, &world.agent_args())) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "agent pid {} state {}",
        bench.agent_pid().unwrap_or(0),
        bench.paths.state.display()
    );
    let mut report = Report::default();
    let result = tokio::select! {
        r = run(&bench, &cfg, &world, &mut report) => r,
        s = interrupted() => Err(format!("interrupted by {s}").into()),
    };
    let result = result.map_err(|e| format!("{e}\nagent log tail:\n{}", bench.log_tail()));
    bench.shutdown().await;
    drop(bench);

    let md = report.markdown();
    println!("{md}");
    let out = harness::workspace().join("target/bench-results.json");
    let doc = report.json(cfg.json(), host_info());
    match serde_json::to_vec_pretty(&doc).map(|v| std::fs::write(&out, v)) {
        Ok(Ok(())) => eprintln!("wrote {}", out.display()),
        Ok(Err(e)) => eprintln!("cannot write {}: {e}", out.display()),
        Err(e) => eprintln!("cannot encode the results: {e}"),
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM (the run is then abandoned and everything cleaned up).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

async fn run(b: &Bench, cfg: &Config, world: &net::NetWorld, rep: &mut Report) -> Res<()> {
    let t = Instant::now();
    let digest = b
        .client
        .pull_image_wait(PullImage {
            image: IMAGE.into(),
            policy: Default::default(),
        })
        .await
        .map_err(|e| format!("pull {IMAGE} (is the test registry up? `make setup`): {e}"))?;
    eprintln!(
        "pulled {IMAGE} {digest} in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    rep.detail("image", json!({ "name": IMAGE, "digest": digest }));

    // The baselines run on a copy of the very rootfs a sandbox sees.
    let export = format!("{NAME_PREFIX}export");
    b.create(&export, IMAGE).await?;
    let merged = b.paths.state.join("sandboxes").join(&export).join("rootfs");
    let base = tokio::task::block_in_place(|| Baseline::prepare(b, &merged))?;
    b.remove(&export).await?;

    let sleeper = format!("msb-bench-sleep-{}", std::process::id());
    if cfg.enabled("exec") || cfg.enabled("memory") {
        let bundle = base.bundle("sleep", &["sleep", "1000"])?;
        base.start_detached(b, &bundle, &sleeper)?;
    }
    // Memory first: later benchmarks grow the agent's heap, which then hides what sandboxes add.
    if cfg.enabled("memory") {
        bench_memory(b, &sleeper, cfg, rep).await?;
    }
    if cfg.enabled("create") {
        bench_create(b, &base, cfg, rep).await?;
    }
    let work = format!("{NAME_PREFIX}work");
    let needs_work = ["exec", "stream", "copy"].iter().any(|w| cfg.enabled(w));
    if needs_work {
        b.create(&work, IMAGE).await?;
    }
    if cfg.enabled("exec") {
        bench_exec(b, &base, &work, &sleeper, cfg, rep).await?;
    }
    if cfg.enabled("stream") {
        bench_stream(b, &base, &work, cfg, rep).await?;
    }
    if cfg.enabled("net") {
        net::bench_net(b, &base, world, cfg.net_mib, cfg.reps, rep).await?;
    }
    if cfg.enabled("copy") {
        bench_copy(b, &work, cfg, rep).await?;
    }
    if cfg.enabled("pause") {
        pause::bench_pause(b, cfg.sandboxes, 10, rep).await?;
    }
    if cfg.enabled("pool") {
        pool::bench_pool(b, 30, rep).await?;
    }
    if cfg.enabled("snapshot") {
        snapshot::bench_snapshot(b, 100, cfg.reps, rep).await?;
    }
    if needs_work {
        b.remove(&work).await?;
    }
    base.delete(b, &sleeper);
    Ok(())
}

/// One create -> first stdout byte of `echo x` -> exit; returns (first output, create alone).
async fn ours_first_output(b: &Bench, name: &str) -> Res<(Duration, Duration)> {
    let start = Instant::now();
    b.create(name, IMAGE).await?;
    let created = start.elapsed();
    let mut s = b
        .client
        .exec_stream(name, cmd("echo", &["x"]))
        .await
        .map_err(|e| format!("exec_stream {name}: {e}"))?;
    let mut first = None;
    let mut out = Vec::new();
    while let Some(ev) = s.next_event().await {
        match ev? {
            ExecEvent::Stdout(d) => {
                first.get_or_insert_with(|| start.elapsed());
                out.extend_from_slice(&d);
            }
            ExecEvent::Exited { exit_code, .. } => {
                if exit_code != 0 || out != b"x\n" {
                    return Err(format!("echo x in {name}: exit {exit_code}, {out:?}").into());
                }
                break;
            }
            _ => {}
        }
    }
    let first = first.ok_or_else(|| format!("echo x in {name}: no output"))?;
    Ok((first, created))
}

async fn bench_create(b: &Bench, base: &Baseline, cfg: &Config, rep: &mut Report) -> Res<()> {
    eprintln!(
        "[create] {} x (create + exec `echo x` + remove) vs crun run `echo x`",
        cfg.create_iters
    );
    let bundle = base.bundle("echo", &["echo", "x"])?;
    let (mut ours, mut created, mut removed, mut crun) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let pid = std::process::id();
    // Two warm-up rounds, then alternate ours / crun so that load changes hit both alike.
    for i in 0..cfg.create_iters + 2 {
        let name = format!("{NAME_PREFIX}create-{i}");
        let (first, create) = ours_first_output(b, &name).await?;
        let t = Instant::now();
        b.remove(&name).await?;
        let remove = t.elapsed();
        let id = format!("msb-bench-echo-{pid}-{i}");
        let c = tokio::task::block_in_place(|| base.run_first_output(b, &bundle, &id, b"x\n"))?;
        if i >= 2 {
            ours.push(first);
            created.push(create);
            removed.push(remove);
            crun.push(c);
        }
    }
    rep.row(Row {
        section: 1,
        benchmark: "create -> first output (`echo x`) p50".into(),
        unit: "ms",
        ours: ms(ours.p50()),
        baseline: Some((ms(crun.p50()), "crun run".into())),
        higher_is_better: false,
        target: Target::RatioAtMost(2.0),
    });
    rep.detail(
        "create_first_output",
        json!({
            "ours": ours.summary(),
            "ours_create_call": created.summary(),
            "ours_remove_call": removed.summary(),
            "crun_run": crun.summary(),
        }),
    );
    rep.note(format!(
        "create -> first output: `/bin/true` prints nothing, so both sides run `echo x`; ours = \
         create (detached, container) + streaming exec until the first stdout byte (the create \
         call alone: p50 {:.1} ms); remove p50 {:.1} ms is not counted. crun runs `crun spec`'s \
         default config (+ cgroup namespace; no seccomp filter, no resource limits) over a \
         read-only copy of the same rootfs.",
        ms(created.p50()),
        ms(removed.p50())
    ));
    Ok(())
}

async fn bench_exec(
    b: &Bench,
    base: &Baseline,
    work: &str,
    sleeper: &str,
    cfg: &Config,
    rep: &mut Report,
) -> Res<()> {
    eprintln!(
        "[exec] {} x collected exec `/bin/true` vs crun exec",
        cfg.exec_iters
    );
    let (mut ours, mut crun) = (
        Samples::with_capacity(cfg.exec_iters),
        Samples::with_capacity(cfg.exec_iters),
    );
    let req = cmd("/bin/true", &[]);
    for _ in 0..20 {
        b.client.exec(work, req.clone()).await?;
        tokio::task::block_in_place(|| base.exec(sleeper, &["/bin/true"]))?;
    }
    // Blocks of 25, alternating.
    let mut cpu = Vec::new();
    while ours.len() < cfg.exec_iters {
        let n = (cfg.exec_iters - ours.len()).min(25);
        let mark = CpuMark::now(b, work);
        for _ in 0..n {
            let t = Instant::now();
            let out = b.client.exec(work, req.clone()).await?;
            ours.push(t.elapsed());
            if !out.success() {
                return Err(format!("/bin/true failed: {out:?}").into());
            }
        }
        cpu.push((mark, CpuMark::now(b, work), n));
        tokio::task::block_in_place(|| {
            for _ in 0..n {
                crun.push(base.exec(sleeper, &["/bin/true"])?);
            }
            Res::Ok(())
        })?;
    }
    rep.row(Row {
        section: 2,
        benchmark: "exec round trip `/bin/true` p50".into(),
        unit: "ms",
        ours: ms(ours.p50()),
        baseline: Some((ms(crun.p50()), "crun exec".into())),
        higher_is_better: false,
        target: Target::AtMost(1.0),
    });
    rep.row(Row {
        section: 2,
        benchmark: "exec round trip `/bin/true` p99".into(),
        unit: "ms",
        ours: ms(ours.p99()),
        baseline: Some((ms(crun.p99()), "crun exec".into())),
        higher_is_better: false,
        target: Target::None,
    });
    // Floors, to see where the time goes: an HTTP round trip to the agent (`/healthz`) and a
    // plain fork+exec+wait of the same `/bin/true` on the host.
    let (mut health, mut spawn) = (Samples::default(), Samples::default());
    let truebin = base.rootfs.join("bin/true");
    for _ in 0..cfg.exec_iters.min(200) {
        let t = Instant::now();
        b.client.health().await?;
        health.push(t.elapsed());
        tokio::task::block_in_place(|| {
            let t = Instant::now();
            let st = std::process::Command::new(&truebin).status()?;
            spawn.push(t.elapsed());
            if st.success() {
                Res::Ok(())
            } else {
                Err("host /bin/true failed".into())
            }
        })?;
    }
    rep.detail(
        "exec_round_trip",
        json!({
            "ours": ours.summary(),
            "crun_exec": crun.summary(),
            "floor_api_healthz": health.summary(),
            "floor_host_spawn_true": spawn.summary(),
            "cpu_per_exec": cpu_total(&cpu),
        }),
    );
    rep.note(format!(
        "exec floors: agent HTTP round trip (/healthz) p50 {:.3} ms; fork+exec+wait of busybox \
         `true` on the host p50 {:.3} ms.",
        ms(health.p50()),
        ms(spawn.p50())
    ));
    Ok(())
}

/// CPU per unit over several measured stretches: `(start, end, units)` summed, then divided.
fn cpu_total(parts: &[(CpuMark, CpuMark, usize)]) -> serde_json::Value {
    let units: usize = parts.iter().map(|p| p.2).sum();
    let mut sums = serde_json::Map::new();
    for (a, b, _) in parts {
        if let serde_json::Value::Object(m) = a.since(b, units.max(1) as f64) {
            for (k, v) in m {
                let add = v.as_f64();
                let e = sums.entry(k).or_insert(json!(0.0));
                *e = match (e.as_f64(), add) {
                    (Some(x), Some(y)) => json!(x + y),
                    _ => serde_json::Value::Null,
                };
            }
        }
    }
    sums.into()
}

/// Reads a child's stdout to the end; returns the byte count.
fn drain(mut r: impl Read) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => n += k as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Streams `args` (whose stdout is `bytes` long) over the exec WebSocket; returns MB/s.
async fn stream_once(b: &Bench, work: &str, args: &[&str], bytes: u64) -> Res<(f64, u64)> {
    let start = Instant::now();
    let mut s = b.client.exec_stream(work, cmd(args[0], &args[1..])).await?;
    let (mut got, mut frames) = (0u64, 0u64);
    while let Some(ev) = s.next_event().await {
        match ev? {
            ExecEvent::Stdout(d) => {
                got += d.len() as u64;
                frames += 1;
            }
            ExecEvent::Exited { exit_code, .. } => {
                if exit_code != 0 {
                    return Err(format!("{} exited {exit_code}", args.join(" ")).into());
                }
                break;
            }
            _ => {}
        }
    }
    let took = start.elapsed();
    if got != bytes {
        return Err(format!("{}: streamed {got} bytes, expected {bytes}", args.join(" ")).into());
    }
    Ok((mb_per_s(got, took), got / frames.max(1)))
}

/// Runs `busybox args...` on the host with stdout piped into this process; returns MB/s.
fn host_pipe_once(busybox: &Path, args: &[&str], bytes: u64) -> Res<f64> {
    let start = Instant::now();
    let mut child = std::process::Command::new(busybox)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let got = drain(child.stdout.take().ok_or("no stdout")?)?;
    let status = child.wait()?;
    let took = start.elapsed();
    if !status.success() || got != bytes {
        return Err(format!("host busybox {}: {status}, {got} bytes", args.join(" ")).into());
    }
    Ok(mb_per_s(got, took))
}

async fn bench_stream(
    b: &Bench,
    base: &Baseline,
    work: &str,
    cfg: &Config,
    rep: &mut Report,
) -> Res<()> {
    let bytes = cfg.stream_mib * MIB;
    let n = bytes.to_string();
    let count = format!("count={}", cfg.stream_mib);
    // busybox `head -c` is itself slow (small reads and writes), so the transport is also
    // measured with a producer that writes 1 MiB at a time.
    let producers: [(&str, Vec<&str>); 2] = [
        ("head -c", vec!["head", "-c", &n, "/dev/zero"]),
        ("dd bs=1M", vec!["dd", "if=/dev/zero", "bs=1048576", &count]),
    ];
    let busybox = base.busybox();
    let mut details = serde_json::Map::new();
    for (label, args) in &producers {
        eprintln!(
            "[stream] `{}` ({} MiB) over the exec WebSocket vs the same busybox on the host, {} reps",
            args.join(" "),
            cfg.stream_mib,
            cfg.reps
        );
        let (mut ours, mut host, mut frame) = (Vec::new(), Vec::new(), 0);
        let mut cpu = Vec::new();
        for _ in 0..cfg.reps {
            let mark = CpuMark::now(b, work);
            let (mbs, avg_frame) = stream_once(b, work, args, bytes).await?;
            cpu.push((mark, CpuMark::now(b, work), cfg.stream_mib as usize));
            ours.push(mbs);
            frame = avg_frame;
            host.push(tokio::task::block_in_place(|| {
                host_pipe_once(&busybox, args, bytes)
            })?);
        }
        rep.row(Row {
            section: 3,
            benchmark: format!("exec stdout throughput, `{label}` {} MiB", cfg.stream_mib),
            unit: "MB/s",
            ours: median(ours.clone()),
            baseline: Some((median(host.clone()), "same busybox on host, pipe".into())),
            higher_is_better: true,
            target: Target::AtLeast(500.0),
        });
        details.insert(
            label.to_string(),
            json!({
                "ours": ours,
                "host_pipe": host,
                "avg_stdout_event_bytes": frame,
                "cpu_per_mib": cpu_total(&cpu),
            }),
        );
    }
    rep.detail("stream_throughput_mb_s", details.into());
    Ok(())
}

/// A file of `bytes` random bytes.
fn random_file(path: &Path, bytes: u64) -> Res<()> {
    let mut src = std::fs::File::open("/dev/urandom")?.take(bytes);
    let mut dst = std::fs::File::create(path)?;
    std::io::copy(&mut src, &mut dst)?;
    dst.flush()?;
    Ok(())
}

/// Byte-for-byte equality of two files.
fn same_content(a: &Path, b: &Path) -> Res<bool> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba)?;
        if na == 0 {
            return Ok(fb.read(&mut bb)? == 0);
        }
        fb.read_exact(&mut bb[..na])?;
        if ba[..na] != bb[..na] {
            return Ok(false);
        }
    }
}

async fn bench_copy(b: &Bench, work: &str, cfg: &Config, rep: &mut Report) -> Res<()> {
    let bytes = cfg.copy_mib * MIB;
    eprintln!(
        "[copy] {} MiB random file host -> guest -> host vs std::fs::copy, {} reps",
        cfg.copy_mib, cfg.reps
    );
    let dir = &b.paths.scratch;
    let src = dir.join("copy-src.bin");
    let back = dir.join("copy-back.bin");
    let host_dst = dir.join("copy-host.bin");
    tokio::task::block_in_place(|| random_file(&src, bytes))?;
    let guest_path = "/tmp/bench-blob";
    let (mut up, mut down, mut host) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_up, mut cpu_down) = (Vec::new(), Vec::new());
    let mib = cfg.copy_mib as usize;
    for _ in 0..cfg.reps {
        let mark = CpuMark::now(b, work);
        let t = Instant::now();
        let n = b.client.fs_write_from_file(work, &src, guest_path).await?;
        up.push(mb_per_s(n, t.elapsed()));
        let mid = CpuMark::now(b, work);
        let t = Instant::now();
        let m = b.client.fs_read_to_file(work, guest_path, &back).await?;
        down.push(mb_per_s(m, t.elapsed()));
        cpu_up.push((mark, mid, mib));
        cpu_down.push((mid, CpuMark::now(b, work), mib));
        if n != bytes || m != bytes {
            return Err(format!("copied {n} up / {m} down, expected {bytes}").into());
        }
        let h = tokio::task::block_in_place(|| {
            let _ = std::fs::remove_file(&host_dst);
            let t = Instant::now();
            let n = std::fs::copy(&src, &host_dst)?;
            Res::Ok(mb_per_s(n, t.elapsed()))
        })?;
        host.push(h);
    }
    if !tokio::task::block_in_place(|| same_content(&src, &back))? {
        return Err("the file read back from the guest differs from the original".into());
    }
    b.client.fs_remove(work, guest_path, false).await?;
    for f in [&src, &back, &host_dst] {
        let _ = std::fs::remove_file(f);
    }
    let host_mb = median(host.clone());
    rep.row(Row {
        section: 4,
        benchmark: format!("copy host -> guest ({} MiB)", cfg.copy_mib),
        unit: "MB/s",
        ours: median(up.clone()),
        baseline: Some((host_mb, "std::fs::copy on host".into())),
        higher_is_better: true,
        target: Target::AtLeast(300.0),
    });
    rep.row(Row {
        section: 4,
        benchmark: format!("copy guest -> host ({} MiB)", cfg.copy_mib),
        unit: "MB/s",
        ours: median(down.clone()),
        baseline: Some((host_mb, "std::fs::copy on host".into())),
        higher_is_better: true,
        target: Target::AtLeast(300.0),
    });
    rep.detail(
        "copy_mb_s",
        json!({
            "host_to_guest": up,
            "guest_to_host": down,
            "host_fs_copy": host,
            "cpu_per_mib_host_to_guest": cpu_total(&cpu_up),
            "cpu_per_mib_guest_to_host": cpu_total(&cpu_down),
        }),
    );
    Ok(())
}

async fn bench_memory(b: &Bench, sleeper: &str, cfg: &Config, rep: &mut Report) -> Res<()> {
    let n = cfg.sandboxes;
    eprintln!("[memory] {n} idle busybox sandboxes (created 4 at a time)");
    let pid = b.agent_pid().ok_or("agent is not running")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_kib(pid)?;
    let names: Vec<String> = (0..n)
        .map(|i| format!("{NAME_PREFIX}idle-{i:03}"))
        .collect();
    let t = Instant::now();
    let results: Vec<Res<()>> = futures::stream::iter(names.iter().map(|n| b.create(n, IMAGE)))
        .buffer_unordered(4)
        .collect()
        .await;
    let create_all = t.elapsed();
    results.into_iter().collect::<Res<Vec<()>>>()?;
    // Let the agents settle (lazy allocations, page faults of the first requests).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(pid)?;
    let mut cgroup_total = 0u64;
    let mut guest_rss = 0u64;
    let mut missing = 0usize;
    for name in &names {
        let rel = format!("{AGENT_CGROUP_PARENT}/msb-{name}");
        match cgroup_memory(&rel) {
            Some(v) => cgroup_total += v,
            None => missing += 1,
        }
        guest_rss += harness::cgroup_rss_kib(&rel).unwrap_or(0);
    }
    if missing > 0 {
        rep.note(format!(
            "memory: the cgroup of {missing} sandbox(es) could not be read"
        ));
    }
    let sleeper_cg = cgroup_memory(&format!("{}/sleep", harness::BASELINE_CGROUP_PARENT));
    let t = Instant::now();
    let results: Vec<Res<()>> = futures::stream::iter(names.iter().map(|n| b.remove(n)))
        .buffer_unordered(4)
        .collect()
        .await;
    let remove_all = t.elapsed();
    results.into_iter().collect::<Res<Vec<()>>>()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_removed = rss_kib(pid)?;

    let per_rss = (rss_after as f64 - rss_before as f64) / n as f64;
    let counted = (n - missing).max(1) as f64;
    let per_cg = cgroup_total as f64 / 1024.0 / counted;
    rep.row(Row {
        section: 5,
        benchmark: format!("agent RSS per idle sandbox ({n} running)"),
        unit: "KiB",
        ours: per_rss,
        baseline: None,
        higher_is_better: false,
        target: Target::None,
    });
    rep.row(Row {
        section: 5,
        benchmark: format!("host memory (cgroup) per idle sandbox ({n} running)"),
        unit: "KiB",
        ours: per_cg,
        baseline: sleeper_cg.map(|v| {
            (
                v as f64 / 1024.0,
                format!("crun container running `sleep` ({sleeper})"),
            )
        }),
        higher_is_better: false,
        target: Target::None,
    });
    rep.detail(
        "memory",
        json!({
            "sandboxes": n,
            "agent_rss_kib_before": rss_before,
            "agent_rss_kib_with_sandboxes": rss_after,
            "agent_rss_kib_after_removal": rss_removed,
            "cgroup_bytes_total": cgroup_total,
            "guest_processes_rss_kib_per_sandbox": guest_rss as f64 / counted,
            "baseline_sleep_cgroup_bytes": sleeper_cg,
            "create_all_s": create_all.as_secs_f64(),
            "remove_all_s": remove_all.as_secs_f64(),
        }),
    );
    rep.note(format!(
        "memory: {n} sandboxes created 4 at a time in {:.1} s ({:.0} ms each on average), removed in \
         {:.1} s; agent RSS {rss_before} KiB -> {rss_after} KiB -> {rss_removed} KiB after removal; \
         RSS of the processes inside a sandbox (the guest agent) {:.0} KiB on average (shared \
         pages of its static binary included).",
        create_all.as_secs_f64(),
        ms(create_all) / n as f64,
        remove_all.as_secs_f64(),
        guest_rss as f64 / counted
    ));
    Ok(())
}
