//! The engine's timers run on the injected clock (`Config::clock`): these
//! tests drive a `ManualClock` instead of sleeping. Each waits until the
//! engine has armed its timers (`armed_at_least`), moves time, and waits
//! for the timers to be armed again, which the engine does only once it
//! has done what the timer was for.

use std::str::FromStr;
use std::time::Duration;

use burnledger::clock::ManualClock;
use burnledger::config::{PayoutMode, SharedPaymentService};
use burnledger::domain::payouts::PayoutState;
use burnledger::payment::{SimulatedBank, SimulatedBankConfig};
use burnledger::{Config, Decimal, Ledger, WithdrawalStatus};

/// A test hangs rather than fails if a timer never comes: bound it.
const DEADLINE: Duration = Duration::from_secs(20);

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Polls `condition` until it holds, for at most [`DEADLINE`]: for work a
/// timer starts on the engine's own threads, which nothing else announces.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let polled = async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    within(what, polled).await
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

const INTERVAL: Duration = Duration::from_secs(60);

/// Batched payouts every minute on `clock`, through `bank`; sweeps too
/// seldom to arm during a test.
fn paid_by(bank: &SimulatedBank, clock: &ManualClock) -> Config {
    Config {
        clock: clock.shared(),
        payout_mode: PayoutMode::Batched {
            interval_secs: INTERVAL.as_secs(),
        },
        payment_service: Some(SharedPaymentService::new(bank.clone())),
        account_idle_sweep_ms: 24 * 3600 * 1000,
        ..Config::for_tests()
    }
}

/// Timers armed by the engine before any payout: the two shards' sweeps
/// and the payout interval.
const ARMED_AT_START: usize = 3;

#[tokio::test]
async fn a_batched_payout_runs_only_when_its_interval_has_passed() {
    let (bank, clock) = (SimulatedBank::default(), ManualClock::new());
    let ledger = Ledger::open(paid_by(&bank, &clock)).unwrap();
    ledger.deposit(1, "USD", dec("10"), None).await.unwrap();
    let w = ledger
        .request_withdrawal(1, "USD", dec("4"), None)
        .await
        .unwrap();
    within(
        "the interval is armed",
        clock.armed_at_least(ARMED_AT_START),
    )
    .await;

    // A second short of the interval: nothing is due, nothing is paid.
    clock.advance(INTERVAL - Duration::from_secs(1));
    assert!(bank.submit_calls().is_empty());
    let status = ledger.withdrawal(w.transaction_id).await.unwrap().status;
    assert_eq!(status, WithdrawalStatus::Pending);

    // The interval passes: one payout pays the withdrawal, once.
    clock.advance(Duration::from_secs(1));
    let tx = w.transaction_id;
    eventually("the interval's run pays the withdrawal", || async {
        let w = ledger.withdrawal(tx).await.unwrap();
        w.status == WithdrawalStatus::Completed
    })
    .await;
    assert_eq!(bank.submit_calls().len(), 1);
    assert_eq!(bank.times_paid(tx), 1);
    assert_eq!(ledger.balance(1, "USD").await.unwrap().total, dec("6"));
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_payout_with_an_unknown_outcome_is_retried_only_when_its_backoff_ran_out() {
    let clock = ManualClock::new();
    // Every submit times out before the bank gets it.
    let bank = SimulatedBank::new(SimulatedBankConfig {
        unknown_outcome_per_mille: 1000,
        ..SimulatedBankConfig::default()
    });
    let ledger = Ledger::open(paid_by(&bank, &clock)).unwrap();
    ledger.deposit(1, "USD", dec("10"), None).await.unwrap();
    let w = ledger
        .request_withdrawal(1, "USD", dec("4"), None)
        .await
        .unwrap();
    let made = ledger.run_payouts_now().await.unwrap();
    assert_eq!(made.len(), 1);
    let payout_id = made[0].payout_id;
    assert_eq!(made[0].state, PayoutState::Processing);
    // The retry timer joins the others, set for the first backoff (500 ms).
    within(
        "the retry is armed",
        clock.armed_at_least(ARMED_AT_START + 1),
    )
    .await;
    bank.set_faults(SimulatedBankConfig::default());

    clock.advance(Duration::from_millis(499));
    assert_eq!(bank.submit_calls().len(), 1, "retried before its backoff");
    let payout = ledger.payout(payout_id).await.unwrap();
    assert_eq!(payout.state, PayoutState::Processing);

    // Due: asked for its status (never received), then submitted again
    // under the same id, and paid once.
    clock.advance(Duration::from_millis(1));
    eventually("the retry settles the payout", || async {
        ledger.payout(payout_id).await.unwrap().state == PayoutState::Completed
    })
    .await;
    let calls = bank.submit_calls();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|(id, _, _)| *id == payout_id));
    assert_eq!(bank.times_paid(w.transaction_id), 1);
    let status = ledger.withdrawal(w.transaction_id).await.unwrap().status;
    assert_eq!(status, WithdrawalStatus::Completed);
    ledger.shutdown().await;
}
