//! `burnledger serve`: the ledger's HTTP API (see `burnledger::http`).
//!
//! Checks its flags (a bad one is a clear error and exit 2, never a
//! panic), opens (recovering) the data folder, binds, prints `listening on
//! http://ADDR` for each bound address on stdout, and serves until SIGINT or
//! SIGTERM: then it stops accepting, lets the requests in flight finish,
//! shuts the ledger down (flushing the log and writing a snapshot) and
//! exits 0. Its logs go through `tracing` to stderr; a closed stdout or
//! stderr (or a full disk behind them) loses the lines, never the shutdown.
//!
//! With `--webhook-url` and `--webhook-secret` it also POSTs the event
//! feed to that URL, signed (see `burnledger::webhook`), from the durable
//! cursor of `--webhook-consumer`; the deliveries stop before the ledger
//! shuts down.
//!
//! `--fee-account`, `--withdrawal-limit` and `--withdrawal-expiry-max` set
//! the withdrawal rules (see `withdrawal_flags.rs`).
//!
//! With `--replicate` it runs a replicated node instead (see
//! `replicate.rs`): the writer, or with `--standby` a standby.
//!
//! Payout modes: `batched` and `immediate` pay through the payment service
//! at `--payment-service-url` (an `HttpPaymentService`, e.g. `burnledger
//! bank`), or without one through an in-process `SimulatedBank` with no
//! faults and no latency; `external` makes no payouts (so a payment
//! service URL with it is refused): the host reports each outcome with
//! `POST /v1/withdrawals/{id}/status`.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use burnledger::config::{parse_currencies, parse_sync, PayoutMode, SharedPaymentService};
use burnledger::http::{self, HttpOptions};
use burnledger::payment::{HttpPaymentService, HttpPaymentSettings, SimulatedBank};
use burnledger::webhook::{self, Webhook, WebhookSettings};
use burnledger::{Config, Ledger};
use clap::Args;

/// The environment variable `--api-token` falls back to.
pub const API_TOKEN_ENV: &str = "BURNLEDGER_API_TOKEN";

/// The environment variable `--metrics-token` falls back to.
pub const METRICS_TOKEN_ENV: &str = "BURNLEDGER_METRICS_TOKEN";

/// Longest payout interval: a week (longer is a typo, and far enough
/// beyond would overflow the timer's clock).
pub const PAYOUT_INTERVAL_SECS_MAX: u64 = 7 * 24 * 3600;

/// Longest body deadline: an hour.
pub const BODY_TIMEOUT_SECS_MAX: u64 = 3600;

/// Most items per payout `--payment-max-items` may ask for.
pub const PAYMENT_MAX_ITEMS_MAX: usize = 100_000;

/// Most connections `--max-connections` may ask for.
pub const MAX_CONNECTIONS_MAX: usize = 1_000_000;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Data folder for the write-ahead log and snapshots; state there is
    /// recovered first.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Move WAL segments no snapshot needs any more into this folder
    /// instead of deleting them, so `verify --chain --archive-dir` can
    /// check the log's hash chain end to end.
    #[arg(long)]
    archive_dir: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port). A non-loopback
    /// address needs an API token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Currencies as CODE:DECIMALS, comma-separated.
    #[arg(long, default_value = "USD:2,EUR:2,BTC:8")]
    currencies: String,
    /// batched (every --payout-interval), immediate, or external (the host
    /// reports outcomes; no payouts are made here). batched and immediate
    /// pay through --payment-service-url, or without it through an
    /// in-process simulated bank with no faults.
    #[arg(long, default_value = "batched")]
    payout_mode: String,
    /// Pay through the payment service at this URL (http://HOST:PORT, the
    /// protocol `burnledger bank` serves) instead of the in-process
    /// simulated bank. Refused with --payout-mode external.
    #[arg(long)]
    payment_service_url: Option<String>,
    /// Most items one payout sends to --payment-service-url (1 to 100000;
    /// default 1000). Only with --payment-service-url. Keep it within the
    /// service's own limit: a payout over it is rejected (its items fail).
    #[arg(long)]
    payment_max_items: Option<usize>,
    /// Interval of batched payouts: 300s, 5m, 1h, or plain seconds.
    #[arg(long, default_value = "300s")]
    payout_interval: String,
    /// Token every /v1 request must send as `Authorization: Bearer <token>`
    /// (default: the BURNLEDGER_API_TOKEN environment variable; none means
    /// no authentication, allowed on loopback addresses only).
    /// Must not be empty or have surrounding whitespace.
    #[arg(long)]
    api_token: Option<String>,
    /// Token /metrics requires as `Authorization: Bearer <token>` (default:
    /// the BURNLEDGER_METRICS_TOKEN environment variable; none means
    /// /metrics is open). Same rules as --api-token.
    #[arg(long)]
    metrics_token: Option<String>,
    /// How long a request body may take to arrive after its head: 10s, 1m,
    /// or plain seconds (1s to 1h). Past it: 408 and the connection closes.
    #[arg(long, default_value = "10s")]
    body_timeout: String,
    /// Connections open at once, over all workers (at least one per
    /// worker; actix-web's per-worker cap is this divided by the workers).
    /// Past it new connections wait in the kernel's backlog.
    #[arg(long, default_value_t = http::MAX_CONNECTIONS_DEFAULT)]
    max_connections: usize,
    /// fsync (acknowledge after fsync), buffered or buffered:MS (fsync every
    /// 100 or MS milliseconds), or none (memory only).
    #[arg(long, default_value = "fsync")]
    sync: String,
    /// HTTP worker threads, 1 to 1024 (default: one per usable core).
    #[arg(long)]
    workers: Option<usize>,
    #[command(flatten)]
    replication: crate::replicate::ReplicationArgs,
    #[command(flatten)]
    webhook: WebhookArgs,
    #[command(flatten)]
    withdrawals: crate::withdrawal_flags::WithdrawalArgs,
}

