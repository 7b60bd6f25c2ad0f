//! The public event feed's shapes: [`FeedEvent`], what a host receives
//! for each logged record (from [`Ledger::subscribe`](crate::Ledger::subscribe),
//! `GET /v1/events`, Server-Sent Events and webhooks), and the
//! [`BalanceTracker`] that gives each event the balances after it; and
//! [`JournalHead`], the log's hash-chain head a host anchors outside.
//!
//! A feed event is a stable, documented, versioned type, apart from the
//! log's internal record ([`Event`]): the log's encoding may change with a
//! format version, this JSON only ever gains fields (and changes
//! [`FEED_VERSION`] if it must break). One event per logged record, in LSN
//! order, so LSNs are consecutive: a consumer that sees a gap lost
//! something. Typed in Rust (ids, currency codes, `Decimal`s, times), text
//! in JSON as everywhere in the API (32-hex-digit ids, `"25.00"`, RFC
//! 3339): making an event formats nothing, so a subscriber that does not
//! serialise pays for none of it.
//!
//! Balances are those of log order (what a replay of the log up to the
//! event holds, which is what the history store's entries say after the
//! event's last change to each balance), not what an account actor held
//! when it ran the command: a transfer's receiving side, say, runs on
//! another shard. The tracker follows the events from
//! a starting position, learning the balance of an account it has not
//! seen yet from its [`Seeds`] (the history store, or zero from the log's
//! start); an event whose balance it cannot learn carries none and says so
//! (`balances_known: false`). It follows a withdrawal's fee as the account
//! does: locked in the fee's currency with the request, released with the
//! amount on failure, cancel or expiry, and on completion leaving the
//! account for the fee account the event names; and a partial completion:
//! what was paid is burned, the rest released (and a return credits what
//! was paid).
//!
//! Fields added after the first version (metadata, a withdrawal's fee,
//! destination and expiry, a completion's paid amount and fee) are left
//! out of the JSON when an event has none, so a plain event reads as it
//! always did.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::details::{Destination, Fee, FeeCollected, Metadata, WithdrawalDetails};
use crate::domain::event::{Event, ItemOutcome};
use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::{Currency, CurrencyCode, Units};
use crate::domain::time::UnixMs;

/// The version of [`FeedEvent`]'s JSON. It changes only if a field must
/// change meaning or go; new fields and new event types keep it.
pub const FEED_VERSION: u32 = 1;

/// One logged record, as the feed shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEvent {
    /// [`FEED_VERSION`] of the event's shape.
    pub version: u32,
    /// The record's log sequence number: consecutive, from 1.
    pub lsn: u64,
    /// When the engine stamped it (RFC 3339, UTC, milliseconds); `None`
    /// for a record logged before times were (format v1 to v3).
    #[serde(with = "text::option")]
    pub time: Option<UnixMs>,
    /// The same instant in ms since the Unix epoch.
    pub time_ms: Option<u64>,
    /// What happened; its `type` field names it.
    #[serde(flatten)]
    pub body: FeedBody,
    /// Each balance the event changed, after it (empty when it changed
    /// none).
    pub balances: Vec<BalanceAfter>,
    /// `false` when the event changed a balance the feed could not learn
    /// (a ledger without a history store, subscribed past the log's start):
    /// `balances` then lacks it.
    pub balances_known: bool,
}

/// The log's head: its last durable record's LSN and the SHA-256 that
/// chains it (the hash the next record will carry), for anchoring outside
/// (`Ledger::journal_head`, `GET /v1/journal/head`). LSN 0 and zeros: an
/// empty log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalHead {
    pub lsn: u64,
    pub hash: [u8; 32],
}

impl JournalHead {
    /// The hash as 64 lower-case hex digits.
    pub fn hash_hex(&self) -> String {
        self.hash.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

/// `<lsn>:<64 hex digits>`, how `verify --chain --expect-head` takes it.
impl std::fmt::Display for JournalHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.lsn, self.hash_hex())
    }
}

impl std::str::FromStr for JournalHead {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || format!("{text:?} is not <lsn>:<64 hex digits>");
        let (lsn, hex) = text.split_once(':').ok_or_else(malformed)?;
        let lsn = lsn.parse().map_err(|_| malformed())?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        let mut hash = [0u8; 32];
        for (i, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| malformed())?;
        }
        Ok(Self { lsn, hash })
    }
}

/// One account's balance in one currency after an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceAfter {
    pub account: AccountId,
    #[serde(with = "text")]
    pub currency: CurrencyCode,
    /// Decimal strings with the currency's places (as JSON).
    pub available: Decimal,
    pub locked: Decimal,
    pub total: Decimal,
}

