//! When pending withdrawals expire: the engine's side of a withdrawal's
//! `expires_in` (the rule itself — fail it with reason `expired` only
//! while it is still `pending`, never once a payout claimed it — is the
//! account's: `AccountState::expire_withdrawal`).
//!
//! Each shard keeps [`Expiries`]: the withdrawals of its accounts that
//! carry an expiry, by time. The shard log notes each new one as its
//! request event is recorded; a coordinator starting on recovered
//! accounts notes theirs. On the shard's idle sweep (every
//! `Config::account_idle_sweep_ms` on the injected clock) the coordinator
//! takes those due and sends each account a [`WithdrawalCommand::Expire`]
//! job per withdrawal, as upkeep, then [`settle`] flushes the log. A
//! withdrawal claimed, settled or cancelled meanwhile is left as it is
//! (the job changes nothing). So a withdrawal fails at most one sweep
//! interval after its expiry, as a logged event: replay agrees, and a
//! crash before the flush only delays the failure to the next sweep after
//! restart.

use std::collections::BTreeSet;
use std::rc::Rc;

use crate::domain::account::AccountState;
use crate::domain::ids::TransactionId;
use crate::domain::time::UnixMs;
use crate::engine::batch::{AccountRun, Grouping};
use crate::engine::command::WithdrawalCommand;
use crate::engine::round::RoundReplies;
use crate::engine::shard_log::ShardLog;

/// One shard's withdrawals that carry an expiry, by (time, id). An entry
/// stays until its time even if the withdrawal was settled before: the
/// expiry job then changes nothing.
#[derive(Debug, Default)]
pub struct Expiries {
    due: BTreeSet<(UnixMs, TransactionId)>,
}

impl Expiries {
    /// The pending withdrawals of recovered accounts that expire.
    pub fn of(accounts: &[AccountState]) -> Self {
        let due = accounts
            .iter()
            .flat_map(AccountState::expiring)
            .map(|(tx, at)| (at, tx))
            .collect();
        Self { due }
    }

    pub fn note(&mut self, tx: TransactionId, at: UnixMs) {
        self.due.insert((at, tx));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.due.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// Takes the withdrawals expiring at or before `now`, as one expiry job
    /// each, grouped by account.
    pub fn take_due(&mut self, now: UnixMs) -> Vec<AccountRun<WithdrawalCommand>> {
        let later = self
            .due
            .split_off(&(UnixMs::from_millis(now.as_millis() + 1), first_id()));
        let due = std::mem::replace(&mut self.due, later);
        let mut grouping = Grouping::with_capacity(due.len());
        for (position, (_, tx)) in due.into_iter().enumerate() {
            grouping.push(tx.account(), (position, WithdrawalCommand::Expire { tx }));
        }
        grouping.into_runs()
    }
}

/// The smallest id: with a time, the start of that time's entries.
fn first_id() -> TransactionId {
    TransactionId::new(0, 0)
}

/// Waits for a round of expiry jobs and makes the failures it logged
/// durable.
pub async fn settle(round: RoundReplies<WithdrawalCommand>, log: Rc<ShardLog>) {
    let replies = round.all().await;
    let expired = replies.iter().filter(|(_, r)| r.is_ok()).count();
    if expired == 0 {
        return;
    }
    match log.flush().await {
        Ok(()) => tracing::debug!(expired, "pending withdrawals past their expiry visited"),
        // The journal poisons the ledger on a failed append; the failures
        // were never acknowledged to anyone.
        Err(error) => tracing::warn!(%error, "logging withdrawal expiries failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_due_is_taken_in_time_order_grouped_by_account() {
        let mut expiries = Expiries::default();
        let at = UnixMs::from_millis;
        expiries.note(TransactionId::new(1, 1), at(100));
        expiries.note(TransactionId::new(2, 1), at(50));
        expiries.note(TransactionId::new(1, 2), at(100));
        expiries.note(TransactionId::new(3, 1), at(101));
        let runs = expiries.take_due(at(100));
        let accounts: Vec<_> = runs.iter().map(|r| (r.account, r.jobs.len())).collect();
        assert_eq!(accounts, vec![(2, 1), (1, 2)]);
        assert_eq!(expiries.len(), 1, "the one due at 101 stays");
        assert!(expiries.take_due(at(100)).is_empty());
        assert_eq!(expiries.take_due(at(101)).len(), 1);
        assert!(expiries.is_empty());
    }
}
