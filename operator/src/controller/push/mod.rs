//! The push-credentials controller: for a SandboxSnapshot whose `spec.push` names a
//! `secretRef`, once the snapshot is taken (its node known), reads that Secret (a docker
//! config), picks the credentials for the registry of `spec.push.image` and seals them to the
//! key the node's agent announces (`status.pushCredentials`), bound to this object on that node.
//! The node-agent opens them and pushes; it never reads a Secret. Sealed again when the image's
//! registry, the Secret or the node's key changes; problems are Warning Events, retried.

pub mod docker_config;

use super::{apply_status, publish, Context};
use crate::error::{Error, Result, Step};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret as CoreSecret;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::ResourceExt;
use microsandbox_crds::sealed::{self, Binding, RegistryCredentials};
use microsandbox_crds::snapshot::SealedPushCredentials;
use microsandbox_crds::{EventAction, Reason, SandboxSnapshot};
use std::sync::Arc;
use std::time::Duration;

const CONTROLLER: &str = "push";
/// Retry of credentials that cannot be sealed yet (a Secret created later, a node without key).
const RETRY: Duration = Duration::from_secs(5);

/// Run the controller until shutdown.
pub async fn run(ctx: Arc<Context>, snapshots: Api<SandboxSnapshot>) {
    Controller::new(snapshots, watcher::Config::default())
        .shutdown_on_signal()
        .run(
            reconcile,
            |obj, error: &Error, ctx| {
                tracing::warn!(snapshot = %obj.name_any(), error = %error, "reconcile failed");
                ctx.metrics.reconcile_failed(CONTROLLER, error);
                Action::requeue(RETRY)
            },
            ctx,
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::warn!(error = %e, "push reconcile failed");
            }
        })
        .await;
}

/// The registry of image reference `image` (`docker.io` for a bare name).
pub fn registry_of(image: &str) -> std::result::Result<String, String> {
    image
        .parse::<oci_spec::distribution::Reference>()
        .map(|r| docker_config::host(r.registry()))
        .map_err(|e| format!("spec.push.image {image:?} is not an image reference: {e}"))
}

/// Whether `current` is what sealing now would give: the same registry, Secret (and version of
/// it) and node key. Pure.
fn fresh(
    current: Option<&SealedPushCredentials>,
    registry: &str,
    secret: &str,
    version: &str,
    key: &str,
) -> bool {
    current.is_some_and(|c| {
        c.registry == registry
            && c.secret == secret
            && c.secret_version == version
            && c.sealed.recipient == key.trim()
    })
}

