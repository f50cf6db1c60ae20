//! MCP over streamable HTTP, for the agent's `/mcp` route: the upstream server's transport and
//! path (`msb server start --dev` serves `http://127.0.0.1:5555/mcp`).
//!
//! Every request is served with one shared [`Registry`]: a client of the 2026-07-28 protocol has
//! no session, so what one request starts the next one must find. Sandboxes started over HTTP
//! live until `sandbox_remove` (or `sandbox_stop` and a later remove) or until the agent stops —
//! there is no session end to tie them to. Authentication is the agent's (its route checks the
//! bearer token before a request gets here).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use microsandbox::Agent;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::registry::Registry;
use crate::tools::SandboxTools;

/// The `/mcp` endpoint of an agent.
#[derive(Clone)]
pub struct HttpEndpoint {
    service: StreamableHttpService<SandboxTools, LocalSessionManager>,
}

impl HttpEndpoint {
    /// Tools creating sandboxes on `agent`; `hosts` are the `Host` values accepted besides the
    /// loopback names (DNS-rebinding protection).
    pub fn new(agent: Agent, hosts: impl IntoIterator<Item = String>) -> Self {
        let sandboxes = Registry::default();
        let mut allowed: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .into_iter()
            .map(String::from)
            .collect();
        allowed.extend(hosts);
        let config = StreamableHttpServerConfig::default().with_allowed_hosts(allowed);
        let service = StreamableHttpService::new(
            move || Ok(SandboxTools::new(Some(agent.clone()), sandboxes.clone())),
            Arc::new(LocalSessionManager::default()),
            config,
        );
        HttpEndpoint { service }
    }

    /// Answer one HTTP request (POST a message, GET the event stream, DELETE a session).
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
    ) -> http::Response<BoxBody<Bytes, Infallible>>
    where
        B: http_body_util::BodyExt + Send + 'static,
        B::Error: std::fmt::Display,
        B::Data: Send + 'static,
    {
        let mut service = self.service.clone();
        match tower_service::Service::call(&mut service, request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}
