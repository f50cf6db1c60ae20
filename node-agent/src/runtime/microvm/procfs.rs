//! What the host's `/proc` says about a VMM process: parsers (pure, tested) and thin readers.

use std::path::Path;

/// Fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
}

/// Parse `/proc/<pid>/stat`. The command name (field 2) may contain spaces and parentheses,
/// so fields are counted from the *last* `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state(3) ppid(4) ... utime(14) stime(15) => indexes 0 and 11, 12.
    let state = fields.first()?.chars().next()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcStat {
        state,
        cpu_ticks: utime + stime,
    })
}

/// Resident set size in bytes from `/proc/<pid>/status` (`VmRSS:  1234 kB`).
pub fn parse_status_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
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

/// Read and parse `/proc/<pid>/stat`; `None` if the process is gone.
pub fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The process's arguments; empty if it is gone (or a zombie, whose cmdline is empty).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| parse_cmdline(&b))
        .unwrap_or_default()
}

/// Resident memory of the process in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    parse_status_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), for converting `/proc` CPU times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
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
    fn stat_with_odd_command_names() {
        let text = "4242 (VM: my (box) 1) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 25 0 0 20 0 5 0 999 123456 789 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(ProcStat {
                state: 'S',
                cpu_ticks: 175
            })
        );
        let zombie = "7 (krun) Z 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat(zombie).map(|s| s.state), Some('Z'));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn status_rss() {
        let text =
            "Name:\tmicrosandbox-ag\nVmPeak:\t  900000 kB\nVmRSS:\t  204800 kB\nThreads:\t7\n";
        assert_eq!(parse_status_rss(text), Some(204_800 * 1024));
        assert_eq!(parse_status_rss("Name:\tx\n"), None);
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
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(!cmdline(me).is_empty());
        assert!(clock_ticks_per_second() > 0);
    }
}
