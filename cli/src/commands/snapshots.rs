//! `msb snapshot create|ls|rm|push`: filesystem snapshots, kept by this machine's agent or (with
//! `--cluster`) SandboxSnapshot objects of the namespace, kept on their Sandbox's node.

use microsandbox::{SandboxState, Snapshot};

use crate::error::{CliError, Result};
use crate::output;
use crate::target::Target;

/// `msb snapshot create SANDBOX NAME [--pause]`. In a cluster the node-agent pauses a running
/// Sandbox for the copy itself.
pub async fn create(
    target: &Target,
    sandbox: &str,
    name: &str,
    pause: bool,
    json: bool,
) -> Result<i32> {
    let mut sb = target.get(sandbox).await?;
    let paused_here =
        pause && matches!(target, Target::Local) && sb.info().state == SandboxState::Running;
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
    let list = match target {
        Target::Local => Snapshot::list().await?,
        Target::Cluster(c) => Snapshot::list_in(c).await?,
    };
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
    for n in names {
        match target {
            Target::Local => Snapshot::remove(n).await?,
            Target::Cluster(c) => Snapshot::remove_in(c, n).await?,
        }
        println!("{n}");
    }
    Ok(0)
}

/// `msb snapshot push NAME REFERENCE [--secret SECRET]`: with the agent's registry credentials,
/// or (with `--cluster`) those of docker-config Secret SECRET of the namespace.
pub async fn push(
    target: &Target,
    name: &str,
    reference: &str,
    secret: Option<&str>,
    json: bool,
) -> Result<i32> {
    let pushed = match target {
        Target::Local if secret.is_some() => {
            return Err(CliError::Usage(
                "--secret names a Kubernetes Secret: it applies with --cluster only (a local push uses the agent's --registry-auth)".into(),
            ))
        }
        Target::Local => Snapshot::push(name, reference).await?,
        Target::Cluster(c) => Snapshot::push_in(c, name, reference, secret).await?,
    };
    if json {
        output::json(&pushed);
    } else {
        println!("{} {}", pushed.reference, pushed.digest);
    }
    Ok(0)
}
