//! From inside: reconnaissance and escape tooling run in a sandbox as its root, under every network
//! policy and every isolation this node offers, and what was tried and what held printed as a
//! table (the README's security section has it).
//!
//! Tools nobody on the team wrote, built from the Go module proxy by `scripts/escape-tools.sh`:
//! kdigger (Quarkslab's Kubernetes pentest context discovery) and amicontained (which calls every
//! syscall to find the blocked ones). Then our own list of classic breakouts, each a shell line
//! that exits 0 only if it got through: mounts, the cgroup `release_agent`, user namespaces, module
//! loading, `/proc/sys` and `/sys` writes, sysrq, kcore, kmsg, device nodes, host processes, the
//! agent's token and socket, the node and the metadata address.

mod common;
#[path = "common/world.rs"]
mod world;

use common::*;
use microsandbox_client::api::{CreateSandbox, Isolation};
use microsandbox_client::AgentClient;
use std::collections::BTreeMap;
use std::path::PathBuf;
use world::*;

/// (id, what it tries, a shell line that exits 0 only if the attempt got through).
const ATTEMPTS: &[(&str, &str, &str)] = &[
    ("mount-tmpfs", "mount a file system", "mount -t tmpfs t /mnt"),
    ("mount-proc", "mount a second procfs", "mkdir -p /tmp/p && mount -t proc p /tmp/p"),
    (
        "cgroup-release-agent",
        "cgroup v1 release_agent (CVE-2022-0492)",
        "mkdir -p /tmp/cg && mount -t cgroup -o rdma cgroup /tmp/cg || \
         { for f in /sys/fs/cgroup/*/release_agent /sys/fs/cgroup/release_agent; do \
           [ -e \"$f\" ] && echo /tmp/x > \"$f\" && exit 0; done; exit 1; }",
    ),
    (
        "cgroup-write",
        "create a cgroup / move into another",
        "mkdir /sys/fs/cgroup/escape || echo 1 > /sys/fs/cgroup/cgroup.procs",
    ),
    ("userns", "create a user namespace", "unshare -U -r true"),
    ("netns", "create a network namespace", "unshare -n true"),
    (
        "module-load",
        "load a kernel module",
        "printf '\\177ELF' > /tmp/m.ko && insmod /tmp/m.ko 2>&1 | grep -qv 'Operation not permitted'",
    ),
    (
        "proc-sys-write",
        "write a sysctl",
        "echo escape > /proc/sys/kernel/hostname",
    ),
    (
        "core-pattern",
        "core_pattern pipe to a host program",
        "echo '|/tmp/x' > /proc/sys/kernel/core_pattern",
    ),
    ("sysrq", "sysrq trigger", "echo h > /proc/sysrq-trigger"),
    ("kcore", "read kernel memory", "head -c 16 /proc/kcore > /dev/null"),
    ("kmsg", "read the kernel log", "head -c 1 /dev/kmsg > /dev/null || dmesg > /dev/null"),
    (
        "sys-write",
        "write sysfs (uevent_helper)",
        "echo /tmp/x > /sys/kernel/uevent_helper || touch /sys/escape",
    ),
    (
        "mknod-disk",
        "make and read a disk device node",
        "mknod /tmp/sda b 8 0 && head -c 512 /tmp/sda > /dev/null",
    ),
    (
        "host-devices",
        "host disks, /dev/kvm, /dev/mem",
        "ls /dev/sda /dev/vda /dev/nvme0n1 /dev/kvm /dev/mem /dev/port 2>/dev/null | grep -q .",
    ),
    (
        "host-processes",
        "see the agent or any host process",
        // (`[a]` so that the search's own command line does not match.)
        "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done 2>/dev/null | \
         grep -q -e 'microsandbox-[a]gent' -e '[k]ubelet' -e '[s]ystemd' -e '[c]ontainerd'",
    ),
    (
        "agent-socket",
        "find the agent's socket or token",
        "find / -xdev \\( -name agent.sock -o -name agent.token -o -name 'guest.sock' \\) \
         2>/dev/null | grep -q .",
    ),
    (
        "k8s-token",
        "a Kubernetes service account token",
        "ls /var/run/secrets/kubernetes.io/serviceaccount/token 2>/dev/null || \
         env | grep -q KUBERNETES_SERVICE",
    ),
    (
        "node-tcp",
        "connect to the node (the uplink's echo)",
        "nc -w 1 192.0.2.1 7 < /dev/null",
    ),
    (
        "metadata",
        "the cloud metadata address",
        "nc -w 1 169.254.169.254 7 < /dev/null",
    ),
    (
        "raw-socket",
        "open a raw socket (spoofing)",
        "arping -c 1 -w 1 -I eth0 192.0.2.1 2>&1 | grep -q 'Received [1-9]'",
    ),
];

