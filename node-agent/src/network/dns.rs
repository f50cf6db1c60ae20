//! The resolver sandboxes use (`nameserver <gateway>`): forwards queries upstream and enforces
//! the policy on names. Judging answers is pure ([`judge`]); [`serve`] is the socket loop.
//!
//! - policy `none` with domains allowed: only those names are resolved (REFUSED otherwise);
//! - an allowed name's A records are added to the sandbox's `dns_*` nftables set for the
//!   answer's TTL before the answer is returned, so the connection that follows is let through;
//! - `public_only`: an answer pointing a name that is not allowed to a blocked range is refused
//!   (DNS rebinding); the addresses would be dropped by nftables anyway, this makes it visible.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RData;
use microsandbox_wire::api::NetworkPolicy;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;

use super::egress::Egress;
use super::host::Uplink;
use super::plan::{is_blocked, Addressing, TABLE};

/// Bounds of how long a resolved address of an allowed name stays allowed.
const MIN_TTL: u32 = 60;
const MAX_TTL: u32 = 3600;
/// How long an upstream answer may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// The decision on a query, or on its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Return the answer; first allow these addresses for these seconds.
    Pass(Vec<(Ipv4Addr, u32)>),
    /// Answer REFUSED, for this reason (logged).
    Refuse(String),
}

/// Judge the upstream `answer` to a query for `name`.
pub fn judge(p: &Egress, name: &str, answer: &Message) -> Judgement {
    let allowed = p.allow.allows_name(name);
    let mut grant = Vec::new();
    for rec in answer.answers() {
        let RData::A(a) = rec.data() else { continue };
        let ip = a.0;
        if allowed {
            grant.push((ip, rec.ttl().clamp(MIN_TTL, MAX_TTL)));
        } else if p.policy == NetworkPolicy::PublicOnly
            && is_blocked(ip, &p.blocked)
            && !p.allow.cidrs.iter().any(|n| n.contains(&ip))
        {
            return Judgement::Refuse(format!(
                "{name} resolves to {ip}, which public_only does not reach (DNS rebinding?)"
            ));
        }
    }
    Judgement::Pass(grant)
}

fn refused(query: &Message) -> Message {
    let mut m = Message::error_msg(query.id(), query.op_code(), ResponseCode::Refused);
    m.add_queries(query.queries().to_vec());
    m.set_message_type(MessageType::Response);
    m
}

/// Serves one sandbox's resolver on `listen` (opened in the uplink namespace) until dropped,
/// forwarding through `upstream_sock` to `upstream`. Queries are handled one at a time: a
/// sandbox can only slow down its own name resolution.
pub async fn serve(
    listen: UdpSocket,
    upstream_sock: UdpSocket,
    upstream: SocketAddr,
    policy: Arc<Egress>,
    uplink: Uplink,
    addressing: Addressing,
    sandbox: String,
) {
    let mut buf = vec![0u8; 4096];
    let mut up_buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = listen.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let name = query
            .queries()
            .first()
            .map(|q| q.name().to_ascii())
            .unwrap_or_default();
        let reply = if !policy.forwards(&name) {
            tracing::info!(%sandbox, %name, "DNS query refused: name not on the allowlist");
            refused(&query).to_vec().ok()
        } else {
            match exchange(&upstream_sock, upstream, &buf[..n], &mut up_buf, query.id()).await {
                Some(bytes) => match Message::from_vec(&bytes) {
                    Ok(answer) => match judge(&policy, &name, &answer) {
                        Judgement::Pass(grant) => {
                            let now = std::time::Instant::now();
                            for (ip, ttl) in &grant {
                                policy.grant(*ip, Duration::from_secs(u64::from(*ttl)), now);
                            }
                            allow_addresses(&uplink, &addressing, &grant).await;
                            Some(bytes)
                        }
                        Judgement::Refuse(why) => {
                            tracing::warn!(%sandbox, %name, reason = %why, "DNS answer refused");
                            refused(&query).to_vec().ok()
                        }
                    },
                    Err(_) => None,
                },
                None => None,
            }
        };
        if let Some(reply) = reply {
            let _ = listen.send_to(&reply, peer).await;
        }
    }
}

