//! The public handle: `Ledger`, cheap to clone, usable from any thread and
//! any async runtime.
//!
//! It validates input at the edge (currencies, amounts, sizes), picks each
//! operation's shard from its account, admits it against the shard's
//! in-flight limit, and sends each shard one message per batch. The engine
//! itself runs on its own actix `System` thread with one Arbiter per shard.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use actix::prelude::*;
use parking_lot::Mutex;
use rust_decimal::Decimal;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::domain::account::AccountState;
use crate::domain::audit::{audit, Audit};
use crate::domain::gauges::Gauges;
use crate::domain::ids::shard_of;
use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::{Currencies, CurrencyCode};
use crate::domain::payouts::{PayoutCounts, PayoutMismatch, PayoutView, Resolution};
use crate::domain::receipts::{Balance, Deposit, Outcome, Transfer};
use crate::domain::withdrawal::WithdrawalStatus;
use crate::domain::withdrawal::{Withdrawal, WithdrawalOutcome};
use crate::engine::coordinator::{Coordinator, CoordinatorSettings};
use crate::engine::edge::Edge;
use crate::engine::messages::{
    BalanceOf, BalancesOf, CountAccounts, ExportAccounts, GetPayoutCounts, GetPayoutMismatches,
    GetPayouts, ReadGauges, ResolvePayoutItem, RunPayouts, ShardCounts, WithdrawalOf,
};
use crate::engine::payout::PayoutActor;
use crate::engine::router::{answered, Router};
use crate::error::LedgerError;
use crate::operation::{check_distinct, check_reason, Operation};
use crate::storage::checkpoint::{CheckpointSettings, Checkpointer, Start};
use crate::storage::data_dir::{CurrencyTable, CurrencyTableError, DataDirLock, LockError};
use crate::storage::journal::Journal;
use crate::storage::recovery::{rebuild, RecoveryError, RecoveryReport};
use crate::storage::snapshot::SnapshotFile;
use crate::storage::wal::{ReplayMode, WalConfig, WalError, WalHandle};

