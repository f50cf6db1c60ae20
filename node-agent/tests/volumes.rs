//! Volumes: named volumes with an enforced quota that survive the sandbox, confined and
//! read-only-honouring bind mounts, size-limited tmpfs.

mod common;

use common::*;
use microsandbox_client::api::{CreateSandbox, CreateVolume};
use microsandbox_client::{ClientError, ErrorCode};

fn with_mounts(name: &str, mounts: serde_json::Value) -> CreateSandbox {
    serde_json::from_value(serde_json::json!({
        "name": name, "image": "busybox", "detached": true, "isolation": "container",
        "memory_mib": 128, "mounts": mounts
    }))
    .unwrap()
}

/// Whether this process may resize a mounted ext4 (CAP_SYS_RESOURCE, bit 24).
fn has_cap_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

fn code(e: ClientError) -> ErrorCode {
    match e {
        ClientError::Api(a) => a.code,
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn named_volume_quota_holds_and_data_survives_the_sandbox() {
    let mut agent = TestAgent::start("volumes");
    let c = agent.client();
    let v = c
        .create_volume(&CreateVolume {
            name: "data".into(),
            quota_mib: 8,
            labels: Default::default(),
        })
        .await
        .unwrap();
    assert_eq!(v.quota_mib, 8);
    let dup = CreateVolume {
        name: "data".into(),
        quota_mib: 8,
        labels: Default::default(),
    };
    assert_eq!(
        code(c.create_volume(&dup).await.unwrap_err()),
        ErrorCode::VolumeAlreadyExists
    );

    let mount = serde_json::json!([{"kind": "named", "name": "data", "path": "/data"}]);
    c.create(with_mounts("w1", mount.clone())).await.unwrap();
    assert_eq!(
        sh(&c, "w1", "echo kept > /data/file && cat /data/file")
            .await
            .stdout_str(),
        "kept\n"
    );
    // A hostile guest filling the volume hits ENOSPC at the quota; the host is not affected.
    let out = sh(
        &c,
        "w1",
        "dd if=/dev/zero of=/data/big bs=1M count=64 2>&1; echo rc=$?",
    )
    .await;
    assert!(
        out.stdout_str().contains("No space left on device"),
        "{out:?}"
    );
    let used = c.get_volume("data").await.unwrap().used_bytes;
    assert!(used > 4 << 20 && used <= 8 << 20, "used {used}");
    let img = agent.state.join("volumes/data/disk.img");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 8 << 20);
    assert!(sh(&c, "w1", "rm /data/big").await.exit_code == 0);

    // In use: cannot be removed.
    assert_eq!(
        code(c.remove_volume("data").await.unwrap_err()),
        ErrorCode::VolumeInUse
    );
    // Growing while a sandbox uses it is online (ext4 online resize needs CAP_SYS_RESOURCE,
    // which some hosts withhold even from root).
    if has_cap_sys_resource() {
        assert_eq!(c.resize_volume("data", 12).await.unwrap().quota_mib, 12);
        let out = sh(
            &c,
            "w1",
            "dd if=/dev/zero of=/data/big bs=1M count=10 2>&1 && echo wrote; rm -f /data/big",
        )
        .await;
        assert!(out.stdout_str().contains("wrote"), "{out:?}");
    } else {
        eprintln!("SKIP online growth: no CAP_SYS_RESOURCE here (offline growth is tested below)");
    }
    c.remove("w1").await.unwrap();
    // Unused, it grows offline; it never shrinks.
    let grown = c.resize_volume("data", 32).await.unwrap();
    assert_eq!(grown.quota_mib, 32);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 32 << 20);
    assert_eq!(
        code(c.resize_volume("data", 4).await.unwrap_err()),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code(c.resize_volume("nope", 64).await.unwrap_err()),
        ErrorCode::VolumeNotFound
    );
    // Survives the sandbox and an agent restart.
    agent.restart();
    let c = agent.client();
    c.create(with_mounts("w2", mount)).await.unwrap();
    assert_eq!(sh(&c, "w2", "cat /data/file").await.stdout_str(), "kept\n");
    // The grown quota holds the data and the new space.
    let out = sh(
        &c,
        "w2",
        "dd if=/dev/zero of=/data/big bs=1M count=20 2>&1 && echo wrote; rm -f /data/big",
    )
    .await;
    assert!(out.stdout_str().contains("wrote"), "{out:?}");
    assert_eq!(c.get_volume("data").await.unwrap().quota_mib, 32);
    c.remove("w2").await.unwrap();
    c.remove_volume("data").await.unwrap();
    assert!(c.list_volumes().await.unwrap().is_empty());
    assert!(!agent.state.join("volumes/data").exists());
    let missing = serde_json::json!([{"kind": "named", "name": "data", "path": "/data"}]);
    assert_eq!(
        code(c.create(with_mounts("w3", missing)).await.unwrap_err()),
        ErrorCode::VolumeNotFound
    );
}

