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
    let agent = TestAgent::start("img-pull").with_private_images();
    let images = agent.state.join("images");
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

/// A registry that dies mid-pull: a relay to the local registry that, once `limit` bytes of
/// answers went through, cuts every connection and refuses new ones.
struct DyingRegistry {
    port: u16,
    /// Bytes of answers relayed (and cut) so far.
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl DyingRegistry {
    fn start(limit: u64) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let dead = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (d, s) = (dead.clone(), sent.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused mid-handshake
                }
                let Ok(upstream) = std::net::TcpStream::connect("127.0.0.1:5000") else {
                    continue;
                };
                let (mut c_read, mut u_write) =
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut u_write);
                });
                let (d, s) = (d.clone(), s.clone());
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let (mut up, mut down) = (upstream, client);
                    let mut buf = [0u8; 16 << 10];
                    loop {
                        let n = match up.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if d.load(Ordering::SeqCst)
                            || s.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > limit
                        {
                            d.store(true, Ordering::SeqCst);
                            break;
                        }
                        if down.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = down.shutdown(std::net::Shutdown::Both);
                    let _ = up.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Self { port, sent }
    }
}

/// Every file below `dir`.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_registry_dying_mid_pull_gives_a_typed_error_and_leaves_no_partial_layer() {
    let dying = DyingRegistry::start(256 << 10);
    let healthy = DyingRegistry::start(u64::MAX);
    let insecure: Vec<String> = [dying.port, healthy.port]
        .iter()
        .flat_map(|p| ["--insecure-registry".to_string(), format!("127.0.0.1:{p}")])
        .collect();
    let agent = TestAgent::start_with(
        "img-dying",
        &insecure.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .with_private_images();
    let images = agent.state.join("images");
    let c = agent.client();
    let before = files(&images);
    let image = format!("127.0.0.1:{}/library/busybox:latest", dying.port);
    let err = c
        .pull_image_wait(PullImage {
            image: image.clone(),
            policy: PullPolicy::Always,
        })
        .await
        .unwrap_err();
    assert!(
        err.is(ErrorCode::ImagePullFailed) || err.is(ErrorCode::RegistryUnreachable),
        "{err:?}"
    );
    // It died mid-pull, past the manifests, in the layer (1 MiB).
    let sent = dying.sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(sent > 256 << 10, "the registry sent {sent} bytes");
    // No layer, manifest or temporary file of the cut pull is kept.
    assert_eq!(files(&images), before, "after the cut pull");
    let err = c.create(sandbox("cut", &image)).await.unwrap_err();
    assert!(err.code().is_some(), "{err}");
    assert!(c.list().await.unwrap().is_empty());
    // Back up: the same pull completes and the image runs.
    let image = format!("127.0.0.1:{}/library/busybox:latest", healthy.port);
    create(&c, "whole", &image).await;
    assert_eq!(sh(&c, "whole", "echo ok").await.stdout_str(), "ok\n");
    c.remove("whole").await.unwrap();
}
