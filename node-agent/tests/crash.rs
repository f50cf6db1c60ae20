//! Crash at every step: `kill -9` the agent, a sandbox's guest agent (the container's PID 1) or
//! the crun processes at a random point of an operation — create (image, volume, network,
//! published port), exec, streamed file write, volume growth, stop, remove — then restart what
//! was killed. After every round:
//!
//! - every sandbox the agent lists answers (a running one execs), none is stuck `creating`;
//! - the keeper sandbox, created before the first round, still runs and kept its data;
//! - a volume whose growth was cut short still mounts and takes writes;
//! - nothing is left that no record claims: crun container, mount, loop device, cgroup, network
//!   namespace, veth, nftables chain, published port, host process;
//! - killing a guest or crun never takes the agent down, and what it answers is a typed error;
//! - removing what the round made leaves nothing.
//!
//! `MSB_CRASH_ROUNDS` (default 40; `make crash` runs 100) and `MSB_CRASH_SEED` (printed) replay a
//! run.

mod common;
#[path = "common/world.rs"]
mod world;

use common::*;
use microsandbox_client::api::{CreateSandbox, CreateVolume, SandboxState, StopSandbox};
use microsandbox_client::{AgentClient, ClientError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use world::World;

/// The operation a round cuts short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Create,
    Exec,
    Write,
    Grow,
    Stop,
    Remove,
}

impl Op {
    const ALL: [Op; 6] = [
        Op::Create,
        Op::Exec,
        Op::Write,
        Op::Grow,
        Op::Stop,
        Op::Remove,
    ];

    /// How long the operation takes here, roughly: the kill lands somewhere in it.
    fn window_ms(self) -> u64 {
        match self {
            Op::Create => 200,
            Op::Exec => 450,
            Op::Write => 550,
            Op::Grow => 120,
            Op::Stop => 350,
            Op::Remove => 100,
        }
    }
}

/// What is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Victim {
    Agent,
    /// The round's sandbox's guest agent (PID 1 of its container).
    Guest,
    /// Every crun process of this agent alive at that moment.
    Crun,
}

/// How the cut operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// It finished before the kill.
    Done,
    /// It failed with the agent's typed error.
    Refused,
    /// The connection went with the agent.
    Cut,
    /// Nothing to kill at that moment (no guest yet, no crun running).
    Missed,
}

fn create_request(name: &str, port: Option<u16>, volume: Option<&str>) -> CreateSandbox {
    let mut req = serde_json::json!({
        "name": name, "image": "busybox", "detached": true, "isolation": "container",
        "memory_mib": 64,
        "network": {"policy": "public_only", "allow": ["public.test"]},
    });
    if let Some(port) = port {
        req["network"]["publish"] = serde_json::json!([{"host_port": port, "guest_port": 8080}]);
    }
    if let Some(volume) = volume {
        req["mounts"] = serde_json::json!([{"kind": "named", "name": volume, "path": "/data"}]);
    }
    serde_json::from_value(req).unwrap()
}

/// Runs `op` on the round's sandbox (or volume) and sorts its result.
async fn run(op: Op, c: AgentClient, name: String, port: u16) -> Result<(), ClientError> {
    match op {
        Op::Create => c
            .create(create_request(&name, Some(port), None))
            .await
            .map(drop),
        Op::Exec => c
            .exec(&name, cmd("/bin/sh", &["-c", "sleep 0.4; echo done"]))
            .await
            .map(drop),
        Op::Write => {
            let chunks = futures_chunks();
            c.fs_write(&name, "/tmp/upload", None, false, chunks)
                .await
                .map(drop)
        }
        Op::Grow => c.resize_volume(&name, 64).await.map(drop),
        Op::Stop => c
            .stop(
                &name,
                StopSandbox {
                    timeout_ms: Some(300),
                },
            )
            .await
            .map(drop),
        Op::Remove => c.remove(&name).await,
    }
}

/// 32 MiB in 64 chunks, produced over about half a second.
fn futures_chunks() -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures::stream::unfold(0u32, |i| async move {
        if i == 64 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(8)).await;
        Some((Ok(bytes::Bytes::from(vec![b'x'; 512 << 10])), i + 1))
    })
}

/// PIDs of this agent's crun processes (create, start, kill, delete... in flight).
fn crun_pids(crun_root: &Path) -> Vec<i32> {
    let root = crun_root.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"crun")) && args.contains(&root.as_bytes())
        })
        .collect()
}

