//! The HTTP service: the ledger's API over actix-web, JSON in and out
//! (feature `http`; `burnledger serve` runs it). Beside it, [`bank`]: the
//! simulated bank's server over the payment-service protocol (`burnledger
//! bank`).
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | POST /v1/deposits | `{account, currency, amount, idempotency_key?, metadata?}` | 201 `{transaction_id, account, currency, amount, metadata?}` |
//! | POST /v1/withdrawals | `{account, currency, amount, idempotency_key?, fee?: {currency, amount}, destination?: {kind, value, network?}, metadata?, expires_in?}` | 201 withdrawal |
//! | GET /v1/withdrawals/{transaction_id} | | 200 withdrawal |
//! | POST /v1/withdrawals/{transaction_id}/cancel | | 200 withdrawal |
//! | POST /v1/withdrawals/{transaction_id}/status | `{status: "completed"\|"failed"\|"returned", reason?, amount?}` (`amount` with `completed`: paid in part) | 200 withdrawal |
//! | POST /v1/transfers | `{from, to, currency, amount, idempotency_key?, metadata?}` | 201 `{transaction_id, from, to, currency, amount, metadata?}` |
//! | PUT /v1/accounts/{account}/tier | `{tier}` | 200 `{account, tier, freeze}` (the account's controls) |
//! | POST /v1/accounts/{account}/freeze | `{scope: "withdrawals"\|"all", until?, reason}` | 200 the account's controls |
//! | DELETE /v1/accounts/{account}/freeze | | 200 the account's controls |
//! | GET /v1/accounts/{account}/withdrawal-allowance?currency= | | 200 `{account, currency, tier, amount, available, windows: [{window, limit, used, remaining}], freeze}` |
//! | GET /v1/accounts/{account}/balances | | 200 `{account, balances: [{currency, available, locked, total}]}` |
//! | GET /v1/accounts/{account}/balances?at=&lt;RFC 3339&gt; | | 200 `{account, at, balances: [...]}`, as of that time |
//! | GET /v1/accounts/{account}/withdrawals?status=&currency=&created_from=&created_to=&payout_id=&after=&limit=&order=&format= | | 200 `{items: [withdrawal], next}` (or CSV) |
//! | GET /v1/withdrawals?status=&currency=&created_from=&created_to=&payout_id=&after=&limit=&order=&format= | | 200 `{items: [withdrawal], next}` (or CSV), every account's |
//! | GET /v1/accounts/{account}/entries?currency=&after=&limit=&format= | | 200 `{items: [entry], next}` (or CSV) |
//! | GET /v1/transactions/{transaction_id} | | 200 the deposit, transfer or withdrawal, with `kind` |
//! | POST /v1/payouts/run | | 200 `[payout]`, the payouts made or retried |
//! | GET /v1/payouts?state=&currency=&after=&limit=&order= | | 200 `{items: [payout], next}`, newest first |
//! | GET /v1/payouts/{payout_id} | | 200 payout |
//! | POST /v1/payouts/{payout_id}/items/{transaction_id}/resolve | `{resolution: "paid"\|"not_paid", note, reason?}` | 200 payout (an operator's logged resolution of an item the payout owns) |
//! | GET /v1/events?after=&consumer=&limit=&wait= | | 200 `{events: [FeedEvent], next}`: a long poll of the event feed |
//! | GET /v1/events/stream?after=&consumer= | | 200 `text/event-stream`: the feed as Server-Sent Events (resumes after `Last-Event-ID`) |
//! | GET /v1/consumers | | 200 `{consumers: [{name, lsn}]}` |
//! | GET /v1/consumers/{name}/cursor | | 200 `{name, lsn}` |
//! | PUT /v1/consumers/{name}/cursor | `{lsn}` | 200 `{name, lsn}`: the consumer acknowledged every event up to `lsn` |
//! | DELETE /v1/consumers/{name} | | 204: the consumer is forgotten |
//! | GET /v1/journal/head | | 200 `{lsn, hash}`: the log's last durable record and its SHA-256 (64 hex digits) |
//! | POST /v1/admin/promote | | 200 `{role, epoch, applied_seq, stream_seq, lag}`: a replicated standby takes over (409 `not_replicated` elsewhere) |
//! | GET /v1/replication | | 200 the same, this node's role and lag |
//! | GET /healthz | | 200 `{"status": "ok"}` |
//! | GET /metrics | | 200 Prometheus text (behind the metrics token, when there is one) |
//! | GET /openapi.json | | 200 this API's OpenAPI 3.1 document |
//!
//! A withdrawal is `{transaction_id, account, currency, amount, status,
//! payout_id?, reason?, created_at, updated_at, paid, fee, destination,
//! metadata, expires_at}`. Amounts are decimal strings both ways. A replay
//! with the same idempotency key answers the first result with the same
//! status (201). Errors are `{"error": code, "message": text, "details"?}`
//! (`details` for `limit_exceeded`, `account_frozen` and
//! `insufficient_funds`); see [`error`] for the status of each code. Every `/v1` request needs
//! `Authorization: Bearer <token>` when the server has a token; `/metrics`
//! needs the metrics token the same way when the server has one. A token
//! that is empty or has surrounding whitespace is refused at start.
//!
//! ## Limits
//! - The head of a request must arrive within 5 s (actix-web's
//!   `client_request_timeout`), its body within [`HttpOptions::body_timeout`]
//!   (default 10 s) of the head: past it, 408 `request_timeout` and the
//!   connection is closed. A body larger than
//!   [`HttpOptions::body_bytes_max`] is 413 `payload_too_large`.
//! - At most [`HttpOptions::max_connections`] connections are open at once
//!   (default 4096). actix-web counts per worker, so each of the `W`
//!   workers takes `max_connections / W` (rounded down; at least one each):
//!   the total is at most `max_connections`. Past it, new connections wait
//!   in the kernel's accept backlog until one closes; the process's open-file
//!   limit (`ulimit -n`) must be above the cap.
//! - An answer to a request whose body was not read to its end (401, 408,
//!   413, or a handler that takes no body) closes the connection, and so
//!   does every 401, 408 and 413.
//!
//! ## Errors the application cannot shape
//! Every answer the application makes, errors included, is JSON
//! (`{"error", "message"}`). actix-http answers a few protocol errors
//! itself, before any application code sees the request, with an empty
//! body: a request head that does not parse (400), a head larger than its
//! buffer (431), a head that does not arrive within 5 s (408), and a
//! malformed chunked encoding or body length (400). These close the
//! connection.
//!
//! ## Layout
//! - `routes.rs` — the route table and the handlers of the operations.
//! - `accounts.rs` — an account's controls: tier, freeze, withdrawal
//!   allowance; their handlers and JSON.
//! - `details.rs` — what an operation carries beyond its amount (fee,
//!   destination, metadata, `expires_in`): read from requests, shown in
//!   answers.
//! - `history.rs` — the history handlers: listings, entries, transactions,
//!   balances (live or as of a time), paged payouts; their query strings.
//! - `events.rs` — the event feed's handlers: long poll, Server-Sent
//!   Events, consumers' cursors, the journal's head.
//! - `csv.rs` — the CSV form of the withdrawal listings and entries.
//! - `json.rs` — request and response bodies, amount parsing.
//! - `error.rs` — error codes → statuses, extractor errors.
//! - `auth.rs` — bearer token (constant-time compare), exposure rule.
//! - `metrics.rs` — counters, latency histograms, `/metrics`.
//! - `limits.rs` — body deadline, closing connections with unread bodies.
//! - `openapi.rs` — the OpenAPI 3.1 document (`src/http/openapi.json`).
//! - `source.rs` — where handlers find the ledger (a fixed one, or a
//!   replicated node's current one), the `Ledger` extractor.
//! - `replication.rs` — a replicated node's routes (promotion, status) and
//!   metrics.
//! - `bank.rs` — not the ledger's API: the simulated bank's server (a
//!   `SimulatedBank` over the payment-service protocol; `burnledger bank`).

