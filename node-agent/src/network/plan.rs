//! What a sandbox's network looks like, as data: its addresses, interface names, the parsed
//! allowlist, which destinations `public_only` refuses, and the nftables rules that enforce the
//! policy. Pure, so every decision here is unit-tested; [`super::host`] applies it.

use ipnet::Ipv4Net;
use microsandbox_wire::api::{NetworkPolicy, NetworkSpec};
use std::net::Ipv4Addr;

/// Name of the nftables table (family `inet`) the agent owns in the uplink namespace.
pub const TABLE: &str = "microsandbox";
/// Prefix of the host-side interface of every sandbox (`msb<index hex>`).
pub const HOST_IF_PREFIX: &str = "msb";
/// Gateway ports of the egress proxy of sandboxes with secrets (HTTPS, HTTP).
pub const PROXY_HTTPS_PORT: u16 = 15443;
pub const PROXY_HTTP_PORT: u16 = 15080;

/// IPv4 ranges `public_only` never lets a sandbox reach (RFC 6890 special-purpose space minus
/// the documentation ranges, which are not routed anyway): "this network", private, CGNAT,
/// loopback, link-local (incl. the 169.254.169.254 metadata service), IETF protocol
/// assignments, benchmarking, multicast, reserved and broadcast.
pub const NON_PUBLIC_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// Why a network spec cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "network.allow[{index}] {entry:?} is neither a CIDR, an IPv4 address nor a domain name"
    )]
    BadAllow { index: usize, entry: String },
    #[error("network.allow[{index}] {entry:?}: IPv6 is not supported (sandboxes have IPv4 only)")]
    Ipv6 { index: usize, entry: String },
    #[error("network.publish: host port {0} is published twice")]
    DuplicatePort(u16),
    #[error("network.publish: port 0 is not a port")]
    PortZero,
    #[error("too many allow entries ({0}, at most 64)")]
    TooMany(usize),
}

/// The allowlist, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allow {
    pub cidrs: Vec<Ipv4Net>,
    /// Lower-case names; `*.example.com` is stored as `.example.com` (any subdomain).
    pub domains: Vec<String>,
}

impl Allow {
    /// Whether it names domains (whose resolved addresses the sandbox's DNS set holds).
    pub fn has_domains(&self) -> bool {
        !self.domains.is_empty()
    }

    /// Parse and check `spec` (allow entries and published ports).
    pub fn parse(spec: &NetworkSpec) -> Result<Self, PlanError> {
        if spec.allow.len() > 64 {
            return Err(PlanError::TooMany(spec.allow.len()));
        }
        let mut out = Allow::default();
        for (index, raw) in spec.allow.iter().enumerate() {
            let entry = raw.trim();
            let bad = || PlanError::BadAllow {
                index,
                entry: raw.clone(),
            };
            if entry.parse::<ipnet::Ipv6Net>().is_ok()
                || entry.parse::<std::net::Ipv6Addr>().is_ok()
            {
                return Err(PlanError::Ipv6 {
                    index,
                    entry: raw.clone(),
                });
            }
            if let Ok(net) = entry.parse::<Ipv4Net>() {
                out.cidrs.push(net.trunc());
            } else if let Ok(ip) = entry.parse::<Ipv4Addr>() {
                out.cidrs.push(Ipv4Net::from(ip));
            } else if let Some(rest) = entry.strip_prefix("*.") {
                if !is_domain(rest) {
                    return Err(bad());
                }
                out.domains.push(format!(".{}", rest.to_ascii_lowercase()));
            } else if is_domain(entry) && !entry.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                out.domains
                    .push(entry.trim_end_matches('.').to_ascii_lowercase());
            } else {
                return Err(bad());
            }
        }
        let mut ports = std::collections::BTreeSet::new();
        for p in &spec.publish {
            if p.host_port == 0 || p.guest_port == 0 {
                return Err(PlanError::PortZero);
            }
            if !ports.insert(p.host_port) {
                return Err(PlanError::DuplicatePort(p.host_port));
            }
        }
        Ok(out)
    }

    /// Whether DNS name `name` is on the list (exact, or below a `*.` entry).
    pub fn allows_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.domains.iter().any(|d| match d.strip_prefix('.') {
            Some(parent) => name.ends_with(d.as_str()) && name.len() > parent.len() + 1,
            None => *d == name,
        })
    }
}

