//! Resource usage of everything running in the sandbox, read from `/proc`.
//!
//! CPU: the sum over every live process of its own time plus the time of the children it has
//! reaped (`utime+stime+cutime+cstime`). Every process in the sandbox descends from the agent (PID 1
//! or child subreaper), so each dead process is counted exactly once, in its reaper's `cutime`, and
//! the total only grows. Disk I/O is summed the same way (`/proc/[pid]/io` also accumulates reaped
//! children). Memory is the sum of resident set sizes. Kernel threads (visible only inside a VM)
//! count towards CPU but not towards `processes`.

pub mod procfs;

use microsandbox_wire::guest::GuestMetrics;
use nix::unistd::{sysconf, SysconfVar};
use std::path::Path;

/// Collect metrics from the `/proc` mounted at `proc_root`.
pub fn collect(proc_root: &Path) -> GuestMetrics {
    let ticks = sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as u64;
    let page = sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .filter(|p| *p > 0)
        .unwrap_or(4096) as u64;

    let mut m = GuestMetrics::default();
    let mut cpu_ticks = 0u64;
    if let Ok(entries) = std::fs::read_dir(proc_root) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !procfs::is_pid_dir(name) {
                continue;
            }
            let dir = entry.path();
            // A process may vanish between listing and reading: skip it silently.
            let Some(stat) = std::fs::read_to_string(dir.join("stat"))
                .ok()
                .and_then(|t| procfs::parse_stat(&t))
            else {
                continue;
            };
            if !stat.is_kernel_thread(name.parse().unwrap_or(0)) {
                m.processes += 1;
            }
            cpu_ticks = cpu_ticks.saturating_add(stat.total_ticks());
            m.memory_bytes = m
                .memory_bytes
                .saturating_add(stat.rss_pages.saturating_mul(page));
            if let Ok(io) = std::fs::read_to_string(dir.join("io")) {
                let (r, w) = procfs::parse_io(&io);
                m.disk_read_bytes = m.disk_read_bytes.saturating_add(r);
                m.disk_write_bytes = m.disk_write_bytes.saturating_add(w);
            }
        }
    }
    m.cpu_usage_us = procfs::ticks_to_us(cpu_ticks, ticks);
    if let Ok(net) = std::fs::read_to_string(proc_root.join("net/dev")) {
        (m.net_rx_bytes, m.net_tx_bytes) = procfs::parse_net_dev(&net);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_from_live_proc() {
        let m = collect(Path::new("/proc"));
        assert!(m.processes >= 1);
        assert!(m.memory_bytes > 0);
    }
}
