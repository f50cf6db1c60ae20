//! The credentials for one registry out of a docker config: the `.dockerconfigjson` of a Secret
//! of type `kubernetes.io/dockerconfigjson`, the format a Pod's imagePullSecrets use (`kubectl
//! create secret docker-registry` writes it). Pure.
//!
//! Written here (40 lines) rather than taken from a crate: the credential crates read the
//! user's own config file and helpers; this parses bytes read from the API server.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use microsandbox_crds::sealed::RegistryCredentials;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The data key of a `kubernetes.io/dockerconfigjson` Secret.
pub const DATA_KEY: &str = ".dockerconfigjson";
/// The type of such a Secret.
pub const SECRET_TYPE: &str = "kubernetes.io/dockerconfigjson";

/// Why a docker config gives no credentials. Never carries a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("is not a docker config (JSON with \"auths\")")]
    NotDockerConfig,
    #[error("has no credentials for registry {0}")]
    NoEntry(String),
    #[error(
        "its entry for {0} has neither \"auth\" (base64 user:password) nor username and password"
    )]
    Incomplete(String),
}

#[derive(Deserialize)]
struct Config {
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

pub use microsandbox_crds::snapshot::registry_host as host;

/// The credentials `config` holds for `registry`.
pub fn credentials_for(config: &[u8], registry: &str) -> Result<RegistryCredentials, ConfigError> {
    let config: Config =
        serde_json::from_slice(config).map_err(|_| ConfigError::NotDockerConfig)?;
    let want = host(registry);
    let (key, entry) = config
        .auths
        .iter()
        .find(|(k, _)| host(k) == want)
        .ok_or_else(|| ConfigError::NoEntry(want.clone()))?;
    let incomplete = || ConfigError::Incomplete(key.clone());
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(RegistryCredentials {
            username: u.clone(),
            password: p.clone(),
        });
    }
    let decoded = B64
        .decode(entry.auth.as_deref().ok_or_else(incomplete)?.trim())
        .map_err(|_| incomplete())?;
    let text = String::from_utf8(decoded).map_err(|_| incomplete())?;
    let (u, p) = text.split_once(':').ok_or_else(incomplete)?;
    Ok(RegistryCredentials {
        username: u.to_string(),
        password: p.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_of_the_registry_is_found_in_any_spelling() {
        let config = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": B64.encode("hub:hub-pw")},
            "Reg.Example.com:5000": {"username": "robot", "password": "pw:with:colons"},
            "http://127.0.0.1:5000/v2/": {"auth": B64.encode("local:pw")},
            "broken.test": {"auth": "not base64!"},
            "empty.test": {},
        }})
        .to_string();
        let c = |r: &str| credentials_for(config.as_bytes(), r);
        assert_eq!(c("docker.io").unwrap().username, "hub");
        assert_eq!(c("index.docker.io").unwrap().password, "hub-pw");
        let robot = c("reg.example.com:5000").unwrap();
        assert_eq!(
            (robot.username.as_str(), robot.password.as_str()),
            ("robot", "pw:with:colons")
        );
        assert_eq!(c("127.0.0.1:5000").unwrap().username, "local");
        assert_eq!(
            c("reg.example.com"),
            Err(ConfigError::NoEntry("reg.example.com".into()))
        );
        assert!(matches!(c("broken.test"), Err(ConfigError::Incomplete(_))));
        assert!(matches!(c("empty.test"), Err(ConfigError::Incomplete(_))));
        assert_eq!(
            credentials_for(b"{}", "x"),
            Err(ConfigError::NotDockerConfig)
        );
        // No value in any message.
        let e = c("broken.test").unwrap_err().to_string();
        assert!(!e.contains("not base64"), "{e}");
    }
}
