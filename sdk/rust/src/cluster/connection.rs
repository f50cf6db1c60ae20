//! A connection to a cluster: the Kubernetes calls of cluster mode (create and watch Sandbox,
//! Secret and Volume objects) and the node-agent client of a Ready Sandbox.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret as CoreSecret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use kube::Resource as _;
use microsandbox_client::api::{CreateSandbox, SandboxInfo};
use microsandbox_client::{AgentClient, Endpoint, Relay};
use microsandbox_crds::pool::SandboxClaim;
use microsandbox_crds::sandbox::Sandbox as SandboxObject;
use microsandbox_crds::volume::Volume as VolumeObject;
use secrecy::ExposeSecret;

use super::object::{self, Outcome, Placement};
use super::relay::ApiServerRelay;
use super::{AgentAccess, Cluster, ClusterError, ClusterErrorKind};

/// An open cluster: cheap to clone (clones share the Kubernetes client).
#[derive(Clone)]
pub struct ClusterConnection(Arc<Inner>);

struct Inner {
    options: Cluster,
    client: kube::Client,
    namespace: String,
    /// The user's bearer token (kubeconfig token or token file, or the pod's ServiceAccount
    /// token), for node-agent calls. `None` with client-certificate kubeconfigs.
    token: Option<String>,
    server: String,
    relay: Arc<ApiServerRelay>,
}

impl std::fmt::Debug for ClusterConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConnection")
            .field("server", &self.0.server)
            .field("namespace", &self.0.namespace)
            .finish()
    }
}

/// A namespaced custom resource the SDK creates and deletes.
trait Object:
    kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}
impl Object for SandboxObject {}
impl Object for SandboxClaim {}
impl Object for VolumeObject {}
impl Object for microsandbox_crds::SandboxSnapshot {}
impl Object for microsandbox_crds::Secret {}
impl Object for CoreSecret {}

fn config_error(message: String) -> ClusterError {
    ClusterError::new(ClusterErrorKind::Config, message)
}

/// The error of an API call, by HTTP status (Volumes have kinds of their own).
fn api_error<K: Object>(what: &str, e: kube::Error) -> ClusterError {
    let volume = K::kind(&()) == VolumeObject::kind(&());
    match &e {
        kube::Error::Api(s) => {
            let kind = match s.code {
                401 | 403 => ClusterErrorKind::Forbidden,
                404 if volume => ClusterErrorKind::VolumeNotFound,
                409 if volume => ClusterErrorKind::VolumeAlreadyExists,
                404 => ClusterErrorKind::NotFound,
                409 => ClusterErrorKind::AlreadyExists,
                400 | 422 => ClusterErrorKind::Invalid,
                _ => ClusterErrorKind::Api,
            };
            ClusterError::new(kind, format!("{what}: {}", s.message))
        }
        _ => ClusterError::new(ClusterErrorKind::Api, format!("{what}: {e}")),
    }
}

/// How to reach the node-agent of a Sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `status.agentEndpoint`.
    Direct(String),
    /// `status.agentProxy` through the API server.
    Proxy(String),
}

/// The route to the agent of Sandbox `name` that announces `endpoint` and `proxy`, as `access`
/// asks (`Auto`: direct inside a pod, else the proxy when offered). Pure.
pub fn route(
    name: &str,
    access: AgentAccess,
    in_pod: bool,
    endpoint: Option<String>,
    proxy: Option<String>,
) -> Result<Route, ClusterError> {
    if endpoint.is_none() && proxy.is_none() {
        return Err(ClusterError::new(
            ClusterErrorKind::NotRunning,
            format!("Sandbox {name} has no running sandbox on a node yet"),
        ));
    }
    let access = match access {
        AgentAccess::Auto if (in_pod && endpoint.is_some()) || proxy.is_none() => {
            AgentAccess::Direct
        }
        AgentAccess::Auto => AgentAccess::Proxy,
        other => other,
    };
    match access {
        AgentAccess::Proxy => proxy.map(Route::Proxy).ok_or_else(|| {
            config_error(format!(
                "the node-agent of Sandbox {name} announces no API server proxy path \
                 (status.agentProxy); it needs POD_NAME and --listen"
            ))
        }),
        _ => endpoint.map(Route::Direct).ok_or_else(|| {
            config_error(format!(
                "the node-agent of Sandbox {name} announces no endpoint (status.agentEndpoint)"
            ))
        }),
    }
}

