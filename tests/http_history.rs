//! The history routes over real HTTP (issue 13): each listing's JSON page
//! (`{"items", "next"}`) and its CSV (`?format=csv` and `Accept:
//! text/csv`), entries, transactions by id, balances as of a time, the
//! paged payouts, every bad parameter a 400 with its code that changes
//! nothing, and the OpenAPI document naming every route and parameter.

#![cfg(all(feature = "cli", feature = "http"))]

mod common;

use std::time::Duration;

use burnledger::clock::{ManualClock, MANUAL_CLOCK_START_UNIX_MS};
use burnledger::config::{PayoutMode, SharedPaymentService};
use burnledger::http::{self, HttpOptions};
use burnledger::payment::SimulatedBank;
use burnledger::{Config, UnixMs};
use common::in_process::InProcess;
use serde_json::{json, Value};

/// An answer: status, content type, `Next-Cursor`, and the body as JSON
/// (or as a JSON string when it is not JSON).
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    next_cursor: Option<String>,
    body: Value,
}

impl Answer {
    fn refused(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["error"], code, "{self:?}");
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    fn text(&self) -> &str {
        self.body.as_str().expect("a text body")
    }
}

struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    fn of(server: &InProcess) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        Self {
            agent,
            base: server.url(),
        }
    }

    fn get_with(&self, path: &str, accept: Option<&str>) -> Answer {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        let mut response = request.call().expect("an answer");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type").unwrap_or_default();
        let next_cursor = header("next-cursor");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            content_type,
            next_cursor,
            body,
        }
    }

    fn get(&self, path: &str) -> Answer {
        self.get_with(path, None)
    }

    fn ok(&self, path: &str) -> Value {
        let answer = self.get(path);
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        answer.body
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let mut response = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .expect("an answer");
        assert!(response.status().is_success(), "{path}: {response:?}");
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }
}

fn rfc3339(offset_ms: u64) -> String {
    UnixMs::from_millis(MANUAL_CLOCK_START_UNIX_MS + offset_ms).rfc3339()
}

/// A server on a manual clock that pays through a simulated bank, with,
/// on account 1: deposits of 100 USD and 50 EUR (t0); withdrawals of 10
/// USD (t0 + 10 ms) and 5 (t0 + 20), both paid by one payout; a pending
/// one of 2.50 and a transfer of 1 USD to account 2 (t0 + 30).
struct World {
    server: InProcess,
    clock: ManualClock,
    c: Client,
    w10: Value,
    w5: Value,
    w2: Value,
    transfer: Value,
    deposit: Value,
}

fn world() -> (tempfile::TempDir, World) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let config = Config {
        payout_mode: PayoutMode::Batched {
            interval_secs: 24 * 3600,
        },
        payment_service: Some(SharedPaymentService::new(SimulatedBank::default())),
        clock: clock.shared(),
        ..Config::for_tests_in(dir.path())
    };
    let options = HttpOptions {
        workers: Some(2),
        ..HttpOptions::default()
    };
    let server = InProcess::start(config, options);
    let c = Client::of(&server);
    let deposit = c.post(
        "/v1/deposits",
        json!({"account": 1, "currency": "USD", "amount": "100"}),
    );
    c.post(
        "/v1/deposits",
        json!({"account": 1, "currency": "EUR", "amount": "50"}),
    );
    let withdraw = |amount: &str| {
        c.post(
            "/v1/withdrawals",
            json!({"account": 1, "currency": "USD", "amount": amount}),
        )
    };
    clock.advance(Duration::from_millis(10));
    let w10 = withdraw("10");
    clock.advance(Duration::from_millis(10));
    let w5 = withdraw("5");
    let tx5 = w5["transaction_id"].as_str().unwrap().to_string();
    let run = c.post("/v1/payouts/run", json!({}));
    assert_eq!(run[0]["state"], "completed", "{run}");
    clock.advance(Duration::from_millis(10));
    let w2 = withdraw("2.50");
    let transfer = c.post(
        "/v1/transfers",
        json!({"from": 1, "to": 2, "currency": "USD", "amount": "1"}),
    );
    let w10 = c.ok(&format!(
        "/v1/withdrawals/{}",
        w10["transaction_id"].as_str().unwrap()
    ));
    let w5 = c.ok(&format!("/v1/withdrawals/{tx5}"));
    let world = World {
        server,
        clock,
        c,
        w10,
        w5,
        w2,
        transfer,
        deposit,
    };
    (dir, world)
}

