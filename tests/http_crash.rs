//! Crash safety over HTTP: concurrent clients make deposits, withdrawals
//! and transfers against the real `burnledger serve` binary and record
//! every answer; the server is SIGKILLed mid-load and restarted on the same
//! data folder, then stopped with SIGTERM mid-load (it must exit 0), then
//! SIGKILLed again. Then:
//!
//! 1. the balances are exactly what the acknowledged (2xx) operations
//!    make, plus some subset of the few operations whose answer was lost in
//!    the stop (at most one per client per stop) — nothing acknowledged is
//!    missing, nothing refused is there;
//! 2. every acknowledged withdrawal is there, pending, with its amount;
//! 3. replaying every acknowledged operation with its idempotency key
//!    answers the same transaction id and changes nothing (the keys
//!    survived the crash too);
//! 4. replaying the lost ones settles them: the balances are then exactly
//!    acknowledged + replayed-and-accepted, and per currency the totals
//!    equal the deposits.
//!
//! No sleeps: the kill happens when the clients have reported enough
//! acknowledgements over a channel, and startup waits for the
//! "listening on" line.

#![cfg(all(feature = "cli", feature = "http"))]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const CLIENTS: u64 = 4;
const ACCOUNTS: u64 = 6;
const CURRENCIES: [&str; 2] = ["USD", "EUR"];
/// Acknowledgements per round before the kill.
const ACKS_BEFORE_KILL: usize = 150;
/// Bound on each client's operations in one round.
const OPS_PER_CLIENT_MAX: u64 = 5_000;

#[derive(Clone, Debug)]
enum Op {
    Deposit {
        account: u64,
        currency: &'static str,
        cents: i64,
    },
    Withdraw {
        account: u64,
        currency: &'static str,
        cents: i64,
    },
    Transfer {
        from: u64,
        to: u64,
        currency: &'static str,
        cents: i64,
    },
}

#[derive(Clone, Debug)]
enum Outcome {
    /// 2xx: the answer's body.
    Acked(Value),
    /// A definite refusal (4xx or 503): changed nothing.
    Refused,
    /// No answer: the server died with it in flight (or before it).
    Unknown,
}

#[derive(Clone, Debug)]
struct Sent {
    op: Op,
    key: String,
    outcome: Outcome,
    /// Sent in a round that ended with SIGTERM: a request without an
    /// answer there must not have been applied (in-flight requests finish).
    graceful: bool,
}

fn amount(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

impl Op {
    fn request(&self, key: &str) -> (&'static str, Value) {
        match self {
            Op::Deposit {
                account,
                currency,
                cents,
            } => (
                "/v1/deposits",
                json!({"account": account, "currency": currency, "amount": amount(*cents), "idempotency_key": key}),
            ),
            Op::Withdraw {
                account,
                currency,
                cents,
            } => (
                "/v1/withdrawals",
                json!({"account": account, "currency": currency, "amount": amount(*cents), "idempotency_key": key}),
            ),
            Op::Transfer {
                from,
                to,
                currency,
                cents,
            } => (
                "/v1/transfers",
                json!({"from": from, "to": to, "currency": currency, "amount": amount(*cents), "idempotency_key": key}),
            ),
        }
    }

    /// Applies the operation to a model of (account, currency) →
    /// (available, locked) in cents.
    fn apply(&self, model: &mut Model) {
        fn entry<'a>(
            model: &'a mut Model,
            account: u64,
            currency: &'static str,
        ) -> &'a mut (i64, i64) {
            model.entry((account, currency)).or_insert((0, 0))
        }
        match *self {
            Op::Deposit {
                account,
                currency,
                cents,
            } => entry(model, account, currency).0 += cents,
            Op::Withdraw {
                account,
                currency,
                cents,
            } => {
                let e = entry(model, account, currency);
                e.0 -= cents;
                e.1 += cents;
            }
            Op::Transfer {
                from,
                to,
                currency,
                cents,
            } => {
                entry(model, from, currency).0 -= cents;
                entry(model, to, currency).0 += cents;
            }
        }
    }
}

