//! The history routes: withdrawal listings (one account's, and the
//! operations view across accounts), an account's entries, a transaction
//! by id, balances as of a time and the paged payout listing. Each reads
//! its query string strictly (an unknown parameter is 400 `invalid_input`),
//! turns it into the `Ledger` call, and answers a page as JSON
//! (`{"items", "next"}`) or, for the withdrawal listings and entries, CSV
//! (`?format=csv` or `Accept: text/csv`; see `csv.rs`).
//!
//! Parameters: `status` (comma-separated withdrawal statuses), `state` (a
//! payout state), `currency`, `created_from` / `created_to` / `at` (RFC
//! 3339, `invalid_time`), `after` (a page's `next`, `invalid_cursor`),
//! `limit` (1 to 1,000, default 100, `invalid_limit`), `order` (`asc`, the
//! default, or `desc`; payouts default to `desc`, newest first),
//! `format` (`json`, the default, or `csv`), `payout_id`.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::domain::history::{Order, PayoutQuery, WithdrawalQuery, PAGE_LIMIT_DEFAULT};
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::payouts::PayoutState;
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::StatusKind;
use crate::http::csv::{self, CsvRow};
use crate::http::error::ApiError;
use crate::http::json::{
    BalanceJson, BalancesJson, EntryPageJson, PayoutPageJson, TransactionJson, WithdrawalPageJson,
};
use crate::http::openapi::{ListErrors, ReadOneErrors};
use crate::ledger::Ledger;
use crate::LedgerError;

type Answer = Result<HttpResponse, ApiError>;

/// The query of both withdrawal listings.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WithdrawalParams {
    /// Withdrawal statuses, comma-separated: `pending`, `processing`,
    /// `completed`, `failed`, `cancelled`, `returned` (all when absent).
    status: Option<String>,
    /// A configured currency code.
    currency: Option<String>,
    /// Created at or after this time (RFC 3339).
    created_from: Option<String>,
    /// Created before this time (RFC 3339).
    created_to: Option<String>,
    /// Only those a payout carried.
    payout_id: Option<u64>,
    /// The `next` of the page before.
    after: Option<String>,
    /// Items per page, 1 to 1,000 (default 100).
    limit: Option<String>,
    /// `asc` (oldest first, the default) or `desc`.
    order: Option<String>,
    /// `json` (the default) or `csv`.
    format: Option<String>,
}

/// The query of the entries listing.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EntryParams {
    /// A configured currency code (all the account's when absent).
    currency: Option<String>,
    /// The `next` of the page before.
    after: Option<String>,
    /// Items per page, 1 to 1,000 (default 100).
    limit: Option<String>,
    /// `json` (the default) or `csv`.
    format: Option<String>,
}

/// The query of the payout listing.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PayoutParams {
    /// `processing`, `completed`, `failed`, `partially_failed` or
    /// `mismatch`.
    state: Option<String>,
    /// A configured currency code.
    currency: Option<String>,
    /// The `next` of the page before.
    after: Option<String>,
    /// Items per page, 1 to 1,000 (default 100).
    limit: Option<String>,
    /// `desc` (newest first, the default) or `asc`.
    order: Option<String>,
}

/// The query of the balances: `at`, or the live balances without it.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BalancesParams {
    /// The balances as of this time (RFC 3339); the live ones when absent.
    at: Option<String>,
}

#[utoipa::path(get, path = "/v1/accounts/{account}/withdrawals",
    params(("account" = u64, Path, description = "An unsigned 64-bit account id"),
        WithdrawalParams),
    responses((status = 200, description = "A page of the account's withdrawals, oldest first \
        unless order=desc; CSV with format=csv or Accept: text/csv (the next cursor in the \
        Next-Cursor header)",
        content((WithdrawalPageJson = "application/json"), (String = "text/csv"))), ListErrors),
    security(("api_token" = [])))]
pub(crate) async fn account_withdrawals(
    req: HttpRequest,
    ledger: Ledger,
    path: web::Path<AccountId>,
    params: web::Query<WithdrawalParams>,
) -> Answer {
    withdrawal_listing(&req, &ledger, Some(path.into_inner()), &params).await
}

