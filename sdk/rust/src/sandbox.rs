//! A sandbox: created with [`Sandbox::builder`], then commands, files, metrics and its end.

use std::collections::BTreeMap;
use std::time::Duration;

use microsandbox_client::api::{
    CreateSandbox, Isolation, Metrics, PullPolicy, SandboxInfo, SnapshotInfo, StopSandbox,
};
use microsandbox_client::{AgentClient, Lease};

use crate::agent::Agent;
use crate::cluster::ClusterConnection;
use crate::config::{Mount, NetworkPolicy, Patch, Secret};
use crate::error::Result;
use crate::exec::{Command, ExecOutput};
use crate::fs::Fs;

/// How long removing a cluster sandbox waits for its node-agent.
const OBJECT_DELETE_TIMEOUT: Duration = Duration::from_secs(60);

/// A sandbox of a node agent (local mode) or of a Kubernetes cluster (cluster mode).
///
/// An *attached* sandbox ([`SandboxBuilder::create`]) lives as long as this process holds it:
/// it is removed when the process ends, or by [`Sandbox::remove`]; [`Sandbox::stop`] leaves it
/// listed as stopped. A *detached* one ([`SandboxBuilder::detached`]) lives until removed.
#[derive(Debug)]
pub struct Sandbox {
    client: AgentClient,
    /// As its agent reports it (`info.name` is its name in that agent's API).
    info: SandboxInfo,
    /// Held for an attached sandbox: dropping it lets the agent remove the sandbox.
    lease: Option<Lease>,
    /// Cluster mode: the connection and the Sandbox object's name.
    object: Option<(ClusterConnection, String)>,
}

/// Options of a new sandbox; [`SandboxBuilder::create`] boots it.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until create()"]
pub struct SandboxBuilder {
    req: CreateSandbox,
    /// The agent to create it on; `None`: this machine's ([`Agent::local`]).
    agent: Option<Agent>,
    /// Cluster mode: create a Sandbox object there instead.
    cluster: Option<ClusterConnection>,
}

impl SandboxBuilder {
    /// OCI image (`python`, `docker.io/library/alpine:3.20`, ...).
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.req.image = image.into();
        self
    }

    /// Memory in MiB (default 512).
    pub fn memory(mut self, mib: u32) -> Self {
        self.req.memory_mib = mib;
        self
    }

    /// Virtual CPUs (default 1).
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.req.cpus = cpus;
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.req.env.insert(key.into(), value.into());
        self
    }

    /// Working directory of commands.
    pub fn workdir(mut self, dir: impl Into<String>) -> Self {
        self.req.workdir = Some(dir.into());
        self
    }

    /// Mount `mount` at `path` in the sandbox.
    pub fn volume(mut self, path: impl Into<String>, mount: Mount) -> Self {
        self.req.mounts.push(mount.spec(path.into()));
        self
    }

    pub fn network(mut self, policy: NetworkPolicy) -> Self {
        self.req.network = policy.0;
        self
    }

    pub fn secret(mut self, secret: Secret) -> Self {
        self.req.secrets.push(secret.0);
        self
    }

    pub fn patch(mut self, patch: Patch) -> Self {
        self.req.patches.push(patch.0);
        self
    }

    /// Exactly this isolation (default: the node's strongest, a microVM where it can boot one).
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.req.isolation = Some(isolation);
        self
    }

    pub fn pull_policy(mut self, policy: PullPolicy) -> Self {
        self.req.pull_policy = policy;
        self
    }

    /// Disk quota of the sandbox's writable layer, in MiB.
    pub fn disk(mut self, mib: u64) -> Self {
        self.req.disk_mib = Some(mib);
        self
    }

    /// Suspend the sandbox (freeze it: state `suspended`, memory kept, no CPU) after `timeout`
    /// (whole seconds, at least one) without an exec or file operation; the next one resumes it.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.req.idle_timeout_secs = Some(timeout.as_secs().max(1));
        self
    }

    /// Take a pre-started sandbox of warm pool `pool` when the request matches its template (all
    /// but name, env, workdir and the idle timeout); otherwise boot one. Cluster mode: a
    /// SandboxClaim of that SandboxWarmPool, whose SandboxTemplate decides everything but the
    /// name and env; removing the sandbox deletes the claim.
    pub fn pool(mut self, pool: impl Into<String>) -> Self {
        self.req.pool = Some(pool.into());
        self
    }

    /// Most processes at once (default 1024).
    pub fn pids_limit(mut self, limit: u32) -> Self {
        self.req.pids_limit = Some(limit);
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.req.labels.insert(key.into(), value.into());
        self
    }

    /// Survive this process (until removed).
    pub fn detached(mut self) -> Self {
        self.req.detached = true;
        self
    }

    /// The agent's create request this builder makes.
    pub fn into_request(self) -> CreateSandbox {
        self.req
    }

    /// Create it on `agent` instead of this machine's.
    pub fn agent(mut self, agent: &Agent) -> Self {
        self.agent = Some(agent.clone());
        self
    }

    /// Create it as a Sandbox object of this cluster (see [`crate::cluster`]); its lifecycle
    /// is the object's, and `detached` does not apply.
    pub fn cluster(mut self, cluster: &ClusterConnection) -> Self {
        self.cluster = Some(cluster.clone());
        self
    }

    /// Pull the image if needed and boot the sandbox; starts the local agent if none runs.
    /// In cluster mode: post the Sandbox object and wait until it is Ready.
    pub async fn create(self) -> Result<Sandbox> {
        if let Some(conn) = self.cluster {
            let (object, client, info) = conn.create_sandbox(&self.req).await?;
            let name = object.metadata.name.unwrap_or_default();
            return Ok(Sandbox {
                client,
                info,
                lease: None,
                object: Some((conn, name)),
            });
        }
        let client = match self.agent {
            Some(a) => a.client,
            None => Agent::local().await?.client,
        };
        let name = self.req.name.clone();
        let detached = self.req.detached;
        let info = client.create(self.req).await?;
        let lease = if detached {
            None
        } else {
            match client.hold_lease(&name).await {
                Ok(lease) => Some(lease),
                Err(e) => {
                    // Without a lease the agent would remove it after a grace period anyway.
                    if let Err(r) = client.remove(&name).await {
                        return Err(r.into());
                    }
                    return Err(e.into());
                }
            }
        };
        Ok(Sandbox {
            client,
            info,
            lease,
            object: None,
        })
    }
}