/// Deletes an object this call created unless disarmed: a create that fails, times out or is
/// dropped (a cancelled task, a Python `CancelledError`) leaves nothing behind.
struct DeleteOnDrop<K: Object> {
    api: Api<K>,
    name: String,
    armed: bool,
}

impl<K: Object> DeleteOnDrop<K> {
    /// Delete it now (the create failed): once this returns, the object is being deleted.
    async fn delete_now(mut self) {
        self.armed = false;
        match self.api.delete(&self.name, &DeleteParams::default()).await {
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => warn(&format!(
                "cannot delete {} {}: {e}",
                K::kind(&()),
                self.name
            )),
            Ok(_) => {}
        }
    }

    /// `result`, after deleting the object if it is an error; disarmed either way.
    async fn settle<T>(mut self, result: Result<T, ClusterError>) -> Result<T, ClusterError> {
        match result {
            Ok(v) => {
                self.armed = false;
                Ok(v)
            }
            Err(e) => {
                self.delete_now().await;
                Err(e)
            }
        }
    }
}

impl<K: Object> Drop for DeleteOnDrop<K> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (api, name) = (self.api.clone(), std::mem::take(&mut self.name));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
                    if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                        warn(&format!("cannot delete {} {name}: {e}", K::kind(&())));
                    }
                }
            });
        }
    }
}

/// The SDK has no logger of its own: a failed cleanup goes to stderr.
fn warn(message: &str) {
    eprintln!("microsandbox: {message}");
}

