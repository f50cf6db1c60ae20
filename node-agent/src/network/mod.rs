//! Sandbox networks, enforced outside the sandbox.
//!
//! A sandbox whose spec asks for any network gets a network namespace of its own, plugged by a
//! veth pair into the **uplink** namespace (the node's, or `--uplink-netns`), where nftables
//! rules of the agent's table decide what its packets may reach ([`plan`] has the rules, as
//! data) and the agent's resolver on the sandbox's gateway enforces the policy on names
//! ([`dns`]). Container sandboxes join that namespace; microVMs run their VMM in it, so the
//! guest's traffic (libkrun's socket impersonation) leaves through the same rules. Published
//! ports are TCP relays from the host's 127.0.0.1 ([`publish`]). Sandboxes with secrets also
//! get an egress proxy for HTTP(S) that puts the values into requests to allowed hosts only
//! ([`secrets`], [`proxy`]).
//!
//! Why nftables in a namespace and not a user-space stack: the kernel enforces the policy on
//! every packet whatever the guest does (raw sockets, UDP, ICMP), nothing in the data path is
//! hand-written, and `nft list table inet microsandbox` shows an operator exactly what holds.

pub mod dns;
pub mod egress;
pub mod host;
pub mod plan;
pub mod proxy;
pub mod publish;
pub mod secrets;
pub mod violations;

use ipnet::Ipv4Net;
use microsandbox_wire::api::{NetworkSpec, SecretSpec, SecretViolation};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::error::AgentError;
use host::Uplink;
use plan::{Addressing, Allow};

/// Network settings of the node.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Named network namespace holding the sandboxes' uplinks (default: the agent's own).
    pub uplink_netns: Option<String>,
    /// Addresses of sandbox links, a /30 each.
    pub pool: Ipv4Net,
    /// Ranges `public_only` refuses besides the non-public ones (cluster pod/service CIDRs).
    pub blocked: Vec<Ipv4Net>,
    /// Resolver the sandboxes' DNS is forwarded to, reached from the uplink namespace.
    pub dns_upstream: Option<SocketAddr>,
    /// CA certificates (PEM files) the egress proxy trusts besides the node's roots.
    pub upstream_cas: Vec<PathBuf>,
    /// Prefix of this agent's sandbox namespace names (`/run/netns/<prefix><sandbox>`), unique
    /// per state directory so that agents sharing a host never touch each other's.
    pub netns_prefix: String,
}

/// Names in `/run/netns` that carry `prefix` and are not `claimed`.
fn unclaimed_namespaces(prefix: &str, claimed: &BTreeSet<&str>) -> Vec<String> {
    let names = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned());
    unclaimed(names, prefix, claimed)
}

/// Of `names`, those that carry `prefix` (this agent's) and are not `claimed`; none when the
/// prefix is empty (then no name is known to be ours).
fn unclaimed(
    names: impl IntoIterator<Item = String>,
    prefix: &str,
    claimed: &BTreeSet<&str>,
) -> Vec<String> {
    if prefix.is_empty() {
        return Vec::new();
    }
    names
        .into_iter()
        .filter(|n| n.starts_with(prefix) && !claimed.contains(n.as_str()))
        .collect()
}

/// [`NetConfig::netns_prefix`] of the agent whose state directory is `state_dir`.
pub fn netns_prefix(state_dir: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    format!("msb{}-", &hex::encode(digest)[..6])
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            uplink_netns: None,
            pool: "10.213.0.0/16".parse().expect("constant CIDR"),
            blocked: Vec::new(),
            dns_upstream: None,
            upstream_cas: Vec::new(),
            netns_prefix: "msb-".into(),
        }
    }
}

/// A sandbox's network as it exists on the host; kept in the sandbox record so a restarted
/// agent can resume or remove it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// Network namespace of the sandbox (`/run/netns/<netns>`).
    pub netns: String,
    pub addressing: Addressing,
    pub spec: NetworkSpec,
    /// `secrets.json` (0600, host side) when the sandbox has secrets: their values,
    /// placeholders and the sandbox's CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_file: Option<PathBuf>,
}

