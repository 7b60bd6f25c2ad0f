//! Error mapping: every refusal is `{"error": "<snake_case_code>",
//! "message": "...", "details"?: {...}}` with the status its code calls
//! for. `details` is there only for the refusals whose fields a client
//! acts on ([`ErrorDetails`]): `limit_exceeded` (`window`, `limit`,
//! `used`, `requested`, `currency`, `tier`), `account_frozen` (`reason`,
//! `until`, `scope`) and `insufficient_funds` (`part`, `currency`,
//! `available`, `requested`); amounts as decimal strings, times RFC 3339.
//!
//! | status | codes |
//! |---|---|
//! | 400 | `malformed_request` (JSON that does not parse or has the wrong shape), `invalid_amount`, `unknown_currency`, `invalid_idempotency_key`, `same_account_transfer`, `reason_too_long`, `reason_missing` (a freeze's blank reason), `batch_too_large`, `invalid_transaction_id`, `payouts_disabled` (a payout call on a ledger that makes none), `invalid_time` (a time that is not RFC 3339), `invalid_time_range` (`created_from` after `created_to`), `invalid_limit` (a page size outside 1 to 1,000), `invalid_cursor` (an `after` that is not a page's `next`), `invalid_metadata` (metadata that is not an object of string values, or past 16 keys / 1 KiB), `invalid_destination` (a destination field empty, over 256 bytes or with a control character), `invalid_tier`, `invalid_expiry` (an `expires_in` that is not a positive duration within the maximum, a freeze's `until` already past), `fees_disabled` (a fee on a ledger with no fee account), `invalid_input` (a query string or path parameter of the wrong shape, an unknown query parameter, a `status`, `state`, `order`, `format`, `resolution` or freeze `scope` the route does not know) |
//! | 401 | `unauthorized` |
//! | 403 | `account_frozen` (an operator's freeze stops this; `details` names its reason, end and scope) |
//! | 404 | `unknown_withdrawal`, `unknown_transaction`, `unknown_payout`, `not_in_payout`, `not_found` (no such route) |
//! | 405 | `method_not_allowed` |
//! | 408 | `request_timeout` (the body did not arrive within the body deadline) |
//! | 409 | `insufficient_funds` (`details.part`: the `amount` or the `fee`), `limit_exceeded` (a tier's rolling limit; `details` names the window), `invalid_paid_amount` (a completion or resolution paying more than the amount), `invalid_transition` (a completion repeated with another paid amount too), `idempotency_conflict`, `idempotency_in_progress`, `idempotency_key_expired` (the key's first use is older than the retention: refused, nothing applied), `too_many_pending_withdrawals`, `payout_in_flight` (the engine's payouts settle this withdrawal), `payout_item_settled`, `not_replicated` (a replication route on a server that is not a replicated node) |
//! | 413 | `payload_too_large` |
//! | 500 | `internal` |
//! | 503 | `overloaded`, `poisoned`, `shutting_down`, `history_unavailable` (a history read on a ledger without a data folder, or whose history store failed), `not_leader` (a replicated standby, or a fenced writer: writes go to the writer, named when known), `promotion_failed` |
//!
//! A 401, 408 or 413 closes the connection (`Connection: close`): a client
//! refused before its body was read must not keep the connection.
//!
//! [`shape`] gives any other error answer the app produces without a body
//! (an actix-web default) the same shape, with a code by its status: those
//! above, else `bad_request` (another 4xx), `unavailable` (503) or
//! `internal` (another 5xx).

use std::fmt;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::time::UnixMs;
use crate::error::LedgerError;
use crate::http::limits::is_body_timeout;

/// A refused request: its status, stable code, message and, for a few
/// codes, the fields a client acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Boxed: most refusals have none, and every handler returns this.
    pub details: Option<Box<ErrorDetails>>,
}

