//! The public shapes of the ledger's history reads: the queries a caller
//! sends ([`WithdrawalQuery`], [`PayoutQuery`]), a [`Page`] of answers with
//! the cursor that resumes it, and what the history holds besides
//! withdrawals and payouts: account [`Entry`]s (every balance change) and
//! [`Transaction`]s looked up by id. Amounts are `Decimal`s of their
//! currency and times [`UnixMs`], as everywhere in the public API; how the
//! history store keeps them is its own business (`storage/history/`).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::details::Metadata;
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::{CurrencyCode, Units};
use crate::domain::payouts::PayoutState;
use crate::domain::receipts::{Deposit, Transfer};
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{StatusKind, Withdrawal};

/// The rows one page holds when the caller does not say.
pub const PAGE_LIMIT_DEFAULT: usize = 100;

/// One page of a listing. `next` is an opaque cursor: pass it as the next
/// query's `after` to get the rows that follow (never one twice, none
/// skipped, however much is written meanwhile); `None` when nothing
/// follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Listing order: withdrawals by creation time (then transaction id),
/// payouts by id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// A withdrawal listing: `account`'s withdrawals when given, else those of
/// payout `payout_id` when given, else every account's (the operations
/// view). Every filter given applies: `currency`, `status` (any of them;
/// all statuses when empty), created at or after `created_from` and before
/// `created_to`. At most `limit` (1 to 1,000) a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithdrawalQuery<'a> {
    pub account: Option<AccountId>,
    pub currency: Option<&'a str>,
    pub status: &'a [StatusKind],
    pub created_from: Option<UnixMs>,
    pub created_to: Option<UnixMs>,
    pub payout_id: Option<u64>,
    /// The `next` of the page before.
    pub after: Option<&'a str>,
    pub limit: usize,
    pub order: Order,
}

impl Default for WithdrawalQuery<'_> {
    fn default() -> Self {
        Self {
            account: None,
            currency: None,
            status: &[],
            created_from: None,
            created_to: None,
            payout_id: None,
            after: None,
            limit: PAGE_LIMIT_DEFAULT,
            order: Order::Asc,
        }
    }
}

/// A payout listing by id, filtered by `state` and `currency` when given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutQuery<'a> {
    pub state: Option<PayoutState>,
    pub currency: Option<&'a str>,
    pub after: Option<&'a str>,
    pub limit: usize,
    pub order: Order,
}

impl Default for PayoutQuery<'_> {
    fn default() -> Self {
        Self {
            state: None,
            currency: None,
            after: None,
            limit: PAGE_LIMIT_DEFAULT,
            order: Order::Asc,
        }
    }
}

/// What a balance change was. The history store keeps it by variant
/// index: new kinds only ever go at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    Deposit,
    /// A withdrawal request moved the amount from available to locked.
    Lock,
    /// A completed withdrawal: the locked amount left the account.
    Burn,
    /// A failed or cancelled withdrawal: locked back to available.
    Release,
    /// A paid withdrawal sent back by the bank: credited to available.
    Return,
    TransferIn,
    TransferOut,
    /// A completed withdrawal's fee: locked, it left for the fee account.
    FeeOut,
    /// A completed withdrawal's fee, arrived at the fee account: credited
    /// to available.
    FeeIn,
}

impl EntryKind {
    pub const ALL: [EntryKind; 9] = [
        Self::Deposit,
        Self::Lock,
        Self::Burn,
        Self::Release,
        Self::Return,
        Self::TransferIn,
        Self::TransferOut,
        Self::FeeOut,
        Self::FeeIn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deposit => "deposit",
            Self::Lock => "lock",
            Self::Burn => "burn",
            Self::Release => "release",
            Self::Return => "return",
            Self::TransferIn => "transfer_in",
            Self::TransferOut => "transfer_out",
            Self::FeeOut => "fee_out",
            Self::FeeIn => "fee_in",
        }
    }

    /// What an entry of this kind for `amount` (minor units) does to the
    /// balance: (change to available, change to locked). An account's
    /// entries in a currency, added up from zero, give its balance.
    pub fn delta(self, amount: Units) -> (Units, Units) {
        let (available, locked) = self.direction();
        (
            Units::from(available) * amount,
            Units::from(locked) * amount,
        )
    }

    /// The balance `(available, locked)` moved by an entry of this kind for
    /// `amount`; `None` when that overflows (never for amounts the engine
    /// took, possibly for ones read from damaged bytes).
    pub fn moved(
        self,
        (available, locked): (Units, Units),
        amount: Units,
    ) -> Option<(Units, Units)> {
        let (to_available, to_locked) = self.direction();
        Some((
            available.checked_add(Units::from(to_available).checked_mul(amount)?)?,
            locked.checked_add(Units::from(to_locked).checked_mul(amount)?)?,
        ))
    }

    /// Which way the amount goes: into (1), out of (-1) or not at all (0)
    /// (available, locked).
    fn direction(self) -> (i8, i8) {
        match self {
            Self::Deposit | Self::Return | Self::TransferIn | Self::FeeIn => (1, 0),
            Self::TransferOut => (-1, 0),
            Self::Lock => (-1, 1),
            Self::Release => (1, -1),
            Self::Burn | Self::FeeOut => (0, -1),
        }
    }
}

/// One balance change of one account in one currency, with the balance
/// after it. `seq` is the log position of the event that made it: it
/// numbers the account's entries in that currency, increasing, the
/// changes one event made to one balance (a completion burning part,
/// releasing the rest and moving a fee) sharing it, numbered by `part`
/// (0, 1, 2) in the order made, so (`seq`, `part`) is unique and
/// increasing; `at` is `None` for a change logged before times were
/// (on-disk format v4). `metadata` is its operation's (deposit,
/// withdrawal, transfer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub transaction_id: TransactionId,
    pub account: AccountId,
    pub currency: CurrencyCode,
    pub seq: u64,
    pub part: u8,
    pub kind: EntryKind,
    pub amount: Decimal,
    pub at: Option<UnixMs>,
    pub available_after: Decimal,
    pub locked_after: Decimal,
    pub metadata: Metadata,
}

/// Whatever a transaction id names, as the history keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transaction {
    Withdrawal(Withdrawal),
    Deposit {
        deposit: Deposit,
        at: Option<UnixMs>,
        metadata: Metadata,
    },
    Transfer {
        transfer: Transfer,
        at: Option<UnixMs>,
        metadata: Metadata,
    },
}

impl Transaction {
    pub fn transaction_id(&self) -> TransactionId {
        match self {
            Self::Withdrawal(w) => w.transaction_id,
            Self::Deposit { deposit, .. } => deposit.transaction_id,
            Self::Transfer { transfer, .. } => transfer.transaction_id,
        }
    }
}
