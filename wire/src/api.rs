//! JSON bodies of the node-agent API (`/v1/...`). See `node-agent/openapi.yaml`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Isolation a sandbox requires. The agent refuses (never downgrades) what it cannot provide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Hardware-isolated microVM (libkrun). The default.
    #[default]
    Microvm,
    /// Linux namespaces + cgroups + seccomp (crun). Weaker: shares the host kernel.
    Container,
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::Microvm => "microvm",
            Isolation::Container => "container",
        })
    }
}

/// When to contact the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

/// `POST /v1/sandboxes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    pub name: String,
    pub image: String,
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// Required isolation; `None` means the node's strongest.
    #[serde(default)]
    pub isolation: Option<Isolation>,
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// Detached sandboxes survive their creator; attached ones are removed when the creator's lease
    /// connection (`GET /v1/sandboxes/{name}/lease`) closes, or if none is opened within the grace time.
    #[serde(default)]
    pub detached: bool,
    /// Maximum number of processes (pids cgroup).
    #[serde(default)]
    pub pids_limit: Option<u32>,
    /// Free-form labels kept with the sandbox and returned by get/list, e.g. the Kubernetes object
    /// a cluster-mode sandbox belongs to. At most [`MAX_LABELS`], keys and values bounded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Changes to the root filesystem, applied in order before the sandbox boots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<RootPatch>,
    /// Filesystems mounted into the sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountSpec>,
    /// Most data the sandbox may write to its root filesystem, in MiB (ENOSPC beyond). Unset:
    /// bounded only by the node's disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mib: Option<u64>,
    /// What the sandbox may reach over the network (default: nothing).
    #[serde(default, skip_serializing_if = "NetworkSpec::is_none")]
    pub network: NetworkSpec,
    /// Credentials the sandbox uses without ever holding them: its environment gets a
    /// placeholder, which the agent's egress proxy replaces by the value only in HTTPS requests
    /// to the secret's `allow_hosts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretSpec>,
    /// Suspend the sandbox (freeze it, as [`SandboxState::Suspended`]) after this many seconds
    /// without an exec or file operation; the next one resumes it transparently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// Take a pre-started sandbox of this warm pool (`PUT /v1/pools/{name}`) when the request
    /// matches its template (everything but name, env, workdir, labels and detached); otherwise
    /// the create is a cold one. The label `microsandbox.dev/launch` says which (`warm`/`cold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// `PUT /v1/pools/{name}`: keep `size` sandboxes of `template` started, ready to be claimed by
/// creates that name the pool. The template's `name` is ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub size: u32,
    pub template: CreateSandbox,
}

/// A warm pool of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolInfo {
    pub name: String,
    /// Sandboxes the pool keeps ready.
    pub size: u32,
    /// Started and unclaimed now.
    pub ready: u32,
    /// Claims served from the pool so far.
    pub claimed: u64,
    pub image: String,
}

/// A secret exposed to the sandbox as environment variable `env` (a placeholder only).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    pub env: String,
    pub value: String,
    /// Hosts (exact names, or `*.example.com`) that may receive the value.
    pub allow_hosts: Vec<String>,
}

impl std::fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSpec")
            .field("env", &self.env)
            .field("value", &"<redacted>")
            .field("allow_hosts", &self.allow_hosts)
            .finish()
    }
}

/// Checks secrets: valid, distinct variable names; a value; at least one allowed host.
pub fn validate_secrets(secrets: &[SecretSpec]) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, s) in secrets.iter().enumerate() {
        let name_ok = !s.env.is_empty()
            && s.env.len() <= 128
            && s.env
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !s.env.as_bytes()[0].is_ascii_digit();
        if !name_ok {
            return Err(format!(
                "secrets[{i}]: {:?} is not an environment variable name",
                s.env
            ));
        }
        if !seen.insert(&s.env) {
            return Err(format!("secrets[{i}]: {} is given twice", s.env));
        }
        if s.value.is_empty() || s.value.len() > 16 * 1024 {
            return Err(format!(
                "secrets[{i}] {}: the value must be 1..16384 bytes",
                s.env
            ));
        }
        if s.value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!(
                "secrets[{i}] {}: the value cannot hold CR, LF or NUL (it goes into HTTP headers)",
                s.env
            ));
        }
        if s.allow_hosts.is_empty() {
            return Err(format!(
                "secrets[{i}] {}: allow_hosts is empty, so the value could never be used",
                s.env
            ));
        }
    }
    Ok(())
}

