//! How a Sandbox object maps to a sandbox of this agent. Pure.

use std::collections::BTreeMap;

/// Label carrying the metadata.uid of the object a sandbox was created for.
pub const LABEL_UID: &str = "microsandbox.dev/uid";
/// Label carrying `namespace/name` of that object (for people reading `list`).
pub const LABEL_OBJECT: &str = "microsandbox.dev/object";

/// The agent-side name of a Sandbox object: its name (dots made dashes, cut to 50 characters)
/// plus 12 hex digits of its uid, so a deleted and re-created object never meets the old
/// sandbox and two namespaces never collide. Always a valid agent name.
pub fn local_name(name: &str, uid: &str) -> String {
    let mut base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    while base.ends_with('-') {
        base.pop();
    }
    let hex: String = uid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .take(12)
        .collect();
    match (base.is_empty(), hex.is_empty()) {
        (false, false) => format!("{base}-{hex}"),
        (true, false) => format!("s-{hex}"),
        (_, true) => format!("{}-x", if base.is_empty() { "s" } else { &base }),
    }
}

/// Labels of a cluster-mode sandbox.
pub fn labels(namespace: &str, name: &str, uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_UID.to_string(), uid.to_string()),
        (LABEL_OBJECT.to_string(), format!("{namespace}/{name}")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use microsandbox_wire::api::validate_name;

    #[test]
    fn names_are_valid_distinct_and_stable() {
        let uid = "6c1f9a4e-0b2d-4d7e-9a51-3f2e8c7b1d00";
        assert_eq!(local_name("web", uid), "web-6c1f9a4e0b2d");
        assert_eq!(local_name("a.b.c", uid), "a-b-c-6c1f9a4e0b2d");
        let long = "x".repeat(253);
        for n in ["web", "a.b.c", long.as_str(), "-", "9"] {
            let l = local_name(n, uid);
            assert!(validate_name(&l).is_ok(), "{n:?} -> {l:?}");
        }
        assert_ne!(
            local_name("web", uid),
            local_name("web", "7c1f9a4e-0b2d-4d7e-9a51-3f2e8c7b1d00")
        );
        assert!(validate_name(&local_name("web", "")).is_ok());
    }
}
