//! Warm pools in cluster mode, in the shapes of kubernetes-sigs/agent-sandbox's extension API
//! (`SandboxTemplate`, `SandboxWarmPool`, `SandboxClaim` with `spec.warmPoolRef`), in our group:
//!
//! - a [`SandboxTemplate`] is a Sandbox spec kept by name;
//! - a [`SandboxWarmPool`] keeps `replicas` Sandboxes of a template booted and unclaimed (scale
//!   subresource: `kubectl scale` and an HPA drive it);
//! - a [`SandboxClaim`] takes one of them: the operator moves a Ready member from the pool to the
//!   claim in one write (labels and ownerReferences) and the pool refills. With `env` (or no
//!   member left) the claim gets a cold Sandbox of its own name instead, as agent-sandbox does.
//!
//! Why a claim object rather than `Sandbox.spec.warmPoolRef`: a Sandbox's spec is its whole
//! blueprint (image, resources, network are required or defaulted and immutable), so a Sandbox
//! that names a pool would either repeat the template or have a spec unlike every other one; and
//! platforms integrating agent-sandbox already create claims.

use crate::common::{
    is_dns_subdomain, is_env_name, Checker, ValidationErrors, DNS_SUBDOMAIN_RE, ENV_NAME_MSG,
};
use crate::sandbox::{EnvVar, SandboxSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Label on every Sandbox a pool keeps ready: the pool's name. The pool's `status.selector`.
pub const POOL_LABEL: &str = "microsandbox.dev/warm-pool";
/// Label on a claimed Sandbox: the pool it came from (the pool counts these as claimed).
pub const CLAIMED_FROM_LABEL: &str = "microsandbox.dev/claimed-from";
/// Label on a claimed Sandbox: the claim's name.
pub const CLAIM_LABEL: &str = "microsandbox.dev/claim";
/// Label on a claimed Sandbox: `warm` (taken from a pool) or `cold` (created for the claim).
pub const LAUNCH_LABEL: &str = "microsandbox.dev/launch";
/// Label on every pool member: a hash of the template spec it was made from.
pub const TEMPLATE_HASH_LABEL: &str = "microsandbox.dev/template-hash";

pub(crate) const POOL_NAME_MSG: &str =
    "a SandboxWarmPool's name must be at most 50 characters (its Sandboxes are named <pool>-<random>)";
pub(crate) const CLAIM_NAME_MSG: &str =
    "metadata.name of a SandboxClaim must be at most 63 characters without '.': a Sandbox booted for it takes its name";
pub(crate) const REPLICAS_MSG: &str = "replicas must be between 0 and 1000";
pub(crate) const TEMPLATE_PAUSED_MSG: &str =
    "a template cannot be paused: pause the claimed Sandbox instead";
pub(crate) const REF_NAME_MSG: &str = "name must be the name of an object in this namespace";
pub(crate) const CLAIM_IMMUTABLE_MSG: &str =
    "warmPoolRef and env cannot be changed after the claim is created; create a new SandboxClaim instead";

/// A Sandbox spec kept by name, for warm pools to boot. The same fields as a Sandbox's spec; a
/// template may change at any time (see the pool's `updateStrategy`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "microsandbox.dev",
    version = "v1alpha1",
    kind = "SandboxTemplate",
    plural = "sandboxtemplates",
    namespaced,
    shortname = "sbxt",
    category = "microsandbox",
    derive = "PartialEq",
    cel,
    doc = "A Sandbox spec kept by name, which SandboxWarmPools boot ahead of demand.",
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.paused) || !self.paused").message(TEMPLATE_PAUSED_MSG).field_path(".paused"))]
pub struct SandboxTemplateSpec {
    /// The Sandbox spec (image, resources, network, secrets, ...) every Sandbox made from this
    /// template gets. `lifetime.shutdownAfter` counts from the claim, not from the boot.
    #[serde(flatten)]
    pub sandbox: SandboxSpec,

    /// Whether a claim's `env` is accepted: `Disallowed` (the default: a claim with env is
    /// refused), `Allowed` (new variables only) or `Overrides` (may also replace the template's).
    /// A claim with env always gets a freshly booted Sandbox, never a pool member.
    #[serde(default)]
    pub env_vars_injection_policy: EnvVarsInjectionPolicy,
}

