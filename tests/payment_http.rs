//! The payment service in another process: `HttpPaymentService` (the
//! client) against the simulated bank's server (`burnledger::http::bank`,
//! what `burnledger bank` runs), over real HTTP on loopback port 0.
//!
//! - the bank over HTTP answers what the in-process `SimulatedBank` answers
//!   (same seed, same calls), and a resubmit pays nothing more;
//! - every outcome class maps to its `PaymentError`: 4xx with its error
//!   body → Rejected, 5xx, no server, a server that never answers, an
//!   answer about another payout or garbage → Unknown, GET 404 → NotFound
//!   (odd answers come from a tiny `TcpListener` stub);
//! - a lost response is Unknown, yet the payment is listed and `status`
//!   answers paid;
//! - a `Ledger` paying through the bank with faults settles every
//!   withdrawal as the bank says, and no transaction is paid twice;
//! - the `burnledger bank` binary, started on port 0; `serve
//!   --payment-service-url` paying through it (two processes);
//! - bad input at the bank's boundary: 4xx, nothing paid.
//!
//! Nothing sleeps to wait for work: the bank is bound before its address is
//! handed out; the only waits are a client's own timeout against a server
//! that never answers and the binary's `listening on` line.

#![cfg(all(feature = "cli", feature = "http"))]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use burnledger::config::{PayoutMode, SharedPaymentService};
use burnledger::domain::details::Destination;
use burnledger::domain::payouts::PayoutState;
use burnledger::http::bank;
use burnledger::payment::wire::PaymentsJson;
use burnledger::payment::{
    HttpPaymentService, HttpPaymentSettings, ItemStatus, PaymentError, PaymentService, Payout,
    PayoutId, PayoutItem, PayoutReport, SimulatedBank, SimulatedBankConfig,
};
use burnledger::{Config, CurrencyCode, Decimal, Ledger, TransactionId, WithdrawalStatus};
use serde_json::{json, Value};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process that is killed if the test ends without stopping it
/// (a failed assertion must not leave a server running).
struct Running(std::process::Child);

impl Running {
    /// SIGTERM, then its exit status (`None`: still running after the
    /// timeout, so it was killed).
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        common::serve::terminate(&self.0);
        common::serve::wait_exit(&mut self.0, START_TIMEOUT)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

// ---- the bank, in-process over real HTTP ----

/// A `SimulatedBank` served on a loopback port from a thread of its own.
struct Bank {
    /// The bank the server serves: the ground truth of what was paid.
    bank: SimulatedBank,
    url: String,
    handle: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<()>,
}

impl Bank {
    fn start(config: SimulatedBankConfig) -> Self {
        let bank = SimulatedBank::new(config);
        let served = bank.clone();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let bound = bank::bind(served, "127.0.0.1:0", false).unwrap();
                tx.send((bound.addrs[0], bound.server.handle())).unwrap();
                bound.server.await.unwrap();
            });
        });
        let (addr, handle) = rx.recv_timeout(START_TIMEOUT).unwrap();
        Self {
            bank,
            url: format!("http://{addr}"),
            handle,
            thread,
        }
    }

    fn client(&self) -> HttpPaymentService {
        client(&self.url, Duration::from_secs(20))
    }

    async fn stop(self) {
        self.handle.stop(true).await;
        tokio::task::spawn_blocking(move || self.thread.join().unwrap())
            .await
            .unwrap();
    }
}

