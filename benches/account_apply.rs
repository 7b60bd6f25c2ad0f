//! The pure core, with no actors, no log and no async: what one account's
//! rules cost per operation.
//!
//! Measured, on one account that starts with a large USD deposit:
//! - `request_complete_cycle`: `AccountState::request_withdrawal` followed by
//!   `update_withdrawal(.., Complete, ..)`, one element per cycle (two
//!   operations, two events built and applied);
//! - `apply_prebuilt_events`: `AccountState::apply` of events built once
//!   outside the timed loop (what recovery does per record), one element per
//!   cycle (two events);
//! - `baseline_hashmap`: the same arithmetic on a plain
//!   `HashMap<u64, (i128, i128)>` (available, locked) with no rules, no
//!   withdrawal records and no events, one element per cycle.
//!
//! Each timed batch starts from a clone of the freshly funded account (made
//! in criterion's untimed setup), so the account's withdrawal list holds at
//! most `CYCLES` records instead of growing across the whole run. The ratio
//! `baseline / request_complete_cycle` is the price of the rules, the
//! withdrawal records and the events over bare arithmetic.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use burnledger::domain::account::AccountState;
use burnledger::domain::event::Event;
use burnledger::domain::money::{Currency, CurrencyCode};
use burnledger::domain::withdrawal::TransitionAction;
use burnledger::UnixMs;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// The time every prepared event is stamped with.
const AT: UnixMs = UnixMs::from_millis(1_767_225_600_000);

/// Withdrawal cycles per timed batch.
const CYCLES: u64 = 1_000;
const ACCOUNT: u64 = 42;
const AMOUNT: i128 = 100;
const PENDING_MAX: u32 = 1_000;

fn usd() -> Currency {
    Currency {
        code: CurrencyCode::new("USD").expect("valid code"),
        decimals: 2,
    }
}

/// One account holding enough USD for any number of cycles.
fn funded_account() -> AccountState {
    let mut account = AccountState::new(ACCOUNT);
    account
        .deposit(usd(), 100_000_000_000_000, None, AT)
        .expect("deposit");
    account
}

/// The events `CYCLES` request/complete cycles log, as recovery would read them.
fn cycle_events(start: &AccountState) -> Vec<Event> {
    let mut account = start.clone();
    let mut events = Vec::with_capacity(2 * CYCLES as usize);
    for _ in 0..CYCLES {
        let requested = account
            .request_withdrawal(usd(), AMOUNT, None, PENDING_MAX, AT)
            .expect("request");
        let tx = requested.output.transaction_id;
        events.extend(requested.event);
        let completed = account
            .update_withdrawal(tx, TransitionAction::Complete, "", AT)
            .expect("complete");
        events.extend(completed.event);
    }
    events
}

fn bench_account_apply(c: &mut Criterion) {
    let currency = usd();
    let start = funded_account();
    let events = cycle_events(&start);

    let mut group = c.benchmark_group("account_apply");
    group
        .throughput(Throughput::Elements(CYCLES))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    group.bench_function("request_complete_cycle", |b| {
        b.iter_batched_ref(
            || start.clone(),
            |account| {
                for _ in 0..CYCLES {
                    let requested = account
                        .request_withdrawal(currency, black_box(AMOUNT), None, PENDING_MAX, AT)
                        .expect("request");
                    let completed = account
                        .update_withdrawal(
                            requested.output.transaction_id,
                            TransitionAction::Complete,
                            "",
                            AT,
                        )
                        .expect("complete");
                    black_box(completed);
                }
            },
            BatchSize::SmallInput,
        );
    });

    group.bench_function("apply_prebuilt_events", |b| {
        b.iter_batched_ref(
            || start.clone(),
            |account| {
                for event in &events {
                    account.apply(black_box(event), AT).expect("apply");
                }
            },
            BatchSize::SmallInput,
        );
    });

    let mut base: HashMap<u64, (i128, i128)> = HashMap::new();
    base.insert(ACCOUNT, (100_000_000_000_000, 0));
    group.bench_function("baseline_hashmap", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |balances| {
                for _ in 0..CYCLES {
                    let amount = black_box(AMOUNT);
                    // Request: available -> locked.
                    let entry = balances.get_mut(&black_box(ACCOUNT)).expect("account");
                    entry.0 -= amount;
                    entry.1 += amount;
                    // Complete: the locked amount leaves the total.
                    let entry = balances.get_mut(&black_box(ACCOUNT)).expect("account");
                    entry.1 -= amount;
                }
                black_box(&*balances);
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_account_apply);
criterion_main!(benches);
