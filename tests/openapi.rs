//! The OpenAPI 3.1 document: the copy kept in the repository is the one the
//! code generates, the server serves it at `GET /openapi.json` without a
//! token, and every answer the service gives — success and every error
//! status each operation documents, plus 404 and 405 — has the status, the
//! content type and the body shape the document says.
//!
//! Rewrite the kept copy after changing the API:
//! `BURNLEDGER_UPDATE_OPENAPI=1 cargo test --test openapi`.
//!
//! The body check is a small structural validator of the JSON Schema subset
//! utoipa emits (`$ref`, `type` and type lists, `properties`, `required`,
//! `additionalProperties`, `items`, `enum`, `minimum`, `oneOf`/`anyOf`/
//! `allOf`), strict about undeclared fields in answers.

#![cfg(all(feature = "cli", feature = "http"))]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use burnledger::config::{PayoutMode, SharedPaymentService};
use burnledger::http::{self, HttpOptions};
use burnledger::payment::{SimulatedBank, SimulatedBankConfig};
use burnledger::Config;
use common::in_process::InProcess;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(30);
const API: &str = "api-token";
const METRICS: &str = "metrics-token";
const RESOLVE: &str = "/v1/payouts/{payout_id}/items/{transaction_id}/resolve";
const CURSOR: &str = "/v1/consumers/{name}/cursor";
const TIER: &str = "/v1/accounts/{account}/tier";
const FREEZE: &str = "/v1/accounts/{account}/freeze";
const ALLOWANCE: &str = "/v1/accounts/{account}/withdrawal-allowance";

fn kept_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/http/openapi.json")
}

#[test]
fn the_document_in_the_repository_is_current() {
    let generated = http::openapi::document();
    let path = kept_path();
    if std::env::var_os("BURNLEDGER_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("the document is written");
        return;
    }
    let kept = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        kept == generated,
        "{} differs from the document the code generates; rewrite it with \
         `BURNLEDGER_UPDATE_OPENAPI=1 cargo test --test openapi` and review the diff",
        path.display()
    );
    let doc: Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

#[test]
fn every_counted_route_is_documented() {
    // The metrics count /v1 requests by route name, and each route's name
    // is its handler's, which is the operation id: a route added to the
    // table and the metrics but not to the document fails here.
    let doc: Value = serde_json::from_str(&http::openapi::document()).unwrap();
    let operations: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|operation| operation["operationId"].as_str())
        .collect();
    for kind in http::metrics::KINDS.iter().filter(|k| **k != "unmatched") {
        assert!(
            operations.contains(kind),
            "route {kind:?} is not in the OpenAPI document: annotate its handler with \
             #[utoipa::path] and list it in ApiDoc's paths(...)"
        );
    }
}

// ---- an in-process server over real HTTP ----

/// The service with both tokens and a one-second body deadline.
fn start(config: Config) -> InProcess {
    let options = HttpOptions {
        api_token: Some(API.into()),
        metrics_token: Some(METRICS.into()),
        body_timeout: Duration::from_secs(1),
        workers: Some(2),
        ..HttpOptions::default()
    };
    InProcess::start(config, options)
}

/// One answer off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

/// Sends `request` on a fresh connection and reads the answer (to the end
/// of its `Content-Length`).
fn exchange(addr: &str, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "an answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    Answer {
        status,
        content_type: header("content-type").unwrap_or_default(),
        body,
    }
}

