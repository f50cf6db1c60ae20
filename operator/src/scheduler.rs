//! Choosing a node for a Sandbox. Pure: no API calls, so every rule is unit-tested.
//!
//! Node-agents register themselves with a `coordination.k8s.io/v1` Lease named
//! `microsandbox-node-<node>` in the operator's namespace. The Lease's annotations carry what the
//! node offers ([`annotations`]), its labels mirror the Node's labels that Volume placement may
//! select on, and `spec.renewTime` + `spec.leaseDurationSeconds` say whether the agent is alive.
//!
//! Rules, in the order a node is ruled out (the first failing rule is the reason reported for it):
//! 1. the agent is alive (lease renewed within its duration);
//! 2. it offers the isolation the Sandbox asks for: never a weaker one, and not a different one;
//! 3. every named Volume the Sandbox mounts can be on it (bound or pinned node, node selector);
//! 4. it has room: memory MiB, CPUs and number of sandboxes, after what is already bound to it.
//!
//! Among the nodes left, the least loaded wins (smallest highest utilisation over the three
//! dimensions once this sandbox is added); ties go to the smallest node name, so the choice is
//! deterministic.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use microsandbox_crds::Reason;
use microsandbox_crds::{Isolation, Sandbox, SandboxPhase, Volume};
use std::collections::{BTreeMap, HashSet};

/// Prefix of the name of a node-agent's Lease; the rest is the node name.
pub const NODE_LEASE_PREFIX: &str = "microsandbox-node-";

/// Annotations a node-agent writes on its Lease.
pub mod annotations {
    /// Memory the agent may give to sandboxes, in MiB (decimal integer).
    pub const MEMORY_MIB: &str = "microsandbox.dev/capacity-memory-mib";
    /// Virtual CPUs the agent may give to sandboxes (decimal integer).
    pub const CPUS: &str = "microsandbox.dev/capacity-cpus";
    /// Most sandboxes the agent runs at once (decimal integer).
    pub const MAX_SANDBOXES: &str = "microsandbox.dev/capacity-sandboxes";
    /// Isolation levels offered, comma-separated: `microvm,container`.
    pub const ISOLATION: &str = "microsandbox.dev/isolation";
    /// Base URL of the agent API, e.g. `https://10.0.3.7:7443`.
    pub const ENDPOINT: &str = "microsandbox.dev/endpoint";
    /// API server path proxying to the agent's pod (`/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy`).
    pub const PROXY: &str = "microsandbox.dev/proxy";
    /// The agent's public key (base64 X25519) that Secret values for its sandboxes are sealed to.
    pub const SEALING_KEY: &str = "microsandbox.dev/sealing-key";
}

/// Lease duration assumed when a Lease does not state one.
pub const DEFAULT_LEASE_DURATION_SECS: i64 = 40;

/// Amounts of the three scheduled resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory_mib: u64,
    pub cpus: u64,
    pub sandboxes: u64,
}

impl Resources {
    fn add(self, o: Self) -> Self {
        Self {
            memory_mib: self.memory_mib.saturating_add(o.memory_mib),
            cpus: self.cpus.saturating_add(o.cpus),
            sandboxes: self.sandboxes.saturating_add(o.sandboxes),
        }
    }
}

/// A node-agent as its Lease describes it, plus what is already bound to it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// Kubernetes node name.
    pub name: String,
    pub capacity: Resources,
    /// Sum of the requests of the sandboxes bound to this node that still hold resources.
    pub allocated: Resources,
    pub isolation: HashSet<Isolation>,
    /// Last `spec.renewTime`; `None` if the agent never renewed.
    pub renew_time: Option<Timestamp>,
    pub lease_duration: SignedDuration,
    /// Agent API base URL, if announced.
    pub endpoint: Option<String>,
    /// API server pod-proxy path to the agent, if announced.
    pub proxy: Option<String>,
    /// Node labels mirrored on the Lease (for Volume `placement.nodeSelector`).
    pub labels: BTreeMap<String, String>,
    /// The agent's sealing key, if announced (needed by sandboxes with secrets).
    pub sealing_key: Option<String>,
}

impl NodeInfo {
    /// The agent renewed its lease within the lease duration.
    pub fn is_alive(&self, now: Timestamp) -> bool {
        self.renew_time
            .is_some_and(|t| now.duration_since(t) <= self.lease_duration)
    }

    /// When the lease runs out (or ran out); `None` if it was never renewed.
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.renew_time
            .and_then(|t| t.checked_add(self.lease_duration).ok())
    }
}

