//! What the soak tests and benchmarks of several crates share: a process's footprint read from
//! `/proc` (procfs-core's parsers) and the least-squares slope of a series (growth per unit of
//! work, printed as a figure rather than asserted), and a registry that wants a password
//! ([`registry::AuthRegistry`]).

pub mod registry;

/// What a process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Resident memory.
    pub rss_kib: u64,
    /// Peak resident memory so far.
    pub peak_rss_kib: u64,
    pub fds: usize,
    pub threads: u64,
}

impl Footprint {
    /// The footprint of process `pid`; panics if it is gone (a test's process must not be).
    pub fn of(pid: u32) -> Footprint {
        use procfs_core::FromRead;
        let status = procfs_core::process::Status::from_file(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
        Footprint {
            rss_kib: status.vmrss.unwrap_or(0),
            peak_rss_kib: status.vmhwm.unwrap_or(0),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count())
                .unwrap_or(0),
            threads: status.threads,
        }
    }
}

/// Least-squares slope of `y` over `x` (0 for a single point or a vertical series).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_a_flat_series() {
        let line: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 * x as f64 + 1.0)).collect();
        assert!((slope(&line) - 3.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 5.0), (2.0, 5.0), (3.0, 5.0)]), 0.0);
        assert_eq!(slope(&[(1.0, 5.0)]), 0.0);
    }

    #[test]
    fn the_footprint_of_this_process_is_read() {
        let f = Footprint::of(std::process::id());
        assert!(f.rss_kib > 0 && f.peak_rss_kib >= f.rss_kib);
        assert!(f.fds >= 3 && f.threads >= 1);
    }
}