/// PID of a sandbox's container init (its guest agent), if crun knows it.
fn guest_pid(crun_root: &Path, name: &str) -> Option<i32> {
    let out = Command::new("crun")
        .arg("--root")
        .arg(crun_root)
        .args(["state", &format!("msb-{name}")])
        .output()
        .ok()?;
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    state["pid"].as_i64().filter(|p| *p > 0).map(|p| p as i32)
}

fn kill9(pid: i32) -> bool {
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What the records of the listed sandboxes and volumes claim.
#[derive(Default)]
struct Claims {
    sandboxes: BTreeSet<String>,
    volumes: BTreeSet<String>,
    netns: BTreeSet<String>,
    links: BTreeSet<String>,
    chains: BTreeSet<String>,
}

impl Claims {
    async fn of(agent: &TestAgent, c: &AgentClient) -> Self {
        let mut claims = Claims::default();
        for s in c.list().await.expect("list after the round") {
            let record = agent
                .state
                .join("sandboxes")
                .join(&s.name)
                .join("state.json");
            let record: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&record).unwrap_or_default())
                    .unwrap_or_default();
            let net = &record["network"];
            if let Some(ns) = net["netns"].as_str() {
                claims.netns.insert(ns.to_string());
            }
            if let Some(link) = net["addressing"]["host_if"].as_str() {
                claims.links.insert(link.to_string());
            }
            if let Some(index) = net["addressing"]["index"].as_u64() {
                claims.chains.insert(format!("sbx_{index:x}"));
            }
            claims.sandboxes.insert(s.name);
        }
        for v in c.list_volumes().await.expect("list volumes") {
            claims.volumes.insert(v.name);
        }
        claims
    }
}

/// Everything of this agent's on the host that `claims` do not account for.
fn orphans(agent: &TestAgent, world: &World, claims: &Claims) -> Vec<String> {
    let mut left = Vec::new();
    let claimed = |name: &str| claims.sandboxes.contains(name);
    for id in agent.crun_containers() {
        if !claimed(id.trim_start_matches("msb-")) {
            left.push(format!("crun container {id}"));
        }
    }
    let state = agent.state.display().to_string();
    for m in agent.mounts() {
        let rest = &m[state.len()..];
        let owner = |dir: &str| {
            rest.strip_prefix(dir)
                .and_then(|r| r.split('/').next())
                .map(String::from)
        };
        let ok = match (owner("/sandboxes/"), owner("/volumes/")) {
            (Some(s), _) => claimed(&s),
            (_, Some(v)) => claims.volumes.contains(&v),
            _ => false,
        };
        if !ok {
            left.push(format!("mount {m}"));
        }
    }
    let losetup = Command::new("losetup")
        .args(["-l", "-n", "-O", "NAME,BACK-FILE"])
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&losetup.stdout).lines() {
        let Some((dev, file)) = line.trim().split_once(char::is_whitespace) else {
            continue;
        };
        let file = file.trim();
        if let Some(rest) = file.strip_prefix(&format!("{state}/volumes/")) {
            let volume = rest.split('/').next().unwrap_or_default();
            if file.ends_with("(deleted)") || !claims.volumes.contains(volume) {
                left.push(format!("loop device {dev} on {file}"));
            }
        }
    }
    for dir in ["", "memory", "pids", "cpu"] {
        let parent = Path::new("/sys/fs/cgroup").join(dir).join("microsandbox");
        for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if let Some(name) = id.strip_prefix("msb-crash-") {
                if e.path().is_dir() && !claimed(&format!("crash-{name}")) {
                    left.push(format!("cgroup {}", e.path().display()));
                }
            }
        }
    }
    let prefix = microsandbox_agent::network::netns_prefix(&agent.state);
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let ns = e.file_name().to_string_lossy().into_owned();
        if ns.starts_with(&prefix) && !claims.netns.contains(&ns) {
            left.push(format!("network namespace {ns}"));
        }
    }
    for item in world.leftovers() {
        let ok = match item.strip_prefix("chain ") {
            Some(chain) => claims
                .chains
                .contains(chain.split_whitespace().next().unwrap_or_default()),
            // `msb0@if2`: the link and its peer's index.
            None => claims
                .links
                .contains(item.split('@').next().unwrap_or_default()),
        };
        if !ok {
            left.push(format!("uplink {item}"));
        }
    }
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if let Some((_, rest)) = cmdline.split_once(&format!("{state}/sandboxes/")) {
            let name = rest.split('/').next().unwrap_or_default();
            if !claimed(name) {
                left.push(format!("process {:?}: {cmdline}", e.file_name()));
            }
        }
    }
    left
}

