//! Time (issue 13): every logged event carries the engine's time, stamped
//! once from the injected clock; withdrawals show `created_at` /
//! `updated_at`, payouts `submitted_at` / `settled_at`; recovery applies
//! the logged times, so a reopened ledger shows exactly the times the live
//! one showed; a wall clock stepped back never makes a shard's times go
//! back; HTTP writes them as RFC 3339.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use burnledger::clock::{Alarm, Clock, ManualClock, SharedClock, MANUAL_CLOCK_START_UNIX_MS};
use burnledger::config::{PayoutMode, SharedPaymentService};
use burnledger::http::HttpOptions;
use burnledger::payment::SimulatedBank;
use burnledger::{Config, Ledger, UnixMs, Withdrawal, WithdrawalOutcome};
use common::dec;
use common::in_process::InProcess;
use futures_util::future::BoxFuture;

fn ms(offset: u64) -> UnixMs {
    UnixMs::from_millis(MANUAL_CLOCK_START_UNIX_MS + offset)
}

/// A ledger in `dir` on `clock`, whose host pays (external mode).
fn config(dir: &std::path::Path, clock: SharedClock) -> Config {
    Config {
        clock,
        ..faults::config(dir)
    }
}

async fn funded_withdrawal(ledger: &Ledger, account: u64) -> Withdrawal {
    ledger
        .deposit(account, "USD", dec("100"), None)
        .await
        .unwrap();
    ledger
        .request_withdrawal(account, "USD", dec("10"), None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_show_the_times_of_their_events_and_keep_them_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let ledger = Ledger::open(config(dir.path(), clock.shared())).unwrap();
    let requested = funded_withdrawal(&ledger, 1).await;
    assert_eq!(requested.created_at, Some(ms(0)));
    assert_eq!(requested.updated_at, Some(ms(0)));
    let other = funded_withdrawal(&ledger, 2).await;

    clock.advance(Duration::from_millis(1_234));
    let done = ledger
        .complete_withdrawal(requested.transaction_id, WithdrawalOutcome::Completed)
        .await
        .unwrap();
    assert_eq!(
        (done.created_at, done.updated_at),
        (Some(ms(0)), Some(ms(1_234)))
    );
    // A repeat changes nothing, its time included.
    clock.advance(Duration::from_secs(60));
    let again = ledger
        .complete_withdrawal(requested.transaction_id, WithdrawalOutcome::Completed)
        .await
        .unwrap();
    assert_eq!(again, done);
    let cancelled = ledger
        .cancel_withdrawal(other.transaction_id)
        .await
        .unwrap();
    assert_eq!(cancelled.updated_at, Some(ms(61_234)));

    let live = [
        ledger.withdrawal(requested.transaction_id).await.unwrap(),
        ledger.withdrawal(other.transaction_id).await.unwrap(),
    ];
    // A crash: the folder as it is while the ledger runs, opened elsewhere
    // on a clock far ahead; then the ledger itself, shut down and reopened.
    let crashed = tempfile::tempdir().unwrap();
    faults::copy_ledger(dir.path(), crashed.path());
    let later = ManualClock::starting_at(MANUAL_CLOCK_START_UNIX_MS + 86_400_000);
    let recovered = Ledger::open(config(crashed.path(), later.shared())).unwrap();
    for withdrawal in &live {
        let read = recovered.withdrawal(withdrawal.transaction_id).await;
        assert_eq!(&read.unwrap(), withdrawal, "recovered from the crash copy");
    }
    recovered.shutdown().await;
    ledger.shutdown().await;
    let reopened = Ledger::open(config(dir.path(), later.shared())).unwrap();
    for withdrawal in &live {
        let read = reopened.withdrawal(withdrawal.transaction_id).await;
        assert_eq!(&read.unwrap(), withdrawal, "reopened");
    }
    // From a snapshot too (the checkpointer's copy, then a reopen on it).
    reopened.snapshot().await.unwrap();
    reopened.shutdown().await;
    let from_snapshot = Ledger::open(config(dir.path(), later.shared())).unwrap();
    let report = from_snapshot.recovery_report().unwrap();
    assert!(report.snapshot.is_some() && report.records_replayed == 0);
    for withdrawal in &live {
        let read = from_snapshot.withdrawal(withdrawal.transaction_id).await;
        assert_eq!(&read.unwrap(), withdrawal, "from the snapshot");
    }
    from_snapshot.shutdown().await;
}

/// A clock whose wall time the test sets, backwards too; its timers are a
/// manual clock's.
struct SteppingClock {
    timers: ManualClock,
    wall_ms: AtomicU64,
}

impl Clock for SteppingClock {
    fn elapsed(&self) -> Duration {
        self.timers.elapsed()
    }
    fn unix_ms(&self) -> u64 {
        self.wall_ms.load(Ordering::SeqCst)
    }
    fn sleep(&self, after: Duration) -> BoxFuture<'static, ()> {
        self.timers.sleep(after)
    }
    fn alarm(&self, after: Duration) -> Alarm {
        self.timers.alarm(after)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_stepped_back_never_makes_times_go_back_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(SteppingClock {
        timers: ManualClock::new(),
        wall_ms: AtomicU64::new(MANUAL_CLOCK_START_UNIX_MS + 10_000),
    });
    let shared = SharedClock::new(ArcClock(Arc::clone(&clock)));
    let ledger = Ledger::open(config(dir.path(), shared.clone())).unwrap();
    let first = funded_withdrawal(&ledger, 1).await;
    assert_eq!(first.created_at, Some(ms(10_000)));
    clock
        .wall_ms
        .store(MANUAL_CLOCK_START_UNIX_MS, Ordering::SeqCst);
    let done = ledger
        .complete_withdrawal(first.transaction_id, WithdrawalOutcome::Completed)
        .await
        .unwrap();
    assert_eq!(
        done.updated_at,
        Some(ms(10_000)),
        "not back to the clock's 0"
    );
    // Another account on the same shard: its times do not go back either.
    let second = funded_withdrawal(&ledger, 3).await;
    assert_eq!(second.created_at, Some(ms(10_000)));
    ledger.shutdown().await;

    // Reopened with the clock still behind: stamps start at the newest
    // time the recovered state holds.
    let reopened = Ledger::open(config(dir.path(), shared.clone())).unwrap();
    let third = funded_withdrawal(&reopened, 5).await;
    assert_eq!(third.created_at, Some(ms(10_000)));
    clock
        .wall_ms
        .store(MANUAL_CLOCK_START_UNIX_MS + 20_000, Ordering::SeqCst);
    let fourth = funded_withdrawal(&reopened, 7).await;
    assert_eq!(fourth.created_at, Some(ms(20_000)), "forward again");
    reopened.shutdown().await;
}

/// A shared handle to a [`SteppingClock`].
struct ArcClock(Arc<SteppingClock>);

impl Clock for ArcClock {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
    fn unix_ms(&self) -> u64 {
        self.0.unix_ms()
    }
    fn sleep(&self, after: Duration) -> BoxFuture<'static, ()> {
        self.0.sleep(after)
    }
    fn alarm(&self, after: Duration) -> Alarm {
        self.0.alarm(after)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_at_the_epoch_or_past_year_9999_still_stamps_a_known_writable_time() {
    for (reading, expected) in [(0, UnixMs::from_millis(1)), (u64::MAX, UnixMs::MAX)] {
        let clock = Arc::new(SteppingClock {
            timers: ManualClock::new(),
            wall_ms: AtomicU64::new(reading),
        });
        let ledger = Ledger::open(Config {
            clock: SharedClock::new(ArcClock(clock)),
            ..Config::for_tests()
        })
        .unwrap();
        let w = funded_withdrawal(&ledger, 1).await;
        assert_eq!(w.created_at, Some(expected), "clock at {reading}");
        ledger.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_show_when_they_were_submitted_and_settled_and_keep_it_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let bank = SimulatedBank::default();
    let paying = |clock: SharedClock| Config {
        payout_mode: PayoutMode::Batched {
            interval_secs: 24 * 3600,
        },
        payment_service: Some(SharedPaymentService::new(bank.clone())),
        ..config(dir.path(), clock)
    };
    let ledger = Ledger::open(paying(clock.shared())).unwrap();
    let requested = funded_withdrawal(&ledger, 1).await;
    clock.advance(Duration::from_millis(2_500));
    let payouts = ledger.run_payouts_now().await.unwrap();
    assert_eq!(payouts.len(), 1);
    let payout = ledger.payout(payouts[0].payout_id).await.unwrap();
    assert_eq!(payout.submitted_at, Some(ms(2_500)));
    assert_eq!(
        payout.settled_at,
        Some(ms(2_500)),
        "the bank answered at once"
    );
    let paid = ledger.withdrawal(requested.transaction_id).await.unwrap();
    assert_eq!(
        (paid.created_at, paid.updated_at),
        (Some(ms(0)), Some(ms(2_500)))
    );
    ledger.shutdown().await;
    let reopened = Ledger::open(paying(ManualClock::new().shared())).unwrap();
    let recovered = reopened.payout(payout.payout_id).await.unwrap();
    assert_eq!(
        (recovered.submitted_at, recovered.settled_at),
        (payout.submitted_at, payout.settled_at)
    );
    reopened.shutdown().await;
}

#[test]
fn http_shows_the_times_as_rfc3339_strings() {
    let clock = ManualClock::starting_at(1_795_984_797_123);
    let config = Config {
        clock: clock.shared(),
        ..Config::for_tests()
    };
    let server = InProcess::start(config, HttpOptions::default());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = server.url();
    let post = |path: &str, body: serde_json::Value| -> serde_json::Value {
        let mut response = agent
            .post(format!("{url}{path}"))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap();
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    };
    let deposit = serde_json::json!({"account": 1, "currency": "USD", "amount": "5.00"});
    post("/v1/deposits", deposit);
    let request = serde_json::json!({"account": 1, "currency": "USD", "amount": "1.00"});
    let withdrawal = post("/v1/withdrawals", request);
    assert_eq!(
        withdrawal["created_at"], "2026-11-29T20:39:57.123Z",
        "{withdrawal}"
    );
    assert_eq!(withdrawal["updated_at"], "2026-11-29T20:39:57.123Z");
    clock.advance(Duration::from_millis(877));
    let tx = withdrawal["transaction_id"].as_str().unwrap().to_string();
    let cancelled = post(
        &format!("/v1/withdrawals/{tx}/cancel"),
        serde_json::json!({}),
    );
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["created_at"], "2026-11-29T20:39:57.123Z");
    assert_eq!(cancelled["updated_at"], "2026-11-29T20:39:58.000Z");
    let mut read = agent
        .get(format!("{url}/v1/withdrawals/{tx}"))
        .call()
        .unwrap();
    let read: serde_json::Value =
        serde_json::from_str(&read.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(read["updated_at"], "2026-11-29T20:39:58.000Z");
    server.stop();
}
