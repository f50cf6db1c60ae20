//! One sandbox's egress decision, shared by its resolver (which grants the addresses of
//! allowed names) and its HTTP(S) proxy (which connects upstream on the sandbox's behalf and
//! must refuse what nftables would drop).

use ipnet::Ipv4Net;
use microsandbox_wire::api::NetworkPolicy;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::plan::{is_blocked, Allow};

/// What a sandbox may reach, with the addresses its allowed names resolved to.
#[derive(Debug)]
pub struct Egress {
    pub policy: NetworkPolicy,
    pub allow: Allow,
    pub blocked: Arc<Vec<Ipv4Net>>,
    granted: Mutex<HashMap<Ipv4Addr, Instant>>,
}

impl Egress {
    pub fn new(policy: NetworkPolicy, allow: Allow, blocked: Arc<Vec<Ipv4Net>>) -> Self {
        Self {
            policy,
            allow,
            blocked,
            granted: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the DNS query for `name` is forwarded at all.
    pub fn forwards(&self, name: &str) -> bool {
        self.policy != NetworkPolicy::None || self.allow.allows_name(name)
    }

    /// Records that `ip` is allowed for `ttl` (an allowed name resolved to it).
    pub fn grant(&self, ip: Ipv4Addr, ttl: Duration, now: Instant) {
        let mut g = self.granted.lock().unwrap_or_else(|e| e.into_inner());
        g.retain(|_, until| *until > now);
        g.insert(ip, now + ttl);
    }

    /// The same decision as the sandbox's nftables chain: allowlisted CIDRs and granted
    /// addresses pass, then the policy.
    pub fn permits(&self, ip: Ipv4Addr, now: Instant) -> bool {
        if self.allow.cidrs.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        let granted = self
            .granted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ip)
            .is_some_and(|until| *until > now);
        if granted {
            return true;
        }
        match self.policy {
            NetworkPolicy::None => false,
            NetworkPolicy::PublicOnly => !is_blocked(ip, &self.blocked),
            NetworkPolicy::AllowAll => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microsandbox_wire::api::NetworkSpec;

    fn egress(policy: NetworkPolicy, allow: &[&str]) -> Egress {
        let spec = NetworkSpec {
            policy,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            publish: vec![],
        };
        Egress::new(
            policy,
            Allow::parse(&spec).unwrap(),
            Arc::new(super::super::plan::blocked_ranges(&[])),
        )
    }

    #[test]
    fn same_decision_as_the_rules() {
        let now = Instant::now();
        let e = egress(NetworkPolicy::PublicOnly, &["10.9.0.0/16"]);
        assert!(e.permits("203.0.113.10".parse().unwrap(), now));
        assert!(!e.permits("10.1.1.1".parse().unwrap(), now));
        assert!(e.permits("10.9.1.1".parse().unwrap(), now));
        assert!(!e.permits("169.254.169.254".parse().unwrap(), now));
        let none = egress(NetworkPolicy::None, &["api.test"]);
        let ip: Ipv4Addr = "10.77.0.10".parse().unwrap();
        assert!(!none.permits(ip, now));
        none.grant(ip, Duration::from_secs(60), now);
        assert!(none.permits(ip, now));
        assert!(!none.permits(ip, now + Duration::from_secs(61)));
        assert!(none.forwards("api.test.") && !none.forwards("other.test."));
        let all = egress(NetworkPolicy::AllowAll, &[]);
        assert!(all.permits("10.1.1.1".parse().unwrap(), now));
    }
}