/// A use of a secret's placeholder that the egress proxy blocked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretViolation {
    /// The secret's environment variable.
    pub secret: String,
    /// Where it was sent (TLS server name or HTTP Host, else the address).
    pub host: String,
    /// Why it was blocked.
    pub reason: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// Egress policy of a sandbox, enforced on the host side of its network (nftables in the
/// sandbox's uplink network namespace; DNS through the agent's resolver).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkPolicy {
    /// No network interface at all (only `allow` entries, if any, are reachable).
    #[default]
    None,
    /// Public internet only: no loopback, private, link-local (metadata), CGNAT, multicast,
    /// reserved or host addresses, nor the node's extra blocked ranges (cluster CIDRs); DNS
    /// answers pointing there are refused.
    PublicOnly,
    /// Every address except the node itself.
    AllowAll,
}

/// A sandbox's network: the policy, destinations allowed on top of it, published ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    #[serde(default)]
    pub policy: NetworkPolicy,
    /// Always reachable, whatever the policy: CIDRs or addresses (`10.1.0.0/16`, `192.0.2.7`)
    /// and domain names (`api.example.com`, `*.example.com`; their resolved addresses are
    /// allowed for the answer's TTL). With policy `none` and domains here, DNS answers only
    /// for these names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Ports of the sandbox published on the host's 127.0.0.1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PublishPort>,
}

impl NetworkSpec {
    /// No network at all: no interface is created.
    pub fn is_none(&self) -> bool {
        self.policy == NetworkPolicy::None && self.allow.is_empty() && self.publish.is_empty()
    }
}

/// `127.0.0.1:<host_port>` on the host forwards TCP to `<guest_port>` in the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishPort {
    pub host_port: u16,
    pub guest_port: u16,
}

/// A filesystem mounted at `path` in the sandbox (`{"kind": "named", ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MountSpec {
    /// A host directory or file; it must lie under one of the agent's `--host-root`s.
    Bind {
        host_path: String,
        path: String,
        #[serde(default)]
        readonly: bool,
    },
    /// A named volume of this agent (`POST /v1/volumes`): persistent, with a quota.
    Named {
        name: String,
        path: String,
        #[serde(default)]
        readonly: bool,
    },
    /// Memory-backed scratch space of at most `size_mib`.
    Tmpfs { path: String, size_mib: u32 },
}

impl MountSpec {
    /// Where it is mounted in the sandbox.
    pub fn path(&self) -> &str {
        match self {
            MountSpec::Bind { path, .. }
            | MountSpec::Named { path, .. }
            | MountSpec::Tmpfs { path, .. } => path,
        }
    }
}

/// `POST /v1/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    pub name: String,
    /// Most data the volume holds, in MiB; writes beyond fail with ENOSPC in the sandbox.
    pub quota_mib: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `PATCH /v1/volumes/{name}`: a new quota (grow only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeVolume {
    pub quota_mib: u64,
}

/// A named volume as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    pub quota_mib: u64,
    /// Bytes in use (file system blocks, as `df` counts them).
    pub used_bytes: u64,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One change to a sandbox's root filesystem (`{"op": "text", "path": ..., ...}`). Paths are
/// absolute paths inside the sandbox; they resolve inside its root even through symlinks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum RootPatch {
    /// Write a file (created or replaced).
    Text {
        path: String,
        /// Content, base64.
        content_b64: String,
        /// Permission bits (default 0o644).
        #[serde(default)]
        mode: Option<u32>,
    },
    /// Append to a file (created if missing).
    Append { path: String, content_b64: String },
    /// Create a directory and its parents.
    Mkdir {
        path: String,
        /// Permission bits of the last directory (default 0o755).
        #[serde(default)]
        mode: Option<u32>,
    },
    /// Create the symbolic link `path` -> `target`.
    Symlink { path: String, target: String },
    /// Remove a file or directory tree (no error if missing).
    Remove { path: String },
    /// Copy a host file or directory tree (under one of the agent's `--host-root`s) to `path`.
    Copy {
        src: String,
        path: String,
        /// Permission bits of a copied file (default: the source's).
        #[serde(default)]
        mode: Option<u32>,
    },
}

