//! The guest channel as the host reads it: a hostile guest controls every byte. Decoding any
//! stream of length-prefixed postcard frames must yield frames or typed errors, never a panic,
//! and never more than the frame limit buffered.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use microsandbox_wire::guest::codec::{GuestCodec, HostCodec};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut host = HostCodec::default();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_frame)) = host.decode(&mut buf) {}
    // And the other direction (the guest agent reading the host's frames).
    let mut guest = GuestCodec::default();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_frame)) = guest.decode(&mut buf) {}
});
