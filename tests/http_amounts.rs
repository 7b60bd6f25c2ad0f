//! Amounts over HTTP are judged as written: text that a `Decimal` parser
//! would round into an acceptable amount (or into zero) is `invalid_amount`
//! and changes nothing. The review's three strings, against the binary.

mod common;

use std::time::Duration;

use common::serve::{serve_command, spawn_listening};
use serde_json::{json, Value};

fn post(agent: &ureq::Agent, url: &str, body: Value) -> (u16, Value) {
    let mut response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("the server answers");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Kills the server however the test ends, so a failing assertion leaves
/// no process behind.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn over_precise_amount_strings_are_invalid_never_rounded() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = spawn_listening(&mut serve_command(dir.path()), Duration::from_secs(60));
    let _server = Killed(child);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let (status, _) = post(
        &agent,
        &format!("{base}/v1/deposits"),
        json!({"account": 1, "currency": "USD", "amount": "10.00"}),
    );
    assert_eq!(status, 201);
    let over_precise = [
        "1.999999999999999999999999999999".to_string(),
        format!("0.0{}", "9".repeat(40)),
        format!("0.{}1", "0".repeat(61)),
        "1.999".to_string(),
    ];
    for amount in &over_precise {
        for (path, body) in [
            (
                "deposits",
                json!({"account": 1, "currency": "USD", "amount": amount}),
            ),
            (
                "withdrawals",
                json!({"account": 1, "currency": "USD", "amount": amount}),
            ),
            (
                "transfers",
                json!({"from": 1, "to": 2, "currency": "USD", "amount": amount}),
            ),
        ] {
            let (status, answer) = post(&agent, &format!("{base}/v1/{path}"), body);
            assert_eq!(status, 400, "{path} {amount}: {answer}");
            assert_eq!(
                answer["error"], "invalid_amount",
                "{path} {amount}: {answer}"
            );
            let message = answer["message"].as_str().unwrap_or_default();
            assert!(
                !message.contains("greater than zero"),
                "{amount}: {message}"
            );
        }
    }
    let mut response = agent
        .get(format!("{base}/v1/accounts/1/balances"))
        .call()
        .unwrap();
    let balances: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(
        balances["balances"],
        json!([{"currency": "USD", "available": "10.00", "locked": "0.00", "total": "10.00"}]),
        "nothing changed"
    );
}
