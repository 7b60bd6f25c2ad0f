//! Withdrawals as exchanges run them, over HTTP, black-box: the real
//! `burnledger serve` binary (external payouts: the test reports outcomes)
//! with a fee account and limits per tier from its flags, driven over real
//! HTTP. Fees, destination, metadata and expiry on withdrawals; metadata on
//! deposits and transfers; partial completion; tiers, limits and the
//! withdrawal allowance; freezes; the `details` of the refusals that have
//! them. Every refusal is checked to leave the balances (read back over
//! HTTP) as they were; bad input is sent at every field.
//!
//! Nothing sleeps to wait for work: startup waits for the `listening on`
//! line and a healthy `/healthz`.

#![cfg(all(feature = "cli", feature = "http"))]

mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use burnledger::UnixMs;
use serde_json::{json, Value};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const FEES: u64 = 999;

// ---- the server and a small blocking client ----

struct Served {
    child: Child,
    url: String,
    agent: ureq::Agent,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    /// Asserts a success with `status`; the body.
    fn ok(self, status: u16) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        self.body
    }
}

impl Served {
    /// `burnledger serve` in external mode with `flags`.
    fn start(data_dir: &Path, flags: &[&str]) -> Self {
        let mut command = common::serve::serve_command(data_dir);
        command.args(flags);
        let (child, url) = common::serve::spawn_listening(&mut command, START_TIMEOUT);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let served = Self { child, url, agent };
        let deadline = Instant::now() + START_TIMEOUT;
        while served.call("GET", "/healthz", None).status != 200 {
            assert!(Instant::now() < deadline, "no healthy server in time");
            std::thread::yield_now();
        }
        served
    }

