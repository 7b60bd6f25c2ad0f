//! The event feed over real HTTP (issue 15): the long poll (`GET
//! /v1/events`: order, consecutive LSNs, `wait` on the ledger's clock,
//! every bad parameter a 400 with its code), Server-Sent Events (`GET
//! /v1/events/stream`: ids are LSNs, `Last-Event-ID` resumes exactly after
//! it, the keep-alive comes on the ledger's clock), consumers' cursors
//! (`/v1/consumers...`), the journal's head and each consumer's lag in
//! `/metrics`, and must-show 1 over SSE: a consumer process
//! (`burnledger consume`) killed with SIGKILL at random moments and
//! restarted from its cursor sees every event, in order, duplicates only
//! within its unacknowledged window.

#![cfg(all(feature = "cli", feature = "http"))]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burnledger::clock::ManualClock;
use burnledger::domain::feed::FeedEvent;
use burnledger::http::HttpOptions;
use burnledger::Config;
use common::in_process::InProcess;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// The stream's keep-alive interval, on the ledger's clock.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// A test hangs rather than fails if an awaited answer never comes: bound it.
const DEADLINE: Duration = Duration::from_secs(60);

// ---- a client ----

#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn refused(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["error"], code, "{self:?}");
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    fn ok(self) -> Value {
        assert_eq!(self.status, 200, "{self:?}");
        self.body
    }
}

#[derive(Clone)]
struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    fn new(base: String) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(DEADLINE))
            .build()
            .into();
        Self { agent, base }
    }

    fn answer(mut response: ureq::http::Response<ureq::Body>) -> Answer {
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, body }
    }

    fn get(&self, path: &str) -> Answer {
        let url = format!("{}{path}", self.base);
        Self::answer(self.agent.get(url).call().expect("an answer"))
    }

    fn put(&self, path: &str, body: Value) -> Answer {
        let url = format!("{}{path}", self.base);
        Self::answer(self.agent.put(url).send_json(body).expect("an answer"))
    }

    fn post(&self, path: &str, body: Value) -> Answer {
        let url = format!("{}{path}", self.base);
        Self::answer(self.agent.post(url).send_json(body).expect("an answer"))
    }

    fn delete(&self, path: &str) -> Answer {
        let url = format!("{}{path}", self.base);
        Self::answer(self.agent.delete(url).call().expect("an answer"))
    }

    fn deposit(&self, account: u64, amount: &str) {
        let body = json!({"account": account, "currency": "USD", "amount": amount});
        let answer = self.post("/v1/deposits", body);
        assert_eq!(answer.status, 201, "{answer:?}");
    }

    fn withdraw(&self, account: u64, amount: &str) -> String {
        let body = json!({"account": account, "currency": "USD", "amount": amount});
        let answer = self.post("/v1/withdrawals", body);
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.body["transaction_id"].as_str().unwrap().to_owned()
    }

    /// One long poll; its events, parsed as the public type, and `next`.
    fn poll(&self, query: &str) -> (Vec<FeedEvent>, u64) {
        let body = self.get(&format!("/v1/events?{query}")).ok();
        let events = serde_json::from_value(body["events"].clone()).expect("FeedEvents");
        (events, body["next"].as_u64().expect("next"))
    }

    /// Every event the feed holds now, paged through with `next`.
    fn all_events(&self) -> Vec<FeedEvent> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let (events, next) = self.poll(&format!("after={after}&limit=1000"));
            if events.is_empty() {
                assert_eq!(next, after, "an empty page's next is its after");
                return all;
            }
            after = next;
            all.extend(events);
        }
    }

    /// Opens the event stream (`query`, `Last-Event-ID`); its answer when
    /// it is not a 200.
    fn stream(&self, query: &str, last_event_id: Option<&str>) -> Result<Sse, Answer> {
        let url = format!("{}/v1/events/stream?{query}", self.base);
        let mut request = self.agent.get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.call().expect("an answer");
        if response.status() != 200 {
            return Err(Self::answer(response));
        }
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert_eq!(content_type, "text/event-stream");
        Ok(Sse {
            reader: BufReader::new(response.into_body().into_reader()),
        })
    }
}

