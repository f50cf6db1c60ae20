//! Warm pools: the agent keeps `size` sandboxes of a template started; a create that names the
//! pool and matches its template takes one of them instead of booting (a "claim"), and the pool
//! starts a replacement in the background.
//!
//! A claimed sandbox is indistinguishable from a fresh one: it gets the create's name (also as
//! its hostname), labels, env and workdir (the last two as defaults of its commands, applied by
//! the agent), lease and idle timeout; nobody ever ran anything in it (members are never handed
//! out twice, and a claimed sandbox is removed like any other). What a claim cannot change —
//! image, resources, isolation, network, mounts, patches, secrets — must match the template, or
//! the create is a cold one (label `microsandbox.dev/launch`: `warm` or `cold`).
//!
//! Pools live in memory: after an agent restart their users declare them again (`PUT` is
//! idempotent) and unclaimed members are reaped at recovery.

use microsandbox_wire::api::{CreateSandbox, Isolation, PoolInfo, PoolSpec, SandboxInfo};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

use super::entry::SandboxEntry;
use super::record::{ExecDefaults, Phase, SandboxRecord};
use super::SandboxManager;
use crate::error::{AgentError, IoContext};
use crate::guest::GuestClient;
use crate::runtime::Launched;
use microsandbox_wire::guest::Request;

/// Label of an unclaimed pool member (its pool's name).
pub const POOL_LABEL: &str = "microsandbox.dev/pool";
/// Label of a sandbox created with `pool`: `warm` (claimed) or `cold` (booted).
pub const LAUNCH_LABEL: &str = "microsandbox.dev/launch";
/// Most sandboxes one pool keeps ready.
pub const MAX_POOL_SIZE: u32 = 256;
/// Members' names start with this; sandboxes cannot be created with it.
pub const MEMBER_PREFIX: &str = "pool--";

/// One pool's state.
struct Pool {
    spec: PoolSpec,
    /// Started, unclaimed members, oldest first.
    ready: VecDeque<String>,
    /// Members being started.
    filling: u32,
    claimed: u64,
    /// Bumped when the template changes: members of an older one are not handed out.
    generation: u64,
}

/// The agent's pools.
#[derive(Default)]
pub struct Pools(Mutex<HashMap<String, Pool>>);

/// Whether a record is an unclaimed pool member (reaped at recovery).
pub fn is_unclaimed_member(rec: &SandboxRecord) -> bool {
    rec.request.labels.contains_key(POOL_LABEL)
}

/// Whether a sandbox of `template` can serve `req`: equal in everything a claim cannot change.
/// Pure.
pub fn compatible(template: &CreateSandbox, req: &CreateSandbox) -> bool {
    let fixed = |r: &CreateSandbox| CreateSandbox {
        name: String::new(),
        env: Default::default(),
        workdir: None,
        labels: Default::default(),
        detached: false,
        idle_timeout_secs: None,
        pool: None,
        ..r.clone()
    };
    req.secrets.is_empty() && fixed(template) == fixed(req)
}

/// The request of a new member of pool `pool`. Pure.
pub fn member_request(pool: &str, template: &CreateSandbox, suffix: u32) -> CreateSandbox {
    let mut req = template.clone();
    req.name = format!("{MEMBER_PREFIX}{pool}-{suffix:08x}");
    req.detached = true;
    req.pool = None;
    req.idle_timeout_secs = None;
    req.labels.insert(POOL_LABEL.into(), pool.into());
    req
}

/// The record of member `member` claimed by `req`. Pure.
pub fn claimed_record(member: &SandboxRecord, req: &CreateSandbox) -> SandboxRecord {
    let mut rec = member.clone();
    rec.request.name = req.name.clone();
    rec.request.labels = req.labels.clone();
    rec.request
        .labels
        .insert(LAUNCH_LABEL.into(), "warm".into());
    rec.request.detached = req.detached;
    rec.request.idle_timeout_secs = req.idle_timeout_secs;
    rec.request.pool = req.pool.clone();
    rec.exec_defaults = ExecDefaults {
        env: req.env.clone(),
        workdir: req.workdir.clone(),
    };
    rec
}

