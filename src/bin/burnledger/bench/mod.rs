//! `burnledger bench`: the embedded load harness. (With `--http URL` it is
//! the HTTP load client of `http_bench.rs` instead, unchanged.)
//!
//! It opens a ledger in this process through the public API only (with
//! `--replicate`, the writer of a replicated node, to measure replication),
//! funds every account (untimed: one batched deposit each, for every
//! workload, so all accounts are resident), then runs `--in-flight`
//! client tasks that each keep one `Ledger::submit` batch in flight, for
//! `--ops` operations or for `--duration` seconds.
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
//! That is a closed loop: a slow answer delays the next batch, so latency is
//! only seen at saturation. `--rate OPS` runs an open loop instead
//! (`rate.rs`): batches go out on a fixed schedule whatever the answers, and
//! latency runs from each batch's scheduled start.
//!
//! Peak RSS is the process's `VmHWM` once the engine run is over (setup
//! included) and before the baseline allocates anything: it describes the
//! engine. The baseline (see `baseline.rs`) then replays the same op
//! streams on one thread over a `HashMap`; `ratio_to_baseline` is the
//! engine's ops/s over the baseline's.
//!
//! CPU: the process's CPU time in the timed phase (all threads), in all
//! and per op, and per op by thread name (what each part of the engine
//! costs; work a background thread does after the timed phase is not in
//! it). On a shared machine ops/s follows the load; CPU per op moves less,
//! so it is the figure to compare runs by.

mod baseline;
mod data_dir;
mod engine;
mod rate;
mod report;
mod subscriber;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use burnledger::config::{
    parse_sync, PayoutMode, SyncMode, ACCOUNT_PENDING_WITHDRAWALS_MAX_DEFAULT,
    BATCH_OPS_MAX_DEFAULT, SHARD_IN_FLIGHT_OPS_MAX_DEFAULT,
};
use burnledger::{Config, Ledger, WithdrawalLimit};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::runtime::Runtime;

use data_dir::DataDir;
use engine::{ClientReport, SETUP_BATCH};
use report::{per_second, CpuTime, Latency, RateFigures, Report, Resident, ThreadCpu};
use subscriber::{Subscriber, SubscriberFigures};
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
    /// Client tasks, each keeping one batch in flight [default: 8]. With
    /// --rate: the most batches unanswered at once [default: 1024].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    in_flight: Option<u64>,
    /// Operations per batch (`Ledger::submit` call).
    #[arg(long, default_value_t = 1_024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch: u64,
    /// Open loop: offer OPS operations per second, in batches of --batch,
    /// whatever the answers.
    ///
    /// Batch i is due at start + i × batch / OPS and is sent then, whether
    /// or not earlier batches have answered; at most --in-flight may be
    /// unanswered, and a batch that finds that many waits and goes late.
    /// Each op's latency runs from its batch's scheduled start, not from
    /// when it was sent, so time spent waiting behind a slow engine is
    /// counted (no coordinated omission). No batch is dropped: late ones
    /// are counted and reported (the `rate` object with --json: batches,
    /// late_batches and late_ops (sent > 1 ms after their time),
    /// capped_batches (waited for --in-flight), send_lag_max_us). ops/s is
    /// then the rate achieved, to compare with the one offered. One stream
    /// of ops; each withdrawal's outcome goes in the first batch after its
    /// request has answered. A batch's ops share its scheduled start: the
    /// wait a front end would add to gather a batch (up to batch / OPS) is
    /// not counted, so keep --batch small for latency at low rates.
    #[arg(long, value_name = "OPS", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    rate: Option<u64>,
    /// Shards (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    shards: Option<u64>,
    /// Data folder for the log and snapshots, kept afterwards (default: a
    /// fresh temporary folder, removed at the end). Unused with --sync none.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run without the data folder's history store (to measure its cost).
    #[arg(long)]
    no_history: bool,
    /// Every withdrawal carries a fee (0.01 USD, collected into a fee
    /// account on completion) and every account is under 24-hour and
    /// 30-day withdrawal limits (far above what a run withdraws, so none
    /// refuses): to measure what fees and limits cost.
    #[arg(long)]
    fees_and_limits: bool,
    /// Attach an event-feed subscriber for the whole run (to measure the
    /// feed's cost and how far behind it reads; needs a data folder).
    #[arg(long)]
    subscribe: bool,
    /// Replicate the log on this NATS JetStream cluster
    /// (nats://h1:4222,...; feature `replication`): the ledger is the
    /// writer of stream --stream, each batch acknowledged once the stream
    /// has it too (to measure replication's cost).
    #[arg(long)]
    replicate: Option<String>,
    /// The stream --replicate writes (made if missing; use a fresh one).
    #[arg(long, default_value = "burnledger-bench")]
    stream: String,
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

