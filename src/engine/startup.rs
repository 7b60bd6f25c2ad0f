//! Starting the engine: the configuration checked, the data folder
//! claimed and recovered (its lock, currency table, snapshot and log), the
//! WAL writer and checkpointer opened (with the history store at
//! `<data_dir>/history/` and its writer, fed by recovery and then by the
//! checkpointer), and the engine's threads spawned:
//! an actix `System` on its own thread with the payout actor, and one
//! Arbiter per shard with its coordinator, seeded with the shard's
//! recovered accounts (all parked). Every coordinator's address exists
//! before any actor starts, so the [`Router`] they and the payout actor
//! hold is made first.
//!
//! [`Engine`] is what a running engine is made of; stopping it is in
//! [`shutdown`](crate::engine::shutdown). A standby's engine
//! ([`start_standby`]) is the same data folder recovered and opened — log
//! writer, checkpointer, history store — without the threads: only
//! mirrored batches append to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use actix::prelude::*;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::domain::account::AccountState;
use crate::domain::ids::{shard_of, TransactionId};
use crate::domain::money::{Currencies, Currency, Units};
use crate::domain::payouts::PayoutRecord;
use crate::domain::policy::Policy;
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{WithdrawalHistory, WithdrawalStatus};
use crate::engine::coordinator::{Coordinator, CoordinatorSettings};
use crate::engine::horizon::Forgetting;
use crate::engine::key_expiry::KeyExpiry;
use crate::engine::payout::PayoutActor;
use crate::engine::router::Router;
use crate::engine::stamp::Stamper;
use crate::error::LedgerError;
use crate::storage::checkpoint::{CheckpointSettings, Checkpointer, Start};
use crate::storage::data_dir::{CurrencyTable, CurrencyTableError, DataDirLock, LockError};
use crate::storage::events::{EventLog, Retention};
use crate::storage::feed::{Feeder, HistoryHorizons, HistoryWriter};
use crate::storage::history::{HistoryError, HistoryReader, HistoryStore};
use crate::storage::journal::Journal;
use crate::storage::recall::{FolderHistory, StoreHistory};
use crate::storage::recovery::{
    rebuild_feeding, rebuild_recalling, Recovered, RecoveryError, RecoveryReport,
};
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

/// A running engine: its threads, the router to its shards, the payout
/// actor, and what keeps the data folder.
pub struct Engine {
    pub router: Router,
    /// The payout actor, when a payment service pays withdrawals out.
    pub payouts: Option<Addr<PayoutActor>>,
    pub journal: Journal,
    /// How the state was rebuilt from disk when the ledger opened.
    pub recovery: Option<RecoveryReport>,
    /// The history store and its follower's progress; `None` without a
    /// data folder (or when the store could not be opened at all).
    pub history: Option<HistoryReader>,
    /// The event feed's side of the log (consumers' cursors, the readers'
    /// shared index); `None` without a log.
    pub events: Option<Arc<EventLog>>,
    /// Per shard, how far the history store holds that shard's events (see
    /// [`HistoryHorizons`]); `None` with no history store. Finished
    /// withdrawals last changed before it leave memory (the engine's, and
    /// the checkpointer's copy), read through the store's
    /// [`WithdrawalHistory`]; kept here for tests to watch.
    #[allow(dead_code)] // read by tests only
    pub horizons: Option<HistoryHorizons>,
    pub(super) threads: Mutex<Option<EngineThreads>>,
    pub(super) checkpointer: Mutex<Option<Checkpointer>>,
    /// The data folder's lock: held until `shutdown` has closed the log,
    /// or (without one) until the engine threads are stopped on drop — a
    /// field, so it is released only after `Drop for Engine` has run.
    pub(super) lock: Mutex<Option<DataDirLock>>,
}

/// The thread running the actix `System`, and how to stop it.
pub(super) struct EngineThreads {
    pub(super) system: System,
    pub(super) thread: JoinHandle<()>,
    pub(super) stopped: oneshot::Receiver<()>,
}

