//! The HTTP API's OpenAPI 3.1 document, derived from the handlers'
//! `#[utoipa::path]` annotations and the JSON types' `ToSchema`: served at
//! `GET /openapi.json` (no token) and kept in the repository as
//! `src/http/openapi.json` (the `openapi` test fails when it differs;
//! `BURNLEDGER_UPDATE_OPENAPI=1 cargo test --test openapi` rewrites it).
//!
//! Adding a route to the document: annotate its handler with
//! `#[utoipa::path(...)]` (its error statuses through one of the
//! `error_responses!` sets, or a new one) and name the handler in
//! [`ApiDoc`]'s `paths(...)`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi};

use crate::http::error::ErrorJson;
use crate::http::{accounts, events, history, replication, routes};

/// The whole document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "burnledger",
        description = "The ledger's HTTP API. Amounts are decimal strings, never JSON numbers. \
            Every error is `{\"error\": code, \"message\": text}`, with `details` for \
            limit_exceeded, account_frozen and insufficient_funds; any path not listed here \
            is 404 `not_found`, any method a listed path does not take is 405 \
            `method_not_allowed` (both with that body). A request body that does not \
            arrive within the body deadline is 408 `request_timeout`; one larger than the \
            limit is 413 `payload_too_large`. 401, 408 and 413 close the connection. \
            Two codes of the embedded API never reach HTTP: `batch_too_large` (there is \
            no batch route) and `invalid_transaction_id` (a path id that does not parse \
            is 404 `unknown_withdrawal`).",
    ),
    paths(
        routes::deposit,
        routes::request_withdrawal,
        routes::get_withdrawal,
        routes::cancel_withdrawal,
        routes::withdrawal_status,
        routes::transfer,
        accounts::set_tier,
        accounts::freeze,
        accounts::unfreeze,
        accounts::withdrawal_allowance,
        history::balances,
        history::account_withdrawals,
        history::list_withdrawals,
        history::entries,
        history::get_transaction,
        routes::run_payouts,
        history::list_payouts,
        routes::get_payout,
        routes::resolve_payout_item,
        events::events,
        events::events_stream,
        events::list_consumers,
        events::consumer_cursor,
        events::set_consumer_cursor,
        events::remove_consumer,
        events::journal_head,
        replication::promote,
        replication::status,
        routes::healthz,
        routes::metrics_page,
        routes::openapi_json,
    ),
    components(schemas(ErrorJson)),
    modifiers(&Security),
)]
pub struct ApiDoc;

/// The bearer tokens: `api_token` for `/v1`, `metrics_token` for
/// `/metrics`.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, what) in [
            (
                "api_token",
                "Required on /v1 when the server has an API token",
            ),
            (
                "metrics_token",
                "Required on /metrics when the server has a metrics token",
            ),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(what))
                        .build(),
                ),
            );
        }
    }
}

/// The document as pretty JSON, with a final newline (the form kept in the
/// repository).
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    text.push('\n');
    text
}

/// The document, built once per process.
pub fn served_document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(document)
}

/// `GET /openapi.json`.
pub fn answer() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(served_document())
}

