//! Regression tests of what API fuzzing (`scripts/fuzz-api.sh`, schemathesis) found, one per
//! finding, against a real agent.

mod common;

use common::*;
use microsandbox_client::api::CreateVolume;
use microsandbox_client::ErrorCode;
use std::process::Command;

/// `curl` on the agent's socket with its token: (status, headers and body as text).
fn curl(agent: &TestAgent, args: &[&str]) -> String {
    let token = std::fs::read_to_string(agent.state.join("agent.token")).unwrap();
    let out = Command::new("curl")
        .args(["-s", "-i", "--unix-socket"])
        .arg(agent.state.join("agent.sock"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).to_lowercase()
}

/// POST `body` as JSON to `path` of the agent; `extra` curl arguments before it.
fn post_json(agent: &TestAgent, path: &str, body: &str, extra: &[&str]) -> String {
    let url = format!("http://localhost{path}");
    let mut args = vec!["-H", "content-type: application/json"];
    args.extend(extra);
    args.extend(["-d", body, &url]);
    curl(agent, &args)
}

#[tokio::test]
async fn what_fuzzing_found_stays_fixed() {
    let agent = TestAgent::start("fuzzed");
    let c = agent.client();

    // 405 names the allowed methods (RFC 9110), from the API's OpenAPI document.
    let out = curl(&agent, &["-X", "TRACE", "http://localhost/v1/volumes/x"]);
    assert!(out.starts_with("http/1.1 405"), "{out}");
    assert!(out.contains("\r\nallow: get, delete, patch\r\n"), "{out}");
    let out = curl(&agent, &["-X", "PUT", "http://localhost/healthz"]);
    assert!(out.contains("\r\nallow: get\r\n"), "{out}");

    // A quota the file system cannot hold in one file: 422 fs_error (was 500 "File too large"),
    // and no half-made volume.
    let err = c
        .create_volume(&CreateVolume {
            name: "huge".into(),
            quota_mib: 16 * 1024 * 1024,
            labels: Default::default(),
        })
        .await
        .unwrap_err();
    assert!(err.is(ErrorCode::FsError), "{err}");
    assert!(c.list_volumes().await.unwrap().is_empty());
    assert!(!agent.state.join("volumes/huge").exists());

    // Growing past what ext4 can grow to: 422 fs_error (was 500 from resize2fs), and the
    // volume still grows within its limit afterwards.
    c.create_volume(&CreateVolume {
        name: "small".into(),
        quota_mib: 16,
        labels: Default::default(),
    })
    .await
    .unwrap();
    let err = c
        .resize_volume("small", 16 * 1024 * 1024 - 1)
        .await
        .unwrap_err();
    assert!(err.is(ErrorCode::FsError), "{err}");
    assert_eq!(c.get_volume("small").await.unwrap().quota_mib, 16);
    assert_eq!(c.resize_volume("small", 32).await.unwrap().quota_mib, 32);
    // Within the limit the volume stays mountable (resize2fs went past it by converting the
    // layout, which left a 1 MiB volume unmountable: "Structure needs cleaning").
    c.create_volume(&CreateVolume {
        name: "tiny".into(),
        quota_mib: 1,
        labels: Default::default(),
    })
    .await
    .unwrap();
    let err = c.resize_volume("tiny", 266_931).await.unwrap_err();
    assert!(
        err.is(ErrorCode::FsError) && err.to_string().contains("1024 MiB"),
        "{err}"
    );
    assert_eq!(c.resize_volume("tiny", 1024).await.unwrap().quota_mib, 1024);
    c.remove_volume("tiny").await.unwrap();
    c.remove_volume("small").await.unwrap();

    // Whole numbers written as floats are integers (JSON Schema's reading): 244.0 is 244.
    let out = post_json(
        &agent,
        "/v1/volumes",
        r#"{"name": "floaty", "quota_mib": 16.0}"#,
        &[],
    );
    assert!(out.starts_with("http/1.1 201"), "{out}");
    c.remove_volume("floaty").await.unwrap();

    // Chunked bodies (no Content-Length) are read like any other (warp's limit refused them and
    // the refusal came out as 405 "method not allowed"); an oversized one is a 400.
    let out = post_json(
        &agent,
        "/v1/volumes",
        r#"{"name": "chunky", "quota_mib": 16}"#,
        &["-H", "transfer-encoding: chunked"],
    );
    assert!(out.starts_with("http/1.1 201"), "{out}");
    c.remove_volume("chunky").await.unwrap();
    let big = format!(
        r#"{{"name": "{}", "quota_mib": 16}}"#,
        "a".repeat(1_100_000)
    );
    let big_file = agent.state.join("big.json");
    std::fs::write(&big_file, big).unwrap();
    let big_arg = format!("@{}", big_file.display());
    for chunked in [false, true] {
        let mut args = vec!["-H", "content-type: application/json"];
        if chunked {
            args.extend(["-H", "transfer-encoding: chunked"]);
        }
        args.extend(["--data-binary", &big_arg, "http://localhost/v1/sandboxes"]);
        let out = curl(&agent, &args);
        // (curl asks for "100 continue" first: the reply is the last status line)
        assert!(
            out.contains("\r\n\r\nhttp/1.1 400") || out.starts_with("http/1.1 400"),
            "{out}"
        );
        assert!(out.contains("request body too large"), "{out}");
    }
    // Near 2^52 whole floats need a correctly rounded parse to stay whole (4431048554903090.0
    // was read as ...89.5 and refused as a fraction): now the quota is read whole, and too large.
    let out = post_json(
        &agent,
        "/v1/volumes",
        r#"{"name": "roundtrip", "quota_mib": 4431048554903090.0}"#,
        &[],
    );
    assert!(out.contains("got 4431048554903090\""), "{out}");

    // A pool that does not exist: 404 pool_not_found (was 400 invalid_request).
    let err = c.remove_pool("nope").await.unwrap_err();
    assert!(err.is(ErrorCode::PoolNotFound), "{err}");

    // Label values are limited in characters, as the document's maxLength counts them.
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("k".to_string(), "é".repeat(1024));
    c.create_volume(&CreateVolume {
        name: "wide".into(),
        quota_mib: 16,
        labels,
    })
    .await
    .expect("1024 two-byte characters are 1024 characters");
    c.remove_volume("wide").await.unwrap();
    assert!(c.health().await.is_ok());
}
