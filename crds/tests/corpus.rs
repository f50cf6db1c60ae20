//! The bad-spec corpus (`tests/invalid/*.yaml`) and the examples (`examples/*.yaml`), each checked
//! twice: by the CEL rules of the generated CRD (kube-cel, the rules the apiserver runs) and by the
//! Rust `validate()` / `validate_update()`. Both must give the message named in `# expect:`.
//!
//! A corpus file holds one object (rejected on create) or two (the first is created, the second
//! is an update that must be rejected). A later harness applies the same files to a real
//! kube-apiserver.

use kube::core::cel::{compile_schema, CompiledSchema, Validator};
use kube::CustomResourceExt;
use microsandbox_crds::{
    Sandbox, SandboxClaim, SandboxSnapshot, SandboxTemplate, SandboxWarmPool, Secret,
    ValidationErrors, Volume,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The CRD schema of `kind` as JSON, for kube-cel.
fn schema(kind: &str) -> Value {
    let crd = match kind {
        "Sandbox" => Sandbox::crd(),
        "Volume" => Volume::crd(),
        "Secret" => Secret::crd(),
        // The generated one (the template's drops the Sandbox's transition rules).
        "SandboxTemplate" | "SandboxWarmPool" | "SandboxClaim" | "SandboxSnapshot" => {
            microsandbox_crds::crds()
                .into_iter()
                .find(|c| c.spec.names.kind == kind)
                .unwrap()
        }
        other => panic!("unknown kind {other}"),
    };
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("a schema");
    serde_json::to_value(schema).unwrap()
}

/// The Rust mirror: `validate()` on create, `validate_update()` with an old object.
fn rust_validate(obj: &Value, old: Option<&Value>) -> Result<(), ValidationErrors> {
    fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> T {
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("does not deserialize: {e}"))
    }
    match (obj["kind"].as_str().unwrap(), old) {
        ("Sandbox", None) => typed::<Sandbox>(obj).validate(),
        ("Sandbox", Some(o)) => typed::<Sandbox>(obj).validate_update(&typed(o)),
        ("Volume", None) => typed::<Volume>(obj).validate(),
        ("Volume", Some(o)) => typed::<Volume>(obj).validate_update(&typed(o)),
        ("Secret", _) => typed::<Secret>(obj).validate(),
        ("SandboxTemplate", _) => typed::<SandboxTemplate>(obj).validate(),
        ("SandboxWarmPool", _) => typed::<SandboxWarmPool>(obj).validate(),
        ("SandboxClaim", None) => typed::<SandboxClaim>(obj).validate(),
        ("SandboxClaim", Some(o)) => typed::<SandboxClaim>(obj).validate_update(&typed(o)),
        ("SandboxSnapshot", None) => typed::<SandboxSnapshot>(obj).validate(),
        ("SandboxSnapshot", Some(o)) => typed::<SandboxSnapshot>(obj).validate_update(&typed(o)),
        (other, _) => panic!("unknown kind {other}"),
    }
}