/// What the engine's threads start from.
struct Seed {
    journal: Journal,
    router: Router,
    /// Recovered accounts, by shard.
    accounts: Vec<Vec<AccountState>>,
    /// The payout actor's start, when the ledger makes payouts.
    payouts: Option<PayoutSeed>,
    /// The newest time the recovered state holds: stamps never go below.
    stamps_from: UnixMs,
    /// Where forgotten withdrawals are found again, and each shard's
    /// horizon: the configuration's, else the data folder's history store.
    withdrawal_history: Option<Arc<dyn WithdrawalHistory>>,
    /// The rules' configuration, shared by every shard.
    policy: Arc<Policy>,
}

struct PayoutSeed {
    records: BTreeMap<u64, PayoutRecord>,
    pending: Vec<Queued>,
}

/// A pending withdrawal, as the payout queue holds it.
type Queued = (TransactionId, Currency, Units);

/// Opens the data folder (if any), recovers it and starts the engine.
pub fn start(config: &Config, currencies: &Currencies) -> Result<Engine, OpenError> {
    refuse_unlogged_ledger(config)?;
    let durable = open_durable(config, currencies)?;
    let (journal, recovery) = match &durable {
        Some(d) => (d.journal.clone(), Some(d.report.clone())),
        None => (Journal::memory_only(), None),
    };
    let (history, horizons, store_history, events) = match &durable {
        Some(d) => (
            d.history.clone(),
            d.horizons.clone(),
            d.store_history.clone(),
            Some(Arc::clone(&d.events)),
        ),
        None => (None, None, None, None),
    };
    let (checkpointer, accounts, records, lock) = match durable {
        Some(d) => (Some(d.checkpointer), d.accounts, d.payouts, Some(d.lock)),
        None => (None, Vec::new(), BTreeMap::new(), None),
    };
    let payouts = config.makes_payouts().then(|| PayoutSeed {
        pending: pending_withdrawals(&accounts),
        records,
    });
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..config.shards)
        .map(|_| actix::dev::channel::channel::<Coordinator>(16))
        .unzip();
    let router = Router::new(
        senders.into_iter().map(Addr::new).collect(),
        config.shard_in_flight_ops_max,
    );
    let stamps_from = newest_time(
        recovery.as_ref(),
        &accounts,
        payouts.iter().flat_map(|p| p.records.values()),
    );
    // A host's own history takes precedence over the folder's store.
    let withdrawal_history = config
        .withdrawal_history
        .as_ref()
        .map(|h| Arc::clone(&h.0))
        .or(store_history);
    let policy = Arc::new(config.policy(currencies).map_err(OpenError::Config)?);
    let seed = Seed {
        stamps_from,
        withdrawal_history,
        policy,
        journal: journal.clone(),
        router: router.clone(),
        accounts: by_shard(accounts, config.shards),
        payouts,
    };
    let (threads, payouts) = spawn(config, seed, receivers)?;
    Ok(Engine {
        router,
        payouts,
        journal,
        recovery,
        history,
        events,
        horizons,
        threads: Mutex::new(Some(threads)),
        checkpointer: Mutex::new(checkpointer),
        lock: Mutex::new(lock),
    })
}

/// Opens and recovers the data folder — its log writer, checkpointer and
/// history store — without the engine's threads: a standby's local copy of
/// a replicated ledger, which only batches the writer shipped append to
/// (see `ledger::standby`). Its router has no shards: nothing is routed.
pub fn start_standby(config: &Config, currencies: &Currencies) -> Result<Engine, OpenError> {
    let config = Config {
        // A standby ships nothing: it is the one being shipped to.
        replication: None,
        ..config.clone()
    };
    let Some(durable) = open_durable(&config, currencies)? else {
        return Err(OpenError::Config(
            "a standby needs a data folder and a sync mode other than `none`".into(),
        ));
    };
    Ok(Engine {
        router: Router::new(Vec::new(), config.shard_in_flight_ops_max),
        payouts: None,
        journal: durable.journal,
        recovery: Some(durable.report),
        history: durable.history,
        events: Some(durable.events),
        horizons: durable.horizons,
        threads: Mutex::new(None),
        checkpointer: Mutex::new(Some(durable.checkpointer)),
        lock: Mutex::new(Some(durable.lock)),
    })
}