/// Syscalls amicontained must report blocked (a subset of the filter's list that it probes).
const MUST_BLOCK: &[&str] = &[
    "BPF",
    "PERF_EVENT_OPEN",
    "KEXEC_LOAD",
    "INIT_MODULE",
    "FINIT_MODULE",
    "DELETE_MODULE",
    "KEYCTL",
    "ADD_KEY",
    "MOUNT",
    "UMOUNT2",
    "UNSHARE",
    "SETNS",
    "PTRACE",
    "OPEN_BY_HANDLE_AT",
    "IOPL",
    "IOPERM",
    "SWAPON",
    "REBOOT",
];

/// The rows the tools and the token search add to the report.
const TOOL_ROWS: &[(&str, &str)] = &[
    (
        "amicontained-seccomp",
        "amicontained calls every syscall: the filter's list is blocked",
    ),
    ("kdigger-token", "kdigger: a service account token"),
    (
        "kdigger-pidns",
        "kdigger: the host PID namespace (kubelet visible)",
    ),
    ("kdigger-metadata", "kdigger: cloud metadata endpoints"),
    (
        "agent-token",
        "the agent's API token anywhere in the file system or environment",
    ),
];

/// What a policy lets through on purpose: `allow_all` reaches private and link-local addresses,
/// the metadata address among them (the network test's matrix asserts exactly that).
fn by_design(id: &str, policy: &str) -> bool {
    policy == "allow_all" && id == "metadata"
}

/// One cell of the report.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Held,
    /// Let through on purpose by the policy (see [`by_design`]).
    Open,
    GotThrough(String),
}

impl Verdict {
    fn of(got_through: bool, why: String) -> Self {
        if got_through {
            Verdict::GotThrough(why)
        } else {
            Verdict::Held
        }
    }
}