    /// The exchange's server: fees go to account 999; tier `default` may
    /// withdraw 100 USD per 24 hours, tier `vip` 1,000.
    fn exchange(data_dir: &Path) -> Self {
        Self::start(
            data_dir,
            &[
                "--fee-account",
                "999",
                "--withdrawal-limit",
                "default:USD:24h=100",
                "--withdrawal-limit=vip:USD:24h=1000",
                "--withdrawal-limit=vip:USD:30d=5000",
            ],
        )
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let url = format!("{}{path}", self.url);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            ("POST", None) => self.agent.post(&url).send_empty(),
            ("POST", Some(body)) => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body),
            ("PUT", Some(body)) => self
                .agent
                .put(&url)
                .header("Content-Type", "application/json")
                .send(body),
            other => panic!("unsupported {other:?}"),
        };
        let mut response = response.expect("the server answers");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, body }
    }

    fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, Some(&body.to_string()))
    }

    fn put(&self, path: &str, body: Value) -> Answer {
        self.call("PUT", path, Some(&body.to_string()))
    }

    fn get(&self, path: &str) -> Value {
        self.call("GET", path, None).ok(200)
    }

    fn deposit(&self, account: u64, currency: &str, amount: &str) -> Value {
        let body = json!({"account": account, "currency": currency, "amount": amount});
        self.post("/v1/deposits", body).ok(201)
    }

    fn withdraw(&self, body: Value) -> Answer {
        self.post("/v1/withdrawals", body)
    }

    /// Every balance of `accounts`, as `GET .../balances` answers them.
    fn balances(&self, accounts: &[u64]) -> Vec<Value> {
        accounts
            .iter()
            .map(|a| self.get(&format!("/v1/accounts/{a}/balances")))
            .collect()
    }

    /// (available, locked, total) of `account` in `currency`.
    fn balance(&self, account: u64, currency: &str) -> (String, String, String) {
        let body = self.get(&format!("/v1/accounts/{account}/balances"));
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

    /// Asserts `send` is refused with `status` and `code` and leaves every
    /// balance of `accounts` as it was; returns the error body.
    fn refused(
        &self,
        accounts: &[u64],
        status: u16,
        code: &str,
        send: impl FnOnce() -> Answer,
    ) -> Value {
        let before = self.balances(accounts);
        let answer = send();
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (status, Some(code)),
            "{answer:?}"
        );
        assert!(
            answer.body["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{answer:?}"
        );
        assert_eq!(
            self.balances(accounts),
            before,
            "a refusal changed a balance"
        );
        answer.body
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn b(available: &str, locked: &str, total: &str) -> (String, String, String) {
    (available.into(), locked.into(), total.into())
}

fn tx_of(withdrawal: &Value) -> String {
    withdrawal["transaction_id"].as_str().unwrap().to_string()
}

/// An RFC 3339 time `secs` from now.
fn in_secs(secs: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let ms = (now.as_millis() as i64 + secs * 1000) as u64;
    UnixMs::from_millis(ms).rfc3339()
}

fn millis(rfc3339: &Value) -> u64 {
    UnixMs::parse_rfc3339(rfc3339.as_str().unwrap())
        .unwrap()
        .as_millis()
}

// ---- fees, destination, metadata, expiry ----

#[test]
fn a_withdrawal_carries_its_fee_destination_metadata_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let s = Served::exchange(dir.path());
    s.deposit(1, "USD", "100");
    s.deposit(1, "EUR", "10");
    let w = s
        .withdraw(json!({
            "account": 1, "currency": "USD", "amount": "30",
            "fee": {"currency": "USD", "amount": "1.50"},
            "destination": {"kind": "iban", "value": "DE89370400440532013000", "network": "sepa"},
            "metadata": {"order": "A-17", "desk": "otc"},
            "expires_in": "2h",
        }))
        .ok(201);
    assert_eq!(w["fee"], json!({"currency": "USD", "amount": "1.50"}));
    assert_eq!(
        w["destination"],
        json!({"kind": "iban", "value": "DE89370400440532013000", "network": "sepa"})
    );
    assert_eq!(w["metadata"], json!({"desk": "otc", "order": "A-17"}));
    assert_eq!(w["paid"], Value::Null);
    assert_eq!(
        millis(&w["expires_at"]) - millis(&w["created_at"]),
        2 * 3_600_000,
        "{w}"
    );
    // Amount and fee locked together.
    assert_eq!(s.balance(1, "USD"), b("68.50", "31.50", "100.00"));
    // Read back as it was answered.
    assert_eq!(s.get(&format!("/v1/withdrawals/{}", tx_of(&w))), w);

    // A fee in another currency locks there; seconds as an integer; a
    // destination without a network; no metadata is {}.
    let other = s
        .withdraw(json!({
            "account": 1, "currency": "USD", "amount": "10",
            "fee": {"currency": "EUR", "amount": "0.25"},
            "destination": {"kind": "address", "value": "0xabc"},
            "expires_in": 90,
        }))
        .ok(201);
    assert_eq!(other["fee"], json!({"currency": "EUR", "amount": "0.25"}));
    assert_eq!(
        other["destination"],
        json!({"kind": "address", "value": "0xabc", "network": null})
    );
    assert_eq!(other["metadata"], json!({}));
    assert_eq!(
        millis(&other["expires_at"]) - millis(&other["created_at"]),
        90_000
    );
    assert_eq!(s.balance(1, "EUR"), b("9.75", "0.25", "10.00"));
    assert_eq!(s.balance(1, "USD"), b("58.50", "41.50", "100.00"));

    // A plain withdrawal shows every new field, empty.
    let plain = s
        .withdraw(json!({"account": 1, "currency": "USD", "amount": "1", "expires_in": "500ms"}))
        .ok(201);
    assert_eq!(
        millis(&plain["expires_at"]) - millis(&plain["created_at"]),
        500
    );
    let plain = s
        .withdraw(json!({"account": 1, "currency": "USD", "amount": "1"}))
        .ok(201);
    for field in ["fee", "destination", "expires_at", "paid"] {
        assert_eq!(plain[field], Value::Null, "{field}: {plain}");
    }
    assert_eq!(plain["metadata"], json!({}));

    // Cancelled: amount and fee are both released.
    s.post(
        &format!("/v1/withdrawals/{}/cancel", tx_of(&other)),
        json!({}),
    )
    .ok(200);
    assert_eq!(s.balance(1, "EUR"), b("10.00", "0.00", "10.00"));
}

#[test]
fn insufficient_funds_names_the_part_amount_or_fee_and_locks_neither() {
    let dir = tempfile::tempdir().unwrap();
    let s = Served::exchange(dir.path());
    s.deposit(1, "USD", "50");
    s.deposit(1, "EUR", "1");
    let fee_short = s.refused(&[1], 409, "insufficient_funds", || {
        s.withdraw(json!({"account": 1, "currency": "USD", "amount": "10",
            "fee": {"currency": "EUR", "amount": "2"}}))
    });
    assert_eq!(
        fee_short["details"],
        json!({"part": "fee", "currency": "EUR", "available": "1.00", "requested": "2.00"})
    );
    let amount_short = s.refused(&[1], 409, "insufficient_funds", || {
        s.withdraw(json!({"account": 1, "currency": "USD", "amount": "60",
            "fee": {"currency": "EUR", "amount": "0.5"}}))
    });
    assert_eq!(amount_short["details"]["part"], "amount", "{amount_short}");
    assert_eq!(amount_short["details"]["currency"], "USD");
    assert_eq!(amount_short["details"]["available"], "50.00");
    assert_eq!(amount_short["details"]["requested"], "60.00");
    // Same currency: the two together.
    let together = s.refused(&[1], 409, "insufficient_funds", || {
        s.withdraw(json!({"account": 1, "currency": "USD", "amount": "50",
            "fee": {"currency": "USD", "amount": "0.01"}}))
    });
    assert_eq!(together["details"]["currency"], "USD", "{together}");
    // Errors without details have none.
    let plain = s.refused(&[1], 400, "unknown_currency", || {
        s.withdraw(json!({"account": 1, "currency": "XYZ", "amount": "1"}))
    });
    assert!(plain.get("details").is_none(), "{plain}");
}

#[test]
fn bad_input_at_every_withdrawal_field_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Served::exchange(dir.path());
    s.deposit(1, "USD", "100");
    let base = json!({"account": 1, "currency": "USD", "amount": "10"});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let long = "x".repeat(257);
    let seventeen: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases: Vec<(Value, u16, &str)> = vec![
        // The fee.
        (
            with("fee", json!({"currency": "USD", "amount": "0"})),
            400,
            "invalid_amount",
        ),
        (
            with("fee", json!({"currency": "USD", "amount": "-1"})),
            400,
            "invalid_amount",
        ),
        (
            with("fee", json!({"currency": "USD", "amount": "0.001"})),
            400,
            "invalid_amount",
        ),
        (
            with("fee", json!({"currency": "USD", "amount": 1.5})),
            400,
            "invalid_amount",
        ),
        (
            with("fee", json!({"currency": "USD", "amount": "1e2"})),
            400,
            "invalid_amount",
        ),
        (
            with("fee", json!({"currency": "XYZ", "amount": "1"})),
            400,
            "unknown_currency",
        ),
        (
            with("fee", json!({"currency": "USD"})),
            400,
            "malformed_request",
        ),
        (
            with("fee", json!({"currency": "USD", "amount": "1", "to": 2})),
            400,
            "malformed_request",
        ),
        (with("fee", json!("1.00")), 400, "malformed_request"),
        // The destination.
        (
            with("destination", json!({"kind": "", "value": "x"})),
            400,
            "invalid_destination",
        ),
        (
            with("destination", json!({"kind": "iban", "value": ""})),
            400,
            "invalid_destination",
        ),
        (
            with("destination", json!({"kind": "iban", "value": long})),
            400,
            "invalid_destination",
        ),
        (
            with(
                "destination",
                json!({"kind": "iban", "value": "x", "network": long}),
            ),
            400,
            "invalid_destination",
        ),
        (
            with("destination", json!({"kind": "a\nb", "value": "x"})),
            400,
            "invalid_destination",
        ),
        (
            with("destination", json!({"kind": "iban"})),
            400,
            "malformed_request",
        ),
        (
            with("destination", json!({"kind": 1, "value": "x"})),
            400,
            "malformed_request",
        ),
        (with("destination", json!("DE89")), 400, "malformed_request"),
        // The metadata.
        (with("metadata", json!("order=1")), 400, "invalid_metadata"),
        (with("metadata", json!(["a"])), 400, "invalid_metadata"),
        (with("metadata", json!({"n": 1})), 400, "invalid_metadata"),
        (
            with("metadata", json!({"n": {"deep": "x"}})),
            400,
            "invalid_metadata",
        ),
        (with("metadata", json!({"": "v"})), 400, "invalid_metadata"),
        (
            with("metadata", Value::Object(seventeen)),
            400,
            "invalid_metadata",
        ),
        (
            with("metadata", json!({"k": "v".repeat(1024)})),
            400,
            "invalid_metadata",
        ),
        // The expiry.
        (with("expires_in", json!(0)), 400, "invalid_expiry"),
        (with("expires_in", json!("0s")), 400, "invalid_expiry"),
        (with("expires_in", json!(-5)), 400, "invalid_expiry"),
        (with("expires_in", json!(1.5)), 400, "invalid_expiry"),
        (with("expires_in", json!("31d")), 400, "invalid_expiry"),
        (with("expires_in", json!("10")), 400, "invalid_expiry"),
        (with("expires_in", json!("1w")), 400, "invalid_expiry"),
        (with("expires_in", json!("-1s")), 400, "invalid_expiry"),
        (
            with("expires_in", json!("99999999999999999999d")),
            400,
            "invalid_expiry",
        ),
        (with("expires_in", json!(true)), 400, "invalid_expiry"),
        // An unknown field.
        (with("memo", json!("x")), 400, "malformed_request"),
    ];
    for (body, status, code) in cases {
        let refused = s.refused(&[1, FEES], status, code, || s.withdraw(body.clone()));
        assert!(refused.get("details").is_none(), "{body}: {refused}");
    }
    // At the limits: accepted.
    let sixteen: serde_json::Map<String, Value> =
        (0..16).map(|i| (format!("k{i}"), json!("v"))).collect();
    s.withdraw(with("metadata", Value::Object(sixteen))).ok(201);
    s.withdraw(with("metadata", json!({"k": "v".repeat(1023)})))
        .ok(201);
    s.withdraw(with(
        "destination",
        json!({"kind": "k", "value": "x".repeat(256)}),
    ))
    .ok(201);
    s.withdraw(with("expires_in", json!("30d"))).ok(201);
    assert_eq!(
        s.get("/v1/accounts/1/withdrawals")["items"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // Null is the same as absent.
    s.withdraw(with("metadata", Value::Null)).ok(201);
}

#[test]
fn fees_are_refused_without_a_fee_account() {
    let dir = tempfile::tempdir().unwrap();
    let s = Served::start(dir.path(), &[]);
    s.deposit(1, "USD", "100");
    s.refused(&[1], 400, "fees_disabled", || {
        s.withdraw(json!({"account": 1, "currency": "USD", "amount": "10",
            "fee": {"currency": "USD", "amount": "1"}}))
    });
}

#[test]
fn an_idempotent_replay_with_other_details_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let s = Served::exchange(dir.path());
    s.deposit(1, "USD", "100");
    let body = json!({"account": 1, "currency": "USD", "amount": "5", "idempotency_key": "w1",
        "metadata": {"a": "1"}, "expires_in": 60});
    let first = s.withdraw(body.clone()).ok(201);
    assert_eq!(s.withdraw(body.clone()).ok(201), first);
    let mut other = body.clone();
    other["metadata"] = json!({"a": "2"});
    s.refused(&[1], 409, "idempotency_conflict", || s.withdraw(other));
}

// ---- metadata on deposits and transfers ----

#[test]
fn deposits_and_transfers_keep_and_return_their_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let s = Served::exchange(dir.path());
    let d = s
        .post(
            "/v1/deposits",
            json!({"account": 1, "currency": "USD", "amount": "20",
                "metadata": {"source": "wire", "ref": "R-9"}, "idempotency_key": "d1"}),
        )
        .ok(201);
    assert_eq!(d["metadata"], json!({"ref": "R-9", "source": "wire"}));
    let plain = s.deposit(1, "USD", "1");
    assert!(plain.get("metadata").is_none(), "none carried: {plain}");
    // A replay answers the same; other metadata under the key conflicts.
    let replay = s
        .post(
            "/v1/deposits",
            json!({"account": 1, "currency": "USD", "amount": "20",
                "metadata": {"source": "wire", "ref": "R-9"}, "idempotency_key": "d1"}),
        )
        .ok(201);
    assert_eq!(replay, d);
    s.refused(&[1], 409, "idempotency_conflict", || {
        s.post(
            "/v1/deposits",
            json!({"account": 1, "currency": "USD", "amount": "20",
                "metadata": {"source": "card"}, "idempotency_key": "d1"}),
        )
    });
    let t = s
        .post(
            "/v1/transfers",
            json!({"from": 1, "to": 2, "currency": "USD", "amount": "5",
                "metadata": {"reason": "rent"}}),
        )
        .ok(201);
    assert_eq!(t["metadata"], json!({"reason": "rent"}));
    assert_eq!(s.balance(2, "USD"), b("5.00", "0.00", "5.00"));
    let s = read_back_after_a_restart(s, dir.path(), &d, &t);
    // A key sent twice is refused, not the last one kept.
    s.refused(&[1, 2], 400, "invalid_metadata", || {
        let body = r#"{"account": 1, "currency": "USD", "amount": "1",
            "metadata": {"k": "a", "k": "b"}}"#;
        s.call("POST", "/v1/deposits", Some(body))
    });
    for bad in [
        json!(1),
        json!({"k": 2}),
        json!({"": "x"}),
        json!({"k": "v".repeat(1024)}),
    ] {
        s.refused(&[1, 2], 400, "invalid_metadata", || {
            s.post(
                "/v1/deposits",
                json!({"account": 1, "currency": "USD", "amount": "1", "metadata": bad}),
            )
        });
        s.refused(&[1, 2], 400, "invalid_metadata", || {
            s.post(
                "/v1/transfers",
                json!({"from": 1, "to": 2, "currency": "USD", "amount": "1", "metadata": bad}),
            )
        });
    }
}