#[utoipa::path(get, path = "/v1/withdrawals",
    params(WithdrawalParams),
    responses((status = 200, description = "The operations view: a page of every account's \
        withdrawals (e.g. status=processing&created_to=<time>: what is stuck); CSV as for \
        an account's listing",
        content((WithdrawalPageJson = "application/json"), (String = "text/csv"))), ListErrors),
    security(("api_token" = [])))]
pub(crate) async fn list_withdrawals(
    req: HttpRequest,
    ledger: Ledger,
    params: web::Query<WithdrawalParams>,
) -> Answer {
    withdrawal_listing(&req, &ledger, None, &params).await
}

async fn withdrawal_listing(
    req: &HttpRequest,
    ledger: &Ledger,
    account: Option<AccountId>,
    params: &WithdrawalParams,
) -> Answer {
    let csv = wants_csv(req, params.format.as_deref())?;
    let status = statuses(params.status.as_deref())?;
    let query = WithdrawalQuery {
        account,
        currency: params.currency.as_deref(),
        status: &status,
        created_from: time(params.created_from.as_deref())?,
        created_to: time(params.created_to.as_deref())?,
        payout_id: params.payout_id,
        after: params.after.as_deref(),
        limit: limit(params.limit.as_deref())?,
        order: order(params.order.as_deref(), Order::Asc)?,
    };
    let page = ledger.withdrawals(query).await?;
    Ok(listing(csv, WithdrawalPageJson::of(&page), |p| {
        (p.items, p.next)
    }))
}

#[utoipa::path(get, path = "/v1/accounts/{account}/entries",
    params(("account" = u64, Path, description = "An unsigned 64-bit account id"), EntryParams),
    responses((status = 200, description = "A page of the account's balance changes (by \
        currency, then oldest first); CSV with format=csv or Accept: text/csv",
        content((EntryPageJson = "application/json"), (String = "text/csv"))), ListErrors),
    security(("api_token" = [])))]
pub(crate) async fn entries(
    req: HttpRequest,
    ledger: Ledger,
    path: web::Path<AccountId>,
    params: web::Query<EntryParams>,
) -> Answer {
    let csv = wants_csv(&req, params.format.as_deref())?;
    let limit = limit(params.limit.as_deref())?;
    let page = ledger
        .entries(
            path.into_inner(),
            params.currency.as_deref(),
            params.after.as_deref(),
            limit,
        )
        .await?;
    Ok(listing(csv, EntryPageJson::of(&page), |p| {
        (p.items, p.next)
    }))
}

#[utoipa::path(get, path = "/v1/transactions/{transaction_id}",
    params(("transaction_id" = String, Path, description = "32 hex digits")),
    responses((status = 200, description = "A deposit, transfer or withdrawal", body = TransactionJson),
        ReadOneErrors),
    security(("api_token" = [])))]
pub(crate) async fn get_transaction(ledger: Ledger, path: web::Path<String>) -> Answer {
    // An id that does not parse names no transaction.
    let unknown = || {
        let shown: String = path.chars().take(40).collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_transaction",
            format!("unknown transaction {shown:?}: a transaction id is 32 hex digits"),
        )
    };
    let tx = path.parse::<TransactionId>().map_err(|_| unknown())?;
    let found = ledger.transaction(tx).await?;
    Ok(HttpResponse::Ok().json(TransactionJson::from(&found)))
}

#[utoipa::path(get, path = "/v1/accounts/{account}/balances",
    params(("account" = u64, Path, description = "An unsigned 64-bit account id"), BalancesParams),
    responses((status = 200, description = "The live balances; with at, the balances as of \
        that time, with at", body = BalancesJson), ListErrors),
    security(("api_token" = [])))]
