//! Every actor message in one place.
//!
//! The `Ledger` handle talks to shard coordinators (operations, queries,
//! gauges) and to the payout actor (runs, payout records and counts,
//! operator resolutions); coordinators talk to account actors and to each
//! other (the receiving side of a transfer may live on another shard); the
//! payout actor claims and settles items through the coordinators, as
//! `Settler::Payout`. Inputs here are already validated at the edge:
//! currencies resolved, amounts converted to minor units.

use actix::prelude::*;

use crate::domain::account::AccountState;
use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::{Currency, Units};
use crate::domain::receipts::{Balance, Deposit, Outcome, Transfer};
use crate::domain::withdrawal::{Settler, TransitionAction, Withdrawal};
use crate::error::LedgerError;

/// One operation for one account.
#[derive(Debug, Clone)]
pub enum AccountCommand {
    Deposit {
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
    },
    RequestWithdrawal {
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
    },
    UpdateWithdrawal {
        tx: TransactionId,
        action: TransitionAction,
        reason: String,
        /// Who asks: a payout's claim refuses anyone but that payout.
        by: Settler,
    },
    /// Transfer step 1, at the source.
    HoldTransfer {
        to: AccountId,
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
    },
    /// Transfer step 2, at the receiving account.
    ReceiveTransfer {
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        key: Option<IdempotencyKey>,
    },
    /// Transfer step 3, at the source.
    FinishTransfer { tx: TransactionId, received: bool },
    /// A payout takes a pending withdrawal.
    ClaimWithdrawal { tx: TransactionId, payout_id: u64 },
}

impl AccountCommand {
    /// Whether this command may bring a never-seen account into being.
    /// Anything else on an unknown account is answered without spawning an
    /// actor, so bogus ids cannot fill memory.
    pub fn creates_account(&self) -> bool {
        matches!(self, Self::Deposit { .. } | Self::ReceiveTransfer { .. })
    }
}

/// What an account answers to one command.
#[derive(Debug, Clone)]
pub enum AccountReply {
    Deposited(Deposit),
    Withdrawal(Withdrawal),
    /// Funds held for a transfer under this id; ask the receiver next.
    TransferHeld(TransactionId),
    Transferred(Transfer),
    /// The receiving side credited (and logged) the transfer.
    TransferReceived,
}

/// The operations of one batch bound for one shard: their positions in the
/// batch, and the operations.
pub type ShardBatch = (Vec<usize>, Vec<(AccountId, AccountCommand)>);

/// A shard coordinator's request: run these commands, in order per account.
#[derive(Message)]
#[rtype(result = "Vec<Result<Outcome, LedgerError>>")]
pub struct ExecuteBatch {
    pub ops: Vec<(AccountId, AccountCommand)>,
}

/// Coordinator to coordinator: credit the receiving sides of a round's
/// transfers on this shard's accounts (`ReceiveTransfer` commands); one
/// answer each, in order, once the credits are durable.
#[derive(Message)]
#[rtype(result = "Vec<Result<(), LedgerError>>")]
pub struct ReceiveTransfers {
    pub credits: Vec<(AccountId, AccountCommand)>,
}

/// A read-only question about one account, with its own answer type.
/// Asked of the account's actor while it runs, of its parked state in
/// place otherwise, and of an empty state for an account that does not
/// exist.
pub trait AccountRead: Send + 'static {
    type Output: Send + 'static;
    fn read(&self, state: &AccountState) -> Result<Self::Output, LedgerError>;
}

/// One account's balance in one currency (zero if it never held any).
pub struct BalanceOf(pub Currency);

impl AccountRead for BalanceOf {
    type Output = Balance;
    fn read(&self, state: &AccountState) -> Result<Balance, LedgerError> {
        Ok(state.balance(self.0).view())
    }
}

/// Every currency an account has held, with its balance.
pub struct BalancesOf;

