//! `microsandbox-agent serve`: assemble the agent and run its API until SIGINT/SIGTERM.

use std::sync::Arc;

use crate::api;
use crate::config::AgentConfig;
use crate::image::ImageStore;
use crate::runtime::container::ContainerRuntime;
use crate::runtime::microvm::{KernelConfig, MicrovmRuntime, MicrovmSettings};
use crate::runtime::{Runtime, RuntimeError};
use crate::sandbox::SandboxManager;
use microsandbox_wire::api::Isolation;

/// Errors that stop the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("another agent is already serving on {0}")]
    AlreadyRunning(String),
    #[error("guest agent binary {0} not found (build it with `make guest` or pass --guest-agent)")]
    GuestAgentMissing(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("state directory {dir}: {source}")]
    State { dir: String, source: std::io::Error },
    #[error("cluster mode: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// Runtimes this node can run, and the isolation levels it cannot provide with the reason.
pub type Probed = (Vec<Arc<dyn Runtime>>, Vec<(Isolation, String)>);

/// Probe the runtimes this host can run; the others are recorded with the reason.
pub fn probe_runtimes(config: &AgentConfig) -> Probed {
    let mut ok: Vec<Arc<dyn Runtime>> = Vec::new();
    let mut unavailable = Vec::new();
    let kernel = match config
        .kernel
        .as_deref()
        .map(KernelConfig::from_file)
        .transpose()
    {
        Ok(k) => k,
        Err(e) => {
            unavailable.push((Isolation::Microvm, e.to_string()));
            None
        }
    };
    let settings = MicrovmSettings {
        kernel,
        ..Default::default()
    };
    match MicrovmRuntime::probe(settings) {
        Ok(rt) => ok.push(Arc::new(rt)),
        Err(RuntimeError::Unavailable { reason, .. }) => {
            unavailable.push((Isolation::Microvm, reason))
        }
        Err(e) => unavailable.push((Isolation::Microvm, e.to_string())),
    }
    match ContainerRuntime::probe(&config.state_dir) {
        Ok(rt) => ok.push(Arc::new(rt)),
        Err(RuntimeError::Unavailable { reason, .. }) => {
            unavailable.push((Isolation::Container, reason))
        }
        Err(e) => unavailable.push((Isolation::Container, e.to_string())),
    }
    (ok, unavailable)
}

/// Build everything and serve until a shutdown signal.
pub async fn serve(
    config: AgentConfig,
    cluster: Option<crate::cluster::ClusterConfig>,
) -> Result<(), ServeError> {
    let state_err = |source| ServeError::State {
        dir: config.state_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&config.state_dir).map_err(state_err)?;
    if !config.guest_agent.is_file() {
        return Err(ServeError::GuestAgentMissing(
            config.guest_agent.display().to_string(),
        ));
    }
    let token = api::load_or_create_token(&config.token_path()).map_err(state_err)?;
    let images = Arc::new(
        ImageStore::new(
            config.images_dir(),
            config.mirrors.clone(),
            config.insecure_registries.clone(),
            config.registry_auth.clone(),
        )
        .map_err(state_err)?,
    );
    // Sandbox inits (crun detaches them) are reparented to this process, not to the host's
    // PID 1, so their exit status is collected when the sandbox is cleaned up and no zombie
    // stays behind.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become child subreaper; exited sandboxes may linger as zombies until the host reaps them");
    }
    let (runtimes, unavailable) = probe_runtimes(&config);
    for (i, why) in &unavailable {
        tracing::warn!(isolation = %i, reason = %why, "isolation level unavailable on this node");
    }
    let socket_path = config.socket_path();
    if tokio::net::UnixStream::connect(&socket_path).await.is_ok() {
        return Err(ServeError::AlreadyRunning(
            socket_path.display().to_string(),
        ));
    }
    crate::cleanup::remove_file(&socket_path);
    let manager =
        SandboxManager::new(config.clone(), images, runtimes, unavailable).map_err(state_err)?;
    for r in manager.recover().await {
        tracing::info!(?r, "recovered sandbox state");
    }
    let _idle_suspender = manager.spawn_idle_suspender();
    let _stray_reaper = crate::runtime::container::reaper::spawn_sweep();
    let (cluster_task, cluster_auth) = match cluster {
        Some(cfg) => {
            let client = crate::cluster::connect().await?;
            let key_path = config.state_dir.join(crate::cluster::sealing::KEY_FILE);
            let key = crate::cluster::sealing::load_or_create(&key_path).map_err(state_err)?;
            let cfg = crate::cluster::ClusterConfig {
                sealing_key: Some(key.public_b64()),
                ..cfg
            };
            let auth = Arc::new(crate::cluster::authz::ClusterAuth::new(client.clone()));
            let task = tokio::spawn(crate::cluster::run(
                client,
                cfg,
                manager.clone(),
                Arc::new(key),
            ));
            (Some(task), Some(auth))
        }
        None => (None, None),
    };
    let unix =
        tokio::net::UnixListener::bind(&socket_path).map_err(|source| ServeError::Listen {
            addr: socket_path.display().to_string(),
            source,
        })?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))
            .map_err(state_err)?;
    }
    let mcp = match cluster_task {
        // A cluster node's sandboxes are Sandbox objects; MCP clients use `msb mcp --cluster`.
        Some(_) => None,
        None => Some(mcp_endpoint(&config, &socket_path, &token)),
    };
    let routes = api::routes(
        manager.clone(),
        api::Auth {
            token,
            cluster: cluster_auth,
            manager: manager.clone(),
        },
        mcp,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(
        warp::serve(routes.clone())
            .incoming(unix)
            .graceful(shutdown())
            .run(),
    );
    if let Some(addr) = config.listen {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        tracing::info!(%addr, "listening on tcp");
        servers.spawn(warp::serve(routes).incoming(tcp).graceful(shutdown()).run());
    }
    tracing::info!(socket = %socket_path.display(), isolation = ?manager.isolation_levels(), "microsandbox-agent ready");
    // Readiness marker for scripts and the SDK.
    println!("ready {}", socket_path.display());
    wait_for_signal().await;
    tracing::info!("shutting down; sandboxes keep running and are re-adopted on restart");
    if let Some(t) = cluster_task {
        t.abort();
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    crate::cleanup::remove_file(&socket_path);
    Ok(())
}

/// The MCP endpoint: its tools create sandboxes through this agent's own socket.
fn mcp_endpoint(
    config: &AgentConfig,
    socket: &std::path::Path,
    token: &api::Token,
) -> (microsandbox_mcp::http::HttpEndpoint, api::McpAccess) {
    let agent = microsandbox::Agent::at(
        microsandbox::Endpoint::Unix(socket.to_path_buf()),
        Some(token.expose().to_string()),
    );
    let hosts = config.listen.map(|l| l.ip().to_string());
    let endpoint = microsandbox_mcp::http::HttpEndpoint::new(agent, hosts);
    let access = if config.mcp_without_token {
        api::McpAccess::Open
    } else {
        api::McpAccess::Token(token.clone())
    };
    (endpoint, access)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
