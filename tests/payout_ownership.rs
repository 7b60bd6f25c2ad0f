//! Who may settle a payout item (issue 11, item 4): while a payout the
//! engine runs owns a withdrawal, a caller's outcome is refused
//! (`payout_in_flight`); an operator's logged resolution is the only
//! override; a service answer contradicting a settled item is a mismatch
//! that `audit` and `verify` report. Also: immediate mode pays withdrawals
//! recovered pending at start (item 10).
//!
//! No test sleeps to wait for work: payouts are driven by
//! `run_payouts_now()` or awaited with a bounded poll on the ledger's state.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use burnledger::config::{PayoutMode, SharedPaymentService};
use burnledger::domain::payouts::PayoutItemOutcome;
use burnledger::domain::payouts::{PayoutState, Resolution};
use burnledger::payment::{
    PaymentError, PaymentFuture, PaymentService, Payout, SimulatedBank, SimulatedBankConfig,
};
use burnledger::{
    Config, Decimal, Ledger, LedgerError, TransactionId, WithdrawalOutcome, WithdrawalStatus,
};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn config(bank: &SimulatedBank, mode: PayoutMode) -> Config {
    Config {
        payout_mode: mode,
        payment_service: Some(SharedPaymentService::new(bank.clone())),
        account_pending_withdrawals_max: 100,
        ..Config::for_tests()
    }
}

/// Batched payouts whose interval never fires during a test.
fn batched() -> PayoutMode {
    PayoutMode::Batched {
        interval_secs: 24 * 3600,
    }
}

/// Runs payouts until no payout waits for an answer (the bank's faults
/// must be off by then); bounded.
async fn settle_everything(ledger: &Ledger) {
    for _ in 0..50 {
        let views = ledger.run_payouts_now().await.unwrap();
        let all = ledger.payouts().await.unwrap();
        if views.is_empty() && all.iter().all(|p| p.state != PayoutState::Processing) {
            return;
        }
    }
    panic!("payouts did not settle");
}

