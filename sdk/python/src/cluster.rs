//! `_native.Cluster`: cluster mode, a thin layer over the `microsandbox` crate's
//! [`microsandbox::cluster`] (objects, watches, cleanup and the route to node-agents all live
//! there, shared with the Rust and Node.js SDKs). Objects cross as dicts.

use crate::aio::future_into_py;
use crate::client::Client;
use crate::convert::{parse_request, Json};
use crate::error::{cluster_to_pyerr, sdk_to_pyerr, to_pyerr};
use microsandbox::cluster::object::{self, Placement};
use microsandbox::cluster::{AgentAccess, Cluster as Options, ClusterConnection};
use microsandbox_client::api::CreateSandbox;
use pyo3::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

/// The Sandbox object (a dict) for create request `request_json` in `namespace`: what cluster
/// mode posts, for tests and inspection.
#[pyfunction]
pub fn sandbox_object(namespace: &str, request_json: &str) -> PyResult<Json> {
    let req: CreateSandbox = parse_request("create request", request_json)?;
    Json::of(&object::sandbox_object(namespace, &req).map_err(cluster_to_pyerr)?)
}

/// The Volume object (a dict) `Volume.create` posts.
#[pyfunction]
#[pyo3(signature = (namespace, name, quota_mib, node=None, node_selector=None))]
pub fn volume_object(
    namespace: &str,
    name: &str,
    quota_mib: u64,
    node: Option<String>,
    node_selector: Option<BTreeMap<String, String>>,
) -> PyResult<Json> {
    Json::of(
        &object::volume_object(namespace, name, quota_mib, &placement(node, node_selector))
            .map_err(cluster_to_pyerr)?,
    )
}

fn placement(node: Option<String>, selector: Option<BTreeMap<String, String>>) -> Placement {
    match (node, selector) {
        (Some(n), _) => Placement::Node(n),
        (None, Some(s)) if !s.is_empty() => Placement::Selector(s),
        _ => Placement::Anywhere,
    }
}

/// A connection to a cluster.
#[pyclass(frozen, module = "microsandbox._native")]
pub struct Cluster {
    conn: ClusterConnection,
}

