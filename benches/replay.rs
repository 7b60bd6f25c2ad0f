//! WAL replay speed: how fast a ledger's state is rebuilt from the log at
//! startup, in events per second, and what each part of it costs.
//!
//! Prepared once, outside the timed loop: a data dir whose log holds
//! `EVENTS` events over `ACCOUNTS` accounts, no snapshot. Each account gets a
//! deposit, four withdrawals requested and completed, and one withdrawal
//! left pending (10 events), interleaved round-robin across accounts as live
//! traffic would be. The events come from the pure `AccountState` API, so
//! they are valid, and are written through `WalHandle` with
//! `SyncMode::Buffered` (plus a final sync at shutdown).
//!
//! Timed, in group `replay`:
//! - `rebuild_1m_events_100k_accounts`: `recovery::rebuild(dir, currencies,
//!   ReplayMode::ReadOnly { .. })`, the whole of it: reading the segments,
//!   checking every record's framing, CRC and LSN, decoding the events (on
//!   the log's reader thread), applying them to the account states (on the
//!   calling thread, warming a few accounts ahead), the final invariant audit
//!   and handing the accounts over in a std `HashMap`. Read-only, so
//!   repeated iterations see the same files. The issue 6 target is
//!   ≥ 3,000,000 events/s here.
//! - `read_decode_1m_events`: the reader side alone, `wal::replay_chunks`
//!   with a callback that only drops the decoded records: read, frame, CRC,
//!   decode, hand over.
//! - `apply_1m_events_100k_accounts`: the apply side alone, on events decoded
//!   beforehand: `recovery::apply_event` for each, in log order, into a fresh
//!   std `HashMap`, with no warming ahead (what an embedder applying events
//!   one at a time gets).
//! - `audit_100k_accounts`: `audit::audit` over the rebuilt accounts (one
//!   element per account).
//!
//! The accounts a timed run builds are dropped outside the timing.

use std::hint::black_box;
use std::time::Duration;

use std::collections::HashMap;

use burnledger::domain::account::AccountState;
use burnledger::domain::audit::audit;
use burnledger::domain::event::{Event, Stamped};
use burnledger::domain::money::{Currencies, Currency, CurrencyCode, CurrencyConfig};
use burnledger::domain::time::UnixMs;
use burnledger::domain::withdrawal::TransitionAction;
use burnledger::storage::recovery;
use burnledger::storage::wal::{self, ReplayMode, SyncMode, WalConfig, WalHandle};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use futures_util::future::join_all;

const ACCOUNTS: u64 = 100_000;
/// Completed withdrawals per account (plus one left pending).
const COMPLETED_PER_ACCOUNT: usize = 4;
/// 1 deposit + 2 per completed withdrawal + 1 pending request.
const EVENTS_PER_ACCOUNT: u64 = 2 + 2 * COMPLETED_PER_ACCOUNT as u64;
const EVENTS: u64 = ACCOUNTS * EVENTS_PER_ACCOUNT;
/// Events per `WalHandle::append` while preparing.
const APPEND_EVENTS: usize = 4_096;

/// The time every prepared event is stamped with.
const AT: UnixMs = UnixMs::from_millis(1_767_225_600_000);

fn usd() -> Currency {
    Currency {
        code: CurrencyCode::new("USD").expect("valid code"),
        decimals: 2,
    }
}

/// Every event of the prepared log, in log order.
fn build_events() -> Vec<Event> {
    let usd = usd();
    let mut accounts: Vec<AccountState> = (1..=ACCOUNTS).map(AccountState::new).collect();
    let mut events = Vec::with_capacity(EVENTS as usize);
    for account in &mut accounts {
        let deposited = account.deposit(usd, 1_000_000, None, AT).expect("deposit");
        events.extend(deposited.event);
    }
    for round in 0..=COMPLETED_PER_ACCOUNT {
        let mut requested = Vec::with_capacity(accounts.len());
        for account in &mut accounts {
            let amount = 100 + (account.id() % 100) as i128;
            let effect = account
                .request_withdrawal(usd, amount, None, 1_000, AT)
                .expect("request");
            requested.push(effect.output.transaction_id);
            events.extend(effect.event);
        }
        if round == COMPLETED_PER_ACCOUNT {
            break; // the last withdrawal of every account stays pending
        }
        for (account, tx) in accounts.iter_mut().zip(requested) {
            let effect = account
                .update_withdrawal(tx, TransitionAction::Complete, "", AT)
                .expect("complete");
            events.extend(effect.event);
        }
    }
    assert_eq!(events.len() as u64, EVENTS);
    events
}

fn write_log(dir: &std::path::Path, events: Vec<Event>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let wal = WalHandle::open(
        WalConfig {
            sync: SyncMode::Buffered { interval_ms: 1_000 },
            ..WalConfig::new(dir)
        },
        1,
    )
    .expect("open WAL");
    let mut events = events.into_iter();
    let mut pending = Vec::new();
    loop {
        let chunk: Vec<Stamped> = events
            .by_ref()
            .take(APPEND_EVENTS)
            .map(|event| Stamped { at: AT, event })
            .collect();
        if chunk.is_empty() {
            break;
        }
        pending.push(wal.append(chunk));
    }
    let acks = runtime.block_on(join_all(pending));
    assert_eq!(
        acks.last().cloned(),
        Some(Ok(EVENTS)),
        "log ends at LSN {EVENTS}"
    );
    wal.shutdown().expect("WAL shutdown");
}

fn bench_replay(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let events = build_events();
    write_log(dir.path(), events.clone());
    let currencies = Currencies::new(&[CurrencyConfig::new("USD", 2)]).expect("currencies");
    let read_only = ReplayMode::ReadOnly { until_lsn: None };
    let rebuild = || {
        let recovered =
            recovery::rebuild(black_box(dir.path()), &currencies, read_only).expect("rebuild");
        assert_eq!(recovered.report.records_replayed, EVENTS);
        assert_eq!(recovered.accounts.len() as u64, ACCOUNTS);
        recovered
    };

    let mut group = c.benchmark_group("replay");
    group
        .throughput(Throughput::Elements(EVENTS))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    group.bench_function("rebuild_1m_events_100k_accounts", |b| {
        b.iter_with_large_drop(rebuild);
    });
    group.bench_function("read_decode_1m_events", |b| {
        b.iter(|| {
            let report = wal::replay_chunks(black_box(dir.path()), 1, read_only, |entries| {
                drop(black_box(entries));
                Ok::<(), (u64, ())>(())
            })
            .expect("replay");
            assert_eq!(report.records, EVENTS);
        });
    });
    group.bench_function("apply_1m_events_100k_accounts", |b| {
        b.iter_with_large_drop(|| {
            let mut accounts: HashMap<u64, AccountState> = HashMap::new();
            for event in black_box(&events) {
                recovery::apply_event(&mut accounts, &currencies, event, AT).expect("apply");
            }
            assert_eq!(accounts.len() as u64, ACCOUNTS);
            accounts
        });
    });
    let recovered = rebuild();
    group.throughput(Throughput::Elements(ACCOUNTS));
    group.bench_function("audit_100k_accounts", |b| {
        b.iter(|| {
            let checked = audit(black_box(&recovered.accounts).values());
            assert!(checked.is_clean());
            checked
        });
    });
    group.finish();
}

criterion_group!(benches, bench_replay);
criterion_main!(benches);
