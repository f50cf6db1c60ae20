//! cgroup v1 / hybrid / v2 detection, the per-sandbox accounting files, and the cgroups the agent
//! makes itself (a microVM's VMM; crun makes those of containers from the OCI spec).

use std::path::{Path, PathBuf};

use crate::runtime::HostUsage;

/// Where the cgroup file systems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Parent cgroup of every sandbox (a container's, or a microVM's VMM).
pub const CGROUP_PARENT: &str = "microsandbox";

/// A sandbox's cgroup, relative to each controller's root.
pub fn sandbox_cgroup(id: &str) -> String {
    format!("/{CGROUP_PARENT}/{id}")
}

/// How cgroups are mounted on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// cgroup v2 only (`/sys/fs/cgroup` is cgroup2).
    Unified,
    /// v1 controllers, possibly with a v2 hierarchy at `/sys/fs/cgroup/unified`.
    Legacy,
    /// Nothing usable.
    None,
}

impl CgroupMode {
    pub fn detect() -> Self {
        Self::from_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
    }

    /// Decide from a mountinfo text.
    pub fn from_mountinfo(text: &str) -> Self {
        let mut legacy = false;
        for line in text.lines() {
            let mut halves = line.split(" - ");
            let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
                continue;
            };
            let Some(point) = left.split(' ').nth(4) else {
                continue;
            };
            let fstype = right.split(' ').next().unwrap_or("");
            if point == "/sys/fs/cgroup" && fstype == "cgroup2" {
                return CgroupMode::Unified;
            }
            if point.starts_with("/sys/fs/cgroup/") && fstype == "cgroup" {
                legacy = true;
            }
        }
        if legacy {
            CgroupMode::Legacy
        } else {
            CgroupMode::None
        }
    }
}

/// The accounting files of one sandbox's cgroup.
#[derive(Debug, Clone)]
pub struct CgroupPaths {
    mode: CgroupMode,
    rel: String,
    root: PathBuf,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Value of `key` in a flat-keyed file (`memory.events`, `cpu.stat`, `memory.oom_control`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
}

impl CgroupPaths {
    pub fn new(mode: CgroupMode, rel: &str) -> Self {
        Self::under(Path::new(CGROUP_ROOT), mode, rel)
    }

    /// The same below another mount point than [`CGROUP_ROOT`] (tests).
    pub fn under(root: &Path, mode: CgroupMode, rel: &str) -> Self {
        Self {
            mode,
            rel: rel.trim_start_matches('/').to_string(),
            root: root.to_path_buf(),
        }
    }

    fn v1(&self, controller: &str, file: &str) -> PathBuf {
        self.root.join(controller).join(&self.rel).join(file)
    }

    fn v2(&self, file: &str) -> PathBuf {
        self.root.join(&self.rel).join(file)
    }

