//! Where the sandbox verbs act: this machine's agent (started when none runs), or with
//! `--cluster` the Sandbox objects of a Kubernetes namespace (the `microsandbox` crate's cluster
//! mode: the user's kubeconfig and RBAC).

use microsandbox::{Cluster, ClusterConnection, Metrics, Sandbox, SandboxBuilder, SandboxInfo};

use crate::cli::ClusterArgs;
use crate::error::Result;

pub enum Target {
    Local,
    Cluster(ClusterConnection),
}

impl Target {
    /// The target the global options name.
    pub async fn of(a: &ClusterArgs) -> Result<Target> {
        if !a.cluster {
            return Ok(Target::Local);
        }
        let mut c = Cluster::new();
        c.kubeconfig = a.kubeconfig.clone().filter(|p| !p.as_os_str().is_empty());
        c.context = a.context.clone();
        c.namespace = a.namespace.clone();
        Ok(Target::Cluster(c.connect().await?))
    }

    pub async fn get(&self, name: &str) -> Result<Sandbox> {
        Ok(match self {
            Target::Local => Sandbox::get(name).await?,
            Target::Cluster(c) => Sandbox::get_in(c, name).await?,
        })
    }

    pub async fn list(&self) -> Result<Vec<SandboxInfo>> {
        Ok(match self {
            Target::Local => Sandbox::list().await?,
            Target::Cluster(c) => Sandbox::list_in(c).await?,
        })
    }

    pub async fn remove(&self, name: &str) -> Result<()> {
        match self {
            Target::Local => Sandbox::remove_named(name).await?,
            Target::Cluster(c) => Sandbox::remove_in(c, name).await?,
        }
        Ok(())
    }

    /// Metrics of every running sandbox.
    pub async fn all_metrics(&self) -> Result<Vec<Metrics>> {
        match self {
            Target::Local => Ok(Sandbox::all_metrics().await?),
            Target::Cluster(c) => {
                let mut out = Vec::new();
                for o in c.sandbox_objects().await? {
                    let name = o.metadata.name.unwrap_or_default();
                    if let Ok(sb) = Sandbox::get_in(c, &name).await {
                        if let Ok(m) = sb.metrics().await {
                            out.push(m);
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    /// Refuse `--cluster` for what only this machine's agent keeps (`what`: "snapshots"),
    /// saying what a cluster has instead.
    pub fn local_only(&self, what: &str, in_cluster: &str) -> Result<()> {
        match self {
            Target::Local => Ok(()),
            Target::Cluster(_) => Err(crate::error::CliError::Usage(format!(
                "{what} are kept by this machine's agent, not with --cluster: {in_cluster}"
            ))),
        }
    }

    /// `b`, created here.
    pub fn builder(&self, b: SandboxBuilder) -> SandboxBuilder {
        match self {
            Target::Local => b,
            Target::Cluster(c) => b.cluster(c),
        }
    }
}
