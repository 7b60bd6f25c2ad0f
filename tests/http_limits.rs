//! The HTTP service's limits and refusals, black-box against the real
//! `burnledger serve` binary, often over a raw TCP socket (to send half a
//! body, or hold a connection):
//!
//! - a half-sent body is answered 408 `request_timeout` (JSON) within the
//!   body deadline and its connection closed; so is a 401 or any answer to
//!   a request whose body was not read to its end;
//! - past `--max-connections`, new connections wait while the accepted ones
//!   keep working;
//! - a token that is empty or has surrounding whitespace is refused at
//!   start; `/metrics` takes its own optional token;
//! - flags out of bounds are a clear error (exit 2), never a panic; a closed
//!   stdout and stderr do not stop a clean SIGTERM shutdown;
//! - every error the application can shape is `{"error", "message"}` JSON.
//!
//! Nothing sleeps to wait for work: reads wait on the socket with a read
//! timeout (the deadline under test, plus slack), startup on the
//! "listening on" line, shutdown on the process's exit.

#![cfg(all(feature = "cli", feature = "http"))]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::serve::{run_to_exit, serve_command, spawn_listening, terminate, wait_exit};
use serde_json::Value;

const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Slack over a deadline under test before the test calls it missed.
const SLACK: Duration = Duration::from_secs(4);

/// A running `serve`, killed when dropped.
struct Served {
    child: Child,
    addr: String,
}

impl Served {
    fn start(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = serve_command(data_dir);
        command.args(extra).stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let (child, url) = spawn_listening(&mut command, START_TIMEOUT);
        let addr = url.trim_start_matches("http://").to_string();
        Self { child, addr }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.addr).expect("connects");
        stream
            .set_read_timeout(Some(START_TIMEOUT))
            .expect("read timeout");
        stream
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 answer read off a socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Asserts `{"error": code, "message": "..."}` with `status`.
    fn refused(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let body = self.json();
        assert_eq!(body["error"], code, "{self:?}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{self:?}"
        );
        assert_eq!(
            body.as_object().map(|o| o.len()),
            Some(2),
            "only error and message: {self:?}"
        );
    }
}

/// Reads one answer (head, then a `Content-Length` body); `None` if the
/// connection ends or the read timeout passes first.
fn read_answer(stream: &mut TcpStream) -> Option<Answer> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some(Answer {
        status,
        headers,
        body,
    })
}

/// Whether the server closes the connection within `within` (reads until
/// end of stream; data is discarded).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut sink = [0u8; 1024];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).expect("the request is sent");
}