// ---- Server-Sent Events, as a client reads them ----

struct Sse {
    reader: BufReader<ureq::BodyReader<'static>>,
}

/// One item of the stream.
#[derive(Debug, PartialEq)]
enum Item {
    Event {
        id: String,
        event: String,
        data: String,
    },
    Comment(String),
}

impl Sse {
    /// The next event or comment; `None` at the stream's end.
    fn next(&mut self) -> Option<Item> {
        let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).expect("the stream reads") == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if let Some(comment) = line.strip_prefix(':') {
                return Some(Item::Comment(comment.trim().to_owned()));
            }
            if line.is_empty() {
                if !data.is_empty() {
                    return Some(Item::Event { id, event, data });
                }
                continue;
            }
            let (field, value) = line.split_once(": ").expect("field: value");
            match field {
                "id" => id = value.to_owned(),
                "event" => event = value.to_owned(),
                "data" => data.push_str(value),
                other => panic!("unexpected field {other:?}"),
            }
        }
    }

    /// The next `count` events, each checked: the id is the LSN the data
    /// carries, the event name its type, the data a [`FeedEvent`].
    fn events(&mut self, count: usize) -> Vec<FeedEvent> {
        (0..count)
            .map(|_| match self.next() {
                Some(Item::Event { id, event, data }) => {
                    let parsed: FeedEvent = serde_json::from_str(&data).expect("a FeedEvent");
                    let raw: Value = serde_json::from_str(&data).unwrap();
                    assert_eq!(id, parsed.lsn.to_string(), "id is the LSN");
                    assert_eq!(raw["type"], event.as_str(), "event is the type");
                    parsed
                }
                other => panic!("expected an event, got {other:?}"),
            })
            .collect()
    }
}

fn lsns(events: &[FeedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.lsn).collect()
}

fn kind(event: &FeedEvent) -> String {
    serde_json::to_value(event).unwrap()["type"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn start(config: Config) -> (InProcess, Client) {
    let options = HttpOptions {
        workers: Some(2),
        // A stream a test dropped is noticed only at its next write (a
        // keep-alive the manual clock may never send): stopping waits 1 s
        // for it, not 30.
        shutdown_timeout_secs: 1,
        ..HttpOptions::default()
    };
    let server = InProcess::start(config, options);
    let client = Client::new(server.url());
    (server, client)
}

/// A durable ledger in `dir` on a manual clock.
fn manual(dir: &Path) -> (Config, ManualClock) {
    let clock = ManualClock::new();
    let config = Config {
        clock: clock.shared(),
        ..Config::for_tests_in(dir)
    };
    (config, clock)
}

/// Waits (bounded) until `count` timers are set on `clock`: the server is
/// waiting on it.
fn armed_at_least(clock: &ManualClock, count: usize) {
    InProcess::block_on(async {
        tokio::time::timeout(DEADLINE, clock.armed_at_least(count))
            .await
            .expect("the server waits on the clock")
    });
}

// ---- the long poll ----

#[test]
fn the_long_poll_answers_events_in_order_with_consecutive_lsns() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(Config::for_tests_in(dir.path()));
    c.deposit(1, "100");
    let tx = c.withdraw(1, "30");
    c.post(&format!("/v1/withdrawals/{tx}/cancel"), json!({}));
    c.post(
        "/v1/transfers",
        json!({"from": 1, "to": 2, "currency": "USD", "amount": "5"}),
    );

    let all = c.all_events();
    assert_eq!(lsns(&all), vec![1, 2, 3, 4]);
    let kinds: Vec<String> = all.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            "deposited",
            "withdrawal.requested",
            "withdrawal.cancelled",
            "transferred"
        ]
    );
    // The balances after each: the deposit's, the lock's, the transfer's.
    let after_lock = &all[1].balances[0];
    assert_eq!(
        (
            after_lock.available.to_string(),
            after_lock.locked.to_string()
        ),
        ("70.00".to_owned(), "30.00".to_owned())
    );

    // Pages of two, each `next` the last LSN; past the end, empty at once.
    let (page, next) = c.poll("after=0&limit=2");
    assert_eq!((lsns(&page), next), (vec![1, 2], 2));
    let (page, next) = c.poll(&format!("after={next}&limit=2"));
    assert_eq!((lsns(&page), next), (vec![3, 4], 4));
    let started = Instant::now();
    let (page, next) = c.poll("after=4&wait=0");
    assert_eq!((page.len(), next), (0, 4));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "wait=0 answers at once"
    );
    server.stop();
}

