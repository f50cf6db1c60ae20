//! `_native.Cluster`: Sandbox objects through the Kubernetes API (the SDK's cluster mode).
//!
//! Creating is two calls so the Python side knows what it owns: `create` posts the object (a
//! name taken by someone else fails here and nothing is cleaned up), `wait_ready` watches it until
//! the Sandbox is Ready, Failed, unschedulable past the timeout, or the timeout; the caller deletes
//! what it created when waiting fails or is cancelled. Exec and files then go to the node-agent
//! named in the status with the user's own bearer token, which the agent checks against RBAC
//! (`create` on `sandboxes/exec`).

use crate::aio::future_into_py;
use crate::client::Client;
use crate::convert::Json;
use crate::relay::ApiServerRelay;
use k8s_openapi::api::core::v1::Secret as CoreSecret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use kube::Resource as _;
use microsandbox_client::{AgentClient, Relay};
use microsandbox_crds::sandbox::{Sandbox, SandboxPhase};
use microsandbox_crds::volume::{Volume, VolumePhase};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use secrecy::ExposeSecret;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A failure of cluster mode, in the terms `microsandbox.errors._from_native("cluster", code,
/// message)` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterError {
    /// `config`, `forbidden`, `already_exists`, `not_found`, `invalid`, `unschedulable`,
    /// `failed`, `timeout` or `api`.
    pub code: &'static str,
    pub message: String,
}

impl ClusterError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn into_py(self) -> PyErr {
        Python::attach(|py| {
            let made = py
                .import("microsandbox.errors")
                .and_then(|m| m.getattr("_from_native"))
                .and_then(|f| f.call1(("cluster", self.code, self.message.clone())));
            match made {
                Ok(exc) => PyErr::from_value(exc),
                Err(_) => PyRuntimeError::new_err(format!("{}: {}", self.code, self.message)),
            }
        })
    }
}

/// The error of an API call, by HTTP status (`what` starts with the kind: Volumes have codes of
/// their own).
fn api_error(what: &str, e: kube::Error) -> ClusterError {
    let volume = what.split(' ').nth(1) == Some("Volume");
    match &e {
        kube::Error::Api(s) => {
            let code = match s.code {
                401 | 403 => "forbidden",
                404 if volume => "volume_not_found",
                409 if volume => "volume_already_exists",
                404 => "not_found",
                409 => "already_exists",
                422 | 400 => "invalid",
                _ => "api",
            };
            ClusterError::new(code, format!("{what}: {}", s.message))
        }
        _ => ClusterError::new("api", format!("{what}: {e}")),
    }
}

/// A namespaced custom resource the SDK creates and deletes (Sandbox, Volume).
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
impl Object for Sandbox {}
impl Object for Volume {}
impl Object for microsandbox_crds::Secret {}
impl Object for CoreSecret {}

/// Post `object_json` (a whole object) to `api`; the object as created.
async fn create_object<K: Object>(api: Api<K>, object_json: &str) -> Result<K, ClusterError> {
    let kind = K::kind(&());
    let obj: K = serde_json::from_str(object_json)
        .map_err(|e| ClusterError::new("invalid", format!("{kind} object: {e}")))?;
    let name = obj.meta().name.clone().unwrap_or_default();
    api.create(&PostParams::default(), &obj)
        .await
        .map_err(|e| api_error(&format!("create {kind} {name}"), e))
}

/// One `Secret.env(...)` of a Sandbox the SDK creates in cluster mode, under object name `name`.
#[derive(serde::Deserialize)]
struct SandboxSecret {
    name: String,
    env: String,
    value: String,
    allow_hosts: Vec<String>,
}

/// Key of the value in the core Secrets the SDK creates.
const SECRET_KEY: &str = "value";

