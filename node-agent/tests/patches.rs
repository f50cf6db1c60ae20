//! Root filesystem patches: each kind visible at the first exec, errors that name the patch,
//! host paths confined to --host-root, symlinks that cannot lead a patch onto the host.

mod common;

use common::*;
use microsandbox_client::api::CreateSandbox;
use microsandbox_client::{ClientError, ErrorCode};

fn with_patches(name: &str, patches: serde_json::Value) -> CreateSandbox {
    serde_json::from_value(serde_json::json!({
        "name": name, "image": "busybox", "detached": true, "isolation": "container",
        "memory_mib": 64, "patches": patches
    }))
    .unwrap()
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn every_patch_kind_is_visible_at_first_exec() {
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(host.path().join("site/css")).unwrap();
    std::fs::write(host.path().join("site/index.html"), "<h1>hi</h1>").unwrap();
    std::fs::write(host.path().join("site/css/a.css"), "body{}").unwrap();
    std::fs::write(host.path().join("tool.sh"), "#!/bin/sh\necho tool ran\n").unwrap();
    let root = host.path().display().to_string();
    let agent = TestAgent::start_with("patches", &["--host-root", &root]);
    let c = agent.client();
    let patches = serde_json::json!([
        {"op": "mkdir", "path": "/app/data", "mode": 0o700},
        {"op": "text", "path": "/app/config.ini", "content_b64": b64("[a]\nx=1\n")},
        {"op": "append", "path": "/etc/motd", "content_b64": b64("welcome\n")},
        {"op": "symlink", "path": "/app/current", "target": "/app/data"},
        {"op": "remove", "path": "/bin/vi"},
        {"op": "copy", "src": format!("{root}/site"), "path": "/srv/site"},
        {"op": "copy", "src": format!("{root}/tool.sh"), "path": "/usr/local/bin/tool", "mode": 0o755},
    ]);
    c.create(with_patches("p1", patches)).await.unwrap();
    let out = sh(
        &c,
        "p1",
        "cat /app/config.ini; cat /etc/motd; readlink /app/current; stat -c %a /app/data; \
         test -e /bin/vi && echo vi-present || echo vi-removed; cat /srv/site/index.html; echo; \
         cat /srv/site/css/a.css; echo; tool",
    )
    .await;
    assert_eq!(
        out.stdout_str(),
        "[a]\nx=1\nwelcome\n/app/data\n700\nvi-removed\n<h1>hi</h1>\nbody{}\ntool ran\n",
        "{out:?}"
    );
    // The image's layers are shared and untouched: a second sandbox still has /bin/vi.
    c.create(with_patches("p2", serde_json::json!([])))
        .await
        .unwrap();
    assert_eq!(
        sh(&c, "p2", "test -e /bin/vi && echo ok")
            .await
            .stdout_str(),
        "ok\n"
    );
}

#[tokio::test]
async fn bad_patches_fail_the_create_naming_the_patch() {
    let host = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "host secret").unwrap();
    let agent = TestAgent::start_with(
        "badpatch",
        &["--host-root", &host.path().display().to_string()],
    );
    let c = agent.client();
    for (i, patches, want) in [
        (
            1,
            serde_json::json!([{"op": "mkdir", "path": "/ok"},
                               {"op": "copy", "src": outside.path().join("secret"), "path": "/s"}]),
            "outside the agent's --host-root",
        ),
        (
            0,
            serde_json::json!([{"op": "text", "path": "/etc/passwd/x", "content_b64": b64("x")}]),
            "not a directory",
        ),
        (
            0,
            serde_json::json!([{"op": "text", "path": "/x", "content_b64": "%%%"}]),
            "base64",
        ),
    ] {
        let err = c.create(with_patches("bad", patches)).await.unwrap_err();
        let ClientError::Api(e) = err else {
            panic!("{err}")
        };
        assert_eq!(e.code, ErrorCode::PatchFailed, "{}", e.message);
        assert!(
            e.message.starts_with(&format!("patch {i} (")),
            "{}",
            e.message
        );
        assert!(e.message.contains(want), "{}", e.message);
        // Nothing is left of the failed sandbox: the name is free again.
        assert!(c.list().await.unwrap().is_empty());
    }

    // A link planted by an earlier patch does not carry a write onto the host.
    let target = outside.path().display().to_string();
    let patches = serde_json::json!([
        {"op": "symlink", "path": "/escape", "target": target},
        {"op": "symlink", "path": "/slash", "target": "/"},
        {"op": "text", "path": format!("/slash{target}/planted"), "content_b64": b64("x")},
        {"op": "remove", "path": format!("/slash{target}/secret")},
    ]);
    c.create(with_patches("esc", patches)).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret")).unwrap(),
        "host secret"
    );
    assert!(!outside.path().join("planted").exists());
    let out = sh(&c, "esc", &format!("cat {target}/planted")).await;
    assert_eq!(out.stdout_str(), "x", "the write landed inside the sandbox");
}