impl RootPatch {
    /// Short name of the operation.
    pub fn op(&self) -> &'static str {
        match self {
            RootPatch::Text { .. } => "text",
            RootPatch::Append { .. } => "append",
            RootPatch::Mkdir { .. } => "mkdir",
            RootPatch::Symlink { .. } => "symlink",
            RootPatch::Remove { .. } => "remove",
            RootPatch::Copy { .. } => "copy",
        }
    }

    /// The path in the sandbox it changes.
    pub fn path(&self) -> &str {
        match self {
            RootPatch::Text { path, .. }
            | RootPatch::Append { path, .. }
            | RootPatch::Mkdir { path, .. }
            | RootPatch::Symlink { path, .. }
            | RootPatch::Remove { path }
            | RootPatch::Copy { path, .. } => path,
        }
    }
}

/// Most labels a sandbox may carry.
pub const MAX_LABELS: usize = 32;

/// Header that carries `Bearer <token>` for the agent when a relay in between (the Kubernetes API
/// server's pod proxy) consumes `Authorization` as its own credentials.
pub const RELAYED_AUTHORIZATION: &str = "x-microsandbox-authorization";

/// Validate sandbox labels: at most [`MAX_LABELS`]; keys 1-253 printable ASCII characters without
/// spaces, values at most 1024 characters.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels, got {}", labels.len()));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > 253 || !k.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "label key {k:?} must be 1-253 printable ASCII characters without spaces"
            ));
        }
        // Characters, as JSON Schema's maxLength counts them.
        if v.chars().count() > 1024 {
            return Err(format!("label {k:?}: value longer than 1024 characters"));
        }
    }
    Ok(())
}

fn default_memory() -> u32 {
    512
}
fn default_cpus() -> u32 {
    1
}

/// Lifecycle state of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum SandboxState {
    Creating,
    Running,
    /// Frozen by request (`pause`): execs are refused until `resume`.
    Paused,
    /// Frozen after its idle timeout: the next exec or file operation resumes it.
    Suspended,
    Draining,
    Stopped,
    Failed,
}

/// Why a sandbox stopped or failed. On the wire (`SandboxInfo.reason`, a Sandbox's
/// `status.agent.reason`) it is the string of [`StopReason::as_str`]; a string this version does
/// not know (a newer agent's, or a failure message) stays readable as [`StopReason::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum StopReason {
    /// Stopped by request (graceful).
    Stopped,
    /// Killed by request (no grace period).
    Killed,
    /// Drained: new work refused, running execs waited for, then stopped.
    Drained,
    /// A Sandbox's `spec.lifetime.shutdownAfter` elapsed.
    LifetimeExpired,
    /// The kernel's OOM killer ended it (its memory limit was reached).
    OomKilled,
    /// Its init process exited (or was killed from outside the agent).
    InitExited,
    /// Any other reason, as text.
    Other(String),
}