/// One upstream round trip; `None` on timeout or error (the client retries).
async fn exchange(
    sock: &UdpSocket,
    upstream: SocketAddr,
    query: &[u8],
    buf: &mut [u8],
    id: u16,
) -> Option<Vec<u8>> {
    sock.send_to(query, upstream).await.ok()?;
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    loop {
        let (n, from) = tokio::time::timeout_at(deadline, sock.recv_from(buf))
            .await
            .ok()?
            .ok()?;
        // Stale answers of earlier timed-out queries are skipped.
        if from == upstream && n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            return Some(buf[..n].to_vec());
        }
    }
}

async fn allow_addresses(uplink: &Uplink, a: &Addressing, grant: &[(Ipv4Addr, u32)]) {
    if grant.is_empty() {
        return;
    }
    let elements = grant
        .iter()
        .map(|(ip, ttl)| format!("{ip} timeout {ttl}s"))
        .collect::<Vec<_>>()
        .join(", ");
    let script = format!(
        "add element inet {TABLE} {} {{ {elements} }}\n",
        a.dns_set()
    );
    if let Err(e) = uplink.nft(&script).await {
        tracing::warn!(set = %a.dns_set(), error = %e, "cannot allow resolved addresses");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{rdata::A, Name, Record};
    use microsandbox_wire::api::NetworkSpec;
    use std::str::FromStr;

    fn answer(name: &str, ips: &[&str]) -> Message {
        let mut m = Message::new();
        for ip in ips {
            let rec = Record::from_rdata(
                Name::from_str(name).unwrap(),
                30,
                RData::A(A(ip.parse().unwrap())),
            );
            m.add_answer(rec);
        }
        m
    }

    fn policy(p: NetworkPolicy, allow: &[&str]) -> Egress {
        Egress::new(
            p,
            super::super::plan::Allow::parse(&NetworkSpec {
                policy: p,
                allow: allow.iter().map(|s| s.to_string()).collect(),
                publish: vec![],
            })
            .unwrap(),
            Arc::new(super::super::plan::blocked_ranges(&[])),
        )
    }

    #[test]
    fn public_only_refuses_rebinding_but_not_allowed_names() {
        let p = policy(NetworkPolicy::PublicOnly, &["internal.test"]);
        assert_eq!(
            judge(
                &p,
                "public.test.",
                &answer("public.test.", &["203.0.113.10"])
            ),
            Judgement::Pass(vec![])
        );
        assert!(matches!(
            judge(&p, "evil.test.", &answer("evil.test.", &["203.0.113.10", "127.0.0.1"])),
            Judgement::Refuse(why) if why.contains("127.0.0.1")
        ));
        assert!(matches!(
            judge(
                &p,
                "meta.test.",
                &answer("meta.test.", &["169.254.169.254"])
            ),
            Judgement::Refuse(_)
        ));
        // A blocked address on the CIDR allowlist is no rebinding.
        let p2 = policy(NetworkPolicy::PublicOnly, &["10.77.0.0/16"]);
        assert_eq!(
            judge(
                &p2,
                "private.test.",
                &answer("private.test.", &["10.77.0.10"])
            ),
            Judgement::Pass(vec![])
        );
        // An allowed name may point anywhere, and its addresses are granted for >= MIN_TTL.
        assert_eq!(
            judge(
                &p,
                "internal.test.",
                &answer("internal.test.", &["10.77.0.10"])
            ),
            Judgement::Pass(vec![("10.77.0.10".parse().unwrap(), MIN_TTL)])
        );
    }

    #[test]
    fn none_resolves_only_allowed_names() {
        let p = policy(NetworkPolicy::None, &["*.api.test"]);
        assert!(p.forwards("v1.api.test."));
        assert!(!p.forwards("api.test."));
        assert!(!p.forwards("public.test."));
        let all = policy(NetworkPolicy::AllowAll, &[]);
        assert!(all.forwards("anything.test."));
        assert_eq!(
            judge(&all, "x.test.", &answer("x.test.", &["10.0.0.1"])),
            Judgement::Pass(vec![])
        );
    }

    #[test]
    fn refusal_keeps_the_id_and_question() {
        let mut q = Message::new();
        q.set_id(4242);
        q.add_query(hickory_proto::op::Query::query(
            Name::from_str("x.test.").unwrap(),
            hickory_proto::rr::RecordType::A,
        ));
        let r = refused(&q);
        assert_eq!(r.id(), 4242);
        assert_eq!(r.response_code(), ResponseCode::Refused);
        assert_eq!(r.message_type(), MessageType::Response);
        assert_eq!(r.queries().len(), 1);
    }
}
