//! Filesystem requests. Paths are used as given; relative paths are taken from the agent's default
//! working directory. Metadata is never followed through symlinks (lstat semantics).

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use microsandbox_wire::guest::codec::GuestCodec;
use microsandbox_wire::guest::{
    DirEntry, FileKind, FileStat, GuestError, GuestErrorKind, GuestFrame, HostFrame, Response,
    CHUNK_SIZE,
};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Framed;

/// Mode of files written with `mode == 0`.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// Resolve a request path against the default working directory.
pub fn resolve(workdir: &Path, path: &str) -> Result<PathBuf, GuestError> {
    if path.is_empty() {
        return Err(GuestError::new(
            GuestErrorKind::InvalidRequest,
            "empty path",
        ));
    }
    Ok(workdir.join(path))
}

/// Wire metadata of a path (no symlink following).
pub fn file_stat(meta: &Metadata) -> FileStat {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    FileStat {
        kind,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        mtime_secs: meta.mtime(),
        uid: meta.uid(),
        gid: meta.gid(),
    }
}

/// `Stat`.
pub fn stat(path: &Path) -> io::Result<Response> {
    Ok(Response::Stat(file_stat(&fs::symlink_metadata(path)?)))
}

/// `List`: entries sorted by name.
pub fn list(path: &Path) -> io::Result<Response> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        // An entry removed while listing is skipped rather than failing the whole listing.
        let meta = match fs::symlink_metadata(entry.path()) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        entries.push(DirEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            stat: file_stat(&meta),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Response::Entries(entries))
}

/// `Mkdir`.
pub fn mkdir(path: &Path, parents: bool) -> io::Result<Response> {
    if parents {
        fs::create_dir_all(path)?;
    } else {
        fs::create_dir(path)?;
    }
    Ok(Response::Ok)
}

/// `Remove`: a file, symlink or directory (non-empty directories only if `recursive`).
pub fn remove(path: &Path, recursive: bool) -> io::Result<Response> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        if recursive {
            fs::remove_dir_all(path)?;
        } else {
            fs::remove_dir(path)?;
        }
    } else {
        fs::remove_file(path)?;
    }
    Ok(Response::Ok)
}

/// `Rename`.
pub fn rename(from: &Path, to: &Path) -> io::Result<Response> {
    fs::rename(from, to)?;
    Ok(Response::Ok)
}

/// True if `to` would be inside the directory `from` (copying would recurse forever).
fn inside(from: &Path, to: &Path) -> bool {
    let Ok(from) = fs::canonicalize(from) else {
        return false;
    };
    let (Some(parent), Some(name)) = (to.parent(), to.file_name()) else {
        return false;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    match fs::canonicalize(parent) {
        Ok(p) => p.join(name).starts_with(&from),
        Err(_) => false,
    }
}

/// `Copy`: files keep their mode, directories are copied recursively (merging into an existing
/// directory), symlinks are recreated as symlinks.
pub fn copy(from: &Path, to: &Path) -> Result<Response, GuestError> {
    let meta = fs::symlink_metadata(from)
        .map_err(|e| GuestError::from_io(&e, &from.display().to_string()))?;
    if meta.is_dir() && inside(from, to) {
        return Err(GuestError::new(
            GuestErrorKind::InvalidRequest,
            format!(
                "cannot copy {} into itself ({})",
                from.display(),
                to.display()
            ),
        ));
    }
    copy_tree(from, to)?;
    Ok(Response::Ok)
}

fn io_err(e: io::Error, path: &Path) -> GuestError {
    GuestError::from_io(&e, &path.display().to_string())
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), GuestError> {
    let meta = fs::symlink_metadata(from).map_err(|e| io_err(e, from))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(from).map_err(|e| io_err(e, from))?;
        match fs::symlink_metadata(to) {
            Ok(m) if m.is_dir() => {
                return Err(GuestError::new(
                    GuestErrorKind::IsADirectory,
                    format!("{}: is a directory", to.display()),
                ))
            }
            Ok(_) => fs::remove_file(to).map_err(|e| io_err(e, to))?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&target, to).map_err(|e| io_err(e, to))?;
    } else if ft.is_dir() {
        match fs::create_dir(to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && to.is_dir() => {}
            Err(e) => return Err(io_err(e, to)),
        }
        for entry in fs::read_dir(from).map_err(|e| io_err(e, from))? {
            let entry = entry.map_err(|e| io_err(e, from))?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        // Set the mode last, so a read-only source directory can still be filled.
        fs::set_permissions(to, meta.permissions()).map_err(|e| io_err(e, to))?;
    } else if ft.is_file() {
        if let Ok(dst) = fs::metadata(to) {
            if dst.dev() == meta.dev() && dst.ino() == meta.ino() {
                // fs::copy would truncate the source while reading it.
                return Err(GuestError::new(
                    GuestErrorKind::InvalidRequest,
                    format!("{} and {} are the same file", from.display(), to.display()),
                ));
            }
        }
        fs::copy(from, to).map_err(|e| io_err(e, to))?;
    } else {
        return Err(GuestError::new(
            GuestErrorKind::Unsupported,
            format!("{}: cannot copy special files", from.display()),
        ));
    }
    Ok(())
}

/// `ReadFile`: stream the file as `Data` chunks then `DataEnd`, never holding more than a chunk.
pub async fn read_file<S>(framed: &mut Framed<S, GuestCodec>, path: &Path, shown: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut file = match open_for_read(path).await {
        Ok(f) => f,
        Err(e) => {
            let _ = framed
                .send(GuestFrame::Error(GuestError::from_io(&e, shown)))
                .await;
            return;
        }
    };
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        match file.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if framed
                    .send(GuestFrame::Data(Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = framed
                    .send(GuestFrame::Error(GuestError::from_io(&e, shown)))
                    .await;
                return;
            }
        }
    }
    let _ = framed.send(GuestFrame::DataEnd).await;
}