#[test]
fn the_withdrawal_listings_answer_pages_of_the_withdrawal_json() {
    let (_dir, w) = world();
    let c = &w.c;
    let all = [w.w10.clone(), w.w5.clone(), w.w2.clone()];
    assert_eq!(
        c.ok("/v1/accounts/1/withdrawals"),
        json!({"items": all, "next": null})
    );
    // Each item is exactly what GET /v1/withdrawals/{id} answers.
    for item in &all {
        let tx = item["transaction_id"].as_str().unwrap();
        assert_eq!(&c.ok(&format!("/v1/withdrawals/{tx}")), item);
    }
    assert_eq!(c.ok("/v1/withdrawals")["items"], json!(all));
    // Paging: one at a time, following next.
    let first = c.ok("/v1/accounts/1/withdrawals?limit=1");
    assert_eq!(first["items"], json!([all[0]]));
    let next = first["next"].as_str().unwrap();
    let second = c.ok(&format!("/v1/accounts/1/withdrawals?limit=2&after={next}"));
    assert_eq!(second["items"], json!(all[1..]));
    assert_eq!(second["next"], Value::Null, "{second}");
    // Order, status, currency, times, payout.
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(
        c.ok("/v1/accounts/1/withdrawals?order=desc")["items"],
        json!(reversed)
    );
    assert_eq!(
        c.ok("/v1/accounts/1/withdrawals?status=pending")["items"],
        json!([all[2]])
    );
    assert_eq!(
        c.ok("/v1/withdrawals?status=completed,pending&order=desc")["items"],
        json!([all[2], all[1], all[0]])
    );
    assert_eq!(
        c.ok("/v1/accounts/1/withdrawals?currency=EUR")["items"],
        json!([])
    );
    assert_eq!(
        c.ok(&format!(
            "/v1/accounts/1/withdrawals?created_from={}&created_to={}",
            rfc3339(20),
            rfc3339(30)
        ))["items"],
        json!([all[1]])
    );
    // An offset is applied: t0 + 20 ms written at +02:00 (a `+` in a query
    // string is a space unless percent-encoded).
    let at_plus_two = rfc3339(20).replace("T00:", "T02:").replace('Z', "%2B02:00");
    assert_eq!(
        c.ok(&format!("/v1/withdrawals?created_to={at_plus_two}"))["items"],
        json!([all[0]])
    );
    assert_eq!(
        c.ok("/v1/accounts/2/withdrawals"),
        json!({"items": [], "next": null})
    );
    w.server.stop();
}

