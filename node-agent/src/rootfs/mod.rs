//! Per-sandbox copy-on-write root: overlayfs with the image's cached layers as read-only lowers and
//! a private upper directory. Layers are shared by every sandbox of the image; writes never reach them.

pub mod host_access;
pub mod patch;

use std::path::{Path, PathBuf};

/// The directories of one sandbox root.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRoot {
    /// Holds `upper` and `work`: a plain directory, or with a disk limit the mount point of an
    /// ext4 image of that size (`rw.img`), so the sandbox's writes stop at the limit.
    pub rw: PathBuf,
    pub rw_image: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

impl SandboxRoot {
    /// Layout under a sandbox's own directory.
    pub fn under(dir: &Path) -> Self {
        let rw = dir.join("rw");
        Self {
            upper: rw.join("upper"),
            work: rw.join("work"),
            rw_image: dir.join("rw.img"),
            rw,
            merged: dir.join("rootfs"),
        }
    }

    /// Put the writable layer on an ext4 image of `mib` MiB (before [`mount`]).
    pub fn limit_disk(&self, mib: u64) -> std::io::Result<()> {
        if !self.rw_image.exists() {
            crate::volume::disk::create(&self.rw_image, mib << 20)?;
        }
        crate::volume::disk::mount(&self.rw_image, &self.rw)
    }
}

/// Unmount the root and, if it has one, its disk-limited writable layer.
pub fn unmount_root(root: &SandboxRoot) -> std::io::Result<()> {
    unmount(&root.merged)?;
    unmount(&root.rw)
}

/// overlayfs mount options; lowers are given bottom layer first (OCI order), overlay wants top first.
pub fn overlay_options(lowers: &[PathBuf], root: &SandboxRoot) -> String {
    let lower: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        root.upper.display(),
        root.work.display()
    )
}

/// Mount the sandbox root. An image without layers gets an empty lower directory.
pub fn mount(lowers: &[PathBuf], root: &SandboxRoot, empty_lower: &Path) -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    for d in [&root.upper, &root.work, &root.merged] {
        std::fs::create_dir_all(d)?;
    }
    let owned;
    let lowers = if lowers.is_empty() {
        std::fs::create_dir_all(empty_lower)?;
        owned = vec![empty_lower.to_path_buf()];
        &owned[..]
    } else {
        lowers
    };
    if is_mounted(&root.merged) {
        return Ok(());
    }
    let opts = overlay_options(lowers, root);
    mount(
        Some("overlay"),
        &root.merged,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .map_err(|e| std::io::Error::other(format!("mount overlay on {}: {e}", root.merged.display())))
}

/// Unmount (lazily, so a straggling process cannot pin it) if mounted.
pub fn unmount(merged: &Path) -> std::io::Result<()> {
    use nix::mount::{umount2, MntFlags};
    while is_mounted(merged) {
        match umount2(merged, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            // Unmounted meanwhile (by someone else): what was asked for holds.
            Err(nix::errno::Errno::EINVAL) if !is_mounted(merged) => {}
            Err(e) => {
                return Err(std::io::Error::other(format!(
                    "unmount {}: {e}",
                    merged.display()
                )))
            }
        }
    }
    Ok(())
}

/// Whether `path` is a mount point: statx(2)'s mount-root attribute (one lookup, where the
/// mount table grows with every sandbox), or /proc/self/mountinfo on kernels before 5.8.
pub fn is_mounted(path: &Path) -> bool {
    use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags, CWD};
    let flags = AtFlags::NO_AUTOMOUNT | AtFlags::SYMLINK_NOFOLLOW;
    match statx(CWD, path, flags, StatxFlags::empty()) {
        Ok(st) if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
        }
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => false,
        _ => listed_in_mountinfo(path),
    }
}

/// Whether `path` is a mount point, from /proc/self/mountinfo.
fn listed_in_mountinfo(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let found = mount_points(&text).any(|p| Path::new(&p) == path);
    found
}

/// Mount points listed in a mountinfo text (octal escapes decoded).
pub fn mount_points(mountinfo: &str) -> impl Iterator<Item = String> + '_ {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(crate::doctor::parse::unescape_mount_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_by_statx_and_by_mountinfo_agree() {
        for p in ["/", "/proc", "/sys"] {
            assert!(is_mounted(Path::new(p)), "{p}");
            assert!(listed_in_mountinfo(Path::new(p)), "{p}");
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mounted(dir.path()));
        assert!(!listed_in_mountinfo(dir.path()));
        assert!(!is_mounted(&dir.path().join("missing")));
    }

    #[test]
    fn options_put_top_layer_first() {
        let root = SandboxRoot::under(Path::new("/s/x"));
        let o = overlay_options(&["/l/a".into(), "/l/b".into()], &root);
        assert_eq!(
            o,
            "lowerdir=/l/b:/l/a,upperdir=/s/x/rw/upper,workdir=/s/x/rw/work"
        );
    }

    #[test]
    fn parses_mountinfo_with_escapes() {
        let mi = "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw\n37 35 0:1 / /proc rw - proc proc rw\n";
        let points: Vec<String> = mount_points(mi).collect();
        assert_eq!(points, vec!["/mnt/a b".to_string(), "/proc".to_string()]);
    }
}