/// See [`SandboxTemplateSpec::env_vars_injection_policy`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum EnvVarsInjectionPolicy {
    #[default]
    Disallowed,
    Allowed,
    Overrides,
}

/// Keeps `replicas` Sandboxes of a template booted and unclaimed, so that a SandboxClaim binds one
/// at once. Scale it with `kubectl scale swp/NAME --replicas=N` or an HorizontalPodAutoscaler.
// kube's `printcolumn(...)` lists repeat `type_ = "integer"`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "microsandbox.dev",
    version = "v1alpha1",
    kind = "SandboxWarmPool",
    plural = "sandboxwarmpools",
    namespaced,
    status = "SandboxWarmPoolStatus",
    shortname = "swp",
    category = "microsandbox",
    derive = "PartialEq",
    cel,
    validation = Rule::new("self.metadata.name.size() <= 50 && !self.metadata.name.contains('.')").message(POOL_NAME_MSG),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    doc = "Keeps a number of Sandboxes of a SandboxTemplate booted and unclaimed for SandboxClaims to take.",
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas", description = "Members Ready to be claimed"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Claimed", type_ = "integer", json_path = ".status.claimed", description = "Sandboxes taken from this pool that still exist"),
    printcolumn(name = "Template", type_ = "string", json_path = ".spec.sandboxTemplateRef.name", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxWarmPoolSpec {
    /// How many unclaimed members to keep (default 1; 0 keeps none).
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 1000").message(REPLICAS_MSG))]
    pub replicas: i32,

    /// The SandboxTemplate (same namespace) the members are made from.
    pub sandbox_template_ref: ObjectRef,

    /// What happens to ready members when the template changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<UpdateStrategy>,
}

fn default_replicas() -> i32 {
    1
}

/// A reference to an object of a known kind in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// The object's name.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(format!("self.matches('{DNS_SUBDOMAIN_RE}')")).message(REF_NAME_MSG))]
    pub name: String,
}

/// See [`SandboxWarmPoolSpec::update_strategy`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    /// `OnReplenish` (the default): members already booted stay, new ones use the new template.
    /// `Recreate`: members of an older template are replaced at once.
    #[serde(default, rename = "type")]
    pub type_: UpdateStrategyType,
}

/// See [`UpdateStrategy`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum UpdateStrategyType {
    #[default]
    OnReplenish,
    Recreate,
}

/// Observed state of a warm pool, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxWarmPoolStatus {
    /// Unclaimed members that exist (booting or Ready).
    #[serde(default)]
    pub replicas: i32,
    /// Unclaimed members that are Ready to be claimed.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Sandboxes taken from this pool by claims that still exist.
    #[serde(default)]
    pub claimed: i32,
    /// Label selector of the members (the scale subresource's), e.g.
    /// `microsandbox.dev/warm-pool=python`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the template exists and members are kept (reasons on False: TemplateNotFound,
    /// InvalidSpec).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Takes a Sandbox from a SandboxWarmPool: a Ready member when one is free (bound in one write),
/// otherwise a Sandbox booted for it under the claim's name. Deleting the claim deletes its
/// Sandbox.
// kube's `printcolumn(...)` lists repeat `type_ = "string"`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "microsandbox.dev",
    version = "v1alpha1",
    kind = "SandboxClaim",
    plural = "sandboxclaims",
    namespaced,
    status = "SandboxClaimStatus",
    shortname = "sbxc",
    category = "microsandbox",
    derive = "PartialEq",
    cel,
    validation = Rule::new("self.metadata.name.size() <= 63 && !self.metadata.name.contains('.')").message(CLAIM_NAME_MSG),
    doc = "Takes a Sandbox from a SandboxWarmPool (a pre-booted one when free, otherwise one booted for the claim).",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type=='Ready')].status"),
    printcolumn(name = "Sandbox", type_ = "string", json_path = ".status.sandbox.name"),
    printcolumn(name = "Launch", type_ = "string", json_path = ".status.launch", description = "warm (from the pool) or cold"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type=='Ready')].reason"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.warmPoolRef == oldSelf.warmPoolRef && (has(self.env) && size(self.env) > 0) == (has(oldSelf.env) && size(oldSelf.env) > 0) && (!has(self.env) || !has(oldSelf.env) || self.env == oldSelf.env)"
).message(CLAIM_IMMUTABLE_MSG))]
pub struct SandboxClaimSpec {
    /// The SandboxWarmPool (same namespace) to take a Sandbox from.
    pub warm_pool_ref: ObjectRef,

