//! Time as the ledger sees it, injected through [`Config::clock`] so that
//! every timer (payout interval, retry backoff, idle-actor sweeps, snapshot
//! interval, the log's buffered sync) can be driven by a test instead of
//! waited for.
//!
//! [`SystemClock`] is the default: the machine's monotonic and wall clocks,
//! timers on tokio (inside actors) or crossbeam (on the storage threads).
//! [`ManualClock`] stands still until [`ManualClock::advance`] moves it;
//! timers that come due then fire at once, in deadline order.
//!
//! Two kinds of timer, because the ledger waits in two kinds of place:
//! [`Clock::sleep`] is a future for actors and tasks; [`Clock::alarm`] is a
//! channel that receives once, for threads that already wait on channels
//! with `crossbeam_channel::select!`.
//!
//! [`Config::clock`]: crate::Config::clock

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

/// A channel that receives exactly once, when its timer is due. The
/// `Instant` it carries is only meaningful under the system clock.
pub type Alarm = Receiver<Instant>;

/// Where the ledger reads the time and sets its timers.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time since the clock started: what timers are measured in.
    fn elapsed(&self) -> Duration;
    /// Wall time, milliseconds since the Unix epoch: what records are
    /// stamped with.
    fn unix_ms(&self) -> u64;
    /// Completes once `after` has passed on this clock.
    fn sleep(&self, after: Duration) -> BoxFuture<'static, ()>;
    /// Receives once `after` has passed on this clock.
    fn alarm(&self, after: Duration) -> Alarm;
}

/// A clock shared by the ledger's parts; [`Config`](crate::Config) holds one.
#[derive(Clone)]
pub struct SharedClock(Arc<dyn Clock>);

impl SharedClock {
    pub fn new(clock: impl Clock) -> Self {
        Self(Arc::new(clock))
    }

    /// The machine's clocks.
    pub fn system() -> Self {
        Self::new(SystemClock::new())
    }
}

impl Default for SharedClock {
    fn default() -> Self {
        Self::system()
    }
}

impl std::ops::Deref for SharedClock {
    type Target = dyn Clock;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for SharedClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedClock(elapsed {:?})", self.0.elapsed())
    }
}

/// The machine's monotonic clock for timers and its wall clock for stamps.
#[derive(Debug)]
pub struct SystemClock {
    started: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn unix_ms(&self) -> u64 {
        // A wall clock set before 1970 reads as the epoch rather than failing
        // every operation; the monotonic clock, not this, drives timers.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn sleep(&self, after: Duration) -> BoxFuture<'static, ()> {
        tokio::time::sleep(after).boxed()
    }

    fn alarm(&self, after: Duration) -> Alarm {
        crossbeam_channel::after(after)
    }
}

/// A clock that moves only when told to: tests set timers' deadlines come
/// due with [`advance`](Self::advance) instead of sleeping.
#[derive(Clone, Debug)]
pub struct ManualClock {
    shared: Arc<ManualShared>,
}

#[derive(Debug)]
struct ManualShared {
    state: Mutex<ManualState>,
    /// Woken whenever a timer is set, for [`ManualClock::armed_at_least`].
    armed: Notify,
}

#[derive(Debug)]
struct ManualState {
    elapsed: Duration,
    start_unix_ms: u64,
    timers: Vec<Timer>,
}

#[derive(Debug)]
struct Timer {
    due: Duration,
    wake: Wake,
}

#[derive(Debug)]
enum Wake {
    Task(oneshot::Sender<()>),
    Thread(Sender<Instant>),
}

impl Wake {
    fn fire(self) {
        // The waiter may be gone (its actor stopped, its select took another
        // branch): nobody to tell, nothing to do.
        match self {
            Self::Task(sender) => {
                let _ = sender.send(());
            }
            Self::Thread(sender) => {
                let _ = sender.try_send(Instant::now());
            }
        }
    }
}

/// Where a manual clock's wall time starts unless told otherwise:
/// 2026-01-01T00:00:00Z.
pub const MANUAL_CLOCK_START_UNIX_MS: u64 = 1_767_225_600_000;

impl ManualClock {
    /// A clock standing at [`MANUAL_CLOCK_START_UNIX_MS`].
    pub fn new() -> Self {
        Self::starting_at(MANUAL_CLOCK_START_UNIX_MS)
    }

    /// A clock whose wall time starts at `unix_ms`.
    pub fn starting_at(unix_ms: u64) -> Self {
        Self {
            shared: Arc::new(ManualShared {
                state: Mutex::new(ManualState {
                    elapsed: Duration::ZERO,
                    start_unix_ms: unix_ms,
                    timers: Vec::new(),
                }),
                armed: Notify::new(),
            }),
        }
    }

