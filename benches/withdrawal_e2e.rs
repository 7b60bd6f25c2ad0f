//! The withdrawal lifecycle end to end through the public `Ledger` handle
//! and the actors, in operations per second.
//!
//! Set up once, untimed: `Ledger::open` with 2 shards and `ACCOUNTS`
//! accounts funded by batched deposits. Timed, per iteration: `IN_FLIGHT`
//! client tasks run at once on a 2-worker tokio runtime; each submits a
//! batch of `BATCH` `RequestWithdrawal` ops (one per account, distinct
//! accounts across tasks), then a batch of `CompleteWithdrawal` ops for the
//! transaction ids it got back. One element = one operation, so an
//! iteration is `2 * IN_FLIGHT * BATCH` elements. Every answer is checked.
//! Successive iterations move on to the next accounts, cycling through all
//! of them, so per-account withdrawal maps grow evenly and slowly.
//!
//! - `memory`: `data_dir: None` — routing, admission, the shard
//!   coordinators, the account actors and the pure rules; no log.
//! - `durable_fsync`: `data_dir: Some(tempdir)`, `SyncMode::Fsync` — the
//!   same plus the WAL: an answer arrives only after its events are
//!   `fdatasync`ed, so this shows what group commit makes of many batches in
//!   flight. The background checkpointer runs as configured by default
//!   (a snapshot every 1,000,000 events), as it would in production.

use std::str::FromStr;
use std::time::Duration;

use burnledger::config::SyncMode;
use burnledger::{Config, CurrencyCode, Decimal, Ledger, Operation, Outcome, WithdrawalOutcome};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use futures_util::future::join_all;
use tokio::runtime::Runtime;

// The allocator the `burnledger` binary uses too (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACCOUNTS: u64 = 100_000;
/// Client tasks with a batch in flight at once.
const IN_FLIGHT: u64 = 8;
/// Withdrawals per batch (one request op and one complete op each).
const BATCH: u64 = 1_024;
const OPS_PER_ITERATION: u64 = 2 * IN_FLIGHT * BATCH;
/// Deposits per `submit` while setting up (below `batch_ops_max`).
const DEPOSIT_BATCH: u64 = 50_000;

fn usd() -> CurrencyCode {
    CurrencyCode::new("USD").expect("valid code")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Opens the ledger and funds every account; untimed.
fn open_funded(runtime: &Runtime, config: Config) -> Ledger {
    let ledger = Ledger::open(config).expect("open ledger");
    let amount = Decimal::from_str("1000000.00").expect("amount");
    runtime.block_on(async {
        for start in (1..=ACCOUNTS).step_by(DEPOSIT_BATCH as usize) {
            let end = (start + DEPOSIT_BATCH).min(ACCOUNTS + 1);
            let ops = (start..end)
                .map(|account| Operation::Deposit {
                    account,
                    currency: usd(),
                    amount,
                    idempotency_key: None,
                    metadata: Default::default(),
                })
                .collect();
            for result in ledger.submit(ops).await {
                result.expect("deposit");
            }
        }
    });
    ledger
}

/// One client: request `BATCH` withdrawals on accounts from `first` on,
/// then complete them all.
async fn lifecycle(ledger: Ledger, first: u64) {
    let amount = Decimal::new(1, 2);
    let requests = (0..BATCH)
        .map(|i| Operation::RequestWithdrawal {
            account: (first + i) % ACCOUNTS + 1,
            currency: usd(),
            amount,
            idempotency_key: None,
            options: Default::default(),
        })
        .collect();
    let completes = ledger
        .submit(requests)
        .await
        .into_iter()
        .map(|result| match result {
            Ok(Outcome::Withdrawal(w)) => Operation::CompleteWithdrawal {
                transaction_id: w.transaction_id,
                outcome: WithdrawalOutcome::Completed,
            },
            other => panic!("request withdrawal: {other:?}"),
        })
        .collect();
    for result in ledger.submit(completes).await {
        assert!(
            matches!(result, Ok(Outcome::Withdrawal(_))),
            "complete withdrawal: {result:?}"
        );
    }
}

fn bench_variant(c: &mut Criterion, name: &str, config: Config, measurement: Duration) {
    let runtime = runtime();
    let ledger = open_funded(&runtime, config);
    let mut cursor = 0u64;
    let mut group = c.benchmark_group("withdrawal_e2e");
    group
        .throughput(Throughput::Elements(OPS_PER_ITERATION))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(measurement);
    group.bench_function(name, |b| {
        b.iter(|| {
            let clients = (0..IN_FLIGHT).map(|k| {
                let first = (cursor + k * BATCH) % ACCOUNTS;
                runtime.spawn(lifecycle(ledger.clone(), first))
            });
            let clients: Vec<_> = clients.collect();
            for joined in runtime.block_on(join_all(clients)) {
                joined.expect("client task");
            }
            cursor = (cursor + IN_FLIGHT * BATCH) % ACCOUNTS;
        });
    });
    group.finish();
    runtime.block_on(ledger.shutdown());
}

fn bench_memory(c: &mut Criterion) {
    let config = Config {
        shards: 2,
        ..Config::default()
    };
    bench_variant(c, "memory", config, Duration::from_secs(5));
}

fn bench_durable(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        shards: 2,
        data_dir: Some(dir.path().to_path_buf()),
        sync: SyncMode::Fsync,
        ..Config::default()
    };
    bench_variant(c, "durable_fsync", config, Duration::from_secs(8));
}

criterion_group!(benches, bench_memory, bench_durable);
criterion_main!(benches);
