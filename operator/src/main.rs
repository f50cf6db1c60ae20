//! `microsandbox-operator`: wiring only (arguments, logging, leader election, HTTP endpoints,
//! controllers). The logic lives in the library.

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::events::Reporter;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Client;
use microsandbox_crds::events::Events;
use microsandbox_crds::{Sandbox, SandboxSnapshot, Secret, Volume};
use microsandbox_operator::controller::{self, Context, FIELD_MANAGER};
use microsandbox_operator::leader::{self, LeaderConfig};
use microsandbox_operator::metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use warp::Filter;

#[derive(Parser, Debug)]
#[command(name = "microsandbox-operator", version, about)]
struct Args {
    /// Namespace of the operator: node-agent Leases and the leader Lease live here.
    #[arg(long, env = "POD_NAMESPACE", default_value = "microsandbox-system")]
    namespace: String,
    /// Watch Sandboxes and Volumes in this namespace only (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Identity in the leader Lease (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "microsandbox-operator")]
    identity: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "microsandbox-operator")]
    leader_lease: String,
    /// Seconds a leader lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_secs: u64,
    /// Seconds between renewals.
    #[arg(long, default_value_t = 5)]
    lease_renew_secs: u64,
    /// Run without leader election (single replica, development).
    #[arg(long)]
    no_leader_election: bool,
    /// Address of /metrics and /healthz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Seconds between status refreshes of a bound sandbox.
    #[arg(long, default_value_t = 30)]
    resync_secs: u64,
    /// Log as JSON lines.
    #[arg(long, env = "LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Delete every Sandbox in scope and wait until the node-agents have removed them (the
    /// chart's pre-delete hook), then exit.
    Uninstall {
        /// Give up (exit non-zero, naming what is left) after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow_free::Result {
    let args = Args::parse();
    init_tracing(args.log_json);
    if let Some(Command::Uninstall { timeout_secs }) = args.command {
        let client = Client::try_default().await?;
        let api: Api<Sandbox> = match &args.watch_namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        };
        let timeout = Duration::from_secs(timeout_secs);
        let n = microsandbox_operator::uninstall::delete_all_sandboxes(&api, timeout).await?;
        tracing::info!(deleted = n, "every Sandbox is gone");
        return Ok(());
    }
    let metrics = Arc::new(Metrics::default());
    serve_http(args.metrics_addr, metrics.clone());

    let client = Client::try_default().await?;

    // Leader election first: standbys only serve /healthz and /metrics.
    let (leader_tx, mut leader_rx) = tokio::sync::watch::channel(args.no_leader_election);
    let election = if args.no_leader_election {
        None
    } else {
        let cfg = LeaderConfig {
            namespace: args.namespace.clone(),
            lease_name: args.leader_lease.clone(),
            identity: args.identity.clone(),
            lease_duration: Duration::from_secs(args.lease_duration_secs),
            renew_every: Duration::from_secs(args.lease_renew_secs),
        };
        let api = Api::<Lease>::namespaced(client.clone(), &args.namespace);
        Some(tokio::spawn(leader::run(api, cfg, leader_tx)))
    };
    leader_rx.wait_for(|l| *l).await?;
    metrics.leader.set(1);

    let (leases, lease_writer) = reflector::store();
    let lease_stream = reflector(
        lease_writer,
        watcher(
            Api::<Lease>::namespaced(client.clone(), &args.namespace),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| futures::future::ready(()));
    let (namespaces, namespace_writer) = reflector::store();
    let namespace_stream = reflector(
        namespace_writer,
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| futures::future::ready(()));
    let (volumes, volume_writer) = reflector::store();
    let volume_api: Api<Volume> = match &args.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let volume_stream = reflector(
        volume_writer,
        watcher(volume_api.clone(), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| futures::future::ready(()));

    let (snapshots, snapshot_writer) = reflector::store();
    let snapshot_api: Api<SandboxSnapshot> = match &args.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let snapshot_stream = reflector(
        snapshot_writer,
        watcher(snapshot_api.clone(), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| futures::future::ready(()));

    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Events::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(args.identity.clone()),
            },
        ),
        metrics,
        node_leases: leases,
        volumes,
        snapshots,
        namespaces,
        resync: Duration::from_secs(args.resync_secs),
        assumed: Default::default(),
    });
    let secret_api: Api<Secret> = match &args.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let sandbox_api: Api<Sandbox> = match &args.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let controllers = async {
        tokio::join!(
            controller::sandbox::run(
                ctx.clone(),
                sandbox_api,
                Api::<Lease>::namespaced(client.clone(), &args.namespace)
            ),
            controller::volume::run(ctx.clone(), volume_api),
            controller::secret::run(ctx.clone(), secret_api),
            controller::push::run(ctx.clone(), snapshot_api),
            controller::pool::run(ctx, args.watch_namespace.as_deref()),
            lease_stream,
            volume_stream,
            snapshot_stream,
            namespace_stream
        );
    };
    match election {
        None => controllers.await,
        Some(election) => {
            tokio::select! {
                _ = controllers => {}
                lost = election => {
                    // Exit so a restarted replica rejoins as a standby; two leaders must never reconcile.
                    match lost {
                        Ok(Err(e)) => return Err(e.into()),
                        Ok(Ok(())) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
    tracing::info!("shut down");
    Ok(())
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve_http(addr: SocketAddr, metrics: Arc<Metrics>) {
    let metrics_route = warp::path("metrics").and(warp::path::end()).map(move || {
        warp::reply::with_header(
            metrics.encode(),
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    });
    let health = warp::path("healthz").and(warp::path::end()).map(|| "ok");
    tokio::spawn(warp::serve(metrics_route.or(health)).run(addr));
}

/// `main`'s error: anything printable, without pulling in anyhow for one function.
mod anyhow_free {
    pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
}
