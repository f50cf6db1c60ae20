//! The command line, as clap parses it. `msx` and `msr` are `msb exe` and `msb run` under
//! their own names.

use clap::{Args, Parser, Subcommand};

/// msb — run untrusted code in microVM sandboxes on this machine.
///
/// Differences from the upstream microsandbox CLI: the server is the node agent
/// (`microsandbox-agent`), started for you by every command when none runs; `msb run`/`msr`
/// sandboxes are removed when the script ends (bind a `volumes:` entry of the Sandboxfile to keep
/// files); `--cluster` runs the sandbox verbs on Kubernetes Sandbox objects (also as the kubectl
/// plugin `kubectl sandbox`).
#[derive(Debug, Parser)]
#[command(name = "msb", version, propagate_version = true)]
pub struct Cli {
    /// Machine-readable output (JSON) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where sandboxes are: this machine's agent, or (`--cluster`) Sandbox objects of a cluster.
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterArgs {
    /// Sandboxes are Sandbox objects of the Kubernetes cluster of the kubeconfig (ls, get,
    /// stop, rm, metrics, logs, exec, shell, cp, exe).
    #[arg(long, global = true)]
    pub cluster: bool,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, the pod's ServiceAccount).
    #[arg(long, global = true, env = "KUBECONFIG", hide_env_values = true)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Kubeconfig context.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace of the Sandbox objects (default: the context's).
    #[arg(long, short = 'n', global = true)]
    pub namespace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The local node agent (the server every other command talks to).
    #[command(subcommand)]
    Server(ServerCommand),
    /// Pull an image into the local cache.
    Pull {
        /// e.g. `python`, `docker.io/library/alpine:3.20`.
        image: String,
    },
    /// Run a command in a temporary sandbox, removed when it ends (also `msx`).
    #[command(visible_alias = "x")]
    Exe(ExeArgs),
    /// List sandboxes.
    #[command(visible_alias = "list")]
    Ls,
    /// Stop sandboxes (they stay listed until removed).
    Stop {
        #[arg(required = true)]
        names: Vec<String>,
        /// Seconds between SIGTERM and SIGKILL (default 10).
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Remove sandboxes (killed first if running) and everything they stored.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// CPU, memory, disk and network use of one sandbox, or of every running one.
    Metrics { name: Option<String> },
    /// Start stopped sandboxes again (their files as the stop left them).
    Start {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Freeze every process of sandboxes (memory kept, no CPU; commands refused until resume).
    Pause {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Thaw paused (or idle-suspended) sandboxes.
    Resume {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Filesystem snapshots of sandboxes, kept by this machine's agent.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Warm pools of this machine's agent: sandboxes kept started for `msb exe --pool`.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Run a command in a sandbox: `msb exec NAME -- CMD ARGS...`; stdin and the terminal pass
    /// through, the exit code is the command's.
    Exec {
        name: String,
        /// Kill the command after this many seconds (exit code 124).
        #[arg(long)]
        timeout: Option<f64>,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// An interactive shell in a sandbox (a terminal that follows this window's size).
    Shell {
        name: String,
        /// The shell to run.
        #[arg(long, default_value = "/bin/sh")]
        shell: String,
    },
    /// The sandbox's own output (a microVM's console, a container's init log).
    #[command(visible_alias = "log")]
    Logs {
        name: String,
        /// Only the last BYTES bytes.
        #[arg(long)]
        tail: Option<u64>,
    },
    /// Copy a file between this machine and a sandbox: `msb cp ./a NAME:/tmp/a` or
    /// `msb cp NAME:/tmp/a ./a`.
    Cp { src: String, dst: String },
    /// Install a launcher: a command in ~/.local/bin (or --dir) that starts a temporary sandbox
    /// of IMAGE with the arguments passed through (also `msi`).
    #[command(visible_alias = "i")]
    Install(InstallArgs),
    /// Remove a launcher made by `msb install`.
    Uninstall {
        name: String,
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Create a Sandboxfile in the current directory.
    Init,
    /// Add (or replace) a sandbox of the Sandboxfile.
    Add(AddArgs),
    /// Run a script of a Sandboxfile sandbox: `msb run [--sandbox] NAME[~SCRIPT]` (also `msr`).
    #[command(visible_alias = "r")]
    Run(RunArgs),
    /// Serve the MCP (Model Context Protocol) tools over stdio, for AI tools.
    Mcp(McpArgs),
    /// Print a shell completion script (`msb completions bash > /etc/bash_completion.d/msb`).
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Start the agent: in the foreground, or `--detach`ed (as the SDKs do).
    Start {
        /// Development mode: also listen on TCP 127.0.0.1:5555, serve MCP there at /mcp without
        /// a token (the API itself still needs it), and log at debug level.
        #[arg(long)]
        dev: bool,
        /// Start it in the background and return once it serves.
        #[arg(long, short)]
        detach: bool,
    },
    /// Whether the agent runs, and what it offers.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a sandbox's files as snapshot NAME (replacing one of that name); new sandboxes start
    /// from it with `--image` of the snapshot's image. The sandbox must be paused or stopped;
    /// `--pause` pauses a running one for the snapshot and resumes it after. With --cluster, a
    /// SandboxSnapshot object (its node-agent pauses a running Sandbox itself).
    Create {
        sandbox: String,
        name: String,
        #[arg(long)]
        pause: bool,
    },
    /// List snapshots.
    #[command(visible_alias = "list")]
    Ls,
    /// Delete snapshots (refused while a sandbox made from one exists).
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Push snapshot NAME to a registry as image REFERENCE (with the agent's registry
    /// credentials; with --cluster, those of --secret); sandboxes on any machine that can pull
    /// it start from it with --image.
    Push {
        name: String,
        reference: String,
        /// With --cluster: a docker-config Secret of the namespace (`kubectl create secret
        /// docker-registry`) with credentials for the registry; without, anonymous.
        #[arg(long)]
        secret: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Create pool NAME (or change its size or template): SIZE sandboxes of the template kept
    /// started. `msb exe --pool NAME` with the same image, memory, cpus and network takes one.
    Create(PoolArgs),
    /// List pools: size, ready, claimed.
    #[command(visible_alias = "list")]
    Ls,
    /// Delete pools and their unclaimed sandboxes.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct PoolArgs {
    pub name: String,
    /// Sandboxes kept started.
    #[arg(long)]
    pub size: u32,
    #[arg(long)]
    pub image: String,
    /// Memory in MiB.
    #[arg(long, default_value_t = 512)]
    pub memory: u32,
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// KEY=VALUE (repeatable): the members' environment until a claim sets its own.
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// none | public_only | allow_all.
    #[arg(long, default_value = "none")]
    pub network: String,
    /// microvm | container (default: the node's strongest).
    #[arg(long)]
    pub isolation: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExeArgs {
    /// The image (or give it as the first positional argument).
    #[arg(long)]
    pub image: Option<String>,
    /// Memory in MiB.
    #[arg(long, default_value_t = 512)]
    pub memory: u32,
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    #[arg(long)]
    pub workdir: Option<String>,
    /// none | public_only | allow_all.
    #[arg(long, default_value = "none")]
    pub network: String,
    /// HOST:GUEST[:ro] (repeatable).
    #[arg(long = "volume", short = 'v')]
    pub volumes: Vec<String>,
    /// Kill the command after this many seconds.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Take a started sandbox of this warm pool (`msb pool create`) when the options match its
    /// template; otherwise boot one.
    #[arg(long)]
    pub pool: Option<String>,
    /// [IMAGE] [PROGRAM] [ARGS...]: with no program, a shell; when the first argument is an
    /// option (`-c ...`), the program is named after the image (`msx python -c 'print(1)'`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    pub name: String,
    #[arg(long)]
    pub image: String,
    #[arg(long)]
    pub memory: Option<u32>,
    #[arg(long)]
    pub cpus: Option<u32>,
    #[arg(long)]
    pub workdir: Option<String>,
    /// KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// HOST:GUEST[:ro] (repeatable).
    #[arg(long = "volume", short = 'v')]
    pub volumes: Vec<String>,
    /// The `start` script.
    #[arg(long)]
    pub start: Option<String>,
    /// NAME=COMMAND (repeatable).
    #[arg(long = "script")]
    pub scripts: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The sandbox (`NAME` or `NAME~SCRIPT`; or give it as the first positional argument).
    #[arg(long, short)]
    pub sandbox: Option<String>,
    /// The script (default `start`, or the part after `~`).
    #[arg(long)]
    pub script: Option<String>,
    /// Arguments appended to the script.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The image (or give it as the first positional argument).
    #[arg(long)]
    pub image: Option<String>,
    /// [IMAGE] [NAME]: the image unless `--image` gives it, then the launcher's name (default:
    /// named after the image, `alpine` for `alpine:3.20`).
    #[arg(value_name = "IMAGE_OR_NAME", num_args = 0..=2)]
    pub positional: Vec<String>,
    /// The program the launcher runs (default: none; the launcher's arguments are the command,
    /// and without any it runs what `msx IMAGE` does).
    #[arg(long)]
    pub program: Option<String>,
    /// Memory in MiB.
    #[arg(long)]
    pub memory: Option<u32>,
    /// none | public_only | allow_all.
    #[arg(long)]
    pub network: Option<String>,
    /// Mount the directory the launcher runs in at /work and start there, so that
    /// `python script.py` finds `script.py`.
    #[arg(long)]
    pub mount_cwd: bool,
    /// Where to put it (default ~/.local/bin).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Replace an existing file of that name (only launchers made by msb are replaced).
    #[arg(long)]
    pub force: bool,
}

impl RunArgs {
    /// The sandbox target and the arguments for its script.
    pub fn target_and_args(&self) -> Result<(String, Vec<String>), String> {
        if let Some(target) = &self.sandbox {
            return Ok((target.clone(), self.args.clone()));
        }
        match self.args.split_first() {
            Some((target, rest)) if !target.starts_with('-') => Ok((target.clone(), rest.to_vec())),
            _ => Err("which sandbox? `msb run NAME[~SCRIPT]` or `msb run --sandbox NAME`".into()),
        }
    }
}

impl InstallArgs {
    /// The image and the launcher's name, if one is given.
    pub fn image_and_name(&self) -> Result<(String, Option<String>), String> {
        let mut pos = self.positional.iter().cloned();
        let image = match &self.image {
            Some(image) => image.clone(),
            None => pos
                .next()
                .ok_or("which image? `msb install --image IMAGE` or `msi IMAGE [NAME]`")?,
        };
        let name = pos.next();
        match pos.next() {
            Some(extra) => Err(format!("unexpected argument {extra:?}: IMAGE [NAME] only")),
            None => Ok((image, name)),
        }
    }
}

#[derive(Debug, Args)]
pub struct McpArgs {
    /// Keep the sandboxes an MCP session created when the session ends (default: removed).
    #[arg(long)]
    pub keep_sandboxes: bool,
}

/// `KEY=VALUE` pairs.
pub fn pairs(items: &[String], what: &str) -> Result<Vec<(String, String)>, String> {
    items
        .iter()
        .map(|i| {
            i.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("{what} {i:?} must be KEY=VALUE"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msx_style_arguments() {
        let cli = Cli::try_parse_from(["msb", "exe", "python", "-c", "print(1)"]).unwrap();
        let Command::Exe(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.args, ["python", "-c", "print(1)"]);
        let cli = Cli::try_parse_from(["msb", "--json", "ls"]).unwrap();
        assert!(cli.json && matches!(cli.command, Command::Ls));
        assert!(pairs(&["A=1".into()], "env").is_ok());
        assert!(pairs(&["A".into()], "env")
            .unwrap_err()
            .contains("KEY=VALUE"));
    }

    #[test]
    fn the_readme_spellings_parse() {
        let run = |argv: &[&str]| match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => a.target_and_args(),
            other => panic!("{other:?}"),
        };
        let app = |args: &[&str]| {
            Ok((
                "app".to_string(),
                args.iter().map(|s| s.to_string()).collect(),
            ))
        };
        assert_eq!(run(&["msb", "run", "--sandbox", "app"]), app(&[]));
        assert_eq!(run(&["msb", "run", "app", "x"]), app(&["x"]));
        assert_eq!(run(&["msb", "r", "-s", "app", "--", "-v"]), app(&["-v"]));
        assert!(run(&["msb", "run"]).is_err());
        let install = |argv: &[&str]| match Cli::try_parse_from(argv).unwrap().command {
            Command::Install(a) => a.image_and_name(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            install(&["msb", "install", "--image", "alpine"]),
            Ok(("alpine".into(), None))
        );
        assert_eq!(
            install(&["msb", "i", "alpine:20250108", "slim-linux"]),
            Ok(("alpine:20250108".into(), Some("slim-linux".into())))
        );
        assert!(Cli::try_parse_from(["msb", "install", "a", "b", "c"]).is_err());
    }
}
