//! The SandboxWarmPool controller: keeps `spec.replicas` unclaimed members of the pool's template
//! (Sandboxes named `<pool>-<random>`, labelled with the pool, owned by it), replaces members of an
//! older template under `updateStrategy: Recreate`, writes the status the scale subresource reads,
//! and deletes its members when the pool is deleted.

use super::plan::{self, Member};
use super::{key, PoolContext};
use crate::controller::{apply_status, publish};
use crate::error::{Error, Result, Step};
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use microsandbox_crds::common::{condition, set_condition};
use microsandbox_crds::pool::{
    template_hash, SandboxWarmPoolStatus, UpdateStrategyType, CLAIMED_FROM_LABEL, POOL_LABEL,
    TEMPLATE_HASH_LABEL,
};
use microsandbox_crds::{
    ConditionType, EventAction, Reason, Sandbox, SandboxTemplate, SandboxWarmPool,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const CONTROLLER: &str = "warm_pool";
/// Finalizer on every pool: its members are deleted before it goes.
pub const FINALIZER: &str = "microsandbox.dev/warm-pool";
/// Annotation on members: the template's name.
pub const TEMPLATE_ANNOTATION: &str = "microsandbox.dev/template";
/// Re-check of a pool without its template.
const MISSING_TEMPLATE_RETRY: Duration = Duration::from_secs(15);

/// Run the controller until shutdown.
pub async fn run(
    pctx: Arc<PoolContext>,
    pools: impl Stream<Item = Arc<SandboxWarmPool>> + Send + 'static,
    templates: impl Stream<Item = Arc<SandboxTemplate>> + Send + 'static,
    sandboxes: impl Stream<Item = Arc<Sandbox>> + Send + 'static,
) {
    let pool_store = pctx.pools.clone();
    let ctx = pctx.clone();
    Controller::for_shared_stream(pools, pctx.pools.clone())
        // A template change concerns the pools that name it.
        .watches_shared_stream(templates, move |t| {
            let ns = t.namespace();
            let name = t.name_any();
            pool_store
                .state()
                .iter()
                .filter(|p| p.namespace() == ns && p.spec.sandbox_template_ref.name == name)
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        })
        // A member that appears, becomes Ready, is claimed or goes concerns its pool.
        .watches_shared_stream(sandboxes, |s| {
            let labels = s.labels();
            let pool = labels
                .get(POOL_LABEL)
                .or_else(|| labels.get(CLAIMED_FROM_LABEL));
            pool.map(|p| {
                ObjectRef::<SandboxWarmPool>::new(p).within(&s.namespace().unwrap_or_default())
            })
        })
        .shutdown_on_signal()
        .run(
            reconcile,
            |obj, error: &Error, ctx| {
                tracing::warn!(pool = %key(obj.as_ref()), error = %error, "reconcile failed");
                ctx.ctx.metrics.reconcile_failed(CONTROLLER, error);
                Action::requeue(Duration::from_secs(5))
            },
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(pool: Arc<SandboxWarmPool>, pctx: Arc<PoolContext>) -> Result<Action> {
    let _timer = pctx.ctx.metrics.reconcile_started(CONTROLLER);
    let ns = pool.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<SandboxWarmPool> = Api::namespaced(pctx.ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, pool, |event| async {
        match event {
            Finalizer::Apply(p) => apply(&p, &api, &pctx, &ns).await,
            Finalizer::Cleanup(p) => cleanup(&p, &pctx, &ns).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply(
    pool: &SandboxWarmPool,
    api: &Api<SandboxWarmPool>,
    pctx: &PoolContext,
    ns: &str,
) -> Result<Action> {
    let name = pool.name_any();
    let pool_key = key(pool);
    let template = pctx
        .templates
        .get(&ObjectRef::<SandboxTemplate>::new(&pool.spec.sandbox_template_ref.name).within(ns));
    let template_problem = match (&template, pool.validate()) {
        (_, Err(e)) => Some((Reason::InvalidSpec, e.to_string())),
        (None, _) => Some((
            Reason::TemplateNotFound,
            format!(
                "SandboxTemplate {:?} does not exist in namespace {ns:?}",
                pool.spec.sandbox_template_ref.name
            ),
        )),
        (Some(t), _) => t
            .validate()
            .err()
            .map(|e| (Reason::InvalidSpec, format!("the template is invalid: {e}"))),
    };
    let hash = match (&template, &template_problem) {
        (Some(t), None) => Some(template_hash(&t.spec)),
        _ => None,
    };
    // Gather the members and those claimed from this pool.
    let mut members = Vec::new();
    let mut claimed = 0;
    for s in pctx.sandboxes.state() {
        if s.namespace().as_deref() != Some(ns) {
            continue;
        }
        let labels = s.labels();
        if labels.get(POOL_LABEL) == Some(&name) && owned_by(&s, pool) {
            members.push(Member::of(&s));
        } else if labels.get(CLAIMED_FROM_LABEL) == Some(&name)
            && s.metadata.deletion_timestamp.is_none()
        {
            claimed += 1;
        }
    }
    let creating = pctx.in_flight(&pool_key, |n| members.iter().any(|m| m.name == n));
    let strategy = pool
        .spec
        .update_strategy
        .as_ref()
        .map(|u| u.type_)
        .unwrap_or(UpdateStrategyType::OnReplenish);
    let p = plan::plan_pool(
        pool.spec.replicas,
        strategy,
        hash.as_deref(),
        &members,
        creating,
    );
    // Execute.
    let sandboxes: Api<Sandbox> = Api::namespaced(pctx.ctx.client.clone(), ns);
    for victim in &p.delete {
        match sandboxes.delete(victim, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(Error::step(Step::Delete, e.into())),
        }
    }
    if let (Some(t), Some(hash)) = (&template, &hash) {
        for _ in 0..p.create {
            let member = new_member(pool, t, hash)?;
            let created = sandboxes
                .create(&PostParams::default(), &member)
                .await
                .map_err(|e| Error::step(Step::CreateMember, e.into()))?;
            pctx.expect_created(&pool_key, created.name_any());
        }
        if p.create > 0 {
            publish(
                &pctx.ctx,
                pool,
                EventType::Normal,
                Reason::Replenishing,
                EventAction::Replenish,
                format!(
                    "created {} member(s) of template {:?}",
                    p.create,
                    t.name_any()
                ),
            )
            .await;
        }
    }
    let now = Time(Timestamp::now());
    let mut status = SandboxWarmPoolStatus {
        replicas: p.replicas,
        ready_replicas: p.ready,
        claimed,
        selector: Some(format!("{POOL_LABEL}={name}")),
        observed_generation: pool.metadata.generation,
        conditions: pool
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default(),
    };
    let ready = match &template_problem {
        Some((reason, message)) => condition(
            ConditionType::Ready,
            false,
            *reason,
            message.clone(),
            pool.metadata.generation,
            now,
        ),
        None => {
            let full = p.ready >= pool.spec.replicas;
            condition(
                ConditionType::Ready,
                true,
                if full {
                    Reason::Replenished
                } else {
                    Reason::Replenishing
                },
                format!("{} of {} members Ready", p.ready, pool.spec.replicas),
                pool.metadata.generation,
                now,
            )
        }
    };
    set_condition(&mut status.conditions, ready);
    if pool.status.as_ref() != Some(&status) {
        apply_status(api, pool, serde_json::to_value(&status)?)
            .await
            .map_err(|e| Error::step(Step::UpdateStatus, e))?;
    }
    Ok(if template_problem.is_some() {
        Action::requeue(MISSING_TEMPLATE_RETRY)
    } else {
        Action::await_change()
    })
}

/// Delete the unclaimed members; claimed ones belong to their claims.
async fn cleanup(pool: &SandboxWarmPool, pctx: &PoolContext, ns: &str) -> Result<Action> {
    let sandboxes: Api<Sandbox> = Api::namespaced(pctx.ctx.client.clone(), ns);
    let lp = ListParams::default().labels(&format!("{POOL_LABEL}={}", pool.name_any()));
    sandboxes
        .delete_collection(&DeleteParams::background(), &lp)
        .await
        .map_err(|e| Error::step(Step::Delete, e.into()))?;
    tracing::info!(pool = %key(pool), "members deleted");
    Ok(Action::await_change())
}

/// A member is the pool's if the pool (this uid) controls it: a pool deleted and created again
/// under the same name does not inherit the old one's members.
fn owned_by(s: &Sandbox, pool: &SandboxWarmPool) -> bool {
    s.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == pool.metadata.uid.as_ref())
}

/// The Sandbox object of a new member.
fn new_member(pool: &SandboxWarmPool, template: &SandboxTemplate, hash: &str) -> Result<Sandbox> {
    let owner = controller_ref(pool)?;
    Ok(Sandbox {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", pool.name_any())),
            namespace: pool.namespace(),
            labels: Some(BTreeMap::from([
                (POOL_LABEL.to_string(), pool.name_any()),
                (TEMPLATE_HASH_LABEL.to_string(), hash.to_string()),
            ])),
            annotations: Some(BTreeMap::from([(
                TEMPLATE_ANNOTATION.to_string(),
                template.name_any(),
            )])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: plan::member_spec(&template.spec.sandbox),
        status: None,
    })
}

/// A controller owner reference to `obj` (no blockOwnerDeletion: the operator's finalizers do
/// the ordering, and it needs no `update` on the owner's finalizers subresource for it).
pub(crate) fn controller_ref<K: Resource<DynamicType = ()>>(obj: &K) -> Result<OwnerReference> {
    let mut owner = obj
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("uid"))?;
    owner.block_owner_deletion = None;
    Ok(owner)
}
