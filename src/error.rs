//! Why an operation was refused: [`LedgerError`], one variant per cause,
//! each with a stable snake_case [`code`](LedgerError::code), its
//! [`kind`](LedgerError::kind) and whether sending it again could succeed
//! ([`is_retryable`](LedgerError::is_retryable)). A refused operation
//! changes nothing, except where `internal` says otherwise.
//!
//! # Kinds
//! - [`ErrorKind::BadRequest`]: the request is wrong in itself, judged
//!   without reading the ledger's state; sent again unchanged it fails
//!   again.
//! - [`ErrorKind::Rejected`]: a business rule refused it, given the state
//!   of an account, a withdrawal, an idempotency key or a payout.
//! - [`ErrorKind::Operating`]: not about the request: the ledger is
//!   shutting down, poisoned (a storage failure, or a failed check on a
//!   shard), overloaded, or hit a bug
//!   (`internal`).
//!
//! # Precedence
//! When several causes apply, the first check the operation passes
//! through answers. The variants are declared in this order:
//! 1. `shutting_down`: `Ledger::check_open` runs before any input is
//!    judged (and `Ledger::admit` again before a shard is asked).
//! 2. The request itself, at the `Ledger` handle, without reading state:
//!    `invalid_idempotency_key` (`IdempotencyKey::new`, as the caller's key
//!    is read), `batch_too_large` (`Ledger::submit`, before any operation of
//!    the batch is looked at), then per operation (`Ledger::transfer`'s
//!    `check_distinct` and `Ledger::to_command`): `same_account_transfer`,
//!    `unknown_currency`, `invalid_amount` (not positive, too many
//!    decimals, above the currency's maximum), `reason_too_long`,
//!    `reason_missing` (a freeze's reason); for a
//!    withdrawal's details (`engine/edge.rs`), after its amount: its fee's
//!    currency and amount (`unknown_currency`, `invalid_amount`),
//!    `invalid_destination`, `invalid_metadata`, `invalid_expiry` (HTTP
//!    reads an amount's text, then the shape of metadata and expiry, as
//!    it reads the body: over HTTP those answer before the currency). Also of
//!    this kind: `invalid_transaction_id` (reading an id from text, before
//!    anything is asked), `invalid_time` (reading a time from text), and
//!    for the history reads (`ledger/history.rs`), after
//!    `unknown_currency`: `invalid_time_range`, `invalid_limit`; then
//!    `payouts_disabled` (a payout call on a ledger that makes none).
//!    Then `history_unavailable` (of the operating kind): a history read
//!    on a ledger without a history store (no data folder), or whose store
//!    failed or stopped being fed; judged after the request's own checks
//!    and before the store reads the cursor, so `invalid_cursor` (a cursor
//!    the store did not make for that listing) comes after it.
//! 3. `overloaded`: `Ledger::admit`, once the input passed, before a shard
//!    sees the operation.
//! 4. `poisoned`: the account actor refuses before it runs a command
//!    (`engine/account.rs`); a failed log append answers it too.
//! 5. The state, where it lives: the payout actor's
//!    `check_resolvable` (`unknown_payout`, `not_in_payout`,
//!    `payout_item_settled`), then the account's rules
//!    (`domain/account/rules.rs`, `transfers.rs`), in this order:
//!    `unknown_withdrawal` (or, for a history look-up by id,
//!    `unknown_transaction`), `fees_disabled` (a fee on a ledger without a
//!    fee account), `idempotency_conflict`, `idempotency_in_progress`,
//!    `idempotency_key_expired` (a key held in memory answers one of the
//!    two before; an expired one is no longer held, so it never meets
//!    them), `account_frozen`, `payout_in_flight` (who may settle),
//!    `invalid_transition` (the state machine; a completion repeated with
//!    another paid amount too), then a completion's paid amount
//!    (`invalid_amount`, `invalid_paid_amount`),
//!    `too_many_pending_withdrawals`, `limit_exceeded`,
//!    `insufficient_funds`, and last the balance ceiling (`invalid_amount`
//!    with [`AmountProblem::BalanceAboveMaximum`], judged at the credited
//!    account). `tests/exchange_withdrawals.rs` shows a withdrawal's order.
//! 6. `internal`: wherever a check inside the engine fails.
//!
//! `tests/errors.rs` provokes causes two or more at a time, wherever they
//! can meet, and checks which one answers.

