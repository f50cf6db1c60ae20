//! Creating a sandbox, as named steps: validate (pure), reserve the name, pull, assemble the
//! root, resolve mounts, attach the network, configure the guest (resolver, trust store, env),
//! launch. File system and mount work runs on tokio's blocking pool. A failed create leaves
//! nothing behind.

use microsandbox_wire::api::{
    CreateSandbox, Isolation, MountSpec, PullEvent, RootPatch, SandboxInfo, SecretSpec,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::entry::SandboxEntry;
use super::record::{Phase, SandboxRecord};
use super::{cleanup, validate, SandboxManager};
use crate::error::{AgentError, IoContext};
use crate::image::ImageRecord;
use crate::network::{Attachment, NetworkManager};
use crate::rootfs::{self, SandboxRoot};
use crate::runtime::{LaunchMount, LaunchSpec};

/// Whether a start builds the sandbox's root or finds it as a stop left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Boot {
    Fresh,
    Again,
}

impl SandboxManager {
    /// Create and start a sandbox. On any failure nothing of it is left behind.
    pub async fn create(
        self: &Arc<Self>,
        mut req: CreateSandbox,
    ) -> Result<SandboxInfo, AgentError> {
        let isolation = self.choose_isolation(req.isolation)?;
        let socket = self
            .socket_dir_of(&req.name)
            .join(microsandbox_wire::guest::GUEST_SOCKET_NAME);
        validate::create_request(&req, isolation, &socket)?;
        if req.pool.is_some() {
            req.isolation = Some(isolation); // as the pool's template says it
        }
        if let Some(claimed) = self.claim(&req).await {
            return claimed;
        }
        if req.pool.is_some() {
            req.labels
                .insert(super::pool::LAUNCH_LABEL.into(), "cold".into());
        }
        // Secret values never enter the record (state.json): only the network's 0600 file.
        let secrets = std::mem::take(&mut req.secrets);
        let name = req.name.clone();
        let detached = req.detached;
        let dir = self.dir_of(&name);
        let mut record = SandboxRecord::creating(req, isolation);
        record.secret_envs = secrets.iter().map(|s| s.env.clone()).collect();
        let entry = SandboxEntry::new(name.clone(), dir.clone(), self.socket_dir_of(&name), record);
        {
            // Reserve the name before any slow work so duplicates fail fast.
            let mut map = self.sandboxes.lock().await;
            if map.contains_key(&name) {
                return Err(AgentError::AlreadyExists(name));
            }
            map.insert(name.clone(), entry.clone());
        }
        match self.start(&entry, isolation, &secrets, Boot::Fresh).await {
            Ok(info) => {
                if !detached {
                    self.watch_lease(entry.clone());
                }
                Ok(info)
            }
            Err(e) => {
                tracing::warn!(sandbox = %name, error = %e, "create failed; cleaning up");
                cleanup(&name, "tear down", self.teardown(&entry).await);
                // Files first: the name stays reserved until nothing of it is left.
                self.remove_files(&entry).await;
                self.forget(&entry).await;
                Err(e)
            }
        }
    }

    /// Start a stopped (or failed) sandbox again: the same request, its root file system as it
    /// was left (the create's patches are not applied again), a fresh network. A sandbox with
    /// secrets cannot (their values are not kept); one that runs is returned as it is.
    pub async fn start_again(self: &Arc<Self>, name: &str) -> Result<SandboxInfo, AgentError> {
        let entry = self.entry(name).await?;
        let isolation = {
            let mut rec = entry.record.lock().await;
            match &rec.phase {
                Phase::Stopped(_) | Phase::Failed(_) => {}
                Phase::Creating => return Err(AgentError::StillCreating(name.to_string())),
                Phase::Running(_) => return Ok(rec.info()),
                other => return Err(AgentError::not_running(name, other.state())),
            }
            if !rec.secret_envs.is_empty() {
                return Err(AgentError::InvalidRequest(format!(
                    "sandbox {name} had secrets ({}), whose values are not kept once it stops; \
                     create it again with them",
                    rec.secret_envs.join(", ")
                )));
            }
            rec.phase = Phase::Creating;
            rec.isolation
        };
        // An attached sandbox still has its creator's lease (else it would have been removed).
        match self.start(&entry, isolation, &[], Boot::Again).await {
            Ok(info) => Ok(info),
            Err(e) => {
                tracing::warn!(sandbox = %name, error = %e, "start failed; it stays failed");
                cleanup(name, "tear down", self.teardown(&entry).await);
                let mut rec = entry.record.lock().await;
                rec.phase = Phase::Failed(microsandbox_wire::api::StopReason::Other(e.to_string()));
                cleanup(name, "save the state", rec.save(&entry.dir));
                Err(e)
            }
        }
    }