/// Deposit `d`'s and transfer `t`'s metadata, read back by id and on
/// their entries, before and after a restart (from the history store, the
/// log before it gone to a snapshot); the server, restarted.
fn read_back_after_a_restart(s: Served, dir: &Path, d: &Value, t: &Value) -> Served {
    let read_back = |s: &Served| {
        let deposit = s.get(&format!("/v1/transactions/{}", tx_of(d)));
        assert_eq!(deposit["deposit"], *d, "{deposit}");
        let transfer = s.get(&format!("/v1/transactions/{}", tx_of(t)));
        assert_eq!(transfer["transfer"], *t, "{transfer}");
        for (account, tx, made) in [(1, tx_of(d), d), (1, tx_of(t), t), (2, tx_of(t), t)] {
            let entries = s.get(&format!("/v1/accounts/{account}/entries?currency=USD"));
            let entry = entries["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["transaction_id"] == tx.as_str())
                .cloned()
                .unwrap_or_default();
            assert_eq!(entry["metadata"], made["metadata"], "{entries}");
        }
    };
    read_back(&s);
    let mut s = s;
    common::serve::terminate(&s.child);
    let status = common::serve::wait_exit(&mut s.child, START_TIMEOUT).expect("exits");
    assert!(status.success(), "{status:?}");
    drop(s);
    let s = Served::exchange(dir);
    read_back(&s);
    s
}

// ---- partial completion ----

#[test]
fn phase_3_may_report_a_smaller_amount_paid() {
    let dir = tempfile::tempdir().unwrap();
    let s = Served::exchange(dir.path());
    s.deposit(1, "USD", "100");
    let w = s
        .withdraw(json!({"account": 1, "currency": "USD", "amount": "30"}))
        .ok(201);
    let status = format!("/v1/withdrawals/{}/status", tx_of(&w));
    // Refusals first: each leaves the lock as it was.
    for (amount, status_code, code) in [
        (json!("30.01"), 409, "invalid_paid_amount"),
        (json!("0"), 400, "invalid_amount"),
        (json!("-1"), 400, "invalid_amount"),
        (json!("24.001"), 400, "invalid_amount"),
        (json!(24), 400, "invalid_amount"),
        (json!("abc"), 400, "invalid_amount"),
    ] {
        s.refused(&[1], status_code, code, || {
            s.post(&status, json!({"status": "completed", "amount": amount}))
        });
    }
    s.refused(&[1], 400, "invalid_input", || {
        s.post(
            &status,
            json!({"status": "failed", "reason": "x", "amount": "1"}),
        )
    });
    assert_eq!(s.balance(1, "USD"), b("70.00", "30.00", "100.00"));
    let done = s
        .post(&status, json!({"status": "completed", "amount": "24.00"}))
        .ok(200);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["paid"], "24.00");
    assert_eq!(done["amount"], "30.00");
    // 24 burned, 6 released.
    assert_eq!(s.balance(1, "USD"), b("76.00", "0.00", "76.00"));
    // Two changes to one balance in one event: entries sharing its seq,
    // numbered by part, the last with the balance after the event.
    let entries = s.get("/v1/accounts/1/entries?currency=USD");
    let items = entries["items"].as_array().unwrap();
    let [burn, release] = &items[items.len() - 2..] else {
        panic!("{entries}");
    };
    assert_eq!(burn["seq"], release["seq"], "{entries}");
    assert_eq!([&burn["kind"], &burn["part"]], [&json!("burn"), &json!(0)]);
    assert_eq!(
        [&release["kind"], &release["part"]],
        [&json!("release"), &json!(1)]
    );
    assert_eq!(burn["amount"], "24.00");
    assert_eq!(release["available_after"], "76.00");
    // Repeating the completion changes nothing.
    s.post(&status, json!({"status": "completed", "amount": "24.00"}))
        .ok(200);
    assert_eq!(s.balance(1, "USD"), b("76.00", "0.00", "76.00"));

    // The whole amount, or none given, completes in full.
    for paid in [Some("10"), None] {
        let w = s
            .withdraw(json!({"account": 1, "currency": "USD", "amount": "10"}))
            .ok(201);
        let mut body = json!({"status": "completed"});
        if let Some(paid) = paid {
            body["amount"] = json!(paid);
        }
        let done = s
            .post(&format!("/v1/withdrawals/{}/status", tx_of(&w)), body)
            .ok(200);
        assert_eq!(done["paid"], "10.00", "{done}");
    }
    assert_eq!(s.balance(1, "USD"), b("56.00", "0.00", "56.00"));
}