/// A payout item as submitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPayoutItem {
    #[serde(with = "text")]
    pub transaction_id: TransactionId,
    pub amount: Decimal,
}

/// A payout item's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedItemOutcome {
    #[serde(with = "text")]
    pub transaction_id: TransactionId,
    pub outcome: FeedOutcome,
    pub reason: Option<String>,
}

/// A payout item's answer: `paid` or `failed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedOutcome {
    Paid,
    Failed,
}

impl From<&ItemOutcome> for FeedOutcome {
    fn from(outcome: &ItemOutcome) -> Self {
        match outcome {
            ItemOutcome::Paid | ItemOutcome::PartlyPaid { .. } => Self::Paid,
            ItemOutcome::Failed { .. } => Self::Failed,
        }
    }
}

/// A withdrawal's fee as its request locked it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedFee {
    #[serde(with = "text")]
    pub currency: CurrencyCode,
    pub amount: Decimal,
}

/// A withdrawal's fee as its completion moved it: to the fee account `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedFeeCollected {
    pub to: AccountId,
    #[serde(with = "text")]
    pub currency: CurrencyCode,
    pub amount: Decimal,
}

impl From<&Fee> for FeedFee {
    fn from(fee: &Fee) -> Self {
        Self {
            currency: fee.currency.code,
            amount: fee.currency.to_decimal(fee.amount),
        }
    }
}

impl From<&FeeCollected> for FeedFeeCollected {
    fn from(fee: &FeeCollected) -> Self {
        Self {
            to: fee.to,
            currency: fee.currency.code,
            amount: fee.currency.to_decimal(fee.amount),
        }
    }
}

/// What an event says, by `type`. Withdrawal events after the request
/// carry the currency and amount when the feed knows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum FeedBody {
    #[serde(rename = "deposited")]
    Deposited {
        #[serde(with = "text")]
        transaction_id: TransactionId,
        account: AccountId,
        #[serde(with = "text")]
        currency: CurrencyCode,
        amount: Decimal,
        idempotency_key: Option<IdempotencyKey>,
        #[serde(default, skip_serializing_if = "Metadata::is_empty")]
        metadata: Metadata,
    },
    #[serde(rename = "withdrawal.requested")]
    WithdrawalRequested {
        #[serde(with = "text")]
        transaction_id: TransactionId,
        account: AccountId,
        #[serde(with = "text")]
        currency: CurrencyCode,
        amount: Decimal,
        idempotency_key: Option<IdempotencyKey>,
        /// Locked with the amount.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fee: Option<FeedFee>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        destination: Option<Destination>,
        #[serde(default, skip_serializing_if = "Metadata::is_empty")]
        metadata: Metadata,
        /// While still pending then, it fails with reason `expired`.
        #[serde(
            default,
            with = "text::option",
            skip_serializing_if = "Option::is_none"
        )]
        expires_at: Option<UnixMs>,
    },
    #[serde(rename = "withdrawal.claimed")]
    WithdrawalClaimed {
        #[serde(with = "text")]
        transaction_id: TransactionId,
        account: AccountId,
        payout_id: u64,
    },
    #[serde(rename = "withdrawal.released")]
    WithdrawalReleased {
        #[serde(with = "text")]
        transaction_id: TransactionId,
        account: AccountId,
    },
    #[serde(rename = "withdrawal.completed")]
    WithdrawalCompleted {
        #[serde(with = "text")]
        transaction_id: TransactionId,
        account: AccountId,
        #[serde(with = "text::option")]
        currency: Option<CurrencyCode>,
        amount: Option<Decimal>,
        /// What left the account: the amount, or less for a partial
        /// completion (the rest was released). With the currency.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        paid: Option<Decimal>,
        /// The fee, moved to the fee account `to`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fee: Option<FeedFeeCollected>,
    },
    #[serde(rename = "withdrawal.failed")]
    WithdrawalFailed {
        #[serde(with = "text")]
        transaction_id: TransactionId,
        account: AccountId,
        reason: String,
        #[serde(with = "text::option")]
        currency: Option<CurrencyCode>,
        amount: Option<Decimal>,
    },
    #[serde(rename = "withdrawal.cancelled")]
    WithdrawalCancelled {
        #[serde(with = "text")]
        transaction_id: TransactionId,
        account: AccountId,
        #[serde(with = "text::option")]
        currency: Option<CurrencyCode>,
        amount: Option<Decimal>,
    },
    #[serde(rename = "withdrawal.returned")]
    WithdrawalReturned {
        #[serde(with = "text")]
        transaction_id: TransactionId,
        account: AccountId,
        reason: String,
        #[serde(with = "text::option")]
        currency: Option<CurrencyCode>,
        amount: Option<Decimal>,
    },
    #[serde(rename = "transferred")]
    Transferred {
        #[serde(with = "text")]
        transaction_id: TransactionId,
        from: AccountId,
        to: AccountId,
        #[serde(with = "text")]
        currency: CurrencyCode,
        amount: Decimal,
        idempotency_key: Option<IdempotencyKey>,
        #[serde(default, skip_serializing_if = "Metadata::is_empty")]
        metadata: Metadata,
    },
    #[serde(rename = "payout.submitted")]
    PayoutSubmitted {
        payout_id: u64,
        #[serde(with = "text")]
        currency: CurrencyCode,
        items: Vec<FeedPayoutItem>,
    },
    #[serde(rename = "payout.settled")]
    PayoutSettled {
        payout_id: u64,
        items: Vec<FeedItemOutcome>,
    },
    /// An operator settled an item by hand.
    #[serde(rename = "payout.resolved")]
    PayoutResolved {
        payout_id: u64,
        item: FeedItemOutcome,
        note: String,
    },
    /// The payment service contradicted an item's settled answer.
    #[serde(rename = "payout.mismatch")]
    PayoutMismatch {
        payout_id: u64,
        #[serde(with = "text")]
        transaction_id: TransactionId,
        settled: FeedOutcome,
        reported: FeedOutcome,
    },
    /// Housekeeping: the account's idempotency keys first used before
    /// `before` expired. Changes no balance.
    #[serde(rename = "idempotency_keys.expired")]
    IdempotencyKeysExpired {
        account: AccountId,
        #[serde(with = "text")]
        before: UnixMs,
    },
    /// An operator froze the account (or replaced its freeze). Changes no
    /// balance.
    #[serde(rename = "account.frozen")]
    AccountFrozen {
        account: AccountId,
        /// `withdrawals` or `all`.
        scope: String,
        #[serde(with = "text::option")]
        until: Option<UnixMs>,
        reason: String,
    },
    /// An operator lifted the account's freeze.
    #[serde(rename = "account.unfrozen")]
    AccountUnfrozen { account: AccountId },
    /// An operator moved the account to a tier (whose limits apply).
    #[serde(rename = "account.tier_set")]
    AccountTierSet { account: AccountId, tier: String },
}

