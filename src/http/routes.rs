//! The route table and the handlers of the operations (an account's
//! controls are handled in `accounts.rs`, the history in `history.rs`, the
//! feed in `events.rs`): each reads its input, calls one `Ledger`
//! method, and shows the answer as JSON. Each handler's `#[utoipa::path]`
//! is its entry in the OpenAPI document (see `openapi.rs`).
//!
//! A transaction id or payout id in the path that does not parse names no
//! withdrawal or payout: 404 `unknown_withdrawal` / `unknown_payout`, the
//! same as a well-formed id that is not there. An account in the path that
//! is not an unsigned 64-bit integer is 400 `invalid_input`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, Route};

use crate::domain::ids::TransactionId;
use crate::domain::payouts::Resolution;
use crate::domain::withdrawal::{Withdrawal, WithdrawalOutcome};
use crate::http::accounts;
use crate::http::auth::check_metrics_token;
use crate::http::details::read_metadata;
use crate::http::error::ApiError;
use crate::http::events;
use crate::http::history;
use crate::http::json::{
    parse_amount, DepositJson, DepositRequest, HealthJson, PayoutJson, ResolveRequest,
    StatusRequest, TransferJson, TransferRequest, WithdrawalJson, WithdrawalRequest,
};
use crate::http::metrics::{self, Metrics};
use crate::http::openapi::{
    self, ChangeOneErrors, ChangeOneWithBodyErrors, FrozenWriteErrors, HealthErrors, MetricsErrors,
    ReadOneErrors, RunErrors,
};
use crate::http::replication;
use crate::http::source::LedgerSource;
use crate::ledger::Ledger;
use crate::LedgerError;

type Answer = Result<HttpResponse, ApiError>;

/// Registers every route: `/v1/...` (behind the token, when there is one),
/// `/healthz`, `/metrics` (behind the metrics token, when there is one) and
/// `/openapi.json`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .wrap(actix_web::middleware::from_fn(
                crate::http::auth::require_token,
            ))
            .service(resource("/deposits", "deposit").route(web::post().to(deposit)))
            .service(
                resource("/withdrawals", "request_withdrawal")
                    .route(web::post().to(request_withdrawal))
                    .route(web::get().to(history::list_withdrawals)),
            )
            .service(
                resource("/admin/promote", "promote").route(web::post().to(replication::promote)),
            )
            .service(
                resource("/replication", "replication").route(web::get().to(replication::status)),
            )
            .service(
                resource("/withdrawals/{transaction_id}", "get_withdrawal")
                    .route(web::get().to(get_withdrawal)),
            )
            .service(
                resource("/withdrawals/{transaction_id}/cancel", "cancel_withdrawal")
                    .route(web::post().to(cancel_withdrawal)),
            )
            .service(
                resource("/withdrawals/{transaction_id}/status", "withdrawal_status")
                    .route(web::post().to(withdrawal_status)),
            )
            .service(resource("/transfers", "transfer").route(web::post().to(transfer)))
            .service(
                resource("/accounts/{account}/balances", "balances")
                    .route(web::get().to(history::balances)),
            )
            .service(
                resource("/accounts/{account}/withdrawals", "account_withdrawals")
                    .route(web::get().to(history::account_withdrawals)),
            )
            .service(
                resource("/accounts/{account}/entries", "entries")
                    .route(web::get().to(history::entries)),
            )
            .configure(account_routes)
            .service(
                resource("/transactions/{transaction_id}", "get_transaction")
                    .route(web::get().to(history::get_transaction)),
            )
            .service(resource("/payouts/run", "run_payouts").route(web::post().to(run_payouts)))
            .service(
                resource("/payouts", "list_payouts").route(web::get().to(history::list_payouts)),
            )
            .service(
                resource("/payouts/{payout_id}", "get_payout").route(web::get().to(get_payout)),
            )
            .service(
                resource(
                    "/payouts/{payout_id}/items/{transaction_id}/resolve",
                    "resolve_payout_item",
                )
                .route(web::post().to(resolve_payout_item)),
            )
            .configure(feed_routes)
            .default_service(not_found()),
    )
    .service(resource("/healthz", "healthz").route(web::get().to(healthz)))
    .service(resource("/metrics", "metrics").route(web::get().to(metrics_page)))
    .service(resource("/openapi.json", "openapi").route(web::get().to(openapi_json)));
}

