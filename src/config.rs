//! Configuration and limits, with documented defaults.
//!
//! Every queue, batch and count the engine keeps has a limit here, with its
//! unit in the name. [`Config::for_tests`] makes them small so tests reach
//! the edges.
//!
//! It also holds what the withdrawal rules are configured with — the fee
//! account, the per-tier withdrawal limits ([`WithdrawalLimit`]), the
//! longest expiry — which [`Config::policy`] turns into the [`Policy`]
//! every account is judged by (the rules themselves live in
//! `domain::account`).

use std::path::PathBuf;

use std::sync::Arc;

use crate::clock::SharedClock;
use crate::domain::money::{Currencies, CurrencyConfig};
pub use crate::domain::payouts::PayoutMode;
use crate::domain::policy::{Policy, Tier, Window, WithdrawalLimits};
use crate::domain::withdrawal::WithdrawalHistory;
use crate::payment::PaymentService;
use crate::storage::wal::replica::Replica;
pub use crate::storage::wal::SyncMode;

/// How the engine is set up when it opens.
#[derive(Clone, Debug)]
pub struct Config {
    /// Currencies the ledger accepts. Default: USD 2, EUR 2, BTC 8.
    pub currencies: Vec<CurrencyConfig>,
    /// Shards, each an actix Arbiter (one thread) with its own coordinator.
    /// Default: the number of cores.
    pub shards: usize,
    /// Operations admitted into one shard at once; past it, new operations
    /// are refused with `overloaded` instead of queued without limit.
    /// Default: 262,144.
    pub shard_in_flight_ops_max: usize,
    /// Account actors running at once on one shard. An account keeps its
    /// actor while in use; past this many, the shard stops the actors of
    /// accounts unused lately (their state stays in memory, compactly).
    /// Default: 65,536 (≈ 56 MB of actors per shard).
    pub shard_account_actors_max: usize,
    /// How often each shard stops the actors of accounts idle since its
    /// last sweep, in milliseconds. Default: 10,000.
    pub account_idle_sweep_ms: u64,
    /// Pending withdrawals one account may hold at once. Default: 1,000.
    pub account_pending_withdrawals_max: u32,
    /// Where completed withdrawals' fees go. `None` (the default): a
    /// withdrawal with a fee is refused `fees_disabled`.
    pub fee_account: Option<crate::domain::ids::AccountId>,
    /// Rolling 24-hour and 30-day withdrawal limits per tier and currency
    /// (see [`WithdrawalLimit`]). Default: none.
    pub withdrawal_limits: Vec<WithdrawalLimit>,
    /// Longest `expires_in` a withdrawal may carry, in milliseconds.
    /// Default: 30 days.
    pub withdrawal_expiry_max_ms: u64,
    /// Operations accepted in one `submit` call. Default: 65,536. At most
    /// `shard_in_flight_ops_max` (checked at open): a batch whose
    /// operations all fall on one shard is admitted there whole, so a
    /// larger one could never be admitted.
    pub batch_ops_max: usize,
    /// Where the write-ahead log and snapshots live. `None` keeps state in
    /// memory only (and forces sync mode `none`). Default: `None`; the CLI
    /// defaults to `./data`. A durable ledger holds the folder's lock while
    /// open (a second open is refused) and checks the currencies against the
    /// folder's recorded table (see [`crate::storage::data_dir`]).
    pub data_dir: Option<PathBuf>,
    /// When an operation is acknowledged relative to the disk. Default:
    /// `Fsync` (a call returns only after its record is on disk). `None`
    /// with a `data_dir` that already holds a ledger is refused at open: it
    /// would ignore that ledger and lose every write at exit.
    pub sync: SyncMode,
    /// WAL segment size before a new segment is started. Default: 64 MiB.
    pub wal_segment_bytes_max: u64,
    /// Take a snapshot after this many logged events. Default: 10,000,000:
    /// a snapshot writes every account, so at a million events a second a
    /// snapshot per million events spent a tenth of a core on writing; a
    /// restart then replays at most this many events (≈ 3 s at 3 M/s).
    pub snapshot_every_events: u64,
    /// Take a snapshot at least this often while events are logged.
    /// Default: 300 s.
    pub snapshot_interval_secs: u64,
    /// Snapshots kept; WAL segments older than the oldest kept snapshot are
    /// deleted (or archived, see `archive_dir`). Keeping more than one lets
    /// recovery fall back when the newest is damaged. Default: 3.
    pub snapshots_kept: usize,
    /// Where WAL segments no snapshot needs any more are moved instead of
    /// deleted, so the hash chain stays checkable end to end
    /// (`burnledger verify --chain --archive-dir`). Default: none (deleted).
    pub archive_dir: Option<PathBuf>,
    /// Makes the log's writes or fsyncs fail on command: failure injection
    /// for tests of poisoning. Inert unless switched on.
    pub wal_fail_point: crate::storage::wal::FailPoint,
    /// How withdrawals are paid out. Default: batched every 300 s.
    pub payout_mode: PayoutMode,
    /// The payment service payouts go through. Without one the ledger makes
    /// no payouts whatever `payout_mode` says: the host reports outcomes
    /// with `complete_withdrawal` (external mode). Default: none.
    pub payment_service: Option<SharedPaymentService>,
    /// Where every timer of the ledger reads the time: the system clock by
    /// default; a [`ManualClock`](crate::clock::ManualClock) in tests, so
    /// they move time instead of waiting for it.
    pub clock: SharedClock,
    /// How long a ledger without a history keeps a finished withdrawal
    /// (completed, failed, cancelled, returned) in memory after its last
    /// change, in milliseconds. Past it the withdrawal is dropped: reading
    /// it, or acting on it (a return, a repeated outcome), answers
    /// `unknown_withdrawal` as if it never existed; the replay of the
    /// idempotency key that made it still answers its first result, without
    /// its times (never applied twice). Applies to a ledger without a data folder (or with sync
    /// mode `none`) and no [`withdrawal_history`](Self::withdrawal_history);
    /// a durable ledger forgets a withdrawal only once its history (its
    /// data folder's store, or the configured one) holds it, and never
    /// without one. At least 1. Default: 86,400,000 (24 h).
    pub finished_withdrawal_retention_ms: u64,
    /// How long an idempotency key is kept after its first use, in
    /// milliseconds, on the ledger's clock. Past it the engine logs the
    /// key's expiry (an event, so recovery and replay agree) and the key
    /// leaves memory, leaving an 8-byte fingerprint: the key's replay is
    /// then refused `idempotency_key_expired` (409), never applied twice.
    /// Checked on each idle sweep ([`account_idle_sweep_ms`](Self::account_idle_sweep_ms)),
    /// so a key may outlive it by up to a sweep (more while a shard holds
    /// many accounts: a sweep visits a bounded number of idle ones). At
    /// least 1. Default: 604,800,000 (7 days).
    pub idempotency_key_retention_ms: u64,
    /// Where finished withdrawals that left memory are kept and found
    /// again: the engine forgets them as far as each shard's horizon says,
    /// and reads them back for the commands and reads that name them, so
    /// those answer as before. A host's own history given here takes
    /// precedence over the data folder's store. Default: none (a durable
    /// ledger then uses its history store, see [`history`](Self::history);
    /// a memory-only one keeps them for the retention above).
    pub withdrawal_history: Option<SharedWithdrawalHistory>,
    /// Whether a durable ledger keeps a history store in its data folder
    /// (`<data_dir>/history/`), fed from the log: the withdrawal listings,
    /// account entries, transactions by id and balances at a time read it,
    /// and it is the engine's history unless
    /// [`withdrawal_history`](Self::withdrawal_history) gives one: a
    /// finished withdrawal leaves memory (the engine's, and the
    /// checkpointer's copy, so snapshots too) once the store holds it, and
    /// is read back from it when named. Without it those reads answer
    /// `history_unavailable` and a durable ledger keeps every withdrawal in
    /// memory (one a snapshot had forgotten is still read from the
    /// folder's store if a replayed return needs it). On 2 cores the store
    /// costs ≈ 70 % of the sustained fsync withdrawal throughput (README,
    /// *Performance*): turn it off for the full pace. Turning it off
    /// and on again rebuilds what the log still holds. Default: `true`.
    pub history: bool,
    /// The most bytes of log segments kept only because an event consumer
    /// (`Ledger::ack`) has not acknowledged their records yet: past it the
    /// oldest go anyway, and a consumer still behind them gets
    /// `cursor_expired`. Default: 1 GiB.
    pub event_retention_bytes: u64,
    /// The same cap in age (since a segment was last written), in ms on the
    /// injected clock. Default: 604,800,000 (7 days).
    pub event_retention_ms: u64,
    /// The replicated log every group-commit batch must also reach before
    /// its callers are acknowledged (see
    /// [`Replica`](crate::storage::wal::replica::Replica)); the
    /// `replication` feature's `burnledger::replication` ships batches to a
    /// NATS JetStream stream. Needs a data folder: the local log is kept
    /// too. A fenced replica poisons the ledger (it steps down). Default:
    /// none.
    pub replication: Option<SharedReplica>,
}

