//! Root filesystem patches, applied on the host to a sandbox's merged root before it boots (so
//! both runtimes see them at first exec, and the writes land in the sandbox's own upper layer).
//!
//! Every path resolves *inside* the root: directories are opened with `openat2(RESOLVE_IN_ROOT)`
//! and the last component is handled with `*at` calls that do not follow it, so a symlink in the
//! image or made by an earlier patch (`/etc -> /`) can never lead a write onto the host. Copies
//! read the host only below the agent's `--host-root`s, after resolving symlinks.
//!
//! Written against nix's `*at` calls rather than a crate: none of the maintained "safe path"
//! crates cover mkdir -p, symlink creation and tree removal relative to a root directory fd.

use base64::Engine as _;
use microsandbox_wire::api::RootPatch;
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{symlinkat, unlinkat, UnlinkatFlags};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::host_access::HostAccess;

/// A patch that could not be applied; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("patch {index} ({op} {path}): {reason}")]
pub struct PatchError {
    /// Position in the request's `patches` (0-based).
    pub index: usize,
    pub op: &'static str,
    pub path: String,
    pub reason: String,
}

/// Apply `patches` in order to the root filesystem mounted at `root`.
pub fn apply(root: &Path, patches: &[RootPatch], host: &HostAccess) -> Result<(), PatchError> {
    if patches.is_empty() {
        return Ok(());
    }
    let r = Root::open(root).map_err(|e| PatchError {
        index: 0,
        op: "open",
        path: root.display().to_string(),
        reason: e.to_string(),
    })?;
    for (index, p) in patches.iter().enumerate() {
        r.apply_one(p, host).map_err(|reason| PatchError {
            index,
            op: p.op(),
            path: p.path().to_string(),
            reason,
        })?;
    }
    Ok(())
}

/// The components of an absolute sandbox path; `..` is refused, `.` and empty parts dropped.
fn components(path: &str) -> Result<Vec<&str>, String> {
    if !path.starts_with('/') {
        return Err("the path must be absolute".into());
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return Err("the path must not contain '..'".into());
    }
    Ok(parts)
}

fn decode(b64: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("content is not base64: {e}"))
}

fn mode(bits: u32) -> Mode {
    Mode::from_bits_truncate(bits & 0o7777)
}