#[test]
fn wait_returns_as_soon_as_an_event_is_durable_and_times_out_on_the_ledgers_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (config, clock) = manual(dir.path());
    let (server, c) = start(config);
    c.deposit(1, "10");

    // Nothing after 1: a wait of 5 s ends only when the ledger's clock has
    // moved 5 s.
    let armed = clock.armed();
    let poller = {
        let c = c.clone();
        std::thread::spawn(move || c.poll("after=1&wait=5"))
    };
    armed_at_least(&clock, armed + 1);
    assert!(!poller.is_finished(), "the poll waits for the clock");
    clock.advance(Duration::from_secs(5));
    let (events, next) = poller.join().unwrap();
    assert_eq!((events.len(), next), (0, 1));

    // A poll waiting up to 60 s gets the next event when it is durable,
    // with the clock standing still.
    let armed = clock.armed();
    let poller = {
        let c = c.clone();
        std::thread::spawn(move || c.poll("after=1&wait=60"))
    };
    armed_at_least(&clock, armed + 1);
    c.deposit(2, "7");
    let (events, next) = poller.join().unwrap();
    assert_eq!((lsns(&events), next), (vec![2], 2));
    assert_eq!(kind(&events[0]), "deposited");
    server.stop();
}

#[test]
fn bad_parameters_are_400_with_their_code_and_an_unknown_consumer_404() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(Config::for_tests_in(dir.path()));
    c.deposit(1, "10");
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=1001", "invalid_limit"),
        ("limit=ten", "invalid_limit"),
        ("limit=-1", "invalid_limit"),
        ("wait=61", "invalid_input"),
        ("wait=-1", "invalid_input"),
        ("wait=1.5", "invalid_input"),
        ("after=x", "invalid_cursor"),
        ("after=-1", "invalid_cursor"),
        ("after=999", "invalid_cursor"),
        ("after=1&consumer=a", "invalid_input"),
        ("since=1", "invalid_input"),
        ("consumer=no%20spaces", "invalid_consumer"),
    ] {
        c.get(&format!("/v1/events?{query}")).refused(400, code);
    }
    c.get("/v1/events?consumer=nobody")
        .refused(404, "unknown_consumer");
    for (query, id, status, code) in [
        ("after=x", None, 400, "invalid_cursor"),
        ("", Some("abc"), 400, "invalid_cursor"),
        ("limit=5", None, 400, "invalid_input"),
        ("consumer=nobody", None, 404, "unknown_consumer"),
    ] {
        match c.stream(query, id) {
            Err(answer) => answer.refused(status, code),
            Ok(_) => panic!("{query} {id:?}: a stream"),
        }
    }
    server.stop();
}

// ---- Server-Sent Events ----

