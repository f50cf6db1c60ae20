//! Image store behaviour through the agent: short names and mirrors, whiteouts, shared layer
//! cache, pull policies, progress events.

mod common;

use common::*;
use futures::StreamExt;
use microsandbox_client::api::{PullEvent, PullImage, PullPolicy};
use microsandbox_client::ErrorCode;

#[tokio::test]
async fn whiteouts_are_honoured() {
    let agent = TestAgent::start("img-wh");
    let c = agent.client();
    create(&c, "wh", "layered").await;
    let out = sh(&c, "wh", "ls /etc/removed-me 2>&1; cat /etc/added-file").await;
    assert!(
        out.stdout_str().contains("No such file"),
        "{}",
        out.stdout_str()
    );
    create(&c, "opq", "layered:opaque").await;
    let out = sh(&c, "opq", "ls /opt/opaque-dir").await;
    assert_eq!(out.stdout_str().trim(), "new-file");
    c.remove("wh").await.unwrap();
    c.remove("opq").await.unwrap();
}

#[tokio::test]
async fn pull_progress_policy_and_shared_layers() {
    // A private image store for this test, so that the first pull really downloads.
    let agent = TestAgent::start("img-pull");
    let images = agent.state.join("images");
    std::fs::remove_file(&images).unwrap();
    std::fs::create_dir(&images).unwrap();
    let mut agent = agent;
    agent.restart();
    let c = agent.client();

    let never = PullImage {
        image: "busybox".into(),
        policy: PullPolicy::Never,
    };
    let err = c.pull_image_wait(never.clone()).await.unwrap_err();
    assert!(err.is(ErrorCode::ImageNotPresent), "{err}");

    let mut events = vec![];
    let mut s = c
        .pull_image(PullImage {
            image: "busybox".into(),
            policy: PullPolicy::IfNotPresent,
        })
        .await
        .unwrap();
    while let Some(ev) = s.next().await {
        events.push(ev.unwrap());
    }
    assert!(
        matches!(&events[0], PullEvent::Resolved { reference } if reference == "127.0.0.1:5000/library/busybox:latest")
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, PullEvent::LayerDownloaded { .. })));
    assert!(events
        .iter()
        .any(|e| matches!(e, PullEvent::LayerExtracted { .. })));
    assert!(matches!(events.last(), Some(PullEvent::Done { .. })));
    // Now present: `never` succeeds without the registry, and a second pull reuses the layer.
    c.pull_image_wait(never).await.unwrap();
    let layers = std::fs::read_dir(images.join("layers")).unwrap().count();
    create(&c, "a", "busybox").await;
    create(&c, "b", "docker.io/library/busybox:latest").await;
    assert_eq!(
        std::fs::read_dir(images.join("layers")).unwrap().count(),
        layers
    );
    let a = c.get("a").await.unwrap();
    let b = c.get("b").await.unwrap();
    assert_eq!(a.image_digest, b.image_digest);
    c.remove("a").await.unwrap();
    c.remove("b").await.unwrap();
}