/// The error code of a response, left in its extensions for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// Every refusal's body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorJson {
    /// A stable snake_case code (see the table in the module docs).
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
    /// For `limit_exceeded`, `account_frozen` and `insufficient_funds`
    /// only: what the refusal names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Box<ErrorDetails>>,
}

/// The fields a refusal names, by code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ErrorDetails {
    LimitExceeded(LimitExceededDetails),
    AccountFrozen(AccountFrozenDetails),
    InsufficientFunds(InsufficientFundsDetails),
}

/// `limit_exceeded`: which rolling window of the account's tier the
/// withdrawal would pass, and by how much.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LimitExceededDetails {
    /// `24h` or `30d`.
    pub window: &'static str,
    pub limit: String,
    /// What the window already counts (pending, processing and completed
    /// withdrawals).
    pub used: String,
    pub requested: String,
    pub currency: String,
    pub tier: String,
}

/// `account_frozen`: the operator's freeze.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AccountFrozenDetails {
    pub reason: String,
    /// When it ends (RFC 3339); null: until lifted.
    #[schema(format = DateTime)]
    pub until: Option<String>,
    /// `withdrawals` or `all`.
    pub scope: &'static str,
}

/// `insufficient_funds`: which part of the withdrawal the available
/// balance does not cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InsufficientFundsDetails {
    /// `amount` or `fee` (both together when they share a currency:
    /// `amount`).
    pub part: &'static str,
    pub currency: String,
    pub available: String,
    pub requested: String,
}

impl ErrorDetails {
    /// The details `error` names, if it is one of the codes that has them.
    pub fn of(error: &LedgerError) -> Option<Self> {
        Some(match error {
            LedgerError::LimitExceeded {
                currency,
                window,
                tier,
                limit,
                used,
                requested,
            } => Self::LimitExceeded(LimitExceededDetails {
                window: window.as_str(),
                limit: limit.to_string(),
                used: used.to_string(),
                requested: requested.to_string(),
                currency: currency.to_string(),
                tier: tier.clone(),
            }),
            LedgerError::AccountFrozen {
                scope,
                reason,
                until,
                ..
            } => Self::AccountFrozen(AccountFrozenDetails {
                reason: reason.clone(),
                until: until.map(UnixMs::rfc3339),
                scope: scope.as_str(),
            }),
            LedgerError::InsufficientFunds {
                currency,
                available,
                requested,
                part,
            } => Self::InsufficientFunds(InsufficientFundsDetails {
                part: part.as_str(),
                currency: currency.to_string(),
                available: available.to_string(),
                requested: requested.to_string(),
            }),
            _ => return None,
        })
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_request", message)
    }

    pub fn invalid_amount(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_amount", message)
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path does not take that method",
        )
    }

    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive within the body deadline",
        )
    }

    /// The answer for an error status the app did not shape itself.
    pub fn for_status(status: StatusCode) -> Self {
        let reason = status.canonical_reason().unwrap_or("error");
        let code = match status {
            StatusCode::BAD_REQUEST => "malformed_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            s if s.is_client_error() => "bad_request",
            _ => "internal",
        };
        Self::new(status, code, reason.to_ascii_lowercase())
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }
}

