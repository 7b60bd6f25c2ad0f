//! The HTTP service, black-box: the real `burnledger serve` binary on a free
//! loopback port, driven over real HTTP, every endpoint and every error
//! code checked. The refusals that need an engine fault or a tiny limit
//! (`poisoned`, `overloaded`, `shutting_down`, `too_many_pending_withdrawals`)
//! run the same service in-process (`burnledger::http::bind`) over real
//! HTTP, with a ledger the test configures.
//!
//! Nothing sleeps to wait for work: startup waits for the
//! "listening on http://ADDR" line, and shutdown for the process to exit.

#![cfg(all(feature = "cli", feature = "http"))]

mod common;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use burnledger::config::{PayoutMode, SharedPaymentService};
use burnledger::http::HttpOptions;
use burnledger::payment::SimulatedBank;
use burnledger::Config;
use common::in_process::InProcess;
use serde_json::{json, Value};

const START_TIMEOUT: Duration = Duration::from_secs(30);

// ---- a small blocking client ----

#[derive(Clone)]
struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

/// An answer: status and body (JSON when it parses, else the text as a
/// JSON string).
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    /// Asserts an error answer: status, code, and a message.
    fn refused(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{self:?}"
        );
    }
}

impl Client {
    fn new(base: &str, token: Option<&str>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        Self {
            agent,
            base: base.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
        }
    }

    fn finish(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut response = response.expect("the server answers");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, body }
    }

    fn get(&self, path: &str) -> Answer {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        Self::finish(request.call())
    }

    fn post_raw(&self, path: &str, body: &str) -> Answer {
        let mut request = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        Self::finish(request.send(body))
    }

    fn post(&self, path: &str, body: Value) -> Answer {
        self.post_raw(path, &body.to_string())
    }

    fn post_empty(&self, path: &str) -> Answer {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        Self::finish(request.send_empty())
    }

    fn balances(&self, account: u64) -> Value {
        let answer = self.get(&format!("/v1/accounts/{account}/balances"));
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body
    }

    /// (available, locked, total) of one currency; zeros when never held.
    fn balance(&self, account: u64, currency: &str) -> (String, String, String) {
        let body = self.balances(account);
        assert_eq!(body["account"], json!(account));
        body["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["currency"] == currency)
            .map(|b| {
                let s = |k: &str| b[k].as_str().unwrap().to_string();
                (s("available"), s("locked"), s("total"))
            })
            .unwrap_or_default()
    }
}

// ---- the real binary ----

struct Served {
    child: Child,
    url: String,
}

impl Served {
    fn start(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_burnledger"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env_remove("BURNLEDGER_API_TOKEN")
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let (child, url) = common::serve::spawn_listening(&mut command, START_TIMEOUT);
        let served = Self { child, url };
        served.wait_healthy();
        served
    }

    fn wait_healthy(&self) {
        let client = Client::new(&self.url, None);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let answer = client.agent.get(format!("{}/healthz", self.url)).call();
            if answer.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "no healthy server in time");
            std::thread::yield_now();
        }
    }

    fn client(&self, token: Option<&str>) -> Client {
        Client::new(&self.url, token)
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        wait_exit(&mut self.child, START_TIMEOUT)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the server did not exit in time");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn deposit(client: &Client, account: u64, currency: &str, amount: &str) -> Answer {
    client.post(
        "/v1/deposits",
        json!({"account": account, "currency": currency, "amount": amount}),
    )
}

fn withdraw(client: &Client, account: u64, currency: &str, amount: &str) -> Answer {
    client.post(
        "/v1/withdrawals",
        json!({"account": account, "currency": currency, "amount": amount}),
    )
}

fn b(available: &str, locked: &str, total: &str) -> (String, String, String) {
    (available.into(), locked.into(), total.into())
}