fn client(url: &str, timeout: Duration) -> HttpPaymentService {
    let settings = HttpPaymentSettings {
        timeout,
        ..HttpPaymentSettings::default()
    };
    HttpPaymentService::new(url, settings).unwrap()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// Status and JSON body (a JSON string when it is not JSON).
fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut response = response.expect("the server answers");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

fn get(url: &str) -> (u16, Value) {
    answer(agent().get(url).call())
}

/// POST `body` as it is, with `Idempotency-Key: key` when given.
fn post(url: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = agent().post(url).header("Content-Type", "application/json");
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    answer(request.send(body))
}

/// What the bank's `GET /payments` lists.
fn payments(url: &str) -> Vec<(PayoutId, TransactionId, Decimal)> {
    let (status, body) = get(&format!("{url}/payments"));
    assert_eq!(status, 200, "{body}");
    let listed: PaymentsJson = serde_json::from_value(body).unwrap();
    listed.into_payments().unwrap()
}

/// How many times each transaction was paid, by `GET /payments`.
fn times_paid(url: &str) -> HashMap<TransactionId, usize> {
    let mut times = HashMap::new();
    for (_, tx, _) in payments(url) {
        *times.entry(tx).or_default() += 1;
    }
    times
}

// ---- payouts ----

fn usd() -> CurrencyCode {
    CurrencyCode::new("USD").unwrap()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Payout `id` of `n` items with transactions `first..first + n`; every
/// other item with a destination.
fn payout(id: PayoutId, first: u64, n: u64) -> Payout {
    let item = |seq: u64| PayoutItem {
        transaction_id: TransactionId::new(seq % 7, seq),
        account: seq % 7,
        amount: Decimal::new(i64::try_from(seq % 1000 + 1).unwrap(), 2),
        destination: seq.is_multiple_of(2).then(|| {
            let network = seq.is_multiple_of(4).then(|| "sepa".to_string());
            Destination::new("iban", format!("DE{seq:020}"), network).unwrap()
        }),
    };
    Payout {
        payout_id: id,
        currency: usd(),
        items: (first..first + n).map(item).collect(),
    }
}

fn is_unknown<T: std::fmt::Debug>(answer: &Result<T, PaymentError>) -> bool {
    matches!(answer, Err(PaymentError::Unknown { .. }))
}

fn count(report: &PayoutReport, wanted: fn(&ItemStatus) -> bool) -> usize {
    report.items.iter().filter(|(_, s)| wanted(s)).count()
}

// ---- 1. the same answers as the in-process bank; a resubmit pays nothing more ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_over_http_gets_the_simulated_banks_answers_and_is_paid_once() {
    let config = SimulatedBankConfig {
        item_failure_per_mille: 300,
        pending_per_mille: 300,
        seed: 5,
        ..SimulatedBankConfig::default()
    };
    let server = Bank::start(config.clone());
    let reference = SimulatedBank::new(config);
    let service = server.client();
    let sent = payout(1, 0, 30);

    let first = service.submit(sent.clone()).await.unwrap();
    assert_eq!(first, reference.submit(sent.clone()).await.unwrap());
    let paid = |s: &ItemStatus| *s == ItemStatus::Paid;
    let failed = |s: &ItemStatus| matches!(s, ItemStatus::Failed { .. });
    let pending = |s: &ItemStatus| *s == ItemStatus::Pending;
    assert!(
        count(&first, paid) > 0 && count(&first, failed) > 0 && count(&first, pending) > 0,
        "a mix of paid, failed and pending: {first:?}"
    );
    // The same id again: pending items resolve, nothing is paid twice.
    let again = service.submit(sent.clone()).await.unwrap();
    assert_eq!(again, reference.submit(sent.clone()).await.unwrap());
    assert_eq!(count(&again, pending), 0);
    assert_eq!(service.status(1).await.unwrap(), again);
    assert_eq!(service.submit(sent.clone()).await.unwrap(), again);

    let listed = payments(&server.url);
    assert_eq!(
        listed,
        reference.payments(),
        "GET /payments is the bank's record"
    );
    assert_eq!(listed, server.bank.payments());
    let once: BTreeSet<_> = listed.iter().map(|(_, tx, _)| *tx).collect();
    assert_eq!(once.len(), listed.len(), "each item paid once: {listed:?}");
    assert_eq!(once.len(), count(&again, paid));
    server.stop().await;
}

/// Issue 16: each item reaches the bank with its destination, and an item
/// paid in part comes back `paid` with the amount paid, which is what the
/// bank lists as paid; the same answers as the in-process bank.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_reach_the_bank_and_partial_payments_come_back_with_their_amount() {
    let config = SimulatedBankConfig {
        partly_paid_per_mille: 500,
        seed: 3,
        ..SimulatedBankConfig::default()
    };
    let server = Bank::start(config.clone());
    let reference = SimulatedBank::new(config);
    let sent = payout(2, 0, 40);
    let report = server.client().submit(sent.clone()).await.unwrap();
    assert_eq!(report, reference.submit(sent.clone()).await.unwrap());
    for item in &sent.items {
        let received = server.bank.received(item.transaction_id).unwrap();
        assert_eq!(received, *item, "the item as the bank received it");
    }
    assert!(sent.items.iter().any(|i| i.destination.is_some()));
    let amounts: HashMap<_, _> = sent
        .items
        .iter()
        .map(|i| (i.transaction_id, i.amount))
        .collect();
    let listed: HashMap<_, _> = payments(&server.url)
        .into_iter()
        .map(|(_, tx, paid)| (tx, paid))
        .collect();
    let mut partly = 0;
    for (tx, status) in &report.items {
        let paid = match status {
            ItemStatus::Paid => amounts[tx],
            ItemStatus::PartlyPaid { paid } => {
                partly += 1;
                assert!(*paid > Decimal::ZERO && *paid < amounts[tx], "{paid}");
                *paid
            }
            other => panic!("{tx:?}: {other:?}"),
        };
        assert_eq!(listed[tx], paid, "the bank lists what it paid");
    }
    assert!(
        partly > 0 && partly < sent.items.len(),
        "{partly} partly paid"
    );
    server.stop().await;
}

