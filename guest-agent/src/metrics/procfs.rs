//! Pure parsers for the `/proc` files the metrics are built from. No I/O here.

/// The fields of `/proc/[pid]/stat` the agent uses (times in clock ticks, rss in pages).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStat {
    pub ppid: u64,
    pub utime: u64,
    pub stime: u64,
    /// CPU time of reaped children (user).
    pub cutime: u64,
    /// CPU time of reaped children (system).
    pub cstime: u64,
    pub rss_pages: u64,
}

impl ProcStat {
    /// Kernel threads (children of kthreadd, pid 2) are not sandbox processes; they are only
    /// visible when the agent is the init of a VM.
    pub fn is_kernel_thread(&self, pid: u64) -> bool {
        pid == 2 || self.ppid == 2
    }

    /// Own CPU time plus that of every child this process has reaped, in ticks.
    pub fn total_ticks(&self) -> u64 {
        self.utime + self.stime + self.cutime + self.cstime
    }
}

/// Parse `/proc/[pid]/stat`. The command name (field 2) may contain spaces and parentheses, so
/// fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // f[0] is field 3 (state): field n is at index n - 3.
    let num = |field: usize| -> Option<u64> {
        let v = f.get(field - 3)?;
        // cutime/cstime are signed in the kernel's format; clamp negatives to 0.
        v.parse::<u64>()
            .ok()
            .or_else(|| v.parse::<i64>().ok().map(|_| 0))
    };
    Some(ProcStat {
        ppid: num(4)?,
        utime: num(14)?,
        stime: num(15)?,
        cutime: num(16)?,
        cstime: num(17)?,
        rss_pages: num(24)?,
    })
}

/// Storage I/O from `/proc/[pid]/io`: (`read_bytes`, `write_bytes`).
pub fn parse_io(text: &str) -> (u64, u64) {
    let mut read = 0;
    let mut write = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().parse().unwrap_or(0);
        match key.trim() {
            "read_bytes" => read = value,
            "write_bytes" => write = value,
            _ => {}
        }
    }
    (read, write)
}

/// Totals of `/proc/net/dev` over every interface except loopback: (rx bytes, tx bytes).
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in text.lines() {
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
pub fn ticks_to_us(ticks: u64, ticks_per_sec: u64) -> u64 {
    if ticks_per_sec == 0 {
        return 0;
    }
    (ticks as u128 * 1_000_000 / ticks_per_sec as u128) as u64
}

/// True for `/proc` entry names that are process ids.
pub fn is_pid_dir(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560 1063 2093 0 0 \
        150 42 7 3 20 0 1 0 12345 10000000 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn parses_stat_with_parens_in_comm() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(
            s,
            ProcStat {
                ppid: 1,
                utime: 150,
                stime: 42,
                cutime: 7,
                cstime: 3,
                rss_pages: 2048
            }
        );
        assert_eq!(s.total_ticks(), 202);
        assert!(!s.is_kernel_thread(1234));
        let kthread = parse_stat("9 (ksoftirqd/0) S 2 0 0 0 -1 69238848 0 0 0 0 5 6 0 0 20 0 1 0 3 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 0 0 0 0 0 0").unwrap();
        assert!(kthread.is_kernel_thread(9));
        assert_eq!(kthread.total_ticks(), 11);
    }

    #[test]
    fn truncated_stat_is_none() {
        assert_eq!(parse_stat("1 (x) S 0 1 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn negative_child_times_clamp_to_zero() {
        let text = STAT.replace(" 7 3 ", " -1 -2 ");
        let s = parse_stat(&text).unwrap();
        assert_eq!((s.cutime, s.cstime), (0, 0));
    }

    #[test]
    fn parses_io() {
        let text = "rchar: 100\nwchar: 200\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io(text), (4096, 8192));
        assert_eq!(parse_io(""), (0, 0));
    }

    #[test]
    fn parses_net_dev_excluding_loopback() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 9999999     100    0    0    0     0          0         0  9999999     100    0    0    0     0       0          0
  eth0: 1000      10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0
  eth1:500 5 0 0 0 0 0 0 700 7 0 0 0 0 0 0
";
        assert_eq!(parse_net_dev(text), (1500, 2700));
    }

    #[test]
    fn converts_ticks() {
        assert_eq!(ticks_to_us(250, 100), 2_500_000);
        assert_eq!(ticks_to_us(1, 0), 0);
    }

    #[test]
    fn recognizes_pid_dirs() {
        assert!(is_pid_dir("1"));
        assert!(is_pid_dir("40213"));
        assert!(!is_pid_dir("self"));
        assert!(!is_pid_dir(""));
        assert!(!is_pid_dir("12a"));
    }
}