/// The HTTP status for a ledger refusal: every variant named, so a new
/// one does not compile until it has its status.
pub fn status_of(error: &LedgerError) -> StatusCode {
    match error {
        LedgerError::InvalidIdempotencyKey { .. }
        | LedgerError::BatchTooLarge { .. }
        | LedgerError::SameAccountTransfer { .. }
        | LedgerError::UnknownCurrency { .. }
        | LedgerError::InvalidAmount { .. }
        | LedgerError::ReasonTooLong { .. }
        | LedgerError::ReasonMissing { .. }
        | LedgerError::InvalidTransactionId { .. }
        | LedgerError::InvalidTime(_)
        | LedgerError::InvalidTimeRange { .. }
        | LedgerError::InvalidLimit { .. }
        | LedgerError::InvalidCursor { .. }
        | LedgerError::InvalidConsumer { .. }
        | LedgerError::InvalidMetadata { .. }
        | LedgerError::InvalidDestination { .. }
        | LedgerError::InvalidTier { .. }
        | LedgerError::InvalidExpiry { .. }
        | LedgerError::FeesDisabled
        | LedgerError::PayoutsDisabled => StatusCode::BAD_REQUEST,
        // An operator's freeze: the account may not do this now.
        LedgerError::AccountFrozen { .. } => StatusCode::FORBIDDEN,
        // The log no longer holds what the consumer asks for.
        LedgerError::CursorExpired { .. } => StatusCode::GONE,
        LedgerError::UnknownWithdrawal { .. }
        | LedgerError::UnknownTransaction { .. }
        | LedgerError::UnknownPayout { .. }
        | LedgerError::NotInPayout { .. }
        | LedgerError::UnknownConsumer { .. } => StatusCode::NOT_FOUND,
        LedgerError::InsufficientFunds { .. }
        | LedgerError::LimitExceeded { .. }
        | LedgerError::InvalidPaidAmount { .. }
        | LedgerError::InvalidTransition { .. }
        | LedgerError::CompletedOtherwise { .. }
        | LedgerError::IdempotencyConflict { .. }
        | LedgerError::IdempotencyInProgress { .. }
        | LedgerError::IdempotencyKeyExpired { .. }
        | LedgerError::TooManyPendingWithdrawals { .. }
        // Payout ownership (issue 11 item 4): the item belongs to a payout.
        | LedgerError::PayoutInFlight { .. }
        | LedgerError::PayoutItemSettled { .. } => StatusCode::CONFLICT,
        LedgerError::Overloaded { .. }
        | LedgerError::Poisoned { .. }
        | LedgerError::ShuttingDown
        // A standby (or a fenced writer): writes go to the writer.
        | LedgerError::NotLeader { .. }
        // No history store here (no data folder), or it failed: this
        // server cannot answer history, whatever the request.
        | LedgerError::HistoryUnavailable { .. }
        | LedgerError::EventsUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        LedgerError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        Self {
            details: ErrorDetails::of(&error).map(Box::new),
            ..Self::new(status_of(&error), error.code(), error.to_string())
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status);
        if closes_connection(self.status) {
            builder.force_close();
        }
        let mut response = builder.json(ErrorJson {
            error: self.code.to_string(),
            message: self.message.clone(),
            details: self.details.clone(),
        });
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

/// Whether an answer with this status closes its connection.
fn closes_connection(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::UNAUTHORIZED | StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE
    )
}

/// `JsonConfig`'s error handler: 413 for an oversized body, 408 for a body
/// past its deadline, 400 `malformed_request` for anything else.
pub fn json_error(error: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    match error {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::payload_too_large(limit).into(),
        JsonPayloadError::Payload(error) if is_body_timeout(&error) => {
            ApiError::request_timeout().into()
        }
        JsonPayloadError::ContentType => {
            ApiError::malformed("the body must be JSON (Content-Type: application/json)").into()
        }
        JsonPayloadError::Deserialize(error) => ApiError::malformed(format!(
            "the body is not the JSON this endpoint takes: {error}"
        ))
        .into(),
        other => ApiError::malformed(format!("cannot read the body: {other}")).into(),
    }
}

/// `QueryConfig`'s error handler: a query string of the wrong shape is 400
/// `invalid_input`.
pub fn query_error(error: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::invalid_input(format!("bad query string: {error}")).into()
}

/// Gives an error answer that has no [`ErrorCode`] (one the app did not
/// shape: an actix-web default) the JSON error shape; other answers pass
/// as they are.
pub fn shape<B: MessageBody + 'static>(response: ServiceResponse<B>) -> ServiceResponse<BoxBody> {
    let status = response.status();
    let shaped = response
        .response()
        .extensions()
        .get::<ErrorCode>()
        .is_some();
    if shaped || !(status.is_client_error() || status.is_server_error()) {
        return response.map_into_boxed_body();
    }
    let (request, _) = response.into_parts();
    ServiceResponse::new(request, ApiError::for_status(status).error_response())
}

