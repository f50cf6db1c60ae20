//! Filesystem snapshots: a sandbox's writable layer (an overlayfs upper directory) written as an
//! OCI layer tarball — overlayfs whiteouts (0:0 character devices) become `.wh.NAME` entries and
//! opaque directories (`trusted.overlay.opaque=y`) get a `.wh..wh..opq` entry — and recorded in
//! the image store as an image of its own: the sandbox's image layers plus this one, under
//! `microsandbox.local/snapshots/NAME`, which a create can name as its image.
//!
//! The tarball is the layer's real content (its sha256 is the layer digest); it is extracted into
//! the layer cache by the same code as a pulled layer, so a snapshot is read exactly like one.

use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The registry name of snapshot references: never contacted, only looked up locally.
pub const SNAPSHOT_REGISTRY: &str = "microsandbox.local";

/// The image reference of snapshot `name`.
pub fn reference(name: &str) -> String {
    format!("{SNAPSHOT_REGISTRY}/snapshots/{name}:latest")
}

/// The snapshot name of a (canonical) reference, if it is one.
pub fn name_of(reference: &str) -> Option<&str> {
    reference
        .strip_prefix(SNAPSHOT_REGISTRY)?
        .strip_prefix("/snapshots/")?
        .strip_suffix(":latest")
}

/// A writer that hashes what goes through it.
pub struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }

    /// `sha256:<hex>` of everything written, and its size.
    pub fn finish(self) -> (String, u64, W) {
        (
            format!("sha256:{}", hex::encode(self.hash.finalize())),
            self.bytes,
            self.inner,
        )
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether a directory is opaque in overlayfs terms.
fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|attr| {
            let mut value = [0u8; 8];
            matches!(rustix::fs::lgetxattr(dir, *attr, &mut value), Ok(1) if value[0] == b'y')
        })
}

/// An empty regular file entry named `path` (a whiteout marker).
fn marker<W: Write>(tar: &mut tar::Builder<W>, path: &Path) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_mtime(0);
    tar.append_data(&mut h, path, io::empty())
}

/// Writes upper directory `upper` as an OCI layer tarball (uncompressed) into `out`.
pub fn write_layer<W: Write>(upper: &Path, out: W) -> io::Result<W> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    walk(&mut tar, upper, Path::new(""))?;
    tar.into_inner()
}

fn walk<W: Write>(tar: &mut tar::Builder<W>, root: &Path, rel: &Path) -> io::Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let rel_path = rel.join(&name);
        let path = root.join(&rel_path);
        let meta = std::fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            // An overlayfs whiteout: NAME was deleted.
            let mut hidden = std::ffi::OsString::from(".wh.");
            hidden.push(&name);
            marker(tar, &rel.join(hidden))?;
        } else if ft.is_dir() {
            tar.append_path_with_name(&path, &rel_path)?;
            if is_opaque(&path) {
                marker(tar, &rel_path.join(".wh..wh..opq"))?;
            }
            walk(tar, root, &rel_path)?;
        } else if ft.is_file() || ft.is_symlink() {
            tar.append_path_with_name(&path, &rel_path)?;
        }
        // Sockets, FIFOs and other devices are not file system content a snapshot keeps.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip() {
        assert_eq!(
            reference("base-1"),
            "microsandbox.local/snapshots/base-1:latest"
        );
        assert_eq!(name_of(&reference("base-1")), Some("base-1"));
        assert_eq!(name_of("docker.io/library/python:latest"), None);
    }

    #[test]
    fn whiteouts_and_opaque_dirs_become_oci_markers_and_extract_back() {
        let upper = tempfile::tempdir().unwrap();
        let u = upper.path();
        std::fs::create_dir_all(u.join("app/data")).unwrap();
        std::fs::write(u.join("app/data/f.txt"), "kept").unwrap();
        std::os::unix::fs::symlink("data/f.txt", u.join("app/link")).unwrap();
        // A deleted file (overlayfs: a 0:0 character device) and an opaque directory.
        nix::sys::stat::mknod(
            &u.join("app/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
            0,
        )
        .unwrap();
        std::fs::create_dir(u.join("opaque")).unwrap();
        rustix::fs::lsetxattr(
            u.join("opaque"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let mut hashing = Hashing::new(Vec::new());
        hashing = write_layer(u, hashing).unwrap();
        let (digest, size, bytes) = hashing.finish();
        assert!(digest.starts_with("sha256:") && size == bytes.len() as u64);
        let mut names: Vec<String> = tar::Archive::new(&bytes[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "app",
                "app/.wh.gone",
                "app/data",
                "app/data/f.txt",
                "app/link",
                "opaque",
                "opaque/.wh..wh..opq"
            ]
        );
        // The same digest for the same content (entries in a fixed order).
        let (again, _, _) = write_layer(u, Hashing::new(Vec::new())).unwrap().finish();
        assert_eq!(again, digest);
        // Extracted like a pulled layer, it is an overlayfs upper again.
        let out = tempfile::tempdir().unwrap();
        super::super::extract_layer(&bytes[..], out.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path().join("app/data/f.txt")).unwrap(),
            "kept"
        );
        let gone = std::fs::symlink_metadata(out.path().join("app/gone")).unwrap();
        assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
        assert!(is_opaque(&out.path().join("opaque")));
    }
}
