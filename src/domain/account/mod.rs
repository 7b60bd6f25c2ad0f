//! One account as plain data with no runtime: its balances per currency,
//! its withdrawals, its idempotency keys and the transfers it holds, with
//! the read accessors over them.
//!
//! What changes an account lives next door, one concern per file:
//! - `rules.rs` decides each command (deposit; request, update, claim a
//!   withdrawal): it checks everything that could refuse it, then builds
//!   the event and applies it, so a refusal changes nothing;
//! - `transfers.rs` runs a transfer's three steps (hold at the source,
//!   receive at the destination, finish at the source);
//! - `apply.rs` applies a logged event, live and in recovery's replay;
//! - `invariants.rs` checks the invariants: the touched balance after every
//!   change, in O(1) and in release builds; the whole account on demand;
//! - `withdrawals.rs` keeps the withdrawals by sequence number;
//! - `keys.rs` keeps the idempotency keys' lifetime: when each was first
//!   used, which expire (a logged event), and the fingerprints an expired
//!   key leaves so its replay is refused `idempotency_key_expired`;
//! - `controls.rs` keeps the tier, an operator's freeze and what the
//!   account withdrew recently (`usage.rs`), and decides what a freeze
//!   stops and what the withdrawal limits allow;
//! - `forget.rs` lets finished withdrawals leave memory past a horizon,
//!   tells a forgotten id from one never made, and takes a forgotten
//!   withdrawal back from the history when a command needs it.
//!
//! The engine's account actor delivers commands to these methods; recovery
//! replays events through [`AccountState::apply`]. A call that changed the
//! state and then found an invariant broken answers `LedgerError::Internal`
//! (`apply`: an [`ApplyError`]): memory may then hold a change nothing
//! logged, so the caller must not go on with this account (the engine's
//! part: poison the account's shard).

mod apply;
mod controls;
mod forget;
mod invariants;
mod keys;
mod rules;
mod transfers;
mod usage;
mod withdrawals;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::domain::details::{fingerprint_of, withdrawal_fingerprint, Metadata, WithdrawalDetails};
use crate::domain::event::Event;
use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::{Currency, CurrencyCode, Units, BALANCE_UNITS_MAX};
use crate::domain::receipts::{Balance, Transfer};
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{Withdrawal, WithdrawalRecord};
use crate::error::LedgerError;

use withdrawals::Withdrawals;

pub use controls::{AccountControls, Controls, WindowAllowance, WithdrawalAllowance};
pub use forget::Remembered;
pub use rules::{Settlement, WithdrawalRequest};
pub use usage::Usage;

/// An account's money in one currency, in minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceEntry {
    pub currency: Currency,
    /// Spendable now.
    pub available: Units,
    /// Reserved by withdrawals that are pending.
    pub locked: Units,
    /// Reserved by outgoing transfers whose receiving side has not answered
    /// yet. Only ever non-zero for the instant of a live transfer; never logged
    /// nor snapshotted (snapshots are built from the log).
    #[serde(skip)]
    pub held: Units,
    /// Everything ever minted into this balance (deposits); for invariant 3.
    pub deposited: Units,
    /// Everything ever paid out of this balance (completed withdrawals).
    pub burned: Units,
    /// What this account's withdrawals still holding a lock add up to in
    /// this currency. Moved only where a withdrawal's status changes
    /// (`apply.rs`'s `set_status`), apart from `locked`, which the balance
    /// arithmetic moves: `locked == withdrawals_locked` is invariant 2,
    /// checked in O(1) after each change. Not stored: recomputed from the
    /// withdrawals when an account is read back.
    #[serde(skip)]
    withdrawals_locked: Units,
}

impl BalanceEntry {
    fn new(currency: Currency) -> Self {
        Self {
            currency,
            available: 0,
            locked: 0,
            held: 0,
            deposited: 0,
            burned: 0,
            withdrawals_locked: 0,
        }
    }

    pub fn total(&self) -> Units {
        self.available + self.locked
    }

