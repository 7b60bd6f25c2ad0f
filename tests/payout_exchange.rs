//! Payouts of withdrawals as exchanges run them (issue 16): each item
//! reaches the payment service with its withdrawal's destination (on the
//! first submit, and when a payout the service never got is submitted
//! again); the service may pay an item in part (that much is burned, the
//! rest released), and a paid part that is not one of the item's amount
//! settles nothing; an operator may resolve an item as paid in part.
//!
//! Payouts are driven by `run_payouts_now()` (the interval never fires);
//! nothing sleeps.

use std::str::FromStr;

use burnledger::config::{PayoutMode, SharedPaymentService};
use burnledger::domain::details::Destination;
use burnledger::domain::payouts::{PayoutState, Resolution};
use burnledger::operation::WithdrawalOptions;
use burnledger::payment::{
    ItemStatus, PaymentError, PaymentFuture, PaymentService, Payout, PayoutId, PayoutReport,
    SimulatedBank, SimulatedBankConfig,
};
use burnledger::{Config, Decimal, Ledger, TransactionId, WithdrawalStatus};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn config_with(service: SharedPaymentService) -> Config {
    Config {
        payout_mode: PayoutMode::Batched {
            interval_secs: 24 * 3600,
        },
        payment_service: Some(service),
        ..Config::for_tests()
    }
}

fn iban(value: &str) -> Destination {
    Destination::new("iban", value, Some("sepa".into())).unwrap()
}

/// Deposits 100 USD into `account` and requests `amount` with `destination`.
async fn request(
    ledger: &Ledger,
    account: u64,
    amount: &str,
    destination: Option<Destination>,
) -> TransactionId {
    ledger
        .deposit(account, "USD", dec("100"), None)
        .await
        .unwrap();
    let options = WithdrawalOptions {
        destination,
        ..WithdrawalOptions::default()
    };
    ledger
        .request_withdrawal_with(account, "USD", dec(amount), None, options)
        .await
        .unwrap()
        .transaction_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_item_reaches_the_service_with_its_withdrawals_destination() {
    let bank = SimulatedBank::default();
    let ledger = Ledger::open(config_with(SharedPaymentService::new(bank.clone()))).unwrap();
    let with = request(&ledger, 1, "10.00", Some(iban("DE0001"))).await;
    let without = request(&ledger, 2, "20.00", None).await;
    ledger.run_payouts_now().await.unwrap();
    let received = bank.received(with).unwrap();
    assert_eq!(received.destination, Some(iban("DE0001")));
    assert_eq!(received.amount, dec("10.00"));
    assert_eq!(bank.received(without).unwrap().destination, None);
    let shown = ledger.withdrawal(with).await.unwrap();
    assert_eq!(shown.status, WithdrawalStatus::Completed);
    assert_eq!(shown.destination, Some(iban("DE0001")));
    ledger.shutdown().await;
}

/// The first submit never reaches the bank (unknown outcome); the retry
/// hears `NotFound` and submits the payout again: the destination is read
/// back from the withdrawal, which is what the bank then receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_submitted_again_still_carries_each_destination() {
    let bank = SimulatedBank::new(SimulatedBankConfig {
        unknown_outcome_per_mille: 1000,
        ..SimulatedBankConfig::default()
    });
    let ledger = Ledger::open(config_with(SharedPaymentService::new(bank.clone()))).unwrap();
    let with = request(&ledger, 1, "10.00", Some(iban("DE0002"))).await;
    let without = request(&ledger, 3, "5.00", None).await;
    ledger.run_payouts_now().await.unwrap();
    assert!(bank.received(with).is_none(), "the first submit was lost");
    assert_eq!(bank.submit_calls().len(), 1);
    bank.set_faults(SimulatedBankConfig::default());
    ledger.run_payouts_now().await.unwrap();
    assert_eq!(bank.submit_calls().len(), 2, "submitted again, same id");
    assert_eq!(bank.submit_calls()[0].0, bank.submit_calls()[1].0);
    assert_eq!(
        bank.received(with).unwrap().destination,
        Some(iban("DE0002"))
    );
    assert_eq!(bank.received(without).unwrap().destination, None);
    for tx in [with, without] {
        let status = ledger.withdrawal(tx).await.unwrap().status;
        assert_eq!(status, WithdrawalStatus::Completed, "{tx:?}");
    }
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_paid_in_part_burns_what_was_paid_and_releases_the_rest() {
    let bank = SimulatedBank::new(SimulatedBankConfig {
        partly_paid_per_mille: 1000,
        seed: 4,
        ..SimulatedBankConfig::default()
    });
    let ledger = Ledger::open(config_with(SharedPaymentService::new(bank.clone()))).unwrap();
    let tx = request(&ledger, 1, "30.00", None).await;
    ledger.run_payouts_now().await.unwrap();
    let payments = bank.payments();
    assert_eq!(payments.len(), 1);
    let paid = payments[0].2;
    assert!(paid > Decimal::ZERO && paid < dec("30.00"), "{paid}");
    let w = ledger.withdrawal(tx).await.unwrap();
    assert_eq!(w.status, WithdrawalStatus::Completed);
    assert_eq!(w.paid, Some(paid));
    let balance = ledger.balance(1, "USD").await.unwrap();
    assert_eq!(balance.locked, Decimal::ZERO);
    assert_eq!(balance.total, dec("100") - paid, "only what was paid left");
    let payouts = ledger.payouts().await.unwrap();
    assert_eq!(payouts[0].state, PayoutState::Completed, "{payouts:?}");
    assert!(ledger.audit().await.unwrap().is_clean());
    ledger.shutdown().await;
}

/// A service that answers every item paid `paid`, whatever its amount.
struct PaysPart {
    paid: Decimal,
}

impl PaymentService for PaysPart {
    fn max_items_per_payout(&self) -> usize {
        100
    }
    fn submit(&self, payout: Payout) -> PaymentFuture {
        let status = ItemStatus::PartlyPaid { paid: self.paid };
        let items = payout
            .items
            .iter()
            .map(|i| (i.transaction_id, status.clone()))
            .collect();
        let report = PayoutReport {
            payout_id: payout.payout_id,
            items,
        };
        Box::pin(async move { Ok(report) })
    }
    fn status(&self, _: PayoutId) -> PaymentFuture {
        Box::pin(async move {
            Err(PaymentError::Unknown {
                reason: "no answer".into(),
            })
        })
    }
}

/// A paid part above the amount, zero, negative or finer than the
/// currency's cents: the answer is not read, nothing settles, nothing is
/// released; the payout waits for a sane answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_part_that_is_not_one_of_the_amount_settles_nothing() {
    for bad in ["30.01", "0", "-1.00", "10.001"] {
        let service = PaysPart { paid: dec(bad) };
        let ledger = Ledger::open(config_with(SharedPaymentService::new(service))).unwrap();
        let tx = request(&ledger, 1, "30.00", None).await;
        let other = request(&ledger, 2, "5.00", None).await;
        ledger.run_payouts_now().await.unwrap();
        for tx in [tx, other] {
            let w = ledger.withdrawal(tx).await.unwrap();
            assert!(
                matches!(w.status, WithdrawalStatus::Processing { .. }),
                "{bad}: {w:?}"
            );
        }
        let balance = ledger.balance(1, "USD").await.unwrap();
        assert_eq!(
            (balance.available, balance.locked),
            (dec("70"), dec("30")),
            "{bad}"
        );
        let payout = &ledger.payouts().await.unwrap()[0];
        assert_eq!(payout.state, PayoutState::Processing, "{bad}");
        let why = payout.last_error.as_deref().unwrap_or_default();
        assert!(why.contains("reported paid"), "{bad}: {why}");
        ledger.shutdown().await;
    }
}

