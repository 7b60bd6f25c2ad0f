//! Amounts through the public `Ledger` handle: what a deposit, withdrawal
//! or transfer accepts (positive, within the currency's decimals and
//! per-operation maximum, the balance ceiling) and how it refuses the rest,
//! changing nothing.

mod common;

use burnledger::{AmountProblem, Config, CurrencyConfig, LedgerError};
use common::{
    assert_balance, assert_refused_by_every_kind, balance, ceiling_currency, code, complete, dec,
    deposit_op, request_withdrawal, snapshot, transfer_op, with_currencies, with_ledger,
    withdraw_op, CEILING,
};

#[tokio::test]
async fn invalid_amounts_are_rejected_with_their_problem_and_change_nothing() {
    with_ledger(Config::for_tests(), |ledger| async move {
        ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
        ledger.deposit(1, "BTC", dec("1"), None).await.unwrap();
        let pending = request_withdrawal(&ledger, 1, "USD", "10").await;
        let before = snapshot(&ledger, &[1, 2], &[pending.transaction_id]).await;

        let cases: Vec<(&str, &str, AmountProblem)> = vec![
            ("USD", "0", AmountProblem::NotPositive),
            ("USD", "0.00", AmountProblem::NotPositive),
            ("USD", "-1", AmountProblem::NotPositive),
            ("USD", "-0.01", AmountProblem::NotPositive),
            (
                "USD",
                "0.001",
                AmountProblem::TooManyDecimals { decimals: 2 },
            ),
            (
                "USD",
                "10.005",
                AmountProblem::TooManyDecimals { decimals: 2 },
            ),
            (
                "BTC",
                "0.000000001",
                AmountProblem::TooManyDecimals { decimals: 8 },
            ),
            (
                "USD",
                "1000000000000.01",
                AmountProblem::AboveMaximum {
                    maximum: dec("1000000000000"),
                },
            ),
            (
                "USD",
                "1000000000001",
                AmountProblem::AboveMaximum {
                    maximum: dec("1000000000000"),
                },
            ),
            (
                "BTC",
                "1000000000000.00000001",
                AmountProblem::AboveMaximum {
                    maximum: dec("1000000000000"),
                },
            ),
        ];
        for (currency, amount, problem) in cases {
            let expected = LedgerError::InvalidAmount {
                amount: dec(amount),
                currency: code(currency),
                problem,
            };
            assert_refused_by_every_kind(&ledger, currency, dec(amount), &expected).await;
            let batch = ledger
                .submit(vec![
                    deposit_op(1, currency, amount),
                    withdraw_op(1, currency, amount),
                    transfer_op(1, 2, currency, amount),
                ])
                .await;
            assert_eq!(batch, vec![Err(expected.clone()); 3]);
            assert_eq!(expected.code(), "invalid_amount");
            assert!(!expected.is_retryable());
        }
        assert_eq!(
            snapshot(&ledger, &[1, 2], &[pending.transaction_id]).await,
            before
        );
    })
    .await;
}

#[tokio::test]
async fn amounts_at_the_limits_are_accepted_exactly() {
    with_ledger(Config::for_tests(), |ledger| async move {
        // The per-operation maximum itself is allowed; trailing zeros past the
        // currency's decimals are not (the amount's scale is the caller's
        // claim about the currency, and a wrong claim is how money is misread).
        ledger
            .deposit(1, "USD", dec("1000000000000"), None)
            .await
            .unwrap();
        let refused = ledger.deposit(1, "USD", dec("12.500"), None).await;
        assert_eq!(refused.unwrap_err().code(), "invalid_amount");
        let d = ledger.deposit(1, "USD", dec("12.50"), None).await.unwrap();
        assert_eq!(d.amount, dec("12.5"));
        ledger
            .deposit(1, "BTC", dec("0.00000001"), None)
            .await
            .unwrap();
        let usd = "1000000000012.50";
        assert_balance(&ledger, 1, "USD", [usd, "0", usd]).await;
        assert_balance(&ledger, 1, "BTC", ["0.00000001", "0", "0.00000001"]).await;
        assert_eq!(
            ledger
                .balance(1, "USD")
                .await
                .unwrap()
                .available
                .to_string(),
            "1000000000012.50",
            "balances show the currency's decimals"
        );
    })
    .await;
}