fn request(method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Vec<u8> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body = body.unwrap_or("");
    format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---- the checker ----

struct Checker {
    doc: Value,
    /// (path template, method, status) seen.
    seen: BTreeSet<(String, String, String)>,
}

impl Checker {
    fn new(doc: Value) -> Self {
        Self {
            doc,
            seen: BTreeSet::new(),
        }
    }

    /// Asserts `answer` is documented for `template`/`method` with its
    /// status, content type and body shape; returns the body as JSON.
    fn check(&mut self, template: &str, method: &str, answer: &Answer) -> Value {
        let status = answer.status.to_string();
        let response = &self.doc["paths"][template][method]["responses"][&status];
        assert!(
            response.is_object(),
            "{method} {template} answered {status}, which the document does not list: {answer:?}"
        );
        self.seen
            .insert((template.into(), method.into(), status.clone()));
        let content = response["content"].as_object();
        let Some((media, media_type)) = content.and_then(|c| c.iter().next()) else {
            return Value::Null;
        };
        let essence = |s: &str| s.split(';').next().unwrap_or("").trim().to_string();
        assert_eq!(
            essence(&answer.content_type),
            essence(media),
            "{method} {template} {status}: content type"
        );
        if essence(media) != "application/json" {
            return Value::Null;
        }
        let body: Value = serde_json::from_slice(&answer.body)
            .unwrap_or_else(|e| panic!("{method} {template} {status}: not JSON ({e}): {answer:?}"));
        if let Some(schema) = media_type.get("schema") {
            if let Err(problem) = validate(&self.doc, schema, &body, "$") {
                panic!("{method} {template} {status}: {problem}\nbody: {body}");
            }
        }
        body
    }

    /// Asserts an error answer has the `Error` schema (for 404 and 405,
    /// which no operation lists).
    fn check_error(&self, answer: &Answer, status: u16) {
        assert_eq!(answer.status, status, "{answer:?}");
        let body: Value = serde_json::from_slice(&answer.body).expect("JSON");
        let schema = json!({"$ref": "#/components/schemas/Error"});
        validate(&self.doc, &schema, &body, "$").unwrap();
    }

    /// Every (path, method, status) the document lists, but 500 (no test
    /// can make the service fail inside) and a replicated node's own
    /// answers (200 and 503 of its routes: they need a NATS cluster;
    /// tests/failover.rs gets their 200s there), was answered at least
    /// once.
    fn assert_all_seen(&self) {
        let replicated_only = |path: &str, status: &str| {
            matches!(path, "/v1/admin/promote" | "/v1/replication")
                && matches!(status, "200" | "503")
        };
        let mut missing = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for status in operation["responses"].as_object().unwrap().keys() {
                    let key = (path.clone(), method.clone(), status.clone());
                    let exempt = status == "500" || replicated_only(path, status);
                    if !exempt && !self.seen.contains(&key) {
                        missing.push(key);
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "documented but never answered: {missing:?}"
        );
    }
}

/// Checks `value` against `schema` (the subset utoipa emits); `at` names
/// the place in the body for the error.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .ok_or_else(|| format!("{at}: unsupported $ref {reference}"))?;
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{at}: $ref to a missing schema {name}"));
        }
        return validate(doc, target, value, at);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let fits = options
                .iter()
                .filter(|s| validate(doc, s, value, at).is_ok())
                .count();
            let ok = if key == "oneOf" { fits == 1 } else { fits >= 1 };
            if !ok {
                return Err(format!("{at}: {value} fits {fits} of the {key} options"));
            }
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for part in all {
            validate(doc, part, value, at)?;
        }
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            other => return Err(format!("{at}: bad type {other}")),
        };
        let fits = |t: &str| match t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        };
        if !types.iter().any(|t| fits(t)) {
            return Err(format!("{at}: {value} is not of type {types:?}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let (Some(minimum), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) {
        if n < minimum {
            return Err(format!("{at}: {n} is below the minimum {minimum}"));
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                return Err(format!("{at}: required field {name:?} missing"));
            }
        }
        for (name, field) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(field_schema) => validate(doc, field_schema, field, &format!("{at}.{name}"))?,
                // Answers carry only what the document declares.
                None if properties.is_some() => {
                    return Err(format!("{at}: field {name:?} is not in the document"))
                }
                None => {}
            }
        }
    }
    Ok(())
}

// ---- driving every operation ----

