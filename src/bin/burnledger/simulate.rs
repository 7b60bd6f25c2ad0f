//! `burnledger simulate`: the whole flow on embedded defaults, then the
//! invariants checked against the simulator's own tally.
//!
//! Workers run in parallel, each keeping many operations in flight through
//! the batch API: deposits, phase-1 withdrawal requests, phase-3 outcomes
//! (completed or failed) and cancels of the worker's own withdrawals,
//! transfers between random accounts, and idempotent replays (same key and
//! parameters → the first result; other parameters → a conflict). At the end
//! every withdrawal still pending gets its outcome, and the ledger's state is
//! audited: invariants 1–3 and 6 of the design.
//!
//! Withdrawals run as exchanges run them: most carry a fee (in their own
//! currency or the other), a destination and metadata, some an expiry short
//! enough to lapse before a payout takes them; every account is under a
//! 24-hour limit (a tenth of the accounts in a `vip` tier with a higher
//! one), and a few accounts are frozen (withdrawals, or everything) from
//! the start. Refusals for limits and freezes are expected only where they
//! apply. One more invariant is checked: the fees the fee account
//! collected equal the fees of the completed withdrawals.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use burnledger::config::{parse_sync, PayoutMode, SharedPaymentService};
use burnledger::domain::money::CurrencyCode;
use burnledger::domain::payouts::PAYOUT_INTERVAL_SECS_DEFAULT;
use burnledger::payment::{SimulatedBank, SimulatedBankConfig};
use burnledger::{
    Config, Decimal, Destination, FeeRequest, FreezeScope, IdempotencyKey, Ledger, LedgerError,
    Metadata, Operation, Outcome, TransactionId, WithdrawalLimit, WithdrawalOptions,
    WithdrawalOutcome, WithdrawalStatus,
};
use clap::Args;
use futures_util::future::join_all;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Accounts taking part.
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// Operations to run (after the opening deposits).
    #[arg(long, default_value_t = 1_000_000)]
    ops: u64,
    /// Operations per batch.
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Parallel workers, each with one batch in flight.
    #[arg(long, default_value_t = 8)]
    workers: u64,
    /// Shards (default: one per core).
    #[arg(long)]
    shards: Option<usize>,
    /// Seed of the random operation mix.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Data folder for the write-ahead log and snapshots; state there from
    /// earlier runs is recovered first and kept.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Move WAL segments no snapshot needs any more into this folder
    /// instead of deleting them, so `verify --chain --archive-dir` can
    /// check the log's hash chain end to end.
    #[arg(long)]
    archive_dir: Option<PathBuf>,
    /// fsync (acknowledge after fsync), buffered[:ms] (fsync on an
    /// interval) or none (memory only, no data folder).
    #[arg(long, default_value = "fsync")]
    sync: String,
    /// How often the payout job runs during the simulation: the seed's
    /// five-minute cron, sped up.
    #[arg(long, default_value_t = 100)]
    payout_every_ms: u64,
    /// Run the simulated bank without faults (by default it fails items,
    /// loses responses, times out and leaves items pending at random).
    #[arg(long)]
    no_bank_faults: bool,
}

const CURRENCIES: [&str; 2] = ["USD", "BTC"];

/// Where the simulation's fees go: no account a worker draws.
const FEE_ACCOUNT: u64 = 1 << 62;

/// The simulation's limits: per 24 hours, a `default` account withdraws
/// at most 300 USD or 0.03 BTC (a busy account reaches that), a `vip` one
/// a hundred times that.
const LIMITS: [&str; 4] = [
    "default:USD:24h=300",
    "default:BTC:24h=0.03",
    "vip:USD:24h=30000",
    "vip:BTC:24h=3",
];

/// Which accounts are frozen from the start, and for what: every 97th
/// account's withdrawals, every 101st account entirely.
fn frozen_scope(account: u64) -> Option<FreezeScope> {
    if account % 101 == 7 {
        Some(FreezeScope::All)
    } else if account % 97 == 5 {
        Some(FreezeScope::Withdrawals)
    } else {
        None
    }
}

