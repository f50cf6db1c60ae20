//! The operator's one error type. Each variant has a short `metric_label()` that the failure
//! counter uses, so dashboards group failures without parsing messages.

/// Errors of reconciliation, leader election and the HTTP endpoints.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),

    /// Adding or removing the finalizer, or the Apply/Cleanup inside it, failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    /// The object lacks a field the API server always sets (name, namespace).
    #[error("object has no {0}")]
    MissingField(&'static str),

    /// A value could not be turned into JSON for a patch.
    #[error("cannot serialize: {0}")]
    Serialize(#[from] serde_json::Error),

    /// Leadership was lost or could not be kept.
    #[error("leader election: {0}")]
    LeaderElection(String),

    /// One step of a reconcile failed.
    #[error("{step}: {source}")]
    Step {
        step: Step,
        #[source]
        source: Box<Error>,
    },

    /// `uninstall` timed out with these Sandboxes still present.
    #[error("Sandboxes still present (are their node-agents running?): {0}")]
    Uninstall(String),
}

impl Error {
    /// A short label for the `failures` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.metric_label(),
                _ => "finalizer",
            },
            Self::MissingField(_) => "missing_field",
            Self::Serialize(_) => "serialize",
            Self::LeaderElection(_) => "leader_election",
            Self::Uninstall(_) => "uninstall",
            Self::Step { step, .. } => step.into(),
        }
    }

    /// Whether the API server answered 404 (the object a call named is gone), at any step.
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::Kube(kube::Error::Api(e)) => e.code == 404,
            Self::Step { source, .. } => source.is_not_found(),
            _ => false,
        }
    }

    /// `source` failed during `step`.
    pub fn step(step: Step, source: Error) -> Self {
        Error::Step {
            step,
            source: Box::new(source),
        }
    }
}

/// The steps of a reconcile that talk to the API server, named in errors and the failure metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Step {
    /// Read the core Secrets a Sandbox's secrets refer to (to seal them).
    ReadSecrets,
    /// Apply the status.
    UpdateStatus,
    /// Delete the object (`ttlAfterFinished`), a pool member or a claim's Sandbox.
    Delete,
    /// Add or remove a finalizer.
    Finalizer,
    /// Create a warm pool's member.
    CreateMember,
    /// Move a pool member to a claim.
    Adopt,
    /// Create a Sandbox for a claim (no member free, or the claim sets env).
    ColdStart,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalizer_errors_report_the_inner_label() {
        let e = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::ApplyFailed(
            Error::MissingField("namespace"),
        )));
        assert_eq!(e.metric_label(), "missing_field");
        let e = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::UnnamedObject));
        assert_eq!(e.metric_label(), "finalizer");
        assert_eq!(
            Error::LeaderElection("x".into()).metric_label(),
            "leader_election"
        );
        let e = Error::step(Step::UpdateStatus, Error::MissingField("name"));
        assert_eq!(e.metric_label(), "update_status");
        assert_eq!(e.to_string(), "update_status: object has no name");
    }

    #[test]
    fn not_found_is_seen_through_steps() {
        let api = |code| {
            Error::Kube(kube::Error::Api(
                kube::core::Status::failure("x", "NotFound")
                    .with_code(code)
                    .boxed(),
            ))
        };
        assert!(Error::step(Step::UpdateStatus, api(404)).is_not_found());
        assert!(!Error::step(Step::UpdateStatus, api(409)).is_not_found());
        assert!(!Error::MissingField("name").is_not_found());
    }
}
