//! The `Volume` kind: persistent storage with a size quota that lives on one node. Sandboxes that
//! mount it are scheduled onto that node.

use crate::common::{
    check_object_name, is_dns_subdomain, object_name_rule, Checker, ValidationErrors,
    DNS_SUBDOMAIN_RE,
};
use crate::units::{check_quantity, min_quantity_rule, parse_quantity, quantity_rule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub(crate) const SHRINK_MSG: &str = "size can only grow: shrinking a volume could lose data";
pub(crate) const PLACEMENT_EXCLUSIVE_MSG: &str =
    "placement.node and placement.nodeSelector are mutually exclusive: pin one node or select by labels";
pub(crate) const NODE_NAME_MSG: &str =
    "placement.node must be a node name (lowercase letters, digits, '-' and '.')";
pub(crate) const PLACEMENT_IMMUTABLE_MSG: &str =
    "placement cannot be changed after the volume is created: its data lives on one node";
const SIZE_MIN: &str = "1Mi";

/// Desired state of a Volume.
// kube's `printcolumn(...)` lists repeat `type_ = "string"`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "microsandbox.dev",
    version = "v1alpha1",
    kind = "Volume",
    plural = "volumes",
    namespaced,
    status = "VolumeStatus",
    shortname = "sbxvol",
    category = "microsandbox",
    derive = "PartialEq",
    cel,
    validation = object_name_rule("Volume"),
    doc = "Persistent storage with a size quota that lives on one node; sandboxes that mount it are scheduled onto that node.",
    printcolumn(
        name = "Size",
        type_ = "string",
        json_path = ".spec.size",
        description = "Quota"
    ),
    printcolumn(
        name = "Used",
        type_ = "string",
        json_path = ".status.used",
        description = "Space in use"
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.node",
        description = "Node that holds the data"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    selectable = ".status.node"
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.placement) == has(oldSelf.placement) && (!has(self.placement) || self.placement == oldSelf.placement)"
).message(PLACEMENT_IMMUTABLE_MSG).field_path(".placement"))]
pub struct VolumeSpec {
    /// Quota as a Kubernetes quantity, e.g. `1Gi`. At least 1Mi. May grow, never shrink.
    #[schemars(length(max = 32))]
    #[x_kube(validation = quantity_rule("size"))]
    #[x_kube(validation = min_quantity_rule("size", SIZE_MIN))]
    #[x_kube(validation = Rule::new(
        "!isQuantity(self) || !isQuantity(oldSelf) || quantity(self).compareTo(quantity(oldSelf)) >= 0"
    ).message(SHRINK_MSG))]
    pub size: String,

    /// Where the data lives. Unset: the operator picks a node when the volume is created.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,

    /// What happens to the data when this object is deleted: `Delete` (the default) or `Retain`
    /// (the directory stays on the node for an administrator to recover).
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

/// Node choice for a volume. At most one of `node` and `nodeSelector`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.node) && has(self.nodeSelector))").message(PLACEMENT_EXCLUSIVE_MSG))]
pub struct Placement {
    /// Name of the node that holds the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(format!("self.matches('{DNS_SUBDOMAIN_RE}')")).message(NODE_NAME_MSG))]
    pub node: Option<String>,

    /// Labels the chosen node must carry, e.g. `{topology.kubernetes.io/zone: eu-1a}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 16))]
    pub node_selector: Option<BTreeMap<String, String>>,
}

/// What happens to a volume's data when its object is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ReclaimPolicy {
    #[default]
    Delete,
    Retain,
}

/// Observed state of a volume, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    /// `Pending` (no node yet), `Ready` (provisioned on status.node) or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<VolumePhase>,
    /// Node that holds the data. Sandboxes that mount this volume run there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Space in use as a quantity, e.g. `312Mi`, as last reported by the node-agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<String>,
    /// Number of sandboxes that mount this volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounted_by: Option<i32>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Provisioned`: the directory and quota exist on the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Lifecycle phase of a volume.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VolumePhase {
    Pending,
    Ready,
    Failed,
}

impl VolumeSpec {
    /// The CEL creation rules in Rust, with the same messages.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::default();
        check_quantity(&mut c, &self.size, "spec.size", "size", SIZE_MIN);
        if let Some(p) = &self.placement {
            c.check(
                !(p.node.is_some() && p.node_selector.is_some()),
                "spec.placement",
                PLACEMENT_EXCLUSIVE_MSG,
            );
            if let Some(n) = &p.node {
                c.check(is_dns_subdomain(n), "spec.placement.node", NODE_NAME_MSG);
            }
        }
        c.finish()
    }

    /// [`Self::validate`] plus the update rules.
    pub fn validate_update(&self, old: &Self) -> Result<(), ValidationErrors> {
        let mut c = match self.validate() {
            Ok(()) => Checker::default(),
            Err(e) => Checker::from(e),
        };
        if let (Some(new), Some(old)) = (parse_quantity(&self.size), parse_quantity(&old.size)) {
            c.check(new >= old, "spec.size", SHRINK_MSG);
        }
        c.check(
            self.placement == old.placement,
            "spec.placement",
            PLACEMENT_IMMUTABLE_MSG,
        );
        c.finish()
    }

    /// The quota in bytes, once [`Self::validate`] passed.
    pub fn size_bytes(&self) -> Option<i128> {
        parse_quantity(&self.size)
    }
}

impl Volume {
    /// [`VolumeSpec::validate`] plus the rule on metadata.name.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        self.with_name_check(self.spec.validate())
    }

    /// [`VolumeSpec::validate_update`] plus the rule on metadata.name.
    pub fn validate_update(&self, old: &Self) -> Result<(), ValidationErrors> {
        self.with_name_check(self.spec.validate_update(&old.spec))
    }

    fn with_name_check(&self, spec: Result<(), ValidationErrors>) -> Result<(), ValidationErrors> {
        let mut c = Checker::default();
        check_object_name(&mut c, self.metadata.name.as_deref(), "Volume");
        if let Err(e) = spec {
            c.extend(e);
        }
        c.finish()
    }
}
