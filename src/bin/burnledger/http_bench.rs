//! `burnledger http-bench`: drives a running server's
//! `POST /v1/withdrawals` with keep-alive clients and prints requests/s and
//! latency percentiles.
//!
//! Each connection is one thread with its own ureq agent (one kept-alive
//! connection) sending one request at a time. Before the clock starts, each
//! connection funds its own fresh accounts (a deposit each, not measured)
//! so that no account passes the server's pending-withdrawal limit: at most
//! [`WITHDRAWALS_PER_ACCOUNT`] withdrawals go to one account.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use burnledger::Decimal;
use clap::Args;
use ureq::Agent;

/// Withdrawals sent to one account (the server's default limit of pending
/// withdrawals per account is 1,000).
pub const WITHDRAWALS_PER_ACCOUNT: u64 = 500;

#[derive(Args, Debug, Clone)]
pub struct HttpBenchArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:8080 (`--url` works too).
    #[arg(long = "http", alias = "url")]
    url: String,
    /// Concurrent keep-alive connections, one client thread each.
    #[arg(long, default_value_t = 8)]
    connections: u64,
    /// Withdrawal requests to send in all (after the unmeasured deposits).
    #[arg(long, default_value_t = 10_000)]
    requests: u64,
    /// Currency of the withdrawals.
    #[arg(long, default_value = "USD")]
    currency: String,
    /// Amount of each withdrawal, a decimal string.
    #[arg(long, default_value = "0.01")]
    amount: String,
    /// First account number used (default: taken from the clock, so runs on
    /// the same data do not reuse accounts).
    #[arg(long)]
    account_base: Option<u64>,
    /// API token (default: the BURNLEDGER_API_TOKEN environment variable).
    #[arg(long)]
    api_token: Option<String>,
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    /// Status code (0 for a transport error) → answers.
    statuses: BTreeMap<u16, u64>,
    first_error: Option<String>,
}

struct Client {
    agent: Agent,
    url: String,
    authorization: Option<String>,
}

impl Client {
    fn post(&self, path: &str, body: &str) -> Result<(u16, String), String> {
        let mut request = self
            .agent
            .post(format!("{}{path}", self.url))
            .header("Content-Type", "application/json");
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let mut response = request.send(body).map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        // Read the body to the end so the connection goes back to the pool.
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok((status, text))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

pub fn run(args: HttpBenchArgs) -> Result<bool, String> {
    if args.connections == 0 || args.requests == 0 {
        return Err("--connections and --requests must be at least 1".into());
    }
    let amount: Decimal = args
        .amount
        .parse()
        .map_err(|_| format!("--amount {:?} is not a decimal", args.amount))?;
    let funding = (amount * Decimal::from(WITHDRAWALS_PER_ACCOUNT + 1)).to_string();
    let url = args.url.trim_end_matches('/').to_string();
    let token = args
        .api_token
        .clone()
        .or_else(|| std::env::var("BURNLEDGER_API_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let base = args.account_base.unwrap_or_else(|| {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        secs.saturating_mul(1_000_000_000)
    });
    let connections = args.connections;
    let barrier = Arc::new(Barrier::new(connections as usize + 1));
    let mut threads = Vec::new();
    for c in 0..connections {
        let share = args.requests / connections + u64::from(c < args.requests % connections);
        let (url, token, barrier) = (url.clone(), token.clone(), Arc::clone(&barrier));
        let currency = args.currency.clone();
        let amount_text = args.amount.clone();
        let funding = funding.clone();
        threads.push(std::thread::spawn(move || {
            let agent: Agent = Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .max_idle_connections_per_host(1)
                .build()
                .into();
            let client = Client {
                agent,
                url,
                authorization: token.map(|t| format!("Bearer {t}")),
            };
            let first_account = base + c * 1_000_000;
            let accounts = share.div_ceil(WITHDRAWALS_PER_ACCOUNT);
            let mut tally = Tally::default();
            for account in first_account..first_account + accounts {
                let body = format!(
                    r#"{{"account":{account},"currency":"{currency}","amount":"{funding}"}}"#
                );
                match client.post("/v1/deposits", &body) {
                    Ok((201, _)) => {}
                    Ok((status, text)) => {
                        tally.first_error = Some(format!("deposit answered {status}: {text}"));
                    }
                    Err(error) => tally.first_error = Some(format!("deposit failed: {error}")),
                }
            }
            barrier.wait();
            if tally.first_error.is_some() {
                return tally;
            }
            tally.latencies.reserve(share as usize);
            for i in 0..share {
                let account = first_account + i / WITHDRAWALS_PER_ACCOUNT;
                let body = format!(
                    r#"{{"account":{account},"currency":"{currency}","amount":"{amount_text}"}}"#
                );
                let started = Instant::now();
                let answer = client.post("/v1/withdrawals", &body);
                tally.latencies.push(started.elapsed());
                let status = match answer {
                    Ok((status, text)) => {
                        if status != 201 && tally.first_error.is_none() {
                            tally.first_error = Some(format!("{status}: {text}"));
                        }
                        status
                    }
                    Err(error) => {
                        tally.first_error.get_or_insert(error);
                        0
                    }
                };
                *tally.statuses.entry(status).or_insert(0) += 1;
            }
            tally
        }));
    }
    barrier.wait();
    let started = Instant::now();
    let mut all = Tally::default();
    for thread in threads {
        let tally = thread
            .join()
            .map_err(|_| "a client thread panicked".to_string())?;
        all.latencies.extend(tally.latencies);
        for (status, n) in tally.statuses {
            *all.statuses.entry(status).or_insert(0) += n;
        }
        if all.first_error.is_none() {
            all.first_error = tally.first_error;
        }
    }
    let elapsed = started.elapsed();
    all.latencies.sort_unstable();
    let sent = all.latencies.len() as u64;
    let created = all.statuses.get(&201).copied().unwrap_or(0);
    println!(
        "http-bench: POST {url}/v1/withdrawals, {connections} keep-alive connections, {sent} requests"
    );
    let statuses: Vec<String> = all
        .statuses
        .iter()
        .map(|(status, n)| match status {
            0 => format!("transport error: {n}"),
            s => format!("{s}: {n}"),
        })
        .collect();
    println!("  answers    {}", statuses.join(", "));
    println!(
        "  throughput {:.0} requests/s ({} in {:.3} s)",
        sent as f64 / elapsed.as_secs_f64(),
        sent,
        elapsed.as_secs_f64()
    );
    let l = &all.latencies;
    println!(
        "  latency    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ms(percentile(l, 50.0)),
        ms(percentile(l, 90.0)),
        ms(percentile(l, 99.0)),
        ms(percentile(l, 99.9)),
        ms(l.last().copied().unwrap_or_default())
    );
    if let Some(error) = &all.first_error {
        eprintln!("http-bench: first error: {error}");
    }
    Ok(created == args.requests && all.first_error.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