/// Why a Lease does not describe a node-agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseParseError {
    #[error("lease {0:?} is not a node-agent lease (name must start with {NODE_LEASE_PREFIX:?})")]
    NotANodeLease(String),
    #[error("lease {lease:?}: annotation {annotation} is missing")]
    Missing {
        lease: String,
        annotation: &'static str,
    },
    #[error("lease {lease:?}: annotation {annotation}={value:?} is not valid")]
    Invalid {
        lease: String,
        annotation: &'static str,
        value: String,
    },
}

/// Read a node-agent's Lease. `allocated` starts at zero; see [`allocate`].
pub fn parse_node_lease(lease: &Lease) -> Result<NodeInfo, LeaseParseError> {
    let lease_name = lease.metadata.name.clone().unwrap_or_default();
    let node = lease_name
        .strip_prefix(NODE_LEASE_PREFIX)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| LeaseParseError::NotANodeLease(lease_name.clone()))?
        .to_string();
    let empty = BTreeMap::new();
    let ann = lease.metadata.annotations.as_ref().unwrap_or(&empty);
    let get = |annotation: &'static str| {
        ann.get(annotation)
            .map(|v| v.trim())
            .ok_or(LeaseParseError::Missing {
                lease: lease_name.clone(),
                annotation,
            })
    };
    let invalid = |annotation: &'static str, value: &str| LeaseParseError::Invalid {
        lease: lease_name.clone(),
        annotation,
        value: value.to_string(),
    };
    let number = |annotation: &'static str| -> Result<u64, LeaseParseError> {
        let v = get(annotation)?;
        v.parse().map_err(|_| invalid(annotation, v))
    };
    let capacity = Resources {
        memory_mib: number(annotations::MEMORY_MIB)?,
        cpus: number(annotations::CPUS)?,
        sandboxes: number(annotations::MAX_SANDBOXES)?,
    };
    let iso_value = get(annotations::ISOLATION)?;
    let mut isolation = HashSet::new();
    for level in iso_value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let level = serde_json::from_value::<Isolation>(serde_json::Value::String(level.into()))
            .map_err(|_| invalid(annotations::ISOLATION, iso_value))?;
        isolation.insert(level);
    }
    let endpoint = ann
        .get(annotations::ENDPOINT)
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty());
    let proxy = ann
        .get(annotations::PROXY)
        .map(|e| e.trim().to_string())
        .filter(|e| e.starts_with("/api/"));
    let sealing_key = ann
        .get(annotations::SEALING_KEY)
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty());
    let spec = lease.spec.as_ref();
    let duration_secs = spec
        .and_then(|s| s.lease_duration_seconds)
        .map_or(DEFAULT_LEASE_DURATION_SECS, i64::from);
    Ok(NodeInfo {
        name: node,
        capacity,
        allocated: Resources::default(),
        isolation,
        renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
        lease_duration: SignedDuration::from_secs(duration_secs),
        endpoint,
        proxy,
        labels: lease.metadata.labels.clone().unwrap_or_default(),
        sealing_key,
    })
}

/// Tells a Lease event that matters (a node is new, came back after its lease lapsed, or offers
/// something else) from a plain renewal.
#[derive(Debug, Default)]
pub struct LeaseChanges {
    last: BTreeMap<String, NodeInfo>,
}

impl LeaseChanges {
    /// Record `node`; true when it differs from a plain renewal of what was seen before.
    pub fn observe(&mut self, node: &NodeInfo) -> bool {
        let changed = match self.last.get(&node.name) {
            None => true,
            Some(old) => {
                let lapsed = match (old.expires_at(), node.renew_time) {
                    (Some(expiry), Some(renewed)) => renewed > expiry,
                    _ => old.renew_time != node.renew_time,
                };
                lapsed
                    || old.capacity != node.capacity
                    || old.isolation != node.isolation
                    || old.endpoint != node.endpoint
                    || old.proxy != node.proxy
                    || old.labels != node.labels
                    || old.sealing_key != node.sealing_key
            }
        };
        self.last.insert(node.name.clone(), node.clone());
        changed
    }
}

/// What a Sandbox needs from a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub resources: Resources,
    pub isolation: Isolation,
    /// Names of the Volumes (same namespace) it mounts.
    pub volumes: Vec<String>,
    /// It uses Secrets: only nodes with a sealing key can receive them.
    pub secrets: bool,
    /// The one node it may run on: where the SandboxSnapshot it starts from is kept (the caller
    /// sets it from `spec.snapshotRef`).
    pub node: Option<String>,
}

