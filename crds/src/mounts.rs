//! `spec.volumes[]` of a Sandbox: where a bind mount, a named Volume or a tmpfs appears.

use crate::common::{
    abs_path_rule, check_path, is_dns_label, no_dotdot_rule, Checker, DNS_LABEL_RE,
};
use crate::units::{check_quantity, min_quantity_rule, quantity_rule};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

pub(crate) const ONE_SOURCE_MSG: &str =
    "each volume needs exactly one source: bind, named or tmpfs";
pub(crate) const ROOT_MOUNT_MSG: &str = "a volume cannot be mounted on '/'";
pub(crate) const VOLUME_NAME_MSG: &str =
    "named.name must be the name of a Volume in this namespace (lowercase letters, digits and '-')";
const TMPFS_MIN: &str = "1Mi";

/// A filesystem mounted into the sandbox at `path`. Exactly one of `bind`, `named` and `tmpfs`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.bind) ? 1 : 0) + (has(self.named) ? 1 : 0) + (has(self.tmpfs) ? 1 : 0) == 1"
).message(ONE_SOURCE_MSG))]
pub struct VolumeMount {
    /// Absolute path inside the sandbox where the volume appears, e.g. `/data`. Unique per sandbox.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = abs_path_rule("path"))]
    #[x_kube(validation = no_dotdot_rule("path"))]
    #[x_kube(validation = Rule::new("self != '/'").message(ROOT_MOUNT_MSG))]
    pub path: String,
    /// Mount read-only. Defaults to false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// A directory of the node, mounted in place. The node-agent only allows paths under its
    /// configured bind roots; others fail the sandbox with reason `BindNotAllowed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<BindSource>,
    /// A Volume resource of this namespace. The sandbox is scheduled onto the Volume's node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named: Option<NamedSource>,
    /// A memory-backed filesystem that disappears with the sandbox. Counts against its memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsSource>,
}

/// A directory on the node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BindSource {
    /// Absolute path of the directory on the node, e.g. `/srv/datasets`.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = abs_path_rule("bind.hostPath"))]
    #[x_kube(validation = no_dotdot_rule("bind.hostPath"))]
    pub host_path: String,
}

/// A Volume resource by name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamedSource {
    /// Name of a Volume (microsandbox.dev) in the sandbox's namespace.
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new(format!("self.matches('{DNS_LABEL_RE}')")).message(VOLUME_NAME_MSG))]
    pub name: String,
}

/// A tmpfs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TmpfsSource {
    /// Maximum size as a Kubernetes quantity, e.g. `64Mi` (the default). At least 1Mi.
    #[serde(default = "default_tmpfs_size")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = quantity_rule("tmpfs.size"))]
    #[x_kube(validation = min_quantity_rule("tmpfs.size", TMPFS_MIN))]
    pub size: String,
}

fn default_tmpfs_size() -> String {
    "64Mi".into()
}

impl VolumeMount {
    /// The Rust mirror of this type's CEL rules; `field` is e.g. `spec.volumes[0]`.
    pub(crate) fn check(&self, c: &mut Checker, field: &str) {
        let sources = [
            self.bind.is_some(),
            self.named.is_some(),
            self.tmpfs.is_some(),
        ];
        c.check(
            sources.iter().filter(|s| **s).count() == 1,
            field,
            ONE_SOURCE_MSG,
        );
        let path_field = format!("{field}.path");
        check_path(c, &self.path, &path_field, "path");
        c.check(self.path != "/", &path_field, ROOT_MOUNT_MSG);
        if let Some(b) = &self.bind {
            check_path(
                c,
                &b.host_path,
                &format!("{field}.bind.hostPath"),
                "bind.hostPath",
            );
        }
        if let Some(n) = &self.named {
            c.check(
                is_dns_label(&n.name),
                &format!("{field}.named.name"),
                VOLUME_NAME_MSG,
            );
        }
        if let Some(t) = &self.tmpfs {
            check_quantity(
                c,
                &t.size,
                &format!("{field}.tmpfs.size"),
                "tmpfs.size",
                TMPFS_MIN,
            );
        }
    }
}