/// Signed webhooks (see `burnledger::webhook`).
#[derive(Args, Debug, Clone)]
pub struct WebhookArgs {
    /// POST the event feed, in order and in batches, to this URL
    /// (http://HOST:PORT/PATH), signed with --webhook-secret. At-least-once:
    /// a 2xx acknowledges a batch; anything else retries it with backoff.
    #[arg(long)]
    webhook_url: Option<String>,
    /// The HMAC-SHA256 key of the X-Burnledger-Signature header. Needed
    /// with --webhook-url.
    #[arg(long)]
    webhook_secret: Option<String>,
    /// The consumer whose durable cursor the deliveries keep.
    #[arg(long, default_value = webhook::WEBHOOK_CONSUMER_DEFAULT)]
    webhook_consumer: String,
    /// Most events per POST (1 to 10000).
    #[arg(long, default_value_t = webhook::WEBHOOK_BATCH_DEFAULT)]
    webhook_batch: usize,
}

impl WebhookArgs {
    /// The webhook's settings, if one is asked for; the secret without
    /// the URL (or the URL without it) is refused.
    fn settings(&self) -> Result<Option<WebhookSettings>, String> {
        match (&self.webhook_url, &self.webhook_secret) {
            (None, None) => Ok(None),
            (Some(url), Some(secret)) => {
                let settings = WebhookSettings {
                    consumer: self.webhook_consumer.clone(),
                    batch: self.webhook_batch,
                    ..WebhookSettings::new(url, secret)
                };
                settings.check()?;
                Ok(Some(settings))
            }
            (Some(_), None) => Err("--webhook-url needs --webhook-secret".into()),
            (None, Some(_)) => Err("--webhook-secret applies only with --webhook-url".into()),
        }
    }
}

/// Reads `300s`, `5m`, `1h`, `300` as seconds, 1 to `max_secs`; `what`
/// names the flag in the error.
pub fn parse_duration_flag(text: &str, what: &str, max_secs: u64) -> Result<u64, String> {
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
        .filter(|secs| (1..=max_secs).contains(secs))
        .ok_or_else(|| {
            format!("{what} {text:?}: expected e.g. 300s, 5m, 1h, from 1s to {max_secs}s")
        })
}

/// Reads a payout interval (see [`parse_duration_flag`]).
pub fn parse_interval(text: &str) -> Result<u64, String> {
    parse_duration_flag(text, "payout interval", PAYOUT_INTERVAL_SECS_MAX)
}

/// A token from its flag, else its environment variable; `None` when
/// neither is set. A set but unusable one (empty, surrounding whitespace,
/// not UTF-8) is refused here, before anything opens.
fn token(flag: Option<&str>, flag_name: &str, env: &str) -> Result<Option<String>, String> {
    let (value, source) = match flag {
        Some(value) => (value.to_string(), flag_name.to_string()),
        None => match std::env::var(env) {
            Ok(value) => (value, env.to_string()),
            Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!("{env} is not valid UTF-8"))
            }
        },
    };
    http::ApiToken::new(Some(&value), &source)?;
    Ok(Some(value))
}

