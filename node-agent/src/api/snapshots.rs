//! Snapshot routes: `POST /v1/sandboxes/{name}/snapshot`, `GET /v1/snapshots`,
//! `DELETE /v1/snapshots/{name}`, `POST /v1/snapshots/{name}/push`.

use microsandbox_wire::api::{CreateSnapshot, PushSnapshot};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use super::sandboxes::{json_body, with_ctx};
use super::{reply, Ctx};

pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let create = warp::path!("sandboxes" / String / "snapshot")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(json_body::<CreateSnapshot>())
        .then(|name: String, c: Ctx, req: CreateSnapshot| async move {
            // To its end even if the client goes away: a half-written layer is never recorded.
            let done =
                tokio::spawn(async move { c.manager.snapshot(&name, &req.name).await }).await;
            match done.unwrap_or_else(|e| Err(crate::error::AgentError::Internal(e.to_string()))) {
                Ok(info) => reply::json(StatusCode::CREATED, &info),
                Err(e) => reply::error(&e),
            }
        });
    let list = warp::path!("snapshots")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(|c: Ctx| async move { reply::ok(&c.manager.snapshots()) });
    let push = warp::path!("snapshots" / String / "push")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(json_body::<PushSnapshot>())
        .then(|name: String, c: Ctx, req: PushSnapshot| async move {
            match c
                .manager
                .push_snapshot(&name, &req.reference, crate::image::PushAuth::Node)
                .await
            {
                Ok(pushed) => reply::ok(&pushed),
                Err(e) => reply::error(&e),
            }
        });
    let remove = warp::path!("snapshots" / String)
        .and(warp::delete())
        .and(with_ctx(ctx))
        .then(|name: String, c: Ctx| async move {
            match c.manager.remove_snapshot(&name).await {
                Ok(_) => reply::no_content(),
                Err(e) => reply::error(&e),
            }
        });
    create
        .or(list)
        .unify()
        .or(push)
        .unify()
        .or(remove)
        .unify()
        .boxed()
}