// ---- tiers, limits, the allowance ----

#[test]
fn limits_per_tier_refuse_with_their_window_and_the_allowance_follows() {
    let dir = tempfile::tempdir().unwrap();
    let s = Served::exchange(dir.path());
    s.deposit(1, "USD", "2000");
    let allowance = |account: u64| {
        s.get(&format!(
            "/v1/accounts/{account}/withdrawal-allowance?currency=USD"
        ))
    };
    assert_eq!(
        allowance(1),
        json!({"account": 1, "currency": "USD", "tier": "default", "amount": "100.00",
            "available": "2000.00",
            "windows": [{"window": "24h", "limit": "100.00", "used": "0.00",
                "remaining": "100.00"}],
            "freeze": null})
    );
    let first = s
        .withdraw(json!({"account": 1, "currency": "USD", "amount": "60"}))
        .ok(201);
    let over = s.refused(&[1], 409, "limit_exceeded", || {
        s.withdraw(json!({"account": 1, "currency": "USD", "amount": "50"}))
    });
    assert_eq!(
        over["details"],
        json!({"window": "24h", "limit": "100.00", "used": "60.00", "requested": "50.00",
            "currency": "USD", "tier": "default"})
    );
    assert_eq!(allowance(1)["amount"], "40.00");
    s.withdraw(json!({"account": 1, "currency": "USD", "amount": "40"}))
        .ok(201);
    assert_eq!(allowance(1)["amount"], "0.00");
    // A cancelled withdrawal stops counting.
    s.post(
        &format!("/v1/withdrawals/{}/cancel", tx_of(&first)),
        json!({}),
    )
    .ok(200);
    assert_eq!(allowance(1)["windows"][0]["used"], "40.00");
    assert_eq!(allowance(1)["amount"], "60.00");

    // Tier vip: its own limits, both windows.
    let controls = s.put("/v1/accounts/1/tier", json!({"tier": "vip"})).ok(200);
    assert_eq!(
        controls,
        json!({"account": 1, "tier": "vip", "freeze": null})
    );
    let vip = allowance(1);
    assert_eq!(vip["tier"], "vip");
    assert_eq!(vip["amount"], "960.00");
    assert_eq!(
        vip["windows"],
        json!([
            {"window": "24h", "limit": "1000.00", "used": "40.00", "remaining": "960.00"},
            {"window": "30d", "limit": "5000.00", "used": "40.00", "remaining": "4960.00"}
        ])
    );
    s.withdraw(json!({"account": 1, "currency": "USD", "amount": "500"}))
        .ok(201);
    let over = s.refused(&[1], 409, "limit_exceeded", || {
        s.withdraw(json!({"account": 1, "currency": "USD", "amount": "461"}))
    });
    assert_eq!(over["details"]["tier"], "vip");
    assert_eq!(over["details"]["used"], "540.00");
    // No limit in a currency none is configured for: the balance caps.
    s.deposit(1, "EUR", "7");
    let eur = s.get("/v1/accounts/1/withdrawal-allowance?currency=EUR");
    assert_eq!(
        (eur["amount"].as_str(), &eur["windows"]),
        (Some("7.00"), &json!([]))
    );
    // An account never seen: nothing available.
    assert_eq!(allowance(42)["amount"], "0.00");
}

