//! Frame codec: length prefix (tokio-util) + postcard body.

use bytes::{Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use super::MAX_FRAME;

/// Errors of the frame layer.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// I/O on the underlying stream failed.
    #[error("i/o error on guest channel: {0}")]
    Io(#[from] std::io::Error),
    /// The frame could not be (de)serialized.
    #[error("malformed frame: {0}")]
    Postcard(#[from] postcard::Error),
}

/// Encodes `Out` frames and decodes `In` frames.
pub struct FrameCodec<In, Out> {
    inner: LengthDelimitedCodec,
    _p: PhantomData<fn(Out) -> In>,
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self {
            inner: LengthDelimitedCodec::builder()
                .max_frame_length(MAX_FRAME)
                .new_codec(),
            _p: PhantomData,
        }
    }
}

impl<In: DeserializeOwned, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = CodecError;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match self.inner.decode(src)? {
            Some(frame) => Ok(Some(postcard::from_bytes(&frame)?)),
            None => Ok(None),
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In, Out> {
    type Error = CodecError;
    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        let body = postcard::to_stdvec(&item)?;
        self.inner.encode(Bytes::from(body), dst)?;
        Ok(())
    }
}

/// Codec used by the host: sends [`super::HostFrame`], receives [`super::GuestFrame`].
pub type HostCodec = FrameCodec<super::GuestFrame, super::HostFrame>;
/// Codec used by the guest: sends [`super::GuestFrame`], receives [`super::HostFrame`].
pub type GuestCodec = FrameCodec<super::HostFrame, super::GuestFrame>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::*;

    #[test]
    fn round_trips_binary_payloads() {
        let mut host = HostCodec::default();
        let mut guest = GuestCodec::default();
        let mut buf = BytesMut::new();
        let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        host.encode(HostFrame::Stdin(data.clone().into()), &mut buf)
            .unwrap();
        match guest.decode(&mut buf).unwrap() {
            Some(HostFrame::Stdin(d)) => assert_eq!(&d[..], &data[..]),
            other => panic!("unexpected {other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_frame_waits_for_more() {
        let mut host = HostCodec::default();
        let mut guest = GuestCodec::default();
        let mut buf = BytesMut::new();
        host.encode(HostFrame::StdinClose, &mut buf).unwrap();
        let mut partial = buf.split_to(buf.len() - 1);
        assert!(guest.decode(&mut partial).unwrap().is_none());
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let mut guest = GuestCodec::default();
        let mut buf = BytesMut::from(&[0, 0, 0, 2, 0xff, 0xff][..]);
        assert!(matches!(
            guest.decode(&mut buf),
            Err(CodecError::Postcard(_))
        ));
    }

    #[test]
    fn oversized_frame_is_refused() {
        let mut guest = GuestCodec::default();
        let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff, 0][..]);
        assert!(matches!(guest.decode(&mut buf), Err(CodecError::Io(_))));
    }
}
