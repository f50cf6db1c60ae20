//! Leases of attached sandboxes: `GET /v1/sandboxes/{name}/lease` (a WebSocket held open).

use crate::error::Result;
use crate::http::{sandbox_path, AgentClient, WsStream};
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// How long a release waits for the agent to acknowledge the close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps an attached sandbox alive while held. Dropping it closes the lease connection in the
/// background, and the agent then removes the sandbox; [`Lease::release`] does the same and waits
/// for the close to go through.
#[derive(Debug)]
pub struct Lease {
    name: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    open: watch::Receiver<bool>,
}

impl Lease {
    /// The sandbox this lease holds.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the lease connection is still open (`false` once the agent closed it or the
    /// connection broke: the sandbox is then no longer held).
    pub fn is_held(&self) -> bool {
        *self.open.borrow()
    }

    /// Resolves when the lease connection ends for any reason other than this handle releasing it.
    pub async fn lost(&mut self) {
        // An error means the task ended (and its sender is gone): the connection is closed too.
        let _ = self.open.wait_for(|open| !open).await;
    }

    /// Closes the lease (the agent then removes an attached sandbox) and waits, at most a few
    /// seconds, for the agent to acknowledge.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Reads (which answers pings) until told to stop or the agent closes; then closes politely.
async fn hold(mut ws: WsStream, mut stop: oneshot::Receiver<()>, open: watch::Sender<bool>) {
    loop {
        tokio::select! {
            // A send or a dropped sender: either way the holder let go.
            _ = &mut stop => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    if ws.close(None).await.is_ok() {
                        // Read until the agent's close reply ends the stream.
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                })
                .await;
                break;
            }
            msg = ws.next() => match msg {
                Some(Ok(_)) => {}
                None | Some(Err(_)) => break,
            },
        }
    }
    let _ = open.send(false);
}

impl AgentClient {
    /// Opens the lease of the attached sandbox `name` and holds it in a background task until
    /// the returned [`Lease`] is dropped or released.
    pub async fn hold_lease(&self, name: &str) -> Result<Lease> {
        let ws = self.websocket(&sandbox_path(name, "/lease")).await?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let (open_tx, open_rx) = watch::channel(true);
        let task = tokio::spawn(hold(ws, stop_rx, open_tx));
        Ok(Lease {
            name: name.to_string(),
            stop: Some(stop_tx),
            task: Some(task),
            open: open_rx,
        })
    }
}