/// The core Secret holding a value and the Secret (microsandbox.dev) that names it, both owned
/// by Sandbox `sandbox` (`uid`) so Kubernetes deletes them with it. Pure.
fn secret_objects(
    sandbox: &str,
    uid: &str,
    s: &SandboxSecret,
) -> (CoreSecret, microsandbox_crds::Secret) {
    let meta = ObjectMeta {
        name: Some(s.name.clone()),
        labels: Some(
            [
                ("app.kubernetes.io/created-by", "microsandbox-python"),
                ("microsandbox.dev/sandbox", sandbox),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ),
        owner_references: Some(vec![OwnerReference {
            api_version: Sandbox::api_version(&()).into_owned(),
            kind: Sandbox::kind(&()).into_owned(),
            name: sandbox.to_string(),
            uid: uid.to_string(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let core = CoreSecret {
        metadata: meta.clone(),
        type_: Some("Opaque".into()),
        string_data: Some([(SECRET_KEY.to_string(), s.value.clone())].into()),
        ..Default::default()
    };
    let mut object = microsandbox_crds::Secret::new(
        &s.name,
        microsandbox_crds::SecretSpec {
            secret_ref: microsandbox_crds::secret::SecretKeyRef {
                name: s.name.clone(),
                key: SECRET_KEY.into(),
            },
            allow_hosts: s.allow_hosts.clone(),
        },
    );
    object.metadata = meta;
    (core, object)
}

/// Delete `name` (no error if it is gone); with `wait`, return once the object is gone, at most
/// `timeout_s`.
async fn delete_object<K: Object>(
    api: Api<K>,
    name: &str,
    wait: bool,
    timeout_s: f64,
) -> Result<(), ClusterError> {
    let kind = K::kind(&());
    let uid = match api.delete(name, &DeleteParams::default()).await {
        Ok(either) => either.left().and_then(|o| o.meta().uid.clone()),
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(api_error(&format!("delete {kind} {name}"), e)),
    };
    if !wait {
        return Ok(());
    }
    let gone = await_condition(
        api,
        name,
        kube::runtime::conditions::is_deleted(uid.as_deref().unwrap_or_default()),
    );
    match tokio::time::timeout(Duration::from_secs_f64(timeout_s.max(0.0)), gone).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ClusterError::new("api", format!("watch {kind} {name}: {e}"))),
        Err(_) => Err(ClusterError::new(
            "timeout",
            format!("{kind} {name} still exists after {timeout_s} s (finalizers: is its node-agent running?)"),
        )),
    }
}

/// Watch `name` until `outcome` stops saying Waiting, at most `timeout_s`: the object when Ready;
/// `failed` with the reason; on timeout `unschedulable` with the last scheduling reason, else
/// `timeout`.
async fn wait_object<K: Object>(
    api: Api<K>,
    name: &str,
    timeout_s: f64,
    outcome: fn(&K) -> Outcome,
) -> Result<K, ClusterError> {
    let kind = K::kind(&());
    let done = move |o: Option<&K>| o.is_none_or(|o| !matches!(outcome(o), Outcome::Waiting(_)));
    let waited = tokio::time::timeout(
        Duration::from_secs_f64(timeout_s.max(0.0)),
        await_condition(api.clone(), name, done),
    )
    .await;
    let obj = match waited {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => {
            return Err(ClusterError::new(
                "not_found",
                format!("{kind} {name} was deleted while starting"),
            ))
        }
        Ok(Err(e)) => {
            return Err(ClusterError::new(
                "api",
                format!("watch {kind} {name}: {e}"),
            ))
        }
        Err(_) => {
            let last = api
                .get_opt(name)
                .await
                .map_err(|e| api_error(&format!("get {kind} {name}"), e))?;
            return Err(match last.as_ref().map(outcome) {
                Some(Outcome::Waiting(Some((reason, message)))) => {
                    ClusterError::new("unschedulable", format!("{reason}: {message}"))
                }
                _ => ClusterError::new(
                    "timeout",
                    format!("{kind} {name} not Ready after {timeout_s} s"),
                ),
            });
        }
    };
    match outcome(&obj) {
        Outcome::Failed(why) => Err(ClusterError::new("failed", why)),
        _ => Ok(obj),
    }
}

/// Resolves to object `name` as a dict.
fn get_object<K: Object>(py: Python<'_>, api: Api<K>, name: String) -> PyResult<Bound<'_, PyAny>> {
    future_into_py(py, async move {
        let obj = api
            .get(&name)
            .await
            .map_err(|e| api_error(&format!("get {} {name}", K::kind(&())), e).into_py())?;
        Json::of(&obj)
    })
}

/// Resolves to every object of the namespace, as dicts.
fn list_objects<K: Object>(py: Python<'_>, api: Api<K>) -> PyResult<Bound<'_, PyAny>> {
    future_into_py(py, async move {
        let list = api
            .list(&Default::default())
            .await
            .map_err(|e| api_error(&format!("list {}s", K::kind(&())), e).into_py())?;
        Json::of(&list.items)
    })
}

/// Resolves to the created object (a dict) once `object_json` is created.
fn create_py<K: Object>(
    py: Python<'_>,
    api: Api<K>,
    object_json: String,
) -> PyResult<Bound<'_, PyAny>> {
    future_into_py(py, async move {
        let obj = create_object(api, &object_json)
            .await
            .map_err(ClusterError::into_py)?;
        Json::of(&obj)
    })
}

/// Resolves to object `name` as a dict once `outcome` says Ready (see [`wait_object`]).
fn wait_py<K: Object>(
    py: Python<'_>,
    api: Api<K>,
    name: String,
    timeout_s: f64,
    outcome: fn(&K) -> Outcome,
) -> PyResult<Bound<'_, PyAny>> {
    future_into_py(py, async move {
        let obj = wait_object(api, &name, timeout_s, outcome)
            .await
            .map_err(ClusterError::into_py)?;
        Json::of(&obj)
    })
}

/// Resolves once object `name` is deleted (see [`delete_object`]).
fn delete_py<K: Object>(
    py: Python<'_>,
    api: Api<K>,
    name: String,
    wait: bool,
    timeout_s: f64,
) -> PyResult<Bound<'_, PyAny>> {
    future_into_py(py, async move {
        delete_object(api, &name, wait, timeout_s)
            .await
            .map_err(ClusterError::into_py)
    })
}

/// Where waiting for a Sandbox ended. Pure, so the decision is unit-tested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ready,
    Failed(String),
    /// Still waiting; `Some((reason, message))` when the operator said it cannot schedule it.
    Waiting(Option<(String, String)>),
}

/// Where waiting for a Volume ended: Ready once provisioned on its node; while Pending, the
/// `Scheduled=False` reason (no node fits). Pure.
pub fn volume_outcome(v: &Volume) -> Outcome {
    let Some(st) = v.status.as_ref() else {
        return Outcome::Waiting(None);
    };
    let cond = |t: &str| st.conditions.iter().find(|c| c.type_ == t);
    match st.phase {
        Some(VolumePhase::Ready) => Outcome::Ready,
        Some(VolumePhase::Failed) => Outcome::Failed(
            st.conditions
                .iter()
                .find(|c| c.status == "False")
                .map(|c| format!("{}: {}", c.reason, c.message))
                .unwrap_or_else(|| "failed".into()),
        ),
        _ => Outcome::Waiting(
            cond("Scheduled")
                .filter(|c| c.status == "False")
                .map(|c| (c.reason.clone(), c.message.clone())),
        ),
    }
}

pub fn outcome(s: &Sandbox) -> Outcome {
    let Some(st) = s.status.as_ref() else {
        return Outcome::Waiting(None);
    };
    let cond = |t: &str| st.conditions.iter().find(|c| c.type_ == t);
    if cond("Ready").is_some_and(|c| c.status == "True") {
        return Outcome::Ready;
    }
    if matches!(st.phase, Some(SandboxPhase::Failed | SandboxPhase::Stopped)) {
        let why = cond("Ready")
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_else(|| "failed".into());
        return Outcome::Failed(why);
    }
    Outcome::Waiting(
        cond("Scheduled")
            .filter(|c| c.status == "False")
            .map(|c| (c.reason.clone(), c.message.clone())),
    )
}

/// Kubernetes connection of cluster mode.
#[pyclass(frozen, module = "microsandbox._native")]
pub struct Cluster {
    client: kube::Client,
    namespace: String,
    /// Bearer token of the user (kubeconfig token or token file, or the pod's ServiceAccount
    /// token), for the node-agent API. `None` with client-certificate kubeconfigs.
    token: Option<String>,
    server: String,
    /// The API server's pod proxy, for agents outside this machine's network reach.
    relay: Arc<ApiServerRelay>,
}

impl Cluster {
    fn api<K: Object>(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

async fn connect(
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    namespace: Option<String>,
) -> Result<Cluster, ClusterError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(&path).map_err(|e| {
                ClusterError::new("config", format!("kubeconfig {}: {e}", path.display()))
            })?;
            let opts = KubeConfigOptions {
                context,
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| {
                    ClusterError::new("config", format!("kubeconfig {}: {e}", path.display()))
                })?
        }
        None if context.is_some() => {
            let opts = KubeConfigOptions {
                context,
                ..Default::default()
            };
            kube::Config::from_kubeconfig(&opts)
                .await
                .map_err(|e| ClusterError::new("config", format!("kubeconfig: {e}")))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            ClusterError::new(
                "config",
                format!("no kubeconfig ($KUBECONFIG, ~/.kube/config) and not in a pod: {e}"),
            )
        })?,
    };
    let token = match (&config.auth_info.token, &config.auth_info.token_file) {
        (Some(t), _) => Some(t.expose_secret().to_string()),
        (None, Some(f)) => std::fs::read_to_string(f)
            .ok()
            .map(|t| t.trim().to_string()),
        (None, None) => None,
    };
    let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
    let server = config.cluster_url.to_string();
    let relay = ApiServerRelay::new(&config)
        .map_err(|e| ClusterError::new("config", format!("Kubernetes client: {e}")))?;
    let client = kube::Client::try_from(config)
        .map_err(|e| ClusterError::new("config", format!("Kubernetes client: {e}")))?;
    Ok(Cluster {
        client,
        namespace,
        token,
        server,
        relay: Arc::new(relay),
    })
}

