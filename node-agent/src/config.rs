//! Agent configuration (from the command line; see `cli` in main.rs).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything the agent needs to know about its host.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Root of all agent state: images, sandboxes, socket, token.
    pub state_dir: PathBuf,
    /// Optional TCP listener (in addition to the unix socket).
    pub listen: Option<SocketAddr>,
    /// Registry mirrors: `docker.io` -> `127.0.0.1:5000`.
    pub mirrors: BTreeMap<String, String>,
    /// Registries spoken to over plain HTTP (localhost registries are always allowed).
    pub insecure_registries: Vec<String>,
    /// Registry credentials: registry host -> (user, password).
    pub registry_auth: BTreeMap<String, (String, String)>,
    /// Static guest-agent binary injected into every sandbox.
    pub guest_agent: PathBuf,
    /// Node name reported in `/v1/info`.
    pub node_name: String,
    /// Custom guest kernel for microVMs (e.g. a PVM-guest kernel).
    pub kernel: Option<PathBuf>,
    /// Grace period for attached sandboxes to get their lease connection.
    pub lease_grace: std::time::Duration,
    /// Which host paths copy patches and bind mounts may read.
    pub host_access: crate::rootfs::host_access::HostAccess,
    /// Sandbox networks.
    pub network: crate::network::NetConfig,
    /// `/mcp` without the bearer token (dev mode, loopback only).
    pub mcp_without_token: bool,
}

impl AgentConfig {
    pub fn socket_path(&self) -> PathBuf {
        self.state_dir.join("agent.sock")
    }
    pub fn token_path(&self) -> PathBuf {
        self.state_dir.join("agent.token")
    }
    pub fn images_dir(&self) -> PathBuf {
        self.state_dir.join("images")
    }
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.state_dir.join("sandboxes")
    }
}

/// Parse `from=to` mirror specs.
pub fn parse_mirror(s: &str) -> Result<(String, String), String> {
    let (from, to) = s
        .split_once('=')
        .ok_or_else(|| format!("mirror {s:?} must look like docker.io=127.0.0.1:5000"))?;
    if from.is_empty() || to.is_empty() {
        return Err(format!("mirror {s:?} has an empty side"));
    }
    Ok((from.to_string(), to.to_string()))
}

/// A registry host is spoken to over plain HTTP only if it is loopback or listed as insecure.
pub fn is_plain_http(registry: &str, insecure: &[String]) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
    host == "localhost"
        || host.starts_with("127.")
        || host == "[::1]"
        || insecure.iter().any(|r| r == registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors() {
        assert_eq!(
            parse_mirror("docker.io=127.0.0.1:5000").unwrap(),
            ("docker.io".into(), "127.0.0.1:5000".into())
        );
        assert!(parse_mirror("docker.io").is_err());
        assert!(parse_mirror("=x").is_err());
    }

    #[test]
    fn plain_http_only_for_loopback_or_listed() {
        assert!(is_plain_http("127.0.0.1:5000", &[]));
        assert!(is_plain_http("localhost:5000", &[]));
        assert!(!is_plain_http("registry.example:5000", &[]));
        assert!(is_plain_http(
            "registry.example:5000",
            &["registry.example:5000".into()]
        ));
        assert!(!is_plain_http("docker.io", &[]));
    }
}
