//! Local mode: where the node agent of this machine is, and starting one when none runs — the
//! same rules, environment variables and files as the Python SDK, so every SDK of one user
//! shares one agent.
//!
//! * `MSB_AGENT_SOCKET`: an explicit endpoint (a socket path, `unix:PATH` or `HOST:PORT`), token
//!   from `MSB_AGENT_TOKEN` or the `agent.token` beside the socket; never started by the SDK.
//! * otherwise the state directory `MSB_STATE_DIR` (default `/var/lib/microsandbox` as root,
//!   else `$XDG_STATE_HOME/microsandbox` or `~/.local/state/microsandbox`): socket
//!   `<state>/agent.sock`, token `<state>/agent.token`. When nothing answers there the SDK starts
//!   `microsandbox-agent serve --state-dir <state>` in its own process group (log:
//!   `<state>/agent.log`), serialised by `<state>/agent.start.lock`, and later processes reuse it.
//!
//! The binary is `MSB_AGENT_BIN`, else `microsandbox-agent` beside the running program, else on
//! `PATH`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use microsandbox_client::{AgentClient, Endpoint};

use crate::error::{Error, Result};

pub const ENV_SOCKET: &str = "MSB_AGENT_SOCKET";
pub const ENV_TOKEN: &str = "MSB_AGENT_TOKEN";
pub const ENV_STATE_DIR: &str = "MSB_STATE_DIR";
pub const ENV_AGENT_BIN: &str = "MSB_AGENT_BIN";
pub const ENV_START_TIMEOUT: &str = "MSB_AGENT_START_TIMEOUT";
const AGENT_BINARY: &str = "microsandbox-agent";
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the agent listens and how to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub endpoint: Endpoint,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// The state directory of an agent the SDK may start; `None` for an explicit endpoint.
    pub state_dir: Option<PathBuf>,
}

/// The agent's default state directory for the current user (`home`, `xdg`: their variables).
pub fn default_state_dir(root: bool, xdg: Option<&str>, home: Option<&str>) -> PathBuf {
    match (
        root,
        xdg.filter(|x| !x.is_empty()),
        home.filter(|h| !h.is_empty()),
    ) {
        (true, _, _) => PathBuf::from("/var/lib/microsandbox"),
        (false, Some(x), _) => Path::new(x).join("microsandbox"),
        (false, None, Some(h)) => Path::new(h).join(".local/state/microsandbox"),
        (false, None, None) => PathBuf::from("/tmp/microsandbox"),
    }
}

/// Where the agent should be, from these environment values. Pure.
pub fn locate_with(env: &dyn Fn(&str) -> Option<String>, root: bool) -> Result<Location> {
    let token = env(ENV_TOKEN).filter(|t| !t.is_empty());
    if let Some(explicit) = env(ENV_SOCKET).filter(|s| !s.is_empty()) {
        let endpoint: Endpoint = explicit.parse().map_err(|e: String| {
            Error::AgentUnreachable(format!("{ENV_SOCKET}={explicit:?}: {e}"))
        })?;
        let token_file = match &endpoint {
            Endpoint::Unix(p) => p.parent().map(|d| d.join("agent.token")),
            _ => None,
        };
        return Ok(Location {
            endpoint,
            token,
            token_file,
            state_dir: None,
        });
    }
    let sd = env(ENV_STATE_DIR)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            default_state_dir(
                root,
                env("XDG_STATE_HOME").as_deref(),
                env("HOME").as_deref(),
            )
        });
    Ok(Location {
        endpoint: Endpoint::Unix(sd.join("agent.sock")),
        token,
        token_file: Some(sd.join("agent.token")),
        state_dir: Some(sd),
    })
}

/// Where the agent should be, from the process environment.
pub fn locate() -> Result<Location> {
    locate_with(&|k| std::env::var(k).ok(), nix::unistd::geteuid().is_root())
}