use rust_decimal::Decimal;

use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::CurrencyCode;
use crate::domain::policy::{FreezeScope, Window};
use crate::domain::time::{TimeTextError, UnixMs};
use crate::domain::withdrawal::{StatusKind, TransitionAction};

/// Why an operation was refused; variants in order of precedence (see the
/// module docs).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The ledger is closing or closed; nothing new is accepted.
    #[error("the ledger is shutting down; no new operations are accepted")]
    ShuttingDown,

    /// This node is a standby (or was fenced): another node writes. Reads
    /// of the history store still answer; send writes to the writer.
    #[error("this node does not write{}", match writer { Some(w) => format!("; the writer is {w}"), None => String::new() })]
    NotLeader { writer: Option<String> },

    // ---- the request itself ----
    /// An idempotency key must be 1 to `max` bytes long.
    #[error("an idempotency key must be 1 to {max} bytes, got {length}")]
    InvalidIdempotencyKey { length: usize, max: usize },

    /// A batch holds more than `Config::batch_ops_max` operations; every
    /// operation of it is refused.
    #[error("a batch holds at most {max} operations, got {count}")]
    BatchTooLarge { count: usize, max: usize },

    /// A transfer names the same account as source and destination.
    #[error("a transfer needs two different accounts, got {account} twice")]
    SameAccountTransfer { account: AccountId },

    #[error("unknown currency {currency:?}: it is not configured on this ledger")]
    UnknownCurrency { currency: String },

    #[error("invalid amount {amount} {currency}: {problem}")]
    InvalidAmount {
        amount: Decimal,
        currency: CurrencyCode,
        problem: AmountProblem,
    },

    /// A free text (`field`: a failure or return `reason`, an operator's
    /// `note`) is longer than `max` bytes.
    #[error("the {field} holds at most {max} bytes, got {length}")]
    ReasonTooLong {
        field: &'static str,
        length: usize,
        max: usize,
    },

    /// A free text that must say something (a freeze's `reason`, which
    /// every refusal it causes shows) is empty or only white space.
    #[error("the {field} must not be empty")]
    ReasonMissing { field: &'static str },

    /// Metadata past its limits (16 keys, 1 KiB of keys and values, no
    /// empty or repeated key).
    #[error("invalid metadata: {problem}")]
    InvalidMetadata { problem: String },

    /// A withdrawal's destination field (`kind`, `value`, `network`) is
    /// empty (`kind`, `value`), longer than 256 bytes or holds a control
    /// character.
    #[error("invalid destination {field}: {problem}")]
    InvalidDestination {
        field: &'static str,
        problem: String,
    },

    /// A tier name that is not 1 to 32 of `A-Z a-z 0-9 _ - .`.
    #[error("invalid tier {tier:?}: a tier is 1 to 32 of A-Z a-z 0-9 _ - .")]
    InvalidTier { tier: String },

    /// A withdrawal's `expires_in` that is zero or longer than allowed, or
    /// a freeze's `until` that already passed (`problem` says which).
    #[error("invalid expiry: {problem}")]
    InvalidExpiry { problem: String },

    /// A withdrawal with a fee on a ledger with no fee account
    /// (`Config::fee_account`): there is nowhere to put it.
    #[error("this ledger takes no fees: no fee account is configured")]
    FeesDisabled,

    /// Text that should be a transaction id is not 32 hex digits.
    #[error("transaction id {input:?} is not 32 hex digits")]
    InvalidTransactionId { input: String },

    /// Text that should be an RFC 3339 time is not one
    /// ([`UnixMs::parse_rfc3339`] says what it takes).
    #[error("{0}")]
    InvalidTime(TimeTextError),

    /// A history listing's `created_from` is after its `created_to`.
    #[error("created_from ({from}) is after created_to ({to})")]
    InvalidTimeRange { from: UnixMs, to: UnixMs },

    /// A page size outside 1..=`max`.
    #[error("limit must be 1 to {max}, got {limit}")]
    InvalidLimit { limit: usize, max: usize },

    /// A payout call on a ledger that makes no payouts (no payment service,
    /// or payout mode `external`): its host reports each withdrawal's
    /// outcome with `complete_withdrawal`.
    #[error("this ledger makes no payouts (no payment service, or payout mode external): report outcomes with complete_withdrawal")]
    PayoutsDisabled,

    /// A history read (listings, entries, transactions, balances as of a
    /// time, paged payouts) on a ledger that has no history store — one
    /// without a data folder — or whose store failed or stopped being fed
    /// (`reason` says which). Not about the request: the ledger cannot
    /// answer it.
    #[error("history unavailable: {reason}")]
    HistoryUnavailable { reason: String },

    /// The event feed on a ledger that has no log to read it from (no
    /// data folder, or sync mode `none`), or whose log cannot be read
    /// (`reason` says which).
    #[error("events unavailable: {reason}")]
    EventsUnavailable { reason: String },

    /// A feed position the log no longer holds: the records after `after`
    /// were pruned (past the retention cap); the oldest still held is
    /// `oldest`. To resynchronise, read the balances and listings you
    /// need, then continue from the journal head (`GET /v1/journal/head`).
    #[error("cursor expired: the log no longer holds the events after LSN {after} (it starts at LSN {oldest}); resynchronise from current balances and continue from the journal head")]
    CursorExpired { after: u64, oldest: u64 },

    /// A consumer name that is not 1 to 64 of `A-Z a-z 0-9 _ - .`, or a
    /// cursor it may not take (`reason` says which).
    #[error("invalid consumer: {reason}")]
    InvalidConsumer { reason: String },

    /// No consumer has this name (none set its cursor yet).
    #[error("unknown consumer {name}")]
    UnknownConsumer { name: String },

    /// A page cursor that is not the `next` of a page of this listing.
    #[error("malformed cursor: {reason}; pass the `next` of the page before")]
    InvalidCursor { reason: String },

    // ---- operating conditions checked before the state ----
    /// Too many operations are in flight on one shard; retry after a pause.
    #[error("overloaded: shard {shard} already has {limit} operations in flight; retry later")]
    Overloaded { shard: usize, limit: usize },

    /// A write or fsync of the log failed earlier, or a check inside the
    /// engine failed on a shard: memory and disk may differ, so every later
    /// write (to the ledger, or to that shard) is refused until a restart
    /// recovers from the log. `reason` says which.
    #[error("poisoned: writes are refused until a restart recovers from the log: {reason}")]
    Poisoned { reason: String },

    // ---- the state ----
    #[error("unknown payout {payout_id}")]
    UnknownPayout { payout_id: u64 },

    /// A resolution named an item that payout `payout_id` does not carry.
    #[error("payout {payout_id} has no item {transaction_id}")]
    NotInPayout {
        payout_id: u64,
        transaction_id: TransactionId,
    },

    /// A resolution named an item its payout already settled.
    #[error("item {transaction_id} of payout {payout_id} is already settled ({outcome})")]
    PayoutItemSettled {
        payout_id: u64,
        transaction_id: TransactionId,
        outcome: String,
    },

    #[error("unknown withdrawal {transaction_id}")]
    UnknownWithdrawal { transaction_id: TransactionId },

    /// A history look-up by id found no deposit, transfer or withdrawal.
    #[error("unknown transaction {transaction_id}")]
    UnknownTransaction { transaction_id: TransactionId },

    /// The same idempotency key was used before with other parameters.
    #[error("idempotency key {key:?} was already used with different parameters")]
    IdempotencyConflict { key: String },

    /// The same idempotency key is being processed right now; retry to get
    /// its result.
    #[error("idempotency key {key:?} is still being processed; retry to get its result")]
    IdempotencyInProgress { key: String },

    /// The idempotency key was used on this account longer ago than the
    /// retention (`Config::idempotency_key_retention_ms`) and expired: its
    /// first result is no longer kept, so the request is refused rather
    /// than applied a second time. Use a new key for a new operation.
    #[error("idempotency key {key:?} expired: its first use is older than the retention; nothing was applied")]
    IdempotencyKeyExpired { key: String },

    /// The engine makes payouts, so a caller's outcome is refused: the
    /// withdrawal is being paid by payout `payout_id` (only that payout's
    /// answer, or an operator's resolution of the item with
    /// `resolve_payout_item`, settles it), or, with `payout_id: None`, it is
    /// still queued for the engine's next payout (cancel it to release the
    /// funds).
    #[error("withdrawal {transaction_id} {}", in_flight_text(*payout_id))]
    PayoutInFlight {
        transaction_id: TransactionId,
        payout_id: Option<u64>,
    },

    /// The account is frozen for what was asked (`scope`), by an operator,
    /// for `reason`, until `until` (`None`: until lifted).
    #[error("account {account} is frozen ({}) until {}: {reason}", scope.as_str(), until.map_or("lifted".to_string(), |t| t.rfc3339()))]
    AccountFrozen {
        account: AccountId,
        scope: FreezeScope,
        reason: String,
        until: Option<UnixMs>,
    },

    /// A partial completion's `paid` amount is not above zero and at most
    /// the withdrawal's amount.
    #[error("withdrawal {transaction_id} is for {amount}; a completion may pay more than 0 and at most that, got {paid}")]
    InvalidPaidAmount {
        transaction_id: TransactionId,
        amount: Decimal,
        paid: Decimal,
    },

    /// A caller's completion of a withdrawal already completed, reporting
    /// another paid amount: a repeat reports the state only when it is the
    /// update that made it. Its code is `invalid_transition`.
    #[error("withdrawal {transaction_id} was completed paying {paid}; a completion reporting {reported} paid cannot change that")]
    CompletedOtherwise {
        transaction_id: TransactionId,
        paid: Decimal,
        reported: Decimal,
    },

    #[error("withdrawal {transaction_id} is {from}; it cannot be {action}")]
    InvalidTransition {
        transaction_id: TransactionId,
        from: StatusKind,
        action: TransitionAction,
    },

    #[error("account {account} already has {limit} pending withdrawals; wait for payouts before requesting more")]
    TooManyPendingWithdrawals { account: AccountId, limit: u32 },

    /// The withdrawal would take the account past its tier's limit over
    /// `window` in `currency`: `used` already counts (pending, processing
    /// and completed withdrawals of the window), `requested` is this one.
    #[error("withdrawal limit exceeded: {requested} {currency} requested, {used} already used of the {limit} allowed per {window} (tier {tier})")]
    LimitExceeded {
        currency: CurrencyCode,
        window: Window,
        tier: String,
        limit: Decimal,
        used: Decimal,
        requested: Decimal,
    },

    /// Not enough available for the withdrawal's `part` (`amount`, or its
    /// `fee`; both together when they share a currency).
    #[error("insufficient funds for the {}: {available} {currency} available, {requested} requested", part.as_str())]
    InsufficientFunds {
        currency: CurrencyCode,
        available: Decimal,
        requested: Decimal,
        part: FundsPart,
    },

    // ---- a bug ----
    /// A check inside the engine failed: a bug, reported instead of hidden.
    /// The operation may or may not have been applied; do not retry blindly.
    #[error("internal error (a bug in burnledger, please report it): {reason}")]
    Internal { reason: String },
}

