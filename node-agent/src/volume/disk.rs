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

/// Make the image file at least `bytes` long (sparse).
fn extend(image: &Path, bytes: u64) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(image)?;
    if f.metadata()?.len() < bytes {
        f.set_len(bytes)?;
    }
    Ok(())
}

/// Loop devices backed by `image` (`losetup -j`).
fn loop_devices(image: &Path) -> std::io::Result<Vec<String>> {
    let out = Command::new("losetup").arg("-j").arg(image).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(':').map(|(dev, _)| dev.to_string()))
        .collect())
}

/// Grow the file system of `image` (mounted at `at`) to `bytes`. Offline (unmounted, checked,
/// resized, mounted again) when nothing else holds the file system; online (the loop device
/// learns the new size, resize2fs grows the mounted ext4, which needs CAP_SYS_RESOURCE) when a
/// sandbox still does. Which one is the kernel's say: a sandbox's mount keeps the loop device
/// attached. resize2fs runs even when the image already has the size, so a retry after a failed
/// resize completes it; it is told the size, not left to fill the image, which a refused larger
/// growth may have extended. Never shrinks. The caller keeps new mounts away meanwhile.
pub fn grow(image: &Path, at: &Path, bytes: u64) -> std::io::Result<()> {
    extend(image, bytes)?;
    let size = format!("{}K", bytes / 1024);
    if take_down(image, at)? {
        let result = check_and_resize(image, &size);
        mount(image, at)?;
        return result;
    }
    let device = loop_devices(image)?
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{} has no loop device", image.display())))?;
    run(Command::new("losetup").args(["-c", &device]))?;
    run(Command::new("resize2fs").arg(&device).arg(&size)).map_err(|e| {
        // resize2fs says "Permission denied to resize filesystem" without CAP_SYS_RESOURCE.
        let kind = if e.to_string().contains("Permission denied") {
            std::io::ErrorKind::PermissionDenied
        } else {
            std::io::ErrorKind::Other
        };
        std::io::Error::new(
            kind,
            format!(
                "{e} (growing a volume in use needs CAP_SYS_RESOURCE; or stop its sandboxes first)"
            ),
        )
    })
}

/// Unmount `at` (never lazily) and wait for the image's loop device to go: true when nothing
/// else holds the file system; otherwise `at` is mounted again (on the same loop device) and
/// false.
fn take_down(image: &Path, at: &Path) -> std::io::Result<bool> {
    use nix::mount::{umount2, MntFlags};
    if crate::rootfs::is_mounted(at) {
        match umount2(at, MntFlags::empty()) {
            Ok(()) => {}
            Err(nix::errno::Errno::EBUSY) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    // The loop device is released asynchronously after the last user goes.
    for _ in 0..50 {
        if loop_devices(image)?.is_empty() {
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    mount(image, at)?;
    Ok(false)
}

/// e2fsck then resize2fs (to `size`, e.g. `32768K`) on an unmounted image.
fn check_and_resize(image: &Path, size: &str) -> std::io::Result<()> {
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
    run(Command::new("resize2fs").arg(image).arg(size))
}

/// Unmount `at` if mounted (lazily: a sandbox that still has it open keeps it alive).
pub fn unmount(at: &Path) -> std::io::Result<()> {
    crate::rootfs::unmount(at)
}

/// The size in bytes the ext4 file system in `image` can grow to in place: as many block groups
/// as its group descriptor blocks, with those mkfs reserved for growth (about 1024 times the
/// size it was made with), can describe. resize2fs goes further by converting the layout, which
/// has left small file systems unmountable ("Structure needs cleaning"); the agent does not.
pub fn growth_limit(image: &Path) -> std::io::Result<u64> {
    let out = Command::new("dumpe2fs").arg("-h").arg(image).output()?;
    parse_growth_limit(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        std::io::Error::other(format!(
            "dumpe2fs -h {}: no superblock fields ({})",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })
}

/// [`growth_limit`] from `dumpe2fs -h` output.
fn parse_growth_limit(dump: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        dump.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    let blocks = field("Block count")?;
    let block_size = field("Block size")?;
    let per_group = field("Blocks per group")?;
    let reserved = field("Reserved GDT blocks").unwrap_or(0);
    // 32-byte descriptors without the 64bit feature (no such line then).
    let desc = field("Group descriptor size").unwrap_or(32);
    let per_block = block_size / desc;
    let groups = blocks.div_ceil(per_group);
    let gdt = groups.div_ceil(per_block);
    Some((gdt + reserved) * per_block * per_group * block_size)
}

/// Bytes in use on the file system mounted at `at`.
pub fn used_bytes(at: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(at).map_err(std::io::Error::from)?;
    let blocks = st.blocks().saturating_sub(st.blocks_free());
    Ok(blocks.saturating_mul(st.fragment_size()))
}

#[cfg(test)]
mod growth_tests {
    use super::parse_growth_limit;

    #[test]
    fn growth_limit_is_what_the_descriptor_blocks_describe() {
        // mkfs.ext4 of 1 MiB: one group, one descriptor block + 7 reserved, 16 per block.
        let one_mib = "Block count:              1024\nBlock size:               1024\n\
            Group descriptor size:    64\nReserved GDT blocks:      7\n\
            Blocks per group:         8192\n";
        assert_eq!(parse_growth_limit(one_mib), Some(8 * 16 * 8192 * 1024)); // 1 GiB
        let sixteen = "Block count:              16384\nBlock size:               1024\n\
            Group descriptor size:    64\nReserved GDT blocks:      127\n\
            Blocks per group:         8192\n";
        assert_eq!(parse_growth_limit(sixteen), Some(16 << 30));
        assert_eq!(parse_growth_limit("garbage"), None);
    }
}