fn owned(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open call and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The sandbox root, as a directory fd everything resolves against.
struct Root {
    fd: OwnedFd,
}

impl Root {
    fn open(path: &Path) -> nix::Result<Self> {
        let fd = openat(
            None,
            path,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self { fd: owned(fd) })
    }

    /// Open the directory made of `parts` (relative to the root), resolved inside it.
    fn dir(&self, parts: &[&str]) -> nix::Result<OwnedFd> {
        let rel = if parts.is_empty() {
            ".".to_string()
        } else {
            parts.join("/")
        };
        let how = OpenHow::new()
            .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(self.fd.as_raw_fd(), rel.as_str(), how).map(owned)
    }

    /// `mkdir -p` of `parts`; returns the last directory.
    fn mkdir_p(&self, parts: &[&str]) -> Result<OwnedFd, String> {
        let mut dir = self.dir(&[]).map_err(|e| e.to_string())?;
        for i in 0..parts.len() {
            dir = match self.dir(&parts[..=i]) {
                Ok(d) => d,
                Err(Errno::ENOENT) => {
                    match mkdirat(Some(dir.as_raw_fd()), parts[i], mode(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(format!("mkdir {}: {e}", parts[..=i].join("/"))),
                    }
                    self.dir(&parts[..=i])
                        .map_err(|e| format!("open {}: {e}", parts[..=i].join("/")))?
                }
                Err(Errno::ENOTDIR) => {
                    return Err(format!("/{} is not a directory", parts[..=i].join("/")))
                }
                Err(e) => return Err(format!("open /{}: {e}", parts[..=i].join("/"))),
            };
        }
        Ok(dir)
    }

    /// The parent directory (created if missing) and the last component of `path`.
    fn parent_of<'a>(&self, path: &'a str) -> Result<(OwnedFd, &'a str), String> {
        let parts = components(path)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err("the path must not be '/'".into());
        };
        Ok((self.mkdir_p(parents)?, name))
    }

    fn write_file(
        &self,
        path: &str,
        data: &[u8],
        append: bool,
        perm: Option<u32>,
    ) -> Result<(), String> {
        let (dir, name) = self.parent_of(path)?;
        let mut flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        flags |= if append {
            OFlag::O_APPEND
        } else {
            OFlag::O_TRUNC
        };
        let create_mode = mode(perm.unwrap_or(0o644));
        let fd = match openat(Some(dir.as_raw_fd()), name, flags, create_mode) {
            // A symlink at the path: replace it with the file (writing through it could land
            // anywhere the link points).
            Err(Errno::ELOOP) if !append => {
                unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| format!("replace symlink: {e}"))?;
                openat(Some(dir.as_raw_fd()), name, flags, create_mode)
            }
            Err(Errno::ELOOP) => return Err("the path is a symlink".into()),
            other => other,
        }
        .map_err(|e| e.to_string())?;
        let fd = owned(fd);
        if let Some(p) = perm {
            fchmod(fd.as_raw_fd(), mode(p)).map_err(|e| format!("chmod: {e}"))?;
        }
        std::fs::File::from(fd)
            .write_all(data)
            .map_err(|e| format!("write: {e}"))
    }

    fn mkdir(&self, path: &str, perm: Option<u32>) -> Result<(), String> {
        let parts = components(path)?;
        let dir = self.mkdir_p(&parts)?;
        if let Some(p) = perm {
            fchmod(dir.as_raw_fd(), mode(p)).map_err(|e| format!("chmod: {e}"))?;
        }
        Ok(())
    }

    fn symlink(&self, path: &str, target: &str) -> Result<(), String> {
        let (dir, name) = self.parent_of(path)?;
        match unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::EISDIR) => return Err("a directory is in the way".into()),
            Err(e) => return Err(format!("replace: {e}")),
        }
        symlinkat(target, Some(dir.as_raw_fd()), name).map_err(|e| e.to_string())
    }

    fn remove(&self, path: &str) -> Result<(), String> {
        let parts = components(path)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err("cannot remove '/'".into());
        };
        let dir = match self.dir(parents) {
            Ok(d) => d,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        remove_at(&dir, name)
    }

    fn copy(
        &self,
        src: &str,
        path: &str,
        perm: Option<u32>,
        host: &HostAccess,
    ) -> Result<(), String> {
        let src = host.resolve(Path::new(src))?;
        let meta = std::fs::metadata(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        if meta.is_file() {
            let data = std::fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
            use std::os::unix::fs::PermissionsExt;
            return self.write_file(path, &data, false, perm.or(Some(meta.permissions().mode())));
        }
        if !meta.is_dir() {
            return Err(format!(
                "{} is neither a file nor a directory",
                src.display()
            ));
        }
        self.copy_tree(&src, path)
    }

    /// Copy a host directory tree; symlinks are copied as links, other special files skipped.
    fn copy_tree(&self, src: &Path, dst: &str) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::symlink_metadata(src).map_err(|e| format!("{}: {e}", src.display()))?;
        self.mkdir(dst, Some(meta.permissions().mode()))?;
        let entries = std::fs::read_dir(src).map_err(|e| format!("{}: {e}", src.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", src.display()))?;
            let name = entry.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| format!("{}: non-UTF-8 file name", entry.path().display()))?;
            let target = format!("{}/{name}", dst.trim_end_matches('/'));
            let kind = entry.file_type().map_err(|e| e.to_string())?;
            let p = entry.path();
            if kind.is_symlink() {
                let link = std::fs::read_link(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                self.symlink(&target, &link.to_string_lossy())?;
            } else if kind.is_dir() {
                self.copy_tree(&p, &target)?;
            } else if kind.is_file() {
                let data = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                let m = entry
                    .metadata()
                    .map_err(|e| e.to_string())?
                    .permissions()
                    .mode();
                self.write_file(&target, &data, false, Some(m))?;
            }
        }
        Ok(())
    }

    fn apply_one(&self, p: &RootPatch, host: &HostAccess) -> Result<(), String> {
        match p {
            RootPatch::Text {
                path,
                content_b64,
                mode,
            } => self.write_file(
                path,
                &decode(content_b64)?,
                false,
                Some(mode.unwrap_or(0o644)),
            ),
            RootPatch::Append { path, content_b64 } => {
                self.write_file(path, &decode(content_b64)?, true, None)
            }
            RootPatch::Mkdir { path, mode } => self.mkdir(path, *mode),
            RootPatch::Symlink { path, target } => self.symlink(path, target),
            RootPatch::Remove { path } => self.remove(path),
            RootPatch::Copy { src, path, mode } => self.copy(src, path, *mode, host),
        }
    }
}

