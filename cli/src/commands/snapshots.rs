//! `msb snapshot create|ls|rm|push`: filesystem snapshots kept by this machine's agent.

use microsandbox::{SandboxState, Snapshot};

use crate::error::Result;
use crate::output;
use crate::target::Target;

const WHAT: &str = "snapshots";
const IN_CLUSTER: &str = "a cluster has SandboxSnapshot objects (kubectl get sbxsnap)";

/// `msb snapshot create SANDBOX NAME [--pause]`.
pub async fn create(
    target: &Target,
    sandbox: &str,
    name: &str,
    pause: bool,
    json: bool,
) -> Result<i32> {
    target.local_only(WHAT, IN_CLUSTER)?;
    let mut sb = target.get(sandbox).await?;
    let paused_here = pause && sb.info().state == SandboxState::Running;
    if paused_here {
        sb.pause().await?;
    }
    let taken = sb.snapshot(name).await;
    if paused_here {
        sb.resume().await?;
    }
    let snap = taken?;
    if json {
        output::json(&snap);
    } else {
        println!("{} {}", snap.name, snap.image);
    }
    Ok(0)
}

pub async fn ls(target: &Target, json: bool) -> Result<i32> {
    target.local_only(WHAT, IN_CLUSTER)?;
    let list = Snapshot::list().await?;
    output::listing(&list, json, &["NAME", "IMAGE", "LAYERS", "DIGEST"], |s| {
        vec![
            s.name.clone(),
            s.image.clone(),
            s.layers.to_string(),
            s.digest.clone(),
        ]
    });
    Ok(0)
}

pub async fn rm(target: &Target, names: &[String]) -> Result<i32> {
    target.local_only(WHAT, IN_CLUSTER)?;
    for n in names {
        Snapshot::remove(n).await?;
        println!("{n}");
    }
    Ok(0)
}

/// `msb snapshot push NAME REFERENCE`.
pub async fn push(target: &Target, name: &str, reference: &str, json: bool) -> Result<i32> {
    target.local_only(WHAT, IN_CLUSTER)?;
    let pushed = Snapshot::push(name, reference).await?;
    if json {
        output::json(&pushed);
    } else {
        println!("{} {}", pushed.reference, pushed.digest);
    }
    Ok(0)
}
