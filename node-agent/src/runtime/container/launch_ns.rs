//! The mount namespace crun starts from.
//!
//! crun copies the mount namespace it runs in for every container, reads that copy's mount
//! table, changes its propagation and detaches it after `pivot_root`: work proportional to the
//! number of mounts. The agent's own namespace holds every sandbox's root (overlay, disk-limited
//! layer), every network namespace file and every volume, so each create paid for all the other
//! sandboxes. Instead, crun runs in a copy of a small namespace made once at startup (the
//! agent's, private, without anything under the hidden directories), into which the few mounts
//! this one sandbox needs are carried as detached clones (`open_tree`, `move_mount`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::runtime::{LaunchMount, LaunchSpec};

/// A private mount namespace without the agent's per-sandbox mounts (held open by a descriptor).
#[derive(Debug)]
pub struct LaunchNamespace {
    ns: Arc<OwnedFd>,
}

/// One crun start's mounts, cloned from the agent's namespace and ready to be attached in the
/// child ([`Launch::enter`]).
#[derive(Debug)]
pub struct Launch {
    ns: Arc<OwnedFd>,
    carried: Vec<(OwnedFd, CString)>,
}

impl LaunchNamespace {
    /// Makes the namespace: a copy of the agent's, private (no mount made later on either side
    /// propagates into it), with every mount strictly below one of `hidden` detached.
    pub fn new(hidden: &[PathBuf]) -> io::Result<Self> {
        let hidden = hidden.to_vec();
        // unshare(CLONE_NEWNS) applies to the calling thread only (it unshares its file system
        // context too), so a short-lived thread builds the namespace and hands back a handle.
        std::thread::Builder::new()
            .name("msb-launch-ns".into())
            .spawn(move || -> io::Result<Self> {
                use nix::mount::{mount, umount2, MntFlags, MsFlags};
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )?;
                let table = std::fs::read_to_string("/proc/thread-self/mountinfo")?;
                for point in to_detach(crate::rootfs::mount_points(&table), &hidden) {
                    match umount2(&point, MntFlags::MNT_DETACH) {
                        // Gone with a parent detached before it.
                        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
                        Err(e) => {
                            return Err(io::Error::other(format!(
                                "detach {}: {e}",
                                point.display()
                            )))
                        }
                    }
                }
                let ns = std::fs::File::open("/proc/thread-self/ns/mnt")?;
                // The kernel has the new mount API (5.2) carrying mounts in needs.
                rustix::mount::open_tree(
                    rustix::fs::CWD,
                    "/",
                    rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
                        | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC,
                )
                .map_err(|e| io::Error::other(format!("open_tree: {e}")))?;
                Ok(Self {
                    ns: Arc::new(ns.into()),
                })
            })?
            .join()
            .map_err(|_| io::Error::other("launch namespace thread panicked"))?
    }

    /// Clones (recursively) what `plan` carries, in the agent's namespace.
    pub fn prepare(&self, plan: &[Carry]) -> io::Result<Launch> {
        use rustix::mount::{open_tree, OpenTreeFlags};
        let mut carried = Vec::with_capacity(plan.len());
        for c in plan {
            let flags = OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_RECURSIVE;
            let tree = open_tree(rustix::fs::CWD, &c.from, flags)
                .map_err(|e| io::Error::other(format!("clone {}: {e}", c.from.display())))?;
            carried.push((tree, c_path(&c.to)?));
        }
        Ok(Launch {
            ns: self.ns.clone(),
            carried,
        })
    }
}

impl Launch {
    /// Enters a fresh copy of the launch namespace and attaches the carried mounts there.
    ///
    /// Meant for a forked child before exec (`setns` of a mount namespace needs a process whose
    /// file system context is not shared): only system calls, no allocation.
    pub fn enter(&self) -> io::Result<()> {
        use nix::sched::{setns, unshare, CloneFlags};
        use rustix::mount::{move_mount, MoveMountFlags};
        setns(self.ns.as_fd(), CloneFlags::CLONE_NEWNS)?;
        unshare(CloneFlags::CLONE_NEWNS)?;
        for (tree, to) in &self.carried {
            move_mount(
                tree.as_fd(),
                c"",
                rustix::fs::CWD,
                to.as_c_str(),
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )?;
        }
        Ok(())
    }
}