    /// Current usage and limits.
    pub fn usage(&self) -> HostUsage {
        match self.mode {
            CgroupMode::Unified => {
                let limit = std::fs::read_to_string(self.v2("memory.max"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                HostUsage {
                    memory_bytes: read_u64(&self.v2("memory.current")),
                    memory_limit_bytes: limit,
                    cpu_usage_us: std::fs::read_to_string(self.v2("cpu.stat"))
                        .ok()
                        .and_then(|t| keyed(&t, "usage_usec")),
                    oom_kills: std::fs::read_to_string(self.v2("memory.events"))
                        .ok()
                        .and_then(|t| keyed(&t, "oom_kill")),
                    pids: read_u64(&self.v2("pids.current")),
                }
            }
            CgroupMode::Legacy => HostUsage {
                memory_bytes: read_u64(&self.v1("memory", "memory.usage_in_bytes")),
                memory_limit_bytes: read_u64(&self.v1("memory", "memory.limit_in_bytes")),
                cpu_usage_us: read_u64(&self.v1("cpuacct", "cpuacct.usage")).map(|ns| ns / 1000),
                oom_kills: std::fs::read_to_string(self.v1("memory", "memory.oom_control"))
                    .ok()
                    .and_then(|t| keyed(&t, "oom_kill")),
                pids: read_u64(&self.v1("pids", "pids.current")),
            },
            CgroupMode::None => HostUsage::default(),
        }
    }

    /// The writes that create this cgroup with `limits`: directories to make and `(file, value)`
    /// pairs, parents' controller delegation first. Pure: see [`CgroupPaths::create`].
    pub fn plan(&self, limits: &CgroupLimits) -> CgroupPlan {
        let period = 100_000u64;
        let quota = u64::from(limits.cpus.max(1)) * period;
        match self.mode {
            CgroupMode::Unified => {
                let mut writes = Vec::new();
                // Delegate the controllers down to our directory (v2's no-internal-process rule
                // only concerns the leaves, which hold the VMMs).
                let mut dir = self.root.clone();
                for part in Path::new(&self.rel)
                    .parent()
                    .into_iter()
                    .flat_map(Path::iter)
                {
                    writes.push((
                        dir.join("cgroup.subtree_control"),
                        "+memory +cpu +pids".into(),
                    ));
                    dir = dir.join(part);
                }
                writes.push((
                    dir.join("cgroup.subtree_control"),
                    "+memory +cpu +pids".into(),
                ));
                writes.push((self.v2("memory.max"), limits.memory_bytes.to_string()));
                writes.push((self.v2("memory.swap.max"), "0".into()));
                writes.push((self.v2("cpu.max"), format!("{quota} {period}")));
                writes.push((self.v2("pids.max"), limits.pids.to_string()));
                CgroupPlan {
                    dirs: vec![self.root.join(&self.rel)],
                    writes,
                    procs: vec![self.v2("cgroup.procs")],
                }
            }
            CgroupMode::Legacy => {
                let dirs: Vec<PathBuf> = V1_CONTROLLERS
                    .iter()
                    .map(|c| self.root.join(c).join(&self.rel))
                    .collect();
                CgroupPlan {
                    procs: dirs.iter().map(|d| d.join("cgroup.procs")).collect(),
                    dirs,
                    writes: vec![
                        (
                            self.v1("memory", "memory.limit_in_bytes"),
                            limits.memory_bytes.to_string(),
                        ),
                        (self.v1("cpu", "cpu.cfs_period_us"), period.to_string()),
                        (self.v1("cpu", "cpu.cfs_quota_us"), quota.to_string()),
                        (self.v1("pids", "pids.max"), limits.pids.to_string()),
                    ],
                }
            }
            CgroupMode::None => CgroupPlan::default(),
        }
    }

    /// Make this cgroup with `limits`; returns the `cgroup.procs` files a process writes `0`
    /// into to join it (see [`join`]). A delegation write that the kernel refuses because the
    /// controller is already on is not an error; any other failure is.
    pub fn create(&self, limits: &CgroupLimits) -> std::io::Result<Vec<PathBuf>> {
        let plan = self.plan(limits);
        for dir in &plan.dirs {
            std::fs::create_dir_all(dir)?;
        }
        for (file, value) in &plan.writes {
            let delegation = file.ends_with("cgroup.subtree_control");
            match std::fs::write(file, value) {
                Ok(()) => {}
                // swap accounting may be off (no memory.swap.max): nothing to limit then.
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && file.ends_with("memory.swap.max") => {}
                Err(e) if delegation => {
                    tracing::debug!(file = %file.display(), error = %e, "cgroup delegation not changed");
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("writing {value:?} to {}: {e}", file.display()),
                    ))
                }
            }
        }
        Ok(plan.procs)
    }