    /// Extra environment variables, if the template's `envVarsInjectionPolicy` allows them. A
    /// claim with env gets a freshly booted Sandbox (a running one cannot change its env).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,

    /// When the claim ends. May change at any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<ClaimLifecycle>,
}

/// See [`SandboxClaimSpec::lifecycle`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimLifecycle {
    /// At this time (RFC 3339) the claim expires: its Sandbox is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub shutdown_time: Option<Time>,
    /// What expiry does to the claim itself: `Retain` (the default: it stays, Ready=False reason
    /// ClaimExpired) or `Delete`.
    #[serde(default)]
    pub shutdown_policy: ShutdownPolicy,
}

/// See [`ClaimLifecycle::shutdown_policy`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ShutdownPolicy {
    #[default]
    Retain,
    Delete,
}

/// Observed state of a claim, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxClaimStatus {
    /// The Sandbox this claim holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<ClaimedSandbox>,
    /// `warm` (taken from the pool) or `cold` (booted for the claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
    /// When the Sandbox was bound to the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<Time>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the claimed Sandbox is Ready (mirrored; reasons on False include
    /// WarmPoolNotFound, TemplateNotFound, EnvVarsInjectionRejected, SandboxNotReady,
    /// SandboxMissing, ClaimExpired).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The Sandbox a claim holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedSandbox {
    /// The Sandbox object's name (same namespace).
    pub name: String,
}

/// How a claim got its Sandbox.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Launch {
    Warm,
    Cold,
}

impl Launch {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Warm => "warm",
            Self::Cold => "cold",
        }
    }
}

impl SandboxTemplate {
    /// The Sandbox rules plus the template's own.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::default();
        if let Err(e) = self.spec.sandbox.validate() {
            c.extend(e);
        }
        c.check(
            !self.spec.sandbox.paused,
            "spec.paused",
            TEMPLATE_PAUSED_MSG,
        );
        c.finish()
    }
}

impl SandboxWarmPool {
    /// The rules the apiserver checks, with the same messages.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::default();
        if let Some(n) = self.metadata.name.as_deref() {
            c.check(n.len() <= 50 && !n.contains('.'), "", POOL_NAME_MSG);
        }
        c.check(
            (0..=1000).contains(&self.spec.replicas),
            "spec.replicas",
            REPLICAS_MSG,
        );
        c.check(
            is_dns_subdomain(&self.spec.sandbox_template_ref.name),
            "spec.sandboxTemplateRef.name",
            REF_NAME_MSG,
        );
        c.finish()
    }
}

impl SandboxClaim {
    /// The rules the apiserver checks on creation, with the same messages.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::default();
        if let Some(n) = self.metadata.name.as_deref() {
            c.check(n.len() <= 63 && !n.contains('.'), "", CLAIM_NAME_MSG);
        }
        c.check(
            is_dns_subdomain(&self.spec.warm_pool_ref.name),
            "spec.warmPoolRef.name",
            REF_NAME_MSG,
        );
        let mut seen = BTreeSet::new();
        for (i, e) in self.spec.env.iter().enumerate() {
            c.check(
                is_env_name(&e.name),
                &format!("spec.env[{i}].name"),
                ENV_NAME_MSG,
            );
            c.check(
                seen.insert(&e.name),
                &format!("spec.env[{i}]"),
                &format!("Duplicate value: {:?}", e.name),
            );
        }
        c.finish()
    }

    /// [`Self::validate`] plus the transition rule the apiserver checks on update.
    pub fn validate_update(&self, old: &Self) -> Result<(), ValidationErrors> {
        let mut c = match self.validate() {
            Ok(()) => Checker::default(),
            Err(e) => Checker::from(e),
        };
        c.check(
            self.spec.warm_pool_ref == old.spec.warm_pool_ref && self.spec.env == old.spec.env,
            "spec",
            CLAIM_IMMUTABLE_MSG,
        );
        c.finish()
    }
}

