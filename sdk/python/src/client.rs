//! `_native.Client` (every route of the node-agent API) and `_native.Lease`.

use crate::aio::future_into_py;
use crate::convert::{parse_request, Json, OutBytes};
use crate::error::IntoPyResult;
use crate::exec::ExecStream;
use microsandbox_client::api::{
    CreateSandbox, CreateVolume, ExecRequest, PullImage, PullPolicy, StopSandbox,
};
use microsandbox_client::{AgentClient, Endpoint};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::path::PathBuf;

/// Exit code, signal, whether it timed out, stdout, stderr, secret violations.
type ExecTuple = (i32, Option<i32>, bool, OutBytes, OutBytes, Json);

/// Handle on one node agent. Cheap to share: one connection pool, used by every sandbox handle.
#[pyclass(frozen, module = "microsandbox._native")]
pub struct Client {
    inner: AgentClient,
}

impl Client {
    /// Wraps a client built elsewhere (cluster mode's relayed clients).
    pub(crate) fn wrap(inner: AgentClient) -> Self {
        Client { inner }
    }
}

fn stop_request(timeout_ms: Option<u64>) -> StopSandbox {
    StopSandbox { timeout_ms }
}

#[pymethods]
impl Client {
    /// A client of the agent at `endpoint` (`/path/agent.sock`, `unix:PATH` or `HOST:PORT`),
    /// authenticating with `token` when given.
    #[new]
    #[pyo3(signature = (endpoint, token=None))]
    fn new(endpoint: &str, token: Option<String>) -> PyResult<Self> {
        let endpoint: Endpoint = endpoint.parse().map_err(PyValueError::new_err)?;
        Ok(Client {
            inner: AgentClient::new(endpoint, token),
        })
    }

    /// A client of the local agent whose state directory is `state_dir` (socket and token there).
    #[staticmethod]
    fn from_state_dir(state_dir: PathBuf) -> PyResult<Self> {
        Ok(Client {
            inner: AgentClient::from_state_dir(state_dir).py_err()?,
        })
    }

    /// Where this client connects (`unix:/...` or `http://host:port`).
    #[getter]
    fn endpoint(&self) -> String {
        self.inner.endpoint().to_string()
    }

    fn __repr__(&self) -> String {
        format!("<microsandbox._native.Client {}>", self.inner.endpoint())
    }