#[tokio::test]
async fn per_currency_amount_max_is_enforced() {
    let usd_up_to_100 = CurrencyConfig {
        code: "USD".into(),
        decimals: 2,
        amount_max: dec("100"),
    };
    let config = with_currencies(vec![usd_up_to_100, CurrencyConfig::new("EUR", 2)]);
    with_ledger(config, |ledger| async move {
        ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
        let before = snapshot(&ledger, &[1], &[]).await;
        assert_eq!(
            ledger
                .deposit(1, "USD", dec("100.01"), None)
                .await
                .unwrap_err(),
            LedgerError::InvalidAmount {
                amount: dec("100.01"),
                currency: code("USD"),
                problem: AmountProblem::AboveMaximum {
                    maximum: dec("100")
                },
            }
        );
        assert_eq!(snapshot(&ledger, &[1], &[]).await, before);
        // Other currencies keep the default limit.
        ledger.deposit(1, "EUR", dec("1000"), None).await.unwrap();
    })
    .await;
}

/// USD and a currency whose per-operation maximum is the balance ceiling
/// itself, so the ceiling can be reached in one deposit.
fn with_ceiling_currency() -> Config {
    with_currencies(vec![CurrencyConfig::new("USD", 2), ceiling_currency()])
}

#[tokio::test]
async fn balance_above_maximum_is_refused_for_deposits_and_incoming_transfers() {
    with_ledger(with_ceiling_currency(), |ledger| async move {
        let ceiling = dec(CEILING);
        // Two accounts on different shards and two on the same shard as the full one.
        let full = 1u64;
        ledger.deposit(full, "PTS", ceiling, None).await.unwrap();
        let mut senders = Vec::new();
        for other in 2..40u64 {
            ledger.deposit(other, "PTS", dec("5"), None).await.unwrap();
            senders.push(other);
        }
        let mut accounts = vec![full];
        accounts.extend(&senders);
        let before = snapshot(&ledger, &accounts, &[]).await;

        let expected = LedgerError::InvalidAmount {
            amount: dec("1"),
            currency: code("PTS"),
            problem: AmountProblem::BalanceAboveMaximum { maximum: ceiling },
        };
        assert_eq!(
            ledger
                .deposit(full, "PTS", dec("1"), None)
                .await
                .unwrap_err(),
            expected
        );
        // The receiving side refuses; the source gets its funds back.
        for &sender in &senders {
            assert_eq!(
                ledger
                    .transfer(sender, full, "PTS", dec("1"), None)
                    .await
                    .unwrap_err(),
                expected,
                "transfer from {sender}"
            );
        }
        assert_eq!(snapshot(&ledger, &accounts, &[]).await, before);

        // Once the full account has room again, the same credit goes through.
        let w = request_withdrawal(&ledger, full, "PTS", "1").await;
        // Locked funds still count toward the ceiling.
        assert_eq!(
            ledger
                .deposit(full, "PTS", dec("1"), None)
                .await
                .unwrap_err(),
            expected
        );
        complete(&ledger, w.transaction_id).await;
        ledger
            .transfer(senders[0], full, "PTS", dec("1"), None)
            .await
            .unwrap();
        assert_eq!(balance(&ledger, full, "PTS").await.2, ceiling);
    })
    .await;
}

#[tokio::test]
async fn eighteen_decimal_currencies_open_with_a_default_limit_under_the_ceiling() {
    with_ledger(
        with_currencies(vec![CurrencyConfig::new("ETH", 18)]),
        |ledger| async move {
            let deposit = ledger
                .deposit(1, "ETH", dec("1.000000000000000001"), None)
                .await
                .unwrap();
            assert_eq!(deposit.amount, dec("1.000000000000000001"));
        },
    )
    .await;
}
