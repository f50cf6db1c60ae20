//! SandboxSnapshot end to end: the node-agent of a Sandbox's node takes the snapshot (pausing the
//! running Sandbox for the copy and resuming it), a Sandbox with `spec.snapshotRef` starts from
//! it on that node (two nodes: the operator must pick the snapshot's), the snapshot object is not
//! let go while a Sandbox made from it exists, and no object can name a node's own snapshot
//! image directly. With `spec.push`, a taken snapshot goes to a registry with credentials the
//! operator sealed to its node.

use kube::api::{Api, DeleteParams};
use microsandbox_crds::{Reason, SandboxPhase, SandboxSnapshot, SnapshotPhase};
use microsandbox_e2e::{is_ready, sandbox_yaml, wait_object, Cluster};
use microsandbox_testkit::registry;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(90);

fn snapshot_yaml(name: &str, sandbox: &str) -> String {
    format!(
        "apiVersion: microsandbox.dev/v1alpha1\nkind: SandboxSnapshot\nmetadata:\n  name: {name}\nspec:\n  sandboxRef:\n    name: {sandbox}\n"
    )
}

fn from_snapshot_yaml(name: &str, snapshot: &str) -> String {
    format!(
        "apiVersion: microsandbox.dev/v1alpha1\nkind: Sandbox\nmetadata:\n  name: {name}\nspec:\n  snapshotRef:\n    name: {snapshot}\n  isolation: container\n  resources:\n    memory: 64Mi\n"
    )
}

fn ready_reason(s: &SandboxSnapshot) -> Option<String> {
    s.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_taken_on_the_node_and_sandboxes_start_from_them_there() {
    let c = Cluster::new("e2e-snap").await;
    let _op = c.operator(&[]);
    let a1 = c.agent("n1", &[]);
    let a2 = c.agent("n2", &[]);
    let snaps: Api<SandboxSnapshot> = Api::namespaced(c.client.clone(), &c.ns);

    // A snapshot of a Sandbox that does not exist (yet) says so and waits.
    c.apply(&snapshot_yaml("early", "nobody"));
    wait_object(&snaps, "early", "SandboxNotFound", TIMEOUT, |s| {
        ready_reason(s).as_deref() == Some(Reason::SandboxNotFound.as_str())
    })
    .await;

    c.apply(&sandbox_yaml("src", ""));
    let src = c.wait_sandbox("src", TIMEOUT, "Ready", is_ready).await;
    let node = src.status.as_ref().and_then(|s| s.node.clone()).unwrap();
    let agent = if node == "n1" { &a1 } else { &a2 };
    c.sh(agent, "src", "echo kept > /tmp/f; rm /etc/group")
        .await;

    // Taken on the Sandbox's node; the running Sandbox was paused for it and runs again.
    c.apply(&snapshot_yaml("snap", "src"));
    let snap = wait_object(&snaps, "snap", "Ready", TIMEOUT, |s| {
        s.ready_node().is_some()
    })
    .await;
    assert_eq!(snap.ready_node(), Some(node.as_str()));
    let st = snap.status.clone().unwrap();
    let digest = st.digest.clone().unwrap();
    assert!(digest.starts_with("sha256:"));
    assert!(st.layers.unwrap() >= 2, "the image's layers and its own");
    assert!(c
        .event_reasons("snap")
        .contains(&"SnapshotTaken".to_string()));
    let src = c.sandboxes().get("src").await.unwrap();
    assert_eq!(
        src.status.and_then(|s| s.phase),
        Some(SandboxPhase::Running)
    );
    assert_eq!(c.sh(agent, "src", "echo still").await, "still\n");

    // Sandboxes made from it run on its node, with its files (the deletion too).
    for i in 0..2 {
        let name = format!("from-{i}");
        c.apply(&from_snapshot_yaml(&name, "snap"));
        let s = c.wait_sandbox(&name, TIMEOUT, "Ready", is_ready).await;
        assert_eq!(s.status.and_then(|s| s.node), Some(node.clone()));
        assert_eq!(
            c.sh(agent, &name, "cat /tmp/f; test -e /etc/group || echo gone")
                .await,
            "kept\ngone\n"
        );
    }

    // A missing snapshot holds the Sandbox unscheduled, saying why.
    c.apply(&from_snapshot_yaml("orphan", "no-such-snapshot"));
    c.wait_sandbox("orphan", TIMEOUT, "SnapshotNotFound", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Scheduled" && c.reason == "SnapshotNotFound")
        })
    })
    .await;
    // No object names a node's own image: the apiserver refuses it.
    let local = sandbox_yaml("sneaky", "").replace(
        "image: busybox",
        "image: microsandbox.local/snapshots/snap:latest",
    );
    let (ok, _, err) = c.kubectl(&["apply", "-n", &c.ns, "-f", "-"], Some(&local));
    assert!(!ok && err.contains("microsandbox.local"), "{err}");

    // Deleting the snapshot waits for the Sandboxes made from it; then it is gone from the node.
    snaps
        .delete("snap", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(snaps.get_opt("snap").await.unwrap().is_some(), "in use");
    for n in ["from-0", "from-1", "orphan", "src"] {
        c.sandboxes()
            .delete(n, &DeleteParams::default())
            .await
            .unwrap();
    }
    c.wait_no_sandboxes(TIMEOUT).await;
    let start = std::time::Instant::now();
    while snaps.get_opt("snap").await.unwrap().is_some() {
        assert!(start.elapsed() < TIMEOUT, "snapshot object still there");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // (The node's image store is shared with the other tests of this run: only this one's.)
    let kept = agent.client().await.snapshots().await.unwrap();
    assert!(!kept.iter().any(|s| s.digest == digest), "{kept:?}");
    assert_eq!(
        wait_object(&snaps, "early", "Pending", TIMEOUT, |_| true)
            .await
            .status
            .and_then(|s| s.phase),
        Some(SnapshotPhase::Pending)
    );
}

fn condition_reason(s: &SandboxSnapshot, type_: &str) -> Option<String> {
    s.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.clone())
}