/// The protocol's field names, as a non-Rust client sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wire_format_is_the_documented_one() {
    let server = Bank::start(SimulatedBankConfig {
        item_failure_per_mille: 1000,
        ..SimulatedBankConfig::default()
    });
    let tx = "000000000000000c0000000000000003";
    let body = json!({"payout_id": 7, "currency": "USD", "items": [
        {"transaction_id": tx, "account": 12, "amount": "12.34"}]});
    let (status, report) = post(
        &format!("{}/payouts", server.url),
        Some("7"),
        &body.to_string(),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["payout_id"], 7);
    assert_eq!(report["items"][0]["transaction_id"], tx);
    assert_eq!(report["items"][0]["status"], "failed");
    assert!(report["items"][0]["reason"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    assert_eq!(get(&format!("{}/payouts/7", server.url)), (200, report));
    assert_eq!(get(&format!("{}/health", server.url)).0, 200);
    assert_eq!(
        get(&format!("{}/payments", server.url)),
        (200, json!({"payments": []}))
    );

    server.bank.set_faults(SimulatedBankConfig::default());
    let body = json!({"payout_id": 8, "currency": "USD", "items": [
        {"transaction_id": tx, "account": 12, "amount": "12.30"}]});
    let (status, report) = post(
        &format!("{}/payouts", server.url),
        Some("8"),
        &body.to_string(),
    );
    assert_eq!(
        (status, &report["items"][0]["status"]),
        (200, &json!("paid"))
    );
    assert!(report["items"][0].get("reason").is_none(), "{report}");
    let listed = json!({"payments": [{"payout_id": 8, "transaction_id": tx, "amount": "12.30"}]});
    assert_eq!(get(&format!("{}/payments", server.url)), (200, listed));

    // A destination goes with its item; an item paid in part says how much.
    server.bank.set_faults(SimulatedBankConfig {
        partly_paid_per_mille: 1000,
        ..SimulatedBankConfig::default()
    });
    let other = "000000000000000c0000000000000004";
    let destination = json!({"kind": "address", "value": "0xabc", "network": "ethereum"});
    let body = json!({"payout_id": 9, "currency": "USD", "items": [
        {"transaction_id": other, "account": 12, "amount": "12.30", "destination": destination}]});
    let (status, report) = post(
        &format!("{}/payouts", server.url),
        Some("9"),
        &body.to_string(),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["items"][0]["status"], "paid");
    let paid = dec(report["items"][0]["amount"].as_str().unwrap());
    assert!(paid > Decimal::ZERO && paid < dec("12.30"), "{report}");
    let received = server.bank.received(other.parse().unwrap()).unwrap();
    let expected = Destination::new("address", "0xabc", Some("ethereum".into())).unwrap();
    assert_eq!(received.destination, Some(expected));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_item_sent_back_shows_returned() {
    let server = Bank::start(SimulatedBankConfig::default());
    let service = server.client();
    let report = service.submit(payout(3, 0, 2)).await.unwrap();
    let tx = report.items[0].0;
    let give_back =
        |tx: &str, body: &str| post(&format!("{}/payments/{tx}/return", server.url), None, body);
    let reason = r#"{"reason": "account closed"}"#;
    let (status, body) = give_back(&tx.to_string(), reason);
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("returned")),
        "{body}"
    );
    let after = service.status(3).await.unwrap();
    let returned = ItemStatus::Returned {
        reason: "account closed".into(),
    };
    assert_eq!(after.items, vec![(tx, returned), report.items[1].clone()]);
    assert_eq!(
        give_back(&tx.to_string(), reason).1["error"]["code"],
        "unknown_payment"
    );
    assert_eq!(give_back("xyz", reason).0, 400);
    assert_eq!(give_back(&report.items[1].0.to_string(), "{}").0, 400);
    assert_eq!(payments(&server.url).len(), 2, "a return is no new payment");
    server.stop().await;
}

