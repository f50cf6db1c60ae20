//! Pure translations between the SDK's requests and the Kubernetes objects of cluster mode: a
//! `CreateSandbox` as a Sandbox object (and its Secret objects), a Volume object, and where
//! waiting for one ended. Every SDK (Python, Node.js, Rust) builds objects here.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret as CoreSecret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource as _;
use microsandbox_client::api::{
    CreateSandbox, Isolation, MountSpec, NetworkPolicy, PullPolicy, RootPatch, SecretSpec,
};
use microsandbox_crds::pool::SandboxClaim;
use microsandbox_crds::sandbox::{Sandbox, SandboxPhase};
use microsandbox_crds::snapshot::{SandboxSnapshot, SandboxSnapshotSpec, SnapshotPhase};
use microsandbox_crds::volume::{Volume, VolumePhase};
use microsandbox_crds::Reason;
use serde_json::{json, Map, Value};

use super::{ClusterError, ClusterErrorKind};

/// Label on every object the SDKs create.
pub const CREATED_BY: &str = "app.kubernetes.io/created-by";
/// Its value.
pub const CREATED_BY_SDK: &str = "microsandbox-sdk";
/// Key of the value in the core Secrets the SDK creates.
pub const SECRET_KEY: &str = "value";

fn unsupported(message: &str) -> ClusterError {
    ClusterError::new(ClusterErrorKind::Unsupported, message)
}

fn invalid(message: impl Into<String>) -> ClusterError {
    ClusterError::new(ClusterErrorKind::Invalid, message)
}

/// Names of the Secret objects (core and microsandbox.dev, one pair per secret) for Sandbox
/// `sandbox`: `<sandbox>-<variable, lowercased, '_' -> '-'>`, made unique.
pub fn secret_names(sandbox: &str, secrets: &[SecretSpec]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (i, s) in secrets.iter().enumerate() {
        let lowered = s.env.to_lowercase().replace('_', "-");
        let mut slug = String::new();
        for c in lowered.chars() {
            if !(c == '-' && slug.ends_with('-')) {
                slug.push(c);
            }
        }
        let slug = slug.trim_matches('-');
        let slug = if slug.is_empty() { "secret" } else { slug };
        let full = format!("{sandbox}-{slug}");
        let mut candidate: String = full.chars().take(240).collect();
        while candidate.ends_with(['-', '.']) {
            candidate.pop();
        }
        if names.contains(&candidate) {
            candidate = format!("{candidate}-{i}");
        }
        names.push(candidate);
    }
    names
}

fn octal(mode: Option<u32>) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(mode) = mode {
        m.insert("mode".into(), Value::String(format!("{mode:04o}")));
    }
    m
}

fn patch_text(op: &str, path: &str, content_b64: &str) -> Result<String, ClusterError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(content_b64)
        .map_err(|e| invalid(format!("patch {op} {path}: content is not base64: {e}")))?;
    String::from_utf8(bytes).map_err(|_| {
        invalid(format!(
            "patch {op} {path}: a Sandbox object holds text only; write binary files with the \
             sandbox's fs after creating it"
        ))
    })
}

/// A patch in the Sandbox object's form (`spec.patches[]`).
fn crd_patch(p: &RootPatch) -> Result<Value, ClusterError> {
    Ok(match p {
        RootPatch::Text {
            path,
            content_b64,
            mode,
        } => {
            let mut body = octal(*mode);
            body.insert("path".into(), json!(path));
            body.insert(
                "content".into(),
                json!(patch_text("text", path, content_b64)?),
            );
            json!({ "text": body })
        }
        RootPatch::Append { path, content_b64 } => {
            json!({"append": {"path": path, "content": patch_text("append", path, content_b64)?}})
        }
        RootPatch::Mkdir { path, mode } => {
            let mut body = octal(*mode);
            body.insert("path".into(), json!(path));
            json!({ "mkdir": body })
        }
        RootPatch::Symlink { path, target } => {
            json!({"symlink": {"path": path, "target": target}})
        }
        RootPatch::Remove { path } => json!({"remove": {"path": path}}),
        RootPatch::Copy { .. } => {
            return Err(unsupported(
                "copy patches read the disk of the node that runs the sandbox, not this \
                 machine's; in cluster mode copy files in with the sandbox's fs after creating it",
            ))
        }
    })
}