/// Phase 3 by webhook when the host pays (external mode): failed with its
/// reason, completed, a paid one sent back; bad outcomes refused.
#[test]
fn phase_3_by_webhook_when_the_host_pays() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &["--payout-mode", "external"], &[]);
    let c = served.client(None);
    assert_eq!(deposit(&c, 1, "USD", "100.5").status, 201);
    let failing = withdraw(&c, 1, "USD", "20").body["transaction_id"]
        .as_str()
        .unwrap()
        .to_string();
    let failed = c.post(
        &format!("/v1/withdrawals/{failing}/status"),
        json!({"status": "failed", "reason": "account closed"}),
    );
    assert_eq!(failed.status, 200, "{failed:?}");
    assert_eq!(failed.body["status"], "failed");
    assert_eq!(failed.body["reason"], "account closed");
    let paying = withdraw(&c, 1, "USD", "30.25").body["transaction_id"]
        .as_str()
        .unwrap()
        .to_string();
    c.post(
        &format!("/v1/withdrawals/{paying}/status"),
        json!({"status": "bogus"}),
    )
    .refused(400, "invalid_input");
    c.post(&format!("/v1/withdrawals/{paying}/status"), json!({}))
        .refused(400, "malformed_request");
    let completed = c.post(
        &format!("/v1/withdrawals/{paying}/status"),
        json!({"status": "completed"}),
    );
    assert_eq!(completed.status, 200, "{completed:?}");
    assert_eq!(completed.body["status"], "completed");
    assert_eq!(c.balance(1, "USD"), b("70.25", "0.00", "70.25"));
    c.post_empty(&format!("/v1/withdrawals/{paying}/cancel"))
        .refused(409, "invalid_transition");
    // A paid withdrawal sent back by the bank.
    let returned = c.post(
        &format!("/v1/withdrawals/{paying}/status"),
        json!({"status": "returned", "reason": "beneficiary unknown"}),
    );
    assert_eq!(returned.status, 200, "{returned:?}");
    assert_eq!(returned.body["status"], "returned");
    assert_eq!(c.balance(1, "USD"), b("100.50", "0.00", "100.50"));

    c.post_empty("/v1/payouts/run")
        .refused(400, "payouts_disabled");
    assert!(served.terminate().success());
}