/// `--in-flight`'s default: closed-loop client tasks.
const CLIENTS_DEFAULT: u64 = 8;

/// `--in-flight`'s default with `--rate`: the most batches unanswered. It
/// bounds memory only; an open loop ought not to be held back by it.
const RATE_IN_FLIGHT_DEFAULT: u64 = 1_024;

impl EmbeddedArgs {
    /// Client tasks (closed loop) or the most batches in flight (`--rate`).
    fn in_flight(&self) -> u64 {
        let default = match self.rate {
            Some(_) => RATE_IN_FLIGHT_DEFAULT,
            None => CLIENTS_DEFAULT,
        };
        self.in_flight.unwrap_or(default)
    }
}

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

/// What keeps a replicated bench's node alive until the end.
type Keep = Option<Box<dyn std::any::Any + Send + Sync>>;

/// The bench's ledger: on its own, or with `--replicate` the writer of a
/// replicated node.
async fn open_ledger(args: &EmbeddedArgs, config: Config) -> Result<(Ledger, Keep), String> {
    let Some(urls) = args.replicate.as_deref() else {
        let ledger = Ledger::open(config).map_err(|e| format!("bench: {e}"))?;
        return Ok((ledger, None));
    };
    open_replicated(urls, &args.stream, config).await
}

#[cfg(feature = "replication")]
async fn open_replicated(
    urls: &str,
    stream: &str,
    config: Config,
) -> Result<(Ledger, Keep), String> {
    use burnledger::replication::node::{Node, NodeSettings};
    use burnledger::replication::StreamSettings;
    let settings = NodeSettings {
        stream: StreamSettings {
            servers: urls.split(',').map(|s| s.trim().to_string()).collect(),
            stream: stream.to_string(),
            replicas: 3,
            request_timeout: Duration::from_secs(2),
        },
        node: "bench".into(),
        url: None,
        lease_ttl: Duration::from_secs(10),
        append_deadline: Duration::from_secs(30),
        auto_promote: false,
        snapshot_publish_every: Duration::from_secs(30),
    };
    let node = Node::start(config, settings, true)
        .await
        .map_err(|e| format!("bench: {e}"))?;
    Ok((node.ledger(), Some(Box::new(node))))
}

#[cfg(not(feature = "replication"))]
async fn open_replicated(_: &str, _: &str, _: Config) -> Result<(Ledger, Keep), String> {
    Err("bench: --replicate needs a burnledger built with --features replication".into())
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
    let (ledger, _node) = open_ledger(&args, config).await?;
    eprintln!(
        "bench {}: {} accounts, {}, sync {}, {shards} shards, {}, data {}",
        workload.name(),
        args.accounts,
        args.duration
            .map_or(format!("{} ops", args.ops), |d| format!(
                "{:.1} s",
                d.as_secs_f64()
            )),
        args.sync,
        match args.rate {
            Some(rate) => format!(
                "open loop at {rate} ops/s in batches of {}, at most {} in flight",
                args.batch,
                args.in_flight()
            ),
            None => format!("{} in flight × batches of {}", args.in_flight(), args.batch),
        },
        data_dir.describe(),
    );
    let measured = measure(&ledger, &args, workload).await;
    ledger.shutdown().await;
    drop(data_dir);
    let measured = measured?;

    let mut latency = engine::new_histogram()?;
    let (mut ops, mut errors, mut first_error) = (0, 0, None);
    for report in measured.timed.clients {
        latency
            .add(&report.latency_us)
            .map_err(|e| format!("histogram: {e}"))?;
        ops += report.ops;
        errors += report.errors;
        first_error = first_error.or(report.first_error);
    }
    if let Some(error) = &first_error {
        eprintln!("bench: {errors} ops failed; the first: {error}");
    }
    let baseline = baseline::run(measured.timed.replays, args.accounts)?;
    eprintln!(
        "baseline: {} ops in {:.3} s on one thread; drawing them took {:.0} ns/op (the \
         engine's clients draw inside their timed loop)",
        baseline.ops,
        baseline.seconds,
        baseline.generate_seconds * 1e9 / baseline.ops.max(1) as f64
    );
    let ops_per_sec = per_second(ops, measured.timed.seconds);
    let baseline_ops_per_sec = per_second(baseline.ops, baseline.seconds);
    Report {
        workload: workload.name(),
        sync: args.sync.clone(),
        accounts: args.accounts,
        shards,
        in_flight: args.in_flight() as usize,
        batch: args.batch as usize,
        seed: args.seed,
        setup_seconds: measured.setup_seconds,
        ops,
        seconds: measured.timed.seconds,
        ops_per_sec,
        errors,
        latency_us: Latency::of(&latency),
        peak_rss_bytes: measured.resident.as_ref().map(|r| r.peak),
        rss_end_bytes: measured.resident.as_ref().map(|r| r.now),
        cpu_seconds: measured.cpu_seconds,
        cpu_us_per_op: measured.cpu_seconds.map(|s| s * 1e6 / ops.max(1) as f64),
        cpu_us_per_op_by_thread: measured.cpu_by_thread.map(|by_thread| {
            (by_thread.into_iter())
                .map(|(name, s)| (name, s * 1e6 / ops.max(1) as f64))
                .collect()
        }),
        baseline_ops: baseline.ops,
        baseline_seconds: baseline.seconds,
        baseline_ops_per_sec,
        ratio_to_baseline: ops_per_sec / baseline_ops_per_sec,
        rate: measured.timed.rate,
        subscriber: measured.subscriber,
    }
    .print(args.json)?;
    Ok(errors == 0)
}