/// A mount in the Sandbox object's form (`spec.volumes[]`).
fn crd_volume(m: &MountSpec) -> Result<Value, ClusterError> {
    Ok(match m {
        MountSpec::Named {
            name,
            path,
            readonly,
        } => json!({"path": path, "readOnly": readonly, "named": {"name": name}}),
        MountSpec::Tmpfs { path, size_mib } => {
            json!({"path": path, "tmpfs": {"size": format!("{size_mib}Mi")}})
        }
        MountSpec::Bind { .. } => {
            return Err(unsupported(
                "bind mounts name a directory of the node that runs the sandbox, not this \
                 machine's; in cluster mode use a named Volume or copy files in with the \
                 sandbox's fs after creating it",
            ))
        }
    })
}

/// How cluster mode names a SandboxSnapshot as an image (`snapshot://NAME`, what
/// [`crate::Sandbox::snapshot`] returns in cluster mode): a create with it sets `spec.snapshotRef`.
/// No OCI reference contains `://`, so it names nothing else.
pub const SNAPSHOT_SCHEME: &str = "snapshot://";

/// The SandboxSnapshot an image names, if it is `snapshot://NAME`.
pub fn snapshot_of(image: &str) -> Option<&str> {
    image.strip_prefix(SNAPSHOT_SCHEME)
}

/// Where waiting for a SandboxSnapshot ended: Ready once taken; failed when the node-agent says it
/// cannot be taken or its Sandbox does not exist.
pub fn snapshot_outcome(s: &SandboxSnapshot) -> Outcome {
    let Some(st) = s.status.as_ref() else {
        return Outcome::Waiting(None);
    };
    if s.ready_node().is_some() {
        return Outcome::Ready;
    }
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready");
    let why = ready.map(|c| (c.reason.clone(), c.message.clone()));
    match (st.phase, why) {
        (Some(SnapshotPhase::Failed), Some((r, m))) => Outcome::Failed(format!("{r}: {m}")),
        (_, Some((r, m))) if r == Reason::SandboxNotFound.as_str() => {
            Outcome::Failed(format!("{r}: {m}"))
        }
        (_, why) => Outcome::Waiting(why),
    }
}

/// Where waiting for a SandboxSnapshot's `spec.push` ended: Ready once `status.pushedImage` is
/// that image; failed when its node-agent reports this generation's push failed (it retries,
/// but a caller waiting should hear why).
pub fn push_outcome(s: &SandboxSnapshot) -> Outcome {
    if s.spec.push.is_some() && s.push_due().is_none() {
        return Outcome::Ready;
    }
    let pushed = s
        .status
        .as_ref()
        .and_then(|st| st.conditions.iter().find(|c| c.type_ == "Pushed"));
    match pushed {
        Some(c)
            if c.reason == Reason::PushFailed.as_str()
                && c.observed_generation == s.metadata.generation =>
        {
            Outcome::Failed(format!("{}: {}", c.reason, c.message))
        }
        Some(c) => Outcome::Waiting(Some((c.reason.clone(), c.message.clone()))),
        // Not reported yet: a snapshot that cannot be taken fails the push too; a taken one
        // (Ready) is not pushed yet.
        None => match snapshot_outcome(s) {
            Outcome::Failed(why) => Outcome::Failed(why),
            _ => Outcome::Waiting(None),
        },
    }
}

/// The SandboxSnapshot object `name` of Sandbox `sandbox`.
pub fn snapshot_object(namespace: &str, name: &str, sandbox: &str) -> SandboxSnapshot {
    let mut snap = SandboxSnapshot::new(
        name,
        SandboxSnapshotSpec {
            sandbox_ref: microsandbox_crds::pool::ObjectRef {
                name: sandbox.to_string(),
            },
            push: None,
        },
    );
    snap.metadata.namespace = Some(namespace.to_string());
    snap
}