/// Callers hammer `complete_withdrawal` (half say completed, half failed)
/// while the engine's payouts claim, pay and settle the same withdrawals.
/// Every caller outcome is refused (`payout_in_flight`: the engine pays, so
/// phase 3 is its payouts'), the bank's payments are exactly the ledger's
/// completed set (nothing paid and released, nothing burned and unpaid),
/// and the money adds up.
async fn engine_payouts_race_caller_updates(mode: PayoutMode) {
    const WITHDRAWALS: u64 = 240;
    let bank = SimulatedBank::new(SimulatedBankConfig {
        latency: Duration::from_millis(1),
        item_failure_per_mille: 200,
        pending_per_mille: 200,
        max_items_per_payout: 16,
        seed: 11,
        ..SimulatedBankConfig::default()
    });
    let ledger = Ledger::open(config(&bank, mode)).unwrap();
    let payer = {
        let ledger = ledger.clone();
        let batched = mode != PayoutMode::Immediate;
        tokio::spawn(async move {
            // In batched mode, payout runs go on while callers hammer.
            if !batched {
                return;
            }
            while ledger.run_payouts_now().await.is_ok() {
                tokio::task::yield_now().await;
            }
        })
    };
    let mut callers = Vec::new();
    let mut amounts = BTreeMap::new();
    for n in 0..WITHDRAWALS {
        let account = n;
        ledger
            .deposit(account, "USD", dec("100"), None)
            .await
            .unwrap();
        let amount = dec("10") + Decimal::new((n % 50) as i64, 2);
        let w = ledger
            .request_withdrawal(account, "USD", amount, None)
            .await
            .unwrap();
        amounts.insert(w.transaction_id, amount);
        let ledger = ledger.clone();
        let tx = w.transaction_id;
        callers.push(tokio::spawn(async move {
            let outcome = if n % 2 == 0 {
                WithdrawalOutcome::Completed
            } else {
                WithdrawalOutcome::Failed {
                    reason: "the caller says so".into(),
                }
            };
            // (accepted, refused as in flight)
            let mut result = (false, 0u32);
            for _ in 0..20 {
                match ledger.complete_withdrawal(tx, outcome.clone()).await {
                    Ok(_) => {
                        result.0 = true;
                        break;
                    }
                    Err(LedgerError::PayoutInFlight { .. }) => result.1 += 1,
                    Err(LedgerError::InvalidTransition { .. }) => break,
                    Err(other) => panic!("{tx}: {other}"),
                }
                tokio::task::yield_now().await;
            }
            (tx, outcome, result)
        }));
    }
    // Withdrawals a caller said completed and was answered Ok.
    let mut caller_completed = BTreeSet::new();
    let mut refused_in_flight = 0;
    for caller in callers {
        let (tx, outcome, (accepted, refused)) = caller.await.unwrap();
        refused_in_flight += refused;
        if accepted && outcome == WithdrawalOutcome::Completed {
            caller_completed.insert(tx);
        }
    }
    payer.abort();
    let _ = payer.await;
    bank.set_faults(SimulatedBankConfig::default());
    settle_everything(&ledger).await;

    let paid_by_bank: BTreeSet<TransactionId> =
        bank.payments().iter().map(|(_, tx, _)| *tx).collect();
    assert_eq!(
        paid_by_bank.len(),
        bank.payments().len(),
        "nothing paid twice"
    );
    let mut completed = BTreeSet::new();
    let mut burned = Decimal::ZERO;
    for (tx, amount) in &amounts {
        let w = ledger.withdrawal(*tx).await.unwrap();
        match w.status {
            WithdrawalStatus::Completed => {
                completed.insert(*tx);
                burned += amount;
            }
            WithdrawalStatus::Failed { .. } => {}
            other => panic!("{tx} ended {other:?}"),
        }
    }
    let payouts = ledger.payouts().await.unwrap();
    let items = || payouts.iter().flat_map(|p| p.items.iter());
    let paid_by_payouts: BTreeSet<TransactionId> = items()
        .filter(|i| i.outcome == Some(PayoutItemOutcome::Paid))
        .map(|i| i.transaction_id)
        .collect();
    assert_eq!(
        paid_by_bank, paid_by_payouts,
        "the bank paid exactly what the payouts completed"
    );
    assert_eq!(
        paid_by_bank, completed,
        "the bank's payments equal the ledger's completed set"
    );
    // A caller's outcome is only ever answered Ok as a repeat of the
    // outcome a payout already gave (it changes nothing).
    assert!(
        caller_completed.is_subset(&paid_by_bank),
        "a caller completed what the bank never paid: {:?}",
        caller_completed
            .difference(&paid_by_bank)
            .collect::<Vec<_>>()
    );
    assert!(
        refused_in_flight > 0 && !paid_by_bank.is_empty(),
        "the race never reached a payout in flight ({refused_in_flight} refusals)"
    );
    let mut total = Decimal::ZERO;
    for account in 0..WITHDRAWALS {
        let b = ledger.balance(account, "USD").await.unwrap();
        assert_eq!(b.locked, Decimal::ZERO);
        total += b.total;
    }
    let deposits = Decimal::from(100 * WITHDRAWALS);
    assert_eq!(total, deposits - burned, "total = deposits − completed");
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    assert!(ledger.payout_mismatches().await.unwrap().is_empty());
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_payouts_racing_caller_updates_never_create_or_burn_money() {
    engine_payouts_race_caller_updates(PayoutMode::Immediate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_payouts_racing_caller_updates_never_create_or_burn_money() {
    engine_payouts_race_caller_updates(batched()).await;
}

/// A bank whose submits never reach it: every payout stays processing.
fn unreachable_bank() -> SimulatedBank {
    SimulatedBank::new(SimulatedBankConfig {
        unknown_outcome_per_mille: 1000,
        ..SimulatedBankConfig::default()
    })
}

/// Three withdrawals of 10.00 from accounts 1..=3 (100.00 each), in one
/// batched payout that stays processing; returns their ids and the payout.
async fn one_processing_payout(ledger: &Ledger) -> (Vec<TransactionId>, u64) {
    let mut txs = Vec::new();
    for account in 1..=3 {
        ledger
            .deposit(account, "USD", dec("100"), None)
            .await
            .unwrap();
        let w = ledger
            .request_withdrawal(account, "USD", dec("10"), None)
            .await
            .unwrap();
        txs.push(w.transaction_id);
    }
    let made = ledger.run_payouts_now().await.unwrap();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].state, PayoutState::Processing);
    (txs, made[0].payout_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_cannot_settle_an_item_a_payout_owns_in_any_way() {
    let bank = unreachable_bank();
    let ledger = Ledger::open(config(&bank, batched())).unwrap();
    let (txs, payout_id) = one_processing_payout(&ledger).await;
    let in_flight = LedgerError::PayoutInFlight {
        transaction_id: txs[0],
        payout_id: Some(payout_id),
    };
    for outcome in [
        WithdrawalOutcome::Completed,
        WithdrawalOutcome::Failed { reason: "x".into() },
    ] {
        let refused = ledger.complete_withdrawal(txs[0], outcome.clone()).await;
        assert_eq!(refused.unwrap_err(), in_flight);
        let batch = ledger
            .submit(vec![burnledger::Operation::CompleteWithdrawal {
                transaction_id: txs[0],
                outcome,
            }])
            .await;
        assert_eq!(batch, vec![Err(in_flight.clone())]);
    }
    assert_eq!(in_flight.code(), "payout_in_flight");
    assert!(in_flight
        .to_string()
        .contains(&format!("payout {payout_id}")));
    let w = ledger.withdrawal(txs[0]).await.unwrap();
    assert_eq!(w.status, WithdrawalStatus::Processing { payout_id });
    assert_eq!(ledger.balance(1, "USD").await.unwrap().locked, dec("10"));
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_mode_callers_settle_everything_as_before() {
    let bank = SimulatedBank::default();
    let ledger = Ledger::open(config(&bank, PayoutMode::External)).unwrap();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let w = ledger
        .request_withdrawal(1, "USD", dec("10"), None)
        .await
        .unwrap();
    let done = ledger
        .complete_withdrawal(w.transaction_id, WithdrawalOutcome::Completed)
        .await
        .unwrap();
    assert_eq!(done.status, WithdrawalStatus::Completed);
    assert!(matches!(
        ledger.run_payouts_now().await,
        Err(LedgerError::PayoutsDisabled)
    ));
    // No payouts here, so none to resolve.
    let resolved = ledger
        .resolve_payout_item(1, w.transaction_id, Resolution::Paid, "n")
        .await;
    assert_eq!(resolved, Err(LedgerError::UnknownPayout { payout_id: 1 }));
    ledger.shutdown().await;
}

/// While the engine pays, a withdrawal still queued for a payout is the
/// payouts' too: a caller's completed or failed is refused (nothing the
/// bank did not pay may be burned, nothing it may still pay released);
/// a cancel releases it, and the next payout does not carry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_withdrawal_is_refused_to_callers_and_a_cancelled_one_drops_out() {
    let bank = SimulatedBank::default();
    let ledger = Ledger::open(config(&bank, batched())).unwrap();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let a = ledger
        .request_withdrawal(1, "USD", dec("10"), None)
        .await
        .unwrap();
    let b = ledger
        .request_withdrawal(1, "USD", dec("20"), None)
        .await
        .unwrap();
    for outcome in [
        WithdrawalOutcome::Completed,
        WithdrawalOutcome::Failed { reason: "x".into() },
    ] {
        let refused = ledger
            .complete_withdrawal(a.transaction_id, outcome)
            .await
            .unwrap_err();
        assert_eq!(
            refused,
            LedgerError::PayoutInFlight {
                transaction_id: a.transaction_id,
                payout_id: None
            }
        );
        assert!(refused.to_string().contains("queued"), "{refused}");
    }
    ledger.cancel_withdrawal(a.transaction_id).await.unwrap();
    let made = ledger.run_payouts_now().await.unwrap();
    assert_eq!(made.len(), 1);
    let carried: Vec<_> = made[0].items.iter().map(|i| i.transaction_id).collect();
    assert_eq!(carried, vec![b.transaction_id]);
    assert_eq!(bank.times_paid(a.transaction_id), 0);
    assert_eq!(bank.times_paid(b.transaction_id), 1);
    let balance = ledger.balance(1, "USD").await.unwrap();
    assert_eq!((balance.total, balance.locked), (dec("80"), Decimal::ZERO));
    ledger.shutdown().await;
}

/// A payment service that is down: every call's outcome is unknown. Counts
/// the calls made to it.
#[derive(Clone, Default)]
struct DownBank {
    calls: Arc<AtomicUsize>,
}

impl DownBank {
    fn down(&self) -> PaymentFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Err(PaymentError::Unknown {
                reason: "down (test)".into(),
            })
        })
    }
}

