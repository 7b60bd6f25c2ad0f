//! The simulated bank's server: a [`SimulatedBank`] served over the
//! payment-service protocol (documented in `payment/http.rs`; its bodies
//! in `payment::wire`), so that a ledger in another process pays through
//! it with `HttpPaymentService`. `burnledger bank` runs it; tests bind it
//! on port 0. It lives here, not in `payment/`, because it is actix-web
//! code and `payment/` stays free of the actor runtime.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | POST /payouts (header `Idempotency-Key: <payout_id>`) | payout | 200 report; 400 a body or key it cannot read; 422 `payout_rejected` (the bank's own limits: items, repeats); 503 `outcome_unknown` (a simulated timeout or lost response) |
//! | GET /payouts/{payout_id} | | 200 report; 404 `unknown_payout` |
//! | GET /payments | | 200 `{"payments": [{payout_id, transaction_id, amount}]}`: every payment made, in order |
//! | POST /payments/{transaction_id}/return | `{"reason"}` | 200 `{transaction_id, status: "returned", reason}`; 404 `unknown_payment` (no paid item) |
//! | GET /health | | 200 `{"status": "ok"}` |
//!
//! Errors are `{"error": {"code", "message"}}`. A request whose body
//! cannot be read (`malformed_request`, `invalid_amount`,
//! `invalid_currency`, `invalid_transaction_id`, a body whose `payout_id`
//! differs from the key) pays nothing and is 400, unless its key names a
//! payout the bank holds: then it answers that payout's current report,
//! since a 4xx would tell the caller that nothing was paid under it. A
//! body over the size limit is actix-web's 413 (an unknown outcome to the
//! client). No authentication: it is a test bank.

use std::net::{SocketAddr, ToSocketAddrs};

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::payment::wire::{
    ErrorJson, PaymentsJson, PayoutJson, ReportJson, ReturnJson, WireError,
};
use crate::payment::{PaymentError, PaymentService, Payout, PayoutId, PayoutReport, SimulatedBank};

/// Bytes of request body allowed per item a payout may carry (an item is
/// under 200 bytes of JSON), plus [`BODY_BYTES_BASE`].
const BODY_BYTES_PER_ITEM: usize = 512;
const BODY_BYTES_BASE: usize = 64 * 1024;

/// Worker threads: a test bank needs few.
const WORKERS: usize = 2;

/// A bound bank server, not yet running: await `server` inside an actix
/// `System` to run it.
pub struct BankServer {
    pub server: Server,
    /// The addresses bound (port 0 becomes the port chosen).
    pub addrs: Vec<SocketAddr>,
}

/// Binds `listen` and builds the server over `bank`; SIGINT/SIGTERM stop
/// it gracefully when `handle_signals`.
pub fn bind(
    bank: SimulatedBank,
    listen: &str,
    handle_signals: bool,
) -> std::io::Result<BankServer> {
    let wanted: Vec<SocketAddr> = listen.to_socket_addrs()?.collect();
    if wanted.iter().any(|a| !a.ip().is_loopback()) {
        tracing::warn!(%listen, "the simulated bank has no authentication: anyone who reaches it can pay and return");
    }
    let body_bytes_max = bank
        .max_items_per_payout()
        .saturating_mul(BODY_BYTES_PER_ITEM)
        .saturating_add(BODY_BYTES_BASE);
    let mut server = HttpServer::new(move || {
        App::new()
            .configure(configure(bank.clone(), body_bytes_max))
            .default_service(web::to(|| async {
                refuse(StatusCode::NOT_FOUND, &error("not_found", "no such route"))
            }))
    })
    .workers(WORKERS);
    if !handle_signals {
        server = server.disable_signals();
    }
    let server = server.bind(&wanted[..])?;
    let addrs = server.addrs();
    Ok(BankServer {
        server: server.run(),
        addrs,
    })
}

/// The bank's routes and state (for `HttpServer::new` or actix-web's test
/// helpers).
pub fn configure(
    bank: SimulatedBank,
    body_bytes_max: usize,
) -> impl FnOnce(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(bank))
            .app_data(web::PayloadConfig::new(body_bytes_max))
            .route("/payouts", web::post().to(submit))
            .route("/payouts/{payout_id}", web::get().to(status))
            .route("/payments", web::get().to(payments))
            .route(
                "/payments/{transaction_id}/return",
                web::post().to(give_back),
            )
            .route("/health", web::get().to(health));
    }
}

