//! How long a failed delivery waits before its next attempt: capped
//! exponential backoff ([`Backoff`]), measured on the ledger's clock.

use std::time::Duration;

/// Waits `first` after the first failure, doubling after each further
/// one, never more than `cap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling to 30 s.
    fn default() -> Self {
        Self {
            first: Duration::from_millis(100),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait after the `failures`-th failure in a row (1: the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1);
        let factor = 1_u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.cap)
    }

    /// Refuses a zero first wait (a retry storm) or a cap below it.
    pub fn check(&self) -> Result<(), String> {
        if self.first.is_zero() || self.cap < self.first {
            return Err(format!(
                "webhook backoff {:?} to {:?}: expected a first wait above zero and a cap at least as long",
                self.first, self.cap
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_100_ms_and_stops_at_30_s() {
        let backoff = Backoff::default();
        let ms = |failures| backoff.delay(failures).as_millis();
        assert_eq!(
            (1..=10).map(ms).collect::<Vec<_>>(),
            [100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 30_000]
        );
        for failures in [11, 31, 32, 33, 1_000, u32::MAX] {
            assert_eq!(ms(failures), 30_000, "{failures}");
        }
        assert_eq!(ms(0), 100, "no failure counts as the first");
    }

    #[test]
    fn a_zero_or_inverted_backoff_is_refused() {
        assert_eq!(Backoff::default().check(), Ok(()));
        let zero = Backoff {
            first: Duration::ZERO,
            cap: Duration::from_secs(1),
        };
        let inverted = Backoff {
            first: Duration::from_secs(2),
            cap: Duration::from_secs(1),
        };
        assert!(zero.check().is_err());
        assert!(inverted.check().is_err());
    }
}