/// The engine's configuration: the defaults, with the limits raised so the
/// bench's own load is admitted, and no payment service.
fn engine_config(args: &EmbeddedArgs, sync: SyncMode, data_dir: &DataDir) -> Config {
    let (in_flight, batch) = (args.in_flight() as usize, args.batch as usize);
    let defaults = Config::default();
    // Withdrawals pending at once, all possibly on one account: those in
    // flight, and (open loop) as many again answered and waiting for their
    // outcome's batch.
    let pending = in_flight
        .saturating_add(1)
        .saturating_mul(batch)
        .saturating_mul(2);
    Config {
        shards: args.shards.map_or(defaults.shards, |s| s as usize),
        data_dir: data_dir.path(),
        sync,
        // Room for every client's batch (or the setup's) in one shard at
        // once, so `overloaded` never fires; and for every withdrawal
        // pending to be on one account.
        shard_in_flight_ops_max: SHARD_IN_FLIGHT_OPS_MAX_DEFAULT
            .max(in_flight.saturating_mul(batch.max(SETUP_BATCH))),
        account_pending_withdrawals_max: ACCOUNT_PENDING_WITHDRAWALS_MAX_DEFAULT
            .max(u32::try_from(pending).unwrap_or(u32::MAX)),
        batch_ops_max: BATCH_OPS_MAX_DEFAULT.max(batch).max(SETUP_BATCH),
        // The bench sends the outcomes itself (external mode).
        payout_mode: PayoutMode::External,
        payment_service: None,
        history: !args.no_history,
        fee_account: args.fees_and_limits.then_some(FEE_ACCOUNT),
        withdrawal_limits: if args.fees_and_limits {
            bench_limits()
        } else {
            Vec::new()
        },
        ..defaults
    }
}

/// Where `--fees-and-limits` collects fees: no account the run funds.
const FEE_ACCOUNT: u64 = ACCOUNTS_MAX + 1;

/// The limits of `--fees-and-limits`: the largest a withdrawal limit may be
/// (a currency's per-operation maximum), per day and per month.
fn bench_limits() -> Vec<WithdrawalLimit> {
    [
        "default:USD:24h=1000000000000",
        "default:USD:30d=1000000000000",
    ]
    .into_iter()
    .filter_map(|limit| WithdrawalLimit::parse(limit).ok())
    .collect()
}

/// Client `client`'s stream, drawing `quota` ops (`None`: until told to
/// stop). The engine run and the baseline build it the same way, so they
/// see the same ops.
fn stream(args: &EmbeddedArgs, workload: Workload, client: u64, quota: Option<u64>) -> Stream {
    let batch = args.batch as usize;
    Stream::new(workload, args.seed, client, args.accounts, batch, quota)
}