/// Why the ledger could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot use data folder {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    /// Another ledger (or a reader such as `verify`) holds the folder.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The configuration's currencies do not fit the folder's table.
    #[error(transparent)]
    Currencies(#[from] CurrencyTableError),
    #[error("recovery failed: {0}")]
    Recovery(#[from] RecoveryError),
    #[error("cannot open the write-ahead log: {0}")]
    Wal(#[from] WalError),
    #[error("could not start the engine threads: {0}")]
    Start(String),
}

/// Handle to a running ledger engine. Clone it freely; all clones share one
/// engine. Call [`Ledger::shutdown`] to stop it cleanly.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    /// The shards, and admission to them.
    router: Router,
    currencies: Currencies,
    config: Config,
    engine: Mutex<Option<EngineThread>>,
    journal: Journal,
    checkpointer: Mutex<Option<Checkpointer>>,
    /// How the state was rebuilt from disk when the ledger opened.
    recovery: Option<RecoveryReport>,
    /// The payout actor, when a payment service pays withdrawals out.
    payouts: Option<Addr<PayoutActor>>,
    /// The data folder's lock: held until `shutdown` has closed the log,
    /// or (without one) until the engine threads are stopped on drop — a
    /// field, so it is released only after `Drop for Inner` has run.
    lock: Mutex<Option<DataDirLock>>,
}

/// The thread running the actix `System`, and how to stop it.
struct EngineThread {
    system: System,
    thread: JoinHandle<()>,
    stopped: oneshot::Receiver<()>,
}

impl Ledger {
    /// Starts the engine: one Arbiter and coordinator per shard.
    pub fn open(config: Config) -> Result<Self, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let currencies = Currencies::new(&config.currencies).map_err(OpenError::Config)?;
        refuse_unlogged_ledger(&config)?;
        let durable = open_durable(&config, &currencies)?;
        let (journal, recovery, checkpointer) = match &durable {
            Some(d) => (d.journal.clone(), Some(d.report.clone()), None),
            None => (Journal::memory_only(), None, None::<Checkpointer>),
        };
        let (checkpointer, mut recovered, recovered_payouts, lock) = match durable {
            Some(d) => (Some(d.checkpointer), d.accounts, d.payouts, Some(d.lock)),
            None => (checkpointer, Vec::new(), Default::default(), None),
        };
        let pending: Vec<_> = recovered
            .iter()
            .flat_map(|a| {
                a.withdrawals()
                    .filter(|(_, w)| w.status == WithdrawalStatus::Pending)
                    .map(|(tx, w)| (tx, w.currency, w.amount))
                    .collect::<Vec<_>>()
            })
            .collect();
        let payout_setup = config
            .payment_service
            .clone()
            .filter(|_| config.makes_payouts())
            .map(|service| (config.payout_mode, service.0, recovered_payouts, pending));
        let mut recovered_by_shard: Vec<Vec<AccountState>> =
            (0..config.shards).map(|_| Vec::new()).collect();
        for account in recovered.drain(..) {
            recovered_by_shard[shard_of(account.id(), config.shards)].push(account);
        }
        // Every coordinator's address exists before any actor starts, so the
        // router (which the coordinators and the payout actor hold) can be
        // made first.
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..config.shards)
            .map(|_| actix::dev::channel::channel::<Coordinator>(16))
            .unzip();
        let router = Router::new(
            senders.into_iter().map(Addr::new).collect(),
            config.shard_in_flight_ops_max,
        );
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let pending_max = config.account_pending_withdrawals_max;
        let account_actors_max = config.shard_account_actors_max;
        let account_idle_sweep = std::time::Duration::from_millis(config.account_idle_sweep_ms);
        let engine_journal = journal.clone();
        let clock = config.clock.clone();
        let engine_router = router.clone();
        let thread = std::thread::Builder::new()
            .name("burnledger-system".into())
            .spawn(move || {
                let system = System::new();
                let (journal, router) = (engine_journal, engine_router);
                let arbiters = system.block_on(async move {
                    // On the System's own thread, apart from the shards.
                    let payouts = payout_setup.map(|(mode, service, records, pending)| {
                        PayoutActor::new(
                            mode,
                            service,
                            router.clone(),
                            journal.clone(),
                            records,
                            pending,
                            clock.clone(),
                        )
                        .start()
                    });
                    let recipient = payouts.clone().map(Addr::recipient);
                    let mut arbiters = Vec::with_capacity(receivers.len());
                    for (receiver, recovered) in receivers.into_iter().zip(recovered_by_shard) {
                        let arbiter = Arbiter::new();
                        let settings = CoordinatorSettings {
                            journal: journal.clone(),
                            pending_withdrawals_max: pending_max,
                            router: router.clone(),
                            payouts: recipient.clone(),
                            account_actors_max,
                            account_idle_sweep,
                            clock: clock.clone(),
                        };
                        arbiter.spawn_fn(move || {
                            Context::with_receiver(receiver)
                                .run(Coordinator::new(settings, recovered));
                        });
                        arbiters.push(arbiter);
                    }
                    let _ = started_tx.send((System::current(), payouts));
                    arbiters
                });
                let _ = system.run();
                for arbiter in arbiters {
                    arbiter.stop();
                    let _ = arbiter.join();
                }
                let _ = stopped_tx.send(());
            })
            .map_err(|e| OpenError::Start(e.to_string()))?;
        let (system, payouts) = started_rx
            .recv()
            .map_err(|_| OpenError::Start("the engine thread stopped while starting".into()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                router,
                currencies,
                config,
                engine: Mutex::new(Some(EngineThread {
                    system,
                    thread,
                    stopped: stopped_rx,
                })),
                journal,
                checkpointer: Mutex::new(checkpointer),
                recovery,
                payouts,
                lock: Mutex::new(lock),
            }),
        })
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
    pub async fn deposit(
        &self,
        account: AccountId,
        currency: &str,
        amount: Decimal,
        idempotency_key: Option<&str>,
    ) -> Result<Deposit, LedgerError> {
        self.check_open()?;
        let key = idempotency_key.map(IdempotencyKey::new).transpose()?;
        let command = self
            .edge()
            .deposit(CurrencyCode::new(currency)?, amount, key)?;
        self.inner.router.execute_one(account, command).await
    }

    /// Phase 1: creates a pending burn that locks `amount` (available →
    /// locked) and returns the withdrawal with its `transaction_id`.
    pub async fn request_withdrawal(
        &self,
        account: AccountId,
        currency: &str,
        amount: Decimal,
        idempotency_key: Option<&str>,
    ) -> Result<Withdrawal, LedgerError> {
        self.check_open()?;
        let key = idempotency_key.map(IdempotencyKey::new).transpose()?;
        let currency = CurrencyCode::new(currency)?;
        let command = self.edge().request_withdrawal(currency, amount, key)?;
        self.inner.router.execute_one(account, command).await
    }

    /// Phase 3, by `transaction_id` alone: `Completed` removes the locked
    /// amount from the total, `Failed` returns it to available. Refused
    /// with `payout_in_flight` while a payout this ledger makes owns the
    /// withdrawal (see [`Ledger::resolve_payout_item`] for the override).
    pub async fn complete_withdrawal(
        &self,
        transaction_id: TransactionId,
        outcome: WithdrawalOutcome,
    ) -> Result<Withdrawal, LedgerError> {
        self.check_open()?;
        let command = self.edge().complete_withdrawal(transaction_id, outcome)?;
        let account = transaction_id.account();
        self.inner.router.execute_one(account, command).await
    }

    /// Cancels a pending withdrawal, returning its amount to available.
    pub async fn cancel_withdrawal(
        &self,
        transaction_id: TransactionId,
    ) -> Result<Withdrawal, LedgerError> {
        self.check_open()?;
        let command = self.edge().cancel_withdrawal(transaction_id);
        let account = transaction_id.account();
        self.inner.router.execute_one(account, command).await
    }

    /// Moves available funds between two accounts. Both sides are recorded
    /// as one event: a crash keeps both or neither.
    pub async fn transfer(
        &self,
        from: AccountId,
        to: AccountId,
        currency: &str,
        amount: Decimal,
        idempotency_key: Option<&str>,
    ) -> Result<Transfer, LedgerError> {
        self.check_open()?;
        let key = idempotency_key.map(IdempotencyKey::new).transpose()?;
        check_distinct(from, to)?;
        let currency = CurrencyCode::new(currency)?;
        let command = self.edge().transfer(from, to, currency, amount, key)?;
        self.inner.router.execute_one(from, command).await
    }

    /// The bank sent a completed withdrawal back: credits its amount to
    /// available again and marks it `returned` (totals stay exact: the
    /// credit counts as minted).
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
        self.inner.router.execute_one(account, command).await
    }

    /// Runs the payout job now: reconciles payouts waiting for an answer
    /// (retrying them whatever their backoff), then pays every queued
    /// withdrawal. Returns the payouts made or retried.
    pub async fn run_payouts_now(&self) -> Result<Vec<PayoutView>, LedgerError> {
        self.check_open()?;
        let actor = self.payout_actor()?;
        actor
            .send(RunPayouts {
                force_retries: true,
                new_payouts: true,
            })
            .await
            .map_err(|_| LedgerError::ShuttingDown)?
    }

    /// One payout by id.
    pub async fn payout(&self, payout_id: u64) -> Result<PayoutView, LedgerError> {
        self.check_open()?;
        let found = self
            .payout_actor()?
            .send(GetPayouts(Some(payout_id)))
            .await
            .map_err(|_| LedgerError::ShuttingDown)?;
        found
            .into_iter()
            .next()
            .ok_or(LedgerError::UnknownPayout { payout_id })
    }

    /// Every payout, newest first.
    pub async fn payouts(&self) -> Result<Vec<PayoutView>, LedgerError> {
        self.check_open()?;
        let Ok(actor) = self.payout_actor() else {
            return Ok(Vec::new());
        };
        actor
            .send(GetPayouts(None))
            .await
            .map_err(|_| LedgerError::ShuttingDown)
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
        check_reason("reason", note)?;
        // A ledger that makes no payouts has none to resolve.
        let actor = self
            .inner
            .payouts
            .as_ref()
            .ok_or(LedgerError::UnknownPayout { payout_id })?;
        actor
            .send(ResolvePayoutItem {
                payout_id,
                tx: transaction_id,
                resolution,
                note: note.to_string(),
            })
            .await
            .map_err(|_| LedgerError::ShuttingDown)?
    }

    /// Every payout mismatch recorded (the payment service contradicted a
    /// settled item), with its payout id, by payout id (each payout's in
    /// the order recorded). Never shrinks: its length is the
    /// `burnledger_payout_mismatches_total` counter. Empty when this ledger
    /// makes no payouts.
    pub async fn payout_mismatches(&self) -> Result<Vec<(u64, PayoutMismatch)>, LedgerError> {
        self.check_open()?;
        let Ok(actor) = self.payout_actor() else {
            return Ok(Vec::new());
        };
        actor
            .send(GetPayoutMismatches)
            .await
            .map_err(|_| LedgerError::ShuttingDown)
    }

    /// Payouts per state and the mismatch count, kept by the payout actor
    /// as it runs: O(1) to read at any number of payouts (for `/metrics`;
    /// `mismatches` is `burnledger_payout_mismatches_total`). All zero when
    /// this ledger makes no payouts.
    pub async fn payout_counts(&self) -> Result<PayoutCounts, LedgerError> {
        self.check_open()?;
        let Ok(actor) = self.payout_actor() else {
            return Ok(PayoutCounts::default());
        };
        actor
            .send(GetPayoutCounts)
            .await
            .map_err(|_| LedgerError::ShuttingDown)
    }

    /// Validation at the edge, for this ledger.
    fn edge(&self) -> Edge<'_> {
        Edge {
            currencies: &self.inner.currencies,
            engine_pays: self.inner.payouts.is_some(),
        }
    }

    fn payout_actor(&self) -> Result<&Addr<PayoutActor>, LedgerError> {
        self.inner.payouts.as_ref().ok_or_else(|| LedgerError::InvalidInput {
            reason: "this ledger makes no payouts (no payment service, or payout mode external): report outcomes with complete_withdrawal".into(),
        })
    }

    /// A withdrawal by its `transaction_id`.
    pub async fn withdrawal(
        &self,
        transaction_id: TransactionId,
    ) -> Result<Withdrawal, LedgerError> {
        let account = transaction_id.account();
        self.inner
            .router
            .ask(account, WithdrawalOf(transaction_id))
            .await
    }

    /// One account's balance in one currency (zero if it never held any).
    pub async fn balance(
        &self,
        account: AccountId,
        currency: &str,
    ) -> Result<Balance, LedgerError> {
        self.check_open()?;
        let currency = self.inner.currencies.get(currency)?;
        self.inner.router.ask(account, BalanceOf(currency)).await
    }

    /// Every currency an account has held, with its balance.
    pub async fn balances(&self, account: AccountId) -> Result<Vec<Balance>, LedgerError> {
        self.inner.router.ask(account, BalancesOf).await
    }

    /// Submits many operations at once and returns one result each, in
    /// order. Operations on the same account run in the order given;
    /// operations on different accounts run in parallel, and there is no
    /// atomicity across them. This is the fast path: one message per shard
    /// per batch instead of one per operation.
    pub async fn submit(&self, ops: Vec<Operation>) -> Vec<Result<Outcome, LedgerError>> {
        let count = ops.len();
        if let Err(closed) = self.check_open() {
            return vec![Err(closed); count];
        }
        if count > self.inner.config.batch_ops_max {
            let error = LedgerError::InvalidInput {
                reason: format!(
                    "a batch holds at most {} operations, got {count}",
                    self.inner.config.batch_ops_max
                ),
            };
            return vec![Err(error); count];
        }
        let mut answers: Vec<Option<Result<Outcome, LedgerError>>> =
            std::iter::repeat_with(|| None).take(count).collect();
        let mut commands = self.inner.router.scatter();
        let edge = self.edge();
        for (position, op) in ops.into_iter().enumerate() {
            match edge.command(op) {
                Ok((account, command)) => commands.push(position, account, command),
                Err(error) => answers[position] = Some(Err(error)),
            }
        }
        self.inner.router.execute(commands, &mut answers).await;
        answers.into_iter().map(answered).collect()
    }

    /// Copies out every account and checks the invariants over them. Meant
    /// for a quiet ledger: transfers in flight show up as violations.
    pub async fn audit(&self) -> Result<Audit, LedgerError> {
        let mut checked = audit(&self.export_accounts().await?);
        if let Some(actor) = &self.inner.payouts {
            let mismatches = actor
                .send(GetPayoutMismatches)
                .await
                .map_err(|_| LedgerError::ShuttingDown)?;
            checked.add_payout_mismatches(mismatches.iter().map(|(id, m)| (*id, m)));
        }
        Ok(checked)
    }

    /// Accounts held, and how many of them have a running actor (idle
    /// ones are stopped; their state stays), summed over the shards.
    pub async fn account_counts(&self) -> Result<ShardCounts, LedgerError> {
        let mut total = ShardCounts::default();
        for count in self.inner.router.each_shard(|| CountAccounts).await? {
            total.accounts += count.accounts;
            total.actors_running += count.actors_running;
        }
        Ok(total)
    }

    /// Gauges kept as the engine runs, summed over the shards: accounts,
    /// running account actors, withdrawals by currency and status (count
    /// and amount). One small message per shard; no account is read, so
    /// it costs the same at 10 accounts or 10 million (what `/metrics`
    /// shows). Refused (`poisoned`) after a storage failure, like
    /// [`export_accounts`](Self::export_accounts).
    pub async fn gauges(&self) -> Result<Gauges, LedgerError> {
        let mut total = Gauges::default();
        for shard in self.inner.router.each_shard(|| ReadGauges).await? {
            total.absorb(&shard?);
        }
        Ok(total)
    }

    /// Copies out every account's state.
    pub async fn export_accounts(&self) -> Result<Vec<AccountState>, LedgerError> {
        let mut accounts = Vec::new();
        for shard in self.inner.router.each_shard(|| ExportAccounts).await? {
            accounts.extend(shard?);
        }
        Ok(accounts)
    }

    /// Stops accepting operations, waits for those in flight, then stops
    /// the engine threads. Later calls on any clone get `shutting_down`.
    pub async fn shutdown(&self) {
        let admission = self.inner.router.admission();
        admission.close();
        admission.drained().await;
        let engine = self.inner.engine.lock().take();
        if let Some(engine) = engine {
            engine.system.stop();
            let _ = engine.stopped.await;
            let _ = engine.thread.join();
        }
        // Flush the log, then leave a snapshot so the next open is quick.
        let checkpointer = self.inner.checkpointer.lock().take();
        if let (Some(mut checkpointer), Some(wal)) =
            (checkpointer, self.inner.journal.wal().cloned())
        {
            let poisoned = self.inner.journal.poisoned().is_some();
            let (done_tx, done_rx) = oneshot::channel();
            // Blocking file work, off the caller's async thread.
            let spawned = std::thread::Builder::new()
                .name("burnledger-shutdown".into())
                .spawn(move || {
                    // The writer hands the checkpointer its last events as it
                    // stops; then the checkpointer writes the final snapshot.
                    let flushed = wal.shutdown();
                    if flushed.is_ok() && !poisoned {
                        if let Err(error) = checkpointer.finish() {
                            tracing::error!(%error, "snapshot at shutdown failed; the next open replays the log instead");
                        }
                    }
                    checkpointer.stop();
                    let _ = done_tx.send(());
                });
            if spawned.is_err() {
                // The log may still be open: keep the folder locked until
                // the last handle drops (Drop for Inner closes it).
                return;
            }
            let _ = done_rx.await;
        }
        // The log is closed: another ledger may open the folder now, even
        // while clones of this handle linger.
        self.inner.lock.lock().take();
    }

    /// Takes a snapshot now (built from the log, without pausing anything)
    /// and returns it; `None` when nothing was logged since the last one or
    /// the ledger keeps no log.
    pub async fn snapshot(&self) -> Result<Option<SnapshotFile>, LedgerError> {
        let requested = match self.inner.checkpointer.lock().as_ref() {
            None => return Ok(None),
            Some(checkpointer) => checkpointer.request_snapshot(),
        };
        let failed = |reason| LedgerError::Internal { reason };
        let answer = requested.map_err(failed)?;
        answer
            .await
            .map_err(|_| failed("the checkpointer stopped before answering".into()))?
            .map_err(failed)
    }

    /// The write-ahead log's fsync counts and latencies; `None` when the
    /// ledger keeps no log.
    pub fn wal_stats(&self) -> Option<crate::storage::wal::WalStatsSnapshot> {
        self.inner.journal.wal().map(WalHandle::stats)
    }

    /// How the state was rebuilt from disk when this ledger opened.
    pub fn recovery_report(&self) -> Option<&RecoveryReport> {
        self.inner.recovery.as_ref()
    }

    // ---- internals ----

    /// Refuses everything once shutdown has begun, before judging the input.
    fn check_open(&self) -> Result<(), LedgerError> {
        self.inner.router.admission().check_open()
    }
}