    /// This clock, to put in [`Config::clock`](crate::Config::clock).
    pub fn shared(&self) -> SharedClock {
        SharedClock::new(self.clone())
    }

    /// Moves time forward by `by` and fires every timer now due, earliest
    /// first.
    pub fn advance(&self, by: Duration) {
        let due = {
            let mut state = self.shared.state.lock();
            state.elapsed = state.elapsed.saturating_add(by);
            let now = state.elapsed;
            let (mut due, waiting): (Vec<Timer>, Vec<Timer>) =
                state.timers.drain(..).partition(|t| t.due <= now);
            state.timers = waiting;
            due.sort_by_key(|t| t.due);
            due
        };
        for timer in due {
            timer.wake.fire();
        }
    }

    /// Timers set and not yet fired (including those whose waiter has gone).
    pub fn armed(&self) -> usize {
        self.shared.state.lock().timers.len()
    }

    /// Waits until at least `count` timers are set: a test advances the
    /// clock only once the engine is waiting on it.
    pub async fn armed_at_least(&self, count: usize) {
        loop {
            let notified = self.shared.armed.notified();
            if self.armed() >= count {
                return;
            }
            notified.await;
        }
    }

    /// Sets a timer `after` from now; fires at once if already due.
    fn arm(&self, after: Duration, wake: Wake) {
        {
            let mut state = self.shared.state.lock();
            let due = state.elapsed.saturating_add(after);
            if after.is_zero() {
                drop(state);
                wake.fire();
                return;
            }
            state.timers.push(Timer { due, wake });
        }
        self.shared.armed.notify_waiters();
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn elapsed(&self) -> Duration {
        self.shared.state.lock().elapsed
    }

    fn unix_ms(&self) -> u64 {
        let state = self.shared.state.lock();
        let elapsed_ms = u64::try_from(state.elapsed.as_millis()).unwrap_or(u64::MAX);
        state.start_unix_ms.saturating_add(elapsed_ms)
    }

    fn sleep(&self, after: Duration) -> BoxFuture<'static, ()> {
        let (sender, receiver) = oneshot::channel();
        self.arm(after, Wake::Task(sender));
        // A dropped clock fires nothing: its sleepers wake rather than hang.
        receiver.map(|_| ()).boxed()
    }

    fn alarm(&self, after: Duration) -> Alarm {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        self.arm(after, Wake::Thread(sender));
        receiver
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleep_completes_only_when_the_clock_reaches_it() {
        let clock = ManualClock::new();
        let mut sleep = clock.sleep(Duration::from_secs(5));
        clock.armed_at_least(1).await;
        clock.advance(Duration::from_secs(4));
        assert!((&mut sleep).now_or_never().is_none(), "not due at 4 s");
        clock.advance(Duration::from_secs(1));
        assert!(sleep.now_or_never().is_some(), "due at 5 s");
        assert_eq!(clock.armed(), 0);
    }

    #[test]
    fn a_manual_alarm_rings_once_when_due_and_wall_time_moves_with_it() {
        let clock = ManualClock::starting_at(1_000);
        let alarm = clock.alarm(Duration::from_millis(250));
        assert!(alarm.try_recv().is_err());
        clock.advance(Duration::from_millis(250));
        assert!(alarm.try_recv().is_ok());
        assert!(alarm.try_recv().is_err(), "once");
        assert_eq!(clock.unix_ms(), 1_250);
        assert_eq!(clock.elapsed(), Duration::from_millis(250));
    }

    #[test]
    fn a_zero_timer_is_due_at_once() {
        let clock = ManualClock::new();
        assert!(clock.alarm(Duration::ZERO).try_recv().is_ok());
        assert!(clock.sleep(Duration::ZERO).now_or_never().is_some());
    }

    #[test]
    fn timers_fire_in_deadline_order_and_later_ones_wait() {
        let clock = ManualClock::new();
        let late = clock.alarm(Duration::from_secs(10));
        let early = clock.alarm(Duration::from_secs(1));
        clock.advance(Duration::from_secs(2));
        assert!(early.try_recv().is_ok());
        assert!(late.try_recv().is_err());
        assert_eq!(clock.armed(), 1);
    }

    #[test]
    fn the_system_clock_reads_wall_time_after_2020() {
        assert!(SystemClock::new().unix_ms() > 1_577_836_800_000);
    }
}