#[test]
fn every_endpoint_and_every_error_over_real_http() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &["--payout-interval", "1h"], &[]);
    let c = served.client(None);

    // /healthz
    let health = c.get("/healthz");
    assert_eq!(
        (health.status, &health.body),
        (200, &json!({"status": "ok"}))
    );

    // Deposits: 201 with the receipt; amounts come back with the
    // currency's places.
    let d = deposit(&c, 1, "USD", "100.5");
    assert_eq!(d.status, 201, "{d:?}");
    assert_eq!(d.body["account"], json!(1));
    assert_eq!(d.body["currency"], "USD");
    assert_eq!(d.body["amount"], "100.50");
    let first_tx = d.body["transaction_id"].as_str().unwrap().to_string();
    assert_eq!(first_tx.len(), 32);
    assert!(first_tx.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(c.balance(1, "USD"), b("100.50", "0.00", "100.50"));

    // Idempotency: the same key and parameters answer the first result and
    // change nothing; other parameters are a 409 conflict.
    let keyed =
        json!({"account": 1, "currency": "BTC", "amount": "0.5", "idempotency_key": "dep-1"});
    let first = c.post("/v1/deposits", keyed.clone());
    let again = c.post("/v1/deposits", keyed);
    assert_eq!(first.status, 201);
    assert_eq!(again.status, 201);
    assert_eq!(first.body, again.body);
    assert_eq!(first.body["amount"], "0.50000000");
    assert_eq!(
        c.balance(1, "BTC"),
        b("0.50000000", "0.00000000", "0.50000000")
    );
    c.post(
        "/v1/deposits",
        json!({"account": 1, "currency": "BTC", "amount": "0.6", "idempotency_key": "dep-1"}),
    )
    .refused(409, "idempotency_conflict");

    // Every 400, 404 and 409 below must leave the balances as they are.
    let before = (c.balances(1), c.balances(2));

    // 400: amounts are strings, never JSON numbers.
    c.post(
        "/v1/deposits",
        json!({"account": 1, "currency": "USD", "amount": 12.5}),
    )
    .refused(400, "invalid_amount");
    c.post(
        "/v1/withdrawals",
        json!({"account": 1, "currency": "USD", "amount": 1}),
    )
    .refused(400, "invalid_amount");
    c.post(
        "/v1/transfers",
        json!({"from": 1, "to": 2, "currency": "USD", "amount": 1.0}),
    )
    .refused(400, "invalid_amount");
    for bad in ["abc", "1e3", "", "0", "-5", "1.001"] {
        deposit(&c, 1, "USD", bad).refused(400, "invalid_amount");
    }
    withdraw(&c, 1, "USD", "0.001").refused(400, "invalid_amount");
    deposit(&c, 1, "XYZ", "1").refused(400, "unknown_currency");
    withdraw(&c, 1, "JPY", "1").refused(400, "unknown_currency");
    // Malformed JSON, a missing field, a wrong type, an unknown field.
    c.post_raw("/v1/deposits", "{\"account\": 1,")
        .refused(400, "malformed_request");
    c.post_raw("/v1/deposits", "not json at all")
        .refused(400, "malformed_request");
    c.post("/v1/deposits", json!({"account": 1, "currency": "USD"}))
        .refused(400, "malformed_request");
    c.post(
        "/v1/deposits",
        json!({"account": -1, "currency": "USD", "amount": "1"}),
    )
    .refused(400, "malformed_request");
    c.post(
        "/v1/deposits",
        json!({"account": 1, "currency": "USD", "amount": "1", "idempotency_kye": "x"}),
    )
    .refused(400, "malformed_request");
    // Invalid input the ledger refuses: an empty key, a transfer to oneself,
    // an unknown status, an account that is not a u64.
    c.post(
        "/v1/deposits",
        json!({"account": 1, "currency": "USD", "amount": "1", "idempotency_key": ""}),
    )
    .refused(400, "invalid_idempotency_key");
    c.post(
        "/v1/transfers",
        json!({"from": 1, "to": 1, "currency": "USD", "amount": "1"}),
    )
    .refused(400, "same_account_transfer");
    c.get("/v1/accounts/not-a-number/balances")
        .refused(400, "invalid_input");

    // 413: a body past the 64 KiB limit, with a JSON error body.
    let huge = format!(
        "{{\"account\": 1, \"currency\": \"USD\", \"amount\": \"1\", \"idempotency_key\": \"{}\"}}",
        "k".repeat(70 * 1024)
    );
    c.post_raw("/v1/deposits", &huge)
        .refused(413, "payload_too_large");

    // 409: insufficient funds, for a withdrawal and a transfer.
    withdraw(&c, 1, "USD", "100.51").refused(409, "insufficient_funds");
    c.post(
        "/v1/transfers",
        json!({"from": 2, "to": 1, "currency": "USD", "amount": "1"}),
    )
    .refused(409, "insufficient_funds");

    // 404: unknown withdrawals (well-formed or not), unknown payouts,
    // unknown routes; 405 for a wrong method.
    let nowhere = "00000000000000630000000000000001";
    c.get(&format!("/v1/withdrawals/{nowhere}"))
        .refused(404, "unknown_withdrawal");
    c.get("/v1/withdrawals/not-an-id")
        .refused(404, "unknown_withdrawal");
    c.post_empty(&format!("/v1/withdrawals/{nowhere}/cancel"))
        .refused(404, "unknown_withdrawal");
    c.post(
        &format!("/v1/withdrawals/{nowhere}/status"),
        json!({"status": "completed"}),
    )
    .refused(404, "unknown_withdrawal");
    c.get("/v1/payouts/999").refused(404, "unknown_payout");
    c.get("/v1/payouts/nope").refused(404, "unknown_payout");
    c.get("/v1/nothing-here").refused(404, "not_found");
    c.get("/v1/deposits").refused(405, "method_not_allowed");

    assert_eq!(
        (c.balances(1), c.balances(2)),
        before,
        "refusals changed nothing"
    );

    // Withdrawals: phase 1 locks, GET shows it.
    let w = withdraw(&c, 1, "USD", "10");
    assert_eq!(w.status, 201, "{w:?}");
    let w_tx = w.body["transaction_id"].as_str().unwrap().to_string();
    // Created and updated now, on the system clock: RFC 3339, UTC, ms.
    let created = w.body["created_at"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        created.len() == 24 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "{created:?}"
    );
    assert_eq!(
        w.body,
        json!({"transaction_id": w_tx, "account": 1, "currency": "USD", "amount": "10.00", "status": "pending",
               "created_at": created, "updated_at": created, "paid": null, "fee": null,
               "destination": null, "metadata": {}, "expires_at": null})
    );
    let got = c.get(&format!("/v1/withdrawals/{w_tx}"));
    assert_eq!((got.status, &got.body), (200, &w.body));
    assert_eq!(c.balance(1, "USD"), b("90.50", "10.00", "100.50"));

    // Cancel: 200 cancelled, the amount available again; repeating it
    // reports the same; any other outcome afterwards is 409.
    let cancelled = c.post_empty(&format!("/v1/withdrawals/{w_tx}/cancel"));
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    assert_eq!(cancelled.body["status"], "cancelled");
    let again = c.post_empty(&format!("/v1/withdrawals/{w_tx}/cancel"));
    assert_eq!((again.status, &again.body), (200, &cancelled.body));
    c.post(
        &format!("/v1/withdrawals/{w_tx}/status"),
        json!({"status": "completed"}),
    )
    .refused(409, "invalid_transition");
    assert_eq!(c.balance(1, "USD"), b("100.50", "0.00", "100.50"));

    // Phase 3 by webhook while the engine pays (this server's batched
    // payouts): refused, even for a withdrawal still queued — the bank has
    // not paid it, and a payout may yet. A caller who wants it gone cancels.
    for outcome in [
        json!({"status": "failed", "reason": "account closed"}),
        json!({"status": "completed"}),
    ] {
        let queued = withdraw(&c, 1, "USD", "20").body["transaction_id"]
            .as_str()
            .unwrap()
            .to_string();
        c.post(
            &format!("/v1/withdrawals/{queued}/status"),
            json!({"status": "bogus"}),
        )
        .refused(400, "invalid_input");
        c.post(&format!("/v1/withdrawals/{queued}/status"), json!({}))
            .refused(400, "malformed_request");
        let refused = c.post(&format!("/v1/withdrawals/{queued}/status"), outcome);
        refused.refused(409, "payout_in_flight");
        assert!(
            refused.body["message"].as_str().unwrap().contains("queued"),
            "{refused:?}"
        );
        assert_eq!(c.balance(1, "USD"), b("80.50", "20.00", "100.50"));
        assert_eq!(
            c.post_empty(&format!("/v1/withdrawals/{queued}/cancel"))
                .status,
            200
        );
    }
    assert_eq!(c.balance(1, "USD"), b("100.50", "0.00", "100.50"));

    // Transfers: 201, both sides moved; a keyed replay changes nothing.
    let t =
        json!({"from": 1, "to": 2, "currency": "USD", "amount": "40", "idempotency_key": "t-1"});
    let moved = c.post("/v1/transfers", t.clone());
    assert_eq!(moved.status, 201, "{moved:?}");
    assert_eq!(moved.body["from"], json!(1));
    assert_eq!(moved.body["to"], json!(2));
    assert_eq!(moved.body["amount"], "40.00");
    assert_eq!(moved.body["transaction_id"].as_str().unwrap().len(), 32);
    assert_eq!(c.post("/v1/transfers", t).body, moved.body);
    assert_eq!(c.balance(1, "USD"), b("60.50", "0.00", "60.50"));
    assert_eq!(c.balance(2, "USD"), b("40.00", "0.00", "40.00"));

    // Payouts: run pays the pending withdrawal through the simulated bank.
    assert_eq!(
        c.get("/v1/payouts").body,
        json!({"items": [], "next": null})
    );
    let to_pay = withdraw(&c, 2, "USD", "15").body["transaction_id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = c.post_empty("/v1/payouts/run");
    assert_eq!(run.status, 200, "{run:?}");
    let made = run.body.as_array().unwrap();
    assert_eq!(made.len(), 1, "{run:?}");
    let payout = &made[0];
    assert_eq!(payout["currency"], "USD");
    assert_eq!(payout["total"], "15.00");
    assert_eq!(payout["state"], "completed");
    assert_eq!(payout["items"][0]["transaction_id"], to_pay.as_str());
    assert_eq!(payout["items"][0]["outcome"], "paid");
    let payout_id = payout["payout_id"].as_u64().unwrap();
    let listed = c.get("/v1/payouts");
    assert_eq!(
        (listed.status, &listed.body),
        (200, &json!({"items": [payout], "next": null}))
    );
    let one = c.get(&format!("/v1/payouts/{payout_id}"));
    assert_eq!((one.status, &one.body), (200, payout));
    let paid = c.get(&format!("/v1/withdrawals/{to_pay}"));
    assert_eq!(paid.body["status"], "completed");
    assert_eq!(c.balance(2, "USD"), b("25.00", "0.00", "25.00"));
    assert_eq!(c.post_empty("/v1/payouts/run").body, json!([]));

    // /metrics: Prometheus text with what the issue lists.
    let metrics = c.get("/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().unwrap();
    for needle in [
        "burnledger_operations_total{kind=\"deposit\",result=\"ok\"}",
        "burnledger_operations_total{kind=\"request_withdrawal\",result=\"insufficient_funds\"} 1",
        "burnledger_operations_total{kind=\"deposit\",result=\"payload_too_large\"} 1",
        "burnledger_operation_duration_seconds_bucket{kind=\"deposit\",le=\"+Inf\"}",
        "burnledger_withdrawals{currency=\"USD\",status=\"pending\"} 0",
        "burnledger_withdrawals{currency=\"USD\",status=\"processing\"} 0",
        "burnledger_withdrawals{currency=\"USD\",status=\"completed\"} 1",
        "burnledger_withdrawals{currency=\"USD\",status=\"cancelled\"} 3",
        "burnledger_withdrawals_amount{currency=\"USD\",status=\"completed\"} 15.00",
        "burnledger_payouts{state=\"completed\"} 1",
        "burnledger_wal_fsyncs_total ",
        "burnledger_account_actors_running ",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    let fsyncs: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("burnledger_wal_fsyncs_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(fsyncs > 0);
    // Every fsync is in the latency histogram: its +Inf bucket and count
    // equal the fsync counter.
    for line in [
        format!("burnledger_wal_fsync_duration_seconds_bucket{{le=\"+Inf\"}} {fsyncs}"),
        format!("burnledger_wal_fsync_duration_seconds_count {fsyncs}"),
    ] {
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }

    // A withdrawal left pending, then SIGTERM: exit 0, and a restart on the
    // same folder shows everything as it was.
    let pending = withdraw(&c, 1, "EUR", "1");
    pending.refused(409, "insufficient_funds");
    deposit(&c, 3, "EUR", "5");
    let pending = withdraw(&c, 3, "EUR", "2");
    assert_eq!(pending.status, 201);
    let snapshot: Vec<Value> = (1..=3).map(|a| c.balances(a)).collect();
    let status = served.terminate();
    assert!(status.success(), "serve exits 0 on SIGTERM: {status:?}");
    let restarted = Served::start(dir.path(), &["--payout-mode", "external"], &[]);
    let c = restarted.client(None);
    let after: Vec<Value> = (1..=3).map(|a| c.balances(a)).collect();
    assert_eq!(after, snapshot);
    let tx = pending.body["transaction_id"].as_str().unwrap();
    assert_eq!(c.get(&format!("/v1/withdrawals/{tx}")).body, pending.body);
    // External mode: no payouts here; the host reports the outcome.
    c.post_empty("/v1/payouts/run")
        .refused(400, "payouts_disabled");
    assert_eq!(
        c.get("/v1/payouts").body,
        json!({"items": [], "next": null})
    );
    c.get("/v1/payouts/1").refused(404, "unknown_payout");
    let done = c.post(
        &format!("/v1/withdrawals/{tx}/status"),
        json!({"status": "completed"}),
    );
    assert_eq!(done.body["status"], "completed");
    assert_eq!(c.balance(3, "EUR"), b("3.00", "0.00", "3.00"));
    assert!(restarted.terminate().success());
}

#[test]
fn with_a_token_every_v1_request_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, env) in [
        (vec!["--api-token", "s3cret-token"], vec![]),
        (vec![], vec![("BURNLEDGER_API_TOKEN", "s3cret-token")]),
    ] {
        let served = Served::start(dir.path(), &flags, &env);
        let anonymous = served.client(None);
        let wrong = served.client(Some("s3cret-tokem"));
        let short = served.client(Some("s3cret"));
        let right = served.client(Some("s3cret-token"));
        let body = json!({"account": 7, "currency": "USD", "amount": "5"});
        for client in [&anonymous, &wrong, &short] {
            client
                .post("/v1/deposits", body.clone())
                .refused(401, "unauthorized");
            client
                .get("/v1/accounts/7/balances")
                .refused(401, "unauthorized");
            client.get("/v1/payouts").refused(401, "unauthorized");
            // Even a request that would be 400 or 404 is 401 first.
            client
                .post_raw("/v1/deposits", "{")
                .refused(401, "unauthorized");
            client
                .get("/v1/withdrawals/zzz")
                .refused(401, "unauthorized");
        }
        let before = right.balance(7, "USD");
        assert_eq!(right.post("/v1/deposits", body).status, 201);
        let after = right.balance(7, "USD");
        assert_ne!(before, after, "the refused deposits changed nothing");
        assert_eq!(anonymous.get("/healthz").status, 200);
        assert_eq!(anonymous.get("/metrics").status, 200);
        // A Basic scheme or a bare token is not a bearer token.
        let agent = &anonymous.agent;
        let basic = agent
            .get(format!("{}/v1/payouts", served.url))
            .header("Authorization", "Basic s3cret-token")
            .call();
        assert_eq!(Client::finish(basic).status, 401);
        assert!(served.terminate().success());
    }
}

#[test]
fn serve_refuses_a_non_loopback_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_burnledger"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("BURNLEDGER_API_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without an API token"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening"),
        "it never listened"
    );
    let bad_mode = Command::new(env!("CARGO_BIN_EXE_burnledger"))
        .args(["serve", "--payout-mode", "weekly", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!bad_mode.status.success());
}