#[test]
fn stream_ids_are_lsns_and_last_event_id_resumes_exactly_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(Config::for_tests_in(dir.path()));
    for account in 1..=5 {
        c.deposit(account, "10");
    }
    let mut stream = c.stream("after=0", None).unwrap();
    let first = stream.events(5);
    assert_eq!(lsns(&first), vec![1, 2, 3, 4, 5]);
    assert_eq!(first, c.all_events(), "the stream and the poll agree");
    // Live: an event made after the stream opened comes down it.
    let tx = c.withdraw(3, "4");
    let live = stream.events(1);
    assert_eq!(lsns(&live), vec![6]);
    assert_eq!(kind(&live[0]), "withdrawal.requested");
    drop(stream);

    // Reconnecting with Last-Event-ID: 3 resumes at 4, whatever `after` says.
    let mut resumed = c.stream("after=0", Some("3")).unwrap();
    assert_eq!(lsns(&resumed.events(3)), vec![4, 5, 6]);
    drop(resumed);
    let mut from_after = c.stream("after=5", None).unwrap();
    assert_eq!(lsns(&from_after.events(1)), vec![6]);
    c.post(&format!("/v1/withdrawals/{tx}/cancel"), json!({}));
    assert_eq!(lsns(&from_after.events(1)), vec![7]);
    drop(from_after);

    // From a consumer's cursor.
    c.put("/v1/consumers/audit/cursor", json!({"lsn": 6})).ok();
    let mut consumer = c.stream("consumer=audit", None).unwrap();
    assert_eq!(lsns(&consumer.events(1)), vec![7]);
    drop(consumer);
    server.stop();
}

#[test]
fn the_stream_sends_a_keep_alive_after_15_s_of_silence_on_the_ledgers_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (config, clock) = manual(dir.path());
    let (server, c) = start(config);
    c.deposit(1, "10");
    let armed = clock.armed();
    let mut stream = c.stream("after=0", None).unwrap();
    assert_eq!(lsns(&stream.events(1)), vec![1]);
    // Caught up: the stream waits on the clock for the next event.
    armed_at_least(&clock, armed + 1);
    clock.advance(HEARTBEAT - Duration::from_secs(1));
    clock.advance(Duration::from_secs(1));
    assert_eq!(stream.next(), Some(Item::Comment("keep-alive".into())));
    // And goes on after it.
    c.deposit(2, "1");
    assert_eq!(lsns(&stream.events(1)), vec![2]);
    drop(stream);
    server.stop();
}

#[test]
fn an_error_after_the_start_is_an_error_event_and_the_end_of_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (config, clock) = manual(dir.path());
    let (server, c) = start(config);
    c.deposit(1, "10");
    let armed = clock.armed();
    let mut stream = c.stream("after=0", None).unwrap();
    assert_eq!(lsns(&stream.events(1)), vec![1]);
    armed_at_least(&clock, armed + 1);
    // The ledger shuts down under the stream: at the latest at the next
    // keep-alive, the stream says so and ends.
    InProcess::block_on(server.ledger.shutdown());
    clock.advance(HEARTBEAT);
    match stream.next() {
        Some(Item::Event { id, event, data }) => {
            assert_eq!((id.as_str(), event.as_str()), ("", "error"));
            let error: Value = serde_json::from_str(&data).unwrap();
            assert_eq!(error["error"], "shutting_down", "{error}");
            assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        other => panic!("expected an error event, got {other:?}"),
    }
    assert_eq!(stream.next(), None, "the stream ends after its error");
    server.stop();
}

/// A ledger whose log keeps nothing for consumers past one byte: past a
/// snapshot the oldest segments go, whoever has not read them.
fn pruned_past(dir: &Path) -> (InProcess, Client) {
    let (server, c) = start(Config {
        event_retention_bytes: 1,
        ..Config::for_tests_in(dir)
    });
    c.deposit(1, "1");
    c.put("/v1/consumers/slow/cursor", json!({"lsn": 1})).ok();
    common::in_process::fill_and_snapshot(&server.ledger);
    (server, c)
}

#[test]
fn a_position_the_log_no_longer_holds_is_410_cursor_expired() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = pruned_past(dir.path());
    let expired = c.get("/v1/events?after=1");
    expired.refused(410, "cursor_expired");
    c.get("/v1/events?consumer=slow")
        .refused(410, "cursor_expired");
    for (query, id) in [("after=1", None), ("consumer=slow", None), ("", Some("1"))] {
        match c.stream(query, id) {
            Err(answer) => answer.refused(410, "cursor_expired"),
            Ok(_) => panic!("{query} {id:?}: a stream from a pruned position"),
        }
    }
    c.put("/v1/consumers/slow/cursor", json!({"lsn": 1}))
        .refused(410, "cursor_expired");
    server.stop();
}

// ---- consumers ----