fn in_flight_text(payout_id: Option<u64>) -> String {
    match payout_id {
        Some(id) => format!(
            "is being paid by payout {id}; only the payout's answer or an operator's resolution of the item settles it"
        ),
        None => "is queued for this ledger's own payouts; only a payout's answer settles it (cancel it to release the funds)".to_string(),
    }
}

/// What is wrong with an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountProblem {
    #[error("it must be greater than zero")]
    NotPositive,
    #[error("it has more than the currency's {decimals} decimal places")]
    TooManyDecimals { decimals: u8 },
    #[error("it is above the maximum of {maximum}")]
    AboveMaximum { maximum: Decimal },
    /// Judged at the credited account, against its balance: a rejection by
    /// the state, not by the request.
    #[error("the resulting balance would exceed the maximum of {maximum}")]
    BalanceAboveMaximum { maximum: Decimal },
}

/// The three groups of [`LedgerError`] (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong in itself.
    BadRequest,
    /// A business rule refused it, given the ledger's state.
    Rejected,
    /// Not about the request: shutting down, poisoned, overloaded, a bug.
    Operating,
}

impl LedgerError {
    /// Stable snake_case code for APIs and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ShuttingDown => "shutting_down",
            Self::NotLeader { .. } => "not_leader",
            Self::InvalidIdempotencyKey { .. } => "invalid_idempotency_key",
            Self::BatchTooLarge { .. } => "batch_too_large",
            Self::SameAccountTransfer { .. } => "same_account_transfer",
            Self::UnknownCurrency { .. } => "unknown_currency",
            Self::InvalidAmount { .. } => "invalid_amount",
            Self::ReasonTooLong { .. } => "reason_too_long",
            Self::ReasonMissing { .. } => "reason_missing",
            Self::InvalidTransactionId { .. } => "invalid_transaction_id",
            Self::InvalidTime(_) => "invalid_time",
            Self::InvalidTimeRange { .. } => "invalid_time_range",
            Self::InvalidLimit { .. } => "invalid_limit",
            Self::PayoutsDisabled => "payouts_disabled",
            Self::HistoryUnavailable { .. } => "history_unavailable",
            Self::InvalidCursor { .. } => "invalid_cursor",
            Self::EventsUnavailable { .. } => "events_unavailable",
            Self::CursorExpired { .. } => "cursor_expired",
            Self::InvalidConsumer { .. } => "invalid_consumer",
            Self::UnknownConsumer { .. } => "unknown_consumer",
            Self::Overloaded { .. } => "overloaded",
            Self::Poisoned { .. } => "poisoned",
            Self::UnknownPayout { .. } => "unknown_payout",
            Self::NotInPayout { .. } => "not_in_payout",
            Self::PayoutItemSettled { .. } => "payout_item_settled",
            Self::UnknownWithdrawal { .. } => "unknown_withdrawal",
            Self::UnknownTransaction { .. } => "unknown_transaction",
            Self::IdempotencyConflict { .. } => "idempotency_conflict",
            Self::IdempotencyInProgress { .. } => "idempotency_in_progress",
            Self::IdempotencyKeyExpired { .. } => "idempotency_key_expired",
            Self::PayoutInFlight { .. } => "payout_in_flight",
            Self::InvalidTransition { .. } | Self::CompletedOtherwise { .. } => {
                "invalid_transition"
            }
            Self::TooManyPendingWithdrawals { .. } => "too_many_pending_withdrawals",
            Self::InsufficientFunds { .. } => "insufficient_funds",
            Self::InvalidMetadata { .. } => "invalid_metadata",
            Self::InvalidDestination { .. } => "invalid_destination",
            Self::InvalidTier { .. } => "invalid_tier",
            Self::InvalidExpiry { .. } => "invalid_expiry",
            Self::FeesDisabled => "fees_disabled",
            Self::AccountFrozen { .. } => "account_frozen",
            Self::InvalidPaidAmount { .. } => "invalid_paid_amount",
            Self::LimitExceeded { .. } => "limit_exceeded",
            Self::Internal { .. } => "internal",
        }
    }

    /// Which group the refusal belongs to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::ShuttingDown
            | Self::NotLeader { .. }
            | Self::Overloaded { .. }
            | Self::Poisoned { .. }
            | Self::HistoryUnavailable { .. }
            | Self::EventsUnavailable { .. }
            | Self::Internal { .. } => ErrorKind::Operating,
            Self::InvalidAmount {
                problem: AmountProblem::BalanceAboveMaximum { .. },
                ..
            } => ErrorKind::Rejected,
            Self::InvalidIdempotencyKey { .. }
            | Self::BatchTooLarge { .. }
            | Self::SameAccountTransfer { .. }
            | Self::UnknownCurrency { .. }
            | Self::InvalidAmount { .. }
            | Self::ReasonTooLong { .. }
            | Self::ReasonMissing { .. }
            | Self::InvalidTransactionId { .. }
            | Self::InvalidTime(_)
            | Self::InvalidTimeRange { .. }
            | Self::InvalidLimit { .. }
            | Self::PayoutsDisabled
            | Self::InvalidConsumer { .. }
            | Self::InvalidCursor { .. }
            | Self::InvalidMetadata { .. }
            | Self::InvalidDestination { .. }
            | Self::InvalidTier { .. }
            | Self::InvalidExpiry { .. }
            | Self::FeesDisabled => ErrorKind::BadRequest,
            Self::UnknownPayout { .. }
            | Self::NotInPayout { .. }
            | Self::PayoutItemSettled { .. }
            | Self::UnknownWithdrawal { .. }
            | Self::UnknownTransaction { .. }
            | Self::IdempotencyConflict { .. }
            | Self::IdempotencyInProgress { .. }
            | Self::IdempotencyKeyExpired { .. }
            | Self::PayoutInFlight { .. }
            | Self::InvalidTransition { .. }
            | Self::CompletedOtherwise { .. }
            | Self::TooManyPendingWithdrawals { .. }
            | Self::CursorExpired { .. }
            | Self::UnknownConsumer { .. }
            | Self::AccountFrozen { .. }
            | Self::InvalidPaidAmount { .. }
            | Self::LimitExceeded { .. }
            | Self::InsufficientFunds { .. } => ErrorKind::Rejected,
        }
    }

    /// Whether the ledger refused for its own condition (shutting down,
    /// poisoned, overloaded, a bug) rather than for the request.
    pub fn is_operating(&self) -> bool {
        self.kind() == ErrorKind::Operating
    }

    /// Whether the same request could succeed if sent again unchanged later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Overloaded { .. }
                | Self::IdempotencyInProgress { .. }
                | Self::TooManyPendingWithdrawals { .. }
                | Self::InsufficientFunds { .. }
                // A freeze may be lifted, a window moves on.
                | Self::AccountFrozen { .. }
                | Self::LimitExceeded { .. }
        )
    }
}