impl Request {
    /// The request of a Sandbox (memory defaults to 512 MiB if the quantity does not parse, which
    /// `validate()` rules out before scheduling).
    pub fn of(sandbox: &Sandbox) -> Self {
        let spec = &sandbox.spec;
        Self {
            resources: Resources {
                memory_mib: spec.memory_mib().unwrap_or(512),
                cpus: u64::try_from(spec.resources.cpus).unwrap_or(1),
                sandboxes: 1,
            },
            isolation: spec.isolation,
            volumes: spec
                .volumes
                .iter()
                .filter_map(|v| v.named.as_ref().map(|n| n.name.clone()))
                .collect(),
            secrets: !spec.secrets.is_empty(),
            node: None,
        }
    }
}

/// Where a Volume's data is or must be.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumePlacement {
    /// `status.node`, else `spec.placement.node`: the one node it can be on.
    pub node: Option<String>,
    /// `spec.placement.nodeSelector`, while no node is fixed.
    pub node_selector: BTreeMap<String, String>,
}

impl VolumePlacement {
    pub fn of(volume: &Volume) -> Self {
        let placement = volume.spec.placement.as_ref();
        Self {
            node: volume
                .status
                .as_ref()
                .and_then(|s| s.node.clone())
                .or_else(|| placement.and_then(|p| p.node.clone())),
            node_selector: placement
                .and_then(|p| p.node_selector.clone())
                .unwrap_or_default(),
        }
    }

    fn admits(&self, node: &NodeInfo) -> bool {
        match &self.node {
            Some(n) => *n == node.name,
            None => self
                .node_selector
                .iter()
                .all(|(k, v)| node.labels.get(k) == Some(v)),
        }
    }
}

/// No node fits. `reason` is a condition reason, `message` says why for each node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Unschedulable {
    pub reason: Reason,
    pub message: String,
}

impl Unschedulable {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Why one node was ruled out (ordered as the filters run, so messages read in a stable order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Misfit {
    NotAlive,
    Isolation,
    Volume,
    Snapshot,
    SealingKey,
    Memory,
    Cpus,
    Sandboxes,
}

impl Misfit {
    fn describe(self, isolation: Isolation) -> String {
        match self {
            Self::NotAlive => "node-agent not alive (lease expired)".into(),
            Self::Isolation => format!("no {} isolation", isolation_name(isolation)),
            Self::Volume => "not where the sandbox's volumes are".into(),
            Self::Snapshot => "not where the sandbox's snapshot is".into(),
            Self::SealingKey => "no sealing key for secrets (node-agent too old)".into(),
            Self::Memory => "insufficient memory".into(),
            Self::Cpus => "insufficient cpus".into(),
            Self::Sandboxes => "too many sandboxes".into(),
        }
    }
}

fn isolation_name(i: Isolation) -> &'static str {
    match i {
        Isolation::Microvm => "microvm",
        Isolation::Container => "container",
    }
}

/// Pick a node for `request`. `volumes` maps the Volume names of the sandbox's namespace to their
/// placement; `nodes` carry their current allocation ([`allocate`]).
pub fn schedule(
    request: &Request,
    nodes: &[NodeInfo],
    volumes: &BTreeMap<String, VolumePlacement>,
    now: Timestamp,
) -> Result<String, Unschedulable> {
    // Volumes first: a missing Volume or two Volumes on different nodes cannot be fixed by any node.
    let mut placements = Vec::new();
    for name in &request.volumes {
        match volumes.get(name) {
            Some(p) => placements.push((name, p)),
            None => {
                return Err(Unschedulable::new(
                    Reason::VolumeNotFound,
                    format!("Volume {name:?} does not exist in this namespace"),
                ))
            }
        }
    }
    if let Some((name, _)) = placements.iter().find(|(_, p)| p.node.is_none()) {
        return Err(Unschedulable::new(
            Reason::VolumeNotPlaced,
            format!("Volume {name:?} has no node yet"),
        ));
    }
    let pinned: BTreeMap<&str, &String> = placements
        .iter()
        .filter_map(|(name, p)| p.node.as_deref().map(|n| (n, *name)))
        .collect();
    if pinned.len() > 1 {
        let list = pinned
            .iter()
            .map(|(node, vol)| format!("{vol:?} on {node}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Unschedulable::new(
            Reason::VolumeNodeConflict,
            format!("the sandbox's volumes are on different nodes: {list}"),
        ));
    }

    let mut misfits: BTreeMap<Misfit, usize> = BTreeMap::new();
    let mut best: Option<(u64, &str)> = None;
    for node in nodes {
        match fit(request, node, &placements, now) {
            Err(m) => *misfits.entry(m).or_default() += 1,
            Ok(score) => {
                let candidate = (score, node.name.as_str());
                if best.is_none_or(|b| candidate < b) {
                    best = Some(candidate);
                }
            }
        }
    }
    if let Some((_, name)) = best {
        return Ok(name.to_string());
    }
    let detail = misfits
        .iter()
        .map(|(m, n)| format!("{n} {}", m.describe(request.isolation)))
        .collect::<Vec<_>>();
    let mut message = format!("0/{} nodes are available", nodes.len());
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(&detail.join(", "));
    }
    Err(Unschedulable::new(Reason::Unschedulable, message))
}

