//! The backing store of a named volume: a sparse ext4 image of exactly the quota, loop-mounted.
//! The guest's writes stop at the image's end (ENOSPC inside the sandbox), and the host spends
//! only the blocks actually written. mkfs/mount/umount are the util-linux tools: mount(8) sets
//! up and releases the loop device itself, which nix's mount(2) would leave to us.

use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> std::io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{:?} failed: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Create `image` as an empty ext4 file system of `bytes`.
pub fn create(image: &Path, bytes: u64) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(image)?;
    f.set_len(bytes)?;
    drop(f);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-E", "root_owner=0:0"])
        .arg(image))
}

/// Loop-mount `image` on `at` (nosuid, nodev).
pub fn mount(image: &Path, at: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(at)?;
    if crate::rootfs::is_mounted(at) {
        return Ok(());
    }
    run(Command::new("mount")
        .args(["-t", "ext4", "-o", "loop,nosuid,nodev"])
        .arg(image)
        .arg(at))?;
    // The file system root is the volume's top directory: world-writable like /tmp, so a
    // sandbox user other than root can use it too.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o1777))
}

/// Make the image file `bytes` long (sparse); false when it already is at least that.
fn extend(image: &Path, bytes: u64) -> std::io::Result<bool> {
    let f = std::fs::OpenOptions::new().write(true).open(image)?;
    if f.metadata()?.len() >= bytes {
        return Ok(false);
    }
    f.set_len(bytes)?;
    Ok(true)
}

/// Grow the file system of `image` to `bytes` while nothing uses it (the caller makes sure no
/// sandbox mounts it meanwhile): unmounted, checked, resized, mounted again at `at`.
pub fn grow_offline(image: &Path, at: &Path, bytes: u64) -> std::io::Result<()> {
    unmount(at)?;
    let result = (|| {
        if !extend(image, bytes)? {
            return Ok(());
        }
        // e2fsck exits 1 when it fixed something, which is fine before a resize.
        let out = Command::new("e2fsck")
            .args(["-f", "-p"])
            .arg(image)
            .output()?;
        if !matches!(out.status.code(), Some(0 | 1)) {
            return Err(std::io::Error::other(format!(
                "e2fsck {}: {}",
                image.display(),
                String::from_utf8_lossy(&out.stdout).trim()
            )));
        }
        run(Command::new("resize2fs").arg(image))
    })();
    mount(image, at)?;
    result
}

/// Grow the file system of `image`, mounted at `at` and used by running sandboxes, to `bytes`
/// in place: the image grows, its loop device learns the new size, resize2fs grows ext4 online
/// (which needs CAP_SYS_RESOURCE).
pub fn grow_online(image: &Path, at: &Path, bytes: u64) -> std::io::Result<()> {
    if !extend(image, bytes)? {
        return Ok(());
    }
    mount(image, at)?;
    let out = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE", "--mountpoint"])
        .arg(at)
        .output()?;
    let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !device.starts_with("/dev/loop") {
        return Err(std::io::Error::other(format!(
            "{} is not loop-mounted (findmnt says {device:?})",
            at.display()
        )));
    }
    run(Command::new("losetup").args(["-c", &device]))?;
    run(Command::new("resize2fs").arg(&device)).map_err(|e| {
        std::io::Error::other(format!(
            "{e} (growing a volume in use needs CAP_SYS_RESOURCE; or stop its sandboxes first)"
        ))
    })
}

/// Unmount `at` if mounted (lazily: a sandbox that still has it open keeps it alive).
pub fn unmount(at: &Path) -> std::io::Result<()> {
    crate::rootfs::unmount(at)
}

/// Bytes in use on the file system mounted at `at`.
pub fn used_bytes(at: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(at).map_err(std::io::Error::from)?;
    let blocks = st.blocks().saturating_sub(st.blocks_free());
    Ok(blocks.saturating_mul(st.fragment_size()))
}
