//! Command line of `microsandbox-agent`.

use clap::{Parser, Subcommand};
use microsandbox_agent::cluster::{proxy_path, ClusterConfig};
use microsandbox_agent::config::{parse_mirror, AgentConfig};
use microsandbox_agent::rootfs::host_access::HostAccess;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "microsandbox-agent",
    version,
    about = "microsandbox node agent"
)]
pub struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true, env = "MSB_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the API on a unix socket (and optionally TCP).
    Serve(Box<ServeArgs>),
    /// Say what this host can run (microVM, container) and why not.
    Doctor {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Custom guest kernel to judge (as `serve --kernel`).
        #[arg(long, env = "MSB_KERNEL")]
        kernel: Option<PathBuf>,
        /// Explicit libkrun shared object.
        #[arg(long, env = "MSB_LIBKRUN")]
        libkrun: Option<PathBuf>,
    },
    /// Internal: run one microVM (libkrun takes over this process).
    #[command(hide = true)]
    Vmm {
        #[arg(long)]
        plan: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// State directory (images, sandboxes, socket, token).
    #[arg(long, env = "MSB_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Also listen on this TCP address (e.g. 127.0.0.1:7070).
    #[arg(long, env = "MSB_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Registry mirror, e.g. docker.io=127.0.0.1:5000 (repeatable).
    #[arg(long = "mirror", env = "MSB_MIRRORS", value_delimiter = ',')]
    pub mirrors: Vec<String>,
    /// Registry reached over plain HTTP (loopback registries always are). Repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure: Vec<String>,
    /// Registry credentials HOST=USER:PASSWORD (repeatable).
    #[arg(
        long = "registry-auth",
        env = "MSB_REGISTRY_AUTH",
        value_delimiter = ','
    )]
    pub registry_auth: Vec<String>,
    /// Static guest-agent binary (default: microsandbox-guest next to this executable).
    #[arg(long, env = "MSB_GUEST_AGENT")]
    pub guest_agent: Option<PathBuf>,
    /// Custom guest kernel for microVMs (e.g. a PVM-guest kernel on PVM hosts).
    #[arg(long, env = "MSB_KERNEL")]
    pub kernel: Option<PathBuf>,
    /// Node name reported by the API.
    #[arg(long, env = "MSB_NODE_NAME")]
    pub node_name: Option<String>,
    /// Seconds an attached sandbox waits for its creator's lease connection.
    #[arg(long, default_value_t = 10)]
    pub lease_grace_secs: u64,
    /// Host directory that bind mounts and copy patches may read (repeatable; default none).
    #[arg(long = "host-root", env = "MSB_HOST_ROOTS", value_delimiter = ',')]
    pub host_roots: Vec<PathBuf>,
    /// This agent serves the one user who runs it, on their machine (the SDKs start it so):
    /// binds and copies may read any path that user can read, except /proc, /sys, /dev and the
    /// agent's state directory. Not with --host-root or --cluster.
    #[arg(long, conflicts_with_all = ["host_roots", "cluster"])]
    pub local: bool,
    /// Serve the MCP endpoint `/mcp` without the bearer token (`msb server start --dev`, as
    /// the upstream server's dev mode). Only with a loopback --listen; not with --cluster.
    #[arg(long, conflicts_with = "cluster")]
    pub mcp_without_token: bool,
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Sandbox networks (see `node-agent/src/network`).
#[derive(clap::Args, Debug, Default)]
pub struct NetArgs {
    /// Named network namespace (`ip netns`) holding sandbox uplinks and their nftables rules
    /// (default: the agent's own).
    #[arg(long, env = "MSB_UPLINK_NETNS")]
    pub uplink_netns: Option<String>,
    /// Address pool of sandbox links (a /30 each).
    #[arg(long, env = "MSB_SANDBOX_CIDR", default_value = "10.213.0.0/16")]
    pub sandbox_cidr: String,
    /// Extra range `public_only` refuses, e.g. the cluster's pod and service CIDRs (repeatable).
    #[arg(
        long = "blocked-cidr",
        env = "MSB_BLOCKED_CIDRS",
        value_delimiter = ','
    )]
    pub blocked_cidrs: Vec<String>,
    /// Resolver for sandboxes' DNS, IP[:PORT] (default: the first nameserver of
    /// /etc/resolv.conf), reached from the uplink namespace.
    #[arg(long, env = "MSB_DNS_UPSTREAM")]
    pub dns_upstream: Option<String>,
    /// CA certificate file (PEM) the secrets proxy trusts for upstream servers besides the
    /// node's roots (repeatable).
    #[arg(long = "upstream-ca", env = "MSB_UPSTREAM_CAS", value_delimiter = ',')]
    pub upstream_cas: Vec<PathBuf>,
}

