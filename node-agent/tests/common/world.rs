//! A closed network world for policy tests, made of namespaces this test creates:
//!
//! ```text
//!   sandbox netns --veth-- [U: uplink netns]  192.0.2.1 --veth-- 192.0.2.2 [H: test hosts]
//!                           agent's nftables                     203.0.113.10  "public"
//!                           echo servers (the "host")            10.77.0.10    "private"
//!                                                                100.64.0.10   CGNAT
//!                                                                169.254.169.254 metadata
//!                                                                203.0.113.53  DNS server
//! ```
//!
//! U's only route is to H and H has no route anywhere else: whatever a policy lets through can
//! only reach a test host. Every host runs TCP and UDP echo on port 7 (and answers ping); U runs
//! the same echo servers, standing in for the node's own services.
#![allow(dead_code)]

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{rdata::A, RData, Record};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;

pub const PUBLIC: &str = "203.0.113.10";
pub const PRIVATE: &str = "10.77.0.10";
pub const CGNAT: &str = "100.64.0.10";
pub const METADATA: &str = "169.254.169.254";
pub const DNS: &str = "203.0.113.53";
/// HTTPS servers for secret tests: the API a secret is for, and one it is not for.
pub const API: &str = "203.0.113.20";
pub const EVIL: &str = "203.0.113.30";
/// U's address toward H: an address of "the host".
pub const HOST: &str = "192.0.2.1";
const H_ADDR: &str = "192.0.2.2";
pub const ECHO_PORT: u16 = 7;

/// Names the test DNS server knows.
pub const RECORDS: &[(&str, &str)] = &[
    ("public.test.", PUBLIC),
    ("private.test.", PRIVATE),
    ("metadata.test.", METADATA),
    ("rebind.test.", "127.0.0.1"),
    ("api.allowed.test.", PRIVATE),
    ("api.secret.test.", API),
    ("evil.test.", EVIL),
];

pub struct World {
    /// Uplink namespace name (for `--uplink-netns`).
    pub uplink: String,
    hosts: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a new thread inside namespace `ns` (it keeps running there).
fn spawn_in(ns: &str, f: impl FnOnce() + Send + 'static) {
    let path = format!("/run/netns/{ns}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns");
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        tx.send(()).unwrap();
        f();
    });
    rx.recv().unwrap();
}

/// TCP echo on every address of `ns`, UDP echo on each of `udp_addrs` (bound one by one: a
/// reply must come from the address the request went to, or conntrack does not match it).
fn echo_servers(ns: &str, udp_addrs: &[&str]) {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in(ns, move || {
        let l = TcpListener::bind(("0.0.0.0", ECHO_PORT)).expect("tcp echo");
        tx.send(()).unwrap();
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut c = conn;
                let mut buf = [0u8; 1024];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    rx.recv().unwrap();
    for addr in udp_addrs {
        let addr = addr.to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        spawn_in(ns, move || {
            let s = UdpSocket::bind((addr.as_str(), ECHO_PORT)).expect("udp echo");
            tx.send(()).unwrap();
            let mut buf = [0u8; 1024];
            while let Ok((n, peer)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], peer);
            }
        });
        rx.recv().unwrap();
    }
}

fn dns_server(ns: &str) {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in(ns, move || {
        let s = UdpSocket::bind((DNS, 53)).expect("dns");
        tx.send(()).unwrap();
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = s.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::new();
            r.set_id(q.id());
            r.set_message_type(MessageType::Response);
            r.set_recursion_available(true);
            r.set_recursion_desired(q.recursion_desired());
            r.add_queries(q.queries().to_vec());
            let name = q
                .queries()
                .first()
                .map(|q| q.name().to_ascii())
                .unwrap_or_default();
            let is_a = q
                .queries()
                .first()
                .is_some_and(|q| q.query_type() == hickory_proto::rr::RecordType::A);
            match RECORDS.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                Some((_, addr)) if is_a => {
                    let ip: Ipv4Addr = addr.parse().unwrap();
                    r.add_answer(Record::from_rdata(
                        q.queries()[0].name().clone(),
                        30,
                        RData::A(A(ip)),
                    ));
                }
                Some(_) => {}
                None => {
                    r.set_response_code(ResponseCode::NXDomain);
                }
            }
            let _ = s.send_to(&r.to_vec().unwrap(), peer);
        }
    });
    rx.recv().unwrap();
}