#[pymethods]
impl Cluster {
    /// Connect with `kubeconfig` (path) and `context` when given, else as kubectl would
    /// (`$KUBECONFIG`, `~/.kube/config`, then the pod's ServiceAccount). `namespace` defaults to
    /// the context's.
    #[staticmethod]
    #[pyo3(signature = (kubeconfig=None, context=None, namespace=None))]
    fn connect<'py>(
        py: Python<'py>,
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
        namespace: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        future_into_py(py, async move {
            connect(kubeconfig, context, namespace)
                .await
                .map_err(ClusterError::into_py)
        })
    }

    #[getter]
    fn namespace(&self) -> String {
        self.namespace.clone()
    }

    /// The user's bearer token for node-agent calls, if the configuration has one.
    #[getter]
    fn token(&self) -> Option<String> {
        self.token.clone()
    }

    /// A node-agent client through the API server's pod proxy: `proxy` is the Sandbox's
    /// `status.agentProxy`, `token` the user's bearer token for the agent.
    fn relayed_client(&self, proxy: &str, token: Option<String>) -> PyResult<Client> {
        if !proxy.starts_with("/api/") {
            return Err(ClusterError::new(
                "invalid",
                format!("{proxy:?} is not an API server proxy path"),
            )
            .into_py());
        }
        let name = format!("{}{proxy}", self.server.trim_end_matches('/'));
        let relay: Arc<dyn Relay> = self.relay.clone();
        Ok(Client::wrap(AgentClient::relayed(
            relay, proxy, token, name,
        )))
    }

    fn __repr__(&self) -> String {
        format!(
            "<microsandbox._native.Cluster {} namespace={}>",
            self.server, self.namespace
        )
    }

    /// Create the Sandbox object `object_json` (a full object as JSON).
    fn create<'py>(&self, py: Python<'py>, object_json: String) -> PyResult<Bound<'py, PyAny>> {
        create_py(py, self.api::<Sandbox>(), object_json)
    }

    /// Create, for Sandbox `sandbox` (`uid`), the core Secret and the Secret (microsandbox.dev)
    /// of each entry of `secrets_json` (`[{name, env, value, allow_hosts}]`), owned by the
    /// Sandbox. The values go to the API server only; the operator seals them to the node.
    fn secrets_create<'py>(
        &self,
        py: Python<'py>,
        sandbox: String,
        uid: String,
        secrets_json: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cores = self.api::<CoreSecret>();
        let objects = self.api::<microsandbox_crds::Secret>();
        future_into_py(py, async move {
            let secrets: Vec<SandboxSecret> = serde_json::from_str(&secrets_json)
                .map_err(|e| ClusterError::new("invalid", format!("secrets: {e}")).into_py())?;
            let post = PostParams::default();
            for s in &secrets {
                let (core, object) = secret_objects(&sandbox, &uid, s);
                cores.create(&post, &core).await.map_err(|e| {
                    api_error(&format!("create core Secret {} (for {})", s.name, s.env), e)
                        .into_py()
                })?;
                objects.create(&post, &object).await.map_err(|e| {
                    api_error(&format!("create Secret {} (for {})", s.name, s.env), e).into_py()
                })?;
            }
            Ok(())
        })
    }

    /// Watch Sandbox `name` until Ready (resolves to the object as a dict), Failed, or
    /// `timeout_s`; a Sandbox the operator cannot schedule by then fails with its reason.
    fn wait_ready<'py>(
        &self,
        py: Python<'py>,
        name: String,
        timeout_s: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        wait_py(py, self.api::<Sandbox>(), name, timeout_s, outcome)
    }

    /// The Sandbox object `name` as a dict.
    fn get<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        get_object(py, self.api::<Sandbox>(), name)
    }

    /// Every Sandbox object of the namespace, as dicts.
    fn list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        list_objects(py, self.api::<Sandbox>())
    }

    /// Delete Sandbox `name` (no error if it is gone); with `wait`, resolve once the object is
    /// gone (the node-agent removed the sandbox), at most `timeout_s`.
    #[pyo3(signature = (name, wait=true, timeout_s=60.0))]
    fn delete<'py>(
        &self,
        py: Python<'py>,
        name: String,
        wait: bool,
        timeout_s: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        delete_py(py, self.api::<Sandbox>(), name, wait, timeout_s)
    }

    /// Create the Volume object `object_json` (a full object as JSON).
    fn volume_create<'py>(
        &self,
        py: Python<'py>,
        object_json: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        create_py(py, self.api::<Volume>(), object_json)
    }

    /// Watch Volume `name` until it is provisioned on a node (resolves to the object as a
    /// dict), Failed, or `timeout_s`; one no node can hold fails with the reason.
    fn volume_wait_ready<'py>(
        &self,
        py: Python<'py>,
        name: String,
        timeout_s: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        wait_py(py, self.api::<Volume>(), name, timeout_s, volume_outcome)
    }

    /// The Volume object `name` as a dict.
    fn volume_get<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        get_object(py, self.api::<Volume>(), name)
    }

    /// Every Volume object of the namespace, as dicts.
    fn volume_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        list_objects(py, self.api::<Volume>())
    }

    /// Set Volume `name`'s `spec.size` to `quota_mib` MiB (the CRD refuses shrinking; its
    /// node-agent grows the data); resolves to the object as a dict.
    fn volume_resize<'py>(
        &self,
        py: Python<'py>,
        name: String,
        quota_mib: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let api = self.api::<Volume>();
        future_into_py(py, async move {
            let patch = serde_json::json!({"spec": {"size": format!("{quota_mib}Mi")}});
            let obj = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| api_error(&format!("resize Volume {name}"), e).into_py())?;
            Json::of(&obj)
        })
    }

    /// Delete Volume `name` (no error if it is gone); with `wait`, resolve once the object is
    /// gone (its node-agent released the data), at most `timeout_s`.
    #[pyo3(signature = (name, wait=true, timeout_s=60.0))]
    fn volume_delete<'py>(
        &self,
        py: Python<'py>,
        name: String,
        wait: bool,
        timeout_s: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        delete_py(py, self.api::<Volume>(), name, wait, timeout_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_objects_are_owned_by_the_sandbox_and_name_each_other() {
        let s = SandboxSecret {
            name: "job-api-key".into(),
            env: "API_KEY".into(),
            value: "v-123".into(),
            allow_hosts: vec!["api.example.com".into()],
        };
        let (core, object) = secret_objects("job", "uid-1", &s);
        for meta in [&core.metadata, &object.metadata] {
            assert_eq!(meta.name.as_deref(), Some("job-api-key"));
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
                ("Sandbox", "job", "uid-1")
            );
            assert_eq!(owner.api_version, "microsandbox.dev/v1alpha1");
        }
        assert_eq!(core.string_data.unwrap()[SECRET_KEY], "v-123");
        assert_eq!(object.spec.secret_ref.name, "job-api-key");
        assert_eq!(object.spec.secret_ref.key, SECRET_KEY);
        assert_eq!(object.spec.allow_hosts, ["api.example.com"]);
        assert!(object.validate().is_ok());
        assert!(!serde_json::to_string(&object).unwrap().contains("v-123"));
    }

    fn sandbox(status: serde_json::Value) -> Sandbox {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "microsandbox.dev/v1alpha1",
            "kind": "Sandbox",
            "metadata": {"name": "s"},
            "spec": {"image": "busybox"},
            "status": status,
        }))
        .unwrap()
    }

    fn cond(t: &str, s: &str, reason: &str, message: &str) -> serde_json::Value {
        serde_json::json!({"type": t, "status": s, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn volume_outcomes() {
        let volume = |status: serde_json::Value| -> Volume {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "microsandbox.dev/v1alpha1",
                "kind": "Volume",
                "metadata": {"name": "v"},
                "spec": {"size": "64Mi"},
                "status": status,
            }))
            .unwrap()
        };
        assert_eq!(
            volume_outcome(&volume(serde_json::json!({}))),
            Outcome::Waiting(None)
        );
        let placed = volume(serde_json::json!({"phase": "Pending", "node": "n1",
            "conditions": [cond("Scheduled", "True", "Placed", "")]}));
        assert_eq!(volume_outcome(&placed), Outcome::Waiting(None));
        let nowhere = volume(serde_json::json!({"phase": "Pending",
            "conditions": [cond("Scheduled", "False", "NoNodeMatches", "0/2 nodes match")]}));
        assert_eq!(
            volume_outcome(&nowhere),
            Outcome::Waiting(Some(("NoNodeMatches".into(), "0/2 nodes match".into())))
        );
        let ready = volume(serde_json::json!({"phase": "Ready", "node": "n1"}));
        assert_eq!(volume_outcome(&ready), Outcome::Ready);
        let failed = volume(serde_json::json!({"phase": "Failed",
            "conditions": [cond("Provisioned", "False", "ProvisionFailed", "disk full")]}));
        assert_eq!(
            volume_outcome(&failed),
            Outcome::Failed("ProvisionFailed: disk full".into())
        );
    }

    #[test]
    fn outcomes() {
        assert_eq!(
            outcome(&sandbox(serde_json::json!({}))),
            Outcome::Waiting(None)
        );
        let ready = sandbox(serde_json::json!({"phase": "Running",
            "conditions": [cond("Ready", "True", "Running", "")]}));
        assert_eq!(outcome(&ready), Outcome::Ready);
        let pending = sandbox(serde_json::json!({"phase": "Pending",
            "conditions": [cond("Scheduled", "False", "Unschedulable", "0/2 nodes are available")]}));
        assert_eq!(
            outcome(&pending),
            Outcome::Waiting(Some((
                "Unschedulable".into(),
                "0/2 nodes are available".into()
            )))
        );
        let failed = sandbox(serde_json::json!({"phase": "Failed",
            "conditions": [cond("Ready", "False", "Failed", "image not found")]}));
        assert_eq!(
            outcome(&failed),
            Outcome::Failed("Failed: image not found".into())
        );
    }
}