pub(crate) async fn balances(
    ledger: Ledger,
    path: web::Path<AccountId>,
    params: web::Query<BalancesParams>,
) -> Answer {
    let account = path.into_inner();
    let at = time(params.at.as_deref())?;
    let balances = match at {
        Some(at) => ledger.balances_at(account, at).await?,
        None => ledger.balances(account).await?,
    };
    Ok(HttpResponse::Ok().json(BalancesJson {
        account,
        at: at.map(UnixMs::rfc3339),
        balances: balances.iter().map(BalanceJson::from).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/payouts",
    params(PayoutParams),
    responses((status = 200, description = "A page of payouts, newest first unless order=asc",
        body = PayoutPageJson), ListErrors),
    security(("api_token" = [])))]
pub(crate) async fn list_payouts(ledger: Ledger, params: web::Query<PayoutParams>) -> Answer {
    let query = PayoutQuery {
        state: payout_state(params.state.as_deref())?,
        currency: params.currency.as_deref(),
        after: params.after.as_deref(),
        limit: limit(params.limit.as_deref())?,
        order: order(params.order.as_deref(), Order::Desc)?,
    };
    let page = ledger.payouts_page(query).await?;
    Ok(HttpResponse::Ok().json(PayoutPageJson::of(&page)))
}

/// A page as JSON, or as CSV (`parts` takes the page's items and next).
fn listing<P: serde::Serialize, T: CsvRow>(
    csv: bool,
    page: P,
    parts: impl FnOnce(P) -> (Vec<T>, Option<String>),
) -> HttpResponse {
    if csv {
        let (items, next) = parts(page);
        csv::answer(&items, next.as_deref())
    } else {
        HttpResponse::Ok().json(page)
    }
}

/// CSV when `format=csv`, or without `format` when `Accept` names
/// `text/csv` with a quality above zero; JSON otherwise.
fn wants_csv(req: &HttpRequest, format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        Some("csv") => Ok(true),
        Some("json") => Ok(false),
        Some(other) => Err(unknown_value("format", other, "\"json\" or \"csv\"")),
        None => Ok(req
            .headers()
            .get_all(header::ACCEPT)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(accepts_csv)),
    }
}

/// Whether one `Accept` range asks for CSV: `text/csv`, unless its
/// quality is zero (`q=0` means "not this", RFC 9110 §12.4.2).
fn accepts_csv(range: &str) -> bool {
    let mut parts = range.split(';');
    let media = parts.next().unwrap_or("").trim();
    let refused = parts.any(|param| {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        name.trim().eq_ignore_ascii_case("q") && is_zero_quality(value.trim())
    });
    media.eq_ignore_ascii_case("text/csv") && !refused
}

/// `0`, `0.`, `0.0`, `0.00`, `0.000`: a quality value of zero.
fn is_zero_quality(q: &str) -> bool {
    match q.split_once('.') {
        None => q == "0",
        Some((whole, frac)) => whole == "0" && frac.len() <= 3 && frac.bytes().all(|b| b == b'0'),
    }
}

fn unknown_value(name: &str, value: &str, expected: &str) -> ApiError {
    let shown: String = value.chars().take(32).collect();
    ApiError::invalid_input(format!("{name} {shown:?}: expected {expected}"))
}

/// `status=pending,processing`: each a withdrawal status, none empty.
fn statuses(text: Option<&str>) -> Result<Vec<StatusKind>, ApiError> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(|name| {
            StatusKind::ALL
                .into_iter()
                .find(|s| s.as_str() == name)
                .ok_or_else(|| {
                    unknown_value(
                        "status",
                        name,
                        "pending, processing, completed, failed, cancelled or returned, comma-separated",
                    )
                })
        })
        .collect()
}

fn payout_state(text: Option<&str>) -> Result<Option<PayoutState>, ApiError> {
    text.map(|name| {
        PayoutState::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| {
                unknown_value(
                    "state",
                    name,
                    "processing, completed, failed, partially_failed or mismatch",
                )
            })
    })
    .transpose()
}

fn order(text: Option<&str>, default: Order) -> Result<Order, ApiError> {
    match text {
        None => Ok(default),
        Some("asc") => Ok(Order::Asc),
        Some("desc") => Ok(Order::Desc),
        Some(other) => Err(unknown_value("order", other, "\"asc\" or \"desc\"")),
    }
}

/// `limit`: 1 to 1,000 (the ledger judges the range); text that is not
/// a count is `invalid_limit` too.
fn limit(text: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(PAGE_LIMIT_DEFAULT);
    };
    let shown: String = text.chars().take(32).collect();
    text.parse::<usize>().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_limit",
            format!("limit {shown:?}: expected a whole number from 1 to 1000"),
        )
    })
}

fn time(text: Option<&str>) -> Result<Option<UnixMs>, ApiError> {
    text.map(|t| UnixMs::parse_rfc3339(t).map_err(|e| LedgerError::InvalidTime(e).into()))
        .transpose()
}
