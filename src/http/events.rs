//! The event feed's routes: the long poll (`GET /v1/events`), Server-Sent
//! Events (`GET /v1/events/stream`), named consumers' cursors
//! (`/v1/consumers...`) and the journal's head (`GET /v1/journal/head`).
//! Each reads its input strictly, calls the `Ledger`'s feed API
//! (`ledger/events.rs`) and shows the answer; the events themselves are
//! [`FeedEvent`]s, serialised as they are.
//!
//! Query parameters: `after` (an LSN, default 0; not a whole number, or
//! past the durable log: `invalid_cursor`; one the log no longer holds:
//! 410 `cursor_expired`), `consumer` (start from that consumer's cursor
//! instead; with `after`: `invalid_input`), `limit` (1 to 1,000, default
//! 100, `invalid_limit`), `wait` (whole seconds 0 to 60, default 0,
//! `invalid_input`). The stream resumes after its `Last-Event-ID` header
//! when there is one (it wins over `after` and `consumer`).
//!
//! The stream pulls the next batch from its subscription only when actix
//! asks for more body (the client has read what was sent), so a slow
//! client holds one batch, never the log. Silence of [`HEARTBEAT`] on the
//! ledger's clock (the subscription's wait) sends a `: keep-alive`
//! comment. An error after the start (among them `shutting_down`, which
//! the subscription answers once the ledger shut down and every event was
//! sent) sends `event: error` with the error JSON, and the stream ends.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};

use crate::domain::feed::FeedEvent;
use crate::domain::history::PAGE_LIMIT_DEFAULT;
use crate::http::error::{ApiError, ErrorJson};
use crate::http::openapi::{ConsumerErrors, CursorWriteErrors, EventsErrors, PlainReadErrors};
use crate::ledger::Ledger;
use crate::ledger::{ConsumerCursor, Subscription};
use crate::LedgerError;

type Answer = Result<HttpResponse, ApiError>;

/// Most events one long poll answers.
pub const EVENTS_LIMIT_MAX: usize = 1_000;

/// Longest a long poll waits for an event, in seconds.
pub const WAIT_SECS_MAX: u64 = 60;

/// Silence after which the stream sends a `: keep-alive` comment.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Most events the stream sends in one chunk.
pub const STREAM_BATCH: usize = 100;

/// The long poll's query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// Events after this LSN (default 0: from the log's first record).
    after: Option<String>,
    /// Start from this consumer's cursor instead of `after`.
    consumer: Option<String>,
    /// Most events to answer, 1 to 1,000 (default 100).
    limit: Option<String>,
    /// Seconds to wait for an event when none is there yet, 0 to 60
    /// (default 0: answer at once).
    wait: Option<String>,
}

/// The stream's query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Events after this LSN (default 0); the `Last-Event-ID` header wins
    /// over it.
    after: Option<String>,
    /// Start from this consumer's cursor instead of `after`.
    consumer: Option<String>,
}

/// A long poll's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventsJson {
    /// In LSN order, consecutive.
    #[schema(value_type = Vec<FeedEventDoc>)]
    pub events: Vec<FeedEvent>,
    /// The LSN of the last event, or the `after` asked for when there is
    /// none: the next poll's `after`.
    pub next: u64,
}

/// A consumer's cursor, in and out.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CursorJson {
    pub name: String,
    /// The last event it acknowledged (0: none yet).
    pub lsn: u64,
}

impl From<ConsumerCursor> for CursorJson {
    fn from(cursor: ConsumerCursor) -> Self {
        Self {
            name: cursor.name,
            lsn: cursor.lsn,
        }
    }
}

/// Every consumer's cursor.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsumersJson {
    pub consumers: Vec<CursorJson>,
}

/// `PUT /v1/consumers/{name}/cursor`'s body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CursorRequest {
    /// The last event the consumer has handled.
    pub lsn: u64,
}