const HALF_BODY_FIXED: &[u8] =
    b"POST /v1/deposits HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
      Content-Length: 100\r\n\r\n{\"account\": 1,";
const HALF_BODY_CHUNKED: &[u8] =
    b"POST /v1/deposits HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
      Transfer-Encoding: chunked\r\n\r\ne\r\n{\"account\": 1,\r\n";

// ---- item 7: deadlines, closes, the connection cap ----

#[test]
fn a_half_sent_body_is_408_json_within_the_deadline_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &["--body-timeout", "1s"], &[]);
    for request in [HALF_BODY_FIXED, HALF_BODY_CHUNKED] {
        let mut stream = served.connect();
        stream
            .set_read_timeout(Some(Duration::from_secs(1) + SLACK))
            .unwrap();
        let started = Instant::now();
        send(&mut stream, request);
        let answer = read_answer(&mut stream).expect("an answer within the deadline");
        answer.refused(408, "request_timeout");
        assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
        assert!(
            closed_within(&mut stream, SLACK),
            "the connection closes after the 408"
        );
        assert!(started.elapsed() < Duration::from_secs(1) + 2 * SLACK);
    }
    // A half-sent body on a route that takes none: answered at once, and the
    // connection closed rather than drained for as long as the client
    // trickles.
    let mut stream = served.connect();
    send(
        &mut stream,
        b"POST /v1/payouts HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    );
    let answer = read_answer(&mut stream).expect("an answer");
    answer.refused(405, "method_not_allowed");
    assert!(closed_within(&mut stream, SLACK), "closed, not drained");
    // The server still serves.
    let mut stream = served.connect();
    send(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_answer(&mut stream).expect("an answer").status, 200);
}

#[test]
fn a_401_to_a_chunked_request_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &["--api-token", "s3cret"], &[]);
    let mut stream = served.connect();
    stream.set_read_timeout(Some(SLACK)).unwrap();
    send(&mut stream, HALF_BODY_CHUNKED);
    let answer = read_answer(&mut stream).expect("an answer");
    answer.refused(401, "unauthorized");
    assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
    // The client keeps trickling the body; the server hangs up regardless.
    let _ = stream.write_all(b"3\r\nabc\r\n");
    assert!(closed_within(&mut stream, SLACK), "the 401 closes");
    // A 413 closes too, even with a complete body.
    let mut stream = served.connect();
    let huge = "x".repeat(70 * 1024);
    let request = format!(
        "POST /v1/deposits HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s3cret\r\n\
         Content-Length: {}\r\n\r\n{huge}",
        huge.len()
    );
    send(&mut stream, request.as_bytes());
    let answer = read_answer(&mut stream).expect("an answer");
    answer.refused(413, "payload_too_large");
    assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
    assert!(closed_within(&mut stream, SLACK), "the 413 closes");
}

#[test]
fn past_the_connection_cap_new_connections_wait_and_accepted_ones_work() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(
        dir.path(),
        &["--workers", "1", "--max-connections", "2"],
        &[],
    );
    let health = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = served.connect();
            send(&mut stream, health);
            assert_eq!(read_answer(&mut stream).expect("answered").status, 200);
            stream
        })
        .collect();
    // A third connection is not accepted: the kernel queues it, nobody
    // answers within a second.
    let mut waiting = served.connect();
    waiting
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    send(&mut waiting, health);
    assert!(
        read_answer(&mut waiting).is_none(),
        "a connection past the cap was served"
    );
    // The accepted ones still work.
    for stream in &mut held {
        send(stream, health);
        assert_eq!(read_answer(stream).expect("still served").status, 200);
    }
    // One closes: the waiting one is accepted and answered.
    drop(held.pop());
    waiting.set_read_timeout(Some(START_TIMEOUT)).unwrap();
    let answer = read_answer(&mut waiting).expect("served once a slot frees");
    assert_eq!(answer.status, 200);
}

// ---- item 11 and the metrics token ----

fn serve_refuses(extra: &[&str], env: &[(&str, &str)], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = serve_command(dir.path());
    command.args(extra);
    for (key, value) in env {
        command.env(key, value);
    }
    let out = run_to_exit(&mut command, START_TIMEOUT);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{extra:?} {env:?}: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains(needle),
        "{extra:?} {env:?}: {needle:?} missing from {:?}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(!out.stdout.contains("listening"), "it never listened");
    assert!(
        std::fs::read_dir(dir.path()).is_ok_and(|mut d| d.next().is_none()),
        "nothing was opened"
    );
}

#[test]
fn a_token_that_is_empty_or_padded_is_refused_at_start() {
    for (flag, env) in [
        ("--api-token", "BURNLEDGER_API_TOKEN"),
        ("--metrics-token", "BURNLEDGER_METRICS_TOKEN"),
    ] {
        for padded in ["s3cret\n", " s3cret", "s3cret\t"] {
            serve_refuses(&[flag, padded], &[], "whitespace");
            serve_refuses(&[], &[(env, padded)], "whitespace");
        }
        serve_refuses(&[flag, ""], &[], "empty");
        serve_refuses(&[], &[(env, "")], "empty");
        // The message names where the token came from.
        serve_refuses(&[], &[(env, "t\n")], env);
        serve_refuses(&[flag, "t\n"], &[], flag);
    }
}

