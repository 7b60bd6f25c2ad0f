//! `burnledger bench`: the embedded load harness. (With `--http URL` it is
//! the HTTP load client of `http_bench.rs` instead, unchanged.)
//!
//! It opens a ledger in this process through the public API only, funds
//! every account (untimed: one batched deposit each, for every workload, so
//! all accounts are resident), then runs `--in-flight` client tasks that
//! each keep one `Ledger::submit` batch in flight, for `--ops` operations
//! or for `--duration` seconds.
//!
//! Counting: every `Operation` submitted in the timed phase is one op, so a
//! withdrawal's lifecycle is two (its request, then its outcome, sent in
//! the client's next batch alongside new requests so batches stay full).
//! With `--ops`, each client stops drawing new ops at its share (a request
//! counts two when drawn, so the total can pass `--ops` by one per client);
//! with `--duration`, it stops drawing when the time is up and then settles
//! the withdrawals it still owes, and those count too. The clock runs from
//! the first client's start to the last client's end. Generating the ops
//! (a seeded RNG, a few tens of ns per op) is inside the engine's timed loop,
//! so `--duration` needs no bound and no pre-built op list adds to the RSS.
//!
//! Every answer is checked against the answer the op must get; accounts are
//! funded far beyond what any run moves, so every refusal is an error, and
//! any error makes the command exit non-zero.
//!
//! Latency: each op is recorded with its batch's time from the `submit`
//! call to its answer, in microseconds (hdrhistogram, 3 significant digits).
//!
//! Peak RSS is the process's `VmHWM` once the engine run is over (setup
//! included) and before the baseline allocates anything: it describes the
//! engine. The baseline (see `baseline.rs`) then replays the same op
//! streams on one thread over a `HashMap`; `ratio_to_baseline` is the
//! engine's ops/s over the baseline's.

mod baseline;
mod data_dir;
mod engine;
mod report;
mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use burnledger::config::{
    parse_sync, PayoutMode, SyncMode, ACCOUNT_PENDING_WITHDRAWALS_MAX_DEFAULT,
    BATCH_OPS_MAX_DEFAULT, SHARD_IN_FLIGHT_OPS_MAX_DEFAULT,
};
use burnledger::{Config, Ledger};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::runtime::Runtime;

use data_dir::DataDir;
use engine::{ClientReport, SETUP_BATCH};
use report::{rate, Latency, Report, Resident};
use workload::{share, Stream, Workload};

#[derive(Args, Debug)]
// With `http`, the HTTP client's `--http URL` is optional here (it picks the
// mode) and cannot be mixed with the embedded options.
#[cfg_attr(
    feature = "http",
    command(mut_arg("url", |arg| arg.required(false).conflicts_with("EmbeddedArgs")))
)]
pub struct BenchArgs {
    #[command(flatten)]
    embedded: EmbeddedArgs,
    #[cfg(feature = "http")]
    #[command(flatten, next_help_heading = "HTTP mode (drive a running `serve`)")]
    http: Option<crate::http_bench::HttpBenchArgs>,
}

#[derive(Args, Debug)]
pub struct EmbeddedArgs {
    /// What the timed phase sends.
    #[arg(value_enum)]
    workload: Option<Workload>,
    /// The same as the positional WORKLOAD.
    #[arg(
        long = "workload",
        value_enum,
        value_name = "WORKLOAD",
        hide_possible_values = true,
        conflicts_with = "workload"
    )]
    workload_flag: Option<Workload>,
    /// Accounts, all funded before the clock starts; ops pick them uniformly.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=ACCOUNTS_MAX))]
    accounts: u64,
    /// Operations to run in the timed phase (a withdrawal is two).
    #[arg(long, default_value_t = 1_000_000, value_parser = parse_ops)]
    ops: u64,
    /// Run for this many seconds instead of a number of ops (wins over --ops).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    duration: Option<Duration>,
    /// fsync (acknowledge after fsync), buffered[:ms] (fsync on an
    /// interval) or none (memory only, no data folder).
    #[arg(long, default_value = "fsync")]
    sync: String,
    /// Client tasks, each keeping one batch in flight.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
    in_flight: u64,
    /// Operations per batch (`Ledger::submit` call).
    #[arg(long, default_value_t = 1_024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch: u64,
    /// Shards (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    shards: Option<u64>,
    /// Data folder for the log and snapshots, kept afterwards (default: a
    /// fresh temporary folder, removed at the end). Unused with --sync none.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seed of the op streams (the baseline replays the same ones).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// Most accounts a run may fund (a billion would already need far more