impl AccountRead for BalancesOf {
    type Output = Vec<Balance>;
    fn read(&self, state: &AccountState) -> Result<Vec<Balance>, LedgerError> {
        Ok(state.balances().iter().map(|b| b.view()).collect())
    }
}

/// One withdrawal of the account.
pub struct WithdrawalOf(pub TransactionId);

impl AccountRead for WithdrawalOf {
    type Output = Withdrawal;
    fn read(&self, state: &AccountState) -> Result<Withdrawal, LedgerError> {
        state.withdrawal(self.0)
    }
}

/// A copy of the whole state (exports: audits, tests, `simulate`).
pub struct StateOf;

impl AccountRead for StateOf {
    type Output = AccountState;
    fn read(&self, state: &AccountState) -> Result<AccountState, LedgerError> {
        Ok(state.clone())
    }
}

/// `Ledger` → coordinator: ask one account of the shard.
pub struct Ask<Q> {
    pub account: AccountId,
    pub query: Q,
}

impl<Q: AccountRead> Message for Ask<Q> {
    type Result = Result<Q::Output, LedgerError>;
}

/// Coordinator → account actor: answer a read from the state it owns.
pub struct Read<Q>(pub Q);

impl<Q: AccountRead> Message for Read<Q> {
    type Result = Result<Q::Output, LedgerError>;
}

/// Coordinator → account actor: hand the state back through `to` and stop.
/// The coordinator forgets the actor's address as it sends this, so
/// nothing reaches the mailbox after it: every command sent before is run
/// first, and the state handed back holds them all.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire {
    pub to: tokio::sync::oneshot::Sender<AccountState>,
}

/// Account actor → payout actor: a withdrawal is durable and pending (new,
/// or released from a payout that never reached the service).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct WithdrawalQueued {
    pub tx: TransactionId,
    pub currency: Currency,
    pub amount: Units,
}

/// Run the payout job: reconcile payouts still waiting for an answer,
/// then (if `new_payouts`) pay every queued withdrawal. Answers with the
/// payouts that were made or retried.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<Vec<crate::domain::payouts::PayoutView>, LedgerError>")]
pub struct RunPayouts {
    /// Retry every unsettled payout now, not only those whose backoff ran out.
    pub force_retries: bool,
    /// Also pay queued withdrawals (false: only retries are due).
    pub new_payouts: bool,
}

/// One payout by id, or all of them (`None`), newest first.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<crate::domain::payouts::PayoutView>")]
pub struct GetPayouts(pub Option<u64>);

/// An operator settles item `tx` of payout `payout_id` by hand: answers
/// the payout as it is afterwards.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<crate::domain::payouts::PayoutView, LedgerError>")]
pub struct ResolvePayoutItem {
    pub payout_id: u64,
    pub tx: TransactionId,
    pub resolution: crate::domain::payouts::Resolution,
    pub note: String,
}

/// Every payout mismatch recorded, with its payout id, oldest first.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Vec<(u64, crate::domain::payouts::PayoutMismatch)>")]
pub struct GetPayoutMismatches;

/// The payout counts the payout actor keeps (O(1) to read).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "crate::domain::payouts::PayoutCounts")]
pub struct GetPayoutCounts;

/// How many accounts a shard holds, and how many of them have a running
/// actor.
#[derive(Message)]
#[rtype(result = "ShardCounts")]
pub struct CountAccounts;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardCounts {
    pub accounts: usize,
    pub actors_running: usize,
}

/// Copy out account states, for audits and (later) snapshots.
#[derive(Message)]
#[rtype(result = "Result<Vec<AccountState>, LedgerError>")]
pub struct ExportAccounts;

/// A shard's gauges: its accounts, running actors and withdrawals by
/// currency and status, kept as it runs (no account is read).
#[derive(Message)]
#[rtype(result = "Result<crate::domain::gauges::Gauges, LedgerError>")]
pub struct ReadGauges;