impl Location {
    fn read_token(&self) -> Option<String> {
        if let Some(t) = &self.token {
            return Some(t.clone());
        }
        let file = self.token_file.as_ref()?;
        std::fs::read_to_string(file)
            .ok()
            .map(|t| t.trim().to_string())
    }

    fn client(&self) -> AgentClient {
        AgentClient::new(self.endpoint.clone(), self.read_token())
    }
}

/// The client of this machine's agent, starting the agent when none answers.
pub async fn connect() -> Result<AgentClient> {
    let loc = locate()?;
    if loc.client().health().await.is_ok() {
        return Ok(loc.client());
    }
    let Some(sd) = loc.state_dir.clone() else {
        return Err(Error::AgentUnreachable(format!(
            "no node agent answers at {} ({ENV_SOCKET}); start it, or unset {ENV_SOCKET} to let \
             the SDK start a local agent",
            loc.endpoint
        )));
    };
    start(&sd).await?;
    Ok(loc.client())
}

/// What the agent says about itself (version, node, isolation levels, sandbox count).
pub async fn info() -> Result<microsandbox_client::api::AgentInfo> {
    Ok(connect().await?.info().await?)
}

/// The `microsandbox-agent` binary this SDK would start.
pub fn find_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(ENV_AGENT_BIN).filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if is_executable(&bin) {
            Ok(bin)
        } else {
            Err(Error::AgentNotInstalled(format!(
                "{ENV_AGENT_BIN}={} is not an executable file",
                bin.display()
            )))
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(AGENT_BINARY)));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(AGENT_BINARY));
    beside
        .into_iter()
        .chain(on_path)
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            Error::AgentNotInstalled(format!(
                "no {AGENT_BINARY} beside this program nor on PATH: install it, set \
                 {ENV_AGENT_BIN}, or start an agent and set {ENV_STATE_DIR} / {ENV_SOCKET}"
            ))
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Start an agent on state directory `sd` unless one answers there; wait until it serves.
/// Returns the new agent's pid (`None`: one was running). Serialised across processes.
pub async fn start(sd: &Path) -> Result<Option<u32>> {
    let sd = sd.to_path_buf();
    tokio::task::spawn_blocking(move || start_blocking(&sd))
        .await
        .map_err(|e| Error::AgentUnreachable(format!("starting the agent: {e}")))?
}