fn net_from(a: &NetArgs) -> Result<microsandbox_agent::network::NetConfig, String> {
    let cidr = |s: &str| {
        s.trim()
            .parse::<ipnet::Ipv4Net>()
            .map_err(|e| format!("{s:?} is not an IPv4 CIDR: {e}"))
    };
    let upstream = match &a.dns_upstream {
        Some(s) => Some(parse_upstream(s).ok_or(format!("--dns-upstream {s:?} is not IP[:PORT]"))?),
        None => std::fs::read_to_string("/etc/resolv.conf")
            .ok()
            .and_then(|t| {
                t.lines()
                    .filter_map(|l| l.trim().strip_prefix("nameserver"))
                    .find_map(|ip| parse_upstream(ip.trim()))
            }),
    };
    Ok(microsandbox_agent::network::NetConfig {
        uplink_netns: a.uplink_netns.clone().filter(|s| !s.is_empty()),
        pool: cidr(&a.sandbox_cidr)?,
        blocked: a
            .blocked_cidrs
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| cidr(s))
            .collect::<Result<_, _>>()?,
        dns_upstream: upstream,
        netns_prefix: String::new(),
        upstream_cas: a
            .upstream_cas
            .iter()
            .filter(|p| !p.as_os_str().is_empty())
            .cloned()
            .collect(),
    })
}

/// `IP` or `IP:PORT` (port 53 by default).
fn parse_upstream(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>().ok().or_else(|| {
        s.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// Cluster mode: run the Sandboxes the operator binds to this node.
#[derive(clap::Args, Debug, Default)]
pub struct ClusterArgs {
    /// Join the cluster (kubeconfig or in-cluster service account, as kubectl finds them).
    #[arg(long, env = "MSB_CLUSTER")]
    pub cluster: bool,
    /// Namespace of the operator (node Leases live there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "microsandbox-system")]
    pub cluster_namespace: String,
    /// Run Sandboxes of this namespace only (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Agent API base URL announced to the operator and clients, e.g. http://10.0.3.7:7070.
    #[arg(long, env = "MSB_ADVERTISE_ENDPOINT")]
    pub advertise_endpoint: Option<String>,
    /// Name of this agent's pod (downward API), announced so that clients outside the cluster
    /// reach the `--listen` port through the API server's pod proxy.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Seconds the node Lease stays valid without renewal (renewed every third of it).
    #[arg(long, default_value_t = 15)]
    pub node_lease_secs: u64,
    /// Memory offered to sandboxes in MiB (default: 90% of the host's).
    #[arg(long, env = "MSB_CAPACITY_MEMORY_MIB")]
    pub capacity_memory_mib: Option<u64>,
    /// Virtual CPUs offered to sandboxes (default: 4 per host CPU; sandboxes rarely use a whole one).
    #[arg(long, env = "MSB_CAPACITY_CPUS")]
    pub capacity_cpus: Option<u64>,
    /// Most sandboxes at once.
    #[arg(long, env = "MSB_CAPACITY_SANDBOXES", default_value_t = 256)]
    pub capacity_sandboxes: u64,
    /// Node label KEY=VALUE mirrored on the node Lease for Volume placement (repeatable).
    #[arg(long = "node-label", value_delimiter = ',')]
    pub node_labels: Vec<String>,
}

pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MSB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib/microsandbox")
    } else {
        std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir)
            .join("microsandbox")
    }
}

fn default_guest_agent() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("microsandbox-guest")))
        .unwrap_or_else(|| PathBuf::from("microsandbox-guest"))
}

