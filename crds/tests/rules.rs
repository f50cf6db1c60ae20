//! Properties of the generated CRDs that the apiserver (or a user) relies on: every CEL rule
//! compiles and stays within the cost budget, every string and list a rule reads is bounded, and
//! `kubectl get` shows the promised columns.

use kube::core::cel::{analyze_rule, compile_schema, ScopeContext, WarningKind};
use microsandbox_crds::crds;
use serde_json::Value;

/// Call `f(path, node)` for every schema node under `node`.
fn walk<'a>(path: &str, node: &'a Value, f: &mut impl FnMut(&str, &'a Value)) {
    f(path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk(&format!("{path}.{k}"), v, f);
        }
    }
    if let Some(items) = node.get("items") {
        walk(&format!("{path}[]"), items, f);
    }
    if let Some(add) = node.get("additionalProperties").filter(|a| a.is_object()) {
        walk(&format!("{path}{{}}"), add, f);
    }
}

fn schemas() -> Vec<(String, Value)> {
    crds()
        .into_iter()
        .map(|crd| {
            let schema = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .unwrap();
            (crd.spec.names.kind, serde_json::to_value(schema).unwrap())
        })
        .collect()
}

/// kube-cel's scope check reports the variables of `all`/`exists` macros as unknown; they are not.
fn is_macro_variable(rule: &str, w: &kube::core::cel::AnalysisWarning) -> bool {
    let var = w.message.split('\'').nth(1).unwrap_or_default();
    matches!(w.kind, WarningKind::WrongScope)
        && ["all", "exists", "exists_one", "filter", "map"]
            .iter()
            .any(|m| rule.contains(&format!(".{m}({var}, ")))
}

#[test]
fn every_rule_compiles_within_budget_and_has_a_message() {
    let mut problems = vec![];
    let mut rules = 0;
    for (kind, schema) in schemas() {
        let compiled = compile_schema(&schema);
        walk(&kind, &schema, &mut |path, node| {
            let Some(list) = node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
            else {
                return;
            };
            let node_compiled = compile_schema(node);
            if node_compiled.has_errors() {
                problems.push(format!("{path}: {:?}", node_compiled.compilation_errors()));
            }
            for r in list {
                rules += 1;
                let rule = r["rule"].as_str().unwrap();
                match r["message"].as_str() {
                    Some(m) if !m.contains('\n') && !m.is_empty() => {}
                    _ => problems.push(format!("{path}: rule {rule:?} needs a one-line message")),
                }
                for w in analyze_rule(rule, &node_compiled, ScopeContext::CrdValidation) {
                    if !is_macro_variable(rule, &w) {
                        problems.push(format!("{path}: {rule:?}: {}", w.message));
                    }
                }
            }
        });
        assert!(!compiled.has_errors(), "{kind}");
    }
    assert!(rules >= 40, "only {rules} rules");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The apiserver estimates CEL cost from maxLength/maxItems; unbounded values make it refuse the
/// CRD. Bound every spec string and list (status has no rules and is written by the operator).
#[test]
fn spec_strings_and_lists_are_bounded() {
    let mut problems = vec![];
    for (kind, schema) in schemas() {
        walk(&kind, &schema["properties"]["spec"], &mut |path, node| {
            let bounded = match node.get("type").and_then(Value::as_str) {
                Some("string") => node.get("maxLength").is_some() || node.get("enum").is_some(),
                Some("array") => node.get("maxItems").is_some(),
                Some("object") if node.get("additionalProperties").is_some() => {
                    node.get("maxProperties").is_some()
                }
                _ => true,
            };
            // Map values under nodeSelector are read by no rule.
            if !bounded && !path.ends_with("{}") {
                problems.push(path.to_string());
            }
        });
    }
    assert!(problems.is_empty(), "unbounded: {problems:?}");
}

#[test]
fn kubectl_get_shows_the_promised_columns_and_names() {
    let crds = crds();
    let columns = |i: usize| -> Vec<String> {
        crds[i].spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect()
    };
    assert_eq!(
        columns(0),
        ["Phase", "Isolation", "Node", "Image", "Age", "Endpoint"]
    );
    assert_eq!(columns(1), ["Size", "Used", "Node", "Phase", "Age"]);
    assert_eq!(columns(2), ["Secret", "Key", "Hosts", "Age"]);
    assert_eq!(columns(3), ["Image", "Age"]);
    assert_eq!(
        columns(4),
        ["Ready", "Desired", "Claimed", "Template", "Age"]
    );
    assert_eq!(columns(5), ["Ready", "Sandbox", "Launch", "Reason", "Age"]);
    assert_eq!(
        columns(6),
        ["Sandbox", "Phase", "Node", "Layers", "Pushed", "Age"]
    );

    let names: Vec<_> = crds
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "sandboxes.microsandbox.dev",
            "volumes.microsandbox.dev",
            "secrets.microsandbox.dev",
            "sandboxtemplates.microsandbox.dev",
            "sandboxwarmpools.microsandbox.dev",
            "sandboxclaims.microsandbox.dev",
            "sandboxsnapshots.microsandbox.dev"
        ]
    );
    for crd in &crds {
        let n = &crd.spec.names;
        assert_eq!(crd.spec.group, "microsandbox.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            n.categories.as_deref(),
            Some(&["microsandbox".to_string()][..])
        );
        let short = n.short_names.clone().unwrap_or_default();
        assert_eq!(short.len(), 1, "{}", n.kind);
        // `secret`/`secrets` and `vol` belong to core or other APIs; ours start with `sbx`, but
        // for `swp`, the warm pools' short name in agent-sandbox.
        assert!(
            short[0].starts_with("sbx") || short[0] == "swp",
            "{short:?}"
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.served && v.storage);
        // A template is a spec only (as in agent-sandbox): nothing observes it.
        assert_eq!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            n.kind != "SandboxTemplate",
            "{} has a status subresource",
            n.kind
        );
    }
    // An HPA or `kubectl scale` drives a warm pool.
    let scale = crds[4].spec.versions[0]
        .subresources
        .as_ref()
        .and_then(|s| s.scale.as_ref())
        .expect("SandboxWarmPool has a scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
}

#[test]
fn every_spec_field_is_documented() {
    let mut missing = vec![];
    for (kind, schema) in schemas() {
        walk(&kind, &schema, &mut |path, node| {
            if node.get("description").is_none() && !path.ends_with("[]") && !path.ends_with("{}") {
                missing.push(path.to_string());
            }
        });
    }
    // Fields of apimachinery types and the root-level metadata/apiVersion/kind come documented
    // or are exempt; everything of ours must explain itself in `kubectl explain`.
    missing.retain(|p| {
        !p.ends_with(".metadata") && !p.ends_with(".apiVersion") && !p.ends_with(".kind")
    });
    assert!(missing.is_empty(), "undocumented: {missing:?}");
}