/// Where a ledger's batches are replicated ([`Config::replication`]).
#[derive(Clone)]
pub struct SharedReplica(pub Arc<dyn Replica>);

impl SharedReplica {
    pub fn new(replica: impl Replica) -> Self {
        Self(Arc::new(replica))
    }
}

impl std::fmt::Debug for SharedReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replica")
    }
}

/// A [`WithdrawalHistory`] shared by the ledger and whoever feeds it.
#[derive(Clone)]
pub struct SharedWithdrawalHistory(pub Arc<dyn WithdrawalHistory>);

impl SharedWithdrawalHistory {
    pub fn new(history: impl WithdrawalHistory) -> Self {
        Self(Arc::new(history))
    }
}

impl std::fmt::Debug for SharedWithdrawalHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WithdrawalHistory")
    }
}

/// A payment service shared by the ledger and its host (e.g. a test that
/// inspects a `SimulatedBank`).
#[derive(Clone)]
pub struct SharedPaymentService(pub Arc<dyn PaymentService>);

impl SharedPaymentService {
    pub fn new(service: impl PaymentService) -> Self {
        Self(Arc::new(service))
    }
}

impl std::fmt::Debug for SharedPaymentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PaymentService(max {} items per payout)",
            self.0.max_items_per_payout()
        )
    }
}