    /// `GET /healthz`: resolves to None when the agent answers.
    fn health<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move { c.health().await.py_err() })
    }

    /// `GET /v1/info` as a dict.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move { Json::of(&c.info().await.py_err()?) })
    }

    /// `POST /v1/images/pull` with `policy` (`always`, `if-not-present`, `never`); resolves to the
    /// image's digest once the pull is done.
    #[pyo3(signature = (image, policy="if-not-present"))]
    fn pull<'py>(
        &self,
        py: Python<'py>,
        image: String,
        policy: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let policy: PullPolicy = parse_request("pull policy", &format!("{policy:?}"))?;
        let c = self.inner.clone();
        future_into_py(py, async move {
            c.pull_image_wait(PullImage { image, policy })
                .await
                .py_err()
        })
    }

    /// `POST /v1/sandboxes` with a CreateSandbox JSON document; resolves to the SandboxInfo dict.
    fn create<'py>(&self, py: Python<'py>, request_json: &str) -> PyResult<Bound<'py, PyAny>> {
        let req: CreateSandbox = parse_request("create request", request_json)?;
        let c = self.inner.clone();
        future_into_py(py, async move { Json::of(&c.create(req).await.py_err()?) })
    }

    /// `GET /v1/sandboxes`: list of SandboxInfo dicts.
    fn list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move { Json::of(&c.list().await.py_err()?) })
    }

    /// `GET /v1/sandboxes/{name}`: SandboxInfo dict.
    fn get<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move { Json::of(&c.get(&name).await.py_err()?) })
    }

    /// `DELETE /v1/sandboxes/{name}`.
    fn remove<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move { c.remove(&name).await.py_err() })
    }

    /// `POST /v1/volumes`: VolumeInfo dict.
    #[pyo3(signature = (name, quota_mib))]
    fn volume_create<'py>(
        &self,
        py: Python<'py>,
        name: String,
        quota_mib: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        let req = CreateVolume {
            name,
            quota_mib,
            labels: Default::default(),
        };
        future_into_py(py, async move {
            Json::of(&c.create_volume(&req).await.py_err()?)
        })
    }

    /// `GET /v1/volumes`: list of VolumeInfo dicts.
    fn volume_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(
            py,
            async move { Json::of(&c.list_volumes().await.py_err()?) },
        )
    }

    /// `GET /v1/volumes/{name}`: VolumeInfo dict.
    fn volume_get<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(
            py,
            async move { Json::of(&c.get_volume(&name).await.py_err()?) },
        )
    }

    /// `PATCH /v1/volumes/{name}`: VolumeInfo dict of the grown volume.
    fn volume_resize<'py>(
        &self,
        py: Python<'py>,
        name: String,
        quota_mib: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move {
            Json::of(&c.resize_volume(&name, quota_mib).await.py_err()?)
        })
    }

    /// `DELETE /v1/volumes/{name}`.
    fn volume_remove<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move { c.remove_volume(&name).await.py_err() })
    }

    /// `PUT /v1/pools/{name}` with a PoolSpec (JSON): PoolInfo dict.
    fn pool_put<'py>(
        &self,
        py: Python<'py>,
        name: String,
        spec_json: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move {
            let spec: microsandbox_client::api::PoolSpec = parse_request("pool spec", &spec_json)?;
            Json::of(&c.put_pool(&name, &spec).await.py_err()?)
        })
    }

    /// `GET /v1/pools`: list of PoolInfo dicts.
    fn pool_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move { Json::of(&c.pools().await.py_err()?) })
    }

    /// `DELETE /v1/pools/{name}`.
    fn pool_remove<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move { c.remove_pool(&name).await.py_err() })
    }

    /// `POST /v1/sandboxes/{name}/snapshot`: SnapshotInfo dict.
    fn snapshot<'py>(
        &self,
        py: Python<'py>,
        name: String,
        snapshot: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move {
            Json::of(&c.snapshot(&name, &snapshot).await.py_err()?)
        })
    }

    /// `GET /v1/snapshots`: list of SnapshotInfo dicts.
    fn snapshot_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move { Json::of(&c.snapshots().await.py_err()?) })
    }

    /// `DELETE /v1/snapshots/{name}`.
    fn snapshot_remove<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move { c.remove_snapshot(&name).await.py_err() })
    }

    /// `POST /v1/snapshots/{name}/push`: `{reference, digest}` dict.
    fn snapshot_push<'py>(
        &self,
        py: Python<'py>,
        name: String,
        reference: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move {
            Json::of(&c.push_snapshot(&name, &reference).await.py_err()?)
        })
    }

    /// `POST /v1/sandboxes/{name}/stop`: SandboxInfo dict.
    #[pyo3(signature = (name, timeout_ms=None))]
    fn stop<'py>(
        &self,
        py: Python<'py>,
        name: String,
        timeout_ms: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move {
            Json::of(&c.stop(&name, stop_request(timeout_ms)).await.py_err()?)
        })
    }

    /// `POST /v1/sandboxes/{name}/kill`: SandboxInfo dict.
    fn kill<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move { Json::of(&c.kill(&name).await.py_err()?) })
    }

    /// `GET /v1/sandboxes/{name}/logs`: bytes.
    #[pyo3(signature = (name, tail_bytes=None))]
    fn logs<'py>(
        &self,
        py: Python<'py>,
        name: String,
        tail_bytes: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move {
            Ok(OutBytes(c.logs(&name, tail_bytes).await.py_err()?))
        })
    }

    /// `POST /v1/sandboxes/{name}/start`: SandboxInfo dict.
    fn start<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move { Json::of(&c.start(&name).await.py_err()?) })
    }

    /// `POST /v1/sandboxes/{name}/pause`: SandboxInfo dict.
    fn pause<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move { Json::of(&c.pause(&name).await.py_err()?) })
    }

    /// `POST /v1/sandboxes/{name}/resume`: SandboxInfo dict.
    fn resume<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(
            py,
            async move { Json::of(&c.resume(&name).await.py_err()?) },
        )
    }

    /// `POST /v1/sandboxes/{name}/drain`: SandboxInfo dict.
    #[pyo3(signature = (name, timeout_ms=None))]
    fn drain<'py>(
        &self,
        py: Python<'py>,
        name: String,
        timeout_ms: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move {
            Json::of(&c.drain(&name, stop_request(timeout_ms)).await.py_err()?)
        })
    }

    /// `GET /v1/sandboxes/{name}/lease`: holds an attached sandbox alive until the returned
    /// Lease is released or dropped.
    fn hold_lease<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move {
            let lease = c.hold_lease(&name).await.py_err()?;
            Ok(Lease {
                name,
                inner: tokio::sync::Mutex::new(Some(lease)),
            })
        })
    }

    /// `POST /v1/sandboxes/{name}/exec` with an ExecRequest JSON document; resolves to
    /// `(exit_code, signal, timed_out, stdout, stderr)`.
    fn exec<'py>(
        &self,
        py: Python<'py>,
        name: String,
        request_json: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let req: ExecRequest = parse_request("exec request", request_json)?;
        let c = self.inner.clone();
        future_into_py(py, async move {
            let o = c.exec(&name, req).await.py_err()?;
            let t: ExecTuple = (
                o.exit_code,
                o.signal,
                o.timed_out,
                OutBytes(o.stdout),
                OutBytes(o.stderr),
                Json::of(&o.secret_violations)?,
            );
            Ok(t)
        })
    }

    /// Streaming exec over the WebSocket; resolves to an ExecStream.
    fn exec_stream<'py>(
        &self,
        py: Python<'py>,
        name: String,
        request_json: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let req: ExecRequest = parse_request("exec request", request_json)?;
        let c = self.inner.clone();
        future_into_py(py, async move {
            let stream = c.exec_stream(&name, req).await.py_err()?;
            Ok(ExecStream::new(stream))
        })
    }

    /// `GET /v1/sandboxes/{name}/metrics`: Metrics dict.
    fn metrics<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(
            py,
            async move { Json::of(&c.metrics(&name).await.py_err()?) },
        )
    }

    /// `GET /v1/sandboxes/{name}/secrets/violations`: list of SecretViolation dicts.
    fn secret_violations<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move {
            Json::of(&c.secret_violations(&name).await.py_err()?)
        })
    }

    /// `GET /v1/metrics`: list of Metrics dicts.
    fn all_metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(
            py,
            async move { Json::of(&c.all_metrics().await.py_err()?) },
        )
    }

    /// Reads a whole sandbox file as bytes.
    fn fs_read<'py>(
        &self,
        py: Python<'py>,
        name: String,
        path: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move {
            use futures::TryStreamExt;
            let mut chunks = c.fs_read(&name, &path).await.py_err()?;
            let mut out = Vec::new();
            while let Some(chunk) = chunks.try_next().await.py_err()? {
                out.extend_from_slice(&chunk);
            }
            Ok(OutBytes(out))
        })
    }

    /// Streams a sandbox file to a host file; resolves to the bytes copied.
    fn fs_read_to_file<'py>(
        &self,
        py: Python<'py>,
        name: String,
        guest_path: String,
        host_path: PathBuf,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move {
            c.fs_read_to_file(&name, &guest_path, host_path)
                .await
                .py_err()
        })
    }

    /// Writes `data` to a sandbox file (`append` adds to its end; `mode` applies to a new file);
    /// resolves to the bytes written.
    #[pyo3(signature = (name, path, data, mode=None, append=false))]
    fn fs_write<'py>(
        &self,
        py: Python<'py>,
        name: String,
        path: String,
        data: &[u8],
        mode: Option<u32>,
        append: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let data = bytes::Bytes::copy_from_slice(data);
        let c = self.inner.clone();
        future_into_py(py, async move {
            c.fs_write(
                &name,
                &path,
                mode,
                append,
                futures::stream::iter([Ok(data)]),
            )
            .await
            .py_err()
        })
    }

    /// Streams a host file into the sandbox; resolves to the bytes copied.
    fn fs_write_from_file<'py>(
        &self,
        py: Python<'py>,
        name: String,
        host_path: PathBuf,
        guest_path: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move {
            c.fs_write_from_file(&name, host_path, &guest_path)
                .await
                .py_err()
        })
    }

    /// Entries of a sandbox directory: list of FileStat dicts.
    fn fs_list<'py>(
        &self,
        py: Python<'py>,
        name: String,
        path: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move {
            Json::of(&c.fs_list(&name, &path).await.py_err()?)
        })
    }

    /// Metadata of a sandbox path: FileStat dict.
    fn fs_stat<'py>(
        &self,
        py: Python<'py>,
        name: String,
        path: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move {
            Json::of(&c.fs_stat(&name, &path).await.py_err()?)
        })
    }

    /// Creates a sandbox directory (`parents`: like `mkdir -p`).
    #[pyo3(signature = (name, path, parents=false))]
    fn fs_mkdir<'py>(
        &self,
        py: Python<'py>,
        name: String,
        path: String,
        parents: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move {
            c.fs_mkdir(&name, &path, parents).await.py_err()
        })
    }

    /// Removes a sandbox path (`recursive` for a non-empty directory).
    #[pyo3(signature = (name, path, recursive=false))]
    fn fs_remove<'py>(
        &self,
        py: Python<'py>,
        name: String,
        path: String,
        recursive: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(py, async move {
            c.fs_remove(&name, &path, recursive).await.py_err()
        })
    }

    /// Renames a sandbox path.
    fn fs_rename<'py>(
        &self,
        py: Python<'py>,
        name: String,
        src: String,
        dst: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(
            py,
            async move { c.fs_rename(&name, &src, &dst).await.py_err() },
        )
    }

    /// Copies a sandbox path inside the sandbox.
    fn fs_copy<'py>(
        &self,
        py: Python<'py>,
        name: String,
        src: String,
        dst: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.inner.clone();
        future_into_py(
            py,
            async move { c.fs_copy(&name, &src, &dst).await.py_err() },
        )
    }
}

/// The lease of an attached sandbox: while held, the agent keeps the sandbox; once released (or
/// garbage-collected, or the process ends) the agent removes it.
#[pyclass(frozen, module = "microsandbox._native")]
pub struct Lease {
    name: String,
    inner: tokio::sync::Mutex<Option<microsandbox_client::Lease>>,
}

#[pymethods]
impl Lease {
    /// The sandbox this lease holds.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Whether the lease connection is still open.
    fn is_held(&self) -> bool {
        match self.inner.try_lock() {
            Ok(g) => g.as_ref().is_some_and(|l| l.is_held()),
            // Being released right now.
            Err(_) => false,
        }
    }

    /// Closes the lease (the agent then removes the sandbox) and waits for the agent to see it.
    /// Releasing twice does nothing.
    fn release<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let this: Py<Self> = slf.clone().unbind();
        future_into_py(slf.py(), async move {
            let lease = this.get().inner.lock().await.take();
            if let Some(lease) = lease {
                lease.release().await;
            }
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "<microsandbox._native.Lease {} held={}>",
            self.name,
            self.is_held()
        )
    }
}