    /// Freeze or thaw the cgroup through cgroup v2's `cgroup.freeze`, waiting (up to 5 s) until
    /// `cgroup.events` says it is done. `Ok(false)`: no v2 freezer here (the caller stops the
    /// processes another way).
    pub fn freeze(&self, frozen: bool) -> std::io::Result<bool> {
        if self.mode != CgroupMode::Unified {
            return Ok(false);
        }
        std::fs::write(self.v2("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        let want = if frozen { 1 } else { 0 };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let events = std::fs::read_to_string(self.v2("cgroup.events"))?;
            if keyed(&events, "frozen") == Some(want) {
                return Ok(true);
            }
            if std::time::Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "cgroup {} not {} after 5 s",
                    self.rel,
                    if frozen { "frozen" } else { "thawed" }
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The cgroup directories (every controller's, for cgroup v1).
    fn dirs(&self) -> Vec<PathBuf> {
        match self.mode {
            CgroupMode::Unified => vec![self.root.join(&self.rel)],
            CgroupMode::Legacy => std::fs::read_dir(&self.root)
                .map(|rd| rd.flatten().map(|e| e.path().join(&self.rel)).collect())
                .unwrap_or_default(),
            CgroupMode::None => vec![],
        }
    }

    /// Remove the cgroup directories (they must be empty of processes): whether none is left.
    /// `EBUSY` is an answer, not a failure: a killed process that is still exiting is in no
    /// `cgroup.procs` yet keeps its cgroup busy until it is gone.
    pub fn try_remove(&self) -> bool {
        let mut gone = true;
        for dir in self.dirs() {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => gone = false,
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot remove");
                }
            }
        }
        gone
    }

    /// Remove the cgroup directories, warning about any still busy.
    pub fn remove(&self) {
        for dir in self.dirs() {
            crate::cleanup::remove_dir(&dir);
        }
    }

    /// Processes still in this sandbox's cgroups (every controller's directory).
    pub fn procs(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs()
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Any cgroup directory of this sandbox still present (for leak checks).
    pub fn exists(&self) -> bool {
        match self.mode {
            CgroupMode::Unified => self.root.join(&self.rel).exists(),
            CgroupMode::Legacy => std::fs::read_dir(&self.root)
                .map(|rd| rd.flatten().any(|e| e.path().join(&self.rel).exists()))
                .unwrap_or(false),
            CgroupMode::None => false,
        }
    }
}

/// v1 controllers a VMM's cgroup uses (cpuacct for the usage the API reports).
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];

/// Limits of a cgroup the agent makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory_bytes: u64,
    /// CPU time per period, in whole CPUs.
    pub cpus: u32,
    pub pids: u32,
}

/// What [`CgroupPaths::create`] does, decided without touching the file system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupPlan {
    pub dirs: Vec<PathBuf>,
    pub writes: Vec<(PathBuf, String)>,
    /// Files to write `0` into to join.
    pub procs: Vec<PathBuf>,
}

/// Move the calling process (all its threads) into the cgroup of each `cgroup.procs` file.
pub fn join(procs: &[PathBuf]) -> std::io::Result<()> {
    for file in procs {
        std::fs::write(file, b"0").map_err(|e| {
            std::io::Error::new(e.kind(), format!("joining {}: {e}", file.display()))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CgroupLimits = CgroupLimits {
        memory_bytes: 768 << 20,
        cpus: 2,
        pids: 512,
    };

    #[test]
    fn v1_plan_limits_every_controller() {
        let plan = CgroupPaths::new(CgroupMode::Legacy, "/microsandbox/msb-a").plan(&LIMITS);
        assert_eq!(plan.dirs.len(), 4);
        assert!(plan.procs.contains(&PathBuf::from(
            "/sys/fs/cgroup/pids/microsandbox/msb-a/cgroup.procs"
        )));
        let get = |f: &str| {
            plan.writes
                .iter()
                .find(|(p, _)| p.ends_with(f))
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("memory.limit_in_bytes").as_deref(), Some("805306368"));
        assert_eq!(get("cpu.cfs_quota_us").as_deref(), Some("200000"));
        assert_eq!(get("cpu.cfs_period_us").as_deref(), Some("100000"));
        assert_eq!(get("pids.max").as_deref(), Some("512"));
    }

    #[test]
    fn v2_plan_delegates_down_the_tree_then_limits() {
        let plan = CgroupPaths::new(CgroupMode::Unified, "microsandbox/msb-a").plan(&LIMITS);
        let files: Vec<String> = plan
            .writes
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert_eq!(
            files,
            [
                "/sys/fs/cgroup/cgroup.subtree_control",
                "/sys/fs/cgroup/microsandbox/cgroup.subtree_control",
                "/sys/fs/cgroup/microsandbox/msb-a/memory.max",
                "/sys/fs/cgroup/microsandbox/msb-a/memory.swap.max",
                "/sys/fs/cgroup/microsandbox/msb-a/cpu.max",
                "/sys/fs/cgroup/microsandbox/msb-a/pids.max",
            ]
        );
        assert_eq!(plan.writes[4].1, "200000 100000");
        assert_eq!(
            plan.procs,
            [PathBuf::from(
                "/sys/fs/cgroup/microsandbox/msb-a/cgroup.procs"
            )]
        );
    }

    #[test]
    fn no_cgroups_no_plan() {
        assert_eq!(
            CgroupPaths::new(CgroupMode::None, "/x").plan(&LIMITS),
            CgroupPlan::default()
        );
    }

    const HYBRID: &str = "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
    const V2: &str = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";

    #[test]
    fn detects_modes() {
        assert_eq!(CgroupMode::from_mountinfo(HYBRID), CgroupMode::Legacy);
        assert_eq!(CgroupMode::from_mountinfo(V2), CgroupMode::Unified);
        assert_eq!(CgroupMode::from_mountinfo(""), CgroupMode::None);
    }

    #[test]
    fn keyed_files() {
        assert_eq!(
            keyed("low 0\nhigh 0\nmax 2\noom 1\noom_kill 3\n", "oom_kill"),
            Some(3)
        );
        assert_eq!(
            keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n", "oom_kill"),
            Some(1)
        );
        assert_eq!(
            keyed("usage_usec 1234\nuser_usec 1000\n", "usage_usec"),
            Some(1234)
        );
        assert_eq!(keyed("", "x"), None);
    }
}
