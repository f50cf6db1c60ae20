//! Where the node agent listens.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Address of a node agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// The agent's unix socket, normally `<state-dir>/agent.sock`.
    Unix(PathBuf),
    /// A TCP `host:port`, e.g. `"127.0.0.1:7070"` (the agent's `--listen`).
    Tcp(String),
    /// An agent reached through a [`Relay`](crate::Relay), such as the Kubernetes API server's
    /// pod proxy; the string says where (for messages only, never parsed).
    Relayed(String),
}

impl Endpoint {
    /// The authority to put in `http://` / `ws://` URLs for this endpoint.
    pub(crate) fn authority(&self) -> &str {
        match self {
            // Unix sockets have no host; any constant works for the Host header.
            Endpoint::Unix(_) | Endpoint::Relayed(_) => "localhost",
            Endpoint::Tcp(addr) => addr,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "http://{addr}"),
            Endpoint::Relayed(what) => f.write_str(what),
        }
    }
}

/// Parses `unix:PATH`, `unix://PATH`, an absolute or `./` path (unix socket), `http://HOST:PORT`,
/// `tcp://HOST:PORT` or a bare `HOST:PORT`.
impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty endpoint".into());
        }
        if let Some(path) = s
            .strip_prefix("unix://")
            .or_else(|| s.strip_prefix("unix:"))
        {
            if path.is_empty() {
                return Err(format!("endpoint {s:?} has no socket path"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        let addr = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("tcp://"))
            .unwrap_or(s)
            .trim_end_matches('/');
        if addr.is_empty() || addr.contains('/') || addr.contains("://") {
            return Err(format!(
                "endpoint {s:?} is neither a unix socket path nor HOST:PORT"
            ));
        }
        Ok(Endpoint::Tcp(addr.to_string()))
    }
}

impl From<PathBuf> for Endpoint {
    fn from(path: PathBuf) -> Self {
        Endpoint::Unix(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let unix = |p: &str| Endpoint::Unix(PathBuf::from(p));
        let tcp = |a: &str| Endpoint::Tcp(a.to_string());
        assert_eq!("unix:/run/a.sock".parse(), Ok(unix("/run/a.sock")));
        assert_eq!("unix:///run/a.sock".parse(), Ok(unix("/run/a.sock")));
        assert_eq!("/run/a.sock".parse(), Ok(unix("/run/a.sock")));
        assert_eq!("./a.sock".parse(), Ok(unix("./a.sock")));
        assert_eq!("127.0.0.1:7070".parse(), Ok(tcp("127.0.0.1:7070")));
        assert_eq!("http://127.0.0.1:7070/".parse(), Ok(tcp("127.0.0.1:7070")));
        assert_eq!("tcp://[::1]:7070".parse(), Ok(tcp("[::1]:7070")));
        assert!("".parse::<Endpoint>().is_err());
        assert!("unix:".parse::<Endpoint>().is_err());
        assert!("https://x:1".parse::<Endpoint>().is_err());
        assert!("http://x:1/path".parse::<Endpoint>().is_err());
    }

    #[test]
    fn display() {
        assert_eq!(
            Endpoint::Unix("/a/b.sock".into()).to_string(),
            "unix:/a/b.sock"
        );
        assert_eq!(Endpoint::Tcp("h:1".into()).to_string(), "http://h:1");
    }
}