/// Parses `USD:2,EUR:2,BTC:8` into currency configs (the CLI's and the
/// HTTP service's `--currencies`).
pub fn parse_currencies(list: &str) -> Result<Vec<CurrencyConfig>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (code, decimals) = item
                .split_once(':')
                .ok_or_else(|| format!("{item:?}: expected CODE:DECIMALS, e.g. USD:2"))?;
            let decimals = decimals
                .parse::<u8>()
                .map_err(|_| format!("{item:?}: decimals must be a number from 0 to 18"))?;
            Ok(CurrencyConfig::new(code, decimals))
        })
        .collect()
}

/// Parses a sync mode: `fsync`, `buffered` (fsync every 100 ms),
/// `buffered:<ms>`, or `none`.
pub fn parse_sync(mode: &str) -> Result<SyncMode, String> {
    match mode {
        "fsync" => Ok(SyncMode::Fsync),
        "none" => Ok(SyncMode::None),
        "buffered" => Ok(SyncMode::Buffered { interval_ms: 100 }),
        other => other
            .strip_prefix("buffered:")
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(|interval_ms| SyncMode::Buffered { interval_ms })
            .ok_or_else(|| {
                format!("sync mode {other:?}: expected fsync, buffered, buffered:<ms> or none")
            }),
    }
}

/// Default for [`Config::snapshot_every_events`].
pub const SNAPSHOT_EVERY_EVENTS_DEFAULT: u64 = 10_000_000;
/// Default for [`Config::snapshot_interval_secs`].
pub const SNAPSHOT_INTERVAL_SECS_DEFAULT: u64 = 300;
/// Default for [`Config::snapshots_kept`].
pub const SNAPSHOTS_KEPT_DEFAULT: usize = 3;

/// Default for [`Config::shard_in_flight_ops_max`].
pub const SHARD_IN_FLIGHT_OPS_MAX_DEFAULT: usize = 262_144;
/// Default for [`Config::shard_account_actors_max`].
pub const SHARD_ACCOUNT_ACTORS_MAX_DEFAULT: usize = 65_536;
/// Default for [`Config::account_idle_sweep_ms`].
pub const ACCOUNT_IDLE_SWEEP_MS_DEFAULT: u64 = 10_000;
/// One withdrawal limit: accounts of `tier` withdraw at most `amount` of
/// `currency` over `window` (counting pending, processing and completed
/// withdrawals).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithdrawalLimit {
    pub tier: Tier,
    pub currency: String,
    pub window: Window,
    pub amount: rust_decimal::Decimal,
}

