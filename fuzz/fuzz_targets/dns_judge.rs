//! The policing resolver's view of upstream answers: any bytes parsed as a DNS message (hickory)
//! and judged against allowlists with names and CIDRs, under both policies that resolve: a
//! verdict, never a panic; a name that is not allowed never gets addresses granted.
#![no_main]

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use microsandbox_agent::network::dns::{judge, Judgement};
use microsandbox_agent::network::egress::Egress;
use microsandbox_agent::network::plan::Allow;
use microsandbox_wire::api::{NetworkPolicy, NetworkSpec};
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Ok(answer) = Message::from_vec(data) else {
        return;
    };
    let spec = NetworkSpec {
        policy: NetworkPolicy::PublicOnly,
        allow: vec![
            "api.example.com".into(),
            "*.pypi.org".into(),
            "10.1.0.0/16".into(),
        ],
        publish: Vec::new(),
    };
    let allow = Allow::parse(&spec).expect("a valid allowlist");
    let blocked = Arc::new(vec![
        "10.0.0.0/8".parse().unwrap(),
        "127.0.0.0/8".parse().unwrap(),
    ]);
    for policy in [NetworkPolicy::PublicOnly, NetworkPolicy::None] {
        let egress = Egress::new(policy, allow.clone(), blocked.clone());
        for q in answer.queries() {
            let name = q.name().to_ascii();
            let name = name.trim_end_matches('.');
            match judge(&egress, name, &answer) {
                Judgement::Pass(grants) => {
                    if !egress.allow.allows_name(name) {
                        assert!(
                            grants.is_empty(),
                            "{name} is not allowed yet got {grants:?}"
                        );
                    }
                }
                Judgement::Refuse(_) => {}
            }
        }
    }
});