/// The Sandbox object for `req` in `namespace`, checked against the CRD's own validation.
pub fn sandbox_object(namespace: &str, req: &CreateSandbox) -> Result<Sandbox, ClusterError> {
    if !req.network.publish.is_empty() {
        return Err(unsupported(
            "published ports are on the node's loopback, not this machine's; in cluster mode \
             reach the sandbox with exec and files, or expose it with a Kubernetes Service",
        ));
    }
    let pull = match req.pull_policy {
        PullPolicy::Always => "Always",
        PullPolicy::IfNotPresent => "IfNotPresent",
        PullPolicy::Never => "Never",
    };
    let mut resources = json!({"memory": format!("{}Mi", req.memory_mib), "cpus": req.cpus});
    if let Some(pids) = req.pids_limit {
        resources["pids"] = json!(pids);
    }
    let mut spec = match snapshot_of(&req.image) {
        Some(snapshot) => json!({"snapshotRef": {"name": snapshot}, "resources": resources}),
        None => json!({"image": req.image, "imagePullPolicy": pull, "resources": resources}),
    };
    if let Some(isolation) = req.isolation {
        spec["isolation"] = json!(match isolation {
            Isolation::Microvm => "microvm",
            Isolation::Container => "container",
        });
    }
    if !req.env.is_empty() {
        spec["env"] = req
            .env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
    }
    if let Some(dir) = req.workdir.as_deref().filter(|d| !d.is_empty()) {
        spec["workdir"] = json!(dir);
    }
    if !req.patches.is_empty() {
        spec["patches"] = req
            .patches
            .iter()
            .map(crd_patch)
            .collect::<Result<_, _>>()?;
    }
    if !req.mounts.is_empty() {
        spec["volumes"] = req
            .mounts
            .iter()
            .map(crd_volume)
            .collect::<Result<_, _>>()?;
    }
    if !req.secrets.is_empty() {
        spec["secrets"] = secret_names(&req.name, &req.secrets)
            .iter()
            .zip(&req.secrets)
            .map(|(object, s)| json!({"name": object, "env": s.env}))
            .collect();
    }
    // Always explicit: the SDK's default (no network) is not the CRD's (public_only).
    let policy = match req.network.policy {
        NetworkPolicy::None => "none",
        NetworkPolicy::PublicOnly => "public_only",
        NetworkPolicy::AllowAll => "allow_all",
    };
    spec["network"] = json!({"policy": policy});
    if !req.network.allow.is_empty() {
        spec["network"]["allow"] = json!(req.network.allow);
    }
    if let Some(secs) = req.idle_timeout_secs {
        spec["lifetime"] = json!({"idleTimeout": format!("{secs}s")});
    }
    let object = json!({
        "apiVersion": Sandbox::api_version(&()),
        "kind": Sandbox::kind(&()),
        "metadata": {
            "name": req.name,
            "namespace": namespace,
            "labels": {CREATED_BY: CREATED_BY_SDK},
        },
        "spec": spec,
    });
    let sandbox: Sandbox = serde_json::from_value(object)
        .map_err(|e| invalid(format!("Sandbox object {}: {e}", req.name)))?;
    sandbox
        .validate()
        .map_err(|e| invalid(format!("Sandbox {}: {e}", req.name)))?;
    Ok(sandbox)
}

/// The SandboxClaim `req.name` of SandboxWarmPool `pool`: the pool's SandboxTemplate decides
/// everything but the name and `env` (which the template's envVarsInjectionPolicy must allow, and
/// which makes the operator boot a Sandbox for the claim instead of taking a warm one).
pub fn claim_object(
    namespace: &str,
    req: &CreateSandbox,
    pool: &str,
) -> Result<SandboxClaim, ClusterError> {
    let mut spec = json!({"warmPoolRef": {"name": pool}});
    if !req.env.is_empty() {
        spec["env"] = req
            .env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
    }
    let claim: SandboxClaim = serde_json::from_value(json!({
        "apiVersion": SandboxClaim::api_version(&()),
        "kind": SandboxClaim::kind(&()),
        "metadata": {
            "name": req.name,
            "namespace": namespace,
            "labels": {CREATED_BY: CREATED_BY_SDK},
        },
        "spec": spec,
    }))
    .map_err(|e| invalid(format!("SandboxClaim object {}: {e}", req.name)))?;
    claim
        .validate()
        .map_err(|e| invalid(format!("SandboxClaim {}: {e}", req.name)))?;
    Ok(claim)
}

