//! The SandboxClaim controller. A claim without env takes the oldest Ready member of its pool in
//! one write (a JSON patch that tests the member's pool label, then moves its labels and owner to
//! the claim); the pool refills on its own. A claim with env, or with no member Ready or booting,
//! gets a Sandbox booted for it under its own name. The claim's Ready mirrors its Sandbox's;
//! `lifecycle.shutdownTime` ends it; deleting the claim deletes its Sandbox (its finalizer, and a
//! sweep for claims the API server removed without waiting for it).

use super::plan::{self, Member};
use super::{key, warm_pool, PoolContext};
use crate::controller::{apply_status, publish};
use crate::error::{Error, Result, Step};
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::ResourceExt;
use microsandbox_crds::common::{condition, set_condition};
use microsandbox_crds::pool::{
    inject_env, template_hash, ClaimedSandbox, Launch, SandboxClaimStatus, ShutdownPolicy,
    CLAIMED_FROM_LABEL, CLAIM_LABEL, LAUNCH_LABEL, POOL_LABEL, TEMPLATE_HASH_LABEL,
};
use microsandbox_crds::sandbox::SandboxSpec;
use microsandbox_crds::{
    ConditionType, EventAction, Reason, Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

const CONTROLLER: &str = "sandbox_claim";
/// Finalizer on every claim: its Sandbox is deleted before it goes.
pub const FINALIZER: &str = "microsandbox.dev/claim";
/// Re-check of a claim whose pool or template is missing, or that waits for a member.
const RETRY: Duration = Duration::from_secs(5);
/// Members a reconcile tries before giving up to the next one (another operator took them).
const ADOPTION_TRIES: usize = 3;
/// How often claimed Sandboxes are checked for a claim gone without a cleanup.
const ORPHAN_SWEEP: Duration = Duration::from_secs(5);

/// Run the controller (and the sweep of orphaned claimed Sandboxes) until shutdown.
pub async fn run(
    pctx: Arc<PoolContext>,
    claims: Api<SandboxClaim>,
    sandboxes: impl Stream<Item = Arc<Sandbox>> + Send + 'static,
) {
    let controller = Controller::new(claims, watcher::Config::default());
    let claim_store = controller.store();
    let sweep = sweep_orphans(pctx.clone(), claim_store.clone());
    tokio::select! {
        () = control(controller, claim_store, pctx, sandboxes) => {}
        () = sweep => {}
    }
}

async fn control(
    controller: Controller<SandboxClaim>,
    claim_store: Store<SandboxClaim>,
    pctx: Arc<PoolContext>,
    sandboxes: impl Stream<Item = Arc<Sandbox>> + Send + 'static,
) {
    controller
        // Its Sandbox changing concerns a claim; a member becoming Ready concerns the claims of
        // its pool still waiting.
        .watches_shared_stream(sandboxes, move |s| {
            let ns = s.namespace();
            let labels = s.labels();
            if let Some(c) = labels.get(CLAIM_LABEL) {
                return vec![ObjectRef::<SandboxClaim>::new(c).within(&ns.unwrap_or_default())];
            }
            let (Some(pool), true) = (labels.get(POOL_LABEL), plan::is_ready(&s)) else {
                return vec![];
            };
            claim_store
                .state()
                .iter()
                .filter(|c| {
                    c.namespace() == ns
                        && &c.spec.warm_pool_ref.name == pool
                        && c.status
                            .as_ref()
                            .and_then(|st| st.sandbox.as_ref())
                            .is_none()
                })
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect()
        })
        .shutdown_on_signal()
        .run(
            reconcile,
            |obj, error: &Error, ctx| {
                tracing::warn!(claim = %key(obj.as_ref()), error = %error, "reconcile failed");
                ctx.ctx.metrics.reconcile_failed(CONTROLLER, error);
                Action::requeue(Duration::from_secs(5))
            },
            pctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(claim: Arc<SandboxClaim>, pctx: Arc<PoolContext>) -> Result<Action> {
    let _timer = pctx.ctx.metrics.reconcile_started(CONTROLLER);
    let ns = claim.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<SandboxClaim> = Api::namespaced(pctx.ctx.client.clone(), &ns);
    let has_finalizer = claim.finalizers().iter().any(|f| f == FINALIZER);
    if claim.metadata.deletion_timestamp.is_some() {
        if has_finalizer {
            cleanup(&claim, &pctx, &ns).await?;
            // False: gone already, nothing left to hold.
            let _present = patch_finalizers(&api, &claim, false).await?;
        }
        return Ok(Action::await_change());
    }
    // Bind first, then hold the finalizer: a claim is Ready two writes after it was created
    // (the member's patch and the status), not three. A client may delete the claim as soon as
    // it is Ready, before the finalizer is there: then the claim is gone at once, and its
    // Sandbox is deleted here rather than left to the garbage collector's owner-reference
    // sweep (which a cluster without kube-controller-manager never runs).
    let action = match apply(&claim, &api, &pctx, &ns).await {
        Ok(action) => action,
        // A reconcile of a claim whose latest events the cache has not shown yet can bind
        // after the claim was deleted: its status write then finds nothing. What it bound goes
        // with it (no later reconcile comes for an object gone from the cache).
        Err(e) if e.is_not_found() && is_gone(&api, &claim).await? => {
            tracing::debug!(claim = %key(claim.as_ref()), error = %e, "gone while reconciled; cleaning up");
            cleanup(&claim, &pctx, &ns).await?;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };
    if !has_finalizer && !patch_finalizers(&api, &claim, true).await? {
        tracing::debug!(claim = %key(claim.as_ref()), "gone before its finalizer; cleaning up");
        cleanup(&claim, &pctx, &ns).await?;
        return Ok(Action::await_change());
    }
    Ok(action)
}

/// Delete, every [`ORPHAN_SWEEP`], the claimed Sandboxes whose claim is gone although this
/// controller never cleaned up after it: the API server can remove a claim whose finalizer was
/// added at the moment it was deleted (kubernetes/kubernetes#77988; found by the e2e test that
/// deletes claims as soon as they are Ready), and no reconcile comes for an object gone from the
/// cache. A cluster's garbage collector would collect them by owner reference too, later; this
/// works where none runs.
async fn sweep_orphans(pctx: Arc<PoolContext>, claims: Store<SandboxClaim>) {
    if claims.wait_until_ready().await.is_err() || pctx.sandboxes.wait_until_ready().await.is_err()
    {
        std::future::pending::<()>().await;
    }
    loop {
        tokio::time::sleep(ORPHAN_SWEEP).await;
        let live = claims.state();
        let uids: HashSet<&str> = live
            .iter()
            .filter_map(|c| c.metadata.uid.as_deref())
            .collect();
        let sandboxes = pctx.sandboxes.state();
        for orphan in plan::orphans(sandboxes.iter().map(AsRef::as_ref), &uids) {
            if let Err(e) = delete_orphan(&pctx, &orphan).await {
                tracing::warn!(sandbox = %orphan.sandbox, claim = %orphan.claim, error = %e, "cannot delete the Sandbox of a gone claim");
            }
        }
    }
}

/// Delete `o` if the API server confirms its claim is gone (the caches may lag).
async fn delete_orphan(pctx: &PoolContext, o: &plan::Orphan) -> Result<()> {
    let claims: Api<SandboxClaim> = Api::namespaced(pctx.ctx.client.clone(), &o.namespace);
    let claim = claims.get_opt(&o.claim).await?;
    if claim.is_some_and(|c| c.metadata.uid.as_deref() == Some(o.claim_uid.as_str())) {
        return Ok(());
    }
    let sandboxes: Api<Sandbox> = Api::namespaced(pctx.ctx.client.clone(), &o.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: o.sandbox_uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match sandboxes.delete(&o.sandbox, &params).await {
        Ok(_) => {
            tracing::info!(namespace = %o.namespace, sandbox = %o.sandbox, claim = %o.claim, "its claim is gone; deleted");
            Ok(())
        }
        Err(kube::Error::Api(e)) if [404, 409].contains(&e.code) => Ok(()),
        Err(e) => Err(Error::step(Step::Delete, e.into())),
    }
}

/// Whether `claim` is gone from the API server (or replaced by another of its name).
async fn is_gone(api: &Api<SandboxClaim>, claim: &SandboxClaim) -> Result<bool> {
    Ok(api
        .get_opt(&claim.name_any())
        .await?
        .is_none_or(|now| now.metadata.uid != claim.metadata.uid))
}

/// Add or remove [`FINALIZER`] with a JSON patch that tests the list first (as kube-runtime's
/// finalizer helper does), so a concurrent change fails instead of being overwritten. False
/// when the claim is gone.
async fn patch_finalizers(
    api: &Api<SandboxClaim>,
    claim: &SandboxClaim,
    add: bool,
) -> Result<bool> {
    let current = claim.finalizers();
    let ops = if add {
        if current.is_empty() {
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ])
        } else {
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers", "value": current},
                {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
            ])
        }
    } else {
        let Some(i) = current.iter().position(|f| f == FINALIZER) else {
            return Ok(true);
        };
        serde_json::json!([
            {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": FINALIZER},
            {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
        ])
    };
    let patch: json_patch::Patch = serde_json::from_value(ops)?;
    match api
        .patch(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(Error::step(Step::Finalizer, e.into())),
    }
}

/// Where a claim stands, decided from the caches.
enum Standing {
    /// It holds this Sandbox.
    Bound(Arc<Sandbox>),
    /// It held one, which is gone.
    Lost(String),
    /// It holds none yet.
    Unbound,
}

impl std::fmt::Display for Standing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bound(s) => write!(f, "bound to {}", s.name_any()),
            Self::Lost(name) => write!(f, "lost {name}"),
            Self::Unbound => f.write_str("unbound"),
        }
    }
}

fn standing(claim: &SandboxClaim, pctx: &PoolContext, ns: &str) -> Standing {
    let name = claim.name_any();
    let held = pctx.sandboxes.state().into_iter().find(|s| {
        s.namespace().as_deref() == Some(ns)
            && s.labels().get(CLAIM_LABEL) == Some(&name)
            && owned_by_claim(s, claim)
    });
    // The claim's own cached status may predate the adoption this operator just wrote.
    let recorded = claim.status.as_ref().and_then(|s| s.sandbox.as_ref());
    match (held, recorded) {
        (Some(s), _) => Standing::Bound(s),
        (None, Some(was)) => Standing::Lost(was.name.clone()),
        (None, None) => match claim.metadata.uid.as_deref().and_then(|u| pctx.bound_to(u)) {
            Some(member) => Standing::Lost(member),
            None => Standing::Unbound,
        },
    }
}

fn owned_by_claim(s: &Sandbox, claim: &SandboxClaim) -> bool {
    s.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == claim.metadata.uid.as_ref())
}