/// `PathConfig`'s error handler: a path segment of the wrong type (an
/// account that is not an unsigned 64-bit integer) is 400 `invalid_input`.
pub fn path_error(error: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::invalid_input(format!("bad path parameter: {error}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::TransactionId;
    use crate::domain::money::CurrencyCode;
    use crate::domain::withdrawal::{StatusKind, TransitionAction};
    use crate::{AmountProblem, Decimal};

    #[test]
    fn every_ledger_error_has_the_status_its_code_calls_for() {
        let usd = CurrencyCode::new("USD").unwrap();
        let tx = TransactionId::new(1, 1);
        let cases = [
            (LedgerError::ShuttingDown, 503),
            (LedgerError::NotLeader { writer: None }, 503),
            (LedgerError::Poisoned { reason: "x".into() }, 503),
            (LedgerError::Overloaded { shard: 0, limit: 1 }, 503),
            (
                LedgerError::UnknownCurrency {
                    currency: "XXX".into(),
                },
                400,
            ),
            (
                LedgerError::InvalidAmount {
                    amount: Decimal::ZERO,
                    currency: usd,
                    problem: AmountProblem::NotPositive,
                },
                400,
            ),
            (LedgerError::UnknownWithdrawal { transaction_id: tx }, 404),
            (LedgerError::UnknownPayout { payout_id: 3 }, 404),
            (LedgerError::IdempotencyConflict { key: "k".into() }, 409),
            (LedgerError::IdempotencyInProgress { key: "k".into() }, 409),
            (LedgerError::IdempotencyKeyExpired { key: "k".into() }, 409),
            (
                LedgerError::InvalidTransition {
                    transaction_id: tx,
                    from: StatusKind::Completed,
                    action: TransitionAction::Cancel,
                },
                409,
            ),
            (
                LedgerError::TooManyPendingWithdrawals {
                    account: 1,
                    limit: 8,
                },
                409,
            ),
            (LedgerError::Internal { reason: "x".into() }, 500),
            (
                LedgerError::InvalidIdempotencyKey {
                    length: 0,
                    max: 128,
                },
                400,
            ),
            (LedgerError::BatchTooLarge { count: 9, max: 8 }, 400),
            (LedgerError::SameAccountTransfer { account: 1 }, 400),
            (
                LedgerError::ReasonTooLong {
                    field: "reason",
                    length: 300,
                    max: 256,
                },
                400,
            ),
            (
                LedgerError::InvalidTransactionId {
                    input: "xyz".into(),
                },
                400,
            ),
            (LedgerError::PayoutsDisabled, 400),
            (
                LedgerError::InvalidTime(crate::UnixMs::parse_rfc3339("x").unwrap_err()),
                400,
            ),
            (
                LedgerError::InvalidTimeRange {
                    from: crate::UnixMs::from_millis(2),
                    to: crate::UnixMs::from_millis(1),
                },
                400,
            ),
            (
                LedgerError::InvalidLimit {
                    limit: 0,
                    max: 1_000,
                },
                400,
            ),
            (LedgerError::InvalidCursor { reason: "x".into() }, 400),
            (LedgerError::UnknownTransaction { transaction_id: tx }, 404),
            (LedgerError::HistoryUnavailable { reason: "x".into() }, 503),
            (LedgerError::EventsUnavailable { reason: "x".into() }, 503),
            (
                LedgerError::CursorExpired {
                    after: 1,
                    oldest: 9,
                },
                410,
            ),
            (LedgerError::InvalidConsumer { reason: "x".into() }, 400),
            (LedgerError::UnknownConsumer { name: "x".into() }, 404),
            (
                LedgerError::NotInPayout {
                    payout_id: 3,
                    transaction_id: tx,
                },
                404,
            ),
            (
                LedgerError::PayoutInFlight {
                    transaction_id: tx,
                    payout_id: None,
                },
                409,
            ),
            (
                LedgerError::PayoutItemSettled {
                    payout_id: 3,
                    transaction_id: tx,
                    outcome: "paid".into(),
                },
                409,
            ),
            (
                LedgerError::InsufficientFunds {
                    currency: usd,
                    available: Decimal::ZERO,
                    requested: Decimal::ONE,
                    part: crate::error::FundsPart::Amount,
                },
                409,
            ),
        ];
        for (error, status) in cases {
            let api = ApiError::from(error.clone());
            assert_eq!(api.status.as_u16(), status, "{error:?}");
            assert_eq!(api.code, error.code());
            assert_eq!(api.message, error.to_string());
        }
    }

    #[test]
    fn the_exchange_refusals_have_their_statuses_and_details() {
        let usd = CurrencyCode::new("USD").unwrap();
        let tx = TransactionId::new(1, 1);
        let frozen = LedgerError::AccountFrozen {
            account: 1,
            scope: crate::domain::policy::FreezeScope::All,
            reason: "fraud".into(),
            until: Some(crate::UnixMs::from_millis(1_000)),
        };
        let limit = LedgerError::LimitExceeded {
            currency: usd,
            window: crate::domain::policy::Window::Month,
            tier: "vip".into(),
            limit: Decimal::new(10000, 2),
            used: Decimal::new(6000, 2),
            requested: Decimal::new(5000, 2),
        };
        let short = LedgerError::InsufficientFunds {
            currency: usd,
            available: Decimal::new(100, 2),
            requested: Decimal::new(200, 2),
            part: crate::error::FundsPart::Fee,
        };
        let paid = LedgerError::InvalidPaidAmount {
            transaction_id: tx,
            amount: Decimal::ONE,
            paid: Decimal::TWO,
        };
        let bad = [
            LedgerError::InvalidMetadata {
                problem: "x".into(),
            },
            LedgerError::InvalidDestination {
                field: "kind",
                problem: "empty".into(),
            },
            LedgerError::InvalidTier { tier: "x y".into() },
            LedgerError::InvalidExpiry {
                problem: "x".into(),
            },
            LedgerError::FeesDisabled,
        ];
        for error in bad {
            let api = ApiError::from(error.clone());
            assert_eq!((api.status.as_u16(), api.details), (400, None), "{error:?}");
        }
        assert_eq!(ApiError::from(paid).status.as_u16(), 409);
        let body = |error: LedgerError| {
            let api = ApiError::from(error);
            let json = ErrorJson {
                error: api.code.to_string(),
                message: api.message.clone(),
                details: api.details,
            };
            (api.status.as_u16(), serde_json::to_value(json).unwrap())
        };
        let (status, json) = body(frozen);
        assert_eq!(status, 403);
        assert_eq!(
            json["details"],
            serde_json::json!({"reason": "fraud", "until": "1970-01-01T00:00:01.000Z",
                "scope": "all"})
        );
        let (status, json) = body(limit);
        assert_eq!(status, 409);
        assert_eq!(
            json["details"],
            serde_json::json!({"window": "30d", "limit": "100.00", "used": "60.00",
                "requested": "50.00", "currency": "USD", "tier": "vip"})
        );
        let (status, json) = body(short);
        assert_eq!(status, 409);
        assert_eq!(
            json["details"],
            serde_json::json!({"part": "fee", "currency": "USD", "available": "1.00",
                "requested": "2.00"})
        );
        let (_, plain) = body(LedgerError::ShuttingDown);
        assert!(plain.get("details").is_none(), "{plain}");
    }

    #[test]
    fn the_error_body_is_code_and_message() {
        let response = ApiError::unauthorized("no token").error_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.extensions().get::<ErrorCode>().map(|c| c.0),
            Some("unauthorized")
        );
    }
}
