//! Counters the writer thread keeps about its fsyncs, for operators
//! (`/metrics`). Atomics only: the writer never waits to update them. The
//! latency histogram ([`LatencyHistogram`]) also times replication's
//! publishes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the fsync latency histogram's buckets, in microseconds;
/// a last, unbounded bucket catches the rest.
pub const FSYNC_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

/// A latency histogram over [`FSYNC_BUCKETS_US`] (50 µs to 250 ms, then
/// +Inf), with the count and total; atomics only.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    count: AtomicU64,
    nanos: AtomicU64,
    /// Per bucket of [`FSYNC_BUCKETS_US`], plus one for slower ones.
    buckets: [AtomicU64; FSYNC_BUCKETS_US.len() + 1],
}

impl LatencyHistogram {
    pub fn record(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = FSYNC_BUCKETS_US
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(FSYNC_BUCKETS_US.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// How many were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Their total, in nanoseconds.
    pub fn total_nanos(&self) -> u64 {
        self.nanos.load(Ordering::Relaxed)
    }

    /// Cumulative counts: `(upper bound in µs, at most that slow)`, the
    /// last bound `None` meaning +Inf.
    pub fn cumulative(&self) -> Vec<(Option<u64>, u64)> {
        let mut cumulative = 0;
        let mut out = Vec::with_capacity(self.buckets.len());
        for (index, count) in self.buckets.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            out.push((FSYNC_BUCKETS_US.get(index).copied(), cumulative));
        }
        out
    }
}

/// Live counters, shared by the writer thread and every `WalHandle`.
#[derive(Debug, Default)]
pub struct WalStats {
    fsyncs: LatencyHistogram,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalStatsSnapshot {
    /// Successful fsyncs of the log.
    pub fsyncs: u64,
    /// Time spent in them, in nanoseconds.
    pub fsync_nanos: u64,
    /// Cumulative counts: `(upper bound in µs, syncs at most that slow)`,
    /// the last bound `None` meaning +Inf (equal to `fsyncs`).
    pub fsync_buckets_us: Vec<(Option<u64>, u64)>,
}

impl WalStats {
    pub(crate) fn record_fsync(&self, took: Duration) {
        self.fsyncs.record(took);
    }

    pub fn snapshot(&self) -> WalStatsSnapshot {
        WalStatsSnapshot {
            fsyncs: self.fsyncs.count(),
            fsync_nanos: self.fsyncs.total_nanos(),
            fsync_buckets_us: self.fsyncs.cumulative(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsyncs_land_in_cumulative_buckets() {
        let stats = WalStats::default();
        stats.record_fsync(Duration::from_micros(40));
        stats.record_fsync(Duration::from_micros(700));
        stats.record_fsync(Duration::from_secs(1));
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.fsyncs, 3);
        assert_eq!(snapshot.fsync_buckets_us[0], (Some(50), 1));
        assert_eq!(snapshot.fsync_buckets_us[4], (Some(1_000), 2));
        assert_eq!(snapshot.fsync_buckets_us.last(), Some(&(None, 3)));
        assert_eq!(snapshot.fsync_nanos, 1_000_740_000);
    }
}