/// An operator resolves an item whose outcome is unknown as paid in part;
/// a part that is not one of the amount is refused and changes nothing.
/// When the service then says it never got the payout, the resolution is
/// contradicted (money left, says the operator): a mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_may_resolve_an_item_as_paid_in_part() {
    let bank = SimulatedBank::new(SimulatedBankConfig {
        unknown_outcome_per_mille: 1000,
        ..SimulatedBankConfig::default()
    });
    let ledger = Ledger::open(config_with(SharedPaymentService::new(bank.clone()))).unwrap();
    let tx = request(&ledger, 1, "30.00", None).await;
    let other = request(&ledger, 2, "5.00", None).await;
    ledger.run_payouts_now().await.unwrap();
    let payout_id = ledger.payouts().await.unwrap()[0].payout_id;
    // As for a caller's partial completion: past the amount is
    // invalid_paid_amount, no amount at all invalid_amount.
    for (bad, code) in [
        ("30.01", "invalid_paid_amount"),
        ("0", "invalid_amount"),
        ("-1", "invalid_amount"),
        ("12.345", "invalid_amount"),
    ] {
        let resolution = Resolution::PartlyPaid { paid: dec(bad) };
        let refused = ledger
            .resolve_payout_item(payout_id, tx, resolution, "bank statement")
            .await;
        assert_eq!(refused.map_err(|e| e.code()).err(), Some(code), "{bad}");
        let balance = ledger.balance(1, "USD").await.unwrap();
        assert_eq!((balance.available, balance.locked), (dec("70"), dec("30")));
    }
    let resolution = Resolution::PartlyPaid { paid: dec("24.00") };
    let view = ledger
        .resolve_payout_item(payout_id, tx, resolution, "bank statement")
        .await
        .unwrap();
    assert_eq!(view.state, PayoutState::Processing, "the other item waits");
    let w = ledger.withdrawal(tx).await.unwrap();
    assert_eq!(
        (w.status, w.paid),
        (WithdrawalStatus::Completed, Some(dec("24.00")))
    );
    let balance = ledger.balance(1, "USD").await.unwrap();
    assert_eq!(
        (balance.available, balance.locked),
        (dec("76.00"), dec("0"))
    );

    bank.set_faults(SimulatedBankConfig::default());
    ledger.run_payouts_now().await.unwrap();
    let mismatches = ledger.payout_mismatches().await.unwrap();
    assert_eq!(mismatches.len(), 1, "{mismatches:?}");
    assert_eq!(mismatches[0].1.transaction_id, tx);
    assert_eq!(bank.received(other).map(|i| i.amount), Some(dec("5.00")));
    assert!(bank.received(tx).is_none(), "a resolved item is never sent");
    ledger.shutdown().await;
}
