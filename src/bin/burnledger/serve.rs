//! `burnledger serve`: the ledger's HTTP API (see `burnledger::http`).
//!
//! Opens (recovering) the data folder, binds, prints `listening on
//! http://ADDR` for each bound address on stdout, and serves until SIGINT or
//! SIGTERM: then it stops accepting, lets the requests in flight finish,
//! shuts the ledger down (flushing the log and writing a snapshot) and
//! exits 0.
//!
//! Payout modes: `batched` and `immediate` pay through an in-process
//! `SimulatedBank` with no faults and no latency (there is no real payment
//! service to talk to yet); `external` makes no payouts: the host reports
//! each outcome with `POST /v1/withdrawals/{id}/status`.

use std::io::Write as _;
use std::path::PathBuf;

use burnledger::config::{parse_currencies, parse_sync, PayoutMode, SharedPaymentService};
use burnledger::http::{self, HttpOptions};
use burnledger::payment::SimulatedBank;
use burnledger::{Config, Ledger};
use clap::Args;

/// The environment variable `--api-token` falls back to.
pub const API_TOKEN_ENV: &str = "BURNLEDGER_API_TOKEN";

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Data folder for the write-ahead log and snapshots; state there is
    /// recovered first.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port). A non-loopback
    /// address needs an API token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Currencies as CODE:DECIMALS, comma-separated.
    #[arg(long, default_value = "USD:2,EUR:2,BTC:8")]
    currencies: String,
    /// batched (every --payout-interval), immediate, or external (the host
    /// reports outcomes; no payouts are made here). batched and immediate
    /// pay through a simulated bank with no faults.
    #[arg(long, default_value = "batched")]
    payout_mode: String,
    /// Interval of batched payouts: 300s, 5m, 1h, or plain seconds.
    #[arg(long, default_value = "300s")]
    payout_interval: String,
    /// Token every /v1 request must send as `Authorization: Bearer <token>`
    /// (default: the BURNLEDGER_API_TOKEN environment variable; none means
    /// no authentication, allowed on loopback addresses only).
    #[arg(long)]
    api_token: Option<String>,
    /// fsync (acknowledge after fsync), buffered or buffered:MS (fsync every
    /// 100 or MS milliseconds), or none (memory only).
    #[arg(long, default_value = "fsync")]
    sync: String,
    /// HTTP worker threads (default: one per physical core).
    #[arg(long)]
    workers: Option<usize>,
}

/// Reads `300s`, `5m`, `1h`, `300` as seconds (at least 1).
pub fn parse_interval(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, factor) = match text.char_indices().last() {
        Some((i, 's')) => (&text[..i], 1),
        Some((i, 'm')) => (&text[..i], 60),
        Some((i, 'h')) => (&text[..i], 3600),
        _ => (text, 1),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|secs| *secs > 0)
        .ok_or_else(|| format!("payout interval {text:?}: expected e.g. 300s, 5m, 1h"))
}

fn payout_mode(args: &ServeArgs) -> Result<PayoutMode, String> {
    match args.payout_mode.as_str() {
        "batched" => Ok(PayoutMode::Batched {
            interval_secs: parse_interval(&args.payout_interval)?,
        }),
        "immediate" => Ok(PayoutMode::Immediate),
        "external" => Ok(PayoutMode::External),
        other => Err(format!(
            "payout mode {other:?}: expected batched, immediate or external"
        )),
    }
}

pub fn run(args: ServeArgs) -> Result<bool, String> {
    let api_token = args
        .api_token
        .clone()
        .or_else(|| std::env::var(API_TOKEN_ENV).ok())
        .filter(|t| !t.is_empty());
    let payout_mode = payout_mode(&args)?;
    // The payment service is chosen here: a fault-free simulated bank for
    // the modes that pay, none for external.
    let payment_service = (payout_mode != PayoutMode::External)
        .then(|| SharedPaymentService::new(SimulatedBank::default()));
    let config = Config {
        currencies: parse_currencies(&args.currencies)?,
        data_dir: Some(args.data_dir.clone()),
        sync: parse_sync(&args.sync)?,
        payout_mode,
        payment_service,
        ..Config::default()
    };
    let options = HttpOptions {
        api_token,
        workers: args.workers,
        ..HttpOptions::default()
    };
    let ledger = Ledger::open(config).map_err(|e| e.to_string())?;
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let bound = match http::bind(ledger.clone(), &args.listen, &options) {
            Ok(bound) => bound,
            Err(error) => {
                ledger.shutdown().await;
                return Err(format!("cannot listen on {}: {error}", args.listen));
            }
        };
        {
            let mut stdout = std::io::stdout().lock();
            for addr in &bound.addrs {
                let _ = writeln!(stdout, "listening on http://{addr}");
            }
            let _ = stdout.flush();
        }
        let served = bound.server.await;
        eprintln!("burnledger: stopped serving; shutting the ledger down");
        let started = std::time::Instant::now();
        ledger.shutdown().await;
        eprintln!(
            "burnledger: ledger shut down in {:.3} s",
            started.elapsed().as_secs_f64()
        );
        served
            .map(|()| true)
            .map_err(|error| format!("server error: {error}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_take_a_unit() {
        assert_eq!(parse_interval("300s"), Ok(300));
        assert_eq!(parse_interval("5m"), Ok(300));
        assert_eq!(parse_interval("1h"), Ok(3600));
        assert_eq!(parse_interval("42"), Ok(42));
        for bad in ["", "0s", "s", "5d", "-1s", "1.5m"] {
            assert!(parse_interval(bad).is_err(), "{bad:?}");
        }
    }
}
