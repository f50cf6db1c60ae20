//! Lifecycle routes and the attached-sandbox lease WebSocket.

use futures::StreamExt;
use microsandbox_wire::api::{AgentInfo, CreateSandbox, StopSandbox};
use std::time::Duration;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use super::{reply, Ctx};
use crate::error::AgentError;

pub(super) fn with_ctx(
    ctx: Ctx,
) -> impl Filter<Extract = (Ctx,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

pub(super) use super::json::body as json_body;

/// Optional JSON body: empty bodies mean the default.
/// `GET /v1/sandboxes/{name}/logs?tail_bytes=N`.
#[derive(Debug, serde::Deserialize)]
struct LogsQuery {
    tail_bytes: Option<u64>,
}

fn optional_stop() -> impl Filter<Extract = (StopSandbox,), Error = warp::Rejection> + Clone {
    super::json::bytes().and_then(|b: bytes::Bytes| async move {
        if b.iter().all(u8::is_ascii_whitespace) {
            return Ok(StopSandbox::default());
        }
        super::json::parse::<StopSandbox>(&b).map_err(warp::reject::custom)
    })
}

/// Runs a lifecycle operation to its end (or its cleanup) even if the client goes away: a
/// create, start, drain or pause is never left half-done.
async fn to_the_end<T: Send + 'static>(
    op: impl std::future::Future<Output = Result<T, AgentError>> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::spawn(op)
        .await
        .unwrap_or_else(|e| Err(AgentError::Internal(e.to_string())))
}

pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let info = warp::path!("info")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(|c: Ctx| async move {
            let m = &c.manager;
            reply::ok(&AgentInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                node: m.config().node_name.clone(),
                isolation: m.isolation_levels(),
                sandboxes: m.count().await,
            })
        });
    let create = warp::path!("sandboxes")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(json_body::<CreateSandbox>())
        .then(|c: Ctx, req: CreateSandbox| async move {
            if req.name.starts_with(crate::sandbox::pool::MEMBER_PREFIX) {
                let why = format!(
                    "names starting with {:?} belong to warm pools",
                    crate::sandbox::pool::MEMBER_PREFIX
                );
                return reply::error(&AgentError::InvalidName(why));
            }
            match to_the_end(async move { c.manager.create(req).await }).await {
                Ok(info) => reply::json(StatusCode::CREATED, &info),
                Err(e) => reply::error(&e),
            }
        });
    let list = warp::path!("sandboxes")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(|c: Ctx| async move { reply::ok(&c.manager.list().await) });
    let get = warp::path!("sandboxes" / String)
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(|name: String, c: Ctx| async move { reply::result(c.manager.get(&name).await) });
    let remove = warp::path!("sandboxes" / String)
        .and(warp::delete())
        .and(with_ctx(ctx.clone()))
        .then(|name: String, c: Ctx| async move {
            match c.manager.remove(&name).await {
                Ok(()) => reply::no_content(),
                Err(e) => reply::error(&e),
            }
        });
    let stop = warp::path!("sandboxes" / String / "stop")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(optional_stop())
        .then(|name: String, c: Ctx, s: StopSandbox| async move {
            reply::result(
                c.manager
                    .stop(&name, s.timeout_ms.map(Duration::from_millis))
                    .await,
            )
        });
    let kill = warp::path!("sandboxes" / String / "kill")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .then(|name: String, c: Ctx| async move { reply::result(c.manager.kill(&name).await) });
    let drain = warp::path!("sandboxes" / String / "drain")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .and(optional_stop())
        .then(|name: String, c: Ctx, s: StopSandbox| async move {
            let t = s.timeout_ms.map(Duration::from_millis);
            reply::result(to_the_end(async move { c.manager.drain(&name, t).await }).await)
        });
    let start = warp::path!("sandboxes" / String / "start")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .then(|name: String, c: Ctx| async move {
            reply::result(to_the_end(async move { c.manager.start_again(&name).await }).await)
        });
    let pause = warp::path!("sandboxes" / String / "pause")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .then(|name: String, c: Ctx| async move {
            reply::result(to_the_end(async move { c.manager.pause(&name).await }).await)
        });
    let resume = warp::path!("sandboxes" / String / "resume")
        .and(warp::post())
        .and(with_ctx(ctx.clone()))
        .then(|name: String, c: Ctx| async move {
            reply::result(to_the_end(async move { c.manager.resume(&name).await }).await)
        });
    let logs = warp::path!("sandboxes" / String / "logs")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .and(warp::query::<LogsQuery>())
        .then(|name: String, c: Ctx, q: LogsQuery| async move {
            use warp::Reply;
            match c.manager.logs(&name, q.tail_bytes).await {
                Ok(data) => {
                    warp::reply::with_header(data, "content-type", "text/plain; charset=utf-8")
                        .into_response()
                }
                Err(e) => reply::error(&e),
            }
        });
    let metrics = warp::path!("sandboxes" / String / "metrics")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(|name: String, c: Ctx| async move { reply::result(c.manager.metrics(&name).await) });
    let violations = warp::path!("sandboxes" / String / "secrets" / "violations")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(|name: String, c: Ctx| async move {
            reply::result(
                c.manager
                    .secret_violations(&name, None)
                    .await
                    .map(|(v, _)| v),
            )
        });
    let all_metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(|c: Ctx| async move { reply::ok(&c.manager.all_metrics().await) });
    let put_pool = warp::path!("pools" / String)
        .and(warp::put())
        .and(with_ctx(ctx.clone()))
        .and(json_body::<microsandbox_wire::api::PoolSpec>())
        .then(
            |name: String, c: Ctx, spec: microsandbox_wire::api::PoolSpec| async move {
                reply::result(c.manager.put_pool(&name, spec).await)
            },
        );
    let pools = warp::path!("pools")
        .and(warp::get())
        .and(with_ctx(ctx.clone()))
        .then(|c: Ctx| async move { reply::ok(&c.manager.pools().await) });
    let remove_pool = warp::path!("pools" / String)
        .and(warp::delete())
        .and(with_ctx(ctx.clone()))
        .then(|name: String, c: Ctx| async move {
            match c.manager.remove_pool(&name).await {
                Ok(()) => reply::no_content(),
                Err(e) => reply::error(&e),
            }
        });
    let lease = warp::path!("sandboxes" / String / "lease")
        .and(warp::ws())
        .and(with_ctx(ctx))
        .then(|name: String, ws: warp::ws::Ws, c: Ctx| async move {
            use warp::Reply;
            match c.manager.lease(&name).await {
                Err(e) => reply::error(&e),
                Ok(guard) => ws
                    .on_upgrade(move |mut socket| async move {
                        // Hold the lease until the client goes away.
                        while let Some(Ok(_)) = socket.next().await {}
                        drop(guard);
                    })
                    .into_response(),
            }
        });
    info.or(create)
        .unify()
        .boxed()
        .or(list)
        .unify()
        .boxed()
        .or(get)
        .unify()
        .boxed()
        .or(remove)
        .unify()
        .boxed()
        .or(stop)
        .unify()
        .boxed()
        .or(kill)
        .unify()
        .boxed()
        .or(drain)
        .unify()
        .boxed()
        .or(start)
        .unify()
        .boxed()
        .or(pause)
        .unify()
        .boxed()
        .or(put_pool)
        .unify()
        .boxed()
        .or(pools)
        .unify()
        .boxed()
        .or(remove_pool)
        .unify()
        .boxed()
        .or(resume)
        .unify()
        .boxed()
        .or(logs)
        .unify()
        .boxed()
        .or(metrics)
        .unify()
        .boxed()
        .or(all_metrics)
        .unify()
        .boxed()
        .or(violations)
        .unify()
        .boxed()
        .or(lease)
        .unify()
        .boxed()
}

pub(super) use json_body as json_filter;
pub(super) use with_ctx as ctx_filter;
