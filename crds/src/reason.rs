//! One vocabulary for what the operator and the node-agents write into Conditions and Events:
//! condition types, reasons and event actions as enums (their names are the words on the wire),
//! so no component compares or writes a bare string.

use strum::{Display, EnumString, IntoStaticStr, VariantArray};

/// The `type` of a Condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Display, EnumString, IntoStaticStr)]
pub enum ConditionType {
    /// A node was chosen (`status.node` is set).
    Scheduled,
    /// The sandbox runs and its agent endpoint answers.
    Ready,
    /// A Volume is provisioned on its node.
    Provisioned,
    /// A Secret's core Secret and key exist.
    Resolved,
    /// A Sandbox's secret values are sealed to its node's key.
    SecretsSealed,
    /// A SandboxSnapshot's `spec.push` is done: the image is in the registry.
    Pushed,
}

/// The `reason` of a Condition or an Event.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Display, EnumString, IntoStaticStr, VariantArray,
)]
pub enum Reason {
    // Scheduled
    /// Scheduled=True.
    Bound,
    /// An Event: the sandbox was bound to a node.
    Scheduled,
    /// An Event: no node fits (yet).
    FailedScheduling,
    /// No node offers the requested isolation, capacity and volumes.
    Unschedulable,
    /// `isolation: container` in a namespace without the allow label.
    IsolationNotAllowed,
    /// The named Volumes live on different nodes.
    VolumeNodeConflict,
    /// A named Volume does not exist.
    VolumeNotFound,
    /// A named Volume has no node yet.
    VolumeNotPlaced,
    /// The spec breaks a rule the apiserver could not check (see `validate()`).
    InvalidSpec,

    // Ready
    /// The sandbox waits for a node.
    NotScheduled,
    /// Bound; the agent has not reported the sandbox yet.
    WaitingForAgent,
    /// The node-agent stopped renewing its lease.
    NodeLost,
    /// Image pull and boot in progress.
    Creating,
    /// Ready=True.
    Running,
    /// `spec.paused`: its processes are frozen until it is set back to false.
    Paused,
    /// Frozen after `lifetime.idleTimeout`; Ready=True (the next exec resumes it).
    Suspended,
    /// Thawed (after `spec.paused` went back to false).
    Resumed,
    /// The sandbox is draining or the object is being deleted.
    Stopping,
    /// Shut down.
    Stopped,
    /// The sandbox failed on its node.
    Failed,
    /// `spec.lifetime.shutdownAfter` elapsed.
    LifetimeExpired,
    /// `spec.lifetime.ttlAfterFinished` elapsed: the object is deleted.
    #[strum(serialize = "TTLExpired")]
    TtlExpired,
    /// The node-agent's create failed.
    CreateFailed,
    /// The sandbox ran on its node and is gone from it.
    SandboxLost,
    /// The spec's volumes cannot be mounted on the node.
    InvalidVolumes,
    /// The sandbox's secrets cannot be opened on the node.
    SecretsUnusable,

    // Secrets
    /// Resolved=True.
    Resolved,
    /// The referenced core Secret does not exist.
    SecretNotFound,
    /// The core Secret has no such key.
    KeyNotFound,
    /// The core Secret's value is not UTF-8 text.
    SecretNotText,
    /// The core Secret cannot be read.
    SecretReadFailed,
    /// SecretsSealed=True.
    Sealed,
    /// The node has not published its sealing key.
    NoSealingKey,
    /// The node's sealing key changed since the values were sealed.
    SealingKeyChanged,
    /// Sealing itself failed.
    SealingFailed,
    /// An Event: the values were sealed again (new key).
    SecretsResealed,
    /// An Event: the egress proxy blocked a secret sent to a host not allowed for it.
    SecretBlocked,

    // Volumes
    /// Provisioned=True.
    Provisioned,
    /// Provisioning on the node failed.
    ProvisioningFailed,
    /// An Event: the Volume was placed on a node.
    Placed,

    // Warm pools and claims
    /// A pool's or claim's SandboxTemplate does not exist.
    TemplateNotFound,
    /// A claim's SandboxWarmPool does not exist.
    WarmPoolNotFound,
    /// A claim sets env its template's envVarsInjectionPolicy refuses.
    EnvVarsInjectionRejected,
    /// A pool has all its members Ready (Ready=True).
    Replenished,
    /// A pool is booting members (Ready=True: claims still bind, cold when none is free).
    Replenishing,
    /// A claim's Sandbox exists but is not Ready.
    SandboxNotReady,
    /// A claim's Sandbox was deleted by someone else.
    SandboxMissing,
    /// A claim's `lifecycle.shutdownTime` passed: its Sandbox is deleted.
    ClaimExpired,
    /// An Event: a claim took a Ready member of its pool.
    SandboxAdopted,
    /// An Event: no member was free; a Sandbox is booted for the claim.
    ColdStart,

    // Snapshots
    /// A Sandbox's `snapshotRef` names no SandboxSnapshot of its namespace.
    SnapshotNotFound,
    /// A Sandbox's SandboxSnapshot is not taken yet (or failed).
    SnapshotNotReady,
    /// A snapshot's Sandbox does not exist.
    SandboxNotFound,
    /// Ready=True of a SandboxSnapshot (also its Event).
    SnapshotTaken,
    /// The node-agent could not take the snapshot.
    SnapshotFailed,
    /// Pushed=True of a SandboxSnapshot (also its Event).
    SnapshotPushed,
    /// The push is waiting for the snapshot to be taken, or for the operator to seal the
    /// credentials of `spec.push.secretRef` to the node.
    PushPending,
    /// The registry refused the push or could not be reached (retried).
    PushFailed,
    /// `spec.push.secretRef` names no Secret, or one that holds no credentials for the
    /// registry of `spec.push.image` (an Event of the operator; retried).
    PushCredentialsNotFound,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl PartialEq<Reason> for String {
    fn eq(&self, r: &Reason) -> bool {
        self == r.as_str()
    }
}

impl PartialEq<Reason> for &str {
    fn eq(&self, r: &Reason) -> bool {
        *self == r.as_str()
    }
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl PartialEq<ConditionType> for String {
    fn eq(&self, t: &ConditionType) -> bool {
        self == t.as_str()
    }
}

/// The `action` of an Event: what the component was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Display, IntoStaticStr)]
pub enum EventAction {
    Validate,
    Schedule,
    Place,
    Seal,
    Create,
    Observe,
    Stop,
    Pause,
    Resume,
    Delete,
    Egress,
    Provision,
    Claim,
    Replenish,
    Snapshot,
    Push,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn reasons_are_their_wire_words() {
        assert_eq!(Reason::Unschedulable.as_str(), "Unschedulable");
        assert_eq!(Reason::TtlExpired.as_str(), "TTLExpired");
        for r in Reason::VARIANTS {
            assert_eq!(Reason::from_str(r.as_str()).unwrap(), *r);
            // Kubernetes: a reason is CamelCase, [A-Za-z0-9_,:]*, at most 128 characters.
            assert!(r.as_str().chars().all(|c| c.is_ascii_alphanumeric()));
            assert!(r.as_str().starts_with(|c: char| c.is_ascii_uppercase()));
        }
        assert_eq!(String::from("Failed"), Reason::Failed);
    }
}