/// What the engine run measured.
struct Measured {
    setup_seconds: f64,
    /// CPU time of the process in the timed phase, in all and by thread
    /// name.
    cpu_seconds: Option<f64>,
    cpu_by_thread: Option<BTreeMap<String, f64>>,
    timed: Timed,
    resident: Option<Resident>,
    /// With `--subscribe`.
    subscriber: Option<SubscriberFigures>,
}

/// What the timed phase did.
struct Timed {
    seconds: f64,
    clients: Vec<ClientReport>,
    /// The streams for the baseline, each with the batches it drew new ops
    /// in.
    replays: Vec<(Stream, u64)>,
    /// The open loop's figures (`--rate`).
    rate: Option<RateFigures>,
}

/// Funds the accounts (untimed), then runs the clients (timed).
async fn measure(
    ledger: &Ledger,
    args: &EmbeddedArgs,
    workload: Workload,
) -> Result<Measured, String> {
    let setup_started = Instant::now();
    let subscriber = args
        .subscribe
        .then(|| Subscriber::attach(ledger))
        .transpose()?;
    let progress = progress_bar(Some(args.accounts), "accounts funded");
    // The open loop's --in-flight is a cap, not a count of clients.
    let funders = args.in_flight.unwrap_or(CLIENTS_DEFAULT) as usize;
    let funded = engine::fund(ledger, args.accounts, funders, &progress).await;
    progress.finish_and_clear();
    funded?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    eprintln!(
        "setup: funded {} accounts in {setup_seconds:.3} s (untimed)",
        args.accounts
    );
    let progress = progress_bar(args.duration.is_none().then_some(args.ops), "ops");
    let (cpu_start, threads_start) = (CpuTime::read(), ThreadCpu::read());
    let run = match args.rate {
        None => closed_loop(ledger, args, workload, &progress).await,
        Some(rate) => open_loop(ledger, args, workload, rate, &progress).await,
    };
    progress.finish_and_clear();
    // The subscriber's catching up after the load is its own figure, not
    // the load's CPU time.
    let cpu_seconds = CpuTime::read()
        .zip(cpu_start)
        .map(|(end, start)| end.since(&start));
    let cpu_by_thread = ThreadCpu::read()
        .zip(threads_start)
        .map(|(end, start)| end.since(&start));
    let subscriber = match subscriber {
        Some(subscriber) => Some(subscriber.finish().await?),
        None => None,
    };
    Ok(Measured {
        setup_seconds,
        cpu_seconds,
        cpu_by_thread,
        timed: run?,
        // Now, before the shutdown and the baseline allocate anything.
        resident: Resident::read(),
        subscriber,
    })
}

/// `--in-flight` clients, each with one batch in flight.
async fn closed_loop(
    ledger: &Ledger,
    args: &EmbeddedArgs,
    workload: Workload,
    progress: &ProgressBar,
) -> Result<Timed, String> {
    let clients = args.in_flight();
    let quota = |client| {
        args.duration
            .is_none()
            .then(|| share(args.ops, clients, client))
    };
    let streams = (0..clients)
        .map(|client| stream(args, workload, client, quota(client)))
        .collect();
    let (reports, seconds) = engine::run_clients(ledger, streams, args.duration, progress).await?;
    let replays = reports
        .iter()
        .enumerate()
        .map(|(client, report)| {
            let client = client as u64;
            (stream(args, workload, client, quota(client)), report.draws)
        })
        .collect();
    Ok(Timed {
        seconds,
        clients: reports,
        replays,
        rate: None,
    })
}

/// One stream on a schedule of `rate` ops/s (see `rate.rs`).
async fn open_loop(
    ledger: &Ledger,
    args: &EmbeddedArgs,
    workload: Workload,
    ops_per_sec: u64,
    progress: &ProgressBar,
) -> Result<Timed, String> {
    let quota = args.duration.is_none().then_some(args.ops);
    let schedule = rate::Schedule {
        rate: ops_per_sec,
        batch: args.batch as usize,
        in_flight: args.in_flight() as usize,
        duration: args.duration,
    };
    let ops = stream(args, workload, 0, quota);
    let run = rate::run(ledger, ops, schedule, progress).await?;
    // A replay with the ops drawn as its quota draws the same ops.
    let replay = (stream(args, workload, 0, Some(run.drawn)), u64::MAX);
    Ok(Timed {
        seconds: run.seconds,
        clients: vec![run.report],
        replays: vec![replay],
        rate: Some(run.figures),
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