/// A feed event (`FeedEvent`'s JSON, for the document): the fields every
/// event has, and those of each `type` (absent from the types that lack
/// them).
#[derive(utoipa::ToSchema)]
#[schema(as = FeedEvent)]
#[allow(dead_code)] // Only its schema is used.
pub struct FeedEventDoc {
    /// The event shape's version (1).
    version: u32,
    /// Log sequence number: consecutive, from 1.
    lsn: u64,
    /// RFC 3339 UTC with milliseconds; null for records logged before times were.
    time: Option<String>,
    time_ms: Option<u64>,
    /// What happened.
    #[schema(rename = "type")]
    kind: FeedTypeDoc,
    /// Each balance the event changed, after it.
    balances: Vec<BalanceAfterDoc>,
    /// false when `balances` lacks a balance the feed could not learn.
    balances_known: bool,
    transaction_id: Option<String>,
    account: Option<u64>,
    currency: Option<String>,
    amount: Option<String>,
    idempotency_key: Option<String>,
    payout_id: Option<u64>,
    reason: Option<String>,
    from: Option<u64>,
    to: Option<u64>,
    /// `payout.submitted`: `{transaction_id, amount}`; `payout.settled`:
    /// `{transaction_id, outcome, reason}`.
    items: Option<Vec<FeedItemDoc>>,
    /// `payout.resolved`: the item's answer.
    item: Option<FeedItemDoc>,
    note: Option<String>,
    settled: Option<String>,
    reported: Option<String>,
    /// `idempotency_keys.expired`: keys first used before this time.
    before: Option<String>,
    /// `deposited`, `transferred`, `withdrawal.requested`: string keys and
    /// values (absent when none).
    metadata: Option<std::collections::BTreeMap<String, String>>,
    /// `withdrawal.requested`: `{currency, amount}`, locked with the
    /// amount; `withdrawal.completed`: `{to, currency, amount}`, moved to
    /// the fee account `to` (absent when none).
    fee: Option<FeedFeeDoc>,
    /// `withdrawal.requested`: where it is paid (absent when none).
    destination: Option<FeedDestinationDoc>,
    /// `withdrawal.requested`: while still pending then, it fails with
    /// reason `expired` (absent when it never expires).
    expires_at: Option<String>,
    /// `withdrawal.completed`: what left the account, the amount or less
    /// (the rest was released).
    paid: Option<String>,
    /// `account.frozen`: `withdrawals` or `all`.
    scope: Option<String>,
    /// `account.frozen`: when the freeze ends (null: until lifted).
    until: Option<String>,
    /// `account.tier_set`: the account's tier.
    tier: Option<String>,
}

/// A withdrawal's fee in a feed event.
#[derive(utoipa::ToSchema)]
#[schema(as = FeedFee)]
#[allow(dead_code)] // Only its schema is used.
pub struct FeedFeeDoc {
    /// The fee account it moved to (`withdrawal.completed` only).
    to: Option<u64>,
    currency: String,
    amount: String,
}

/// A withdrawal's destination in a feed event.
#[derive(utoipa::ToSchema)]
#[schema(as = FeedDestination)]
#[allow(dead_code)] // Only its schema is used.
pub struct FeedDestinationDoc {
    kind: String,
    value: String,
    network: Option<String>,
}

/// A feed event's `type`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = FeedEventType)]
#[allow(dead_code)] // Only its schema is used.
pub enum FeedTypeDoc {
    #[serde(rename = "deposited")]
    Deposited,
    #[serde(rename = "withdrawal.requested")]
    WithdrawalRequested,
    #[serde(rename = "withdrawal.claimed")]
    WithdrawalClaimed,
    #[serde(rename = "withdrawal.released")]
    WithdrawalReleased,
    #[serde(rename = "withdrawal.completed")]
    WithdrawalCompleted,
    #[serde(rename = "withdrawal.failed")]
    WithdrawalFailed,
    #[serde(rename = "withdrawal.cancelled")]
    WithdrawalCancelled,
    #[serde(rename = "withdrawal.returned")]
    WithdrawalReturned,
    #[serde(rename = "transferred")]
    Transferred,
    #[serde(rename = "payout.submitted")]
    PayoutSubmitted,
    #[serde(rename = "payout.settled")]
    PayoutSettled,
    #[serde(rename = "payout.resolved")]
    PayoutResolved,
    #[serde(rename = "payout.mismatch")]
    PayoutMismatch,
    #[serde(rename = "idempotency_keys.expired")]
    IdempotencyKeysExpired,
    #[serde(rename = "account.frozen")]
    AccountFrozen,
    #[serde(rename = "account.unfrozen")]
    AccountUnfrozen,
    #[serde(rename = "account.tier_set")]
    AccountTierSet,
}

/// A payout item in a feed event.
#[derive(utoipa::ToSchema)]
#[schema(as = FeedItem)]
#[allow(dead_code)] // Only its schema is used.
pub struct FeedItemDoc {
    transaction_id: String,
    amount: Option<String>,
    /// `paid` or `failed`.
    outcome: Option<String>,
    reason: Option<String>,
}