#[test]
fn the_listings_export_csv_by_format_or_by_accept() {
    let (_dir, w) = world();
    let c = &w.c;
    let header = "transaction_id,account,currency,amount,status,payout_id,reason,created_at,\
                  updated_at,paid,fee.currency,fee.amount,destination.kind,destination.value,\
                  destination.network,metadata,expires_at";
    for (path, accept) in [
        ("/v1/accounts/1/withdrawals?format=csv", None),
        ("/v1/accounts/1/withdrawals", Some("text/csv")),
        (
            "/v1/withdrawals",
            Some("application/json;q=0.5, text/csv; charset=utf-8"),
        ),
    ] {
        let answer = c.get_with(path, accept);
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.content_type, "text/csv; charset=utf-8");
        let lines: Vec<&str> = answer.text().split("\r\n").collect();
        assert_eq!(lines[0], header);
        assert_eq!(lines.len(), 1 + 3 + 1, "{lines:?}");
        assert_eq!(lines[4], "", "CRLF after every row");
        let row = |j: &Value| {
            let s = |k: &str| j[k].as_str().unwrap_or("").to_string();
            let nested = |o: &str, k: &str| j[o][k].as_str().unwrap_or("").to_string();
            [
                s("transaction_id"),
                j["account"].to_string(),
                s("currency"),
                s("amount"),
                s("status"),
                j["payout_id"]
                    .as_u64()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                s("reason"),
                s("created_at"),
                s("updated_at"),
                s("paid"),
                nested("fee", "currency"),
                nested("fee", "amount"),
                nested("destination", "kind"),
                nested("destination", "value"),
                nested("destination", "network"),
                j.get("metadata").map_or("{}".into(), Value::to_string),
                s("expires_at"),
            ]
            .join(",")
        };
        assert_eq!(lines[1], row(&w.w10));
        assert_eq!(lines[3], row(&w.w2));
        assert_eq!(answer.next_cursor, None);
    }
    // format=json wins over Accept; a page's next is the Next-Cursor header.
    let json_anyway = c.get_with("/v1/accounts/1/withdrawals?format=json", Some("text/csv"));
    assert!(
        json_anyway.content_type.starts_with("application/json"),
        "{json_anyway:?}"
    );
    // q=0 means "not CSV"; a quality above zero still asks for it.
    let refused = c.get_with(
        "/v1/accounts/1/withdrawals",
        Some("text/csv;q=0, application/json"),
    );
    assert!(
        refused.content_type.starts_with("application/json"),
        "{refused:?}"
    );
    let spaced = c.get_with("/v1/accounts/1/withdrawals", Some("text/csv; q=0.000"));
    assert!(
        spaced.content_type.starts_with("application/json"),
        "{spaced:?}"
    );
    let weighted = c.get_with("/v1/accounts/1/withdrawals", Some("text/csv;q=0.5"));
    assert!(
        weighted.content_type.starts_with("text/csv"),
        "{weighted:?}"
    );
    let page = c.get("/v1/accounts/1/withdrawals?format=csv&limit=2");
    let next = page.next_cursor.clone().expect("a next cursor");
    assert_eq!(page.text().split("\r\n").count(), 1 + 2 + 1);
    let rest = c.get(&format!(
        "/v1/accounts/1/withdrawals?format=csv&after={next}"
    ));
    assert_eq!(rest.text().split("\r\n").count(), 1 + 1 + 1);
    // Entries too.
    let entries = c.get_with("/v1/accounts/1/entries?currency=USD", Some("text/csv"));
    let lines: Vec<&str> = entries.text().split("\r\n").collect();
    assert_eq!(
        lines[0],
        "transaction_id,account,currency,seq,kind,amount,available_after,locked_after,at,metadata"
    );
    let json_entries = c.ok("/v1/accounts/1/entries?currency=USD")["items"].clone();
    let entry_row = |j: &Value| {
        let s = |k: &str| j[k].as_str().unwrap().to_string();
        [
            s("transaction_id"),
            j["account"].to_string(),
            s("currency"),
            j["seq"].to_string(),
            s("kind"),
            s("amount"),
            s("available_after"),
            s("locked_after"),
            s("at"),
            j.get("metadata").map_or("{}".into(), Value::to_string),
        ]
        .join(",")
    };
    let rows: Vec<String> = json_entries
        .as_array()
        .unwrap()
        .iter()
        .map(entry_row)
        .collect();
    assert_eq!(lines[1..lines.len() - 1], rows[..]);
    assert!(lines[1].ends_with(&format!(",deposit,100.00,100.00,0.00,{},{{}}", rfc3339(0))));
    w.server.stop();
}

