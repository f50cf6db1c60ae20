//! Filesystem routes (`/v1/sandboxes/{name}/fs/...`). File contents are streamed both ways,
//! never held whole in memory.

use crate::error::{ClientError, Result};
use crate::http::{body_error, sandbox_path, with_query, AgentClient, Payload};
use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt, TryStreamExt};
use http_body_util::{BodyDataStream, BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Method;
use microsandbox_wire::api::{FileStat, FsMove, FsPathOp};
use serde::Deserialize;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

/// Read size when uploading a host file.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// Answer of `PUT .../fs/file`.
#[derive(Debug, Deserialize)]
struct Written {
    bytes: u64,
}

/// `.../fs/{op}?path=P`.
fn fs_path(name: &str, op: &str, path: &str) -> String {
    with_query(sandbox_path(name, &format!("/fs/{op}")), &[("path", path)])
}

/// Query of `PUT .../fs/file`.
fn write_path(name: &str, path: &str, mode: Option<u32>, append: bool) -> String {
    let mode = mode.map(|m| m.to_string());
    let mut params = vec![("path", path)];
    if let Some(m) = &mode {
        params.push(("mode", m));
    }
    params.push(("append", if append { "true" } else { "false" }));
    with_query(sandbox_path(name, "/fs/file"), &params)
}

impl AgentClient {
    /// `GET .../fs/file?path=P`: the file's bytes as they arrive. Errors such as a missing path
    /// are returned before any byte; a broken connection ends the stream with `Err`.
    pub async fn fs_read(
        &self,
        name: &str,
        path: &str,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let resp = self
            .send(Method::GET, &fs_path(name, "file", path), Payload::Empty)
            .await?;
        Ok(BodyDataStream::new(resp.into_body())
            .map_err(body_error)
            .boxed())
    }

    /// Copies a sandbox file to `host_path` (created or truncated) chunk by chunk; returns the
    /// bytes written. Nothing is created if the request fails; a partial file is removed.
    pub async fn fs_read_to_file(
        &self,
        name: &str,
        guest_path: &str,
        host_path: impl AsRef<Path>,
    ) -> Result<u64> {
        let host_path = host_path.as_ref();
        let mut chunks = self.fs_read(name, guest_path).await?;
        let mut file = tokio::fs::File::create(host_path)
            .await
            .map_err(|e| with_path(e, host_path))?;
        let copied = async {
            let mut n = 0u64;
            while let Some(chunk) = chunks.try_next().await? {
                file.write_all(&chunk)
                    .await
                    .map_err(|e| with_path(e, host_path))?;
                n += chunk.len() as u64;
            }
            file.flush().await.map_err(|e| with_path(e, host_path))?;
            Ok::<_, ClientError>(n)
        }
        .await;
        drop(file);
        if copied.is_err() {
            let _ = tokio::fs::remove_file(host_path).await;
        }
        copied
    }

    /// `PUT .../fs/file`: writes `body` to `path` as it is produced (`append` adds to the end;
    /// `mode`, e.g. `0o644`, applies to a new file, the agent's default when `None`). Returns the
    /// bytes the agent wrote. An `Err` from `body` aborts the upload.
    pub async fn fs_write<S>(
        &self,
        name: &str,
        path: &str,
        mode: Option<u32>,
        append: bool,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + 'static,
    {
        // Whether `body` itself failed (as opposed to the connection).
        let body_failed = Arc::new(AtomicBool::new(false));
        let flag = body_failed.clone();
        let body = body.inspect_err(move |_| flag.store(true, Ordering::Relaxed));
        let body = StreamBody::new(body.map_ok(Frame::data)).boxed_unsync();
        let url = write_path(name, path, mode, append);
        match self
            .call_json::<Written>(Method::PUT, &url, Payload::Octets(body))
            .await
        {
            Ok(written) => Ok(written.bytes),
            // An agent that refuses an upload before reading it (say, no such sandbox) answers and
            // closes; the client may see only the broken pipe. Ask again to report its real error.
            Err(ClientError::Io(e)) if !body_failed.load(Ordering::Relaxed) => {
                match self.get(name).await {
                    Err(api @ ClientError::Api(_)) => Err(api),
                    _ => Err(ClientError::Io(e)),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Writes `data` to `path` (created or truncated).
    pub async fn fs_write_bytes(
        &self,
        name: &str,
        path: &str,
        mode: Option<u32>,
        data: impl Into<Bytes>,
    ) -> Result<u64> {
        let data: Bytes = data.into();
        self.fs_write(name, path, mode, false, futures::stream::iter([Ok(data)]))
            .await
    }

    /// Uploads the host file `host_path` to `guest_path` (created or truncated), streaming it from
    /// disk; the file's permission bits (`0o777` part) become the guest file's mode.
    pub async fn fs_write_from_file(
        &self,
        name: &str,
        host_path: impl AsRef<Path>,
        guest_path: &str,
    ) -> Result<u64> {
        let host_path = host_path.as_ref();
        let file = tokio::fs::File::open(host_path)
            .await
            .map_err(|e| with_path(e, host_path))?;
        let meta = file.metadata().await.map_err(|e| with_path(e, host_path))?;
        if meta.is_dir() {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is a directory", host_path.display()),
            )));
        }
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            meta.permissions().mode() & 0o777
        };
        let shown = host_path.display().to_string();
        let body = ReaderStream::with_capacity(file, UPLOAD_CHUNK)
            .map_err(move |e| io::Error::new(e.kind(), format!("reading {shown}: {e}")));
        self.fs_write(name, guest_path, Some(mode), false, body)
            .await
    }

    /// `GET .../fs/list?path=P`: the entries of a directory.
    pub async fn fs_list(&self, name: &str, path: &str) -> Result<Vec<FileStat>> {
        self.call_json(Method::GET, &fs_path(name, "list", path), Payload::Empty)
            .await
    }

    /// `GET .../fs/stat?path=P`.
    pub async fn fs_stat(&self, name: &str, path: &str) -> Result<FileStat> {
        self.call_json(Method::GET, &fs_path(name, "stat", path), Payload::Empty)
            .await
    }

    /// `POST .../fs/mkdir`; `parents` creates missing parents (like `mkdir -p`).
    pub async fn fs_mkdir(&self, name: &str, path: &str, parents: bool) -> Result<()> {
        let op = FsPathOp {
            path: path.into(),
            recursive: parents,
        };
        self.call_unit(
            Method::POST,
            &sandbox_path(name, "/fs/mkdir"),
            Payload::json(&op)?,
        )
        .await
    }

    /// `POST .../fs/remove`; `recursive` removes a directory and its contents.
    pub async fn fs_remove(&self, name: &str, path: &str, recursive: bool) -> Result<()> {
        let op = FsPathOp {
            path: path.into(),
            recursive,
        };
        self.call_unit(
            Method::POST,
            &sandbox_path(name, "/fs/remove"),
            Payload::json(&op)?,
        )
        .await
    }

    /// `POST .../fs/rename`.
    pub async fn fs_rename(&self, name: &str, from: &str, to: &str) -> Result<()> {
        let op = FsMove {
            from: from.into(),
            to: to.into(),
        };
        self.call_unit(
            Method::POST,
            &sandbox_path(name, "/fs/rename"),
            Payload::json(&op)?,
        )
        .await
    }

    /// `POST .../fs/copy`.
    pub async fn fs_copy(&self, name: &str, from: &str, to: &str) -> Result<()> {
        let op = FsMove {
            from: from.into(),
            to: to.into(),
        };
        self.call_unit(
            Method::POST,
            &sandbox_path(name, "/fs/copy"),
            Payload::json(&op)?,
        )
        .await
    }
}

/// Adds the host path to a local I/O error.
fn with_path(e: io::Error, path: &Path) -> ClientError {
    ClientError::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_urls() {
        assert_eq!(
            fs_path("sb", "stat", "/etc/os release"),
            "/v1/sandboxes/sb/fs/stat?path=/etc/os%20release"
        );
        assert_eq!(
            write_path("sb", "/tmp/a&b", Some(0o644), false),
            "/v1/sandboxes/sb/fs/file?path=/tmp/a%26b&mode=420&append=false"
        );
        assert_eq!(
            write_path("sb", "/x", None, true),
            "/v1/sandboxes/sb/fs/file?path=/x&append=true"
        );
    }
}
