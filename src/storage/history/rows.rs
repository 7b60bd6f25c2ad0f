//! The history store's rows (storage-level records, not actors or events)
//! and [`Change`], what one ingested batch is made of. Amounts are minor
//! units of the row's currency; times are milliseconds since the epoch.
//!
//! What format v7 added to a row (a withdrawal's extras; a deposit's,
//! transfer's or entry's metadata; an entry's part) is not in its serde
//! encoding: it is stored after it, only when present (see
//! [`schema::Trailing`](super::schema)), so older rows still decode.

use serde::{Deserialize, Serialize};

use crate::domain::details::Metadata;
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::{CurrencyCode, Units};
use crate::domain::payouts::PayoutState;
use crate::domain::withdrawal::{KeptExtras, StatusKind};

use super::schema::{payout_state_code, status_code};

/// One withdrawal as it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalRow {
    pub tx: TransactionId,
    pub account: AccountId,
    pub currency: CurrencyCode,
    pub amount: Units,
    #[serde(with = "status_code")]
    pub status: StatusKind,
    /// The payout that took it (kept once set, as a record of who paid it).
    pub payout_id: Option<u64>,
    /// Why it failed or was returned.
    pub reason: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Its fee, destination, metadata, expiry and partly paid amount, as
    /// the account's record keeps them (nothing: a plain withdrawal).
    #[serde(skip)]
    pub extras: KeptExtras,
}

/// What a balance change was: the public kind, stored by its variant
/// index (its order is part of the store's format).
pub use crate::domain::history::EntryKind;

/// One balance change of one account in one currency; `seq` is the LSN of
/// the event that made it, `part` numbers the changes one event made to
/// that balance (a completion that burns part, releases the rest and moves
/// a fee): (seq, part) numbers the account's entries in that currency,
/// strictly increasing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRow {
    pub account: AccountId,
    pub currency: CurrencyCode,
    pub seq: u64,
    pub tx: TransactionId,
    pub kind: EntryKind,
    pub amount: Units,
    pub at_ms: u64,
    pub available_after: Units,
    pub locked_after: Units,
    /// 0 for an event's first change to this balance (the only one before
    /// format v7), then 1, 2.
    #[serde(skip)]
    pub part: u8,
    /// The metadata of the operation that made it.
    #[serde(skip)]
    pub metadata: Option<Box<Metadata>>,
}

/// What a non-withdrawal transaction was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransactionKind {
    Deposit,
    Transfer,
}

/// A deposit (`account` credited, `to` is `None`) or a transfer (from
/// `account` to `to`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionRow {
    pub tx: TransactionId,
    pub kind: TransactionKind,
    pub account: AccountId,
    pub to: Option<AccountId>,
    pub currency: CurrencyCode,
    pub amount: Units,
    pub at_ms: u64,
    #[serde(skip)]
    pub metadata: Option<Box<Metadata>>,
}

/// Whatever a transaction id names: `HistoryStore::transaction`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransactionRecord {
    Withdrawal(WithdrawalRow),
    Other(TransactionRow),
}

/// One withdrawal paid by a payout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutItemRow {
    pub tx: TransactionId,
    pub amount: Units,
}

/// One payout as it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRow {
    pub payout_id: u64,
    pub currency: CurrencyCode,
    #[serde(with = "payout_state_code")]
    pub state: PayoutState,
    pub submitted_at_ms: u64,
    /// When its last item was settled; `None` while any is open.
    pub settled_at_ms: Option<u64>,
    pub items: Vec<PayoutItemRow>,
}

/// An account's balance in one currency as of a time: its last entry at or
/// before that time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceAt {
    pub currency: CurrencyCode,
    pub available: Units,
    pub locked: Units,
    /// The entry it was read from.
    pub seq: u64,
    pub at_ms: u64,
}

/// What a withdrawal's status and payout index keys were before a change
/// (its account and creation time never change): lets ingest move them
/// without reading the stored row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WithdrawalIndex {
    pub status: StatusKind,
    pub payout_id: Option<u64>,
}

/// One change to the history, as a follower makes it from a logged event.
///
/// The `…From` variants say what the store holds before them, as the
/// follower knew it from the state before the event; ingest then writes
/// without reading. The others make ingest read the stored row first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new withdrawal, or a whole row replacing the stored one.
    Withdrawal(WithdrawalRow),
    /// A whole withdrawal row; `from` is how the store indexes it before
    /// (`None`: the store holds no row for it yet).
    WithdrawalFrom {
        row: WithdrawalRow,
        from: Option<WithdrawalIndex>,
    },
    /// A withdrawal's new status (events name only the transaction): the
    /// stored row is updated; `payout_id` and `reason` replace the stored
    /// ones only when given.
    WithdrawalStatus {
        tx: TransactionId,
        status: StatusKind,
        payout_id: Option<u64>,
        reason: Option<String>,
        at_ms: u64,
    },
    Entry(EntryRow),
    Transaction(TransactionRow),
    /// A new payout, or a whole row replacing the stored one.
    Payout(PayoutRow),
    /// A whole payout row; `from` is its state before (`None`: the store
    /// holds no row for it yet).
    PayoutFrom {
        row: PayoutRow,
        from: Option<PayoutState>,
    },
    /// A payout's new state; `settled_at_ms` replaces the stored one when given.
    PayoutState {
        payout_id: u64,
        state: PayoutState,
        settled_at_ms: Option<u64>,
    },
}

/// A borrowed change is copied into the store batch (see
/// `HistoryStore::ingest`, which moves the ones it is given).
impl From<&Change> for Change {
    fn from(change: &Change) -> Self {
        change.clone()
    }
}
