//! Withdrawals as exchanges run them (issue 16), through the embedded
//! `Ledger` API: fees (same currency and another), destination and
//! metadata, limits per tier over rolling windows, freezes, expiry and
//! partial completion. Each rule is shown working and each of its
//! refusals shown leaving every balance, withdrawal and total as it was.

mod common;

use std::time::Duration;

use burnledger::clock::{Clock, ManualClock};
use burnledger::config::WithdrawalLimit;
use burnledger::domain::details::{Destination, Metadata, EXPIRED_REASON};
use burnledger::domain::policy::{FreezeScope, Window};
use burnledger::error::FundsPart;
use burnledger::operation::{FeeRequest, WithdrawalOptions};
use burnledger::{
    Config, Ledger, LedgerError, TransactionId, UnixMs, Withdrawal, WithdrawalOutcome,
    WithdrawalStatus,
};

use common::{assert_balance, code, dec, snapshot, with_ledger};

/// Where fees go in these tests.
const FEES: u64 = 900;

fn config() -> Config {
    Config {
        fee_account: Some(FEES),
        ..Config::for_tests()
    }
}

fn fee(currency: &str, amount: &str) -> WithdrawalOptions {
    WithdrawalOptions {
        fee: Some(FeeRequest {
            currency: code(currency),
            amount: dec(amount),
        }),
        ..WithdrawalOptions::default()
    }
}

async fn withdraw(
    ledger: &Ledger,
    account: u64,
    amount: &str,
    options: WithdrawalOptions,
) -> Result<Withdrawal, LedgerError> {
    ledger
        .request_withdrawal_with(account, "USD", dec(amount), None, options)
        .await
}

/// Asserts `refused` is `expected` and nothing moved: every balance of
/// `accounts`, every withdrawal of `txs` and the ledger's totals.
async fn assert_refused_unchanged<T: std::fmt::Debug>(
    ledger: &Ledger,
    accounts: &[u64],
    txs: &[TransactionId],
    before: &common::Snapshot,
    refused: Result<T, LedgerError>,
    expected: impl Fn(&LedgerError) -> bool,
) {
    let error = refused.expect_err("refused");
    assert!(expected(&error), "unexpected refusal: {error:?}");
    assert_eq!(&snapshot(ledger, accounts, txs).await, before, "{error}");
}

// ---------------------------------------------------------------------------
// Fees
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_fee_in_the_same_currency_is_locked_with_the_amount_and_collected_on_completion() {
    with_ledger(config(), |ledger| async move {
        ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
        let w = withdraw(&ledger, 1, "25.00", fee("USD", "1.50"))
            .await
            .unwrap();
        assert_eq!(w.fee.as_ref().map(|f| f.amount), Some(dec("1.50")));
        assert_balance(&ledger, 1, "USD", ["73.50", "26.50", "100"]).await;
        let done = ledger
            .complete_withdrawal(w.transaction_id, WithdrawalOutcome::Completed)
            .await
            .unwrap();
        assert_eq!(done.paid, Some(dec("25.00")));
        // The amount left the ledger; the fee moved to the fee account.
        assert_balance(&ledger, 1, "USD", ["73.50", "0", "73.50"]).await;
        assert_balance(&ledger, FEES, "USD", ["1.50", "0", "1.50"]).await;
    })
    .await;
}

#[tokio::test]
async fn a_fee_in_another_currency_is_locked_there_and_released_with_the_amount_on_failure() {
    with_ledger(config(), |ledger| async move {
        ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
        ledger.deposit(1, "BTC", dec("1"), None).await.unwrap();
        let w = withdraw(&ledger, 1, "40", fee("BTC", "0.0001"))
            .await
            .unwrap();
        assert_balance(&ledger, 1, "USD", ["60", "40", "100"]).await;
        assert_balance(&ledger, 1, "BTC", ["0.9999", "0.0001", "1"]).await;
        let failed = WithdrawalOutcome::Failed {
            reason: "bank said no".into(),
        };
        ledger
            .complete_withdrawal(w.transaction_id, failed)
            .await
            .unwrap();
        assert_balance(&ledger, 1, "USD", ["100", "0", "100"]).await;
        assert_balance(&ledger, 1, "BTC", ["1", "0", "1"]).await;
        assert_balance(&ledger, FEES, "BTC", ["0", "0", "0"]).await;
        // Cancelling releases both as well.
        let w = withdraw(&ledger, 1, "40", fee("BTC", "0.5")).await.unwrap();
        ledger.cancel_withdrawal(w.transaction_id).await.unwrap();
        assert_balance(&ledger, 1, "BTC", ["1", "0", "1"]).await;
        // Completing moves the fee in its own currency.
        let w = withdraw(&ledger, 1, "40", fee("BTC", "0.25"))
            .await
            .unwrap();
        ledger
            .complete_withdrawal(w.transaction_id, WithdrawalOutcome::Completed)
            .await
            .unwrap();
        assert_balance(&ledger, 1, "USD", ["60", "0", "60"]).await;
        assert_balance(&ledger, 1, "BTC", ["0.75", "0", "0.75"]).await;
        assert_balance(&ledger, FEES, "BTC", ["0.25", "0", "0.25"]).await;
    })
    .await;
}