fn config_from(a: Box<ServeArgs>) -> Result<AgentConfig, String> {
    let mirrors: BTreeMap<String, String> = a
        .mirrors
        .iter()
        .filter(|m| !m.is_empty())
        .map(|m| parse_mirror(m))
        .collect::<Result<_, _>>()?;
    let registry_auth = a
        .registry_auth
        .iter()
        .filter(|m| !m.is_empty())
        .map(|s| {
            let (host, cred) = s
                .split_once('=')
                .ok_or(format!("registry auth {s:?} must be HOST=USER:PASSWORD"))?;
            let (u, p) = cred
                .split_once(':')
                .ok_or(format!("registry auth for {host} must be USER:PASSWORD"))?;
            Ok((host.to_string(), (u.to_string(), p.to_string())))
        })
        .collect::<Result<_, String>>()?;
    let state_dir = a.state_dir.clone().unwrap_or_else(default_state_dir);
    if a.mcp_without_token && a.listen.is_some_and(|l| !l.ip().is_loopback()) {
        return Err(format!(
            "--mcp-without-token serves /mcp to anyone who connects: --listen {} must be a loopback address",
            a.listen.map(|l| l.to_string()).unwrap_or_default()
        ));
    }
    let mut network = net_from(&a.net)?;
    network.netns_prefix = microsandbox_agent::network::netns_prefix(&state_dir);
    let host_access = if a.local {
        HostAccess::Owner {
            private: vec![state_dir.clone()],
        }
    } else {
        HostAccess::Roots(
            a.host_roots
                .iter()
                .filter(|p| !p.as_os_str().is_empty())
                .cloned()
                .collect(),
        )
    };
    Ok(AgentConfig {
        network,
        state_dir,
        listen: a.listen,
        mirrors,
        insecure_registries: a.insecure,
        registry_auth,
        guest_agent: a.guest_agent.unwrap_or_else(default_guest_agent),
        node_name: a.node_name.unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        }),
        kernel: a.kernel,
        lease_grace: std::time::Duration::from_secs(a.lease_grace_secs),
        host_access,
        mcp_without_token: a.mcp_without_token,
    })
}

fn cluster_from(
    a: &ClusterArgs,
    node: &str,
    listen: Option<SocketAddr>,
) -> Result<Option<ClusterConfig>, String> {
    if !a.cluster {
        return Ok(None);
    }
    let node_labels = a
        .node_labels
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("node label {l:?} must be KEY=VALUE"))
        })
        .collect::<Result<_, _>>()?;
    let host_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4096, |kib| kib / 1024);
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    Ok(Some(ClusterConfig {
        node: node.to_string(),
        lease_namespace: a.cluster_namespace.clone(),
        watch_namespace: a.watch_namespace.clone(),
        endpoint: a.advertise_endpoint.clone(),
        proxy: match (&a.pod_name, listen) {
            (Some(pod), Some(addr)) if !pod.is_empty() => {
                Some(proxy_path(&a.cluster_namespace, pod, addr.port()))
            }
            _ => None,
        },
        lease_duration: std::time::Duration::from_secs(a.node_lease_secs.max(3)),
        capacity_memory_mib: a.capacity_memory_mib.unwrap_or(host_mib * 9 / 10),
        capacity_cpus: a.capacity_cpus.unwrap_or(host_cpus * 4),
        capacity_sandboxes: a.capacity_sandboxes,
        node_labels,
        // Set by `serve` once the key is loaded from the state directory.
        sealing_key: None,
    }))
}

pub fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Serve(mut a) => {
            let cluster_args = std::mem::take(&mut a.cluster);
            let config = config_from(a)?;
            let cluster = cluster_from(&cluster_args, &config.node_name, config.listen)?;
            let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            rt.block_on(microsandbox_agent::serve::serve(config, cluster))
                .map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor {
            json,
            kernel,
            libkrun,
        } => {
            let report = microsandbox_agent::doctor::diagnose_with(
                &microsandbox_agent::doctor::DoctorOptions { kernel, libkrun },
            );
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                );
            } else {
                println!("{report}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Vmm { plan } => match microsandbox_agent::runtime::microvm::run_vmm(&plan) {
            Ok(never) => match never {},
            Err(e) => Err(e.to_string()),
        },
    }
}
