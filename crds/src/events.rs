//! What the operator and the node-agent's cluster mode both do to objects: publish an Event and
//! server-side apply a status, with the shared vocabulary of [`crate::reason`].

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};

use crate::reason::{EventAction, Reason};

/// Publish an Event about `obj`. A failure is logged, never returned: an Event is a courtesy.
pub async fn publish<K>(
    recorder: &Recorder,
    obj: &K,
    type_: EventType,
    reason: Reason,
    action: EventAction,
    note: String,
) where
    K: Resource<DynamicType = ()>,
{
    let ev = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!(object = %obj.name_any(), %reason, error = %e, "cannot publish event");
    }
}

/// Server-side apply of `status` (a JSON object) on `obj`'s status subresource, owned by
/// `field_manager` (forced: each manager owns its own fields).
pub async fn apply_status<K>(
    api: &Api<K>,
    obj: &K,
    field_manager: &str,
    status: serde_json::Value,
) -> kube::Result<K>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&patch),
    )
    .await
}