impl Sandbox {
    /// A handle without a lease on sandbox `info` of `client`'s agent.
    pub(crate) fn adopt(client: AgentClient, info: SandboxInfo) -> Sandbox {
        Sandbox {
            client,
            info,
            lease: None,
            object: None,
        }
    }

    /// A handle on Sandbox object `name` of `cluster` (it must be running on a node).
    pub async fn get_in(cluster: &ClusterConnection, name: &str) -> Result<Sandbox> {
        let object = cluster.sandbox_object(name).await?;
        let (client, target) = cluster.agent_of(&object)?;
        let info = client.get(&target).await?;
        Ok(Sandbox {
            client,
            info,
            lease: None,
            object: Some((cluster.clone(), name.to_string())),
        })
    }

    /// The sandboxes of `cluster`'s namespace that run on a node, as their agents report them
    /// (`name` is the agent's; [`Sandbox::get_in`] takes the object's).
    pub async fn list_in(cluster: &ClusterConnection) -> Result<Vec<SandboxInfo>> {
        let mut out = Vec::new();
        for object in cluster.sandbox_objects().await? {
            let Ok((client, target)) = cluster.agent_of(&object) else {
                continue;
            };
            match client.get(&target).await {
                Ok(info) => out.push(info),
                Err(e) if e.is(microsandbox_client::ErrorCode::SandboxNotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Delete Sandbox object `name` of `cluster` and wait (at most a minute) until its
    /// node-agent removed the sandbox.
    pub async fn remove_in(cluster: &ClusterConnection, name: &str) -> Result<()> {
        Ok(cluster
            .delete_sandbox(name, true, OBJECT_DELETE_TIMEOUT)
            .await?)
    }

    /// Cluster mode: delete the object (its lifecycle is the object's) and wait for it.
    async fn delete_object(&mut self) -> Result<Option<&SandboxInfo>> {
        let Some((conn, name)) = &self.object else {
            return Ok(None);
        };
        conn.delete_sandbox(name, true, OBJECT_DELETE_TIMEOUT)
            .await?;
        self.info.state = microsandbox_client::api::SandboxState::Stopped;
        Ok(Some(&self.info))
    }

    /// A new sandbox named `name` (lowercase letters, digits and `-`), image `python` unless
    /// [`SandboxBuilder::image`] says otherwise.
    pub fn builder(name: impl Into<String>) -> SandboxBuilder {
        SandboxBuilder {
            req: CreateSandbox {
                name: name.into(),
                image: "python".into(),
                memory_mib: 512,
                cpus: 1,
                env: BTreeMap::new(),
                workdir: None,
                isolation: None,
                pull_policy: PullPolicy::default(),
                detached: false,
                pids_limit: None,
                labels: BTreeMap::new(),
                patches: Vec::new(),
                mounts: Vec::new(),
                disk_mib: None,
                network: Default::default(),
                secrets: Vec::new(),
                idle_timeout_secs: None,
                pool: None,
            },
            agent: None,
            cluster: None,
        }
    }

    /// A handle on an existing sandbox of this machine's agent (it does not hold the sandbox's
    /// lease); [`Agent::get`] for another agent.
    pub async fn get(name: &str) -> Result<Sandbox> {
        Agent::local().await?.get(name).await
    }

    /// Every sandbox of this machine's agent.
    pub async fn list() -> Result<Vec<SandboxInfo>> {
        Agent::local().await?.list().await
    }

    /// Metrics of every running sandbox of this machine's agent.
    pub async fn all_metrics() -> Result<Vec<Metrics>> {
        Agent::local().await?.all_metrics().await
    }

    /// Remove sandbox `name` of this machine's agent (killed first if running) and everything
    /// it stored.
    pub async fn remove_named(name: &str) -> Result<()> {
        Agent::local().await?.remove(name).await
    }

    /// Its name (in cluster mode, the Sandbox object's).
    pub fn name(&self) -> &str {
        match &self.object {
            Some((_, object)) => object,
            None => &self.info.name,
        }
    }

    /// What the agent said about it last (see [`Sandbox::refresh`]).
    pub fn info(&self) -> &SandboxInfo {
        &self.info
    }

    /// Ask the agent for its current state.
    pub async fn refresh(&mut self) -> Result<&SandboxInfo> {
        self.info = self.client.get(&self.info.name).await?;
        Ok(&self.info)
    }

    /// Its agent and its name there, for what runs commands in it later (a [`crate::Repl`]).
    pub(crate) fn exec_target(&self) -> (AgentClient, String) {
        (self.client.clone(), self.info.name.clone())
    }

    /// A command to run: `sb.command("ls").arg("/").run().await`.
    pub fn command(&self, program: &str) -> Command {
        Command::new(self.client.clone(), self.info.name.clone(), program)
    }

    /// Run `program` with `args` and collect its output.
    pub async fn exec<I, S>(&self, program: &str, args: I) -> Result<ExecOutput>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command(program).args(args).run().await
    }

    /// Run a shell script (`/bin/sh -c script`).
    pub async fn shell(&self, script: &str) -> Result<ExecOutput> {
        self.command("/bin/sh").args(["-c", script]).run().await
    }

    /// Its files.
    pub fn fs(&self) -> Fs {
        Fs {
            client: self.client.clone(),
            sandbox: self.info.name.clone(),
        }
    }

    /// Its own output (a microVM's console, a container's init log), at most the last
    /// `tail_bytes`; kept across a stop until the next start or the removal.
    pub async fn logs(&self, tail_bytes: Option<u64>) -> Result<Vec<u8>> {
        Ok(self.client.logs(&self.info.name, tail_bytes).await?)
    }

    /// CPU, memory, disk and network use.
    pub async fn metrics(&self) -> Result<Metrics> {
        Ok(self.client.metrics(&self.info.name).await?)
    }

    /// SIGTERM, then SIGKILL after `grace` (default 10 s). It stays listed as stopped until
    /// removed.
    /// In cluster mode the Sandbox object is deleted (its lifecycle is the object's).
    pub async fn stop(&mut self, grace: Option<Duration>) -> Result<&SandboxInfo> {
        if self.object.is_some() {
            self.delete_object().await?;
            return Ok(&self.info);
        }
        let req = StopSandbox {
            timeout_ms: grace.map(|g| g.as_millis().try_into().unwrap_or(u64::MAX)),
        };
        self.info = self.client.stop(&self.info.name, req).await?;
        Ok(&self.info)
    }

    /// SIGKILL now. It stays listed until removed.
    pub async fn kill(&mut self) -> Result<&SandboxInfo> {
        if self.object.is_some() {
            self.delete_object().await?;
            return Ok(&self.info);
        }
        self.info = self.client.kill(&self.info.name).await?;
        Ok(&self.info)
    }

    /// Start it again after a stop (or a failure): the same settings, its files as the stop
    /// left them (the create's patches are not applied again); a running one is left as it is.
    /// A sandbox created with secrets cannot (their values are not kept), nor a cluster one
    /// (its stop deleted the object).
    pub async fn start(&mut self) -> Result<&SandboxInfo> {
        if self.object.is_some() {
            return Err(crate::cluster::ClusterError::new(
                crate::cluster::ClusterErrorKind::Unsupported,
                "in cluster mode stop() deletes the Sandbox object; create it again",
            )
            .into());
        }
        self.info = self.client.start(&self.info.name).await?;
        Ok(&self.info)
    }

    /// Freeze every process (containers: the cgroup freezer; microVMs: the VMM with its vCPUs):
    /// memory stays allocated, CPU use stops, commands are refused (state `paused`) until
    /// [`Self::resume`]. Cluster mode: sets `spec.paused` and waits for the node-agent.
    pub async fn pause(&mut self) -> Result<&SandboxInfo> {
        self.set_paused(true).await
    }

    /// Thaw a paused (or idle-suspended) sandbox: its processes go on where they were.
    pub async fn resume(&mut self) -> Result<&SandboxInfo> {
        self.set_paused(false).await
    }

    async fn set_paused(&mut self, paused: bool) -> Result<&SandboxInfo> {
        if let Some((conn, name)) = &self.object {
            conn.set_sandbox_paused(name, paused).await?;
            self.info = self.client.get(&self.info.name).await?;
            return Ok(&self.info);
        }
        self.info = if paused {
            self.client.pause(&self.info.name).await?
        } else {
            self.client.resume(&self.info.name).await?
        };
        Ok(&self.info)
    }

    /// Save its files as snapshot `name` on its node (replacing one of that name): the image's
    /// files plus every change made in the sandbox, deletions included. New sandboxes start from
    /// it with `.image(&snapshot.image)`.
    ///
    /// Local mode: pause or stop it first ([`crate::Error::InvalidRequest`] otherwise). Cluster
    /// mode: a SandboxSnapshot object, taken by the node-agent (which pauses a running sandbox
    /// for the copy and resumes it); its `image` is `snapshot://NAME`, which a cluster create
    /// turns into `spec.snapshotRef` (the new sandbox runs on the snapshot's node).
    pub async fn snapshot(&self, name: &str) -> Result<SnapshotInfo> {
        if let Some((conn, object)) = &self.object {
            let snap = conn.create_snapshot(object, name).await?;
            return Ok(crate::snapshot::info_of(&snap));
        }
        Ok(self.client.snapshot(&self.info.name, name).await?)
    }

    /// Refuse new commands, wait (at most `timeout`) for running ones, then stop.
    pub async fn drain(&mut self, timeout: Option<Duration>) -> Result<&SandboxInfo> {
        if self.object.is_some() {
            self.delete_object().await?;
            return Ok(&self.info);
        }
        let req = StopSandbox {
            timeout_ms: timeout.map(|g| g.as_millis().try_into().unwrap_or(u64::MAX)),
        };
        self.info = self.client.drain(&self.info.name, req).await?;
        Ok(&self.info)
    }

    /// Remove it (killed first if running) and everything it stored.
    pub async fn remove(mut self) -> Result<()> {
        if self.object.is_some() {
            self.delete_object().await?;
            return Ok(());
        }
        match self.lease.take() {
            // Closing the lease makes the agent remove an attached sandbox; remove explicitly
            // too so that the call returns once it is gone.
            Some(lease) => {
                lease.release().await;
                match self.client.remove(&self.info.name).await {
                    Err(e) if e.is(microsandbox_client::ErrorCode::SandboxNotFound) => Ok(()),
                    other => Ok(other?),
                }
            }
            None => Ok(self.client.remove(&self.info.name).await?),
        }
    }
}
