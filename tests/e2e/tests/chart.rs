//! The Helm chart against the real apiserver: lint, schema, a server-side dry run of everything
//! it renders, and RBAC that is narrow (no wildcard, no cluster-admin, no Secrets) and, as the
//! whole cluster suite runs the operator and node-agents with exactly these ServiceAccounts,
//! sufficient. Run with `tests/e2e/run.sh`.

use microsandbox_e2e::{chart_fullname, run, workspace};
use std::process::Command;

fn chart() -> String {
    workspace()
        .join("charts/microsandbox")
        .display()
        .to_string()
}

fn docs(rendered: &str) -> Vec<serde_json::Value> {
    rendered
        .split("\n---")
        .filter_map(|d| serde_saphyr::from_str::<serde_json::Value>(d).ok())
        .filter(|v| v.is_object())
        .collect()
}

#[test]
fn chart_lints_validates_values_and_dry_runs_on_the_server() {
    let out = run("helm", &["lint", "--strict", &chart()], None);
    assert!(out.contains("0 chart(s) failed"), "{out}");

    // values.schema.json: bad values are refused with the path of the value.
    for (set, path) in [
        ("nodeAgent.port=0", "/nodeAgent/port"),
        (
            "operator.replicas=2,operator.leaderElection=false",
            "/operator",
        ),
        ("nodeAgent.stateDir=relative", "/nodeAgent/stateDir"),
        ("operator.typo=1", "/operator"),
    ] {
        let out = Command::new("helm")
            .args(["template", "r", &chart(), "--set", set])
            .output()
            .expect("helm");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} accepted");
        assert!(err.contains(path), "{set}: {err}");
    }

    let ns = format!("chart-dry-{}", std::process::id());
    run("kubectl", &["create", "namespace", &ns], None);
    let rendered = run(
        "helm",
        &[
            "template",
            "msb",
            &chart(),
            "--namespace",
            &ns,
            "--include-crds",
            "--set",
            "nodeAgent.mirrors={docker.io=127.0.0.1:5000}",
        ],
        None,
    );
    let kinds: Vec<String> = docs(&rendered)
        .iter()
        .filter_map(|d| d["kind"].as_str().map(str::to_string))
        .collect();
    for k in [
        "CustomResourceDefinition",
        "Deployment",
        "DaemonSet",
        "Service",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "Job",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} not rendered: {kinds:?}");
    }
    let out = run(
        "kubectl",
        &["apply", "--dry-run=server", "-n", &ns, "-f", "-"],
        Some(&rendered),
    );
    assert!(
        out.contains("daemonset.apps/msb-microsandbox-node-agent created (server dry run)"),
        "{out}"
    );
    assert!(
        out.contains("deployment.apps/msb-microsandbox-operator created (server dry run)"),
        "{out}"
    );
}