/// Where the tracker learns what happened before it started: the balance
/// of an account in a currency, and a withdrawal's currency, amount, fee
/// and paid amount, as of the log position `before` (the LSN just before
/// the event that asks). `None`: not known.
pub trait Seeds {
    fn balance(
        &mut self,
        account: AccountId,
        currency: Currency,
        before: u64,
    ) -> Option<(Units, Units)>;
    fn withdrawal(&mut self, tx: TransactionId, before: u64) -> Option<SeededWithdrawal>;
}

/// A withdrawal as seeds know it: what its end moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeededWithdrawal {
    pub currency: Currency,
    pub amount: Units,
    pub fee: Option<Fee>,
    /// What a partial completion paid, if it was one.
    pub paid: Option<Units>,
}

/// Seeds of a feed read from the log's first record: nothing happened
/// before it, so every balance starts at zero (and every withdrawal's
/// request is read before its end).
pub struct FromGenesis;

impl Seeds for FromGenesis {
    fn balance(&mut self, _: AccountId, _: Currency, _: u64) -> Option<(Units, Units)> {
        Some((0, 0))
    }
    fn withdrawal(&mut self, _: TransactionId, _: u64) -> Option<SeededWithdrawal> {
        None
    }
}

/// Most (account, currency) balances the tracker keeps; past it, it
/// forgets them all and asks its seeds again (memory stays flat however
/// many accounts the feed passes).
pub const TRACKED_BALANCES_MAX: usize = 1 << 20;

/// Follows events in log order and turns each into a [`FeedEvent`] with
/// the balances after it.
#[derive(Default)]
pub struct BalanceTracker {
    /// (account, currency) → (available, locked), as of the last event.
    balances: Balances,
    /// Withdrawals seen requested and not yet failed, cancelled or
    /// returned (a completed one may still come back).
    open: foldhash::HashMap<TransactionId, Open>,
}

