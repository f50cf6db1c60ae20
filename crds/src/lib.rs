//! Custom resources of `microsandbox.dev/v1alpha1`: [`Sandbox`], [`Volume`], [`Secret`] and the
//! warm-pool kinds [`SandboxTemplate`], [`SandboxWarmPool`] and [`SandboxClaim`], and
//! [`SandboxSnapshot`].
//!
//! Each kind carries its rules twice, with one set of messages: as CEL `x-kubernetes-validations`
//! in the generated CRD (so the apiserver itself rejects bad objects) and as a pure `validate()` /
//! `validate_update()` in Rust (so the operator and SDK report the same message without a cluster).
//! `crdgen` prints the CRDs; `microsandbox.dev_crds.yaml` is that output, checked by a test.
//!
//! Enum spelling: values that mirror a core Kubernetes field keep its CamelCase (`imagePullPolicy:
//! IfNotPresent`, `reclaimPolicy: Delete`, phases); values that are microsandbox's own vocabulary
//! keep the spelling of the node-agent API and the SDK (`isolation: microvm`, `policy: public_only`).

pub mod common;
#[cfg(feature = "client")]
pub mod events;
pub mod mounts;
pub mod network;
pub mod patches;
pub mod pool;
pub mod reason;
pub mod sandbox;
pub mod sealed;
pub mod secret;
pub mod snapshot;
pub mod units;
pub mod volume;

pub use common::{FieldError, Isolation, PullPolicy, ValidationErrors};
pub use network::{Network, NetworkPolicy};
pub use pool::{SandboxClaim, SandboxTemplate, SandboxWarmPool};
pub use reason::{ConditionType, EventAction, Reason};
pub use sandbox::{AgentReport, Sandbox, SandboxPhase, SandboxSpec, SandboxStatus, SealedSecrets};
pub use secret::{Secret, SecretSpec, SecretStatus};
pub use snapshot::{SandboxSnapshot, SnapshotPhase};
pub use volume::{Volume, VolumePhase, VolumeSpec, VolumeStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of all kinds.
pub const GROUP: &str = "microsandbox.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Command that regenerates the committed CRD file (from the workspace root).
pub const REGENERATE: &str = "make crds";

/// The CRDs of all kinds, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [
        Sandbox::crd(),
        Volume::crd(),
        Secret::crd(),
        without_transition_rules(SandboxTemplate::crd()),
        SandboxWarmPool::crd(),
        SandboxClaim::crd(),
        SandboxSnapshot::crd(),
    ]
    .into_iter()
    .map(unwrap_descriptions)
    .collect()
}

/// A SandboxTemplate embeds a Sandbox's spec but may change at any time: drop the rules that
/// compare with the old object (`oldSelf`), which make a Sandbox's fields immutable.
fn without_transition_rules(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(rules)) =
                    map.get_mut("x-kubernetes-validations")
                {
                    rules.retain(|r| {
                        !r.get("rule")
                            .and_then(|r| r.as_str())
                            .is_some_and(|r| r.contains("oldSelf"))
                    });
                    if rules.is_empty() {
                        map.remove("x-kubernetes-validations");
                    }
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(crd).expect("a CRD serializes to JSON");
    walk(&mut value);
    serde_json::from_value(value).expect("a CRD still deserializes")
}

/// Doc comments are wrapped at 100 columns; `kubectl explain` wraps again, so hard line breaks
/// inside a paragraph would show up as ragged lines. Join them (paragraph breaks stay).
fn unwrap_descriptions(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    match v {
                        serde_json::Value::String(s) if k == "description" => {
                            *s = s
                                .split("\n\n")
                                .map(|para| para.split('\n').collect::<Vec<_>>().join(" "))
                                .collect::<Vec<_>>()
                                .join("\n\n");
                        }
                        _ => walk(v),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(crd).expect("a CRD serializes to JSON");
    walk(&mut value);
    serde_json::from_value(value).expect("a CRD still deserializes")
}

/// All CRDs as one multi-document YAML stream, as committed in `crds/microsandbox.dev_crds.yaml`.
pub fn crds_yaml() -> String {
    let mut out = format!("# Generated by `{REGENERATE}`. Do not edit.\n");
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd).expect("a CRD serializes to YAML"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed YAML is what `crdgen` prints today (CI and reviewers read the file).
    #[test]
    fn committed_crd_yaml_is_fresh() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/microsandbox.dev_crds.yaml");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == crds_yaml(),
            "crds/microsandbox.dev_crds.yaml is stale or missing: run `{REGENERATE}`"
        );
    }

    /// The Helm chart ships the same CRDs (Helm installs `charts/microsandbox/crds/` as is).
    #[test]
    fn chart_crds_are_fresh() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/microsandbox/crds/microsandbox.dev_crds.yaml"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == crds_yaml(),
            "charts/microsandbox/crds/microsandbox.dev_crds.yaml is stale or missing: run `{REGENERATE}`"
        );
    }

    #[test]
    fn descriptions_have_no_hard_wraps() {
        fn walk(v: &serde_json::Value, bad: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        match v.as_str() {
                            Some(s)
                                if k == "description" && s.replace("\n\n", "").contains('\n') =>
                            {
                                bad.push(s.to_string())
                            }
                            _ => walk(v, bad),
                        }
                    }
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, bad)),
                _ => {}
            }
        }
        let mut bad = vec![];
        walk(&serde_json::to_value(crds()).unwrap(), &mut bad);
        assert!(bad.is_empty(), "{bad:#?}");
    }
}
