//! The gauges the engine keeps as it runs (`Ledger::gauges`, what `/metrics`
//! shows) against the truth: a full scan of every exported account state.
//!
//! A seeded mix of every operation that moves a withdrawal — requests,
//! cancels, caller outcomes, payouts through a faulty simulated bank
//! (paid, failed, unknown, left processing), returns, transfers, batches —
//! is checked along the way, after a restart (the gauges are seeded from
//! the recovered state), and after more traffic on top. Then: reading the
//! gauges, and rendering `/metrics`, never copies an account state.
//!
//! Nothing sleeps: payouts are driven by `run_payouts_now()`; the payout
//! actor's background retries are the only concurrent change, and a
//! comparison is taken only when the gauges read the same before and after
//! the export (a bounded retry on that observable condition).

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;

use burnledger::config::{PayoutMode, SharedPaymentService};
use burnledger::domain::withdrawal::StatusKind;
use burnledger::payment::{SimulatedBank, SimulatedBankConfig};
use burnledger::AccountExport;
use burnledger::{
    Config, Decimal, Gauges, Ledger, Operation, TransactionId, WithdrawalOutcome, WithdrawalStatus,
};
use common::Rng;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

const CURRENCIES: [&str; 3] = ["USD", "EUR", "BTC"];
const ACCOUNTS: u64 = 24;