impl Engine {
    /// Takes a snapshot now (built from the log, without pausing anything)
    /// and returns it; `None` when nothing was logged since the last one or
    /// the ledger keeps no log.
    pub async fn snapshot(&self) -> Result<Option<SnapshotFile>, LedgerError> {
        let requested = match self.checkpointer.lock().as_ref() {
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
}

/// The newest time the recovered state holds (its log's newest event, its
/// withdrawals' and payouts' times): where stamps start, so that a clock
/// stepped back across a restart does not make them go back.
fn newest_time<'a>(
    recovery: Option<&RecoveryReport>,
    accounts: impl IntoIterator<Item = &'a AccountState>,
    payouts: impl IntoIterator<Item = &'a PayoutRecord>,
) -> UnixMs {
    let logged = recovery.map_or(UnixMs::UNKNOWN, |r| r.newest_event_at);
    let withdrawals = accounts
        .into_iter()
        .flat_map(AccountState::withdrawals)
        .map(|(_, w)| w.updated_at);
    let payouts = payouts
        .into_iter()
        .map(|p| p.submitted_at.max(p.settled_at));
    withdrawals.chain(payouts).fold(logged, UnixMs::max)
}

/// The recovered withdrawals still pending, for the payout queue.
fn pending_withdrawals(accounts: &[AccountState]) -> Vec<Queued> {
    accounts
        .iter()
        .flat_map(|a| {
            a.withdrawals()
                .filter(|(_, w)| w.status == WithdrawalStatus::Pending)
                .map(|(tx, w)| (tx, w.currency, w.amount))
        })
        .collect()
}

fn by_shard(accounts: Vec<AccountState>, shards: usize) -> Vec<Vec<AccountState>> {
    let mut by_shard: Vec<Vec<AccountState>> = (0..shards).map(|_| Vec::new()).collect();
    for account in accounts {
        if let Some(shard) = by_shard.get_mut(shard_of(account.id(), shards)) {
            shard.push(account);
        }
    }
    by_shard
}

/// Spawns the System thread, the payout actor on it, and one Arbiter per
/// shard with its coordinator; returns once they started.
fn spawn(
    config: &Config,
    seed: Seed,
    receivers: Vec<actix::dev::channel::AddressReceiver<Coordinator>>,
) -> Result<(EngineThreads, Option<Addr<PayoutActor>>), OpenError> {
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (stopped_tx, stopped_rx) = oneshot::channel();
    let config = config.clone();
    let thread = std::thread::Builder::new()
        .name("burnledger-system".into())
        .spawn(move || {
            let system = System::new();
            let arbiters = system.block_on(async move {
                let Seed {
                    journal,
                    router,
                    accounts,
                    payouts,
                    stamps_from,
                    withdrawal_history,
                    policy,
                } = seed;
                // On the System's own thread, apart from the shards.
                let payouts = payouts.and_then(|p| {
                    let stamper = Stamper::new(config.clock.clone(), stamps_from);
                    start_payouts(&config, p, &router, &journal, stamper)
                });
                let recipient = payouts.clone().map(Addr::recipient);
                let shards = receivers.into_iter().zip(accounts);
                let mut arbiters = Vec::with_capacity(config.shards);
                for (shard, (receiver, accounts)) in shards.enumerate() {
                    let arbiter = Arbiter::new();
                    let settings = CoordinatorSettings {
                        shard,
                        journal: journal.clone(),
                        policy: Arc::clone(&policy),
                        router: router.clone(),
                        payouts: recipient.clone(),
                        account_actors_max: config.shard_account_actors_max,
                        account_idle_sweep: Duration::from_millis(config.account_idle_sweep_ms),
                        clock: config.clock.clone(),
                        stamps_from,
                        forgetting: Forgetting::for_shard(
                            &config,
                            shard,
                            withdrawal_history.clone(),
                        ),
                        key_expiry: KeyExpiry::new(&config),
                    };
                    arbiter.spawn_fn(move || {
                        Context::with_receiver(receiver).run(Coordinator::new(settings, accounts));
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
    let threads = EngineThreads {
        system,
        thread,
        stopped: stopped_rx,
    };
    Ok((threads, payouts))
}

/// The payout actor, on the recovered payout records and pending
/// withdrawals.
fn start_payouts(
    config: &Config,
    seed: PayoutSeed,
    router: &Router,
    journal: &Journal,
    stamper: Stamper,
) -> Option<Addr<PayoutActor>> {
    let service = config.payment_service.clone()?;
    let actor = PayoutActor::new(
        config.payout_mode,
        service.0,
        router.clone(),
        journal.clone(),
        seed.records,
        seed.pending,
        stamper,
    );
    Some(actor.start())
}

/// What opening a data folder yields.
struct Durable {
    journal: Journal,
    accounts: Vec<AccountState>,
    payouts: BTreeMap<u64, PayoutRecord>,
    report: RecoveryReport,
    checkpointer: Checkpointer,
    lock: DataDirLock,
    history: Option<HistoryReader>,
    horizons: Option<HistoryHorizons>,
    events: Arc<EventLog>,
    /// The store as the engine's [`WithdrawalHistory`].
    store_history: Option<Arc<dyn WithdrawalHistory>>,
}

/// The history store's writer and the handles around it, while the
/// ledger opens. The feeder is declared (so dropped) before the writer,
/// whose drop waits for every feeder to be gone.
struct History {
    feeder: Feeder,
    writer: HistoryWriter,
    reader: HistoryReader,
    horizons: HistoryHorizons,
}

impl History {
    /// The store as a [`WithdrawalHistory`], its rows read in `currencies`.
    fn recall(&self, currencies: &Currencies) -> StoreHistory {
        StoreHistory::new(
            self.reader.clone(),
            self.horizons.clone(),
            currencies.clone(),
        )
    }
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
    let (lock, history, recovered, store) = claim_and_recover(&dir, config, currencies)?;
    let report = recovered.report;
    let (feed, history_reader, horizons, store_history) = match store {
        Some(mut store) => {
            // Once what recovery fed is in, the store holds every recovered
            // event: each shard's horizon is at least the newest of them.
            // Not when history was lost: the recovered state then holds
            // withdrawals the store lacks, which must not be forgotten.
            if report.history_lost.is_none() {
                let newest = newest_time(
                    Some(&report),
                    recovered.accounts.values(),
                    recovered.payouts.values(),
                );
                store.feeder.raise_horizons(newest);
            }
            let recall: Arc<dyn WithdrawalHistory> = Arc::new(store.recall(&history));
            let feed = Some((store.feeder, store.writer));
            (feed, Some(store.reader), Some(store.horizons), Some(recall))
        }
        None => (None, None, None, None),
    };
    // Without a store nothing is forgotten, but a snapshot may have been
    // written by a ledger that had one: its store is opened if needed.
    let recall = store_history
        .clone()
        .unwrap_or_else(|| Arc::new(FolderHistory::new(&dir, &history)));
    // The checkpointer reads the journal's durable LSN, and the WAL writer
    // (under the journal) feeds the checkpointer: tie the knot through a
    // cell set just below.
    let journal_cell: Arc<OnceLock<Journal>> = Arc::new(OnceLock::new());
    let reader = Arc::clone(&journal_cell);
    let events = Arc::new(EventLog::open(&dir).map_err(|e| OpenError::DataDir {
        path: dir.join("consumers"),
        reason: e.to_string(),
    })?);
    let (checkpointer, follower) = Checkpointer::start(
        CheckpointSettings {
            data_dir: dir.clone(),
            currencies: history,
            interval: Duration::from_secs(config.snapshot_interval_secs),
            clock: config.clock.clone(),
            every_events: config.snapshot_every_events,
            snapshots_kept: config.snapshots_kept,
            durable_lsn: Box::new(move || reader.get().map_or(0, Journal::durable_lsn)),
            history: recall,
            shards: config.shards,
            retention: Some(Retention {
                consumers: Arc::clone(&events.consumers),
                bytes_max: config.event_retention_bytes,
                age_ms_max: config.event_retention_ms,
                clock: config.clock.clone(),
            }),
            archive_dir: config.archive_dir.clone(),
        },
        // The checkpointer's own copy of the state: it follows the log from
        // here.
        Start {
            accounts: recovered.accounts.clone(),
            payouts: recovered.payouts.clone(),
            lsn: report.last_lsn,
            last_snapshot_lsn: report.snapshot.as_ref().map_or(0, |s| s.lsn),
            head: report.head.map(|head| head.hash),
        },
        feed,
    )
    .map_err(|e| OpenError::Start(e.to_string()))?;
    let wal = WalHandle::open(
        WalConfig {
            sync: config.sync,
            segment_bytes_max: config.wal_segment_bytes_max,
            fail_point: config.wal_fail_point.clone(),
            follower: Some(follower),
            clock: config.clock.clone(),
            replica: config.replication.as_ref().map(|r| Arc::clone(&r.0)),
            chain_head: chain_head(&report),
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
        history: history_reader,
        horizons,
        events,
        store_history,
    }))
}

/// The hash the writer's first record chains to: recovery's head; zeros,
/// with a warning, when recovery could not learn it (`verify --chain` then
/// reports the break there).
fn chain_head(report: &RecoveryReport) -> crate::storage::wal::record::Hash {
    match report.head {
        Some(head) => head.hash,
        None => {
            tracing::warn!(
                last_lsn = report.last_lsn,
                "the hash of the record at LSN {} is unknown (the log no longer holds it and the \
                 snapshot predates format v6): the hash chain restarts from zeros after it",
                report.last_lsn
            );
            crate::storage::wal::record::GENESIS
        }
    }
}

/// Takes the folder and recovers it: the lock first (a second ledger must
/// not even replay a log another one is appending to), then the currency
/// table reconciled with the configuration, then the history store opened
/// and its writer started, then the state, rebuilt with every currency the
/// folder's history holds and checked against the table, feeding the store
/// what it lacks. The table is recorded only once all of that holds.
/// Returns the lock, the registry that reads the folder's history (the
/// configuration's currencies plus retired ones), the recovered state and
/// the history store's handles (`None` if it could not be opened).
fn claim_and_recover(
    dir: &Path,
    config: &Config,
    currencies: &Currencies,
) -> Result<(DataDirLock, Currencies, Recovered, Option<History>), OpenError> {
    let lock = DataDirLock::exclusive(dir)?;
    let recorded = CurrencyTable::read(dir)?;
    let (table, changes) = CurrencyTable::reconcile(recorded.as_ref(), currencies)?;
    let registry = table
        .history_registry(&config.currencies, currencies)
        .map_err(OpenError::Config)?;
    let mut history = if config.history {
        open_history(dir, config.shards)?
    } else {
        None
    };
    let mut recovered = recover_feeding(dir, &registry, history.as_mut())?;
    if let Some(ahead) = history.as_ref().map(|h| h.feeder.fed_lsn()) {
        if ahead > recovered.report.last_lsn {
            // The log lost a tail the store had taken in (a crash under
            // `buffered` sync): the store would list what never happened and
            // skip the LSNs the log gives anew. Rebuilt from the log.
            tracing::warn!(
                store_lsn = ahead,
                log_lsn = recovered.report.last_lsn,
                "the history store is ahead of the log (its tail was lost in a crash); \
                 rebuilding the store from the log"
            );
            drop(history.take());
            history = reset_history(dir, config.shards);
            recovered = recover_feeding(dir, &registry, history.as_mut())?;
        }
    }
    table.check_state(recovered.accounts.values(), currencies)?;
    table.write(dir)?;
    table.log_changes(dir, recorded.is_none(), &changes);
    Ok((lock, registry, recovered, history))
}

/// Recovers the folder, feeding `history` what it lacks and reading from
/// it the forgotten withdrawals a replayed return needs.
fn recover_feeding(
    dir: &Path,
    registry: &Currencies,
    history: Option<&mut History>,
) -> Result<Recovered, OpenError> {
    let mode = ReplayMode::Recover;
    let Some(history) = history else {
        return Ok(rebuild_feeding(dir, registry, mode, None)?);
    };
    let recall = history.recall(registry);
    let feeder = Some(&mut history.feeder);
    Ok(rebuild_recalling(dir, registry, mode, feeder, &recall)?)
}

/// Opens the history store and starts its writer. A store that cannot be
/// opened is set aside (renamed, kept for the operator) and a new one
/// rebuilt from the log; if even that fails the ledger runs without one.
/// Either way it is logged; the ledger opens. Except a store in a format
/// this build does not read (a newer build's): the ledger does not open
/// (rebuilding it from the log would lose what the log no longer holds).
fn open_history(dir: &Path, shards: usize) -> Result<Option<History>, OpenError> {
    Ok(match HistoryStore::open(dir) {
        Ok(store) => start_history(store, shards),
        Err(error @ (HistoryError::NewerFormat { .. } | HistoryError::UnknownFormat { .. })) => {
            return Err(OpenError::DataDir {
                path: HistoryStore::dir_in(dir),
                reason: error.to_string(),
            })
        }
        Err(error) => {
            let store_dir = HistoryStore::dir_in(dir);
            let aside = store_dir.with_extension(format!("damaged-{}", std::process::id()));
            tracing::error!(
                %error,
                set_aside = %aside.display(),
                "the history store cannot be opened; it is set aside and rebuilt from the log"
            );
            if let Err(error) = std::fs::rename(&store_dir, &aside) {
                tracing::error!(%error, "the history store cannot be set aside; no history store");
                return Ok(None);
            }
            reset_history(dir, shards)
        }
    })
}

/// Removes the history store and starts a new, empty one.
fn reset_history(dir: &Path, shards: usize) -> Option<History> {
    let store_dir = HistoryStore::dir_in(dir);
    match std::fs::remove_dir_all(&store_dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            tracing::error!(%error, "the history store cannot be removed; no history store");
            return None;
        }
        _ => {}
    }
    match HistoryStore::open(dir) {
        Ok(store) => start_history(store, shards),
        Err(error) => {
            tracing::error!(%error, "no history store: a new one cannot be made");
            None
        }
    }
}

/// Stamps an open store with this build's format and starts its writer;
/// `None` (logged) if either fails.
fn start_history(store: HistoryStore, shards: usize) -> Option<History> {
    if let Err(error) = store.stamp_format() {
        tracing::error!(%error, "no history store: its format cannot be stamped");
        return None;
    }
    match HistoryWriter::start(Arc::new(store), shards) {
        Ok((writer, feeder, reader, horizons)) => Some(History {
            feeder,
            writer,
            reader,
            horizons,
        }),
        Err(error) => {
            tracing::error!(%error, "no history store: its writer cannot start");
            None
        }
    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rust_decimal::Decimal;

    use crate::clock::ManualClock;
    use crate::domain::ids::shard_of;

    use crate::domain::withdrawal::StatusKind;
    use crate::storage::history::{EntryKind, TransactionKind, TransactionRecord};
    use crate::{Config, Ledger};

    #[tokio::test]
    async fn a_deposit_and_a_withdrawal_are_in_the_history_store_once_it_caught_up_with_the_durable_lsn(
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(Config::for_tests_in(tmp.path())).unwrap();
        let deposit = ledger.deposit(7, "USD", Decimal::new(1000, 2), None);
        let deposit = deposit.await.unwrap();
        let withdrawal = ledger.request_withdrawal(7, "USD", Decimal::new(400, 2), None);
        let withdrawal = withdrawal.await.unwrap();

        let engine = ledger.engine();
        let history = engine
            .history
            .as_ref()
            .expect("a data folder has a history store");
        history
            .caught_up(engine.journal.durable_lsn())
            .await
            .unwrap();
        let store = history.store().unwrap();

        let row = store
            .withdrawal(withdrawal.transaction_id)
            .unwrap()
            .unwrap();
        assert_eq!((row.account, row.amount), (7, 400));
        assert_eq!(row.status, StatusKind::Pending);
        let created = withdrawal.created_at.map(|at| at.as_millis());
        assert_eq!(Some(row.created_at_ms), created);
        let Some(TransactionRecord::Other(tx)) = store.transaction(deposit.transaction_id).unwrap()
        else {
            panic!("the deposit is a transaction in the store");
        };
        assert_eq!(
            (tx.kind, tx.account, tx.amount),
            (TransactionKind::Deposit, 7, 1000)
        );
        let entries = store.entries(7, None, None, 10).unwrap().items;
        let seen: Vec<_> = entries
            .iter()
            .map(|e| (e.kind, e.amount, e.available_after, e.locked_after))
            .collect();
        assert_eq!(
            seen,
            [
                (EntryKind::Deposit, 1000, 1000, 0),
                (EntryKind::Lock, 400, 600, 400)
            ]
        );
        ledger.shutdown().await;
        assert!(history.store().is_err(), "closed at shutdown");
    }

    /// Two accounts, the first on shard 0, the second on shard 1 (of 2).
    fn one_per_shard() -> (u64, u64) {
        let on = |shard| (1..).find(|&a| shard_of(a, 2) == shard).unwrap();
        (on(0), on(1))
    }

    #[tokio::test]
    async fn each_shard_s_horizon_is_the_newest_stamp_of_its_own_events_the_store_took_in() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let config = Config {
            clock: clock.shared(),
            ..Config::for_tests_in(tmp.path())
        };
        let (a, b) = one_per_shard();
        let ledger = Ledger::open(config.clone()).unwrap();
        let t0 = clock.shared().unix_ms();
        ledger
            .deposit(a, "USD", Decimal::new(1000, 2), None)
            .await
            .unwrap();
        clock.advance(Duration::from_millis(10));
        // Made, stamped and logged by b's shard (the receiving side).
        let t1 = clock.shared().unix_ms();
        ledger
            .transfer(a, b, "USD", Decimal::new(100, 2), None)
            .await
            .unwrap();
        let engine = ledger.engine();
        let history = engine.history.as_ref().unwrap();
        history
            .caught_up(engine.journal.durable_lsn())
            .await
            .unwrap();
        let horizons = engine.horizons.as_ref().unwrap();
        let at = |shard| horizons.of(shard).as_millis();
        assert_eq!((at(0), at(1)), (t0, t1));
        clock.advance(Duration::from_millis(10));
        let t2 = clock.shared().unix_ms();
        ledger
            .request_withdrawal(b, "USD", Decimal::new(50, 2), None)
            .await
            .unwrap();
        ledger.shutdown().await;
        drop(ledger);

        // Reopened: the store holds everything recovered, so each horizon
        // is at least the newest time the recovered state holds (here the
        // withdrawal's).
        clock.advance(Duration::from_millis(10));
        let ledger = Ledger::open(config).unwrap();
        let horizons = ledger.engine().horizons.as_ref().unwrap().clone();
        for shard in 0..2 {
            let mut horizon = horizons.0[shard].clone();
            let raised = horizon.wait_for(|at| at.as_millis() >= t2);
            let raised = tokio::time::timeout(Duration::from_secs(10), raised).await;
            assert!(raised.is_ok_and(|r| r.is_ok()), "shard {shard}");
        }
        assert_eq!(
            (horizons.of(0).as_millis(), horizons.of(1).as_millis()),
            (t2, t2)
        );
        ledger.shutdown().await;
    }
}
