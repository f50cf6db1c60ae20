//! The node-agent's Volume controller: provisions the Volumes the operator placed on this node
//! (`status.node`) as named volumes of this agent (quota = `spec.size`), reports `phase`, `used`
//! and `Provisioned` under its own field manager, and on delete honours `reclaimPolicy`
//! (`Delete` removes the data once no sandbox mounts it; `Retain` keeps it for an admin).

use super::names;
use super::{ClusterError, FIELD_MANAGER};
use crate::error::AgentError;
use crate::sandbox::SandboxManager;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::watcher;
use kube::ResourceExt;
use microsandbox_crds::common::{condition, set_condition};
use microsandbox_crds::volume::ReclaimPolicy;
use microsandbox_crds::{ConditionType, Reason, Volume, VolumePhase};
use microsandbox_wire::api::CreateVolume;
use std::sync::Arc;
use std::time::Duration;

/// Finalizer this agent holds on the Volumes it provisioned.
pub const FINALIZER: &str = "microsandbox.dev/node-agent";
/// How often usage is refreshed.
const REFRESH: Duration = Duration::from_secs(30);

pub struct Context {
    pub manager: Arc<SandboxManager>,
    pub node: String,
    pub client: kube::Client,
}

/// The agent's name for a Volume object (as for sandboxes: name + uid digits).
pub fn local_name(v: &Volume) -> Result<String, ClusterError> {
    let uid = v.uid().ok_or(ClusterError::MissingField("uid"))?;
    Ok(names::local_name(&v.name_any(), &uid))
}

/// `bytes` as a Kubernetes quantity in whole MiB (`312Mi`).
pub fn quantity(bytes: u64) -> String {
    format!("{}Mi", bytes.div_ceil(1 << 20))
}

pub async fn run(ctx: Arc<Context>, api: Api<Volume>) {
    let config = watcher::Config::default().fields(&format!("status.node={}", ctx.node));
    Controller::new(api, config)
        .run(
            reconcile,
            |v, e: &ClusterError, _| {
                tracing::warn!(volume = %v.name_any(), error = %e, "volume reconcile failed");
                Action::requeue(Duration::from_secs(5))
            },
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(v: Arc<Volume>, ctx: Arc<Context>) -> Result<Action, ClusterError> {
    if v.status.as_ref().and_then(|s| s.node.as_deref()) != Some(ctx.node.as_str()) {
        return Ok(Action::await_change());
    }
    let ns = v
        .namespace()
        .ok_or(ClusterError::MissingField("namespace"))?;
    let api: Api<Volume> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, v, |event| async {
        match event {
            Finalizer::Apply(v) => apply(&v, &api, &ctx).await,
            Finalizer::Cleanup(v) => cleanup(&v, &ctx).await,
        }
    })
    .await
    .map_err(|e| ClusterError::Finalizer(Box::new(e)))
}

async fn apply(v: &Volume, api: &Api<Volume>, ctx: &Context) -> Result<Action, ClusterError> {
    let local = local_name(v)?;
    let volumes = ctx.manager.volumes();
    let quota_mib = v.spec.size_bytes().map_or(1024, |b| {
        u64::try_from(b).unwrap_or(u64::MAX).div_ceil(1 << 20)
    });
    let mut grow_error = None;
    let info = match volumes.info(&local) {
        // spec.size may grow (the CRD refuses shrinking). A failed growth leaves a working
        // volume of the old size: still Provisioned, the message says why; retried later.
        Ok(info) if info.quota_mib < quota_mib => {
            match ctx.manager.grow_volume(&local, quota_mib).await {
                Ok(grown) => Ok(grown),
                Err(e) => {
                    tracing::warn!(volume = %local, quota_mib, error = %e, "cannot grow volume");
                    grow_error = Some(format!("; growing to {quota_mib} MiB failed: {e}"));
                    Ok(info)
                }
            }
        }
        Ok(info) => Ok(info),
        Err(AgentError::VolumeNotFound(_)) => {
            let uid = v.uid().unwrap_or_default();
            volumes
                .create(CreateVolume {
                    name: local.clone(),
                    quota_mib,
                    labels: names::labels(&v.namespace().unwrap_or_default(), &v.name_any(), &uid),
                })
                .await
        }
        Err(e) => Err(e),
    };
    let mut conds = v
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let (phase, used) = match &info {
        Ok(i) => {
            set_condition(
                &mut conds,
                condition(
                    ConditionType::Provisioned,
                    true,
                    Reason::Provisioned,
                    format!(
                        "{} MiB on node {}{}",
                        i.quota_mib,
                        ctx.node,
                        grow_error.as_deref().unwrap_or_default()
                    ),
                    v.metadata.generation,
                    Time(Timestamp::now()),
                ),
            );
            (VolumePhase::Ready, Some(quantity(i.used_bytes)))
        }
        Err(e) => {
            set_condition(
                &mut conds,
                condition(
                    ConditionType::Provisioned,
                    false,
                    Reason::ProvisioningFailed,
                    e.to_string(),
                    v.metadata.generation,
                    Time(Timestamp::now()),
                ),
            );
            (VolumePhase::Failed, None)
        }
    };
    let old = v.status.clone().unwrap_or_default();
    let mine_old: Vec<_> = old
        .conditions
        .iter()
        .filter(|c| c.type_ == ConditionType::Provisioned)
        .collect();
    let mine_new: Vec<_> = conds
        .iter()
        .filter(|c| c.type_ == ConditionType::Provisioned)
        .collect();
    if old.phase != Some(phase) || old.used != used || mine_old != mine_new {
        let mut status = serde_json::json!({
            "phase": phase,
            "conditions": mine_new,
        });
        if let Some(u) = &used {
            status["used"] = u.clone().into();
        }
        microsandbox_crds::events::apply_status(api, v, FIELD_MANAGER, status).await?;
    }
    Ok(Action::requeue(REFRESH))
}

async fn cleanup(v: &Volume, ctx: &Context) -> Result<Action, ClusterError> {
    let local = local_name(v)?;
    if v.spec.reclaim_policy == ReclaimPolicy::Retain {
        tracing::info!(volume = %local, "reclaimPolicy Retain: data kept on the node");
        return Ok(Action::await_change());
    }
    match ctx.manager.remove_volume(&local).await {
        Ok(()) | Err(AgentError::VolumeNotFound(_)) => Ok(Action::await_change()),
        // Still mounted: the finalizer stays until the sandboxes are gone.
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_round_up_to_mib() {
        assert_eq!(quantity(0), "0Mi");
        assert_eq!(quantity(1), "1Mi");
        assert_eq!(quantity(5 << 20), "5Mi");
    }
}
