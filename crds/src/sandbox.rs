//! The `Sandbox` kind: an OCI image booted in a microVM (or a container, where allowed) on a node
//! that runs the microsandbox node-agent.

use crate::common::{
    abs_path_rule, check_object_name, check_path, env_name_rule, is_dns_subdomain, is_env_name,
    no_dotdot_rule, object_name_rule, Checker, Isolation, PullPolicy, ValidationErrors,
    DNS_SUBDOMAIN_RE, ENV_NAME_MSG,
};
use crate::mounts::VolumeMount;
use crate::network::{Network, NetworkPolicy};
use crate::patches::Patch;
use crate::units::{
    bytes_to_mib, check_duration, check_quantity, duration_rule, min_duration_rule,
    min_quantity_rule, parse_duration, parse_quantity, quantity_rule,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::Rule;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub(crate) const IMAGE_MSG: &str =
    "image must be an OCI image reference such as 'python:3.12' or 'registry.example.com/team/app@sha256:<digest>' (no scheme, no spaces)";
const IMAGE_RULE: &str =
    "self == '' || (self.matches('^[a-zA-Z0-9][a-zA-Z0-9._/:@-]*$') && !self.contains('://'))";
/// Images a node-agent keeps for itself (its snapshots): never named by an object, which could
/// otherwise start from another namespace's files.
pub const LOCAL_IMAGE_PREFIX: &str = "microsandbox.local/";
const LOCAL_IMAGE_RULE: &str = "!self.startsWith('microsandbox.local/')";
pub(crate) const LOCAL_IMAGE_MSG: &str =
    "images under microsandbox.local/ are a node's own snapshots: start from a SandboxSnapshot with snapshotRef";
pub(crate) const IMAGE_OR_SNAPSHOT_MSG: &str = "set exactly one of image and snapshotRef";
pub(crate) const CPUS_MSG: &str = "cpus must be between 1 and 64";
pub(crate) const PIDS_MSG: &str = "pids must be between 16 and 1048576";
pub(crate) const SECRET_NAME_MSG: &str =
    "secrets[].name must be the name of a Secret (microsandbox.dev) in this namespace";
pub(crate) const ENV_SECRET_CLASH_MSG: &str =
    "a variable is named both in env and in secrets; each variable must come from one place";
pub(crate) const NO_NETWORK_SECRETS_MSG: &str =
    "secrets need network access: with network.policy 'none' no host in a Secret's allowHosts is reachable";
const MEMORY_MIN: &str = "64Mi";
const DISK_MIN: &str = "16Mi";

/// The message of an immutable field.
pub(crate) fn immutable_msg(field: &str) -> String {
    format!("{field} cannot be changed after the sandbox is created; create a new Sandbox instead")
}

/// CEL: a field that always exists (it has a default) must not change.
fn immutable(field: &str) -> Rule {
    Rule::new("self == oldSelf").message(immutable_msg(field).as_str())
}

/// CEL (on the spec): an optional field must not appear, disappear or change.
fn immutable_optional(field: &str) -> Rule {
    Rule::new(format!(
        "has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})"
    ))
    .message(immutable_msg(field).as_str())
    .field_path(format!(".{field}"))
}

/// CEL (on the spec): an optional list must not change; absent and empty are the same (as in Rust,
/// where both deserialize to an empty Vec).
fn immutable_list(field: &str) -> Rule {
    Rule::new(format!(
        "(has(self.{field}) && size(self.{field}) > 0) == (has(oldSelf.{field}) && size(oldSelf.{field}) > 0) && (!has(self.{field}) || !has(oldSelf.{field}) || self.{field} == oldSelf.{field})"
    ))
    .message(immutable_msg(field).as_str())
    .field_path(format!(".{field}"))
}

/// Desired state of a Sandbox. Everything but `lifetime` is fixed at creation.
// kube's `printcolumn(...)` lists repeat `type_ = "string"`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "microsandbox.dev",
    version = "v1alpha1",
    kind = "Sandbox",
    plural = "sandboxes",
    namespaced,
    status = "SandboxStatus",
    shortname = "sbx",
    category = "microsandbox",
    derive = "PartialEq",
    cel,
    validation = object_name_rule("Sandbox"),
    doc = "A sandbox: an OCI image booted in a hardware-isolated microVM (or a container where allowed) on a node that runs the microsandbox node-agent.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Lifecycle phase"
    ),
    printcolumn(
        name = "Isolation",
        type_ = "string",
        json_path = ".spec.isolation",
        description = "microvm or container"
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.node",
        description = "Node the sandbox runs on"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.image",
        description = "OCI image"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.agentEndpoint",
        description = "Node-agent API serving this sandbox",
        priority = 1
    ),
    selectable = ".spec.isolation",
    selectable = ".status.node",
    selectable = ".status.phase"
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.image) && self.image != '') != has(self.snapshotRef)").message(IMAGE_OR_SNAPSHOT_MSG))]
#[x_kube(validation = immutable_optional("image"))]
#[x_kube(validation = immutable_optional("snapshotRef"))]
#[x_kube(validation = immutable_list("env"))]
#[x_kube(validation = immutable_optional("workdir"))]
#[x_kube(validation = immutable_list("volumes"))]
#[x_kube(validation = immutable_list("secrets"))]
#[x_kube(validation = immutable_list("patches"))]
#[x_kube(validation = Rule::new(
    "!has(self.secrets) || !has(self.env) || self.secrets.all(s, self.env.all(e, e.name != s.env))"
).message(ENV_SECRET_CLASH_MSG).field_path(".secrets"))]
#[x_kube(validation = Rule::new(
    "!has(self.secrets) || size(self.secrets) == 0 || !has(self.network) || self.network.policy != 'none'"
).message(NO_NETWORK_SECRETS_MSG).field_path(".secrets"))]
pub struct SandboxSpec {
    /// OCI image to boot, e.g. `python:3.12` or `registry.example.com/team/app@sha256:...`.
    /// Registry mirrors configured on the node-agent apply. Exactly one of `image` and
    /// `snapshotRef`. Immutable.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new(IMAGE_RULE).message(IMAGE_MSG))]
    #[x_kube(validation = Rule::new(LOCAL_IMAGE_RULE).message(LOCAL_IMAGE_MSG))]
    pub image: String,