// ---- in-process: the same service over real HTTP, on a ledger the test
// configures ----

/// Options for the in-process server: two workers, the rest default.
fn two_workers() -> HttpOptions {
    HttpOptions {
        workers: Some(2),
        ..HttpOptions::default()
    }
}

fn client_of(server: &InProcess) -> Client {
    Client::new(&server.url(), None)
}

#[test]
fn a_storage_failure_is_503_poisoned_and_shutdown_is_503_shutting_down() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::for_tests_in(dir.path());
    let fail_point = config.wal_fail_point.clone();
    let server = InProcess::start(config, two_workers());
    let c = client_of(&server);
    assert_eq!(deposit(&c, 1, "USD", "10").status, 201);
    fail_point.fail_syncs(true);
    deposit(&c, 1, "USD", "1").refused(503, "poisoned");
    fail_point.fail_syncs(false);
    deposit(&c, 2, "USD", "1").refused(503, "poisoned");
    withdraw(&c, 1, "USD", "1").refused(503, "poisoned");
    c.get("/v1/accounts/1/balances").refused(503, "poisoned");
    c.get("/healthz").refused(503, "poisoned");
    let metrics = c.get("/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains("burnledger_operations_total{kind=\"deposit\",result=\"poisoned\"} 2"),
        "{text}"
    );
    server.stop();

    // Shutting down: the ledger closes while the server still answers.
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(Config::for_tests_in(dir.path()), two_workers());
    let c = client_of(&server);
    assert_eq!(deposit(&c, 1, "USD", "10").status, 201);
    InProcess::block_on(server.ledger.shutdown());
    deposit(&c, 1, "USD", "1").refused(503, "shutting_down");
    withdraw(&c, 1, "USD", "1").refused(503, "shutting_down");
    c.get("/healthz").refused(503, "shutting_down");
    server.stop();

    // The acknowledged deposit is there after a restart; nothing else is.
    let reopened = InProcess::start(Config::for_tests_in(dir.path()), two_workers());
    let c = client_of(&reopened);
    assert_eq!(c.balance(1, "USD"), b("10.00", "0.00", "10.00"));
    reopened.stop();
}

