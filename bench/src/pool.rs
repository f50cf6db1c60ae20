//! 9. Warm pools: create -> running from a pool of started sandboxes (a claim) against the same
//!    create booting a sandbox (cold), p50 and p99, in the same run.

use crate::harness::Bench;
use crate::report::{Report, Row, Target};
use crate::stats::{ms, Samples};
use crate::Res;
use microsandbox_client::api::{CreateSandbox, PoolSpec};
use serde_json::json;
use std::time::{Duration, Instant};

const IMAGE: &str = "busybox";

fn request(name: &str, pool: Option<&str>) -> Res<CreateSandbox> {
    let mut req: CreateSandbox = serde_json::from_value(json!({
        "name": name, "image": IMAGE, "detached": true, "isolation": "container",
    }))?;
    req.pool = pool.map(str::to_string);
    Ok(req)
}

async fn wait_ready(b: &Bench, pool: &str, n: u32) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if b.client
            .pools()
            .await?
            .iter()
            .any(|p| p.name == pool && p.ready >= n)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("pool {pool} did not fill to {n}").into())
}

pub async fn bench_pool(b: &Bench, claims: usize, rep: &mut Report) -> Res<()> {
    let size = 4u32;
    eprintln!("[pool] {claims} claims from a pool of {size} vs {claims} cold creates");
    let template = request("template", None)?;
    b.client
        .put_pool("bench", &PoolSpec { size, template })
        .await?;
    let (mut warm, mut cold) = (Samples::default(), Samples::default());
    for i in 0..claims {
        // Claims measured with the pool full: the refill between two is not the claim's cost.
        wait_ready(b, "bench", size).await?;
        let name = format!("bench-claim-{i}");
        let t = Instant::now();
        let info = b.client.create(request(&name, Some("bench"))?).await?;
        warm.push(t.elapsed());
        if info
            .labels
            .get("microsandbox.dev/launch")
            .map(String::as_str)
            != Some("warm")
        {
            return Err(format!("{name} was not served from the pool: {:?}", info.labels).into());
        }
        b.remove(&name).await?;
        let name = format!("bench-cold-{i}");
        let t = Instant::now();
        b.create_with(request(&name, None)?).await?;
        cold.push(t.elapsed());
        b.remove(&name).await?;
    }
    b.client.remove_pool("bench").await?;
    for (label, p) in [("p50", 50.0), ("p99", 99.0)] {
        rep.row(Row {
            section: 9,
            benchmark: format!("create from a warm pool (claim) {label}"),
            unit: "ms",
            ours: ms(warm.percentile(p)),
            baseline: Some((
                ms(cold.percentile(p)),
                "the same create, booted (cold)".into(),
            )),
            higher_is_better: false,
            target: Target::AtMost(5.0),
        });
    }
    rep.detail(
        "pool",
        json!({"claims": claims, "warm": warm.summary(), "cold": cold.summary()}),
    );
    Ok(())
}
