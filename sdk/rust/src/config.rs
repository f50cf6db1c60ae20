//! What a sandbox is created with besides its image: mounts, network policy, secrets, patches.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use microsandbox_client::api::{self, MountSpec, NetworkSpec, RootPatch, SecretSpec};

/// A file system mounted into the sandbox at a path (see [`crate::SandboxBuilder::volume`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// A host directory (under one of the agent's host roots).
    Bind { host_path: String, readonly: bool },
    /// A named volume of the agent ([`crate::Volume::create`]).
    Named { name: String, readonly: bool },
    /// A memory-backed file system of `size_mib` MiB (counts against the sandbox's memory).
    Tmpfs { size_mib: u32 },
}

impl Mount {
    /// A host directory, read-write. A relative path is taken from the current directory.
    pub fn bind(host_path: impl AsRef<std::path::Path>) -> Self {
        let p = host_path.as_ref();
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        };
        Mount::Bind {
            host_path: abs.to_string_lossy().into_owned(),
            readonly: false,
        }
    }

    pub fn named(name: impl Into<String>) -> Self {
        Mount::Named {
            name: name.into(),
            readonly: false,
        }
    }

    pub fn tmpfs(size_mib: u32) -> Self {
        Mount::Tmpfs { size_mib }
    }

    /// The same mount, read-only (tmpfs stays writable).
    pub fn readonly(self) -> Self {
        match self {
            Mount::Bind { host_path, .. } => Mount::Bind {
                host_path,
                readonly: true,
            },
            Mount::Named { name, .. } => Mount::Named {
                name,
                readonly: true,
            },
            tmpfs => tmpfs,
        }
    }

    pub(crate) fn spec(self, path: String) -> MountSpec {
        match self {
            Mount::Bind {
                host_path,
                readonly,
            } => MountSpec::Bind {
                path,
                host_path,
                readonly,
            },
            Mount::Named { name, readonly } => MountSpec::Named {
                path,
                name,
                readonly,
            },
            Mount::Tmpfs { size_mib } => MountSpec::Tmpfs { path, size_mib },
        }
    }
}

/// Where the sandbox may connect. Enforced outside the sandbox, by the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy(pub(crate) NetworkSpec);

impl NetworkPolicy {
    /// No network (the default).
    pub fn none() -> Self {
        NetworkPolicy::default()
    }

    /// Public internet only: no private, link-local or node addresses.
    pub fn public_only() -> Self {
        NetworkPolicy(NetworkSpec {
            policy: api::NetworkPolicy::PublicOnly,
            ..Default::default()
        })
    }

    /// Everything the node reaches.
    pub fn allow_all() -> Self {
        NetworkPolicy(NetworkSpec {
            policy: api::NetworkPolicy::AllowAll,
            ..Default::default()
        })
    }

    /// Also allow these hosts or CIDRs (beyond the preset).
    pub fn allow<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.0.allow.extend(hosts.into_iter().map(Into::into));
        self
    }
}

/// A credential the sandbox sees only as a placeholder in an environment variable; the node's
/// egress proxy puts the value in requests to the allowed hosts. The value never enters the
/// sandbox.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) SecretSpec);

impl Secret {
    /// Secret `value` behind environment variable `name`, sent only to `allow_hosts`.
    pub fn env<I, S>(name: impl Into<String>, value: impl Into<String>, allow_hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Secret(SecretSpec {
            env: name.into(),
            value: value.into(),
            allow_hosts: allow_hosts.into_iter().map(Into::into).collect(),
        })
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A change to the sandbox's root file system before it boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch(pub(crate) RootPatch);

impl Patch {
    /// Write a file with `content`.
    pub fn text(path: impl Into<String>, content: impl AsRef<[u8]>) -> Self {
        Patch(RootPatch::Text {
            path: path.into(),
            content_b64: B64.encode(content),
            mode: None,
        })
    }

    /// Append `content` to a file.
    pub fn append(path: impl Into<String>, content: impl AsRef<[u8]>) -> Self {
        Patch(RootPatch::Append {
            path: path.into(),
            content_b64: B64.encode(content),
        })
    }

    pub fn mkdir(path: impl Into<String>) -> Self {
        Patch(RootPatch::Mkdir {
            path: path.into(),
            mode: None,
        })
    }

    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> Self {
        Patch(RootPatch::Symlink {
            path: path.into(),
            target: target.into(),
        })
    }

    pub fn remove(path: impl Into<String>) -> Self {
        Patch(RootPatch::Remove { path: path.into() })
    }

    /// Copy a host file or directory tree (under one of the agent's host roots) to `path`.
    pub fn copy(src: impl AsRef<std::path::Path>, path: impl Into<String>) -> Self {
        Patch(RootPatch::Copy {
            src: src.as_ref().to_string_lossy().into_owned(),
            path: path.into(),
            mode: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_and_policies_become_wire_types() {
        let m = Mount::bind("/data").readonly().spec("/mnt".into());
        assert_eq!(
            m,
            MountSpec::Bind {
                path: "/mnt".into(),
                host_path: "/data".into(),
                readonly: true
            }
        );
        let rel = Mount::bind("src");
        let Mount::Bind { host_path, .. } = rel else {
            unreachable!()
        };
        assert!(host_path.starts_with('/') && host_path.ends_with("/src"));
        let p = NetworkPolicy::public_only().allow(["example.com"]);
        assert_eq!(p.0.policy, api::NetworkPolicy::PublicOnly);
        assert_eq!(p.0.allow, ["example.com"]);
        let s = Secret::env("API_KEY", "sk-1", ["api.example.com"]);
        assert!(
            !format!("{s:?}").contains("sk-1"),
            "the value is never printed"
        );
        let Patch(RootPatch::Text { content_b64, .. }) = Patch::text("/a", "hi") else {
            unreachable!()
        };
        assert_eq!(content_b64, "aGk=");
    }
}
