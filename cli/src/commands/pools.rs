//! `msb pool create|ls|rm`: warm pools of this machine's agent.

use microsandbox::{Isolation, Pool, Sandbox};

use super::sandboxes::network;
use crate::cli::{pairs, PoolArgs};
use crate::error::{CliError, Result};
use crate::output;
use crate::target::Target;

const WHAT: &str = "warm pools";
const IN_CLUSTER: &str = "a cluster has SandboxWarmPool objects (kubectl get swp)";

/// `msb pool create NAME --size N --image IMAGE ...`.
pub async fn create(target: &Target, a: PoolArgs, json: bool) -> Result<i32> {
    target.local_only(WHAT, IN_CLUSTER)?;
    let mut template = Sandbox::builder("template")
        .image(&a.image)
        .memory(a.memory)
        .cpus(a.cpus)
        .network(network(&a.network)?);
    for (k, v) in pairs(&a.env, "--env").map_err(CliError::Usage)? {
        template = template.env(k, v);
    }
    match a.isolation.as_deref() {
        None => {}
        Some("microvm") => template = template.isolation(Isolation::Microvm),
        Some("container") => template = template.isolation(Isolation::Container),
        Some(other) => {
            return Err(CliError::Usage(format!(
                "isolation {other:?}: use microvm or container"
            )))
        }
    }
    let info = Pool::create(&a.name, a.size, template).await?;
    if json {
        output::json(&info);
    } else {
        println!("{} size {}", info.name, info.size);
    }
    Ok(0)
}

pub async fn ls(target: &Target, json: bool) -> Result<i32> {
    target.local_only(WHAT, IN_CLUSTER)?;
    let list = Pool::list().await?;
    output::listing(
        &list,
        json,
        &["NAME", "SIZE", "READY", "CLAIMED", "IMAGE"],
        |p| {
            vec![
                p.name.clone(),
                p.size.to_string(),
                p.ready.to_string(),
                p.claimed.to_string(),
                p.image.clone(),
            ]
        },
    );
    Ok(0)
}

pub async fn rm(target: &Target, names: &[String]) -> Result<i32> {
    target.local_only(WHAT, IN_CLUSTER)?;
    for n in names {
        Pool::remove(n).await?;
        println!("{n}");
    }
    Ok(0)
}