fn docker_config_secret(name: &str, registry: &str, password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{{\"auths\":{{\"http://{registry}\":{{\"username\":\"{}\",\"password\":\"{password}\"}}}}}}'\n",
        registry::USER
    )
}

/// Waits until the `Pushed` condition of `name` has `reason`.
async fn pushed_reason(
    snaps: &Api<SandboxSnapshot>,
    name: &str,
    reason: Reason,
) -> SandboxSnapshot {
    wait_object(snaps, name, reason.as_str(), TIMEOUT, |s| {
        condition_reason(s, "Pushed").as_deref() == Some(reason.as_str())
    })
    .await
}

/// `spec.push` against a registry that wants a password, which the node-agent itself holds too
/// (`--registry-auth`, for pulls): a namespace's push never uses the node's credentials
/// (anonymous: refused), waits while its Secret is missing (the operator says why), fails with
/// a wrong password, and succeeds once the Secret is fixed — the operator reads it, seals the
/// registry's credentials to the snapshot's node, the node-agent opens them and pushes. A
/// Sandbox made from the pushed image has the snapshot's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_pushed_with_credentials_sealed_to_their_node() {
    let reg = registry::AuthRegistry::start();
    let c = Cluster::new("e2e-push").await;
    let _op = c.operator(&[]);
    let node_auth = format!("{}={}:{}", reg.addr, registry::USER, registry::PASSWORD);
    let agent = c.agent(
        "n1",
        &[
            "--insecure-registry",
            &reg.addr,
            "--registry-auth",
            &node_auth,
        ],
    );
    let snaps: Api<SandboxSnapshot> = Api::namespaced(c.client.clone(), &c.ns);
    c.apply(&sandbox_yaml("src", ""));
    c.wait_sandbox("src", TIMEOUT, "Ready", is_ready).await;
    c.sh(&agent, "src", "echo pushed > /tmp/f").await;

    // No secretRef: anonymous, not the node's credentials, so this registry refuses it.
    let image = format!("{}/msb-e2e/pushed:1", reg.addr);
    let push = |secret: &str| {
        format!(
            "{}  push:\n    image: {image}\n{secret}",
            snapshot_yaml("snap", "src")
        )
    };
    c.apply(&push(""));
    pushed_reason(&snaps, "snap", Reason::PushFailed).await;

    // A Secret that does not exist: the push waits, and the operator says why.
    c.apply(&push("    secretRef:\n      name: creds\n"));
    pushed_reason(&snaps, "snap", Reason::PushPending).await;
    let start = std::time::Instant::now();
    while !c
        .event_reasons("snap")
        .contains(&Reason::PushCredentialsNotFound.to_string())
    {
        assert!(
            start.elapsed() < TIMEOUT,
            "no PushCredentialsNotFound event"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A wrong password: sealed, opened, sent, refused.
    c.apply(&docker_config_secret(
        "creds",
        &reg.addr,
        "not-the-password",
    ));
    pushed_reason(&snaps, "snap", Reason::PushFailed).await;

    // Fixed: sealed again (the Secret changed) and pushed.
    c.apply(&docker_config_secret(
        "creds",
        &reg.addr,
        registry::PASSWORD,
    ));
    let snap = pushed_reason(&snaps, "snap", Reason::SnapshotPushed).await;
    let st = snap.status.unwrap();
    let pushed = st.pushed_image.expect("status.pushedImage");
    assert!(pushed.starts_with(&format!("{image}@sha256:")), "{pushed}");
    let creds = st.push_credentials.expect("status.pushCredentials");
    assert_eq!(
        (creds.registry.as_str(), creds.secret.as_str()),
        (reg.addr.as_str(), "creds")
    );
    let (_, yaml, _) = c.kubectl(
        &["get", "sandboxsnapshot", "snap", "-n", &c.ns, "-o", "yaml"],
        None,
    );
    assert!(
        !yaml.contains(registry::PASSWORD),
        "the password is in the object:\n{yaml}"
    );
    assert!(c
        .event_reasons("snap")
        .contains(&Reason::SnapshotPushed.to_string()));

    // The image in the registry, pulled by reference (the node's credentials), has the files.
    c.apply(
        &sandbox_yaml("from-registry", "").replace("image: busybox", &format!("image: {pushed}")),
    );
    c.wait_sandbox("from-registry", TIMEOUT, "Ready", is_ready)
        .await;
    assert_eq!(
        c.sh(&agent, "from-registry", "cat /tmp/f").await,
        "pushed\n"
    );

    for n in ["from-registry", "src"] {
        c.sandboxes()
            .delete(n, &DeleteParams::default())
            .await
            .unwrap();
    }
    c.wait_no_sandboxes(TIMEOUT).await;
    snaps
        .delete("snap", &DeleteParams::default())
        .await
        .unwrap();
}