#[test]
fn too_many_pending_withdrawals_is_409_and_overload_is_503() {
    // Config::for_tests allows 8 pending withdrawals per account.
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        payout_mode: PayoutMode::Batched {
            interval_secs: 24 * 3600,
        },
        payment_service: Some(SharedPaymentService::new(SimulatedBank::default())),
        ..Config::for_tests_in(dir.path())
    };
    let server = InProcess::start(config, two_workers());
    let c = client_of(&server);
    assert_eq!(deposit(&c, 5, "USD", "100").status, 201);
    for _ in 0..8 {
        assert_eq!(withdraw(&c, 5, "USD", "1").status, 201);
    }
    withdraw(&c, 5, "USD", "1").refused(409, "too_many_pending_withdrawals");
    assert_eq!(c.balance(5, "USD"), b("92.00", "8.00", "100.00"));
    // Paying them out makes room again.
    let run = c.post_empty("/v1/payouts/run");
    assert_eq!(run.body.as_array().unwrap().len(), 1, "{run:?}");
    assert_eq!(withdraw(&c, 5, "USD", "1").status, 201);
    server.stop();

    // One shard admitting one operation at a time, eight clients at once:
    // some are refused with 503 overloaded, and those change nothing.
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        shards: 1,
        shard_in_flight_ops_max: 1,
        batch_ops_max: 1,
        ..Config::for_tests_in(dir.path())
    };
    let server = InProcess::start(config, two_workers());
    let mut created = 0u64;
    let mut overloaded = 0u64;
    for round in 0..20u64 {
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let c = client_of(&server);
                std::thread::spawn(move || {
                    let mut answers = Vec::new();
                    for _ in 0..20 {
                        let a = deposit(&c, 100 + t, "USD", "1");
                        answers.push((a.status, a.code().to_string()));
                    }
                    answers
                })
            })
            .collect();
        for thread in threads {
            for (status, code) in thread.join().unwrap() {
                match (status, code.as_str()) {
                    (201, _) => created += 1,
                    (503, "overloaded") => overloaded += 1,
                    other => panic!("unexpected answer {other:?}"),
                }
            }
        }
        if overloaded > 0 && round >= 1 {
            break;
        }
    }
    assert!(overloaded > 0, "eight clients never overloaded one slot");
    let c = client_of(&server);
    let mut total = 0u64;
    for t in 0..8 {
        let (_, _, balance) = c.balance(100 + t, "USD");
        if !balance.is_empty() {
            total += balance.strip_suffix(".00").unwrap().parse::<u64>().unwrap();
        }
    }
    assert_eq!(total, created, "exactly the 201s were credited");
    let metrics = c.get("/metrics").body;
    let line = format!(
        "burnledger_operations_total{{kind=\"deposit\",result=\"overloaded\"}} {overloaded}"
    );
    assert!(metrics.as_str().unwrap().contains(&line), "{metrics}");
    server.stop();
}

