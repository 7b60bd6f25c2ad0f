//! Finished withdrawals leaving memory, and coming back: an account drops
//! its terminal withdrawals (completed, failed, cancelled, returned) last
//! changed before a horizon ([`AccountState::forget_finished`]), tells an
//! id it forgot from one it never handed out
//! ([`AccountState::remember`]), and takes a forgotten withdrawal back from
//! the history ([`AccountState::restore_forgotten`]) before a command that
//! needs it is decided, so the command answers as if it had never left.
//!
//! Nothing here breaks an invariant: a forgotten withdrawal holds no lock
//! (only terminal ones go, and a terminal one locks nothing), so the
//! locked sums, the count of locking withdrawals and invariant 3 (kept in
//! the balances' `deposited` and `burned`) are untouched; the account keeps
//! its `next_sequence`, so a forgotten id is still known to have been
//! handed out. Pure: the caller (the engine) says when and up to when.
//!
//! Replay (the checkpointer's copy of the state, recovery) meets the one
//! event that can follow a forgotten withdrawal: a return of a completed
//! one (only a return changes a terminal withdrawal). A state that forgot
//! it takes it back first ([`AccountState::forgotten_for`],
//! [`AccountState::restore_for_replay`]), as the return found it.

use crate::domain::event::Event;
use crate::domain::ids::{IdempotencyKey, TransactionId};
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{WithdrawalRecord, WithdrawalStatus};

use super::{AccountState, KeyUse};

/// What an account knows of a transaction id as one of its withdrawals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remembered<'a> {
    /// The withdrawal, in memory.
    Held(&'a WithdrawalRecord),
    /// The account handed this id out but holds no withdrawal under it: a
    /// finished withdrawal it forgot, or a deposit's or a transfer's id.
    /// Only the history can say which.
    Forgotten,
    /// Never handed out by this account (or another account's id).
    NeverMade,
}

impl AccountState {
    /// Drops the terminal withdrawals last changed strictly before
    /// `before`; answers how many went. Pending and processing ones always
    /// stay, and so does one whose time is unknown (logged before times
    /// were, format v4): nothing says the history holds it.
    pub fn forget_finished(&mut self, before: UnixMs) -> usize {
        self.forget_finished_each(before, |_, _| ())
    }

    /// [`forget_finished`](Self::forget_finished), showing `each`
    /// forgotten withdrawal (for the gauges) as it goes.
    pub fn forget_finished_each(
        &mut self,
        before: UnixMs,
        mut each: impl FnMut(TransactionId, &WithdrawalRecord),
    ) -> usize {
        let account = self.id;
        self.withdrawals.remove_where(|seq, record| {
            let forget = is_finished_before(record, before);
            if forget {
                each(TransactionId::new(account, seq), record);
            }
            forget
        })
    }

    /// Whether any terminal withdrawal is still held (one a later horizon
    /// may forget).
    pub fn holds_finished(&self) -> bool {
        self.withdrawals
            .iter()
            .any(|(_, record)| !record.status.holds_lock())
    }

    /// What this account knows of `tx` as one of its withdrawals.
    pub fn remember(&self, tx: TransactionId) -> Remembered<'_> {
        if tx.account() != self.id || tx.sequence() == 0 {
            return Remembered::NeverMade;
        }
        match self.withdrawals.get(tx.sequence()) {
            Some(record) => Remembered::Held(record),
            None if tx.sequence() < self.next_sequence => Remembered::Forgotten,
            None => Remembered::NeverMade,
        }
    }

    /// The withdrawal the idempotency `key` made, if it made one and this
    /// account forgot it (a replay of the key answers from it).
    pub fn forgotten_by_key(&self, key: &IdempotencyKey) -> Option<TransactionId> {
        let record = self.idempotency.get(key)?;
        let made_withdrawal = matches!(
            record.used_for,
            KeyUse::Withdrawal { .. } | KeyUse::WithdrawalWith { .. }
        );
        let forgotten = self.remember(record.tx) == Remembered::Forgotten;
        (made_withdrawal && forgotten).then_some(record.tx)
    }

    /// Takes withdrawal `tx` back as the history holds it, if this account
    /// forgot it: `Ok(true)` once restored, `Ok(false)` if it is in memory
    /// already (nothing changes). Refused, changing nothing, for an id this
    /// account never handed out and for a record that holds a lock (only
    /// finished withdrawals are ever forgotten: a locking one would break
    /// the locked sums).
    pub fn restore_forgotten(
        &mut self,
        tx: TransactionId,
        record: WithdrawalRecord,
    ) -> Result<bool, String> {
        match self.remember(tx) {
            Remembered::Held(_) => return Ok(false),
            Remembered::NeverMade => {
                return Err(format!("account {} never made withdrawal {tx}", self.id))
            }
            Remembered::Forgotten => {}
        }
        if record.status.holds_lock() {
            return Err(format!(
                "withdrawal {tx} comes back {} from the history, but only finished ones are forgotten",
                record.status.kind()
            ));
        }
        let Err(slot) = self.withdrawals.search(tx.sequence()) else {
            return Ok(false);
        };
        self.withdrawals.insert_at(slot, tx.sequence(), record);
        Ok(true)
    }
}

impl AccountState {
    /// The forgotten withdrawal `event` acts on (a return of a completed
    /// withdrawal this state forgot), which replay must take back from the
    /// history ([`restore_for_replay`](Self::restore_for_replay)) before
    /// applying it. `None` for every other event: O(1) for most, one
    /// search for a return.
    pub fn forgotten_for(&self, event: &Event) -> Option<TransactionId> {
        match event {
            Event::WithdrawalReturned { tx, .. } => {
                (self.remember(*tx) == Remembered::Forgotten).then_some(*tx)
            }
            _ => None,
        }
    }

    /// Takes withdrawal `tx` back from the history as `event` (a return)
    /// found it: completed. The history may hold it returned already (it
    /// took the return in before the crash), so its status is set back
    /// to the one the event moves it from; its amount and currency are the
    /// history's. Otherwise as [`restore_forgotten`](Self::restore_forgotten).
    pub fn restore_for_replay(
        &mut self,
        event: &Event,
        mut record: WithdrawalRecord,
    ) -> Result<bool, String> {
        let Some(tx) = self.forgotten_for(event) else {
            return Ok(false);
        };
        if matches!(record.status, WithdrawalStatus::Returned { .. }) {
            record.status = WithdrawalStatus::Completed;
        }
        if record.status != WithdrawalStatus::Completed {
            return Err(format!(
                "withdrawal {tx} is {} in the history: a return needs it completed",
                record.status.kind()
            ));
        }
        self.restore_forgotten(tx, record)
    }
}

/// Whether a withdrawal is finished and was last changed before `before`.
fn is_finished_before(record: &WithdrawalRecord, before: UnixMs) -> bool {
    !record.status.holds_lock() && record.updated_at.known().is_some() && record.updated_at < before
}