/// The feed's 503 (a ledger without a log: `events_unavailable`) and 410
/// (a position its log pruned: `cursor_expired`).
fn feed_unavailable_and_expired(c: &mut Checker) {
    let no_log = start(Config::for_tests());
    let call = |method: &str, path: &str, body: Option<&str>| {
        exchange(&no_log.addr, &request(method, path, Some(API), body))
    };
    for (method, template, path, body) in [
        ("get", "/v1/events", "/v1/events", None),
        ("get", "/v1/events/stream", "/v1/events/stream", None),
        ("get", "/v1/consumers", "/v1/consumers", None),
        ("get", CURSOR, "/v1/consumers/a/cursor", None),
        (
            "put",
            CURSOR,
            "/v1/consumers/a/cursor",
            Some(r#"{"lsn": 0}"#),
        ),
        ("delete", "/v1/consumers/{name}", "/v1/consumers/a", None),
        ("get", "/v1/journal/head", "/v1/journal/head", None),
    ] {
        let answer = call(&method.to_ascii_uppercase(), path, body);
        let refused = c.check(template, method, &answer);
        assert_eq!(
            (answer.status, &refused["error"]),
            (503, &json!("events_unavailable")),
            "{method} {path}"
        );
    }
    no_log.stop();

    let dir = tempfile::tempdir().unwrap();
    let pruned = start(Config {
        event_retention_bytes: 1,
        ..Config::for_tests_in(dir.path())
    });
    common::in_process::fill_and_snapshot(&pruned.ledger);
    let call = |method: &str, path: &str, body: Option<&str>| {
        exchange(&pruned.addr, &request(method, path, Some(API), body))
    };
    for (method, template, path, body) in [
        ("get", "/v1/events", "/v1/events?after=1", None),
        (
            "get",
            "/v1/events/stream",
            "/v1/events/stream?after=1",
            None,
        ),
        (
            "put",
            CURSOR,
            "/v1/consumers/a/cursor",
            Some(r#"{"lsn": 1}"#),
        ),
    ] {
        let answer = call(&method.to_ascii_uppercase(), path, body);
        let refused = c.check(template, method, &answer);
        assert_eq!(
            (answer.status, &refused["error"]),
            (410, &json!("cursor_expired")),
            "{method} {path}"
        );
    }
    pruned.stop();
}

/// The event feed's routes (`src/http/events.rs`): each success and each
/// refusal the document lists, but 503 (the shutdown below answers it).
fn feed_routes(c: &mut Checker, call: &dyn Fn(&str, &str, Option<&str>) -> Answer) {
    let events = "/v1/events";
    for (path, status) in [
        ("/v1/events?after=0&limit=3", 200),
        ("/v1/events?limit=0", 400),
        ("/v1/events?consumer=nobody", 404),
    ] {
        let answer = call("GET", path, None);
        assert_eq!(answer.status, status, "{path}: {answer:?}");
        let body = c.check(events, "get", &answer);
        if status == 200 {
            assert_eq!(body["events"].as_array().map(Vec::len), Some(3), "{body}");
        }
    }
    let stream = "/v1/events/stream";
    for (path, status) in [
        ("/v1/events/stream?after=0", 200),
        ("/v1/events/stream?after=x", 400),
        ("/v1/events/stream?consumer=nobody", 404),
    ] {
        let answer = call("GET", path, None);
        assert_eq!(answer.status, status, "{path}: {answer:?}");
        c.check(stream, "get", &answer);
    }
    let put =
        |name: &str, body: &str| call("PUT", &format!("/v1/consumers/{name}/cursor"), Some(body));
    for (answer, status) in [
        (put("mailer", r#"{"lsn": 2}"#), 200),
        (put("bad%20name", r#"{"lsn": 2}"#), 400),
        (put("mailer", r#"{"lsn": "2"}"#), 400),
    ] {
        assert_eq!(answer.status, status, "{answer:?}");
        c.check(CURSOR, "put", &answer);
    }
    for (name, status) in [("mailer", 200), ("bad%20name", 400), ("nobody", 404)] {
        let answer = call("GET", &format!("/v1/consumers/{name}/cursor"), None);
        assert_eq!(answer.status, status, "{name}: {answer:?}");
        c.check(CURSOR, "get", &answer);
    }
    let listed = c.check("/v1/consumers", "get", &call("GET", "/v1/consumers", None));
    assert_eq!(listed, json!({"consumers": [{"name": "mailer", "lsn": 2}]}));
    let head = c.check(
        "/v1/journal/head",
        "get",
        &call("GET", "/v1/journal/head", None),
    );
    assert!(head["lsn"].as_u64().is_some_and(|lsn| lsn >= 3), "{head}");
    for (name, status) in [("mailer", 204), ("mailer", 404), ("bad%20name", 400)] {
        let answer = call("DELETE", &format!("/v1/consumers/{name}"), None);
        assert_eq!(answer.status, status, "{name}: {answer:?}");
        c.check("/v1/consumers/{name}", "delete", &answer);
    }
}

/// An account's controls (`src/http/accounts.rs`) and the refusals they
/// bring: each success and refusal the document lists, but 401, 408, 413
/// and 503 (the loops over every operation answer them). The freeze gives
/// deposits, withdrawals and transfers their 403, with its details.
fn account_routes(c: &mut Checker, call: &dyn Fn(&str, &str, Option<&str>) -> Answer) {
    for (body, status) in [(r#"{"tier": "vip"}"#, 200), (r#"{"tier": "no tier"}"#, 400)] {
        let answer = call("PUT", "/v1/accounts/7/tier", Some(body));
        assert_eq!(answer.status, status, "{answer:?}");
        c.check(TIER, "put", &answer);
    }
    for (path, status) in [
        ("/v1/accounts/7/withdrawal-allowance?currency=USD", 200),
        ("/v1/accounts/7/withdrawal-allowance?currency=XYZ", 400),
    ] {
        let answer = call("GET", path, None);
        assert_eq!(answer.status, status, "{answer:?}");
        c.check(ALLOWANCE, "get", &answer);
    }
    let funds = r#"{"account": 7, "currency": "USD", "amount": "5"}"#;
    c.check(
        "/v1/deposits",
        "post",
        &call("POST", "/v1/deposits", Some(funds)),
    );
    for (body, status) in [
        (r#"{"scope": "some", "reason": "r"}"#, 400),
        (r#"{"scope": "all", "reason": "fraud"}"#, 200),
    ] {
        let answer = call("POST", "/v1/accounts/7/freeze", Some(body));
        assert_eq!(answer.status, status, "{answer:?}");
        c.check(FREEZE, "post", &answer);
    }
    for (template, body) in [
        ("/v1/deposits", funds),
        ("/v1/withdrawals", funds),
        (
            "/v1/transfers",
            r#"{"from": 7, "to": 8, "currency": "USD", "amount": "1"}"#,
        ),
    ] {
        let answer = call("POST", template, Some(body));
        let refused = c.check(template, "post", &answer);
        assert_eq!(
            (
                answer.status,
                &refused["error"],
                &refused["details"]["reason"]
            ),
            (403, &json!("account_frozen"), &json!("fraud")),
            "{template}"
        );
    }
    for (path, status) in [
        ("/v1/accounts/7/freeze", 200),
        ("/v1/accounts/x/freeze", 400),
    ] {
        let answer = call("DELETE", path, None);
        assert_eq!(answer.status, status, "{answer:?}");
        c.check(FREEZE, "delete", &answer);
    }
}

fn config_in(dir: &std::path::Path, bank: &SimulatedBank) -> Config {
    Config {
        payout_mode: PayoutMode::Batched {
            interval_secs: 24 * 3600,
        },
        payment_service: Some(SharedPaymentService::new(bank.clone())),
        ..Config::for_tests_in(dir)
    }
}

#[test]
fn every_answer_matches_the_document() {
    let doc: Value = serde_json::from_str(&http::openapi::document()).unwrap();
    let mut c = Checker::new(doc);
    let dir = tempfile::tempdir().unwrap();
    let bank = SimulatedBank::default();
    let config = config_in(dir.path(), &bank);
    let fail_point = config.wal_fail_point.clone();
    let server = start(config);
    let addr = server.addr.clone();
    let call = |method: &str, path: &str, body: Option<&str>| {
        exchange(&addr, &request(method, path, Some(API), body))
    };
    let anonymous = |method: &str, path: &str| exchange(&addr, &request(method, path, None, None));

    // Open routes.
    c.check("/healthz", "get", &anonymous("GET", "/healthz"));
    let served = anonymous("GET", "/openapi.json");
    c.check("/openapi.json", "get", &served);
    assert_eq!(
        served.body,
        http::openapi::document().into_bytes(),
        "the server serves the document"
    );
    c.check("/metrics", "get", &anonymous("GET", "/metrics"));
    let metrics = exchange(&addr, &request("GET", "/metrics", Some(METRICS), None));
    c.check("/metrics", "get", &metrics);
    assert_eq!(metrics.status, 200);

    // Every /v1 operation without the token: 401.
    let v1: [(&str, &str, &str); 28] = [
        ("put", TIER, "/v1/accounts/1/tier"),
        ("post", FREEZE, "/v1/accounts/1/freeze"),
        ("delete", FREEZE, "/v1/accounts/1/freeze"),
        (
            "get",
            ALLOWANCE,
            "/v1/accounts/1/withdrawal-allowance?currency=USD",
        ),
        ("post", "/v1/deposits", "/v1/deposits"),
        ("post", "/v1/withdrawals", "/v1/withdrawals"),
        ("get", "/v1/withdrawals", "/v1/withdrawals"),
        (
            "get",
            "/v1/accounts/{account}/withdrawals",
            "/v1/accounts/1/withdrawals",
        ),
        (
            "get",
            "/v1/accounts/{account}/entries",
            "/v1/accounts/1/entries",
        ),
        (
            "get",
            "/v1/transactions/{transaction_id}",
            "/v1/transactions/x",
        ),
        (
            "get",
            "/v1/withdrawals/{transaction_id}",
            "/v1/withdrawals/x",
        ),
        (
            "post",
            "/v1/withdrawals/{transaction_id}/cancel",
            "/v1/withdrawals/x/cancel",
        ),
        (
            "post",
            "/v1/withdrawals/{transaction_id}/status",
            "/v1/withdrawals/x/status",
        ),
        ("post", "/v1/transfers", "/v1/transfers"),
        (
            "get",
            "/v1/accounts/{account}/balances",
            "/v1/accounts/1/balances",
        ),
        ("post", "/v1/payouts/run", "/v1/payouts/run"),
        ("get", "/v1/payouts", "/v1/payouts"),
        ("get", "/v1/payouts/{payout_id}", "/v1/payouts/1"),
        ("post", RESOLVE, "/v1/payouts/1/items/x/resolve"),
        ("post", "/v1/admin/promote", "/v1/admin/promote"),
        ("get", "/v1/replication", "/v1/replication"),
        ("get", "/v1/events", "/v1/events"),
        ("get", "/v1/events/stream", "/v1/events/stream"),
        ("get", "/v1/consumers", "/v1/consumers"),
        ("get", CURSOR, "/v1/consumers/x/cursor"),
        ("put", CURSOR, "/v1/consumers/x/cursor"),
        ("delete", "/v1/consumers/{name}", "/v1/consumers/x"),
        ("get", "/v1/journal/head", "/v1/journal/head"),
    ];
    for (method, template, path) in v1 {
        let answer = anonymous(&method.to_ascii_uppercase(), path);
        assert_eq!(answer.status, 401, "{method} {path}");
        c.check(template, method, &answer);
    }

    // A server that is not a replicated node: 409 `not_replicated`.
    for (method, path) in [("post", "/v1/admin/promote"), ("get", "/v1/replication")] {
        let answer = call(&method.to_ascii_uppercase(), path, None);
        let body = c.check(path, method, &answer);
        assert_eq!(
            (answer.status, &body["error"]),
            (409, &json!("not_replicated"))
        );
    }

    // Deposits: 201, 400, 409, 413.
    let deposit = |account: u64, amount: &str, key: Option<&str>| {
        let mut body = json!({"account": account, "currency": "USD", "amount": amount});
        if let Some(key) = key {
            body["idempotency_key"] = json!(key);
        }
        call("POST", "/v1/deposits", Some(&body.to_string()))
    };
    c.check("/v1/deposits", "post", &deposit(1, "100", Some("k1")));
    c.check("/v1/deposits", "post", &deposit(1, "5", Some("k1")));
    c.check("/v1/deposits", "post", &deposit(1, "abc", None));
    c.check(
        "/v1/deposits",
        "post",
        &call("POST", "/v1/deposits", Some("{")),
    );
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024));
    for (method, template, path) in [
        ("post", "/v1/deposits", "/v1/deposits"),
        ("post", "/v1/withdrawals", "/v1/withdrawals"),
        ("post", "/v1/transfers", "/v1/transfers"),
        (
            "post",
            "/v1/withdrawals/{transaction_id}/status",
            "/v1/withdrawals/x/status",
        ),
        ("post", RESOLVE, "/v1/payouts/1/items/x/resolve"),
        ("put", CURSOR, "/v1/consumers/x/cursor"),
        ("put", TIER, "/v1/accounts/1/tier"),
        ("post", FREEZE, "/v1/accounts/1/freeze"),
    ] {
        let verb = method.to_ascii_uppercase();
        let answer = call(&verb, path, Some(&huge));
        assert_eq!(answer.status, 413, "{path}");
        c.check(template, method, &answer);
        // Half a body: 408 at the deadline.
        let half = format!(
            "{verb} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {API}\r\n\
             Content-Length: 50\r\n\r\n{{\"acc"
        );
        let answer = exchange(&addr, half.as_bytes());
        assert_eq!(answer.status, 408, "{path}");
        c.check(template, method, &answer);
    }

    // Withdrawals: 201, 400, 409; one read, cancelled, another completed.
    let withdraw = |amount: &str| {
        let body = json!({"account": 1, "currency": "USD", "amount": amount});
        call("POST", "/v1/withdrawals", Some(&body.to_string()))
    };
    let w = c.check("/v1/withdrawals", "post", &withdraw("10"));
    let tx = w["transaction_id"].as_str().unwrap().to_string();
    c.check("/v1/withdrawals", "post", &withdraw("1000"));
    c.check("/v1/withdrawals", "post", &withdraw("-1"));
    let one = "/v1/withdrawals/{transaction_id}";
    c.check(
        one,
        "get",
        &call("GET", &format!("/v1/withdrawals/{tx}"), None),
    );
    let nowhere = "00000000000000630000000000000001";
    c.check(
        one,
        "get",
        &call("GET", &format!("/v1/withdrawals/{nowhere}"), None),
    );
    let cancel = "/v1/withdrawals/{transaction_id}/cancel";
    c.check(
        cancel,
        "post",
        &call("POST", &format!("/v1/withdrawals/{tx}/cancel"), None),
    );
    c.check(
        cancel,
        "post",
        &call("POST", &format!("/v1/withdrawals/{nowhere}/cancel"), None),
    );
    let status = "/v1/withdrawals/{transaction_id}/status";
    let done = Some(r#"{"status": "completed"}"#);
    let path = format!("/v1/withdrawals/{tx}/status");
    c.check(status, "post", &call("POST", &path, done));
    c.check(
        status,
        "post",
        &call("POST", &path, Some(r#"{"status": "bogus"}"#)),
    );
    let nowhere_status = format!("/v1/withdrawals/{nowhere}/status");
    c.check(status, "post", &call("POST", &nowhere_status, done));
    let w2 = c.check("/v1/withdrawals", "post", &withdraw("5"));
    let tx2 = w2["transaction_id"].as_str().unwrap().to_string();
    let path2 = format!("/v1/withdrawals/{tx2}/status");
    c.check(
        status,
        "post",
        &call(
            "POST",
            &path2,
            Some(r#"{"status": "failed", "reason": "closed"}"#),
        ),
    );
    // This server's payouts pay: a caller's outcome is 409 (the external
    // server below answers 200).
    c.check(status, "post", &call("POST", &path2, done));
    c.check(
        cancel,
        "post",
        &call("POST", &format!("/v1/withdrawals/{tx2}/cancel"), None),
    );

    // Transfers: 201, 400, 409.
    let transfer = |from: u64, to: u64, amount: &str| {
        let body = json!({"from": from, "to": to, "currency": "USD", "amount": amount});
        call("POST", "/v1/transfers", Some(&body.to_string()))
    };
    c.check("/v1/transfers", "post", &transfer(1, 2, "1"));
    c.check("/v1/transfers", "post", &transfer(1, 1, "1"));
    c.check("/v1/transfers", "post", &transfer(2, 1, "500"));

    // Balances: 200, 400.
    let balances = "/v1/accounts/{account}/balances";
    c.check(
        balances,
        "get",
        &call("GET", "/v1/accounts/1/balances", None),
    );
    c.check(
        balances,
        "get",
        &call("GET", "/v1/accounts/x/balances", None),
    );

    // Payouts: a pending withdrawal paid by a run; listed; read; 404.
    c.check("/v1/withdrawals", "post", &withdraw("3"));
    let run = c.check(
        "/v1/payouts/run",
        "post",
        &call("POST", "/v1/payouts/run", None),
    );
    let payout_id = run[0]["payout_id"].as_u64().expect("a payout was made");
    c.check("/v1/payouts", "get", &call("GET", "/v1/payouts", None));
    c.check(
        "/v1/payouts",
        "get",
        &call("GET", "/v1/payouts?limit=0", None),
    );

    // The history: listings (JSON; the CSV form is checked in
    // tests/http_history.rs), entries, transactions, balances as of a time.
    for (template, path) in [
        (
            "/v1/withdrawals",
            "/v1/withdrawals?status=completed,pending&limit=2",
        ),
        ("/v1/withdrawals", "/v1/withdrawals?order=sideways"),
        (
            "/v1/accounts/{account}/withdrawals",
            "/v1/accounts/1/withdrawals",
        ),
        (
            "/v1/accounts/{account}/withdrawals",
            "/v1/accounts/1/withdrawals?after=zz",
        ),
        (
            "/v1/accounts/{account}/entries",
            "/v1/accounts/1/entries?limit=3",
        ),
        (
            "/v1/accounts/{account}/entries",
            "/v1/accounts/1/entries?limit=0",
        ),
        (balances, "/v1/accounts/1/balances?at=2030-01-01T00:00:00Z"),
        (balances, "/v1/accounts/1/balances?at=never"),
    ] {
        c.check(template, "get", &call("GET", path, None));
    }
    let transaction = "/v1/transactions/{transaction_id}";
    for path in [
        format!("/v1/transactions/{tx}"),
        format!("/v1/transactions/{nowhere}"),
    ] {
        c.check(transaction, "get", &call("GET", &path, None));
    }
    let deposit_tx = c.check("/v1/deposits", "post", &deposit(4, "1", None));
    let deposit_tx = deposit_tx["transaction_id"].as_str().unwrap().to_string();
    c.check(
        transaction,
        "get",
        &call("GET", &format!("/v1/transactions/{deposit_tx}"), None),
    );
    let moved = c.check("/v1/transfers", "post", &transfer(4, 2, "1"));
    let moved = moved["transaction_id"].as_str().unwrap().to_string();
    c.check(
        transaction,
        "get",
        &call("GET", &format!("/v1/transactions/{moved}"), None),
    );
    let one_payout = "/v1/payouts/{payout_id}";
    c.check(
        one_payout,
        "get",
        &call("GET", &format!("/v1/payouts/{payout_id}"), None),
    );
    c.check(one_payout, "get", &call("GET", "/v1/payouts/999", None));

    // An operator's resolution: a payout whose submit never reached the
    // bank stays processing; the caller's update is 409 payout_in_flight,
    // the resolution 200, again 409, elsewhere 404, malformed 400.
    bank.set_faults(SimulatedBankConfig {
        unknown_outcome_per_mille: 1000,
        ..SimulatedBankConfig::default()
    });
    let stuck = c.check("/v1/withdrawals", "post", &withdraw("2"));
    let stuck = stuck["transaction_id"].as_str().unwrap().to_string();
    let run = c.check(
        "/v1/payouts/run",
        "post",
        &call("POST", "/v1/payouts/run", None),
    );
    let held = run[0]["payout_id"].as_u64().expect("a payout was made");
    let in_flight = call(
        "POST",
        &format!("/v1/withdrawals/{stuck}/status"),
        Some(r#"{"status": "failed", "reason": "x"}"#),
    );
    let refused = c.check(
        "/v1/withdrawals/{transaction_id}/status",
        "post",
        &in_flight,
    );
    assert_eq!(refused["error"], "payout_in_flight", "{refused}");
    let resolve = |payout: u64, tx: &str, body: &str| {
        call(
            "POST",
            &format!("/v1/payouts/{payout}/items/{tx}/resolve"),
            Some(body),
        )
    };
    let paid = r#"{"resolution": "paid", "note": "bank statement 7"}"#;
    for (answer, status) in [
        (
            resolve(held, &stuck, r#"{"resolution": "maybe", "note": "n"}"#),
            400,
        ),
        (resolve(held, &stuck, paid), 200),
        (resolve(held, &stuck, paid), 409),
        (resolve(999, &stuck, paid), 404),
    ] {
        assert_eq!(answer.status, status, "{answer:?}");
        c.check(RESOLVE, "post", &answer);
    }
    bank.set_faults(SimulatedBankConfig::default());

    feed_routes(&mut c, &call);

    // 404 and 405 outside any operation.
    c.check_error(&call("GET", "/v1/nothing", None), 404);
    c.check_error(&call("GET", "/nothing", None), 404);
    c.check_error(&call("DELETE", "/v1/deposits", None), 405);
    c.check_error(&call("POST", "/healthz", None), 405);

    // A storage failure (503 poisoned), then a ledger shut down under a
    // running server (503 shutting_down): whatever each operation answers
    // must be documented; assert_all_seen below wants a 503 from each.
    fail_point.fail_syncs(true);
    c.check("/v1/deposits", "post", &deposit(1, "1", None));
    fail_point.fail_syncs(false);
    let every_v1 = |c: &mut Checker| {
        for (method, template, path) in v1 {
            let body = match (method, template) {
                ("get", _) => None,
                (_, "/v1/withdrawals/{transaction_id}/status") => {
                    Some(r#"{"status": "completed"}"#)
                }
                (_, RESOLVE) => Some(r#"{"resolution": "paid", "note": "n"}"#),
                (_, CURSOR) => Some(r#"{"lsn": 1}"#),
                (_, TIER) => Some(r#"{"tier": "vip"}"#),
                ("post", FREEZE) => Some(r#"{"scope": "all", "reason": "r"}"#),
                (_, "/v1/deposits" | "/v1/withdrawals") => {
                    Some(r#"{"account": 1, "currency": "USD", "amount": "1"}"#)
                }
                (_, "/v1/transfers") => {
                    Some(r#"{"from": 1, "to": 2, "currency": "USD", "amount": "1"}"#)
                }
                _ => None,
            };
            let path = path.replace("/x", &format!("/{tx}"));
            let answer = call(&method.to_ascii_uppercase(), &path, body);
            c.check(template, method, &answer);
        }
        c.check("/healthz", "get", &anonymous("GET", "/healthz"));
    };
    every_v1(&mut c);
    InProcess::block_on(server.ledger.shutdown());
    every_v1(&mut c);
    server.stop();

    // External mode: no payouts run here, 400.
    let dir = tempfile::tempdir().unwrap();
    let external = start(Config::for_tests_in(dir.path()));
    let answer = exchange(
        &external.addr,
        &request("POST", "/v1/payouts/run", Some(API), None),
    );
    c.check("/v1/payouts/run", "post", &answer);
    // Here callers report outcomes: 200; then a failed one cannot be
    // cancelled: 409.
    let ext = |method: &str, path: &str, body: Option<&str>| {
        exchange(&external.addr, &request(method, path, Some(API), body))
    };
    let funds = r#"{"account": 5, "currency": "USD", "amount": "10"}"#;
    c.check(
        "/v1/deposits",
        "post",
        &ext("POST", "/v1/deposits", Some(funds)),
    );
    let w = c.check(
        "/v1/withdrawals",
        "post",
        &ext("POST", "/v1/withdrawals", Some(funds)),
    );
    let tx = w["transaction_id"].as_str().unwrap().to_string();
    let failed = ext(
        "POST",
        &format!("/v1/withdrawals/{tx}/status"),
        Some(r#"{"status": "failed", "reason": "closed"}"#),
    );
    assert_eq!(failed.status, 200, "{failed:?}");
    c.check("/v1/withdrawals/{transaction_id}/status", "post", &failed);
    let cancel = ext("POST", &format!("/v1/withdrawals/{tx}/cancel"), None);
    assert_eq!(cancel.status, 409, "{cancel:?}");
    c.check("/v1/withdrawals/{transaction_id}/cancel", "post", &cancel);
    // On a server of its own: the first one's feed is read after, and the
    // account-control events are not the feed's to check here.
    account_routes(&mut c, &ext);
    external.stop();

    feed_unavailable_and_expired(&mut c);
    c.assert_all_seen();
}