/// `/metrics` over real HTTP reads the engine's gauges: every sample line
/// parses as `name{labels} number`, every family it always showed is there
/// with its HELP and TYPE, the values follow the traffic, and no scrape
/// copies an account state (a full copy per scrape, as before the gauges,
/// fails the last check).
#[test]
fn metrics_scrapes_parse_follow_the_traffic_and_copy_no_account() {
    let server = InProcess::start(Config::for_tests(), two_workers());
    let c = client_of(&server);
    for account in 0..40 {
        assert_eq!(deposit(&c, account, "EUR", "3").status, 201);
        assert_eq!(withdraw(&c, account, "EUR", "1.25").status, 201);
    }
    let mut pages = Vec::new();
    for _ in 0..4 {
        let page = c.get("/metrics");
        assert_eq!(page.status, 200);
        pages.push(page.body.as_str().unwrap().to_string());
    }
    for text in &pages {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "value of {line:?}");
            let name = series.split('{').next().unwrap();
            assert!(
                name.starts_with("burnledger_")
                    && name
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_'),
                "name of {line:?}"
            );
            if let Some(labels) = series.strip_prefix(name) {
                assert!(
                    labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                    "labels of {line:?}"
                );
            }
        }
        for family in [
            "burnledger_operations_total",
            "burnledger_operation_duration_seconds",
            "burnledger_accounts",
            "burnledger_account_actors_running",
            "burnledger_withdrawals",
            "burnledger_withdrawals_amount",
            "burnledger_payouts",
        ] {
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "{family}\n{text}"
            );
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family}\n{text}"
            );
        }
        for line in [
            "burnledger_accounts 40\n",
            "burnledger_withdrawals{currency=\"EUR\",status=\"pending\"} 40\n",
            "burnledger_withdrawals_amount{currency=\"EUR\",status=\"pending\"} 50.00\n",
            "burnledger_withdrawals{currency=\"USD\",status=\"pending\"} 0\n",
            "burnledger_withdrawals_amount{currency=\"BTC\",status=\"returned\"} 0.00000000\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
    let gauges = InProcess::block_on(server.ledger.gauges()).unwrap();
    assert_eq!(gauges.account_states_copied, 0, "a scrape copied accounts");
    server.stop();
}

