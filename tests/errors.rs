//! Every cause of refusal of `LedgerError` provoked through the public API
//! the way a caller would: its code, its HTTP status, its kind, and that it
//! changed nothing; and where two causes meet, which one answers (the
//! precedence `burnledger::error` documents: shutting down, the request
//! itself, overload, a poisoned ledger, the state).

#![cfg(feature = "http")]

mod common;

use std::time::Duration;

use burnledger::domain::payouts::Resolution;
use burnledger::error::ErrorKind;
use burnledger::http::error::status_of;
use burnledger::http::HttpOptions;
use burnledger::{
    Config, IdempotencyKey, Ledger, LedgerError, TransactionId, UnixMs, WithdrawalOutcome,
    WithdrawalQuery,
};
use serde_json::{json, Value};

use common::in_process::InProcess;
use common::{
    ceiling_currency, conflict, deposit_op, open, open_with_currencies, snapshot, transfer_op,
    Snapshot, CEILING,
};

fn dec(s: &str) -> burnledger::Decimal {
    common::dec(s)
}

/// Asserts `error` is `expected`: the same value, its code, its HTTP
/// status, its kind, not retryable, and a message to show.
fn assert_refused(error: &LedgerError, expected: &LedgerError, code: &str, status: u16) {
    assert_eq!(error, expected);
    assert_eq!(error.code(), code, "{error:?}");
    assert_eq!(status_of(error).as_u16(), status, "{error:?}");
    assert_eq!(error.kind(), ErrorKind::BadRequest, "{error:?}");
    assert!(!error.is_operating() && !error.is_retryable(), "{error:?}");
    assert!(!error.to_string().is_empty());
}

/// A ledger where account 1 holds 100 USD with a pending withdrawal of 10,
/// and everything observable about accounts 1 and 2 as it is.
async fn funded() -> (Ledger, TransactionId, Snapshot) {
    let ledger = open();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let w = ledger
        .request_withdrawal(1, "USD", dec("10"), None)
        .await
        .unwrap();
    let tx = w.transaction_id;
    let before = snapshot(&ledger, &[1, 2], &[tx]).await;
    (ledger, tx, before)
}

/// Asserts nothing observable changed since `before`, then shuts down.
async fn unchanged(ledger: Ledger, tx: TransactionId, before: Snapshot) {
    assert_eq!(snapshot(&ledger, &[1, 2], &[tx]).await, before);
    ledger.shutdown().await;
}

// ---- each cause ----

#[tokio::test]
async fn an_idempotency_key_out_of_bounds_is_invalid_idempotency_key() {
    let (ledger, tx, before) = funded().await;
    // Bytes count, not characters: 65 "é" are 130 bytes.
    for k in [String::new(), "k".repeat(129), "é".repeat(65)] {
        let expected = LedgerError::InvalidIdempotencyKey {
            length: k.len(),
            max: 128,
        };
        let refusals = [
            ledger
                .deposit(1, "USD", dec("1"), Some(&k))
                .await
                .unwrap_err(),
            ledger
                .request_withdrawal(1, "USD", dec("1"), Some(&k))
                .await
                .unwrap_err(),
            ledger
                .transfer(1, 2, "USD", dec("1"), Some(&k))
                .await
                .unwrap_err(),
            IdempotencyKey::new(&k).unwrap_err(),
        ];
        for refused in &refusals {
            assert_refused(refused, &expected, "invalid_idempotency_key", 400);
        }
    }
    assert!(IdempotencyKey::new(&"k".repeat(128)).is_ok());
    unchanged(ledger, tx, before).await;
}

#[test]
fn text_that_is_not_a_transaction_id_is_invalid_transaction_id() {
    let hex32 = "0".repeat(32);
    let cases = [
        "xyz".to_string(),
        format!("+{}", &hex32[1..]),
        hex32[1..].to_string(),
        "g".repeat(32),
        String::new(),
    ];
    for text in cases {
        let expected = LedgerError::InvalidTransactionId {
            input: text.clone(),
        };
        let refused = text.parse::<TransactionId>().unwrap_err();
        assert_refused(&refused, &expected, "invalid_transaction_id", 400);
    }
    // What is shown of a long input is cut.
    let long = "z".repeat(100);
    let expected = LedgerError::InvalidTransactionId {
        input: format!("{}…", "z".repeat(32)),
    };
    assert_eq!(long.parse::<TransactionId>().unwrap_err(), expected);
    assert!(hex32.parse::<TransactionId>().is_ok());
}