async fn apply(
    claim: &SandboxClaim,
    api: &Api<SandboxClaim>,
    pctx: &PoolContext,
    ns: &str,
) -> Result<Action> {
    let now = Timestamp::now();
    let generation = claim.metadata.generation;
    let mut status = claim.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let not_ready = |reason: Reason, message: String| {
        condition(
            ConditionType::Ready,
            false,
            reason,
            message,
            generation,
            Time(now),
        )
    };
    if let Err(e) = claim.validate() {
        set_condition(
            &mut status.conditions,
            not_ready(Reason::InvalidSpec, e.to_string()),
        );
        return write_status(api, claim, status, Action::await_change()).await;
    }
    // Expiry first: an expired claim binds nothing.
    let lifecycle = claim.spec.lifecycle.clone().unwrap_or_default();
    if let Some(at) = lifecycle.shutdown_time.as_ref().map(|t| t.0) {
        if at <= now {
            cleanup(claim, pctx, ns).await?;
            if lifecycle.shutdown_policy == ShutdownPolicy::Delete {
                api.delete(&claim.name_any(), &DeleteParams::background())
                    .await
                    .map_err(|e| Error::step(Step::Delete, e.into()))?;
                return Ok(Action::await_change());
            }
            set_condition(
                &mut status.conditions,
                not_ready(
                    Reason::ClaimExpired,
                    format!("lifecycle.shutdownTime {at} passed; its Sandbox was deleted"),
                ),
            );
            return write_status(api, claim, status, Action::await_change()).await;
        }
    }
    let expiry = lifecycle.shutdown_time.as_ref().map(|t| {
        let left = t.0.duration_since(now).as_secs().max(1);
        Action::requeue(Duration::from_secs(u64::try_from(left).unwrap_or(1)))
    });
    let settled = || expiry.clone().unwrap_or_else(Action::await_change);
    let standing = standing(claim, pctx, ns);
    tracing::debug!(claim = %key(claim), %standing, "reconcile");
    match standing {
        Standing::Bound(s) => {
            mirror(&mut status, &s, generation, now);
            write_status(api, claim, status, settled()).await
        }
        Standing::Lost(name) => {
            // The cache may not show an adoption this operator just wrote: ask the apiserver.
            let sandboxes: Api<Sandbox> = Api::namespaced(pctx.ctx.client.clone(), ns);
            match sandboxes.get_opt(&name).await? {
                Some(s) if owned_by_claim(&s, claim) => {
                    mirror(&mut status, &s, generation, now);
                    write_status(api, claim, status, settled()).await
                }
                _ => {
                    set_condition(
                        &mut status.conditions,
                        not_ready(
                            Reason::SandboxMissing,
                            format!("Sandbox {name:?} of this claim was deleted; delete the claim and create a new one"),
                        ),
                    );
                    write_status(api, claim, status, Action::await_change()).await
                }
            }
        }
        Standing::Unbound => bind(claim, api, pctx, ns, status, now).await,
    }
}

