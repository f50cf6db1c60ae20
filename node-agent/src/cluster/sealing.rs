//! This node-agent's sealing key and the secrets the operator sealed to it.
//!
//! The private key is made once and kept in the state directory (0600, like the API token); the
//! public half goes on the node Lease. A Sandbox with `spec.secrets` is created only once the
//! operator has put values sealed to that key (and to this object and node) into
//! `status.sealedSecrets`; from then on they live where local-mode secrets live (agent memory,
//! 0600 `secrets.json`), so the egress proxy treats both modes alike.

use super::Prerequisite;
use kube::ResourceExt;
use microsandbox_crds::sealed::{Binding, SealError, SealingKey};
use microsandbox_crds::Sandbox;
use microsandbox_wire::api::SecretSpec;
use std::path::Path;

/// File name of the private key in the state directory.
pub const KEY_FILE: &str = "sealing.key";

/// The stored key, or a new one stored at `path` (0600).
pub fn load_or_create(path: &Path) -> std::io::Result<SealingKey> {
    if let Ok(bytes) = std::fs::read(path) {
        match SealingKey::from_private_bytes(&bytes) {
            Ok(k) => return Ok(k),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable sealing key; making a new one (the operator re-seals)")
            }
        }
    }
    let key = SealingKey::generate();
    crate::private_file::write(path, &key.private_bytes())?;
    Ok(key)
}

/// The secrets of a Sandbox bound to `node`, as far as they can be had now.
pub type Secrets = Prerequisite<Vec<SecretSpec>>;

/// Open `status.sealedSecrets` of `s`. Pure.
pub fn of(s: &Sandbox, key: &SealingKey, node: &str) -> Secrets {
    if s.spec.secrets.is_empty() {
        return Secrets::Ready(Vec::new());
    }
    let Some(sealed) = s.status.as_ref().and_then(|st| st.sealed_secrets.as_ref()) else {
        return Secrets::Wait("the operator has not sealed the secrets yet".into());
    };
    let (ns, name, uid) = (
        s.namespace().unwrap_or_default(),
        s.name_any(),
        s.uid().unwrap_or_default(),
    );
    let binding = Binding {
        namespace: &ns,
        name: &name,
        uid: &uid,
        node,
    };
    match key.open(sealed, binding) {
        Ok(v) => {
            let asked: Vec<&str> = s.spec.secrets.iter().map(|r| r.env.as_str()).collect();
            let got: Vec<&str> = v.iter().map(|x| x.env.as_str()).collect();
            if asked == got {
                Secrets::Ready(v)
            } else {
                Secrets::Invalid(format!(
                    "the sealed secrets are for variables {got:?}, the spec asks for {asked:?}"
                ))
            }
        }
        // Sealed to a key this agent had before losing its state: the operator re-seals.
        Err(SealError::WrongRecipient(_)) => {
            Secrets::Wait("the secrets are sealed to another key; waiting for the operator".into())
        }
        Err(e) => Secrets::Invalid(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microsandbox_crds::sealed::seal;
    use microsandbox_crds::SandboxStatus;

    fn sandbox(secrets: &[&str]) -> Sandbox {
        let mut s: Sandbox = serde_json::from_value(serde_json::json!({
            "apiVersion": "microsandbox.dev/v1alpha1",
            "kind": "Sandbox",
            "metadata": {"name": "job", "namespace": "t", "uid": "u1"},
            "spec": {
                "image": "busybox",
                "network": {"policy": "public_only"},
                "secrets": secrets.iter().map(|e| serde_json::json!({"name": "s", "env": e})).collect::<Vec<_>>(),
            },
        }))
        .unwrap();
        s.status = Some(SandboxStatus::default());
        s
    }

    fn values(envs: &[&str]) -> Vec<SecretSpec> {
        envs.iter()
            .map(|e| SecretSpec {
                env: e.to_string(),
                value: format!("value-of-{e}"),
                allow_hosts: vec!["api.example.com".into()],
            })
            .collect()
    }

    const B: Binding<'static> = Binding {
        namespace: "t",
        name: "job",
        uid: "u1",
        node: "n1",
    };

    #[test]
    fn opens_what_was_sealed_for_this_object_and_node() {
        let key = SealingKey::generate();
        let mut s = sandbox(&["API_KEY"]);
        assert!(matches!(of(&s, &key, "n1"), Secrets::Wait(_)));
        s.status.as_mut().unwrap().sealed_secrets =
            Some(seal(&key.public_b64(), B, &values(&["API_KEY"])).unwrap());
        assert_eq!(of(&s, &key, "n1"), Secrets::Ready(values(&["API_KEY"])));
        // Another node's agent (same key material aside) cannot use it.
        assert!(matches!(of(&s, &key, "n2"), Secrets::Invalid(_)));
        // Sealed to a key this agent no longer has: wait for a re-seal.
        assert!(matches!(
            of(&s, &SealingKey::generate(), "n1"),
            Secrets::Wait(_)
        ));
        // A payload that does not match the spec's variables is refused.
        s.status.as_mut().unwrap().sealed_secrets =
            Some(seal(&key.public_b64(), B, &values(&["OTHER"])).unwrap());
        assert!(matches!(of(&s, &key, "n1"), Secrets::Invalid(_)));
        assert_eq!(of(&sandbox(&[]), &key, "n1"), Secrets::Ready(vec![]));
    }

    #[test]
    fn key_is_kept_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(KEY_FILE);
        let a = load_or_create(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create(&p).unwrap().public_b64(), a.public_b64());
        std::fs::write(&p, b"garbage").unwrap();
        assert_ne!(load_or_create(&p).unwrap().public_b64(), a.public_b64());
    }
}