/// memory than one machine has).
const ACCOUNTS_MAX: u64 = 1_000_000_000;

fn parse_ops(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("at least 1 op is needed".into()),
        Ok(ops) => Ok(ops),
        Err(_) => Err(format!("{text:?} is not a count of ops")),
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if secs <= 0.0 {
        return Err("the duration must be more than 0 seconds".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} seconds is out of range"))
}

/// Runs the bench; `Ok(false)` if any op got an unexpected answer.
pub fn run(args: BenchArgs, runtime: &Runtime) -> Result<bool, String> {
    #[cfg(feature = "http")]
    if let Some(http) = args.http {
        return crate::http_bench::run(http);
    }
    runtime.block_on(run_embedded(args.embedded))
}

async fn run_embedded(args: EmbeddedArgs) -> Result<bool, String> {
    let workload = args
        .workload
        .or(args.workload_flag)
        .unwrap_or(Workload::Withdrawals);
    if args.accounts < 2 && matches!(workload, Workload::Transfers | Workload::Mixed) {
        return Err(format!(
            "bench {}: transfers need --accounts 2 or more",
            workload.name()
        ));
    }
    let sync = parse_sync(&args.sync)?;
    let data_dir = DataDir::choose(args.data_dir.clone(), sync == SyncMode::None)?;
    let config = engine_config(&args, sync, &data_dir);
    let shards = config.shards;
    let ledger = Ledger::open(config).map_err(|e| format!("bench: {e}"))?;
    eprintln!(
        "bench {}: {} accounts, {}, sync {}, {shards} shards, {} in flight × batches of {}, data {}",
        workload.name(),
        args.accounts,
        args.duration.map_or(format!("{} ops", args.ops), |d| format!(
            "{:.1} s",
            d.as_secs_f64()
        )),
        args.sync,
        args.in_flight,
        args.batch,
        data_dir.describe(),
    );
    let measured = measure(&ledger, &args, workload).await;
    ledger.shutdown().await;
    drop(data_dir);
    let measured = measured?;

    let mut latency = engine::new_histogram()?;
    let (mut ops, mut errors, mut first_error) = (0, 0, None);
    let mut replays = Vec::with_capacity(measured.clients.len());
    for (client, report) in measured.clients.into_iter().enumerate() {
        latency
            .add(&report.latency_us)
            .map_err(|e| format!("histogram: {e}"))?;
        ops += report.ops;
        errors += report.errors;
        first_error = first_error.or(report.first_error);
        replays.push((stream(&args, workload, client as u64), report.draws));
    }
    if let Some(error) = &first_error {
        eprintln!("bench: {errors} ops failed; the first: {error}");
    }
    let baseline = baseline::run(replays, args.accounts)?;
    eprintln!(
        "baseline: {} ops in {:.3} s on one thread; drawing them took {:.0} ns/op (the \
         engine's clients draw inside their timed loop)",
        baseline.ops,
        baseline.seconds,
        baseline.generate_seconds * 1e9 / baseline.ops.max(1) as f64
    );
    let ops_per_sec = rate(ops, measured.seconds);
    let baseline_ops_per_sec = rate(baseline.ops, baseline.seconds);
    Report {
        workload: workload.name(),
        sync: args.sync,
        accounts: args.accounts,
        shards,
        in_flight: args.in_flight as usize,
        batch: args.batch as usize,
        seed: args.seed,
        setup_seconds: measured.setup_seconds,
        ops,
        seconds: measured.seconds,
        ops_per_sec,
        errors,
        latency_us: Latency::of(&latency),
        peak_rss_bytes: measured.resident.as_ref().map(|r| r.peak),
        rss_end_bytes: measured.resident.as_ref().map(|r| r.now),
        baseline_ops: baseline.ops,
        baseline_seconds: baseline.seconds,
        baseline_ops_per_sec,
        ratio_to_baseline: ops_per_sec / baseline_ops_per_sec,
    }
    .print(args.json)?;
    Ok(errors == 0)
}

/// The engine's configuration: the defaults, with the limits raised so the
/// bench's own load is admitted, and no payment service.
fn engine_config(args: &EmbeddedArgs, sync: SyncMode, data_dir: &DataDir) -> Config {
    let (in_flight, batch) = (args.in_flight as usize, args.batch as usize);
    let defaults = Config::default();
    Config {
        shards: args.shards.map_or(defaults.shards, |s| s as usize),
        data_dir: data_dir.path(),
        sync,
        // Room for every client's batch (or the setup's) in one shard at
        // once, so `overloaded` never fires; and for every withdrawal in
        // flight to be on one account.
        shard_in_flight_ops_max: SHARD_IN_FLIGHT_OPS_MAX_DEFAULT
            .max(in_flight.saturating_mul(batch.max(SETUP_BATCH))),
        account_pending_withdrawals_max: ACCOUNT_PENDING_WITHDRAWALS_MAX_DEFAULT
            .max(u32::try_from(in_flight.saturating_mul(batch)).unwrap_or(u32::MAX)),
        batch_ops_max: BATCH_OPS_MAX_DEFAULT.max(batch).max(SETUP_BATCH),
        // The bench sends the outcomes itself (external mode).
        payout_mode: PayoutMode::External,
        payment_service: None,
        ..defaults
    }
}

/// Client `client`'s stream: the engine run and the baseline build it the
/// same way, so they see the same ops.
fn stream(args: &EmbeddedArgs, workload: Workload, client: u64) -> Stream {
    let quota = args
        .duration
        .is_none()
        .then(|| share(args.ops, args.in_flight, client));
    let batch = args.batch as usize;
    Stream::new(workload, args.seed, client, args.accounts, batch, quota)
}

/// What the engine run measured.
struct Measured {
    setup_seconds: f64,
    seconds: f64,
    clients: Vec<ClientReport>,
    resident: Option<Resident>,
}

/// Funds the accounts (untimed), then runs the clients (timed).
async fn measure(
    ledger: &Ledger,
    args: &EmbeddedArgs,
    workload: Workload,
) -> Result<Measured, String> {
    let in_flight = args.in_flight as usize;
    let setup_started = Instant::now();
    let progress = progress_bar(Some(args.accounts), "accounts funded");
    let funded = engine::fund(ledger, args.accounts, in_flight, &progress).await;
    progress.finish_and_clear();
    funded?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    eprintln!(
        "setup: funded {} accounts in {setup_seconds:.3} s (untimed)",
        args.accounts
    );
    let streams = (0..args.in_flight)
        .map(|client| stream(args, workload, client))
        .collect();
    let progress = progress_bar(args.duration.is_none().then_some(args.ops), "ops");
    let run = engine::run_clients(ledger, streams, args.duration, &progress).await;
    progress.finish_and_clear();
    let (clients, seconds) = run?;
    Ok(Measured {
        setup_seconds,
        seconds,
        clients,
        // Now, before the shutdown and the baseline allocate anything.
        resident: Resident::read(),
    })
}

/// A bar on stderr (hidden when stderr is not a terminal); a spinner when
/// the total is unknown (a timed run).
fn progress_bar(total: Option<u64>, unit: &str) -> ProgressBar {
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            format!("{{bar:40}} {{pos}}/{{len}} {unit}  {{per_sec}}  eta {{eta}}"),
        ),
        None => (
            ProgressBar::no_length(),
            format!("{{spinner}} {{pos}} {unit}  {{per_sec}}  {{elapsed}}"),
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