#[tokio::test]
async fn short_funds_for_either_part_refuse_both_naming_which() {
    with_ledger(config(), |ledger| async move {
        ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
        ledger.deposit(1, "BTC", dec("0.001"), None).await.unwrap();
        let before = snapshot(&ledger, &[1, FEES], &[]).await;
        let part_is = |part: FundsPart, currency: &'static str| {
            move |e: &LedgerError| {
                matches!(e, LedgerError::InsufficientFunds { part: p, currency: c, .. }
                    if *p == part && c.as_str() == currency)
            }
        };
        // The amount alone fits, the fee on top does not.
        let refused = withdraw(&ledger, 1, "99.50", fee("USD", "1")).await;
        let is_fee = part_is(FundsPart::Fee, "USD");
        assert_refused_unchanged(&ledger, &[1, FEES], &[], &before, refused, is_fee).await;
        // The amount itself is short.
        let refused = withdraw(&ledger, 1, "100.01", fee("USD", "1")).await;
        let is_amount = part_is(FundsPart::Amount, "USD");
        assert_refused_unchanged(&ledger, &[1, FEES], &[], &before, refused, is_amount).await;
        // The fee's own currency is short.
        let refused = withdraw(&ledger, 1, "10", fee("BTC", "0.002")).await;
        let is_btc_fee = part_is(FundsPart::Fee, "BTC");
        assert_refused_unchanged(&ledger, &[1, FEES], &[], &before, refused, is_btc_fee).await;
        // Exactly enough for both is fine.
        withdraw(&ledger, 1, "99", fee("USD", "1")).await.unwrap();
        assert_balance(&ledger, 1, "USD", ["0", "100", "100"]).await;
    })
    .await;
}