impl Drop for Inner {
    /// The last handle is gone without `shutdown`: stop the engine threads
    /// anyway so they do not outlive every way of reaching them.
    fn drop(&mut self) {
        if let Some(engine) = self.engine.get_mut().take() {
            engine.system.stop();
            let _ = engine.thread.join();
        }
        // Like a crash as far as the data is concerned: no final snapshot,
        // but the writer thread is joined so the folder can be reopened.
        if let Some(mut checkpointer) = self.checkpointer.get_mut().take() {
            checkpointer.stop();
        }
        if let Some(wal) = self.journal.wal() {
            let _ = wal.shutdown();
        }
    }
}

/// What opening a data folder yields.
struct Durable {
    journal: Journal,
    accounts: Vec<AccountState>,
    payouts: std::collections::BTreeMap<u64, crate::domain::payouts::PayoutRecord>,
    report: RecoveryReport,
    checkpointer: Checkpointer,
    lock: DataDirLock,
}

/// Recovers the state in the data folder and opens its WAL writer and
/// checkpointer; `None` when the ledger keeps no log.
fn open_durable(config: &Config, currencies: &Currencies) -> Result<Option<Durable>, OpenError> {
    let Some(dir) = config.data_dir.clone().filter(|_| config.is_durable()) else {
        return Ok(None);
    };
    std::fs::create_dir_all(&dir).map_err(|e| OpenError::DataDir {
        path: dir.clone(),
        reason: e.to_string(),
    })?;
    let (lock, history, recovered) = claim_and_recover(&dir, config, currencies)?;
    let report = recovered.report;
    // The checkpointer reads the journal's durable LSN, and the WAL writer
    // (under the journal) feeds the checkpointer: tie the knot through a
    // cell set just below.
    let journal_cell: Arc<OnceLock<Journal>> = Arc::new(OnceLock::new());
    let reader = Arc::clone(&journal_cell);
    let (checkpointer, follower) = Checkpointer::start(
        CheckpointSettings {
            data_dir: dir.clone(),
            currencies: history,
            interval: std::time::Duration::from_secs(config.snapshot_interval_secs),
            every_events: config.snapshot_every_events,
            snapshots_kept: config.snapshots_kept,
            durable_lsn: Box::new(move || reader.get().map_or(0, Journal::durable_lsn)),
        },
        // The checkpointer's own copy of the state: it follows the log from
        // here.
        Start {
            accounts: recovered.accounts.clone(),
            payouts: recovered.payouts.clone(),
            lsn: report.last_lsn,
            last_snapshot_lsn: report.snapshot.as_ref().map_or(0, |s| s.lsn),
        },
    )
    .map_err(|e| OpenError::Start(e.to_string()))?;
    let wal = WalHandle::open(
        WalConfig {
            sync: config.sync,
            segment_bytes_max: config.wal_segment_bytes_max,
            fail_point: config.wal_fail_point.clone(),
            follower: Some(follower),
            ..WalConfig::new(&dir)
        },
        report.next_lsn,
    )?;
    let journal = Journal::logged(wal, report.last_lsn);
    let _ = journal_cell.set(journal.clone());
    Ok(Some(Durable {
        journal,
        accounts: recovered.accounts.into_values().collect(),
        payouts: recovered.payouts,
        report,
        checkpointer,
        lock,
    }))
}

