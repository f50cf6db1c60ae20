//! The Rust client's side of `sdk/python/bench/exec_bench.py`: against an agent that already
//! runs (its state directory) and a sandbox that already exists, measures collected
//! `exec("true")` round trips, and optionally create -> first stdout byte of `echo x`, then prints
//! the raw samples (milliseconds) as JSON on stdout, so the caller computes statistics the same
//! way for both clients.
//!
//!   exec_rtt --state-dir DIR --sandbox NAME [--iters 100] [--warmup 10]
//!            [--first-output N --image busybox --isolation container --prefix NAME]

use microsandbox_client::api::{CreateSandbox, ExecRequest};
use microsandbox_client::{AgentClient, ExecEvent};
use serde_json::json;
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn cmd(command: &str, args: &[&str]) -> ExecRequest {
    ExecRequest {
        command: command.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Args {
    state_dir: String,
    sandbox: Option<String>,
    iters: usize,
    warmup: usize,
    first_output: usize,
    image: String,
    isolation: String,
    prefix: String,
}

fn parse() -> Res<Args> {
    let mut a = Args {
        state_dir: String::new(),
        sandbox: None,
        iters: 100,
        warmup: 10,
        first_output: 0,
        image: "busybox".into(),
        isolation: "container".into(),
        prefix: format!("rs-first-{}", std::process::id()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or_else(|| format!("{k} needs a value"));
        match k.as_str() {
            "--state-dir" => a.state_dir = v()?,
            "--sandbox" => a.sandbox = Some(v()?),
            "--iters" => a.iters = v()?.parse()?,
            "--warmup" => a.warmup = v()?.parse()?,
            "--first-output" => a.first_output = v()?.parse()?,
            "--image" => a.image = v()?,
            "--isolation" => a.isolation = v()?,
            "--prefix" => a.prefix = v()?,
            "--json" => {} // the only output format
            _ => return Err(format!("unknown argument {k}").into()),
        }
    }
    if a.state_dir.is_empty() {
        return Err("--state-dir is required".into());
    }
    Ok(a)
}

async fn first_output(c: &AgentClient, a: &Args, name: &str) -> Res<f64> {
    let start = Instant::now();
    let req: CreateSandbox = serde_json::from_value(json!({
        "name": name, "image": a.image, "detached": true, "isolation": a.isolation,
    }))?;
    c.create(req)
        .await
        .map_err(|e| format!("create {name}: {e}"))?;
    let mut s = c.exec_stream(name, cmd("echo", &["x"])).await?;
    let mut first = None;
    while let Some(ev) = s.next_event().await {
        match ev? {
            ExecEvent::Stdout(_) => {
                first.get_or_insert_with(|| ms(start.elapsed()));
            }
            ExecEvent::Exited { .. } => break,
            _ => {}
        }
    }
    first.ok_or_else(|| format!("echo x in {name}: no output").into())
}

async fn run(a: &Args) -> Res<serde_json::Value> {
    let c = AgentClient::from_state_dir(&a.state_dir)?;
    let mut exec_ms = Vec::with_capacity(a.iters);
    if let Some(sb) = &a.sandbox {
        let req = cmd("true", &[]);
        for i in 0..a.warmup + a.iters {
            let t = Instant::now();
            let out = c.exec(sb, req.clone()).await?;
            let dt = ms(t.elapsed());
            if !out.success() {
                return Err(format!("true failed: {out:?}").into());
            }
            if i >= a.warmup {
                exec_ms.push(dt);
            }
        }
    }
    let mut first_ms = Vec::with_capacity(a.first_output);
    for i in 0..a.first_output {
        let name = format!("{}-{i}", a.prefix);
        let r = first_output(&c, a, &name).await;
        let _ = c.remove(&name).await;
        first_ms.push(r?);
    }
    Ok(json!({ "exec_ms": exec_ms, "first_output_ms": first_ms }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let r = match parse() {
        Ok(a) => run(&a).await,
        Err(e) => Err(e),
    };
    match r {
        Ok(v) => {
            println!("{v}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("exec_rtt: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