#[test]
fn tiers_are_names_or_integers_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Served::exchange(dir.path());
    s.deposit(3, "USD", "1");
    let tier = |body: Value| s.put("/v1/accounts/3/tier", body);
    assert_eq!(tier(json!({"tier": 2})).ok(200)["tier"], "2");
    assert_eq!(
        tier(json!({"tier": "level-2.b_c"})).ok(200)["tier"],
        "level-2.b_c"
    );
    let max = "x".repeat(32);
    assert_eq!(tier(json!({"tier": max})).ok(200)["tier"], json!(max));
    for bad in [
        json!({"tier": ""}),
        json!({"tier": "has space"}),
        json!({"tier": "x".repeat(33)}),
        json!({"tier": "é"}),
        json!({"tier": 2.5}),
        json!({"tier": -1}),
        json!({"tier": true}),
        json!({"tier": null}),
        json!({"tier": ["vip"]}),
    ] {
        s.refused(&[3], 400, "invalid_tier", || tier(bad.clone()));
    }
    s.refused(&[3], 400, "malformed_request", || tier(json!({})));
    s.refused(&[3], 400, "malformed_request", || {
        tier(json!({"tier": "vip", "extra": 1}))
    });
    s.refused(&[3], 400, "invalid_input", || {
        s.put("/v1/accounts/x/tier", json!({"tier": "vip"}))
    });
    // The tier stayed as last set.
    let allowance = s.get("/v1/accounts/3/withdrawal-allowance?currency=USD");
    assert_eq!(allowance["tier"], json!(max));
    // The allowance's query is strict.
    for (path, status, code) in [
        ("/v1/accounts/3/withdrawal-allowance", 400, "invalid_input"),
        (
            "/v1/accounts/3/withdrawal-allowance?currency=XYZ",
            400,
            "unknown_currency",
        ),
        (
            "/v1/accounts/3/withdrawal-allowance?currency=USD&x=1",
            400,
            "invalid_input",
        ),
        (
            "/v1/accounts/x/withdrawal-allowance?currency=USD",
            400,
            "invalid_input",
        ),
    ] {
        let answer = s.call("GET", path, None);
        assert_eq!(
            (answer.status, answer.body["error"].as_str()),
            (status, Some(code)),
            "{path}"
        );
    }
}