#[tokio::test]
async fn binds_are_confined_and_readonly_is_honoured() {
    let host = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(host.path().join("ro")).unwrap();
    std::fs::create_dir_all(host.path().join("rw")).unwrap();
    std::fs::write(host.path().join("ro/input.txt"), "read me").unwrap();
    std::os::unix::fs::symlink(outside.path(), host.path().join("sneaky")).unwrap();
    let root = host.path().display().to_string();
    let agent = TestAgent::start_with("binds", &["--host-root", &root]);
    let c = agent.client();
    let mounts = serde_json::json!([
        {"kind": "bind", "host_path": format!("{root}/ro"), "path": "/in", "readonly": true},
        {"kind": "bind", "host_path": format!("{root}/rw"), "path": "/out"},
        {"kind": "tmpfs", "path": "/scratch", "size_mib": 4},
    ]);
    c.create(with_mounts("b1", mounts)).await.unwrap();
    assert_eq!(
        sh(&c, "b1", "cat /in/input.txt").await.stdout_str(),
        "read me"
    );
    let out = sh(&c, "b1", "{ echo x > /in/new; } 2>&1; echo rc=$?").await;
    assert!(
        out.stdout_str().contains("Read-only file system"),
        "{out:?}"
    );
    assert!(!host.path().join("ro/new").exists());
    sh(&c, "b1", "echo result > /out/r.txt").await;
    assert_eq!(
        std::fs::read_to_string(host.path().join("rw/r.txt")).unwrap(),
        "result\n"
    );
    let out = sh(
        &c,
        "b1",
        "dd if=/dev/zero of=/scratch/f bs=1M count=16 2>&1; echo rc=$?",
    )
    .await;
    assert!(
        out.stdout_str().contains("No space left on device"),
        "{out:?}"
    );

    for (host_path, why) in [
        (outside.path().display().to_string(), "--host-root"),
        (format!("{root}/sneaky"), "--host-root"),
        (format!("{root}/../"), "--host-root"),
        ("relative/path".to_string(), "absolute"),
    ] {
        let m = serde_json::json!([{"kind": "bind", "host_path": host_path, "path": "/x"}]);
        let err = c.create(with_mounts("b2", m)).await.unwrap_err();
        let ClientError::Api(e) = err else { panic!() };
        assert_eq!(e.code, ErrorCode::InvalidRequest, "{}", e.message);
        assert!(e.message.contains(why), "{}", e.message);
    }
    for m in [
        serde_json::json!([{"kind": "tmpfs", "path": "/t", "size_mib": 1024}]),
        serde_json::json!([{"kind": "tmpfs", "path": "../t", "size_mib": 1}]),
        serde_json::json!([{"kind": "tmpfs", "path": "/t", "size_mib": 1},
                           {"kind": "tmpfs", "path": "/t/", "size_mib": 1}]),
    ] {
        assert_eq!(
            code(c.create(with_mounts("b3", m)).await.unwrap_err()),
            ErrorCode::InvalidRequest
        );
    }
    assert_eq!(
        c.list().await.unwrap().len(),
        1,
        "failed creates leave nothing"
    );
}
