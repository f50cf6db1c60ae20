//! Exec latency of the Rust SDK: `exec("true")` N times in one sandbox; prints
//! `rust p50_ms p99_ms create_ms stream_mib_s` (bench/sdks.sh compares every SDK against it);
//! create is the median of 7 create -> first output; the last is 64 MiB of stdout streamed.

use std::time::Instant;

use futures::StreamExt;

use microsandbox::{Isolation, Sandbox};

/// Sandboxes created for the create -> first output median.
const CREATES: usize = 7;

#[tokio::main]
async fn main() -> microsandbox::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let create = || {
        Sandbox::builder(format!("bench-rust-{}", std::process::id()))
            .image("busybox")
            .memory(128)
            .isolation(Isolation::Container)
            .create()
    };
    // Create -> first output: the median of CREATES sandboxes (one is noise).
    let mut creates = Vec::with_capacity(CREATES);
    for _ in 0..CREATES {
        let t = Instant::now();
        let sb = create().await?;
        let first = sb.exec("echo", ["hi"]).await?;
        assert_eq!(first.stdout_str(), "hi\n");
        creates.push(t.elapsed().as_secs_f64() * 1e3);
        sb.remove().await?;
    }
    creates.sort_by(|a, b| a.total_cmp(b));
    let create_ms = creates[CREATES / 2];
    let sb = create().await?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        sb.exec("true", Vec::<String>::new()).await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    let t = Instant::now();
    let mut events = sb
        .command("head")
        .args(["-c", "67108864", "/dev/zero"])
        .stream()
        .await?;
    let mut bytes = 0usize;
    while let Some(ev) = events.next().await {
        if let microsandbox::ExecEvent::Stdout(d) = ev? {
            bytes += d.len();
        }
    }
    assert_eq!(bytes, 64 << 20);
    let mib_s = 64.0 / t.elapsed().as_secs_f64();
    println!(
        "rust {:.3} {:.3} {:.1} {:.0}",
        p(0.5),
        p(0.99),
        create_ms,
        mib_s
    );
    sb.remove().await
}