impl PaymentService for DownBank {
    fn max_items_per_payout(&self) -> usize {
        100
    }
    fn submit(&self, _payout: Payout) -> PaymentFuture {
        self.down()
    }
    fn status(&self, _payout_id: u64) -> PaymentFuture {
        self.down()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_resolution_settles_the_item_stops_retries_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bank = DownBank::default();
    let durable = || Config {
        data_dir: Some(dir.path().to_path_buf()),
        payment_service: Some(SharedPaymentService::new(bank.clone())),
        ..config(&SimulatedBank::default(), batched())
    };
    let ledger = Ledger::open(durable()).unwrap();
    let (txs, payout_id) = one_processing_payout(&ledger).await;

    // Refusals first: they change nothing.
    let unknown = ledger
        .resolve_payout_item(payout_id + 7, txs[0], Resolution::Paid, "n")
        .await;
    assert_eq!(
        unknown.unwrap_err(),
        LedgerError::UnknownPayout {
            payout_id: payout_id + 7
        }
    );
    let stranger = TransactionId::new(9, 1);
    let not_in = ledger
        .resolve_payout_item(payout_id, stranger, Resolution::Paid, "n")
        .await;
    assert_eq!(
        not_in.unwrap_err(),
        LedgerError::NotInPayout {
            payout_id,
            transaction_id: stranger
        }
    );

    let paid = ledger
        .resolve_payout_item(payout_id, txs[0], Resolution::Paid, "bank statement line 4")
        .await
        .unwrap();
    assert_eq!(paid.items[0].outcome, Some(PayoutItemOutcome::Paid));
    assert_eq!(paid.state, PayoutState::Processing, "two items still wait");
    let again = ledger
        .resolve_payout_item(payout_id, txs[0], Resolution::Paid, "twice")
        .await;
    assert_eq!(again.unwrap_err().code(), "payout_item_settled");
    let not_paid = Resolution::NotPaid {
        reason: "beneficiary account closed".into(),
    };
    ledger
        .resolve_payout_item(payout_id, txs[1], not_paid, "bank called back")
        .await
        .unwrap();
    assert_eq!(
        ledger.withdrawal(txs[0]).await.unwrap().status,
        WithdrawalStatus::Completed
    );
    assert!(matches!(
        ledger.withdrawal(txs[1]).await.unwrap().status,
        WithdrawalStatus::Failed { ref reason } if reason == "beneficiary account closed"
    ));
    let (b1, b2) = (
        ledger.balance(1, "USD").await.unwrap(),
        ledger.balance(2, "USD").await.unwrap(),
    );
    assert_eq!((b1.total, b1.locked), (dec("90"), Decimal::ZERO));
    assert_eq!((b2.total, b2.available), (dec("100"), dec("100")));

    // One item still waits: the payout is still asked about.
    let calls = bank.calls.load(Ordering::SeqCst);
    ledger.run_payouts_now().await.unwrap();
    assert!(bank.calls.load(Ordering::SeqCst) > calls);
    ledger.snapshot().await.unwrap().expect("a snapshot");
    // The last item after the snapshot: only in the log.
    let last_item = Resolution::NotPaid {
        reason: "given up".into(),
    };
    let view = ledger
        .resolve_payout_item(payout_id, txs[2], last_item, "three days unknown")
        .await
        .unwrap();
    assert_eq!(view.state, PayoutState::PartiallyFailed);
    let counts = ledger.payout_counts().await.unwrap();
    assert_eq!(counts.in_state(PayoutState::PartiallyFailed), 1);
    assert_eq!(counts.in_state(PayoutState::Processing), 0);
    let calls = bank.calls.load(Ordering::SeqCst);
    ledger.run_payouts_now().await.unwrap();
    assert_eq!(bank.calls.load(Ordering::SeqCst), calls, "retries stopped");
    let before = ledger.payout(payout_id).await.unwrap();
    drop(ledger);

    let reopened = Ledger::open(durable()).unwrap();
    let mut after = reopened.payout(payout_id).await.unwrap();
    after.attempts = before.attempts;
    after.last_error = before.last_error.clone();
    assert_eq!(after, before);
    reopened.run_payouts_now().await.unwrap();
    assert_eq!(
        bank.calls.load(Ordering::SeqCst),
        calls,
        "no retry after a restart"
    );
    for (tx, expected) in txs.iter().zip(["completed", "failed", "failed"]) {
        let status = reopened.withdrawal(*tx).await.unwrap().status;
        assert_eq!(status.kind().as_str(), expected);
    }
    let audit = reopened.audit().await.unwrap();
    assert!(audit.is_clean(), "{:?}", audit.violations);
    reopened.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_the_service_never_got_is_resubmitted_without_its_resolved_items() {
    let bank = unreachable_bank();
    let ledger = Ledger::open(config(&bank, batched())).unwrap();
    let (txs, payout_id) = one_processing_payout(&ledger).await;
    let not_paid = Resolution::NotPaid {
        reason: "cancelled by the beneficiary".into(),
    };
    ledger
        .resolve_payout_item(payout_id, txs[0], not_paid, "n")
        .await
        .unwrap();
    ledger.run_payouts_now().await.unwrap();
    let last = bank.submit_calls().last().cloned().unwrap();
    assert_eq!((last.0, last.2), (payout_id, 2), "only the two unresolved");
    assert!(ledger.payout_mismatches().await.unwrap().is_empty());
    // Resolving an item paid while the service says it never got the
    // payout is contradicted at the next retry.
    ledger
        .resolve_payout_item(payout_id, txs[1], Resolution::Paid, "wrong guess")
        .await
        .unwrap();
    ledger.run_payouts_now().await.unwrap();
    let mismatches = ledger.payout_mismatches().await.unwrap();
    assert_eq!(mismatches.len(), 1);
    assert_eq!(mismatches[0].1.transaction_id, txs[1]);
    assert_eq!(
        ledger.payout(payout_id).await.unwrap().state,
        PayoutState::Mismatch
    );
    // The unresolved item is still retried.
    let last = bank.submit_calls().last().cloned().unwrap();
    assert_eq!((last.0, last.2), (payout_id, 1));
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_answer_contradicting_a_resolution_is_a_mismatch_audit_and_verify_report() {
    let dir = tempfile::tempdir().unwrap();
    // The bank pays, but its answers are lost: the ledger cannot tell.
    let bank = SimulatedBank::new(SimulatedBankConfig {
        lost_response_per_mille: 1000,
        ..SimulatedBankConfig::default()
    });
    let durable = || Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..config(&bank, batched())
    };
    let ledger = Ledger::open(durable()).unwrap();
    let (txs, payout_id) = one_processing_payout(&ledger).await;
    assert_eq!(bank.payments().len(), 3, "the bank paid all three");
    // The operator guesses wrong about the first item.
    let wrong = Resolution::NotPaid {
        reason: "assumed lost".into(),
    };
    ledger
        .resolve_payout_item(payout_id, txs[0], wrong, "no answer for a day")
        .await
        .unwrap();
    assert!(ledger.payout_mismatches().await.unwrap().is_empty());
    // The bank answers again: it paid all three.
    bank.set_faults(SimulatedBankConfig::default());
    let views = ledger.run_payouts_now().await.unwrap();
    assert_eq!(views[0].state, PayoutState::Mismatch);
    let mismatches = ledger.payout_mismatches().await.unwrap();
    assert_eq!(mismatches.len(), 1);
    let counts = ledger.payout_counts().await.unwrap();
    assert_eq!(counts.mismatches, 1);
    assert_eq!(counts.in_state(PayoutState::Mismatch), 1);
    assert_eq!(counts.in_state(PayoutState::Processing), 0);
    let (id, m) = &mismatches[0];
    assert_eq!((*id, m.transaction_id), (payout_id, txs[0]));
    assert_eq!(m.reported, PayoutItemOutcome::Paid);
    assert!(matches!(m.settled, PayoutItemOutcome::Failed { .. }));
    let audit = ledger.audit().await.unwrap();
    assert_eq!(audit.payout_mismatches, 1);
    assert!(
        audit.violations.iter().any(|v| v.contains("mismatch")),
        "{:?}",
        audit.violations
    );
    // Asking again does not count the same contradiction twice.
    ledger.run_payouts_now().await.unwrap();
    assert_eq!(ledger.payout_mismatches().await.unwrap().len(), 1);
    // Kept by a snapshot (format v3) and by the log.
    ledger.snapshot().await.unwrap().expect("a snapshot");
    drop(ledger);
    let reopened = Ledger::open(durable()).unwrap();
    assert_eq!(reopened.payout_mismatches().await.unwrap(), mismatches);
    assert_eq!(reopened.payout_counts().await.unwrap().mismatches, 1);
    assert_eq!(
        reopened.payout(payout_id).await.unwrap().state,
        PayoutState::Mismatch
    );
    assert!(!reopened.audit().await.unwrap().is_clean());
    reopened.shutdown().await;

    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_burnledger"))
        .args(["verify", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&verify.stdout);
    assert!(!verify.status.success(), "{shown}");
    assert!(shown.contains("mismatch"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_mode_pays_withdrawals_recovered_pending_without_new_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let bank = SimulatedBank::default();
    let in_mode = |mode| Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..config(&bank, mode)
    };
    // Requested while the host pays: they stay pending.
    let ledger = Ledger::open(in_mode(PayoutMode::External)).unwrap();
    let mut txs = Vec::new();
    for account in 0..20 {
        ledger
            .deposit(account, "USD", dec("50"), None)
            .await
            .unwrap();
        let w = ledger
            .request_withdrawal(account, "USD", dec("5"), None)
            .await
            .unwrap();
        txs.push(w.transaction_id);
    }
    ledger.shutdown().await;
    assert!(bank.payments().is_empty());

    let reopened = Arc::new(Ledger::open(in_mode(PayoutMode::Immediate)).unwrap());
    // Nothing new arrives; each question waits behind the actor's queued
    // runs. Bounded, no sleeping.
    let mut paid = false;
    for _ in 0..10_000 {
        let payouts = reopened.payouts().await.unwrap();
        if payouts.len() == txs.len() && payouts.iter().all(|p| p.state == PayoutState::Completed) {
            paid = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(paid, "withdrawals recovered pending were not paid");
    for tx in &txs {
        assert_eq!(bank.times_paid(*tx), 1);
        assert_eq!(
            reopened.withdrawal(*tx).await.unwrap().status,
            WithdrawalStatus::Completed
        );
    }
    reopened.shutdown().await;
}
