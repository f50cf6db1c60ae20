//! cgroup v1 / hybrid / v2 detection and the per-sandbox accounting files.

use std::path::{Path, PathBuf};

use crate::runtime::HostUsage;

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
        Self {
            mode,
            rel: rel.trim_start_matches('/').to_string(),
            root: PathBuf::from("/sys/fs/cgroup"),
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

    /// Remove the cgroup directories (they must be empty of processes).
    pub fn remove(&self) {
        match self.mode {
            CgroupMode::Unified => {
                let _ = std::fs::remove_dir(self.root.join(&self.rel));
            }
            CgroupMode::Legacy => {
                if let Ok(entries) = std::fs::read_dir(&self.root) {
                    for e in entries.flatten() {
                        let _ = std::fs::remove_dir(e.path().join(&self.rel));
                    }
                }
            }
            CgroupMode::None => {}
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