// ---- freezes ----

#[test]
fn a_freeze_stops_its_scope_names_its_reason_and_end_and_lifts() {
    let dir = tempfile::tempdir().unwrap();
    let s = Served::exchange(dir.path());
    s.deposit(1, "USD", "100");
    s.deposit(2, "USD", "100");
    let frozen = s
        .post(
            "/v1/accounts/1/freeze",
            json!({"scope": "withdrawals", "reason": "kyc review"}),
        )
        .ok(200);
    assert_eq!(
        frozen,
        json!({"account": 1, "tier": "default",
            "freeze": {"scope": "withdrawals", "until": null, "reason": "kyc review"}})
    );
    let refused = s.refused(&[1, 2], 403, "account_frozen", || {
        s.withdraw(json!({"account": 1, "currency": "USD", "amount": "1"}))
    });
    assert_eq!(
        refused["details"],
        json!({"reason": "kyc review", "until": null, "scope": "withdrawals"})
    );
    s.refused(&[1, 2], 403, "account_frozen", || {
        s.post(
            "/v1/transfers",
            json!({"from": 1, "to": 2, "currency": "USD", "amount": "1"}),
        )
    });
    // Money may still come in.
    s.deposit(1, "USD", "1");
    s.post(
        "/v1/transfers",
        json!({"from": 2, "to": 1, "currency": "USD", "amount": "1"}),
    )
    .ok(201);
    let allowance = s.get("/v1/accounts/1/withdrawal-allowance?currency=USD");
    assert_eq!(allowance["amount"], "0.00");
    assert_eq!(allowance["freeze"]["reason"], "kyc review");

    // `all`, with an end: deposits and transfers in are stopped too.
    let until = in_secs(3600);
    let all = s
        .post(
            "/v1/accounts/1/freeze",
            json!({"scope": "all", "until": until, "reason": "fraud"}),
        )
        .ok(200);
    assert_eq!(
        millis(&all["freeze"]["until"]) / 1000,
        millis(&json!(until)) / 1000
    );
    let refused = s.refused(&[1, 2], 403, "account_frozen", || {
        s.post(
            "/v1/deposits",
            json!({"account": 1, "currency": "USD", "amount": "1"}),
        )
    });
    assert_eq!(refused["details"]["scope"], "all");
    assert_eq!(refused["details"]["reason"], "fraud");
    assert_eq!(refused["details"]["until"], all["freeze"]["until"]);
    s.refused(&[1, 2], 403, "account_frozen", || {
        s.post(
            "/v1/transfers",
            json!({"from": 2, "to": 1, "currency": "USD", "amount": "1"}),
        )
    });

    // Lifted: everything goes again; lifting again changes nothing.
    let lifted = s.call("DELETE", "/v1/accounts/1/freeze", None).ok(200);
    assert_eq!(
        lifted,
        json!({"account": 1, "tier": "default", "freeze": null})
    );
    assert_eq!(
        s.call("DELETE", "/v1/accounts/1/freeze", None).ok(200),
        lifted
    );
    assert_eq!(
        s.call("DELETE", "/v1/accounts/77/freeze", None).ok(200),
        json!({"account": 77, "tier": "default", "freeze": null})
    );
    s.withdraw(json!({"account": 1, "currency": "USD", "amount": "1"}))
        .ok(201);
    assert_eq!(s.balance(1, "USD"), b("101.00", "1.00", "102.00"));
}