/// Check one node; on success the score (lower is better): the highest utilisation, in parts per
/// million, over memory, cpus and sandbox count once the request is added.
fn fit(
    request: &Request,
    node: &NodeInfo,
    volumes: &[(&String, &VolumePlacement)],
    now: Timestamp,
) -> Result<u64, Misfit> {
    if !node.is_alive(now) {
        return Err(Misfit::NotAlive);
    }
    if !node.isolation.contains(&request.isolation) {
        return Err(Misfit::Isolation);
    }
    if !volumes.iter().all(|(_, p)| p.admits(node)) {
        return Err(Misfit::Volume);
    }
    if request.node.as_ref().is_some_and(|n| *n != node.name) {
        return Err(Misfit::Snapshot);
    }
    if request.secrets && node.sealing_key.is_none() {
        return Err(Misfit::SealingKey);
    }
    let after = node.allocated.add(request.resources);
    let cap = node.capacity;
    let dims = [
        (after.memory_mib, cap.memory_mib, Misfit::Memory),
        (after.cpus, cap.cpus, Misfit::Cpus),
        (after.sandboxes, cap.sandboxes, Misfit::Sandboxes),
    ];
    let mut score = 0;
    for (used, total, misfit) in dims {
        if used > total {
            return Err(misfit);
        }
        // total is 0 only when used is 0 too, which costs nothing.
        let ppm = used
            .saturating_mul(1_000_000)
            .checked_div(total)
            .unwrap_or(0);
        score = score.max(ppm);
    }
    Ok(score)
}

/// Pick the node of a Volume that has none: its pinned node, else among the live nodes its
/// selector admits the one holding the fewest volumes (`volumes_per_node`), ties to the smallest
/// name. Capacity is not considered: the quota is enforced on the node's disk.
pub fn place_volume(
    placement: &VolumePlacement,
    nodes: &[NodeInfo],
    volumes_per_node: &BTreeMap<String, usize>,
    now: Timestamp,
) -> Result<String, Unschedulable> {
    if let Some(node) = &placement.node {
        return Ok(node.clone());
    }
    nodes
        .iter()
        .filter(|n| n.is_alive(now) && placement.admits(n))
        .min_by_key(|n| (volumes_per_node.get(&n.name).copied().unwrap_or(0), &n.name))
        .map(|n| n.name.clone())
        .ok_or_else(|| {
            let alive = nodes.iter().filter(|n| n.is_alive(now)).count();
            let selector = placement
                .node_selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            Unschedulable::new(
                Reason::Unschedulable,
                format!(
                    "0/{} nodes are available: {} alive, none with labels {{{selector}}}",
                    nodes.len(),
                    alive
                ),
            )
        })
}

/// Whether a sandbox in this phase still holds resources on its node.
pub fn holds_resources(phase: Option<SandboxPhase>) -> bool {
    !matches!(phase, Some(SandboxPhase::Stopped | SandboxPhase::Failed))
}

