//! The agent's HTTP/WebSocket API (warp). Routes are listed in `node-agent/API.md`.

mod allow;
mod auth;
mod exec;
mod fs;
mod images;
mod json;
mod mcp;
mod reply;
mod sandboxes;
mod snapshots;
mod volumes;

pub use auth::{load_or_create_token, Auth, Token};
pub use mcp::McpAccess;

use std::sync::Arc;
use warp::Filter;

use crate::sandbox::SandboxManager;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct Ctx {
    pub manager: Arc<SandboxManager>,
}

/// Every route, authenticated, with errors rendered as JSON.
/// `mcp`: the MCP endpoint and who may use it (none in cluster mode).
pub fn routes(
    manager: Arc<SandboxManager>,
    auth: Auth,
    mcp: Option<(microsandbox_mcp::http::HttpEndpoint, McpAccess)>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    let ctx = Ctx { manager };
    let health = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::Reply::into_response("ok"));
    let v1 = warp::path("v1").and(auth::require(auth)).and(
        sandboxes::routes(ctx.clone())
            .or(exec::routes(ctx.clone()))
            .unify()
            .or(fs::routes(ctx.clone()))
            .unify()
            .or(images::routes(ctx.clone()))
            .unify()
            .or(snapshots::routes(ctx.clone()))
            .unify()
            .or(volumes::routes(ctx))
            .unify(),
    );
    let mcp = match mcp {
        Some((endpoint, access)) => mcp::route(endpoint, access).boxed(),
        None => warp::path!("mcp")
            .and_then(|| async { Err::<warp::reply::Response, _>(warp::reject::not_found()) })
            .boxed(),
    };
    let all = health
        .or(mcp)
        .unify()
        .or(v1)
        .unify()
        .recover(reply::recover)
        .unify();
    warp::path::full()
        .and(all)
        .map(|path: warp::path::FullPath, r| allow::with_allow(path.as_str(), r))
}