    async fn start(
        &self,
        entry: &Arc<SandboxEntry>,
        isolation: Isolation,
        secrets: &[SecretSpec],
        boot: Boot,
    ) -> Result<SandboxInfo, AgentError> {
        let started = std::time::Instant::now();
        let req = entry.record.lock().await.request.clone();
        let image = self
            .images
            .ensure(&req.image, req.pull_policy, &|ev: PullEvent| {
                tracing::debug!(?ev, "pull progress")
            })
            .await?;
        let root = self.assemble_root(entry, &image, &req, boot).await?;
        let mounts = self.resolve_mounts(&req.mounts).await?;
        let rooted = started.elapsed();
        let network = self
            .network
            .attach(&req.name, &req.network, secrets, &entry.dir)
            .await?;
        entry.record.lock().await.network = network.clone();
        let agent_env = match &network {
            Some(att) => configure_guest_network(root.merged.clone(), att.clone()).await?,
            None => Vec::new(),
        };
        let spec = LaunchSpec {
            id: format!("msb-{}", req.name),
            netns: network.as_ref().map(|a| a.netns_path()),
            hostname: req.name.clone(),
            rootfs: root.merged.clone(),
            runtime_dir: entry.dir.join("runtime"),
            guest_agent: self.config.guest_agent.clone(),
            socket_dir: entry.socket_dir.clone(),
            memory_mib: req.memory_mib,
            cpus: req.cpus,
            pids_limit: req.pids_limit,
            env: merge_env(&image.config.env, &req.env, agent_env),
            workdir: req.workdir.clone().or(image.config.workdir.clone()),
            mounts,
        };
        {
            let mut rec = entry.record.lock().await;
            rec.image_digest = image.digest.clone();
            rec.save(&entry.dir).at("save the state of", &entry.dir)?;
        }
        let networked = started.elapsed();
        let launched = self.runtime_for(isolation)?.start(&spec).await?;
        tracing::debug!(
            sandbox = %req.name,
            root_ms = rooted.as_millis(),
            network_ms = (networked - rooted).as_millis(),
            runtime_ms = (started.elapsed() - networked).as_millis(),
            "started"
        );
        let mut rec = entry.record.lock().await;
        rec.phase = Phase::Running(launched);
        rec.save(&entry.dir).at("save the state of", &entry.dir)?;
        Ok(rec.info())
    }

    /// The sandbox's writable root: an overlay of the image's layers with the request's disk
    /// quota and patches.
    async fn assemble_root(
        &self,
        entry: &SandboxEntry,
        image: &ImageRecord,
        req: &CreateSandbox,
        boot: Boot,
    ) -> Result<SandboxRoot, AgentError> {
        let dir = entry.dir.clone();
        let lowers: Vec<PathBuf> = image
            .layers
            .iter()
            .map(|l| self.images.layer_dir(l))
            .collect();
        let empty = self.images.root().join("empty");
        let (disk_mib, mut patches) = match boot {
            Boot::Fresh => (req.disk_mib, req.patches.clone()),
            // The quota and the patches are already in its writable layer.
            Boot::Again => (None, Vec::new()),
        };
        if let Some(dir) = req.workdir.as_ref().filter(|d| d.starts_with('/')) {
            // Like an image's WORKDIR: created when the image lacks it (commands start in it).
            patches.push(RootPatch::Mkdir {
                path: dir.clone(),
                mode: None,
            });
        }
        let host = self.config.host_access.clone();
        blocking(move || {
            std::fs::create_dir_all(&dir).at("create", &dir)?;
            let root = SandboxRoot::under(&dir);
            if let Some(mib) = disk_mib {
                root.limit_disk(mib).at("set the disk quota of", &dir)?;
            }
            rootfs::mount(&lowers, &root, &empty).at("mount the root of", &root.merged)?;
            rootfs::patch::apply(&root.merged, &patches, &host)?;
            Ok(root)
        })
        .await
    }