/// A mount carried into the launch namespace: the tree at `from` (agent's namespace) attached at
/// `to` (which must exist there).
#[derive(Debug, Clone, PartialEq)]
pub struct Carry {
    pub from: PathBuf,
    pub to: PathBuf,
}

/// What crun needs of a sandbox beyond the launch namespace's base mounts, and the spec to give
/// it: the root and the network namespace file are attached where they are; each bind mount's
/// source is attached on a placeholder in `staging` (a directory that exists in both
/// namespaces), since its own path may lie under a mount the launch namespace lacks.
pub fn plan(spec: &LaunchSpec, staging: &Path) -> (LaunchSpec, Vec<Carry>) {
    let mut carry = vec![Carry {
        from: spec.rootfs.clone(),
        to: spec.rootfs.clone(),
    }];
    carry.extend(spec.netns.iter().map(|p| Carry {
        from: p.clone(),
        to: p.clone(),
    }));
    let mut staged = spec.clone();
    for (i, m) in staged.mounts.iter_mut().enumerate() {
        if let LaunchMount::Bind { source, .. } = m {
            let placeholder = staging.join(i.to_string());
            carry.push(Carry {
                from: std::mem::replace(source, placeholder.clone()),
                to: placeholder,
            });
        }
    }
    (staged, carry)
}

/// Creates the placeholders of `carry` that do not exist yet: a directory, or an empty file
/// when the source is not a directory (a bind mount needs the same kind at both ends).
pub fn make_placeholders(carry: &[Carry]) -> io::Result<()> {
    for c in carry.iter().filter(|c| c.from != c.to) {
        if std::fs::metadata(&c.from)?.is_dir() {
            std::fs::create_dir_all(&c.to)?;
        } else {
            if let Some(parent) = c.to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&c.to)?;
        }
    }
    Ok(())
}

