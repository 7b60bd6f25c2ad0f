//! Account actors through the public `Ledger` handle: idle actors stop and
//! their accounts carry on from the state they kept. The idle sweeps run on
//! a `ManualClock`, moved by the test instead of waited for.

mod common;

use std::time::Duration;

use burnledger::clock::ManualClock;
use burnledger::Config;
use common::{assert_balance, complete, dec, deposit_op, with_ledger};

/// Moves `clock` one sweep interval on, once both shards have armed their
/// sweep, and waits until both have swept (each re-arms once done).
async fn sweep(clock: &ManualClock, every: Duration) {
    let bound = Duration::from_secs(20);
    let armed = tokio::time::timeout(bound, clock.armed_at_least(2));
    armed.await.expect("both shards arm their sweeps");
    clock.advance(every);
    let rearmed = tokio::time::timeout(bound, clock.armed_at_least(2));
    rearmed.await.expect("both shards sweep and re-arm");
}

#[tokio::test]
async fn idle_account_actors_stop_and_their_accounts_carry_on_where_they_were() {
    let clock = ManualClock::new();
    let config = Config {
        clock: clock.shared(),
        ..Config::for_tests()
    };
    let every = Duration::from_millis(config.account_idle_sweep_ms);
    with_ledger(config, |ledger| async move {
        // The test config caps actors at 4 per shard and sweeps every 20 ms
        // (of the manual clock).
        let deposits = (1..=50).map(|a| deposit_op(a, "USD", "3")).collect();
        assert!(ledger.submit(deposits).await.iter().all(Result::is_ok));
        let counts = ledger.account_counts().await.unwrap();
        assert_eq!(counts.accounts, 50);
        // One batch touched 50 accounts: the cap kept most actors stopped.
        assert!(counts.actors_running <= 2 * 5, "{counts:?}");
        // Idle for a few sweeps: every actor stops, every account stays.
        for _ in 0..3 {
            sweep(&clock, every).await;
        }
        let counts = ledger.account_counts().await.unwrap();
        assert_eq!((counts.accounts, counts.actors_running), (50, 0));
        // A stopped actor's account is read from, and restarted with, its kept
        // state.
        assert_balance(&ledger, 7, "USD", ["3", "0", "3"]).await;
        let withdrawal = ledger
            .request_withdrawal(7, "USD", dec("1"), None)
            .await
            .unwrap();
        assert_balance(&ledger, 7, "USD", ["2", "1", "3"]).await;
        // (Its new actor may already be swept again on a slow machine.)
        assert!(ledger.account_counts().await.unwrap().actors_running <= 1);
        complete(&ledger, withdrawal.transaction_id).await;
        assert_balance(&ledger, 7, "USD", ["2", "0", "2"]).await;
    })
    .await;
}