#[test]
fn bad_freezes_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Served::exchange(dir.path());
    s.deposit(1, "USD", "10");
    let freeze = |body: Value| s.post("/v1/accounts/1/freeze", body);
    for (body, status, code) in [
        (
            json!({"scope": "deposits", "reason": "x"}),
            400,
            "invalid_input",
        ),
        (json!({"scope": "ALL", "reason": "x"}), 400, "invalid_input"),
        (json!({"scope": 1, "reason": "x"}), 400, "malformed_request"),
        (
            json!({"scope": "all", "reason": "x", "until": "tomorrow"}),
            400,
            "invalid_time",
        ),
        (
            json!({"scope": "all", "reason": "x", "until": "2030-01-01"}),
            400,
            "invalid_time",
        ),
        (
            json!({"scope": "all", "reason": "x", "until": 1700000000}),
            400,
            "malformed_request",
        ),
        (
            json!({"scope": "all", "reason": "x", "until": in_secs(-60)}),
            400,
            "invalid_expiry",
        ),
        (
            json!({"scope": "all", "reason": "r".repeat(257)}),
            400,
            "reason_too_long",
        ),
        (json!({"scope": "all", "reason": ""}), 400, "reason_missing"),
        (
            json!({"scope": "all", "reason": " \t"}),
            400,
            "reason_missing",
        ),
        (json!({"scope": "all"}), 400, "malformed_request"),
        (
            json!({"scope": "all", "reason": "x", "note": "y"}),
            400,
            "malformed_request",
        ),
    ] {
        s.refused(&[1], status, code, || freeze(body.clone()));
    }
    s.refused(&[1], 400, "invalid_input", || {
        s.post(
            "/v1/accounts/-1/freeze",
            json!({"scope": "all", "reason": "x"}),
        )
    });
    // None took: the account is not frozen.
    let controls = s
        .put("/v1/accounts/1/tier", json!({"tier": "default"}))
        .ok(200);
    assert_eq!(controls["freeze"], Value::Null);
    s.withdraw(json!({"account": 1, "currency": "USD", "amount": "1"}))
        .ok(201);
}