pub mod accounts;
pub mod auth;
pub mod bank;
pub mod csv;
pub mod details;
pub mod error;
pub mod events;
pub mod history;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod replication;
pub mod routes;
pub mod source;

pub use source::LedgerSource;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

pub use auth::{ApiToken, MetricsToken};
pub use error::ApiError;
pub use metrics::Metrics;

/// Largest request body accepted, in bytes; more is 413.
pub const BODY_BYTES_MAX_DEFAULT: usize = 64 * 1024;

/// Seconds a graceful stop waits for requests in flight.
pub const SHUTDOWN_TIMEOUT_SECS_DEFAULT: u64 = 30;

/// How long a request body may take to arrive after its head.
pub const BODY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Connections open at once, over all workers.
pub const MAX_CONNECTIONS_DEFAULT: usize = 4096;

/// Worker threads allowed: more than this is an operator's typo.
pub const WORKERS_MAX: usize = 1024;

/// How the service runs.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Required as `Authorization: Bearer <token>` on `/v1` when set.
    pub api_token: Option<String>,
    /// Required as `Authorization: Bearer <token>` on `/metrics` when set;
    /// without it `/metrics` is open.
    pub metrics_token: Option<String>,
    /// How long a request body may take to arrive after the head; past it
    /// the answer is 408 and the connection closes. Default: 10 s.
    pub body_timeout: Duration,
    /// Connections open at once, over all workers. Default: 4096.
    pub max_connections: usize,
    /// Largest JSON body, in bytes. Default: 64 KiB.
    pub body_bytes_max: usize,
    /// Worker threads, 1 to [`WORKERS_MAX`]. Default: one per core the
    /// process may use.
    pub workers: Option<usize>,
    /// Whether SIGINT/SIGTERM stop the server gracefully. Default: true
    /// (`serve`); an embedder that handles signals itself turns it off.
    pub handle_signals: bool,
    /// Seconds a graceful stop waits for requests in flight. Default: 30.
    pub shutdown_timeout_secs: u64,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            api_token: None,
            metrics_token: None,
            body_timeout: BODY_TIMEOUT_DEFAULT,
            max_connections: MAX_CONNECTIONS_DEFAULT,
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            workers: None,
            handle_signals: true,
            shutdown_timeout_secs: SHUTDOWN_TIMEOUT_SECS_DEFAULT,
        }
    }
}