/// What the tracker keeps of a withdrawal until it ends.
#[derive(Clone, Copy)]
struct Open {
    currency: Currency,
    amount: Units,
    /// Its fee, from its request or, seeded, from the history store.
    fee: Option<Fee>,
    /// What its completion paid, once completed.
    paid: Option<Units>,
}

impl Open {
    /// Whether every balance its end moves at `account` is tracked.
    fn tracked_in(&self, balances: &Balances, account: AccountId) -> bool {
        balances.contains_key(&(account, self.currency.code))
            && self
                .fee
                .is_none_or(|f| balances.contains_key(&(account, f.currency.code)))
    }
}

type Balances = foldhash::HashMap<(AccountId, CurrencyCode), (Units, Units)>;

/// How an event moves one balance.
enum Move {
    Available(Units),
    Lock(Units),
    Unlock(Units),
    Burn(Units),
    /// A completion of `amount` that paid `paid` of it: the lock ends,
    /// what was not paid returns to available.
    Complete {
        amount: Units,
        paid: Units,
    },
}

impl BalanceTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the tracker can make `event`'s balances without asking its
    /// seeds (it has followed every balance and withdrawal the event moves).
    pub fn knows(&self, event: &Event) -> bool {
        let has = |account: AccountId, currency: &Currency| {
            self.balances.contains_key(&(account, currency.code))
        };
        match event {
            Event::Deposited { tx, currency, .. } => has(tx.account(), currency),
            Event::WithdrawalRequested {
                tx,
                currency,
                details,
                ..
            } => {
                let fee = details.as_deref().and_then(|d| d.fee);
                has(tx.account(), currency) && fee.is_none_or(|f| has(tx.account(), &f.currency))
            }
            Event::Transferred {
                tx, to, currency, ..
            } => has(tx.account(), currency) && has(*to, currency),
            Event::WithdrawalCompleted { tx, fee, .. } => {
                self.open_known(*tx)
                    && fee.is_none_or(|f| has(tx.account(), &f.currency) && has(f.to, &f.currency))
            }
            Event::WithdrawalFailed { tx, .. }
            | Event::WithdrawalCancelled { tx }
            | Event::WithdrawalReturned { tx, .. } => self.open_known(*tx),
            _ => true,
        }
    }

    /// Whether the tracker saw `tx` requested and follows the balances
    /// its end moves.
    fn open_known(&self, tx: TransactionId) -> bool {
        self.open
            .get(&tx)
            .is_some_and(|open| open.tracked_in(&self.balances, tx.account()))
    }

    /// The feed event for the record at `lsn`, moving the tracked
    /// balances as the event does.
    pub fn event(
        &mut self,
        lsn: u64,
        at: UnixMs,
        event: &Event,
        seeds: &mut dyn Seeds,
    ) -> FeedEvent {
        if self.balances.len() >= TRACKED_BALANCES_MAX {
            self.balances.clear();
        }
        if self.open.len() >= TRACKED_BALANCES_MAX {
            self.open.clear();
        }
        let mut step = Step {
            tracker: self,
            seeds,
            lsn,
            balances: Vec::new(),
            known: true,
        };
        let body = step.body(event);
        FeedEvent {
            version: FEED_VERSION,
            lsn,
            time: at.known(),
            time_ms: at.known().map(UnixMs::as_millis),
            body,
            balances: step.balances,
            balances_known: step.known,
        }
    }
}

/// How a withdrawal ended, for its locked amount and fee.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// Paid: `paid` (all of it if `None`) leaves, the rest returns to
    /// available; the fee goes to the fee account.
    Completed {
        paid: Option<Units>,
        fee: Option<FeeCollected>,
    },
    /// Failed, cancelled or expired: the locked amount and fee return to
    /// available.
    Released,
    /// Sent back after it was paid: what was paid is credited to available.
    Returned,
}

/// One event's pass over the tracker.
struct Step<'a> {
    tracker: &'a mut BalanceTracker,
    seeds: &'a mut dyn Seeds,
    lsn: u64,
    balances: Vec<BalanceAfter>,
    known: bool,
}

