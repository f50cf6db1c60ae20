//! What the host's `/proc` says about a sandbox's process (a VMM, a container init): thin readers
//! over `procfs-core`'s parsers, and how a VMM is recognised from its command line.

use procfs_core::process::{Stat, Status};
use procfs_core::{FromBufRead, FromRead, ProcessCGroups};
use std::path::Path;

/// Fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
}

impl From<&Stat> for ProcStat {
    fn from(s: &Stat) -> Self {
        ProcStat {
            state: s.state,
            cpu_ticks: s.utime + s.stime,
        }
    }
}

/// `/proc/<pid>/cmdline` as arguments.
pub fn parse_cmdline(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// File name of the plan of sandbox `id`; it appears on the VMM's command line, which is how a
/// PID is recognised as that sandbox's VMM (even by an agent restarted since).
pub fn plan_file_name(id: &str) -> String {
    format!("{id}.vmm.json")
}

/// If this command line is the VMM of sandbox `id` (`<exe> vmm --plan <dir>/<id>.vmm.json`),
/// its plan path.
pub fn vmm_plan_arg<'a>(args: &'a [String], id: &str) -> Option<&'a Path> {
    let name = plan_file_name(id);
    args.windows(3)
        .find(|w| {
            w[0] == "vmm" && w[1] == "--plan" && Path::new(&w[2]).file_name() == Some(name.as_ref())
        })
        .map(|w| Path::new(&w[2]))
}

/// Whether `pid` runs (a zombie or dead process does not).
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// Whether the text of a `/proc/<pid>/cgroup` puts the process in cgroup `path` (or below it),
/// in any hierarchy.
pub fn cgroup_holds(text: &str, path: &str) -> bool {
    let Ok(groups) = ProcessCGroups::from_buf_read(text.as_bytes()) else {
        return false;
    };
    let path = path.trim_end_matches('/');
    groups.0.iter().any(|g| {
        g.pathname
            .strip_prefix(path)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Whether `pid` runs and is in cgroup `path`: two small reads of `/proc`, where asking the
/// runtime means starting a process. A recycled PID is in another cgroup, so `true` is
/// definite; `false` is not (the caller asks the runtime then).
pub fn runs_in_cgroup(pid: u32, path: &str) -> bool {
    alive(pid)
        && std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|text| cgroup_holds(&text, path))
}

/// Read and parse `/proc/<pid>/stat`; `None` if the process is gone.
pub fn stat(pid: u32) -> Option<ProcStat> {
    Stat::from_file(format!("/proc/{pid}/stat"))
        .ok()
        .map(|s| ProcStat::from(&s))
}

/// The process's arguments; empty if it is gone (or a zombie, whose cmdline is empty).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| parse_cmdline(&b))
        .unwrap_or_default()
}

/// Resident memory of the process in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = Status::from_file(format!("/proc/{pid}/status")).ok()?;
    status.vmrss.map(|kib| kib * 1024)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), for converting `/proc` CPU times.
pub fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// The last `max_lines` lines of a (log) file, for error messages; empty if unreadable.
pub fn tail(path: &Path, max_lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    // Logs can be large; only the end matters.
    let start = bytes.len().saturating_sub(64 * 1024);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_of_odd_command_names() {
        let stat = |text: &str| ProcStat::from(&Stat::from_read(text.as_bytes()).unwrap());
        let text = "4242 (VM: my (box) 1) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 25 0 0 20 0 5 0 999 123456 789 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            stat(text),
            ProcStat {
                state: 'S',
                cpu_ticks: 175
            }
        );
        let zombie = "7 (krun) Z 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 5 0 0 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(stat(zombie).state, 'Z');
        assert!(Stat::from_read("garbage".as_bytes()).is_err());
    }

    #[test]
    fn cgroup_membership_v1_and_v2() {
        let v2 = "0::/microsandbox/msb-a\n";
        assert!(cgroup_holds(v2, "/microsandbox/msb-a"));
        assert!(cgroup_holds(
            "0::/microsandbox/msb-a/init\n",
            "/microsandbox/msb-a"
        ));
        assert!(!cgroup_holds(v2, "/microsandbox/msb-ab"));
        assert!(!cgroup_holds(
            "0::/microsandbox/msb-ab\n",
            "/microsandbox/msb-a"
        ));
        assert!(!cgroup_holds("0::/user.slice\n", "/microsandbox/msb-a"));
        let v1 = "12:memory:/microsandbox/msb-a\n11:cpu,cpuacct:/microsandbox/msb-a\n1:name=systemd:/init.scope\n0::/\n";
        assert!(cgroup_holds(v1, "/microsandbox/msb-a"));
        assert!(!cgroup_holds("", "/microsandbox/msb-a"));
        let me = std::process::id();
        let mine = std::fs::read_to_string(format!("/proc/{me}/cgroup")).unwrap();
        let path = mine
            .lines()
            .next()
            .unwrap()
            .splitn(3, ':')
            .nth(2)
            .unwrap()
            .to_string();
        assert!(runs_in_cgroup(me, &path));
        assert!(!runs_in_cgroup(me, "/microsandbox/no-such-sandbox"));
    }

    #[test]
    fn vmm_cmdline_matching() {
        let args =
            parse_cmdline(b"/usr/bin/microsandbox-agent\0vmm\0--plan\0/run/msb/a/msb-a.vmm.json\0");
        assert_eq!(args.len(), 4);
        assert_eq!(
            vmm_plan_arg(&args, "msb-a"),
            Some(Path::new("/run/msb/a/msb-a.vmm.json"))
        );
        assert_eq!(vmm_plan_arg(&args, "msb-b"), None);
        assert_eq!(vmm_plan_arg(&args, "msb"), None);
        let other = parse_cmdline(b"/bin/sleep\x00100\x00");
        assert_eq!(vmm_plan_arg(&other, "msb-a"), None);
        assert!(parse_cmdline(b"").is_empty());
    }

    #[test]
    fn tail_keeps_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("log");
        std::fs::write(&f, "1\n2\n3\n4\n").unwrap();
        assert_eq!(tail(&f, 2), "3\n4");
        assert_eq!(tail(&dir.path().join("none"), 2), "");
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(stat(me).is_some());
        assert!(alive(me));
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(!cmdline(me).is_empty());
        assert!(clock_ticks_per_second() > 0);
    }
}