#[test]
fn a_failure_reason_is_quoted_in_csv_as_rfc_4180_says() {
    let dir = tempfile::tempdir().unwrap();
    let server = InProcess::start(
        Config::for_tests_in(dir.path()),
        HttpOptions {
            workers: Some(1),
            ..HttpOptions::default()
        },
    );
    let c = Client::of(&server);
    c.post(
        "/v1/deposits",
        json!({"account": 4, "currency": "USD", "amount": "9"}),
    );
    let w = c.post(
        "/v1/withdrawals",
        json!({"account": 4, "currency": "USD", "amount": "1"}),
    );
    let tx = w["transaction_id"].as_str().unwrap();
    let reason = "bank said \"no\", twice\r\nsee ticket";
    c.post(
        &format!("/v1/withdrawals/{tx}/status"),
        json!({"status": "failed", "reason": reason}),
    );
    let csv = c.get("/v1/accounts/4/withdrawals?format=csv");
    let text = csv.text();
    assert!(
        text.contains(",\"bank said \"\"no\"\", twice\r\nsee ticket\","),
        "{text:?}"
    );
    server.stop();
}

#[test]
fn entries_transactions_and_balances_as_of_a_time() {
    let (_dir, w) = world();
    let c = &w.c;
    let entries = c.ok("/v1/accounts/1/entries?currency=USD");
    let kinds: Vec<&str> = entries["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "deposit",
            "lock",
            "lock",
            "burn",
            "burn",
            "lock",
            "transfer_out"
        ],
        "{entries}"
    );
    let last = &entries["items"][6];
    assert_eq!(last["available_after"], "81.50");
    assert_eq!(last["locked_after"], "2.50");
    assert_eq!(last["transaction_id"], w.transfer["transaction_id"]);
    // Paged one by one, the same entries.
    let mut paged = Vec::new();
    let mut path = "/v1/accounts/1/entries?currency=USD&limit=1".to_string();
    loop {
        let page = c.ok(&path);
        paged.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => {
                path = format!("/v1/accounts/1/entries?currency=USD&limit=1&after={next}")
            }
            None => break,
        }
    }
    assert_eq!(json!(paged), entries["items"]);
    assert_eq!(
        c.ok("/v1/accounts/1/entries")["items"]
            .as_array()
            .unwrap()
            .len(),
        8
    );

    // Transactions of every kind.
    let dep = c.ok(&format!(
        "/v1/transactions/{}",
        w.deposit["transaction_id"].as_str().unwrap()
    ));
    assert_eq!(
        dep,
        json!({"kind": "deposit", "deposit": w.deposit, "at": rfc3339(0)})
    );
    let tr = c.ok(&format!(
        "/v1/transactions/{}",
        w.transfer["transaction_id"].as_str().unwrap()
    ));
    assert_eq!(
        tr,
        json!({"kind": "transfer", "transfer": w.transfer, "at": rfc3339(30)})
    );
    let wd = c.ok(&format!(
        "/v1/transactions/{}",
        w.w5["transaction_id"].as_str().unwrap()
    ));
    assert_eq!(wd, json!({"kind": "withdrawal", "withdrawal": w.w5}));
    c.get("/v1/transactions/00000000000000630000000000000001")
        .refused(404, "unknown_transaction");
    c.get("/v1/transactions/xyz")
        .refused(404, "unknown_transaction");

    // Balances as of a time: before the first withdrawal, and now.
    let before = c.ok(&format!("/v1/accounts/1/balances?at={}", rfc3339(5)));
    assert_eq!(before["at"], rfc3339(5));
    let usd = before["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["currency"] == "USD")
        .cloned()
        .unwrap();
    assert_eq!(
        usd,
        json!({"currency": "USD", "available": "100.00", "locked": "0.00", "total": "100.00"})
    );
    w.clock.advance(Duration::from_millis(1));
    let live = c.ok("/v1/accounts/1/balances");
    let now = c.ok(&format!("/v1/accounts/1/balances?at={}", rfc3339(31)));
    // The same balances (the live ones in the account's order, those as of
    // a time by currency code).
    let by_currency = |v: &Value| {
        let mut list = v["balances"].as_array().unwrap().clone();
        list.sort_by_key(|b| b["currency"].as_str().unwrap().to_string());
        list
    };
    assert_eq!(by_currency(&now), by_currency(&live));
    assert_eq!(by_currency(&now).len(), 2);
    assert_eq!(
        live.as_object().unwrap().len(),
        2,
        "no at without ?at: {live}"
    );
    assert_eq!(
        c.ok("/v1/accounts/1/balances?at=1970-01-01T00:00:00Z")["balances"],
        json!([])
    );
    w.server.stop();
}

