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
