//! Warm pools in cluster mode: the SandboxWarmPool controller keeps `replicas` Sandboxes of a
//! SandboxTemplate booted ([`warm_pool`]); the SandboxClaim controller moves a Ready one to a
//! claim in one write, or boots one for it ([`claim`]). Decisions are pure ([`plan`]).
//!
//! Both read three caches filled by one watch each: templates, pools, and the Sandboxes that carry
//! a template-hash label (members and claimed ones; other Sandboxes are not watched here).

pub mod claim;
pub mod plan;
pub mod warm_pool;

use super::Context;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use microsandbox_crds::pool::TEMPLATE_HASH_LABEL;
use microsandbox_crds::{Sandbox, SandboxClaim, SandboxTemplate, SandboxWarmPool};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a create or an adoption the cache has not shown yet is assumed to be in flight.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);
/// Events buffered per subscriber of a shared cache.
const SHARED_BUFFER: usize = 1024;

/// State the pool and claim controllers share.
pub struct PoolContext {
    pub ctx: Arc<Context>,
    pub templates: Store<SandboxTemplate>,
    pub pools: Store<SandboxWarmPool>,
    /// Sandboxes made from templates (label [`TEMPLATE_HASH_LABEL`]).
    pub sandboxes: Store<Sandbox>,
    /// Members created per pool (`ns/pool`) that the cache may not show yet.
    creating: Mutex<HashMap<String, Vec<(String, Instant)>>>,
    /// Members being taken by a claim (`ns/member`), so two claims never pick the same one.
    taken: Mutex<HashMap<String, Instant>>,
    /// Members this operator moved to a claim (by claim uid), until the caches show it.
    bound: Mutex<HashMap<String, (String, Instant)>>,
}

impl PoolContext {
    /// Record a member just created for `pool`.
    fn expect_created(&self, pool: &str, name: String) {
        if let Ok(mut c) = self.creating.lock() {
            c.entry(pool.to_string())
                .or_default()
                .push((name, Instant::now()));
        }
    }

    /// Members of `pool` created but not yet in `seen` (forgetting old expectations).
    fn in_flight(&self, pool: &str, seen: impl Fn(&str) -> bool) -> usize {
        let Ok(mut c) = self.creating.lock() else {
            return 0;
        };
        let Some(list) = c.get_mut(pool) else {
            return 0;
        };
        list.retain(|(name, at)| at.elapsed() < EXPECTATION_TTL && !seen(name));
        list.len()
    }

    /// Reserve `member` for one claim; false if another has it.
    fn take(&self, member: &str) -> bool {
        let Ok(mut t) = self.taken.lock() else {
            return false;
        };
        t.retain(|_, at| at.elapsed() < EXPECTATION_TTL);
        t.insert(member.to_string(), Instant::now()).is_none()
    }

    fn is_taken(&self, member: &str) -> bool {
        self.taken
            .lock()
            .map(|t| {
                t.get(member)
                    .is_some_and(|at| at.elapsed() < EXPECTATION_TTL)
            })
            .unwrap_or(false)
    }

    /// Remember that the claim of uid `claim` now holds `member`.
    fn record_binding(&self, claim: &str, member: &str) {
        if let Ok(mut b) = self.bound.lock() {
            b.retain(|_, (_, at)| at.elapsed() < EXPECTATION_TTL);
            b.insert(claim.to_string(), (member.to_string(), Instant::now()));
        }
    }

    /// The member this operator recently moved to the claim of uid `claim`.
    fn bound_to(&self, claim: &str) -> Option<String> {
        let b = self.bound.lock().ok()?;
        b.get(claim)
            .filter(|(_, at)| at.elapsed() < EXPECTATION_TTL)
            .map(|(member, _)| member.clone())
    }

    fn release(&self, member: &str) {
        if let Ok(mut t) = self.taken.lock() {
            t.remove(member);
        }
    }
}

/// `ns/name` of an object.
pub(crate) fn key<K: kube::Resource>(o: &K) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

/// A cache shared by several controllers: its reader, a subscription for each, and the future
/// that drives its watch.
fn shared<K>(
    api: Api<K>,
    config: watcher::Config,
    subscribers: usize,
) -> (
    Store<K>,
    Vec<impl futures::Stream<Item = Arc<K>> + Send + 'static>,
    impl std::future::Future<Output = ()> + Send,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store_shared(SHARED_BUFFER);
    let subs = (0..subscribers)
        .map(|_| writer.subscribe().expect("a shared store has subscribers"))
        .collect();
    let drive = watcher(api, config)
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .default_backoff()
        .reflect_shared(writer)
        .for_each(|_| futures::future::ready(()));
    (reader, subs, drive)
}

/// Run both controllers until shutdown. `ns` limits them to one namespace (None: all).
pub async fn run(ctx: Arc<Context>, ns: Option<&str>) {
    fn api<K: kube::Resource<Scope = kube::core::NamespaceResourceScope>>(
        client: &kube::Client,
        ns: Option<&str>,
    ) -> Api<K>
    where
        K::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let client = ctx.client.clone();
    let (templates, mut template_subs, templates_drive) = shared(
        api::<SandboxTemplate>(&client, ns),
        watcher::Config::default(),
        1,
    );
    let (pools, mut pool_subs, pools_drive) = shared(
        api::<SandboxWarmPool>(&client, ns),
        watcher::Config::default(),
        1,
    );
    let (sandboxes, mut sandbox_subs, sandboxes_drive) = shared(
        api::<Sandbox>(&client, ns),
        watcher::Config::default().labels(TEMPLATE_HASH_LABEL),
        2,
    );
    let pctx = Arc::new(PoolContext {
        ctx,
        templates,
        pools,
        sandboxes,
        creating: Mutex::default(),
        taken: Mutex::default(),
        bound: Mutex::default(),
    });
    let pools_controller = warm_pool::run(
        pctx.clone(),
        pool_subs.remove(0),
        template_subs.remove(0),
        sandbox_subs.remove(0),
    );
    let claims_controller = claim::run(
        pctx.clone(),
        api::<SandboxClaim>(&client, ns),
        sandbox_subs.remove(0),
    );
    tokio::join!(
        templates_drive,
        pools_drive,
        sandboxes_drive,
        pools_controller,
        claims_controller
    );
}