/// The service's options from the flags, every bound checked.
fn http_options(args: &ServeArgs) -> Result<HttpOptions, String> {
    if !(1..=MAX_CONNECTIONS_MAX).contains(&args.max_connections) {
        return Err(format!(
            "--max-connections {}: expected 1 to {MAX_CONNECTIONS_MAX}",
            args.max_connections
        ));
    }
    if let Some(workers) = args.workers {
        if !(1..=http::WORKERS_MAX).contains(&workers) {
            return Err(format!(
                "--workers {workers}: expected 1 to {} worker threads",
                http::WORKERS_MAX
            ));
        }
    }
    let body_timeout =
        parse_duration_flag(&args.body_timeout, "body timeout", BODY_TIMEOUT_SECS_MAX)?;
    let options = HttpOptions {
        api_token: token(args.api_token.as_deref(), "--api-token", API_TOKEN_ENV)?,
        metrics_token: token(
            args.metrics_token.as_deref(),
            "--metrics-token",
            METRICS_TOKEN_ENV,
        )?,
        body_timeout: Duration::from_secs(body_timeout),
        max_connections: args.max_connections,
        workers: args.workers,
        ..HttpOptions::default()
    };
    http::check_options(&options)?;
    Ok(options)
}

/// The payout mode from the flags; `--payout-interval` is checked in
/// every mode, so a typo never waits for a switch to batched to surface.
fn payout_mode(args: &ServeArgs) -> Result<PayoutMode, String> {
    let interval_secs = parse_interval(&args.payout_interval)?;
    match args.payout_mode.as_str() {
        "batched" => Ok(PayoutMode::Batched { interval_secs }),
        "immediate" => Ok(PayoutMode::Immediate),
        "external" => Ok(PayoutMode::External),
        other => Err(format!(
            "payout mode {other:?}: expected batched, immediate or external"
        )),
    }
}

/// The payment service: the one at `--payment-service-url`, else a
/// fault-free simulated bank for the modes that pay; none for external,
/// which refuses a URL (it would never be called).
fn payment_service(
    args: &ServeArgs,
    mode: PayoutMode,
) -> Result<Option<SharedPaymentService>, String> {
    let url = args.payment_service_url.as_deref();
    if url.is_none() && args.payment_max_items.is_some() {
        return Err("--payment-max-items applies only with --payment-service-url".into());
    }
    let Some(url) = url else {
        return Ok((mode != PayoutMode::External)
            .then(|| SharedPaymentService::new(SimulatedBank::default())));
    };
    if mode == PayoutMode::External {
        return Err(format!(
            "--payment-service-url {url:?} with --payout-mode external: external makes no \
             payouts; use batched or immediate to pay through the service"
        ));
    }
    let settings = HttpPaymentSettings::default();
    let max_items = args
        .payment_max_items
        .unwrap_or(settings.max_items_per_payout);
    if !(1..=PAYMENT_MAX_ITEMS_MAX).contains(&max_items) {
        return Err(format!(
            "--payment-max-items {max_items}: expected 1 to {PAYMENT_MAX_ITEMS_MAX}"
        ));
    }
    let settings = HttpPaymentSettings {
        max_items_per_payout: max_items,
        ..settings
    };
    let service = HttpPaymentService::new(url, settings)?;
    tracing::info!(
        url = service.base_url(),
        max_items,
        "paying through the payment service"
    );
    Ok(Some(SharedPaymentService::new(service)))
}

/// Prints `listening on http://ADDR` for each bound address.
pub fn print_listening(addrs: &[std::net::SocketAddr]) {
    let mut stdout = std::io::stdout().lock();
    for addr in addrs {
        let _ = writeln!(stdout, "listening on http://{addr}");
    }
    let _ = stdout.flush();
}

