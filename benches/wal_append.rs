//! Write-ahead log throughput, in events per second.
//!
//! - `encode_into`: framing alone — `wal::record::encode_into` of a mix of
//!   events (deposit with an idempotency key, withdrawal requested,
//!   withdrawal completed) into one reused `Vec`, no I/O. This is the CPU
//!   floor of every logged event.
//! - `append/fsync` and `append/buffered`: `WalHandle::append` through the
//!   writer thread into a fresh log in a temp dir. Each iteration queues
//!   `APPENDS` appends of `EVENTS_PER_APPEND` events without awaiting any,
//!   then awaits them all, so the writer always has many requests waiting
//!   and group commit can fold them into few writes (and, with `Fsync`, few
//!   `fdatasync`s). The events are built outside the timed part; the timer
//!   covers queueing, encoding, writing, syncing and the acknowledgements.
//!
//! Closed segments are deleted after each sample, outside the timer, so the
//! run does not fill the disk; segment rolls themselves stay in the timing.
//!
//! `Buffered` uses a 100 ms sync interval (the CLI's `buffered` default), so
//! it measures the write path with occasional background syncs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use burnledger::domain::event::{Event, Stamped};
use burnledger::domain::ids::{IdempotencyKey, TransactionId};
use burnledger::domain::money::{Currency, CurrencyCode};
use burnledger::storage::wal::{self, record, SyncMode, WalConfig, WalHandle};
use burnledger::UnixMs;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::future::join_all;

/// Appends queued per iteration before awaiting any.
const APPENDS: usize = 1_024;
const EVENTS_PER_APPEND: usize = 16;
/// Events encoded per `encode_into` iteration.
const ENCODE_EVENTS: usize = 1_024;

fn usd() -> Currency {
    Currency {
        code: CurrencyCode::new("USD").expect("valid code"),
        decimals: 2,
    }
}

/// `typical(n)`, stamped `n` ms into 2026.
fn event(n: u64) -> Stamped {
    Stamped {
        at: UnixMs::from_millis(1_767_225_600_000 + n),
        event: typical(n),
    }
}

/// A typical event for `n`: a third each of keyed deposits, withdrawal
/// requests and completions, over 100,000 accounts.
fn typical(n: u64) -> Event {
    let account = n % 100_000 + 1;
    let tx = TransactionId::new(account, n / 100_000 + 1);
    match n % 3 {
        0 => Event::Deposited {
            tx,
            currency: usd(),
            amount: 100_000 + i128::from(n % 1_000),
            key: Some(IdempotencyKey::new(&format!("deposit-{n}")).expect("valid key")),
            metadata: None,
        },
        1 => Event::WithdrawalRequested {
            tx,
            currency: usd(),
            amount: 250 + i128::from(n % 100),
            key: None,
            details: None,
        },
        _ => Event::WithdrawalCompleted {
            tx,
            fee: None,
            paid: None,
        },
    }
}

fn bench_encode(c: &mut Criterion) {
    let events: Vec<Stamped> = (0..ENCODE_EVENTS as u64).map(event).collect();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut group = c.benchmark_group("wal_encode");
    group
        .throughput(Throughput::Elements(ENCODE_EVENTS as u64))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("encode_into", |b| {
        b.iter(|| {
            buf.clear();
            for (lsn, event) in (1u64..).zip(&events) {
                record::encode_into(&mut buf, lsn, black_box(event)).expect("encode");
            }
            black_box(buf.len())
        });
    });
    group.finish();
}

fn bench_append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("wal_append");
    group
        .throughput(Throughput::Elements((APPENDS * EVENTS_PER_APPEND) as u64))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let modes = [
        ("fsync", SyncMode::Fsync),
        ("buffered", SyncMode::Buffered { interval_ms: 100 }),
    ];
    for (name, sync) in modes {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = WalHandle::open(
            WalConfig {
                sync,
                ..WalConfig::new(dir.path())
            },
            1,
        )
        .expect("open WAL");
        let mut next = 0u64;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let batches: Vec<Vec<Stamped>> = (0..APPENDS)
                        .map(|_| {
                            let batch = (next..next + EVENTS_PER_APPEND as u64).map(event);
                            next += EVENTS_PER_APPEND as u64;
                            batch.collect()
                        })
                        .collect();
                    let started = Instant::now();
                    let pending: Vec<_> = batches.into_iter().map(|e| log.append(e)).collect();
                    let acks = runtime.block_on(join_all(pending));
                    elapsed += started.elapsed();
                    assert!(acks.iter().all(Result::is_ok), "an append failed");
                }
                // Untimed: drop closed segments so the run's disk use stays bounded.
                wal::delete_segments_below(dir.path(), next).expect("delete old segments");
                elapsed
            });
        });
        log.shutdown().expect("WAL shutdown");
    }
    group.finish();
}

criterion_group!(benches, bench_encode, bench_append);
criterion_main!(benches);