type Model = BTreeMap<(u64, &'static str), (i64, i64)>;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// POSTs JSON; `None` when there is no answer.
fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Option<(u16, Value)> {
    let mut response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .ok()?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn get(agent: &ureq::Agent, url: &str) -> (u16, Value) {
    let mut response = agent.get(url).call().expect("the server answers");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

struct Served {
    child: Child,
    url: String,
}

impl Served {
    fn start(data_dir: &Path) -> Self {
        let mut command = common::serve::serve_command(data_dir);
        command.stderr(Stdio::inherit());
        let (child, url) = common::serve::spawn_listening(&mut command, START_TIMEOUT);
        let agent = agent();
        let deadline = Instant::now() + START_TIMEOUT;
        while !agent
            .get(format!("{url}/healthz"))
            .call()
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(Instant::now() < deadline, "no healthy server in time");
        }
        Self { child, url }
    }

    /// SIGKILL: no shutdown, no final snapshot.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM: requests in flight finish, the ledger shuts down (with a
    /// snapshot), and the server exits 0.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + START_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "serve exits 0 on SIGTERM: {status:?}");
    }

    fn balances(&self) -> Model {
        let agent = agent();
        let mut model = Model::new();
        for account in 0..ACCOUNTS {
            let (status, body) = get(
                &agent,
                &format!("{}/v1/accounts/{account}/balances", self.url),
            );
            assert_eq!(status, 200, "{body}");
            for b in body["balances"].as_array().unwrap() {
                let currency = CURRENCIES
                    .into_iter()
                    .find(|c| b["currency"] == *c)
                    .expect("only the test's currencies");
                let cents = |k: &str| -> i64 {
                    let text = b[k].as_str().unwrap();
                    let (whole, frac) = text.split_once('.').unwrap();
                    let sign = if whole.starts_with('-') { -1 } else { 1 };
                    whole.parse::<i64>().unwrap() * 100 + sign * frac.parse::<i64>().unwrap()
                };
                let (available, locked) = (cents("available"), cents("locked"));
                assert!(available >= 0 && locked >= 0, "{b}");
                assert_eq!(available + locked, cents("total"), "{b}");
                model.insert((account, currency), (available, locked));
            }
        }
        model
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Drops zero entries, so a model and the server's balances compare.
fn normalized(model: &Model) -> Model {
    model
        .iter()
        .filter(|(_, v)| **v != (0, 0))
        .map(|(k, v)| (*k, *v))
        .collect()
}

/// How a round ends.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Kill,
    Terminate,
}

/// One round: clients load the server until `ACKS_BEFORE_KILL` answers
/// were 2xx, then the server is stopped mid-load; returns everything sent.
fn load_and_stop(served: Served, round: u64, stop: Stop) -> Vec<Sent> {
    let (acked_tx, acked_rx) = mpsc::channel::<()>();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let url = served.url.clone();
            let acked_tx = acked_tx.clone();
            let stop_how = stop;
            std::thread::spawn(move || {
                let agent = agent();
                let mut rng = SmallRng::seed_from_u64(round * 1_000 + client);
                let mut sent = Vec::new();
                for n in 0..OPS_PER_CLIENT_MAX {
                    let currency = CURRENCIES[rng.random_range(0..CURRENCIES.len())];
                    let account = rng.random_range(0..ACCOUNTS);
                    let op = match rng.random_range(0..100) {
                        0..40 => Op::Deposit {
                            account,
                            currency,
                            cents: rng.random_range(100..5_000),
                        },
                        40..75 => Op::Withdraw {
                            account,
                            currency,
                            cents: rng.random_range(1..500),
                        },
                        _ => Op::Transfer {
                            from: account,
                            to: (account + rng.random_range(1..ACCOUNTS)) % ACCOUNTS,
                            currency,
                            cents: rng.random_range(1..1_000),
                        },
                    };
                    let key = format!("r{round}-c{client}-{n}");
                    let (path, body) = op.request(&key);
                    let outcome = match post(&agent, &format!("{url}{path}"), &body) {
                        Some((status, body)) if (200..300).contains(&status) => {
                            let _ = acked_tx.send(());
                            Outcome::Acked(body)
                        }
                        Some((status @ (400..500 | 503), body)) => {
                            assert!(
                                matches!(
                                    body["error"].as_str(),
                                    Some("insufficient_funds" | "overloaded")
                                ),
                                "unexpected refusal {status} {body}"
                            );
                            Outcome::Refused
                        }
                        Some((status, body)) => panic!("unexpected answer {status} {body}"),
                        None => Outcome::Unknown,
                    };
                    let stop = matches!(outcome, Outcome::Unknown);
                    sent.push(Sent {
                        op,
                        key,
                        outcome,
                        graceful: matches!(stop_how, Stop::Terminate),
                    });
                    if stop {
                        break;
                    }
                }
                sent
            })
        })
        .collect();
    drop(acked_tx);
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..ACKS_BEFORE_KILL {
        let left = deadline.saturating_duration_since(Instant::now());
        acked_rx
            .recv_timeout(left)
            .expect("enough acknowledgements before the kill");
    }
    match stop {
        Stop::Kill => served.kill(),
        Stop::Terminate => served.terminate(),
    }
    let sent: Vec<Sent> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("a client panicked"))
        .collect();
    let unknown = sent
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Unknown))
        .count();
    assert_eq!(
        unknown as u64, CLIENTS,
        "the kill came mid-load: every client lost its connection"
    );
    sent
}