/// Which part of a withdrawal the funds fell short for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FundsPart {
    Amount,
    Fee,
}

impl FundsPart {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Amount => "amount",
            Self::Fee => "fee",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each variant, in declaration order.
    fn one_of_each() -> Vec<LedgerError> {
        let usd = CurrencyCode::new("USD").unwrap();
        let tx = TransactionId::new(1, 1);
        vec![
            LedgerError::ShuttingDown,
            LedgerError::InvalidIdempotencyKey {
                length: 0,
                max: 128,
            },
            LedgerError::BatchTooLarge { count: 9, max: 8 },
            LedgerError::SameAccountTransfer { account: 1 },
            LedgerError::UnknownCurrency {
                currency: "XXX".into(),
            },
            LedgerError::InvalidAmount {
                amount: Decimal::ZERO,
                currency: usd,
                problem: AmountProblem::NotPositive,
            },
            LedgerError::ReasonTooLong {
                field: "note",
                length: 300,
                max: 256,
            },
            LedgerError::ReasonMissing { field: "reason" },
            LedgerError::InvalidTransactionId { input: "x".into() },
            LedgerError::InvalidTime(UnixMs::parse_rfc3339("x").unwrap_err()),
            LedgerError::InvalidTimeRange {
                from: UnixMs::from_millis(2),
                to: UnixMs::from_millis(1),
            },
            LedgerError::InvalidLimit {
                limit: 0,
                max: 1_000,
            },
            LedgerError::PayoutsDisabled,
            LedgerError::HistoryUnavailable { reason: "x".into() },
            LedgerError::InvalidCursor { reason: "x".into() },
            LedgerError::EventsUnavailable { reason: "x".into() },
            LedgerError::CursorExpired {
                after: 1,
                oldest: 9,
            },
            LedgerError::InvalidConsumer { reason: "x".into() },
            LedgerError::UnknownConsumer { name: "x".into() },
            LedgerError::Overloaded { shard: 0, limit: 1 },
            LedgerError::Poisoned { reason: "x".into() },
            LedgerError::UnknownPayout { payout_id: 1 },
            LedgerError::NotInPayout {
                payout_id: 1,
                transaction_id: tx,
            },
            LedgerError::PayoutItemSettled {
                payout_id: 1,
                transaction_id: tx,
                outcome: "paid".into(),
            },
            LedgerError::UnknownWithdrawal { transaction_id: tx },
            LedgerError::UnknownTransaction { transaction_id: tx },
            LedgerError::IdempotencyConflict { key: "k".into() },
            LedgerError::IdempotencyInProgress { key: "k".into() },
            LedgerError::IdempotencyKeyExpired { key: "k".into() },
            LedgerError::PayoutInFlight {
                transaction_id: tx,
                payout_id: Some(1),
            },
            LedgerError::InvalidTransition {
                transaction_id: tx,
                from: StatusKind::Completed,
                action: TransitionAction::Cancel,
            },
            LedgerError::TooManyPendingWithdrawals {
                account: 1,
                limit: 8,
            },
            LedgerError::InsufficientFunds {
                currency: usd,
                available: Decimal::ZERO,
                requested: Decimal::ONE,
                part: crate::error::FundsPart::Amount,
            },
            LedgerError::Internal { reason: "x".into() },
        ]
    }