impl StopReason {
    /// The known reasons, each with its wire string.
    const KNOWN: [(StopReason, &'static str); 6] = [
        (StopReason::Stopped, "stopped"),
        (StopReason::Killed, "killed"),
        (StopReason::Drained, "drained"),
        (StopReason::LifetimeExpired, "LifetimeExpired"),
        (StopReason::OomKilled, "oom-killed"),
        (StopReason::InitExited, "sandbox init exited"),
    ];

    pub fn as_str(&self) -> &str {
        match self {
            StopReason::Other(s) => s,
            known => StopReason::KNOWN
                .iter()
                .find(|(r, _)| r == known)
                .map(|(_, s)| *s)
                .unwrap_or_default(),
        }
    }
}

impl From<&str> for StopReason {
    fn from(s: &str) -> Self {
        StopReason::KNOWN
            .iter()
            .find(|(_, w)| *w == s)
            .map(|(r, _)| r.clone())
            .unwrap_or_else(|| StopReason::Other(s.to_string()))
    }
}

impl From<String> for StopReason {
    fn from(s: String) -> Self {
        match StopReason::from(s.as_str()) {
            StopReason::Other(_) => StopReason::Other(s),
            known => known,
        }
    }
}

impl From<StopReason> for String {
    fn from(r: StopReason) -> Self {
        match r {
            StopReason::Other(s) => s,
            known => known.as_str().to_string(),
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/sandboxes/{name}/snapshot`: save the sandbox's files (its writable layer) as
/// snapshot `name`, an image a create can name (`SnapshotInfo.image`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    pub name: String,
}

/// Body of `POST /v1/snapshots/{name}/push`: push snapshot `name` to a registry as image
/// `reference` (e.g. `registry.example.com/team/base:1`), so sandboxes on any node can start
/// from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSnapshot {
    pub reference: String,
}

/// What a push wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedSnapshot {
    /// The image as pushed (canonical form): what a create names to start from it.
    pub reference: String,
    /// Digest of the pushed manifest.
    pub digest: String,
}

/// A filesystem snapshot kept by the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    /// The image reference to create sandboxes from it with.
    pub image: String,
    /// Digest of its content (layers and config).
    pub digest: String,
    /// Layers, the snapshot's own last.
    pub layers: usize,
}

/// A sandbox as the agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub name: String,
    pub image: String,
    pub image_digest: String,
    pub isolation: Isolation,
    pub state: SandboxState,
    pub memory_mib: u32,
    pub cpus: u32,
    pub detached: bool,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Why the sandbox failed or stopped, if known (e.g. `oom-killed`).
    #[serde(default)]
    pub reason: Option<StopReason>,
    /// The labels given at create.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `POST /v1/sandboxes/{name}/stop`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopSandbox {
    /// Grace period before SIGKILL, in milliseconds (default 10 s).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// A resource limit for an exec (`{"resource": "nofile", "soft": 64, "hard": 64}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    pub resource: String,
    pub soft: u64,
    pub hard: u64,
}

/// Terminal size for tty execs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// `POST /v1/sandboxes/{name}/exec` and the first message of the exec WebSocket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// Collected mode: bytes (base64) written to stdin, then stdin is closed.
    /// Streaming mode: `true`-ish presence keeps stdin open for binary messages.
    #[serde(default)]
    pub stdin_b64: Option<String>,
    /// Streaming mode only: keep stdin open.
    #[serde(default)]
    pub stdin: bool,
    /// Streaming mode only: allocate a pseudo-terminal.
    #[serde(default)]
    pub tty: Option<TtySize>,
}

/// Response of a collected exec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout_b64: String,
    pub stderr_b64: String,
    /// Uses of secret placeholders the egress proxy blocked while the command ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_violations: Vec<SecretViolation>,
}

/// Control messages of the exec WebSocket (text frames). Data travels in binary frames:
/// server -> client: first byte 1 = stdout, 2 = stderr, rest = data; client -> server: stdin data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecControl {
    /// Server: the process started.
    Started { pid: u32 },
    /// Server: the process exited. Last message.
    Exited {
        exit_code: i32,
        signal: Option<i32>,
        timed_out: bool,
    },
    /// Server: the exec failed. Last message.
    Error { error: ApiError },
    /// Client: close stdin.
    StdinClose,
    /// Client: send a signal to the process group.
    Signal { signal: i32 },
    /// Client: resize the terminal.
    Resize { rows: u16, cols: u16 },
}

/// Stream tag of binary exec frames.
pub const STREAM_STDOUT: u8 = 1;
/// Stream tag of binary exec frames.
pub const STREAM_STDERR: u8 = 2;

/// Kind of a filesystem object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// Metadata of a path in a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileStat {
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
}

/// `POST /v1/sandboxes/{name}/fs/{op}` bodies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsPathOp {
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
}

/// `POST /v1/sandboxes/{name}/fs/rename` and `/fs/copy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsMove {
    pub from: String,
    pub to: String,
}

/// Resource usage of a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub name: String,
    pub cpu_usage_us: u64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub processes: u32,
}

/// `POST /v1/images/pull`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullImage {
    pub image: String,
    #[serde(default)]
    pub policy: PullPolicy,
}

/// Progress of an image pull (newline-delimited JSON from `POST /v1/images/pull`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    Resolved { reference: String },
    Manifest { digest: String, layers: usize },
    LayerCached { digest: String },
    LayerDownloaded { digest: String, bytes: u64 },
    LayerExtracted { digest: String },
    Done { digest: String },
    Error { error: ApiError },
}

/// `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub version: String,
    pub node: String,
    pub isolation: Vec<Isolation>,
    pub sandboxes: usize,
}

/// Machine-readable error codes. Each has one HTTP status. `ErrorCode::VARIANTS` lists them all
/// (the SDKs export it and test that each code has an exception class).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::VariantArray,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    /// Authenticated, but not allowed (cluster mode: RBAC said no).
    Forbidden,
    /// A root filesystem patch could not be applied (the message names it).
    PatchFailed,
    VolumeNotFound,
    VolumeAlreadyExists,
    /// The volume is mounted by a sandbox.
    VolumeInUse,
    SnapshotInUse,
    /// No warm pool of that name.
    PoolNotFound,
    InvalidRequest,
    InvalidName,
    SandboxNotFound,
    SandboxAlreadyExists,
    SandboxNotRunning,
    SandboxDraining,
    IsolationUnavailable,
    ImageNotFound,
    ImagePullFailed,
    RegistryUnreachable,
    ImageNotPresent,
    PathNotFound,
    /// The program of an exec does not exist in the sandbox.
    CommandNotFound,
    FsError,
    ExecFailed,
    /// A microVM's guest did not boot (the message says why: e.g. KVM cannot run its kernel).
    GuestBootFailed,
    /// The node's disk (the agent's state directory: images, sandbox roots, volumes) is full;
    /// nothing half-made is kept.
    NoSpace,
    RuntimeError,
    Internal,
}