#[test]
fn every_acknowledged_request_survives_sigkill_and_totals_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut sent = Vec::new();
    // Killed, stopped gracefully mid-load, killed again: recovery from the
    // log alone, then from the shutdown snapshot plus the log.
    for (round, stop) in [Stop::Kill, Stop::Terminate, Stop::Kill]
        .into_iter()
        .enumerate()
    {
        sent.extend(load_and_stop(Served::start(dir.path()), round as u64, stop));
    }
    let served = Served::start(dir.path());
    let agent = agent();

    let acked: Vec<&Sent> = sent
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Acked(_)))
        .collect();
    let unknown: Vec<&Sent> = sent
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Unknown))
        .collect();
    let refused = sent.len() - acked.len() - unknown.len();
    assert!(acked.len() >= 3 * ACKS_BEFORE_KILL);
    eprintln!(
        "sent {}: {} acknowledged, {refused} refused, {} lost in the kills",
        sent.len(),
        acked.len(),
        unknown.len()
    );

    // 1. Acknowledged + some subset of the lost ones, exactly.
    let mut model = Model::new();
    for s in &acked {
        s.op.apply(&mut model);
    }
    let on_server = normalized(&served.balances());
    let matching = (0u32..1 << unknown.len()).find(|subset| {
        let graceful_applied = unknown
            .iter()
            .enumerate()
            .any(|(i, s)| s.graceful && subset & (1 << i) != 0);
        if graceful_applied {
            return false;
        }
        let mut m = model.clone();
        for (i, s) in unknown.iter().enumerate() {
            if subset & (1 << i) != 0 {
                s.op.apply(&mut m);
            }
        }
        normalized(&m) == on_server
    });
    eprintln!(
        "the lost operations the server holds: {:?}",
        matching.map(|subset| {
            let held = unknown
                .iter()
                .enumerate()
                .filter(|(i, _)| subset & (1 << i) != 0);
            held.map(|(_, s)| s.key.as_str()).collect::<Vec<_>>()
        })
    );
    assert!(
        matching.is_some(),
        "the balances after the crashes are not the acknowledged operations plus \
         some of the ones lost in the kills:\nserver {on_server:?}\nacknowledged {model:?}"
    );

    // 2. Every acknowledged withdrawal is there, pending, as answered.
    for s in &acked {
        if let (Op::Withdraw { .. }, Outcome::Acked(body)) = (&s.op, &s.outcome) {
            let tx = body["transaction_id"].as_str().unwrap();
            let (status, now) = get(&agent, &format!("{}/v1/withdrawals/{tx}", served.url));
            assert_eq!((status, &now), (200, body), "withdrawal {tx}");
            assert_eq!(now["status"], "pending");
        }
    }

    // 3. Replaying the acknowledged operations answers the first result and
    //    changes nothing.
    for s in &acked {
        let (path, body) = s.op.request(&s.key);
        let (status, answer) = post(&agent, &format!("{}{path}", served.url), &body).unwrap();
        let Outcome::Acked(first) = &s.outcome else {
            unreachable!()
        };
        assert!((200..300).contains(&status), "{status} {answer}");
        assert_eq!(
            answer["transaction_id"], first["transaction_id"],
            "replay of {}",
            s.key
        );
    }
    assert_eq!(normalized(&served.balances()), on_server);

    // 4. Replaying the lost ones settles each: accepted (then or now) or
    //    refused; afterwards the balances are exact.
    for s in &unknown {
        let (path, body) = s.op.request(&s.key);
        let (status, answer) = post(&agent, &format!("{}{path}", served.url), &body).unwrap();
        match status {
            200..300 => s.op.apply(&mut model),
            409 => assert_eq!(answer["error"], "insufficient_funds", "{answer}"),
            _ => panic!("unexpected replay answer {status} {answer}"),
        }
    }
    let final_balances = served.balances();
    assert_eq!(normalized(&final_balances), normalized(&model));
    let mut deposited: BTreeMap<&str, i64> = BTreeMap::new();
    for s in acked.iter().chain(&unknown) {
        if let Op::Deposit {
            currency, cents, ..
        } = s.op
        {
            // Only deposits the ledger holds: acknowledged, or lost and
            // then accepted (a deposit is never refused here).
            *deposited.entry(currency).or_insert(0) += cents;
        }
    }
    for currency in CURRENCIES {
        let total: i64 = final_balances
            .iter()
            .filter(|((_, c), _)| *c == currency)
            .map(|(_, (available, locked))| available + locked)
            .sum();
        assert_eq!(
            total,
            deposited.get(currency).copied().unwrap_or(0),
            "{currency}: the sum of totals is the sum of deposits"
        );
    }
}
