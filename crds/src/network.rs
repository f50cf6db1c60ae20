//! `spec.network` of a Sandbox: what the sandbox may reach. Enforced by the node-agent outside the
//! sandbox, so code inside cannot lift it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Network access of a sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// `none`: no network at all. `public_only` (the default): the public internet only; private,
    /// loopback, link-local (including 169.254.169.254), CGNAT and cluster ranges are blocked.
    /// `allow_all`: everything the node can reach, including the cluster network.
    #[serde(default)]
    pub policy: NetworkPolicy,
    /// Reachable whatever the policy: CIDRs or addresses (`10.1.0.0/16`) and domain names
    /// (`api.example.com`, `*.example.com`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub allow: Vec<String>,
}

impl Network {
    /// The node-agent's form.
    pub fn to_agent(&self) -> microsandbox_wire::api::NetworkSpec {
        use microsandbox_wire::api::NetworkPolicy as P;
        microsandbox_wire::api::NetworkSpec {
            policy: match self.policy {
                NetworkPolicy::None => P::None,
                NetworkPolicy::PublicOnly => P::PublicOnly,
                NetworkPolicy::AllowAll => P::AllowAll,
            },
            allow: self.allow.clone(),
            publish: Vec::new(),
        }
    }
}

/// Network policy preset (the same three presets as the SDK's `NetworkPolicy`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkPolicy {
    None,
    #[default]
    PublicOnly,
    AllowAll,
}
