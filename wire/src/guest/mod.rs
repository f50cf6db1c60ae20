//! Host <-> guest-agent protocol.
//!
//! Transport: a stream socket (unix socket bind-mounted into a container, vsock or virtio-console in a
//! microVM). Framing: a 4-byte big-endian length prefix per frame ([`codec::FrameCodec`], built on
//! tokio-util's `LengthDelimitedCodec`, 16 MiB max). Serialization: postcard (compact, schema-less,
//! stable 1.0 wire format, zero-copy-friendly for byte payloads; JSON would base64 every stdout chunk).
//!
//! Each connection carries exactly one conversation: the host sends [`Hello`] then one [`Request`];
//! the guest answers [`HelloAck`] and then the frames that request defines (see [`Request`]).
//! One connection per conversation keeps both sides free of multiplexing state; connecting to a
//! local socket costs microseconds.

pub mod codec;
mod messages;
pub mod mounts;

pub use messages::*;
pub use mounts::GuestMount;

/// Protocol version spoken by this build. The guest refuses a host whose major differs.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either side accepts (payload chunks are far smaller; see [`CHUNK_SIZE`]).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Size of data chunks for file transfer and process output.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// Path of the guest agent inside every sandbox root.
pub const GUEST_AGENT_PATH: &str = "/.msb/agent";
/// Directory (inside the sandbox) holding the agent's listening socket in the container runtime.
pub const GUEST_SOCKET_DIR: &str = "/.msb/run";
/// File name of the agent's socket inside [`GUEST_SOCKET_DIR`].
pub const GUEST_SOCKET_NAME: &str = "agent.sock";
/// vsock port the guest agent listens on inside a microVM.
pub const GUEST_VSOCK_PORT: u32 = 7000;
