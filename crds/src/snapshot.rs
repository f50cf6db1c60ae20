//! The `SandboxSnapshot` kind: a Sandbox's files (its image plus every change made in it) saved as
//! an image on the Sandbox's node. A Sandbox with `spec.snapshotRef` starts from it, on that node.
//!
//! Why an object rather than a field on Sandbox: a snapshot outlives the Sandbox it was taken
//! from (that is what it is for), has a lifecycle of its own (taken, in use, deleted), and is
//! referenced by other Sandboxes; as a field it would vanish with its Sandbox, and RBAC could not
//! tell "may snapshot" from "may change a Sandbox". VolumeSnapshot in Kubernetes made the same
//! choice. The node-agent of the Sandbox's node takes it (pausing a running Sandbox for the copy
//! and resuming it after) and removes it from the node when the object is deleted (not while a
//! Sandbox made from it exists).

use crate::common::{is_dns_subdomain, Checker, ValidationErrors};
use crate::pool::{ObjectRef, REF_NAME_MSG};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub(crate) const SNAPSHOT_IMMUTABLE_MSG: &str =
    "sandboxRef cannot be changed: a snapshot is taken once; create a new SandboxSnapshot instead";
pub(crate) const PUSH_IMAGE_MSG: &str =
    "spec.push.image must be an image reference (registry/repository:tag) without spaces";
pub(crate) const SNAPSHOT_NAME_MSG: &str =
    "metadata.name of a SandboxSnapshot must be at most 63 characters without '.'";

/// A Sandbox's files saved on its node, for new Sandboxes to start from (`spec.snapshotRef`).
// kube's `printcolumn(...)` lists repeat `type_ = "string"`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "microsandbox.dev",
    version = "v1alpha1",
    kind = "SandboxSnapshot",
    plural = "sandboxsnapshots",
    namespaced,
    status = "SandboxSnapshotStatus",
    shortname = "sbxsnap",
    category = "microsandbox",
    derive = "PartialEq",
    cel,
    validation = Rule::new("self.metadata.name.size() <= 63 && !self.metadata.name.contains('.')").message(SNAPSHOT_NAME_MSG),
    doc = "A Sandbox's files saved as an image on its node; Sandboxes with spec.snapshotRef start from it on that node.",
    printcolumn(name = "Sandbox", type_ = "string", json_path = ".spec.sandboxRef.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node", description = "Node that keeps the snapshot"),
    printcolumn(name = "Layers", type_ = "integer", json_path = ".status.layers", priority = 1),
    printcolumn(name = "Pushed", type_ = "string", json_path = ".status.pushedImage", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    selectable = ".status.node"
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.sandboxRef == oldSelf.sandboxRef").message(SNAPSHOT_IMMUTABLE_MSG))]
pub struct SandboxSnapshotSpec {
    /// The Sandbox (same namespace) whose files are saved. A running one is paused for the copy
    /// and resumed after; a stopped or paused one stays as it is.
    pub sandbox_ref: ObjectRef,
    /// Also push the snapshot, once taken, to a registry as an OCI image: Sandboxes on any node
    /// (or machine) that can pull it start from it with `image:`. Set or changed later, the
    /// snapshot is pushed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<SnapshotPush>,
}

/// Where a snapshot is pushed, and with which credentials.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotPush {
    /// The image reference to push to (`registry/repository:tag`).
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(r"self.matches('^\\S+$')").message(PUSH_IMAGE_MSG))]
    pub image: String,
    /// A Secret of type `kubernetes.io/dockerconfigjson` in the snapshot's namespace (as for
    /// a Pod's imagePullSecrets) with credentials for the registry of `image`. The operator
    /// seals those credentials to the snapshot's node: node-agents read no Secrets. Without
    /// it the push is anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<ObjectRef>,
}

/// A registry host as one spelling, for matching credentials to an image's registry: schemes
/// and paths go (docker config keys are often URLs), case does not count, and Docker Hub's
/// names (`index.docker.io`, `registry-1.docker.io`) are `docker.io`.
pub fn registry_host(name: &str) -> String {
    let host = name
        .split_once("://")
        .map_or(name, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        _ => host,
    }
}

/// Registry credentials of `spec.push.secretRef`, sealed by the operator to the key of the
/// snapshot's node (as a Sandbox's secret values are): only that node-agent opens them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SealedPushCredentials {
    /// The registry they are for (the registry of `spec.push.image` when sealed).
    #[schemars(length(max = 256))]
    pub registry: String,
    /// The Secret they were read from.
    #[schemars(length(max = 253))]
    pub secret: String,
    /// That Secret's `resourceVersion` when read: a changed Secret is sealed again.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub secret_version: String,
    pub sealed: crate::SealedSecrets,
}

/// Where a snapshot is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SnapshotPhase {
    /// Not taken yet (its Sandbox is not on a node yet, or the node-agent has not got to it).
    Pending,
    /// Taken: Sandboxes may start from it.
    Ready,
    /// Cannot be taken (the message of its Ready condition says why).
    Failed,
}

