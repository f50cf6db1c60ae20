//! The Secret (microsandbox.dev) controller: says whether the core Secret and key it points to
//! exist (`Resolved`), so a typo shows on `kubectl get sbxsecret` instead of when a sandbox first
//! uses it. The operator may only `get` core Secrets by name (no list/watch, so it cannot
//! enumerate them); it reads which keys exist, never logs or stores a value. Core Secrets cannot
//! be watched under that rule, so resolution is re-checked every [`RECHECK`].

use super::Context;
use crate::error::{Error, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret as CoreSecret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::ResourceExt;
use microsandbox_crds::common::{condition, set_condition};
use microsandbox_crds::{ConditionType, Reason, Secret};
use std::sync::Arc;
use std::time::Duration;

const CONTROLLER: &str = "secret";
/// How often a Secret's reference is checked again.
const RECHECK: Duration = Duration::from_secs(60);
/// Whether `core` (the referenced core Secret, if it exists) has `key`: (ok, reason, message).
/// Pure.
pub fn resolution(core: Option<&CoreSecret>, name: &str, key: &str) -> (bool, Reason, String) {
    let Some(core) = core else {
        return (
            false,
            Reason::SecretNotFound,
            format!("core Secret {name:?} does not exist in this namespace"),
        );
    };
    let has = core.data.as_ref().is_some_and(|d| d.contains_key(key))
        || core
            .string_data
            .as_ref()
            .is_some_and(|d| d.contains_key(key));
    if has {
        (
            true,
            Reason::Resolved,
            format!("key {key:?} of Secret {name:?}"),
        )
    } else {
        (
            false,
            Reason::KeyNotFound,
            format!("core Secret {name:?} has no key {key:?}"),
        )
    }
}

/// Run the controller until shutdown.
pub async fn run(ctx: Arc<Context>, secrets: Api<Secret>) {
    Controller::new(secrets, watcher::Config::default())
        .shutdown_on_signal()
        .run(
            reconcile,
            |obj, error: &Error, ctx| {
                tracing::warn!(secret = %obj.name_any(), error = %error, "reconcile failed");
                ctx.metrics.reconcile_failed(CONTROLLER, error);
                Action::requeue(Duration::from_secs(10))
            },
            ctx,
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "secret reconcile failed");
            }
        })
        .await;
}

async fn reconcile(s: Arc<Secret>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    if s.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = s.namespace().ok_or(Error::MissingField("namespace"))?;
    let (ok, reason, message) = match s.validate() {
        Err(errors) => (false, Reason::InvalidSpec, errors.to_string()),
        Ok(()) => {
            let core: Api<CoreSecret> = Api::namespaced(ctx.client.clone(), &ns);
            let r = &s.spec.secret_ref;
            let found = core.get_opt(&r.name).await?;
            resolution(found.as_ref(), &r.name, &r.key)
        }
    };
    let mut status = s.status.clone().unwrap_or_default();
    let before = status.clone();
    set_condition(
        &mut status.conditions,
        condition(
            ConditionType::Resolved,
            ok,
            reason,
            message,
            s.metadata.generation,
            Time(Timestamp::now()),
        ),
    );
    status.observed_generation = s.metadata.generation;
    if status != before {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        super::apply_status(&api, s.as_ref(), serde_json::to_value(&status)?).await?;
    }
    Ok(Action::requeue(RECHECK))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    #[test]
    fn resolution_names_what_is_missing() {
        let (ok, reason, msg) = resolution(None, "api", "token");
        assert!(!ok);
        assert_eq!(reason, Reason::SecretNotFound);
        assert!(msg.contains("\"api\""));
        let core = CoreSecret {
            data: Some(BTreeMap::from([(
                "token".to_string(),
                ByteString(b"v".to_vec()),
            )])),
            ..Default::default()
        };
        assert!(resolution(Some(&core), "api", "token").0);
        let (ok, reason, _) = resolution(Some(&core), "api", "other");
        assert!(!ok);
        assert_eq!(reason, Reason::KeyNotFound);
    }
}