#[tokio::test]
async fn a_transfer_to_its_own_source_is_same_account_transfer() {
    let (ledger, tx, before) = funded().await;
    let expected = LedgerError::SameAccountTransfer { account: 1 };
    let typed = ledger
        .transfer(1, 1, "USD", dec("1"), None)
        .await
        .unwrap_err();
    assert_refused(&typed, &expected, "same_account_transfer", 400);
    let batched = ledger.submit(vec![transfer_op(1, 1, "USD", "1")]).await;
    assert_eq!(batched, [Err(expected)]);
    unchanged(ledger, tx, before).await;
}

#[tokio::test]
async fn a_batch_over_the_limit_is_batch_too_large_for_every_operation() {
    let (ledger, tx, before) = funded().await;
    let max = ledger.config().batch_ops_max;
    let results = ledger
        .submit(vec![deposit_op(1, "USD", "1"); max + 1])
        .await;
    assert_eq!(results.len(), max + 1);
    let expected = LedgerError::BatchTooLarge {
        count: max + 1,
        max,
    };
    for result in results {
        assert_refused(&result.unwrap_err(), &expected, "batch_too_large", 400);
    }
    assert_eq!(snapshot(&ledger, &[1, 2], &[tx]).await, before);
    // At the limit, it runs.
    let results = ledger.submit(vec![deposit_op(2, "USD", "1"); max]).await;
    assert!(results.iter().all(Result::is_ok));
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_reason_or_note_over_256_bytes_is_reason_too_long() {
    let (ledger, tx, before) = funded().await;
    let long = "é".repeat(129); // 258 bytes
    let too_long = |field| LedgerError::ReasonTooLong {
        field,
        length: 258,
        max: 256,
    };
    let failed = WithdrawalOutcome::Failed {
        reason: long.clone(),
    };
    let refused = ledger.complete_withdrawal(tx, failed).await.unwrap_err();
    assert_refused(&refused, &too_long("reason"), "reason_too_long", 400);
    let refused = ledger.return_withdrawal(tx, &long).await.unwrap_err();
    assert_refused(&refused, &too_long("reason"), "reason_too_long", 400);
    let not_paid = Resolution::NotPaid {
        reason: long.clone(),
    };
    let refused = ledger
        .resolve_payout_item(1, tx, not_paid, "n")
        .await
        .unwrap_err();
    assert_refused(&refused, &too_long("reason"), "reason_too_long", 400);
    let refused = ledger
        .resolve_payout_item(1, tx, Resolution::Paid, &long)
        .await
        .unwrap_err();
    assert_refused(&refused, &too_long("note"), "reason_too_long", 400);
    unchanged(ledger, tx, before).await;
}

#[tokio::test]
async fn payout_calls_on_a_ledger_that_makes_none_are_payouts_disabled() {
    let (ledger, tx, before) = funded().await;
    let expected = LedgerError::PayoutsDisabled;
    let refused = ledger.run_payouts_now().await.unwrap_err();
    assert_refused(&refused, &expected, "payouts_disabled", 400);
    let refused = ledger.payout(1).await.unwrap_err();
    assert_refused(&refused, &expected, "payouts_disabled", 400);
    // Listing them is no error: there are none.
    assert!(ledger.payouts().await.unwrap().is_empty());
    unchanged(ledger, tx, before).await;
}

#[test]
fn text_that_is_not_an_rfc_3339_time_is_invalid_time() {
    for text in [
        "",
        "2026-02-30T00:00:00Z",
        "2026-01-01",
        "tomorrow",
        "2026-01-01T00:00:00+25:00",
    ] {
        let problem = UnixMs::parse_rfc3339(text).unwrap_err();
        let refused = LedgerError::InvalidTime(problem.clone());
        assert_refused(
            &refused,
            &LedgerError::InvalidTime(problem),
            "invalid_time",
            400,
        );
        assert!(refused.to_string().contains("RFC 3339"), "{refused}");
    }
}

#[tokio::test]
async fn history_reads_refuse_a_bad_limit_range_currency_or_cursor_by_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(Config::for_tests_in(dir.path())).unwrap();
    ledger.deposit(1, "USD", dec("5"), None).await.unwrap();
    for limit in [0, 1_001] {
        let refused = ledger
            .withdrawals(WithdrawalQuery {
                limit,
                ..WithdrawalQuery::default()
            })
            .await
            .unwrap_err();
        let expected = LedgerError::InvalidLimit { limit, max: 1_000 };
        assert_refused(&refused, &expected, "invalid_limit", 400);
    }
    let (from, to) = (UnixMs::from_millis(20), UnixMs::from_millis(10));
    let backwards = WithdrawalQuery {
        created_from: Some(from),
        created_to: Some(to),
        ..WithdrawalQuery::default()
    };
    let refused = ledger.withdrawals(backwards).await.unwrap_err();
    let expected = LedgerError::InvalidTimeRange { from, to };
    assert_refused(&refused, &expected, "invalid_time_range", 400);
    let refused = ledger.entries(1, Some("XYZ"), None, 10).await.unwrap_err();
    let expected = LedgerError::UnknownCurrency {
        currency: "XYZ".into(),
    };
    assert_refused(&refused, &expected, "unknown_currency", 400);
    let refused = ledger.entries(1, None, Some("e12"), 10).await.unwrap_err();
    assert_eq!(refused.code(), "invalid_cursor", "{refused:?}");
    assert_eq!(status_of(&refused).as_u16(), 400);
    assert_eq!(refused.kind(), ErrorKind::BadRequest);
    let nowhere = TransactionId::new(9, 9);
    let refused = ledger.transaction(nowhere).await.unwrap_err();
    assert_eq!(
        refused,
        LedgerError::UnknownTransaction {
            transaction_id: nowhere
        }
    );
    assert_eq!(
        (refused.code(), status_of(&refused).as_u16()),
        ("unknown_transaction", 404)
    );
    assert_eq!(refused.kind(), ErrorKind::Rejected);
    assert_eq!(
        ledger.balance(1, "USD").await.unwrap().available,
        dec("5.00")
    );
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_ledger_without_a_data_folder_is_history_unavailable() {
    let ledger = open();
    let refused = ledger
        .withdrawals(WithdrawalQuery::default())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, LedgerError::HistoryUnavailable { .. }),
        "{refused:?}"
    );
    assert_eq!(refused.code(), "history_unavailable");
    assert_eq!(status_of(&refused).as_u16(), 503);
    assert_eq!(refused.kind(), ErrorKind::Operating);
    assert!(!refused.is_retryable());
    ledger.shutdown().await;
}