fn start_blocking(sd: &Path) -> Result<Option<u32>> {
    let timeout = std::env::var(ENV_START_TIMEOUT)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .map_or(DEFAULT_START_TIMEOUT, Duration::from_secs_f64);
    let socket = sd.join("agent.sock");
    let healthy = || healthz(&socket);
    if healthy() {
        return Ok(None);
    }
    let binary = find_binary()?;
    std::fs::create_dir_all(sd).map_err(|e| {
        Error::AgentUnreachable(format!(
            "cannot create the agent state directory {}: {e}",
            sd.display()
        ))
    })?;
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(sd.join("agent.start.lock"))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))?;
    if healthy() {
        return Ok(None);
    }
    let log_path = sd.join("agent.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut cmd = std::process::Command::new(&binary);
    cmd.arg("serve").arg("--state-dir").arg(sd);
    if std::env::var_os("MSB_HOST_ROOTS").is_none() {
        // This user's agent on this user's machine: binds and copies may read what the user
        // can (never the agent's own state, /proc, /sys or /dev).
        cmd.arg("--local").env_remove("MSB_HOST_ROOTS");
    }
    {
        use std::os::unix::process::CommandExt;
        // Its own process group: a Ctrl-C meant for this program does not reach the agent.
        cmd.process_group(0);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| Error::AgentUnreachable(format!("cannot start {}: {e}", binary.display())))?;
    let deadline = Instant::now() + timeout;
    loop {
        if healthy() && sd.join("agent.token").exists() {
            return Ok(Some(child.id()));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::AgentUnreachable(format!(
                "the node agent ({}) exited with {status} while starting; its log {} ends with:\n{}",
                binary.display(),
                log_path.display(),
                tail(&log_path)
            )));
        }
        if Instant::now() > deadline {
            return Err(Error::AgentUnreachable(format!(
                "the node agent ({}, pid {}) did not answer on {} within {timeout:?}; its log {} ends with:\n{}",
                binary.display(),
                child.id(),
                socket.display(),
                log_path.display(),
                tail(&log_path)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether an agent answers `GET /healthz` on this unix socket (blocking, 2 s at most).
fn healthz(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    if s.set_read_timeout(Some(Duration::from_secs(2))).is_err()
        || s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    buf[..n].starts_with(b"HTTP/1.1 200")
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn state_dir_defaults() {
        assert_eq!(
            default_state_dir(true, Some("/x"), None),
            Path::new("/var/lib/microsandbox")
        );
        assert_eq!(
            default_state_dir(false, Some("/x"), Some("/h")),
            Path::new("/x/microsandbox")
        );
        assert_eq!(
            default_state_dir(false, None, Some("/h")),
            Path::new("/h/.local/state/microsandbox")
        );
    }

    #[test]
    fn explicit_socket_or_state_dir() {
        let loc = locate_with(&env(&[(ENV_SOCKET, "/run/a/agent.sock")]), false).unwrap();
        assert_eq!(loc.endpoint, Endpoint::Unix("/run/a/agent.sock".into()));
        assert_eq!(
            loc.token_file.as_deref(),
            Some(Path::new("/run/a/agent.token"))
        );
        assert!(
            loc.state_dir.is_none(),
            "an explicit agent is never started"
        );
        let tcp = locate_with(
            &env(&[(ENV_SOCKET, "127.0.0.1:7070"), (ENV_TOKEN, "t")]),
            false,
        )
        .unwrap();
        assert_eq!(tcp.token.as_deref(), Some("t"));
        let sd = locate_with(&env(&[(ENV_STATE_DIR, "/s")]), false).unwrap();
        assert_eq!(sd.endpoint, Endpoint::Unix("/s/agent.sock".into()));
        assert_eq!(sd.state_dir.as_deref(), Some(Path::new("/s")));
    }
}

/// A node agent to talk to: this machine's ([`Agent::local`], started when none runs) or one at
/// a known endpoint ([`Agent::at`]). Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct Agent {
    pub(crate) client: AgentClient,
}

impl Agent {
    /// This machine's agent, located (and started when none runs) as the module doc says.
    pub async fn local() -> Result<Agent> {
        Ok(Agent {
            client: connect().await?,
        })
    }

    /// The agent at `endpoint`, authenticated with `token`; nothing is started.
    pub fn at(endpoint: Endpoint, token: Option<String>) -> Agent {
        Agent {
            client: AgentClient::new(endpoint, token),
        }
    }

    /// The low-level API client.
    pub fn client(&self) -> &AgentClient {
        &self.client
    }

    /// A handle on its sandbox `name` (it does not hold the sandbox's lease).
    pub async fn get(&self, name: &str) -> Result<crate::Sandbox> {
        let info = self.client.get(name).await?;
        Ok(crate::Sandbox::adopt(self.client.clone(), info))
    }

    /// Every sandbox of the agent.
    pub async fn list(&self) -> Result<Vec<microsandbox_client::api::SandboxInfo>> {
        Ok(self.client.list().await?)
    }

    /// Metrics of every running sandbox of the agent.
    pub async fn all_metrics(&self) -> Result<Vec<microsandbox_client::api::Metrics>> {
        Ok(self.client.all_metrics().await?)
    }

    /// Remove its sandbox `name` (killed first if running) and everything it stored.
    pub async fn remove(&self, name: &str) -> Result<()> {
        Ok(self.client.remove(name).await?)
    }
}