impl SandboxManager {
    /// Create or change pool `name`; starts what it lacks in the background.
    pub async fn put_pool(
        self: &Arc<Self>,
        name: &str,
        spec: PoolSpec,
    ) -> Result<PoolInfo, AgentError> {
        microsandbox_wire::api::validate_name(name).map_err(AgentError::InvalidRequest)?;
        if spec.size > MAX_POOL_SIZE {
            return Err(AgentError::InvalidRequest(format!(
                "a pool keeps at most {MAX_POOL_SIZE} sandboxes, not {}",
                spec.size
            )));
        }
        if !spec.template.secrets.is_empty() {
            return Err(AgentError::InvalidRequest(
                "a pool template cannot hold secrets (their values belong to whoever claims)"
                    .into(),
            ));
        }
        let isolation = self.choose_isolation(spec.template.isolation)?;
        let mut template = spec.template.clone();
        template.isolation = Some(isolation);
        let stale = {
            let mut pools = self.pools.0.lock().await;
            let pool = pools.entry(name.to_string()).or_insert_with(|| Pool {
                spec: PoolSpec {
                    size: 0,
                    template: template.clone(),
                },
                ready: VecDeque::new(),
                filling: 0,
                claimed: 0,
                generation: 0,
            });
            let mut stale = Vec::new();
            if !compatible(&pool.spec.template, &template) {
                pool.generation += 1;
                stale.extend(pool.ready.drain(..));
            }
            while pool.ready.len() > spec.size as usize {
                stale.extend(pool.ready.pop_back());
            }
            pool.spec = PoolSpec {
                size: spec.size,
                template,
            };
            stale
        };
        self.remove_members(stale);
        self.refill(name);
        self.pool_info(name).await
    }

