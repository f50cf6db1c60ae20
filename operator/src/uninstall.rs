//! `microsandbox-operator uninstall`: the chart's pre-delete hook. Deletes every Sandbox in scope
//! while the node-agents still run (they stop each sandbox and drop their finalizer), and waits
//! until none is left, so `helm uninstall` never leaves objects stuck Terminating behind agents
//! that are gone. Volumes and the CRDs stay (data outlives a release); see the chart's README.

use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams};
use kube::ResourceExt;
use microsandbox_crds::Sandbox;

use crate::{Error, Result};

/// Delete every Sandbox `api` sees and wait, up to `timeout`, until they are all gone.
/// Returns how many there were; [`Error::Uninstall`] names those still present at the timeout.
pub async fn delete_all_sandboxes(api: &Api<Sandbox>, timeout: Duration) -> Result<usize> {
    let all = api.list(&ListParams::default()).await?;
    let count = all.items.len();
    for sb in &all.items {
        let ns = sb.namespace().unwrap_or_default();
        let name = sb.name_any();
        tracing::info!(namespace = %ns, name = %name, "deleting Sandbox");
        let scoped: Api<Sandbox> = Api::namespaced(api.clone().into_client(), &ns);
        match scoped.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = api.list(&ListParams::default()).await?;
        if left.items.is_empty() {
            return Ok(count);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Uninstall(remaining(&left.items)));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// "ns/name (reason)" of each Sandbox still there.
fn remaining(items: &[Sandbox]) -> String {
    items
        .iter()
        .map(|sb| {
            let holders = sb.finalizers().join(",");
            format!(
                "{}/{} (finalizers: {})",
                sb.namespace().unwrap_or_default(),
                sb.name_any(),
                if holders.is_empty() { "none" } else { &holders }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_names_objects_and_their_finalizers() {
        let mut sb: Sandbox = serde_json::from_value(serde_json::json!({
            "apiVersion": "microsandbox.dev/v1alpha1", "kind": "Sandbox",
            "metadata": {"name": "a", "namespace": "t", "finalizers": ["microsandbox.dev/node-agent"]},
            "spec": {"image": "busybox"}
        }))
        .unwrap();
        assert_eq!(
            remaining(std::slice::from_ref(&sb)),
            "t/a (finalizers: microsandbox.dev/node-agent)"
        );
        sb.metadata.finalizers = None;
        assert_eq!(remaining(&[sb]), "t/a (finalizers: none)");
    }
}
