//! The routes and their handlers: each reads its input, calls one `Ledger`
//! method, and shows the answer as JSON.
//!
//! A transaction id or payout id in the path that does not parse names no
//! withdrawal or payout: 404 `unknown_withdrawal` / `unknown_payout`, the
//! same as a well-formed id that is not there. An account in the path that
//! is not an unsigned 64-bit integer is 400 `invalid_input`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, Route};

use crate::http::error::ApiError;
use crate::http::json::{
    parse_amount, BalanceJson, BalancesJson, DepositJson, DepositRequest, PayoutJson,
    ResolveRequest, StatusRequest, TransferJson, TransferRequest, WithdrawalJson,
    WithdrawalRequest,
};
use crate::http::metrics::{self, Metrics};
use crate::ids::{AccountId, TransactionId};
use crate::ledger::Ledger;
use crate::payouts::Resolution;
use crate::withdrawal::{Withdrawal, WithdrawalOutcome};
use crate::LedgerError;

type Answer = Result<HttpResponse, ApiError>;

/// Registers every route: `/v1/...` (behind the token, when there is one),
/// `/healthz` and `/metrics`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .wrap(actix_web::middleware::from_fn(
                crate::http::auth::require_token,
            ))
            .service(resource("/deposits", "deposit").route(web::post().to(deposit)))
            .service(
                resource("/withdrawals", "request_withdrawal")
                    .route(web::post().to(request_withdrawal)),
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
                resource("/accounts/{account}/balances", "balances").route(web::get().to(balances)),
            )
            .service(resource("/payouts/run", "run_payouts").route(web::post().to(run_payouts)))
            .service(resource("/payouts", "list_payouts").route(web::get().to(list_payouts)))
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
            .default_service(not_found()),
    )
    .service(web::resource("/healthz").route(web::get().to(healthz)))
    .service(web::resource("/metrics").route(web::get().to(metrics_page)));
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

async fn deposit(ledger: web::Data<Ledger>, body: web::Json<DepositRequest>) -> Answer {
    let body = body.into_inner();
    let amount = parse_amount(&body.amount)?;
    let receipt = ledger
        .deposit(
            body.account,
            &body.currency,
            amount,
            key(&body.idempotency_key),
        )
        .await?;
    Ok(json(StatusCode::CREATED, DepositJson::from(&receipt)))
}

async fn request_withdrawal(
    ledger: web::Data<Ledger>,
    body: web::Json<WithdrawalRequest>,
) -> Answer {
    let body = body.into_inner();
    let amount = parse_amount(&body.amount)?;
    let w = ledger
        .request_withdrawal(
            body.account,
            &body.currency,
            amount,
            key(&body.idempotency_key),
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

async fn get_withdrawal(ledger: web::Data<Ledger>, path: web::Path<String>) -> Answer {
    let tx = transaction_id(&path)?;
    Ok(withdrawal(StatusCode::OK, &ledger.withdrawal(tx).await?))
}

async fn cancel_withdrawal(ledger: web::Data<Ledger>, path: web::Path<String>) -> Answer {
    let tx = transaction_id(&path)?;
    Ok(withdrawal(
        StatusCode::OK,
        &ledger.cancel_withdrawal(tx).await?,
    ))
}

async fn withdrawal_status(
    ledger: web::Data<Ledger>,
    path: web::Path<String>,
    body: web::Json<StatusRequest>,
) -> Answer {
    let tx = transaction_id(&path)?;
    let body = body.into_inner();
    let reason = body.reason.unwrap_or_default();
    let w = match body.status.as_str() {
        "completed" => {
            ledger
                .complete_withdrawal(tx, WithdrawalOutcome::Completed)
                .await?
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

async fn transfer(ledger: web::Data<Ledger>, body: web::Json<TransferRequest>) -> Answer {
    let body = body.into_inner();
    let amount = parse_amount(&body.amount)?;
    let receipt = ledger
        .transfer(
            body.from,
            body.to,
            &body.currency,
            amount,
            key(&body.idempotency_key),
        )
        .await?;
    Ok(json(StatusCode::CREATED, TransferJson::from(&receipt)))
}

async fn balances(ledger: web::Data<Ledger>, path: web::Path<AccountId>) -> Answer {
    let account = path.into_inner();
    let balances = ledger.balances(account).await?;
    Ok(json(
        StatusCode::OK,
        BalancesJson {
            account,
            balances: balances.iter().map(BalanceJson::from).collect(),
        },
    ))
}

async fn run_payouts(ledger: web::Data<Ledger>) -> Answer {
    let made = ledger.run_payouts_now().await?;
    let body: Vec<PayoutJson> = made.iter().map(PayoutJson::from).collect();
    Ok(json(StatusCode::OK, body))
}

async fn list_payouts(ledger: web::Data<Ledger>) -> Answer {
    let all = ledger.payouts().await?;
    let body: Vec<PayoutJson> = all.iter().map(PayoutJson::from).collect();
    Ok(json(StatusCode::OK, body))
}

async fn get_payout(ledger: web::Data<Ledger>, path: web::Path<String>) -> Answer {
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

/// An operator settles a payout item by hand (paid / not_paid); answers
/// the payout as it is afterwards.
async fn resolve_payout_item(
    ledger: web::Data<Ledger>,
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
    let resolution = match body.resolution.as_str() {
        "paid" => Resolution::Paid,
        "not_paid" => Resolution::NotPaid {
            reason: body
                .reason
                .unwrap_or_else(|| "resolved not paid by an operator".into()),
        },
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(ApiError::invalid_input(format!(
                "resolution {shown:?}: expected \"paid\" or \"not_paid\""
            )));
        }
    };
    if !ledger.config().makes_payouts() {
        return Err(LedgerError::UnknownPayout { payout_id }.into());
    }
    let view = ledger
        .resolve_payout_item(payout_id, tx, resolution, &body.note)
        .await?;
    Ok(json(StatusCode::OK, PayoutJson::from(&view)))
}

/// 200 while the ledger answers; 503 `poisoned` or `shutting_down` when
/// it does not (a cheap read of one account asks the engine).
async fn healthz(ledger: web::Data<Ledger>) -> Answer {
    ledger.balances(0).await?;
    Ok(json(StatusCode::OK, serde_json::json!({ "status": "ok" })))
}

async fn metrics_page(ledger: web::Data<Ledger>, metrics: web::Data<Metrics>) -> HttpResponse {
    let page = metrics::render(&metrics, &ledger).await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(page)
}