/// Whether `name` is a plausible DNS name (labels of letters, digits and `-`, at most 253).
fn is_domain(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Ranges `public_only` refuses on this node: [`NON_PUBLIC_V4`] plus `extra` (cluster pod and
/// service CIDRs, the node's own networks).
pub fn blocked_ranges(extra: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let mut v: Vec<Ipv4Net> = NON_PUBLIC_V4
        .iter()
        .map(|s| s.parse().expect("constant CIDR"))
        .collect();
    v.extend(extra.iter().map(Ipv4Net::trunc));
    Ipv4Net::aggregate(&v)
}

/// Whether `public_only` refuses `ip`.
pub fn is_blocked(ip: Ipv4Addr, blocked: &[Ipv4Net]) -> bool {
    blocked.iter().any(|n| n.contains(&ip))
}

/// Addresses and names of sandbox number `index` in pool `pool`: a /30 per sandbox, the host
/// side (gateway, DNS) on its first address, the sandbox on the second.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Addressing {
    pub index: u32,
    pub gateway: Ipv4Addr,
    pub sandbox: Ipv4Addr,
    /// Interface on the host (uplink) side.
    pub host_if: String,
}

impl Addressing {
    /// `None` when `index` does not fit in `pool`.
    pub fn new(pool: Ipv4Net, index: u32) -> Option<Self> {
        let base = u32::from(pool.network()).checked_add(index.checked_mul(4)?)?;
        let net = Ipv4Net::new(Ipv4Addr::from(base), 30).ok()?;
        if !pool.contains(&net) {
            return None;
        }
        Some(Self {
            index,
            gateway: Ipv4Addr::from(base + 1),
            sandbox: Ipv4Addr::from(base + 2),
            host_if: format!("{HOST_IF_PREFIX}{index:x}"),
        })
    }

    /// How many sandboxes `pool` holds.
    pub fn capacity(pool: Ipv4Net) -> u32 {
        let bits = 32 - u32::from(pool.prefix_len());
        if bits >= 32 {
            u32::MAX / 4
        } else {
            (1u32 << bits) / 4
        }
    }

    /// Chain and set names of this sandbox in [`TABLE`].
    pub fn chain(&self) -> String {
        format!("sbx_{:x}", self.index)
    }
    pub fn dns_set(&self) -> String {
        format!("dns_{:x}", self.index)
    }
    pub fn nat_chain(&self) -> String {
        format!("nat_{:x}", self.index)
    }
}

fn set_elements(nets: &[Ipv4Net]) -> String {
    nets.iter()
        .map(Ipv4Net::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Chain of the table that applies `policy` to sandboxes without allow entries of their own
/// (most of them): they share it, so a create adds two elements to the table and no chain.
pub fn policy_chain(policy: NetworkPolicy) -> &'static str {
    match policy {
        NetworkPolicy::None => "policy_none",
        NetworkPolicy::PublicOnly => "policy_public_only",
        NetworkPolicy::AllowAll => "policy_allow_all",
    }
}

/// Whether a sandbox with this allowlist needs a chain of its own (its allowed CIDRs and the
/// addresses its allowed names resolve to come before the policy).
pub fn needs_own_chain(allow: &Allow) -> bool {
    !allow.cidrs.is_empty() || allow.has_domains()
}

/// The agent's table, created at start (an `nft -f` script): the `blocked` set, the `sources`
/// set (host interface . the sandbox address behind it), the `sandboxes` verdict map (host
/// interface -> that sandbox's chain, or the shared chain of its policy), the shared policy
/// chains and the base chains. The base and policy chains are flushed and refilled, so a
/// restart changes no sandbox's own chain.
///
/// Every `nft` call loads the table's chains before it runs, so a chain per sandbox made each
/// create cost more the more sandboxes ran; sandboxes without allow entries share a chain.
///
/// - forward: a packet from a sandbox interface must be IPv4 from the address of that
///   sandbox (`sources`; checked before conntrack, so a spoofed packet cannot ride another
///   sandbox's connection); replies pass; then the sandbox's chain decides; nothing else may
///   open a connection *to* a sandbox (published ports go through the agent).
/// - input: a sandbox reaches the host only for DNS (and, with secrets, the egress proxy) on
///   its own gateway: an address of the interface the packet came in on (`fib daddr . iif`),
///   never another sandbox's gateway, whose resolver and proxy apply that sandbox's policy.
/// - postrouting: sandbox traffic leaving through another interface is masqueraded.
pub fn base_ruleset(pool: Ipv4Net, blocked: &[Ipv4Net]) -> String {
    format!(
        "add table inet {TABLE}
add set inet {TABLE} blocked {{ type ipv4_addr; flags interval; }}
flush set inet {TABLE} blocked
add element inet {TABLE} blocked {{ {blocked} }}
add set inet {TABLE} sources {{ type ifname . ipv4_addr; }}
add chain inet {TABLE} policy_none
flush chain inet {TABLE} policy_none
add rule inet {TABLE} policy_none drop
add chain inet {TABLE} policy_public_only
flush chain inet {TABLE} policy_public_only
add rule inet {TABLE} policy_public_only ip daddr @blocked drop
add rule inet {TABLE} policy_public_only accept
add chain inet {TABLE} policy_allow_all
flush chain inet {TABLE} policy_allow_all
add rule inet {TABLE} policy_allow_all accept
add map inet {TABLE} sandboxes {{ type ifname : verdict; }}
add chain inet {TABLE} forward {{ type filter hook forward priority 0; policy accept; }}
flush chain inet {TABLE} forward
add rule inet {TABLE} forward iifname \"{HOST_IF_PREFIX}*\" meta nfproto != ipv4 drop
add rule inet {TABLE} forward iifname \"{HOST_IF_PREFIX}*\" iifname . ip saddr != @sources drop
add rule inet {TABLE} forward ct state established,related accept
add rule inet {TABLE} forward iifname vmap @sandboxes
add rule inet {TABLE} forward iifname \"{HOST_IF_PREFIX}*\" drop
add rule inet {TABLE} forward oifname \"{HOST_IF_PREFIX}*\" drop
add chain inet {TABLE} input {{ type filter hook input priority 0; policy accept; }}
flush chain inet {TABLE} input
add rule inet {TABLE} input iifname \"{HOST_IF_PREFIX}*\" ct state established,related accept
add rule inet {TABLE} input iifname \"{HOST_IF_PREFIX}*\" meta l4proto {{ udp, tcp }} th dport 53 fib daddr . iif type local accept
add rule inet {TABLE} input iifname \"{HOST_IF_PREFIX}*\" tcp dport {{ {PROXY_HTTP_PORT}, {PROXY_HTTPS_PORT} }} fib daddr . iif type local accept
add rule inet {TABLE} input iifname \"{HOST_IF_PREFIX}*\" drop
add map inet {TABLE} intercept {{ type ifname : verdict; }}
add chain inet {TABLE} prerouting {{ type nat hook prerouting priority -100; policy accept; }}
flush chain inet {TABLE} prerouting
add rule inet {TABLE} prerouting iifname vmap @intercept
add chain inet {TABLE} postrouting {{ type nat hook postrouting priority 100; policy accept; }}
flush chain inet {TABLE} postrouting
add rule inet {TABLE} postrouting ip saddr {pool} oifname != \"{HOST_IF_PREFIX}*\" masquerade
",
        blocked = set_elements(blocked),
    )
}

/// The rules of one sandbox (an `nft -f` script): its element of `sources`, its entry in the
/// verdict map and, with allow entries ([`needs_own_chain`]), its own chain (allowed CIDRs
/// inline, as an anonymous set of the rule) and the set of addresses its allowed domains
/// resolve to (each for the answer's TTL; only when it has allowed domains); without, the
/// entry jumps to the shared chain of its policy ([`policy_chain`]).
/// Order in its own chain: anything not from the sandbox's own address (spoofing) or not IPv4
/// is dropped (again: the forward chain checked already); allowed destinations pass; then the
/// policy decides.
///
/// Named sets are what every later `nft` call of the node pays for (it loads the table's sets
/// with their elements before it runs: a set per sandbox made each create and removal cost
/// time proportional to the number of sandboxes), so a sandbox gets one only when it resolves
/// allowed domains.
pub fn sandbox_ruleset(
    a: &Addressing,
    policy: NetworkPolicy,
    allow: &Allow,
    intercept: bool,
) -> String {
    let chain = a.chain();
    let dns_set = a.dns_set();
    let mut s = format!(
        "add element inet {TABLE} sources {{ {} }}\n",
        source_element(a)
    );
    if !needs_own_chain(allow) {
        s.push_str(&format!(
            "add element inet {TABLE} sandboxes {{ \"{}\" : jump {} }}\n",
            a.host_if,
            policy_chain(policy)
        ));
        s.push_str(&intercept_rules(a, intercept));
        return s;
    }
    if allow.has_domains() {
        s.push_str(&format!(
            "add set inet {TABLE} {dns_set} {{ type ipv4_addr; flags timeout; }}
flush set inet {TABLE} {dns_set}
"
        ));
    }
    s.push_str(&format!(
        "add chain inet {TABLE} {chain}
flush chain inet {TABLE} {chain}
add rule inet {TABLE} {chain} meta nfproto != ipv4 drop
add rule inet {TABLE} {chain} ip saddr != {sandbox} drop
",
        sandbox = a.sandbox,
    ));
    if !allow.cidrs.is_empty() {
        s.push_str(&format!(
            "add rule inet {TABLE} {chain} ip daddr {{ {} }} accept\n",
            set_elements(&allow.cidrs)
        ));
    }
    if allow.has_domains() {
        s.push_str(&format!(
            "add rule inet {TABLE} {chain} ip daddr @{dns_set} accept\n"
        ));
    }
    s.push_str(&match policy {
        NetworkPolicy::None => format!("add rule inet {TABLE} {chain} drop\n"),
        NetworkPolicy::PublicOnly => format!(
            "add rule inet {TABLE} {chain} ip daddr @blocked drop\nadd rule inet {TABLE} {chain} accept\n"
        ),
        NetworkPolicy::AllowAll => format!("add rule inet {TABLE} {chain} accept\n"),
    });
    s.push_str(&format!(
        "add element inet {TABLE} sandboxes {{ \"{}\" : jump {chain} }}\n",
        a.host_if
    ));
    s.push_str(&intercept_rules(a, intercept));
    s
}

/// `sources` element of sandbox `a`: its host interface . its address.
fn source_element(a: &Addressing) -> String {
    format!("\"{}\" . {}", a.host_if, a.sandbox)
}

/// With `intercept`: HTTP(S) of a sandbox with secrets goes to its egress proxy on the gateway.
fn intercept_rules(a: &Addressing, intercept: bool) -> String {
    let mut s = String::new();
    if intercept {
        let nat = a.nat_chain();
        let gw = a.gateway;
        s.push_str(&format!(
            "add chain inet {TABLE} {nat}
flush chain inet {TABLE} {nat}
add rule inet {TABLE} {nat} ip saddr {sandbox} tcp dport 443 dnat ip to {gw}:{PROXY_HTTPS_PORT}
add rule inet {TABLE} {nat} ip saddr {sandbox} tcp dport 80 dnat ip to {gw}:{PROXY_HTTP_PORT}
add element inet {TABLE} intercept {{ \"{}\" : jump {nat} }}
",
            a.host_if,
            sandbox = a.sandbox,
        ));
    }
    s
}

/// Removes what [`sandbox_ruleset`] added (an `nft -f` script; the map entry first, so no
/// packet jumps to a chain being deleted). `own_chain`: whether it has a chain of its own
/// ([`needs_own_chain`]); `dns_set`: whether it has the set of resolved addresses (it had
/// allowed domains).
pub fn sandbox_teardown(a: &Addressing, intercept: bool, own_chain: bool, dns_set: bool) -> String {
    let mut s = String::new();
    if intercept {
        s.push_str(&format!(
            "delete element inet {TABLE} intercept {{ \"{}\" }}\ndelete chain inet {TABLE} {}\n",
            a.host_if,
            a.nat_chain()
        ));
    }
    s.push_str(&format!(
        "delete element inet {TABLE} sandboxes {{ \"{}\" }}\n",
        a.host_if
    ));
    if own_chain {
        s.push_str(&format!("delete chain inet {TABLE} {}\n", a.chain()));
    }
    if dns_set {
        s.push_str(&format!("delete set inet {TABLE} {}\n", a.dns_set()));
    }
    s.push_str(&format!(
        "delete element inet {TABLE} sources {{ {} }}\n",
        source_element(a)
    ));
    s
}

/// Adds the `sources` elements of sandboxes `kept` (an agent restarted over sandboxes of a
/// version that had none; adding an element that exists changes nothing). `None` for none.
pub fn sources_of(kept: &[&Addressing]) -> Option<String> {
    if kept.is_empty() {
        return None;
    }
    let elements: Vec<String> = kept.iter().map(|a| source_element(a)).collect();
    Some(format!(
        "add element inet {TABLE} sources {{ {} }}\n",
        elements.join(", ")
    ))
}

/// Moves sandbox `a` (no allow entries) from a chain of its own (made by an agent version that
/// gave every sandbox one) to the shared chain of `policy`, in one transaction.
pub fn to_shared_chain(a: &Addressing, policy: NetworkPolicy) -> String {
    format!(
        "delete element inet {TABLE} sandboxes {{ \"{if_}\" }}
add element inet {TABLE} sandboxes {{ \"{if_}\" : jump {shared} }}
delete chain inet {TABLE} {own}
",
        if_ = a.host_if,
        shared = policy_chain(policy),
        own = a.chain(),
    )
}

/// Index of a sandbox's chain or set in [`TABLE`] (`sbx_1f`, `nat_1f`, `dns_1f`); `None` for
/// the table's own objects.
pub fn object_index(name: &str) -> Option<u32> {
    let hex = ["sbx_", "nat_", "dns_"]
        .iter()
        .find_map(|p| name.strip_prefix(p))?;
    u32::from_str_radix(hex, 16).ok()
}

/// Statements that remove every trace of sandbox `a` from [`TABLE`], one at a time so that a
/// sweep removes what exists whatever a crash left out (map elements before the chains they
/// jump to, chains before the set their rules name).
pub fn sandbox_sweep(a: &Addressing) -> Vec<String> {
    vec![
        format!(
            "delete element inet {TABLE} intercept {{ \"{}\" }}",
            a.host_if
        ),
        format!(
            "delete element inet {TABLE} sandboxes {{ \"{}\" }}",
            a.host_if
        ),
        format!("delete chain inet {TABLE} {}", a.nat_chain()),
        format!("delete chain inet {TABLE} {}", a.chain()),
        format!("delete set inet {TABLE} {}", a.dns_set()),
        format!(
            "delete element inet {TABLE} sources {{ {} }}",
            source_element(a)
        ),
    ]
}

/// `/etc/resolv.conf` of a sandbox: the agent's resolver on its gateway.
pub fn resolv_conf(a: &Addressing) -> String {
    format!("# written by microsandbox: DNS goes through the node-agent (policy enforced there)\nnameserver {}\noptions attempts:2 timeout:2\n", a.gateway)
}

#[cfg(test)]
mod tests {
    use super::*;
    use microsandbox_wire::api::PublishPort;

    fn spec(allow: &[&str]) -> NetworkSpec {
        NetworkSpec {
            policy: NetworkPolicy::PublicOnly,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            publish: Vec::new(),
        }
    }

    #[test]
    fn sweep_finds_sandbox_objects_and_removes_each_on_its_own() {
        assert_eq!(object_index("sbx_1f"), Some(0x1f));
        assert_eq!(object_index("dns_0"), Some(0));
        assert_eq!(object_index("nat_a"), Some(10));
        for own in [
            "forward",
            "input",
            "sandboxes",
            "sbx_",
            "sbx_zz",
            "postrouting",
        ] {
            assert_eq!(object_index(own), None, "{own}");
        }
        let a = Addressing::new("10.213.0.0/16".parse().unwrap(), 0x1f).unwrap();
        let sweep = sandbox_sweep(&a);
        assert_eq!(sweep.len(), 6);
        assert!(sweep.iter().all(|s| s.lines().count() == 1));
        let pos = |needle: &str| sweep.iter().position(|s| s.contains(needle)).unwrap();
        assert!(pos("sandboxes {") < pos("chain inet microsandbox sbx_1f"));
        assert!(pos("intercept {") < pos("chain inet microsandbox nat_1f"));
        assert!(pos("chain inet microsandbox sbx_1f") < pos("set inet microsandbox dns_1f"));
    }

    #[test]
    fn allow_entries_parse() {
        let a = Allow::parse(&spec(&[
            "10.1.2.0/24",
            "192.0.2.7",
            "10.9.9.9/8",
            "API.Example.com.",
            "*.svc.test",
        ]))
        .unwrap();
        assert_eq!(
            a.cidrs,
            vec![
                "10.1.2.0/24".parse::<Ipv4Net>().unwrap(),
                "192.0.2.7/32".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap()
            ]
        );
        assert_eq!(a.domains, vec!["api.example.com", ".svc.test"]);
        assert!(a.allows_name("api.example.com."));
        assert!(a.allows_name("db.svc.test"));
        assert!(!a.allows_name("svc.test"));
        assert!(!a.allows_name("evil-svc.test"));
        assert!(!a.allows_name("example.com"));
        for bad in [
            "",
            "a b",
            "-x.com",
            "1.2.3",
            "*.",
            "http://x",
            "10.0.0.0/33",
        ] {
            assert!(
                matches!(Allow::parse(&spec(&[bad])), Err(PlanError::BadAllow { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Allow::parse(&spec(&["::1"])),
            Err(PlanError::Ipv6 { .. })
        ));
        let mut dup = spec(&[]);
        dup.publish = vec![
            PublishPort {
                host_port: 8080,
                guest_port: 80,
            },
            PublishPort {
                host_port: 8080,
                guest_port: 81,
            },
        ];
        assert_eq!(Allow::parse(&dup), Err(PlanError::DuplicatePort(8080)));
    }

    #[test]
    fn public_only_blocks_what_is_not_public() {
        let extra: Vec<Ipv4Net> = vec!["203.0.113.128/25".parse().unwrap()];
        let b = blocked_ranges(&extra);
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.100",
            "224.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "198.18.0.1",
            "203.0.113.200",
        ] {
            assert!(is_blocked(ip.parse().unwrap(), &b), "{ip} must be blocked");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "203.0.113.10",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert!(!is_blocked(ip.parse().unwrap(), &b), "{ip} is public");
        }
    }

    #[test]
    fn addressing() {
        let pool: Ipv4Net = "10.213.0.0/16".parse().unwrap();
        let a = Addressing::new(pool, 0).unwrap();
        assert_eq!(a.gateway, Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(a.sandbox, Ipv4Addr::new(10, 213, 0, 2));
        assert_eq!(a.host_if, "msb0");
        let last = Addressing::new(pool, 16383).unwrap();
        assert_eq!(last.sandbox, Ipv4Addr::new(10, 213, 255, 254));
        assert_eq!(last.host_if, "msb3fff");
        assert!(Addressing::new(pool, 16384).is_none());
        assert_eq!(Addressing::capacity(pool), 16384);
        assert!(Addressing::new(pool, u32::MAX).is_none());
        assert!(a.host_if.len() <= 15 && last.host_if.len() <= 15);
    }

    #[test]
    fn rulesets() {
        let pool: Ipv4Net = "10.213.0.0/16".parse().unwrap();
        let base = base_ruleset(pool, &blocked_ranges(&[]));
        assert!(base.contains("add element inet microsandbox blocked { 0.0.0.0/8, 10.0.0.0/8,"));
        assert!(base.contains("ip saddr 10.213.0.0/16 oifname != \"msb*\" masquerade"));
        assert!(base.contains("iifname \"msb*\" drop"));
        // The resolver and proxy only on the gateway of the interface a packet came in on.
        let input: Vec<&str> = base
            .lines()
            .filter(|l| l.contains(" input ") && l.contains("accept"))
            .collect();
        assert!(input.iter().filter(|l| l.contains("dport")).count() == 2);
        assert!(input
            .iter()
            .filter(|l| l.contains("dport"))
            .all(|l| l.contains("fib daddr . iif type local accept")));
        let a = Addressing::new(pool, 10).unwrap();
        let allow = Allow::parse(&spec(&["10.1.0.0/16"])).unwrap();
        let r = sandbox_ruleset(&a, NetworkPolicy::PublicOnly, &allow, false);
        assert!(!r.contains("intercept"));
        let with_secrets = sandbox_ruleset(&a, NetworkPolicy::PublicOnly, &allow, true);
        assert!(with_secrets.contains("tcp dport 443 dnat ip to 10.213.0.41:15443"));
        assert!(with_secrets.contains("intercept { \"msba\" : jump nat_a }"));
        assert!(sandbox_teardown(&a, true, true, false)
            .starts_with("delete element inet microsandbox intercept"));
        let lines: Vec<&str> = r.lines().collect();
        let pos = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{needle:?} not in\n{r}"))
        };
        // Allowed destinations are checked before the policy's blocked ranges.
        assert!(pos("ip daddr { 10.1.0.0/16 } accept") < pos("ip daddr @blocked drop"));
        assert!(pos("ip saddr != 10.213.0.42 drop") < pos("ip daddr { 10.1.0.0/16 } accept"));
        // No domains: no named set (every later nft call would load it).
        assert!(!r.contains("add set"));
        assert!(!sandbox_teardown(&a, false, true, false).contains("delete set"));
        let domains = Allow::parse(&spec(&["pypi.org", "10.1.0.0/16"])).unwrap();
        let d = sandbox_ruleset(&a, NetworkPolicy::PublicOnly, &domains, false);
        let dl: Vec<&str> = d.lines().collect();
        let dpos = |needle: &str| dl.iter().position(|l| l.contains(needle)).unwrap();
        assert!(dpos("add set inet microsandbox dns_a") < dpos("ip daddr @dns_a accept"));
        assert!(dpos("ip daddr @dns_a accept") < dpos("ip daddr @blocked drop"));
        assert!(sandbox_teardown(&a, false, true, true).contains(
            "delete chain inet microsandbox sbx_a\ndelete set inet microsandbox dns_a\n"
        ));
        assert!(r.contains("sandboxes { \"msba\" : jump sbx_a }"));
        // Without allow entries: no chain of its own, the shared chain of its policy.
        for (policy, chain) in [
            (NetworkPolicy::None, "policy_none"),
            (NetworkPolicy::PublicOnly, "policy_public_only"),
            (NetworkPolicy::AllowAll, "policy_allow_all"),
        ] {
            let shared = sandbox_ruleset(&a, policy, &Allow::default(), false);
            assert_eq!(
                shared,
                format!(
                    "add element inet microsandbox sources {{ \"msba\" . 10.213.0.42 }}\n\
                     add element inet microsandbox sandboxes {{ \"msba\" : jump {chain} }}\n"
                )
            );
            assert!(base.contains(&format!("add chain inet microsandbox {chain}\n")));
        }
        assert!(base.contains("policy_none drop\n"));
        assert!(base.contains("policy_public_only ip daddr @blocked drop\n"));
        assert!(base.contains("policy_allow_all accept\n"));
        // Every sandbox is in `sources`; own chains too.
        assert!(r.starts_with("add element inet microsandbox sources { \"msba\" . 10.213.0.42 }"));
        let down = sandbox_teardown(&a, false, false, false);
        assert_eq!(
            down,
            "delete element inet microsandbox sandboxes { \"msba\" }\n\
             delete element inet microsandbox sources { \"msba\" . 10.213.0.42 }\n"
        );
        // The forward chain checks the source before conntrack and the sandbox's chain.
        let fwd: Vec<&str> = base.lines().filter(|l| l.contains(" forward ")).collect();
        let fpos = |needle: &str| fwd.iter().position(|l| l.contains(needle)).unwrap();
        assert!(fpos("iifname . ip saddr != @sources drop") < fpos("ct state established"));
        assert!(fpos("meta nfproto != ipv4 drop") < fpos("ct state established"));
        assert!(fpos("ct state established") < fpos("vmap @sandboxes"));
        // Restart over an older agent's sandboxes.
        let b = Addressing::new(pool, 11).unwrap();
        assert_eq!(sources_of(&[]), None);
        assert_eq!(
            sources_of(&[&a, &b]).unwrap(),
            "add element inet microsandbox sources { \"msba\" . 10.213.0.42, \"msbb\" . 10.213.0.46 }\n"
        );
        let moved = to_shared_chain(&a, NetworkPolicy::PublicOnly);
        let ml: Vec<&str> = moved.lines().collect();
        assert_eq!(ml.len(), 3);
        assert!(ml[1].ends_with("{ \"msba\" : jump policy_public_only }"));
        assert_eq!(ml[2], "delete chain inet microsandbox sbx_a");
    }
}
