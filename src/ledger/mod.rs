//! The public handle: [`Ledger`], cheap to clone, usable from any thread
//! and any async runtime.
//!
//! Each call checks the ledger is open, validates its input at the edge
//! (`engine/edge.rs`: currencies, amounts, sizes) and
//! hands the resulting commands to the engine's router, which sends each
//! shard its share in one message once admitted. The engine itself (its
//! threads, actors, startup and shutdown) lives in `engine/`; this
//! folder is the API over it: this file the handle and its operations,
//! `storage.rs` its view of the data folder (snapshots, WAL statistics,
//! recovery report), `history.rs` its history reads (listings, entries,
//! transactions, balances as of a time, paged payouts), `events.rs` the
//! event feed and its consumers' cursors, `chain.rs` the log's hash-chain
//! head, `standby.rs` a standby's mirroring and promotion.
//!
//! Each call runs in a tracing span named after it (`ledger.deposit`, …):
//! at level `debug` for the operations and reads, which are the hot path
//! (an `info` filter costs them nothing), `info` for open and shutdown.

use std::sync::Arc;

use actix::prelude::*;
use rust_decimal::Decimal;

use crate::config::Config;
use crate::domain::account::AccountState;
use crate::domain::audit::{audit, Audit};
use crate::domain::details::Metadata;
use crate::domain::export::AccountExport;
use crate::domain::gauges::{Gauges, ShardCounts};
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::Currencies;
use crate::domain::payouts::{PayoutCounts, PayoutMismatchView, PayoutView, Resolution};
use crate::domain::receipts::{Balance, Deposit, Outcome, Transfer};
use crate::domain::withdrawal::{Withdrawal, WithdrawalOutcome};
use crate::engine::edge::Edge;
use crate::engine::messages::{
    BalanceOf, BalancesOf, CountAccounts, ExportAccounts, GetPayoutCounts, GetPayoutMismatches,
    GetPayouts, ReadGauges, ResolvePayoutItem, RunPayouts, WithdrawalOf, WriteRefusal,
};
use crate::engine::payout::PayoutActor;
use crate::engine::router::{answered, Router};
use crate::engine::startup::{start, Engine};
use crate::error::LedgerError;
use crate::operation::{check_reason, Operation, WithdrawalOptions};

pub use crate::engine::startup::OpenError;

mod chain;
mod controls;
mod events;
mod history;
mod requests;
mod standby;
mod storage;

pub use events::{ConsumerCursor, Subscription, FEED_BATCH_MAX};
pub use standby::{MirrorError, Mirrored, Promoter};

/// Handle to a running ledger engine. Clone it freely; all clones share one
/// engine. Call [`Ledger::shutdown`] to stop it cleanly.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    currencies: Currencies,
    config: Config,
    /// Set on a standby: it refuses writes (see `standby.rs`).
    standby: Option<standby::StandbyState>,
}

