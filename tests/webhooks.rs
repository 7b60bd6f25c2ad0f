//! Must-show 1 over webhooks: the real `burnledger serve --webhook-url …`
//! delivers the event feed to a receiver in this process that VERIFIES
//! every signature (with its own HMAC, not the library's), fails 30 % of
//! deliveries (15 % answer 500, 15 % drop the connection unanswered) and
//! is itself stopped and restarted on the same port a few times, while a
//! writer adds deposits and the server is SIGKILLed at random moments and
//! restarted on the same data folder (every other time right after the
//! receiver took a batch, before the server heard its 2xx). Then a last deposit (the marker) is
//! made, the test waits for the receiver to take it, and stops the server
//! with SIGTERM. The batches the receiver took must:
//!
//! 1. each be signed, and hold consecutive LSNs;
//! 2. each start right after the highest LSN taken so far, or, when they
//!    repeat, exactly where the previous batch started (the only batch a
//!    killed server had not acknowledged): nothing skipped, no duplicate
//!    beyond the last unacknowledged batch;
//! 3. repeat an event identically when they repeat it;
//! 4. together cover every LSN from 1 to the marker's, and hold every
//!    deposit the server acknowledged, with its amount.
//!
//! Then the library's handle in process: it needs a log and a valid
//! consumer name; it registers its consumer, acknowledges what the
//! receiver took and ends with the ledger; stopping it never waits for a
//! silent receiver.
//!
//! No sleeps: kills and receiver restarts happen after counts of the
//! writer's acknowledgements; the end waits (a bounded poll) for the
//! marker to be taken.

#![cfg(all(feature = "cli", feature = "http"))]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sha2::Sha256;

use burnledger::webhook::{Webhook, WebhookSettings};
use burnledger::{Config, Ledger};

