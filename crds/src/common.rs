//! Types and checks shared by the three kinds: isolation, conditions, field errors and the small
//! string checks (names, paths) whose CEL rule and Rust mirror must say the same thing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::Rule;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::reason::{ConditionType, Reason};

/// Isolation a sandbox requires. The operator schedules only onto nodes that offer it and never
/// downgrades (same names and meaning as the node-agent API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    #[default]
    Microvm,
    Container,
}

impl From<Isolation> for microsandbox_wire::api::Isolation {
    fn from(i: Isolation) -> Self {
        match i {
            Isolation::Microvm => Self::Microvm,
            Isolation::Container => Self::Container,
        }
    }
}

impl From<microsandbox_wire::api::Isolation> for Isolation {
    fn from(i: microsandbox_wire::api::Isolation) -> Self {
        match i {
            microsandbox_wire::api::Isolation::Microvm => Self::Microvm,
            microsandbox_wire::api::Isolation::Container => Self::Container,
        }
    }
}

/// When the node-agent contacts the registry (the Pod `imagePullPolicy` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl From<PullPolicy> for microsandbox_wire::api::PullPolicy {
    fn from(p: PullPolicy) -> Self {
        match p {
            PullPolicy::Always => Self::Always,
            PullPolicy::IfNotPresent => Self::IfNotPresent,
            PullPolicy::Never => Self::Never,
        }
    }
}

/// Label a namespace must carry (value `"true"`) before Sandboxes in it may ask for
/// `isolation: container`. The CRD cannot see namespace labels; the operator enforces this and
/// reports `Scheduled=False` with reason `IsolationNotAllowed`.
pub const ALLOW_CONTAINER_ISOLATION_LABEL: &str = "microsandbox.dev/allow-container-isolation";

/// Insert or update `new` in `conditions` by type. `lastTransitionTime` changes only when the
/// status does, so repeated reconciles do not churn the object.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// Build a condition (`status` is `"True"`, `"False"` or `"Unknown"`).
pub fn condition(
    type_: ConditionType,
    status: bool,
    reason: Reason,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now,
    }
}

/// One rule an object breaks: where (`spec.volumes[0].path`, empty for rules on the whole object)
/// and the message the apiserver's CEL rule gives for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

/// Every rule a spec breaks; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Collects field errors while a spec is walked.
#[derive(Debug, Default)]
pub(crate) struct Checker(Vec<FieldError>);

impl Checker {
    /// Record `message` at `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: &str) {
        if !ok {
            self.0.push(FieldError {
                field: field.into(),
                message: message.into(),
            });
        }
    }

    /// Add errors found elsewhere.
    pub fn extend(&mut self, e: ValidationErrors) {
        self.0.extend(e.0);
    }

    pub fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}

impl From<ValidationErrors> for Checker {
    fn from(e: ValidationErrors) -> Self {
        Self(e.0)
    }
}

// ---- names -------------------------------------------------------------------------------------

/// CEL: a DNS-1123 label (names of Volumes and Sandboxes).
pub(crate) const DNS_LABEL_RE: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// CEL: a DNS-1123 subdomain (names of Secrets and nodes).
pub(crate) const DNS_SUBDOMAIN_RE: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Mirror of [`DNS_LABEL_RE`] (length is bounded by the schema).
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && b.iter().all(inner) && edge(&b[0]) && edge(&b[b.len() - 1])
}

/// Mirror of [`DNS_SUBDOMAIN_RE`].
pub fn is_dns_subdomain(s: &str) -> bool {
    s.split('.').all(is_dns_label)
}

/// The message of [`object_name_rule`].
pub(crate) fn object_name_msg(kind: &str) -> String {
    format!(
        "metadata.name of a {kind} must be at most 63 characters without '.': it also names the {kind} on its node"
    )
}

/// CEL (on the object): the name is a DNS-1123 label, so the node-agent can use it as is. The
/// apiserver already enforces a DNS-1123 subdomain; only length and dots are left. `size()` is
/// constant-cost, so the unbounded metadata.name does not blow the cost estimate.
pub(crate) fn object_name_rule(kind: &str) -> Rule {
    Rule::new("self.metadata.name.size() <= 63 && !self.metadata.name.contains('.')")
        .message(object_name_msg(kind).as_str())
    // No fieldPath: the CRD schema does not declare metadata's fields, so the apiserver would
    // refuse `.metadata.name` as a path. The message names the field instead.
}