impl Ledger {
    /// Starts the engine: one Arbiter and coordinator per shard, on the
    /// state recovered from the data folder (if any).
    #[tracing::instrument(name = "ledger.open", skip_all, fields(shards = config.shards))]
    pub fn open(config: Config) -> Result<Self, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let currencies = Currencies::new(&config.currencies).map_err(OpenError::Config)?;
        let engine = start(&config, &currencies)?;
        Ok(Self::from_inner(Inner {
            engine,
            currencies,
            config,
            standby: None,
        }))
    }

    fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The configuration this ledger was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The registry of configured currencies.
    pub fn currencies(&self) -> &Currencies {
        &self.inner.currencies
    }

    /// Credits `amount` to the account's available balance.
    #[tracing::instrument(level = "debug", name = "ledger.deposit", skip_all, fields(account = account, currency = currency))]
    pub async fn deposit(
        &self,
        account: AccountId,
        currency: &str,
        amount: Decimal,
        idempotency_key: Option<&str>,
    ) -> Result<Deposit, LedgerError> {
        let metadata = Metadata::default();
        self.deposit_with(account, currency, amount, idempotency_key, metadata)
            .await
    }

    /// Phase 1: creates a pending burn that locks `amount` (available →
    /// locked) and returns the withdrawal with its `transaction_id`.
    #[tracing::instrument(level = "debug", name = "ledger.request_withdrawal", skip_all, fields(account = account, currency = currency))]
    pub async fn request_withdrawal(
        &self,
        account: AccountId,
        currency: &str,
        amount: Decimal,
        idempotency_key: Option<&str>,
    ) -> Result<Withdrawal, LedgerError> {
        let options = WithdrawalOptions::default();
        self.request_withdrawal_with(account, currency, amount, idempotency_key, options)
            .await
    }

    /// Phase 3, by `transaction_id` alone: `Completed` removes the locked
    /// amount from the total, `Failed` returns it to available. Refused
    /// with `payout_in_flight` while a payout this ledger makes owns the
    /// withdrawal (see [`Ledger::resolve_payout_item`] for the override).
    #[tracing::instrument(level = "debug", name = "ledger.complete_withdrawal", skip_all, fields(%transaction_id))]
    pub async fn complete_withdrawal(
        &self,
        transaction_id: TransactionId,
        outcome: WithdrawalOutcome,
    ) -> Result<Withdrawal, LedgerError> {
        self.check_open()?;
        let command = self.edge().complete_withdrawal(transaction_id, outcome)?;
        let account = transaction_id.account();
        self.router().execute_one(account, command).await
    }

    /// Cancels a pending withdrawal, returning its amount to available.
    #[tracing::instrument(level = "debug", name = "ledger.cancel_withdrawal", skip_all, fields(%transaction_id))]
    pub async fn cancel_withdrawal(
        &self,
        transaction_id: TransactionId,
    ) -> Result<Withdrawal, LedgerError> {
        self.check_open()?;
        let command = self.edge().cancel_withdrawal(transaction_id);
        let account = transaction_id.account();
        self.router().execute_one(account, command).await
    }

    /// Moves available funds between two accounts. Both sides are recorded
    /// as one event: a crash keeps both or neither.
    #[tracing::instrument(level = "debug", name = "ledger.transfer", skip_all, fields(from = from, to = to, currency = currency))]
    pub async fn transfer(
        &self,
        from: AccountId,
        to: AccountId,
        currency: &str,
        amount: Decimal,
        idempotency_key: Option<&str>,
    ) -> Result<Transfer, LedgerError> {
        let metadata = Metadata::default();
        self.transfer_with(from, to, currency, amount, idempotency_key, metadata)
            .await
    }

    /// The bank sent a completed withdrawal back: credits its amount to
    /// available again and marks it `returned` (totals stay exact: the
    /// credit counts as minted).
    #[tracing::instrument(level = "debug", name = "ledger.return_withdrawal", skip_all, fields(%transaction_id))]
    pub async fn return_withdrawal(
        &self,
        transaction_id: TransactionId,
        reason: &str,
    ) -> Result<Withdrawal, LedgerError> {
        self.check_open()?;
        let command = self
            .edge()
            .return_withdrawal(transaction_id, reason.to_string())?;
        let account = transaction_id.account();
        self.router().execute_one(account, command).await
    }

    /// Runs the payout job now: reconciles payouts waiting for an answer
    /// (retrying them whatever their backoff), then pays every queued
    /// withdrawal. Returns the payouts made or retried.
    #[tracing::instrument(level = "debug", name = "ledger.run_payouts_now", skip_all)]
    pub async fn run_payouts_now(&self) -> Result<Vec<PayoutView>, LedgerError> {
        self.check_open()?;
        let run = RunPayouts {
            force_retries: true,
            new_payouts: true,
        };
        self.ask_payouts(run)
            .await
            .ok_or(LedgerError::PayoutsDisabled)??
    }

    /// One payout by id.
    #[tracing::instrument(level = "debug", name = "ledger.payout", skip_all, fields(payout_id = payout_id))]
    pub async fn payout(&self, payout_id: u64) -> Result<PayoutView, LedgerError> {
        self.check_open()?;
        let found = self.ask_payouts(GetPayouts(Some(payout_id))).await;
        let found = found
            .ok_or(LedgerError::PayoutsDisabled)??
            .into_iter()
            .next();
        found.ok_or(LedgerError::UnknownPayout { payout_id })
    }

    /// Every payout, newest first.
    #[tracing::instrument(level = "debug", name = "ledger.payouts", skip_all)]
    pub async fn payouts(&self) -> Result<Vec<PayoutView>, LedgerError> {
        self.check_open()?;
        let found = self.ask_payouts(GetPayouts(None)).await;
        Ok(found.transpose()?.unwrap_or_default())
    }

    /// An operator settles item `transaction_id` of payout `payout_id` by
    /// hand: `Paid` completes the withdrawal (its amount is burned),
    /// `NotPaid` fails it (its amount is released). The only way to settle
    /// an item a payout owns other than the payment service's answer: it is
    /// logged (`PayoutItemResolved`, with `note`), survives restarts, and
    /// the payout stops asking the service about the item. Refused for an
    /// unknown payout (`unknown_payout`), an item the payout does not carry
    /// (`not_in_payout`) or one already settled (`payout_item_settled`).
    /// Answers the payout as it is afterwards.
    #[tracing::instrument(level = "debug", name = "ledger.resolve_payout_item", skip_all, fields(payout_id = payout_id, %transaction_id))]
    pub async fn resolve_payout_item(
        &self,
        payout_id: u64,
        transaction_id: TransactionId,
        resolution: Resolution,
        note: &str,
    ) -> Result<PayoutView, LedgerError> {
        self.check_open()?;
        if let Resolution::NotPaid { reason } = &resolution {
            check_reason("reason", reason)?;
        }
        check_reason("note", note)?;
        let resolve = ResolvePayoutItem {
            payout_id,
            tx: transaction_id,
            resolution,
            note: note.to_string(),
        };
        // A ledger that makes no payouts has none to resolve.
        let resolved = self.ask_payouts(resolve).await;
        resolved.unwrap_or(Err(LedgerError::UnknownPayout { payout_id }))?
    }

    /// Every payout mismatch recorded (the payment service contradicted a
    /// settled item), with its payout id, by payout id (each payout's in
    /// the order recorded). Never shrinks: its length is the
    /// `burnledger_payout_mismatches_total` counter. Empty when this ledger
    /// makes no payouts.
    #[tracing::instrument(level = "debug", name = "ledger.payout_mismatches", skip_all)]
    pub async fn payout_mismatches(&self) -> Result<Vec<(u64, PayoutMismatchView)>, LedgerError> {
        self.check_open()?;
        let found = self.ask_payouts(GetPayoutMismatches).await;
        let found = found.transpose()?.unwrap_or_default();
        Ok(found.iter().map(|(id, m)| (*id, m.view())).collect())
    }

    /// Payouts per state and the mismatch count, kept by the payout actor
    /// as it runs: O(1) to read at any number of payouts (for `/metrics`;
    /// `mismatches` is `burnledger_payout_mismatches_total`). All zero when
    /// this ledger makes no payouts.
    #[tracing::instrument(level = "debug", name = "ledger.payout_counts", skip_all)]
    pub async fn payout_counts(&self) -> Result<PayoutCounts, LedgerError> {
        self.check_open()?;
        let counts = self.ask_payouts(GetPayoutCounts).await;
        Ok(counts.transpose()?.unwrap_or_default())
    }

    /// Validation at the edge, for this ledger.
    fn edge(&self) -> Edge<'_> {
        Edge {
            currencies: &self.inner.currencies,
            engine_pays: self.inner.engine.payouts.is_some(),
            expiry_max_ms: self.inner.config.withdrawal_expiry_max_ms,
        }
    }

    /// Sends the payout actor `message`; `None` when this ledger makes no
    /// payouts.
    async fn ask_payouts<M>(&self, message: M) -> Option<Result<M::Result, LedgerError>>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        PayoutActor: Handler<M>,
    {
        let actor = self.inner.engine.payouts.as_ref()?;
        let answer = actor.send(message).await;
        Some(answer.map_err(|_| LedgerError::ShuttingDown))
    }

    fn router(&self) -> &Router {
        &self.inner.engine.router
    }

    /// A withdrawal by its `transaction_id`.
    #[tracing::instrument(level = "debug", name = "ledger.withdrawal", skip_all, fields(%transaction_id))]
    pub async fn withdrawal(
        &self,
        transaction_id: TransactionId,
    ) -> Result<Withdrawal, LedgerError> {
        let read = WithdrawalOf(transaction_id);
        self.router().ask(transaction_id.account(), read).await
    }

    /// One account's balance in one currency (zero if it never held any).
    #[tracing::instrument(level = "debug", name = "ledger.balance", skip_all, fields(account = account, currency = currency))]
    pub async fn balance(
        &self,
        account: AccountId,
        currency: &str,
    ) -> Result<Balance, LedgerError> {
        self.check_open()?;
        let currency = self.inner.currencies.get(currency)?;
        self.router().ask(account, BalanceOf(currency)).await
    }

    /// Every currency an account has held, with its balance.
    #[tracing::instrument(level = "debug", name = "ledger.balances", skip_all, fields(account = account))]
    pub async fn balances(&self, account: AccountId) -> Result<Vec<Balance>, LedgerError> {
        self.router().ask(account, BalancesOf).await
    }

    /// Submits many operations at once and returns one result each, in
    /// order. Operations on the same account run in the order given;
    /// operations on different accounts run in parallel, and there is no
    /// atomicity across them. This is the fast path: one message per shard
    /// per batch instead of one per operation.
    #[tracing::instrument(level = "debug", name = "ledger.submit", skip_all, fields(ops = ops.len()))]
    pub async fn submit(&self, ops: Vec<Operation>) -> Vec<Result<Outcome, LedgerError>> {
        let count = ops.len();
        if let Err(closed) = self.check_open() {
            return vec![Err(closed); count];
        }
        if count > self.inner.config.batch_ops_max {
            let error = LedgerError::BatchTooLarge {
                count,
                max: self.inner.config.batch_ops_max,
            };
            return vec![Err(error); count];
        }
        let mut answers: Vec<Option<Result<Outcome, LedgerError>>> =
            std::iter::repeat_with(|| None).take(count).collect();
        let mut commands = self.router().scatter(count);
        let edge = self.edge();
        for (position, op) in ops.into_iter().enumerate() {
            match edge.command(op) {
                Ok((account, command)) => commands.push(position, account, command),
                Err(error) => answers[position] = Some(Err(error)),
            }
        }
        self.router().execute(commands, &mut answers).await;
        answers.into_iter().map(answered).collect()
    }

    /// Copies out every account and checks the invariants over them. Meant
    /// for a quiet ledger: transfers in flight, and completed withdrawals'
    /// fees on their way to the fee account (credited a moment after the
    /// completion is durable), show up as violations.
    #[tracing::instrument(level = "debug", name = "ledger.audit", skip_all)]
    pub async fn audit(&self) -> Result<Audit, LedgerError> {
        let mut checked = audit(&self.account_states().await?);
        let mismatches = self.ask_payouts(GetPayoutMismatches).await;
        let mismatches = mismatches.transpose()?.unwrap_or_default();
        checked.add_payout_mismatches(mismatches.iter().map(|(id, m)| (*id, m)));
        Ok(checked)
    }

    /// `Ok` when the ledger takes writes; else why not: `shutting_down`, or
    /// `poisoned` (storage failure, or one shard's internal error; reads are
    /// still served). One small message per shard; what `/healthz` answers.
    #[tracing::instrument(level = "debug", name = "ledger.health", skip_all)]
    pub async fn health(&self) -> Result<(), LedgerError> {
        self.check_open()?;
        let refusals = self.router().each_shard(|| WriteRefusal).await?;
        refusals.into_iter().flatten().next().map_or(Ok(()), Err)
    }

    /// Accounts held, and how many of them have a running actor (idle
    /// ones are stopped; their state stays), summed over the shards.
    #[tracing::instrument(level = "debug", name = "ledger.account_counts", skip_all)]
    pub async fn account_counts(&self) -> Result<ShardCounts, LedgerError> {
        let counts = self.router().each_shard(|| CountAccounts).await?;
        Ok(counts.into_iter().sum())
    }

    /// Gauges kept as the engine runs, summed over the shards: accounts,
    /// running account actors, withdrawals by currency and status (count
    /// and amount). One small message per shard; no account is read, so
    /// it costs the same at 10 accounts or 10 million (what `/metrics`
    /// shows). Refused (`poisoned`) after a storage failure, like
    /// [`export_accounts`](Self::export_accounts).
    #[tracing::instrument(level = "debug", name = "ledger.gauges", skip_all)]
    pub async fn gauges(&self) -> Result<Gauges, LedgerError> {
        let mut total = Gauges::default();
        for shard in self.router().each_shard(|| ReadGauges).await? {
            total.absorb(&shard?);
        }
        Ok(total)
    }

    /// Every account as a read-only view; O(accounts), for checks and tools.
    #[tracing::instrument(level = "debug", name = "ledger.export_accounts", skip_all)]
    pub async fn export_accounts(&self) -> Result<Vec<AccountExport>, LedgerError> {
        let states = self.account_states().await?;
        Ok(states.iter().map(AccountExport::of).collect())
    }

    /// Copies out every account's state, for exports and audits.
    async fn account_states(&self) -> Result<Vec<AccountState>, LedgerError> {
        let shards = self.router().each_shard(|| ExportAccounts).await?;
        let shards = shards.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(shards.into_iter().flatten().collect())
    }

    /// Stops accepting operations, waits for those in flight, then stops
    /// the engine threads. Later calls on any clone get `shutting_down`.
    #[tracing::instrument(name = "ledger.shutdown", skip_all)]
    pub async fn shutdown(&self) {
        self.inner.engine.shutdown().await;
    }

    /// Refuses everything once shutdown has begun, and on a standby,
    /// before judging the input.
    pub(crate) fn check_open(&self) -> Result<(), LedgerError> {
        self.check_not_closed()?;
        match &self.inner.standby {
            Some(standby) => Err(standby.refusal()),
            None => Ok(()),
        }
    }

    /// Refuses once shutdown has begun (what a standby still answers,
    /// history reads, checks only this).
    pub(crate) fn check_not_closed(&self) -> Result<(), LedgerError> {
        self.router().admission().check_open()
    }

    /// The running engine, for the handle's other files.
    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }
}