    /// Start from a SandboxSnapshot (same namespace, Ready) instead of an image: its files as
    /// they were when it was taken. The Sandbox runs on the snapshot's node. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_ref: Option<crate::pool::ObjectRef>,

    /// When to contact the registry: `Always`, `IfNotPresent` (the default) or `Never`.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,

    /// Required isolation. `microvm` (the default): a hardware-isolated virtual machine with its
    /// own kernel. `container`: Linux namespaces, cgroups and seccomp on the node's kernel; weaker,
    /// and admitted only in namespaces labelled `microsandbox.dev/allow-container-isolation=true`.
    /// The operator never runs a sandbox with weaker isolation than asked. Immutable.
    #[serde(default)]
    #[x_kube(validation = immutable("isolation"))]
    pub isolation: Isolation,

    /// CPU, memory, process and disk limits. Immutable.
    #[serde(default)]
    #[x_kube(validation = immutable("resources"))]
    pub resources: Resources,

    /// Environment variables of every process in the sandbox. Immutable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,

    /// Working directory of commands that do not set their own, e.g. `/app`. Defaults to the
    /// image's. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = abs_path_rule("workdir"))]
    #[x_kube(validation = no_dotdot_rule("workdir"))]
    pub workdir: Option<String>,

    /// Filesystems mounted into the sandbox. A sandbox that mounts a named Volume runs on that
    /// Volume's node. Immutable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["path".into()]))]
    pub volumes: Vec<VolumeMount>,

    /// What the sandbox may reach over the network. Defaults to `{policy: public_only}`. Immutable.
    #[serde(default)]
    #[x_kube(validation = immutable("network"))]
    pub network: Network,

