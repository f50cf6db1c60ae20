//! Command line of `microsandbox-agent`.

use clap::{Parser, Subcommand};
use microsandbox_agent::config::{parse_mirror, AgentConfig};
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
    Serve(ServeArgs),
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

fn config_from(a: ServeArgs) -> Result<AgentConfig, String> {
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
    Ok(AgentConfig {
        state_dir: a.state_dir.unwrap_or_else(default_state_dir),
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
    })
}

pub fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Serve(a) => {
            let config = config_from(a)?;
            let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            rt.block_on(microsandbox_agent::serve::serve(config))
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