fn get(served: &Served, path: &str, token: Option<&str>) -> Answer {
    let mut stream = served.connect();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}\r\n");
    send(&mut stream, request.as_bytes());
    read_answer(&mut stream).expect("an answer")
}

#[test]
fn metrics_takes_its_own_optional_token() {
    let dir = tempfile::tempdir().unwrap();
    // Without a metrics token, /metrics is open.
    let open = Served::start(dir.path(), &[], &[]);
    assert_eq!(get(&open, "/metrics", None).status, 200);
    drop(open);
    for (flags, env) in [
        (vec!["--metrics-token", "m-token"], vec![]),
        (vec![], vec![("BURNLEDGER_METRICS_TOKEN", "m-token")]),
    ] {
        let served = Served::start(dir.path(), &flags, &env);
        get(&served, "/metrics", None).refused(401, "unauthorized");
        get(&served, "/metrics", Some("m-tokem")).refused(401, "unauthorized");
        let page = get(&served, "/metrics", Some("m-token"));
        assert_eq!(page.status, 200, "{page:?}");
        assert!(String::from_utf8_lossy(&page.body).contains("burnledger_operations_total"));
        // The metrics token is not the API's: /v1 stays open (no API token
        // on loopback), /healthz too.
        assert_eq!(get(&served, "/v1/payouts", None).status, 200);
        assert_eq!(get(&served, "/healthz", None).status, 200);
    }
    // With both tokens, each opens only its own door.
    let both = Served::start(
        dir.path(),
        &["--api-token", "a-token", "--metrics-token", "m-token"],
        &[],
    );
    get(&both, "/metrics", Some("a-token")).refused(401, "unauthorized");
    get(&both, "/v1/payouts", Some("m-token")).refused(401, "unauthorized");
    assert_eq!(get(&both, "/v1/payouts", Some("a-token")).status, 200);
    assert_eq!(get(&both, "/metrics", Some("m-token")).status, 200);
}

// ---- item 12: no panic on operator input or failing log output ----

#[test]
fn flags_out_of_bounds_are_clear_errors_not_panics() {
    for (flags, needle) in [
        (vec!["--workers", "0"], "--workers 0"),
        (vec!["--workers", "100000"], "--workers 100000"),
        (vec!["--max-connections", "0"], "--max-connections 0"),
        (
            vec!["--workers", "4", "--max-connections", "3"],
            "at least one per worker",
        ),
        (vec!["--body-timeout", "0s"], "body timeout"),
        (vec!["--body-timeout", "2h"], "body timeout"),
        (vec!["--body-timeout", "soon"], "body timeout"),
        (
            vec!["--payout-interval", "99999999999999999s"],
            "payout interval",
        ),
        (vec!["--payout-interval", "30d"], "payout interval"),
    ] {
        serve_refuses(&flags, &[], needle);
    }
}

#[test]
fn sigterm_with_stdout_and_stderr_closed_exits_0_with_a_final_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = serve_command(dir.path());
    // Both streams are pipes whose read ends the test closes: every write
    // then fails with EPIPE (Rust ignores SIGPIPE, so it is an error, not a
    // signal). `Stdio::null()` would swallow the writes instead.
    // RUST_LOG=trace makes sure there are log lines to fail on.
    command
        .stderr(Stdio::piped())
        .env("RUST_LOG", "trace")
        .env("RUST_BACKTRACE", "0");
    let (mut child, url) =
        common::serve::spawn_listening_then_close_stdout(&mut command, START_TIMEOUT);
    // Close stderr's read end: the server's log writes now fail.
    drop(child.stderr.take());
    deposit_then_sigterm_leaves_a_final_snapshot(&mut child, &url, dir.path());
}

