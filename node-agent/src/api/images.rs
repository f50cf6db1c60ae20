//! `POST /v1/images/pull`: newline-delimited JSON progress events.

use bytes::Bytes;
use microsandbox_wire::api::{PullEvent, PullImage};
use tokio_stream::wrappers::ReceiverStream;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::Filter;

use super::sandboxes::{ctx_filter, json_filter};
use super::Ctx;

fn line(ev: &PullEvent) -> Bytes {
    let mut v = serde_json::to_vec(ev).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    warp::path!("images" / "pull")
        .and(warp::post())
        .and(ctx_filter(ctx))
        .and(json_filter::<PullImage>())
        .then(|c: Ctx, req: PullImage| async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
            tokio::spawn(async move {
                let tx2 = tx.clone();
                let progress = move |ev: PullEvent| {
                    let _ = tx2.try_send(Ok(line(&ev)));
                };
                if let Err(e) = c
                    .manager
                    .images
                    .ensure(&req.image, req.policy, &progress)
                    .await
                {
                    let err = crate::error::AgentError::from(e).to_api();
                    let _ = tx.send(Ok(line(&PullEvent::Error { error: err }))).await;
                }
            });
            let mut resp = warp::reply::stream(ReceiverStream::new(rx)).into_response();
            resp.headers_mut().insert(
                warp::http::header::CONTENT_TYPE,
                warp::http::HeaderValue::from_static("application/x-ndjson"),
            );
            resp
        })
        .boxed()
}