impl Step<'_> {
    fn body(&mut self, event: &Event) -> FeedBody {
        match event {
            Event::Deposited {
                tx,
                currency,
                amount,
                key,
                metadata,
            } => {
                self.change(tx.account(), *currency, Move::Available(*amount));
                FeedBody::Deposited {
                    transaction_id: *tx,
                    account: tx.account(),
                    currency: currency.code,
                    amount: currency.to_decimal(*amount),
                    idempotency_key: key.clone(),
                    metadata: metadata_of(metadata),
                }
            }
            Event::WithdrawalRequested {
                tx,
                currency,
                amount,
                key,
                details,
            } => self.requested(*tx, *currency, *amount, key, details.as_deref()),
            Event::WithdrawalClaimed { tx, payout_id } => FeedBody::WithdrawalClaimed {
                transaction_id: *tx,
                account: tx.account(),
                payout_id: *payout_id,
            },
            Event::WithdrawalReleased { tx } => FeedBody::WithdrawalReleased {
                transaction_id: *tx,
                account: tx.account(),
            },
            Event::WithdrawalCompleted { tx, paid, fee } => {
                let end = End::Completed {
                    paid: *paid,
                    fee: *fee,
                };
                let ended = self.ended(*tx, end);
                FeedBody::WithdrawalCompleted {
                    transaction_id: *tx,
                    account: tx.account(),
                    currency: ended.map(|o| o.currency.code),
                    amount: ended.map(|o| o.currency.to_decimal(o.amount)),
                    paid: ended.and_then(|o| Some(o.currency.to_decimal(o.paid?))),
                    fee: fee.as_ref().map(FeedFeeCollected::from),
                }
            }
            Event::WithdrawalFailed { tx, reason } => {
                let (currency, amount) = shown(self.ended(*tx, End::Released));
                FeedBody::WithdrawalFailed {
                    transaction_id: *tx,
                    account: tx.account(),
                    reason: reason.clone(),
                    currency,
                    amount,
                }
            }
            Event::WithdrawalCancelled { tx } => {
                let (currency, amount) = shown(self.ended(*tx, End::Released));
                FeedBody::WithdrawalCancelled {
                    transaction_id: *tx,
                    account: tx.account(),
                    currency,
                    amount,
                }
            }
            Event::WithdrawalReturned { tx, reason } => {
                let (currency, amount) = shown(self.ended(*tx, End::Returned));
                FeedBody::WithdrawalReturned {
                    transaction_id: *tx,
                    account: tx.account(),
                    reason: reason.clone(),
                    currency,
                    amount,
                }
            }
            Event::Transferred {
                tx,
                to,
                currency,
                amount,
                key,
                metadata,
            } => {
                self.change(tx.account(), *currency, Move::Available(-*amount));
                self.change(*to, *currency, Move::Available(*amount));
                FeedBody::Transferred {
                    transaction_id: *tx,
                    from: tx.account(),
                    to: *to,
                    currency: currency.code,
                    amount: currency.to_decimal(*amount),
                    idempotency_key: key.clone(),
                    metadata: metadata_of(metadata),
                }
            }
            Event::PayoutSubmitted {
                payout_id,
                currency,
                items,
            } => submitted(*payout_id, currency, items),
            Event::PayoutItemsSettled { payout_id, items } => FeedBody::PayoutSettled {
                payout_id: *payout_id,
                items: items.iter().map(|(tx, o)| item_outcome(*tx, o)).collect(),
            },
            Event::PayoutItemResolved {
                payout_id,
                tx,
                outcome,
                note,
            } => FeedBody::PayoutResolved {
                payout_id: *payout_id,
                item: item_outcome(*tx, outcome),
                note: note.clone(),
            },
            Event::PayoutMismatch {
                payout_id,
                tx,
                settled,
                reported,
            } => FeedBody::PayoutMismatch {
                payout_id: *payout_id,
                transaction_id: *tx,
                settled: settled.into(),
                reported: reported.into(),
            },
            Event::IdempotencyKeysExpired { account, before } => FeedBody::IdempotencyKeysExpired {
                account: *account,
                before: *before,
            },
            Event::AccountFrozen { account, freeze } => FeedBody::AccountFrozen {
                account: *account,
                scope: freeze.scope.as_str().to_string(),
                until: freeze.until,
                reason: freeze.reason.clone(),
            },
            Event::AccountUnfrozen { account } => FeedBody::AccountUnfrozen { account: *account },
            Event::AccountTierSet { account, tier } => FeedBody::AccountTierSet {
                account: *account,
                tier: tier.to_string(),
            },
        }
    }

    /// A request: the amount is locked, and the fee (in its currency).
    fn requested(
        &mut self,
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        key: &Option<IdempotencyKey>,
        details: Option<&WithdrawalDetails>,
    ) -> FeedBody {
        let fee = details.and_then(|d| d.fee);
        let open = Open {
            currency,
            amount,
            fee,
            paid: None,
        };
        self.tracker.open.insert(tx, open);
        self.change(tx.account(), currency, Move::Lock(amount));
        if let Some(fee) = fee {
            self.change(tx.account(), fee.currency, Move::Lock(fee.amount));
        }
        FeedBody::WithdrawalRequested {
            transaction_id: tx,
            account: tx.account(),
            currency: currency.code,
            amount: currency.to_decimal(amount),
            idempotency_key: key.clone(),
            fee: fee.as_ref().map(FeedFee::from),
            destination: details.and_then(|d| d.destination.clone()),
            metadata: details.map(|d| d.metadata.clone()).unwrap_or_default(),
            expires_at: details.and_then(|d| d.expires_at),
        }
    }

    /// A withdrawal's end: moves its locked amount and fee as `end` says
    /// and returns what the tracker knows of it (`None`: not known, and
    /// the event's balances are not either).
    fn ended(&mut self, tx: TransactionId, end: End) -> Option<Open> {
        let seen = match self.tracker.open.remove(&tx) {
            Some(seen) => Some(seen),
            None => self.seeds.withdrawal(tx, self.lsn - 1).map(|seed| Open {
                currency: seed.currency,
                amount: seed.amount,
                fee: seed.fee,
                paid: seed.paid,
            }),
        };
        let Some(mut seen) = seen else {
            self.known = false;
            return None;
        };
        let owner = tx.account();
        match end {
            End::Completed { paid, fee } => {
                let paid = paid.unwrap_or(seen.amount);
                let amount = seen.amount;
                self.change(owner, seen.currency, Move::Complete { amount, paid });
                if let Some(fee) = fee {
                    self.fee_collected(owner, fee);
                }
                seen.paid = Some(paid);
                // A completed withdrawal may still be returned: keep it.
                self.tracker.open.insert(tx, seen);
            }
            End::Released => {
                self.change(owner, seen.currency, Move::Unlock(seen.amount));
                if let Some(fee) = seen.fee {
                    self.change(owner, fee.currency, Move::Unlock(fee.amount));
                }
            }
            End::Returned => {
                let paid = seen.paid.unwrap_or(seen.amount);
                self.change(owner, seen.currency, Move::Available(paid));
            }
        }
        Some(seen)
    }

    /// A completion's fee: it leaves `owner`'s lock for the fee account
    /// (back to available when `owner` is the fee account).
    fn fee_collected(&mut self, owner: AccountId, fee: FeeCollected) {
        if fee.to == owner {
            self.change(owner, fee.currency, Move::Unlock(fee.amount));
        } else {
            self.change(owner, fee.currency, Move::Burn(fee.amount));
            self.change(fee.to, fee.currency, Move::Available(fee.amount));
        }
    }

    /// Moves one balance and records it, after, in the event.
    fn change(&mut self, account: AccountId, currency: Currency, how: Move) {
        let key = (account, currency.code);
        let current = match self.tracker.balances.get(&key) {
            Some(known) => Some(*known),
            None => self.seeds.balance(account, currency, self.lsn - 1),
        };
        let Some((available, locked)) = current else {
            self.known = false;
            return;
        };
        // The log's events passed every check when they were made, so
        // these cannot overflow; saturating keeps a damaged seed from
        // panicking the feed (the balance then shows the damage).
        let (available, locked) = match how {
            Move::Available(delta) => (available.saturating_add(delta), locked),
            Move::Lock(amount) => (
                available.saturating_sub(amount),
                locked.saturating_add(amount),
            ),
            Move::Unlock(amount) => (
                available.saturating_add(amount),
                locked.saturating_sub(amount),
            ),
            Move::Burn(amount) => (available, locked.saturating_sub(amount)),
            Move::Complete { amount, paid } => (
                available.saturating_add(amount.saturating_sub(paid)),
                locked.saturating_sub(amount),
            ),
        };
        self.tracker.balances.insert(key, (available, locked));
        let after = BalanceAfter {
            account,
            currency: currency.code,
            available: currency.to_decimal(available),
            locked: currency.to_decimal(locked),
            total: currency.to_decimal(available.saturating_add(locked)),
        };
        // One balance once per event, as it is after the event (a fee in
        // the withdrawal's own currency moves the same balance twice).
        let same = |b: &&mut BalanceAfter| b.account == account && b.currency == currency.code;
        match self.balances.iter_mut().find(same) {
            Some(earlier) => *earlier = after,
            None => self.balances.push(after),
        }
    }
}