    pub fn view(&self) -> Balance {
        Balance {
            currency: self.currency.code,
            available: self.currency.to_decimal(self.available),
            locked: self.currency.to_decimal(self.locked),
            total: self.currency.to_decimal(self.total()),
        }
    }
}

/// What an idempotency key was first used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum KeyUse {
    Deposit {
        currency: CurrencyCode,
        amount: Units,
    },
    Withdrawal {
        currency: CurrencyCode,
        amount: Units,
    },
    Transfer {
        to: AccountId,
        currency: CurrencyCode,
        amount: Units,
    },
    // Added in snapshot format v7: a use whose operation carried more
    // (metadata; a withdrawal's fee, destination, expiry), told apart by
    // the fingerprint of what it carried (`details::fingerprint`).
    DepositWith {
        currency: CurrencyCode,
        amount: Units,
        carried: u64,
    },
    WithdrawalWith {
        currency: CurrencyCode,
        amount: Units,
        carried: u64,
    },
    TransferWith {
        to: AccountId,
        currency: CurrencyCode,
        amount: Units,
        carried: u64,
    },
}

impl KeyUse {
    fn deposit(currency: CurrencyCode, amount: Units, metadata: Option<&Metadata>) -> Self {
        match metadata {
            None => Self::Deposit { currency, amount },
            Some(metadata) => Self::DepositWith {
                currency,
                amount,
                carried: fingerprint_of(metadata),
            },
        }
    }

    /// `at`: when the withdrawal is (or was) requested.
    fn withdrawal(
        currency: CurrencyCode,
        amount: Units,
        details: Option<&WithdrawalDetails>,
        at: UnixMs,
    ) -> Self {
        match details {
            None => Self::Withdrawal { currency, amount },
            Some(details) => Self::WithdrawalWith {
                currency,
                amount,
                carried: withdrawal_fingerprint(details, at),
            },
        }
    }

