//! Filesystem routes. File bodies are streamed in both directions in CHUNK_SIZE pieces: the agent
//! never holds a whole file in memory.

use bytes::{Buf, Bytes};
use futures::{SinkExt, Stream, StreamExt};
use microsandbox_wire::api::{FileKind, FileStat, FsMove, FsPathOp};
use microsandbox_wire::guest::{self, GuestFrame, HostFrame, Request, Response as GResponse};
use serde::Deserialize;
use tokio_stream::wrappers::ReceiverStream;
use warp::filters::BoxedFilter;
use warp::reply::{Reply, Response};
use warp::Filter;

use super::sandboxes::{ctx_filter, json_filter};
use super::{reply, Ctx};
use crate::error::AgentError;

#[derive(Debug, Deserialize)]
struct PathQuery {
    path: String,
    #[serde(default)]
    mode: Option<u32>,
    #[serde(default)]
    append: bool,
}

fn stat_of(path: String, s: &guest::FileStat) -> FileStat {
    FileStat {
        path,
        kind: match s.kind {
            guest::FileKind::File => FileKind::File,
            guest::FileKind::Dir => FileKind::Dir,
            guest::FileKind::Symlink => FileKind::Symlink,
            guest::FileKind::Other => FileKind::Other,
        },
        size: s.size,
        mode: s.mode,
        mtime: s.mtime_secs,
    }
}

fn check_path(p: &str) -> Result<(), AgentError> {
    if p.is_empty() || p.contains('\0') {
        return Err(AgentError::InvalidRequest(format!("invalid path {p:?}")));
    }
    Ok(())
}

async fn call(c: &Ctx, name: &str, req: Request) -> Result<GResponse, AgentError> {
    let entry = c.manager.entry(name).await?;
    let (_guard, guest) = c.manager.begin_exec(&entry).await?;
    guest.call(req).await
}