/// The app's routes and shared state, for `HttpServer::new` or actix-web's
/// test helpers.
pub fn configure(
    ledger: impl Into<LedgerSource>,
    metrics: web::Data<Metrics>,
    tokens: Tokens,
    limits: Limits,
) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    let source = web::Data::new(ledger.into());
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(source)
            .app_data(metrics)
            .app_data(web::Data::new(tokens.api))
            .app_data(web::Data::new(tokens.metrics))
            .app_data(web::Data::new(limits::BodyTimeout(limits.body_timeout)))
            .app_data(
                web::JsonConfig::default()
                    .limit(limits.body_bytes_max)
                    .content_type_required(false)
                    // Any content type: `curl -d` without `-H` works too.
                    .content_type(|_| true)
                    .error_handler(error::json_error),
            )
            .app_data(web::PathConfig::default().error_handler(error::path_error))
            .app_data(web::QueryConfig::default().error_handler(error::query_error))
            .configure(routes::routes);
    }
}

/// The tokens of a server: the API's (`/v1`) and the metrics' (`/metrics`).
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    pub api: ApiToken,
    pub metrics: MetricsToken,
}

/// Per-request limits the app enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub body_bytes_max: usize,
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            body_timeout: BODY_TIMEOUT_DEFAULT,
        }
    }
}

/// The worker count to run: the one asked for, or one per usable core.
fn worker_count(options: &HttpOptions) -> Result<usize, String> {
    let workers = match options.workers {
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get().min(WORKERS_MAX)),
    };
    if !(1..=WORKERS_MAX).contains(&workers) {
        return Err(format!(
            "workers {workers}: expected 1 to {WORKERS_MAX} worker threads"
        ));
    }
    Ok(workers)
}

/// Checks options an operator sets: every bound is explained, none panics.
pub fn check_options(options: &HttpOptions) -> Result<(), String> {
    let workers = worker_count(options)?;
    if options.max_connections < workers {
        return Err(format!(
            "max connections {}: expected at least one per worker ({workers} workers)",
            options.max_connections
        ));
    }
    if options.body_timeout.is_zero() {
        return Err("body timeout: expected more than 0 s".into());
    }
    if options.body_bytes_max == 0 {
        return Err("body limit: expected more than 0 bytes".into());
    }
    Ok(())
}

