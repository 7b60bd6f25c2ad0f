//! Admission control: how many operations each shard may have in flight
//! ([`Config::shard_in_flight_ops_max`](crate::Config::shard_in_flight_ops_max)),
//! and whether the ledger still takes any.
//!
//! actix enforces no mailbox bound, so this is the ledger's backpressure:
//! an operation past the bound is refused (`overloaded`) instead of queued
//! without limit. Every caller of the shards passes here through the
//! [`Router`](crate::engine::router::Router): the `Ledger` handle and the
//! payout actor alike. (A transfer's credit at its receiving shard does
//! not: it is part of an operation admitted at the source.)
//!
//! Shutdown closes admission, then waits until what was admitted has been
//! answered ([`Admission::drained`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::error::LedgerError;

pub struct Admission {
    /// Operations admitted per shard and not yet answered.
    in_flight: Box<[AtomicUsize]>,
    limit: usize,
    /// Set by shutdown: nothing new is admitted.
    closing: AtomicBool,
    /// Woken whenever a shard's count drops, so shutdown waits without
    /// polling.
    drained: Notify,
}

impl Admission {
    pub fn new(shards: usize, limit: usize) -> Self {
        Self {
            in_flight: (0..shards).map(|_| AtomicUsize::new(0)).collect(),
            limit,
            closing: AtomicBool::new(false),
            drained: Notify::new(),
        }
    }

    /// Refuses everything once shutdown has begun.
    /// Operations one shard may have in flight.
    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn check_open(&self) -> Result<(), LedgerError> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(LedgerError::ShuttingDown);
        }
        Ok(())
    }

    /// Reserves room for `count` operations on a shard (all or none), or
    /// says why not. The room is given back when the guard drops, even if
    /// the caller's future is dropped half-way.
    pub fn admit(&self, shard: usize, count: usize) -> Result<Admitted<'_>, LedgerError> {
        self.check_open()?;
        let Some(counter) = self.in_flight.get(shard) else {
            return Err(LedgerError::Internal {
                reason: format!("no shard {shard}"),
            });
        };
        let before = counter.fetch_add(count, Ordering::SeqCst);
        let admitted = Admitted {
            admission: self,
            counter,
            count,
        };
        if before + count > self.limit {
            drop(admitted);
            return Err(LedgerError::Overloaded {
                shard,
                limit: self.limit,
            });
        }
        // Shutdown may have begun between the check above and the count: it
        // waits for this count to drain, so refusing now is safe either way.
        self.check_open()?;
        Ok(admitted)
    }

    /// Stops admitting anything.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Operations admitted and not yet answered, over all shards.
    fn in_flight(&self) -> usize {
        self.in_flight
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .sum()
    }

    /// Completes once nothing admitted is still in flight.
    pub async fn drained(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            drained.await;
        }
    }
}

/// Room reserved on a shard; given back when dropped.
pub struct Admitted<'a> {
    admission: &'a Admission,
    counter: &'a AtomicUsize,
    count: usize,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.count, Ordering::SeqCst);
        self.admission.drained.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_all_or_none_and_given_back_on_drop() {
        let admission = Admission::new(2, 10);
        let first = admission.admit(0, 8).unwrap();
        assert_eq!(
            admission.admit(0, 3).err(),
            Some(LedgerError::Overloaded {
                shard: 0,
                limit: 10
            })
        );
        // The refused three took nothing; the other shard is apart.
        let second = admission.admit(0, 2).unwrap();
        let other = admission.admit(1, 10).unwrap();
        drop((first, second, other));
        assert_eq!(admission.in_flight(), 0);
        admission.close();
        assert_eq!(admission.admit(1, 1).err(), Some(LedgerError::ShuttingDown));
    }
}