impl ClusterConnection {
    pub(super) async fn open(options: Cluster) -> Result<ClusterConnection, ClusterError> {
        let opts = KubeConfigOptions {
            context: options.context.clone(),
            ..Default::default()
        };
        let config = match (&options.kubeconfig, &options.context) {
            (Some(path), _) => {
                let kc = Kubeconfig::read_from(path)
                    .map_err(|e| config_error(format!("kubeconfig {}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kc, &opts)
                    .await
                    .map_err(|e| config_error(format!("kubeconfig {}: {e}", path.display())))?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&opts)
                .await
                .map_err(|e| config_error(format!("kubeconfig: {e}")))?,
            (None, None) => kube::Config::infer().await.map_err(|e| {
                config_error(format!(
                    "no kubeconfig ($KUBECONFIG, ~/.kube/config) and not in a pod: {e}"
                ))
            })?,
        };
        let token = match (&config.auth_info.token, &config.auth_info.token_file) {
            (Some(t), _) => Some(t.expose_secret().to_string()),
            (None, Some(f)) => std::fs::read_to_string(f)
                .ok()
                .map(|t| t.trim().to_string()),
            (None, None) => None,
        };
        let namespace = options
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let server = config.cluster_url.to_string();
        let relay = ApiServerRelay::new(&config)
            .map_err(|e| config_error(format!("Kubernetes client: {e}")))?;
        let client = kube::Client::try_from(config)
            .map_err(|e| config_error(format!("Kubernetes client: {e}")))?;
        Ok(ClusterConnection(Arc::new(Inner {
            options,
            client,
            namespace,
            token,
            server,
            relay: Arc::new(relay),
        })))
    }

    fn api<K: Object>(&self) -> Api<K> {
        Api::namespaced(self.0.client.clone(), &self.0.namespace)
    }

    /// The namespace of its objects.
    pub fn namespace(&self) -> &str {
        &self.0.namespace
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.0.server
    }

    /// The options it was opened with.
    pub fn options(&self) -> &Cluster {
        &self.0.options
    }

    /// The user's bearer token for node-agent calls, if the configuration has one.
    pub fn token(&self) -> Option<&str> {
        self.0.token.as_deref()
    }

    /// The node-agent client of Ready Sandbox `obj` and the sandbox's name in that agent's API,
    /// reached as the options' [`AgentAccess`] says.
    pub fn agent_of(&self, obj: &SandboxObject) -> Result<(AgentClient, String), ClusterError> {
        let name = obj.metadata.name.clone().unwrap_or_default();
        let status = obj.status.clone().unwrap_or_default();
        let not_running = || {
            ClusterError::new(
                ClusterErrorKind::NotRunning,
                format!("Sandbox {name} has no running sandbox on a node yet"),
            )
        };
        let target = status
            .agent
            .as_ref()
            .map(|a| a.sandbox.clone())
            .ok_or_else(not_running)?;
        let token = self.0.token.clone().ok_or_else(|| {
            config_error(
                "this kubeconfig authenticates without a bearer token (client certificates?), \
                 which node-agents cannot check; use a token, e.g. `kubectl create token <sa>`"
                    .into(),
            )
        })?;
        let in_pod = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        let client = match route(
            &name,
            self.0.options.agent_access,
            in_pod,
            status.agent_endpoint,
            status.agent_proxy,
        )? {
            Route::Proxy(path) => self.relayed_client(&path, Some(token))?,
            Route::Direct(endpoint) => {
                let endpoint: Endpoint = endpoint
                    .parse()
                    .map_err(|e: String| config_error(format!("agent endpoint: {e}")))?;
                AgentClient::new(endpoint, Some(token))
            }
        };
        Ok((client, target))
    }

    /// A node-agent client through the API server's pod proxy: `proxy` is a Sandbox's
    /// `status.agentProxy`, `token` the user's bearer token for the agent.
    pub fn relayed_client(
        &self,
        proxy: &str,
        token: Option<String>,
    ) -> Result<AgentClient, ClusterError> {
        if !proxy.starts_with("/api/") {
            return Err(ClusterError::new(
                ClusterErrorKind::Invalid,
                format!("{proxy:?} is not an API server proxy path"),
            ));
        }
        let name = format!("{}{proxy}", self.0.server.trim_end_matches('/'));
        let relay: Arc<dyn Relay> = self.0.relay.clone();
        Ok(AgentClient::relayed(relay, proxy, token, name))
    }

    /// Create Sandbox `req.name` and wait until it is Ready (at most the ready timeout); the
    /// object, its agent's client and the sandbox as that agent reports it. Deletes the object
    /// again if anything fails or the future is dropped (never an object someone else made: a
    /// name taken fails before this call owns anything).
    pub async fn create_sandbox(
        &self,
        req: &CreateSandbox,
    ) -> Result<(SandboxObject, AgentClient, SandboxInfo), ClusterError> {
        if let Some(pool) = req.pool.as_deref() {
            return self.claim_sandbox(req, pool).await;
        }
        let object = object::sandbox_object(&self.0.namespace, req)?;
        let (created, guard) = self.create_owned(&req.name, &object).await?;
        let started = self.start(self.api(), &created, req).await;
        guard.settle(started).await
    }

    /// [`Self::create_sandbox`] with `pool`: a SandboxClaim `req.name` of that SandboxWarmPool,
    /// then its Sandbox once the claim is Ready (taken warm from the pool, or booted for it).
    /// Deletes the claim (and so its Sandbox) again if anything fails or the future is dropped.
    async fn claim_sandbox(
        &self,
        req: &CreateSandbox,
        pool: &str,
    ) -> Result<(SandboxObject, AgentClient, SandboxInfo), ClusterError> {
        let claim = object::claim_object(&self.0.namespace, req, pool)?;
        let (_, guard) = self.create_owned(&req.name, &claim).await?;
        let claimed = async {
            let ready = self
                .wait(
                    self.api::<SandboxClaim>(),
                    &req.name,
                    self.0.options.ready_timeout,
                    object::claim_outcome,
                )
                .await?;
            let name = ready
                .status
                .and_then(|s| s.sandbox)
                .map(|s| s.name)
                .ok_or_else(|| {
                    ClusterError::new(
                        ClusterErrorKind::Api,
                        format!("SandboxClaim {} is Ready without a Sandbox", req.name),
                    )
                })?;
            let sandbox: SandboxObject = self.get(&name).await?;
            let (client, target) = self.agent_of(&sandbox)?;
            let info = client
                .get(&target)
                .await
                .map_err(|e| ClusterError::new(ClusterErrorKind::Api, e.to_string()))?;
            Ok((sandbox, client, info))
        };
        guard.settle(claimed.await).await
    }

    /// Create `object` (named `name`): the object as created, and the guard that deletes it again
    /// unless the caller's steps succeed (a failure, timeout or dropped future leaves nothing).
    async fn create_owned<K: Object>(
        &self,
        name: &str,
        object: &K,
    ) -> Result<(K, DeleteOnDrop<K>), ClusterError> {
        let api = self.api::<K>();
        let created = api
            .create(&PostParams::default(), object)
            .await
            .map_err(|e| api_error::<K>(&format!("create {} {name}", K::kind(&())), e))?;
        let guard = DeleteOnDrop {
            api,
            name: name.to_string(),
            armed: true,
        };
        Ok((created, guard))
    }

    /// [`Self::create_owned`], then wait (at most the ready timeout) until `outcome` is no
    /// longer Waiting; deleted again unless it became Ready.
    async fn create_and_wait<K: Object>(
        &self,
        name: &str,
        object: &K,
        outcome: fn(&K) -> Outcome,
    ) -> Result<K, ClusterError> {
        let (_, guard) = self.create_owned(name, object).await?;
        let ready = self
            .wait(self.api(), name, self.0.options.ready_timeout, outcome)
            .await;
        guard.settle(ready).await
    }

    /// The steps of [`Self::create_sandbox`] after the object exists.
    async fn start(
        &self,
        api: Api<SandboxObject>,
        created: &SandboxObject,
        req: &CreateSandbox,
    ) -> Result<(SandboxObject, AgentClient, SandboxInfo), ClusterError> {
        if !req.secrets.is_empty() {
            let uid = created.metadata.uid.clone().unwrap_or_default();
            self.create_secrets(&req.name, &uid, req).await?;
        }
        let ready = self
            .wait(
                api,
                &req.name,
                self.0.options.ready_timeout,
                object::sandbox_outcome,
            )
            .await?;
        let (client, target) = self.agent_of(&ready)?;
        let info = client
            .get(&target)
            .await
            .map_err(|e| ClusterError::new(ClusterErrorKind::Api, e.to_string()))?;
        if let Some(dir) = req.workdir.as_deref().filter(|d| !d.is_empty()) {
            // As an image's WORKDIR: created if the image lacks it.
            client
                .fs_mkdir(&target, dir, true)
                .await
                .map_err(|e| ClusterError::new(ClusterErrorKind::Api, e.to_string()))?;
        }
        Ok((ready, client, info))
    }

    /// The core Secret and the Secret (microsandbox.dev) of each secret of `req`, owned by the
    /// Sandbox. The values go to the API server only; the operator seals them to the node.
    async fn create_secrets(
        &self,
        sandbox: &str,
        uid: &str,
        req: &CreateSandbox,
    ) -> Result<(), ClusterError> {
        let (cores, objects) = (
            self.api::<CoreSecret>(),
            self.api::<microsandbox_crds::Secret>(),
        );
        let post = PostParams::default();
        let names = object::secret_names(sandbox, &req.secrets);
        for (name, s) in names.iter().zip(&req.secrets) {
            let (core, object) = object::secret_objects(sandbox, uid, name, s);
            cores.create(&post, &core).await.map_err(|e| {
                api_error::<CoreSecret>(&format!("create core Secret {name} (for {})", s.env), e)
            })?;
            objects.create(&post, &object).await.map_err(|e| {
                api_error::<microsandbox_crds::Secret>(
                    &format!("create Secret {name} (for {})", s.env),
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// Watch `name` until `outcome` stops saying Waiting, at most `timeout`: the object when
    /// Ready; `Failed` with the reason; on timeout `Unschedulable` with the last scheduling
    /// reason, else `Timeout`.
    async fn wait<K: Object>(
        &self,
        api: Api<K>,
        name: &str,
        timeout: Duration,
        outcome: fn(&K) -> Outcome,
    ) -> Result<K, ClusterError> {
        let kind = K::kind(&());
        let done =
            move |o: Option<&K>| o.is_none_or(|o| !matches!(outcome(o), Outcome::Waiting(_)));
        let waited = tokio::time::timeout(timeout, await_condition(api.clone(), name, done)).await;
        let obj = match waited {
            Ok(Ok(Some(obj))) => obj,
            Ok(Ok(None)) => {
                return Err(ClusterError::new(
                    ClusterErrorKind::NotFound,
                    format!("{kind} {name} was deleted while starting"),
                ))
            }
            Ok(Err(e)) => {
                return Err(ClusterError::new(
                    ClusterErrorKind::Api,
                    format!("watch {kind} {name}: {e}"),
                ))
            }
            Err(_) => {
                let last = api
                    .get_opt(name)
                    .await
                    .map_err(|e| api_error::<K>(&format!("get {kind} {name}"), e))?;
                return Err(match last.as_ref().map(outcome) {
                    Some(Outcome::Waiting(Some((reason, message)))) => ClusterError::new(
                        ClusterErrorKind::Unschedulable,
                        format!("{reason}: {message}"),
                    ),
                    _ => ClusterError::new(
                        ClusterErrorKind::Timeout,
                        format!("{kind} {name} not Ready after {} s", timeout.as_secs_f64()),
                    ),
                });
            }
        };
        match outcome(&obj) {
            Outcome::Failed(why) => Err(ClusterError::new(ClusterErrorKind::Failed, why)),
            _ => Ok(obj),
        }
    }

    async fn get<K: Object>(&self, name: &str) -> Result<K, ClusterError> {
        self.api::<K>()
            .get(name)
            .await
            .map_err(|e| api_error::<K>(&format!("get {} {name}", K::kind(&())), e))
    }

    async fn list<K: Object>(&self) -> Result<Vec<K>, ClusterError> {
        Ok(self
            .api::<K>()
            .list(&Default::default())
            .await
            .map_err(|e| api_error::<K>(&format!("list {}s", K::kind(&())), e))?
            .items)
    }

    /// Delete `name` (no error if it is gone); with `wait`, return once it is gone (its
    /// node-agent removed what it held), at most `timeout`.
    async fn delete<K: Object>(
        &self,
        name: &str,
        wait: bool,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        let kind = K::kind(&());
        let api = self.api::<K>();
        let uid = match api.delete(name, &DeleteParams::default()).await {
            Ok(either) => either.left().and_then(|o| o.meta().uid.clone()),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(api_error::<K>(&format!("delete {kind} {name}"), e)),
        };
        if !wait {
            return Ok(());
        }
        let gone = await_condition(
            api,
            name,
            kube::runtime::conditions::is_deleted(uid.as_deref().unwrap_or_default()),
        );
        match tokio::time::timeout(timeout, gone).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ClusterError::new(
                ClusterErrorKind::Api,
                format!("watch {kind} {name}: {e}"),
            )),
            Err(_) => Err(ClusterError::new(
                ClusterErrorKind::Timeout,
                format!(
                    "{kind} {name} still exists after {} s (finalizers: is its node-agent running?)",
                    timeout.as_secs_f64()
                ),
            )),
        }
    }

    /// Sandbox object `name`.
    pub async fn sandbox_object(&self, name: &str) -> Result<SandboxObject, ClusterError> {
        self.get(name).await
    }

    /// Every Sandbox object of the namespace.
    pub async fn sandbox_objects(&self) -> Result<Vec<SandboxObject>, ClusterError> {
        self.list().await
    }

    /// Set Sandbox `name`'s `spec.paused` and wait (up to the ready timeout) until its node-agent
    /// froze it (phase Paused) or thawed it (Ready again).
    pub async fn set_sandbox_paused(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<SandboxObject, ClusterError> {
        let api = self.api::<SandboxObject>();
        let patch = serde_json::json!({"spec": {"paused": paused}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| api_error::<SandboxObject>(&format!("pause Sandbox {name}"), e))?;
        let outcome = if paused {
            object::paused_outcome
        } else {
            object::sandbox_outcome
        };
        self.wait(api, name, self.0.options.ready_timeout, outcome)
            .await
    }

    /// Delete Sandbox `name`; with `wait`, until its node-agent removed the sandbox. A Sandbox a
    /// SandboxClaim holds goes with its claim (which would otherwise stay, `SandboxMissing`).
    pub async fn delete_sandbox(
        &self,
        name: &str,
        wait: bool,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        let held_by = match self.api::<SandboxObject>().get_opt(name).await {
            Ok(Some(s)) => object::holding_claim(&s),
            _ => None,
        };
        if let Some(claim) = held_by {
            self.delete::<SandboxClaim>(&claim, false, timeout).await?;
        }
        self.delete::<SandboxObject>(name, wait, timeout).await
    }

    /// Create SandboxSnapshot `name` of Sandbox `sandbox` and wait (up to the ready timeout)
    /// until its node-agent took it; deleted again if that fails or times out.
    pub async fn create_snapshot(
        &self,
        sandbox: &str,
        name: &str,
    ) -> Result<microsandbox_crds::SandboxSnapshot, ClusterError> {
        let object = object::snapshot_object(&self.0.namespace, name, sandbox);
        self.create_and_wait(name, &object, object::snapshot_outcome)
            .await
    }

    /// Push SandboxSnapshot `name` to a registry as image `reference` (`spec.push`), with the
    /// credentials of docker-config Secret `secret` of the namespace (sealed by the operator to
    /// the snapshot's node), and wait (up to the ready timeout) until its node-agent pushed it.
    pub async fn push_snapshot(
        &self,
        name: &str,
        reference: &str,
        secret: Option<&str>,
    ) -> Result<microsandbox_crds::SandboxSnapshot, ClusterError> {
        let api = self.api::<microsandbox_crds::SandboxSnapshot>();
        let patch = serde_json::json!({"spec": {"push": {
            "image": reference,
            "secretRef": secret.map(|s| serde_json::json!({"name": s})),
        }}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| {
                api_error::<microsandbox_crds::SandboxSnapshot>(
                    &format!("push SandboxSnapshot {name}"),
                    e,
                )
            })?;
        self.wait(
            api,
            name,
            self.0.options.ready_timeout,
            object::push_outcome,
        )
        .await
    }

    /// Every SandboxSnapshot of the namespace.
    pub async fn snapshot_objects(
        &self,
    ) -> Result<Vec<microsandbox_crds::SandboxSnapshot>, ClusterError> {
        self.list().await
    }

    /// Delete SandboxSnapshot `name` (its node keeps it until no Sandbox made from it exists).
    pub async fn delete_snapshot(&self, name: &str) -> Result<(), ClusterError> {
        self.delete::<microsandbox_crds::SandboxSnapshot>(name, false, Duration::ZERO)
            .await
    }

    /// Create Volume `name` of `quota_mib` MiB and wait until a node provisioned it; deleted
    /// again if that fails, times out or the future is dropped.
    pub async fn create_volume(
        &self,
        name: &str,
        quota_mib: u64,
        placement: &Placement,
    ) -> Result<VolumeObject, ClusterError> {
        let object = object::volume_object(&self.0.namespace, name, quota_mib, placement)?;
        self.create_and_wait(name, &object, object::volume_outcome)
            .await
    }

    pub async fn volume_object(&self, name: &str) -> Result<VolumeObject, ClusterError> {
        self.get(name).await
    }

    pub async fn volume_objects(&self) -> Result<Vec<VolumeObject>, ClusterError> {
        self.list().await
    }

    /// Set Volume `name`'s size to `quota_mib` MiB (the CRD refuses shrinking).
    pub async fn resize_volume(
        &self,
        name: &str,
        quota_mib: u64,
    ) -> Result<VolumeObject, ClusterError> {
        let patch = serde_json::json!({"spec": {"size": format!("{quota_mib}Mi")}});
        self.api::<VolumeObject>()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| api_error::<VolumeObject>(&format!("resize Volume {name}"), e))
    }

    /// Delete Volume `name`; with `wait`, until its node-agent released the data.
    pub async fn delete_volume(
        &self,
        name: &str,
        wait: bool,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        self.delete::<VolumeObject>(name, wait, timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_to_the_agent() {
        let (ep, px) = (
            Some("http://10.0.0.7:7070".to_string()),
            Some("/api/v1/namespaces/ms/pods/agent-a:7070/proxy".to_string()),
        );
        let r = |access, in_pod, e: &Option<String>, p: &Option<String>| {
            route("s", access, in_pod, e.clone(), p.clone())
        };
        // Outside a pod, auto takes the API server's proxy; inside one, the node network.
        assert_eq!(
            r(AgentAccess::Auto, false, &ep, &px).unwrap(),
            Route::Proxy(px.clone().unwrap())
        );
        assert_eq!(
            r(AgentAccess::Auto, true, &ep, &px).unwrap(),
            Route::Direct(ep.clone().unwrap())
        );
        assert_eq!(
            r(AgentAccess::Proxy, true, &ep, &px).unwrap(),
            Route::Proxy(px.clone().unwrap())
        );
        assert_eq!(
            r(AgentAccess::Direct, false, &ep, &px).unwrap(),
            Route::Direct(ep.clone().unwrap())
        );
        // An agent without a proxy path: auto falls back to direct; proxy says why not.
        assert_eq!(
            r(AgentAccess::Auto, false, &ep, &None).unwrap(),
            Route::Direct(ep.clone().unwrap())
        );
        let e = r(AgentAccess::Proxy, false, &ep, &None).unwrap_err();
        assert!(e.kind == ClusterErrorKind::Config && e.message.contains("agentProxy"));
        let e = r(AgentAccess::Auto, false, &None, &None).unwrap_err();
        assert_eq!(e.kind, ClusterErrorKind::NotRunning);
    }
}