/// Observed state of a snapshot, written by the node-agent that took it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSnapshotStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SnapshotPhase>,
    /// The node that keeps it: Sandboxes made from it run there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Digest of its content (layers and config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Layers: the Sandbox image's, then the snapshot's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<i64>,
    /// The image the Sandbox was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_image: Option<String>,
    /// Where `spec.push` put it: `image@digest` (written by the node-agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_image: Option<String>,
    /// The credentials of `spec.push.secretRef`, sealed to the node (written by the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_credentials: Option<SealedPushCredentials>,
    /// `Ready`: taken (reasons on False: SandboxNotFound, SnapshotFailed). `Pushed` (with
    /// `spec.push`): in the registry (reasons on False: PushPending, PushFailed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl SandboxSnapshot {
    /// The rules the apiserver checks on creation, with the same messages.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::default();
        if let Some(n) = self.metadata.name.as_deref() {
            c.check(n.len() <= 63 && !n.contains('.'), "", SNAPSHOT_NAME_MSG);
        }
        c.check(
            is_dns_subdomain(&self.spec.sandbox_ref.name),
            "spec.sandboxRef.name",
            REF_NAME_MSG,
        );
        if let Some(push) = &self.spec.push {
            c.check(
                !push.image.is_empty()
                    && push.image.len() <= 512
                    && !push.image.contains(char::is_whitespace),
                "spec.push.image",
                PUSH_IMAGE_MSG,
            );
            if let Some(r) = &push.secret_ref {
                c.check(
                    is_dns_subdomain(&r.name),
                    "spec.push.secretRef.name",
                    REF_NAME_MSG,
                );
            }
        }
        c.finish()
    }

    /// The push `spec.push` asks for that is not done yet (none without `spec.push`, or once
    /// `status.pushedImage` is that image).
    pub fn push_due(&self) -> Option<&SnapshotPush> {
        let push = self.spec.push.as_ref()?;
        let done = self
            .status
            .as_ref()
            .and_then(|s| s.pushed_image.as_deref())
            .and_then(|p| p.rsplit_once('@'))
            .is_some_and(|(image, _)| image == push.image);
        (!done).then_some(push)
    }

    /// [`Self::validate`] plus the transition rule the apiserver checks on update.
    pub fn validate_update(&self, old: &Self) -> Result<(), ValidationErrors> {
        let mut c = match self.validate() {
            Ok(()) => Checker::default(),
            Err(e) => Checker::from(e),
        };
        c.check(
            self.spec.sandbox_ref == old.spec.sandbox_ref,
            "spec",
            SNAPSHOT_IMMUTABLE_MSG,
        );
        c.finish()
    }

    /// Ready with its node: where Sandboxes made from it must run.
    pub fn ready_node(&self) -> Option<&str> {
        let st = self.status.as_ref()?;
        (st.phase == Some(SnapshotPhase::Ready))
            .then_some(st.node.as_deref())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, sandbox: &str) -> SandboxSnapshot {
        let mut s = SandboxSnapshot::new(
            name,
            SandboxSnapshotSpec {
                sandbox_ref: ObjectRef {
                    name: sandbox.into(),
                },
                push: None,
            },
        );
        s.metadata.namespace = Some("ns".into());
        s
    }

    #[test]
    fn names_and_immutability() {
        assert!(snap("s1", "box").validate().is_ok());
        assert!(snap("a.b", "box").validate().is_err());
        assert!(snap("s1", "Not_A_Name").validate().is_err());
        assert!(snap("s1", "other")
            .validate_update(&snap("s1", "box"))
            .is_err());
        assert!(snap("s1", "box")
            .validate_update(&snap("s1", "box"))
            .is_ok());
    }

    #[test]
    fn registry_hosts_have_one_spelling() {
        for (raw, host) in [
            ("https://index.docker.io/v1/", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("Reg.Test:5000", "reg.test:5000"),
            ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
        ] {
            assert_eq!(registry_host(raw), host, "{raw}");
        }
    }

    #[test]
    fn a_push_is_due_until_that_image_is_pushed() {
        let mut s = snap("s1", "box");
        assert!(s.push_due().is_none());
        s.spec.push = Some(SnapshotPush {
            image: "reg.test/team/base:1".into(),
            secret_ref: Some(ObjectRef {
                name: "reg-creds".into(),
            }),
        });
        assert!(s.validate().is_ok());
        assert_eq!(
            s.push_due().map(|p| p.image.as_str()),
            Some("reg.test/team/base:1")
        );
        s.status = Some(SandboxSnapshotStatus {
            pushed_image: Some("reg.test/team/base:1@sha256:ab".into()),
            ..Default::default()
        });
        assert!(s.push_due().is_none());
        // Pushed elsewhere before: due again.
        s.spec.push.as_mut().unwrap().image = "reg.test/team/base:2".into();
        assert!(s.push_due().is_some());
        for bad in ["", "reg.test/a b"] {
            s.spec.push.as_mut().unwrap().image = bad.into();
            assert!(s.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_a_ready_snapshot_has_a_node_to_start_from() {
        let mut s = snap("s1", "box");
        assert_eq!(s.ready_node(), None);
        s.status = Some(SandboxSnapshotStatus {
            phase: Some(SnapshotPhase::Pending),
            node: Some("n1".into()),
            ..Default::default()
        });
        assert_eq!(s.ready_node(), None);
        s.status.as_mut().unwrap().phase = Some(SnapshotPhase::Ready);
        assert_eq!(s.ready_node(), Some("n1"));
    }
}
