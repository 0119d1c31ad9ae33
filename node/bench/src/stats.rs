//! Latency statistics: all latencies of the measured window, in microseconds,
//! merged from the receiving tasks and summarised by nearest-rank percentiles;
//! error responses counted by code.

use std::collections::BTreeMap;

/// An error response code seen, how often, and the first description.
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorStat {
    pub(crate) count: u64,
    pub(crate) description: Option<String>,
}

/// Counts one error response `code`; `description` is asked for the first one only.
pub(crate) fn record_error(
    errors: &mut BTreeMap<u16, ErrorStat>,
    code: u16,
    description: impl FnOnce() -> Option<String>,
) {
    let e = errors.entry(code).or_default();
    e.count += 1;
    if e.description.is_none() {
        e.description = description();
    }
}

/// Adds the counts of `other` into `errors` (keeping the first descriptions).
pub(crate) fn merge_errors(errors: &mut BTreeMap<u16, ErrorStat>, other: BTreeMap<u16, ErrorStat>) {
    for (code, e) in other {
        let mine = errors.entry(code).or_default();
        mine.count += e.count;
        if mine.description.is_none() {
            mine.description = e.description;
        }
    }
}

/// Latencies (µs) collected by one or more receiving tasks.
#[derive(Debug, Default)]
pub(crate) struct Latencies {
    samples: Vec<u32>,
}

impl Latencies {
    /// Records one latency, given in nanoseconds; saturates at `u32::MAX` µs (~71 min).
    pub(crate) fn record_ns(&mut self, ns: u64) {
        let us = u32::try_from(ns / 1_000).unwrap_or(u32::MAX);
        self.samples.push(us);
    }

    /// Moves all samples of `other` into `self`.
    pub(crate) fn merge(&mut self, mut other: Latencies) {
        if self.samples.is_empty() {
            self.samples = other.samples;
        } else {
            self.samples.append(&mut other.samples);
        }
    }

    /// Number of samples.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    /// Sorts the samples and computes the summary; `None` without samples.
    pub(crate) fn summarize(mut self) -> Option<Summary> {
        self.samples.sort_unstable();
        let s = &self.samples;
        let max = *s.last()?;
        let sum: u64 = s.iter().map(|&v| u64::from(v)).sum();
        Some(Summary {
            count: s.len() as u64,
            mean_us: sum as f64 / s.len() as f64,
            p50_us: percentile(s, 50.0)?,
            p95_us: percentile(s, 95.0)?,
            p99_us: percentile(s, 99.0)?,
            p999_us: percentile(s, 99.9)?,
            max_us: max,
        })
    }
}

/// Percentiles of a set of latencies, in microseconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) mean_us: f64,
    pub(crate) p50_us: u32,
    pub(crate) p95_us: u32,
    pub(crate) p99_us: u32,
    pub(crate) p999_us: u32,
    pub(crate) max_us: u32,
}

/// Nearest-rank percentile `p` (0 < p <= 100) of ascending `sorted` samples:
/// the smallest sample such that at least `p` % of the samples are <= it.
/// `None` for an empty slice or a `p` outside (0, 100].
pub(crate) fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let n = sorted.len();
    // Rank in 1..=n; the small epsilon keeps e.g. 99.9 % of 1000 at rank 999
    // despite floating-point error in the product.
    let rank = ((p / 100.0) * n as f64 - 1e-9).ceil().max(1.0) as usize;
    sorted.get(rank.min(n) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_empty_is_none() {
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn percentile_rejects_out_of_range() {
        assert_eq!(percentile(&[1, 2, 3], 0.0), None);
        assert_eq!(percentile(&[1, 2, 3], 100.1), None);
        assert_eq!(percentile(&[1, 2, 3], f64::NAN), None);
    }

    #[test]
    fn percentile_single_sample() {
        for p in [0.1, 50.0, 99.9, 100.0] {
            assert_eq!(percentile(&[7], p), Some(7));
        }
    }

    #[test]
    fn percentile_nearest_rank_on_1_to_1000() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), Some(500));
        assert_eq!(percentile(&v, 95.0), Some(950));
        assert_eq!(percentile(&v, 99.0), Some(990));
        assert_eq!(percentile(&v, 99.9), Some(999));
        assert_eq!(percentile(&v, 100.0), Some(1000));
        assert_eq!(percentile(&v, 0.05), Some(1));
    }

    #[test]
    fn percentile_small_sets() {
        let v = [10, 20, 30, 40];
        assert_eq!(percentile(&v, 25.0), Some(10));
        assert_eq!(percentile(&v, 26.0), Some(20));
        assert_eq!(percentile(&v, 50.0), Some(20));
        assert_eq!(percentile(&v, 75.0), Some(30));
        assert_eq!(percentile(&v, 99.0), Some(40));
    }

    #[test]
    fn summary_merges_and_sorts() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        for us in (1..=500).rev() {
            a.record_ns(us * 1_000 + 999); // truncated to whole µs
        }
        for us in 501..=1000 {
            b.record_ns(us * 1_000);
        }
        a.merge(b);
        assert_eq!(a.len(), 1000);
        let s = a.summarize().expect("samples");
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_us, 500);
        assert_eq!(s.p99_us, 990);
        assert_eq!(s.p999_us, 999);
        assert_eq!(s.max_us, 1000);
        assert!((s.mean_us - 500.5).abs() < 1e-9);
    }

    #[test]
    fn summary_of_nothing_is_none() {
        assert_eq!(Latencies::default().summarize(), None);
    }

    #[test]
    fn errors_are_counted_and_merged() {
        let mut a = BTreeMap::new();
        record_error(&mut a, 503, || Some("busy".into()));
        record_error(&mut a, 503, || Some("ignored".into()));
        let mut b = BTreeMap::new();
        record_error(&mut b, 503, || None);
        record_error(&mut b, 429, || Some("slow down".into()));
        merge_errors(&mut a, b);
        assert_eq!(a[&503].count, 3);
        assert_eq!(a[&503].description.as_deref(), Some("busy"));
        assert_eq!(a[&429].count, 1);
    }

    #[test]
    fn record_saturates() {
        let mut l = Latencies::default();
        l.record_ns(u64::MAX);
        assert_eq!(l.summarize().map(|s| s.max_us), Some(u32::MAX));
    }
}
