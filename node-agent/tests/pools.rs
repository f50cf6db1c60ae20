//! Warm pools: sandboxes of a template kept started; a matching create claims one and it takes
//! the create's identity (name, hostname, env, workdir, labels); the pool refills; an agent
//! restart keeps claimed sandboxes and reaps unclaimed members.

mod common;

use common::*;
use microsandbox_client::api::{PoolInfo, PoolSpec};
use microsandbox_client::{AgentClient, ErrorCode};
use std::time::Duration;

const LAUNCH: &str = "microsandbox.dev/launch";

/// Names of the agent's sandboxes.
async fn listed(c: &AgentClient) -> Vec<String> {
    c.list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect()
}

async fn wait_ready(c: &AgentClient, pool: &str, n: u32) -> PoolInfo {
    for _ in 0..200 {
        let p = c.pools().await.unwrap();
        if let Some(p) = p.into_iter().find(|p| p.name == pool && p.ready >= n) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "pool {pool} never had {n} ready: {:?}",
        c.pools().await.unwrap()
    );
}

#[tokio::test]
async fn claims_take_a_started_sandbox_and_its_new_identity() {
    let mut agent = TestAgent::start("pools");
    let c = agent.client();
    let template = sandbox("ignored", "busybox");
    let spec = PoolSpec {
        size: 2,
        template: template.clone(),
    };
    c.put_pool("bb", &spec).await.unwrap();
    wait_ready(&c, "bb", 2).await;

    let mut req = sandbox("job-1", "busybox");
    req.pool = Some("bb".into());
    req.detached = true;
    req.env.insert("GREETING".into(), "hi".into());
    req.workdir = Some("/tmp".into());
    req.labels.insert("team".into(), "a".into());
    let info = c.create(req.clone()).await.unwrap();
    assert_eq!(info.name, "job-1");
    assert_eq!(info.labels[LAUNCH], "warm");
    assert_eq!(info.labels["team"], "a");
    assert!(!info.labels.contains_key("microsandbox.dev/pool"));
    let out = sh(&c, "job-1", "hostname; echo $GREETING; pwd").await;
    assert_eq!(
        out.stdout_str(),
        "job-1\nhi\n/tmp\n",
        "{}",
        out.stderr_str()
    );
    // An exec's own env and cwd win over the claim's.
    let mut e = cmd("sh", &["-c", "echo $GREETING; pwd"]);
    e.env.insert("GREETING".into(), "own".into());
    e.cwd = Some("/".into());
    assert_eq!(c.exec("job-1", e).await.unwrap().stdout_str(), "own\n/\n");
    // The pool refills; its members are listed under their own names until claimed.
    let p = wait_ready(&c, "bb", 2).await;
    assert_eq!(p.claimed, 1);
    let names = listed(&c).await;
    assert_eq!(
        names.iter().filter(|n| n.starts_with("pool--bb-")).count(),
        2,
        "{names:?}"
    );
    assert!(names.contains(&"job-1".to_string()));

    // What a claim cannot change makes it a cold create.
    let mut bigger = sandbox("job-2", "busybox");
    bigger.pool = Some("bb".into());
    bigger.memory_mib = 128;
    assert_eq!(c.create(bigger).await.unwrap().labels[LAUNCH], "cold");
    // Names of pool members are not for creates; a taken name is refused before any claim.
    let err = c
        .create(sandbox("pool--bb-x", "busybox"))
        .await
        .unwrap_err();
    assert!(err.is(ErrorCode::InvalidName), "{err}");
    let err = c.create(req.clone()).await.unwrap_err();
    assert!(err.is(ErrorCode::SandboxAlreadyExists), "{err}");

    // A restart keeps the claimed sandbox (name and all) and reaps the unclaimed members.
    wait_ready(&c, "bb", 2).await;
    agent.kill9();
    agent.restart();
    let c = agent.client();
    let names = listed(&c).await;
    assert!(!names.iter().any(|n| n.starts_with("pool--")), "{names:?}");
    assert_eq!(
        sh(&c, "job-1", "hostname; echo $GREETING")
            .await
            .stdout_str(),
        "job-1\nhi\n"
    );
    assert!(c.pools().await.unwrap().is_empty());
    // Declared again: the same call.
    c.put_pool("bb", &spec).await.unwrap();
    wait_ready(&c, "bb", 2).await;
    c.remove_pool("bb").await.unwrap();
    for _ in 0..100 {
        let left = c.list().await.unwrap();
        if !left.iter().any(|i| i.name.starts_with("pool--")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names = listed(&c).await;
    assert!(!names.iter().any(|n| n.starts_with("pool--")), "{names:?}");
    for n in ["job-1", "job-2"] {
        c.remove(n).await.unwrap();
    }
    // Microvm pools are refused (a claim could not rename a microVM's hostname yet).
    let mut vm = spec.clone();
    vm.template.isolation = Some(microsandbox_client::api::Isolation::Microvm);
    assert!(c.put_pool("vm", &vm).await.is_err());
}