#[test]
fn a_consumers_cursor_is_set_read_listed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(Config::for_tests_in(dir.path()));
    for account in 1..=3 {
        c.deposit(account, "10");
    }
    c.get("/v1/consumers/mailer/cursor")
        .refused(404, "unknown_consumer");
    let set = c.put("/v1/consumers/mailer/cursor", json!({"lsn": 2})).ok();
    assert_eq!(set, json!({"name": "mailer", "lsn": 2}));
    let read = c.get("/v1/consumers/mailer/cursor").ok();
    assert_eq!(read, json!({"name": "mailer", "lsn": 2}));
    c.put("/v1/consumers/audit/cursor", json!({"lsn": 0})).ok();
    let listed = c.get("/v1/consumers").ok();
    assert_eq!(
        listed,
        json!({"consumers": [{"name": "audit", "lsn": 0}, {"name": "mailer", "lsn": 2}]})
    );
    // The long poll from the cursor.
    let (events, next) = c.poll("consumer=mailer");
    assert_eq!((lsns(&events), next), (vec![3], 3));

    // Bad input changes nothing.
    c.put("/v1/consumers/mailer/cursor", json!({"lsn": 99}))
        .refused(400, "invalid_cursor");
    c.put("/v1/consumers/bad%20name/cursor", json!({"lsn": 1}))
        .refused(400, "invalid_consumer");
    c.put("/v1/consumers/mailer/cursor", json!({"lsn": "2"}))
        .refused(400, "malformed_request");
    c.put("/v1/consumers/mailer/cursor", json!({"lsn": 1, "x": 1}))
        .refused(400, "malformed_request");
    let read = c.get("/v1/consumers/mailer/cursor").ok();
    assert_eq!(read, json!({"name": "mailer", "lsn": 2}));

    let removed = c.delete("/v1/consumers/mailer");
    assert_eq!(removed.status, 204, "{removed:?}");
    c.delete("/v1/consumers/mailer")
        .refused(404, "unknown_consumer");
    c.get("/v1/consumers/mailer/cursor")
        .refused(404, "unknown_consumer");
    let listed = c.get("/v1/consumers").ok();
    assert_eq!(listed, json!({"consumers": [{"name": "audit", "lsn": 0}]}));
    server.stop();
}

#[test]
fn the_journal_head_names_the_last_durable_event_and_metrics_show_each_consumers_lag() {
    let dir = tempfile::tempdir().unwrap();
    let (server, c) = start(Config::for_tests_in(dir.path()));
    let empty = c.get("/v1/journal/head").ok();
    assert_eq!(empty, json!({"lsn": 0, "hash": "0".repeat(64)}));
    c.deposit(1, "10");
    c.deposit(2, "10");
    let head = c.get("/v1/journal/head").ok();
    assert_eq!(head["lsn"], 2);
    let hash = head["hash"].as_str().unwrap().to_owned();
    assert!(
        hash.len() == 64
            && hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{hash}"
    );
    let own = server.ledger.journal_head().unwrap();
    assert_eq!((own.lsn, own.hash_hex()), (2, hash.clone()));
    c.deposit(3, "10");
    let next = c.get("/v1/journal/head").ok();
    assert_eq!(next["lsn"], 3);
    assert_ne!(next["hash"], hash.as_str(), "each record moves the chain");

    c.put("/v1/consumers/mailer/cursor", json!({"lsn": 1})).ok();
    c.put("/v1/consumers/audit/cursor", json!({"lsn": 3})).ok();
    let page = c.get("/metrics").body;
    let page = page.as_str().expect("Prometheus text");
    for line in [
        "burnledger_feed_consumer_lag{consumer=\"mailer\"} 2",
        "burnledger_feed_consumer_lag{consumer=\"audit\"} 0",
    ] {
        assert!(page.lines().any(|l| l == line), "{line} in\n{page}");
    }
    server.stop();
}

// ---- must-show 1 over SSE: a consumer killed with SIGKILL ----

/// Events the consumer acknowledges at once (`consume --ack-every`).
const ACK_EVERY: u64 = 5;