/// A balance after an event.
#[derive(utoipa::ToSchema)]
#[schema(as = BalanceAfter)]
#[allow(dead_code)] // Only its schema is used.
pub struct BalanceAfterDoc {
    account: u64,
    currency: String,
    available: String,
    locked: String,
    total: String,
}

/// The journal's head: the last record's LSN and its chain hash.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JournalHeadJson {
    pub lsn: u64,
    /// SHA-256, 64 lowercase hex digits.
    pub hash: String,
}

/// The events after `after` (or `consumer`'s cursor), at most `limit`,
/// waiting up to `wait` seconds for the first when there is none yet.
#[utoipa::path(get, path = "/v1/events", params(EventsParams),
    responses((status = 200, description = "The events after `after`, in LSN order (empty \
        when none became durable within `wait`)", body = EventsJson), EventsErrors),
    security(("api_token" = [])))]
pub(crate) async fn events(ledger: Ledger, params: web::Query<EventsParams>) -> Answer {
    let limit = limit(params.limit.as_deref())?;
    let wait = wait(params.wait.as_deref())?;
    let after = lsn("after", params.after.as_deref())?;
    let mut subscription = open(&ledger, after, params.consumer.as_deref())?;
    let start = subscription.position();
    let events = subscription.next(limit, wait).await?;
    let next = events.last().map_or(start, |e| e.lsn);
    Ok(HttpResponse::Ok().json(EventsJson { events, next }))
}

/// Server-Sent Events from `after` (or `consumer`'s cursor, or the
/// `Last-Event-ID` header), for as long as the client reads.
#[utoipa::path(get, path = "/v1/events/stream", params(StreamParams,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this LSN \
            (wins over `after` and `consumer`)")),
    responses((status = 200, description = "text/event-stream: per event `id: <lsn>`, \
        `event: <type>`, `data: <FeedEvent JSON>`; a `: keep-alive` comment after 15 s of \
        silence; `event: error` with the error JSON, then the end, on an error after the start",
        content_type = "text/event-stream", body = String), EventsErrors),
    security(("api_token" = [])))]
pub(crate) async fn events_stream(
    req: HttpRequest,
    ledger: Ledger,
    params: web::Query<StreamParams>,
) -> Answer {
    let after = lsn("after", params.after.as_deref())?;
    let mut subscription = match last_event_id(&req)? {
        Some(id) => ledger.subscribe(id)?,
        None => open(&ledger, after, params.consumer.as_deref())?,
    };
    // A position the log no longer holds is refused before the stream
    // starts (410 with the usual JSON), not inside it.
    let first = subscription.next(STREAM_BATCH, Duration::ZERO).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(sse(subscription, first)))
}

/// The stream's state between chunks. A ledger shut down (or a
/// replicated node's standby replaced by the writer) ends it: its
/// subscription answers `shutting_down` once every event was read.
struct Sse {
    subscription: Subscription,
    /// The events read before the answer started, sent first.
    first: Vec<FeedEvent>,
    ended: bool,
}

/// The body of the event stream: one chunk per pull, pulled only when
/// actix wants more (the client read the last one).
fn sse(
    subscription: Subscription,
    first: Vec<FeedEvent>,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let state = Sse {
        subscription,
        first,
        ended: false,
    };
    stream::unfold(state, |mut state| async move {
        if state.ended {
            return None;
        }
        if !state.first.is_empty() {
            let first = std::mem::take(&mut state.first);
            return Some((Ok(frames(&first)), state));
        }
        let chunk = match state.subscription.next(STREAM_BATCH, HEARTBEAT).await {
            Ok(events) if events.is_empty() => Bytes::from_static(b": keep-alive\n\n"),
            Ok(events) => frames(&events),
            Err(error) => {
                state.ended = true;
                error_frame(&error.into())
            }
        };
        Some((Ok(chunk), state))
    })
}

/// `id: <lsn>`, `event: <type>`, `data: <json>` for each event.
fn frames(events: &[FeedEvent]) -> Bytes {
    let mut out = String::with_capacity(events.len() * 256);
    for event in events {
        match serde_json::to_value(event) {
            Ok(json) => {
                let kind = json["type"].as_str().unwrap_or("event");
                let _ = write!(out, "id: {}\nevent: {kind}\ndata: {json}\n\n", event.lsn);
            }
            // Cannot happen (the type serialises to JSON); say so rather
            // than skip an event silently.
            Err(error) => {
                tracing::warn!(lsn = event.lsn, %error, "a feed event did not serialise");
                let error = ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("event {} did not serialise: {error}", event.lsn),
                );
                out.push_str(&String::from_utf8_lossy(&error_frame(&error)));
                break;
            }
        }
    }
    Bytes::from(out)
}

