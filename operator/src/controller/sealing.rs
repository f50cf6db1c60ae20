//! `status.sealedSecrets` of a bound Sandbox: the values of its `spec.secrets`, read from the core
//! Secrets their Secret (microsandbox.dev) objects name and sealed to the public key the bound
//! node's agent announces (see `microsandbox_crds::sealed`). The operator holds the values only
//! while sealing; it never logs them, and node-agents never need to read core Secrets.
//!
//! Sealed again whenever the node's key is not the one sealed to (an agent that lost its state
//! made a new key); dropped once the sandbox has finished.

use super::secret::resolution;
use super::Context;
use crate::error::Result;
use k8s_openapi::api::core::v1::Secret as CoreSecret;
use kube::api::Api;
use kube::ResourceExt;
use microsandbox_crds::sealed::{self, Binding};
use microsandbox_crds::{Reason, Sandbox, SealedSecrets, Secret};
use microsandbox_wire::api::SecretSpec;

/// What `status.sealedSecrets` should be.
#[derive(Debug, PartialEq)]
pub enum Sealing {
    /// No secrets, or the sandbox has finished: nothing sealed.
    None,
    /// Sealed to the node's current key (kept, or new).
    Sealed(SealedSecrets),
    /// Cannot seal yet: (reason, message). Retried.
    Unresolved(Reason, String),
}

/// What to do with the current payload for a node announcing `key`. Pure.
#[derive(Debug, PartialEq)]
pub enum Decision<'a> {
    Keep(&'a SealedSecrets),
    Seal,
    /// The node's key changed after the sandbox started: never re-sealed then, so that whoever
    /// can rewrite a node's Lease cannot have a running sandbox's values sealed to them.
    KeyChanged,
}

pub fn decide<'a>(sealed: Option<&'a SealedSecrets>, key: &str, started: bool) -> Decision<'a> {
    match sealed {
        Some(s) if s.recipient == key.trim() => Decision::Keep(s),
        Some(_) if started => Decision::KeyChanged,
        _ => Decision::Seal,
    }
}

/// Decide `status.sealedSecrets` for `s`, bound to `node` whose agent announces `key`.
pub async fn ensure(
    s: &Sandbox,
    ctx: &Context,
    node: &str,
    key: Option<&str>,
    started: bool,
    finished: bool,
) -> Result<Sealing> {
    if s.spec.secrets.is_empty() || finished {
        return Ok(Sealing::None);
    }
    let Some(key) = key else {
        return Ok(Sealing::Unresolved(
            Reason::NoSealingKey,
            format!("node {node} announces no sealing key (node-agent too old?)"),
        ));
    };
    let old = s.status.as_ref().and_then(|st| st.sealed_secrets.as_ref());
    match decide(old, key, started) {
        Decision::Keep(kept) => return Ok(Sealing::Sealed(kept.clone())),
        Decision::KeyChanged => {
            return Ok(Sealing::Unresolved(
                Reason::SealingKeyChanged,
                format!("the sealing key of node {node} changed after the sandbox started; its values are not sealed again (recreate the Sandbox)"),
            ))
        }
        Decision::Seal => {}
    }
    let values = match resolve(s, ctx).await {
        Ok(v) => v,
        // RBAC refusals, timeouts: retried, and the binding is still written.
        Err(e) => {
            return Ok(Sealing::Unresolved(
                Reason::SecretReadFailed,
                format!("cannot read the Secrets: {e}"),
            ))
        }
    };
    let values = match values {
        Ok(v) => v,
        Err((reason, message)) => return Ok(Sealing::Unresolved(reason, message)),
    };
    let ns = s.namespace().unwrap_or_default();
    let name = s.name_any();
    let uid = s.uid().unwrap_or_default();
    let binding = Binding {
        namespace: &ns,
        name: &name,
        uid: &uid,
        node,
    };
    Ok(match sealed::seal(key, binding, &values) {
        Ok(p) => Sealing::Sealed(p),
        Err(e) => Sealing::Unresolved(Reason::SealingFailed, e.to_string()),
    })
}

/// The values of `spec.secrets`, or why one cannot be read.
async fn resolve(s: &Sandbox, ctx: &Context) -> Result<Result<Vec<SecretSpec>, (Reason, String)>> {
    let ns = s.namespace().unwrap_or_default();
    let objects: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let cores: Api<CoreSecret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut out = Vec::with_capacity(s.spec.secrets.len());
    for r in &s.spec.secrets {
        let Some(obj) = objects.get_opt(&r.name).await? else {
            return Ok(Err((
                Reason::SecretNotFound,
                format!("Secret (microsandbox.dev) {:?} does not exist", r.name),
            )));
        };
        if let Err(e) = obj.validate() {
            return Ok(Err((
                Reason::InvalidSpec,
                format!("Secret {:?}: {e}", r.name),
            )));
        }
        let sref = &obj.spec.secret_ref;
        let core = cores.get_opt(&sref.name).await?;
        let value = core
            .as_ref()
            .and_then(|c| c.data.as_ref())
            .and_then(|d| d.get(&sref.key));
        let Some(value) = value else {
            let (_, reason, message) = resolution(core.as_ref(), &sref.name, &sref.key);
            return Ok(Err((reason, format!("Secret {:?}: {message}", r.name))));
        };
        let Ok(value) = String::from_utf8(value.0.clone()) else {
            return Ok(Err((
                Reason::SecretNotText,
                format!(
                    "Secret {:?}: key {:?} of core Secret {:?} is not UTF-8 text; only text can be substituted into requests",
                    r.name, sref.key, sref.name
                ),
            )));
        };
        out.push(SecretSpec {
            env: r.env.clone(),
            value,
            allow_hosts: obj.spec.allow_hosts.clone(),
        });
    }
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resealed_only_for_another_key_and_never_once_started() {
        let p = SealedSecrets {
            recipient: "a2V5".into(),
            enc: "e".into(),
            ciphertext: "c".into(),
        };
        assert_eq!(decide(Some(&p), "a2V5", true), Decision::Keep(&p));
        assert_eq!(decide(Some(&p), " a2V5 ", false), Decision::Keep(&p));
        assert_eq!(decide(Some(&p), "b3RoZXI=", false), Decision::Seal);
        assert_eq!(decide(Some(&p), "b3RoZXI=", true), Decision::KeyChanged);
        assert_eq!(decide(None, "a2V5", false), Decision::Seal);
        assert_eq!(decide(None, "a2V5", true), Decision::Seal);
    }
}
