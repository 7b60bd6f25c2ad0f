//! Events: what changed, as the write-ahead log will record it, and
//! [`Stamped`], an event with the engine's time, which is what is logged.
//!
//! An event is a fact that already passed every business check; applying it
//! (live or during recovery) only needs the account state and the event's
//! time, never the caller. Amounts are integer minor units so they
//! round-trip through bincode exactly.
//!
//! An event's encoding is `wire.rs`'s: a deposit, withdrawal request,
//! completion or transfer that carries nothing new (metadata, fee,
//! destination, expiry, a partial amount) keeps the encoding older logs
//! have, and one that does is written as a variant of its own added at the
//! end, so every log ever written still decodes.

mod wire;

use serde::{Deserialize, Serialize};

use crate::domain::details::{FeeCollected, Metadata, WithdrawalDetails};
use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::{Currency, Units};
use crate::domain::policy::{Freeze, Tier};
use crate::domain::time::UnixMs;

/// An event with the time the engine stamped it with when it was made:
/// what the log records and replay applies. Time is kept out of [`Event`]
/// itself so that events keep the encoding of format v1 to v3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamped {
    /// [`UnixMs::UNKNOWN`] for an event logged before format v4.
    pub at: UnixMs,
    pub event: Event,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Funds minted into `tx.account()`'s available balance.
    Deposited {
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
        metadata: Option<Box<Metadata>>,
    },
    /// A pending burn: `amount` moved from available to locked, and its
    /// fee (if any, in its own currency) with it.
    WithdrawalRequested {
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
        details: Option<Box<WithdrawalDetails>>,
    },
    /// Paid out: `paid` (the whole amount if `None`) left the account's
    /// total, the rest of the amount returned to available; the fee (if
    /// any) moved to the fee account `fee.to`.
    WithdrawalCompleted {
        tx: TransactionId,
        paid: Option<Units>,
        fee: Option<FeeCollected>,
    },
    /// Not paid: the locked amount returned to available.
    WithdrawalFailed { tx: TransactionId, reason: String },
    /// Cancelled while pending: the locked amount returned to available.
    WithdrawalCancelled { tx: TransactionId },
    /// `amount` moved from `tx.account()`'s available to `to`'s available,
    /// as one record so a crash can never keep only one side.
    Transferred {
        tx: TransactionId,
        to: AccountId,
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
        metadata: Option<Box<Metadata>>,
    },
    // Variants after this line were added after format v1; new variants
    // only ever go at the end so old logs still decode.
    /// A payout took the withdrawal (pending → processing); still locked.
    WithdrawalClaimed { tx: TransactionId, payout_id: u64 },
    /// The claim is undone (processing → pending): its payout never reached
    /// the payment service.
    WithdrawalReleased { tx: TransactionId },
    /// The bank sent a paid withdrawal back: a compensating credit to
    /// available (counted as minted, so the totals stay exact).
    WithdrawalReturned { tx: TransactionId, reason: String },
    /// Logged before a payout is handed to the payment service, after its
    /// items' claims: the payout's id, currency and items. Changes no account.
    PayoutSubmitted {
        payout_id: u64,
        currency: Currency,
        items: Vec<(TransactionId, Units)>,
    },
    /// The payment service's final answer for some items of a payout, logged
    /// after the accounts were updated. Changes no account.
    PayoutItemsSettled {
        payout_id: u64,
        items: Vec<(TransactionId, ItemOutcome)>,
    },
    /// An operator settled an item of a payout by hand (`resolve_payout_item`),
    /// logged after the account was updated: the payout stops asking the
    /// service about it. Changes no account.
    PayoutItemResolved {
        payout_id: u64,
        tx: TransactionId,
        outcome: ItemOutcome,
        note: String,
    },
    /// The payment service answered `reported` for an item already settled
    /// as `settled` (say an operator resolved it not paid, and the bank
    /// says paid): money may be wrong and an operator must look. Changes no
    /// account; the payout's record keeps it, and `audit` reports it.
    PayoutMismatch {
        payout_id: u64,
        tx: TransactionId,
        settled: ItemOutcome,
        reported: ItemOutcome,
    },
    /// `account`'s idempotency keys first used before `before` expired
    /// (the engine decides when, past `Config::idempotency_key_retention_ms`):
    /// each leaves memory and only its fingerprint stays, so a later use of
    /// it is refused `idempotency_key_expired`. A key whose transfer is in
    /// flight stays. Changes no balance.
    IdempotencyKeysExpired { account: AccountId, before: UnixMs },
    /// An operator froze `account` (or changed its freeze): see [`Freeze`].
    AccountFrozen { account: AccountId, freeze: Freeze },
    /// An operator lifted `account`'s freeze.
    AccountUnfrozen { account: AccountId },
    /// An operator moved `account` to `tier`: the withdrawal limits of that
    /// tier apply to it from then on.
    AccountTierSet { account: AccountId, tier: Tier },
}