    /// Secrets (microsandbox.dev) exposed to the sandbox as placeholders. The real values stay on
    /// the node. Immutable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["env".into()]))]
    pub secrets: Vec<SecretRef>,

    /// Root filesystem changes applied in order before the sandbox boots. Immutable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub patches: Vec<Patch>,

    /// When the sandbox stops, is suspended for being idle, and when its object is deleted.
    /// May change at any time, as may `paused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<Lifetime>,

    /// Freeze every process of the sandbox (phase Paused: memory kept, no CPU, execs refused)
    /// while true; set it back to false to resume where it was.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// Limits of a sandbox.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Memory as a Kubernetes quantity: `512Mi` (the default), `2Gi`. At least 64Mi. A string with
    /// a unit: a bare number would mean bytes.
    #[serde(default = "default_memory")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = quantity_rule("memory"))]
    #[x_kube(validation = min_quantity_rule("memory", MEMORY_MIN))]
    pub memory: String,

    /// Virtual CPUs, 1 (the default) to 64.
    #[serde(default = "default_cpus")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 64").message(CPUS_MSG))]
    pub cpus: i32,

    /// Maximum number of processes and threads (16 to 1048576). Unset: the node-agent's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 16 && self <= 1048576").message(PIDS_MSG))]
    pub pids: Option<i32>,

    /// Size limit of the sandbox's writable root filesystem (changes to the image and new
    /// files), e.g. `10Gi`. At least 16Mi. Unset: limited by the node's disk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = quantity_rule("disk"))]
    #[x_kube(validation = min_quantity_rule("disk", DISK_MIN))]
    pub disk: Option<String>,
}

fn default_memory() -> String {
    "512Mi".into()
}

fn default_cpus() -> i32 {
    1
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            memory: default_memory(),
            cpus: default_cpus(),
            pids: None,
            disk: None,
        }
    }
}

/// An environment variable.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name, e.g. `PYTHONDONTWRITEBYTECODE`. Unique in the list.
    #[schemars(length(max = 128))]
    #[x_kube(validation = env_name_rule())]
    pub name: String,
    /// Value (may be empty).
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub value: String,
}

/// A Secret (microsandbox.dev) exposed to the sandbox.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of a Secret (microsandbox.dev, not a core Secret) in this namespace.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(format!("self.matches('{DNS_SUBDOMAIN_RE}')")).message(SECRET_NAME_MSG))]
    pub name: String,
    /// Environment variable that holds the secret's placeholder inside the sandbox, e.g.
    /// `OPENAI_API_KEY`. The node-agent's egress proxy replaces the placeholder with the real value
    /// only in requests to the Secret's allowHosts; the value itself never enters the sandbox.
    #[schemars(length(max = 128))]
    #[x_kube(validation = env_name_rule())]
    pub env: String,
}

/// Lifetime limits. Both may be changed at any time, e.g. to extend a running sandbox.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Lifetime {
    /// Stop the sandbox this long after it started running, e.g. `30m` or `2h`. The object stays
    /// (phase Stopped, condition Ready=False reason LifetimeExpired). Unset: runs until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = duration_rule("shutdownAfter"))]
    #[x_kube(validation = min_duration_rule("shutdownAfter"))]
    pub shutdown_after: Option<String>,
    /// Delete the Sandbox object this long after it stopped or failed (a TTL), e.g. `10m`.
    /// Unset: keep it until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = duration_rule("ttlAfterFinished"))]
    #[x_kube(validation = min_duration_rule("ttlAfterFinished"))]
    pub ttl_after_finished: Option<String>,
    /// Suspend the sandbox (freeze its processes: phase Suspended, memory kept, no CPU) after
    /// this long without an exec or file operation, e.g. `5m`; the next one resumes it
    /// transparently. Unset: never suspended for being idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = duration_rule("idleTimeout"))]
    #[x_kube(validation = min_duration_rule("idleTimeout"))]
    pub idle_timeout: Option<String>,
}