/// An account's controls (`accounts.rs`): its tier, its freeze, what it
/// may withdraw now.
fn account_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/accounts/{account}/tier", "set_tier").route(web::put().to(accounts::set_tier)),
    )
    .service(
        resource("/accounts/{account}/freeze", "freeze")
            .route(web::post().to(accounts::freeze))
            .route(web::delete().to(accounts::unfreeze)),
    )
    .service(
        resource(
            "/accounts/{account}/withdrawal-allowance",
            "withdrawal_allowance",
        )
        .route(web::get().to(accounts::withdrawal_allowance)),
    );
}

/// The event feed's routes (`events.rs`): reads, all of them (a
/// consumer's cursor is this node's own), so a standby serves them too.
fn feed_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/events", "events").route(web::get().to(events::events)))
        .service(
            resource("/events/stream", "events_stream").route(web::get().to(events::events_stream)),
        )
        .service(
            resource("/consumers", "list_consumers").route(web::get().to(events::list_consumers)),
        )
        .service(
            resource("/consumers/{name}/cursor", "set_consumer_cursor")
                .route(web::put().to(events::set_consumer_cursor))
                .route(web::get().to(events::consumer_cursor)),
        )
        .service(
            resource("/consumers/{name}", "remove_consumer")
                .route(web::delete().to(events::remove_consumer)),
        )
        .service(
            resource("/journal/head", "journal_head").route(web::get().to(events::journal_head)),
        );
}

/// A named resource (the name is the metrics' `kind`) whose other methods
/// are 405 with a JSON body.
fn resource(path: &str, name: &str) -> actix_web::Resource {
    web::resource(path)
        .name(name)
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(ApiError::method_not_allowed())
        }))
}

/// Any other path: 404 `not_found`.
pub fn not_found() -> Route {
    web::to(|| async { Err::<HttpResponse, _>(ApiError::not_found("no such endpoint")) })
}

fn json(status: StatusCode, body: impl serde::Serialize) -> HttpResponse {
    HttpResponse::build(status).json(body)
}

fn withdrawal(status: StatusCode, w: &Withdrawal) -> HttpResponse {
    json(status, WithdrawalJson::from(w))
}

/// The idempotency key, if sent (an empty one is the ledger's
/// `invalid_input`, never taken for "no key").
fn key(idempotency_key: &Option<String>) -> Option<&str> {
    idempotency_key.as_deref()
}

#[utoipa::path(post, path = "/v1/deposits", request_body = DepositRequest,
    responses((status = 201, description = "Credited", body = DepositJson), FrozenWriteErrors),
    security(("api_token" = [])))]
pub(crate) async fn deposit(ledger: Ledger, body: web::Json<DepositRequest>) -> Answer {
    let body = body.into_inner();
    let amount = parse_amount(&body.amount)?;
    let metadata = read_metadata(body.metadata.as_ref())?;
    let receipt = ledger
        .deposit_with(
            body.account,
            &body.currency,
            amount,
            key(&body.idempotency_key),
            metadata.clone(),
        )
        .await?;
    Ok(json(
        StatusCode::CREATED,
        DepositJson::new(&receipt, &metadata),
    ))
}

#[utoipa::path(post, path = "/v1/withdrawals", request_body = WithdrawalRequest,
    responses((status = 201, description = "Amount and fee locked, pending", body = WithdrawalJson),
        FrozenWriteErrors),
    security(("api_token" = [])))]
pub(crate) async fn request_withdrawal(
    ledger: Ledger,
    body: web::Json<WithdrawalRequest>,
) -> Answer {
    let body = body.into_inner();
    let amount = parse_amount(&body.amount)?;
    let options = body.options()?;
    let w = ledger
        .request_withdrawal_with(
            body.account,
            &body.currency,
            amount,
            key(&body.idempotency_key),
            options,
        )
        .await?;
    Ok(withdrawal(StatusCode::CREATED, &w))
}

