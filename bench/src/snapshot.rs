//! 8. Filesystem snapshots: saving a sandbox whose writable layer holds `mib` MiB of new data
//!    (pause -> snapshot) against copying the same bytes on the host (`std::fs::copy`), and
//!    creating a sandbox from the snapshot (create -> first exec) against the same create from
//!    the plain image.

use crate::harness::{cmd, Bench};
use crate::report::{Report, Row, Target};
use crate::stats::{ms, Samples};
use crate::Res;
use serde_json::json;
use std::time::Instant;

const IMAGE: &str = "busybox";

async fn create_and_exec(b: &Bench, name: &str, image: &str) -> Res<std::time::Duration> {
    let t = Instant::now();
    b.create(name, image).await?;
    b.client.exec(name, cmd("true", &[])).await?;
    Ok(t.elapsed())
}

pub async fn bench_snapshot(b: &Bench, mib: u64, reps: usize, rep: &mut Report) -> Res<()> {
    eprintln!("[snapshot] {mib} MiB writable layer: snapshot and restore, {reps}x");
    let src = "bench-snap-src";
    b.create(src, IMAGE).await?;
    let script = format!("head -c {} /dev/urandom > /blob && sync", mib * 1024 * 1024);
    let out = b.client.exec(src, cmd("sh", &["-c", &script])).await?;
    if out.exit_code != 0 {
        return Err(format!("writing {mib} MiB: {}", out.stderr_str()).into());
    }
    b.client.pause(src).await?;
    let blob = b
        .paths
        .state
        .join("sandboxes")
        .join(src)
        .join("rw/upper/blob");
    let (mut saved, mut copied, mut restored, mut plain) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let mut image = String::new();
    for i in 0..reps {
        let t = Instant::now();
        let snap = b.client.snapshot(src, &format!("bench-snap-{i}")).await?;
        saved.push(t.elapsed());
        image = snap.image;
        let copy = b.paths.state.join("bench-copy.bin");
        let t = Instant::now();
        std::fs::copy(&blob, &copy)?;
        copied.push(t.elapsed());
        std::fs::remove_file(&copy)?;
        let name = format!("bench-snap-dst-{i}");
        restored.push(create_and_exec(b, &name, &image).await?);
        b.remove(&name).await?;
        let name = format!("bench-snap-plain-{i}");
        plain.push(create_and_exec(b, &name, IMAGE).await?);
        b.remove(&name).await?;
        b.client.remove_snapshot(&format!("bench-snap-{i}")).await?;
    }
    b.remove(src).await?;
    rep.row(Row {
        section: 8,
        benchmark: format!("snapshot of a {mib} MiB writable layer (paused sandbox), p50"),
        unit: "ms",
        ours: ms(saved.p50()),
        baseline: Some((
            ms(copied.p50()),
            "std::fs::copy of the same bytes on the host".into(),
        )),
        higher_is_better: false,
        target: Target::None,
    });
    rep.row(Row {
        section: 8,
        benchmark: "create from that snapshot -> first exec, p50".into(),
        unit: "ms",
        ours: ms(restored.p50()),
        baseline: Some((ms(plain.p50()), format!("the same from the {IMAGE} image"))),
        higher_is_better: false,
        target: Target::None,
    });
    rep.detail(
        "snapshot",
        json!({
            "mib": mib, "image": image,
            "snapshot": saved.summary(), "host_copy": copied.summary(),
            "restore": restored.summary(), "plain_create": plain.summary(),
        }),
    );
    Ok(())
}