/// Take a member or boot a Sandbox for an unbound claim.
async fn bind(
    claim: &SandboxClaim,
    api: &Api<SandboxClaim>,
    pctx: &PoolContext,
    ns: &str,
    mut status: SandboxClaimStatus,
    now: Timestamp,
) -> Result<Action> {
    let generation = claim.metadata.generation;
    let not_ready = |reason: Reason, message: String| {
        condition(
            ConditionType::Ready,
            false,
            reason,
            message,
            generation,
            Time(now),
        )
    };
    let pool_name = &claim.spec.warm_pool_ref.name;
    let Some(pool) = pctx
        .pools
        .get(&ObjectRef::<SandboxWarmPool>::new(pool_name).within(ns))
    else {
        set_condition(
            &mut status.conditions,
            not_ready(
                Reason::WarmPoolNotFound,
                format!("SandboxWarmPool {pool_name:?} does not exist in namespace {ns:?}"),
            ),
        );
        return write_status(api, claim, status, Action::requeue(RETRY)).await;
    };
    let template_name = &pool.spec.sandbox_template_ref.name;
    let Some(template) = pctx
        .templates
        .get(&ObjectRef::<SandboxTemplate>::new(template_name).within(ns))
    else {
        set_condition(
            &mut status.conditions,
            not_ready(
                Reason::TemplateNotFound,
                format!("SandboxTemplate {template_name:?} of pool {pool_name:?} does not exist"),
            ),
        );
        return write_status(api, claim, status, Action::requeue(RETRY)).await;
    };
    let spec = match inject_env(&template.spec, &claim.spec.env) {
        Ok(spec) => spec,
        Err(message) => {
            set_condition(
                &mut status.conditions,
                not_ready(Reason::EnvVarsInjectionRejected, message),
            );
            return write_status(api, claim, status, Action::await_change()).await;
        }
    };
    let sandboxes: Api<Sandbox> = Api::namespaced(pctx.ctx.client.clone(), ns);
    let owner = warm_pool::controller_ref(claim)?;
    // Warm: only without env (a running Sandbox's env cannot change).
    if claim.spec.env.is_empty() {
        let members: Vec<Member> = pctx
            .sandboxes
            .state()
            .iter()
            .filter(|s| {
                s.namespace().as_deref() == Some(ns)
                    && s.labels().get(POOL_LABEL) == Some(pool_name)
                    && s.owner_references().iter().any(|o| {
                        o.controller == Some(true) && Some(&o.uid) == pool.metadata.uid.as_ref()
                    })
            })
            .map(|s| Member::of(s))
            .collect();
        for _ in 0..ADOPTION_TRIES {
            let Some(m) = plan::pick(&members, |n| pctx.is_taken(&format!("{ns}/{n}"))) else {
                break;
            };
            let member = m.name.clone();
            if !pctx.take(&format!("{ns}/{member}")) {
                continue;
            }
            match adopt(&sandboxes, claim, &owner, m, &template, pool_name, now).await {
                Ok(s) => {
                    if let Some(uid) = claim.metadata.uid.as_deref() {
                        pctx.record_binding(uid, &member);
                    }
                    publish(
                        &pctx.ctx,
                        claim,
                        EventType::Normal,
                        Reason::SandboxAdopted,
                        EventAction::Claim,
                        format!("took Sandbox {member:?} from pool {pool_name:?}"),
                    )
                    .await;
                    tracing::debug!(claim = %key(claim), %member, "adopted");
                    status.sandbox = Some(ClaimedSandbox { name: member });
                    status.launch = Some(Launch::Warm);
                    status.claimed_at = Some(Time(now));
                    mirror(&mut status, &s, generation, now);
                    return write_status(api, claim, status, Action::await_change()).await;
                }
                // Another claim (or operator) took it first, or it was deleted: try the next.
                Err(kube::Error::Api(e)) if [404, 409, 422].contains(&e.code) => {
                    tracing::debug!(claim = %key(claim), %member, code = e.code, "member gone; next");
                }
                Err(e) => {
                    pctx.release(&format!("{ns}/{member}"));
                    return Err(Error::step(Step::Adopt, e.into()));
                }
            }
        }
        let age = claim
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| now.duration_since(t.0).unsigned_abs())
            .unwrap_or_default();
        if plan::wait_for_member(&members, age) {
            set_condition(
                &mut status.conditions,
                not_ready(
                    Reason::SandboxNotReady,
                    format!("waiting for a member of pool {pool_name:?} to be Ready"),
                ),
            );
            return write_status(api, claim, status, Action::requeue(RETRY)).await;
        }
    }
    // Cold: a Sandbox of the claim's name, with the template's full lifetime.
    let sandbox = cold_sandbox(claim, &template, pool_name, spec)?;
    match sandboxes.create(&PostParams::default(), &sandbox).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = sandboxes.get_opt(&claim.name_any()).await?;
            if !existing.is_some_and(|s| owned_by_claim(&s, claim)) {
                set_condition(
                    &mut status.conditions,
                    not_ready(
                        Reason::CreateFailed,
                        format!("a Sandbox named {:?} exists and is not this claim's; delete it or name the claim differently", claim.name_any()),
                    ),
                );
                return write_status(api, claim, status, Action::requeue(RETRY)).await;
            }
        }
        Err(e) => return Err(Error::step(Step::ColdStart, e.into())),
    }
    publish(
        &pctx.ctx,
        claim,
        EventType::Normal,
        Reason::ColdStart,
        EventAction::Claim,
        if claim.spec.env.is_empty() {
            format!(
                "no member of pool {pool_name:?} was free; booting Sandbox {:?}",
                claim.name_any()
            )
        } else {
            format!("the claim sets env; booting Sandbox {:?}", claim.name_any())
        },
    )
    .await;
    status.sandbox = Some(ClaimedSandbox {
        name: claim.name_any(),
    });
    status.launch = Some(Launch::Cold);
    status.claimed_at = Some(Time(now));
    set_condition(
        &mut status.conditions,
        not_ready(Reason::SandboxNotReady, "booting".into()),
    );
    write_status(api, claim, status, Action::await_change()).await
}

