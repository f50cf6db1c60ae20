//! The agent's HTTP/WebSocket API (warp). Routes are listed in `node-agent/API.md`.

mod auth;
mod exec;
mod fs;
mod images;
mod reply;
mod sandboxes;
mod volumes;

pub use auth::{load_or_create_token, Auth, Token};

use std::sync::Arc;
use warp::Filter;

use crate::sandbox::SandboxManager;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct Ctx {
    pub manager: Arc<SandboxManager>,
}

/// Every route, authenticated, with errors rendered as JSON.
pub fn routes(
    manager: Arc<SandboxManager>,
    auth: Auth,
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
            .or(volumes::routes(ctx))
            .unify(),
    );
    health.or(v1).unify().recover(reply::recover).unify()
}