/// One deposit answered 201, then SIGTERM: `serve` must exit 0 and leave a
/// final snapshot (whatever its log writes met on the way).
fn deposit_then_sigterm_leaves_a_final_snapshot(child: &mut Child, url: &str, dir: &Path) {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(START_TIMEOUT)).unwrap();
    let body = r#"{"account": 1, "currency": "USD", "amount": "5"}"#;
    let request = format!(
        "POST /v1/deposits HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    send(&mut stream, request.as_bytes());
    assert_eq!(read_answer(&mut stream).expect("answered").status, 201);
    drop(stream);
    terminate(child);
    let status = wait_exit(child, START_TIMEOUT).expect("serve exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
    let snapshots = std::fs::read_dir(dir.join("snapshots"))
        .expect("a snapshots folder")
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with("snapshot-") && name.ends_with(".snap")
        })
        .count();
    assert!(snapshots > 0, "a final snapshot was written");
}

/// The full-disk case: stderr is `/dev/full`, where every write fails with
/// ENOSPC. Logging through a full disk must not stop a clean shutdown or
/// its final snapshot.
#[test]
fn sigterm_with_stderr_on_a_full_disk_exits_0_with_a_final_snapshot() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("no /dev/full on this machine: nothing to test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut command = serve_command(dir.path());
    command
        .stderr(Stdio::from(full))
        .env("RUST_LOG", "trace")
        .env("RUST_BACKTRACE", "0");
    let (mut child, url) = spawn_listening(&mut command, START_TIMEOUT);
    deposit_then_sigterm_leaves_a_final_snapshot(&mut child, &url, dir.path());
}

// ---- item 14: every error the application can shape is JSON ----

#[test]
fn every_error_the_app_can_shape_is_json() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[], &[]);
    let ask = |request: &str| {
        let mut stream = served.connect();
        send(&mut stream, request.as_bytes());
        read_answer(&mut stream).expect("an answer")
    };
    // Wrong methods, on every kind of route.
    for (method, path) in [
        ("POST", "/healthz"),
        ("PUT", "/metrics"),
        ("DELETE", "/v1/deposits"),
        ("GET", "/v1/transfers"),
        ("PATCH", "/v1/payouts/run"),
        ("POST", "/v1/accounts/1/balances"),
    ] {
        ask(&format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
        ))
        .refused(405, "method_not_allowed");
    }
    // Unknown routes, inside /v1 and outside.
    for path in ["/", "/nope", "/v1", "/v1/", "/v1/nope", "/v2/deposits"] {
        ask(&format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")).refused(404, "not_found");
    }
    // Bodies: malformed, too large, wrong content.
    let post = |path: &str, body: &str| {
        ask(&format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    };
    post("/v1/deposits", "{").refused(400, "malformed_request");
    post("/v1/deposits", "").refused(400, "malformed_request");
    post("/v1/transfers", "[]").refused(400, "malformed_request");
    post("/v1/deposits", &"x".repeat(65 * 1024)).refused(413, "payload_too_large");
    // A path parameter of the wrong type.
    ask("GET /v1/accounts/-1/balances HTTP/1.1\r\nHost: t\r\n\r\n").refused(400, "invalid_input");
    // A query string nobody reads changes nothing.
    assert_eq!(
        ask("GET /healthz?x=%ZZ HTTP/1.1\r\nHost: t\r\n\r\n").status,
        200
    );
}

#[test]
fn protocol_errors_before_the_app_are_answered_by_actix_and_closed() {
    // Documented in src/http/mod.rs: actix-http answers these itself, with
    // no body the application could shape; the connection still closes.
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &[], &[]);
    let mut stream = served.connect();
    let big = "a".repeat(512 * 1024);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    let _ = stream.write_all(request.as_bytes());
    let answer = read_answer(&mut stream).expect("an answer");
    assert_eq!(answer.status, 431, "{answer:?}");
    assert!(closed_within(&mut stream, SLACK));
    let mut stream = served.connect();
    send(&mut stream, b"NOT HTTP AT ALL\r\n\r\n");
    let answer = read_answer(&mut stream).expect("an answer");
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(closed_within(&mut stream, SLACK));
}