#[test]
fn rbac_is_narrow() {
    let ns = format!("chart-rbac-{}", std::process::id());
    run("kubectl", &["create", "namespace", &ns], None);
    let release = "rbaccheck";
    let rendered = run(
        "helm",
        &[
            "template",
            release,
            &chart(),
            "--namespace",
            &ns,
            "--show-only",
            "templates/serviceaccounts.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ],
        None,
    );
    for d in docs(&rendered) {
        let kind = d["kind"].as_str().unwrap_or_default();
        if kind.ends_with("Binding") {
            let role = d["roleRef"]["name"].as_str().unwrap_or_default();
            assert!(
                !["cluster-admin", "admin", "edit"].contains(&role),
                "{kind} binds {role}"
            );
        }
        for rule in d["rules"].as_array().into_iter().flatten() {
            for field in ["verbs", "resources", "apiGroups"] {
                for v in rule[field].as_array().into_iter().flatten() {
                    assert_ne!(v.as_str(), Some("*"), "wildcard {field} in {kind}: {rule}");
                }
            }
            let core = rule["apiGroups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|g| g.as_str() == Some("")));
            for r in rule["resources"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap_or("");
                assert!(
                    !["pods", "pods/exec", "nodes"].contains(&r),
                    "{kind} grants {r}"
                );
                if core && r == "secrets" {
                    // The operator checks that a referenced key exists: get by name, nothing else.
                    assert_eq!(rule["verbs"], serde_json::json!(["get"]), "{kind}: {rule}");
                }
            }
        }
    }
    run("kubectl", &["apply", "-f", "-"], Some(&rendered));

    let full = chart_fullname(release);
    let can = |sa: &str, args: &[&str]| -> bool {
        let user = format!("system:serviceaccount:{ns}:{full}-{sa}");
        let out = Command::new("kubectl")
            .args(["auth", "can-i", "--as", &user])
            .args(args)
            .output()
            .expect("kubectl");
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    // What each needs: the operator creates the members of warm pools.
    assert!(can(
        "operator",
        &["delete", "sandboxes.microsandbox.dev", "-A"]
    ));
    assert!(can(
        "operator",
        &["create", "sandboxes.microsandbox.dev", "-A"]
    ));
    assert!(can(
        "operator",
        &[
            "patch",
            "sandboxes.microsandbox.dev",
            "--subresource=status",
            "-A"
        ]
    ));
    // It seals a SandboxSnapshot's push credentials into its status.
    assert!(can(
        "operator",
        &[
            "patch",
            "sandboxsnapshots.microsandbox.dev",
            "--subresource=status",
            "-A"
        ]
    ));
    assert!(can(
        "operator",
        &["update", "leases.coordination.k8s.io", "-n", &ns]
    ));
    assert!(can(
        "node-agent",
        &[
            "patch",
            "sandboxes.microsandbox.dev",
            "--subresource=status",
            "-A"
        ]
    ));
    assert!(can(
        "node-agent",
        &["create", "leases.coordination.k8s.io", "-n", &ns]
    ));
    // And nothing beyond.
    for (sa, args) in [
        ("operator", vec!["list", "secrets", "-A"]),
        ("operator", vec!["watch", "secrets", "-A"]),
        ("operator", vec!["update", "secrets", "-A"]),
        ("operator", vec!["create", "pods", "-A"]),
        (
            "operator",
            vec!["create", "sandboxclaims.microsandbox.dev", "-A"],
        ),
        (
            "operator",
            vec!["create", "sandboxwarmpools.microsandbox.dev", "-A"],
        ),
        (
            "operator",
            vec!["update", "sandboxtemplates.microsandbox.dev", "-A"],
        ),
        ("operator", vec!["delete", "namespaces"]),
        (
            "operator",
            vec!["patch", "leases.coordination.k8s.io", "-n", "kube-system"],
        ),
        ("node-agent", vec!["get", "secrets", "-A"]),
        (
            "node-agent",
            vec!["delete", "sandboxes.microsandbox.dev", "-A"],
        ),
        (
            "node-agent",
            vec!["update", "sandboxes.microsandbox.dev", "-A"],
        ),
        (
            "node-agent",
            vec!["delete", "volumes.microsandbox.dev", "-A"],
        ),
        (
            "node-agent",
            vec!["create", "volumes.microsandbox.dev", "-A"],
        ),
        (
            "node-agent",
            vec!["delete", "leases.coordination.k8s.io", "-n", &ns],
        ),
        (
            "node-agent",
            vec!["create", "leases.coordination.k8s.io", "-n", "kube-system"],
        ),
    ] {
        assert!(!can(sa, &args), "{sa} may {args:?}");
    }
}

/// The node-agent pod shares the node's pid and network namespaces and `/run/netns` (sandboxes
/// must outlive the pod through upgrades) and listens on the node's address only; `helm
/// uninstall` runs the operator image's `uninstall` as a pre-delete hook.
#[test]
fn agent_pod_lets_sandboxes_outlive_it_and_uninstall_has_a_hook() {
    let rendered = run(
        "helm",
        &[
            "template",
            "msb",
            &chart(),
            "--set",
            "nodeAgent.network.uplinkNetns=egress",
        ],
        None,
    );
    let all = docs(&rendered);
    let ds = all
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true, "{pod}");
    assert_eq!(pod["hostNetwork"], true, "{pod}");
    let agent = &pod["containers"][0];
    let args: Vec<&str> = agent["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.contains(&"--listen=$(POD_IP):7070"), "{args:?}");
    assert!(args.contains(&"--uplink-netns=egress"), "{args:?}");
    let netns = agent["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/run/netns")
        .expect("/run/netns mounted");
    assert_eq!(netns["mountPropagation"], "Bidirectional");

    let job = all
        .iter()
        .find(|d| d["kind"] == "Job")
        .expect("uninstall Job");
    assert_eq!(
        job["metadata"]["annotations"]["helm.sh/hook"], "pre-delete",
        "{job}"
    );
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["args"][0], "uninstall", "{c}");
    // Off when asked.
    let off = run(
        "helm",
        &[
            "template",
            "msb",
            &chart(),
            "--set",
            "uninstall.deleteSandboxes=false",
        ],
        None,
    );
    assert!(!docs(&off).iter().any(|d| d["kind"] == "Job"));
}
