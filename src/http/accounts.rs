//! The account-control routes: an operator sets an account's tier
//! (`PUT /v1/accounts/{account}/tier`), freezes it (`POST
//! /v1/accounts/{account}/freeze`) or lifts the freeze (`DELETE` on the
//! same path); a client asks how much it may withdraw now (`GET
//! /v1/accounts/{account}/withdrawal-allowance?currency=`). The writes
//! answer the account's controls, `{account, tier, freeze}`; their JSON
//! is here.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::ids::AccountId;
use crate::domain::policy::{Freeze, FreezeScope};
use crate::domain::time::UnixMs;
use crate::error::LedgerError;
use crate::http::details::json_kind;
use crate::http::error::ApiError;
use crate::http::openapi::{ControlLiftErrors, ControlWriteErrors, ListErrors};
use crate::ledger::Ledger;
use crate::{AccountControls, WindowAllowance, WithdrawalAllowance};

type Answer = Result<HttpResponse, ApiError>;

/// `PUT /v1/accounts/{account}/tier`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierRequest {
    /// 1 to 32 of `A-Z a-z 0-9 _ - .` (say `vip`); a non-negative JSON
    /// integer is read as its decimal text (`2` is tier `"2"`).
    #[schema(value_type = String, example = "vip")]
    pub tier: RawTier,
}

/// A tier as the caller sent it: a string, or an integer taken as its
/// decimal text; anything else is `invalid_tier`.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTier(serde_json::Value);

impl<'de> Deserialize<'de> for RawTier {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(Self)
    }
}

impl RawTier {
    /// The tier's name, for the ledger to judge.
    fn text(&self) -> Result<String, ApiError> {
        match &self.0 {
            serde_json::Value::String(text) => Ok(text.clone()),
            serde_json::Value::Number(n) if n.as_u64().is_some() => Ok(n.to_string()),
            other => Err(LedgerError::InvalidTier {
                tier: format!("{other}").chars().take(40).collect::<String>()
                    + &format!(" ({})", json_kind(other)),
            }
            .into()),
        }
    }
}

/// `POST /v1/accounts/{account}/freeze`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeRequest {
    /// `withdrawals` (new withdrawals and outgoing transfers) or `all`
    /// (every new operation on the account, in or out).
    #[schema(pattern = "^(withdrawals|all)$")]
    pub scope: String,
    /// When the freeze ends (RFC 3339, in the future); absent or null:
    /// until lifted.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub until: Option<String>,
    /// Why (not blank, else `reason_missing`; at most 256 bytes, else
    /// `reason_too_long`): `account_frozen` refusals name it.
    pub reason: String,
}

/// An operator's freeze as answers show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FreezeJson {
    /// `withdrawals` or `all`.
    pub scope: &'static str,
    /// When it ends (RFC 3339); null: until lifted.
    #[schema(format = DateTime)]
    pub until: Option<String>,
    pub reason: String,
}

impl From<&Freeze> for FreezeJson {
    fn from(f: &Freeze) -> Self {
        Self {
            scope: f.scope.as_str(),
            until: f.until.map(UnixMs::rfc3339),
            reason: f.reason.clone(),
        }
    }
}

/// An account's controls: its tier and the freeze in force (null: none).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ControlsJson {
    pub account: AccountId,
    /// `default` unless set.
    pub tier: String,
    pub freeze: Option<FreezeJson>,
}

impl From<&AccountControls> for ControlsJson {
    fn from(c: &AccountControls) -> Self {
        Self {
            account: c.account,
            tier: c.tier.to_string(),
            freeze: c.freeze.as_ref().map(FreezeJson::from),
        }
    }
}

/// One rolling window of an allowance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WindowAllowanceJson {
    /// `24h` or `30d`.
    pub window: &'static str,
    pub limit: String,
    /// What the window counts: pending, processing and completed
    /// withdrawals requested within it.
    pub used: String,
    pub remaining: String,
}

impl From<&WindowAllowance> for WindowAllowanceJson {
    fn from(w: &WindowAllowance) -> Self {
        Self {
            window: w.window.as_str(),
            limit: w.limit.to_string(),
            used: w.used.to_string(),
            remaining: w.remaining.to_string(),
        }
    }
}