pub fn run(args: ServeArgs) -> Result<bool, String> {
    let options = http_options(&args)?;
    let payout_mode = payout_mode(&args)?;
    let payment_service = payment_service(&args, payout_mode)?;
    let webhook = args.webhook.settings()?;
    let config = args.withdrawals.apply(Config {
        currencies: parse_currencies(&args.currencies)?,
        data_dir: Some(args.data_dir.clone()),
        archive_dir: args.archive_dir.clone(),
        sync: parse_sync(&args.sync)?,
        payout_mode,
        payment_service,
        ..Config::default()
    })?;
    if args.replication.replicate.is_some() {
        if webhook.is_some() {
            return Err("--webhook-url is not supported with --replicate yet".into());
        }
        return crate::replicate::run(&args.replication, &args.listen, config, &options);
    }
    if args.replication.standby {
        return Err("--standby needs --replicate (the stream to follow)".into());
    }
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
        let webhook = match webhook.map(|settings| Webhook::start(&ledger, settings)) {
            None => None,
            Some(Ok(webhook)) => Some(webhook),
            Some(Err(error)) => {
                ledger.shutdown().await;
                return Err(error);
            }
        };
        print_listening(&bound.addrs);
        let served = bound.server.await;
        if let Some(webhook) = webhook {
            webhook.stop();
        }
        tracing::info!("stopped serving; shutting the ledger down");
        let started = std::time::Instant::now();
        ledger.shutdown().await;
        tracing::info!(
            "ledger shut down in {:.3} s",
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
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// The payment service `serve` would pay through with these flags:
    /// its item limit, or none.
    fn chosen(flags: &[&str]) -> Result<Option<usize>, String> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(flags.iter().copied()))
            .map_err(|e| e.to_string())?;
        let mode = payout_mode(&cli.serve)?;
        let service = payment_service(&cli.serve, mode)?;
        Ok(service.map(|s| s.0.max_items_per_payout()))
    }

    #[test]
    fn the_payment_service_is_the_url_or_the_simulated_bank() {
        let url = "--payment-service-url=http://127.0.0.1:9";
        assert_eq!(chosen(&[]), Ok(Some(1000)), "the simulated bank");
        assert_eq!(chosen(&["--payout-mode=external"]), Ok(None));
        assert_eq!(chosen(&[url]), Ok(Some(1000)));
        assert_eq!(
            chosen(&[url, "--payout-mode=immediate", "--payment-max-items=7"]),
            Ok(Some(7))
        );
        let refused = chosen(&[url, "--payout-mode=external"]).unwrap_err();
        assert!(refused.contains("external makes no payouts"), "{refused}");
        for bad in [
            vec!["--payment-max-items=7"],
            vec![url, "--payment-max-items=0"],
            vec![url, "--payment-max-items=100001"],
            vec!["--payment-service-url=https://127.0.0.1:9"],
            vec!["--payment-service-url=127.0.0.1:9"],
        ] {
            assert!(chosen(&bad).is_err(), "{bad:?}");
        }
    }

    /// The webhook settings `serve` would start with these flags.
    fn webhook_settings(flags: &[&str]) -> Result<Option<WebhookSettings>, String> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(flags.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.serve.webhook.settings()
    }

    #[test]
    fn a_webhook_needs_its_url_and_secret_and_a_batch_in_bounds() {
        let url = "--webhook-url=http://127.0.0.1:9/hooks";
        let secret = "--webhook-secret=s3cret";
        assert!(webhook_settings(&[]).unwrap().is_none());
        let settings = webhook_settings(&[url, secret]).unwrap().unwrap();
        assert_eq!(
            (settings.url.as_str(), settings.secret.as_str()),
            ("http://127.0.0.1:9/hooks", "s3cret")
        );
        assert_eq!(
            (settings.consumer.as_str(), settings.batch),
            ("webhook", 100)
        );
        let chosen =
            webhook_settings(&[url, secret, "--webhook-consumer=crm", "--webhook-batch=7"])
                .unwrap()
                .unwrap();
        assert_eq!((chosen.consumer.as_str(), chosen.batch), ("crm", 7));
        for bad in [
            vec![url],
            vec![secret],
            vec![url, "--webhook-secret="],
            vec![url, secret, "--webhook-batch=0"],
            vec![url, secret, "--webhook-batch=10001"],
            vec!["--webhook-url=https://h/", secret],
            vec!["--webhook-url=h:1", secret],
        ] {
            assert!(webhook_settings(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn intervals_take_a_unit() {
        assert_eq!(parse_interval("300s"), Ok(300));
        assert_eq!(parse_interval("5m"), Ok(300));
        assert_eq!(parse_interval("1h"), Ok(3600));
        assert_eq!(parse_interval("42"), Ok(42));
        for bad in [
            "",
            "0s",
            "s",
            "5d",
            "-1s",
            "1.5m",
            "8d",
            "169h",
            "99999999999999999999",
        ] {
            assert!(parse_interval(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_interval("168h"), Ok(PAYOUT_INTERVAL_SECS_MAX));
    }
}