/// A payout item's final answer from the payment service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemOutcome {
    Paid,
    Failed {
        reason: String,
    },
    /// Paid, but only `paid` of the amount (the rest is released). Added
    /// after `Failed`, so older records still decode.
    PartlyPaid {
        paid: Units,
    },
}

impl ItemOutcome {
    /// Whether two outcomes disagree on whether the money left (failure
    /// reasons may differ).
    pub fn contradicts(&self, other: &ItemOutcome) -> bool {
        self.is_paid() != other.is_paid()
    }

    /// Whether money left (all of the amount or part of it).
    pub fn is_paid(&self) -> bool {
        matches!(self, Self::Paid | Self::PartlyPaid { .. })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Paid | Self::PartlyPaid { .. } => "paid",
            Self::Failed { .. } => "failed",
        }
    }
}

impl Event {
    /// The transaction this event belongs to; `None` for payout records,
    /// which belong to no single account, and for a key expiry, which
    /// belongs to no transaction.
    pub fn transaction_id(&self) -> Option<TransactionId> {
        match self {
            Self::Deposited { tx, .. }
            | Self::WithdrawalRequested { tx, .. }
            | Self::WithdrawalCompleted { tx, .. }
            | Self::WithdrawalFailed { tx, .. }
            | Self::WithdrawalCancelled { tx }
            | Self::Transferred { tx, .. }
            | Self::WithdrawalClaimed { tx, .. }
            | Self::WithdrawalReleased { tx }
            | Self::WithdrawalReturned { tx, .. } => Some(*tx),
            Self::PayoutSubmitted { .. }
            | Self::PayoutItemsSettled { .. }
            | Self::PayoutItemResolved { .. }
            | Self::PayoutMismatch { .. }
            | Self::IdempotencyKeysExpired { .. }
            | Self::AccountFrozen { .. }
            | Self::AccountUnfrozen { .. }
            | Self::AccountTierSet { .. } => None,
        }
    }

    /// The account of an event that belongs to an account and no
    /// transaction: a key expiry, a freeze, its lifting, a tier.
    pub fn account_event_of(&self) -> Option<AccountId> {
        match self {
            Self::IdempotencyKeysExpired { account, .. }
            | Self::AccountFrozen { account, .. }
            | Self::AccountUnfrozen { account }
            | Self::AccountTierSet { account, .. } => Some(*account),
            _ => None,
        }
    }

    /// The accounts this event changes: its owner and, for a transfer, the
    /// receiving account (for a completion with a fee, the fee account); an
    /// account event's account. `None` for payout records.
    pub fn accounts(&self) -> Option<(AccountId, Option<AccountId>)> {
        if let Some(account) = self.account_event_of() {
            return Some((account, None));
        }
        let owner = self.transaction_id()?.account();
        match self {
            Self::Transferred { to, .. } => Some((owner, Some(*to))),
            Self::WithdrawalCompleted { fee: Some(fee), .. } if fee.to != owner => {
                Some((owner, Some(fee.to)))
            }
            _ => Some((owner, None)),
        }
    }
}