impl Attachment {
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }
}

/// What the guest must see of its secrets: placeholder variables and the CA to trust.
pub struct GuestSecrets {
    pub env: Vec<(String, String)>,
    pub ca_pem: String,
}

/// Errors of network setup (invalid specs are [`AgentError::InvalidRequest`]).
fn setup_error(what: &str, e: impl std::fmt::Display) -> AgentError {
    AgentError::Runtime(crate::runtime::RuntimeError::Command {
        what: format!("sandbox network ({what})"),
        detail: e.to_string(),
    })
}

/// The allowlist of a spec, with the hosts of its secrets (their names must resolve and be
/// reachable whatever the policy).
fn allow_of(spec: &NetworkSpec, secret_hosts: &[String]) -> Result<Allow, AgentError> {
    let mut with_hosts = spec.clone();
    with_hosts.allow.extend(secret_hosts.iter().cloned());
    Allow::parse(&with_hosts).map_err(|e| AgentError::InvalidRequest(e.to_string()))
}

/// In-process parts of one attached sandbox.
#[derive(Default)]
struct Running {
    tasks: Vec<JoinHandle<()>>,
    violations: Arc<std::sync::Mutex<violations::Violations>>,
}

/// Owns the sandbox networks of this node.
pub struct NetworkManager {
    cfg: NetConfig,
    uplink: Uplink,
    blocked: Arc<Vec<Ipv4Net>>,
    used: Mutex<BTreeSet<u32>>,
    /// Resolver, relays and proxy of each attached sandbox, by network namespace name.
    running: Mutex<HashMap<String, Running>>,
    /// Whether the agent's table and forwarding are in place.
    ready: Mutex<bool>,
}

impl NetworkManager {
    pub fn new(cfg: NetConfig) -> Self {
        Self {
            uplink: Uplink {
                netns: cfg.uplink_netns.clone(),
            },
            blocked: Arc::new(plan::blocked_ranges(&cfg.blocked)),
            cfg,
            used: Mutex::new(BTreeSet::new()),
            running: Mutex::new(HashMap::new()),
            ready: Mutex::new(false),
        }
    }

    /// Checks a spec and its secrets before anything is created.
    pub fn check(spec: &NetworkSpec, secrets: &[SecretSpec]) -> Result<Allow, AgentError> {
        microsandbox_wire::api::validate_secrets(secrets).map_err(AgentError::InvalidRequest)?;
        let hosts: Vec<String> = secrets.iter().flat_map(|s| s.allow_hosts.clone()).collect();
        allow_of(spec, &hosts)
    }

    async fn ensure_ready(&self) -> Result<(), AgentError> {
        let mut ready = self.ready.lock().await;
        if !*ready {
            self.uplink
                .enable_forwarding()
                .await
                .map_err(|e| setup_error("enable IPv4 forwarding", e))?;
            self.uplink
                .nft(&plan::base_ruleset(self.cfg.pool, &self.blocked))
                .await
                .map_err(|e| setup_error("nftables table", e))?;
            *ready = true;
        }
        Ok(())
    }

    async fn allocate(&self) -> Result<Addressing, AgentError> {
        let mut used = self.used.lock().await;
        let cap = Addressing::capacity(self.cfg.pool);
        let index = (0..cap).find(|i| !used.contains(i)).ok_or_else(|| {
            setup_error(
                "address pool",
                format!("{} is exhausted ({cap} sandboxes)", self.cfg.pool),
            )
        })?;
        used.insert(index);
        Addressing::new(self.cfg.pool, index)
            .ok_or_else(|| setup_error("address pool", "index outside the pool"))
    }

