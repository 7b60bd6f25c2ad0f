//! How far back the log is kept for the event feed's consumers: segments
//! the snapshots no longer need stay until every registered consumer has
//! acknowledged their records, up to a cap in bytes and in age, past which
//! they are pruned anyway and a consumer still behind them gets
//! `cursor_expired` (so a dead consumer never fills the disk).
//!
//! The checkpointer asks [`Retention::keep_from`] where its pruning may
//! start, after each snapshot.

use std::path::Path;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use crate::clock::SharedClock;
use crate::storage::wal::{list_segments, WalError};

use super::consumers::Consumers;

/// Default cap on the bytes of segments kept only for consumers: 1 GiB.
pub const RETENTION_BYTES_DEFAULT: u64 = 1 << 30;

/// Default cap on their age: 7 days.
pub const RETENTION_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1000;

/// The consumers and the caps on what is kept for them.
#[derive(Clone)]
pub struct Retention {
    pub consumers: Arc<Consumers>,
    pub bytes_max: u64,
    pub age_ms_max: u64,
    /// Ages are read on this clock against the segments' modification times.
    pub clock: SharedClock,
}

impl Retention {
    /// The LSN from which `data_dir`'s log must be kept, given that the
    /// snapshots need it from `snapshot_floor`: lower when a consumer has
    /// not acknowledged everything before that, but never keeping more
    /// than the caps allow of the segments kept only for consumers.
    pub fn keep_from(&self, data_dir: &Path, snapshot_floor: u64) -> Result<u64, WalError> {
        let wanted = match self.consumers.lowest() {
            Some(cursor) if cursor + 1 < snapshot_floor => cursor + 1,
            _ => return Ok(snapshot_floor),
        };
        let segments = list_segments(data_dir)?;
        let now_ms = self.clock.unix_ms();
        let mut bytes = 0u64;
        let mut floor = snapshot_floor;
        // Newest first over the segments that end before the snapshot floor
        // (only consumers need them), while the caps allow.
        for pair in segments.windows(2).rev() {
            let (segment, next_first) = (&pair[0], pair[1].first_lsn);
            if next_first > snapshot_floor {
                continue;
            }
            if next_first <= wanted {
                break;
            }
            let meta = std::fs::metadata(&segment.path)
                .map_err(|error| WalError::io(&segment.path, &error))?;
            bytes = bytes.saturating_add(meta.len());
            let written_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(now_ms, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            if bytes > self.bytes_max || now_ms.saturating_sub(written_ms) > self.age_ms_max {
                break;
            }
            floor = wanted.max(segment.first_lsn);
        }
        Ok(floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::storage::wal::segment_path;

    fn now_ms() -> u64 {
        let since = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap();
        u64::try_from(since.as_millis()).unwrap()
    }

    fn log_with_segments(dir: &Path, firsts: &[u64], bytes: usize) {
        std::fs::create_dir_all(crate::storage::wal::wal_dir(dir)).unwrap();
        for first in firsts {
            std::fs::write(segment_path(dir, *first), vec![0u8; bytes]).unwrap();
        }
    }

    fn retention(
        dir: &Path,
        cursor: Option<u64>,
        bytes_max: u64,
        clock: &ManualClock,
    ) -> Retention {
        let consumers = Arc::new(Consumers::open(dir).unwrap());
        if let Some(lsn) = cursor {
            consumers.set("c", lsn).unwrap();
        }
        Retention {
            consumers,
            bytes_max,
            age_ms_max: 60_000,
            clock: clock.shared(),
        }
    }

    #[test]
    fn a_consumer_behind_the_snapshot_keeps_the_segments_it_has_not_read() {
        let dir = tempfile::tempdir().unwrap();
        log_with_segments(dir.path(), &[1, 101, 201, 301], 100);
        let clock = ManualClock::starting_at(now_ms());
        let none = retention(dir.path(), None, u64::MAX, &clock);
        assert_eq!(none.keep_from(dir.path(), 250).unwrap(), 250);
        let behind = retention(dir.path(), Some(150), u64::MAX, &clock);
        assert_eq!(behind.keep_from(dir.path(), 250).unwrap(), 151);
        let ahead = retention(dir.path(), Some(260), u64::MAX, &clock);
        assert_eq!(ahead.keep_from(dir.path(), 250).unwrap(), 250);
    }

    #[test]
    fn past_the_byte_or_age_cap_the_segments_go_anyway() {
        let dir = tempfile::tempdir().unwrap();
        log_with_segments(dir.path(), &[1, 101, 201, 301], 100);
        let clock = ManualClock::starting_at(now_ms());
        // Room for one of the two segments kept for the consumer only.
        let capped = retention(dir.path(), Some(50), 150, &clock);
        assert_eq!(capped.keep_from(dir.path(), 250).unwrap(), 101);
        let uncapped = retention(dir.path(), Some(50), u64::MAX, &clock);
        assert_eq!(uncapped.keep_from(dir.path(), 250).unwrap(), 51);
        clock.advance(std::time::Duration::from_secs(120));
        assert_eq!(
            uncapped.keep_from(dir.path(), 250).unwrap(),
            250,
            "older than the age cap"
        );
    }
}