// ---- 2. every outcome class maps to its PaymentError ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banks_refusals_are_rejections_and_its_unknowns_unknown() {
    let server = Bank::start(SimulatedBankConfig {
        max_items_per_payout: 2,
        ..SimulatedBankConfig::default()
    });
    let service = server.client();
    let rejected = service.submit(payout(1, 0, 3)).await;
    assert!(
        matches!(&rejected, Err(PaymentError::Rejected { reason }) if reason.contains("422 payout_rejected")),
        "{rejected:?}"
    );
    assert_eq!(
        service.status(1).await,
        Err(PaymentError::NotFound { payout_id: 1 })
    );

    server.bank.set_faults(SimulatedBankConfig {
        unknown_outcome_per_mille: 1000,
        ..SimulatedBankConfig::default()
    });
    let unknown = service.submit(payout(2, 0, 2)).await;
    assert!(is_unknown(&unknown), "a 503: {unknown:?}");
    assert_eq!(
        service.status(2).await,
        Err(PaymentError::NotFound { payout_id: 2 })
    );
    assert!(payments(&server.url).is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_or_a_silent_one_is_an_unknown_outcome() {
    let refused_port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let nobody = client(
        &format!("http://127.0.0.1:{refused_port}"),
        Duration::from_secs(5),
    );
    assert!(is_unknown(&nobody.submit(payout(1, 0, 1)).await));
    assert!(is_unknown(&nobody.status(1).await));

    // Accepts, reads, never answers: the client's timeout ends the call.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut connections = Vec::new();
        for stream in silent.incoming().take(2) {
            connections.push(stream.unwrap());
        }
        connections
    });
    let waiting = client(&url, Duration::from_millis(300));
    assert!(is_unknown(&waiting.submit(payout(1, 0, 1)).await));
    assert!(is_unknown(&waiting.status(1).await));
    drop(held.join().unwrap());
}