    /// Creates the network of sandbox `name` (`None` when it needs none: the sandbox then gets
    /// an empty namespace from its runtime). Secrets, if any, are kept in `dir/secrets.json`.
    /// Cleans up after itself on failure.
    pub async fn attach(
        &self,
        name: &str,
        spec: &NetworkSpec,
        secrets: &[SecretSpec],
        dir: &Path,
    ) -> Result<Option<Attachment>, AgentError> {
        if spec.is_none() && secrets.is_empty() {
            return Ok(None);
        }
        Self::check(spec, secrets)?;
        self.ensure_ready().await?;
        let addressing = self.allocate().await?;
        let mut att = Attachment {
            netns: format!("{}{name}", self.cfg.netns_prefix),
            addressing,
            spec: spec.clone(),
            secrets_file: None,
        };
        if !secrets.is_empty() {
            let path = dir.join("secrets.json");
            let made = secrets::SandboxCa::generate(name)
                .map_err(|e| setup_error("sandbox CA", e))
                .and_then(|ca| {
                    let state = secrets::SecretsState {
                        entries: secrets::Secrets::new(secrets).entries().to_vec(),
                        ca_key_pem: ca.key_pem(),
                        ca_cert_pem: ca.cert_pem(),
                    };
                    secrets::save(&path, &state).map_err(|e| setup_error("secrets file", e))
                });
            if let Err(e) = made {
                self.used.lock().await.remove(&att.addressing.index);
                return Err(e);
            }
            att.secrets_file = Some(path);
        }
        if let Err(e) = self.build(&att).await {
            self.detach(&att).await;
            return Err(e);
        }
        Ok(Some(att))
    }

    /// The guest's view of the secrets of `att` (placeholders, CA), if it has any.
    pub fn guest_secrets(att: &Attachment) -> Result<Option<GuestSecrets>, AgentError> {
        let Some(path) = &att.secrets_file else {
            return Ok(None);
        };
        let state = secrets::load(path).map_err(|e| setup_error("secrets file", e))?;
        Ok(Some(GuestSecrets {
            env: secrets::Secrets::from_entries(state.entries).env(),
            ca_pem: state.ca_cert_pem,
        }))
    }

    fn allow_for(att: &Attachment) -> Result<(Allow, Option<secrets::SecretsState>), AgentError> {
        let state = match &att.secrets_file {
            Some(p) => Some(secrets::load(p).map_err(|e| setup_error("secrets file", e))?),
            None => None,
        };
        let hosts: Vec<String> = state
            .iter()
            .flat_map(|s| s.entries.iter().flat_map(|e| e.allow_hosts.clone()))
            .collect();
        Ok((allow_of(&att.spec, &hosts)?, state))
    }

    async fn build(&self, att: &Attachment) -> Result<(), AgentError> {
        let a = &att.addressing;
        let (allow, state) = Self::allow_for(att)?;
        self.uplink
            .plug(&att.netns, a)
            .await
            .map_err(|e| setup_error("interfaces", e))?;
        self.uplink
            .nft(&plan::sandbox_ruleset(
                a,
                att.spec.policy,
                &allow,
                state.is_some(),
            ))
            .await
            .map_err(|e| setup_error("nftables rules", e))?;
        self.start_tasks(att, allow, state).await
    }