/// `event: error` with the error's JSON.
fn error_frame(error: &ApiError) -> Bytes {
    let body = ErrorJson {
        error: error.code.to_string(),
        message: error.message.clone(),
        details: error.details.clone(),
    };
    let data = serde_json::to_string(&body).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

/// The subscription a request asks for: from `consumer`'s cursor, or after
/// `after` (0 when neither); both is `invalid_input`.
fn open(
    ledger: &Ledger,
    after: Option<u64>,
    consumer: Option<&str>,
) -> Result<Subscription, ApiError> {
    match (after, consumer) {
        (Some(_), Some(_)) => Err(ApiError::invalid_input(
            "give `after` or `consumer`, not both",
        )),
        (None, Some(name)) => Ok(ledger.subscribe_consumer(name)?),
        (after, None) => Ok(ledger.subscribe(after.unwrap_or(0))?),
    }
}

/// The `Last-Event-ID` header as an LSN, if sent.
fn last_event_id(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    let Some(value) = req.headers().get("Last-Event-ID") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("");
    lsn("Last-Event-ID", Some(text.trim()))
}

/// An LSN from text (`after`, `Last-Event-ID`): `invalid_cursor` unless a
/// whole number.
fn lsn(name: &str, text: Option<&str>) -> Result<Option<u64>, ApiError> {
    text.map(|text| {
        text.parse::<u64>().map_err(|_| {
            let error = LedgerError::InvalidCursor {
                reason: format!("{name} {:?} is not an LSN (a whole number)", shown(text)),
            };
            ApiError::from(error)
        })
    })
    .transpose()
}

/// `limit`: 1 to [`EVENTS_LIMIT_MAX`], default 100; else `invalid_limit`.
fn limit(text: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(PAGE_LIMIT_DEFAULT);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=EVENTS_LIMIT_MAX).contains(&n) => Ok(n),
        Ok(n) => Err(LedgerError::InvalidLimit {
            limit: n,
            max: EVENTS_LIMIT_MAX,
        }
        .into()),
        Err(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_limit",
            format!(
                "limit {:?}: expected a whole number from 1 to {EVENTS_LIMIT_MAX}",
                shown(text)
            ),
        )),
    }
}

/// `wait`: whole seconds 0 to [`WAIT_SECS_MAX`], default 0; else
/// `invalid_input`.
fn wait(text: Option<&str>) -> Result<Duration, ApiError> {
    let Some(text) = text else {
        return Ok(Duration::ZERO);
    };
    match text.parse::<u64>() {
        Ok(secs) if secs <= WAIT_SECS_MAX => Ok(Duration::from_secs(secs)),
        _ => Err(ApiError::invalid_input(format!(
            "wait {:?}: expected whole seconds from 0 to {WAIT_SECS_MAX}",
            shown(text)
        ))),
    }
}

/// At most 32 characters of what the caller sent, for a message.
fn shown(text: &str) -> String {
    text.chars().take(32).collect()
}

/// A consumer's cursor.
#[utoipa::path(get, path = "/v1/consumers/{name}/cursor",
    params(("name" = String, Path, description = "1 to 64 of A-Z a-z 0-9 _ - .")),
    responses((status = 200, body = CursorJson), ConsumerErrors),
    security(("api_token" = [])))]
pub(crate) async fn consumer_cursor(ledger: Ledger, path: web::Path<String>) -> Answer {
    let name = path.into_inner();
    let cursor = ledger
        .consumer(&name)?
        .ok_or(LedgerError::UnknownConsumer { name })?;
    Ok(HttpResponse::Ok().json(CursorJson::from(cursor)))
}

/// Acknowledges every event up to `lsn` for the consumer (creating it):
/// durable when answered; the log keeps what it has not acknowledged.
#[utoipa::path(put, path = "/v1/consumers/{name}/cursor",
    params(("name" = String, Path, description = "1 to 64 of A-Z a-z 0-9 _ - .")),
    request_body = CursorRequest,
    responses((status = 200, description = "The cursor, as set", body = CursorJson),
        CursorWriteErrors),
    security(("api_token" = [])))]
pub(crate) async fn set_consumer_cursor(
    ledger: Ledger,
    path: web::Path<String>,
    body: web::Json<CursorRequest>,
) -> Answer {
    let name = path.into_inner();
    let lsn = body.into_inner().lsn;
    ledger.ack(&name, lsn).await?;
    Ok(HttpResponse::Ok().json(CursorJson { name, lsn }))
}

