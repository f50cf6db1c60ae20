//! Best-effort cleanup: steps whose failure must not stop the rest of a teardown. Nothing here
//! is silently dropped: what is already gone is fine, anything else is logged with what was
//! being done.

use std::fmt::Display;
use std::io::ErrorKind;
use std::path::Path;

/// Log `result`'s error, if any, as a failure to `what`.
pub fn warn_on_err<T, E: Display>(what: impl Display, result: Result<T, E>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot {what}");
    }
}

/// Remove a file (or socket) that may be gone already.
pub fn remove_file(path: &Path) {
    ignore_missing("remove", path, std::fs::remove_file(path));
}

/// Remove a directory tree that may be gone already.
pub fn remove_dir_all(path: &Path) {
    ignore_missing("remove", path, std::fs::remove_dir_all(path));
}

/// Remove an empty directory (a cgroup) that may be gone already.
pub fn remove_dir(path: &Path) {
    ignore_missing("remove", path, std::fs::remove_dir(path));
}

fn ignore_missing(op: &str, path: &Path, result: std::io::Result<()>) {
    match result {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), error = %e, "cannot {op}")
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_paths_are_fine_and_present_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        remove_file(&f);
        assert!(!f.exists());
        remove_file(&f); // already gone: no panic, nothing to log
        let d = dir.path().join("d/e");
        std::fs::create_dir_all(&d).unwrap();
        remove_dir(&d);
        assert!(!d.exists());
        remove_dir_all(&dir.path().join("d"));
        assert!(!dir.path().join("d").exists());
    }
}
