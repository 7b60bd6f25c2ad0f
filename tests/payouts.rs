//! Payouts through the payment service: batching per currency, partial
//! failures, unknown outcomes and lost responses, crashes between the log
//! and the answer, and cancel racing a claim.
//!
//! Time is never waited for: payouts are driven by `run_payouts_now()`
//! (the interval tick is set far out) and the simulated bank answers with
//! zero latency, so these tests sleep nowhere.

use std::collections::HashMap;
use std::str::FromStr;

use burnledger::config::{PayoutMode, SharedPaymentService};
use burnledger::domain::payouts::PayoutState;
use burnledger::payment::{SimulatedBank, SimulatedBankConfig};
use burnledger::{Config, Decimal, Ledger, LedgerError, TransactionId, WithdrawalStatus};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Batched payouts whose interval never fires during a test.
fn config_with(bank: &SimulatedBank) -> Config {
    Config {
        payout_mode: PayoutMode::Batched {
            interval_secs: 24 * 3600,
        },
        payment_service: Some(SharedPaymentService::new(bank.clone())),
        account_pending_withdrawals_max: 100,
        ..Config::for_tests()
    }
}

/// Funds `accounts` accounts in USD and BTC and requests one withdrawal of
/// each currency per account; returns (tx, currency, amount).
async fn request_withdrawals(
    ledger: &Ledger,
    accounts: u64,
) -> Vec<(TransactionId, &'static str, Decimal)> {
    let mut requested = Vec::new();
    for account in 0..accounts {
        ledger
            .deposit(account, "USD", dec("100"), None)
            .await
            .unwrap();
        ledger
            .deposit(account, "BTC", dec("1"), None)
            .await
            .unwrap();
        let usd = dec("10.25") + Decimal::from(account % 7);
        let w = ledger
            .request_withdrawal(account, "USD", usd, None)
            .await
            .unwrap();
        requested.push((w.transaction_id, "USD", usd));
        let btc = dec("0.00012345");
        let w = ledger
            .request_withdrawal(account, "BTC", btc, None)
            .await
            .unwrap();
        requested.push((w.transaction_id, "BTC", btc));
    }
    requested
}

