//! Sandbox networks, enforced outside the sandbox.
//!
//! A sandbox whose spec asks for any network gets a network namespace of its own, plugged by a
//! veth pair into the **uplink** namespace (the node's, or `--uplink-netns`), where nftables
//! rules of the agent's table decide what its packets may reach ([`plan`] has the rules, as
//! data) and the agent's resolver on the sandbox's gateway enforces the policy on names
//! ([`dns`]). Container sandboxes join that namespace; microVMs run their VMM in it, so the
//! guest's traffic (libkrun's socket impersonation) leaves through the same rules. Published
//! ports are TCP relays from the host's 127.0.0.1 ([`publish`]).
//!
//! Why nftables in a namespace and not a user-space stack: the kernel enforces the policy on
//! every packet whatever the guest does (raw sockets, UDP, ICMP), nothing in the data path is
//! hand-written, and `nft list table inet microsandbox` shows an operator exactly what holds.

pub mod dns;
pub mod host;
pub mod plan;
pub mod publish;

use ipnet::Ipv4Net;
use microsandbox_wire::api::NetworkSpec;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
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
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            uplink_netns: None,
            pool: "10.213.0.0/16".parse().expect("constant CIDR"),
            blocked: Vec::new(),
            dns_upstream: None,
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
}

impl Attachment {
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }
}

/// Errors of network setup (invalid specs are [`AgentError::InvalidRequest`]).
fn setup_error(what: &str, e: impl std::fmt::Display) -> AgentError {
    AgentError::Runtime(crate::runtime::RuntimeError::Command {
        what: format!("sandbox network ({what})"),
        detail: e.to_string(),
    })
}

/// Owns the sandbox networks of this node.
pub struct NetworkManager {
    cfg: NetConfig,
    uplink: Uplink,
    blocked: Arc<Vec<Ipv4Net>>,
    used: Mutex<BTreeSet<u32>>,
    /// Resolver and port relays of each attached sandbox, by network namespace name.
    tasks: Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
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
            tasks: Mutex::new(HashMap::new()),
            ready: Mutex::new(false),
        }
    }

    /// Checks `spec` before anything is created.
    pub fn check(spec: &NetworkSpec) -> Result<Allow, AgentError> {
        Allow::parse(spec).map_err(|e| AgentError::InvalidRequest(e.to_string()))
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

    /// Creates the network of sandbox `id` (`None` when the spec asks for none: the sandbox
    /// then gets an empty namespace from its runtime). Cleans up after itself on failure.
    pub async fn attach(
        &self,
        id: &str,
        spec: &NetworkSpec,
    ) -> Result<Option<Attachment>, AgentError> {
        if spec.is_none() {
            return Ok(None);
        }
        let allow = Self::check(spec)?;
        self.ensure_ready().await?;
        let addressing = self.allocate().await?;
        let att = Attachment {
            netns: id.to_string(),
            addressing,
            spec: spec.clone(),
        };
        if let Err(e) = self.build(&att, &allow).await {
            self.detach(&att).await;
            return Err(e);
        }
        Ok(Some(att))
    }

    async fn build(&self, att: &Attachment, allow: &Allow) -> Result<(), AgentError> {
        let a = &att.addressing;
        self.uplink
            .plug(&att.netns, a)
            .await
            .map_err(|e| setup_error("interfaces", e))?;
        self.uplink
            .nft(&plan::sandbox_ruleset(a, att.spec.policy, allow))
            .await
            .map_err(|e| setup_error("nftables rules", e))?;
        self.start_tasks(att, allow.clone()).await
    }

    /// The in-process parts (resolver, port relays); also what a restarted agent resumes.
    async fn start_tasks(&self, att: &Attachment, allow: Allow) -> Result<(), AgentError> {
        let a = att.addressing.clone();
        let mut handles = Vec::new();
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
            let policy = dns::DnsPolicy {
                policy: att.spec.policy,
                allow,
                blocked: self.blocked.clone(),
            };
            handles.push(tokio::spawn(dns::serve(
                listen,
                up,
                upstream,
                policy,
                self.uplink.clone(),
                a.clone(),
                att.netns.clone(),
            )));
        }
        for p in &att.spec.publish {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", p.host_port))
                .await
                .map_err(|e| setup_error(&format!("publish 127.0.0.1:{}", p.host_port), e))?;
            handles.push(tokio::spawn(publish::relay(
                listener,
                SocketAddr::from((a.sandbox, p.guest_port)),
                self.uplink.clone(),
            )));
        }
        self.tasks.lock().await.insert(att.netns.clone(), handles);
        Ok(())
    }

    /// After an agent restart: takes the attachment's address back and restarts its resolver
    /// and relays (the namespace, interfaces and rules outlived the agent).
    pub async fn resume(&self, att: &Attachment) -> Result<(), AgentError> {
        self.ensure_ready().await?;
        self.used.lock().await.insert(att.addressing.index);
        let allow = Self::check(&att.spec)?;
        self.start_tasks(att, allow).await
    }

    /// At startup, after resuming `keep`: removes sandbox links and namespaces no record
    /// claims (a crash between creating and recording them, or a record deleted by hand).
    pub async fn sweep(&self, keep: &[Attachment]) {
        let known: BTreeSet<&str> = keep.iter().map(|a| a.addressing.host_if.as_str()).collect();
        if let Ok(links) = self.uplink.link_names().await {
            for name in links {
                let ours = name.strip_prefix(plan::HOST_IF_PREFIX).is_some_and(|hex| {
                    !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())
                });
                if ours && !known.contains(name.as_str()) {
                    tracing::info!(interface = %name, "removing a sandbox link no record claims");
                    let _ = self.uplink.ip(&["link", "del", &name]).await;
                }
            }
        }
    }

    /// Removes everything of `att` (each step tolerates what is already gone).
    pub async fn detach(&self, att: &Attachment) {
        if let Some(handles) = self.tasks.lock().await.remove(&att.netns) {
            for h in handles {
                h.abort();
            }
        }
        if let Err(e) = self
            .uplink
            .nft(&plan::sandbox_teardown(&att.addressing))
            .await
        {
            tracing::debug!(netns = %att.netns, error = %e, "nftables rules already gone");
        }
        self.uplink.unplug(&att.netns, &att.addressing).await;
        self.used.lock().await.remove(&att.addressing.index);
    }
}