/// A child process killed (SIGKILL) when dropped, so a failing test
/// leaves no server or consumer behind.
struct Killed(Child);

impl Killed {
    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn consumer_command(url: &str, out: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_burnledger"));
    command
        .args(["consume", "--url", url, "--consumer", "sink", "--ack-every"])
        .arg(ACK_EVERY.to_string())
        .arg("--out")
        .arg(out)
        .env_remove("BURNLEDGER_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// The LSNs of the lines the consumer wrote (a last line without its
/// newline, which a kill could leave, is not counted).
fn written(out: &Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|line| {
            let (lsn, kind) = line.split_once(' ').expect("`lsn type`");
            (lsn.parse().expect("an LSN"), kind.to_owned())
        })
        .collect()
}

/// Waits until `condition` holds on the consumer's lines (a bounded poll:
/// another process's file has nothing to await).
fn until(
    out: &Path,
    what: &str,
    consumer: &mut Child,
    condition: impl Fn(&[(u64, String)]) -> bool,
) {
    let deadline = Instant::now() + DEADLINE;
    while !condition(&written(out)) {
        if let Some(status) = consumer.try_wait().unwrap() {
            panic!("the consumer exited ({status}) before {what}");
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_consumer_killed_mid_stream_and_restarted_sees_every_event_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = common::serve::spawn_listening(
        &mut common::serve::serve_command(&dir.path().join("data")),
        DEADLINE,
    );
    let server = Killed(server);
    let c = Client::new(url.clone());
    let out = dir.path().join("events.txt");

    // Writers: deposits, withdrawals and cancels through HTTP until told
    // to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (c, stop) = (c.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < 20_000 {
                    let account = 1 + w * 100 + n % 7;
                    c.deposit(account, "3");
                    let tx = c.withdraw(account, "1");
                    if n.is_multiple_of(2) {
                        c.post(&format!("/v1/withdrawals/{tx}/cancel"), json!({}));
                    }
                    n += 1;
                }
            })
        })
        .collect();

    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    for kill in 0..4 {
        let mut consumer = Killed(consumer_command(&url, &out).spawn().unwrap());
        let before = written(&out).len();
        let more = rng.random_range(1..=40);
        until(
            &out,
            &format!("kill {kill}: {more} more lines"),
            &mut consumer.0,
            |lines| lines.len() >= before + more,
        );
        consumer.kill(); // SIGKILL, mid-stream
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }

    // The last run catches up with the whole log.
    let all = c.all_events();
    let head = all.last().expect("events").lsn;
    let mut consumer = Killed(consumer_command(&url, &out).spawn().unwrap());
    until(&out, "the head", &mut consumer.0, |lines| {
        lines.last().is_some_and(|(lsn, _)| *lsn == head)
    });
    consumer.kill();

    let lines = written(&out);
    assert_eq!(lines.first().map(|l| l.0), Some(1), "from the first event");
    let mut restarts = 0;
    for pair in lines.windows(2) {
        let (prev, next) = (pair[0].0, pair[1].0);
        if next == prev + 1 {
            continue;
        }
        // A restart: back to just after the last acknowledged event, which
        // is at most ACK_EVERY before the last written; never a gap.
        assert!(next <= prev, "a gap: {prev} then {next}");
        assert!(
            prev + 1 - next <= ACK_EVERY,
            "{} duplicates after {prev}, more than the unacknowledged window of {ACK_EVERY}",
            prev + 1 - next
        );
        restarts += 1;
    }
    assert!(restarts <= 4, "at most one rewind per kill");
    println!(
        "{} lines for {head} events, {restarts} rewinds",
        lines.len()
    );
    assert_eq!(lines.last().map(|l| l.0), Some(head), "up to the head");
    for (lsn, kind_written) in &lines {
        let event = &all[usize::try_from(*lsn).unwrap() - 1];
        assert_eq!(&kind(event), kind_written, "the type of event {lsn}");
    }

    // (A graceful stop would wait for the killed consumer's stream, which
    // the server notices only at its next keep-alive.)
    server.kill();
}