/// Remove `name` in `dir` (a tree for a directory), never following symlinks.
fn remove_at(dir: &OwnedFd, name: &str) -> Result<(), String> {
    let st = match fstatat(
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| e.to_string());
    }
    let child = owned(
        openat(
            Some(dir.as_raw_fd()),
            name,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| e.to_string())?,
    );
    let names: Vec<String> = {
        let dup = child.try_clone().map_err(|e| e.to_string())?;
        let mut d = nix::dir::Dir::from(dup).map_err(|e| e.to_string())?;
        d.iter()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().ok().map(str::to_string))
            .filter(|n| n != "." && n != "..")
            .collect()
    };
    for n in names {
        remove_at(&child, &n)?;
    }
    unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn text(path: &str, content: &str) -> RootPatch {
        RootPatch::Text {
            path: path.into(),
            content_b64: b64(content),
            mode: None,
        }
    }

    #[test]
    fn each_kind_applies_in_order() {
        let root = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(host.path().join("src/sub")).unwrap();
        std::fs::write(host.path().join("src/sub/a.txt"), "A").unwrap();
        std::fs::write(host.path().join("one.txt"), "ONE").unwrap();
        std::os::unix::fs::symlink("a.txt", host.path().join("src/sub/link")).unwrap();
        let patches = vec![
            RootPatch::Mkdir {
                path: "/app/data".into(),
                mode: Some(0o700),
            },
            text("/app/config.json", "{}"),
            RootPatch::Append {
                path: "/app/config.json".into(),
                content_b64: b64("\n"),
            },
            RootPatch::Symlink {
                path: "/app/current".into(),
                target: "/app/data".into(),
            },
            text("/tmp/gone/x", "x"),
            RootPatch::Remove {
                path: "/tmp/gone".into(),
            },
            RootPatch::Copy {
                src: host.path().join("src").display().to_string(),
                path: "/opt/src".into(),
                mode: None,
            },
            RootPatch::Copy {
                src: host.path().join("one.txt").display().to_string(),
                path: "/opt/one.txt".into(),
                mode: Some(0o600),
            },
        ];
        apply(
            root.path(),
            &patches,
            &HostAccess::Roots(vec![host.path().to_path_buf()]),
        )
        .unwrap();
        let r = root.path();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::read_to_string(r.join("app/config.json")).unwrap(),
            "{}\n"
        );
        let m = std::fs::metadata(r.join("app/data"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o700);
        assert_eq!(
            std::fs::read_link(r.join("app/current")).unwrap(),
            Path::new("/app/data")
        );
        assert!(!r.join("tmp/gone").exists());
        assert_eq!(
            std::fs::read_to_string(r.join("opt/src/sub/a.txt")).unwrap(),
            "A"
        );
        assert_eq!(
            std::fs::read_link(r.join("opt/src/sub/link")).unwrap(),
            Path::new("a.txt")
        );
        let m = std::fs::metadata(r.join("opt/one.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600);
    }

    #[test]
    fn symlinks_never_lead_outside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        // The image (or an earlier patch) plants links to the host's directories.
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("/", root.path().join("slash")).unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "host data").unwrap();
        let evil = outside.path().display().to_string();
        let patches = vec![
            text("/escape/planted", "x"),
            text(&format!("/slash{evil}/planted2"), "x"),
            RootPatch::Remove {
                path: format!("/slash{evil}/victim"),
            },
            RootPatch::Remove {
                path: "/escape/victim".into(),
            },
            RootPatch::Mkdir {
                path: "/slash/tmp/mkdir-escape".into(),
                mode: None,
            },
        ];
        // Each either fails (a link that leads nowhere inside the root) or lands inside.
        for p in &patches {
            let _ = apply(root.path(), std::slice::from_ref(p), &HostAccess::default());
        }
        // Nothing outside changed.
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host data");
        assert!(!outside.path().join("planted").exists());
        assert!(!outside.path().join("planted2").exists());
        assert!(!Path::new("/tmp/mkdir-escape").exists());
        assert!(root
            .path()
            .join(evil.trim_start_matches('/'))
            .join("planted2")
            .exists());
        assert!(root.path().join("tmp/mkdir-escape").is_dir());
    }

    #[test]
    fn errors_name_the_patch_and_host_paths_are_confined() {
        let root = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(secret.path(), host.path().join("link-out")).unwrap();
        let copy = |src: String| RootPatch::Copy {
            src,
            path: "/x".into(),
            mode: None,
        };
        for (patch, want) in [
            (
                copy(secret.path().display().to_string()),
                "outside the agent's --host-root",
            ),
            (
                copy(host.path().join("link-out").display().to_string()),
                "outside",
            ),
            (copy(format!("{}/..", host.path().display())), "outside"),
            (text("relative", "x"), "absolute"),
            (text("/a/../b", "x"), "'..'"),
            (RootPatch::Remove { path: "/".into() }, "'/'"),
        ] {
            let err = apply(
                root.path(),
                &[text("/ok", "1"), patch],
                &HostAccess::Roots(vec![host.path().to_path_buf()]),
            )
            .unwrap_err();
            assert_eq!(err.index, 1);
            assert!(err.to_string().starts_with("patch 1 ("), "{err}");
            assert!(err.reason.contains(want), "{err}");
        }
        let no_roots = apply(
            root.path(),
            &[copy(secret.path().display().to_string())],
            &HostAccess::default(),
        )
        .unwrap_err();
        assert!(no_roots.reason.contains("no --host-root"), "{no_roots}");
    }
}
