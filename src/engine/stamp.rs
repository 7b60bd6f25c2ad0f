//! The engine's stamps: the time each logged event carries, read from the
//! injected clock ([`Config::clock`](crate::Config::clock)) by the rule
//! [`UnixMs::stamp`] owns (never before the previous stamp, so a wall clock
//! stepped back never makes stamps go back; never unknown).
//!
//! A shard stamps once per scheduling round (its coordinator
//! [`ticks`](crate::engine::shard_log::ShardLog::tick) the shard log, whose
//! stamp every event of the round's commands carries); the payout actor
//! once per event it logs (a few per payout).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::SharedClock;
use crate::domain::time::UnixMs;

/// Makes non-decreasing stamps from a clock.
pub struct Stamper {
    clock: SharedClock,
    /// The last stamp made, in ms.
    last: AtomicU64,
}

impl Stamper {
    /// Stamps from `clock`, never before `floor` (the newest time the
    /// recovered state holds, so a clock stepped back across a restart
    /// does not make stamps go back either).
    pub fn new(clock: SharedClock, floor: UnixMs) -> Self {
        Self {
            clock,
            last: AtomicU64::new(floor.as_millis()),
        }
    }

    /// The next stamp: one clock read.
    pub fn stamp(&self) -> UnixMs {
        let reading = self.clock.unix_ms();
        let candidate = UnixMs::stamp(UnixMs::UNKNOWN, reading);
        let previous = self.last.fetch_max(candidate.as_millis(), Ordering::AcqRel);
        UnixMs::stamp(UnixMs::from_millis(previous), reading)
    }

    /// The clock the stamps are read from.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn stamps_follow_the_clock_from_the_floor_on() {
        let clock = ManualClock::starting_at(1_000);
        let floor = UnixMs::from_millis(5_000);
        let stamper = Stamper::new(clock.shared(), floor);
        assert_eq!(stamper.stamp(), floor, "the clock is behind the floor");
        clock.advance(std::time::Duration::from_millis(9_000));
        assert_eq!(stamper.stamp(), UnixMs::from_millis(10_000));
        let fresh = Stamper::new(clock.shared(), UnixMs::UNKNOWN);
        assert_eq!(fresh.stamp(), UnixMs::from_millis(10_000));
    }
}