    /// Turn a request's (already validated) mounts into what the runtime mounts: host paths
    /// confined to the configured roots, named volumes resolved.
    async fn resolve_mounts(&self, mounts: &[MountSpec]) -> Result<Vec<LaunchMount>, AgentError> {
        let mut out = Vec::with_capacity(mounts.len());
        for m in mounts {
            let dest = m.path().to_string();
            out.push(match m {
                MountSpec::Bind {
                    host_path,
                    readonly,
                    ..
                } => {
                    let (host_path, host) =
                        (PathBuf::from(host_path), self.config.host_access.clone());
                    let source = blocking(move || {
                        host.resolve(&host_path).map_err(AgentError::InvalidRequest)
                    })
                    .await
                    .map_err(|e| AgentError::InvalidRequest(format!("mount at {dest:?}: {e}")))?;
                    LaunchMount::Bind {
                        source,
                        dest,
                        readonly: *readonly,
                    }
                }
                MountSpec::Named { name, readonly, .. } => LaunchMount::Bind {
                    source: self.volumes().resolve(name)?,
                    dest,
                    readonly: *readonly,
                },
                MountSpec::Tmpfs { size_mib, .. } => LaunchMount::Tmpfs {
                    dest,
                    size_mib: *size_mib,
                },
            });
        }
        Ok(out)
    }
}

/// Point the guest at the agent's resolver (after the user's patches: the policy holds there)
/// and, where secrets are bound, add the egress proxy's CA to its trust store. Returns the
/// variables the agent sets in the guest (secret placeholders, trust store paths).
async fn configure_guest_network(
    merged: PathBuf,
    att: Attachment,
) -> Result<Vec<(String, String)>, AgentError> {
    blocking(move || {
        let resolv = RootPatch::Text {
            path: "/etc/resolv.conf".into(),
            content_b64: base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                crate::network::plan::resolv_conf(&att.addressing),
            ),
            mode: Some(0o644),
        };
        rootfs::patch::apply(&merged, &[resolv], &Default::default())?;
        let mut env = Vec::new();
        if let Some(guest) = NetworkManager::guest_secrets(&att)? {
            // Placeholders only; the proxy's CA joins the guest's trust store.
            env.extend(guest.env);
            let (patches, vars) = crate::network::secrets::trust_store_patches(&guest.ca_pem);
            rootfs::patch::apply(&merged, &patches, &Default::default())?;
            env.extend(vars);
        }
        Ok(env)
    })
    .await
}

/// The sandbox's environment: the image's, overridden by the request's, overridden by the
/// agent's own variables. Order of first definition is kept for the rest. Pure.
fn merge_env(
    image: &[(String, String)],
    request: &std::collections::BTreeMap<String, String>,
    agent: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let mut env = image.to_vec();
    for (k, v) in request
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(agent)
    {
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    }
    env
}

/// Run file system / mount work on tokio's blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AgentError::Internal(format!("blocking task: {e}")))?
}

/// The root of a sandbox directory (for callers holding only the path).
pub(super) fn root_of(dir: &Path) -> SandboxRoot {
    SandboxRoot::under(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_layers_override_in_order() {
        let image = vec![
            ("PATH".to_string(), "/bin".to_string()),
            ("A".to_string(), "image".to_string()),
        ];
        let request = [
            ("A".to_string(), "req".to_string()),
            ("B".to_string(), "req".to_string()),
        ]
        .into_iter()
        .collect();
        let agent = vec![("B".to_string(), "agent".to_string())];
        let env = merge_env(&image, &request, agent);
        let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, [("PATH", "/bin"), ("A", "req"), ("B", "agent")]);
    }
}