    /// Binds `addr` (TCP or UDP) in the uplink namespace.
    async fn bind_tcp(&self, addr: SocketAddr) -> Result<tokio::net::TcpListener, AgentError> {
        let l = self
            .uplink
            .in_netns(move || {
                let l = std::net::TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .await
            .map_err(|e| setup_error(&format!("listen on {addr}"), e))?;
        tokio::net::TcpListener::from_std(l).map_err(|e| setup_error("listener", e))
    }

    /// The in-process parts (resolver, port relays, proxy); also what a restarted agent
    /// resumes.
    async fn start_tasks(
        &self,
        att: &Attachment,
        allow: Allow,
        state: Option<secrets::SecretsState>,
    ) -> Result<(), AgentError> {
        let a = att.addressing.clone();
        let mut run = Running::default();
        let egress = Arc::new(egress::Egress::new(
            att.spec.policy,
            allow,
            self.blocked.clone(),
        ));
        if let Some(upstream) = self.cfg.dns_upstream {
            let gw = SocketAddr::from((a.gateway, 53));
            let (listen, up) = self
                .uplink
                .in_netns(move || {
                    let listen = std::net::UdpSocket::bind(gw)?;
                    let up = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
                    listen.set_nonblocking(true)?;
                    up.set_nonblocking(true)?;
                    Ok((listen, up))
                })
                .await
                .map_err(|e| setup_error("resolver socket", e))?;
            let listen = tokio::net::UdpSocket::from_std(listen)
                .map_err(|e| setup_error("resolver socket", e))?;
            let up = tokio::net::UdpSocket::from_std(up)
                .map_err(|e| setup_error("resolver socket", e))?;
            run.tasks.push(tokio::spawn(dns::serve(
                listen,
                up,
                upstream,
                egress.clone(),
                self.uplink.clone(),
                a.clone(),
                att.netns.clone(),
            )));
        }
        if let Some(state) = state {
            let ca = secrets::SandboxCa::from_pem(&state.ca_key_pem, &state.ca_cert_pem)
                .map_err(|e| setup_error("sandbox CA", e))?;
            let upstream = proxy::upstream_connector(&self.cfg.upstream_cas)
                .map_err(|e| setup_error("proxy TLS client", e))?;
            let p = Arc::new(proxy::Proxy {
                sandbox: att.netns.clone(),
                egress: egress.clone(),
                secrets: secrets::Secrets::from_entries(state.entries),
                ca: Arc::new(ca),
                upstream,
                uplink: self.uplink.clone(),
                violations: run.violations.clone(),
            });
            for (port, tls) in [
                (plan::PROXY_HTTPS_PORT, true),
                (plan::PROXY_HTTP_PORT, false),
            ] {
                let l = self.bind_tcp(SocketAddr::from((a.gateway, port))).await?;
                run.tasks.push(tokio::spawn(p.clone().serve(l, tls)));
            }
        }
        for p in &att.spec.publish {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", p.host_port))
                .await
                .map_err(|e| setup_error(&format!("publish 127.0.0.1:{}", p.host_port), e))?;
            run.tasks.push(tokio::spawn(publish::relay(
                listener,
                SocketAddr::from((a.sandbox, p.guest_port)),
                self.uplink.clone(),
            )));
        }
        self.running.lock().await.insert(att.netns.clone(), run);
        Ok(())
    }

    /// After an agent restart: takes the attachment's address back and restarts its resolver,
    /// relays and proxy (the namespace, interfaces and rules outlived the agent).
    pub async fn resume(&self, att: &Attachment) -> Result<(), AgentError> {
        self.ensure_ready().await?;
        self.used.lock().await.insert(att.addressing.index);
        let (allow, state) = Self::allow_for(att)?;
        self.start_tasks(att, allow, state).await
    }

    /// Uses of secret placeholders the proxy of `att` blocked, oldest first (with `since`, only
    /// those numbered from it on), and the mark after them.
    pub async fn violations(
        &self,
        att: &Attachment,
        since: Option<u64>,
    ) -> (Vec<SecretViolation>, u64) {
        match self.running.lock().await.get(&att.netns) {
            Some(r) => {
                let v = r.violations.lock().unwrap_or_else(|e| e.into_inner());
                v.since(since.unwrap_or(0))
            }
            None => (Vec::new(), 0),
        }
    }

    /// At startup, after resuming `keep`: removes sandbox links no record claims (a crash
    /// between creating and recording them, or a record deleted by hand).
    pub async fn sweep(&self, keep: &[Attachment]) {
        let known: BTreeSet<&str> = keep.iter().map(|a| a.addressing.host_if.as_str()).collect();
        if let Ok(links) = self.uplink.link_names().await {
            for name in links {
                let ours = name.strip_prefix(plan::HOST_IF_PREFIX).is_some_and(|hex| {
                    !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())
                });
                if ours && !known.contains(name.as_str()) {
                    tracing::info!(interface = %name, "removing a sandbox link no record claims");
                    let removed = self.uplink.ip(&["link", "del", &name]).await;
                    crate::cleanup::warn_on_err(format_args!("remove link {name}"), removed);
                }
            }
        }
        // Every kept sandbox's `sources` element: sandboxes of an agent version that had no such
        // set lost their forwarded packets from the first resume (which made the set) to here.
        let addressings: Vec<&Addressing> = keep.iter().map(|a| &a.addressing).collect();
        if let Some(script) = plan::sources_of(&addressings) {
            if let Err(e) = self.uplink.nft(&script).await {
                tracing::warn!(error = %e, "cannot add the kept sandboxes' source addresses");
            }
        }
        // Chains and sets of sandboxes no record claims: a create cut between its rules and its
        // record.
        let kept: BTreeSet<u32> = keep.iter().map(|a| a.addressing.index).collect();
        if let Ok(names) = self.uplink.table_objects(plan::TABLE).await {
            // Kept sandboxes without allow entries that still have a chain of their own (made
            // by an agent version that gave every sandbox one) move to their policy's chain.
            let chains: BTreeSet<&str> = names.iter().map(String::as_str).collect();
            for att in keep {
                let shared = Self::allow_for(att).is_ok_and(|(a, _)| !plan::needs_own_chain(&a));
                if shared && chains.contains(att.addressing.chain().as_str()) {
                    let script = plan::to_shared_chain(&att.addressing, att.spec.policy);
                    if let Err(e) = self.uplink.nft(&script).await {
                        tracing::warn!(netns = %att.netns, error = %e, "cannot move a sandbox to its policy's chain");
                    }
                }
            }
            let stale: BTreeSet<u32> = names
                .iter()
                .filter_map(|n| plan::object_index(n))
                .filter(|i| !kept.contains(i))
                .collect();
            for a in stale
                .into_iter()
                .filter_map(|i| Addressing::new(self.cfg.pool, i))
            {
                tracing::info!(chain = %a.chain(), "removing the rules of a sandbox no record claims");
                for statement in plan::sandbox_sweep(&a) {
                    // Each may find its object already gone.
                    let _gone = self.uplink.nft(&statement).await;
                }
            }
        }
        // Namespaces carry this agent's prefix: one no record claims was made by a create the
        // crash cut short before it was recorded.
        let claimed: BTreeSet<&str> = keep.iter().map(|a| a.netns.as_str()).collect();
        for ns in unclaimed_namespaces(&self.cfg.netns_prefix, &claimed) {
            tracing::info!(netns = %ns, "removing a sandbox network namespace no record claims");
            let removed = Uplink::delete_namespace(&ns).await;
            crate::cleanup::warn_on_err(format_args!("remove network namespace {ns}"), removed);
        }
    }

    /// Removes everything of `att` (each step tolerates what is already gone).
    pub async fn detach(&self, att: &Attachment) {
        if let Some(run) = self.running.lock().await.remove(&att.netns) {
            for h in run.tasks {
                h.abort();
            }
        }
        // Its own chain and DNS set follow from its allow list. One transaction removes what
        // the record says exists; when that fails (an unreadable secrets file, rules a crash
        // left half made or already removed), each object is removed on its own.
        let (own, dns) = Self::allow_for(att).map_or((true, true), |(allow, _)| {
            (plan::needs_own_chain(&allow), allow.has_domains())
        });
        let intercept = att.secrets_file.is_some();
        let script = plan::sandbox_teardown(&att.addressing, intercept, own, dns);
        if let Err(e) = self.uplink.nft(&script).await {
            tracing::debug!(netns = %att.netns, error = %e, "nftables rules not as recorded; removing each");
            for statement in plan::sandbox_sweep(&att.addressing) {
                // Each may find its object already gone.
                let _gone = self.uplink.nft(&statement).await;
            }
        }
        self.uplink.unplug(&att.netns, &att.addressing).await;
        if let Some(p) = &att.secrets_file {
            crate::cleanup::remove_file(p);
        }
        self.used.lock().await.remove(&att.addressing.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_agents_unclaimed_namespaces_are_swept() {
        let names = [
            "msbabc123-keep",
            "msbabc123-lost",
            "msbfff000-other",
            "cni-1234",
        ]
        .map(String::from);
        let claimed = BTreeSet::from(["msbabc123-keep"]);
        assert_eq!(
            unclaimed(names.clone(), "msbabc123-", &claimed),
            ["msbabc123-lost"]
        );
        // Without a prefix nothing is known to be ours.
        assert!(unclaimed(names, "", &claimed).is_empty());
    }
}
