//! The sandbox manager: owns every sandbox of this node.

use microsandbox_wire::api::{
    validate_labels, validate_name, CreateSandbox, Isolation, Metrics, MountSpec, PullEvent,
    SandboxInfo, SandboxState,
};
use microsandbox_wire::guest::{Request, Response};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

use super::entry::{LeaseGuard, SandboxEntry};
use super::record::{now, SandboxRecord};
use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::image::ImageStore;
use crate::network::NetworkManager;
use crate::rootfs::{self, SandboxRoot};
use crate::runtime::{LaunchMount, LaunchSpec, Liveness, Runtime, RuntimeError};
use crate::volume::VolumeStore;

/// Default grace period of a graceful stop.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn still_creating(name: &str) -> AgentError {
    AgentError::NotRunning {
        name: name.to_string(),
        state: "creating (retry when the create call has returned)".into(),
    }
}

/// Owns all sandboxes of this node.
pub struct SandboxManager {
    pub(super) config: AgentConfig,
    pub images: Arc<ImageStore>,
    pub(super) runtimes: Vec<Arc<dyn Runtime>>,
    /// Isolation levels this node cannot provide, with the reason.
    pub(super) unavailable: Vec<(Isolation, String)>,
    pub(super) sandboxes: Mutex<HashMap<String, Arc<SandboxEntry>>>,
    /// Named volumes (`<state>/volumes`).
    volumes: Arc<VolumeStore>,
    /// Sandbox networks and their policies.
    pub(super) network: NetworkManager,
}