impl ErrorCode {
    /// The code as it is written on the wire (`"sandbox_not_found"`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// HTTP status for this code.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            Unauthorized => 401,
            Forbidden => 403,
            InvalidRequest | InvalidName => 400,
            SandboxNotFound | ImageNotFound | PathNotFound | CommandNotFound | ImageNotPresent
            | VolumeNotFound | PoolNotFound => 404,
            SandboxAlreadyExists | SandboxNotRunning | SandboxDraining | VolumeAlreadyExists
            | VolumeInUse | SnapshotInUse => 409,
            IsolationUnavailable => 422,
            ImagePullFailed | RegistryUnreachable => 502,
            FsError | ExecFailed | PatchFailed => 422,
            GuestBootFailed | RuntimeError | Internal => 500,
            NoSpace => 507,
        }
    }
}

/// Error body: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            serde_json::to_value(self.code)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// Validate a sandbox or volume name: DNS-1123 label (lowercase alphanumerics and '-', 1-63 chars,
/// starting and ending alphanumeric), so the same name works as a Kubernetes object name.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("name {name:?} must be 1-63 characters long"));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if !name.chars().all(ok_char) {
        return Err(format!(
            "name {name:?} may contain only lowercase letters, digits and '-'"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "name {name:?} must start and end with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_keep_their_wire_strings() {
        for (reason, wire) in StopReason::KNOWN {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("{wire:?}"));
            assert_eq!(serde_json::from_str::<StopReason>(&json).unwrap(), reason);
        }
        let other: StopReason = serde_json::from_str(r#""image pull failed""#).unwrap();
        assert_eq!(other, StopReason::Other("image pull failed".into()));
        assert_eq!(
            serde_json::to_string(&other).unwrap(),
            r#""image pull failed""#
        );
    }

    #[test]
    fn names() {
        assert!(validate_name("my-sandbox-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64), "../x"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn labels() {
        let ok: BTreeMap<String, String> = [("microsandbox.dev/uid".into(), "1-2".into())].into();
        assert!(validate_labels(&ok).is_ok());
        let too_many: BTreeMap<String, String> =
            (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate_labels(&too_many).is_err());
        for bad in ["", "a b", &"k".repeat(254)] {
            let l: BTreeMap<String, String> = [(bad.to_string(), "v".into())].into();
            assert!(validate_labels(&l).is_err(), "{bad:?} accepted");
        }
        let long: BTreeMap<String, String> = [("k".into(), "v".repeat(1025))].into();
        assert!(validate_labels(&long).is_err());
    }

    #[test]
    fn create_defaults_and_unknown_fields() {
        let c: CreateSandbox = serde_json::from_str(r#"{"name":"a","image":"python"}"#).unwrap();
        assert_eq!(c.memory_mib, 512);
        assert_eq!(c.cpus, 1);
        assert_eq!(c.pull_policy, PullPolicy::IfNotPresent);
        assert!(!c.detached);
        assert!(
            serde_json::from_str::<CreateSandbox>(r#"{"name":"a","image":"b","bogus":1}"#).is_err()
        );
    }

    #[test]
    fn error_codes_are_snake_case() {
        let e = ApiError {
            code: ErrorCode::SandboxNotFound,
            message: "x".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"code":"sandbox_not_found","message":"x"}"#
        );
        assert_eq!(e.code.http_status(), 404);
    }

    #[test]
    fn every_code_has_a_distinct_wire_name() {
        use strum::VariantArray;
        let names: std::collections::BTreeSet<&str> =
            ErrorCode::VARIANTS.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::VARIANTS.len());
        for c in ErrorCode::VARIANTS {
            // strum's name is serde's name.
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        assert!(names.contains("command_not_found"), "{names:?}");
    }

    #[test]
    fn exec_control_tagged() {
        let m: ExecControl = serde_json::from_str(r#"{"type":"signal","signal":15}"#).unwrap();
        assert_eq!(m, ExecControl::Signal { signal: 15 });
    }
}
