//! The SDKs in cluster mode: this sets up the cluster side (operator, node-agent, two users
//! with their own RBAC), runs `sdk/python/tests_cluster` with pytest against it, then the Rust
//! crate's cluster mode (which the Python and Node.js SDKs wrap) as a Rust user would call it,
//! the Node.js SDK's `tests_cluster` and the Go SDK's cluster package (client-go).

use microsandbox_e2e::{binary, chart_fullname, token_kubeconfig, workspace, Cluster, PodAddress};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_cluster_mode() {
    let sdk = workspace().join("sdk/python");
    let python = sdk.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run sdk/python/scripts/dev-setup.sh (tests/e2e/run.sh does)",
        python.display()
    );
    let c = Cluster::new("e2e-sdk").await;
    let _op = c.operator(&[]);
    let slots = 4;
    // The agent sits behind a pod address, so the SDK can reach it both directly and through
    // the API server's pod proxy (status.agentProxy).
    let pod_ip = PodAddress::new();
    // One slot more for the member of the warm pool below.
    let _agent = c.agent_in_pod(
        "n1",
        &pod_ip,
        &["--capacity-sandboxes", &(slots + 1).to_string()],
    );

    let ns = &c.ns;
    c.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: dev\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: viewer\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: sandbox-user\nrules:\n- apiGroups: [microsandbox.dev]\n  resources: [sandboxes, volumes, sandboxclaims, sandboxsnapshots]\n  verbs: [create, get, list, watch, delete, patch]\n- apiGroups: [microsandbox.dev]\n  resources: [sandboxes/exec]\n  verbs: [create]\n- apiGroups: [microsandbox.dev, \"\"]\n  resources: [secrets]\n  verbs: [create]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: sandbox-viewer\nrules:\n- apiGroups: [microsandbox.dev]\n  resources: [sandboxes]\n  verbs: [get, list, watch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: dev\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: sandbox-user}\nsubjects: [{kind: ServiceAccount, name: dev}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: viewer\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: sandbox-viewer}\nsubjects: [{kind: ServiceAccount, name: viewer}]\n",
    );
    // dev may also use the API server's pod proxy to the agents (the chart's Role for users);
    // viewer may not.
    c.apply_in(&c.system_ns, &format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: dev-agent-proxy\n  namespace: {}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {}-agent-proxy}}\nsubjects: [{{kind: ServiceAccount, name: dev, namespace: {ns}}}]\n",
        c.system_ns,
        chart_fullname(ns)
    ));
    // A warm pool of one busybox Sandbox, which the administrator keeps (users only claim).
    c.apply(
        "apiVersion: microsandbox.dev/v1alpha1\nkind: SandboxTemplate\nmetadata:\n  name: py-pool\nspec:\n  image: busybox\n  isolation: container\n  resources:\n    memory: 64Mi\n  network:\n    policy: none\n---\napiVersion: microsandbox.dev/v1alpha1\nkind: SandboxWarmPool\nmetadata:\n  name: py-pool\nspec:\n  replicas: 1\n  sandboxTemplateRef:\n    name: py-pool\n",
    );
    let dev = token_kubeconfig("dev", ns, &c.dir.join("dev.kubeconfig"));
    let viewer = token_kubeconfig("viewer", ns, &c.dir.join("viewer.kubeconfig"));

    let out = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "tests_cluster",
            "-q",
            "-p",
            "no:cacheprovider",
        ])
        .current_dir(&sdk)
        .env("MSB_TEST_KUBECONFIG_DEV", &dev)
        .env("MSB_TEST_KUBECONFIG_VIEWER", &viewer)
        .env("MSB_TEST_NAMESPACE", ns)
        .env("MSB_TEST_NODE_SLOTS", slots.to_string())
        .env_remove("KUBECONFIG")
        .output()
        .expect("pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "pytest failed:\n{text}");

    rust_crate(&dev, ns).await;
    kubectl_plugin(&dev, ns).await;
    node_sdk(&dev, ns);
    go_sdk(&dev, ns);
    let (ok, _, err) = c.kubectl(
        &[
            "delete",
            "-n",
            ns,
            "sbxc,swp,sbxt",
            "--all",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    );
    assert!(ok, "{err}");
    c.wait_no_sandboxes(std::time::Duration::from_secs(60))
        .await;
    // Every test cleaned up after itself.
    let left = c.sandboxes().list(&Default::default()).await.unwrap().items;
    assert!(left.is_empty(), "{} Sandboxes left", left.len());
}

/// Run a test suite of another SDK with the dev user's kubeconfig and namespace; fails with its
/// output unless it passes.
fn sdk_suite(what: &str, mut cmd: Command, kubeconfig: &std::path::Path, ns: &str) -> String {
    let out = cmd
        .env("MSB_TEST_KUBECONFIG_DEV", kubeconfig)
        .env("MSB_TEST_NAMESPACE", ns)
        .env_remove("KUBECONFIG")
        .output()
        .expect(what);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// `sdk/node/tests_cluster` with node's test runner (the addon tests/e2e/run.sh built).
fn node_sdk(kubeconfig: &std::path::Path, ns: &str) {
    let mut cmd = Command::new("node");
    cmd.args(["--test", "tests_cluster/"])
        .current_dir(workspace().join("sdk/node"));
    sdk_suite("node --test tests_cluster", cmd, kubeconfig, ns);
}

/// The Go SDK's cluster package (client-go), `go test` with the same cluster.
fn go_sdk(kubeconfig: &std::path::Path, ns: &str) {
    let mut cmd = Command::new("go");
    cmd.args([
        "test",
        "-count=1",
        "-run",
        "TestLiveCluster",
        "-v",
        "./cluster",
    ])
    .current_dir(workspace().join("sdk/go"));
    let text = sdk_suite("go test ./cluster", cmd, kubeconfig, ns);
    assert!(!text.contains("SKIP"), "the live test did not run:\n{text}");
}

/// `kubectl sandbox` (the `kubectl-sandbox` binary, as kubectl runs a plugin: the user's
/// kubeconfig in KUBECONFIG, `-n` after the plugin name) on a Sandbox the user made.
async fn kubectl_plugin(kubeconfig: &std::path::Path, ns: &str) {
    use microsandbox::{Cluster, Isolation, Sandbox};
    let conn = Cluster::new()
        .kubeconfig(kubeconfig)
        .namespace(ns)
        .connect()
        .await
        .expect("connect");
    Sandbox::builder("kp")
        .image("busybox")
        .memory(64)
        .isolation(Isolation::Container)
        .cluster(&conn)
        .create()
        .await
        .expect("create");
    let plugin = |args: &[&str]| {
        let out = Command::new(binary("kubectl-sandbox"))
            .args(["-n", ns])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("kubectl-sandbox");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, out, err) = plugin(&["exec", "kp", "--", "sh", "-c", "echo hi; exit 3"]);
    assert_eq!((code, out.as_str()), (Some(3), "hi\n"), "{err}");
    let (code, out, err) = plugin(&["ls"]);
    assert!(code == Some(0) && out.contains("running"), "{out}{err}");
    let host = std::env::temp_dir().join(format!("kp-{}", std::process::id()));
    std::fs::write(&host, "through the plugin\n").unwrap();
    let (code, _, err) = plugin(&["cp", &host.display().to_string(), "kp:/tmp/f"]);
    assert_eq!(code, Some(0), "{err}");
    let (_, out, _) = plugin(&["exec", "kp", "--", "cat", "/tmp/f"]);
    assert_eq!(out, "through the plugin\n");
    let _removed = std::fs::remove_file(&host);
    // Snapshots are SandboxSnapshot objects here: taken (the running Sandbox paused by its
    // node-agent), listed, pushed to a registry, deleted.
    let (code, out, err) = plugin(&["snapshot", "create", "kp", "kp-snap"]);
    assert!(
        code == Some(0) && out.starts_with("kp-snap snapshot://kp-snap"),
        "{out}{err}"
    );
    let (code, out, err) = plugin(&["snapshot", "ls"]);
    assert!(code == Some(0) && out.contains("kp-snap"), "{out}{err}");
    let reference = format!("127.0.0.1:5000/msb-e2e/kp-snap:{ns}");
    let (code, out, err) = plugin(&["snapshot", "push", "kp-snap", &reference]);
    assert!(
        code == Some(0) && out.starts_with(&format!("{reference} sha256:")),
        "{out}{err}"
    );
    let (code, _, err) = plugin(&["snapshot", "rm", "kp-snap"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = plugin(&["logs", "kp"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = plugin(&["--json", "metrics", "kp"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("memory_bytes"), "{out}");
    let (code, _, err) = plugin(&["rm", "kp"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = plugin(&["exec", "kp", "--", "true"]);
    assert!(code == Some(1) && err.contains("not found"), "{err}");
}

/// The `microsandbox` crate in cluster mode, through both routes to the agent.
async fn rust_crate(kubeconfig: &std::path::Path, ns: &str) {
    use microsandbox::{
        AgentAccess, Cluster, ClusterErrorKind, Error, Isolation, Mount, Sandbox, Snapshot,
    };
    for access in [AgentAccess::Direct, AgentAccess::Proxy] {
        let conn = Cluster::new()
            .kubeconfig(kubeconfig)
            .namespace(ns)
            .agent_access(access)
            .connect()
            .await
            .expect("connect");
        let name = format!("rs-{}", format!("{access:?}").to_lowercase());
        let sb = Sandbox::builder(&name)
            .image("busybox")
            .memory(64)
            .isolation(Isolation::Container)
            .env("GREETING", "hi")
            .workdir("/work")
            .cluster(&conn)
            .create()
            .await
            .expect("create in cluster");
        assert_eq!(sb.name(), name, "the object's name");
        let out = sb.shell("echo $GREETING from $(pwd)").await.expect("exec");
        assert_eq!(out.stdout_str(), "hi from /work\n");
        let listed = Sandbox::list_in(&conn).await.expect("list");
        assert!(
            listed.iter().any(|i| i.name == sb.info().name),
            "{listed:?}"
        );
        let again = Sandbox::get_in(&conn, &name).await.expect("get");
        assert_eq!(again.info().name, sb.info().name);
        // A SandboxSnapshot of it (taken while it runs), and a sandbox made from it.
        sb.shell("echo saved > /work/f").await.expect("exec");
        let snap = sb
            .snapshot(&format!("{name}-snap"))
            .await
            .expect("snapshot");
        assert_eq!(snap.image, format!("snapshot://{name}-snap"));
        assert!(
            snap.digest.starts_with("sha256:") && snap.layers >= 2,
            "{snap:?}"
        );
        let from = Sandbox::builder(format!("{name}-from"))
            .image(&snap.image)
            .memory(64)
            .isolation(Isolation::Container)
            .cluster(&conn)
            .create()
            .await
            .expect("create from the snapshot");
        assert_eq!(
            from.shell("cat /work/f").await.expect("exec").stdout_str(),
            "saved\n"
        );
        from.remove().await.expect("remove");
        let reference = format!("127.0.0.1:5000/msb-e2e/{name}:{ns}");
        let pushed = Snapshot::push_in(&conn, &snap.name, &reference, None)
            .await
            .expect("push");
        assert_eq!(pushed.reference, reference);
        assert!(pushed.digest.starts_with("sha256:"), "{pushed:?}");
        assert!(Snapshot::list_in(&conn).await.unwrap().contains(&snap));
        Snapshot::remove_in(&conn, &snap.name)
            .await
            .expect("remove snapshot");
        sb.remove().await.expect("remove");
        let gone = Sandbox::get_in(&conn, &name).await.unwrap_err();
        assert!(
            matches!(&gone, Error::Cluster(e) if e.kind == ClusterErrorKind::NotFound),
            "{gone:?}"
        );
        // What cluster mode cannot do is refused before any object exists.
        let bind = Sandbox::builder("rs-bind")
            .volume("/x", Mount::bind("/tmp"))
            .cluster(&conn)
            .create()
            .await
            .unwrap_err();
        assert!(
            matches!(&bind, Error::Cluster(e) if e.kind == ClusterErrorKind::Unsupported),
            "{bind:?}"
        );
    }
}
