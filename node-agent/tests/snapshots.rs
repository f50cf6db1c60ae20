//! Filesystem snapshots: a paused or stopped sandbox's writable layer saved as an image of the
//! node, deletions and opaque directories included, and sandboxes created from it.

mod common;

use common::*;
use microsandbox_client::api::StopSandbox;
use microsandbox_client::ErrorCode;

/// The snapshots named `name`.
async fn named(
    c: &microsandbox_client::AgentClient,
    name: &str,
) -> Vec<microsandbox_client::api::SnapshotInfo> {
    let mut all = c.snapshots().await.unwrap();
    all.retain(|s| s.name == name);
    all
}

#[tokio::test]
async fn a_snapshot_carries_new_changed_and_deleted_files_into_new_sandboxes() {
    let agent = TestAgent::start("snap");
    let c = agent.client();
    create(&c, "snap-src", "busybox").await;
    // New files, a deleted one (an overlayfs whiteout) and a directory replaced wholesale (an
    // opaque directory).
    let out = sh(
        &c,
        "snap-src",
        "mkdir -p /data && echo hello > /data/f && rm /etc/group && \
         rm -rf /usr && mkdir -p /usr/only && echo x > /usr/only/y && ls /usr",
    )
    .await;
    assert_eq!(out.stdout_str(), "only\n", "{}", out.stderr_str());
    // A running sandbox could change its files half-way.
    let err = c.snapshot("snap-src", "s1").await.unwrap_err();
    assert!(err.is(ErrorCode::InvalidRequest), "{err}");
    c.pause("snap-src").await.unwrap();
    let snap = c.snapshot("snap-src", "s1").await.unwrap();
    assert_eq!(snap.name, "s1");
    assert_eq!(snap.image, "microsandbox.local/snapshots/s1:latest");
    assert!(snap.layers >= 2, "{snap:?}");
    // (Other tests' snapshots share the image store: only this test's names count.)
    assert_eq!(named(&c, "s1").await, vec![snap.clone()]);
    let bad = c.snapshot("snap-src", "Not A Name").await.unwrap_err();
    assert!(bad.is(ErrorCode::InvalidRequest), "{bad}");

    let mut req = sandbox("snap-dst", &snap.image);
    req.pull_policy = microsandbox_client::api::PullPolicy::Always; // never a registry to ask
    c.create(req).await.unwrap();
    let out = sh(
        &c,
        "snap-dst",
        "cat /data/f; test -e /etc/group || echo no-group; ls /usr; cat /usr/only/y",
    )
    .await;
    assert_eq!(
        out.stdout_str(),
        "hello\nno-group\nonly\nx\n",
        "{}",
        out.stderr_str()
    );

    // From a stopped sandbox too; the same name replaces the snapshot.
    sh(&c, "snap-dst", "echo second > /data/f").await;
    c.stop("snap-dst", StopSandbox::default()).await.unwrap();
    let again = c.snapshot("snap-dst", "s1").await.unwrap();
    assert_ne!(again.digest, snap.digest);
    assert_eq!(named(&c, "s1").await.len(), 1);
    c.create(sandbox("snap-3", &again.image)).await.unwrap();
    assert_eq!(
        sh(&c, "snap-3", "cat /data/f").await.stdout_str(),
        "second\n"
    );

    // Its layer is the file system of the sandboxes made from it: kept while they exist.
    let in_use = c.remove_snapshot("s1").await.unwrap_err();
    assert!(in_use.is(ErrorCode::SnapshotInUse), "{in_use}");
    assert_eq!(
        sh(&c, "snap-3", "cat /data/f").await.stdout_str(),
        "second\n"
    );
    c.remove("snap-3").await.unwrap();
    c.remove("snap-dst").await.unwrap();
    c.remove_snapshot("s1").await.unwrap();
    assert!(named(&c, "s1").await.is_empty());
    let gone = c.create(sandbox("snap-4", &again.image)).await.unwrap_err();
    assert!(gone.is(ErrorCode::ImageNotFound), "{gone}");
    let missing = c.remove_snapshot("s1").await.unwrap_err();
    assert!(missing.is(ErrorCode::ImageNotFound), "{missing}");
    c.remove("snap-src").await.unwrap();
}