/// Why a claim's env cannot be applied to its template (the message of reason
/// `EnvVarsInjectionRejected`), or the Sandbox spec with it merged in.
pub fn inject_env(template: &SandboxTemplateSpec, env: &[EnvVar]) -> Result<SandboxSpec, String> {
    let mut spec = template.sandbox.clone();
    if env.is_empty() {
        return Ok(spec);
    }
    match template.env_vars_injection_policy {
        EnvVarsInjectionPolicy::Disallowed => {
            return Err(
                "the template's envVarsInjectionPolicy is Disallowed: claims of it cannot set env"
                    .into(),
            )
        }
        EnvVarsInjectionPolicy::Allowed => {
            if let Some(e) = env
                .iter()
                .find(|e| spec.env.iter().any(|t| t.name == e.name))
            {
                return Err(format!(
                    "the template sets {:?} and its envVarsInjectionPolicy is Allowed (new variables only); use Overrides to let claims replace it",
                    e.name
                ));
            }
        }
        EnvVarsInjectionPolicy::Overrides => {}
    }
    if let Some(e) = env
        .iter()
        .find(|e| spec.secrets.iter().any(|s| s.env == e.name))
    {
        return Err(format!(
            "{:?} holds a secret of the template; a claim cannot replace it",
            e.name
        ));
    }
    for e in env {
        match spec.env.iter_mut().find(|t| t.name == e.name) {
            Some(t) => t.value = e.value.clone(),
            None => spec.env.push(e.clone()),
        }
    }
    Ok(spec)
}

/// A short, stable hash of a template spec (the members' [`TEMPLATE_HASH_LABEL`]): FNV-1a 64 of
/// its JSON, in hex.
pub fn template_hash(spec: &SandboxTemplateSpec) -> String {
    let json = serde_json::to_vec(spec).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in json {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(policy: EnvVarsInjectionPolicy, env: &[(&str, &str)]) -> SandboxTemplateSpec {
        let mut sandbox: SandboxSpec =
            serde_json::from_value(serde_json::json!({"image": "python:3.12"})).unwrap();
        sandbox.env = env
            .iter()
            .map(|(n, v)| EnvVar {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect();
        SandboxTemplateSpec {
            sandbox,
            env_vars_injection_policy: policy,
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<EnvVar> {
        pairs
            .iter()
            .map(|(n, v)| EnvVar {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect()
    }

    #[test]
    fn env_injection_follows_the_policy() {
        use EnvVarsInjectionPolicy::*;
        let t = template(Disallowed, &[("A", "1")]);
        assert!(inject_env(&t, &[]).is_ok());
        assert!(inject_env(&t, &env(&[("B", "2")]))
            .unwrap_err()
            .contains("Disallowed"));
        let t = template(Allowed, &[("A", "1")]);
        let s = inject_env(&t, &env(&[("B", "2")])).unwrap();
        assert_eq!(s.env, env(&[("A", "1"), ("B", "2")]));
        assert!(inject_env(&t, &env(&[("A", "9")]))
            .unwrap_err()
            .contains("Overrides"));
        let t = template(Overrides, &[("A", "1")]);
        let s = inject_env(&t, &env(&[("A", "9")])).unwrap();
        assert_eq!(s.env, env(&[("A", "9")]));
    }

    #[test]
    fn a_claim_cannot_replace_a_secret_variable() {
        let mut t = template(EnvVarsInjectionPolicy::Overrides, &[]);
        t.sandbox.secrets = vec![crate::sandbox::SecretRef {
            name: "openai".into(),
            env: "OPENAI_API_KEY".into(),
        }];
        assert!(inject_env(&t, &env(&[("OPENAI_API_KEY", "x")]))
            .unwrap_err()
            .contains("secret"));
    }

    #[test]
    fn template_hash_is_stable_and_changes_with_the_spec() {
        let a = template(EnvVarsInjectionPolicy::Disallowed, &[("A", "1")]);
        let b = template(EnvVarsInjectionPolicy::Disallowed, &[("A", "2")]);
        assert_eq!(template_hash(&a), template_hash(&a.clone()));
        assert_ne!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&a).len(), 16);
    }

    #[test]
    fn template_yaml_is_a_sandbox_spec() {
        let t: SandboxTemplateSpec = serde_json::from_value(serde_json::json!({
            "image": "python:3.12",
            "resources": {"memory": "256Mi"},
            "envVarsInjectionPolicy": "Allowed"
        }))
        .unwrap();
        assert_eq!(t.sandbox.image, "python:3.12");
        assert_eq!(t.sandbox.resources.memory, "256Mi");
        assert_eq!(t.env_vars_injection_policy, EnvVarsInjectionPolicy::Allowed);
    }
}