/// The mount points strictly below any of `hidden`, deepest first.
pub fn to_detach(points: impl Iterator<Item = String>, hidden: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = points
        .map(PathBuf::from)
        .filter(|p| hidden.iter().any(|h| p != h && p.starts_with(h)))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::other(format!("NUL in path {}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mounts: Vec<LaunchMount>, netns: Option<&str>) -> LaunchSpec {
        LaunchSpec {
            id: "msb-a".into(),
            netns: netns.map(PathBuf::from),
            hostname: "a".into(),
            rootfs: "/s/a/rootfs".into(),
            runtime_dir: "/s/a/runtime".into(),
            guest_agent: "/usr/lib/msb/guest".into(),
            socket_dir: "/s/a/sock".into(),
            memory_mib: 64,
            cpus: 1,
            pids_limit: None,
            env: vec![],
            workdir: None,
            mounts,
        }
    }

    #[test]
    fn the_root_and_the_network_namespace_are_carried_where_they_are() {
        let (staged, carry) = plan(&spec(vec![], Some("/run/netns/msb-a")), Path::new("/x"));
        assert_eq!(staged, spec(vec![], Some("/run/netns/msb-a")));
        let to: Vec<_> = carry
            .iter()
            .map(|c| (c.from.clone(), c.to.clone()))
            .collect();
        assert_eq!(
            to,
            [
                ("/s/a/rootfs".into(), "/s/a/rootfs".into()),
                ("/run/netns/msb-a".into(), "/run/netns/msb-a".into())
            ]
        );
        let (_, carry) = plan(&spec(vec![], None), Path::new("/x"));
        assert_eq!(carry.len(), 1, "no network: only the root");
    }

    #[test]
    fn bind_sources_are_staged_and_the_spec_points_at_the_placeholders() {
        let mounts = vec![
            LaunchMount::Tmpfs {
                dest: "/tmp".into(),
                size_mib: 8,
            },
            LaunchMount::Bind {
                source: "/mnt/disk/project".into(),
                dest: "/work".into(),
                readonly: true,
            },
        ];
        let (staged, carry) = plan(&spec(mounts.clone(), None), Path::new("/s/a/runtime/binds"));
        assert_eq!(staged.mounts[0], mounts[0], "tmpfs untouched");
        assert_eq!(
            staged.mounts[1],
            LaunchMount::Bind {
                source: "/s/a/runtime/binds/1".into(),
                dest: "/work".into(),
                readonly: true,
            }
        );
        assert_eq!(
            carry[1],
            Carry {
                from: "/mnt/disk/project".into(),
                to: "/s/a/runtime/binds/1".into()
            }
        );
    }

    #[test]
    fn only_mounts_strictly_below_the_hidden_directories_are_detached_deepest_first() {
        let points = [
            "/",
            "/state",
            "/state/sandboxes/a/rw",
            "/state/sandboxes/a/rootfs",
            "/state/sandboxes/a/rw/upper/x",
            "/run/netns",
            "/run/netns/msb-a",
            "/stateful",
        ]
        .map(String::from);
        let got = to_detach(points.into_iter(), &["/state".into(), "/run/netns".into()]);
        assert_eq!(got[0], PathBuf::from("/state/sandboxes/a/rw/upper/x"));
        let mut rest: Vec<_> = got[1..].to_vec();
        rest.sort();
        assert_eq!(
            rest,
            [
                PathBuf::from("/run/netns/msb-a"),
                "/state/sandboxes/a/rootfs".into(),
                "/state/sandboxes/a/rw".into()
            ]
        );
    }

    #[test]
    fn placeholders_match_the_kind_of_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let carry = [
            Carry {
                from: dir.path().to_path_buf(),
                to: dir.path().join("binds/0"),
            },
            Carry {
                from: file,
                to: dir.path().join("binds/1"),
            },
        ];
        make_placeholders(&carry).unwrap();
        assert!(dir.path().join("binds/0").is_dir());
        assert!(dir.path().join("binds/1").is_file());
        make_placeholders(&carry).expect("idempotent");
    }

    /// A child entering a launch runs without the hidden mounts, with the carried ones.
    #[test]
    fn a_launched_process_sees_the_carried_mounts_and_not_the_hidden_ones() {
        use nix::mount::{mount, umount2, MntFlags, MsFlags};
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let (state, data) = (dir.path().join("state"), dir.path().join("data"));
        let (other, mine) = (state.join("other/rootfs"), state.join("mine/rootfs"));
        for d in [&other, &mine, &data] {
            std::fs::create_dir_all(d).unwrap();
        }
        let tmpfs = |at: &Path| {
            mount(
                Some("tmpfs"),
                at,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .expect("mount tmpfs (tests run as root)")
        };
        tmpfs(&other);
        std::fs::write(other.join("marker"), "other").unwrap();
        let ns = LaunchNamespace::new(std::slice::from_ref(&state)).expect("launch namespace");
        // Mounted after the namespace was made, as every sandbox's root is.
        tmpfs(&mine);
        std::fs::write(mine.join("marker"), "mine\n").unwrap();
        std::fs::write(data.join("file"), "data\n").unwrap();
        let spec = LaunchSpec {
            rootfs: mine.clone(),
            mounts: vec![LaunchMount::Bind {
                source: data.clone(),
                dest: "/data".into(),
                readonly: false,
            }],
            ..spec(vec![], None)
        };
        let (staged, carry) = plan(&spec, &state.join("mine/runtime/binds"));
        make_placeholders(&carry).unwrap();
        let launch = ns.prepare(&carry).unwrap();
        let LaunchMount::Bind {
            source: staged_data,
            ..
        } = &staged.mounts[0]
        else {
            panic!("a bind")
        };
        let script = format!(
            "cat {o}/marker 2>/dev/null || echo no-other; cat {m}/marker; cat {d}/file",
            o = other.display(),
            m = mine.display(),
            d = staged_data.display()
        );
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", &script]);
        // SAFETY: the child only runs `enter` (system calls) before exec.
        unsafe {
            cmd.pre_exec(move || launch.enter());
        }
        let out = cmd.output().unwrap();
        for at in [&mine, &other] {
            umount2(at.as_path(), MntFlags::MNT_DETACH).unwrap();
        }
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "no-other\nmine\ndata\n"
        );
        assert!(
            std::fs::read_dir(staged_data).unwrap().next().is_none(),
            "the agent's own namespace is unchanged: the placeholder stays empty"
        );
    }
}
