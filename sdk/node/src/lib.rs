//! The native core of the Node.js SDK: napi-rs bindings over the `microsandbox` crate, no logic
//! of their own. `index.js` gives them their TypeScript idiom (error classes with a `code`,
//! async iterators, `Symbol.asyncDispose`).
//!
//! Errors cross as `Error`s whose message starts with the agent's error code and a colon
//! (`sandbox_not_found: ...`); `index.js` turns the code into a class.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use microsandbox::{Error, ExecEvent, ExecInput, Isolation, Mount, NetworkPolicy};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use tokio::sync::Mutex;

fn js_error(e: Error) -> napi::Error {
    if let Error::Cluster(c) = &e {
        return napi::Error::from_reason(format!("cluster_{}: {}", c.kind.as_str(), c.message));
    }
    let code = match &e {
        Error::AgentUnreachable(_) => "agent_unreachable",
        Error::AgentNotInstalled(_) => "agent_not_installed",
        Error::ExecTimeout { .. } => "exec_timeout",
        Error::Transport(_) | Error::Io(_) => "transport",
        other => other.code().map(|c| c.as_str()).unwrap_or("internal"),
    };
    napi::Error::from_reason(format!("{code}: {e}"))
}

fn invalid(message: String) -> napi::Error {
    napi::Error::from_reason(format!("invalid_request: {message}"))
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// A mount of `CreateOptions.volumes`.
#[napi(object)]
pub struct VolumeMount {
    /// Where in the sandbox.
    pub path: String,
    /// "bind" (host directory), "named" (a named volume) or "tmpfs".
    pub kind: String,
    /// The host directory (bind) or the volume's name (named).
    pub source: Option<String>,
    pub readonly: Option<bool>,
    pub size_mib: Option<u32>,
}

/// Cluster mode: where the Sandbox objects live (see the `microsandbox` crate's `cluster`).
#[napi(object)]
#[derive(Clone, Default)]
pub struct ClusterOptions {
    /// Path of a kubeconfig; default as kubectl.
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
    /// Namespace of the objects; default the context's.
    pub namespace: Option<String>,
    /// How long create waits for Ready (default 120000).
    pub ready_timeout_ms: Option<f64>,
    /// "auto" (default), "direct" or "proxy".
    pub agent_access: Option<String>,
}

/// The (shared) connection for these options.
async fn connect(o: &ClusterOptions) -> napi::Result<microsandbox::ClusterConnection> {
    static OPEN: std::sync::OnceLock<
        Mutex<HashMap<microsandbox::Cluster, microsandbox::ClusterConnection>>,
    > = std::sync::OnceLock::new();
    let mut c = microsandbox::Cluster::new();
    c.kubeconfig = o.kubeconfig.clone().map(Into::into);
    c.context = o.context.clone();
    c.namespace = o.namespace.clone();
    if let Some(ms) = o.ready_timeout_ms {
        if !(ms.is_finite() && ms > 0.0) {
            return Err(invalid(format!(
                "readyTimeoutMs must be positive, not {ms}"
            )));
        }
        c.ready_timeout = std::time::Duration::from_secs_f64(ms / 1000.0);
    }
    c.agent_access = o
        .agent_access
        .as_deref()
        .unwrap_or("auto")
        .parse()
        .map_err(|e: microsandbox::ClusterError| js_error(e.into()))?;
    let mut open = OPEN.get_or_init(Default::default).lock().await;
    if let Some(conn) = open.get(&c) {
        return Ok(conn.clone());
    }
    let conn = c.connect().await.map_err(|e| js_error(e.into()))?;
    open.insert(c, conn.clone());
    Ok(conn)
}

#[napi(object)]
pub struct CreateOptions {
    pub image: Option<String>,
    pub memory: Option<u32>,
    pub cpus: Option<u32>,
    pub env: Option<HashMap<String, String>>,
    pub workdir: Option<String>,
    /// "microvm" or "container".
    pub isolation: Option<String>,
    pub detached: Option<bool>,
    /// "none", "public_only" or "allow_all".
    pub network: Option<String>,
    pub volumes: Option<Vec<VolumeMount>>,
    /// Suspend it after this many milliseconds without a command or file operation.
    pub idle_timeout_ms: Option<f64>,
    /// Take a started sandbox of this warm pool when the options match its template.
    pub pool: Option<String>,
    /// Create it as a Sandbox object of this cluster instead of on the local agent.
    pub cluster: Option<ClusterOptions>,
}

#[napi(object)]
pub struct ExecOptions {
    pub args: Option<Vec<String>>,
    pub cwd: Option<String>,
    pub env: Option<HashMap<String, String>>,
    pub user: Option<String>,
    /// Kill the command after this many milliseconds.
    pub timeout_ms: Option<f64>,
    /// Bytes fed to stdin (collected exec only).
    pub stdin: Option<Buffer>,
}

#[napi(object)]
pub struct ExecResult {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: Buffer,
    pub stderr: Buffer,
}

/// One event of a streamed exec: `type` is "started", "stdout", "stderr" or "exited".
#[napi(object)]
pub struct NativeEvent {
    pub r#type: String,
    pub pid: Option<u32>,
    pub data: Option<Buffer>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: Option<bool>,
}

#[napi]
pub struct NativeSandbox {
    name: String,
    inner: Arc<Mutex<Option<microsandbox::Sandbox>>>,
}

fn builder(name: &str, o: CreateOptions) -> napi::Result<microsandbox::SandboxBuilder> {
    let mut b = microsandbox::Sandbox::builder(name)
        .image(o.image.unwrap_or_else(|| "python".into()))
        .memory(o.memory.unwrap_or(512))
        .cpus(o.cpus.unwrap_or(1));
    for (k, v) in o.env.unwrap_or_default() {
        b = b.env(k, v);
    }
    if let Some(w) = o.workdir {
        b = b.workdir(w);
    }
    match o.isolation.as_deref() {
        None => {}
        Some("microvm") => b = b.isolation(Isolation::Microvm),
        Some("container") => b = b.isolation(Isolation::Container),
        Some(other) => {
            return Err(invalid(format!(
                "isolation {other:?}: use microvm or container"
            )))
        }
    }
    if o.detached.unwrap_or(false) {
        b = b.detached();
    }
    if let Some(pool) = o.pool {
        b = b.pool(pool);
    }
    if let Some(ms) = o.idle_timeout_ms {
        if !(ms > 0.0 && ms.is_finite()) {
            return Err(invalid(format!("idleTimeoutMs {ms}: must be positive")));
        }
        b = b.idle_timeout(std::time::Duration::from_millis(ms.ceil() as u64));
    }
    b = b.network(match o.network.as_deref().unwrap_or("none") {
        "none" => NetworkPolicy::none(),
        "public_only" => NetworkPolicy::public_only(),
        "allow_all" => NetworkPolicy::allow_all(),
        other => {
            return Err(invalid(format!(
                "network {other:?}: use none, public_only or allow_all"
            )))
        }
    });
    for v in o.volumes.unwrap_or_default() {
        let mount = match (v.kind.as_str(), v.source) {
            ("bind", Some(src)) => Mount::bind(src),
            ("named", Some(src)) => Mount::named(src),
            ("tmpfs", _) => Mount::tmpfs(v.size_mib.unwrap_or(64)),
            (kind, _) => {
                return Err(invalid(format!(
                    "volume at {}: kind {kind:?} needs a source (bind, named) or is unknown",
                    v.path
                )))
            }
        };
        b = b.volume(
            v.path,
            if v.readonly.unwrap_or(false) {
                mount.readonly()
            } else {
                mount
            },
        );
    }
    Ok(b)
}

impl NativeSandbox {
    fn wrap(sb: microsandbox::Sandbox) -> Self {
        NativeSandbox {
            name: sb.name().to_string(),
            inner: Arc::new(Mutex::new(Some(sb))),
        }
    }

    async fn with<T>(
        &self,
        f: impl AsyncFnOnce(&mut microsandbox::Sandbox) -> microsandbox::Result<T>,
    ) -> napi::Result<T> {
        let mut guard = self.inner.lock().await;
        let sb = guard.as_mut().ok_or_else(|| {
            napi::Error::from_reason(format!(
                "sandbox_not_found: sandbox {:?} was removed",
                self.name
            ))
        })?;
        f(sb).await.map_err(js_error)
    }

    fn command(
        sb: &microsandbox::Sandbox,
        command: &str,
        o: Option<ExecOptions>,
    ) -> (microsandbox::Command, Option<Vec<u8>>) {
        let o = o.unwrap_or(ExecOptions {
            args: None,
            cwd: None,
            env: None,
            user: None,
            timeout_ms: None,
            stdin: None,
        });
        let mut cmd = sb.command(command).args(o.args.unwrap_or_default());
        if let Some(c) = o.cwd {
            cmd = cmd.cwd(c);
        }
        for (k, v) in o.env.unwrap_or_default() {
            cmd = cmd.env(k, v);
        }
        if let Some(u) = o.user {
            cmd = cmd.user(u);
        }
        if let Some(t) = o.timeout_ms.filter(|t| t.is_finite() && *t > 0.0) {
            cmd = cmd.timeout(Duration::from_secs_f64(t / 1000.0));
        }
        (cmd, o.stdin.map(|b| b.to_vec()))
    }
}

fn result(o: microsandbox::ExecOutput) -> ExecResult {
    ExecResult {
        exit_code: o.exit_code,
        signal: o.signal,
        timed_out: o.timed_out,
        stdout: o.stdout.into(),
        stderr: o.stderr.into(),
    }
}

#[napi]
impl NativeSandbox {
    /// Pull the image if needed and boot a sandbox (starts the local agent when none runs).
    #[napi(factory)]
    pub async fn create(
        name: String,
        options: Option<CreateOptions>,
    ) -> napi::Result<NativeSandbox> {
        let o = options.unwrap_or(CreateOptions {
            image: None,
            memory: None,
            cpus: None,
            env: None,
            workdir: None,
            isolation: None,
            detached: None,
            network: None,
            volumes: None,
            idle_timeout_ms: None,
            pool: None,
            cluster: None,
        });
        let cluster = match &o.cluster {
            Some(c) => Some(connect(c).await?),
            None => None,
        };
        let mut b = builder(&name, o)?;
        if let Some(conn) = &cluster {
            b = b.cluster(conn);
        }
        let sb = b.create().await.map_err(js_error)?;
        Ok(NativeSandbox::wrap(sb))
    }

    /// A handle on an existing sandbox.
    #[napi(factory)]
    pub async fn get(name: String, cluster: Option<ClusterOptions>) -> napi::Result<NativeSandbox> {
        let sb = match cluster {
            Some(c) => microsandbox::Sandbox::get_in(&connect(&c).await?, &name).await,
            None => microsandbox::Sandbox::get(&name).await,
        }
        .map_err(js_error)?;
        Ok(NativeSandbox::wrap(sb))
    }

    #[napi(getter)]
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// The agent's current view of it.
    #[napi]
    pub async fn info(&self) -> napi::Result<serde_json::Value> {
        self.with(async |sb| sb.refresh().await.map(json)).await
    }

    /// Run to completion; a timeout is a result with `timedOut` (the wrapper throws).
    #[napi]
    pub async fn exec(
        &self,
        command: String,
        options: Option<ExecOptions>,
    ) -> napi::Result<ExecResult> {
        self.with(async |sb| {
            let (mut cmd, stdin) = NativeSandbox::command(sb, &command, options);
            if let Some(data) = stdin {
                cmd = cmd.stdin(data);
            }
            match cmd.run().await {
                Ok(o) => Ok(result(o)),
                Err(Error::ExecTimeout { output }) => Ok(result(*output)),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Start a command and stream its events.
    #[napi]
    pub async fn exec_stream(
        &self,
        command: String,
        options: Option<ExecOptions>,
    ) -> napi::Result<NativeExecStream> {
        let stream = self
            .with(async |sb| {
                NativeSandbox::command(sb, &command, options)
                    .0
                    .stream()
                    .await
            })
            .await?;
        let input = stream.input();
        Ok(NativeExecStream {
            input,
            inner: Arc::new(Mutex::new(stream)),
        })
    }

    #[napi]
    pub async fn read_file(&self, path: String) -> napi::Result<Buffer> {
        self.with(async |sb| sb.fs().read(&path).await.map(Buffer::from))
            .await
    }

    #[napi]
    pub async fn write_file(&self, path: String, data: Buffer) -> napi::Result<f64> {
        let data = data.to_vec();
        self.with(async |sb| sb.fs().write(&path, data).await.map(|n| n as f64))
            .await
    }

    #[napi]
    pub async fn list_dir(&self, path: String) -> napi::Result<serde_json::Value> {
        self.with(async |sb| sb.fs().list(&path).await.map(|l| json(&l)))
            .await
    }

    #[napi]
    pub async fn stat(&self, path: String) -> napi::Result<serde_json::Value> {
        self.with(async |sb| sb.fs().stat(&path).await.map(|s| json(&s)))
            .await
    }

    #[napi]
    pub async fn mkdir(&self, path: String) -> napi::Result<()> {
        self.with(async |sb| sb.fs().mkdir(&path).await).await
    }

    #[napi]
    pub async fn remove_path(&self, path: String) -> napi::Result<()> {
        self.with(async |sb| sb.fs().remove(&path).await).await
    }

    #[napi]
    pub async fn metrics(&self) -> napi::Result<serde_json::Value> {
        self.with(async |sb| sb.metrics().await.map(|m| json(&m)))
            .await
    }

    /// Graceful stop (SIGKILL after `graceMs`); it stays listed until removed.
    #[napi]
    pub async fn stop(&self, grace_ms: Option<f64>) -> napi::Result<serde_json::Value> {
        let grace = grace_ms
            .filter(|g| g.is_finite() && *g > 0.0)
            .map(|g| Duration::from_secs_f64(g / 1000.0));
        self.with(async |sb| sb.stop(grace).await.map(json)).await
    }

    /// Its own output (a microVM's console, a container's init log), at most the last
    /// `tail_bytes`.
    #[napi]
    pub async fn logs(&self, tail_bytes: Option<f64>) -> napi::Result<Buffer> {
        let tail = tail_bytes.map(|t| t.max(0.0) as u64);
        self.with(async |sb| sb.logs(tail).await.map(Buffer::from))
            .await
    }

    /// Start it again after a stop: its files as the stop left them.
    #[napi]
    pub async fn start(&self) -> napi::Result<serde_json::Value> {
        self.with(async |sb| sb.start().await.map(json)).await
    }

    /// Freeze every process until resume.
    #[napi]
    pub async fn pause(&self) -> napi::Result<serde_json::Value> {
        self.with(async |sb| sb.pause().await.map(json)).await
    }

    /// Thaw a paused or idle-suspended sandbox.
    #[napi]
    pub async fn resume(&self) -> napi::Result<serde_json::Value> {
        self.with(async |sb| sb.resume().await.map(json)).await
    }

    /// Save its files (paused or stopped) as snapshot `name`.
    #[napi]
    pub async fn snapshot(&self, name: String) -> napi::Result<serde_json::Value> {
        self.with(async |sb| sb.snapshot(&name).await.map(|s| json(&s)))
            .await
    }

    #[napi]
    pub async fn kill(&self) -> napi::Result<serde_json::Value> {
        self.with(async |sb| sb.kill().await.map(json)).await
    }

    /// Remove it and everything it stored; no error if already removed through this handle.
    #[napi]
    pub async fn remove(&self) -> napi::Result<()> {
        let sb = self.inner.lock().await.take();
        match sb {
            Some(sb) => sb.remove().await.map_err(js_error),
            None => Ok(()),
        }
    }
}

#[napi]
pub struct NativeExecStream {
    input: ExecInput,
    inner: Arc<Mutex<microsandbox::ExecStream>>,
}

#[napi]
impl NativeExecStream {
    /// The next event, or null after `exited`.
    #[napi]
    pub async fn next(&self) -> napi::Result<Option<NativeEvent>> {
        let ev = self.inner.lock().await.next().await;
        let Some(ev) = ev else { return Ok(None) };
        let none = || NativeEvent {
            r#type: String::new(),
            pid: None,
            data: None,
            exit_code: None,
            signal: None,
            timed_out: None,
        };
        Ok(Some(match ev.map_err(js_error)? {
            ExecEvent::Started { pid } => NativeEvent {
                r#type: "started".into(),
                pid: Some(pid),
                ..none()
            },
            ExecEvent::Stdout(d) => NativeEvent {
                r#type: "stdout".into(),
                data: Some(d.to_vec().into()),
                ..none()
            },
            ExecEvent::Stderr(d) => NativeEvent {
                r#type: "stderr".into(),
                data: Some(d.to_vec().into()),
                ..none()
            },
            ExecEvent::Exited {
                exit_code,
                signal,
                timed_out,
            } => NativeEvent {
                r#type: "exited".into(),
                exit_code: Some(exit_code),
                signal,
                timed_out: Some(timed_out),
                ..none()
            },
        }))
    }

    #[napi]
    pub async fn write_stdin(&self, data: Buffer) -> napi::Result<()> {
        self.input
            .write_stdin(data.to_vec())
            .await
            .map_err(|e| js_error(e.into()))
    }

    #[napi]
    pub async fn close_stdin(&self) -> napi::Result<()> {
        self.input
            .close_stdin()
            .await
            .map_err(|e| js_error(e.into()))
    }

    #[napi]
    pub async fn signal(&self, signal: i32) -> napi::Result<()> {
        self.input
            .signal(signal)
            .await
            .map_err(|e| js_error(e.into()))
    }
}

/// The Node.js interpreter driver of `microsandbox::repl` (`NodeSandbox.run`).
#[napi]
pub fn node_repl_driver() -> &'static str {
    microsandbox::repl::NODE_DRIVER
}

/// Every sandbox of the local agent (or of the cluster's namespace).
#[napi]
pub async fn list_sandboxes(cluster: Option<ClusterOptions>) -> napi::Result<serde_json::Value> {
    match cluster {
        Some(c) => microsandbox::Sandbox::list_in(&connect(&c).await?).await,
        None => microsandbox::Sandbox::list().await,
    }
    .map(|l| json(&l))
    .map_err(js_error)
}

/// Remove sandbox `name` (killed first if running); in cluster mode delete its object.
#[napi]
pub async fn remove_sandbox(name: String, cluster: Option<ClusterOptions>) -> napi::Result<()> {
    match cluster {
        Some(c) => microsandbox::Sandbox::remove_in(&connect(&c).await?, &name).await,
        None => microsandbox::Sandbox::remove_named(&name).await,
    }
    .map_err(js_error)
}

/// Create (or change) warm pool `name` of the local agent: `size` sandboxes made from `template`
/// kept started.
#[napi]
pub async fn create_pool(
    name: String,
    size: u32,
    template: CreateOptions,
) -> napi::Result<serde_json::Value> {
    if template.cluster.is_some() {
        return Err(invalid(
            "pools of a cluster are SandboxWarmPool objects; create one with kubectl".into(),
        ));
    }
    let template = builder("template", template)?;
    microsandbox::Pool::create(&name, size, template)
        .await
        .map(|p| json(&p))
        .map_err(js_error)
}

/// The warm pools of the local agent.
#[napi]
pub async fn list_pools() -> napi::Result<serde_json::Value> {
    microsandbox::Pool::list()
        .await
        .map(|l| json(&l))
        .map_err(js_error)
}

/// Delete warm pool `name` and its unclaimed sandboxes.
#[napi]
pub async fn remove_pool(name: String) -> napi::Result<()> {
    microsandbox::Pool::remove(&name).await.map_err(js_error)
}

/// The snapshots of the local agent (or the namespace's taken SandboxSnapshots).
#[napi]
pub async fn list_snapshots(cluster: Option<ClusterOptions>) -> napi::Result<serde_json::Value> {
    match cluster {
        Some(c) => microsandbox::Snapshot::list_in(&connect(&c).await?).await,
        None => microsandbox::Snapshot::list().await,
    }
    .map(|l| json(&l))
    .map_err(js_error)
}

/// Delete snapshot `name` (refused while a sandbox made from it exists); in cluster mode delete
/// its SandboxSnapshot (its node keeps the files until no Sandbox made from it exists).
#[napi]
pub async fn remove_snapshot(name: String, cluster: Option<ClusterOptions>) -> napi::Result<()> {
    match cluster {
        Some(c) => microsandbox::Snapshot::remove_in(&connect(&c).await?, &name).await,
        None => microsandbox::Snapshot::remove(&name).await,
    }
    .map_err(js_error)
}

/// Push snapshot `name` to a registry as image `reference`: `{reference, digest}`. In cluster
/// mode with the credentials of docker-config Secret `secret` of the namespace (sealed to the
/// snapshot's node by the operator); `secret` is refused locally.
#[napi]
pub async fn push_snapshot(
    name: String,
    reference: String,
    cluster: Option<ClusterOptions>,
    secret: Option<String>,
) -> napi::Result<serde_json::Value> {
    match (cluster, secret) {
        (Some(c), secret) => {
            microsandbox::Snapshot::push_in(&connect(&c).await?, &name, &reference, secret.as_deref())
                .await
        }
        (None, Some(_)) => {
            return Err(invalid(
                "secret names a Kubernetes Secret: it applies in cluster mode only (a local push uses the agent's --registry-auth)".into(),
            ))
        }
        (None, None) => microsandbox::Snapshot::push(&name, &reference).await,
    }
    .map(|p| json(&p))
    .map_err(js_error)
}
