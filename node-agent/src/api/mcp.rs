//! `/mcp`: the MCP server over streamable HTTP (the `microsandbox-mcp` crate's tools, creating
//! sandboxes on this agent). Requests are handed to the MCP SDK's HTTP service as they come,
//! body streamed; its answers (JSON or an event stream) go back as it writes them.

use futures::StreamExt;
use http_body_util::{BodyDataStream, StreamBody};
use hyper::body::Frame;
use microsandbox_mcp::http::HttpEndpoint;
use warp::{Buf, Filter, Reply};

/// Who may use `/mcp`.
#[derive(Clone)]
pub enum McpAccess {
    /// Holders of the agent's token (as every other route).
    Token(super::Token),
    /// Anyone who can connect (`msb server start --dev`, loopback only).
    Open,
}

/// The `/mcp` route.
pub fn route(
    endpoint: HttpEndpoint,
    access: McpAccess,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let allowed = warp::header::optional::<String>("authorization").and_then(
        move |header: Option<String>| {
            let ok = match &access {
                McpAccess::Open => true,
                McpAccess::Token(token) => header
                    .as_deref()
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .is_some_and(|t| token.matches(t.trim())),
            };
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(warp::reject::custom(super::auth::Unauthorized))
                }
            }
        },
    );
    warp::path!("mcp")
        .and(allowed)
        .untuple_one()
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and_then(move |method, headers, body| {
            let endpoint = endpoint.clone();
            async move { Ok::<_, warp::Rejection>(serve(&endpoint, method, headers, body).await) }
        })
}

async fn serve<S, B>(
    endpoint: &HttpEndpoint,
    method: warp::http::Method,
    headers: warp::http::HeaderMap,
    body: S,
) -> warp::reply::Response
where
    S: futures::Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf + Send + 'static,
{
    let body = StreamBody::new(
        body.map(|chunk| chunk.map(|mut b| Frame::data(b.copy_to_bytes(b.remaining())))),
    );
    let mut request = warp::http::Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = warp::http::Uri::from_static("/mcp");
    *request.headers_mut() = headers;
    let (parts, body) = endpoint.handle(request).await.into_parts();
    let mut reply = warp::reply::stream(BodyDataStream::new(body)).into_response();
    *reply.status_mut() = parts.status;
    *reply.headers_mut() = parts.headers;
    reply
}