#[pymethods]
impl Cluster {
    /// Connect with `kubeconfig` (path) and `context` when given, else as kubectl would
    /// (`$KUBECONFIG`, `~/.kube/config`, then the pod's ServiceAccount). `namespace` defaults to
    /// the context's; `agent_access` is `auto`, `direct` or `proxy`.
    #[staticmethod]
    #[pyo3(signature = (kubeconfig=None, context=None, namespace=None, ready_timeout_s=120.0, agent_access="auto"))]
    fn connect<'py>(
        py: Python<'py>,
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
        namespace: Option<String>,
        ready_timeout_s: f64,
        agent_access: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let access: AgentAccess = agent_access.parse().map_err(cluster_to_pyerr)?;
        let options = Options {
            kubeconfig,
            context,
            namespace,
            ready_timeout: seconds(ready_timeout_s),
            agent_access: access,
        };
        future_into_py(py, async move {
            let conn = options.connect().await.map_err(cluster_to_pyerr)?;
            Ok(Cluster { conn })
        })
    }

    #[getter]
    fn namespace(&self) -> String {
        self.conn.namespace().to_string()
    }

    /// The user's bearer token for node-agent calls, if the configuration has one.
    #[getter]
    fn token(&self) -> Option<String> {
        self.conn.token().map(str::to_string)
    }

    fn __repr__(&self) -> String {
        format!(
            "<microsandbox._native.Cluster {} namespace={}>",
            self.conn.server(),
            self.conn.namespace()
        )
    }

    /// Create the Sandbox of `request_json` (the agent's create request) and wait until it is
    /// Ready; resolves to `(object, client, info)`: the object, its node-agent's client and the
    /// sandbox as that agent reports it. Nothing is left behind if it fails or is cancelled.
    fn create_sandbox<'py>(
        &self,
        py: Python<'py>,
        request_json: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        future_into_py(py, async move {
            let req: CreateSandbox = parse_request("create request", &request_json)?;
            let (obj, client, info) = conn.create_sandbox(&req).await.map_err(cluster_to_pyerr)?;
            Ok((Json::of(&obj)?, Client::wrap(client), Json::of(&info)?))
        })
    }

    /// Sandbox object `name` running on a node: `(object, client, info)` as `create_sandbox`.
    fn sandbox<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        future_into_py(py, async move {
            let obj = conn.sandbox_object(&name).await.map_err(cluster_to_pyerr)?;
            let (client, target) = conn.agent_of(&obj).map_err(cluster_to_pyerr)?;
            let info = client.get(&target).await.map_err(to_pyerr)?;
            Ok((Json::of(&obj)?, Client::wrap(client), Json::of(&info)?))
        })
    }

    /// Sandbox object `name` (a dict).
    fn object<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        future_into_py(py, async move {
            Json::of(&conn.sandbox_object(&name).await.map_err(cluster_to_pyerr)?)
        })
    }

    /// Every Sandbox object of the namespace (dicts).
    fn objects<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        future_into_py(py, async move {
            Json::of(&conn.sandbox_objects().await.map_err(cluster_to_pyerr)?)
        })
    }

    /// The sandboxes of the namespace running on a node, as their agents report them.
    fn list_sandboxes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        future_into_py(py, async move {
            let infos = microsandbox::Sandbox::list_in(&conn)
                .await
                .map_err(sdk_to_pyerr)?;
            Json::of(&infos)
        })
    }

    /// Set Sandbox `name`'s `spec.paused` and wait until its node-agent froze (or thawed) it;
    /// resolves to the object.
    fn set_paused<'py>(
        &self,
        py: Python<'py>,
        name: String,
        paused: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        future_into_py(py, async move {
            Json::of(
                &conn
                    .set_sandbox_paused(&name, paused)
                    .await
                    .map_err(cluster_to_pyerr)?,
            )
        })
    }

    /// Create SandboxSnapshot `name` of Sandbox `sandbox` and wait until its node-agent took it;
    /// resolves to `{name, image, digest, layers}` (`image`: `snapshot://NAME`).
    fn snapshot<'py>(
        &self,
        py: Python<'py>,
        sandbox: String,
        name: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        future_into_py(py, async move {
            let snap = microsandbox::Sandbox::get_in(&conn, &sandbox)
                .await
                .map_err(sdk_to_pyerr)?
                .snapshot(&name)
                .await
                .map_err(sdk_to_pyerr)?;
            Json::of(&snap)
        })
    }

    /// The taken SandboxSnapshots of the namespace, as `{name, image, digest, layers}`.
    fn snapshots<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        future_into_py(py, async move {
            Json::of(
                &microsandbox::Snapshot::list_in(&conn)
                    .await
                    .map_err(sdk_to_pyerr)?,
            )
        })
    }

    /// Push SandboxSnapshot `name` to a registry as `reference` with the credentials of
    /// docker-config Secret `secret`; resolves to `{reference, digest}` once pushed.
    #[pyo3(signature = (name, reference, secret=None))]
    fn push_snapshot<'py>(
        &self,
        py: Python<'py>,
        name: String,
        reference: String,
        secret: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        future_into_py(py, async move {
            Json::of(
                &microsandbox::Snapshot::push_in(&conn, &name, &reference, secret.as_deref())
                    .await
                    .map_err(sdk_to_pyerr)?,
            )
        })
    }

    /// Delete SandboxSnapshot `name` (no error if it is gone).
    fn delete_snapshot<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        future_into_py(py, async move {
            microsandbox::Snapshot::remove_in(&conn, &name)
                .await
                .map_err(sdk_to_pyerr)
        })
    }

    /// Delete Sandbox `name` (no error if it is gone); with `wait`, resolve once the node-agent
    /// removed the sandbox, at most `timeout_s`.
    #[pyo3(signature = (name, wait=true, timeout_s=60.0))]
    fn delete<'py>(
        &self,
        py: Python<'py>,
        name: String,
        wait: bool,
        timeout_s: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        future_into_py(py, async move {
            conn.delete_sandbox(&name, wait, seconds(timeout_s))
                .await
                .map_err(cluster_to_pyerr)
        })
    }

    /// Create Volume `name` and wait until a node provisioned it; resolves to the object.
    #[pyo3(signature = (name, quota_mib, node=None, node_selector=None))]
    fn volume_create<'py>(
        &self,
        py: Python<'py>,
        name: String,
        quota_mib: u64,
        node: Option<String>,
        node_selector: Option<BTreeMap<String, String>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        let placement = placement(node, node_selector);
        future_into_py(py, async move {
            let obj = conn
                .create_volume(&name, quota_mib, &placement)
                .await
                .map_err(cluster_to_pyerr)?;
            Json::of(&obj)
        })
    }

    fn volume_get<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        future_into_py(py, async move {
            Json::of(&conn.volume_object(&name).await.map_err(cluster_to_pyerr)?)
        })
    }

    fn volume_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        future_into_py(py, async move {
            Json::of(&conn.volume_objects().await.map_err(cluster_to_pyerr)?)
        })
    }

    /// Grow Volume `name` to `quota_mib` MiB; resolves to the object.
    fn volume_resize<'py>(
        &self,
        py: Python<'py>,
        name: String,
        quota_mib: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        future_into_py(py, async move {
            Json::of(
                &conn
                    .resize_volume(&name, quota_mib)
                    .await
                    .map_err(cluster_to_pyerr)?,
            )
        })
    }

    /// Delete Volume `name` (no error if it is gone); with `wait`, resolve once its node-agent
    /// released the data, at most `timeout_s`.
    #[pyo3(signature = (name, wait=true, timeout_s=60.0))]
    fn volume_delete<'py>(
        &self,
        py: Python<'py>,
        name: String,
        wait: bool,
        timeout_s: f64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.conn.clone();
        future_into_py(py, async move {
            conn.delete_volume(&name, wait, seconds(timeout_s))
                .await
                .map_err(cluster_to_pyerr)
        })
    }
}