impl SandboxManager {
    pub fn new(
        config: AgentConfig,
        images: Arc<ImageStore>,
        runtimes: Vec<Arc<dyn Runtime>>,
        unavailable: Vec<(Isolation, String)>,
    ) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(config.sandboxes_dir())?;
        let volumes = Arc::new(VolumeStore::new(config.state_dir.join("volumes"))?);
        for (name, e) in volumes.remount_all() {
            tracing::warn!(volume = %name, error = %e, "cannot mount volume");
        }
        Ok(Arc::new(Self {
            network: NetworkManager::new(config.network.clone()),
            config,
            volumes,
            images,
            runtimes,
            unavailable,
            sandboxes: Mutex::new(HashMap::new()),
        }))
    }

    /// Isolation levels this node provides, strongest first.
    pub fn isolation_levels(&self) -> Vec<Isolation> {
        let mut v: Vec<Isolation> = self.runtimes.iter().map(|r| r.isolation()).collect();
        v.sort_by_key(|i| match i {
            Isolation::Microvm => 0,
            Isolation::Container => 1,
        });
        v
    }

    pub(super) fn runtime_for(&self, isolation: Isolation) -> Result<Arc<dyn Runtime>, AgentError> {
        if let Some(r) = self.runtimes.iter().find(|r| r.isolation() == isolation) {
            return Ok(r.clone());
        }
        let reason = self
            .unavailable
            .iter()
            .find(|(i, _)| *i == isolation)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| "no runtime configured".into());
        Err(AgentError::Runtime(RuntimeError::Unavailable {
            isolation,
            reason,
        }))
    }

    /// Choose the isolation for a request: exactly what it asks, or the node's strongest.
    fn choose_isolation(&self, wanted: Option<Isolation>) -> Result<Isolation, AgentError> {
        match wanted {
            Some(i) => self.runtime_for(i).map(|_| i),
            None => self.isolation_levels().first().copied().ok_or_else(|| {
                AgentError::Runtime(RuntimeError::Unavailable {
                    isolation: Isolation::Microvm,
                    reason: self
                        .unavailable
                        .iter()
                        .map(|(i, r)| format!("{i}: {r}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                })
            }),
        }
    }

    /// Where the guest agent's socket lives on the host. Kept short: unix socket paths are limited
    /// to 107 bytes, so it is `<state>/run/<name>/agent.sock`, not under the sandbox directory.
    pub(super) fn socket_dir_of(&self, name: &str) -> PathBuf {
        self.config.state_dir.join("run").join(name)
    }

    pub(super) fn dir_of(&self, name: &str) -> PathBuf {
        self.config.sandboxes_dir().join(name)
    }

    pub async fn entry(&self, name: &str) -> Result<Arc<SandboxEntry>, AgentError> {
        self.sandboxes
            .lock()
            .await
            .get(name)
            .cloned()
            .ok_or_else(|| AgentError::NotFound(name.to_string()))
    }

    /// Create and start a sandbox. On any failure nothing of it is left behind.
    pub async fn create(
        self: &Arc<Self>,
        mut req: CreateSandbox,
    ) -> Result<SandboxInfo, AgentError> {
        validate_name(&req.name).map_err(AgentError::InvalidName)?;
        validate_labels(&req.labels).map_err(AgentError::InvalidRequest)?;
        if req
            .disk_mib
            .is_some_and(|d| !(16..=16 * 1024 * 1024).contains(&d))
        {
            return Err(AgentError::InvalidRequest(format!(
                "disk_mib must be 16..=16777216, got {:?}",
                req.disk_mib
            )));
        }
        NetworkManager::check(&req.network, &req.secrets)?;
        // Secret values never enter the record (state.json): only the network's 0600 file.
        let secrets = std::mem::take(&mut req.secrets);
        if req.memory_mib < 16 {
            return Err(AgentError::InvalidRequest(format!(
                "memory_mib {} is too small (minimum 16)",
                req.memory_mib
            )));
        }
        if req.cpus == 0 || req.cpus > 256 {
            return Err(AgentError::InvalidRequest(format!(
                "cpus {} must be 1..=256",
                req.cpus
            )));
        }
        let socket = self
            .socket_dir_of(&req.name)
            .join(microsandbox_wire::guest::GUEST_SOCKET_NAME);
        if socket.as_os_str().len() > 107 {
            return Err(AgentError::InvalidRequest(format!(
                "guest socket path {} exceeds the 107-byte unix socket limit: use a shorter state directory or name",
                socket.display()
            )));
        }
        let isolation = self.choose_isolation(req.isolation)?;
        let dir = self.dir_of(&req.name);
        let record = SandboxRecord {
            request: req.clone(),
            isolation,
            image_digest: String::new(),
            state: SandboxState::Creating,
            created_at: now(),
            launched: None,
            reason: None,
            network: None,
        };
        let entry = SandboxEntry::new(req.name.clone(), dir.clone(), record);
        {
            // Reserve the name before any slow work so duplicates fail fast.
            let mut map = self.sandboxes.lock().await;
            if map.contains_key(&req.name) {
                return Err(AgentError::AlreadyExists(req.name));
            }
            map.insert(req.name.clone(), entry.clone());
        }
        match self.start(&entry, isolation, &secrets).await {
            Ok(info) => {
                if !req.detached {
                    self.watch_lease(entry.clone());
                }
                Ok(info)
            }
            Err(e) => {
                tracing::warn!(sandbox = %req.name, error = %e, "create failed; cleaning up");
                let _ = self.teardown(&entry).await;
                {
                    let mut map = self.sandboxes.lock().await;
                    if map.get(&req.name).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
                        map.remove(&req.name);
                    }
                }
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::remove_dir_all(self.socket_dir_of(&req.name));
                Err(e)
            }
        }
    }

    async fn start(
        &self,
        entry: &Arc<SandboxEntry>,
        isolation: Isolation,
        secrets: &[microsandbox_wire::api::SecretSpec],
    ) -> Result<SandboxInfo, AgentError> {
        let req = entry.record.lock().await.request.clone();
        let image = self
            .images
            .ensure(&req.image, req.pull_policy, &|ev: PullEvent| {
                tracing::debug!(?ev, "pull progress")
            })
            .await?;
        std::fs::create_dir_all(&entry.dir)?;
        let root = SandboxRoot::under(&entry.dir);
        if let Some(mib) = req.disk_mib {
            root.limit_disk(mib)?;
        }
        let lowers: Vec<PathBuf> = image
            .layers
            .iter()
            .map(|l| self.images.layer_dir(l))
            .collect();
        rootfs::mount(&lowers, &root, &self.images.root().join("empty"))?;
        rootfs::patch::apply(&root.merged, &req.patches, &self.config.host_roots)?;
        let mounts = self.resolve_mounts(&req.mounts, req.memory_mib)?;
        let id = format!("msb-{}", req.name);
        let network = self
            .network
            .attach(&req.name, &req.network, secrets, &entry.dir)
            .await?;
        // Variables the agent sets over the image's and the request's (secret placeholders).
        let mut agent_env: Vec<(String, String)> = Vec::new();
        if let Some(att) = &network {
            entry.record.lock().await.network = Some(att.clone());
            // After the user's patches: the resolver is the agent's, where the policy holds.
            let resolv = microsandbox_wire::api::RootPatch::Text {
                path: "/etc/resolv.conf".into(),
                content_b64: base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    crate::network::plan::resolv_conf(&att.addressing),
                ),
                mode: Some(0o644),
            };
            rootfs::patch::apply(&root.merged, &[resolv], &[])?;
            if let Some(guest) = NetworkManager::guest_secrets(att)? {
                // Placeholders only; the proxy's CA joins the guest's trust store.
                agent_env.extend(guest.env);
                let (patches, vars) = crate::network::secrets::trust_store_patches(&guest.ca_pem);
                rootfs::patch::apply(&root.merged, &patches, &[])?;
                agent_env.extend(vars);
            }
        }
        let mut env = image.config.env.clone();
        for (k, v) in req
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(agent_env)
        {
            env.retain(|(ek, _)| *ek != k);
            env.push((k, v));
        }
        let spec = LaunchSpec {
            id,
            netns: network.as_ref().map(|a| a.netns_path()),
            hostname: req.name.clone(),
            rootfs: root.merged.clone(),
            runtime_dir: entry.dir.join("runtime"),
            guest_agent: self.config.guest_agent.clone(),
            socket_dir: self.socket_dir_of(&req.name),
            memory_mib: req.memory_mib,
            cpus: req.cpus,
            pids_limit: req.pids_limit,
            env,
            workdir: req.workdir.clone().or(image.config.workdir.clone()),
            mounts,
        };
        {
            let mut rec = entry.record.lock().await;
            rec.image_digest = image.digest.clone();
            rec.save(&entry.dir)?;
        }
        let runtime = self.runtime_for(isolation)?;
        let launched = runtime.start(&spec).await?;
        let mut rec = entry.record.lock().await;
        rec.launched = Some(launched);
        rec.state = SandboxState::Running;
        rec.save(&entry.dir)?;
        Ok(rec.info())
    }

    /// The named volumes of this agent.
    pub fn volumes(&self) -> &VolumeStore {
        &self.volumes
    }

    /// Delete a named volume, unless a sandbox mounts it.
    pub async fn remove_volume(&self, name: &str) -> Result<(), AgentError> {
        let user = self.volume_user(name).await;
        self.volumes.remove(name, user).await
    }

    /// Grow named volume `name` (see [`crate::volume::VolumeStore::grow`]).
    pub async fn grow_volume(
        &self,
        name: &str,
        quota_mib: u64,
    ) -> Result<microsandbox_wire::api::VolumeInfo, AgentError> {
        self.volumes.grow(name, quota_mib).await
    }

    /// A sandbox that mounts named volume `name` (including one still being created).
    async fn volume_user(&self, name: &str) -> Option<String> {
        for e in self.sandboxes.lock().await.values() {
            let rec = e.record.lock().await;
            let mounts_it = rec
                .request
                .mounts
                .iter()
                .any(|m| matches!(m, MountSpec::Named { name: n, .. } if n == name));
            if mounts_it {
                return Some(e.name.clone());
            }
        }
        None
    }

    /// Check a request's mounts and turn them into what the runtime mounts.
    fn resolve_mounts(
        &self,
        mounts: &[MountSpec],
        memory_mib: u32,
    ) -> Result<Vec<LaunchMount>, AgentError> {
        let mut dests = std::collections::HashSet::new();
        let mut out = Vec::new();
        for m in mounts {
            let dest = m.path();
            let bad = |why: &str| AgentError::InvalidRequest(format!("mount at {dest:?}: {why}"));
            if !dest.starts_with('/') || dest == "/" || dest.split('/').any(|c| c == "..") {
                return Err(bad("the path must be absolute, not '/', without '..'"));
            }
            if dest.starts_with(microsandbox_wire::guest::GUEST_SOCKET_DIR)
                || dest == microsandbox_wire::guest::GUEST_AGENT_PATH
            {
                return Err(bad("the path is reserved for the guest agent"));
            }
            if !dests.insert(dest.trim_end_matches('/').to_string()) {
                return Err(bad("two mounts at the same path"));
            }
            out.push(match m {
                MountSpec::Bind {
                    host_path,
                    readonly,
                    ..
                } => LaunchMount::Bind {
                    source: rootfs::patch::confined(
                        std::path::Path::new(host_path),
                        &self.config.host_roots,
                    )
                    .map_err(|e| bad(&e))?,
                    dest: dest.to_string(),
                    readonly: *readonly,
                },
                MountSpec::Named { name, readonly, .. } => LaunchMount::Bind {
                    source: self.volumes.resolve(name)?,
                    dest: dest.to_string(),
                    readonly: *readonly,
                },
                MountSpec::Tmpfs { size_mib, .. } => {
                    // tmpfs pages count against the sandbox's memory cgroup, so the memory limit
                    // bounds them anyway; a larger size only misleads.
                    if *size_mib == 0 || *size_mib > memory_mib {
                        return Err(bad(&format!(
                            "tmpfs size_mib must be 1..={memory_mib} (the sandbox's memory)"
                        )));
                    }
                    LaunchMount::Tmpfs {
                        dest: dest.to_string(),
                        size_mib: *size_mib,
                    }
                }
            });
        }
        Ok(out)
    }

    /// Remove an attached sandbox whose creator never opened a lease within the grace period.
    pub(super) fn watch_lease(self: &Arc<Self>, entry: Arc<SandboxEntry>) {
        let me = Arc::downgrade(self);
        let grace = self.config.lease_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if entry.leases() == 0 && !entry.lease_seen.load(std::sync::atomic::Ordering::Acquire) {
                if let Some(m) = me.upgrade() {
                    tracing::info!(sandbox = %entry.name, "attached sandbox got no lease in time; removing");
                    let _ = m.remove_entry(&entry).await;
                }
            }
        });
    }

    /// Register a lease for an attached sandbox; dropping the guard removes the sandbox.
    pub async fn lease(self: &Arc<Self>, name: &str) -> Result<LeaseGuard, AgentError> {
        let entry = self.entry(name).await?;
        let detached = entry.record.lock().await.request.detached;
        entry.add_lease();
        let me = Arc::downgrade(self);
        Ok(LeaseGuard {
            entry,
            on_release: (!detached).then(|| {
                Box::new(move |entry: Arc<SandboxEntry>| {
                    tokio::spawn(async move {
                        if let Some(m) = me.upgrade() {
                            tracing::info!(sandbox = %entry.name, "lease closed; removing attached sandbox");
                            let _ = m.remove_entry(&entry).await;
                        }
                    });
                }) as Box<dyn FnOnce(Arc<SandboxEntry>) + Send>
            }),
        })
    }

    pub async fn get(&self, name: &str) -> Result<SandboxInfo, AgentError> {
        let entry = self.entry(name).await?;
        self.refresh(&entry).await;
        let info = entry.record.lock().await.info();
        Ok(info)
    }

    pub async fn list(&self) -> Vec<SandboxInfo> {
        let entries: Vec<_> = self.sandboxes.lock().await.values().cloned().collect();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            self.refresh(&e).await;
            out.push(e.record.lock().await.info());
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Notice a sandbox whose init died (e.g. killed from outside) and record why.
    async fn refresh(&self, entry: &Arc<SandboxEntry>) {
        let (launched, isolation, state) = {
            let rec = entry.record.lock().await;
            (rec.launched.clone(), rec.isolation, rec.state)
        };
        let (Some(launched), SandboxState::Running | SandboxState::Draining) = (launched, state)
        else {
            return;
        };
        if entry.stopping.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let Ok(rt) = self.runtime_for(isolation) else {
            return;
        };
        // Only a definite answer kills: a crun call that failed (fd or pid pressure) says nothing
        // about the sandbox, so `Unknown` counts as dead only if its init is gone too.
        let dead = match rt.liveness(&launched).await {
            Liveness::Running => false,
            Liveness::Stopped => true,
            Liveness::Unknown => launched
                .pid
                .is_none_or(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()),
        };
        // A stop that began meanwhile owns the outcome.
        if dead && !entry.stopping.load(std::sync::atomic::Ordering::Acquire) {
            let usage = rt.usage(&launched).await;
            let _ = rt.cleanup(&launched).await;
            let _ = rootfs::unmount_root(&SandboxRoot::under(&entry.dir));
            let mut rec = entry.record.lock().await;
            if !matches!(rec.state, SandboxState::Running | SandboxState::Draining) {
                return; // stopped by the agent in the meantime
            }
            rec.state = SandboxState::Failed;
            rec.reason = Some(if usage.oom_kills.unwrap_or(0) > 0 {
                "oom-killed".into()
            } else {
                "sandbox init exited".into()
            });
            let _ = rec.save(&entry.dir);
        }
    }

    /// Graceful stop: SIGTERM, SIGKILL after `timeout`, then release runtime resources.
    pub async fn stop(
        &self,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<SandboxInfo, AgentError> {
        let entry = self.entry(name).await?;
        self.stop_entry(&entry, timeout.unwrap_or(DEFAULT_STOP_TIMEOUT), "stopped")
            .await
    }

    /// Graceful stop recording `why` as the sandbox's reason (e.g. `LifetimeExpired`).
    pub async fn stop_because(
        &self,
        name: &str,
        timeout: Option<Duration>,
        why: &str,
    ) -> Result<SandboxInfo, AgentError> {
        let entry = self.entry(name).await?;
        self.stop_entry(&entry, timeout.unwrap_or(DEFAULT_STOP_TIMEOUT), why)
            .await
    }

    /// Immediate stop.
    pub async fn kill(&self, name: &str) -> Result<SandboxInfo, AgentError> {
        let entry = self.entry(name).await?;
        self.stop_entry(&entry, Duration::ZERO, "killed").await
    }

    /// Refuse new execs, wait for running ones (up to `timeout`), then stop gracefully.
    pub async fn drain(
        &self,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<SandboxInfo, AgentError> {
        let entry = self.entry(name).await?;
        {
            let mut rec = entry.record.lock().await;
            if rec.state != SandboxState::Running {
                return Err(AgentError::NotRunning {
                    name: name.into(),
                    state: format!("{:?}", rec.state).to_lowercase(),
                });
            }
            rec.state = SandboxState::Draining;
            rec.save(&entry.dir)?;
        }
        let limit = timeout.unwrap_or(Duration::from_secs(300));
        let _ = tokio::time::timeout(limit, entry.wait_idle()).await;
        self.stop_entry(&entry, DEFAULT_STOP_TIMEOUT, "drained")
            .await
    }

    async fn stop_entry(
        &self,
        entry: &Arc<SandboxEntry>,
        grace: Duration,
        why: &str,
    ) -> Result<SandboxInfo, AgentError> {
        let (launched, isolation) = {
            let rec = entry.record.lock().await;
            if matches!(rec.state, SandboxState::Stopped | SandboxState::Failed) {
                return Ok(rec.info());
            }
            if rec.state == SandboxState::Creating {
                return Err(still_creating(&entry.name));
            }
            (rec.launched.clone(), rec.isolation)
        };
        entry
            .stopping
            .store(true, std::sync::atomic::Ordering::Release);
        let stopped = self
            .stop_launched(entry, launched, isolation, grace, why)
            .await;
        entry
            .stopping
            .store(false, std::sync::atomic::Ordering::Release);
        stopped
    }

    async fn stop_launched(
        &self,
        entry: &Arc<SandboxEntry>,
        launched: Option<crate::runtime::Launched>,
        isolation: Isolation,
        grace: Duration,
        why: &str,
    ) -> Result<SandboxInfo, AgentError> {
        if let Some(launched) = &launched {
            let rt = self.runtime_for(isolation)?;
            if !grace.is_zero() && rt.signal(launched, libc::SIGTERM).await.is_ok() {
                let deadline = tokio::time::Instant::now() + grace;
                while tokio::time::Instant::now() < deadline
                    && rt.liveness(launched).await == Liveness::Running
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            rt.cleanup(launched).await?;
        }
        self.release_network(entry).await;
        rootfs::unmount_root(&SandboxRoot::under(&entry.dir))?;
        let mut rec = entry.record.lock().await;
        rec.state = SandboxState::Stopped;
        rec.reason = Some(why.into());
        rec.save(&entry.dir)?;
        Ok(rec.info())
    }

    /// Release runtime resources and the root mount (used by remove and failed creates).
    pub(super) async fn teardown(&self, entry: &Arc<SandboxEntry>) -> Result<(), AgentError> {
        let (launched, isolation) = {
            let rec = entry.record.lock().await;
            (rec.launched.clone(), rec.isolation)
        };
        if let Some(l) = launched {
            self.runtime_for(isolation)?.cleanup(&l).await?;
        }
        self.release_network(entry).await;
        rootfs::unmount_root(&SandboxRoot::under(&entry.dir))?;
        Ok(())
    }

    /// Removes the sandbox's network (after its processes are gone) and forgets it.
    pub(super) async fn release_network(&self, entry: &Arc<SandboxEntry>) {
        let att = entry.record.lock().await.network.take();
        if let Some(att) = att {
            self.network.detach(&att).await;
            let rec = entry.record.lock().await;
            if entry.dir.exists() {
                if let Err(e) = rec.save(&entry.dir) {
                    tracing::warn!(sandbox = %entry.name, error = %e, "cannot save state");
                }
            }
        }
    }

    /// Kill if running, release everything, forget it.
    pub async fn remove(&self, name: &str) -> Result<(), AgentError> {
        let entry = self.entry(name).await?;
        self.remove_entry(&entry).await
    }

    pub(super) async fn remove_entry(&self, entry: &Arc<SandboxEntry>) -> Result<(), AgentError> {
        // A deferred removal (lease closed, grace expired) must not touch a newer sandbox that
        // reuses the name: only the current entry of that name is removed.
        let current = self
            .sandboxes
            .lock()
            .await
            .get(&entry.name)
            .is_some_and(|e| Arc::ptr_eq(e, entry));
        if !current {
            return Ok(());
        }
        if entry.record.lock().await.state == SandboxState::Creating {
            return Err(still_creating(&entry.name));
        }
        self.teardown(entry).await?;
        {
            let mut map = self.sandboxes.lock().await;
            if map.get(&entry.name).is_some_and(|e| Arc::ptr_eq(e, entry)) {
                map.remove(&entry.name);
            }
        }
        let _ = std::fs::remove_dir_all(self.socket_dir_of(&entry.name));
        match std::fs::remove_dir_all(&entry.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Uses of the sandbox's secret placeholders its egress proxy blocked, oldest first (with
    /// `since`, only those numbered from it on), and the number the next one gets (so
    /// `since: Some(u64::MAX)` just reads that mark).
    pub async fn secret_violations(
        &self,
        name: &str,
        since: Option<u64>,
    ) -> Result<(Vec<microsandbox_wire::api::SecretViolation>, u64), AgentError> {
        let entry = self.entry(name).await?;
        let att = entry.record.lock().await.network.clone();
        Ok(match att {
            Some(att) => self.network.violations(&att, since).await,
            None => (Vec::new(), 0),
        })
    }

    /// Resource usage: the guest's view, with the host cgroup's memory where there is one.
    pub async fn metrics(&self, name: &str) -> Result<Metrics, AgentError> {
        let entry = self.entry(name).await?;
        let (_guard, guest) = entry.begin_exec().await?;
        let Response::Metrics(g) = guest.call(Request::Metrics).await? else {
            return Err(AgentError::GuestChannel(
                "unexpected answer to metrics".into(),
            ));
        };
        let (launched, isolation) = {
            let rec = entry.record.lock().await;
            (rec.launched.clone(), rec.isolation)
        };
        let host = match (launched, self.runtime_for(isolation)) {
            (Some(l), Ok(rt)) => rt.usage(&l).await,
            _ => Default::default(),
        };
        Ok(Metrics {
            name: name.to_string(),
            cpu_usage_us: host.cpu_usage_us.unwrap_or(g.cpu_usage_us),
            memory_bytes: host.memory_bytes.unwrap_or(g.memory_bytes),
            memory_limit_bytes: host.memory_limit_bytes.or(g.memory_limit_bytes),
            disk_read_bytes: g.disk_read_bytes,
            disk_write_bytes: g.disk_write_bytes,
            net_rx_bytes: g.net_rx_bytes,
            net_tx_bytes: g.net_tx_bytes,
            processes: host.pids.map(|p| p as u32).unwrap_or(g.processes),
        })
    }

    /// Metrics of every running sandbox.
    pub async fn all_metrics(&self) -> Vec<Metrics> {
        let names: Vec<String> = self.sandboxes.lock().await.keys().cloned().collect();
        let mut out = Vec::new();
        for n in names {
            if let Ok(m) = self.metrics(&n).await {
                out.push(m);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Number of known sandboxes.
    pub async fn count(&self) -> usize {
        self.sandboxes.lock().await.len()
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }
}