/// Where waiting for a claim ended: Ready with its Sandbox; Failed for what waiting cannot fix
/// (no such pool or template, env refused, its Sandbox gone or expired); else Waiting with the
/// reason.
pub fn claim_outcome(c: &SandboxClaim) -> Outcome {
    let Some(ready) = c
        .status
        .as_ref()
        .and_then(|st| st.conditions.iter().find(|c| c.type_ == "Ready"))
    else {
        return Outcome::Waiting(None);
    };
    if ready.status == "True" {
        return Outcome::Ready;
    }
    let fatal = [
        Reason::InvalidSpec,
        Reason::EnvVarsInjectionRejected,
        Reason::SandboxMissing,
        Reason::ClaimExpired,
        Reason::CreateFailed,
    ];
    let why = (ready.reason.clone(), ready.message.clone());
    if fatal.iter().any(|r| ready.reason == *r) {
        return Outcome::Failed(format!("{}: {}", why.0, why.1));
    }
    Outcome::Waiting(Some(why))
}

/// The claim that holds Sandbox `s`, if a SandboxClaim controls it (deleting the claim is how
/// such a Sandbox goes).
pub fn holding_claim(s: &Sandbox) -> Option<String> {
    s.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == SandboxClaim::kind(&()))
        .map(|o| o.name.clone())
}

