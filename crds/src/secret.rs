//! The `Secret` kind (secrets.microsandbox.dev): a credential a sandbox may use but never read. It
//! names a key of a core v1 Secret and the hosts the value may be sent to. The sandbox sees a
//! placeholder; the node-agent's egress proxy substitutes the value only in requests to
//! `allowHosts` and blocks (and reports) the placeholder anywhere else.

use crate::common::{
    is_dns_subdomain, is_host_pattern, Checker, ValidationErrors, DNS_SUBDOMAIN_RE, HOST_RE,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub(crate) const CORE_SECRET_NAME_MSG: &str =
    "secretRef.name must be the name of a core Secret in this namespace (lowercase letters, digits, '-' and '.')";
pub(crate) const KEY_MSG: &str =
    "secretRef.key must be a Secret data key (letters, digits, '-', '_' and '.')";
const KEY_RE: &str = "^[-._a-zA-Z0-9]+$";
pub(crate) const NO_HOSTS_MSG: &str =
    "allowHosts needs at least one host: the value is only ever sent to these hosts";
pub(crate) const HOST_MSG: &str =
    "allowHosts entries must be lowercase host names such as 'api.openai.com' or '*.example.com' (no scheme, port or path)";

/// Desired state of a Secret: where the value is and where it may go.
// kube's `printcolumn(...)` lists repeat `type_ = "string"`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "microsandbox.dev",
    version = "v1alpha1",
    kind = "Secret",
    plural = "secrets",
    namespaced,
    status = "SecretStatus",
    shortname = "sbxsecret",
    category = "microsandbox",
    derive = "PartialEq",
    cel,
    doc = "A credential a sandbox may use but never read: a key of a core Secret and the hosts its value may be sent to. The sandbox only sees a placeholder, replaced by the node-agent's egress proxy in requests to allowHosts.",
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".spec.secretRef.name",
        description = "Core Secret holding the value"
    ),
    printcolumn(name = "Key", type_ = "string", json_path = ".spec.secretRef.key"),
    printcolumn(
        name = "Hosts",
        type_ = "string",
        json_path = ".spec.allowHosts",
        description = "Hosts the value may be sent to"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SecretSpec {
    /// The key of a core v1 Secret, in this namespace, that holds the value. The operator reads
    /// it and seals it to the node-agent running a sandbox that uses this Secret (see the
    /// Sandbox's `status.sealedSecrets`); node-agents never read core Secrets.
    pub secret_ref: SecretKeyRef,

    /// Hosts the value may be sent to: exact names (`api.openai.com`) or one-level-or-deeper
    /// wildcards (`*.example.com`). Requests to other hosts that carry the placeholder are blocked.
    #[schemars(length(max = 64), inner(length(max = 253)))]
    #[x_kube(validation = Rule::new("size(self) > 0").message(NO_HOSTS_MSG))]
    #[x_kube(validation = Rule::new(format!("self.all(h, h.matches('{HOST_RE}'))")).message(HOST_MSG))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allow_hosts: Vec<String>,
}

/// A key of a core v1 Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the core Secret.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(format!("self.matches('{DNS_SUBDOMAIN_RE}')")).message(CORE_SECRET_NAME_MSG))]
    pub name: String,
    /// Key in the Secret's data.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(format!("self.matches('{KEY_RE}')")).message(KEY_MSG))]
    pub key: String,
}

/// Observed state of a Secret, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Resolved`: the core Secret exists and has the key (reasons on False: SecretNotFound,
    /// KeyNotFound).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl SecretSpec {
    /// The CEL rules in Rust, with the same messages.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::default();
        c.check(
            is_dns_subdomain(&self.secret_ref.name),
            "spec.secretRef.name",
            CORE_SECRET_NAME_MSG,
        );
        let key = &self.secret_ref.key;
        c.check(
            !key.is_empty()
                && key
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-._".contains(ch)),
            "spec.secretRef.key",
            KEY_MSG,
        );
        c.check(
            !self.allow_hosts.is_empty(),
            "spec.allowHosts",
            NO_HOSTS_MSG,
        );
        c.check(
            self.allow_hosts.iter().all(|h| is_host_pattern(h)),
            "spec.allowHosts",
            HOST_MSG,
        );
        c.finish()
    }

    /// Whether `host` (lowercased by the caller) may receive the value. `*.example.com` matches
    /// `a.example.com` and `a.b.example.com`, not `example.com`.
    pub fn allows(&self, host: &str) -> bool {
        self.allow_hosts
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                None => pattern == host,
            })
    }
}

impl Secret {
    /// [`SecretSpec::validate`].
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        self.spec.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_exact_and_wildcard_hosts() {
        let s = SecretSpec {
            secret_ref: SecretKeyRef {
                name: "openai".into(),
                key: "api-key".into(),
            },
            allow_hosts: vec!["api.openai.com".into(), "*.example.com".into()],
        };
        assert!(s.validate().is_ok());
        assert!(s.allows("api.openai.com"));
        assert!(!s.allows("openai.com"));
        assert!(!s.allows("api.openai.com.evil.net"));
        assert!(s.allows("a.example.com"));
        assert!(s.allows("a.b.example.com"));
        assert!(!s.allows("example.com"));
        assert!(!s.allows("badexample.com"));
        assert!(!s.allows(".example.com"));
    }
}