// ---- over HTTP ----

/// `POST path` with a JSON body: the status and the error code.
fn post(server: &InProcess, path: &str, body: Value) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut response = agent
        .post(format!("{}{path}", server.url()))
        .send_json(body)
        .expect("the server answers");
    let status = response.status().as_u16();
    let answer: Value = response.body_mut().read_json().unwrap_or(Value::Null);
    (status, answer["error"].as_str().unwrap_or("").to_string())
}

fn serve() -> InProcess {
    let options = HttpOptions {
        workers: Some(1),
        ..HttpOptions::default()
    };
    InProcess::start(Config::for_tests(), options)
}

#[test]
fn an_out_of_bounds_key_is_400_invalid_idempotency_key_over_http() {
    let server = serve();
    for k in [String::new(), "k".repeat(129)] {
        let body = json!({"account": 1, "currency": "USD", "amount": "1", "idempotency_key": k});
        let answer = post(&server, "/v1/deposits", body);
        assert_eq!(answer, (400, "invalid_idempotency_key".to_string()));
    }
    let balances = InProcess::block_on(server.ledger.balances(1)).unwrap();
    assert!(balances.is_empty(), "nothing was credited");
    server.stop();
}

#[test]
fn the_new_bad_input_codes_over_http() {
    let server = serve();
    let ledger = server.ledger.clone();
    InProcess::block_on(ledger.deposit(1, "USD", dec("100"), None)).unwrap();
    let w = InProcess::block_on(ledger.request_withdrawal(1, "USD", dec("10"), None)).unwrap();
    let tx = w.transaction_id;
    let self_transfer = json!({"from": 1, "to": 1, "currency": "USD", "amount": "1"});
    assert_eq!(
        post(&server, "/v1/transfers", self_transfer),
        (400, "same_account_transfer".to_string())
    );
    let long = json!({"status": "failed", "reason": "r".repeat(257)});
    let path = format!("/v1/withdrawals/{tx}/status");
    assert_eq!(
        post(&server, &path, long),
        (400, "reason_too_long".to_string())
    );
    assert_eq!(
        post(&server, "/v1/payouts/run", json!({})),
        (400, "payouts_disabled".to_string())
    );
    let w = InProcess::block_on(ledger.withdrawal(tx)).unwrap();
    assert_eq!(w.status, burnledger::WithdrawalStatus::Pending);
    let balances = InProcess::block_on(ledger.balances(1)).unwrap();
    assert_eq!(balances[0].available, dec("90.00"));
    server.stop();
}