/// A server whose payouts never reach the bank (each stays processing),
/// account 7 holding 50.00 USD with 20.00 of it in payout `payout_id`'s
/// item `tx`: (server, client, tx, payout_id).
fn a_payout_stuck_processing() -> (InProcess, Client, String, u64) {
    use burnledger::payment::SimulatedBankConfig;
    let bank = SimulatedBank::new(SimulatedBankConfig {
        unknown_outcome_per_mille: 1000,
        ..SimulatedBankConfig::default()
    });
    let config = Config {
        payout_mode: PayoutMode::Batched {
            interval_secs: 24 * 3600,
        },
        payment_service: Some(SharedPaymentService::new(bank)),
        ..Config::for_tests()
    };
    let server = InProcess::start(config, two_workers());
    let c = client_of(&server);
    assert_eq!(deposit(&c, 7, "USD", "50").status, 201);
    let w = withdraw(&c, 7, "USD", "20");
    let tx = w.body["transaction_id"].as_str().unwrap().to_string();
    let run = c.post_empty("/v1/payouts/run");
    let payout_id = run.body[0]["payout_id"].as_u64().unwrap();
    assert_eq!(run.body[0]["state"], "processing", "{run:?}");
    (server, c, tx, payout_id)
}

#[test]
fn a_caller_update_of_an_item_a_payout_owns_is_409_and_an_operator_resolves_it() {
    let (server, c, tx, payout_id) = a_payout_stuck_processing();

    for status in ["completed", "failed"] {
        let refused = c.post(
            &format!("/v1/withdrawals/{tx}/status"),
            json!({"status": status, "reason": "caller"}),
        );
        refused.refused(409, "payout_in_flight");
        let message = refused.body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("payout {payout_id}")),
            "{message}"
        );
    }
    assert_eq!(c.balance(7, "USD"), b("30.00", "20.00", "50.00"));

    let resolve = |payout: &str, item: &str, body: Value| {
        c.post(&format!("/v1/payouts/{payout}/items/{item}/resolve"), body)
    };
    let id = payout_id.to_string();
    resolve(&id, &tx, json!({"resolution": "maybe", "note": "n"})).refused(400, "invalid_input");
    resolve("999", &tx, json!({"resolution": "paid", "note": "n"})).refused(404, "unknown_payout");
    resolve("x", &tx, json!({"resolution": "paid", "note": "n"})).refused(404, "unknown_payout");
    let stranger = "00000000000000090000000000000001";
    resolve(&id, stranger, json!({"resolution": "paid", "note": "n"}))
        .refused(404, "not_in_payout");
    assert_eq!(c.balance(7, "USD"), b("30.00", "20.00", "50.00"));

    let resolved = resolve(
        &id,
        &tx,
        json!({"resolution": "not_paid", "note": "bank confirmed", "reason": "returned by bank"}),
    );
    assert_eq!(resolved.status, 200, "{resolved:?}");
    assert_eq!(resolved.body["state"], "failed", "{resolved:?}");
    assert_eq!(resolved.body["items"][0]["outcome"], "failed");
    assert_eq!(c.balance(7, "USD"), b("50.00", "0.00", "50.00"));
    resolve(&id, &tx, json!({"resolution": "paid", "note": "n"}))
        .refused(409, "payout_item_settled");
    assert_eq!(c.balance(7, "USD"), b("50.00", "0.00", "50.00"));
    server.stop();
}