/// A server that answers every request with `status` and `body`.
fn stub(status: u16, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            read_request(&mut stream);
            let head = format!(
                "HTTP/1.1 {status} Stub\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    url
}

/// Reads a request's head and its `Content-Length` body.
fn read_request(stream: &mut std::net::TcpStream) {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = stream.read_exact(&mut body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_odd_answer_maps_to_its_outcome() {
    // Payout 1: one item, transaction 0:0.
    let tx = "00000000000000000000000000000000";
    let paid = r#"{"payout_id":1,"items":[{"transaction_id":"00000000000000000000000000000000","status":"paid"}]}"#;
    let other_payout = r#"{"payout_id":2,"items":[{"transaction_id":"00000000000000000000000000000000","status":"paid"}]}"#;
    let missing_item = r#"{"payout_id":1,"items":[]}"#;
    let unknown_item = r#"{"payout_id":1,"items":[{"transaction_id":"00000000000000000000000000000000","status":"paid"},{"transaction_id":"00000000000000010000000000000001","status":"paid"}]}"#;
    let error = r#"{"error":{"code":"nope","message":"refused"}}"#;
    let sent = payout(1, 0, 1);
    assert_eq!(sent.items[0].transaction_id.to_string(), tx);
    let timeout = Duration::from_secs(10);

    let good = client(&stub(200, paid), timeout).submit(sent.clone()).await;
    assert_eq!(
        good.unwrap().items,
        vec![(sent.items[0].transaction_id, ItemStatus::Paid)]
    );
    for (status, body, why) in [
        (200, other_payout, "a report of another payout"),
        (200, missing_item, "a report missing an item"),
        (200, unknown_item, "a report naming an item not sent"),
        (200, "garbage", "garbage"),
        (200, "", "an empty body"),
        (
            400,
            "<html>Bad Request</html>",
            "a 400 without the error body",
        ),
        (404, error, "a 404 on POST (a wrong base URL)"),
        (500, error, "a 500"),
        (503, "", "a 503"),
    ] {
        let answer = client(&stub(status, body), timeout)
            .submit(sent.clone())
            .await;
        assert!(is_unknown(&answer), "{why}: {answer:?}");
    }
    for status in [400, 409, 422] {
        let answer = client(&stub(status, error), timeout)
            .submit(sent.clone())
            .await;
        assert!(
            matches!(&answer, Err(PaymentError::Rejected { reason }) if reason.contains("nope")),
            "{status}: {answer:?}"
        );
    }

    let status_of =
        |status, body| async move { client(&stub(status, body), timeout).status(1).await };
    assert_eq!(
        status_of(404, error).await,
        Err(PaymentError::NotFound { payout_id: 1 })
    );
    assert!(
        is_unknown(&status_of(404, "Not Found").await),
        "a bare 404 proves nothing"
    );
    assert!(is_unknown(&status_of(200, other_payout).await));
    assert!(is_unknown(&status_of(200, "garbage").await));
    assert!(
        is_unknown(&status_of(400, error).await),
        "no rejection on a GET"
    );
    assert!(is_unknown(&status_of(502, error).await));
    assert!(
        status_of(200, unknown_item).await.is_ok(),
        "status knows no items to check"
    );
}

// ---- 3. lost responses ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_is_unknown_yet_the_payment_is_listed_and_status_says_paid() {
    let server = Bank::start(SimulatedBankConfig {
        lost_response_per_mille: 1000,
        ..SimulatedBankConfig::default()
    });
    let service = server.client();
    let sent = payout(4, 0, 3);
    let lost = service.submit(sent.clone()).await;
    assert!(is_unknown(&lost), "{lost:?}");
    let listed: Vec<_> = payments(&server.url)
        .into_iter()
        .map(|(_, tx, _)| tx)
        .collect();
    let sent_ids: Vec<_> = sent.items.iter().map(|i| i.transaction_id).collect();
    assert_eq!(listed, sent_ids, "paid although the answer was lost");
    assert!(
        is_unknown(&service.submit(sent.clone()).await),
        "lost again"
    );
    let report = service.status(4).await.unwrap();
    assert!(
        report.items.iter().all(|(_, s)| *s == ItemStatus::Paid),
        "{report:?}"
    );
    assert_eq!(
        payments(&server.url).len(),
        3,
        "the retry paid nothing more"
    );
    server.stop().await;
}

// ---- 4. a ledger paying through the bank ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_paying_through_the_bank_settles_as_the_bank_says_and_pays_once() {
    let max_items = 25;
    let server = Bank::start(SimulatedBankConfig {
        item_failure_per_mille: 200,
        unknown_outcome_per_mille: 300,
        lost_response_per_mille: 300,
        pending_per_mille: 150,
        max_items_per_payout: max_items,
        seed: 11,
        ..SimulatedBankConfig::default()
    });
    let settings = HttpPaymentSettings {
        timeout: Duration::from_secs(20),
        max_items_per_payout: max_items,
    };
    let service = HttpPaymentService::new(&server.url, settings).unwrap();
    let ledger = Ledger::open(Config {
        payout_mode: PayoutMode::Batched {
            interval_secs: 24 * 3600,
        },
        payment_service: Some(SharedPaymentService::new(service)),
        account_pending_withdrawals_max: 100,
        ..Config::for_tests()
    })
    .unwrap();
    let mut requested = Vec::new();
    for account in 0..60 {
        ledger
            .deposit(account, "USD", dec("100"), None)
            .await
            .unwrap();
        let amount = dec("10.25") + Decimal::from(account % 7);
        let w = ledger
            .request_withdrawal(account, "USD", amount, None)
            .await
            .unwrap();
        requested.push((w.transaction_id, amount));
    }
    let mut runs = 0;
    loop {
        runs += 1;
        ledger.run_payouts_now().await.unwrap();
        let payouts = ledger.payouts().await.unwrap();
        if payouts.iter().all(|p| p.state != PayoutState::Processing) {
            break;
        }
        assert!(runs < 200, "payouts still processing after {runs} runs");
    }
    assert!(runs > 1, "the faults forced retries");

    let paid = times_paid(&server.url);
    assert!(
        paid.values().all(|n| *n == 1),
        "a transaction paid twice: {paid:?}"
    );
    let (mut completed, mut failed) = (0, 0);
    for (tx, amount) in &requested {
        let w = ledger.withdrawal(*tx).await.unwrap();
        let balance = ledger.balance(tx.account(), "USD").await.unwrap();
        match w.status {
            WithdrawalStatus::Completed => {
                completed += 1;
                assert_eq!(paid.get(tx), Some(&1), "{tx:?} completed, so paid once");
                assert_eq!(balance.total, dec("100") - *amount);
            }
            WithdrawalStatus::Failed { .. } => {
                failed += 1;
                assert_eq!(paid.get(tx), None, "{tx:?} failed, so never paid");
                assert_eq!(balance.total, dec("100"));
            }
            other => panic!("{tx:?} ended {other:?}"),
        }
        assert_eq!(balance.locked, Decimal::ZERO);
    }
    assert!(
        completed > 0 && failed > 0,
        "{completed} completed, {failed} failed"
    );
    assert_eq!(
        paid.len(),
        completed,
        "the bank paid only completed withdrawals"
    );
    assert!(ledger.audit().await.unwrap().is_clean());
    ledger.shutdown().await;
    server.stop().await;
}

// ---- 5. the binary ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_binary_serves_on_the_port_it_prints() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_burnledger"));
    command.args([
        "bank",
        "--listen",
        "127.0.0.1:0",
        "--max-items-per-payout",
        "1",
    ]);
    let (child, url) = common::serve::spawn_listening(&mut command, START_TIMEOUT);
    let mut bank = Running(child);
    let service = client(&url, Duration::from_secs(20));
    let too_big = service.submit(payout(9, 0, 2)).await;
    let report = service.submit(payout(10, 0, 1)).await;
    let health = get(&format!("{url}/health")).0;
    let paid = payments(&url);
    let exit = bank.terminate();
    assert!(
        matches!(too_big, Err(PaymentError::Rejected { .. })),
        "the flag reached the bank: {too_big:?}"
    );
    assert_eq!(report.unwrap().items[0].1, ItemStatus::Paid);
    assert_eq!(health, 200);
    assert_eq!(paid.len(), 1);
    assert!(
        exit.is_some_and(|e| e.success()),
        "SIGTERM stops it: {exit:?}"
    );
}

