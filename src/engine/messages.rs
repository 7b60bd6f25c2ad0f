//! The messages between the engine's actors, each with its own reply
//! type (no reply is matched against what was asked).
//!
//! The `Ledger` handle, through the [router](crate::engine::router), sends
//! shard coordinators batches of commands ([`ExecuteBatch`], typed by the
//! command: see [`command`](crate::engine::command)), reads ([`Ask`], typed
//! by the [`AccountRead`]) and per-shard questions (counts, gauges,
//! exports), and talks to the payout actor (runs, payout records and
//! counts, operator resolutions). Coordinators forward to account actors
//! ([`RunCommands`](crate::engine::round::RunCommands), [`Read`],
//! [`Retire`]) and ask each other to credit transfers
//! ([`ReceiveTransfers`]) and collected fees ([`CollectFees`]); the
//! payout actor claims and settles items through the router, as
//! `Settler::Payout`. Inputs here are already
//! validated at the edge: currencies resolved, amounts in minor units.

use actix::prelude::*;

use crate::domain::account::{AccountState, Remembered};
use crate::domain::gauges::ShardCounts;
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::{Currency, Units};
use crate::domain::receipts::Balance;
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{Withdrawal, WithdrawalRecord};
use crate::engine::command::{CollectFee, Command, ReceiveTransfer};
use crate::error::LedgerError;

/// A shard coordinator's request: run these commands, in order per
/// account; one answer each, in order.
pub struct ExecuteBatch<C> {
    pub ops: Vec<(AccountId, C)>,
}

impl<C: Command> Message for ExecuteBatch<C> {
    type Result = Vec<Result<C::Answer, LedgerError>>;
}

/// Coordinator to coordinator: credit the receiving sides of a round's
/// transfers on this shard's accounts; one answer each, in order, once the
/// credits are durable.
#[derive(Message)]
#[rtype(result = "Vec<Result<UnixMs, LedgerError>>")]
pub struct ReceiveTransfers {
    pub credits: Vec<(AccountId, ReceiveTransfer)>,
}

/// Router to coordinator: credit the fee account's side of completions
/// logged (and durable) on other accounts. Nothing is answered but that
/// they were applied: a failure is logged there (and, for an internal
/// error, poisons the shard), since the log already holds the credit.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CollectFees {
    pub credits: Vec<(AccountId, CollectFee)>,
}

/// A read-only question about one account, with its own answer type.
/// Asked of the account's actor while it runs, of its parked state in
/// place otherwise, and of an empty state for an account that does not
/// exist.
pub trait AccountRead: Send + 'static {
    type Output: Send + 'static;
    fn read(&self, state: &AccountState) -> Result<Self::Output, LedgerError>;

    /// The withdrawal this read names, if the account forgot it: the read
    /// is then answered from the history (see
    /// [`recall`](crate::engine::recall)) by [`answer_recalled`](Self::answer_recalled).
    fn recalls(&self, _state: &AccountState) -> Option<TransactionId> {
        None
    }

    /// The answer from what the history holds of the withdrawal
    /// [`recalls`](Self::recalls) named.
    fn answer_recalled(
        &self,
        _found: Option<WithdrawalRecord>,
    ) -> Result<Self::Output, LedgerError> {
        Err(LedgerError::Internal {
            reason: "this read names no withdrawal to find in the history".into(),
        })
    }
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

    fn recalls(&self, state: &AccountState) -> Option<TransactionId> {
        (state.remember(self.0) == Remembered::Forgotten).then_some(self.0)
    }

    fn answer_recalled(&self, found: Option<WithdrawalRecord>) -> Result<Withdrawal, LedgerError> {
        let tx = self.0;
        let record = found.ok_or(LedgerError::UnknownWithdrawal { transaction_id: tx })?;
        Ok(record.view(tx))
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

/// Coordinator → account actor: forget the finished withdrawals last
/// changed before `before` (the shard's horizon, read once per sweep).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ForgetFinished {
    pub before: UnixMs,
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

/// Why the shard refuses writes, if it does (a storage failure, or an
/// internal error that poisoned it): for health checks.
#[derive(Message)]
#[rtype(result = "Option<LedgerError>")]
pub struct WriteRefusal;

/// How many accounts a shard holds, and how many of them have a running
/// actor.
#[derive(Message)]
#[rtype(result = "ShardCounts")]
pub struct CountAccounts;

/// Copy out account states, for audits and (later) snapshots.
#[derive(Message)]
#[rtype(result = "Result<Vec<AccountState>, LedgerError>")]
pub struct ExportAccounts;

/// A shard's gauges: its accounts, running actors and withdrawals by
/// currency and status, kept as it runs (no account is read).
#[derive(Message)]
#[rtype(result = "Result<crate::domain::gauges::Gauges, LedgerError>")]
pub struct ReadGauges;