/// Every listed sandbox answers; a running one execs.
async fn all_answer(c: &AgentClient) -> Vec<String> {
    let mut bad = Vec::new();
    for s in c.list().await.unwrap() {
        match s.state {
            SandboxState::Creating | SandboxState::Draining => {
                bad.push(format!("{} is stuck {:?}", s.name, s.state))
            }
            SandboxState::Running => match c.exec(&s.name, cmd("true", &[])).await {
                Ok(out) if out.exit_code == 0 => {}
                other => bad.push(format!("{} is running but exec gave {other:?}", s.name)),
            },
            _ => {}
        }
    }
    bad
}

fn rounds() -> usize {
    std::env::var("MSB_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_every_step_leaves_nothing_unclaimed() {
    let seed = std::env::var("MSB_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!(
        "crash: seed {seed} (MSB_CRASH_SEED={seed} replays it), {} rounds",
        rounds()
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let world = World::new();
    let args = world.agent_args();
    let mut agent = TestAgent::start_with(
        "crash",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut c = agent.client();
    let keeper_volume = CreateVolume {
        name: "crash-keep".into(),
        quota_mib: 8,
        labels: BTreeMap::new(),
    };
    c.create_volume(&keeper_volume).await.unwrap();
    c.create(create_request("crash-keeper", None, Some("crash-keep")))
        .await
        .unwrap();
    sh(&c, "crash-keeper", "echo keep > /data/marker").await;

    let mut tally: BTreeMap<(Op, Victim, Outcome), u32> = BTreeMap::new();
    let mut fates: BTreeMap<&str, u32> = BTreeMap::new();
    let started = Instant::now();
    for round in 0..rounds() {
        let op = Op::ALL[rng.usize(..Op::ALL.len())];
        let victim = match rng.u8(..10) {
            0..=5 => Victim::Agent,
            6..=7 => Victim::Guest,
            _ => Victim::Crun,
        };
        let name = format!("crash-r{round}");
        let port = free_port();
        // What the operation needs is made before the kill window.
        match op {
            Op::Create => {}
            Op::Grow => {
                let v = CreateVolume {
                    name: name.clone(),
                    quota_mib: 8,
                    labels: BTreeMap::new(),
                };
                c.create_volume(&v).await.unwrap();
                // A guest to kill: the one using the volume.
                c.create(create_request(&format!("{name}-user"), None, Some(&name)))
                    .await
                    .unwrap();
            }
            _ => {
                c.create(create_request(&name, Some(port), None))
                    .await
                    .unwrap_or_else(|e| panic!("round {round}: prepare {name}: {e}"));
            }
        }
        let delay = Duration::from_millis(rng.u64(..op.window_ms()));
        let task = tokio::spawn(run(op, c.clone(), name.clone(), port));
        let guest_of = if op == Op::Grow {
            format!("{name}-user")
        } else {
            name.clone()
        };
        tokio::time::sleep(delay).await;
        let killed = match victim {
            Victim::Agent => {
                agent.kill9();
                true
            }
            // The first guest or crun process seen within the window.
            Victim::Guest | Victim::Crun => {
                let until = Instant::now() + Duration::from_millis(op.window_ms());
                let mut any = false;
                while !any && Instant::now() < until {
                    let pids = match victim {
                        Victim::Guest => guest_pid(&agent.crun_root(), &guest_of)
                            .into_iter()
                            .collect(),
                        _ => crun_pids(&agent.crun_root()),
                    };
                    for pid in pids {
                        any |= kill9(pid);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                any
            }
        };
        let result = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap_or_else(|_| panic!("round {round}: {op:?} hung after the kill"))
            .unwrap();
        let outcome = match (&result, killed) {
            (_, false) => Outcome::Missed,
            (Ok(()), _) => Outcome::Done,
            (Err(ClientError::Api(_)), _) => Outcome::Refused,
            (Err(e), _) => {
                assert_eq!(
                    victim,
                    Victim::Agent,
                    "round {round}: killing the {victim:?} during {op:?} broke the connection: {e}\n{}",
                    agent.log()
                );
                Outcome::Cut
            }
        };
        if let Err(ClientError::Api(e)) = &result {
            assert_ne!(
                e.code,
                microsandbox_client::ErrorCode::Internal,
                "round {round}: {op:?} with the {victim:?} killed: {e}"
            );
        }
        *tally.entry((op, victim, outcome)).or_default() += 1;
        if victim == Victim::Agent {
            agent.restart();
            c = agent.client();
        } else {
            c.get("crash-keeper").await.unwrap_or_else(|e| {
                panic!(
                    "round {round}: the agent died with the {victim:?}: {e}\n{}",
                    agent.log()
                )
            });
        }

        // Re-adopted or reaped, and nothing else.
        let stuck = all_answer(&c).await;
        assert!(
            stuck.is_empty(),
            "round {round} ({op:?}, {victim:?}): {stuck:?}\n{}",
            agent.log()
        );
        let claims = Claims::of(&agent, &c).await;
        let left = orphans(&agent, &world, &claims);
        assert!(
            left.is_empty(),
            "round {round} ({op:?}, {victim:?} after {delay:?}): unclaimed {left:#?}\nagent log:\n{}",
            agent.log()
        );
        *fates
            .entry(if claims.sandboxes.contains(&name) {
                "re-adopted"
            } else {
                "reaped or never made"
            })
            .or_default() += 1;
        let keeper = sh(&c, "crash-keeper", "cat /data/marker").await;
        assert_eq!(
            keeper.stdout_str(),
            "keep\n",
            "round {round}: the keeper lost its data"
        );
        if !claims.sandboxes.contains(&name) && op != Op::Grow {
            // A sandbox that is gone publishes nothing.
            assert!(
                std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
                "round {round}: port {port} of the gone {name} still answers"
            );
        }
        if op == Op::Grow {
            // A growth cut short leaves a volume that mounts and takes writes.
            c.remove(&format!("{name}-user")).await.ok();
            let user = format!("{name}-check");
            c.create(create_request(&user, None, Some(&name)))
                .await
                .unwrap_or_else(|e| {
                    panic!("round {round}: the grown volume: {e}\n{}", agent.log())
                });
            let out = sh(&c, &user, "echo ok > /data/after && cat /data/after").await;
            assert_eq!(out.stdout_str(), "ok\n", "round {round}: {out:?}");
        }

        // Everything the round made goes, and leaves nothing.
        for s in c.list().await.unwrap() {
            if s.name != "crash-keeper" {
                c.remove(&s.name).await.unwrap_or_else(|e| {
                    panic!("round {round}: remove {}: {e}\n{}", s.name, agent.log())
                });
            }
        }
        for s in c.list().await.unwrap() {
            assert_eq!(s.name, "crash-keeper", "round {round}: left after remove");
        }
        for v in claims.volumes.iter().filter(|v| *v != "crash-keep") {
            c.remove_volume(v)
                .await
                .unwrap_or_else(|e| panic!("round {round}: remove volume {v}: {e}"));
        }
        let left = orphans(&agent, &world, &Claims::of(&agent, &c).await);
        assert!(left.is_empty(), "round {round}: after removal {left:#?}");
    }

    c.remove("crash-keeper").await.unwrap();
    c.remove_volume("crash-keep").await.unwrap();
    let left = orphans(&agent, &world, &Claims::default());
    assert!(left.is_empty(), "at the end: {left:#?}");
    assert_eq!(world.leftovers(), Vec::<String>::new());

    eprintln!(
        "crash: {} rounds survived in {:.0} s (seed {seed}); the cut sandbox was {fates:?}",
        rounds(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("crash: {:<8} {:<6} {:<8} rounds", "op", "killed", "outcome");
    for ((op, victim, outcome), n) in tally {
        eprintln!(
            "crash: {:<8} {:<6} {:<8} {n}",
            format!("{op:?}"),
            format!("{victim:?}"),
            format!("{outcome:?}")
        );
    }
}

/// What is left of sandbox `name` on the host: its directory, mounts, crun container.
fn remains(agent: &TestAgent, name: &str) -> Vec<String> {
    let mut left = Vec::new();
    let dir = agent.state.join("sandboxes").join(name);
    if dir.exists() {
        left.push(format!("directory {}", dir.display()));
    }
    let marker = format!("/sandboxes/{name}/");
    left.extend(
        agent
            .mounts()
            .into_iter()
            .filter(|m| m.contains(&marker))
            .map(|m| format!("mount {m}")),
    );
    if agent.crun_containers().contains(&format!("msb-{name}")) {
        left.push(format!("crun container msb-{name}"));
    }
    left
}

/// Appends to `path` until its file system is full (tmpfs: holes take no space, so write).
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for size in [1 << 20, 4 << 10] {
        let chunk = vec![0u8; size];
        while f.write_all(&chunk).is_ok() {}
    }
}

/// The state directory's file system full (a 48 MiB tmpfs, filled to within 0 B .. 4 MiB):
/// creates, file writes and volumes answer typed errors, nothing half-made is left, the running
/// sandbox and its record are intact, and everything works again once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_disk_gives_typed_errors_and_leaves_nothing() {
    let base = workspace().join("target/test-state");
    let state = base.join(format!("full-{}", std::process::id()));
    std::fs::create_dir_all(&state).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(mounted.success());
    std::os::unix::fs::symlink(base.join("images"), state.join("images")).unwrap();
    let mut agent = TestAgent::start_in(state.clone(), Vec::new());
    let c = agent.client();
    create(&c, "full-keeper", "busybox").await;
    sh(&c, "full-keeper", "echo keep > /marker").await;

    // Fill the file system, then give back `room` bytes per attempt.
    let filler = state.join("filler");
    fill(&filler);
    let full = std::fs::metadata(&filler).unwrap().len();
    let mut refused: BTreeMap<String, u32> = BTreeMap::new();
    for (i, room) in [0u64, 4 << 10, 64 << 10, 512 << 10, 4 << 20]
        .into_iter()
        .enumerate()
    {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&filler)
            .unwrap()
            .set_len(full.saturating_sub(room))
            .unwrap();
        let name = format!("full-{i}");
        match c.create(sandbox(&name, "busybox")).await {
            Ok(_) => {
                sh(&c, &name, "true").await;
                c.remove(&name).await.unwrap();
            }
            Err(ClientError::Api(e)) => {
                eprintln!("full disk, {room} B free: create: {e}");
                *refused.entry(format!("create: {:?}", e.code)).or_default() += 1;
            }
            Err(e) => panic!(
                "create with {room} B free: not a typed error: {e}\n{}",
                agent.log()
            ),
        }
        assert_eq!(
            remains(&agent, &name),
            Vec::<String>::new(),
            "{room} B free"
        );
        match c
            .fs_write_bytes("full-keeper", "/big", None, vec![b'x'; 8 << 20])
            .await
        {
            Ok(_) => {}
            Err(ClientError::Api(e)) => {
                eprintln!("full disk, {room} B free: write: {e}");
                *refused.entry(format!("write: {:?}", e.code)).or_default() += 1;
            }
            Err(e) => panic!("write with {room} B free: not a typed error: {e}"),
        }
        let vol = CreateVolume {
            name: format!("fullvol-{i}"),
            quota_mib: 4,
            labels: BTreeMap::new(),
        };
        match c.create_volume(&vol).await {
            Ok(_) => c.remove_volume(&vol.name).await.unwrap(),
            Err(ClientError::Api(e)) => {
                eprintln!("full disk, {room} B free: volume: {e}");
                *refused.entry(format!("volume: {:?}", e.code)).or_default() += 1;
                assert!(
                    !state.join("volumes").join(&vol.name).exists(),
                    "a refused volume left its directory"
                );
            }
            Err(e) => panic!("volume with {room} B free: not a typed error: {e}"),
        }
        // The running sandbox and its record are intact.
        assert_eq!(
            sh(&c, "full-keeper", "cat /marker").await.stdout_str(),
            "keep\n"
        );
        let _ = sh(&c, "full-keeper", "rm -f /big").await;
    }
    eprintln!("full disk: refused {refused:?}");
    assert!(!refused.is_empty(), "a full disk refused nothing");
    // An agent restarted on the full disk comes up and re-adopts the keeper.
    fill(&filler);
    agent.restart();
    let c = agent.client();
    assert_eq!(
        sh(&c, "full-keeper", "cat /marker").await.stdout_str(),
        "keep
"
    );
    std::fs::remove_file(&filler).unwrap();
    // Space back: all works.
    create(&c, "full-after", "busybox").await;
    c.remove("full-after").await.unwrap();
    c.remove("full-keeper").await.unwrap();
    drop(agent);
    // (The agent's drop unmounts what is below its state directory: the tmpfs too.)
    let _ = Command::new("umount").arg("-l").arg(&state).output();
    let _ = std::fs::remove_dir_all(&state);
}