/// Every consumer's cursor, by name.
#[utoipa::path(get, path = "/v1/consumers",
    responses((status = 200, body = ConsumersJson), PlainReadErrors),
    security(("api_token" = [])))]
pub(crate) async fn list_consumers(ledger: Ledger) -> Answer {
    let consumers = ledger.consumers()?;
    Ok(HttpResponse::Ok().json(ConsumersJson {
        consumers: consumers.into_iter().map(CursorJson::from).collect(),
    }))
}

/// Forgets a consumer: it no longer holds the log back.
#[utoipa::path(delete, path = "/v1/consumers/{name}",
    params(("name" = String, Path, description = "1 to 64 of A-Z a-z 0-9 _ - .")),
    responses((status = 204, description = "Removed"), ConsumerErrors),
    security(("api_token" = [])))]
pub(crate) async fn remove_consumer(ledger: Ledger, path: web::Path<String>) -> Answer {
    let name = path.into_inner();
    if ledger.remove_consumer(&name).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(LedgerError::UnknownConsumer { name }.into())
    }
}

/// The log's head, for anchoring outside: `burnledger verify --chain`
/// later proves no record up to it changed.
#[utoipa::path(get, path = "/v1/journal/head",
    responses((status = 200, description = "The last durable record's LSN and the SHA-256 \
        that chains it (0 and zeros: an empty log)", body = JournalHeadJson), PlainReadErrors),
    security(("api_token" = [])))]
