//! What the operator and the node-agent's cluster mode both do to objects: publish an Event and
//! server-side apply a status, with the shared vocabulary of [`crate::reason`].

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use std::sync::{Arc, Mutex};

use crate::reason::{EventAction, Reason};

/// Publishes after which [`Events`] starts a fresh Recorder.
const RENEW_AFTER: u32 = 256;

/// kube-runtime's [`Recorder`], renewed every [`RENEW_AFTER`] publishes. A Recorder keeps every
/// Event it published for six minutes, unbounded (to count a repeat into the first one's
/// series): a burst of 1000 Sandboxes kept thousands of Events in the operator, the part of its
/// memory that grew with the burst. Renewing it bounds that; a repeat that straddles a renewal
/// starts a new series.
#[derive(Clone)]
pub struct Events {
    client: Client,
    reporter: Reporter,
    current: Arc<Mutex<(Recorder, u32)>>,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        let recorder = Recorder::new(client.clone(), reporter.clone());
        Self {
            client,
            reporter,
            current: Arc::new(Mutex::new((recorder, 0))),
        }
    }

    /// The Recorder to publish with now.
    fn recorder(&self) -> Recorder {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.1 += 1;
        if current.1 > RENEW_AFTER {
            *current = (Recorder::new(self.client.clone(), self.reporter.clone()), 1);
        }
        current.0.clone()
    }
}

/// Publish an Event about `obj`. A failure is logged, never returned: an Event is a courtesy.
pub async fn publish<K>(
    events: &Events,
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
    if let Err(e) = events.recorder().publish(&ev, &obj.object_ref(&())).await {
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