/// CEL messages of `obj` (with `old` for an update); empty when every rule passes.
fn cel_messages(obj: &Value, old: Option<&Value>) -> Vec<String> {
    thread_local! {
        static COMPILED: Vec<(&'static str, CompiledSchema)> = [
            "Sandbox",
            "Volume",
            "Secret",
            "SandboxTemplate",
            "SandboxWarmPool",
            "SandboxClaim",
            "SandboxSnapshot",
        ]
        .into_iter()
            .map(|k| (k, compile_schema(&schema(k))))
            .collect();
        static VALIDATOR: Validator = Validator::new();
    }
    let kind = obj["kind"].as_str().unwrap();
    let result = COMPILED.with(|compiled| {
        let schema = &compiled.iter().find(|(k, _)| *k == kind).unwrap().1;
        VALIDATOR.with(|v| v.validate_compiled(schema, obj, old))
    });
    match result {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn rust_messages(obj: &Value, old: Option<&Value>) -> Vec<String> {
    match rust_validate(obj, old) {
        Ok(()) => vec![],
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn documents(path: &Path) -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (text, docs)
}

#[test]
fn invalid_corpus_is_rejected_with_the_expected_message() {
    let files = yaml_files("tests/invalid");
    assert!(
        files.len() >= 20,
        "the corpus needs at least 20 bad specs, has {}",
        files.len()
    );
    let mut failures = vec![];
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (text, docs) = documents(path);
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert_eq!(
            expects.len(),
            1,
            "{name}: needs exactly one `# expect:` line"
        );
        let expect = expects[0];
        let (old, new) = match docs.as_slice() {
            [new] => (None, new),
            [old, new] => {
                // The object as created must be valid, or the update case proves nothing.
                assert_eq!(
                    cel_messages(old, None),
                    Vec::<String>::new(),
                    "{name}: first doc"
                );
                assert_eq!(
                    rust_messages(old, None),
                    Vec::<String>::new(),
                    "{name}: first doc"
                );
                (Some(old), new)
            }
            _ => panic!("{name}: one or two documents"),
        };
        let (cel, rust) = (cel_messages(new, old), rust_messages(new, old));
        if sorted(&cel) != sorted(&rust) {
            failures.push(format!(
                "{name}: CEL said {cel:?}, Rust validate() said {rust:?}"
            ));
        }
        for (who, messages) in [("CEL", cel), ("Rust validate()", rust)] {
            if !messages.iter().any(|m| m.contains(expect)) {
                failures.push(format!(
                    "{name}: {who} should say {expect:?}, said {messages:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn examples_are_valid() {
    let files = yaml_files("examples");
    assert!(!files.is_empty());
    for path in files {
        let (_, docs) = documents(&path);
        for doc in &docs {
            assert_eq!(
                cel_messages(doc, None),
                Vec::<String>::new(),
                "{}",
                path.display()
            );
            assert_eq!(
                rust_messages(doc, None),
                Vec::<String>::new(),
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn lifetime_may_change_and_volumes_may_grow() {
    let (_, docs) = documents(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sandbox.yaml"));
    let old = &docs[0];
    let mut new = old.clone();
    new["spec"]["lifetime"]["shutdownAfter"] = "4h".into();
    new["spec"]["lifetime"]["idleTimeout"] = "5m".into();
    new["spec"]["paused"] = true.into();
    new["metadata"]["labels"] = serde_json::json!({"team": "a"});
    assert_eq!(cel_messages(&new, Some(old)), Vec::<String>::new());
    assert_eq!(rust_messages(&new, Some(old)), Vec::<String>::new());
    // An empty list is the same as no list.
    let (_, docs) =
        documents(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/minimal-sandbox.yaml"));
    let mut with_empty = docs[0].clone();
    with_empty["spec"]["env"] = serde_json::json!([]);
    with_empty["spec"]["volumes"] = serde_json::json!([]);
    assert_eq!(
        cel_messages(&with_empty, Some(&docs[0])),
        Vec::<String>::new()
    );
    assert_eq!(
        cel_messages(&docs[0], Some(&with_empty)),
        Vec::<String>::new()
    );
    assert_eq!(
        rust_messages(&with_empty, Some(&docs[0])),
        Vec::<String>::new()
    );
    assert_eq!(rust_messages(&new, Some(old)), Vec::<String>::new());

    let (_, docs) = documents(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/volume.yaml"));
    let old = &docs[0];
    let mut new = old.clone();
    new["spec"]["size"] = "1536Mi".into();
    assert_eq!(cel_messages(&new, Some(old)), Vec::<String>::new());
    assert_eq!(rust_messages(&new, Some(old)), Vec::<String>::new());
}

#[test]
fn defaults_fill_a_minimal_sandbox() {
    let (_, docs) =
        documents(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/minimal-sandbox.yaml"));
    let sb: Sandbox = serde_json::from_value(docs[0].clone()).unwrap();
    assert_eq!(sb.spec.isolation, microsandbox_crds::Isolation::Microvm);
    assert_eq!(sb.spec.resources.memory, "512Mi");
    assert_eq!(sb.spec.resources.cpus, 1);
    assert_eq!(
        sb.spec.network.policy,
        microsandbox_crds::NetworkPolicy::PublicOnly
    );
    let req = sb.spec.agent_request("minimal");
    assert_eq!(req.memory_mib, 512);
    assert_eq!(req.cpus, 1);
    assert!(req.detached);
    assert_eq!(
        req.isolation,
        Some(microsandbox_wire::api::Isolation::Microvm)
    );
}

/// Differential test of the string rules: the Rust mirror of each CEL regex or quantity/duration
/// check must accept and reject exactly the same values, with the same messages.
#[test]
fn rust_mirror_agrees_with_cel_on_tricky_values() {
    let values = [
        "",
        "a",
        "A",
        "-",
        "a-",
        "-a",
        "a.b",
        "a..b",
        ".a",
        "a.",
        "a_b",
        "A_B",
        "_x",
        "1x",
        "x1",
        "a b",
        "/",
        "/a",
        "a/",
        "/a/../b",
        "/a/..",
        "..",
        "/..b",
        "/b..",
        "python:3.12",
        "registry.example.com/team/app@sha256:abc",
        "https://x",
        "x://y",
        "*.x.com",
        "*",
        "*.",
        "a.*.com",
        "x.com:443",
        "X.com",
        "512Mi",
        "1.5Gi",
        "0.5Mi",
        "64Mi",
        "63Mi",
        "1e9",
        "1E+9",
        "512MB",
        "+1Gi",
        "-1Gi",
        "100m",
        "1h30m",
        "90s",
        "0s",
        "1s",
        "1d",
        "1h30",
        "1.5h",
        "0644",
        "644",
        "0999",
        "01755",
        "0000",
        "064",
        "é",
        "a\u{0}b",
    ];
    let fields: &[(&str, &str)] = &[
        ("Sandbox", "/spec/image"),
        ("Sandbox", "/spec/workdir"),
        ("Sandbox", "/spec/env/0/name"),
        ("Sandbox", "/spec/resources/memory"),
        ("Sandbox", "/spec/resources/disk"),
        ("Sandbox", "/spec/lifetime/shutdownAfter"),
        ("Sandbox", "/spec/lifetime/idleTimeout"),
        ("Sandbox", "/spec/volumes/0/path"),
        ("Sandbox", "/spec/volumes/0/named/name"),
        ("Sandbox", "/spec/secrets/0/name"),
        ("Sandbox", "/spec/patches/0/text/mode"),
        ("Volume", "/spec/size"),
        ("Volume", "/spec/placement/node"),
        ("Secret", "/spec/allowHosts/0"),
        ("Secret", "/spec/secretRef/key"),
        ("Secret", "/spec/secretRef/name"),
    ];
    let base = |kind: &str| -> Value {
        let spec = match kind {
            "Sandbox" => serde_json::json!({
                "image": "python:3.12",
                "workdir": "/app",
                "env": [{"name": "A", "value": "1"}],
                "resources": {"memory": "512Mi", "disk": "1Gi"},
                "lifetime": {"shutdownAfter": "1h", "idleTimeout": "5m"},
                "volumes": [{"path": "/data", "named": {"name": "data"}}],
                "secrets": [{"name": "openai", "env": "KEY"}],
                "patches": [{"text": {"path": "/f", "content": "", "mode": "0644"}}],
            }),
            "Volume" => serde_json::json!({"size": "1Gi", "placement": {"node": "node-1"}}),
            _ => serde_json::json!({
                "secretRef": {"name": "openai", "key": "api-key"},
                "allowHosts": ["api.openai.com"],
            }),
        };
        serde_json::json!({
            "apiVersion": "microsandbox.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": "x"},
            "spec": spec,
        })
    };
    let mut failures = vec![];
    for (kind, pointer) in fields {
        let valid = base(kind);
        assert_eq!(
            cel_messages(&valid, None),
            Vec::<String>::new(),
            "{kind} base"
        );
        for value in values {
            let mut obj = valid.clone();
            *obj.pointer_mut(pointer)
                .unwrap_or_else(|| panic!("{kind} {pointer}")) = value.into();
            let (cel, rust) = (cel_messages(&obj, None), rust_messages(&obj, None));
            if sorted(&cel) != sorted(&rust) {
                failures.push(format!(
                    "{kind} {pointer} = {value:?}: CEL {cel:?} vs Rust {rust:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