const SECRET: &str = "whsec_must_show_1";
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the receiver may take to see the marker after it is made (a
/// few failed attempts' backoff).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// Server lives ended by SIGKILL before the last one.
const KILLS: usize = 4;
/// How old a signature's time may be.
const TOLERANCE_SECS: u64 = 300;

// ---------------------------------------------------------------------------
// The receiver

/// What the receiver saw, across its restarts.
#[derive(Default)]
struct Seen {
    /// The events of each batch it took (answered 2xx), in order.
    taken: Vec<Vec<Value>>,
    /// Deliveries it failed on purpose.
    failed: usize,
    /// Deliveries whose signature did not verify (answered 400).
    forged: Vec<String>,
    /// When set, the next batch taken is announced on the first channel
    /// and its 2xx held back until the second says go (the test kills
    /// the server meanwhile: a batch taken, never acknowledged).
    hold: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
}

/// The receiver's own check of a signature header, Stripe's way: HMAC-
/// SHA256 over "t.body", compared in constant time, `t` recent.
fn verify(header: &str, body: &[u8]) -> Result<(), String> {
    let fields: BTreeMap<&str, &str> = header
        .split(',')
        .filter_map(|part| part.split_once('='))
        .collect();
    let (Some(t), Some(v1)) = (fields.get("t"), fields.get("v1")) else {
        return Err(format!("malformed {header:?}"));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t_secs: u64 = t.parse().map_err(|_| format!("bad t in {header:?}"))?;
    if t_secs.abs_diff(now) > TOLERANCE_SECS {
        return Err(format!("stale t in {header:?}"));
    }
    let digest: Vec<u8> = (0..v1.len())
        .step_by(2)
        .map(|i| {
            v1.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<_>>()
        .ok_or_else(|| format!("bad v1 in {header:?}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&digest)
        .map_err(|_| format!("signature mismatch in {header:?}"))
}

/// One request off `stream`: its signature header and body.
fn read_request(stream: &TcpStream) -> Option<(String, Vec<u8>)> {
    let mut reader = BufReader::new(stream);
    let (mut length, mut signature) = (None, String::new());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse::<usize>().ok(),
            "x-burnledger-signature" => signature = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; length?];
    reader.read_exact(&mut body).ok()?;
    Some((signature, body))
}

fn answer(mut stream: &TcpStream, status: &str) {
    let text = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(text.as_bytes());
}

/// Handles one connection's request: verify, then fail on purpose 30 %
/// of the time, else take the batch.
fn handle(stream: TcpStream, seen: &Mutex<Seen>, rng: &mut SmallRng) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Some((signature, body)) = read_request(&stream) else {
        return;
    };
    if let Err(why) = verify(&signature, &body) {
        seen.lock().unwrap().forged.push(why);
        return answer(&stream, "400 Bad Request");
    }
    let roll = rng.random_range(0..100);
    if roll < 30 {
        seen.lock().unwrap().failed += 1;
        if roll < 15 {
            answer(&stream, "500 Internal Server Error");
        }
        // else: dropped unanswered.
        return;
    }
    let batch: Value = serde_json::from_slice(&body).expect("the body is JSON");
    let events = batch["events"].as_array().expect("{events: [...]}").clone();
    let hold = {
        let mut seen = seen.lock().unwrap();
        seen.taken.push(events);
        seen.hold.take()
    };
    if let Some((held, go)) = hold {
        let _ = held.send(());
        let _ = go.recv_timeout(START_TIMEOUT);
    }
    answer(&stream, "200 OK");
}

/// The receiver while it listens.
struct Receiver {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Receiver {
    fn start(addr: SocketAddr, seen: Arc<Mutex<Seen>>, seed: u64) -> Self {
        let listener = TcpListener::bind(addr).expect("the receiver's port is free again");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut rng = SmallRng::seed_from_u64(seed);
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    handle(stream, &seen, &mut rng);
                }
            }
        });
        Self { addr, stop, thread }
    }

    /// Stops listening: connections are refused until the next start.
    fn stop(self) -> SocketAddr {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept
        self.thread.join().unwrap();
        self.addr
    }
}

// ---------------------------------------------------------------------------
// The server and the writer

struct Served {
    child: Child,
    url: String,
}

impl Served {
    fn start(data_dir: &Path, hook: &str) -> Self {
        let mut command = common::serve::serve_command(data_dir);
        command
            .args(["--webhook-url", hook, "--webhook-secret", SECRET])
            .args(["--webhook-batch", "16"])
            .stderr(Stdio::inherit());
        let (child, url) = common::serve::spawn_listening(&mut command, START_TIMEOUT);
        Self { child, url }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(mut self) {
        common::serve::terminate(&self.child);
        let status = common::serve::wait_exit(&mut self.child, START_TIMEOUT)
            .expect("serve exits after SIGTERM");
        assert!(status.success(), "serve exits 0 on SIGTERM: {status:?}");
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// A deposit; its transaction id and amount when acknowledged.
fn deposit(agent: &ureq::Agent, url: &str, rng: &mut SmallRng) -> Option<(String, String)> {
    let cents: u64 = rng.random_range(1..100_000);
    let amount = format!("{}.{:02}", cents / 100, cents % 100);
    let body = json!({"account": rng.random_range(1..20_u64), "currency": "USD", "amount": amount});
    let mut response = agent
        .post(format!("{url}/v1/deposits"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .ok()?;
    if response.status() != 201 {
        return None;
    }
    let answer: Value = serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()?;
    Some((answer["transaction_id"].as_str()?.to_string(), amount))
}

/// Deposits against `url` until `stop`; each acknowledged one is sent on
/// `acked`.
fn writer(url: String, seed: u64, stop: Arc<AtomicBool>, acked: mpsc::Sender<(String, String)>) {
    let (agent, mut rng) = (agent(), SmallRng::seed_from_u64(seed));
    while !stop.load(Ordering::SeqCst) {
        if let Some(deposit) = deposit(&agent, &url, &mut rng) {
            if acked.send(deposit).is_err() {
                return;
            }
        }
    }
}

/// SIGKILLs `served` after the receiver took a batch and before the
/// server hears so: the batch was taken and will never be acknowledged.
fn kill_while_a_batch_is_taken(served: Served, seen: &Mutex<Seen>) {
    let (held, taken) = mpsc::channel();
    let (go, wait) = mpsc::channel();
    seen.lock().unwrap().hold = Some((held, wait));
    taken
        .recv_timeout(DELIVERY_TIMEOUT)
        .expect("a batch is taken");
    served.kill();
    let _ = go.send(());
}

// ---------------------------------------------------------------------------
// The checks

/// Checks 1 to 3 over the batches taken; the events by LSN and how many
/// were delivered again.
fn check_batches(taken: &[Vec<Value>]) -> (BTreeMap<u64, Value>, usize) {
    let mut events = BTreeMap::<u64, Value>::new();
    let (mut highest, mut previous_start, mut again) = (0_u64, None, 0);
    for batch in taken {
        let lsns: Vec<u64> = batch.iter().map(|e| e["lsn"].as_u64().unwrap()).collect();
        assert!(!lsns.is_empty(), "an empty batch was delivered");
        assert!(
            lsns.windows(2).all(|w| w[1] == w[0] + 1),
            "a batch out of order or with a gap: {lsns:?}"
        );
        let start = lsns[0];
        assert!(
            start == highest + 1 || Some(start) == previous_start,
            "a batch from LSN {start} after {highest} was taken (the previous one started at \
             {previous_start:?}): skipped events, or duplicates beyond the last unacknowledged batch"
        );
        for event in batch {
            let lsn = event["lsn"].as_u64().unwrap();
            match events.get(&lsn) {
                Some(first) => {
                    again += 1;
                    assert_eq!(identity(first), identity(event), "LSN {lsn} changed");
                }
                None => {
                    events.insert(lsn, event.clone());
                }
            }
        }
        highest = highest.max(*lsns.last().unwrap());
        previous_start = Some(start);
    }
    (events, again)
}

/// What must not change when an event is delivered again.
fn identity(event: &Value) -> Value {
    json!([
        event["lsn"],
        event["type"],
        event["transaction_id"],
        event["amount"],
        event["time_ms"]
    ])
}

// ---------------------------------------------------------------------------

#[test]
fn every_event_reaches_a_failing_restarting_receiver_in_order_across_kills() {
    let seed: u64 = std::env::var("WEBHOOK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    eprintln!("seed {seed} (WEBHOOK_TEST_SEED)");
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut receiver = Some(Receiver::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::clone(&seen),
        seed,
    ));
    let addr = receiver.as_ref().unwrap().addr;
    let hook = format!("http://{addr}/hooks");
    let mut acknowledged = Vec::new();
    let mut receiver_restarts = 0;

    for round in 0..KILLS {
        let served = Served::start(dir.path(), &hook);
        let stop = Arc::new(AtomicBool::new(false));
        let (acked, acks) = mpsc::channel();
        let writing = {
            let (url, stop, seed) = (served.url.clone(), Arc::clone(&stop), rng.random());
            std::thread::spawn(move || writer(url, seed, stop, acked))
        };
        // The receiver goes down and comes back up (same port) at random
        // counts of acknowledged deposits; the server dies at another.
        let kill_after: u64 = rng.random_range(40..160);
        let receiver_down = rng.random_range(0..kill_after - 1);
        let receiver_up = rng.random_range(receiver_down + 1..kill_after);
        for count in 0..kill_after {
            let ack = acks
                .recv_timeout(START_TIMEOUT)
                .expect("the writer makes progress");
            acknowledged.push(ack);
            if count == receiver_down {
                receiver.take().unwrap().stop();
            }
            if count == receiver_up {
                receiver = Some(Receiver::start(addr, Arc::clone(&seen), seed + count));
                receiver_restarts += 1;
            }
        }
        if round % 2 == 0 {
            served.kill();
        } else {
            kill_while_a_batch_is_taken(served, &seen);
        }
        stop.store(true, Ordering::SeqCst);
        let _ = writing.join();
        acknowledged.extend(acks.try_iter());
    }

    let served = Served::start(dir.path(), &hook);
    let marker = deposit(&agent(), &served.url, &mut rng).expect("the marker is acknowledged");
    acknowledged.push(marker.clone());
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let marker_lsn = loop {
        let found = seen.lock().unwrap().taken.iter().flatten().find_map(|e| {
            (e["transaction_id"] == marker.0.as_str()).then(|| e["lsn"].as_u64().unwrap())
        });
        if let Some(lsn) = found {
            break lsn;
        }
        assert!(
            Instant::now() < deadline,
            "the marker was not delivered in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    served.terminate();
    receiver.take().unwrap().stop();

    let seen = seen.lock().unwrap();
    assert!(
        seen.forged.is_empty(),
        "unverified signatures: {:?}",
        seen.forged
    );
    let (events, again) = check_batches(&seen.taken);
    assert_eq!(
        events.keys().copied().collect::<Vec<_>>(),
        (1..=marker_lsn).collect::<Vec<_>>(),
        "every LSN up to the marker's, none past it"
    );
    let by_tx: BTreeMap<&str, &Value> = events
        .values()
        .filter_map(|e| Some((e["transaction_id"].as_str()?, e)))
        .collect();
    for (tx, amount) in &acknowledged {
        let event = by_tx
            .get(tx.as_str())
            .unwrap_or_else(|| panic!("deposit {tx} was never delivered"));
        assert_eq!(event["type"], "deposited");
        assert_eq!(event["amount"], amount.as_str(), "{tx}");
    }
    assert!(seen.failed > 0, "the receiver failed deliveries on purpose");
    assert!(
        again > 0,
        "batches taken but not acknowledged were delivered again"
    );
    eprintln!(
        "{} events in {} batches taken, {again} delivered again, {} failed on purpose, \
         {receiver_restarts} receiver restarts, {KILLS} kills",
        events.len(),
        seen.taken.len(),
        seen.failed
    );
}

#[test]
fn the_receivers_check_refuses_a_forged_or_stale_signature() {
    // Guards the test above: a receiver that took anything would prove nothing.
    let body = br#"{"events":[]}"#;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |t: u64, body: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("t={t},v1={hex}")
    };
    assert_eq!(verify(&sign(now, body), body), Ok(()));
    assert!(verify(&sign(now, body), br#"{"events":[1]}"#).is_err());
    assert!(verify(&sign(now - TOLERANCE_SECS - 1, body), body).is_err());
    assert!(verify("t=1", body).is_err());
    let library = burnledger::webhook::Signer::new(SECRET).unwrap();
    assert_eq!(
        verify(&library.header(now, body), body),
        Ok(()),
        "the library signs the same way"
    );
}

// ---------------------------------------------------------------------------
// The library's handle, in process

/// A receiver that accepts connections on its own thread and, per
/// connection, reads one request and answers `status` (or, with `None`,
/// holds it unanswered); each request's body is sent on the channel.
fn in_process_receiver(status: Option<&'static str>) -> (String, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            let Some((_, body)) = read_request(&stream) else {
                continue;
            };
            if tx.send(body).is_err() {
                return;
            }
            match status {
                Some(status) => answer(&stream, status),
                None => held.push(stream),
            }
        }
    });
    (url, rx)
}

/// Polls `done` until it holds, for at most 30 s (nothing to await: the
/// loop runs on its own thread).
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_needs_a_log_and_a_valid_consumer_name() {
    let settings = || WebhookSettings::new("http://127.0.0.1:9/hooks", SECRET);
    let no_log = Ledger::open(Config::for_tests()).unwrap();
    let refused = Webhook::start(&no_log, settings()).unwrap_err();
    assert!(refused.contains("events unavailable"), "{refused}");
    no_log.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(Config::for_tests_in(dir.path())).unwrap();
    let bad_name = WebhookSettings {
        consumer: "not a name".into(),
        ..settings()
    };
    let refused = Webhook::start(&ledger, bad_name).unwrap_err();
    assert!(refused.contains("invalid consumer"), "{refused}");
    assert_eq!(ledger.consumers().unwrap(), [], "nothing registered");
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_registers_its_consumer_acks_what_was_taken_and_ends_with_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(Config::for_tests_in(dir.path())).unwrap();
    for cents in ["1.00", "2.00", "3.00"] {
        let amount = cents.parse().unwrap();
        ledger.deposit(1, "USD", amount, None).await.unwrap();
    }
    let (url, bodies) = in_process_receiver(Some("204 No Content"));
    let webhook = Webhook::start(&ledger, WebhookSettings::new(url, SECRET)).unwrap();
    let body = bodies.recv_timeout(START_TIMEOUT).expect("a delivery");
    let lsns: Vec<u64> = serde_json::from_slice::<Value>(&body).unwrap()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["lsn"].as_u64().unwrap())
        .collect();
    assert_eq!(lsns, [1, 2, 3]);
    let cursor = || ledger.consumer("webhook").unwrap().map(|c| c.lsn);
    eventually("the cursor at the batch's last LSN", || cursor() == Some(3)).await;
    assert!(!webhook.is_finished());
    ledger.shutdown().await;
    eventually("the loop ends with the ledger", || webhook.is_finished()).await;
    webhook.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_webhook_waits_for_no_silent_receiver_and_acknowledges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(Config::for_tests_in(dir.path())).unwrap();
    ledger
        .deposit(1, "USD", "1.00".parse().unwrap(), None)
        .await
        .unwrap();
    let (url, bodies) = in_process_receiver(None);
    let webhook = Webhook::start(&ledger, WebhookSettings::new(url, SECRET)).unwrap();
    bodies
        .recv_timeout(START_TIMEOUT)
        .expect("a delivery, never answered");
    let started = Instant::now();
    webhook.stop();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped at once, not after the POST's 10 s timeout: {:?}",
        started.elapsed()
    );
    let registered = ledger.consumer("webhook").unwrap().map(|c| c.lsn);
    assert_eq!(
        registered,
        Some(0),
        "registered from the start, nothing acknowledged"
    );
    ledger.shutdown().await;
}