impl WithdrawalLimit {
    /// Reads `TIER:CURRENCY:WINDOW=AMOUNT`, say `default:USD:24h=10000`
    /// (what `--withdrawal-limit` takes). The amount is read as text,
    /// exactly.
    pub fn parse(text: &str) -> Result<Self, String> {
        let shape = || {
            format!("{text:?}: a limit is TIER:CURRENCY:WINDOW=AMOUNT, say default:USD:24h=10000 (WINDOW 24h or 30d)")
        };
        let (scope, amount) = text.split_once('=').ok_or_else(shape)?;
        let mut parts = scope.split(':');
        let (Some(tier), Some(currency), Some(window), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(shape());
        };
        let tier = Tier::new(tier).map_err(|e| e.to_string())?;
        let window = Window::parse(window).ok_or_else(shape)?;
        let amount = crate::domain::money::parse_amount_text(amount)
            .map_err(|e| format!("{text:?}: {e}"))?;
        Ok(Self {
            tier,
            currency: currency.to_string(),
            window,
            amount,
        })
    }
}

/// Default for [`Config::withdrawal_expiry_max_ms`]: 30 days.
pub const WITHDRAWAL_EXPIRY_MAX_MS_DEFAULT: u64 = 30 * 24 * 60 * 60 * 1_000;

/// Default for [`Config::account_pending_withdrawals_max`].
pub const ACCOUNT_PENDING_WITHDRAWALS_MAX_DEFAULT: u32 = 1_000;
/// Default for [`Config::finished_withdrawal_retention_ms`]: 24 h.
pub const FINISHED_WITHDRAWAL_RETENTION_MS_DEFAULT: u64 = 24 * 60 * 60 * 1_000;
/// Default for [`Config::idempotency_key_retention_ms`]: 7 days.
pub const IDEMPOTENCY_KEY_RETENTION_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1_000;
/// Default for [`Config::batch_ops_max`].
pub const BATCH_OPS_MAX_DEFAULT: usize = 65_536;

impl Default for Config {
    fn default() -> Self {
        Self {
            currencies: vec![
                CurrencyConfig::new("USD", 2),
                CurrencyConfig::new("EUR", 2),
                CurrencyConfig::new("BTC", 8),
            ],
            shards: std::thread::available_parallelism().map_or(2, |n| n.get()),
            shard_in_flight_ops_max: SHARD_IN_FLIGHT_OPS_MAX_DEFAULT,
            shard_account_actors_max: SHARD_ACCOUNT_ACTORS_MAX_DEFAULT,
            account_idle_sweep_ms: ACCOUNT_IDLE_SWEEP_MS_DEFAULT,
            account_pending_withdrawals_max: ACCOUNT_PENDING_WITHDRAWALS_MAX_DEFAULT,
            fee_account: None,
            withdrawal_limits: Vec::new(),
            withdrawal_expiry_max_ms: WITHDRAWAL_EXPIRY_MAX_MS_DEFAULT,
            batch_ops_max: BATCH_OPS_MAX_DEFAULT,
            data_dir: None,
            sync: SyncMode::Fsync,
            wal_segment_bytes_max: crate::storage::wal::SEGMENT_BYTES_MAX_DEFAULT,
            snapshot_every_events: SNAPSHOT_EVERY_EVENTS_DEFAULT,
            snapshot_interval_secs: SNAPSHOT_INTERVAL_SECS_DEFAULT,
            snapshots_kept: SNAPSHOTS_KEPT_DEFAULT,
            archive_dir: None,
            wal_fail_point: crate::storage::wal::FailPoint::default(),
            payout_mode: PayoutMode::Batched {
                interval_secs: crate::domain::payouts::PAYOUT_INTERVAL_SECS_DEFAULT,
            },
            payment_service: None,
            clock: SharedClock::system(),
            finished_withdrawal_retention_ms: FINISHED_WITHDRAWAL_RETENTION_MS_DEFAULT,
            idempotency_key_retention_ms: IDEMPOTENCY_KEY_RETENTION_MS_DEFAULT,
            withdrawal_history: None,
            replication: None,
            history: true,
            event_retention_bytes: crate::storage::events::RETENTION_BYTES_DEFAULT,
            event_retention_ms: crate::storage::events::RETENTION_MS_DEFAULT,
        }
    }
}