/// A withdrawal end's currency and amount, when known.
fn shown(ended: Option<Open>) -> (Option<CurrencyCode>, Option<Decimal>) {
    match ended {
        Some(o) => (Some(o.currency.code), Some(o.currency.to_decimal(o.amount))),
        None => (None, None),
    }
}

/// An event's metadata as the feed shows it (empty when it had none).
fn metadata_of(metadata: &Option<Box<Metadata>>) -> Metadata {
    metadata.as_deref().cloned().unwrap_or_default()
}

/// A payout as submitted: its id, currency and items.
fn submitted(payout_id: u64, currency: &Currency, items: &[(TransactionId, Units)]) -> FeedBody {
    FeedBody::PayoutSubmitted {
        payout_id,
        currency: currency.code,
        items: items
            .iter()
            .map(|(tx, amount)| FeedPayoutItem {
                transaction_id: *tx,
                amount: currency.to_decimal(*amount),
            })
            .collect(),
    }
}

fn item_outcome(tx: TransactionId, outcome: &ItemOutcome) -> FeedItemOutcome {
    FeedItemOutcome {
        transaction_id: tx,
        outcome: outcome.into(),
        reason: match outcome {
            ItemOutcome::Paid | ItemOutcome::PartlyPaid { .. } => None,
            ItemOutcome::Failed { reason } => Some(reason.clone()),
        },
    }
}

