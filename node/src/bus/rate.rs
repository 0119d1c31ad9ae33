//! A per-session count of messages in the last minute, handed to policies as
//! `context.rate_per_minute` so that thresholds live in policy. Two fixed one-minute windows,
//! the previous one weighted by how much of it still overlaps the last 60 seconds.

use std::sync::Mutex;

use crate::locks::lock;

/// Messages counted in the current and the previous minute.
#[derive(Debug, Default)]
pub(crate) struct MinuteCounter {
    state: Mutex<Windows>,
}

#[derive(Debug, Default)]
struct Windows {
    minute: i64,
    current: u64,
    previous: u64,
}

impl MinuteCounter {
    /// Counts one message at `now_ms` (unix milliseconds) and returns the estimated number of
    /// messages in the 60 seconds ending now, this one included.
    pub(crate) fn hit(&self, now_ms: i64) -> u64 {
        let minute = now_ms.div_euclid(60_000);
        let mut w = lock(&self.state);
        if minute != w.minute {
            w.previous = if minute == w.minute + 1 { w.current } else { 0 };
            w.current = 0;
            w.minute = minute;
        }
        w.current += 1;
        let elapsed = now_ms.rem_euclid(60_000) as u64;
        // Rounded up: just past a minute's start the previous window still counts whole (a
        // burst across the boundary is never counted short by the rounding).
        w.current + (w.previous * (60_000 - elapsed)).div_ceil(60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_last_minute() {
        let c = MinuteCounter::default();
        let t0 = 1_000 * 60_000;
        for i in 0..10 {
            assert_eq!(c.hit(t0 + i), i as u64 + 1);
        }
        // Half-way through the next minute, half of the previous window still counts.
        assert_eq!(c.hit(t0 + 90_000), 1 + 5);
        // Two minutes later, nothing of the old windows counts.
        assert_eq!(c.hit(t0 + 200_000), 1);
    }

    #[test]
    fn a_burst_across_a_minute_boundary_is_counted_whole() {
        let c = MinuteCounter::default();
        let end = 1_001 * 60_000;
        for i in 0..50 {
            c.hit(end - 50 + i);
        }
        // 10 ms into the next minute: the 50 of the previous one all fall in the last 60 s.
        assert_eq!(c.hit(end + 10), 51);
    }
}