async fn list(c: Ctx, name: String, q: PathQuery) -> Result<Vec<FileStat>, AgentError> {
    check_path(&q.path)?;
    match call(
        &c,
        &name,
        Request::List {
            path: q.path.clone(),
        },
    )
    .await?
    {
        GResponse::Entries(es) => Ok(es
            .iter()
            .map(|e| {
                stat_of(
                    format!("{}/{}", q.path.trim_end_matches('/'), e.name),
                    &e.stat,
                )
            })
            .collect()),
        other => Err(AgentError::GuestChannel(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

async fn stat(c: Ctx, name: String, q: PathQuery) -> Result<FileStat, AgentError> {
    check_path(&q.path)?;
    match call(
        &c,
        &name,
        Request::Stat {
            path: q.path.clone(),
        },
    )
    .await?
    {
        GResponse::Stat(s) => Ok(stat_of(q.path, &s)),
        other => Err(AgentError::GuestChannel(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

async fn simple(c: Ctx, name: String, req: Request) -> Response {
    let paths: Vec<&String> = match &req {
        Request::Mkdir { path, .. } | Request::Remove { path, .. } => vec![path],
        Request::Rename { from, to } | Request::Copy { from, to } => vec![from, to],
        _ => vec![],
    };
    if let Some(e) = paths.into_iter().find_map(|p| check_path(p).err()) {
        return reply::error(&e);
    }
    match call(&c, &name, req).await {
        Ok(_) => reply::no_content(),
        Err(e) => reply::error(&e),
    }
}

async fn read_file(c: Ctx, name: String, q: PathQuery) -> Result<Response, AgentError> {
    check_path(&q.path)?;
    let entry = c.manager.entry(&name).await?;
    let (guard, guest) = c.manager.begin_exec(&entry).await?;
    let mut conn = guest.open(Request::ReadFile { path: q.path }).await?;
    // The first frame decides between an error status and a streamed body.
    let first = match conn.next().await {
        Some(Ok(GuestFrame::Data(d))) => Some(d),
        Some(Ok(GuestFrame::DataEnd)) => None,
        Some(Ok(GuestFrame::Error(e))) => return Err(AgentError::Guest(e)),
        Some(Ok(other)) => {
            return Err(AgentError::GuestChannel(format!(
                "unexpected frame {other:?}"
            )))
        }
        Some(Err(e)) => return Err(AgentError::GuestChannel(e.to_string())),
        None => {
            return Err(AgentError::GuestChannel(
                "guest closed the connection".into(),
            ))
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let _guard = guard;
        let Some(first) = first else { return };
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        loop {
            let item = match conn.next().await {
                Some(Ok(GuestFrame::Data(d))) => Ok(d),
                Some(Ok(GuestFrame::DataEnd)) => return,
                Some(Ok(GuestFrame::Error(e))) => Err(std::io::Error::other(e.to_string())),
                Some(Ok(_)) | None => Err(std::io::Error::other("guest closed mid-file")),
                Some(Err(e)) => Err(std::io::Error::other(e.to_string())),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    let mut resp = warp::reply::stream(ReceiverStream::new(rx)).into_response();
    resp.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

async fn write_file<S, B>(
    c: Ctx,
    name: String,
    q: PathQuery,
    body: S,
) -> Result<serde_json::Value, AgentError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    check_path(&q.path)?;
    let entry = c.manager.entry(&name).await?;
    let (_guard, guest) = c.manager.begin_exec(&entry).await?;
    let mut conn = guest
        .open(Request::WriteFile {
            path: q.path,
            mode: q.mode.unwrap_or(0),
            append: q.append,
        })
        .await?;
    let mut body = body;
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| AgentError::InvalidRequest(format!("request body: {e}")))?;
        while chunk.has_remaining() {
            let n = chunk.chunk().len().min(guest::CHUNK_SIZE);
            let piece = chunk.copy_to_bytes(n);
            if conn.send(HostFrame::Stdin(piece)).await.is_err() {
                // The guest refused mid-way (e.g. no space): its error frame says why.
                return match crate::guest::next_done(&mut conn).await {
                    Err(e) => Err(e),
                    Ok(_) => Err(AgentError::GuestChannel("write interrupted".into())),
                };
            }
        }
    }
    // If the guest refused early (e.g. missing parent directory) it has closed its side: the
    // send fails, and its error frame is still there to read.
    let _ = conn.send(HostFrame::StdinClose).await;
    match crate::guest::next_done(&mut conn).await? {
        GResponse::Written { bytes } => Ok(serde_json::json!({ "bytes": bytes })),
        other => Err(AgentError::GuestChannel(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

pub fn routes(ctx: Ctx) -> BoxedFilter<(Response,)> {
    let base = move || {
        warp::path("sandboxes")
            .and(warp::path::param::<String>())
            .and(warp::path("fs"))
    };
    let c = ctx.clone();
    let get_file = base()
        .and(warp::path!("file"))
        .and(warp::get())
        .and(ctx_filter(c))
        .and(warp::query::<PathQuery>())
        .then(|name: String, c: Ctx, q: PathQuery| async move {
            match read_file(c, name, q).await {
                Ok(r) => r,
                Err(e) => reply::error(&e),
            }
        });
    let put_file = base()
        .and(warp::path!("file"))
        .and(warp::put())
        .and(ctx_filter(ctx.clone()))
        .and(warp::query::<PathQuery>())
        .and(warp::body::stream())
        .then(|name: String, c: Ctx, q: PathQuery, body| async move {
            reply::result(write_file(c, name, q, Box::pin(body)).await)
        });
    let list_r =
        base()
            .and(warp::path!("list"))
            .and(warp::get())
            .and(ctx_filter(ctx.clone()))
            .and(warp::query::<PathQuery>())
            .then(|name: String, c: Ctx, q: PathQuery| async move {
                reply::result(list(c, name, q).await)
            });
    let stat_r =
        base()
            .and(warp::path!("stat"))
            .and(warp::get())
            .and(ctx_filter(ctx.clone()))
            .and(warp::query::<PathQuery>())
            .then(|name: String, c: Ctx, q: PathQuery| async move {
                reply::result(stat(c, name, q).await)
            });
    let mkdir = base()
        .and(warp::path!("mkdir"))
        .and(warp::post())
        .and(ctx_filter(ctx.clone()))
        .and(json_filter::<FsPathOp>())
        .then(|name: String, c: Ctx, op: FsPathOp| async move {
            simple(
                c,
                name,
                Request::Mkdir {
                    path: op.path,
                    parents: op.recursive,
                },
            )
            .await
        });
    let remove = base()
        .and(warp::path!("remove"))
        .and(warp::post())
        .and(ctx_filter(ctx.clone()))
        .and(json_filter::<FsPathOp>())
        .then(|name: String, c: Ctx, op: FsPathOp| async move {
            simple(
                c,
                name,
                Request::Remove {
                    path: op.path,
                    recursive: op.recursive,
                },
            )
            .await
        });
    let rename = base()
        .and(warp::path!("rename"))
        .and(warp::post())
        .and(ctx_filter(ctx.clone()))
        .and(json_filter::<FsMove>())
        .then(|name: String, c: Ctx, m: FsMove| async move {
            simple(
                c,
                name,
                Request::Rename {
                    from: m.from,
                    to: m.to,
                },
            )
            .await
        });
    let copy = base()
        .and(warp::path!("copy"))
        .and(warp::post())
        .and(ctx_filter(ctx))
        .and(json_filter::<FsMove>())
        .then(|name: String, c: Ctx, m: FsMove| async move {
            simple(
                c,
                name,
                Request::Copy {
                    from: m.from,
                    to: m.to,
                },
            )
            .await
        });
    get_file
        .or(put_file)
        .unify()
        .boxed()
        .or(list_r)
        .unify()
        .boxed()
        .or(stat_r)
        .unify()
        .boxed()
        .or(mkdir)
        .unify()
        .boxed()
        .or(remove)
        .unify()
        .boxed()
        .or(rename)
        .unify()
        .boxed()
        .or(copy)
        .unify()
        .boxed()
}
