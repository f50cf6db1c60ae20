//! Layer extraction into a directory usable as an overlayfs lower layer.
//!
//! OCI whiteouts become overlayfs whiteouts: `.wh.NAME` -> a 0:0 character device `NAME`;
//! `.wh..wh..opq` -> the `trusted.overlay.opaque=y` xattr on its directory. Paths are confined to
//! the destination by the tar crate's `unpack_in` (no `..` or absolute-path escape).

use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// Layer compression, from the media type or sniffed from the first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
}

impl LayerCompression {
    /// Sniff gzip's magic number.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            LayerCompression::Gzip
        } else {
            LayerCompression::None
        }
    }
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What a tar entry path means for the overlay.
#[derive(Debug, PartialEq, Eq)]
enum EntryKind {
    /// Regular content.
    Content,
    /// The parent directory hides everything below it from lower layers.
    Opaque(PathBuf),
    /// The named sibling is deleted.
    Whiteout(PathBuf),
}

fn classify(path: &Path) -> Result<EntryKind, String> {
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("entry {} escapes the layer", path.display()));
    }
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(EntryKind::Content);
    };
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if name == OPAQUE_MARKER {
        Ok(EntryKind::Opaque(parent))
    } else if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() {
            return Err(format!("entry {} is an empty whiteout", path.display()));
        }
        Ok(EntryKind::Whiteout(parent.join(hidden)))
    } else {
        Ok(EntryKind::Content)
    }
}

/// Strip leading `/` and `./` so entry paths are relative to the layer root.
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect()
}

/// Extract a layer tarball (gzip or plain) into `dest` (which must exist and be empty).
pub fn extract_layer(blob: impl Read, dest: &Path) -> Result<(), String> {
    let mut reader = BufReader::with_capacity(256 * 1024, blob);
    let head = {
        use std::io::BufRead;
        reader.fill_buf().map_err(|e| e.to_string())?.to_vec()
    };
    let stream: Box<dyn Read> = match LayerCompression::sniff(&head) {
        LayerCompression::Gzip => Box::new(flate2::read::GzDecoder::new(reader)),
        LayerCompression::None => Box::new(reader),
    };
    let mut archive = tar::Archive::new(stream);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let raw = entry.path().map_err(|e| e.to_string())?.into_owned();
        let path = relative(&raw);
        match classify(&path)? {
            EntryKind::Content => {
                entry
                    .unpack_in(dest)
                    .map_err(|e| format!("{}: {}", raw.display(), chain(&e)))?;
            }
            EntryKind::Opaque(dir) => {
                let dir = beneath(dest, &dir, true)?;
                set_opaque(&dir)?;
            }
            EntryKind::Whiteout(target) => {
                let target = beneath(dest, &target, false)?;
                make_whiteout(&target)?;
            }
        }
    }
    Ok(())
}

/// `dest/rel` with every directory on the way created and none of them a symlink, so that a
/// whiteout can never act outside the layer (a layer may plant `a -> /etc` and then whiteout
/// `a/passwd`). With `last_is_dir` the final component is a directory too.
fn beneath(dest: &Path, rel: &Path, last_is_dir: bool) -> Result<PathBuf, String> {
    let parts: Vec<_> = rel.components().collect();
    let dirs = if last_is_dir {
        parts.len()
    } else {
        parts.len().saturating_sub(1)
    };
    let mut path = dest.to_path_buf();
    for (i, c) in parts.iter().enumerate() {
        let Component::Normal(name) = c else {
            return Err(format!("entry {} escapes the layer", rel.display()));
        };
        path.push(name);
        if i < dirs {
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(format!("entry {} goes through a symlink", rel.display()))
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(format!(
                        "entry {} goes through a non-directory",
                        rel.display()
                    ))
                }
                Err(_) => {
                    std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?
                }
            }
        }
    }
    Ok(path)
}

/// An error with its causes (tar's own message omits the underlying I/O error).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn set_opaque(dir: &Path) -> Result<(), String> {
    xattr_set(dir, "trusted.overlay.opaque", b"y")
}

fn make_whiteout(path: &Path) -> Result<(), String> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    let _ = std::fs::remove_file(path);
    mknod(path, SFlag::S_IFCHR, Mode::empty(), 0)
        .map_err(|e| format!("whiteout {}: {e}", path.display()))
}

fn xattr_set(path: &Path, name: &str, value: &[u8]) -> Result<(), String> {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .map_err(|e| format!("setxattr {name} on {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn classifies_whiteouts() {
        assert_eq!(
            classify(Path::new("etc/.wh.passwd")).unwrap(),
            EntryKind::Whiteout("etc/passwd".into())
        );
        assert_eq!(
            classify(Path::new("var/.wh..wh..opq")).unwrap(),
            EntryKind::Opaque("var".into())
        );
        assert_eq!(
            classify(Path::new("etc/passwd")).unwrap(),
            EntryKind::Content
        );
        assert!(classify(Path::new("a/../../etc")).is_err());
    }

    #[test]
    fn relative_strips_root() {
        assert_eq!(relative(Path::new("/./etc/x")), PathBuf::from("etc/x"));
    }

    #[test]
    fn extracts_plain_and_gzip_with_whiteouts() {
        let tarball = tar_of(&[("etc/hello", b"hi"), ("etc/.wh.gone", b"")]);
        for compress in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let blob = if compress {
                use std::io::Write;
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&tarball).unwrap();
                e.finish().unwrap()
            } else {
                tarball.clone()
            };
            extract_layer(&blob[..], dir.path()).unwrap();
            assert_eq!(std::fs::read(dir.path().join("etc/hello")).unwrap(), b"hi");
            let wh = std::fs::symlink_metadata(dir.path().join("etc/gone")).unwrap();
            assert!(wh.file_type().is_char_device());
        }
    }

    #[test]
    fn whiteouts_never_follow_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), b"keep").unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_link(&mut h, "a", outside.path()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "a/.wh.victim", &b""[..]).unwrap();
        let blob = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert!(extract_layer(&blob[..], dir.path()).is_err());
        assert_eq!(
            std::fs::read(outside.path().join("victim")).unwrap(),
            b"keep"
        );
    }

    #[test]
    fn refuses_escaping_entries() {
        // tar::Builder refuses to write `..` paths, so craft the header by hand.
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..10].copy_from_slice(b"../evil.tx");
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut blob = h.as_bytes().to_vec();
        blob.extend_from_slice(&[0u8; 1024]);
        let dir = tempfile::tempdir().unwrap();
        assert!(extract_layer(&blob[..], &dir.path().join("sub")).is_err());
        assert!(!dir.path().join("evil.tx").exists());
    }
}