fn error(code: &'static str, message: impl Into<String>) -> WireError {
    WireError {
        code,
        message: message.into(),
    }
}

fn refuse(status: StatusCode, error: &WireError) -> HttpResponse {
    HttpResponse::build(status).json(ErrorJson::from(error))
}

/// The bank's answer as the protocol's status and body.
fn answer(result: Result<PayoutReport, PaymentError>) -> HttpResponse {
    match result {
        Ok(report) => HttpResponse::Ok().json(ReportJson::from(&report)),
        Err(PaymentError::Rejected { reason }) => refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            &error("payout_rejected", reason),
        ),
        Err(PaymentError::Unknown { reason }) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &error("outcome_unknown", reason),
        ),
        Err(PaymentError::NotFound { payout_id }) => refuse(
            StatusCode::NOT_FOUND,
            &error(
                "unknown_payout",
                format!("no payout {payout_id} was received"),
            ),
        ),
    }
}

/// The payout id the `Idempotency-Key` header names.
fn idempotency_key(request: &HttpRequest) -> Result<PayoutId, WireError> {
    let header = request.headers().get("Idempotency-Key");
    let text = header.and_then(|v| v.to_str().ok()).unwrap_or_default();
    text.trim().parse().map_err(|_| {
        error(
            "invalid_idempotency_key",
            format!("header Idempotency-Key {text:?}: expected the payout id"),
        )
    })
}

/// POST /payouts.
async fn submit(
    request: HttpRequest,
    body: web::Bytes,
    bank: web::Data<SimulatedBank>,
) -> HttpResponse {
    let key = match idempotency_key(&request) {
        Ok(key) => key,
        Err(refused) => return refuse(StatusCode::BAD_REQUEST, &refused),
    };
    let payout = PayoutJson::parse(&body).and_then(|payout| keyed(payout, key));
    match payout {
        Ok(payout) => answer(bank.submit(payout).await),
        // Unreadable: a payout the bank holds answers its report (it was
        // paid, a 4xx would say otherwise); else nothing happened.
        Err(refused) => match bank.status(key).await {
            Err(PaymentError::NotFound { .. }) => refuse(StatusCode::BAD_REQUEST, &refused),
            held => answer(held),
        },
    }
}

/// `payout` if its id is the one its `Idempotency-Key` names.
fn keyed(payout: Payout, key: PayoutId) -> Result<Payout, WireError> {
    if payout.payout_id == key {
        return Ok(payout);
    }
    let message = format!(
        "body payout_id {} differs from Idempotency-Key {key}",
        payout.payout_id
    );
    Err(error("invalid_idempotency_key", message))
}

/// GET /payouts/{payout_id}.
async fn status(path: web::Path<String>, bank: web::Data<SimulatedBank>) -> HttpResponse {
    match path.parse::<PayoutId>() {
        Ok(payout_id) => answer(bank.status(payout_id).await),
        Err(_) => refuse(
            StatusCode::BAD_REQUEST,
            &error(
                "invalid_payout_id",
                format!("payout id {:?}: expected a number", path.as_str()),
            ),
        ),
    }
}

/// GET /payments.
async fn payments(bank: web::Data<SimulatedBank>) -> HttpResponse {
    HttpResponse::Ok().json(PaymentsJson::new(&bank.payments()))
}

/// POST /payments/{transaction_id}/return: the receiving bank sends a paid
/// item back.
async fn give_back(
    path: web::Path<String>,
    body: web::Bytes,
    bank: web::Data<SimulatedBank>,
) -> HttpResponse {
    let tx = match path.parse::<crate::domain::ids::TransactionId>() {
        Ok(tx) => tx,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &error("invalid_transaction_id", e.to_string()),
            )
        }
    };
    let reason = match serde_json::from_slice::<ReturnJson>(&body) {
        Ok(json) if !json.reason.trim().is_empty() => json.reason,
        Ok(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &error("malformed_request", "reason is empty"),
            )
        }
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &error("malformed_request", e.to_string()),
            )
        }
    };
    if !bank.return_item(tx, &reason) {
        let message = format!("no paid item has transaction id {tx}");
        return refuse(StatusCode::NOT_FOUND, &error("unknown_payment", message));
    }
    HttpResponse::Ok().json(serde_json::json!({
        "transaction_id": tx.to_string(),
        "status": "returned",
        "reason": reason,
    }))
}

/// GET /health.
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}
