//! When pending withdrawals expire: the engine's side of a withdrawal's
//! `expires_in` (the rule itself — fail it with reason `expired` only
//! while it is still `pending`, never once a payout claimed it — is the
//! account's: `AccountState::expire_withdrawal`).
//!
//! Each shard keeps [`Expiries`]: the withdrawals of its accounts that
//! carry an expiry, by time. The shard log notes each new one as its
//! request event is recorded (and says so when it expires before every
//! other one noted); a coordinator starting on recovered accounts notes
//! theirs. The coordinator keeps an alarm on the injected clock for the
//! shard's earliest expiry, re-armed sooner when a sooner one is noted;
//! when it rings (and, as a backstop, on every idle sweep) the
//! coordinator takes those due and sends each account a
//! [`WithdrawalCommand::Expire`] job per withdrawal, as upkeep, then
//! [`settle`] flushes the log. A withdrawal claimed, settled or cancelled
//! meanwhile is left as it is (the job changes nothing). So a withdrawal
//! fails as its expiry comes, as a logged event: replay agrees, and a
//! crash before the flush only delays the failure to the alarm after
//! restart (recovered expiries already due ring at once).

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

    /// Notes that `tx` expires at `at`; true when that is before every
    /// expiry noted so far (an alarm set for the earliest must ring sooner).
    pub fn note(&mut self, tx: TransactionId, at: UnixMs) -> bool {
        let sooner = self.next().is_none_or(|next| at < next);
        self.due.insert((at, tx));
        sooner
    }

    /// The earliest expiry noted and not yet taken.
    pub fn next(&self) -> Option<UnixMs> {
        self.due.first().map(|&(at, _)| at)
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

    #[test]
    fn a_note_says_whether_it_is_the_earliest_for_the_alarm() {
        let mut expiries = Expiries::default();
        let at = UnixMs::from_millis;
        assert_eq!(expiries.next(), None);
        assert!(
            expiries.note(TransactionId::new(1, 1), at(100)),
            "the first"
        );
        assert!(!expiries.note(TransactionId::new(1, 2), at(150)), "later");
        assert!(
            !expiries.note(TransactionId::new(1, 3), at(100)),
            "as early"
        );
        assert!(expiries.note(TransactionId::new(1, 4), at(40)), "sooner");
        assert_eq!(expiries.next(), Some(at(40)));
        expiries.take_due(at(100));
        assert_eq!(expiries.next(), Some(at(150)));
    }
}
