//! Image pulls: `POST /v1/images/pull`, answered with newline-delimited JSON progress events.

use crate::error::{ClientError, Result};
use crate::http::{body_error, AgentClient, Payload};
use bytes::{Buf, Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Method;
use microsandbox_wire::api::{PullEvent, PullImage};

/// Longest NDJSON line accepted (a progress event is far smaller).
const MAX_LINE: usize = 1024 * 1024;

/// Splits a byte stream into `\n`-terminated lines, without holding more than one line.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    buf: BytesMut,
    /// Bytes of `buf` already known to hold no newline.
    scanned: usize,
}

impl LineSplitter {
    /// Appends received bytes.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete line (without its `\n` or `\r\n`), if one is buffered.
    pub(crate) fn next_line(&mut self) -> Result<Option<Bytes>> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let mut line = self.buf.split_to(self.scanned + i + 1);
                self.scanned = 0;
                line.truncate(line.len() - 1);
                if line.last() == Some(&b'\r') {
                    line.truncate(line.len() - 1);
                }
                Ok(Some(line.freeze()))
            }
            None if self.buf.len() > MAX_LINE => Err(ClientError::Protocol(format!(
                "NDJSON line longer than {MAX_LINE} bytes"
            ))),
            None => {
                self.scanned = self.buf.len();
                Ok(None)
            }
        }
    }

    /// What is left after the stream ended (a last line without `\n`), if anything.
    pub(crate) fn finish(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        let rest = self.buf.split().freeze();
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

/// Parses one NDJSON line; `None` for a blank line.
fn parse_event(line: &[u8]) -> Result<Option<PullEvent>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(line).map(Some).map_err(|e| {
        ClientError::Protocol(format!(
            "bad pull event ({e}): {}",
            String::from_utf8_lossy(&line[..line.len().min(256)])
        ))
    })
}

/// Incremental decoder of the pull stream: turns received chunks into events, turns an `error`
/// event into `Err(ClientError::Api)`, and reports a stream that ends before `done` or `error`.
#[derive(Debug, Default)]
pub(crate) struct PullDecoder {
    lines: LineSplitter,
    /// A terminal event (`done`, `error`) or an error was produced: nothing more will be.
    finished: bool,
}

impl PullDecoder {
    /// Next item from buffered bytes, if a complete line is there.
    pub(crate) fn next(&mut self) -> Option<Result<PullEvent>> {
        while !self.finished {
            let line = match self.lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return None,
                Err(e) => return Some(self.fail(e)),
            };
            match parse_event(&line) {
                Ok(None) => continue,
                Ok(Some(ev)) => return Some(self.emit(ev)),
                Err(e) => return Some(self.fail(e)),
            }
        }
        None
    }

    /// Feeds received bytes.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.lines.push(data);
    }

    /// The body ended: the last unterminated line's event, or an error if the stream was
    /// truncated; `None` once finished.
    pub(crate) fn finish(&mut self) -> Option<Result<PullEvent>> {
        if self.finished {
            return None;
        }
        if let Some(rest) = self.lines.finish() {
            match parse_event(&rest) {
                Ok(Some(ev)) => return Some(self.emit(ev)),
                Ok(None) => {}
                Err(e) => return Some(self.fail(e)),
            }
        }
        Some(self.fail(ClientError::Protocol(
            "image pull stream ended before a `done` or `error` event".into(),
        )))
    }

    fn emit(&mut self, ev: PullEvent) -> Result<PullEvent> {
        match ev {
            PullEvent::Error { error } => self.fail(ClientError::Api(error)),
            PullEvent::Done { .. } => {
                self.finished = true;
                Ok(ev)
            }
            other => Ok(other),
        }
    }

    fn fail(&mut self, e: ClientError) -> Result<PullEvent> {
        self.finished = true;
        Err(e)
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }
}

/// Streams the events of a pull response body.
fn pull_events(body: Incoming) -> BoxStream<'static, Result<PullEvent>> {
    let state = (Some(body), PullDecoder::default());
    stream::unfold(state, |(mut body, mut dec)| async move {
        loop {
            if let Some(item) = dec.next() {
                return Some((item, (body, dec)));
            }
            if dec.is_finished() {
                return None;
            }
            let Some(b) = body.as_mut() else {
                return dec.finish().map(|item| (item, (None, dec)));
            };
            match b.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        dec.push(data.chunk());
                    }
                }
                Some(Err(e)) => {
                    dec.finished = true;
                    return Some((Err(body_error(e)), (None, dec)));
                }
                None => body = None,
            }
        }
    })
    .boxed()
}