#[test]
fn bad_flags_are_refused_before_anything_starts() {
    let binary = env!("CARGO_BIN_EXE_burnledger");
    let bank = common::serve::run_to_exit(
        Command::new(binary).args([
            "bank",
            "--listen",
            "127.0.0.1:0",
            "--pending-per-mille",
            "1001",
        ]),
        START_TIMEOUT,
    );
    assert_eq!(bank.status.code(), Some(2));
    assert!(
        bank.stderr.contains("--pending-per-mille 1001"),
        "{}",
        bank.stderr
    );
    let dir = tempfile::tempdir().unwrap();
    let serve = common::serve::run_to_exit(
        common::serve::serve_command(dir.path())
            .args(["--payment-service-url", "http://127.0.0.1:9"]),
        START_TIMEOUT,
    );
    assert_eq!(serve.status.code(), Some(2));
    assert!(
        serve.stderr.contains("external makes no payouts"),
        "{}",
        serve.stderr
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing opened"
    );
}

// ---- 6. bad input at the bank's boundary ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payouts_are_refused_with_a_clear_error_and_pay_nothing() {
    let server = Bank::start(SimulatedBankConfig {
        max_items_per_payout: 2,
        ..SimulatedBankConfig::default()
    });
    let url = format!("{}/payouts", server.url);
    // An item of transaction 1:seq; `amount` is JSON as written.
    let item = |seq: u64, amount: &str| {
        let tx = TransactionId::new(1, seq);
        format!(r#"{{"transaction_id":"{tx}","account":1,"amount":{amount}}}"#)
    };
    let body = |id: u64, currency: &str, items: &[String]| {
        let items = items.join(",");
        format!(r#"{{"payout_id":{id},"currency":"{currency}","items":[{items}]}}"#)
    };
    let one = |amount: &str| vec![item(1, amount)];
    let cases = [
        (
            1,
            Some("1"),
            "{not json".to_string(),
            400,
            "malformed_request",
        ),
        (
            2,
            Some("2"),
            body(2, "USD", &one("12.34")),
            400,
            "malformed_request",
        ),
        (
            3,
            Some("3"),
            body(3, "USD", &one(r#""-1.00""#)),
            400,
            "invalid_amount",
        ),
        (
            4,
            Some("4"),
            body(4, "USD", &one(r#""0""#)),
            400,
            "invalid_amount",
        ),
        (
            5,
            Some("5"),
            body(5, "USD", &one(r#""0.00""#)),
            400,
            "invalid_amount",
        ),
        (
            6,
            Some("6"),
            body(6, "USD", &one(r#""1e2""#)),
            400,
            "invalid_amount",
        ),
        (
            7,
            Some("7"),
            body(7, "usd", &one(r#""1""#)),
            400,
            "invalid_currency",
        ),
        (
            8,
            Some("8"),
            body(8, "TOOLONGCODE", &one(r#""1""#)),
            400,
            "invalid_currency",
        ),
        (
            9,
            Some("9"),
            body(9, "U D", &one(r#""1""#)),
            400,
            "invalid_currency",
        ),
        (
            10,
            None,
            body(10, "USD", &one(r#""1""#)),
            400,
            "invalid_idempotency_key",
        ),
        (
            11,
            Some("99"),
            body(11, "USD", &one(r#""1""#)),
            400,
            "invalid_idempotency_key",
        ),
        (
            12,
            Some("12"),
            body(12, "USD", &one(r#""1""#)).replace(&TransactionId::new(1, 1).to_string(), "1:1"),
            400,
            "invalid_transaction_id",
        ),
        (
            13,
            Some("13"),
            body(13, "USD", &one(r#""1""#)).replace("account", "acount"),
            400,
            "malformed_request",
        ),
        (
            14,
            Some("14"),
            body(
                14,
                "USD",
                &[item(1, r#""1""#), item(2, r#""2""#), item(3, r#""3""#)],
            ),
            422,
            "payout_rejected",
        ),
        (15, Some("15"), body(15, "USD", &[]), 422, "payout_rejected"),
        (
            16,
            Some("16"),
            body(16, "USD", &[item(1, r#""1""#), item(1, r#""2""#)]),
            422,
            "payout_rejected",
        ),
    ];
    for (id, key, request, status, code) in &cases {
        let (got, answer) = post(&url, *key, request);
        let got = (got, answer["error"]["code"].as_str());
        assert_eq!(
            got,
            (*status, Some(*code)),
            "case {id}: {request} → {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "case {id}: {answer}");
        let kept = get(&format!("{}/payouts/{id}", server.url)).0;
        assert_eq!(kept, 404, "case {id}: nothing kept");
    }
    let float = post(&url, Some("2"), &cases[1].2).1;
    let message = float["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("decimal string"),
        "a float is named: {message}"
    );
    let good = body(17, "USD", &one(r#""12.34""#));
    assert_eq!(
        post(&url, Some("17"), &good).0,
        200,
        "the same shape, well formed"
    );
    assert_eq!(payments(&server.url).len(), 1);
    assert_eq!(
        server.bank.submit_calls().len(),
        4,
        "only 14, 15, 16 and 17 reached the bank"
    );
    server.stop().await;
}

/// A body the bank cannot read, under the key of a payout it holds, gets
/// that payout's report: a 4xx would say nothing was paid under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_resubmit_of_a_paid_payout_answers_its_report_never_a_rejection() {
    let server = Bank::start(SimulatedBankConfig::default());
    let report = server.client().submit(payout(21, 0, 2)).await.unwrap();
    let url = format!("{}/payouts", server.url);
    for garbage in [
        "{not json",
        r#"{"payout_id":22,"currency":"USD","items":[]}"#,
    ] {
        let (status, body) = post(&url, Some("21"), garbage);
        assert_eq!(status, 200, "{garbage}: {body}");
        assert_eq!(body["payout_id"], 21);
        assert_eq!(
            body["items"].as_array().map(Vec::len),
            Some(report.items.len())
        );
    }
    assert_eq!(
        post(&url, Some("23"), "{not json").0,
        400,
        "an unknown key: nothing happened"
    );
    assert_eq!(payments(&server.url).len(), 2);
    server.stop().await;
}

// ---- serve --payment-service-url: two processes ----

/// `burnledger serve` paying through `burnledger bank`: a withdrawal made
/// over the ledger's API is paid by the bank process, once.
#[test]
fn serve_pays_through_the_bank_process() {
    let binary = env!("CARGO_BIN_EXE_burnledger");
    let mut bank_command = Command::new(binary);
    bank_command.args(["bank", "--listen", "127.0.0.1:0"]);
    let (child, bank_url) = common::serve::spawn_listening(&mut bank_command, START_TIMEOUT);
    let mut bank = Running(child);
    let dir = tempfile::tempdir().unwrap();
    let mut serve_command = Command::new(binary);
    serve_command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--payout-interval",
            "1h",
        ])
        .args(["--payment-service-url", &bank_url])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("BURNLEDGER_API_TOKEN");
    let (child, url) = common::serve::spawn_listening(&mut serve_command, START_TIMEOUT);
    let mut serve = Running(child);

    let post_json =
        |path: &str, body: Value| post(&format!("{url}{path}"), None, &body.to_string());
    let deposit = json!({"account": 1, "currency": "USD", "amount": "100"});
    let deposited = post_json("/v1/deposits", deposit).0;
    let withdrawal = json!({"account": 1, "currency": "USD", "amount": "12.34"});
    let (requested, w) = post_json("/v1/withdrawals", withdrawal);
    let tx = w["transaction_id"].as_str().unwrap_or_default().to_string();
    let (run, payouts) = post_json("/v1/payouts/run", json!({}));
    let after = get(&format!("{url}/v1/withdrawals/{tx}")).1;
    let paid = get(&format!("{bank_url}/payments")).1;
    let exits = (serve.terminate(), bank.terminate());

    assert_eq!((deposited, requested, run), (201, 201, 200), "{w}");
    assert_eq!(after["status"], "completed", "{after}");
    let payout_id = payouts[0]["payout_id"].clone();
    assert!(payout_id.is_u64(), "{payouts}");
    let listed =
        json!({"payments": [{"payout_id": payout_id, "transaction_id": tx, "amount": "12.34"}]});
    assert_eq!(paid, listed);
    assert!(
        exits.0.is_some_and(|e| e.success()) && exits.1.is_some_and(|e| e.success()),
        "{exits:?}"
    );
}
