//! Image store: pulls OCI images with oci-client, caches extracted layers by digest (shared by every
//! sandbox), and records each reference's manifest so that `if-not-present` pulls need no registry.

mod error;
mod layer;
mod push;
mod reference;
pub mod snapshot;
mod store;

pub use error::ImageError;
pub use layer::{extract_layer, LayerCompression};
pub use reference::{resolve, ResolvedRef};
pub use store::{ImageConfig, ImageRecord, ImageStore, PushAuth};