    #[test]
    fn codes_are_distinct_snake_case() {
        let codes: Vec<&str> = one_of_each().iter().map(LedgerError::code).collect();
        let mut distinct = codes.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), codes.len(), "{codes:?}");
        for code in codes {
            let snake = code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            assert!(
                snake && !code.starts_with('_') && !code.ends_with('_'),
                "{code}"
            );
        }
    }

    #[test]
    fn the_operating_conditions_are_set_apart_from_business_rejections() {
        let operating: Vec<&str> = one_of_each()
            .iter()
            .filter(|e| e.is_operating())
            .map(LedgerError::code)
            .collect();
        assert_eq!(
            operating,
            [
                "shutting_down",
                "history_unavailable",
                "events_unavailable",
                "overloaded",
                "poisoned",
                "internal"
            ]
        );
        let ceiling = LedgerError::InvalidAmount {
            amount: Decimal::ONE,
            currency: CurrencyCode::new("USD").unwrap(),
            problem: AmountProblem::BalanceAboveMaximum {
                maximum: Decimal::ONE,
            },
        };
        assert_eq!(ceiling.kind(), ErrorKind::Rejected, "judged on the state");
        let bad: Vec<&str> = one_of_each()
            .iter()
            .filter(|e| e.kind() == ErrorKind::BadRequest)
            .map(LedgerError::code)
            .collect();
        assert_eq!(
            bad,
            [
                "invalid_idempotency_key",
                "batch_too_large",
                "same_account_transfer",
                "unknown_currency",
                "invalid_amount",
                "reason_too_long",
                "reason_missing",
                "invalid_transaction_id",
                "invalid_time",
                "invalid_time_range",
                "invalid_limit",
                "payouts_disabled",
                "invalid_cursor",
                "invalid_consumer"
            ]
        );
    }

    #[test]
    fn only_a_refusal_that_time_can_lift_is_retryable() {
        let retryable: Vec<&str> = one_of_each()
            .iter()
            .filter(|e| e.is_retryable())
            .map(LedgerError::code)
            .collect();
        assert_eq!(
            retryable,
            [
                "overloaded",
                "idempotency_in_progress",
                "too_many_pending_withdrawals",
                "insufficient_funds"
            ]
        );
    }
}
