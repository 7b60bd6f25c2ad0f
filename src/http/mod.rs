//! The HTTP service: the ledger's API over actix-web, JSON in and out
//! (feature `http`; `burnledger serve` runs it).
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | POST /v1/deposits | `{account, currency, amount, idempotency_key?}` | 201 `{transaction_id, account, currency, amount}` |
//! | POST /v1/withdrawals | `{account, currency, amount, idempotency_key?}` | 201 withdrawal |
//! | GET /v1/withdrawals/{transaction_id} | | 200 withdrawal |
//! | POST /v1/withdrawals/{transaction_id}/cancel | | 200 withdrawal |
//! | POST /v1/withdrawals/{transaction_id}/status | `{status: "completed"\|"failed"\|"returned", reason?}` | 200 withdrawal |
//! | POST /v1/transfers | `{from, to, currency, amount, idempotency_key?}` | 201 `{transaction_id, from, to, currency, amount}` |
//! | GET /v1/accounts/{account}/balances | | 200 `{account, balances: [{currency, available, locked, total}]}` |
//! | POST /v1/payouts/run | | 200 `[payout]`, the payouts made or retried |
//! | GET /v1/payouts | | 200 `[payout]`, newest first |
//! | GET /v1/payouts/{payout_id} | | 200 payout |
//! | GET /healthz | | 200 `{"status": "ok"}` |
//! | GET /metrics | | 200 Prometheus text |
//!
//! A withdrawal is `{transaction_id, account, currency, amount, status,
//! payout_id?, reason?}`. Amounts are decimal strings both ways. A replay
//! with the same idempotency key answers the first result with the same
//! status (201). Errors are `{"error": code, "message": text}`; see
//! [`error`] for the status of each code. Every `/v1` request needs
//! `Authorization: Bearer <token>` when the server has a token.
//!
//! ## Layout
//! - `routes.rs` — the route table and handlers.
//! - `json.rs` — request and response bodies, amount parsing.
//! - `error.rs` — error codes → statuses, extractor errors.
//! - `auth.rs` — bearer token (constant-time compare), exposure rule.
//! - `metrics.rs` — counters, latency histograms, `/metrics`.

pub mod auth;
pub mod error;
pub mod json;
pub mod metrics;
pub mod routes;

use std::net::{SocketAddr, ToSocketAddrs};

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use crate::ledger::Ledger;

pub use auth::ApiToken;
pub use error::ApiError;
pub use metrics::Metrics;

/// Largest request body accepted, in bytes; more is 413.
pub const BODY_BYTES_MAX_DEFAULT: usize = 64 * 1024;

/// Seconds a graceful stop waits for requests in flight.
pub const SHUTDOWN_TIMEOUT_SECS_DEFAULT: u64 = 30;

/// How the service runs.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Required as `Authorization: Bearer <token>` on `/v1` when set.
    pub api_token: Option<String>,
    /// Largest JSON body, in bytes. Default: 64 KiB.
    pub body_bytes_max: usize,
    /// Worker threads. Default: actix-web's (one per physical core).
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
    ledger: Ledger,
    metrics: web::Data<Metrics>,
    token: ApiToken,
    body_bytes_max: usize,
) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(ledger))
            .app_data(metrics)
            .app_data(web::Data::new(token))
            .app_data(
                web::JsonConfig::default()
                    .limit(body_bytes_max)
                    .content_type_required(false)
                    // Any content type: `curl -d` without `-H` works too.
                    .content_type(|_| true)
                    .error_handler(error::json_error),
            )
            .app_data(web::PathConfig::default().error_handler(error::path_error))
            .configure(routes::routes);
    }
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
/// can reach unless there is an API token.
pub fn bind(ledger: Ledger, listen: &str, options: &HttpOptions) -> std::io::Result<Bound> {
    let token = ApiToken::new(options.api_token.as_deref());
    let wanted: Vec<SocketAddr> = listen.to_socket_addrs()?.collect();
    auth::check_exposure(&wanted, &token)
        .map_err(|message| std::io::Error::new(std::io::ErrorKind::PermissionDenied, message))?;
    let metrics = web::Data::new(Metrics::default());
    let app_metrics = metrics.clone();
    let body_bytes_max = options.body_bytes_max;
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(metrics::record))
            .configure(configure(
                ledger.clone(),
                app_metrics.clone(),
                token.clone(),
                body_bytes_max,
            ))
            .default_service(routes::not_found())
    })
    .shutdown_timeout(options.shutdown_timeout_secs);
    if let Some(workers) = options.workers {
        server = server.workers(workers);
    }
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