/// Observed state of a sandbox, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    /// `Pending` (waiting for a node), `Creating` (pulling the image and booting), `Running`,
    /// `Paused` (`spec.paused`), `Suspended` (idle; the next exec resumes it), `Stopping`,
    /// `Stopped` (shut down; see the Ready condition for why) or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SandboxPhase>,
    /// Node the sandbox was scheduled onto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Base URL of the node-agent API that serves this sandbox (exec, files, metrics), e.g.
    /// `https://10.0.3.7:7443`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_endpoint: Option<String>,
    /// Path on the Kubernetes API server that proxies to that node-agent (`pods/proxy` of its
    /// pod, e.g. `/api/v1/namespaces/microsandbox-system/pods/agent-x:7070/proxy`): how clients
    /// outside the cluster network reach it. Needs `get`/`create` on `pods/proxy` there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_proxy: Option<String>,
    /// Digest of the image that was booted (`sha256:...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// When the sandbox started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Scheduled`: a node was chosen (reasons on False: Unschedulable, IsolationNotAllowed,
    /// VolumeNodeConflict, InvalidSpec). `Ready`: the sandbox runs and its agent answers (reasons on
    /// False include ImagePullFailed, LifetimeExpired, Failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// What the node-agent running the sandbox reports. Written by the node-agent only; the
    /// operator derives `phase` and `Ready` from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentReport>,
    /// The values of `spec.secrets`, sealed by the operator to the public key of the bound node's
    /// agent (see its Lease) and bound to this object: only that node-agent can open them. The
    /// values are never in the clear anywhere but the operator's memory and that node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_secrets: Option<SealedSecrets>,
}

/// Secret values sealed to one node-agent (HPKE, RFC 9180: X25519, HKDF-SHA256,
/// ChaCha20-Poly1305).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SealedSecrets {
    /// The node-agent public key the values are sealed to (base64 X25519).
    #[schemars(length(max = 64))]
    pub recipient: String,
    /// The HPKE encapsulated key (base64).
    #[schemars(length(max = 64))]
    pub enc: String,
    /// The sealed values (base64).
    #[schemars(length(max = 262144))]
    pub ciphertext: String,
}

/// A node-agent's report on the sandbox it runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    /// Name of the sandbox in the node-agent's API (exec, files, metrics go to
    /// `<agentEndpoint>/v1/sandboxes/<sandbox>`).
    pub sandbox: String,
    /// `Creating`, `Running`, `Stopping`, `Stopped` or `Failed`.
    pub state: SandboxPhase,
    /// Digest of the booted image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// Why it stopped or failed, e.g. `oom-killed`, `LifetimeExpired` or an image pull error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The metadata.uid of the object the sandbox was created for.
    pub uid: String,
}

/// Lifecycle phase of a sandbox.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SandboxPhase {
    Pending,
    Creating,
    Running,
    // Frozen because `spec.paused` is true (plain comments: doc comments on variants would
    // turn the schema's enum into a oneOf).
    Paused,
    // Frozen after `lifetime.idleTimeout`; the next exec resumes it.
    Suspended,
    Stopping,
    Stopped,
    Failed,
}

impl From<microsandbox_wire::api::SandboxState> for SandboxPhase {
    fn from(s: microsandbox_wire::api::SandboxState) -> Self {
        use microsandbox_wire::api::SandboxState as S;
        match s {
            S::Creating => Self::Creating,
            S::Running => Self::Running,
            S::Paused => Self::Paused,
            S::Suspended => Self::Suspended,
            S::Draining => Self::Stopping,
            S::Stopped => Self::Stopped,
            S::Failed => Self::Failed,
        }
    }
}

fn check_image(c: &mut Checker, image: &str) {
    let mut chars = image.chars();
    let ok = matches!(chars.next(), Some(ch) if ch.is_ascii_alphanumeric())
        && chars.all(|ch| ch.is_ascii_alphanumeric() || "._/:@-".contains(ch))
        && !image.contains("://");
    c.check(ok, "spec.image", IMAGE_MSG);
}