/// Mirror of [`object_name_rule`] (a missing name, as with generateName, passes).
pub(crate) fn check_object_name(c: &mut Checker, name: Option<&str>, kind: &str) {
    if let Some(n) = name {
        c.check(
            n.len() <= 63 && !n.contains('.'),
            "",
            &object_name_msg(kind),
        );
    }
}

/// CEL: a host name or `*.` wildcard, lowercase, no scheme, port or path.
pub(crate) const HOST_RE: &str =
    "^([*][.])?[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Mirror of [`HOST_RE`].
pub fn is_host_pattern(s: &str) -> bool {
    is_dns_subdomain(s.strip_prefix("*.").unwrap_or(s))
}

/// CEL: an environment variable name.
pub(crate) const ENV_NAME_RE: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
pub(crate) const ENV_NAME_MSG: &str =
    "environment variable names must start with a letter or '_' and contain only letters, digits and '_'";

/// Mirror of [`ENV_NAME_RE`].
pub fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The rule that an env name is valid.
pub(crate) fn env_name_rule() -> Rule {
    Rule::new(format!("self.matches('{ENV_NAME_RE}')")).message(ENV_NAME_MSG)
}

// ---- paths -------------------------------------------------------------------------------------

/// `what` must be an absolute path. The message names the field so it reads well on its own.
pub(crate) fn abs_path_msg(what: &str) -> String {
    format!("{what} must be an absolute path such as '/data'")
}

pub(crate) fn dotdot_msg(what: &str) -> String {
    format!("{what} must not contain '..' segments")
}

/// CEL: absolute path.
pub(crate) fn abs_path_rule(what: &str) -> Rule {
    Rule::new("self.startsWith('/')").message(abs_path_msg(what).as_str())
}

/// CEL: no `..` component.
pub(crate) fn no_dotdot_rule(what: &str) -> Rule {
    Rule::new("!self.matches('(^|/)[.][.](/|$)')").message(dotdot_msg(what).as_str())
}

/// Mirror of [`no_dotdot_rule`].
pub fn has_dotdot(path: &str) -> bool {
    path.split('/').any(|seg| seg == "..")
}

/// Check both path rules on `path` at `field`.
pub(crate) fn check_path(c: &mut Checker, path: &str, field: &str, what: &str) {
    c.check(path.starts_with('/'), field, &abs_path_msg(what));
    c.check(!has_dotdot(path), field, &dotdot_msg(what));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_hosts() {
        assert!(is_dns_label("data-1"));
        for bad in ["", "-a", "a-", "A", "a.b", "a_b"] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
        assert!(is_dns_subdomain("node-1.example.com"));
        assert!(!is_dns_subdomain("node..x"));
        assert!(!is_dns_subdomain(".x"));
        assert!(is_host_pattern("api.openai.com"));
        assert!(is_host_pattern("*.example.com"));
        for bad in [
            "*",
            "https://x.com",
            "x.com:443",
            "x.com/p",
            "X.com",
            "*.",
            "a.*.com",
        ] {
            assert!(!is_host_pattern(bad), "{bad:?}");
        }
        assert!(is_env_name("_A1"));
        for bad in ["", "1A", "A-B", "A B"] {
            assert!(!is_env_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn paths() {
        assert!(has_dotdot("/a/../b"));
        assert!(has_dotdot(".."));
        assert!(has_dotdot("/a/.."));
        assert!(!has_dotdot("/a/..b/c.."));
    }

    #[test]
    fn set_condition_keeps_transition_time_when_status_is_unchanged() {
        let t0 = Time("2025-01-01T00:00:00Z".parse().unwrap());
        let t1 = Time("2025-01-01T00:01:00Z".parse().unwrap());
        let mut cs = vec![];
        set_condition(
            &mut cs,
            condition(
                ConditionType::Ready,
                false,
                Reason::WaitingForAgent,
                "",
                Some(1),
                t0.clone(),
            ),
        );
        set_condition(
            &mut cs,
            condition(
                ConditionType::Ready,
                false,
                Reason::Creating,
                "x",
                Some(2),
                t1.clone(),
            ),
        );
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, t0);
        assert_eq!(cs[0].reason, Reason::Creating);
        assert_eq!(cs[0].message, "x");
        set_condition(
            &mut cs,
            condition(
                ConditionType::Ready,
                true,
                Reason::Running,
                "",
                Some(2),
                t1.clone(),
            ),
        );
        assert_eq!(cs[0].last_transition_time, t1);
        set_condition(
            &mut cs,
            condition(ConditionType::Scheduled, true, Reason::Bound, "", None, t1),
        );
        assert_eq!(cs.len(), 2);
    }
}