fn invalid_input(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
}

/// A bound server, not yet running: await `server` (inside an actix
/// `System`, e.g. `actix_web::rt::System::new().block_on(..)`) to run it.
pub struct Bound {
    pub server: Server,
    /// The addresses actually bound (port 0 becomes the port chosen).
    pub addrs: Vec<SocketAddr>,
    pub metrics: web::Data<Metrics>,
}

/// Binds `listen` and builds the server. Refuses an address other hosts
/// can reach unless there is an API token, a token no client could send,
/// and options out of their bounds (`InvalidInput`).
pub fn bind(
    ledger: impl Into<LedgerSource>,
    listen: &str,
    options: &HttpOptions,
) -> std::io::Result<Bound> {
    let ledger: LedgerSource = ledger.into();
    check_options(options).map_err(invalid_input)?;
    let tokens = Tokens {
        api: ApiToken::new(options.api_token.as_deref(), "the API token").map_err(invalid_input)?,
        metrics: MetricsToken(
            ApiToken::new(options.metrics_token.as_deref(), "the metrics token")
                .map_err(invalid_input)?,
        ),
    };
    let workers = worker_count(options).map_err(invalid_input)?;
    let wanted: Vec<SocketAddr> = listen.to_socket_addrs()?.collect();
    auth::check_exposure(&wanted, &tokens.api)
        .map_err(|message| std::io::Error::new(std::io::ErrorKind::PermissionDenied, message))?;
    let metrics = web::Data::new(Metrics::default());
    let app_metrics = metrics.clone();
    let limits = Limits {
        body_bytes_max: options.body_bytes_max,
        body_timeout: options.body_timeout,
    };
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(metrics::record))
            // Outermost: sees every request first and every answer last.
            .wrap(actix_web::middleware::from_fn(limits::guard))
            .configure(configure(
                ledger.clone(),
                app_metrics.clone(),
                tokens.clone(),
                limits,
            ))
            .default_service(routes::not_found())
    })
    .shutdown_timeout(options.shutdown_timeout_secs)
    .workers(workers)
    // actix-web's cap is per worker: split the total (check_options makes
    // it at least one per worker).
    .max_connections(options.max_connections / workers);
    if !options.handle_signals {
        server = server.disable_signals();
    }
    let server = server.bind(&wanted[..])?;
    let addrs = server.addrs();
    Ok(Bound {
        server: server.run(),
        addrs,
        metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;

    #[test]
    fn options_out_of_bounds_are_refused_with_a_reason() {
        let ok = HttpOptions {
            workers: Some(2),
            ..HttpOptions::default()
        };
        assert!(check_options(&ok).is_ok());
        for (bad, needle) in [
            (
                HttpOptions {
                    workers: Some(0),
                    ..ok.clone()
                },
                "workers 0",
            ),
            (
                HttpOptions {
                    workers: Some(WORKERS_MAX + 1),
                    ..ok.clone()
                },
                "workers 1025",
            ),
            (
                HttpOptions {
                    max_connections: 1,
                    ..ok.clone()
                },
                "at least one per worker",
            ),
            (
                HttpOptions {
                    body_timeout: Duration::ZERO,
                    ..ok.clone()
                },
                "body timeout",
            ),
            (
                HttpOptions {
                    body_bytes_max: 0,
                    ..ok.clone()
                },
                "body limit",
            ),
        ] {
            let error = check_options(&bad).unwrap_err();
            assert!(error.contains(needle), "{error}");
        }
    }

    #[test]
    fn bind_refuses_a_token_no_client_could_send() {
        let ledger = Ledger::open(crate::Config::for_tests()).unwrap();
        for (api, metrics) in [(Some("t\n"), None), (None, Some(" m")), (Some(""), None)] {
            let options = HttpOptions {
                api_token: api.map(str::to_string),
                metrics_token: metrics.map(str::to_string),
                workers: Some(1),
                handle_signals: false,
                ..HttpOptions::default()
            };
            let error = bind(ledger.clone(), "127.0.0.1:0", &options)
                .err()
                .expect("refused");
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{error}");
        }
    }
}