async fn reconcile(snap: Arc<SandboxSnapshot>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    if snap.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Only a due push that names a Secret, of a snapshot taken on a node (a status change
    // brings it back here).
    let (Some(push), Some(node)) = (snap.push_due(), snap.ready_node()) else {
        return Ok(Action::await_change());
    };
    let Some(secret) = push.secret_ref.as_ref().map(|r| r.name.clone()) else {
        return Ok(Action::await_change());
    };
    let node = node.to_string();
    let registry = match registry_of(&push.image) {
        Ok(r) => r,
        Err(why) => {
            // A new image is a spec change: it comes back then.
            warn(&ctx, &snap, Reason::InvalidSpec, why).await;
            return Ok(Action::await_change());
        }
    };
    let nodes = super::sandbox::node_infos(&ctx, Timestamp::now());
    let Some(key) = nodes
        .iter()
        .find(|n| n.name == node)
        .and_then(|n| n.sealing_key.clone())
    else {
        let why = format!("node {node} announces no sealing key (node-agent too old?)");
        warn(&ctx, &snap, Reason::NoSealingKey, why).await;
        return Ok(Action::requeue(RETRY));
    };
    let ns = snap.namespace().ok_or(Error::MissingField("namespace"))?;
    // Read while the push is due (every RETRY): a Secret made or fixed later is picked up.
    let (credentials, version) = match read(&ctx, &ns, &secret, &registry).await? {
        Ok(c) => c,
        Err(why) => {
            warn(&ctx, &snap, Reason::PushCredentialsNotFound, why).await;
            return Ok(Action::requeue(RETRY));
        }
    };
    let current = snap
        .status
        .as_ref()
        .and_then(|s| s.push_credentials.as_ref());
    if fresh(current, &registry, &secret, &version, &key) {
        return Ok(Action::requeue(RETRY));
    }
    let (name, uid) = (snap.name_any(), snap.uid().unwrap_or_default());
    let binding = Binding {
        namespace: &ns,
        name: &name,
        uid: &uid,
        node: &node,
    };
    let sealed = match sealed::seal_credentials(&key, binding, &credentials) {
        Ok(s) => s,
        Err(e) => {
            warn(&ctx, &snap, Reason::SealingFailed, e.to_string()).await;
            return Ok(Action::requeue(RETRY));
        }
    };
    let status = SealedPushCredentials {
        registry,
        secret,
        secret_version: version,
        sealed,
    };
    let api: Api<SandboxSnapshot> = Api::namespaced(ctx.client.clone(), &ns);
    let value = serde_json::json!({ "pushCredentials": status });
    apply_status(&api, &*snap, value)
        .await
        .map_err(|e| Error::step(Step::UpdateStatus, e))?;
    tracing::info!(snapshot = %format!("{ns}/{name}"), node = %node, "push credentials sealed");
    Ok(Action::requeue(RETRY))
}

/// The credentials Secret `name` of `ns` holds for `registry` and the Secret's version, or why
/// there are none (the outer error: the API call itself failed).
async fn read(
    ctx: &Context,
    ns: &str,
    name: &str,
    registry: &str,
) -> Result<std::result::Result<(RegistryCredentials, String), String>> {
    let secrets: Api<CoreSecret> = Api::namespaced(ctx.client.clone(), ns);
    let Some(s) = secrets
        .get_opt(name)
        .await
        .map_err(|e| Error::step(Step::ReadSecrets, e.into()))?
    else {
        return Ok(Err(format!("Secret {name:?} does not exist")));
    };
    if s.type_.as_deref() != Some(docker_config::SECRET_TYPE) {
        return Ok(Err(format!(
            "Secret {name:?} is of type {:?}, not {}",
            s.type_.as_deref().unwrap_or("Opaque"),
            docker_config::SECRET_TYPE
        )));
    }
    let data = s.data.as_ref().and_then(|d| d.get(docker_config::DATA_KEY));
    let Some(data) = data else {
        return Ok(Err(format!(
            "Secret {name:?} has no {} key",
            docker_config::DATA_KEY
        )));
    };
    let version = s.metadata.resource_version.clone().unwrap_or_default();
    Ok(docker_config::credentials_for(&data.0, registry)
        .map(|c| (c, version))
        .map_err(|e| format!("Secret {name:?} {e}")))
}

async fn warn(ctx: &Context, snap: &SandboxSnapshot, reason: Reason, why: String) {
    tracing::info!(snapshot = %snap.name_any(), reason = %reason, "{why}");
    publish(
        ctx,
        snap,
        EventType::Warning,
        reason,
        EventAction::Push,
        why,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use microsandbox_crds::SealedSecrets;

    #[test]
    fn sealed_credentials_are_fresh_until_anything_they_were_made_from_changes() {
        assert_eq!(
            registry_of("reg.test:5000/team/base:1").unwrap(),
            "reg.test:5000"
        );
        assert_eq!(registry_of("busybox").unwrap(), "docker.io");
        assert!(registry_of("bad ref").is_err());
        let sealed = SealedPushCredentials {
            registry: "reg.test:5000".into(),
            secret: "creds".into(),
            secret_version: "7".into(),
            sealed: SealedSecrets {
                recipient: "K".into(),
                enc: String::new(),
                ciphertext: String::new(),
            },
        };
        let c = Some(&sealed);
        assert!(!fresh(None, "reg.test:5000", "creds", "7", "K"));
        assert!(fresh(c, "reg.test:5000", "creds", "7", "K"));
        assert!(
            !fresh(c, "elsewhere.test", "creds", "7", "K"),
            "another registry"
        );
        assert!(
            !fresh(c, "reg.test:5000", "other", "7", "K"),
            "another Secret"
        );
        assert!(
            !fresh(c, "reg.test:5000", "creds", "8", "K"),
            "the Secret changed"
        );
        assert!(
            !fresh(c, "reg.test:5000", "creds", "7", "K2"),
            "the node's key changed"
        );
    }
}