#[test]
fn payouts_answer_a_page() {
    let (_dir, w) = world();
    let c = &w.c;
    let listed = c.ok("/v1/payouts");
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(listed["next"], Value::Null);
    let payout_id = items[0]["payout_id"].as_u64().unwrap();
    assert_eq!(items[0], c.ok(&format!("/v1/payouts/{payout_id}")));
    assert_eq!(
        c.ok("/v1/payouts?state=completed&currency=USD")["items"],
        listed["items"]
    );
    assert_eq!(c.ok("/v1/payouts?state=failed")["items"], json!([]));
    assert_eq!(c.ok("/v1/payouts?currency=EUR")["items"], json!([]));
    let one = c.ok("/v1/payouts?limit=1");
    assert_eq!(one["items"], listed["items"]);
    w.server.stop();
}

#[test]
fn bad_parameters_are_400_with_their_code_and_change_nothing() {
    let (_dir, w) = world();
    let c = &w.c;
    let before = c.ok("/v1/accounts/1/withdrawals");
    let balances = c.ok("/v1/accounts/1/balances");
    let cursor = c.ok("/v1/accounts/1/entries?limit=1")["next"]
        .as_str()
        .unwrap()
        .to_string();
    let cases: Vec<(String, &str)> = vec![
        ("/v1/accounts/1/withdrawals?limit=0".into(), "invalid_limit"),
        (
            "/v1/accounts/1/withdrawals?limit=1001".into(),
            "invalid_limit",
        ),
        ("/v1/withdrawals?limit=ten".into(), "invalid_limit"),
        ("/v1/withdrawals?limit=-1".into(), "invalid_limit"),
        ("/v1/accounts/1/entries?limit=0".into(), "invalid_limit"),
        ("/v1/payouts?limit=5000".into(), "invalid_limit"),
        (
            "/v1/accounts/1/withdrawals?after=nonsense".into(),
            "invalid_cursor",
        ),
        (
            format!("/v1/accounts/1/withdrawals?after={cursor}"),
            "invalid_cursor",
        ),
        ("/v1/accounts/1/entries?after=w00".into(), "invalid_cursor"),
        ("/v1/payouts?after=p12".into(), "invalid_cursor"),
        (
            "/v1/withdrawals?created_from=yesterday".into(),
            "invalid_time",
        ),
        (
            "/v1/withdrawals?created_to=2026-02-30T00:00:00Z".into(),
            "invalid_time",
        ),
        (
            "/v1/accounts/1/balances?at=2026-01-01".into(),
            "invalid_time",
        ),
        ("/v1/accounts/1/balances?at=".into(), "invalid_time"),
        (
            "/v1/withdrawals?created_from=2026-01-02T00:00:00Z&created_to=2026-01-01T00:00:00Z"
                .into(),
            "invalid_time_range",
        ),
        ("/v1/withdrawals?status=stuck".into(), "invalid_input"),
        ("/v1/withdrawals?status=pending,".into(), "invalid_input"),
        ("/v1/withdrawals?order=newest".into(), "invalid_input"),
        ("/v1/withdrawals?format=xml".into(), "invalid_input"),
        ("/v1/accounts/1/entries?format=pdf".into(), "invalid_input"),
        ("/v1/payouts?state=done".into(), "invalid_input"),
        ("/v1/payouts?order=sideways".into(), "invalid_input"),
        ("/v1/withdrawals?colour=red".into(), "invalid_input"),
        (
            "/v1/accounts/1/entries?status=pending".into(),
            "invalid_input",
        ),
        ("/v1/withdrawals?payout_id=x".into(), "invalid_input"),
        ("/v1/accounts/x/withdrawals".into(), "invalid_input"),
        ("/v1/accounts/-1/entries".into(), "invalid_input"),
        ("/v1/withdrawals?currency=XYZ".into(), "unknown_currency"),
        (
            "/v1/accounts/1/entries?currency=usd".into(),
            "unknown_currency",
        ),
        ("/v1/payouts?currency=XYZ".into(), "unknown_currency"),
    ];
    for (path, code) in &cases {
        c.get(path).refused(400, code);
        // The same refusal with CSV asked for: an error is always JSON.
        let csv = c.get_with(path, Some("text/csv"));
        assert_eq!(
            (csv.status, csv.body["error"].as_str()),
            (400, Some(*code)),
            "{path}"
        );
    }
    assert_eq!(c.ok("/v1/accounts/1/withdrawals"), before);
    assert_eq!(c.ok("/v1/accounts/1/balances"), balances);
    w.server.stop();
}