pub(crate) async fn journal_head(ledger: Ledger) -> Answer {
    let head = ledger.journal_head()?;
    Ok(HttpResponse::Ok().json(JournalHeadJson {
        lsn: head.lsn,
        hash: head.hash_hex(),
    }))
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;
    use serde_json::Value;
    use utoipa::OpenApi;

    use super::*;
    use crate::domain::details::{Destination, Metadata};
    use crate::domain::feed::{
        BalanceAfter, FeedBody, FeedFee, FeedFeeCollected, FeedItemOutcome, FeedOutcome,
        FeedPayoutItem, FEED_VERSION,
    };
    use crate::domain::ids::{IdempotencyKey, TransactionId};
    use crate::domain::money::CurrencyCode;
    use crate::domain::time::UnixMs;
    use crate::http::openapi::ApiDoc;

    /// One body of every type, with every optional field set. The match
    /// below does not compile when a type is added: add its sample too.
    fn every_body() -> Vec<FeedBody> {
        let tx = TransactionId::new(7, 1);
        let usd = CurrencyCode::new("USD").unwrap();
        let key = IdempotencyKey::new("k").ok();
        let item = FeedItemOutcome {
            transaction_id: tx,
            outcome: FeedOutcome::Failed,
            reason: Some("closed".into()),
        };
        let (transaction_id, account) = (tx, 7);
        let (currency, amount) = (Some(usd), Some(Decimal::ONE));
        let metadata = Metadata::new([("order", "42")]).unwrap();
        let bodies = vec![
            FeedBody::Deposited {
                transaction_id,
                account,
                currency: usd,
                amount: Decimal::ONE,
                idempotency_key: key.clone(),
                metadata: metadata.clone(),
            },
            FeedBody::WithdrawalRequested {
                transaction_id,
                account,
                currency: usd,
                amount: Decimal::ONE,
                idempotency_key: key.clone(),
                fee: Some(FeedFee {
                    currency: usd,
                    amount: Decimal::ONE,
                }),
                destination: Some(Destination::new("iban", "DE89", Some("sepa".into())).unwrap()),
                metadata: metadata.clone(),
                expires_at: Some(UnixMs::from_millis(2)),
            },
            FeedBody::WithdrawalClaimed {
                transaction_id,
                account,
                payout_id: 1,
            },
            FeedBody::WithdrawalReleased {
                transaction_id,
                account,
            },
            FeedBody::WithdrawalCompleted {
                transaction_id,
                account,
                currency,
                amount,
                paid: amount,
                fee: Some(FeedFeeCollected {
                    to: 1,
                    currency: usd,
                    amount: Decimal::ONE,
                }),
            },
            FeedBody::WithdrawalFailed {
                transaction_id,
                account,
                reason: "r".into(),
                currency,
                amount,
            },
            FeedBody::WithdrawalCancelled {
                transaction_id,
                account,
                currency,
                amount,
            },
            FeedBody::WithdrawalReturned {
                transaction_id,
                account,
                reason: "r".into(),
                currency,
                amount,
            },
            FeedBody::Transferred {
                transaction_id,
                from: 7,
                to: 8,
                currency: usd,
                amount: Decimal::ONE,
                idempotency_key: key,
                metadata,
            },
            FeedBody::PayoutSubmitted {
                payout_id: 1,
                currency: usd,
                items: vec![FeedPayoutItem {
                    transaction_id,
                    amount: Decimal::ONE,
                }],
            },
            FeedBody::PayoutSettled {
                payout_id: 1,
                items: vec![item.clone()],
            },
            FeedBody::PayoutResolved {
                payout_id: 1,
                item,
                note: "n".into(),
            },
            FeedBody::PayoutMismatch {
                payout_id: 1,
                transaction_id,
                settled: FeedOutcome::Paid,
                reported: FeedOutcome::Failed,
            },
            FeedBody::IdempotencyKeysExpired {
                account,
                before: UnixMs::from_millis(1),
            },
            FeedBody::AccountFrozen {
                account,
                scope: "withdrawals".into(),
                until: Some(UnixMs::from_millis(3)),
                reason: "review".into(),
            },
            FeedBody::AccountUnfrozen { account },
            FeedBody::AccountTierSet {
                account,
                tier: "vip".into(),
            },
        ];
        for body in &bodies {
            match body {
                FeedBody::Deposited { .. }
                | FeedBody::WithdrawalRequested { .. }
                | FeedBody::WithdrawalClaimed { .. }
                | FeedBody::WithdrawalReleased { .. }
                | FeedBody::WithdrawalCompleted { .. }
                | FeedBody::WithdrawalFailed { .. }
                | FeedBody::WithdrawalCancelled { .. }
                | FeedBody::WithdrawalReturned { .. }
                | FeedBody::Transferred { .. }
                | FeedBody::PayoutSubmitted { .. }
                | FeedBody::PayoutSettled { .. }
                | FeedBody::PayoutResolved { .. }
                | FeedBody::PayoutMismatch { .. }
                | FeedBody::IdempotencyKeysExpired { .. }
                | FeedBody::AccountFrozen { .. }
                | FeedBody::AccountUnfrozen { .. }
                | FeedBody::AccountTierSet { .. } => {}
            }
        }
        bodies
    }

    /// Every field of every event type is in the document's `FeedEvent`
    /// (and of its items in `FeedItem`, its fee in `FeedFee`, its
    /// destination in `FeedDestination`), and every type in its enum: the
    /// mirror above cannot fall behind `domain/feed.rs` unnoticed.
    #[test]
    fn the_documented_feed_event_covers_every_type_and_field() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let keys = |name: &str| -> Vec<String> {
            schemas[name]["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        let (event_fields, item_fields) = (keys("FeedEvent"), keys("FeedItem"));
        let (fee_fields, destination_fields) = (keys("FeedFee"), keys("FeedDestination"));
        let types = schemas["FeedEventType"]["enum"].as_array().unwrap().clone();
        let bodies = every_body();
        assert_eq!(bodies.len(), types.len(), "one sample per documented type");
        for body in bodies {
            let event = FeedEvent {
                version: FEED_VERSION,
                lsn: 1,
                time: Some(UnixMs::from_millis(1)),
                time_ms: Some(1),
                body,
                balances: vec![BalanceAfter {
                    account: 7,
                    currency: CurrencyCode::new("USD").unwrap(),
                    available: Decimal::ONE,
                    locked: Decimal::ZERO,
                    total: Decimal::ONE,
                }],
                balances_known: true,
            };
            let json = serde_json::to_value(&event).unwrap();
            assert!(
                types.contains(&json["type"]),
                "{} is not documented",
                json["type"]
            );
            for (field, value) in json.as_object().unwrap() {
                assert!(
                    event_fields.contains(field),
                    "{}: {field} is not documented",
                    json["type"]
                );
                let (documented, items) = match (field.as_str(), value) {
                    ("items", Value::Array(items)) => (&item_fields, items.clone()),
                    ("item", item) => (&item_fields, vec![item.clone()]),
                    ("fee", fee) => (&fee_fields, vec![fee.clone()]),
                    ("destination", to) => (&destination_fields, vec![to.clone()]),
                    _ => continue,
                };
                for item in items {
                    for key in item.as_object().unwrap().keys() {
                        assert!(documented.contains(key), "{}: {field}.{key}", json["type"]);
                    }
                }
            }
        }
    }
}