/// JSON text for the feed's typed fields: ids, currency codes and times
/// as the strings the rest of the API shows (32 hex digits, `USD`, RFC
/// 3339), read back by their parsers.
mod text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn serialize<T: Display, S: Serializer>(
            value: &Option<T>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(value) => s.collect_str(value),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
        where
            T: FromStr,
            T::Err: Display,
            D: Deserializer<'de>,
        {
            let text = Option::<String>::deserialize(d)?;
            text.map(|t| t.parse().map_err(de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::CurrencyCode;

    fn usd() -> Currency {
        Currency {
            code: CurrencyCode::new("USD").unwrap(),
            decimals: 2,
        }
    }

    #[test]
    fn the_json_names_its_type_and_reads_back_as_it_was() {
        let tx = TransactionId::new(7, 1);
        let mut tracker = BalanceTracker::new();
        let deposit = Event::Deposited {
            tx,
            currency: usd(),
            amount: 12_345,
            key: None,
            metadata: None,
        };
        let event = tracker.event(1, UnixMs::from_millis(1_000), &deposit, &mut FromGenesis);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "deposited");
        assert_eq!(json["lsn"], 1);
        assert_eq!(json["amount"], "123.45");
        assert_eq!(json["time"], "1970-01-01T00:00:01.000Z");
        assert_eq!(json["balances"][0]["available"], "123.45");
        let back: FeedEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    fn btc() -> Currency {
        Currency {
            code: CurrencyCode::new("BTC").unwrap(),
            decimals: 8,
        }
    }

    /// (available, locked) of each balance an event shows, in minor units
    /// of two decimals (USD) or eight (BTC), by account and currency.
    fn moved(event: &FeedEvent) -> Vec<(AccountId, String, String, String)> {
        event
            .balances
            .iter()
            .map(|b| {
                let (a, l) = (b.available.to_string(), b.locked.to_string());
                (b.account, b.currency.to_string(), a, l)
            })
            .collect()
    }

    fn request(tx: TransactionId, amount: Units, fee: Fee, expires: bool) -> Event {
        Event::WithdrawalRequested {
            tx,
            currency: usd(),
            amount,
            key: None,
            details: WithdrawalDetails {
                fee: Some(fee),
                expires_at: expires.then(|| UnixMs::from_millis(5_000)),
                ..Default::default()
            }
            .boxed(),
        }
    }

    /// Issue 16: a fee is locked with the amount (one balance per
    /// currency, however many moves), released with it when the
    /// withdrawal expires, and on a partial completion what was paid is
    /// burned, the rest released, the fee moved to the fee account (or
    /// back to available when the withdrawal's account is the fee
    /// account); a return credits what was paid.
    #[test]
    fn fees_expiry_and_partial_completions_move_the_balances_as_the_account_does() {
        let mut tracker = BalanceTracker::new();
        let mut lsn = 0;
        let mut next = |tracker: &mut BalanceTracker, event: Event| {
            lsn += 1;
            tracker.event(lsn, UnixMs::from_millis(lsn), &event, &mut FromGenesis)
        };
        let s = |x: &str| x.to_string();
        for (account, currency) in [(1, usd()), (1, btc()), (9, usd()), (9, btc())] {
            let deposit = Event::Deposited {
                tx: TransactionId::new(account, 90 + u64::from(currency.decimals)),
                currency,
                amount: 10_000,
                key: None,
                metadata: None,
            };
            next(&mut tracker, deposit);
        }
        // Same currency: one balance, both locked.
        let (a, b, c) = (
            TransactionId::new(1, 1),
            TransactionId::new(1, 2),
            TransactionId::new(9, 1),
        );
        let usd_fee = Fee {
            currency: usd(),
            amount: 150,
        };
        let event = next(&mut tracker, request(a, 3_000, usd_fee, true));
        assert_eq!(moved(&event), vec![(1, s("USD"), s("68.50"), s("31.50"))]);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json["fee"],
            serde_json::json!({"currency": "USD", "amount": "1.50"})
        );
        assert_eq!(json["expires_at"], "1970-01-01T00:00:05.000Z");
        let expired = Event::WithdrawalFailed {
            tx: a,
            reason: "expired".into(),
        };
        let event = next(&mut tracker, expired);
        assert_eq!(moved(&event), vec![(1, s("USD"), s("100.00"), s("0.00"))]);
        // Another currency: two balances; a partial completion.
        let btc_fee = Fee {
            currency: btc(),
            amount: 1_000,
        };
        let event = next(&mut tracker, request(b, 3_000, btc_fee, false));
        assert_eq!(
            moved(&event),
            vec![
                (1, s("USD"), s("70.00"), s("30.00")),
                (1, s("BTC"), s("0.00009000"), s("0.00001000"))
            ]
        );
        let completed = Event::WithdrawalCompleted {
            tx: b,
            paid: Some(2_400),
            fee: Some(FeeCollected {
                to: 9,
                currency: btc(),
                amount: 1_000,
            }),
        };
        let event = next(&mut tracker, completed);
        assert_eq!(
            moved(&event),
            vec![
                (1, s("USD"), s("76.00"), s("0.00")),
                (1, s("BTC"), s("0.00009000"), s("0.00000000")),
                (9, s("BTC"), s("0.00011000"), s("0.00000000"))
            ]
        );
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            (&json["amount"], &json["paid"]),
            (&serde_json::json!("30.00"), &serde_json::json!("24.00"))
        );
        assert_eq!(json["fee"]["to"], 9);
        let returned = Event::WithdrawalReturned {
            tx: b,
            reason: "closed".into(),
        };
        let event = next(&mut tracker, returned);
        assert_eq!(moved(&event), vec![(1, s("USD"), s("100.00"), s("0.00"))]);
        // The fee account's own withdrawal: its fee comes back to it.
        next(&mut tracker, request(c, 1_000, btc_fee, false));
        let completed = Event::WithdrawalCompleted {
            tx: c,
            paid: None,
            fee: Some(FeeCollected {
                to: 9,
                currency: btc(),
                amount: 1_000,
            }),
        };
        let event = next(&mut tracker, completed);
        assert!(event.balances_known);
        assert_eq!(
            moved(&event),
            vec![
                (9, s("USD"), s("90.00"), s("0.00")),
                (9, s("BTC"), s("0.00011000"), s("0.00000000"))
            ]
        );
    }

    #[test]
    fn a_withdrawal_ended_before_the_start_is_learned_from_the_seeds_or_said_unknown() {
        let tx = TransactionId::new(7, 1);
        let completed = Event::WithdrawalCompleted {
            tx,
            paid: None,
            fee: None,
        };
        let mut unknown = BalanceTracker::new();
        let event = unknown.event(9, UnixMs::UNKNOWN, &completed, &mut FromGenesis);
        assert!(!event.balances_known);
        assert!(event.balances.is_empty());
        assert_eq!(event.time, None);

        struct Known;
        impl Seeds for Known {
            fn balance(
                &mut self,
                _: AccountId,
                _: Currency,
                before: u64,
            ) -> Option<(Units, Units)> {
                assert_eq!(before, 8, "the balance just before the event");
                Some((100, 50))
            }
            fn withdrawal(&mut self, _: TransactionId, _: u64) -> Option<SeededWithdrawal> {
                Some(SeededWithdrawal {
                    currency: usd(),
                    amount: 50,
                    fee: None,
                    paid: None,
                })
            }
        }
        let event = BalanceTracker::new().event(9, UnixMs::UNKNOWN, &completed, &mut Known);
        assert!(event.balances_known);
        assert_eq!(event.balances[0].locked.to_string(), "0.00");
        assert_eq!(event.balances[0].total.to_string(), "1.00");
    }
}
