//! Published ports: `127.0.0.1:<host_port>` on the host relays TCP to the sandbox. The host
//! side listens in the agent's namespace (the node's loopback); the connection to the sandbox
//! is opened in the uplink namespace, where its link is.

use std::net::SocketAddr;
use tokio::net::TcpListener;

use super::host::Uplink;

/// Accepts on `listener` until dropped; each connection is relayed to `target`.
pub async fn relay(listener: TcpListener, target: SocketAddr, uplink: Uplink) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let uplink = uplink.clone();
        tokio::spawn(async move {
            match uplink.connect(target).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => {
                    tracing::debug!(%target, error = %e, "published port: sandbox unreachable")
                }
            }
        });
    }
}