fn tools() -> PathBuf {
    let out = std::process::Command::new("bash")
        .arg(workspace().join("scripts/escape-tools.sh"))
        .output()
        .expect("run scripts/escape-tools.sh");
    assert!(
        out.status.success(),
        "scripts/escape-tools.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn request(name: &str, isolation: Isolation, network: serde_json::Value) -> CreateSandbox {
    serde_json::from_value(serde_json::json!({
        "name": name, "image": "busybox", "detached": true, "isolation": isolation,
        "memory_mib": 256, "network": network,
    }))
    .unwrap()
}

/// Runs every attempt; `true` per id when it got through.
async fn attempt_all(c: &AgentClient, name: &str) -> BTreeMap<&'static str, (bool, String)> {
    let mut out = BTreeMap::new();
    for (id, _, line) in ATTEMPTS {
        let o = sh(c, name, &format!("( {line} ) 2>&1; echo \"rc=$?\"")).await;
        let text = o.stdout_str().to_string();
        let rc = text
            .lines()
            .last()
            .and_then(|l| l.strip_prefix("rc="))
            .unwrap_or_else(|| panic!("{id}: no exit status in {text:?}"));
        // 127: the probe's tool is missing; it proves nothing.
        assert_ne!(rc, "127", "{id}: the probe cannot run: {text}");
        let why = text.lines().rev().nth(1).unwrap_or("").trim().to_string();
        out.insert(*id, (rc == "0", why));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_and_recon_tooling_from_inside_is_held() {
    let tools = tools();
    let world = World::new();
    let args = world.agent_args();
    let agent = TestAgent::start_with(
        "escape",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let c = agent.client();
    let offered = c.info().await.unwrap().isolation;
    if !offered.contains(&Isolation::Microvm) {
        eprintln!(
            "SKIP escape tooling in a microVM: this node offers {offered:?} \
             (`microsandbox-agent doctor` says why)"
        );
    }
    let policies = [
        ("none", serde_json::json!({"policy": "none"})),
        ("public_only", serde_json::json!({"policy": "public_only"})),
        ("allow_all", serde_json::json!({"policy": "allow_all"})),
    ];
    let token = std::fs::read_to_string(agent.state.join("agent.token"))
        .unwrap()
        .trim()
        .to_string();
    let mut table: BTreeMap<(&str, String), Verdict> = BTreeMap::new();
    let mut broke = Vec::new();
    for isolation in offered {
        for (policy, network) in &policies {
            let column = format!("{isolation:?}/{policy}").to_lowercase();
            let name = format!("esc-{policy}").replace('_', "-");
            c.create(request(&name, isolation, network.clone()))
                .await
                .unwrap_or_else(|e| panic!("create {column}: {e}"));
            sh(&c, &name, "mkdir -p /opt/tools").await;
            for tool in ["kdigger", "amicontained"] {
                c.fs_write_from_file(&name, tools.join(tool), &format!("/opt/tools/{tool}"))
                    .await
                    .unwrap();
            }
            sh(&c, &name, "chmod 755 /opt/tools/*").await;

            for (id, (got_through, why)) in attempt_all(&c, &name).await {
                if got_through && by_design(id, policy) {
                    table.insert((id, column.clone()), Verdict::Open);
                    continue;
                }
                if got_through {
                    broke.push(format!("{column}: {id}: {why}"));
                }
                table.insert((id, column.clone()), Verdict::of(got_through, why));
            }

            // amicontained: calls every syscall; what the filter refuses must come back EPERM.
            let mut req = cmd("/opt/tools/amicontained", &[]);
            req.timeout_ms = Some(120_000);
            let ami = c.exec(&name, req).await.unwrap();
            let report = ami.stdout_str().to_string();
            assert!(
                report.contains("Seccomp: filtering"),
                "amicontained:\n{report}"
            );
            let blocked: Vec<&str> = report
                .split_once("Blocked Syscalls")
                .and_then(|(_, rest)| rest.lines().nth(1))
                .map(|l| l.split_whitespace().collect())
                .unwrap_or_default();
            let missing: Vec<&&str> = MUST_BLOCK.iter().filter(|s| !blocked.contains(s)).collect();
            if !missing.is_empty() {
                broke.push(format!("{column}: amicontained found allowed: {missing:?}"));
            }
            let caps = report
                .lines()
                .skip_while(|l| !l.starts_with("Capabilities:"))
                .nth(1)
                .unwrap_or_default()
                .to_lowercase();
            for dangerous in [
                "sys_admin",
                "sys_module",
                "sys_ptrace",
                "net_admin",
                "sys_rawio",
                "mknod",
                "net_raw",
                "dac_read_search",
                "bpf",
            ] {
                if caps.split_whitespace().any(|c| c == dangerous) {
                    broke.push(format!("{column}: capability {dangerous}"));
                }
            }
            table.insert(
                ("amicontained-seccomp", column.clone()),
                Verdict::of(!missing.is_empty(), format!("allowed: {missing:?}")),
            );

            // kdigger: every bucket that needs no cluster client.
            let mut req = cmd(
                "/opt/tools/kdigger",
                &[
                    "dig",
                    "capabilities",
                    "devices",
                    "mount",
                    "cgroups",
                    "containerdetect",
                    "node",
                    "usernamespace",
                    "pidnamespace",
                    "processes",
                    "syscalls",
                    "token",
                    "cloudmetadata",
                    "environment",
                    "runtime",
                    "userid",
                    "--side-effects",
                    "-o",
                    "json",
                ],
            );
            req.timeout_ms = Some(120_000);
            let dig = c.exec(&name, req).await.unwrap();
            let buckets: BTreeMap<String, serde_json::Value> = dig
                .stdout_str()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| Some((v["bucket"].as_str()?.to_string(), v)))
                .collect();
            assert!(
                buckets.len() >= 10,
                "kdigger answered {} buckets: {}{}",
                buckets.len(),
                dig.stdout_str(),
                dig.stderr_str()
            );
            let text = |b: &str| buckets.get(b).map(|v| v.to_string()).unwrap_or_default();
            // MSB_ESCAPE_VERBOSE=1: the tools' whole reports.
            if std::env::var_os("MSB_ESCAPE_VERBOSE").is_some() {
                eprintln!("{column}: amicontained:\n{report}");
                for (b, v) in &buckets {
                    eprintln!("{column}: kdigger {b}: {v}");
                }
            }
            for (id, got_through) in [
                (
                    "kdigger-token",
                    !text("token").contains("No service account token"),
                ),
                (
                    "kdigger-pidns",
                    text("pidnamespace").contains("\"kubeletFound\":true"),
                ),
                (
                    "kdigger-metadata",
                    !by_design("metadata", policy)
                        && text("cloudmetadata").contains("\"success\":true"),
                ),
            ] {
                if got_through {
                    broke.push(format!(
                        "{column}: {id}: {}",
                        text(id.trim_start_matches("kdigger-"))
                    ));
                }
                table.insert(
                    (id, column.clone()),
                    Verdict::of(got_through, String::new()),
                );
            }

            // The agent's token is nowhere inside (searched for with a positive control).
            let search = format!(
                "T={token:?}; D=$(ls -d /* | grep -vxE '/(proc|sys|dev)'); \
                 grep -rqsF -- \"$T\" $D && echo FOUND-TOKEN; \
                 cat /proc/[0-9]*/environ | grep -qF -- \"$T\" && echo FOUND-IN-PROC; \
                 grep -rqsF -- 'kdigger' /opt/tools && echo CONTROL; true"
            );
            let found = sh(&c, &name, &search).await.stdout_str().trim().to_string();
            table.insert(
                ("agent-token", column.clone()),
                Verdict::of(found != "CONTROL", found.clone()),
            );
            if found != "CONTROL" {
                broke.push(format!("{column}: agent token search: {found}"));
            }
            c.remove(&name).await.unwrap();
        }
    }

    // The table: what was tried, and under which isolation/policy it held.
    let columns: Vec<String> = {
        let mut v: Vec<String> = table.keys().map(|(_, c)| c.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    eprintln!("escape: | attempt | {} |", columns.join(" | "));
    let mut rows: Vec<&str> = table.keys().map(|(id, _)| *id).collect();
    rows.dedup();
    let (mut tried, mut held) = (0, 0);
    for id in rows {
        let cells: Vec<&str> = columns
            .iter()
            .map(|col| match table.get(&(id, col.clone())) {
                Some(Verdict::Held) => {
                    held += 1;
                    tried += 1;
                    "held"
                }
                Some(Verdict::GotThrough(_)) => {
                    tried += 1;
                    "GOT THROUGH"
                }
                Some(Verdict::Open) => "open by policy",
                None => "-",
            })
            .collect();
        let what = ATTEMPTS
            .iter()
            .map(|(id, what, _)| (id, what))
            .chain(TOOL_ROWS.iter().map(|(id, what)| (id, what)))
            .find(|(row, _)| **row == id)
            .map_or("", |(_, what)| *what);
        eprintln!("escape: | {what} (`{id}`) | {} |", cells.join(" | "));
    }
    eprintln!("escape: {held}/{tried} held");
    assert!(broke.is_empty(), "got through:\n{}", broke.join("\n"));
    assert_eq!(world.leftovers(), Vec::<String>::new());
}