impl World {
    pub fn new() -> Self {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        // Tests of one process run in parallel: every world has names of its own.
        let id = format!(
            "{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let w = World {
            uplink: format!("msbt-u-{id}"),
            hosts: format!("msbt-h-{id}"),
        };
        // Interface names must not start with "msb": that prefix is the agent's sandbox links.
        let (u_if, h_if) = (format!("wu{id}"), format!("wh{id}"));
        ip(&["netns", "add", &w.uplink]);
        ip(&["netns", "add", &w.hosts]);
        ip(&[
            "-n", &w.uplink, "link", "add", &u_if, "type", "veth", "peer", "name", &h_if, "netns",
            &w.hosts,
        ]);
        ip(&["-n", &w.uplink, "link", "set", "lo", "up"]);
        ip(&["-n", &w.hosts, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &w.uplink,
            "addr",
            "add",
            &format!("{HOST}/24"),
            "dev",
            &u_if,
        ]);
        ip(&[
            "-n",
            &w.hosts,
            "addr",
            "add",
            &format!("{H_ADDR}/24"),
            "dev",
            &h_if,
        ]);
        ip(&["-n", &w.uplink, "link", "set", &u_if, "up"]);
        ip(&["-n", &w.hosts, "link", "set", &h_if, "up"]);
        for host in [PUBLIC, PRIVATE, CGNAT, METADATA, DNS, API, EVIL] {
            ip(&[
                "-n",
                &w.hosts,
                "addr",
                "add",
                &format!("{host}/32"),
                "dev",
                "lo",
            ]);
        }
        ip(&["-n", &w.uplink, "route", "add", "default", "via", H_ADDR]);
        echo_servers(&w.hosts, &[PUBLIC, PRIVATE, CGNAT, METADATA]);
        echo_servers(&w.uplink, &["0.0.0.0"]);
        dns_server(&w.hosts);
        w
    }

    /// Agent arguments that put sandbox uplinks into this world.
    pub fn agent_args(&self) -> Vec<String> {
        vec![
            "--uplink-netns".into(),
            self.uplink.clone(),
            "--dns-upstream".into(),
            format!("{DNS}:53"),
        ]
    }

    /// Sandbox links still in the uplink namespace, and nftables chains of sandboxes.
    pub fn leftovers(&self) -> Vec<String> {
        let links = Command::new("ip")
            .args(["-n", &self.uplink, "-o", "link", "show"])
            .output()
            .unwrap();
        let mut left: Vec<String> = String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(|s| s.trim().to_string()))
            .filter(|n| n.starts_with("msb"))
            .collect();
        let rules = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.uplink,
                "nft",
                "list",
                "table",
                "inet",
                "microsandbox",
            ])
            .output()
            .unwrap();
        left.extend(
            String::from_utf8_lossy(&rules.stdout)
                .lines()
                .filter(|l| l.trim_start().starts_with("chain sbx_"))
                .map(|l| l.trim().to_string()),
        );
        left
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Deleting the namespaces removes their interfaces; the server threads' sockets go with
        // the process.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.uplink])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.hosts])
            .output();
    }
}

/// Requests a test server received (head, then the body if it declared a length), one string
/// per request.
pub type Seen = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

fn read_head(c: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
        match c.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let length = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length.min(1 << 20)];
    if c.read_exact(&mut body).is_err() {
        body.clear();
    }
    text + &String::from_utf8_lossy(&body)
}

impl World {
    /// An HTTPS server on `addr:443` in the hosts namespace with a certificate for `name`
    /// signed by `ca`; answers `200 ok` and records each request head.
    pub fn https_server(
        &self,
        addr: &str,
        name: &str,
        ca: &microsandbox_agent::network::secrets::SandboxCa,
    ) -> Seen {
        use openssl::ssl::{SslAcceptor, SslMethod};
        let (cert, key) = ca.leaf(name).unwrap();
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
        b.set_certificate(&cert).unwrap();
        b.set_private_key(&key).unwrap();
        let acceptor = std::sync::Arc::new(b.build());
        let seen: Seen = Default::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let (addr, record) = (addr.to_string(), seen.clone());
        spawn_in(&self.hosts, move || {
            let l = TcpListener::bind((addr.as_str(), 443)).expect("https");
            tx.send(()).unwrap();
            for conn in l.incoming().flatten() {
                let (acceptor, record) = (acceptor.clone(), record.clone());
                std::thread::spawn(move || {
                    let Ok(mut tls) = acceptor.accept(conn) else {
                        return;
                    };
                    let head = read_head(&mut tls);
                    record.lock().unwrap().push(head);
                    let _ = tls.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                    let _ = tls.shutdown();
                });
            }
        });
        rx.recv().unwrap();
        seen
    }

    /// A UDP socket on `addr:port` in the hosts namespace recording each datagram's text (it
    /// answers nothing: what arrives is seen whether or not a reply could find its way back).
    pub fn udp_sink(&self, addr: &str, port: u16) -> Seen {
        let seen: Seen = Default::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let (addr, record) = (addr.to_string(), seen.clone());
        spawn_in(&self.hosts, move || {
            let s = UdpSocket::bind((addr.as_str(), port)).expect("udp sink");
            tx.send(()).unwrap();
            let mut buf = [0u8; 1500];
            while let Ok(n) = s.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                record.lock().unwrap().push(text);
            }
        });
        rx.recv().unwrap();
        seen
    }

    /// A plain HTTP server on `addr:80` in the hosts namespace recording request heads.
    pub fn http_server(&self, addr: &str) -> Seen {
        let seen: Seen = Default::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let (addr, record) = (addr.to_string(), seen.clone());
        spawn_in(&self.hosts, move || {
            let l = TcpListener::bind((addr.as_str(), 80)).expect("http");
            tx.send(()).unwrap();
            for mut conn in l.incoming().flatten() {
                let head = read_head(&mut conn);
                record.lock().unwrap().push(head);
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        rx.recv().unwrap();
        seen
    }
}

/// Where a probe goes.
pub fn target(addr: &str) -> SocketAddr {
    SocketAddr::new(addr.parse().unwrap(), ECHO_PORT)
}