/// (currency, status) → (count, amount), as a full scan of the exported
/// accounts finds them. Written here independently of the
/// library's own scan, so the two cannot share a mistake.
type Tallies = BTreeMap<(String, &'static str), (u64, Decimal)>;

fn scan(accounts: &[AccountExport]) -> Tallies {
    let mut tallies = Tallies::new();
    for account in accounts {
        for withdrawal in &account.withdrawals {
            let key = (
                withdrawal.currency.to_string(),
                withdrawal.status.kind().as_str(),
            );
            let entry = tallies.entry(key).or_default();
            entry.0 += 1;
            entry.1 += withdrawal.amount;
        }
    }
    tallies
}

/// The same view of the gauges, leaving out zero tallies (a scan never
/// sees a status nothing is in).
fn tallies_of(gauges: &Gauges) -> Tallies {
    let mut tallies = Tallies::new();
    for currency in gauges.withdrawals.currencies() {
        for (status, tally) in currency.iter() {
            assert!(tally.amount_is_exact());
            if tally.count != 0 || tally.amount != 0 {
                let key = (currency.currency.code.to_string(), status.as_str());
                let amount = currency.currency.to_decimal(tally.amount);
                tallies.insert(key, (tally.count, amount));
            }
        }
    }
    tallies
}

/// Asserts the gauges equal a full scan of the exported states, taken
/// while nothing moved (gauges equal before and after the export).
/// Returns the gauges.
async fn assert_gauges_match_a_full_scan(ledger: &Ledger, when: &str) -> Gauges {
    for _ in 0..100 {
        let before = ledger.gauges().await.unwrap();
        let accounts = ledger.export_accounts().await.unwrap();
        let after = ledger.gauges().await.unwrap();
        if tallies_of(&before) != tallies_of(&after) || before.accounts != after.accounts {
            continue; // a background payout retry moved something: again
        }
        assert_eq!(
            tallies_of(&after),
            scan(&accounts),
            "{when}: gauges differ from a full scan"
        );
        assert_eq!(after.accounts, accounts.len(), "{when}: accounts");
        return after;
    }
    panic!("{when}: the ledger never held still for a comparison");
}

/// Batched payouts whose interval never fires: runs come from the test.
fn config(dir: &std::path::Path, bank: &SimulatedBank) -> Config {
    Config {
        payout_mode: PayoutMode::Batched {
            interval_secs: 24 * 3600,
        },
        payment_service: Some(SharedPaymentService::new(bank.clone())),
        account_pending_withdrawals_max: 50,
        ..remembering(dir)
    }
}

/// Durable in `dir`, without a history store: the gauges count what
/// memory holds, and this ledger forgets nothing, so every status stays
/// counted and a restart recovers exactly what memory held (forgetting,
/// and the gauges following it, are tests/forget.rs's).
fn remembering(dir: &std::path::Path) -> Config {
    Config {
        history: false,
        ..Config::for_tests_in(dir)
    }
}

/// What the mix did, so the test can insist every kind of change happened.
#[derive(Default, Debug)]
struct Done {
    deposits: u32,
    requests: u32,
    cancels: u32,
    completed: u32,
    failed: u32,
    returned: u32,
    transfers: u32,
    batches: u32,
    payout_runs: u32,
}

/// `steps` seeded operations; every 64 the gauges are compared with a scan.
async fn mix(ledger: &Ledger, rng: &mut Rng, steps: u32, txs: &mut Vec<TransactionId>) -> Done {
    let mut done = Done::default();
    for step in 0..steps {
        let account = rng.below(ACCOUNTS);
        let currency = rng.pick(&CURRENCIES);
        let amount = Decimal::from(1 + rng.below(40)) / Decimal::from(4);
        match rng.below(100) {
            0..=19 => {
                if ledger
                    .deposit(account, currency, amount * Decimal::from(3), None)
                    .await
                    .is_ok()
                {
                    done.deposits += 1;
                }
            }
            20..=44 => {
                if let Ok(w) = ledger
                    .request_withdrawal(account, currency, amount, None)
                    .await
                {
                    txs.push(w.transaction_id);
                    done.requests += 1;
                }
            }
            45..=52 if !txs.is_empty() => {
                let tx = txs[rng.below(txs.len() as u64) as usize];
                if ledger.cancel_withdrawal(tx).await.is_ok() {
                    done.cancels += 1;
                }
            }
            53..=62 if !txs.is_empty() => {
                // A caller's outcome: allowed on a pending withdrawal.
                let tx = txs[rng.below(txs.len() as u64) as usize];
                let outcome = if rng.below(2) == 0 {
                    WithdrawalOutcome::Completed
                } else {
                    WithdrawalOutcome::Failed {
                        reason: "refused by the test".into(),
                    }
                };
                let failed = matches!(outcome, WithdrawalOutcome::Failed { .. });
                if let Ok(w) = ledger.complete_withdrawal(tx, outcome).await {
                    match (&w.status, failed) {
                        (WithdrawalStatus::Completed, false) => done.completed += 1,
                        (WithdrawalStatus::Failed { .. }, true) => done.failed += 1,
                        _ => {}
                    }
                }
            }
            63..=67 if !txs.is_empty() => {
                let tx = txs[rng.below(txs.len() as u64) as usize];
                if ledger.return_withdrawal(tx, "sent back").await.is_ok() {
                    done.returned += 1;
                }
            }
            68..=82 => {
                let to = (account + 1 + rng.below(ACCOUNTS - 1)) % ACCOUNTS;
                if ledger
                    .transfer(account, to, currency, amount, None)
                    .await
                    .is_ok()
                {
                    done.transfers += 1;
                }
            }
            83..=92 => {
                // A batch over several accounts and shards: deposits,
                // withdrawals, transfers and cancels in one submit.
                let usd = burnledger::CurrencyCode::new("USD").unwrap();
                let mut ops = Vec::new();
                for k in 0..6 {
                    let a = (account + k) % ACCOUNTS;
                    ops.push(Operation::Deposit {
                        account: a,
                        currency: usd,
                        amount: dec("2"),
                        idempotency_key: None,
                        metadata: Default::default(),
                    });
                    ops.push(Operation::RequestWithdrawal {
                        account: a,
                        currency: usd,
                        amount: dec("0.75"),
                        idempotency_key: None,
                        options: Default::default(),
                    });
                    ops.push(Operation::Transfer {
                        from: a,
                        to: (a + 5) % ACCOUNTS,
                        currency: usd,
                        amount: dec("0.5"),
                        idempotency_key: None,
                        metadata: Default::default(),
                    });
                }
                if let Some(&tx) = txs.last() {
                    ops.push(Operation::CancelWithdrawal { transaction_id: tx });
                }
                for outcome in ledger.submit(ops).await.into_iter().flatten() {
                    if let burnledger::Outcome::Withdrawal(w) = outcome {
                        if w.status == WithdrawalStatus::Pending && !txs.contains(&w.transaction_id)
                        {
                            txs.push(w.transaction_id);
                        }
                    }
                }
                done.batches += 1;
            }
            _ => {
                if ledger.run_payouts_now().await.is_ok() {
                    done.payout_runs += 1;
                }
            }
        }
        if step % 64 == 63 {
            assert_gauges_match_a_full_scan(ledger, &format!("step {step}")).await;
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_equal_a_full_scan_through_every_change_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Items fail, stay pending, and answers get lost: payouts leave
    // withdrawals processing, then settle them on a later run.
    let bank = SimulatedBank::new(SimulatedBankConfig {
        item_failure_per_mille: 250,
        pending_per_mille: 150,
        unknown_outcome_per_mille: 150,
        lost_response_per_mille: 100,
        seed: 11,
        ..SimulatedBankConfig::default()
    });
    let ledger = Ledger::open(config(dir.path(), &bank)).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut txs = Vec::new();
    let done = mix(&ledger, &mut rng, 900, &mut txs).await;
    // Every kind of change happened, or the comparison proves little.
    // (Caller outcomes are not required: a payout's own items may be
    // refused to callers; payouts complete and fail withdrawals anyway, and
    // the end state below must hold every status.)
    assert!(
        done.deposits > 0
            && done.requests > 0
            && done.cancels > 0
            && done.returned > 0
            && done.transfers > 0
            && done.batches > 0
            && done.payout_runs > 0,
        "{done:?}"
    );
    // End with withdrawals in every status: a run whose answers all get
    // lost leaves some processing, and later requests stay pending.
    ledger.run_payouts_now().await.unwrap();
    bank.set_faults(SimulatedBankConfig {
        unknown_outcome_per_mille: 1000,
        ..SimulatedBankConfig::default()
    });
    for (currency, amount) in [("USD", "0.01"), ("EUR", "0.02")] {
        for account in 0..ACCOUNTS {
            ledger
                .deposit(account, currency, dec("1"), None)
                .await
                .unwrap();
            let w = ledger
                .request_withdrawal(account, currency, dec(amount), None)
                .await
                .unwrap();
            txs.push(w.transaction_id);
        }
        if currency == "USD" {
            ledger.run_payouts_now().await.unwrap();
        }
    }
    let before = assert_gauges_match_a_full_scan(&ledger, "end of the mix").await;
    for status in StatusKind::ALL {
        let count: u64 = CURRENCIES
            .iter()
            .map(|c| before.withdrawals.get(c, status).count)
            .sum();
        assert!(count > 0, "no withdrawal ended {status}: {before:?}");
    }
    ledger.shutdown().await;

    // Reopened without a payment service, so nothing moves in the
    // background: the gauges are seeded from the recovered state.
    let plain = remembering(dir.path());
    let reopened = Ledger::open(plain).unwrap();
    let after = assert_gauges_match_a_full_scan(&reopened, "after the restart").await;
    assert_eq!(tallies_of(&after), tallies_of(&before));
    assert_eq!(after.accounts, before.accounts);
    // And they keep following changes on top of the recovered state.
    for tx in txs.iter().rev().take(40) {
        let _ = reopened.cancel_withdrawal(*tx).await;
        let _ = reopened
            .complete_withdrawal(*tx, WithdrawalOutcome::Completed)
            .await;
    }
    reopened
        .deposit(ACCOUNTS + 7, "EUR", dec("5"), None)
        .await
        .unwrap();
    reopened
        .request_withdrawal(ACCOUNTS + 7, "EUR", dec("1.25"), None)
        .await
        .unwrap();
    let moved = assert_gauges_match_a_full_scan(&reopened, "after the restart, more traffic").await;
    assert_ne!(tallies_of(&moved), tallies_of(&after));
    assert_eq!(moved.accounts, after.accounts + 1);
    reopened.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_only_ledger_keeps_gauges_too() {
    let ledger = Ledger::open(Config::for_tests()).unwrap();
    ledger.deposit(1, "BTC", dec("1"), None).await.unwrap();
    let w = ledger
        .request_withdrawal(1, "BTC", dec("0.00012345"), None)
        .await
        .unwrap();
    ledger
        .request_withdrawal(1, "BTC", dec("0.5"), None)
        .await
        .unwrap();
    ledger.cancel_withdrawal(w.transaction_id).await.unwrap();
    let gauges = assert_gauges_match_a_full_scan(&ledger, "memory only").await;
    let pending = gauges.withdrawals.get("BTC", StatusKind::Pending);
    assert_eq!((pending.count, pending.amount), (1, 50_000_000));
    let cancelled = gauges.withdrawals.get("BTC", StatusKind::Cancelled);
    assert_eq!((cancelled.count, cancelled.amount), (1, 12_345));
    assert_eq!(gauges.accounts, 1);
    ledger.shutdown().await;
}

/// The scrape is O(1) in accounts, shown structurally: the ledger counts
/// every account state it copies out, and rendering `/metrics` (or reading
/// the gauges) must leave that count at zero however often it runs. A
/// scrape that copies the accounts again, as it once did through
/// `export_accounts`, fails here.
#[cfg(feature = "http")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraping_metrics_copies_no_account_state() {
    use burnledger::http::metrics::{render, Metrics};

    let ledger = Ledger::open(Config::for_tests()).unwrap();
    for account in 0..300 {
        ledger
            .deposit(account, "USD", dec("10"), None)
            .await
            .unwrap();
        ledger
            .request_withdrawal(account, "USD", dec("2.5"), None)
            .await
            .unwrap();
    }
    let metrics = Metrics::default();
    for _ in 0..5 {
        let page = render(&metrics, &ledger).await;
        assert!(page.contains("burnledger_accounts 300\n"), "{page}");
        assert!(
            page.contains("burnledger_withdrawals{currency=\"USD\",status=\"pending\"} 300\n"),
            "{page}"
        );
        assert!(
            page.contains(
                "burnledger_withdrawals_amount{currency=\"USD\",status=\"pending\"} 750.00\n"
            ),
            "{page}"
        );
    }
    let gauges = ledger.gauges().await.unwrap();
    assert_eq!(gauges.account_states_copied, 0, "a scrape copied accounts");
    // The count is live: one export copies each account once.
    let exported = ledger.export_accounts().await.unwrap();
    assert_eq!(exported.len(), 300);
    let gauges = ledger.gauges().await.unwrap();
    assert_eq!(gauges.account_states_copied, 300);
    ledger.shutdown().await;
}
