//! A deadline on the injected clock, for the storage threads' timers (the
//! checkpointer's snapshot interval, the WAL writer's buffered sync): the
//! time it is due, read on [`Clock::elapsed`], and the alarm that rings
//! then, to wait on inside a `crossbeam_channel::select!`.
//!
//! Both are kept because a thread can learn the time has come either way:
//! from the alarm when it is idle, or by reading the clock when other work
//! woke it first (under steady load the alarm may lose every select).

use std::time::Duration;

use crate::clock::{Alarm, Clock, SharedClock};

pub(crate) struct Deadline {
    due: Duration,
    alarm: Alarm,
}

impl Deadline {
    /// Due `after` from now on `clock`; its alarm is set before this returns.
    pub(crate) fn after(clock: &SharedClock, after: Duration) -> Self {
        Self {
            due: clock.elapsed().saturating_add(after),
            alarm: clock.alarm(after),
        }
    }

    /// Receives once the deadline is due. After that it is spent (a manual
    /// clock's alarm even disconnects): replace the deadline, don't wait on
    /// it again.
    pub(crate) fn alarm(&self) -> &Alarm {
        &self.alarm
    }

    /// Whether `clock` has reached the deadline.
    pub(crate) fn has_passed(&self, clock: &dyn Clock) -> bool {
        clock.elapsed() >= self.due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn a_deadline_passes_and_rings_when_the_clock_reaches_it() {
        let clock = ManualClock::new();
        let deadline = Deadline::after(&clock.shared(), Duration::from_secs(5));
        clock.advance(Duration::from_secs(4));
        assert!(!deadline.has_passed(&clock));
        assert!(deadline.alarm().try_recv().is_err());
        clock.advance(Duration::from_secs(1));
        assert!(deadline.has_passed(&clock));
        assert!(deadline.alarm().try_recv().is_ok());
    }
}