/// A snapshot pushed to a registry is an image like any other: a sandbox pulls it (the layers
/// written back from the node's cache, whiteouts and opaque directories included) and has the
/// snapshot's files. Bad pushes fail with typed errors.
#[tokio::test]
async fn a_pushed_snapshot_is_pulled_back_with_its_files() {
    let agent = TestAgent::start("snap-push");
    let c = agent.client();
    create(&c, "push-src", "busybox").await;
    sh(
        &c,
        "push-src",
        "mkdir -p /data && echo pushed > /data/f && rm /etc/group && rm -rf /usr && \
         mkdir -p /usr/only && echo x > /usr/only/y",
    )
    .await;
    c.pause("push-src").await.unwrap();
    c.snapshot("push-src", "p1").await.unwrap();
    c.remove("push-src").await.unwrap();

    let reference = format!("127.0.0.1:5000/msb-test/snap-push:{}", std::process::id());
    let pushed = c.push_snapshot("p1", &reference).await.unwrap();
    assert_eq!(pushed.reference, reference);
    assert!(pushed.digest.starts_with("sha256:"), "{pushed:?}");
    // Gone from the node: what comes back comes from the registry.
    c.remove_snapshot("p1").await.unwrap();
    let mut req = sandbox("push-dst", &reference);
    req.pull_policy = microsandbox_client::api::PullPolicy::Always;
    c.create(req).await.unwrap();
    let out = sh(
        &c,
        "push-dst",
        "cat /data/f; test -e /etc/group || echo no-group; ls /usr; cat /usr/only/y; echo hi | grep -c hi",
    )
    .await;
    assert_eq!(
        out.stdout_str(),
        "pushed\nno-group\nonly\nx\n1\n",
        "{}",
        out.stderr_str()
    );
    c.remove("push-dst").await.unwrap();

    let missing = c.push_snapshot("p1", &reference).await.unwrap_err();
    assert!(missing.is(ErrorCode::ImageNotFound), "{missing}");
    create(&c, "push-src2", "busybox").await;
    c.pause("push-src2").await.unwrap();
    c.snapshot("push-src2", "p2").await.unwrap();
    let local = c
        .push_snapshot("p2", "microsandbox.local/snapshots/x:latest")
        .await
        .unwrap_err();
    assert!(local.is(ErrorCode::InvalidRequest), "{local}");
    let unreachable = c
        .push_snapshot("p2", "127.0.0.1:1/msb-test/nowhere:1")
        .await
        .unwrap_err();
    assert!(
        unreachable.is(ErrorCode::RegistryUnreachable),
        "{unreachable}"
    );
    c.remove("push-src2").await.unwrap();
    c.remove_snapshot("p2").await.unwrap();
}

/// A push to a registry that wants a password: the agent's `--registry-auth` for that registry
/// is sent (an anonymous request is refused there), and a pull back uses it too; a push to it
/// by an agent without credentials is refused with a typed error.
#[tokio::test]
async fn a_push_to_a_registry_with_a_password_uses_the_nodes_credentials() {
    use microsandbox_testkit::registry::{self, AuthRegistry};
    let reg = AuthRegistry::start();
    assert_eq!(
        reg.status_of("/v2/"),
        Some(401),
        "anonymous requests are refused"
    );
    let auth = format!("{}={}:{}", reg.addr, registry::USER, registry::PASSWORD);
    let reference = format!("{}/msb-test/auth:1", reg.addr);

    let without = TestAgent::start_with("snap-noauth", &["--insecure-registry", &reg.addr]);
    let c = without.client();
    create(&c, "na-src", "busybox").await;
    c.pause("na-src").await.unwrap();
    c.snapshot("na-src", "na").await.unwrap();
    let refused = c.push_snapshot("na", &reference).await.unwrap_err();
    assert!(
        refused.is(ErrorCode::ImagePullFailed) && refused.to_string().contains("401"),
        "{refused}"
    );
    c.remove("na-src").await.unwrap();
    c.remove_snapshot("na").await.unwrap();
    drop(without);

    let agent = TestAgent::start_with(
        "snap-auth",
        &["--insecure-registry", &reg.addr, "--registry-auth", &auth],
    );
    let c = agent.client();
    create(&c, "auth-src", "busybox").await;
    sh(&c, "auth-src", "echo authed > /tmp/f").await;
    c.pause("auth-src").await.unwrap();
    c.snapshot("auth-src", "a1").await.unwrap();
    c.remove("auth-src").await.unwrap();
    let pushed = c.push_snapshot("a1", &reference).await.unwrap();
    assert!(pushed.digest.starts_with("sha256:"), "{pushed:?}");
    c.remove_snapshot("a1").await.unwrap();
    let mut req = sandbox("auth-dst", &reference);
    req.pull_policy = microsandbox_client::api::PullPolicy::Always;
    c.create(req).await.unwrap();
    assert_eq!(
        sh(&c, "auth-dst", "cat /tmp/f").await.stdout_str(),
        "authed\n"
    );
    c.remove("auth-dst").await.unwrap();
}
