//! The engine's timers run on the injected clock (`Config::clock`): these
//! tests drive a `ManualClock` instead of sleeping. Each waits until the
//! engine has armed its timers (`armed_at_least`), moves time, and waits
//! for the timers to be armed again, which the engine does only once it
//! has done what the timer was for.

use std::str::FromStr;
use std::time::Duration;

use burnledger::clock::ManualClock;
use burnledger::{Config, Decimal, Ledger};

/// A test hangs rather than fails if a timer never comes: bound it.
const DEADLINE: Duration = Duration::from_secs(20);

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {DEADLINE:?}"))
}

const SWEEP: Duration = Duration::from_secs(10);

/// Two shards, a sweep every 10 s on `clock`, room for every actor.
fn swept_by(clock: &ManualClock) -> Config {
    Config {
        clock: clock.shared(),
        account_idle_sweep_ms: SWEEP.as_millis() as u64,
        shard_account_actors_max: 1_000,
        ..Config::for_tests()
    }
}

/// Moves the clock one sweep on and waits until both shards swept (each
/// arms its next sweep once done).
async fn sweep_once(clock: &ManualClock) {
    within("the shards arm their sweeps", clock.armed_at_least(2)).await;
    clock.advance(SWEEP);
    within("the shards sweep and re-arm", clock.armed_at_least(2)).await;
}

#[tokio::test]
async fn an_idle_account_actor_is_retired_by_the_sweep_and_its_state_parked() {
    let clock = ManualClock::new();
    let ledger = Ledger::open(swept_by(&clock)).unwrap();
    for account in 1..=10 {
        ledger
            .deposit(account, "USD", dec("5"), None)
            .await
            .unwrap();
    }
    let w = ledger
        .request_withdrawal(3, "USD", dec("2"), None)
        .await
        .unwrap();
    let counts = ledger.account_counts().await.unwrap();
    assert_eq!((counts.accounts, counts.actors_running), (10, 10));

    // Used during the first sweep's epoch: kept by it.
    sweep_once(&clock).await;
    assert_eq!(ledger.account_counts().await.unwrap().actors_running, 10);
    // Idle for a whole sweep: retired by the second.
    sweep_once(&clock).await;
    let counts = ledger.account_counts().await.unwrap();
    assert_eq!((counts.accounts, counts.actors_running), (10, 0));

    // Parked, not lost: read in place...
    let balance = ledger.balance(3, "USD").await.unwrap();
    assert_eq!(
        (balance.available, balance.locked, balance.total),
        (dec("3"), dec("2"), dec("5"))
    );
    assert_eq!(ledger.account_counts().await.unwrap().actors_running, 0);
    // ...and moved into a new actor by the next command.
    ledger.cancel_withdrawal(w.transaction_id).await.unwrap();
    assert_eq!(ledger.balance(3, "USD").await.unwrap().available, dec("5"));
    assert_eq!(ledger.account_counts().await.unwrap().actors_running, 1);
    assert!(ledger.audit().await.unwrap().is_clean());
    ledger.shutdown().await;
}

#[tokio::test]
async fn without_the_clock_moving_no_actor_is_retired() {
    let clock = ManualClock::new();
    let ledger = Ledger::open(swept_by(&clock)).unwrap();
    for account in 1..=6 {
        ledger
            .deposit(account, "USD", dec("1"), None)
            .await
            .unwrap();
    }
    within("the shards arm their sweeps", clock.armed_at_least(2)).await;
    // Less than two sweeps: nothing idle long enough.
    clock.advance(SWEEP - Duration::from_millis(1));
    assert_eq!(ledger.account_counts().await.unwrap().actors_running, 6);
    ledger.shutdown().await;
}
