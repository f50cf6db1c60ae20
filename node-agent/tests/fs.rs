//! Filesystem API against real container sandboxes.

mod common;

use common::*;
use microsandbox_client::api::FileKind;
use microsandbox_client::ErrorCode;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

fn sha_file(p: &std::path::Path) -> String {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

#[tokio::test]
async fn one_gib_round_trip_with_bounded_agent_memory() {
    let agent = TestAgent::start("fs-1g");
    let c = agent.client();
    let info: microsandbox_client::api::CreateSandbox = serde_json::from_value(serde_json::json!({
        "name": "big", "image": "busybox", "detached": true, "isolation": "container", "memory_mib": 128
    }))
    .unwrap();
    c.create(info).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    {
        // 1 GiB of non-repeating data, written in 8 MiB blocks.
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        let mut block = vec![0u8; 8 << 20];
        for i in 0..128u64 {
            for (j, b) in block.iter_mut().enumerate() {
                *b = ((j as u64).wrapping_mul(2_654_435_761).wrapping_add(i * 97) >> 7) as u8;
            }
            f.write_all(&block).unwrap();
        }
    }
    let want = sha_file(&src);
    let rss_before = agent.peak_rss();
    let n = c
        .fs_write_from_file("big", &src, "/tmp/copy.bin")
        .await
        .unwrap();
    assert_eq!(n, 1 << 30);
    // Inside the guest the file has the same hash.
    let guest_hash = sh(&c, "big", "sha256sum /tmp/copy.bin | cut -d' ' -f1").await;
    assert_eq!(guest_hash.stdout_str().trim(), want);
    let back = dir.path().join("back.bin");
    c.fs_read_to_file("big", "/tmp/copy.bin", &back)
        .await
        .unwrap();
    assert_eq!(sha_file(&back), want);
    let rss_after = agent.peak_rss();
    // Streaming: the agent's peak memory grows by far less than the file (1 GiB).
    assert!(
        rss_after.saturating_sub(rss_before) < 64 << 20,
        "agent peak RSS grew from {rss_before} to {rss_after}"
    );
    c.remove("big").await.unwrap();
}

#[tokio::test]
async fn list_stat_mkdir_remove_rename_copy() {
    let agent = TestAgent::start("fs-ops");
    let c = agent.client();
    create(&c, "ops", "busybox").await;
    c.fs_mkdir("ops", "/work/a/b", true).await.unwrap();
    c.fs_write_bytes("ops", "/work/a/b/hello.txt", Some(0o640), b"hello".to_vec())
        .await
        .unwrap();
    let more = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(
        b" world",
    ))]);
    c.fs_write("ops", "/work/a/b/hello.txt", None, true, more)
        .await
        .unwrap();
    let st = c.fs_stat("ops", "/work/a/b/hello.txt").await.unwrap();
    assert_eq!(st.kind, FileKind::File);
    assert_eq!(st.size, 11);
    assert_eq!(st.mode & 0o777, 0o640);
    c.fs_copy("ops", "/work/a", "/work/c").await.unwrap();
    c.fs_rename("ops", "/work/c/b/hello.txt", "/work/c/b/moved.txt")
        .await
        .unwrap();
    let names: Vec<String> = c
        .fs_list("ops", "/work/c/b")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert_eq!(names, vec!["/work/c/b/moved.txt".to_string()]);
    let out = sh(&c, "ops", "cat /work/c/b/moved.txt").await;
    assert_eq!(out.stdout_str(), "hello world");
    // Non-recursive remove of a non-empty directory fails; recursive succeeds.
    assert!(c.fs_remove("ops", "/work/a", false).await.is_err());
    c.fs_remove("ops", "/work/a", true).await.unwrap();
    let err = c.fs_stat("ops", "/work/a").await.unwrap_err();
    assert!(err.is(ErrorCode::PathNotFound), "{err}");
    let err = c
        .fs_read_to_file("ops", "/nope", &std::env::temp_dir().join("msb-nope"))
        .await
        .unwrap_err();
    assert!(err.is(ErrorCode::PathNotFound), "{err}");
    assert!(!std::env::temp_dir().join("msb-nope").exists());
    // Writes land in the sandbox's private upper layer only: the shared image layer is untouched.
    let out = sh(
        &c,
        "ops",
        "echo changed > /etc/motd-test && cat /etc/motd-test",
    )
    .await;
    assert_eq!(out.stdout_str(), "changed\n");
    create(&c, "ops2", "busybox").await;
    let out = sh(&c, "ops2", "cat /etc/motd-test 2>&1 || echo absent").await;
    assert!(out.stdout_str().contains("absent"));
    c.remove("ops").await.unwrap();
    c.remove("ops2").await.unwrap();
}