#[test]
fn freezes_and_tiers_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let until = in_secs(3600);
    {
        let s = Served::exchange(dir.path());
        s.deposit(1, "USD", "10");
        s.put("/v1/accounts/1/tier", json!({"tier": "vip"})).ok(200);
        s.post(
            "/v1/accounts/1/freeze",
            json!({"scope": "withdrawals", "until": until,
            "reason": "kyc"}),
        )
        .ok(200);
        let mut s = s;
        common::serve::terminate(&s.child);
        let status = common::serve::wait_exit(&mut s.child, START_TIMEOUT).expect("exits");
        assert!(status.success(), "{status:?}");
    }
    let s = Served::exchange(dir.path());
    let allowance = s.get("/v1/accounts/1/withdrawal-allowance?currency=USD");
    assert_eq!(allowance["tier"], "vip");
    assert_eq!(allowance["freeze"]["reason"], "kyc");
    s.refused(&[1], 403, "account_frozen", || {
        s.withdraw(json!({"account": 1, "currency": "USD", "amount": "1"}))
    });
}

// ---- the flags ----

#[test]
fn serve_refuses_bad_withdrawal_flags_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for flags in [
        vec!["--withdrawal-limit", "default:XYZ:24h=1"],
        vec!["--withdrawal-limit", "default:USD:1w=1"],
        vec!["--withdrawal-limit", "default:USD:24h=0.001"],
        // One cap, given twice: neither is taken silently.
        vec![
            "--withdrawal-limit",
            "default:USD:24h=1",
            "--withdrawal-limit",
            "default:USD:24h=5",
        ],
        vec!["--withdrawal-expiry-max", "0s"],
        vec!["--fee-account", "minus-one"],
    ] {
        let mut command = common::serve::serve_command(dir.path());
        command.args(&flags);
        let refused = common::serve::run_to_exit(&mut command, START_TIMEOUT);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{flags:?}: {}",
            refused.stderr
        );
        let flag = flags[0];
        assert!(
            refused.stderr.contains(flag),
            "{flags:?}: {}",
            refused.stderr
        );
        assert!(!refused.stdout.contains("listening"), "{}", refused.stdout);
    }
    // The maximum applies.
    let s = Served::start(dir.path(), &["--withdrawal-expiry-max", "1h"]);
    s.deposit(1, "USD", "10");
    s.refused(&[1], 400, "invalid_expiry", || {
        s.withdraw(json!({"account": 1, "currency": "USD", "amount": "1", "expires_in": "61m"}))
    });
    s.withdraw(json!({"account": 1, "currency": "USD", "amount": "1", "expires_in": "60m"}))
        .ok(201);
}
