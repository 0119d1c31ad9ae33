//! CPU time of the node and of the bench over the measured window, read from
//! `/proc/<pid>/stat` (user + system time of all the process's threads, live and
//! exited) at the window's start and end. On a machine where the bench and the
//! node share the cores, the node's CPU per operation is the figure that does not
//! depend on what the bench itself took.

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux
/// architecture the bench runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU time used so far by the node (if its pid is known) and by this process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuMark {
    node: Option<u64>,
    bench: Option<u64>,
}

impl CpuMark {
    /// Reads both processes' CPU time now.
    pub(crate) fn now(node_pid: Option<u32>) -> Self {
        CpuMark {
            node: node_pid.and_then(cpu_ticks),
            bench: cpu_ticks(std::process::id()),
        }
    }

    /// The CPU used between `self` and `end`, over `wall` of wall-clock time.
    pub(crate) fn until(self, end: CpuMark, wall: Duration) -> CpuUse {
        let cores = |a: Option<u64>, b: Option<u64>| {
            let (a, b) = (a?, b?);
            let secs = wall.as_secs_f64();
            (secs > 0.0).then(|| b.saturating_sub(a) as f64 / TICKS_PER_SEC / secs)
        };
        CpuUse {
            node_cores: cores(self.node, end.node),
            bench_cores: cores(self.bench, end.bench),
        }
    }
}

/// Average cores used over the measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CpuUse {
    pub(crate) node_cores: Option<f64>,
    pub(crate) bench_cores: Option<f64>,
}

impl CpuUse {
    /// The node's CPU time per operation in µs, at `ops_per_sec`.
    pub(crate) fn node_us_per_op(&self, ops_per_sec: f64) -> Option<f64> {
        let cores = self.node_cores?;
        (ops_per_sec > 0.0).then(|| cores * 1e6 / ops_per_sec)
    }
}

/// User + system clock ticks of process `pid` (`utime` + `stime` of `/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
}

/// Fields 14 and 15 of a `stat` line; the command name (field 2) may contain spaces
/// and parentheses, so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: utime is field 14, the 12th here.
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_is_parsed_after_the_name() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 75 0 0 20 0 9 0 100 1000000 2000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
        assert_eq!(parse_cpu_ticks("no name"), None);
    }

    #[test]
    fn use_over_a_window() {
        let start = CpuMark {
            node: Some(1_000),
            bench: Some(200),
        };
        let end = CpuMark {
            node: Some(2_300),
            bench: Some(700),
        };
        let used = start.until(end, Duration::from_secs(10));
        assert_eq!(used.node_cores, Some(1.3));
        assert_eq!(used.bench_cores, Some(0.5));
        assert_eq!(used.node_us_per_op(3_250.0), Some(400.0));
        assert_eq!(used.node_us_per_op(0.0), None);
        let unknown = CpuMark {
            node: None,
            bench: Some(0),
        };
        assert_eq!(unknown.until(end, Duration::from_secs(1)).node_cores, None);
    }

    #[test]
    fn own_cpu_time_grows_with_work_on_linux() {
        if cfg!(target_os = "linux") {
            let start = cpu_ticks(std::process::id()).expect("own stat");
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let mut x = 0u64;
            let mut now = start;
            // Busy work until 5 ticks (50 ms of CPU) are counted.
            while now < start + 5 && std::time::Instant::now() < deadline {
                for i in 0..1_000_000u64 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                }
                now = cpu_ticks(std::process::id()).expect("own stat");
            }
            assert!(now >= start + 5, "CPU time did not grow: {start} -> {now}");
        }
    }
}