impl AgentClient {
    /// `POST /v1/images/pull`: pulls an image, yielding progress as it happens. The stream ends
    /// after [`PullEvent::Done`]; a failed pull yields `Err(ClientError::Api)` (the server's
    /// `error` event) and ends, as does a connection that breaks before `done`.
    pub async fn pull_image(
        &self,
        req: PullImage,
    ) -> Result<BoxStream<'static, Result<PullEvent>>> {
        let resp = self
            .send(Method::POST, "/v1/images/pull", Payload::json(&req)?)
            .await?;
        Ok(pull_events(resp.into_body()))
    }

    /// Pulls an image to completion, ignoring progress; returns the image digest.
    pub async fn pull_image_wait(&self, req: PullImage) -> Result<String> {
        let mut events = self.pull_image(req).await?;
        while let Some(ev) = events.try_next().await? {
            if let PullEvent::Done { digest } = ev {
                return Ok(digest);
            }
        }
        Err(ClientError::Protocol(
            "image pull stream ended without `done`".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microsandbox_wire::api::ErrorCode;

    fn feed(chunks: &[&[u8]]) -> Vec<Result<PullEvent>> {
        let mut dec = PullDecoder::default();
        let mut out = Vec::new();
        for c in chunks {
            dec.push(c);
            while let Some(item) = dec.next() {
                out.push(item);
            }
        }
        out.extend(dec.finish());
        out
    }

    #[test]
    fn lines_split_across_chunks() {
        let mut s = LineSplitter::default();
        s.push(b"ab");
        assert!(s.next_line().unwrap().is_none());
        s.push(b"c\r\nde\nf");
        assert_eq!(s.next_line().unwrap().unwrap(), &b"abc"[..]);
        assert_eq!(s.next_line().unwrap().unwrap(), &b"de"[..]);
        assert!(s.next_line().unwrap().is_none());
        assert_eq!(s.finish().unwrap(), &b"f"[..]);
        assert!(s.finish().is_none());
    }

    #[test]
    fn overlong_line_is_an_error() {
        let mut s = LineSplitter::default();
        s.push(&vec![b'x'; MAX_LINE + 1]);
        assert!(s.next_line().is_err());
    }

    #[test]
    fn events_incremental_until_done() {
        let out = feed(&[
            br#"{"event":"resolved","reference":"docker.io/library/python:3"}"#,
            b"\n\n{\"event\":\"layer_cached\",\"di",
            b"gest\":\"sha256:a\"}\n{\"event\":\"done\",\"digest\":\"sha256:d\"}",
        ]);
        let out: Vec<_> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            out,
            vec![
                PullEvent::Resolved {
                    reference: "docker.io/library/python:3".into()
                },
                PullEvent::LayerCached {
                    digest: "sha256:a".into()
                },
                PullEvent::Done {
                    digest: "sha256:d".into()
                },
            ]
        );
    }

    #[test]
    fn nothing_after_done() {
        let out = feed(&[b"{\"event\":\"done\",\"digest\":\"d\"}\n{\"event\":\"bogus\"}\n"]);
        assert_eq!(out.len(), 1);
        assert!(out[0].is_ok());
    }

    #[test]
    fn error_event_becomes_api_error() {
        let out = feed(&[
            b"{\"event\":\"manifest\",\"digest\":\"d\",\"layers\":2}\n",
            br#"{"event":"error","error":{"code":"registry_unreachable","message":"x"}}"#,
            b"\n",
        ]);
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0], Ok(PullEvent::Manifest { layers: 2, .. })));
        assert_eq!(
            out[1].as_ref().unwrap_err().code(),
            Some(ErrorCode::RegistryUnreachable)
        );
    }

    #[test]
    fn truncated_stream_and_garbage_are_protocol_errors() {
        let out = feed(&[b"{\"event\":\"layer_extracted\",\"digest\":\"d\"}\n"]);
        assert_eq!(out.len(), 2);
        assert!(matches!(out[1], Err(ClientError::Protocol(_))));

        let out = feed(&[b"not json\n{\"event\":\"done\",\"digest\":\"d\"}\n"]);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], Err(ClientError::Protocol(_))));

        assert!(matches!(feed(&[])[..], [Err(ClientError::Protocol(_))]));
    }
}