/// The core Secret holding a value and the Secret (microsandbox.dev) naming it, both owned by
/// Sandbox `sandbox` (`uid`) so Kubernetes deletes them with it.
pub fn secret_objects(
    sandbox: &str,
    uid: &str,
    object_name: &str,
    s: &SecretSpec,
) -> (CoreSecret, microsandbox_crds::Secret) {
    let meta = ObjectMeta {
        name: Some(object_name.to_string()),
        labels: Some(
            [
                (CREATED_BY, CREATED_BY_SDK),
                ("microsandbox.dev/sandbox", sandbox),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ),
        owner_references: Some(vec![OwnerReference {
            api_version: Sandbox::api_version(&()).into_owned(),
            kind: Sandbox::kind(&()).into_owned(),
            name: sandbox.to_string(),
            uid: uid.to_string(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let core = CoreSecret {
        metadata: meta.clone(),
        type_: Some("Opaque".into()),
        string_data: Some([(SECRET_KEY.to_string(), s.value.clone())].into()),
        ..Default::default()
    };
    let mut object = microsandbox_crds::Secret::new(
        object_name,
        microsandbox_crds::SecretSpec {
            secret_ref: microsandbox_crds::secret::SecretKeyRef {
                name: object_name.to_string(),
                key: SECRET_KEY.into(),
            },
            allow_hosts: s.allow_hosts.clone(),
        },
    );
    object.metadata = meta;
    (core, object)
}

/// Where a Volume goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Placement {
    /// Wherever the operator finds room.
    #[default]
    Anywhere,
    /// This node.
    Node(String),
    /// A node with these labels.
    Selector(std::collections::BTreeMap<String, String>),
}

/// The Volume object `name` of `quota_mib` MiB.
pub fn volume_object(
    namespace: &str,
    name: &str,
    quota_mib: u64,
    placement: &Placement,
) -> Result<Volume, ClusterError> {
    let mut spec = json!({"size": format!("{quota_mib}Mi")});
    match placement {
        Placement::Anywhere => {}
        Placement::Node(node) => spec["placement"] = json!({"node": node}),
        Placement::Selector(labels) => spec["placement"] = json!({"nodeSelector": labels}),
    }
    serde_json::from_value(json!({
        "apiVersion": Volume::api_version(&()),
        "kind": Volume::kind(&()),
        "metadata": {"name": name, "namespace": namespace, "labels": {CREATED_BY: CREATED_BY_SDK}},
        "spec": spec,
    }))
    .map_err(|e| invalid(format!("Volume object {name}: {e}")))
}

/// Where waiting for an object ended. Pure, so the decision is unit-tested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ready,
    Failed(String),
    /// Still waiting; `Some((reason, message))` when the operator said it cannot place it.
    Waiting(Option<(String, String)>),
}

/// Where waiting for a Sandbox ended.
pub fn sandbox_outcome(s: &Sandbox) -> Outcome {
    let Some(st) = s.status.as_ref() else {
        return Outcome::Waiting(None);
    };
    let cond = |t: &str| st.conditions.iter().find(|c| c.type_ == t);
    if cond("Ready").is_some_and(|c| c.status == "True") {
        return Outcome::Ready;
    }
    if matches!(st.phase, Some(SandboxPhase::Failed | SandboxPhase::Stopped)) {
        let why = cond("Ready")
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_else(|| "failed".into());
        return Outcome::Failed(why);
    }
    Outcome::Waiting(
        cond("Scheduled")
            .filter(|c| c.status == "False")
            .map(|c| (c.reason.clone(), c.message.clone())),
    )
}

/// Where waiting for a Sandbox to be paused ended: Ready once its phase is Paused.
pub fn paused_outcome(s: &Sandbox) -> Outcome {
    match s.status.as_ref().and_then(|st| st.phase) {
        Some(SandboxPhase::Paused) => Outcome::Ready,
        Some(SandboxPhase::Failed | SandboxPhase::Stopped) => sandbox_outcome(s),
        _ => Outcome::Waiting(None),
    }
}

/// Where waiting for a Volume ended: Ready once provisioned on its node; while Pending, the
/// `Scheduled=False` reason (no node fits).
pub fn volume_outcome(v: &Volume) -> Outcome {
    let Some(st) = v.status.as_ref() else {
        return Outcome::Waiting(None);
    };
    match st.phase {
        Some(VolumePhase::Ready) => Outcome::Ready,
        Some(VolumePhase::Failed) => Outcome::Failed(
            st.conditions
                .iter()
                .find(|c| c.status == "False")
                .map(|c| format!("{}: {}", c.reason, c.message))
                .unwrap_or_else(|| "failed".into()),
        ),
        _ => Outcome::Waiting(
            st.conditions
                .iter()
                .find(|c| c.type_ == "Scheduled" && c.status == "False")
                .map(|c| (c.reason.clone(), c.message.clone())),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mount, NetworkPolicy as Policy, Patch, Secret};

    fn request() -> CreateSandbox {
        crate::Sandbox::builder("job")
            .image("python")
            .memory(256)
            .cpus(2)
            .env("A", "1")
            .workdir("/app")
            .pids_limit(64)
            .isolation(Isolation::Container)
            .volume("/data", Mount::named("cache"))
            .volume("/tmp/x", Mount::tmpfs(16))
            .patch(Patch::text("/etc/motd", "hi\n"))
            .patch(Patch::mkdir("/opt/x"))
            .network(Policy::public_only().allow(["pypi.org"]))
            .secret(Secret::env("API_KEY", "v-123", ["api.example.com"]))
            .secret(Secret::env("api__key", "v-456", ["api.example.com"]))
            .idle_timeout(std::time::Duration::from_secs(300))
            .into_request()
    }

    #[test]
    fn sandbox_object_matches_the_crd() {
        let obj = sandbox_object("ns", &request()).unwrap();
        let v = serde_json::to_value(&obj).unwrap();
        let spec = &v["spec"];
        assert_eq!(v["metadata"]["namespace"], "ns");
        assert_eq!(v["metadata"]["labels"][CREATED_BY], CREATED_BY_SDK);
        assert_eq!(spec["resources"]["memory"], "256Mi");
        assert_eq!(spec["resources"]["cpus"], 2);
        assert_eq!(spec["resources"]["pids"], 64);
        assert_eq!(spec["isolation"], "container");
        assert_eq!(spec["env"][0], json!({"name": "A", "value": "1"}));
        assert_eq!(spec["workdir"], "/app");
        assert_eq!(spec["volumes"][0]["named"]["name"], "cache");
        assert_eq!(spec["volumes"][1]["tmpfs"]["size"], "16Mi");
        assert_eq!(spec["patches"][0]["text"]["content"], "hi\n");
        assert_eq!(spec["patches"][1]["mkdir"]["path"], "/opt/x");
        assert_eq!(spec["network"]["policy"], "public_only");
        assert_eq!(spec["network"]["allow"][0], "pypi.org");
        assert_eq!(spec["lifetime"]["idleTimeout"], "300s");
        assert_eq!(obj.spec.agent_request("x").idle_timeout_secs, Some(300));
        assert_eq!(
            spec["secrets"][0],
            json!({"name": "job-api-key", "env": "API_KEY"})
        );
        assert_eq!(spec["secrets"][1]["name"], "job-api-key-1");
        // Values never go into the Sandbox object.
        assert!(!v.to_string().contains("v-123"));
        // Default network is explicit "none" (the CRD's default is public_only).
        let plain = crate::Sandbox::builder("p").into_request();
        let v = serde_json::to_value(sandbox_object("ns", &plain).unwrap()).unwrap();
        assert_eq!(v["spec"]["network"]["policy"], "none");
    }

    #[test]
    fn what_cluster_mode_cannot_do_is_refused_by_kind() {
        for b in [
            crate::Sandbox::builder("a").volume("/x", Mount::bind("/tmp")),
            crate::Sandbox::builder("a").patch(Patch::copy("/tmp/f", "/f")),
            crate::Sandbox::builder("a").patch(Patch::text("/bin/x", [0xff, 0xfe])),
        ] {
            let e = sandbox_object("ns", &b.into_request()).unwrap_err();
            assert!(
                matches!(
                    e.kind,
                    ClusterErrorKind::Unsupported | ClusterErrorKind::Invalid
                ),
                "{e:?}"
            );
        }
    }

    #[test]
    fn secret_objects_are_owned_by_the_sandbox_and_name_each_other() {
        let s = SecretSpec {
            env: "API_KEY".into(),
            value: "v-123".into(),
            allow_hosts: vec!["api.example.com".into()],
        };
        let (core, object) = secret_objects("job", "uid-1", "job-api-key", &s);
        for meta in [&core.metadata, &object.metadata] {
            assert_eq!(meta.name.as_deref(), Some("job-api-key"));
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
                ("Sandbox", "job", "uid-1")
            );
        }
        assert_eq!(core.string_data.unwrap()[SECRET_KEY], "v-123");
        assert_eq!(object.spec.secret_ref.name, "job-api-key");
        assert!(object.validate().is_ok());
        assert!(!serde_json::to_string(&object).unwrap().contains("v-123"));
    }

    fn cond(t: &str, s: &str, reason: &str, message: &str) -> Value {
        json!({"type": t, "status": s, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn a_push_is_done_when_its_image_is_pushed_and_failed_only_for_this_generation() {
        let mut s = snapshot_object("ns", "snap", "box");
        s.metadata.generation = Some(2);
        s.spec.push = Some(microsandbox_crds::snapshot::SnapshotPush {
            image: "reg.test/a:1".into(),
            secret_ref: None,
        });
        assert!(matches!(push_outcome(&s), Outcome::Waiting(None)));
        // Taken, not pushed yet: still waiting.
        s.status = Some(microsandbox_crds::snapshot::SandboxSnapshotStatus {
            phase: Some(SnapshotPhase::Ready),
            node: Some("n1".into()),
            ..Default::default()
        });
        assert!(matches!(push_outcome(&s), Outcome::Waiting(None)));
        let failed = |generation| k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Pushed".into(),
            status: "False".into(),
            reason: Reason::PushFailed.to_string(),
            message: "refused".into(),
            observed_generation: Some(generation),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ),
        };
        let mut st = microsandbox_crds::snapshot::SandboxSnapshotStatus {
            conditions: vec![failed(1)],
            ..Default::default()
        };
        s.status = Some(st.clone());
        assert!(
            matches!(push_outcome(&s), Outcome::Waiting(Some(_))),
            "an older push's failure"
        );
        st.conditions = vec![failed(2)];
        s.status = Some(st.clone());
        assert!(matches!(push_outcome(&s), Outcome::Failed(m) if m.contains("refused")));
        st.pushed_image = Some("reg.test/a:1@sha256:00".into());
        s.status = Some(st);
        assert!(matches!(push_outcome(&s), Outcome::Ready));
    }

    #[test]
    fn outcomes() {
        let sandbox = |status: Value| -> Sandbox {
            serde_json::from_value(json!({"apiVersion": "microsandbox.dev/v1alpha1",
                "kind": "Sandbox", "metadata": {"name": "s"}, "spec": {"image": "busybox"},
                "status": status}))
            .unwrap()
        };
        assert_eq!(sandbox_outcome(&sandbox(json!({}))), Outcome::Waiting(None));
        let ready = sandbox(json!({"phase": "Running",
            "conditions": [cond("Ready", "True", "Running", "")]}));
        assert_eq!(sandbox_outcome(&ready), Outcome::Ready);
        let pending = sandbox(json!({"phase": "Pending",
            "conditions": [cond("Scheduled", "False", "Unschedulable", "0/2 nodes")]}));
        assert_eq!(
            sandbox_outcome(&pending),
            Outcome::Waiting(Some(("Unschedulable".into(), "0/2 nodes".into())))
        );
        let failed = sandbox(json!({"phase": "Failed",
            "conditions": [cond("Ready", "False", "Failed", "image not found")]}));
        assert_eq!(
            sandbox_outcome(&failed),
            Outcome::Failed("Failed: image not found".into())
        );

        let volume = |status: Value| -> Volume {
            serde_json::from_value(json!({"apiVersion": "microsandbox.dev/v1alpha1",
                "kind": "Volume", "metadata": {"name": "v"}, "spec": {"size": "64Mi"},
                "status": status}))
            .unwrap()
        };
        assert_eq!(volume_outcome(&volume(json!({}))), Outcome::Waiting(None));
        let nowhere = volume(json!({"phase": "Pending",
            "conditions": [cond("Scheduled", "False", "NoNodeMatches", "0/2 nodes match")]}));
        assert_eq!(
            volume_outcome(&nowhere),
            Outcome::Waiting(Some(("NoNodeMatches".into(), "0/2 nodes match".into())))
        );
        assert_eq!(
            volume_outcome(&volume(json!({"phase": "Ready", "node": "n1"}))),
            Outcome::Ready
        );
        let failed = volume(json!({"phase": "Failed",
            "conditions": [cond("Provisioned", "False", "ProvisionFailed", "disk full")]}));
        assert_eq!(
            volume_outcome(&failed),
            Outcome::Failed("ProvisionFailed: disk full".into())
        );
        let placed = volume_object("ns", "v", 64, &Placement::Node("n1".into())).unwrap();
        let spec = &serde_json::to_value(placed).unwrap()["spec"];
        assert_eq!(spec["size"], "64Mi");
        assert_eq!(spec["placement"], json!({"node": "n1"}));
    }

    #[test]
    fn a_pool_request_is_a_claim_whose_outcome_follows_ready() {
        let req = crate::Sandbox::builder("job")
            .env("A", "1")
            .pool("py")
            .into_request();
        let claim = claim_object("ns", &req, "py").unwrap();
        let v = serde_json::to_value(&claim).unwrap();
        assert_eq!(v["kind"], "SandboxClaim");
        assert_eq!(v["metadata"]["name"], "job");
        assert_eq!(v["spec"]["warmPoolRef"]["name"], "py");
        assert_eq!(v["spec"]["env"], json!([{"name": "A", "value": "1"}]));
        let with = |status: Value| -> SandboxClaim {
            serde_json::from_value(json!({"apiVersion": "microsandbox.dev/v1alpha1",
                "kind": "SandboxClaim", "metadata": {"name": "c"},
                "spec": {"warmPoolRef": {"name": "py"}}, "status": status}))
            .unwrap()
        };
        assert_eq!(claim_outcome(&with(json!({}))), Outcome::Waiting(None));
        let ready = with(json!({"sandbox": {"name": "py-x"},
            "conditions": [cond("Ready", "True", "Running", "")]}));
        assert_eq!(claim_outcome(&ready), Outcome::Ready);
        // A missing pool may still appear: keep waiting, with the reason for the timeout.
        let no_pool =
            with(json!({"conditions": [cond("Ready", "False", "WarmPoolNotFound", "no")]}));
        assert_eq!(
            claim_outcome(&no_pool),
            Outcome::Waiting(Some(("WarmPoolNotFound".into(), "no".into())))
        );
        let refused = with(json!({"conditions":
            [cond("Ready", "False", "EnvVarsInjectionRejected", "Disallowed")]}));
        assert_eq!(
            claim_outcome(&refused),
            Outcome::Failed("EnvVarsInjectionRejected: Disallowed".into())
        );
        let held: Sandbox =
            serde_json::from_value(json!({"apiVersion": "microsandbox.dev/v1alpha1",
            "kind": "Sandbox", "metadata": {"name": "py-x", "ownerReferences": [{
                "apiVersion": "microsandbox.dev/v1alpha1", "kind": "SandboxClaim", "name": "c",
                "uid": "u", "controller": true}]}, "spec": {"image": "busybox"}}))
            .unwrap();
        assert_eq!(holding_claim(&held).as_deref(), Some("c"));
        assert_eq!(
            holding_claim(&sandbox_object("ns", &request()).unwrap()),
            None
        );
    }
}