/// The one write that moves `member` from its pool to `claim`.
async fn adopt(
    sandboxes: &Api<Sandbox>,
    claim: &SandboxClaim,
    owner: &OwnerReference,
    member: &Member,
    template: &SandboxTemplate,
    pool: &str,
    now: Timestamp,
) -> kube::Result<Sandbox> {
    let started = member.started;
    let lifetime = plan::claimed_lifetime(template.spec.sandbox.lifetime.as_ref(), started, now);
    let patch = plan::adoption_patch(
        pool,
        &claim.name_any(),
        &serde_json::to_value(owner).unwrap_or_default(),
        lifetime.as_ref(),
    );
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    sandboxes
        .patch(
            &member.name,
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
}

/// A Sandbox booted for `claim` under its name.
fn cold_sandbox(
    claim: &SandboxClaim,
    template: &SandboxTemplate,
    pool: &str,
    spec: SandboxSpec,
) -> Result<Sandbox> {
    Ok(Sandbox {
        metadata: ObjectMeta {
            name: Some(claim.name_any()),
            namespace: claim.namespace(),
            labels: Some(BTreeMap::from([
                (
                    TEMPLATE_HASH_LABEL.to_string(),
                    template_hash(&template.spec),
                ),
                (CLAIMED_FROM_LABEL.to_string(), pool.to_string()),
                (CLAIM_LABEL.to_string(), claim.name_any()),
                (LAUNCH_LABEL.to_string(), Launch::Cold.as_str().to_string()),
            ])),
            annotations: Some(BTreeMap::from([(
                warm_pool::TEMPLATE_ANNOTATION.to_string(),
                template.name_any(),
            )])),
            owner_references: Some(vec![warm_pool::controller_ref(claim)?]),
            ..Default::default()
        },
        spec,
        status: None,
    })
}

/// Copy the Sandbox's name and Ready condition into the claim's status.
fn mirror(status: &mut SandboxClaimStatus, s: &Sandbox, generation: Option<i64>, now: Timestamp) {
    status.sandbox = Some(ClaimedSandbox { name: s.name_any() });
    if status.launch.is_none() {
        status.launch = match s.labels().get(LAUNCH_LABEL).map(String::as_str) {
            Some("cold") => Some(Launch::Cold),
            _ => Some(Launch::Warm),
        };
    }
    if status.claimed_at.is_none() {
        status.claimed_at = Some(Time(now));
    }
    let ready = s
        .status
        .as_ref()
        .and_then(|st| st.conditions.iter().find(|c| c.type_ == "Ready"));
    let c = match ready {
        Some(c) if c.status == "True" => {
            let reason = c.reason.parse().unwrap_or(Reason::Running);
            condition(
                ConditionType::Ready,
                true,
                reason,
                format!("Sandbox {:?} is Ready", s.name_any()),
                generation,
                Time(now),
            )
        }
        other => condition(
            ConditionType::Ready,
            false,
            Reason::SandboxNotReady,
            match other {
                Some(c) => format!("Sandbox {:?}: {}: {}", s.name_any(), c.reason, c.message),
                None => format!("Sandbox {:?} has not reported yet", s.name_any()),
            },
            generation,
            Time(now),
        ),
    };
    set_condition(&mut status.conditions, c);
}

async fn write_status(
    api: &Api<SandboxClaim>,
    claim: &SandboxClaim,
    status: SandboxClaimStatus,
    then: Action,
) -> Result<Action> {
    if claim.status.as_ref() != Some(&status) {
        apply_status(api, claim, serde_json::to_value(&status)?)
            .await
            .map_err(|e| Error::step(Step::UpdateStatus, e))?;
    }
    Ok(then)
}

/// Delete the claim's Sandbox (found by label or status; only if the claim owns it).
async fn cleanup(claim: &SandboxClaim, pctx: &PoolContext, ns: &str) -> Result<()> {
    // Asked of the API server, not the caches: a claim deleted the moment it was Ready may be
    // cleaned up before the cache shows the member it took (found by a test that deletes
    // claims from a watch; the Sandbox stayed).
    let sandboxes: Api<Sandbox> = Api::namespaced(pctx.ctx.client.clone(), ns);
    let mine = ListParams::default().labels(&format!("{CLAIM_LABEL}={}", claim.name_any()));
    let mut names: Vec<String> = sandboxes
        .list(&mine)
        .await
        .map_err(|e| Error::step(Step::Delete, e.into()))?
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    if let Some(s) = claim.status.as_ref().and_then(|s| s.sandbox.as_ref()) {
        names.push(s.name.clone());
    }
    names.sort();
    names.dedup();
    tracing::debug!(claim = %key(claim), sandboxes = ?names, "cleanup");
    for name in names {
        match sandboxes.get_opt(&name).await? {
            Some(s) if owned_by_claim(&s, claim) && s.metadata.deletion_timestamp.is_none() => {
                match sandboxes.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => tracing::info!(claim = %key(claim), sandbox = %name, "deleted"),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(Error::step(Step::Delete, e.into())),
                }
            }
            _ => {}
        }
    }
    Ok(())
}