// ---- precedence: which cause answers when several apply ----

#[tokio::test]
async fn shutting_down_answers_before_the_request_is_judged() {
    let (ledger, tx, _) = funded().await;
    ledger.shutdown().await;
    let bad_key = ledger.deposit(1, "XYZ", dec("0"), Some("")).await;
    assert_eq!(bad_key.unwrap_err(), LedgerError::ShuttingDown);
    let long = WithdrawalOutcome::Failed {
        reason: "r".repeat(300),
    };
    let refused = ledger.complete_withdrawal(tx, long).await.unwrap_err();
    assert_eq!(refused, LedgerError::ShuttingDown);
    assert_eq!(
        ledger.run_payouts_now().await.unwrap_err(),
        LedgerError::ShuttingDown
    );
    assert!(LedgerError::ShuttingDown.is_operating());
}

#[tokio::test]
async fn history_reads_judge_closed_then_input_then_the_store_then_the_cursor() {
    let ledger = open();
    let bad = |after| WithdrawalQuery {
        currency: Some("XYZ"),
        limit: 0,
        after,
        ..WithdrawalQuery::default()
    };
    // The currency before the limit, both before the missing store...
    assert!(matches!(
        ledger.withdrawals(bad(None)).await,
        Err(LedgerError::UnknownCurrency { .. })
    ));
    let only_limit = WithdrawalQuery {
        limit: 0,
        ..WithdrawalQuery::default()
    };
    assert!(matches!(
        ledger.withdrawals(only_limit).await,
        Err(LedgerError::InvalidLimit { .. })
    ));
    // ...and the missing store before the cursor, which only a store reads.
    let only_cursor = WithdrawalQuery {
        after: Some("garbage"),
        ..WithdrawalQuery::default()
    };
    assert!(matches!(
        ledger.withdrawals(only_cursor).await,
        Err(LedgerError::HistoryUnavailable { .. })
    ));
    ledger.shutdown().await;
    assert_eq!(
        ledger.withdrawals(bad(Some("garbage"))).await.unwrap_err(),
        LedgerError::ShuttingDown
    );
}

#[tokio::test]
async fn the_key_answers_before_the_accounts_the_currency_and_the_amount() {
    let (ledger, tx, before) = funded().await;
    let bad_key = LedgerError::InvalidIdempotencyKey {
        length: 0,
        max: 128,
    };
    let transfer = ledger.transfer(1, 1, "XYZ", dec("0"), Some("")).await;
    assert_eq!(transfer.unwrap_err(), bad_key);
    let deposit = ledger.deposit(1, "XYZ", dec("0"), Some("")).await;
    assert_eq!(deposit.unwrap_err(), bad_key);
    let withdrawal = ledger
        .request_withdrawal(1, "USD", dec("1000"), Some(""))
        .await;
    assert_eq!(withdrawal.unwrap_err(), bad_key);
    unchanged(ledger, tx, before).await;
}

#[tokio::test]
async fn a_same_account_transfer_answers_before_its_currency_and_amount() {
    let (ledger, tx, before) = funded().await;
    let expected = LedgerError::SameAccountTransfer { account: 1 };
    for (currency, amount) in [
        ("XYZ", "1"),
        ("USD", "0"),
        ("USD", "0.001"),
        ("USD", "1000"),
    ] {
        let refused = ledger.transfer(1, 1, currency, dec(amount), None).await;
        assert_eq!(refused.unwrap_err(), expected, "{currency} {amount}");
    }
    unchanged(ledger, tx, before).await;
}

#[tokio::test]
async fn the_currency_answers_before_the_amount() {
    let (ledger, tx, before) = funded().await;
    let unknown = LedgerError::UnknownCurrency {
        currency: "XYZ".into(),
    };
    let deposit = ledger.deposit(1, "XYZ", dec("0"), None).await;
    assert_eq!(deposit.unwrap_err(), unknown);
    let transfer = ledger.transfer(1, 2, "XYZ", dec("-1"), None).await;
    assert_eq!(transfer.unwrap_err(), unknown);
    unchanged(ledger, tx, before).await;
}

#[tokio::test]
async fn an_oversized_batch_answers_before_its_operations_are_judged() {
    let (ledger, tx, before) = funded().await;
    let max = ledger.config().batch_ops_max;
    let ops = vec![transfer_op(1, 1, "XYZ", "0"); max + 1];
    let expected = LedgerError::BatchTooLarge {
        count: max + 1,
        max,
    };
    for result in ledger.submit(ops).await {
        assert_eq!(result.unwrap_err(), expected);
    }
    unchanged(ledger, tx, before).await;
}