#[test]
fn an_operator_resolves_an_item_as_partly_paid_and_bad_amounts_change_nothing() {
    let (server, c, tx, payout_id) = a_payout_stuck_processing();
    let path = format!("/v1/payouts/{payout_id}/items/{tx}/resolve");
    let resolve = |body: Value| c.post(&path, body);
    let paid = |amount: Value| json!({"resolution": "paid", "note": "n", "amount": amount});
    for (body, status, code) in [
        (paid(json!("20.01")), 409, "invalid_paid_amount"),
        (paid(json!("0")), 400, "invalid_amount"),
        (paid(json!("1.001")), 400, "invalid_amount"),
        (paid(json!(6)), 400, "invalid_amount"),
        (
            json!({"resolution": "not_paid", "note": "n", "amount": "6.00"}),
            400,
            "invalid_input",
        ),
    ] {
        resolve(body.clone()).refused(status, code);
        assert_eq!(c.balance(7, "USD"), b("30.00", "20.00", "50.00"), "{body}");
    }
    let resolved = resolve(json!({"resolution": "paid", "note": "bank paid 6", "amount": "6.00"}));
    assert_eq!(resolved.status, 200, "{resolved:?}");
    let item = &resolved.body["items"][0];
    assert_eq!(
        (&item["outcome"], &item["paid"]),
        (&json!("paid"), &json!("6.00"))
    );
    // 6.00 left; the other 14.00 is back to available.
    assert_eq!(c.balance(7, "USD"), b("44.00", "0.00", "44.00"));
    let withdrawal = c.get(&format!("/v1/withdrawals/{tx}"));
    assert_eq!(
        (&withdrawal.body["status"], &withdrawal.body["paid"]),
        (&json!("completed"), &json!("6.00"))
    );
    let shown = c.get(&format!("/v1/payouts/{payout_id}"));
    assert_eq!(shown.body["items"][0]["paid"], "6.00", "{shown:?}");
    server.stop();
}