/// The most an account can withdraw of a currency now, and why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AllowanceJson {
    pub account: AccountId,
    pub currency: String,
    pub tier: String,
    /// The most one withdrawal may be for now: the available balance,
    /// capped by each window's remaining limit; zero while a freeze stops
    /// withdrawals.
    pub amount: String,
    pub available: String,
    /// Each window with a limit for this tier and currency (none: no
    /// limit).
    pub windows: Vec<WindowAllowanceJson>,
    pub freeze: Option<FreezeJson>,
}

impl From<&WithdrawalAllowance> for AllowanceJson {
    fn from(a: &WithdrawalAllowance) -> Self {
        Self {
            account: a.account,
            currency: a.currency.to_string(),
            tier: a.tier.to_string(),
            amount: a.amount.to_string(),
            available: a.available.to_string(),
            windows: a.windows.iter().map(WindowAllowanceJson::from).collect(),
            freeze: a.freeze.as_ref().map(FreezeJson::from),
        }
    }
}

/// The query of the allowance.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AllowanceParams {
    /// A configured currency code.
    currency: String,
}

fn controls(c: &AccountControls) -> HttpResponse {
    HttpResponse::build(StatusCode::OK).json(ControlsJson::from(c))
}

const ACCOUNT: &str = "An unsigned 64-bit account id";

#[utoipa::path(put, path = "/v1/accounts/{account}/tier",
    params(("account" = u64, Path, description = ACCOUNT)),
    request_body = TierRequest,
    responses((status = 200, description = "The account's controls, in the tier now \
        (logged; setting the tier it has changes nothing)", body = ControlsJson),
        ControlWriteErrors),
    security(("api_token" = [])))]
pub(crate) async fn set_tier(
    ledger: Ledger,
    path: web::Path<AccountId>,
    body: web::Json<TierRequest>,
) -> Answer {
    let tier = body.tier.text()?;
    Ok(controls(
        &ledger.set_account_tier(path.into_inner(), &tier).await?,
    ))
}

#[utoipa::path(post, path = "/v1/accounts/{account}/freeze",
    params(("account" = u64, Path, description = ACCOUNT)),
    request_body = FreezeRequest,
    responses((status = 200, description = "Frozen (replacing any freeze): the account's \
        controls", body = ControlsJson), ControlWriteErrors),
    security(("api_token" = [])))]
pub(crate) async fn freeze(
    ledger: Ledger,
    path: web::Path<AccountId>,
    body: web::Json<FreezeRequest>,
) -> Answer {
    let body = body.into_inner();
    let scope = FreezeScope::parse(&body.scope).ok_or_else(|| {
        let shown: String = body.scope.chars().take(32).collect();
        ApiError::invalid_input(format!(
            "scope {shown:?}: expected \"withdrawals\" or \"all\""
        ))
    })?;
    let until = body
        .until
        .as_deref()
        .map(UnixMs::parse_rfc3339)
        .transpose()
        .map_err(LedgerError::InvalidTime)?;
    let answer = ledger
        .freeze_account(path.into_inner(), scope, until, &body.reason)
        .await?;
    Ok(controls(&answer))
}

#[utoipa::path(delete, path = "/v1/accounts/{account}/freeze",
    params(("account" = u64, Path, description = ACCOUNT)),
    responses((status = 200, description = "The freeze lifted (if there was one): the \
        account's controls", body = ControlsJson), ControlLiftErrors),
    security(("api_token" = [])))]
pub(crate) async fn unfreeze(ledger: Ledger, path: web::Path<AccountId>) -> Answer {
    Ok(controls(&ledger.unfreeze_account(path.into_inner()).await?))
}

#[utoipa::path(get, path = "/v1/accounts/{account}/withdrawal-allowance",
    params(("account" = u64, Path, description = ACCOUNT), AllowanceParams),
    responses((status = 200, description = "The most the account can withdraw of the \
        currency now", body = AllowanceJson), ListErrors),
    security(("api_token" = [])))]
pub(crate) async fn withdrawal_allowance(
    ledger: Ledger,
    path: web::Path<AccountId>,
    params: web::Query<AllowanceParams>,
) -> Answer {
    let allowance = ledger
        .withdrawal_allowance(path.into_inner(), &params.currency)
        .await?;
    Ok(HttpResponse::Ok().json(AllowanceJson::from(&allowance)))
}