#[test]
fn without_a_data_folder_the_history_routes_are_503_history_unavailable() {
    let server = InProcess::start(
        Config::for_tests(),
        HttpOptions {
            workers: Some(1),
            ..HttpOptions::default()
        },
    );
    let c = Client::of(&server);
    for path in [
        "/v1/withdrawals",
        "/v1/accounts/1/withdrawals?format=csv",
        "/v1/accounts/1/entries",
        "/v1/transactions/00000000000000010000000000000001",
        "/v1/accounts/1/balances?at=2026-01-01T00:00:00Z",
    ] {
        c.get(path).refused(503, "history_unavailable");
    }
    // This ledger makes no payouts (external mode): it lists none.
    assert_eq!(
        c.get("/v1/payouts").body,
        json!({"items": [], "next": null})
    );
    // Bad input is still judged first.
    c.get("/v1/withdrawals?limit=0")
        .refused(400, "invalid_limit");
    c.get("/v1/withdrawals?created_to=soon")
        .refused(400, "invalid_time");
    // The live balances need no history.
    assert_eq!(c.get("/v1/accounts/1/balances").status, 200);
    server.stop();
}

#[test]
fn the_openapi_document_names_every_history_route_and_parameter() {
    let doc: Value = serde_json::from_str(&http::openapi::document()).unwrap();
    let parameters = |path: &str| -> Vec<String> {
        let op = &doc["paths"][path]["get"];
        assert!(op.is_object(), "GET {path} is documented");
        op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| p["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let listing = [
        "status",
        "currency",
        "created_from",
        "created_to",
        "payout_id",
        "after",
        "limit",
        "order",
        "format",
    ];
    for (path, names) in [
        ("/v1/accounts/{account}/withdrawals", &listing[..]),
        ("/v1/withdrawals", &listing[..]),
        (
            "/v1/accounts/{account}/entries",
            &["currency", "after", "limit", "format"][..],
        ),
        ("/v1/transactions/{transaction_id}", &["transaction_id"][..]),
        ("/v1/accounts/{account}/balances", &["account", "at"][..]),
        (
            "/v1/payouts",
            &["state", "currency", "after", "limit", "order"][..],
        ),
    ] {
        let documented = parameters(path);
        for name in names {
            assert!(
                documented.iter().any(|d| d == name),
                "{path} documents {name}: {documented:?}"
            );
        }
    }
    for (path, media) in [
        ("/v1/accounts/{account}/withdrawals", "text/csv"),
        ("/v1/withdrawals", "text/csv"),
        ("/v1/accounts/{account}/entries", "text/csv"),
    ] {
        assert!(
            doc["paths"][path]["get"]["responses"]["200"]["content"][media].is_object(),
            "{path} documents {media}"
        );
    }
    let page = &doc["components"]["schemas"]["WithdrawalPageJson"]["properties"];
    assert_eq!(
        page["items"]["items"]["$ref"],
        "#/components/schemas/WithdrawalJson"
    );
    assert!(page["next"].is_object());
    for schema in ["EntryPageJson", "PayoutPageJson", "TransactionJson"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}