/// Takes the folder and recovers it: the lock first (a second ledger must
/// not even replay a log another one is appending to), then the currency
/// table reconciled with the configuration, then the state, rebuilt with
/// every currency the folder's history holds and checked against the
/// table. The table is recorded only once all of that holds. Returns the
/// lock, the registry that reads the folder's history (the configuration's
/// currencies plus retired ones), and the recovered state.
fn claim_and_recover(
    dir: &std::path::Path,
    config: &Config,
    currencies: &Currencies,
) -> Result<(DataDirLock, Currencies, crate::storage::recovery::Recovered), OpenError> {
    let lock = DataDirLock::exclusive(dir)?;
    let recorded = CurrencyTable::read(dir)?;
    let (table, changes) = CurrencyTable::reconcile(recorded.as_ref(), currencies)?;
    let history = table
        .history_registry(&config.currencies, currencies)
        .map_err(OpenError::Config)?;
    let recovered = rebuild(dir, &history, ReplayMode::Recover)?;
    table.check_state(recovered.accounts.values(), currencies)?;
    table.write(dir)?;
    table.log_changes(dir, recorded.is_none(), &changes);
    Ok((lock, history, recovered))
}

/// Sync mode `none` keeps no log: on a folder that holds a ledger it would
/// ignore that ledger (balances read empty) and lose every write at exit,
/// silently. Refused instead.
fn refuse_unlogged_ledger(config: &Config) -> Result<(), OpenError> {
    let Some(dir) = config.data_dir.as_ref().filter(|_| !config.is_durable()) else {
        return Ok(());
    };
    let holds = crate::storage::data_dir::holds_ledger(dir).map_err(|e| OpenError::DataDir {
        path: dir.clone(),
        reason: e.to_string(),
    })?;
    if holds {
        return Err(OpenError::Config(format!(
            "data folder {} holds a ledger, but sync mode `none` keeps no log: it would be \
             ignored (balances would read empty) and every write lost at exit. Open it with \
             sync `fsync` or `buffered`, or run in memory without a data folder",
            dir.display()
        )));
    }
    Ok(())
}
