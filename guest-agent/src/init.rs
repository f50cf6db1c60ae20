//! What PID 1 of a microVM must do itself (in a container the runtime has done it already).

use microsandbox_wire::guest::GuestMount;
use nix::mount::{mount, MsFlags};
use std::io;

struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const MOUNTS: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        data: None,
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        data: None,
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
    },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("newinstance,ptmxmode=0666,mode=0620"),
    },
    Mount {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
    },
    Mount {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        data: None,
    },
];

/// Mount the pseudo filesystems. Already-mounted targets are left alone; other failures are
/// reported and skipped (a missing /sys/fs/cgroup must not keep the agent from serving).
pub fn mount_all() {
    for m in MOUNTS {
        if let Err(e) = mount_one(m) {
            warn!("mount {} failed: {e}", m.target);
        }
    }
    // /dev/ptmx must refer to the devpts instance just mounted.
    let _ = std::fs::remove_file("/dev/ptmx");
    let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
}

fn mount_one(m: &Mount) -> io::Result<()> {
    std::fs::create_dir_all(m.target)?;
    match mount(Some(m.source), m.target, Some(m.fstype), m.flags, m.data) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// How one volume is mounted: (source, fstype, flags, data). Pure.
fn volume_call(m: &GuestMount) -> (String, &'static str, MsFlags, Option<String>) {
    let base = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
    match m {
        GuestMount::Virtiofs { tag, readonly, .. } => {
            let flags = if *readonly {
                base.union(MsFlags::MS_RDONLY)
            } else {
                base
            };
            (tag.clone(), "virtiofs", flags, None)
        }
        GuestMount::Tmpfs { size_mib, .. } => (
            "tmpfs".into(),
            "tmpfs",
            base,
            Some(format!("size={size_mib}m,mode=1777")),
        ),
    }
}

/// Mount the sandbox's volumes, in order. Unlike the pseudo filesystems, a volume that does not
/// mount is fatal: running without it would write the user's data into the root instead.
pub fn mount_volumes(mounts: &[GuestMount]) -> io::Result<()> {
    for m in mounts {
        let (source, fstype, flags, data) = volume_call(m);
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            io::Error::other(format!("{what} {} ({}): {e}", m.dest(), m.to_arg()))
        };
        std::fs::create_dir_all(m.dest()).map_err(|e| fail("mkdir", &e))?;
        mount(
            Some(source.as_str()),
            m.dest(),
            Some(fstype),
            flags,
            data.as_deref(),
        )
        .map_err(|e| fail("mount", &e))?;
    }
    Ok(())
}

/// Mark every inherited descriptor above stderr close-on-exec, so nothing the runtime (or whoever
/// started the agent) left open leaks into user processes.
pub fn cloexec_inherited_fds() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD only touch descriptor flags; a descriptor that is already closed
        // (the directory handle used above) just yields EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_calls() {
        let ro = GuestMount::Virtiofs {
            tag: "msb0".into(),
            dest: "/data".into(),
            readonly: true,
        };
        let (src, fs, flags, data) = volume_call(&ro);
        assert_eq!((src.as_str(), fs, data), ("msb0", "virtiofs", None));
        assert!(flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV));
        let rw = GuestMount::Virtiofs {
            tag: "msb1".into(),
            dest: "/w".into(),
            readonly: false,
        };
        assert!(!volume_call(&rw).2.contains(MsFlags::MS_RDONLY));
        let t = GuestMount::Tmpfs {
            dest: "/s".into(),
            size_mib: 8,
        };
        assert_eq!(volume_call(&t).3.as_deref(), Some("size=8m,mode=1777"));
    }

    /// The tmpfs path for real, in a mount namespace of a thread of its own (needs root; skipped
    /// otherwise): the size limit holds and a failing mount is an error naming the volume.
    #[test]
    fn tmpfs_volume_is_mounted_with_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("scratch");
        let result = std::thread::spawn(move || -> Result<(), String> {
            use nix::sched::{unshare, CloneFlags};
            if unshare(CloneFlags::CLONE_NEWNS).is_err() {
                eprintln!("SKIP: cannot make a mount namespace (not root?)");
                return Ok(());
            }
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(|e| e.to_string())?;
            let m = GuestMount::Tmpfs {
                dest: dest.display().to_string(),
                size_mib: 1,
            };
            mount_volumes(std::slice::from_ref(&m)).map_err(|e| e.to_string())?;
            let fits = std::fs::write(dest.join("a"), vec![0u8; 512 * 1024]);
            let too_big = std::fs::write(dest.join("b"), vec![0u8; 1024 * 1024]);
            nix::mount::umount(&dest).map_err(|e| e.to_string())?;
            if fits.is_err() {
                return Err(format!("512 KiB did not fit: {fits:?}"));
            }
            match too_big {
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => {}
                other => return Err(format!("1 MiB more should be ENOSPC: {other:?}")),
            }
            let bad = GuestMount::Virtiofs {
                tag: "no-such-tag".into(),
                dest: dest.display().to_string(),
                readonly: true,
            };
            let err = mount_volumes(&[bad]).expect_err("no such virtio-fs share");
            if !err.to_string().contains("no-such-tag") {
                return Err(format!("error does not name the volume: {err}"));
            }
            Ok(())
        })
        .join()
        .unwrap();
        result.unwrap();
    }
}