    /// Every pool.
    pub async fn pools(&self) -> Vec<PoolInfo> {
        let pools = self.pools.0.lock().await;
        let mut out: Vec<PoolInfo> = pools.iter().map(|(n, p)| info(n, p)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    async fn pool_info(&self, name: &str) -> Result<PoolInfo, AgentError> {
        let pools = self.pools.0.lock().await;
        pools
            .get(name)
            .map(|p| info(name, p))
            .ok_or_else(|| AgentError::PoolNotFound(name.to_string()))
    }

    /// Delete pool `name` and its unclaimed members (claimed ones are their users').
    pub async fn remove_pool(self: &Arc<Self>, name: &str) -> Result<(), AgentError> {
        let pool = self
            .pools
            .0
            .lock()
            .await
            .remove(name)
            .ok_or_else(|| AgentError::PoolNotFound(name.to_string()))?;
        // Awaited: once the call returns, the pool's sandboxes are gone (a member still being
        // started is removed by its refill task, which finds the pool gone).
        for m in pool.ready {
            if let Err(e) = self.remove(&m).await {
                tracing::warn!(sandbox = %m, error = %e, "cannot remove pool member");
            }
        }
        Ok(())
    }

    fn remove_members(self: &Arc<Self>, members: Vec<String>) {
        if members.is_empty() {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            for m in members {
                if let Err(e) = me.remove(&m).await {
                    tracing::warn!(sandbox = %m, error = %e, "cannot remove pool member");
                }
            }
        });
    }

    /// Start members until pool `name` has its size (in the background, one at a time).
    fn refill(self: &Arc<Self>, name: &str) {
        let (me, name) = (Arc::clone(self), name.to_string());
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let (req, generation) = {
                    let mut pools = me.pools.0.lock().await;
                    let Some(p) = pools.get_mut(&name) else {
                        return;
                    };
                    if p.ready.len() as u32 + p.filling >= p.spec.size {
                        return;
                    }
                    p.filling += 1;
                    let req = member_request(&name, &p.spec.template, rand::random());
                    (req, p.generation)
                };
                let member = req.name.clone();
                let made = me.create(req).await;
                let keep = {
                    let mut pools = me.pools.0.lock().await;
                    match pools.get_mut(&name) {
                        Some(p) => {
                            p.filling -= 1;
                            let keep = made.is_ok() && p.generation == generation;
                            if keep {
                                p.ready.push_back(member.clone());
                            }
                            keep
                        }
                        None => false,
                    }
                };
                match made {
                    Ok(_) if !keep => me.remove_members(vec![member]),
                    Ok(_) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(pool = %name, error = %e, "cannot start a pool member");
                        if failures >= 3 {
                            return; // the next put or claim tries again
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }

    /// Serve `req` from its pool, if it names one that has a matching member ready: `None`
    /// means a cold create.
    pub(super) async fn claim(
        self: &Arc<Self>,
        req: &CreateSandbox,
    ) -> Option<Result<SandboxInfo, AgentError>> {
        let pool = req.pool.as_deref()?;
        let member = {
            let mut pools = self.pools.0.lock().await;
            let p = pools.get_mut(pool)?;
            if !compatible(&p.spec.template, req) {
                return None;
            }
            let m = p.ready.pop_front()?;
            p.claimed += 1;
            m
        };
        self.refill(pool);
        Some(self.adopt(&member, req).await)
    }

    /// Give member `member` the identity `req` asks for.
    async fn adopt(
        self: &Arc<Self>,
        member: &str,
        req: &CreateSandbox,
    ) -> Result<SandboxInfo, AgentError> {
        let mut map = self.sandboxes.lock().await;
        if map.contains_key(&req.name) {
            drop(map);
            self.remove_members(vec![member.to_string()]);
            return Err(AgentError::AlreadyExists(req.name.clone()));
        }
        let old = map
            .remove(member)
            .ok_or_else(|| AgentError::Internal(format!("pool member {member} is gone")))?;
        let rec = claimed_record(&*old.record.lock().await, req);
        let launched = match &rec.phase {
            Phase::Running(l) => Some(l.clone()),
            _ => None,
        };
        rec.save(&old.dir).at("save the state of", &old.dir)?;
        let info = rec.info();
        let entry = SandboxEntry::new(
            req.name.clone(),
            old.dir.clone(),
            old.socket_dir.clone(),
            rec,
        );
        map.insert(req.name.clone(), entry.clone());
        drop(map);
        if let Some(launched) = launched {
            if let Err(e) = rename_host(&launched, &req.name).await {
                tracing::warn!(sandbox = %req.name, error = %e, "cannot set the claimed sandbox's hostname");
            }
        }
        if !req.detached {
            self.watch_lease(entry);
        }
        tracing::info!(sandbox = %req.name, member, "claimed from a warm pool");
        Ok(info)
    }
}

fn info(name: &str, p: &Pool) -> PoolInfo {
    PoolInfo {
        name: name.to_string(),
        size: p.spec.size,
        ready: p.ready.len() as u32,
        claimed: p.claimed,
        image: p.spec.template.image.clone(),
    }
}

/// Give a claimed member its new name as hostname: a container's from the host (its guest agent
/// lacks the capability), a microVM's by its guest agent (the VM is a kernel of its own).
async fn rename_host(launched: &Launched, name: &str) -> Result<(), AgentError> {
    match (launched.isolation, launched.pid) {
        (Isolation::Container, Some(pid)) => {
            let name = name.to_string();
            tokio::task::spawn_blocking(move || set_hostname(pid, &name))
                .await
                .map_err(|e| AgentError::Internal(e.to_string()))?
                .map_err(|e| AgentError::Internal(format!("set the hostname: {e}")))
        }
        (Isolation::Container, None) => Ok(()),
        (Isolation::Microvm, _) => {
            let guest = GuestClient::new(launched.guest_socket.clone());
            guest
                .call(Request::SetHostname {
                    name: name.to_string(),
                })
                .await
                .map(|_| ())
        }
    }
}

/// Set the hostname in the UTS namespace of process `pid` (a container's init), from a thread of
/// its own that joins that namespace and ends with it.
fn set_hostname(pid: u32, name: &str) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let name = name.to_string();
    std::thread::spawn(move || -> std::io::Result<()> {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/uts"))?;
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWUTS)?;
        nix::unistd::sethostname(&name)?;
        Ok(())
    })
    .join()
    .map_err(|_| std::io::Error::other("hostname thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: serde_json::Value) -> CreateSandbox {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_claim_may_change_identity_not_the_sandbox() {
        let t = req(
            serde_json::json!({"name": "", "image": "python", "memory_mib": 256,
            "isolation": "container"}),
        );
        let mut r = req(
            serde_json::json!({"name": "job-1", "image": "python", "memory_mib": 256,
            "isolation": "container", "env": {"A": "1"}, "workdir": "/w", "labels": {"x": "y"},
            "detached": true, "idle_timeout_secs": 60, "pool": "py"}),
        );
        assert!(compatible(&t, &r));
        r.memory_mib = 512;
        assert!(!compatible(&t, &r));
        r.memory_mib = 256;
        r.secrets = vec![serde_json::from_value(serde_json::json!(
            {"env": "K", "value": "v", "allow_hosts": ["a.test"]}))
        .unwrap()];
        assert!(!compatible(&t, &r), "secrets are never served warm");
    }

    #[test]
    fn members_are_detached_and_labelled_and_claims_take_the_new_identity() {
        let t = req(
            serde_json::json!({"name": "", "image": "python", "env": {"T": "1"},
            "isolation": "container"}),
        );
        let m = member_request("py", &t, 0xab);
        assert_eq!(m.name, "pool--py-000000ab");
        assert!(m.detached && m.labels[POOL_LABEL] == "py");
        let mut member = SandboxRecord::creating(m, Isolation::Container);
        assert!(is_unclaimed_member(&member));
        member.request.env.insert("T".into(), "1".into());
        let r = req(
            serde_json::json!({"name": "job-1", "image": "python", "env": {"A": "2"},
            "workdir": "/w", "labels": {"team": "a"}, "pool": "py"}),
        );
        let c = claimed_record(&member, &r);
        assert_eq!(c.request.name, "job-1");
        assert!(!is_unclaimed_member(&c));
        assert_eq!(c.request.labels[LAUNCH_LABEL], "warm");
        assert_eq!(c.request.labels["team"], "a");
        assert!(!c.request.detached);
        assert_eq!(c.exec_defaults.env["A"], "2");
        assert_eq!(c.exec_defaults.workdir.as_deref(), Some("/w"));
        assert_eq!(c.info().name, "job-1");
    }
}
