//! The CRDs' Rust `validate()` (the same rules the apiserver runs as CEL) on arbitrary objects:
//! a verdict, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microsandbox_crds::{
    Sandbox, SandboxClaim, SandboxSnapshot, SandboxTemplate, SandboxWarmPool, Secret, Volume,
};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(s) = serde_json::from_value::<Sandbox>(v.clone()) {
        let _ = s.validate();
        let _ = s.validate_update(&s);
        let _ = s.spec.agent_request("x");
    }
    if let Ok(o) = serde_json::from_value::<Volume>(v.clone()) {
        let _ = o.validate();
    }
    if let Ok(o) = serde_json::from_value::<Secret>(v.clone()) {
        let _ = o.validate();
    }
    if let Ok(o) = serde_json::from_value::<SandboxTemplate>(v.clone()) {
        let _ = o.validate();
        let _ = microsandbox_crds::pool::inject_env(&o.spec, &o.spec.sandbox.env);
    }
    if let Ok(o) = serde_json::from_value::<SandboxWarmPool>(v.clone()) {
        let _ = o.validate();
    }
    if let Ok(o) = serde_json::from_value::<SandboxClaim>(v.clone()) {
        let _ = o.validate();
        let _ = o.validate_update(&o);
    }
    if let Ok(o) = serde_json::from_value::<SandboxSnapshot>(v) {
        let _ = o.validate();
        let _ = o.validate_update(&o);
        let _ = o.ready_node();
    }
});
