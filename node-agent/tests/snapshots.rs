//! Filesystem snapshots: a paused or stopped sandbox's writable layer saved as an image of the
//! node, deletions and opaque directories included, and sandboxes created from it.

mod common;

use common::*;
use microsandbox_client::api::StopSandbox;
use microsandbox_client::ErrorCode;

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
    assert_eq!(c.snapshots().await.unwrap(), vec![snap.clone()]);
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
    assert_eq!(c.snapshots().await.unwrap().len(), 1);
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
    assert!(c.snapshots().await.unwrap().is_empty());
    let gone = c.create(sandbox("snap-4", &again.image)).await.unwrap_err();
    assert!(gone.is(ErrorCode::ImageNotFound), "{gone}");
    let missing = c.remove_snapshot("s1").await.unwrap_err();
    assert!(missing.is(ErrorCode::ImageNotFound), "{missing}");
    c.remove("snap-src").await.unwrap();
}
