//! Snapshot file speed and size for `ACCOUNTS` accounts, in accounts per
//! second.
//!
//! Prepared once, outside the timed loop, with the pure `AccountState` API:
//! every account holds one USD balance and one completed withdrawal (a
//! deposit, a withdrawal requested and completed) — the smallest realistic
//! account that has been through the withdrawal lifecycle.
//!
//! - `write`: `snapshot::write` — bincode-encode every account through the
//!   checksumming buffered writer, `fsync`, rename, `fsync` the folder.
//!   Every iteration rewrites the same snapshot (same LSN) in a temp dir.
//! - `read`: `snapshot::read` — read the whole file, check the trailer and
//!   CRC, decode every account and check its invariants. The returned
//!   accounts are dropped outside the timer.
//!
//! The file size and bytes per account are printed once, as they drive both
//! the disk footprint and the time to load on startup.

use std::hint::black_box;
use std::time::Duration;

use burnledger::domain::account::AccountState;
use burnledger::domain::money::{Currency, CurrencyCode};
use burnledger::domain::withdrawal::TransitionAction;
use burnledger::storage::snapshot;
use burnledger::UnixMs;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};

/// The time every prepared event is stamped with.
const AT: UnixMs = UnixMs::from_millis(1_767_225_600_000);

const ACCOUNTS: u64 = 1_000_000;
const LSN: u64 = 3 * ACCOUNTS;

fn accounts() -> Vec<AccountState> {
    let usd = Currency {
        code: CurrencyCode::new("USD").expect("valid code"),
        decimals: 2,
    };
    (1..=ACCOUNTS)
        .map(|id| {
            let mut account = AccountState::new(id);
            account.deposit(usd, 10_000, None, AT).expect("deposit");
            let requested = account
                .request_withdrawal(usd, 2_500, None, 1_000, AT)
                .expect("request");
            account
                .update_withdrawal(
                    requested.output.transaction_id,
                    TransitionAction::Complete,
                    "",
                    AT,
                )
                .expect("complete");
            account
        })
        .collect()
}

fn bench_snapshot(c: &mut Criterion) {
    let accounts = accounts();
    let dir = tempfile::tempdir().expect("temp dir");
    let written = snapshot::write(dir.path(), LSN, accounts.iter()).expect("write snapshot");
    eprintln!(
        "snapshot of {ACCOUNTS} accounts: {} bytes, {:.1} bytes/account",
        written.bytes,
        written.bytes as f64 / ACCOUNTS as f64
    );

    let mut group = c.benchmark_group("snapshot");
    group
        .throughput(Throughput::Elements(ACCOUNTS))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    group.bench_function("write_1m_accounts", |b| {
        b.iter(|| {
            snapshot::write(black_box(dir.path()), LSN, accounts.iter()).expect("write snapshot")
        });
    });
    group.bench_function("read_1m_accounts", |b| {
        b.iter_with_large_drop(|| {
            let (lsn, read) = snapshot::read(black_box(&written.path)).expect("read snapshot");
            assert_eq!((lsn, read.len() as u64), (LSN, ACCOUNTS));
            read
        });
    });
    group.finish();
}

criterion_group!(benches, bench_snapshot);
criterion_main!(benches);
