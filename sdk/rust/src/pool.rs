//! Warm pools of this machine's agent: sandboxes of a template kept started, so that a create
//! naming the pool ([`crate::SandboxBuilder::pool`]) takes one instead of booting.

use microsandbox_client::api::{PoolInfo, PoolSpec};

use crate::agent;
use crate::error::Result;
use crate::sandbox::SandboxBuilder;

/// Warm pools of this machine's agent (local mode; cluster pools are `SandboxWarmPool` objects).
#[derive(Debug, Clone, Copy)]
pub struct Pool;

impl Pool {
    /// Create pool `name` (or change it: the same call with a new size or template) keeping
    /// `size` sandboxes of `template` started; the agent starts them in the background. The
    /// template's name is not used (each member gets its own); a create naming the pool is
    /// served from it when it asks for the same image, memory, cpus, isolation and network, and
    /// its own name, env and workdir are applied at the claim.
    ///
    /// ```no_run
    /// # async fn demo() -> microsandbox::Result<()> {
    /// use microsandbox::{Pool, Sandbox};
    /// Pool::create("py", 2, Sandbox::builder("template").image("python")).await?;
    /// let sb = Sandbox::builder("job-1").image("python").pool("py").create().await?;
    /// # Ok(()) }
    /// ```
    pub async fn create(name: &str, size: u32, template: SandboxBuilder) -> Result<PoolInfo> {
        let mut template = template.into_request();
        // Members outlive any one process; the pool removes them.
        template.detached = true;
        let spec = PoolSpec { size, template };
        Ok(agent::connect().await?.put_pool(name, &spec).await?)
    }

    /// The warm pools of this machine's agent.
    pub async fn list() -> Result<Vec<PoolInfo>> {
        Ok(agent::connect().await?.pools().await?)
    }

    /// Delete pool `name` and its unclaimed sandboxes (claimed ones are their users').
    pub async fn remove(name: &str) -> Result<()> {
        Ok(agent::connect().await?.remove_pool(name).await?)
    }
}