/// A transaction id from the path; one that does not parse names nothing.
fn transaction_id(raw: &str) -> Result<TransactionId, ApiError> {
    raw.parse::<TransactionId>().map_err(|_| {
        let shown: String = raw.chars().take(40).collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_withdrawal",
            format!("unknown withdrawal {shown:?}: a transaction id is 32 hex digits"),
        )
    })
}

#[utoipa::path(get, path = "/v1/withdrawals/{transaction_id}",
    params(("transaction_id" = String, Path, description = "32 hex digits")),
    responses((status = 200, body = WithdrawalJson), ReadOneErrors),
    security(("api_token" = [])))]
pub(crate) async fn get_withdrawal(ledger: Ledger, path: web::Path<String>) -> Answer {
    let tx = transaction_id(&path)?;
    Ok(withdrawal(StatusCode::OK, &ledger.withdrawal(tx).await?))
}

#[utoipa::path(post, path = "/v1/withdrawals/{transaction_id}/cancel",
    params(("transaction_id" = String, Path, description = "32 hex digits")),
    responses((status = 200, description = "Cancelled (again, if it was)", body = WithdrawalJson),
        ChangeOneErrors),
    security(("api_token" = [])))]
pub(crate) async fn cancel_withdrawal(ledger: Ledger, path: web::Path<String>) -> Answer {
    let tx = transaction_id(&path)?;
    Ok(withdrawal(
        StatusCode::OK,
        &ledger.cancel_withdrawal(tx).await?,
    ))
}

#[utoipa::path(post, path = "/v1/withdrawals/{transaction_id}/status",
    params(("transaction_id" = String, Path, description = "32 hex digits")),
    request_body = StatusRequest,
    responses((status = 200, body = WithdrawalJson), ChangeOneWithBodyErrors),
    security(("api_token" = [])))]
pub(crate) async fn withdrawal_status(
    ledger: Ledger,
    path: web::Path<String>,
    body: web::Json<StatusRequest>,
) -> Answer {
    let tx = transaction_id(&path)?;
    let body = body.into_inner();
    let reason = body.reason.unwrap_or_default();
    let paid = body.amount.as_ref().map(parse_amount).transpose()?;
    if paid.is_some() && body.status != "completed" {
        return Err(ApiError::invalid_input(
            "amount applies only to status \"completed\" (what was paid)",
        ));
    }
    let w = match body.status.as_str() {
        "completed" => {
            let outcome = match paid {
                None => WithdrawalOutcome::Completed,
                Some(paid) => WithdrawalOutcome::PartlyCompleted { paid },
            };
            ledger.complete_withdrawal(tx, outcome).await?
        }
        "failed" => {
            ledger
                .complete_withdrawal(tx, WithdrawalOutcome::Failed { reason })
                .await?
        }
        "returned" => ledger.return_withdrawal(tx, &reason).await?,
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(ApiError::invalid_input(format!(
                "status {shown:?}: expected \"completed\", \"failed\" or \"returned\""
            )));
        }
    };
    Ok(withdrawal(StatusCode::OK, &w))
}

#[utoipa::path(post, path = "/v1/transfers", request_body = TransferRequest,
    responses((status = 201, description = "Moved", body = TransferJson), FrozenWriteErrors),
    security(("api_token" = [])))]
pub(crate) async fn transfer(ledger: Ledger, body: web::Json<TransferRequest>) -> Answer {
    let body = body.into_inner();
    let amount = parse_amount(&body.amount)?;
    let metadata = read_metadata(body.metadata.as_ref())?;
    let receipt = ledger
        .transfer_with(
            body.from,
            body.to,
            &body.currency,
            amount,
            key(&body.idempotency_key),
            metadata.clone(),
        )
        .await?;
    Ok(json(
        StatusCode::CREATED,
        TransferJson::new(&receipt, &metadata),
    ))
}

#[utoipa::path(post, path = "/v1/payouts/run",
    responses((status = 200, description = "The payouts made or retried", body = [PayoutJson]),
        RunErrors),
    security(("api_token" = [])))]
pub(crate) async fn run_payouts(ledger: Ledger) -> Answer {
    let made = ledger.run_payouts_now().await?;
    let body: Vec<PayoutJson> = made.iter().map(PayoutJson::from).collect();
    Ok(json(StatusCode::OK, body))
}