/// Every withdrawal ended paid or failed, with the balance effect that
/// goes with it, and the bank paid each paid one exactly once and no
/// failed one at all.
async fn assert_settled_exactly(
    ledger: &Ledger,
    bank: &SimulatedBank,
    requested: &[(TransactionId, &str, Decimal)],
) {
    let mut expected_total: HashMap<(u64, &str), Decimal> = HashMap::new();
    for (tx, currency, amount) in requested {
        let w = ledger.withdrawal(*tx).await.unwrap();
        let start = if *currency == "USD" {
            dec("100")
        } else {
            dec("1")
        };
        let total = expected_total
            .entry((tx.account(), currency))
            .or_insert(start);
        match w.status {
            WithdrawalStatus::Completed => {
                assert_eq!(
                    bank.times_paid(*tx),
                    1,
                    "{tx:?} completed, so paid exactly once"
                );
                *total -= *amount;
            }
            WithdrawalStatus::Failed { .. } => {
                assert_eq!(bank.times_paid(*tx), 0, "{tx:?} failed, so never paid");
            }
            other => panic!("{tx:?} ended {other:?}"),
        }
    }
    for ((account, currency), total) in expected_total {
        let b = ledger.balance(account, currency).await.unwrap();
        assert_eq!(
            (b.total, b.locked),
            (total, Decimal::ZERO),
            "account {account} {currency}"
        );
    }
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_makes_one_submit_per_currency_per_chunk_and_settles_every_item() {
    let bank = SimulatedBank::new(SimulatedBankConfig {
        item_failure_per_mille: 200,
        max_items_per_payout: 40,
        seed: 7,
        ..SimulatedBankConfig::default()
    });
    let ledger = Ledger::open(config_with(&bank)).unwrap();
    let requested = request_withdrawals(&ledger, 100).await;
    let payouts = ledger.run_payouts_now().await.unwrap();
    // 100 USD items and 100 BTC items, at most 40 per call: 3 calls each.
    let calls = bank.submit_calls();
    let per_currency = |c: &str| calls.iter().filter(|(_, cur, _)| cur.as_str() == c).count();
    assert_eq!(
        (per_currency("USD"), per_currency("BTC")),
        (3, 3),
        "{calls:?}"
    );
    assert!(calls.iter().all(|(_, _, items)| *items <= 40));
    assert_eq!(payouts.len(), 6);
    assert!(payouts.iter().all(|p| p.state != PayoutState::Processing));
    let items: usize = payouts.iter().map(|p| p.items.len()).sum();
    assert_eq!(items, 200);
    assert_settled_exactly(&ledger, &bank, &requested).await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_failed_batch_settles_and_releases_each_item_on_its_own() {
    let bank = SimulatedBank::new(SimulatedBankConfig {
        item_failure_per_mille: 500,
        seed: 3,
        ..SimulatedBankConfig::default()
    });
    let ledger = Ledger::open(config_with(&bank)).unwrap();
    let mut requested = Vec::new();
    for account in 0..20 {
        ledger
            .deposit(account, "USD", dec("100"), None)
            .await
            .unwrap();
        let w = ledger
            .request_withdrawal(account, "USD", dec("40"), None)
            .await
            .unwrap();
        requested.push((w.transaction_id, "USD", dec("40")));
    }
    let payouts = ledger.run_payouts_now().await.unwrap();
    assert_eq!(payouts.len(), 1, "one currency, one call");
    assert_eq!(payouts[0].state, PayoutState::PartiallyFailed);
    let paid = payouts[0]
        .items
        .iter()
        .filter(|i| i.outcome == Some(burnledger::domain::payouts::PayoutItemOutcome::Paid))
        .count();
    assert!(
        paid > 0 && paid < 20,
        "a mix of paid and failed: {paid} paid"
    );
    assert_eq!(payouts[0].total, dec("800"));
    assert_eq!(
        ledger.payout(payouts[0].payout_id).await.unwrap(),
        payouts[0]
    );
    assert_settled_exactly(&ledger, &bank, &requested).await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_outcomes_and_lost_responses_never_pay_twice_and_always_end() {
    let bank = SimulatedBank::new(SimulatedBankConfig {
        item_failure_per_mille: 100,
        unknown_outcome_per_mille: 350,
        lost_response_per_mille: 350,
        pending_per_mille: 150,
        max_items_per_payout: 25,
        seed: 11,
        ..SimulatedBankConfig::default()
    });
    let ledger = Ledger::open(config_with(&bank)).unwrap();
    let requested = request_withdrawals(&ledger, 60).await;
    let mut runs = 0;
    loop {
        runs += 1;
        ledger.run_payouts_now().await.unwrap();
        let open = ledger
            .payouts()
            .await
            .unwrap()
            .iter()
            .filter(|p| p.state == PayoutState::Processing)
            .count();
        if open == 0 {
            break;
        }
        assert!(
            runs < 200,
            "{open} payouts still processing after {runs} runs"
        );
        // While unanswered, items stay locked: never released on an unknown.
        let audit = ledger.audit().await.unwrap();
        assert!(audit.is_clean(), "{:?}", audit.violations);
    }
    assert!(runs > 1, "the fault rates should have forced retries");
    // Retries reused payout ids: no more distinct ids than chunks.
    let ids: std::collections::BTreeSet<_> = bank.submit_calls().iter().map(|c| c.0).collect();
    assert_eq!(ids.len(), ledger.payouts().await.unwrap().len());
    assert_settled_exactly(&ledger, &bank, &requested).await;
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_racing_a_payout_claim_has_exactly_one_winner() {
    let bank = SimulatedBank::new(SimulatedBankConfig::default());
    let ledger = Ledger::open(config_with(&bank)).unwrap();
    let mut txs = Vec::new();
    for account in 0..200 {
        ledger
            .deposit(account, "USD", dec("10"), None)
            .await
            .unwrap();
        txs.push(
            ledger
                .request_withdrawal(account, "USD", dec("10"), None)
                .await
                .unwrap()
                .transaction_id,
        );
    }
    let cancel = |tx: TransactionId| {
        let ledger = ledger.clone();
        tokio::spawn(async move { ledger.cancel_withdrawal(tx).await })
    };
    // Half the cancels are sent before the payout run, half after it, so
    // both sides win some races.
    let mut cancels: Vec<_> = txs.iter().step_by(2).map(|tx| (*tx, cancel(*tx))).collect();
    let payouts = {
        let ledger = ledger.clone();
        tokio::spawn(async move { ledger.run_payouts_now().await })
    };
    cancels.extend(txs.iter().skip(1).step_by(2).map(|tx| (*tx, cancel(*tx))));
    let mut cancelled = 0;
    for (tx, cancel) in cancels {
        match cancel.await.unwrap() {
            Ok(w) => {
                assert_eq!(w.status, WithdrawalStatus::Cancelled);
                cancelled += 1;
            }
            Err(LedgerError::InvalidTransition { from, .. }) => {
                assert_ne!(
                    from,
                    burnledger::domain::withdrawal::StatusKind::Pending,
                    "{tx:?}"
                );
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    payouts.await.unwrap().unwrap();
    for tx in &txs {
        let w = ledger.withdrawal(*tx).await.unwrap();
        match w.status {
            WithdrawalStatus::Cancelled => {
                assert_eq!(bank.times_paid(*tx), 0, "cancelled yet paid")
            }
            WithdrawalStatus::Completed => assert_eq!(bank.times_paid(*tx), 1),
            other => panic!("{tx:?} ended {other:?}"),
        }
    }
    eprintln!("{cancelled} of {} cancels won the race", txs.len());
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_withdrawal_is_credited_back_and_totals_stay_exact() {
    let bank = SimulatedBank::new(SimulatedBankConfig::default());
    let ledger = Ledger::open(config_with(&bank)).unwrap();
    ledger.deposit(5, "USD", dec("50"), None).await.unwrap();
    let w = ledger
        .request_withdrawal(5, "USD", dec("20"), None)
        .await
        .unwrap();
    ledger.run_payouts_now().await.unwrap();
    assert_eq!(ledger.balance(5, "USD").await.unwrap().total, dec("30"));
    assert!(bank.return_item(w.transaction_id, "account closed"));
    let returned = ledger
        .return_withdrawal(w.transaction_id, "account closed")
        .await
        .unwrap();
    assert_eq!(
        returned.status,
        WithdrawalStatus::Returned {
            reason: "account closed".into()
        }
    );
    let b = ledger.balance(5, "USD").await.unwrap();
    assert_eq!(
        (b.available, b.locked, b.total),
        (dec("50"), dec("0"), dec("50"))
    );
    assert!(matches!(
        ledger.cancel_withdrawal(w.transaction_id).await,
        Err(LedgerError::InvalidTransition { .. })
    ));
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payout_queries_and_errors() {
    let bank = SimulatedBank::new(SimulatedBankConfig::default());
    let ledger = Ledger::open(config_with(&bank)).unwrap();
    assert!(ledger.payouts().await.unwrap().is_empty());
    assert!(matches!(
        ledger.payout(12345).await,
        Err(LedgerError::UnknownPayout { payout_id: 12345 })
    ));
    ledger.shutdown().await;
    // Without a payment service, payouts are the host's (external mode).
    let external = Ledger::open(Config::for_tests()).unwrap();
    assert!(matches!(
        external.run_payouts_now().await,
        Err(LedgerError::PayoutsDisabled)
    ));
    external.shutdown().await;
}

/// A payment service that forwards to a `SimulatedBank` and then never
/// answers `submit` (a hung call), telling the test once it was called.
/// `pay_first` chooses whether the bank really got the payout before the
/// hang (a lost response) or not (a call that never arrived).
#[derive(Clone)]
struct HangingBank {
    inner: SimulatedBank,
    pay_first: bool,
    called: std::sync::Arc<tokio::sync::Notify>,
}

impl burnledger::payment::PaymentService for HangingBank {
    fn max_items_per_payout(&self) -> usize {
        self.inner.max_items_per_payout()
    }
    fn submit(&self, payout: burnledger::payment::Payout) -> burnledger::payment::PaymentFuture {
        let (inner, pay_first, called) = (self.inner.clone(), self.pay_first, self.called.clone());
        Box::pin(async move {
            if pay_first {
                let _ = inner.submit(payout).await;
            }
            called.notify_one();
            std::future::pending().await
        })
    }
    fn status(&self, payout_id: u64) -> burnledger::payment::PaymentFuture {
        self.inner.status(payout_id)
    }
}

fn hanging(inner: &SimulatedBank, pay_first: bool) -> HangingBank {
    HangingBank {
        inner: inner.clone(),
        pay_first,
        called: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_after_the_payout_claimed_is_an_invalid_transition() {
    let bank = SimulatedBank::new(SimulatedBankConfig::default());
    let gate = hanging(&bank, false);
    let ledger = Ledger::open(Config {
        payment_service: Some(SharedPaymentService::new(gate.clone())),
        ..config_with(&bank)
    })
    .unwrap();
    ledger.deposit(1, "USD", dec("10"), None).await.unwrap();
    let w = ledger
        .request_withdrawal(1, "USD", dec("10"), None)
        .await
        .unwrap();
    let run = {
        let ledger = ledger.clone();
        tokio::spawn(async move { ledger.run_payouts_now().await })
    };
    gate.called.notified().await;
    let refused = ledger.cancel_withdrawal(w.transaction_id).await;
    assert!(
        matches!(
            refused,
            Err(LedgerError::InvalidTransition {
                from: burnledger::domain::withdrawal::StatusKind::Processing,
                ..
            })
        ),
        "{refused:?}"
    );
    let now = ledger.withdrawal(w.transaction_id).await.unwrap();
    assert!(matches!(now.status, WithdrawalStatus::Processing { .. }));
    assert_eq!(ledger.balance(1, "USD").await.unwrap().locked, dec("10"));
    run.abort();
}

/// Crash (drop without shutdown) after `PayoutSubmitted` is durable and
/// before the service answered; reopen on the same data with the service
/// answering again: the payout is reconciled, never paid twice.
async fn crash_between_submit_and_answer(pay_first: bool) {
    let dir = tempfile::tempdir().unwrap();
    let bank = SimulatedBank::new(SimulatedBankConfig::default());
    let gate = hanging(&bank, pay_first);
    let ledger = Ledger::open(Config {
        payment_service: Some(SharedPaymentService::new(gate.clone())),
        ..Config {
            data_dir: Some(dir.path().to_path_buf()),
            ..config_with(&bank)
        }
    })
    .unwrap();
    let mut requested = Vec::new();
    for account in 0..10 {
        ledger
            .deposit(account, "USD", dec("100"), None)
            .await
            .unwrap();
        let w = ledger
            .request_withdrawal(account, "USD", dec("30"), None)
            .await
            .unwrap();
        requested.push((w.transaction_id, "USD", dec("30")));
    }
    let run = {
        let ledger = ledger.clone();
        tokio::spawn(async move { ledger.run_payouts_now().await })
    };
    gate.called.notified().await;
    run.abort();
    let _ = run.await;
    drop(ledger);
    let paid_before = bank.payments().len();
    assert_eq!(paid_before, if pay_first { 10 } else { 0 });

    let reopened = Ledger::open(Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..config_with(&bank)
    })
    .unwrap();
    // The reopened ledger reconciles payouts left processing as it starts;
    // a run now waits for that and makes no new payout.
    reopened.run_payouts_now().await.unwrap();
    let payouts = reopened.payouts().await.unwrap();
    assert_eq!(
        payouts.len(),
        1,
        "reconciled under its first id, no new payout"
    );
    assert_eq!(payouts[0].state, PayoutState::Completed);
    assert_eq!(bank.payments().len(), 10, "each item paid exactly once");
    let ids: std::collections::BTreeSet<_> = bank.submit_calls().iter().map(|c| c.0).collect();
    assert_eq!(ids.len(), 1);
    assert_settled_exactly(&reopened, &bank, &requested).await;
    reopened.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_bank_paid_but_before_its_answer_is_reconciled_not_paid_twice() {
    crash_between_submit_and_answer(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_bank_got_the_payout_resubmits_it_under_the_same_id() {
    crash_between_submit_and_answer(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payout_records_survive_a_snapshot_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bank = SimulatedBank::new(SimulatedBankConfig {
        item_failure_per_mille: 300,
        seed: 5,
        ..SimulatedBankConfig::default()
    });
    let durable = || Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..config_with(&bank)
    };
    let ledger = Ledger::open(durable()).unwrap();
    request_withdrawals(&ledger, 10).await;
    let made = ledger.run_payouts_now().await.unwrap();
    assert_eq!(made.len(), 2);
    ledger
        .snapshot()
        .await
        .unwrap()
        .expect("a snapshot after the payouts");
    // One more payout after the snapshot, only in the log.
    ledger.deposit(99, "USD", dec("5"), None).await.unwrap();
    ledger
        .request_withdrawal(99, "USD", dec("5"), None)
        .await
        .unwrap();
    let later = ledger.run_payouts_now().await.unwrap();
    let mut before = ledger.payouts().await.unwrap();
    drop(ledger);

    let reopened = Ledger::open(durable()).unwrap();
    let mut after = reopened.payouts().await.unwrap();
    // Attempt counts are kept in memory only.
    for p in before.iter_mut().chain(after.iter_mut()) {
        p.attempts = 0;
        p.last_error = None;
    }
    assert_eq!(after, before);
    assert_eq!(after.len(), 3);
    assert!(reopened.payout(later[0].payout_id).await.is_ok());
    // New payouts never reuse an id.
    reopened.deposit(98, "USD", dec("5"), None).await.unwrap();
    reopened
        .request_withdrawal(98, "USD", dec("5"), None)
        .await
        .unwrap();
    let newest = reopened.run_payouts_now().await.unwrap();
    assert!(newest[0].payout_id > later[0].payout_id);
    reopened.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_mode_pays_each_withdrawal_in_its_own_payout_as_soon_as_it_is_durable() {
    let bank = SimulatedBank::new(SimulatedBankConfig::default());
    let ledger = Ledger::open(Config {
        payout_mode: PayoutMode::Immediate,
        ..config_with(&bank)
    })
    .unwrap();
    let requested = request_withdrawals(&ledger, 5).await;
    // Nobody runs the payout job: each request triggers its own payout. Ask
    // the payout actor (each question waits behind the runs it has queued)
    // until all are settled; bounded, no sleeping.
    let mut settled = false;
    for _ in 0..10_000 {
        let payouts = ledger.payouts().await.unwrap();
        if payouts.len() == requested.len()
            && payouts.iter().all(|p| p.state != PayoutState::Processing)
        {
            settled = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(settled, "immediate payouts did not settle");
    assert!(ledger
        .payouts()
        .await
        .unwrap()
        .iter()
        .all(|p| p.items.len() == 1));
    assert_eq!(bank.submit_calls().len(), requested.len());
    assert_settled_exactly(&ledger, &bank, &requested).await;
    ledger.shutdown().await;
}

/// A payout with more items on a shard than the shard may have in flight
/// is still paid, in one run: its claims and settlements are admitted in
/// groups, not as one group the shard refuses every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_larger_than_a_shards_in_flight_bound_is_paid_in_one_run() {
    let bank = SimulatedBank::default();
    let ledger = Ledger::open(Config {
        shard_in_flight_ops_max: 8,
        batch_ops_max: 8,
        ..config_with(&bank)
    })
    .unwrap();
    let requested = request_withdrawals(&ledger, 30).await;
    let payouts = ledger.run_payouts_now().await.unwrap();
    let items: usize = payouts.iter().map(|p| p.items.len()).sum();
    assert_eq!(
        items,
        requested.len(),
        "every withdrawal in this run's payouts"
    );
    assert!(
        payouts.iter().all(|p| p.items.len() == 30),
        "one payout per currency, 30 items each (over 8 per shard)"
    );
    assert_settled_exactly(&ledger, &bank, &requested).await;
    ledger.shutdown().await;
}