async fn open_for_read(path: &Path) -> io::Result<tokio::fs::File> {
    let file = tokio::fs::File::open(path).await?;
    if file.metadata().await?.is_dir() {
        return Err(io::Error::from(io::ErrorKind::IsADirectory));
    }
    Ok(file)
}

/// `WriteFile`: write `Stdin` chunks as they arrive until `StdinClose`, then `Done(Written)`.
/// The mode is applied exactly (not masked by umask). A connection lost midway leaves the partial
/// file behind.
pub async fn write_file<S>(
    framed: &mut Framed<S, GuestCodec>,
    path: &Path,
    shown: &str,
    mode: u32,
    append: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Mode 0 means "default": new files get DEFAULT_FILE_MODE, existing files keep theirs.
    let explicit = mode & 0o7777 != 0;
    let mode = match mode & 0o7777 {
        0 => DEFAULT_FILE_MODE,
        m => m,
    };
    let mut file = match open_for_write(path, mode, explicit, append).await {
        Ok(f) => f,
        Err(e) => {
            let _ = framed
                .send(GuestFrame::Error(GuestError::from_io(&e, shown)))
                .await;
            return;
        }
    };
    let mut written: u64 = 0;
    let mut failure: Option<io::Error> = None;
    loop {
        match framed.next().await {
            Some(Ok(HostFrame::Stdin(data))) => {
                if failure.is_some() {
                    // Keep consuming until StdinClose so the error is reported in order.
                    continue;
                }
                match file.write_all(&data).await {
                    Ok(()) => written += data.len() as u64,
                    Err(e) => failure = Some(e),
                }
            }
            Some(Ok(HostFrame::StdinClose)) => break,
            Some(Ok(_)) => {}
            // Connection lost or garbage: keep what was written, flush it, stop.
            Some(Err(_)) | None => {
                let _ = file.flush().await;
                return;
            }
        }
    }
    if failure.is_none() {
        if let Err(e) = file.flush().await {
            failure = Some(e);
        }
    }
    let frame = match failure {
        Some(e) => GuestFrame::Error(GuestError::from_io(&e, shown)),
        None => GuestFrame::Done(Response::Written { bytes: written }),
    };
    let _ = framed.send(frame).await;
}

async fn open_for_write(
    path: &Path,
    mode: u32,
    explicit: bool,
    append: bool,
) -> io::Result<tokio::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).mode(mode);
    if append {
        opts.append(true);
    } else {
        opts.truncate(true);
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = opts.open(&path)?;
        if explicit {
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        Ok(tokio::fs::File::from_std(file))
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_into_itself_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        fs::create_dir(&a).unwrap();
        let err = copy(&a, &a.join("b")).unwrap_err();
        assert_eq!(err.kind, GuestErrorKind::InvalidRequest);
        assert!(copy(&a, &dir.path().join("c")).is_ok());
    }

    #[test]
    fn copy_onto_itself_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"precious").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
        assert_eq!(
            copy(&f, &f).unwrap_err().kind,
            GuestErrorKind::InvalidRequest
        );
        // Through a symlink to the same file, too.
        assert!(copy(&f, &dir.path().join("l")).is_err());
        assert_eq!(fs::read(&f).unwrap(), b"precious");
    }

    #[test]
    fn resolve_joins_relative_paths() {
        let wd = Path::new("/app");
        assert_eq!(resolve(wd, "x/y").unwrap(), PathBuf::from("/app/x/y"));
        assert_eq!(resolve(wd, "/etc").unwrap(), PathBuf::from("/etc"));
        assert!(resolve(wd, "").is_err());
    }
}