/// What each error status means, for the document.
fn error_description(status: u16) -> &'static str {
    match status {
        400 => {
            "Bad input: malformed_request, invalid_amount, unknown_currency, \
                invalid_idempotency_key, same_account_transfer, reason_too_long, \
                reason_missing (a freeze's reason empty or only white space), \
                payouts_disabled (a payout call on a ledger that makes none), invalid_time \
                (not RFC 3339), invalid_time_range (created_from after created_to), \
                invalid_limit (not 1 to 1000), invalid_cursor (not a page's next; an \
                event position that is not an LSN or is past the durable log), \
                invalid_consumer (a consumer name that is not 1 to 64 of A-Z a-z 0-9 _ - .), \
                invalid_metadata (not an object of string values, an empty or repeated \
                key, or past 16 keys or 1 KiB), \
                invalid_destination (a field empty, over 256 bytes or with a control \
                character), invalid_tier (not 1 to 32 of A-Z a-z 0-9 _ - .), invalid_expiry \
                (an expires_in that is not a positive duration within the maximum, a freeze's \
                until already past), fees_disabled (a fee on a ledger with no fee account) or \
                invalid_input (a query string, unknown query parameter, path parameter, \
                status, state, order, format, resolution, scope or wait of the wrong shape)"
        }
        401 => "unauthorized: the token is missing or wrong (the connection closes)",
        403 => {
            "account_frozen: an operator's freeze of the account stops this operation \
                (details: reason, until, scope)"
        }
        404 => {
            "Not there: unknown_withdrawal, unknown_transaction, unknown_payout, \
                not_in_payout, unknown_consumer"
        }
        408 => "request_timeout: the body did not arrive in time (the connection closes)",
        409 => {
            "Refused by the ledger's state: insufficient_funds (details: part, currency, \
                available, requested), limit_exceeded (details: window, limit, used, \
                requested, currency, tier), invalid_paid_amount (a completion or an operator's \
                resolution paying more than the amount; a paid amount that is not positive \
                or finer than the currency is invalid_amount), invalid_transition (also a \
                completion repeated with another paid amount), \
                idempotency_conflict, idempotency_in_progress, idempotency_key_expired (the \
                key's first use is older than the retention; nothing applied), \
                too_many_pending_withdrawals, payout_in_flight (a payout the engine runs owns the withdrawal), \
                payout_item_settled, not_replicated (a replication route on a server \
                that is not a replicated node)"
        }
        410 => {
            "cursor_expired: the log no longer holds the events after this position \
                (pruned past the retention cap); resynchronise from the current balances and \
                continue from the journal head"
        }
        413 => "payload_too_large (the connection closes)",
        500 => "internal",
        503 => {
            "Unavailable: overloaded, poisoned, shutting_down, history_unavailable (a history \
                read on a server without a data folder, or whose history store failed), \
                not_leader (a standby, or a fenced writer: send writes to the writer), \
                promotion_failed, events_unavailable (a feed read on a ledger without a log)"
        }
        _ => "An error",
    }
}

/// `statuses` as responses whose body is the `Error` schema.
pub fn error_responses_for(statuses: &[u16]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|status| {
            let response = ResponseBuilder::new()
                .description(error_description(*status))
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("Error"))),
                )
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// Declares a named set of error statuses for `responses(...)`.
macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident: [$($status:literal),*];)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                error_responses_for(&[$($status),*])
            }
        }
    )*};
}

error_responses! {
    /// A /v1 call that writes with a JSON body.
    WriteErrors: [400, 401, 408, 409, 413, 500, 503];
    /// A deposit, withdrawal or transfer: a write an account's freeze may
    /// stop (403 `account_frozen`).
    FrozenWriteErrors: [400, 401, 403, 408, 409, 413, 500, 503];
    /// A /v1 read of one thing named in the path.
    ReadOneErrors: [401, 404, 500, 503];
    /// A /v1 call on one withdrawal, without a body.
    ChangeOneErrors: [401, 404, 409, 500, 503];
    /// A /v1 call on one withdrawal, with a JSON body.
    ChangeOneWithBodyErrors: [400, 401, 404, 408, 409, 413, 500, 503];
    /// A /v1 history read with a query string (listings, balances).
    ListErrors: [400, 401, 500, 503];
    /// A /v1 run of payouts (400 in external mode).
    RunErrors: [400, 401, 500, 503];
    /// `/healthz`.
    HealthErrors: [503];
    /// `/metrics`.
    MetricsErrors: [401];
    /// A replicated node's routes (409 `not_replicated` on a server that
    /// is not one; 503 `promotion_failed`).
    PromoteErrors: [401, 409, 500, 503];
    /// The feed's reads (long poll, stream): 404 for an unknown consumer,
    /// 410 for a position the log no longer holds.
    EventsErrors: [400, 401, 404, 410, 500, 503];
    /// A read or removal of one consumer (400 for a name that is not one).
    ConsumerErrors: [400, 401, 404, 500, 503];
    /// A consumer's acknowledgement (a JSON body; 410 past the log).
    CursorWriteErrors: [400, 401, 408, 410, 413, 500, 503];
    /// A /v1 read without parameters (the consumers, the journal's head).
    PlainReadErrors: [401, 500, 503];
    /// An operator's write of an account's controls with a JSON body (a
    /// tier, a freeze).
    ControlWriteErrors: [400, 401, 408, 413, 500, 503];
    /// Lifting an account's freeze (no body; 400 for an account that is
    /// not one).
    ControlLiftErrors: [400, 401, 500, 503];
}