#[utoipa::path(get, path = "/v1/payouts/{payout_id}",
    params(("payout_id" = u64, Path)),
    responses((status = 200, body = PayoutJson), ReadOneErrors),
    security(("api_token" = [])))]
pub(crate) async fn get_payout(ledger: Ledger, path: web::Path<String>) -> Answer {
    let unknown = || {
        let shown: String = path.chars().take(40).collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_payout",
            format!("unknown payout {shown:?}"),
        )
    };
    let payout_id = path.parse::<u64>().map_err(|_| unknown())?;
    if !ledger.config().makes_payouts() {
        // No payout is ever made here, so none is found.
        return Err(LedgerError::UnknownPayout { payout_id }.into());
    }
    let view = ledger.payout(payout_id).await?;
    Ok(json(StatusCode::OK, PayoutJson::from(&view)))
}

/// An operator settles a payout item by hand (paid, in full or in part /
/// not_paid); answers the payout as it is afterwards.
#[utoipa::path(post, path = "/v1/payouts/{payout_id}/items/{transaction_id}/resolve",
    params(("payout_id" = u64, Path, description = "The payout's id"),
        ("transaction_id" = String, Path, description = "32 hex digits")),
    request_body = ResolveRequest,
    responses((status = 200, description = "Resolved: the payout as it is now", body = PayoutJson),
        ChangeOneWithBodyErrors),
    security(("api_token" = [])))]
pub(crate) async fn resolve_payout_item(
    ledger: Ledger,
    path: web::Path<(String, String)>,
    body: web::Json<ResolveRequest>,
) -> Answer {
    let (payout, tx) = path.into_inner();
    let payout_id = payout.parse::<u64>().map_err(|_| {
        let shown: String = payout.chars().take(40).collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_payout",
            format!("unknown payout {shown:?}"),
        )
    })?;
    let tx = transaction_id(&tx)?;
    let body = body.into_inner();
    let paid = body.amount.as_ref().map(parse_amount).transpose()?;
    let resolution = match (body.resolution.as_str(), paid) {
        ("paid", None) => Resolution::Paid,
        ("paid", Some(paid)) => Resolution::PartlyPaid { paid },
        ("not_paid", None) => Resolution::NotPaid {
            reason: body
                .reason
                .unwrap_or_else(|| "resolved not paid by an operator".into()),
        },
        ("not_paid", Some(_)) => {
            return Err(ApiError::invalid_input(
                "amount applies only to resolution \"paid\" (what was paid)",
            ))
        }
        (other, _) => {
            let shown: String = other.chars().take(32).collect();
            return Err(ApiError::invalid_input(format!(
                "resolution {shown:?}: expected \"paid\" or \"not_paid\""
            )));
        }
    };
    let view = ledger
        .resolve_payout_item(payout_id, tx, resolution, &body.note)
        .await?;
    Ok(json(StatusCode::OK, PayoutJson::from(&view)))
}

/// 200 while the ledger takes writes; 503 `poisoned` (a storage failure,
/// or one shard's internal error) or `shutting_down` when it does not
/// (`Ledger::health`: every shard is asked).
#[utoipa::path(get, path = "/healthz",
    responses((status = 200, body = HealthJson), HealthErrors))]
pub(crate) async fn healthz(ledger: Ledger) -> Answer {
    ledger.health().await?;
    Ok(json(StatusCode::OK, HealthJson { status: "ok" }))
}

/// The Prometheus page; 401 without the metrics token when there is one.
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "Prometheus text format",
        content_type = "text/plain; version=0.0.4; charset=utf-8", body = String), MetricsErrors),
    security((), ("metrics_token" = [])))]
pub(crate) async fn metrics_page(
    req: HttpRequest,
    ledger: Ledger,
    metrics: web::Data<Metrics>,
    source: web::Data<LedgerSource>,
) -> Answer {
    check_metrics_token(&req)?;
    let mut page = metrics::render(&metrics, &ledger).await;
    page.push_str(&replication::render(&source));
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(page))
}

/// This API's OpenAPI 3.1 document (no token).
#[utoipa::path(get, path = "/openapi.json",
    responses((status = 200, description = "The OpenAPI 3.1 document",
        content_type = "application/json")))]
pub(crate) async fn openapi_json() -> HttpResponse {
    openapi::answer()
}