impl Config {
    /// Small limits, two shards: for tests that must reach every edge.
    pub fn for_tests() -> Self {
        Self {
            shards: 2,
            shard_in_flight_ops_max: 4_096,
            // Few actors and frequent sweeps, so tests keep stopping and
            // restarting account actors under their operations.
            shard_account_actors_max: 4,
            account_idle_sweep_ms: 20,
            account_pending_withdrawals_max: 8,
            batch_ops_max: 1_024,
            wal_segment_bytes_max: 64 * 1024,
            snapshot_every_events: 1_000,
            snapshots_kept: 2,
            ..Self::default()
        }
    }

    /// The same, durable in `dir` with `fsync`.
    pub fn for_tests_in(dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: Some(dir.into()),
            ..Self::for_tests()
        }
    }

    /// Whether a payout actor pays withdrawals out.
    pub fn makes_payouts(&self) -> bool {
        self.payment_service.is_some() && self.payout_mode != PayoutMode::External
    }

    /// The rules' configuration every account is judged by: the pending
    /// cap, the fee account and the limits in minor units of `currencies`
    /// (a limit in a currency not configured, not exact in it, or given
    /// twice for one tier, currency and window, is refused, saying which).
    pub fn policy(&self, currencies: &Currencies) -> Result<Policy, String> {
        let mut limits = WithdrawalLimits::default();
        for limit in &self.withdrawal_limits {
            let currency = currencies
                .get(&limit.currency)
                .map_err(|e| format!("withdrawal limit {} {}: {e}", limit.tier, limit.window))?;
            let units = currencies
                .parse_amount(currency, limit.amount)
                .map_err(|e| {
                    format!(
                        "withdrawal limit {} {} {}: {e}",
                        limit.tier, limit.currency, limit.window
                    )
                })?;
            if limits
                .of(limit.tier, currency.code)
                .get(limit.window)
                .is_some()
            {
                return Err(format!(
                    "withdrawal limit {} {} {} is given twice",
                    limit.tier, limit.currency, limit.window
                ));
            }
            limits.set(limit.tier, currency.code, limit.window, units);
        }
        Ok(Policy {
            pending_withdrawals_max: self.account_pending_withdrawals_max,
            fee_account: self.fee_account,
            limits,
        })
    }

    /// Whether operations are logged to disk.
    pub fn is_durable(&self) -> bool {
        self.data_dir.is_some() && self.sync != SyncMode::None
    }

    /// Checks the numbers make sense; the message says which does not.
    pub fn validate(&self) -> Result<(), String> {
        if self.shards == 0 {
            return Err("shards must be at least 1".into());
        }
        if self.shard_in_flight_ops_max == 0 {
            return Err("shard_in_flight_ops_max must be at least 1".into());
        }
        if self.shard_account_actors_max == 0 || self.account_idle_sweep_ms == 0 {
            return Err(
                "shard_account_actors_max and account_idle_sweep_ms must be at least 1".into(),
            );
        }
        if self.batch_ops_max == 0 {
            return Err("batch_ops_max must be at least 1".into());
        }
        if self.batch_ops_max > self.shard_in_flight_ops_max {
            return Err(format!(
                "batch_ops_max ({}) must not exceed shard_in_flight_ops_max ({}): a batch \
                 whose operations all fall on one shard is admitted whole, so a larger one \
                 would be refused as overloaded every time",
                self.batch_ops_max, self.shard_in_flight_ops_max
            ));
        }
        if self.snapshots_kept == 0 {
            return Err("snapshots_kept must be at least 1".into());
        }
        if let (Some(archive), Some(dir)) = (&self.archive_dir, &self.data_dir) {
            if *archive == crate::storage::wal::wal_dir(dir) {
                return Err("archive_dir must not be the log's own folder (<data_dir>/wal)".into());
            }
        }
        if self.snapshot_every_events == 0 || self.snapshot_interval_secs == 0 {
            return Err(
                "snapshot_every_events and snapshot_interval_secs must be at least 1".into(),
            );
        }
        if self.finished_withdrawal_retention_ms == 0 {
            return Err("finished_withdrawal_retention_ms must be at least 1".into());
        }
        if self.withdrawal_expiry_max_ms == 0 {
            return Err("withdrawal_expiry_max_ms must be at least 1".into());
        }
        if self.idempotency_key_retention_ms == 0 {
            return Err("idempotency_key_retention_ms must be at least 1".into());
        }
        if self.currencies.is_empty() {
            return Err("at least one currency must be configured".into());
        }
        if self.replication.is_some() && !self.is_durable() {
            return Err(
                "replication needs a data folder and a sync mode other than `none`: the \
                 local log is kept too"
                    .into(),
            );
        }
        Ok(())
    }
}
