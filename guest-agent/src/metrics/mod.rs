//! Resource usage of everything running in the sandbox, read from `/proc` (`stat` and `io`
//! parsed by `procfs-core`; this module chooses the files and adds them up).
//!
//! CPU: the sum over every live process of its own time plus the time of the children it has
//! reaped (`utime+stime+cutime+cstime`). Every process in the sandbox descends from the agent (PID 1
//! or child subreaper), so each dead process is counted exactly once, in its reaper's `cutime`, and
//! the total only grows. Disk I/O is summed the same way (`/proc/[pid]/io` also accumulates reaped
//! children). Memory is the sum of resident set sizes. Kernel threads (visible only inside a VM)
//! count towards CPU but not towards `processes`.

use microsandbox_wire::guest::GuestMetrics;
use nix::unistd::{sysconf, SysconfVar};
use procfs_core::process::{Io, Stat};
use procfs_core::FromRead;
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
            let Some(pid) = name.to_str().and_then(pid_of) else {
                continue;
            };
            let dir = entry.path();
            // A process may vanish between listing and reading: skip it silently.
            let Ok(stat) = Stat::from_file(dir.join("stat")) else {
                continue;
            };
            if !is_kernel_thread(pid, &stat) {
                m.processes += 1;
            }
            cpu_ticks = cpu_ticks.saturating_add(total_ticks(&stat));
            m.memory_bytes = m.memory_bytes.saturating_add(stat.rss.saturating_mul(page));
            if let Ok(io) = Io::from_file(dir.join("io")) {
                m.disk_read_bytes = m.disk_read_bytes.saturating_add(io.read_bytes);
                m.disk_write_bytes = m.disk_write_bytes.saturating_add(io.write_bytes);
            }
        }
    }
    m.cpu_usage_us = ticks_to_us(cpu_ticks, ticks);
    if let Ok(net) = std::fs::read_to_string(proc_root.join("net/dev")) {
        (m.net_rx_bytes, m.net_tx_bytes) = off_host_traffic(&net);
    }
    m
}

/// A `/proc` entry name that is a process id.
fn pid_of(name: &str) -> Option<i32> {
    name.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| name.parse().ok())
        .flatten()
}

/// Kernel threads (children of kthreadd, pid 2) are not sandbox processes; they are only visible
/// when the agent is the init of a VM.
fn is_kernel_thread(pid: i32, stat: &Stat) -> bool {
    pid == 2 || stat.ppid == 2
}

/// Own CPU time plus that of every child this process has reaped, in ticks (the kernel prints
/// the children's times signed; a negative one counts as 0).
fn total_ticks(stat: &Stat) -> u64 {
    let children = |t: i64| u64::try_from(t).unwrap_or(0);
    stat.utime + stat.stime + children(stat.cutime) + children(stat.cstime)
}

/// Bytes received and sent over every interface except loopback, from `/proc/net/dev`.
///
/// Parsed here, not by `procfs-core`: the kernel prints `%6s:%8llu`, so from 10^8 received bytes
/// on there is no space after the colon (`eth0:123456789`), which its whitespace split rejects.
fn off_host_traffic(net_dev: &str) -> (u64, u64) {
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in net_dev.lines() {
        let Some((iface, data)) = line.split_once(':') else {
            continue;
        };
        let iface = iface.trim();
        if iface == "lo" || iface.contains('|') {
            continue;
        }
        let f: Vec<&str> = data.split_ascii_whitespace().collect();
        if f.len() < 9 {
            continue;
        }
        rx = rx.saturating_add(f[0].parse().unwrap_or(0));
        tx = tx.saturating_add(f[8].parse().unwrap_or(0));
    }
    (rx, tx)
}

/// Convert clock ticks to microseconds.
fn ticks_to_us(ticks: u64, ticks_per_sec: u64) -> u64 {
    if ticks_per_sec == 0 {
        return 0;
    }
    (ticks as u128 * 1_000_000 / ticks_per_sec as u128) as u64
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

    #[test]
    fn kernel_threads_and_child_times() {
        let stat = |text: &str| Stat::from_read(text.as_bytes()).unwrap();
        let kthread = stat("9 (ksoftirqd/0) S 2 0 0 0 -1 69238848 0 0 0 0 5 6 0 0 20 0 1 0 3 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 0 0 0 0 0 0");
        assert!(is_kernel_thread(9, &kthread));
        assert_eq!(total_ticks(&kthread), 11);
        let user = stat("1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560 1063 2093 0 0 150 42 -1 3 20 0 1 0 12345 10000000 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0");
        assert!(!is_kernel_thread(1234, &user));
        assert_eq!(total_ticks(&user), 150 + 42 + 3);
    }

    #[test]
    fn traffic_leaves_out_loopback() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 9999999     100    0    0    0     0          0         0  9999999     100    0    0    0     0       0          0
  eth0: 1000      10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0
  eth1:123456789 5 0 0 0 0 0 0 700 7 0 0 0 0 0 0
";
        assert_eq!(off_host_traffic(text), (123_457_789, 2700));
    }

    #[test]
    fn pids_and_ticks() {
        assert_eq!(pid_of("40213"), Some(40213));
        assert_eq!(pid_of("self"), None);
        assert_eq!(pid_of(""), None);
        assert_eq!(ticks_to_us(250, 100), 2_500_000);
        assert_eq!(ticks_to_us(1, 0), 0);
    }
}