/// Add to each node the requests of the sandboxes bound to it (`(node, request)` pairs).
pub fn allocate<'a>(nodes: &mut [NodeInfo], bound: impl IntoIterator<Item = (&'a str, Resources)>) {
    let mut by_node: BTreeMap<&str, Resources> = BTreeMap::new();
    for (node, r) in bound {
        let e = by_node.entry(node).or_default();
        *e = e.add(r);
    }
    for n in nodes {
        n.allocated = by_node.get(n.name.as_str()).copied().unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    use microsandbox_crds::volume::{Placement, ReclaimPolicy, VolumeSpec, VolumeStatus};

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    fn node(name: &str, mem: u64, cpus: u64, max: u64) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            capacity: Resources {
                memory_mib: mem,
                cpus,
                sandboxes: max,
            },
            allocated: Resources::default(),
            isolation: [Isolation::Microvm, Isolation::Container].into(),
            renew_time: Some(now() - SignedDuration::from_secs(5)),
            lease_duration: SignedDuration::from_secs(40),
            endpoint: Some(format!("https://{name}:7443")),
            proxy: None,
            labels: BTreeMap::new(),
            sealing_key: Some(format!("key-of-{name}")),
        }
    }

    fn req(mem: u64, cpus: u64) -> Request {
        Request {
            resources: Resources {
                memory_mib: mem,
                cpus,
                sandboxes: 1,
            },
            isolation: Isolation::Microvm,
            volumes: vec![],
            secrets: false,
            node: None,
        }
    }

    fn no_volumes() -> BTreeMap<String, VolumePlacement> {
        BTreeMap::new()
    }

    /// Schedule and, on success, account the request on the chosen node (as the controller does).
    fn place(r: &Request, nodes: &mut [NodeInfo]) -> Result<String, Unschedulable> {
        let chosen = schedule(r, nodes, &no_volumes(), now())?;
        let n = nodes.iter_mut().find(|n| n.name == chosen).unwrap();
        n.allocated = n.allocated.add(r.resources);
        Ok(chosen)
    }

    #[test]
    fn two_nodes_of_one_slot_three_sandboxes_one_pending_with_reason() {
        let mut nodes = vec![node("a", 4096, 4, 1), node("b", 4096, 4, 1)];
        let r = req(512, 1);
        let first = place(&r, &mut nodes).unwrap();
        let second = place(&r, &mut nodes).unwrap();
        assert_ne!(first, second);
        let err = place(&r, &mut nodes).unwrap_err();
        assert_eq!(err.reason, Reason::Unschedulable);
        assert_eq!(err.message, "0/2 nodes are available: 2 too many sandboxes");
    }

    #[test]
    fn memory_and_cpus_must_fit() {
        let nodes = vec![node("small", 256, 8, 10), node("few-cpus", 8192, 1, 10)];
        let err = schedule(&req(512, 2), &nodes, &no_volumes(), now()).unwrap_err();
        assert_eq!(
            err.message,
            "0/2 nodes are available: 1 insufficient memory, 1 insufficient cpus"
        );
        // Exactly full is a fit (and "few-cpus" has 1 cpu only).
        assert_eq!(
            schedule(&req(256, 2), &nodes, &no_volumes(), now()).unwrap(),
            "small"
        );
    }

    #[test]
    fn allocation_counts_against_capacity() {
        let mut nodes = vec![node("a", 1024, 4, 10)];
        allocate(
            &mut nodes,
            [
                ("a", req(512, 1).resources),
                ("a", req(256, 1).resources),
                ("gone", req(512, 1).resources),
            ],
        );
        assert_eq!(nodes[0].allocated.memory_mib, 768);
        assert_eq!(nodes[0].allocated.sandboxes, 2);
        assert!(schedule(&req(512, 1), &nodes, &no_volumes(), now()).is_err());
        assert!(schedule(&req(256, 1), &nodes, &no_volumes(), now()).is_ok());
    }

    #[test]
    fn prefers_least_loaded_with_name_as_tie_break() {
        let mut nodes = vec![node("b", 4096, 4, 10), node("a", 4096, 4, 10)];
        // Equal load: smallest name.
        assert_eq!(
            schedule(&req(512, 1), &nodes, &no_volumes(), now()).unwrap(),
            "a"
        );
        allocate(&mut nodes, [("a", req(1024, 1).resources)]);
        assert_eq!(
            schedule(&req(512, 1), &nodes, &no_volumes(), now()).unwrap(),
            "b"
        );
        // Order of the input does not matter.
        nodes.reverse();
        assert_eq!(
            schedule(&req(512, 1), &nodes, &no_volumes(), now()).unwrap(),
            "b"
        );
    }

    #[test]
    fn load_is_relative_to_capacity() {
        // 512 MiB is 50% of "small" but 6% of "big".
        let nodes = vec![node("big", 8192, 4, 10), node("small", 1024, 4, 10)];
        assert_eq!(
            schedule(&req(512, 1), &nodes, &no_volumes(), now()).unwrap(),
            "big"
        );
    }

    #[test]
    fn spreads_sandboxes_evenly() {
        let mut nodes = vec![node("a", 4096, 8, 10), node("b", 4096, 8, 10)];
        let r = req(512, 1);
        let placed: Vec<_> = (0..4).map(|_| place(&r, &mut nodes).unwrap()).collect();
        assert_eq!(placed, ["a", "b", "a", "b"]);
    }

    #[test]
    fn isolation_is_never_downgraded() {
        let mut container_only = node("c", 8192, 8, 10);
        container_only.isolation = [Isolation::Container].into();
        let mut microvm_only = node("m", 1024, 1, 1);
        microvm_only.isolation = [Isolation::Microvm].into();
        let nodes = vec![container_only, microvm_only];
        let err = schedule(&req(2048, 1), &nodes, &no_volumes(), now()).unwrap_err();
        assert_eq!(
            err.message,
            "0/2 nodes are available: 1 no microvm isolation, 1 insufficient memory"
        );
        let mut r = req(2048, 1);
        r.isolation = Isolation::Container;
        assert_eq!(schedule(&r, &nodes, &no_volumes(), now()).unwrap(), "c");
    }

    #[test]
    fn secrets_need_a_sealing_key() {
        let mut old = node("a", 8192, 8, 10);
        old.sealing_key = None;
        let nodes = vec![old, node("b", 1024, 1, 1)];
        let mut r = req(2048, 1);
        r.secrets = true;
        let err = schedule(&r, &nodes, &no_volumes(), now()).unwrap_err();
        assert_eq!(
            err.message,
            "0/2 nodes are available: 1 no sealing key for secrets (node-agent too old), 1 insufficient memory"
        );
        r.resources.memory_mib = 512;
        assert_eq!(schedule(&r, &nodes, &no_volumes(), now()).unwrap(), "b");
        r.secrets = false;
        assert_eq!(schedule(&r, &nodes, &no_volumes(), now()).unwrap(), "a");
    }

    #[test]
    fn dead_nodes_are_skipped() {
        let mut dead = node("a", 8192, 8, 10);
        dead.renew_time = Some(now() - SignedDuration::from_secs(41));
        let mut never = node("b", 8192, 8, 10);
        never.renew_time = None;
        let alive = node("c", 1024, 1, 1);
        assert!(!dead.is_alive(now()));
        assert!(!never.is_alive(now()));
        assert!(alive.is_alive(now()));
        let nodes = vec![dead, never, alive];
        assert_eq!(
            schedule(&req(512, 1), &nodes, &no_volumes(), now()).unwrap(),
            "c"
        );
        let err = schedule(&req(2048, 1), &nodes, &no_volumes(), now()).unwrap_err();
        assert_eq!(
            err.message,
            "0/3 nodes are available: 2 node-agent not alive (lease expired), 1 insufficient memory"
        );
    }

    #[test]
    fn lease_is_alive_up_to_its_duration() {
        let mut n = node("a", 1, 1, 1);
        n.renew_time = Some(now() - SignedDuration::from_secs(40));
        assert!(n.is_alive(now()));
        assert_eq!(n.expires_at(), Some(now()));
        assert!(!n.is_alive(now() + SignedDuration::from_millis(1)));
    }

    #[test]
    fn no_nodes_at_all() {
        let err = schedule(&req(512, 1), &[], &no_volumes(), now()).unwrap_err();
        assert_eq!(err.reason, Reason::Unschedulable);
        assert_eq!(err.message, "0/0 nodes are available");
    }

    fn volume(node: Option<&str>, status_node: Option<&str>) -> VolumePlacement {
        let v = Volume {
            metadata: ObjectMeta::default(),
            spec: VolumeSpec {
                size: "1Gi".into(),
                placement: node.map(|n| Placement {
                    node: Some(n.into()),
                    node_selector: None,
                }),
                reclaim_policy: ReclaimPolicy::Delete,
            },
            status: status_node.map(|n| VolumeStatus {
                node: Some(n.into()),
                ..Default::default()
            }),
        };
        VolumePlacement::of(&v)
    }

    #[test]
    fn a_volume_pins_the_node() {
        let nodes = vec![node("a", 8192, 8, 10), node("b", 8192, 8, 10)];
        let volumes = BTreeMap::from([
            ("data".to_string(), volume(Some("b"), None)),
            ("bound".to_string(), volume(None, Some("b"))),
        ]);
        let mut r = req(512, 1);
        r.volumes = vec!["data".into(), "bound".into()];
        assert_eq!(schedule(&r, &nodes, &volumes, now()).unwrap(), "b");

        // The pinned node is full: pending, not moved elsewhere.
        let mut full = nodes.clone();
        allocate(&mut full, [("b", req(8192, 1).resources)]);
        let err = schedule(&r, &full, &volumes, now()).unwrap_err();
        assert_eq!(
            err.message,
            "0/2 nodes are available: 1 not where the sandbox's volumes are, 1 insufficient memory"
        );
    }

    #[test]
    fn a_snapshot_pins_the_node() {
        let nodes = vec![node("a", 4096, 4, 10), node("b", 4096, 4, 10)];
        let mut r = req(512, 1);
        r.node = Some("b".into());
        assert_eq!(schedule(&r, &nodes, &no_volumes(), now()).unwrap(), "b");
        r.node = Some("gone".into());
        let e = schedule(&r, &nodes, &no_volumes(), now()).unwrap_err();
        assert_eq!(e.reason, Reason::Unschedulable);
        assert!(
            e.message.contains("2 not where the sandbox's snapshot is"),
            "{e}"
        );
    }

    #[test]
    fn status_node_of_a_volume_wins_over_its_placement() {
        assert_eq!(volume(Some("a"), Some("b")).node.as_deref(), Some("b"));
    }

    #[test]
    fn volumes_on_different_nodes_conflict() {
        let nodes = vec![node("a", 8192, 8, 10), node("b", 8192, 8, 10)];
        let volumes = BTreeMap::from([
            ("x".to_string(), volume(Some("a"), None)),
            ("y".to_string(), volume(None, Some("b"))),
        ]);
        let mut r = req(512, 1);
        r.volumes = vec!["x".into(), "y".into()];
        let err = schedule(&r, &nodes, &volumes, now()).unwrap_err();
        assert_eq!(err.reason, Reason::VolumeNodeConflict);
        assert_eq!(
            err.message,
            "the sandbox's volumes are on different nodes: \"x\" on a, \"y\" on b"
        );
    }

    #[test]
    fn missing_volume() {
        let nodes = vec![node("a", 8192, 8, 10)];
        let mut r = req(512, 1);
        r.volumes = vec!["nope".into()];
        let err = schedule(&r, &nodes, &no_volumes(), now()).unwrap_err();
        assert_eq!(err.reason, Reason::VolumeNotFound);
    }

    #[test]
    fn lease_changes_ignore_plain_renewals() {
        let mut c = LeaseChanges::default();
        let mut n = node("a", 4096, 4, 10);
        assert!(c.observe(&n), "a new node matters");
        n.renew_time = Some(now());
        assert!(!c.observe(&n), "a renewal within the lease does not");
        n.renew_time = Some(now() + SignedDuration::from_secs(60));
        assert!(c.observe(&n), "a renewal after the lease lapsed does");
        n.capacity.sandboxes = 11;
        assert!(c.observe(&n), "new capacity does");
    }

    #[test]
    fn a_volume_without_node_holds_the_sandbox() {
        let nodes = vec![node("a", 8192, 8, 10)];
        let volumes = BTreeMap::from([("v".to_string(), VolumePlacement::default())]);
        let mut r = req(512, 1);
        r.volumes = vec!["v".into()];
        let err = schedule(&r, &nodes, &volumes, now()).unwrap_err();
        assert_eq!(err.reason, Reason::VolumeNotPlaced);
    }

    #[test]
    fn volume_placement_follows_selector_then_spreads() {
        let mut a = node("a", 8192, 8, 10);
        a.labels.insert("zone".into(), "eu-1a".into());
        let mut c = node("c", 8192, 8, 10);
        c.labels.insert("zone".into(), "eu-1a".into());
        let b = node("b", 8192, 8, 10);
        let nodes = vec![b, c, a];
        let zone = VolumePlacement {
            node: None,
            node_selector: BTreeMap::from([("zone".into(), "eu-1a".into())]),
        };
        let none = BTreeMap::new();
        // "b" holds nothing but is not in the zone; a and c tie: smallest name.
        assert_eq!(place_volume(&zone, &nodes, &none, now()).unwrap(), "a");
        let a_has_one = BTreeMap::from([("a".to_string(), 1)]);
        assert_eq!(place_volume(&zone, &nodes, &a_has_one, now()).unwrap(), "c");
        // No selector: the emptiest of all.
        let any = VolumePlacement::default();
        let busy = BTreeMap::from([("a".to_string(), 1), ("c".to_string(), 2)]);
        assert_eq!(place_volume(&any, &nodes, &busy, now()).unwrap(), "b");
        // Pinned wins, alive or not.
        let pinned = VolumePlacement {
            node: Some("z".into()),
            node_selector: BTreeMap::new(),
        };
        assert_eq!(place_volume(&pinned, &nodes, &none, now()).unwrap(), "z");
        // Nothing matches.
        let mars = VolumePlacement {
            node: None,
            node_selector: BTreeMap::from([("zone".into(), "mars".into())]),
        };
        let err = place_volume(&mars, &nodes, &none, now()).unwrap_err();
        assert_eq!(
            err.message,
            "0/3 nodes are available: 3 alive, none with labels {zone=mars}"
        );
    }

    fn lease(name: &str, ann: &[(&str, &str)]) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(
                    ann.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                labels: Some(BTreeMap::from([("zone".into(), "z1".into())])),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(now())),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
        }
    }

    const FULL: &[(&str, &str)] = &[
        (annotations::MEMORY_MIB, "16384"),
        (annotations::CPUS, "8"),
        (annotations::MAX_SANDBOXES, "32"),
        (annotations::ISOLATION, "microvm, container"),
        (annotations::ENDPOINT, "https://10.0.0.5:7443"),
        (
            annotations::PROXY,
            "/api/v1/namespaces/ms/pods/agent-x:7070/proxy",
        ),
        (annotations::SEALING_KEY, " a2V5 "),
    ];

    #[test]
    fn parses_a_node_lease() {
        let n = parse_node_lease(&lease("microsandbox-node-worker-1", FULL)).unwrap();
        assert_eq!(n.name, "worker-1");
        assert_eq!(
            n.capacity,
            Resources {
                memory_mib: 16384,
                cpus: 8,
                sandboxes: 32
            }
        );
        assert_eq!(
            n.isolation,
            [Isolation::Microvm, Isolation::Container].into()
        );
        assert_eq!(n.endpoint.as_deref(), Some("https://10.0.0.5:7443"));
        assert_eq!(
            n.proxy.as_deref(),
            Some("/api/v1/namespaces/ms/pods/agent-x:7070/proxy")
        );
        assert_eq!(n.lease_duration, SignedDuration::from_secs(15));
        assert_eq!(n.renew_time, Some(now()));
        assert_eq!(n.labels.get("zone").map(String::as_str), Some("z1"));
        assert_eq!(n.allocated, Resources::default());
        assert_eq!(n.sealing_key.as_deref(), Some("a2V5"));
    }

    #[test]
    fn lease_without_spec_is_dead_with_default_duration() {
        let mut l = lease("microsandbox-node-a", FULL);
        l.spec = None;
        let n = parse_node_lease(&l).unwrap();
        assert_eq!(
            n.lease_duration,
            SignedDuration::from_secs(DEFAULT_LEASE_DURATION_SECS)
        );
        assert!(!n.is_alive(now()));
    }

    #[test]
    fn rejects_bad_leases() {
        assert_eq!(
            parse_node_lease(&lease("other-lease", FULL)),
            Err(LeaseParseError::NotANodeLease("other-lease".into()))
        );
        assert!(matches!(
            parse_node_lease(&lease("microsandbox-node-", FULL)),
            Err(LeaseParseError::NotANodeLease(_))
        ));
        let missing: Vec<_> = FULL
            .iter()
            .copied()
            .filter(|(k, _)| *k != annotations::CPUS)
            .collect();
        assert_eq!(
            parse_node_lease(&lease("microsandbox-node-a", &missing)),
            Err(LeaseParseError::Missing {
                lease: "microsandbox-node-a".into(),
                annotation: annotations::CPUS
            })
        );
        let mut bad = FULL.to_vec();
        bad[0] = (annotations::MEMORY_MIB, "16Gi");
        assert!(matches!(
            parse_node_lease(&lease("microsandbox-node-a", &bad)),
            Err(LeaseParseError::Invalid { annotation, .. }) if annotation == annotations::MEMORY_MIB
        ));
        let mut bad = FULL.to_vec();
        bad[3] = (annotations::ISOLATION, "microvm,gvisor");
        assert!(matches!(
            parse_node_lease(&lease("microsandbox-node-a", &bad)),
            Err(LeaseParseError::Invalid { annotation, .. }) if annotation == annotations::ISOLATION
        ));
    }

    #[test]
    fn endpoint_is_optional() {
        let no_endpoint: Vec<_> = FULL
            .iter()
            .copied()
            .filter(|(k, _)| *k != annotations::ENDPOINT && *k != annotations::PROXY)
            .collect();
        let n = parse_node_lease(&lease("microsandbox-node-a", &no_endpoint)).unwrap();
        assert_eq!(n.endpoint, None);
        assert_eq!(n.proxy, None);
        // Only an API path is taken for a proxy: never a URL to some other host.
        let mut elsewhere = no_endpoint.clone();
        elsewhere.push((annotations::PROXY, "https://evil.example/steal"));
        let n = parse_node_lease(&lease("microsandbox-node-a", &elsewhere)).unwrap();
        assert_eq!(n.proxy, None);
    }

    #[test]
    fn stopped_and_failed_sandboxes_free_their_node() {
        assert!(holds_resources(None));
        assert!(holds_resources(Some(SandboxPhase::Running)));
        assert!(holds_resources(Some(SandboxPhase::Stopping)));
        assert!(!holds_resources(Some(SandboxPhase::Stopped)));
        assert!(!holds_resources(Some(SandboxPhase::Failed)));
    }

    #[test]
    fn request_of_a_sandbox() {
        let s: Sandbox = serde_json::from_value(serde_json::json!({
            "apiVersion": "microsandbox.dev/v1alpha1", "kind": "Sandbox",
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {
                "image": "python:3.12", "isolation": "container",
                "resources": {"memory": "1Gi", "cpus": 2},
                "volumes": [
                    {"path": "/data", "named": {"name": "data"}},
                    {"path": "/tmp", "tmpfs": {}}
                ]
            }
        }))
        .unwrap();
        let r = Request::of(&s);
        assert_eq!(
            r.resources,
            Resources {
                memory_mib: 1024,
                cpus: 2,
                sandboxes: 1
            }
        );
        assert_eq!(r.isolation, Isolation::Container);
        assert_eq!(r.volumes, ["data"]);
    }
}
