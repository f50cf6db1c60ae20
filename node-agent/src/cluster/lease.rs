//! The node Lease: how the operator learns that this node-agent is alive, what it offers and
//! where its API is (see the operator's `scheduler` module for the format).

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use microsandbox_wire::api::Isolation;
use std::collections::BTreeMap;
use std::time::Duration;

use super::{ClusterConfig, FIELD_MANAGER};

/// Prefix of a node Lease's name (the operator's `NODE_LEASE_PREFIX`).
pub const PREFIX: &str = "microsandbox-node-";

/// The Lease this agent applies: capacity and isolation as annotations, node labels as labels,
/// renewed `now`. Pure.
pub fn body(cfg: &ClusterConfig, isolation: &[Isolation], now: Timestamp) -> serde_json::Value {
    let iso = isolation
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut ann = BTreeMap::from([
        (
            "microsandbox.dev/capacity-memory-mib".to_string(),
            cfg.capacity_memory_mib.to_string(),
        ),
        (
            "microsandbox.dev/capacity-cpus".to_string(),
            cfg.capacity_cpus.to_string(),
        ),
        (
            "microsandbox.dev/capacity-sandboxes".to_string(),
            cfg.capacity_sandboxes.to_string(),
        ),
        ("microsandbox.dev/isolation".to_string(), iso),
    ]);
    if let Some(e) = &cfg.endpoint {
        ann.insert("microsandbox.dev/endpoint".into(), e.clone());
    }
    if let Some(p) = &cfg.proxy {
        ann.insert("microsandbox.dev/proxy".into(), p.clone());
    }
    if let Some(k) = &cfg.sealing_key {
        ann.insert("microsandbox.dev/sealing-key".into(), k.clone());
    }
    serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": format!("{PREFIX}{}", cfg.node),
            "namespace": cfg.lease_namespace,
            "annotations": ann,
            "labels": cfg.node_labels,
        },
        "spec": {
            "holderIdentity": cfg.node,
            "leaseDurationSeconds": cfg.lease_duration.as_secs(),
            "renewTime": MicroTime(now),
        },
    })
}

/// Renew the Lease every third of its duration until the task is dropped. Failures are logged
/// and retried at the next tick: the operator notices a lapse by itself.
pub async fn renew(api: Api<Lease>, cfg: ClusterConfig, isolation: Vec<Isolation>) {
    let name = format!("{PREFIX}{}", cfg.node);
    let every = (cfg.lease_duration / 3).max(Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    loop {
        tick.tick().await;
        let lease = body(&cfg, &isolation, Timestamp::now());
        if let Err(e) = api.patch(&name, &params, &Patch::Apply(&lease)).await {
            tracing::warn!(lease = %name, error = %e, "cannot renew the node lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_carries_capacity_isolation_endpoint_and_labels() {
        let cfg = ClusterConfig {
            node: "n1".into(),
            lease_namespace: "msb".into(),
            endpoint: Some("http://127.0.0.1:7070".into()),
            proxy: Some(super::super::proxy_path("msb", "agent-x", 7070)),
            node_labels: BTreeMap::from([("zone".into(), "a".into())]),
            sealing_key: Some("a2V5".into()),
            ..ClusterConfig::for_tests()
        };
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let v = body(&cfg, &[Isolation::Microvm, Isolation::Container], now);
        let lease: Lease = serde_json::from_value(v).unwrap();
        assert_eq!(lease.metadata.name.as_deref(), Some("microsandbox-node-n1"));
        let ann = lease.metadata.annotations.unwrap();
        assert_eq!(ann["microsandbox.dev/isolation"], "microvm,container");
        assert_eq!(ann["microsandbox.dev/capacity-sandboxes"], "100");
        assert_eq!(ann["microsandbox.dev/endpoint"], "http://127.0.0.1:7070");
        assert_eq!(
            ann["microsandbox.dev/proxy"],
            "/api/v1/namespaces/msb/pods/agent-x:7070/proxy"
        );
        assert_eq!(ann["microsandbox.dev/sealing-key"], "a2V5");
        assert_eq!(lease.metadata.labels.unwrap()["zone"], "a");
        let spec = lease.spec.unwrap();
        assert_eq!(spec.renew_time.unwrap().0, now);
        assert_eq!(spec.lease_duration_seconds, Some(15));
    }
}
