//! `burnledger consume` (hidden): a named consumer of the event feed over
//! HTTP, the reference for a host's own and the consumer process of the
//! SIGKILL test (tests/http_events.rs).
//!
//! It reads its cursor (`GET /v1/consumers/NAME/cursor`; none yet: from
//! the start), follows `GET /v1/events/stream` from there, appends one
//! line per event (`<lsn> <type>`) to `--out` and fsyncs it, and every
//! `--ack-every` events acknowledges the last one written (`PUT
//! /v1/consumers/NAME/cursor`). A line is on disk before its event is
//! acknowledged, so a consumer killed at any moment and restarted loses
//! nothing: it writes again at most the events after its last
//! acknowledgement (at-least-once, in order). It stops at the stream's
//! end (exit 0) or on an error the server sends (exit 2).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;

use burnledger::domain::feed::FeedEvent;
use clap::Args;
use ureq::Agent;

/// Longest line of the stream taken (an event's JSON is far shorter).
const LINE_BYTES_MAX: usize = 1 << 20;

#[derive(Args, Debug, Clone)]
pub struct ConsumeArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// The consumer's name (its cursor on the server).
    #[arg(long)]
    consumer: String,
    /// The file each event's line is appended to.
    #[arg(long)]
    out: PathBuf,
    /// Acknowledge every N events written.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    ack_every: u64,
    /// The server's API token (default: BURNLEDGER_API_TOKEN).
    #[arg(long)]
    api_token: Option<String>,
}

/// The consumer's connection to the server.
struct Server {
    agent: Agent,
    base: String,
    consumer: String,
    token: Option<String>,
}

impl Server {
    fn auth(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    fn cursor_url(&self) -> String {
        format!("{}/v1/consumers/{}/cursor", self.base, self.consumer)
    }

    /// The consumer's cursor; 0 when it has none yet.
    fn cursor(&self) -> Result<u64, String> {
        let url = self.cursor_url();
        let mut request = self.agent.get(&url);
        if let Some(auth) = self.auth() {
            request = request.header("Authorization", &auth);
        }
        let mut answer = request.call().map_err(|e| format!("GET {url}: {e}"))?;
        let status = answer.status().as_u16();
        let body = answer.body_mut().read_to_string().unwrap_or_default();
        match status {
            200 => serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["lsn"].as_u64())
                .ok_or_else(|| format!("GET {url}: not a cursor: {body}")),
            404 => Ok(0),
            _ => Err(format!("GET {url}: {status} {body}")),
        }
    }

    /// Sets the consumer's cursor to `lsn`.
    fn ack(&self, lsn: u64) -> Result<(), String> {
        let url = self.cursor_url();
        let mut request = self.agent.put(&url);
        if let Some(auth) = self.auth() {
            request = request.header("Authorization", &auth);
        }
        let mut answer = request
            .send_json(serde_json::json!({ "lsn": lsn }))
            .map_err(|e| format!("PUT {url}: {e}"))?;
        if answer.status().is_success() {
            return Ok(());
        }
        let body = answer.body_mut().read_to_string().unwrap_or_default();
        Err(format!("PUT {url}: {} {body}", answer.status()))
    }

    /// Opens the stream of events after `after`.
    fn stream(&self, after: u64) -> Result<ureq::http::Response<ureq::Body>, String> {
        let url = format!("{}/v1/events/stream?after={after}", self.base);
        let mut request = self.agent.get(&url);
        if let Some(auth) = self.auth() {
            request = request.header("Authorization", &auth);
        }
        let mut answer = request.call().map_err(|e| format!("GET {url}: {e}"))?;
        if !answer.status().is_success() {
            let body = answer.body_mut().read_to_string().unwrap_or_default();
            return Err(format!("GET {url}: {} {body}", answer.status()));
        }
        Ok(answer)
    }
}

/// One Server-Sent Event as read.
#[derive(Default)]
struct Frame {
    event: String,
    data: String,
}

/// Follows the feed into `--out` (see the module docs).
pub fn run(args: ConsumeArgs) -> Result<bool, String> {
    let server = Server {
        agent: Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent(),
        base: args.url.trim_end_matches('/').to_owned(),
        consumer: args.consumer.clone(),
        token: args
            .api_token
            .clone()
            .or_else(|| std::env::var(crate::serve::API_TOKEN_ENV).ok()),
    };
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .map_err(|e| format!("cannot open {}: {e}", args.out.display()))?;
    let cursor = server.cursor()?;
    tracing::info!(consumer = %args.consumer, cursor, "following the event stream");
    let mut answer = server.stream(cursor)?;
    let mut reader = BufReader::new(answer.body_mut().as_reader());
    let mut written = 0u64;
    while let Some(frame) = next_frame(&mut reader)? {
        if frame.event == "error" {
            return Err(format!("the server ended the stream: {}", frame.data));
        }
        let event: FeedEvent = serde_json::from_str(&frame.data)
            .map_err(|e| format!("an event that is not a FeedEvent ({e}): {}", frame.data))?;
        append(&mut out, &args.out, event.lsn, &frame.event)?;
        written += 1;
        if written.is_multiple_of(args.ack_every) {
            server.ack(event.lsn)?;
        }
    }
    Ok(true)
}

/// Appends `<lsn> <type>` in one write and syncs it to disk.
fn append(out: &mut File, path: &std::path::Path, lsn: u64, kind: &str) -> Result<(), String> {
    out.write_all(format!("{lsn} {kind}\n").as_bytes())
        .and_then(|()| out.sync_data())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The next event of the stream (comments and other fields skipped);
/// `None` at its end.
fn next_frame(reader: &mut impl BufRead) -> Result<Option<Frame>, String> {
    let mut frame = Frame::default();
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|e| format!("reading the stream: {e}"))?;
        if read == 0 {
            return Ok(None);
        }
        if line.len() > LINE_BYTES_MAX {
            return Err(format!("a stream line of {} bytes", line.len()));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if !frame.data.is_empty() {
                return Ok(Some(frame));
            }
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => frame.event = value.to_owned(),
            "data" => frame.data.push_str(value),
            _ => {} // `id`, a comment (`: keep-alive`), anything else
        }
    }
}
