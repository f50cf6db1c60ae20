//! Named volume routes: `POST/GET /v1/volumes`, `GET/DELETE /v1/volumes/{name}`.

use microsandbox_wire::api::{CreateVolume, ResizeVolume};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use super::sandboxes::{json_body, with_ctx};
use super::{reply, Ctx};

pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let create = warp::path!("volumes")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(json_body::<CreateVolume>())
        .then(|c: Ctx, req: CreateVolume| async move {
            match c.manager.volumes().create(req).await {
                Ok(info) => reply::json(StatusCode::CREATED, &info),
                Err(e) => reply::error(&e),
            }
        });
    let list = warp::path!("volumes")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(|c: Ctx| async move { reply::ok(&c.manager.volumes().list()) });
    let get = warp::path!("volumes" / String)
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(|name: String, c: Ctx| async move { reply::result(c.manager.volumes().info(&name)) });
    let resize = warp::path!("volumes" / String)
        .and(warp::patch())
        .and(with_ctx(ctx.clone()))
        .and(json_body::<ResizeVolume>())
        .then(|name: String, c: Ctx, req: ResizeVolume| async move {
            reply::result(c.manager.grow_volume(&name, req.quota_mib).await)
        });
    let remove = warp::path!("volumes" / String)
        .and(warp::delete())
        .and(with_ctx(ctx))
        .then(|name: String, c: Ctx| async move {
            match c.manager.remove_volume(&name).await {
                Ok(()) => reply::no_content(),
                Err(e) => reply::error(&e),
            }
        });
    create
        .or(list)
        .unify()
        .or(get)
        .unify()
        .or(resize)
        .unify()
        .or(remove)
        .unify()
        .boxed()
}