    fn transfer(
        to: AccountId,
        currency: CurrencyCode,
        amount: Units,
        metadata: Option<&Metadata>,
    ) -> Self {
        match metadata {
            None => Self::Transfer {
                to,
                currency,
                amount,
            },
            Some(metadata) => Self::TransferWith {
                to,
                currency,
                amount,
                carried: fingerprint_of(metadata),
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct KeyRecord {
    used_for: KeyUse,
    tx: TransactionId,
    /// A transfer under this key is between hold and finish.
    in_flight: bool,
    /// The stamp of the event that first used it ([`UnixMs::UNKNOWN`]
    /// while in flight, and for a key of an event logged before format
    /// v4): what its expiry goes by. Stored beside the account (snapshot
    /// format v5), like the withdrawals' times.
    #[serde(skip)]
    first_used: UnixMs,
}

/// An outgoing transfer between hold and finish.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HeldTransfer {
    tx: TransactionId,
    to: AccountId,
    currency: Currency,
    amount: Units,
    key: Option<IdempotencyKey>,
    metadata: Option<Box<crate::domain::details::Metadata>>,
}

/// The result of an operation: what to tell the caller and, unless the
/// operation was an idempotent replay or a no-op, the event to log.
#[derive(Debug)]
pub struct Effect<T> {
    pub output: T,
    pub event: Option<Event>,
}

/// The first step of a transfer at its source account.
#[derive(Debug)]
pub enum TransferHold {
    /// Funds are held under this id; the receiving side must be asked next.
    Held(TransactionId),
    /// The idempotency key was already used for this same transfer.
    Replayed(Transfer),
}

/// Why a logged event cannot be applied: the log disagrees with the state
/// it is replayed onto (corruption, or a bug), or applying it broke an
/// invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event:?} cannot be applied to account {account}: {reason}")]
pub struct ApplyError {
    pub account: AccountId,
    pub event: String,
    pub reason: String,
}

/// An account's idempotency keys: foldhash, randomly seeded per process
/// (callers choose the keys), 8 bytes of hasher state instead of std's 16.
/// Serialized exactly like a std `HashMap`: serde writes the entries, never
/// the hasher.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One account: balances per currency, withdrawals, idempotency keys
/// (and the fingerprints of those that expired).
///
/// Read back through `Stored` (the same fields, in the same order), so
/// that what is not stored is rebuilt from what is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Stored")]
pub struct AccountState {
    id: AccountId,
    /// Sequence number the next transaction of this account gets.
    next_sequence: u64,
    /// Few currencies per account, so a small vector beats a map.
    balances: Vec<BalanceEntry>,
    /// This account's withdrawals by sequence number: every one still
    /// holding a lock, and the terminal ones until the engine forgets them
    /// (`forget.rs`: once the history holds them, or past a memory-only
    /// ledger's retention).
    withdrawals: Withdrawals,
    /// Withdrawals currently holding a lock (pending or processing), for
    /// the per-account cap.
    withdrawals_locking: u32,
    idempotency: Map<IdempotencyKey, KeyRecord>,
    /// The fingerprints of the keys that expired, sorted (see `keys.rs`).
    /// Stored beside the account (snapshot format v5).
    #[serde(skip)]
    expired_keys: Box<[u64]>,
    /// Live-only, like `BalanceEntry::held`.
    #[serde(skip)]
    held_transfers: Vec<HeldTransfer>,
    /// Tier, freeze and recent withdrawals (`controls.rs`); `None` while
    /// there is none of it. Stored beside the account (snapshot format v7).
    #[serde(skip)]
    controls: Option<Box<Controls>>,
}

/// An [`AccountState`] as stored (snapshots): every field it serializes,
/// in its order.
#[derive(Deserialize)]
struct Stored {
    id: AccountId,
    next_sequence: u64,
    balances: Vec<BalanceEntry>,
    withdrawals: Withdrawals,
    withdrawals_locking: u32,
    idempotency: Map<IdempotencyKey, KeyRecord>,
}

impl TryFrom<Stored> for AccountState {
    type Error = String;

    /// Rebuilds each balance's `withdrawals_locked` from the withdrawals.
    fn try_from(stored: Stored) -> Result<Self, String> {
        let mut account = Self {
            id: stored.id,
            next_sequence: stored.next_sequence,
            balances: stored.balances,
            withdrawals: stored.withdrawals,
            withdrawals_locking: stored.withdrawals_locking,
            idempotency: stored.idempotency,
            expired_keys: Box::default(),
            held_transfers: Vec::new(),
            controls: None,
        };
        account.recount_withdrawals_locked()?;
        Ok(account)
    }
}

impl AccountState {
    pub fn new(id: AccountId) -> Self {
        Self {
            id,
            next_sequence: 1,
            balances: Vec::new(),
            withdrawals: Withdrawals::default(),
            withdrawals_locking: 0,
            idempotency: Map::default(),
            expired_keys: Box::default(),
            held_transfers: Vec::new(),
            controls: None,
        }
    }

    pub fn id(&self) -> AccountId {
        self.id
    }

    /// Balance in one currency; zero if the account never held it.
    pub fn balance(&self, currency: Currency) -> BalanceEntry {
        self.balances
            .iter()
            .find(|b| b.currency.code == currency.code)
            .copied()
            .unwrap_or_else(|| BalanceEntry::new(currency))
    }

    /// Every currency this account has held.
    pub fn balances(&self) -> &[BalanceEntry] {
        &self.balances
    }

    pub fn withdrawal(&self, tx: TransactionId) -> Result<Withdrawal, LedgerError> {
        self.withdrawal_record(tx).map(|record| record.view(tx))
    }

    /// One withdrawal as the account keeps it.
    pub fn withdrawal_record_of(&self, tx: TransactionId) -> Option<&WithdrawalRecord> {
        self.withdrawal_record(tx).ok()
    }

    /// All withdrawals with their ids, oldest first.
    pub fn withdrawals(&self) -> impl Iterator<Item = (TransactionId, &WithdrawalRecord)> + '_ {
        self.withdrawals
            .iter()
            .map(|(seq, record)| (TransactionId::new(self.id, seq), record))
    }

    /// Gives the withdrawals, oldest first, the `(created_at, updated_at)`
    /// times a snapshot keeps beside them (format v4); refused unless there
    /// is exactly one pair per withdrawal.
    pub fn restore_withdrawal_times(&mut self, times: &[(UnixMs, UnixMs)]) -> Result<(), String> {
        if times.len() != self.withdrawals.len() {
            return Err(format!(
                "account {} has {} withdrawals but {} times",
                self.id,
                self.withdrawals.len(),
                times.len()
            ));
        }
        for (record, &(created_at, updated_at)) in self.withdrawals.records_mut().zip(times) {
            record.created_at = created_at;
            record.updated_at = updated_at;
        }
        Ok(())
    }

    /// Reads what applying an event of `tx` to this account reads first —
    /// its first balance, the withdrawal's slot — and returns a value
    /// computed from it. Replay calls it for events a few places ahead of
    /// the one it applies, so that the cache misses of several accounts
    /// overlap instead of coming one after another; the value only keeps
    /// the reads from being optimized away.
    pub(crate) fn warm(&self, tx: TransactionId) -> u64 {
        let balance = self.balances.first().map_or(0, |b| b.available as u64);
        let withdrawal = self
            .withdrawals
            .warm(tx.sequence())
            .map_or(0, |record| record.amount as u64);
        balance ^ withdrawal
    }

    /// Like [`warm`](Self::warm), for what [`check_invariants`] reads: the
    /// first balance, the first and the last withdrawal.
    ///
    /// [`check_invariants`]: Self::check_invariants
    pub(crate) fn warm_all(&self) -> u64 {
        let balance = self.balances.first().map_or(0, |b| b.available as u64);
        let amount = |record: Option<&WithdrawalRecord>| record.map_or(0, |r| r.amount as u64);
        balance ^ amount(self.withdrawals.first()) ^ amount(self.withdrawals.last())
    }

    /// The withdrawal `tx` of this account, or `unknown_withdrawal`.
    fn withdrawal_record(&self, tx: TransactionId) -> Result<&WithdrawalRecord, LedgerError> {
        if tx.account() != self.id {
            return Err(LedgerError::UnknownWithdrawal { transaction_id: tx });
        }
        self.withdrawals
            .get(tx.sequence())
            .ok_or(LedgerError::UnknownWithdrawal { transaction_id: tx })
    }

    fn entry_mut(&mut self, currency: Currency) -> &mut BalanceEntry {
        entry_in(&mut self.balances, currency)
    }
}

/// The balance in `currency` among `balances`, added at zero if missing.
/// A free function so that callers can hold it next to a borrow of another
/// field. Grows the vector one entry at a time: most accounts hold one
/// currency, and `Vec`'s default first allocation (room for 4 entries)
/// would make that one balance cost four times its size.
fn entry_in(balances: &mut Vec<BalanceEntry>, currency: Currency) -> &mut BalanceEntry {
    let index = match balances
        .iter()
        .position(|b| b.currency.code == currency.code)
    {
        Some(index) => index,
        None => {
            balances.reserve_exact(1);
            balances.push(BalanceEntry::new(currency));
            balances.len() - 1
        }
    };
    &mut balances[index]
}

/// Adds to a balance, refusing to pass [`BALANCE_UNITS_MAX`].
fn credit(balance: Units, amount: Units) -> Option<Units> {
    balance
        .checked_add(amount)
        .filter(|&b| b <= BALANCE_UNITS_MAX)
}

#[cfg(test)]
impl AccountState {
    /// This account with its balance in `currency` edited by `edit` and
    /// nothing else: a corrupted state, for the invariant checks' tests.
    pub(crate) fn corrupted(
        mut self,
        currency: Currency,
        edit: impl FnOnce(&mut BalanceEntry),
    ) -> Self {
        edit(self.entry_mut(currency));
        self
    }

    /// This account with its count of locking withdrawals set to `count`.
    pub(crate) fn with_locking_count(mut self, count: u32) -> Self {
        self.withdrawals_locking = count;
        self
    }
}

#[cfg(test)]
mod tests;