impl SandboxSpec {
    /// Check the rules the apiserver's CEL checks on creation, with the same messages, so the
    /// operator and the SDK can report them without a round trip.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::default();
        c.check(
            self.image.is_empty() == self.snapshot_ref.is_some(),
            "spec",
            IMAGE_OR_SNAPSHOT_MSG,
        );
        if !self.image.is_empty() {
            check_image(&mut c, &self.image);
            c.check(
                !self.image.starts_with(LOCAL_IMAGE_PREFIX),
                "spec.image",
                LOCAL_IMAGE_MSG,
            );
        }
        if let Some(r) = &self.snapshot_ref {
            c.check(
                is_dns_subdomain(&r.name),
                "spec.snapshotRef.name",
                crate::pool::REF_NAME_MSG,
            );
        }
        self.resources.check(&mut c);
        for (i, e) in self.env.iter().enumerate() {
            c.check(
                is_env_name(&e.name),
                &format!("spec.env[{i}].name"),
                ENV_NAME_MSG,
            );
        }
        if let Some(w) = &self.workdir {
            check_path(&mut c, w, "spec.workdir", "workdir");
        }
        for (i, v) in self.volumes.iter().enumerate() {
            v.check(&mut c, &format!("spec.volumes[{i}]"));
        }
        check_unique(&mut c, self.volumes.iter().map(|v| &v.path), "spec.volumes");
        check_unique(&mut c, self.env.iter().map(|e| &e.name), "spec.env");
        check_unique(&mut c, self.secrets.iter().map(|s| &s.env), "spec.secrets");
        for (i, s) in self.secrets.iter().enumerate() {
            c.check(
                is_dns_subdomain(&s.name),
                &format!("spec.secrets[{i}].name"),
                SECRET_NAME_MSG,
            );
            c.check(
                is_env_name(&s.env),
                &format!("spec.secrets[{i}].env"),
                ENV_NAME_MSG,
            );
        }
        let env: BTreeSet<&str> = self.env.iter().map(|e| e.name.as_str()).collect();
        c.check(
            !self.secrets.iter().any(|s| env.contains(s.env.as_str())),
            "spec.secrets",
            ENV_SECRET_CLASH_MSG,
        );
        c.check(
            self.secrets.is_empty() || self.network.policy != NetworkPolicy::None,
            "spec.secrets",
            NO_NETWORK_SECRETS_MSG,
        );
        for (i, p) in self.patches.iter().enumerate() {
            p.check(&mut c, &format!("spec.patches[{i}]"));
        }
        if let Some(l) = &self.lifetime {
            l.check(&mut c);
        }
        c.finish()
    }

    /// [`Self::validate`] plus the transition rules the apiserver checks on update.
    pub fn validate_update(&self, old: &Self) -> Result<(), ValidationErrors> {
        let mut c = match self.validate() {
            Ok(()) => Checker::default(),
            Err(e) => Checker::from(e),
        };
        let unchanged = [
            ("image", self.image == old.image),
            ("snapshotRef", self.snapshot_ref == old.snapshot_ref),
            ("isolation", self.isolation == old.isolation),
            ("resources", self.resources == old.resources),
            ("env", self.env == old.env),
            ("workdir", self.workdir == old.workdir),
            ("volumes", self.volumes == old.volumes),
            ("network", self.network == old.network),
            ("secrets", self.secrets == old.secrets),
            ("patches", self.patches == old.patches),
        ];
        for (field, same) in unchanged {
            c.check(same, &format!("spec.{field}"), &immutable_msg(field));
        }
        c.finish()
    }

    /// Memory in MiB (rounded up), once [`Self::validate`] passed.
    pub fn memory_mib(&self) -> Option<u64> {
        parse_quantity(&self.resources.memory).map(bytes_to_mib)
    }

    /// The node-agent request that boots this sandbox under `name` (mounts are resolved by the
    /// node-agent, secrets are not part of that API yet).
    pub fn agent_request(&self, name: &str) -> microsandbox_wire::api::CreateSandbox {
        microsandbox_wire::api::CreateSandbox {
            name: name.into(),
            image: self.image.clone(),
            memory_mib: self
                .memory_mib()
                .map_or(512, |m| u32::try_from(m).unwrap_or(u32::MAX)),
            cpus: u32::try_from(self.resources.cpus).unwrap_or(1),
            env: self
                .env
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect::<BTreeMap<_, _>>(),
            workdir: self.workdir.clone(),
            isolation: Some(self.isolation.into()),
            pull_policy: self.image_pull_policy.into(),
            // The Sandbox object owns the sandbox; no client lease.
            detached: true,
            pids_limit: self.resources.pids.and_then(|p| u32::try_from(p).ok()),
            labels: BTreeMap::new(),
            patches: self.patches.iter().filter_map(Patch::to_agent).collect(),
            mounts: Vec::new(),
            disk_mib: self
                .resources
                .disk
                .as_deref()
                .and_then(parse_quantity)
                .map(bytes_to_mib),
            network: self.network.to_agent(),
            secrets: Vec::new(),
            idle_timeout_secs: self.lifetime.as_ref().and_then(Lifetime::idle_timeout_secs),
            pool: None,
        }
    }
}