/// What a worker saw acknowledged, to check the ledger against.
#[derive(Default)]
struct Tally {
    ops: u64,
    ok: u64,
    rejected: BTreeMap<&'static str, u64>,
    deposited: BTreeMap<&'static str, Decimal>,
    replays_checked: u64,
    conflicts_checked: u64,
    /// Withdrawals made with a fee, to check what the fee account collected.
    with_fees: Vec<TransactionId>,
    /// Broken expectations (a replay with another id, a settle that failed…).
    violations: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ops += other.ops;
        self.ok += other.ok;
        for (k, v) in other.rejected {
            *self.rejected.entry(k).or_default() += v;
        }
        for (k, v) in other.deposited {
            *self.deposited.entry(k).or_default() += v;
        }
        self.replays_checked += other.replays_checked;
        self.conflicts_checked += other.conflicts_checked;
        self.with_fees.extend(other.with_fees);
        self.violations.extend(other.violations);
    }
}

/// What a worker expects of each operation it sent.
enum Expect {
    Deposit(&'static str, Decimal),
    Withdrawal,
    Cancel,
    Transfer,
    Replay(TransactionId),
    Conflict,
}

struct Worker {
    id: u64,
    /// Keeps this run's idempotency keys apart from earlier runs' on the
    /// same data: the LSN the run started at.
    run: u64,
    rng: SmallRng,
    accounts: u64,
    /// This worker's own pending withdrawals: only it settles them, so every
    /// settle it sends must succeed.
    pending: Vec<(TransactionId, &'static str, Decimal)>,
    /// Recent keyed deposits: (key, account, currency, amount, first id).
    keyed: Vec<(IdempotencyKey, u64, &'static str, Decimal, TransactionId)>,
    next_key: u64,
    tally: Tally,
}

impl Worker {
    fn amount(&mut self, currency: &str) -> Decimal {
        match currency {
            "USD" => Decimal::new(self.rng.random_range(1..5_000), 2),
            _ => Decimal::new(self.rng.random_range(1..500_000), 8),
        }
    }

    fn code(currency: &str) -> CurrencyCode {
        CurrencyCode::new(currency)
            .unwrap_or_else(|_| unreachable!("simulated currencies are valid codes"))
    }

    fn next_op(&mut self) -> (Operation, Expect) {
        let account = self.rng.random_range(0..self.accounts);
        let currency = CURRENCIES[self.rng.random_range(0..CURRENCIES.len())];
        let roll = self.rng.random_range(0..100);
        match roll {
            0..=14 => {
                let amount = self.amount(currency) * Decimal::from(20);
                let keyed = self.rng.random_bool(0.3);
                let key = keyed.then(|| self.new_key());
                (
                    Operation::Deposit {
                        account,
                        currency: Self::code(currency),
                        amount,
                        idempotency_key: key,
                        metadata: Default::default(),
                    },
                    Expect::Deposit(currency, amount),
                )
            }
            15..=44 => {
                let amount = self.amount(currency);
                (
                    Operation::RequestWithdrawal {
                        account,
                        currency: Self::code(currency),
                        amount,
                        idempotency_key: None,
                        options: self.withdrawal_options(account, currency),
                    },
                    Expect::Withdrawal,
                )
            }
            // The payout job pays withdrawals; users sometimes cancel one
            // first, and sometimes lose that race to the payout's claim.
            45..=52 if !self.pending.is_empty() => {
                let index = self.rng.random_range(0..self.pending.len());
                let (tx, _, _) = self.pending.swap_remove(index);
                (
                    Operation::CancelWithdrawal { transaction_id: tx },
                    Expect::Cancel,
                )
            }
            53..=94 => {
                let to =
                    (account + 1 + self.rng.random_range(0..self.accounts - 1)) % self.accounts;
                (
                    Operation::Transfer {
                        from: account,
                        to,
                        currency: Self::code(currency),
                        amount: self.amount(currency),
                        idempotency_key: None,
                        metadata: Default::default(),
                    },
                    Expect::Transfer,
                )
            }
            _ if !self.keyed.is_empty() => {
                let index = self.rng.random_range(0..self.keyed.len());
                let (key, account, currency, amount, first) = self.keyed[index].clone();
                let conflict = self.rng.random_bool(0.5);
                let amount_sent = if conflict {
                    amount + Decimal::ONE
                } else {
                    amount
                };
                let op = Operation::Deposit {
                    account,
                    currency: Self::code(currency),
                    amount: amount_sent,
                    idempotency_key: Some(key),
                    metadata: Default::default(),
                };
                (
                    op,
                    if conflict {
                        Expect::Conflict
                    } else {
                        Expect::Replay(first)
                    },
                )
            }
            _ => {
                let amount = self.amount(currency);
                (
                    Operation::Deposit {
                        account,
                        currency: Self::code(currency),
                        amount,
                        idempotency_key: None,
                        metadata: Default::default(),
                    },
                    Expect::Deposit(currency, amount),
                )
            }
        }
    }

    /// What a withdrawal carries: usually a fee (a tenth of the time in
    /// the other currency), a destination and metadata; a twentieth of the
    /// time an expiry shorter than a payout interval, so some lapse.
    fn withdrawal_options(&mut self, account: u64, currency: &str) -> WithdrawalOptions {
        let fee = self.rng.random_bool(0.8).then(|| {
            let other = self.rng.random_bool(0.1);
            let fee_currency = match (currency, other) {
                ("USD", false) | ("BTC", true) => "USD",
                _ => "BTC",
            };
            let amount = match fee_currency {
                "USD" => Decimal::new(self.rng.random_range(1..200), 2),
                _ => Decimal::new(self.rng.random_range(1..20_000), 8),
            };
            FeeRequest {
                currency: Self::code(fee_currency),
                amount,
            }
        });
        let destination = Destination::new("account", format!("ext-{account}"), None).ok();
        let metadata = Metadata::new([("worker", self.id.to_string())]).unwrap_or_default();
        let expires_in = self
            .rng
            .random_bool(0.05)
            .then(|| Duration::from_millis(self.rng.random_range(1..60)));
        WithdrawalOptions {
            fee,
            destination,
            metadata,
            expires_in,
        }
    }

    fn new_key(&mut self) -> IdempotencyKey {
        self.next_key += 1;
        IdempotencyKey::new(&format!("sim-{}-{}-{}", self.run, self.id, self.next_key))
            .unwrap_or_else(|_| unreachable!("simulator keys are short"))
    }

    fn check(&mut self, op: &Operation, expect: Expect, result: Result<Outcome, LedgerError>) {
        self.tally.ops += 1;
        let error = match (&expect, result) {
            (Expect::Deposit(currency, amount), Ok(Outcome::Deposited(d))) => {
                *self.tally.deposited.entry(currency).or_default() += *amount;
                if let Operation::Deposit {
                    account,
                    idempotency_key: Some(key),
                    ..
                } = op
                {
                    if self.keyed.len() < 64 {
                        self.keyed.push((
                            key.clone(),
                            *account,
                            currency,
                            *amount,
                            d.transaction_id,
                        ));
                    }
                }
                None
            }
            (Expect::Withdrawal, Ok(Outcome::Withdrawal(w))) => {
                let currency = if w.currency.as_str() == "USD" {
                    "USD"
                } else {
                    "BTC"
                };
                if w.fee.is_some() {
                    self.tally.with_fees.push(w.transaction_id);
                }
                self.pending.push((w.transaction_id, currency, w.amount));
                None
            }
            (Expect::Cancel, Ok(Outcome::Withdrawal(w))) => {
                if w.status != WithdrawalStatus::Cancelled {
                    self.tally
                        .violations
                        .push(format!("cancel gave {:?}", w.status));
                }
                None
            }
            (Expect::Transfer, Ok(Outcome::Transferred(_))) => None,
            (Expect::Replay(first), Ok(Outcome::Deposited(d))) => {
                self.tally.replays_checked += 1;
                if d.transaction_id != *first {
                    self.tally.violations.push(format!(
                        "replayed key gave {} instead of the first result {first}",
                        d.transaction_id
                    ));
                }
                None
            }
            (Expect::Conflict, Err(LedgerError::IdempotencyConflict { .. })) => {
                self.tally.conflicts_checked += 1;
                self.tally.ok += 1;
                return;
            }
            (Expect::Conflict, other) => {
                self.tally
                    .violations
                    .push(format!("a reused key with other parameters gave {other:?}"));
                None
            }
            // Expected business rejections of a random mix.
            (Expect::Cancel, Err(e @ LedgerError::InvalidTransition { .. }))
            | (
                Expect::Withdrawal | Expect::Transfer,
                Err(e @ LedgerError::InsufficientFunds { .. }),
            )
            | (Expect::Withdrawal, Err(e @ LedgerError::TooManyPendingWithdrawals { .. }))
            | (Expect::Withdrawal, Err(e @ LedgerError::LimitExceeded { .. })) => Some(e),
            // A freeze refuses only where one applies (see `frozen_scope`).
            (_, Err(e @ LedgerError::AccountFrozen { .. })) if frozen_here(op, &e) => Some(e),
            (_, Err(e)) => {
                self.tally
                    .violations
                    .push(format!("unexpected rejection: {e}"));
                Some(e)
            }
            (_, Ok(other)) => {
                self.tally
                    .violations
                    .push(format!("unexpected outcome {other:?}"));
                None
            }
        };
        match error {
            None => self.tally.ok += 1,
            Some(e) => *self.tally.rejected.entry(e.code()).or_default() += 1,
        }
    }

    /// Runs `ops` operations in batches.
    async fn run(mut self, ledger: Ledger, ops: u64, batch: usize, progress: ProgressBar) -> Tally {
        let mut remaining = ops;
        while remaining > 0 {
            let size = remaining.min(batch as u64) as usize;
            let (ops, expects): (Vec<_>, Vec<_>) = (0..size).map(|_| self.next_op()).unzip();
            let results = ledger.submit(ops.clone()).await;
            for ((op, expect), result) in ops.iter().zip(expects).zip(results) {
                self.check(op, expect, result);
            }
            remaining -= size as u64;
            progress.inc(size as u64);
        }
        self.tally
    }
}

/// Whether a freeze refusal of `op` is one the set-up freezes explain: the
/// refused account (the op's own, or a transfer's receiver for an `all`
/// freeze) is frozen for that scope.
fn frozen_here(op: &Operation, error: &LedgerError) -> bool {
    let LedgerError::AccountFrozen { account, scope, .. } = error else {
        return false;
    };
    let involved = match op {
        Operation::Transfer { from, to, .. } => *account == *from || *account == *to,
        other => *account == other.account(),
    };
    involved && frozen_scope(*account) == Some(*scope)
}

/// Freezes the accounts `frozen_scope` names and moves every tenth account
/// to the `vip` tier (a second run on the same data repeats it: each is the
/// same freeze or tier again).
async fn set_controls(ledger: &Ledger, accounts: u64) -> Result<(), String> {
    for account in 0..accounts {
        if let Some(scope) = frozen_scope(account) {
            ledger
                .freeze_account(account, scope, None, "simulated review")
                .await
                .map_err(|e| e.to_string())?;
        }
        if account % 10 == 3 {
            ledger
                .set_account_tier(account, "vip")
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// The fees the fee account must have collected since `start`: those of
/// the completed (or since returned) withdrawals among `with_fees`, per
/// currency.
async fn fees_due(
    ledger: &Ledger,
    with_fees: &[TransactionId],
) -> Result<BTreeMap<String, Decimal>, String> {
    let mut due: BTreeMap<String, Decimal> = BTreeMap::new();
    for chunk in with_fees.chunks(LOOKUPS_AT_ONCE) {
        let answers = join_all(chunk.iter().map(|&tx| ledger.withdrawal(tx))).await;
        for answer in answers {
            let w = answer.map_err(|e| e.to_string())?;
            let completed = matches!(
                w.status,
                WithdrawalStatus::Completed | WithdrawalStatus::Returned { .. }
            );
            if let (true, Some(fee)) = (completed, w.fee) {
                *due.entry(fee.currency.as_str().to_string()).or_default() += fee.amount;
            }
        }
    }
    Ok(due)
}

/// The fee account's balance per currency (totals).
async fn fee_account_totals(ledger: &Ledger) -> Result<BTreeMap<String, Decimal>, String> {
    let balances = ledger
        .balances(FEE_ACCOUNT)
        .await
        .map_err(|e| e.to_string())?;
    Ok(balances
        .into_iter()
        .map(|b| (b.currency.as_str().to_string(), b.total))
        .collect())
}

/// Runs the simulation; `Ok(false)` if an invariant failed.
pub async fn run(args: SimulateArgs) -> Result<bool, String> {
    if args.accounts < 2 || args.batch == 0 || args.workers == 0 {
        return Err("simulate needs --accounts ≥ 2, --batch ≥ 1 and --workers ≥ 1".into());
    }
    let bank = if args.no_bank_faults {
        SimulatedBank::new(SimulatedBankConfig {
            seed: args.seed,
            ..SimulatedBankConfig::default()
        })
    } else {
        SimulatedBank::new(SimulatedBankConfig {
            seed: args.seed,
            ..SimulatedBankConfig::with_faults()
        })
    };
    let mut config = Config {
        sync: parse_sync(&args.sync)?,
        data_dir: Some(args.data_dir.clone()),
        archive_dir: args.archive_dir.clone(),
        // The simulator runs the payout job itself, sped up; the engine's
        // own tick (five minutes) would never fire in a short run.
        payout_mode: PayoutMode::Batched {
            interval_secs: PAYOUT_INTERVAL_SECS_DEFAULT,
        },
        payment_service: Some(SharedPaymentService::new(bank.clone())),
        fee_account: Some(FEE_ACCOUNT),
        // Sweeps (and so expiries) every 50 ms: within a short run.
        account_idle_sweep_ms: 50,
        withdrawal_limits: LIMITS
            .iter()
            .map(|limit| WithdrawalLimit::parse(limit))
            .collect::<Result<_, _>>()?,
        ..Config::default()
    };
    if let Some(shards) = args.shards {
        config.shards = shards;
    }
    let shards = config.shards;
    let durable = config.is_durable();
    let ledger = Ledger::open(config).map_err(|e| e.to_string())?;
    println!(
        "burnledger simulate: {} accounts, {} operations, {} workers × batches of {}, {} shards, seed {}",
        args.accounts, args.ops, args.workers, args.batch, shards, args.seed
    );
    if let Some(report) = ledger.recovery_report() {
        println!(
            "data            {} (sync {}): recovered {} accounts from {} + {} WAL records in {:.3} s{}",
            args.data_dir.display(),
            args.sync,
            report.accounts,
            report
                .snapshot
                .as_ref()
                .map_or("no snapshot".to_string(), |s| format!("snapshot at LSN {}", s.lsn)),
            report.records_replayed,
            report.elapsed.as_secs_f64(),
            if report.bytes_truncated > 0 {
                format!(", cut a torn tail of {} bytes", report.bytes_truncated)
            } else {
                String::new()
            }
        );
    } else if !durable {
        println!("data            memory only (sync none)");
    }
    // Earlier runs on the same data count towards the totals: start from them.
    let start = ledger.audit().await.map_err(|e| e.to_string())?;
    let fees_before = fee_account_totals(&ledger).await?;
    set_controls(&ledger, args.accounts).await?;

    let progress = ProgressBar::new(args.ops);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} ops  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.enable_steady_tick(Duration::from_millis(200));

    let started = Instant::now();
    let cron = {
        let ledger = ledger.clone();
        let every = Duration::from_millis(args.payout_every_ms.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(error) = ledger.run_payouts_now().await {
                    return error;
                }
            }
        })
    };
    let per_worker = args.ops / args.workers;
    let mut handles = Vec::new();
    for id in 0..args.workers {
        let ops = per_worker + u64::from(id < args.ops % args.workers);
        let worker = Worker {
            id,
            run: ledger.recovery_report().map_or(0, |r| r.last_lsn),
            rng: SmallRng::seed_from_u64(args.seed.wrapping_add(id)),
            accounts: args.accounts,
            pending: Vec::new(),
            keyed: Vec::new(),
            next_key: 0,
            tally: Tally::default(),
        };
        handles.push(tokio::spawn(worker.run(
            ledger.clone(),
            ops,
            args.batch,
            progress.clone(),
        )));
    }
    let mut tally = Tally::default();
    for handle in handles {
        tally.merge(
            handle
                .await
                .map_err(|e| format!("a worker panicked: {e}"))?,
        );
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    cron.abort();
    // Finished on its own only if a run failed; otherwise it was cancelled.
    if let Ok(error) = cron.await {
        return Err(format!("the payout job failed: {error}"));
    }
    // Drain: the payout job runs until no withdrawal waits for it.
    let drain_started = Instant::now();
    let mut drain_runs = 0;
    loop {
        drain_runs += 1;
        ledger.run_payouts_now().await.map_err(|e| e.to_string())?;
        let now = ledger.audit().await.map_err(|e| e.to_string())?;
        let waiting: u64 = ["pending", "processing"]
            .iter()
            .map(|s| now.withdrawals_by_status.get(s).copied().unwrap_or(0))
            .sum();
        if waiting == 0 {
            break;
        }
        if drain_runs >= PAYOUT_DRAIN_RUNS_MAX {
            println!("payouts         {waiting} withdrawals still waiting after {drain_runs} runs");
            break;
        }
    }
    let drained = drain_started.elapsed();
    let payouts = ledger.payouts().await.map_err(|e| e.to_string())?;
    let paid_once = check_each_paid_at_most_once(&ledger, &bank).await?;

    let terminal_ok = check_terminal_states_hold(&ledger, &bank).await;
    let fees_ok = check_fees_collected(&ledger, &fees_before, &tally.with_fees).await?;
    let audit = ledger.audit().await.map_err(|e| e.to_string())?;
    ledger.shutdown().await;

    let secs = elapsed.as_secs_f64().max(1e-9);
    println!(
        "operations      {} in {:.2} s = {:.0} ops/s ({} accepted, {} rejected as expected: {:?})",
        tally.ops,
        secs,
        tally.ops as f64 / secs,
        tally.ok,
        tally.rejected.values().sum::<u64>(),
        tally.rejected
    );
    print_payouts(&payouts, &bank, drain_runs, drained);
    println!("accounts        {}", audit.accounts);
    // Gauges count memory: finished withdrawals leave it once the history
    // store holds them; pending and processing ones never do.
    println!(
        "withdrawals     {:?} held in memory (finished ones leave it once the history store holds them)",
        audit.withdrawals_by_status
    );
    println!(
        "idempotency     {} replays returned the first result, {} conflicts refused",
        tally.replays_checked, tally.conflicts_checked
    );

    let mut sums_ok = true;
    println!("totals (all accounts):");
    for (code, (currency, sums)) in &audit.totals {
        let name = code.as_str();
        let total = currency.to_decimal(sums.total());
        let deposited = tally.deposited.get(name).copied().unwrap_or_default();
        // Paid out, as the bank itself recorded it (each item at most once).
        let completed: Decimal = bank
            .payments()
            .iter()
            .filter(|(payout, _, _)| {
                payouts
                    .iter()
                    .any(|p| p.payout_id == *payout && p.currency == *code)
            })
            .map(|(_, _, amount)| *amount)
            .sum();
        let before = start
            .totals
            .get(code)
            .map_or(Decimal::ZERO, |(c, sums)| c.to_decimal(sums.total()));
        let matches = total == before + deposited - completed;
        sums_ok &= matches;
        println!(
            "  {name:<4} total {total} = {before} before + acknowledged deposits {deposited} − paid out by the bank {completed}  [{}]",
            if matches { "ok" } else { "MISMATCH" }
        );
    }

    let waiting = |a: &burnledger::Audit| {
        ["pending", "processing"]
            .iter()
            .map(|s| a.withdrawals_by_status.get(s).copied().unwrap_or(0))
            .sum::<u64>()
    };
    let no_pending = waiting(&audit) <= waiting(&start);
    let checks = [
        (
            "1+2  balances ≥ 0; locked = Σ pending withdrawals",
            audit.is_clean(),
        ),
        (
            "3    Σ total = Σ deposits − Σ completed withdrawals",
            sums_ok,
        ),
        (
            "5    the bank paid each completed withdrawal once, no other",
            paid_once,
        ),
        (
            "6    terminal states never change; keys apply once",
            terminal_ok && tally.violations.is_empty(),
        ),
        ("     every withdrawal reached a terminal state", no_pending),
        (
            "     fees collected = Σ fees of completed withdrawals",
            fees_ok,
        ),
    ];
    println!("invariants:");
    for (name, ok) in &checks {
        println!("  {name:<55} {}", if *ok { "ok" } else { "FAILED" });
    }
    for violation in audit.violations.iter().chain(&tally.violations).take(20) {
        println!("  violation: {violation}");
    }
    Ok(checks.iter().all(|(_, ok)| *ok))
}

/// The fee account's gain since the run started, per currency, against
/// the fees of the run's completed withdrawals; printed, and `true` if
/// they are equal in every currency.
async fn check_fees_collected(
    ledger: &Ledger,
    before: &BTreeMap<String, Decimal>,
    with_fees: &[TransactionId],
) -> Result<bool, String> {
    let due = fees_due(ledger, with_fees).await?;
    let after = fee_account_totals(ledger).await?;
    let mut ok = true;
    for currency in CURRENCIES {
        let gained = after.get(currency).copied().unwrap_or_default()
            - before.get(currency).copied().unwrap_or_default();
        let owed = due.get(currency).copied().unwrap_or_default();
        ok &= gained == owed;
        println!(
            "fees            {currency:<4} collected {gained} = fees of the completed withdrawals {owed}  [{}]",
            if gained == owed { "ok" } else { "MISMATCH" }
        );
    }
    Ok(ok)
}

/// Runs of the payout job allowed to drain what is left after the workers.
const PAYOUT_DRAIN_RUNS_MAX: u32 = 10_000;

/// Invariant 5 against the bank's own record: every withdrawal the bank
/// paid was paid once and is completed (or returned after) as the ledger
/// answers for it, nothing else was paid. Each is looked up by id, so a
/// finished withdrawal that left memory for the history store counts as
/// it answers, not as memory happens to hold it.
async fn check_each_paid_at_most_once(
    ledger: &Ledger,
    bank: &SimulatedBank,
) -> Result<bool, String> {
    let mut times_paid: std::collections::HashMap<TransactionId, usize> =
        std::collections::HashMap::new();
    for (_, tx, _) in bank.payments() {
        *times_paid.entry(tx).or_default() += 1;
    }
    if times_paid.values().any(|&times| times > 1) {
        return Ok(false);
    }
    let paid: Vec<TransactionId> = times_paid.into_keys().collect();
    for chunk in paid.chunks(LOOKUPS_AT_ONCE) {
        let answers = join_all(chunk.iter().map(|&tx| ledger.withdrawal(tx))).await;
        for answer in answers {
            let withdrawal = answer.map_err(|e| e.to_string())?;
            let completed = matches!(
                withdrawal.status,
                WithdrawalStatus::Completed | WithdrawalStatus::Returned { .. }
            );
            if !completed {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Withdrawals looked up concurrently by the invariant checks.
const LOOKUPS_AT_ONCE: usize = 256;

fn print_payouts(
    payouts: &[burnledger::domain::payouts::PayoutView],
    bank: &SimulatedBank,
    drain_runs: u32,
    drain: Duration,
) {
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for p in payouts {
        *by_state.entry(p.state.as_str()).or_default() += 1;
    }
    let items: usize = payouts.iter().map(|p| p.items.len()).sum();
    let attempts: u64 = payouts.iter().map(|p| u64::from(p.attempts)).sum();
    println!(
        "payouts         {} payouts of {items} withdrawals {by_state:?}; {} submit calls, {attempts} service calls in all; drained in {drain_runs} runs, {:.2} s",
        payouts.len(),
        bank.submit_calls().len(),
        drain.as_secs_f64()
    );
}

/// Tries to change a few terminal withdrawals (some held in memory, some
/// the bank paid, which may have left it for the history store); each
/// attempt must be refused and leave the withdrawal as it was.
async fn check_terminal_states_hold(ledger: &Ledger, bank: &SimulatedBank) -> bool {
    let Ok(accounts) = ledger.export_accounts().await else {
        return false;
    };
    let held = accounts
        .iter()
        .flat_map(|a| a.withdrawals.iter().map(|w| w.transaction_id))
        .take(100);
    let paid = bank.payments().into_iter().map(|(_, tx, _)| tx).take(100);
    let terminal: Vec<TransactionId> = held.chain(paid).collect();
    for tx in terminal {
        let Ok(before) = ledger.withdrawal(tx).await else {
            return false;
        };
        let conflicting = match before.status {
            WithdrawalStatus::Completed => ledger.cancel_withdrawal(tx).await,
            _ => {
                ledger
                    .complete_withdrawal(tx, WithdrawalOutcome::Completed)
                    .await
            }
        };
        let refused = matches!(conflicting, Err(LedgerError::InvalidTransition { .. }));
        let unchanged = ledger.withdrawal(tx).await.ok() == Some(before);
        if !(refused && unchanged) {
            return false;
        }
    }
    true
}