#[tokio::test]
async fn a_bad_fee_or_a_fee_without_a_fee_account_is_refused_and_changes_nothing() {
    with_ledger(Config::for_tests(), |ledger| async move {
        ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
        let before = snapshot(&ledger, &[1], &[]).await;
        let refused = withdraw(&ledger, 1, "10", fee("USD", "1")).await;
        let disabled = |e: &LedgerError| matches!(e, LedgerError::FeesDisabled);
        assert_refused_unchanged(&ledger, &[1], &[], &before, refused, disabled).await;
    })
    .await;
    with_ledger(config(), |ledger| async move {
        ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
        let before = snapshot(&ledger, &[1], &[]).await;
        let bad_amount = |e: &LedgerError| matches!(e, LedgerError::InvalidAmount { .. });
        for amount in ["0", "-1", "0.001"] {
            let refused = withdraw(&ledger, 1, "10", fee("USD", amount)).await;
            assert_refused_unchanged(&ledger, &[1], &[], &before, refused, bad_amount).await;
        }
        let refused = withdraw(&ledger, 1, "10", fee("XYZ", "1")).await;
        let unknown = |e: &LedgerError| matches!(e, LedgerError::UnknownCurrency { .. });
        assert_refused_unchanged(&ledger, &[1], &[], &before, refused, unknown).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// Destination and metadata
// ---------------------------------------------------------------------------

fn metadata(pairs: &[(&str, &str)]) -> Metadata {
    Metadata::new(pairs.iter().map(|&(k, v)| (k, v))).unwrap()
}

#[tokio::test]
async fn destination_and_metadata_are_kept_and_returned_and_bad_ones_refused() {
    with_ledger(config(), |ledger| async move {
        let meta = metadata(&[("order", "A-1"), ("user", "u7")]);
        let deposit = ledger
            .deposit_with(1, "USD", dec("100"), None, meta.clone())
            .await
            .unwrap();
        assert_eq!(deposit.metadata, meta);
        let transfer = ledger
            .transfer_with(1, 2, "USD", dec("10"), None, meta.clone())
            .await
            .unwrap();
        assert_eq!(transfer.metadata, meta);
        let destination =
            Destination::new("iban", "DE89370400440532013000", Some("sepa".into())).unwrap();
        let options = WithdrawalOptions {
            destination: Some(destination.clone()),
            metadata: meta.clone(),
            ..WithdrawalOptions::default()
        };
        let w = withdraw(&ledger, 1, "5", options).await.unwrap();
        let read = ledger.withdrawal(w.transaction_id).await.unwrap();
        assert_eq!(read.destination, Some(destination));
        assert_eq!(read.metadata, meta);

        let before = snapshot(&ledger, &[1, 2], &[w.transaction_id]).await;
        let too_long = Destination {
            kind: "iban".into(),
            value: "x".repeat(257),
            network: None,
        };
        let options = WithdrawalOptions {
            destination: Some(too_long),
            ..WithdrawalOptions::default()
        };
        let refused = withdraw(&ledger, 1, "5", options).await;
        let bad_destination =
            |e: &LedgerError| matches!(e, LedgerError::InvalidDestination { field: "value", .. });
        let txs = [w.transaction_id];
        assert_refused_unchanged(&ledger, &[1, 2], &txs, &before, refused, bad_destination).await;
        // Metadata built past its limits cannot be made; one assembled by
        // hand (serde) is checked at the edge.
        let oversized: Metadata =
            serde_json::from_str(&format!(r#"{{"k": "{}"}}"#, "v".repeat(1100))).unwrap();
        let refused = ledger
            .deposit_with(1, "USD", dec("1"), None, oversized)
            .await;
        let bad_metadata = |e: &LedgerError| matches!(e, LedgerError::InvalidMetadata { .. });
        assert_refused_unchanged(&ledger, &[1, 2], &txs, &before, refused, bad_metadata).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

fn limited(clock: &ManualClock, limits: &[&str]) -> Config {
    Config {
        clock: clock.shared(),
        withdrawal_limits: limits
            .iter()
            .map(|l| WithdrawalLimit::parse(l).unwrap())
            .collect(),
        ..config()
    }
}

#[tokio::test]
async fn the_24_hour_limit_counts_pending_and_completed_not_failed_and_rolls_on() {
    let clock = ManualClock::new();
    let config = limited(&clock, &["default:USD:24h=100", "default:USD:30d=250"]);
    with_ledger(config, |ledger| async move {
        ledger.deposit(1, "USD", dec("1000"), None).await.unwrap();
        let a = withdraw(&ledger, 1, "40", Default::default()).await.unwrap();
        let b = withdraw(&ledger, 1, "30", Default::default()).await.unwrap();
        ledger
            .complete_withdrawal(b.transaction_id, WithdrawalOutcome::Completed)
            .await
            .unwrap();
        let before = snapshot(&ledger, &[1], &[a.transaction_id]).await;
        let refused = withdraw(&ledger, 1, "30.01", Default::default()).await;
        let names_it = |e: &LedgerError| {
            matches!(e, LedgerError::LimitExceeded { window: Window::Day, limit, used, requested, .. }
                if *limit == dec("100") && *used == dec("70") && *requested == dec("30.01"))
        };
        let txs = [a.transaction_id];
        assert_refused_unchanged(&ledger, &[1], &txs, &before, refused, names_it).await;
        // A failed withdrawal no longer counts.
        let failed = WithdrawalOutcome::Failed { reason: "x".into() };
        ledger
            .complete_withdrawal(a.transaction_id, failed)
            .await
            .unwrap();
        let allowance = ledger.withdrawal_allowance(1, "USD").await.unwrap();
        assert_eq!(allowance.amount, dec("70"));
        withdraw(&ledger, 1, "70", Default::default()).await.unwrap();
        // A day later the day window is free again; the month one is not.
        clock.advance(Duration::from_millis(Window::Day.millis()));
        withdraw(&ledger, 1, "100", Default::default()).await.unwrap();
        let refused = withdraw(&ledger, 1, "0.01", Default::default()).await;
        assert!(matches!(refused, Err(LedgerError::LimitExceeded { window: Window::Day, .. })));
        clock.advance(Duration::from_millis(Window::Day.millis()));
        let refused = withdraw(&ledger, 1, "50.01", Default::default()).await;
        let month = |e: &LedgerError| {
            matches!(e, LedgerError::LimitExceeded { window: Window::Month, used, .. } if *used == dec("200"))
        };
        assert!(month(&refused.unwrap_err()));
        assert_eq!(
            ledger.withdrawal_allowance(1, "USD").await.unwrap().amount,
            dec("50")
        );
    })
    .await;
}

#[tokio::test]
async fn a_tier_brings_its_own_limits_and_a_partial_completion_counts_what_was_paid() {
    let clock = ManualClock::new();
    let config = limited(&clock, &["default:USD:24h=10", "vip:USD:24h=1000"]);
    with_ledger(config, |ledger| async move {
        ledger.deposit(1, "USD", dec("1000"), None).await.unwrap();
        assert!(matches!(
            withdraw(&ledger, 1, "11", Default::default()).await,
            Err(LedgerError::LimitExceeded { .. })
        ));
        let controls = ledger.set_account_tier(1, "vip").await.unwrap();
        assert_eq!(controls.tier.as_str(), "vip");
        let w = withdraw(&ledger, 1, "600", Default::default())
            .await
            .unwrap();
        let partly = WithdrawalOutcome::PartlyCompleted { paid: dec("100") };
        ledger
            .complete_withdrawal(w.transaction_id, partly)
            .await
            .unwrap();
        // 100 counts, not 600: 900 left of the 1000.
        let allowance = ledger.withdrawal_allowance(1, "USD").await.unwrap();
        assert_eq!(allowance.windows[0].used, dec("100"));
        assert_eq!(allowance.amount, dec("900"));
        assert!(matches!(
            ledger.set_account_tier(1, "not a tier").await,
            Err(LedgerError::InvalidTier { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn a_thousand_concurrent_withdrawals_never_exceed_the_24_hour_limit() {
    let clock = ManualClock::new();
    let config = Config {
        account_pending_withdrawals_max: 2_000,
        ..limited(&clock, &["default:USD:24h=500"])
    };
    with_ledger(config, |ledger| async move {
        ledger.deposit(1, "USD", dec("100000"), None).await.unwrap();
        let tasks: Vec<_> = (0..1_000)
            .map(|_| {
                let ledger = ledger.clone();
                tokio::spawn(
                    async move { ledger.request_withdrawal(1, "USD", dec("0.70"), None).await },
                )
            })
            .collect();
        let mut accepted = 0u32;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => accepted += 1,
                Err(LedgerError::LimitExceeded { .. }) => {}
                Err(other) => panic!("unexpected refusal {other:?}"),
            }
        }
        // 714 × 0.70 = 499.80 fits, 715 would be 500.50.
        assert_eq!(accepted, 714);
        assert_balance(&ledger, 1, "USD", ["99500.20", "499.80", "100000"]).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// Freezes
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_withdrawals_freeze_refuses_withdrawals_and_transfers_out_until_lifted() {
    with_ledger(config(), |ledger| async move {
        ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
        let pending = withdraw(&ledger, 1, "10", Default::default()).await.unwrap();
        ledger
            .freeze_account(1, FreezeScope::Withdrawals, None, "kyc review")
            .await
            .unwrap();
        let txs = [pending.transaction_id];
        let before = snapshot(&ledger, &[1, 2], &txs).await;
        let frozen = |e: &LedgerError| {
            matches!(e, LedgerError::AccountFrozen { reason, until: None, .. } if reason == "kyc review")
        };
        let refused = withdraw(&ledger, 1, "10", Default::default()).await;
        assert_refused_unchanged(&ledger, &[1, 2], &txs, &before, refused, frozen).await;
        let refused = ledger.transfer(1, 2, "USD", dec("1"), None).await;
        assert_refused_unchanged(&ledger, &[1, 2], &txs, &before, refused, frozen).await;
        // Deposits still come in; the withdrawal made before still settles.
        ledger.deposit(1, "USD", dec("5"), None).await.unwrap();
        ledger.cancel_withdrawal(pending.transaction_id).await.unwrap();
        ledger.unfreeze_account(1).await.unwrap();
        withdraw(&ledger, 1, "10", Default::default()).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_freeze_of_everything_refuses_deposits_and_transfers_in_until_its_end() {
    let clock = ManualClock::new();
    let config = Config {
        clock: clock.shared(),
        ..config()
    };
    with_ledger(config, |ledger| async move {
        ledger.deposit(2, "USD", dec("100"), None).await.unwrap();
        let until = UnixMs::from_millis(clock.unix_ms() + 60_000);
        ledger
            .freeze_account(1, FreezeScope::All, Some(until), "fraud check")
            .await
            .unwrap();
        let controls = ledger.account_controls(1).await.unwrap();
        assert_eq!(controls.freeze.map(|f| f.until), Some(Some(until)));
        let before = snapshot(&ledger, &[1, 2], &[]).await;
        let frozen = |e: &LedgerError| {
            matches!(
                e,
                LedgerError::AccountFrozen {
                    scope: FreezeScope::All,
                    until: Some(_),
                    ..
                }
            )
        };
        let refused = ledger.deposit(1, "USD", dec("5"), None).await;
        assert_refused_unchanged(&ledger, &[1, 2], &[], &before, refused, frozen).await;
        let refused = ledger.transfer(2, 1, "USD", dec("5"), None).await;
        assert_refused_unchanged(&ledger, &[1, 2], &[], &before, refused, frozen).await;
        clock.advance(Duration::from_secs(60));
        ledger.deposit(1, "USD", dec("5"), None).await.unwrap();
        assert!(ledger.account_controls(1).await.unwrap().freeze.is_none());
        // A freeze must end in the future.
        let past = UnixMs::from_millis(clock.unix_ms() - 1);
        let refused = ledger
            .freeze_account(1, FreezeScope::All, Some(past), "x")
            .await;
        assert!(matches!(refused, Err(LedgerError::InvalidExpiry { .. })));
    })
    .await;
}

// ---------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------

/// Moves `clock` on by `by` once both shards armed their sweep, and waits
/// until both swept and re-armed.
async fn sweep(clock: &ManualClock, by: Duration) {
    let bound = Duration::from_secs(20);
    let armed = tokio::time::timeout(bound, clock.armed_at_least(2));
    armed.await.expect("both shards arm their sweeps");
    clock.advance(by);
    let rearmed = tokio::time::timeout(bound, clock.armed_at_least(2));
    rearmed.await.expect("both shards sweep and re-arm");
}

/// Reads withdrawal `tx` until `done` says so (the sweep's job is in flight
/// a moment after the sweep re-arms), for at most 20 s.
async fn read_until(
    ledger: &Ledger,
    tx: TransactionId,
    done: impl Fn(&Withdrawal) -> bool,
) -> Withdrawal {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let w = ledger.withdrawal(tx).await.unwrap();
        if done(&w) || std::time::Instant::now() > deadline {
            return w;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_pending_withdrawal_past_its_expiry_fails_expired_and_releases_its_funds() {
    let clock = ManualClock::new();
    let config = Config {
        clock: clock.shared(),
        account_idle_sweep_ms: 1,
        ..config()
    };
    with_ledger(config, |ledger| async move {
        ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
        let expiring = WithdrawalOptions {
            expires_in: Some(Duration::from_secs(30)),
            ..fee("USD", "1")
        };
        let w = withdraw(&ledger, 1, "10", expiring.clone()).await.unwrap();
        assert!(w.expires_at.is_some());
        let keeps = withdraw(&ledger, 1, "20", Default::default())
            .await
            .unwrap();
        sweep(&clock, Duration::from_secs(29)).await;
        let still = ledger.withdrawal(w.transaction_id).await.unwrap();
        assert_eq!(still.status, WithdrawalStatus::Pending, "not yet due");
        sweep(&clock, Duration::from_secs(1)).await;
        let expired = read_until(&ledger, w.transaction_id, |w| {
            w.status != WithdrawalStatus::Pending
        })
        .await;
        assert_eq!(
            expired.status,
            WithdrawalStatus::Failed {
                reason: EXPIRED_REASON.into()
            }
        );
        assert_eq!(
            ledger
                .withdrawal(keeps.transaction_id)
                .await
                .unwrap()
                .status,
            WithdrawalStatus::Pending
        );
        assert_balance(&ledger, 1, "USD", ["80", "20", "100"]).await;
        // An expiry of zero, or past the maximum, is refused.
        for bad in [Duration::ZERO, Duration::from_secs(31 * 24 * 3600)] {
            let options = WithdrawalOptions {
                expires_in: Some(bad),
                ..WithdrawalOptions::default()
            };
            let refused = withdraw(&ledger, 1, "1", options).await;
            assert!(
                matches!(refused, Err(LedgerError::InvalidExpiry { .. })),
                "{bad:?}"
            );
        }
        assert_balance(&ledger, 1, "USD", ["80", "20", "100"]).await;
    })
    .await;
}

/// Expiry does not wait for the idle sweep (here an hour away, never
/// reached): each shard keeps an alarm on its earliest expiry, and a
/// request expiring sooner than the one the alarm waits for re-arms it.
#[tokio::test]
async fn a_withdrawal_fails_as_its_expiry_comes_not_at_the_next_sweep() {
    let clock = ManualClock::new();
    let config = Config {
        clock: clock.shared(),
        account_idle_sweep_ms: 3_600_000,
        ..config()
    };
    let expiring_in = |secs| WithdrawalOptions {
        expires_in: Some(Duration::from_secs(secs)),
        ..WithdrawalOptions::default()
    };
    with_ledger(config, |ledger| async move {
        ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
        let later = withdraw(&ledger, 1, "10", expiring_in(60)).await.unwrap();
        let sooner = withdraw(&ledger, 1, "20", expiring_in(10)).await.unwrap();
        let is_failed = |w: &Withdrawal| w.status != WithdrawalStatus::Pending;
        let expired = WithdrawalStatus::Failed {
            reason: EXPIRED_REASON.into(),
        };

        clock.advance(Duration::from_secs(10));
        let first = read_until(&ledger, sooner.transaction_id, is_failed).await;
        assert_eq!(first.status, expired, "the sooner one fails at its time");
        let waiting = ledger.withdrawal(later.transaction_id).await.unwrap();
        assert_eq!(waiting.status, WithdrawalStatus::Pending, "not yet due");
        assert_balance(&ledger, 1, "USD", ["90", "10", "100"]).await;

        clock.advance(Duration::from_secs(50));
        let second = read_until(&ledger, later.transaction_id, is_failed).await;
        assert_eq!(second.status, expired);
        assert_balance(&ledger, 1, "USD", ["100", "0", "100"]).await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// Partial completion
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_partial_completion_burns_what_was_paid_releases_the_rest_and_collects_the_fee() {
    with_ledger(config(), |ledger| async move {
        ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
        let w = withdraw(&ledger, 1, "25.00", fee("USD", "1"))
            .await
            .unwrap();
        let tx = w.transaction_id;
        let before = snapshot(&ledger, &[1, FEES], &[tx]).await;
        for (paid, expected) in [
            ("25.01", "invalid_paid_amount"),
            ("0", "invalid_amount"),
            ("1.001", "invalid_amount"),
        ] {
            let refused = ledger
                .complete_withdrawal(tx, WithdrawalOutcome::PartlyCompleted { paid: dec(paid) })
                .await;
            let is = |e: &LedgerError| e.code() == expected;
            assert_refused_unchanged(&ledger, &[1, FEES], &[tx], &before, refused, is).await;
        }
        let done = ledger
            .complete_withdrawal(
                tx,
                WithdrawalOutcome::PartlyCompleted { paid: dec("24.00") },
            )
            .await
            .unwrap();
        assert_eq!(done.status, WithdrawalStatus::Completed);
        assert_eq!(done.paid, Some(dec("24.00")));
        assert_balance(&ledger, 1, "USD", ["75.00", "0", "75.00"]).await;
        assert_balance(&ledger, FEES, "USD", ["1", "0", "1"]).await;
        // A return gives back what was paid, not the amount.
        let returned = ledger.return_withdrawal(tx, "bounced").await.unwrap();
        assert!(matches!(returned.status, WithdrawalStatus::Returned { .. }));
        assert_balance(&ledger, 1, "USD", ["99.00", "0", "99.00"]).await;
    })
    .await;
}

#[tokio::test]
async fn a_completion_repeated_with_another_paid_amount_is_refused_and_changes_nothing() {
    with_ledger(config(), |ledger| async move {
        ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
        let partly = WithdrawalOutcome::PartlyCompleted { paid: dec("24.00") };
        let whole = WithdrawalOutcome::Completed;
        let partial = |paid| WithdrawalOutcome::PartlyCompleted { paid: dec(paid) };
        // Each withdrawal completed one way, then reported otherwise.
        for (first, others) in [
            (
                partly.clone(),
                vec![partial("1.00"), whole.clone(), partial("25.00")],
            ),
            (whole.clone(), vec![partial("24.00"), partial("10")]),
        ] {
            let tx = withdraw(&ledger, 1, "25.00", fee("USD", "1"))
                .await
                .unwrap()
                .transaction_id;
            let done = ledger.complete_withdrawal(tx, first.clone()).await.unwrap();
            let before = snapshot(&ledger, &[1, FEES], &[tx]).await;
            for other in others {
                let refused = ledger.complete_withdrawal(tx, other).await;
                let is = |e: &LedgerError| {
                    matches!(e, LedgerError::CompletedOtherwise { .. })
                        && e.code() == "invalid_transition"
                };
                assert_refused_unchanged(&ledger, &[1, FEES], &[tx], &before, refused, is).await;
            }
            // The update that made the state, repeated, reports it; a bad
            // amount is refused as the first time.
            let again = ledger.complete_withdrawal(tx, first).await.unwrap();
            assert_eq!(again, done);
            let over = ledger.complete_withdrawal(tx, partial("25.01")).await;
            let is = |e: &LedgerError| e.code() == "invalid_paid_amount";
            assert_refused_unchanged(&ledger, &[1, FEES], &[tx], &before, over, is).await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Precedence (as `burnledger::error` documents it)
// ---------------------------------------------------------------------------

/// A withdrawal that breaks every rule at once is refused by the first in
/// the documented order; lifting that cause lets the next one answer:
/// the request's own details, then at the account the key, the freeze,
/// the pending cap, the limit, and last the funds.
#[tokio::test]
async fn a_withdrawal_breaking_several_rules_answers_the_first_in_order() {
    let clock = ManualClock::new();
    let config = Config {
        account_pending_withdrawals_max: 1,
        ..limited(&clock, &["default:USD:24h=50"])
    };
    with_ledger(config, |ledger| async move {
        ledger.deposit(1, "USD", dec("60"), None).await.unwrap();
        let key = || Some("w");
        let first = ledger
            .request_withdrawal_with(1, "USD", dec("5"), key(), Default::default())
            .await
            .unwrap();
        ledger
            .freeze_account(1, FreezeScope::Withdrawals, None, "review")
            .await
            .unwrap();
        let bad_expiry = WithdrawalOptions {
            expires_in: Some(Duration::ZERO),
            ..Default::default()
        };
        let txs = [first.transaction_id];
        let before = snapshot(&ledger, &[1], &txs).await;
        // 70 is past the limit (5 used of 50) and the funds (55 left).
        let ask = |key, options| ledger.request_withdrawal_with(1, "USD", dec("70"), key, options);
        let answers = [
            ask(key(), bad_expiry).await,
            ask(key(), Default::default()).await,
            ask(None, Default::default()).await,
        ];
        let expected = ["invalid_expiry", "idempotency_conflict", "account_frozen"];
        for (refused, code) in answers.into_iter().zip(expected) {
            let is = |e: &LedgerError| e.code() == code;
            assert_refused_unchanged(&ledger, &[1], &txs, &before, refused, is).await;
        }
        ledger.unfreeze_account(1).await.unwrap();
        let capped = ask(None, Default::default()).await;
        let is = |e: &LedgerError| e.code() == "too_many_pending_withdrawals";
        assert_refused_unchanged(&ledger, &[1], &txs, &before, capped, is).await;
        ledger
            .cancel_withdrawal(first.transaction_id)
            .await
            .unwrap();
        let before = snapshot(&ledger, &[1], &txs).await;
        let limited = ask(None, Default::default()).await;
        let is = |e: &LedgerError| e.code() == "limit_exceeded";
        assert_refused_unchanged(&ledger, &[1], &txs, &before, limited, is).await;
        let short = ledger
            .request_withdrawal_with(1, "USD", dec("50"), None, fee("USD", "10.01"))
            .await;
        let is = |e: &LedgerError| e.code() == "insufficient_funds";
        assert_refused_unchanged(&ledger, &[1], &txs, &before, short, is).await;
    })
    .await;
}