fn check_unique<'a>(c: &mut Checker, keys: impl Iterator<Item = &'a String>, field: &str) {
    let mut seen = BTreeSet::new();
    for (i, k) in keys.enumerate() {
        c.check(
            seen.insert(k),
            &format!("{field}[{i}]"),
            &format!("Duplicate value: {k:?}"),
        );
    }
}

impl Resources {
    fn check(&self, c: &mut Checker) {
        check_quantity(
            c,
            &self.memory,
            "spec.resources.memory",
            "memory",
            MEMORY_MIN,
        );
        c.check(
            (1..=64).contains(&self.cpus),
            "spec.resources.cpus",
            CPUS_MSG,
        );
        if let Some(p) = self.pids {
            c.check(
                (16..=1_048_576).contains(&p),
                "spec.resources.pids",
                PIDS_MSG,
            );
        }
        if let Some(d) = &self.disk {
            check_quantity(c, d, "spec.resources.disk", "disk", DISK_MIN);
        }
    }
}

impl Lifetime {
    fn check(&self, c: &mut Checker) {
        if let Some(d) = &self.shutdown_after {
            check_duration(c, d, "spec.lifetime.shutdownAfter", "shutdownAfter");
        }
        if let Some(d) = &self.ttl_after_finished {
            check_duration(c, d, "spec.lifetime.ttlAfterFinished", "ttlAfterFinished");
        }
        if let Some(d) = &self.idle_timeout {
            check_duration(c, d, "spec.lifetime.idleTimeout", "idleTimeout");
        }
    }

    /// `idleTimeout` in seconds.
    pub fn idle_timeout_secs(&self) -> Option<u64> {
        self.idle_timeout.as_deref().and_then(parse_duration)
    }

    /// `shutdownAfter` in seconds.
    pub fn shutdown_after_secs(&self) -> Option<u64> {
        self.shutdown_after.as_deref().and_then(parse_duration)
    }

    /// `ttlAfterFinished` in seconds.
    pub fn ttl_after_finished_secs(&self) -> Option<u64> {
        self.ttl_after_finished.as_deref().and_then(parse_duration)
    }
}

impl Sandbox {
    /// [`SandboxSpec::validate`] plus the rule on metadata.name.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        with_name_check(self.metadata.name.as_deref(), self.spec.validate())
    }

    /// [`SandboxSpec::validate_update`] plus the rule on metadata.name.
    pub fn validate_update(&self, old: &Self) -> Result<(), ValidationErrors> {
        with_name_check(
            self.metadata.name.as_deref(),
            self.spec.validate_update(&old.spec),
        )
    }
}

fn with_name_check(
    name: Option<&str>,
    spec: Result<(), ValidationErrors>,
) -> Result<(), ValidationErrors> {
    let mut c = Checker::default();
    check_object_name(&mut c, name, "Sandbox");
    if let Err(e) = spec {
        c.extend(e);
    }
    c.finish()
}
