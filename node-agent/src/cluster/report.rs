//! What this agent writes into `status.agent` of a Sandbox, and when a sandbox's lifetime is up.
//! Pure.

use microsandbox_crds::{AgentReport, SandboxPhase};
use microsandbox_wire::api::{SandboxInfo, SandboxState};
use std::time::Duration;

/// The report for a sandbox this agent runs.
pub fn of(info: &SandboxInfo, uid: &str) -> AgentReport {
    AgentReport {
        sandbox: info.name.clone(),
        state: phase(info.state),
        image_digest: Some(info.image_digest.clone()).filter(|d| !d.is_empty()),
        reason: info.reason.as_ref().map(|r| r.to_string()),
        uid: uid.to_string(),
    }
}

/// A report without a local sandbox (creating, or failed before one existed).
pub fn without_sandbox(
    sandbox: &str,
    uid: &str,
    state: SandboxPhase,
    reason: Option<String>,
) -> AgentReport {
    AgentReport {
        sandbox: sandbox.to_string(),
        state,
        image_digest: None,
        reason,
        uid: uid.to_string(),
    }
}

/// The Sandbox phase of an agent state.
pub fn phase(s: SandboxState) -> SandboxPhase {
    s.into()
}

/// Time left before `shutdownAfter` (seconds) elapses for a sandbox created at `created_at`
/// (seconds since the epoch); zero when it has. `None` when it has no such limit.
pub fn lifetime_left(created_at: u64, shutdown_after: Option<u64>, now: u64) -> Option<Duration> {
    let limit = shutdown_after?;
    let deadline = created_at.saturating_add(limit);
    Some(Duration::from_secs(deadline.saturating_sub(now)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use microsandbox_wire::api::Isolation;

    #[test]
    fn report_mirrors_the_sandbox() {
        let info = SandboxInfo {
            name: "web-1".into(),
            image: "busybox".into(),
            image_digest: "sha256:ab".into(),
            isolation: Isolation::Container,
            state: SandboxState::Draining,
            memory_mib: 64,
            cpus: 1,
            detached: true,
            created_at: 5,
            reason: Some("oom-killed".into()),
            labels: Default::default(),
        };
        let r = of(&info, "u1");
        assert_eq!(r.state, SandboxPhase::Stopping);
        assert_eq!(r.image_digest.as_deref(), Some("sha256:ab"));
        assert_eq!(r.reason.as_deref(), Some("oom-killed"));
        assert_eq!((r.sandbox.as_str(), r.uid.as_str()), ("web-1", "u1"));
        let empty = SandboxInfo {
            image_digest: String::new(),
            ..info
        };
        assert_eq!(of(&empty, "u1").image_digest, None);
    }

    #[test]
    fn lifetime() {
        assert_eq!(lifetime_left(100, None, 500), None);
        assert_eq!(
            lifetime_left(100, Some(60), 130),
            Some(Duration::from_secs(30))
        );
        assert_eq!(lifetime_left(100, Some(60), 500), Some(Duration::ZERO));
    }
}