#[tokio::test]
async fn a_long_reason_answers_before_the_withdrawal_or_payout_is_looked_up() {
    let (ledger, tx, before) = funded().await;
    let unknown = TransactionId::new(99, 1);
    let long = WithdrawalOutcome::Failed {
        reason: "r".repeat(257),
    };
    let refused = ledger.complete_withdrawal(unknown, long).await.unwrap_err();
    assert_eq!(refused.code(), "reason_too_long");
    let note = "n".repeat(257);
    let refused = ledger
        .resolve_payout_item(12345, unknown, Resolution::Paid, &note)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "reason_too_long", "before unknown_payout");
    unchanged(ledger, tx, before).await;
}

#[tokio::test]
async fn bad_input_answers_before_a_poisoned_ledger_and_poisoned_before_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::for_tests_in(dir.path());
    let fail_point = config.wal_fail_point.clone();
    let ledger = Ledger::open(config).unwrap();
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    fail_point.fail_syncs(true);
    let failed = ledger.deposit(1, "USD", dec("1"), None).await.unwrap_err();
    assert_eq!(failed.code(), "poisoned");
    fail_point.fail_syncs(false);
    // The request itself is judged first, as on a healthy ledger.
    let bad_key = ledger.deposit(1, "USD", dec("1"), Some("")).await;
    assert_eq!(bad_key.unwrap_err().code(), "invalid_idempotency_key");
    let unknown = ledger.deposit(1, "XYZ", dec("1"), None).await;
    assert_eq!(unknown.unwrap_err().code(), "unknown_currency");
    // Then the poisoned ledger answers, before any account is judged.
    let insufficient = ledger.request_withdrawal(1, "USD", dec("1000"), None).await;
    let poisoned = insufficient.unwrap_err();
    assert_eq!(poisoned.code(), "poisoned");
    assert!(poisoned.is_operating());
    let unknown = TransactionId::new(1, 999);
    let cancel = ledger.cancel_withdrawal(unknown).await;
    assert_eq!(
        cancel.unwrap_err().code(),
        "poisoned",
        "before unknown_withdrawal"
    );
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_key_reused_answers_before_the_pending_cap_and_the_cap_before_funds() {
    let (ledger, tx, _) = funded().await;
    let cap = ledger.config().account_pending_withdrawals_max;
    let first = ledger
        .request_withdrawal(1, "USD", dec("1"), Some("w"))
        .await
        .unwrap();
    for _ in 2..cap {
        ledger
            .request_withdrawal(1, "USD", dec("1"), None)
            .await
            .unwrap();
    }
    let mut withdrawals = vec![tx, first.transaction_id];
    withdrawals.sort();
    let before = snapshot(&ledger, &[1, 2], &withdrawals).await;
    // Over the cap and over the funds: the key's conflict answers.
    let reused = ledger
        .request_withdrawal(1, "USD", dec("1000"), Some("w"))
        .await;
    assert_eq!(reused.unwrap_err(), conflict("w"));
    // Over the cap and over the funds, no key: the cap answers.
    let capped = ledger
        .request_withdrawal(1, "USD", dec("1000"), None)
        .await
        .unwrap_err();
    assert_eq!(
        capped,
        LedgerError::TooManyPendingWithdrawals {
            account: 1,
            limit: cap
        }
    );
    assert_eq!(capped.kind(), ErrorKind::Rejected);
    assert_eq!(snapshot(&ledger, &[1, 2], &withdrawals).await, before);
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_key_reused_answers_before_the_balance_ceiling() {
    let ledger = open_with_currencies(vec![ceiling_currency()]);
    ledger
        .deposit(1, "PTS", dec(CEILING), Some("d"))
        .await
        .unwrap();
    let before = snapshot(&ledger, &[1], &[]).await;
    let reused = ledger.deposit(1, "PTS", dec("1"), Some("d")).await;
    assert_eq!(reused.unwrap_err(), conflict("d"));
    let over = ledger.deposit(1, "PTS", dec("1"), None).await.unwrap_err();
    assert_eq!(over.code(), "invalid_amount");
    assert_eq!(over.kind(), ErrorKind::Rejected, "judged on the balance");
    assert_eq!(snapshot(&ledger, &[1], &[]).await, before);
    ledger.shutdown().await;
}
