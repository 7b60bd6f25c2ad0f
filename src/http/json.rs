//! The JSON the service takes and gives (what an operation carries beyond
//! its amount — fee, destination, metadata, expiry — is read and shown by
//! `details.rs`; an account's controls by `accounts.rs`; CSV rows of these
//! types by `csv.rs`). Amounts are decimal strings
//! (`"12.50"`) both ways: a JSON number for an amount is refused with 400
//! `invalid_amount`, since a float cannot carry money exactly. Amounts out
//! always have the currency's number of decimal places. Times out are
//! RFC 3339 strings in UTC with milliseconds (`"2026-11-29T20:39:57.123Z"`),
//! or null where unknown (a withdrawal or payout logged before times were,
//! on-disk format v4) or not yet (a payout still waiting to settle).
//! Listings answer a page, `{"items": [...], "next": cursor|null}`
//! (`WithdrawalPageJson` and the like).

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::details::Metadata;
use crate::domain::history::{Entry, Page, Transaction};
use crate::domain::ids::AccountId;
use crate::domain::money::parse_amount_text;
use crate::domain::payouts::{PayoutItemOutcome, PayoutItemView, PayoutView};
use crate::domain::receipts::{Balance, Deposit, Transfer};
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{Withdrawal, WithdrawalStatus};
use crate::http::details::{
    metadata_json, DestinationJson, FeeJson, FeeRequestJson, MetadataJson, RawExpiresIn,
    RawMetadata, WithdrawalDetailsJson, WithdrawalExtrasJson,
};
use crate::http::error::ApiError;
use crate::operation::WithdrawalOptions;

/// An amount as the caller sent it; judged by [`parse_amount`], so a
/// wrong amount is `invalid_amount` rather than a shapeless parse error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawAmount {
    Text(String),
    /// Anything but a string (a number, null, an object...): what it was.
    NotAString(&'static str),
}

impl<'de> Deserialize<'de> for RawAmount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(text) => Self::Text(text),
            serde_json::Value::Number(_) => Self::NotAString("a JSON number"),
            serde_json::Value::Null => Self::NotAString("null"),
            serde_json::Value::Bool(_) => Self::NotAString("a boolean"),
            serde_json::Value::Array(_) => Self::NotAString("an array"),
            serde_json::Value::Object(_) => Self::NotAString("an object"),
        })
    }
}

/// Reads an amount sent as a JSON string with the core money parser
/// ([`crate::domain::money::parse_amount_text`]): syntax, and an exact conversion,
/// never a rounded one. Whether the amount is positive and fits the
/// currency is the ledger's to judge.
pub fn parse_amount(raw: &RawAmount) -> Result<Decimal, ApiError> {
    match raw {
        RawAmount::Text(text) => {
            parse_amount_text(text).map_err(|e| ApiError::invalid_amount(e.to_string()))
        }
        RawAmount::NotAString(what) => Err(ApiError::invalid_amount(format!(
            "amount must be a decimal string such as \"12.50\", not {what}"
        ))),
    }
}

/// The body of POST /v1/deposits: one account, one amount, and optional
/// metadata kept with the deposit.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    pub account: AccountId,
    /// A configured currency code, e.g. `USD`.
    pub currency: String,
    /// A decimal string such as `"12.50"` (never a JSON number), with at
    /// most the currency's decimal places.
    #[schema(value_type = String, example = "12.50")]
    pub amount: RawAmount,
    /// Replaying a key with the same parameters answers the first result.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Up to 16 string keys with string values, 1 KiB in all (else
    /// `invalid_metadata`); kept and shown with the operation.
    #[serde(default)]
    #[schema(value_type = Option<MetadataJson>)]
    pub metadata: Option<RawMetadata>,
}

/// The body of POST /v1/withdrawals: one account, one amount, and what a
/// withdrawal may carry beyond them.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalRequest {
    pub account: AccountId,
    /// A configured currency code, e.g. `USD`.
    pub currency: String,
    /// A decimal string such as `"12.50"` (never a JSON number), with at
    /// most the currency's decimal places.
    #[schema(value_type = String, example = "12.50")]
    pub amount: RawAmount,
    /// Replaying a key with the same parameters (the optional parts
    /// included) answers the first result.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Locked with the amount (in its own currency, from the same
    /// account), moved to the fee account on completion, released with the
    /// amount otherwise. `fees_disabled` on a ledger without a fee account.
    #[serde(default)]
    pub fee: Option<FeeRequestJson>,
    /// Where it is paid; handed to the payment service.
    #[serde(default)]
    pub destination: Option<DestinationJson>,
    /// Up to 16 string keys with string values, 1 KiB in all.
    #[serde(default)]
    #[schema(value_type = Option<MetadataJson>)]
    pub metadata: Option<RawMetadata>,
    /// While still `pending` this long after the request, it fails with
    /// reason `expired` (never while `processing`): an integer of seconds
    /// (`90`) or a text of digits and a unit, `ms`, `s`, `m`, `h` or `d`
    /// (`"500ms"`, `"90s"`, `"30m"`, `"2h"`, `"1d"`); more than zero and at
    /// most the server's maximum (30 days unless configured), else
    /// `invalid_expiry`.
    #[serde(default)]
    #[schema(value_type = Option<ExpiresIn>)]
    pub expires_in: Option<RawExpiresIn>,
}

impl WithdrawalRequest {
    /// What it carries beyond currency and amount, as the `Ledger` takes it.
    pub fn options(&self) -> Result<WithdrawalOptions, ApiError> {
        WithdrawalExtrasJson {
            fee: self.fee.as_ref(),
            destination: self.destination.as_ref(),
            metadata: self.metadata.as_ref(),
            expires_in: self.expires_in.as_ref(),
        }
        .read()
    }
}

/// `expires_in`: whole seconds, or digits and a unit (`500ms`, `90s`,
/// `30m`, `2h`, `1d`); at least 1 ms (so `0` is refused) and at most the
/// server's maximum (default 30 days), else `invalid_expiry`.
// The document's shape of what `RawExpiresIn` reads; never built.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ExpiresIn {
    Seconds(u64),
    Text(String),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    pub from: AccountId,
    pub to: AccountId,
    pub currency: String,
    /// A decimal string such as `"12.50"` (never a JSON number).
    #[schema(value_type = String, example = "12.50")]
    pub amount: RawAmount,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Up to 16 string keys with string values, 1 KiB in all.
    #[serde(default)]
    #[schema(value_type = Option<MetadataJson>)]
    pub metadata: Option<RawMetadata>,
}

/// Phase 3 (the webhook): the payment outcome of a withdrawal.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// `completed`, `failed`, or `returned` (a paid withdrawal sent back).
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// With `completed` only: what was paid, a decimal string more than 0
    /// and exact in the currency (else `invalid_amount`), at most the
    /// withdrawal's amount (else `invalid_paid_amount`).
    /// Less than the amount completes it in part: that much is burned, the
    /// rest released. Absent: paid in full.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "24.00")]
    pub amount: Option<RawAmount>,
}

/// An operator's resolution of a payout item
/// (`POST /v1/payouts/{id}/items/{transaction_id}/resolve`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// `paid` or `not_paid`.
    #[schema(pattern = "^(paid|not_paid)$")]
    pub resolution: String,
    /// Why the operator decided so (kept in the log).
    pub note: String,
    /// For `not_paid`: the failure reason the withdrawal shows.
    #[serde(default)]
    pub reason: Option<String>,
    /// With `paid` only: what was paid, a decimal string more than 0 and
    /// exact in the currency (else `invalid_amount`), at most the item's
    /// amount (else `invalid_paid_amount`). Less than
    /// the amount completes the withdrawal in part: that much is burned,
    /// the rest released. Absent: paid in full.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "6.00")]
    pub amount: Option<RawAmount>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DepositJson {
    pub transaction_id: String,
    pub account: AccountId,
    pub currency: String,
    pub amount: String,
    /// The metadata kept with it; absent when it carries none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataJson>,
}

impl DepositJson {
    /// The answer to a deposit: its receipt and the metadata it keeps
    /// (the request's: a replay with other metadata is a conflict).
    pub fn new(d: &Deposit, metadata: &Metadata) -> Self {
        Self {
            metadata: (!metadata.is_empty()).then(|| metadata_json(metadata)),
            ..Self::from(d)
        }
    }
}

impl From<&Deposit> for DepositJson {
    fn from(d: &Deposit) -> Self {
        Self {
            transaction_id: d.transaction_id.to_string(),
            account: d.account,
            currency: d.currency.to_string(),
            amount: d.amount.to_string(),
            metadata: None,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransferJson {
    pub transaction_id: String,
    pub from: AccountId,
    pub to: AccountId,
    pub currency: String,
    pub amount: String,
    /// The metadata kept with it; absent as for deposits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataJson>,
}

impl TransferJson {
    /// The answer to a transfer: its receipt and the metadata it keeps.
    pub fn new(t: &Transfer, metadata: &Metadata) -> Self {
        Self {
            metadata: (!metadata.is_empty()).then(|| metadata_json(metadata)),
            ..Self::from(t)
        }
    }
}

impl From<&Transfer> for TransferJson {
    fn from(t: &Transfer) -> Self {
        Self {
            transaction_id: t.transaction_id.to_string(),
            from: t.from,
            to: t.to,
            currency: t.currency.to_string(),
            amount: t.amount.to_string(),
            metadata: None,
        }
    }
}

/// `{transaction_id, account, currency, amount, status, payout_id?, reason?,
/// created_at, updated_at, paid, fee, destination, metadata, expires_at}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WithdrawalJson {
    pub transaction_id: String,
    pub account: AccountId,
    pub currency: String,
    pub amount: String,
    /// `pending`, `processing`, `completed`, `failed`, `cancelled` or
    /// `returned`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payout_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was requested (RFC 3339); null if it was logged before
    /// times were.
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    /// When its status last changed (RFC 3339; `created_at` until then);
    /// null if unknown, as above.
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
    /// What was paid once `completed` or `returned` (the amount, or less
    /// for a partial completion); null before, and when it failed or was
    /// cancelled.
    pub paid: Option<String>,
    /// Its fee, locked with the amount; null when none.
    pub fee: Option<FeeJson>,
    /// Where it is paid; null when none was given.
    pub destination: Option<DestinationJson>,
    /// `{}` when none.
    pub metadata: MetadataJson,
    /// While still `pending` at this time (RFC 3339) it fails with reason
    /// `expired`; null when it does not expire.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

/// A time as the JSON shows it: RFC 3339, or null when unknown.
fn rfc3339(at: Option<UnixMs>) -> Option<String> {
    at.map(UnixMs::rfc3339)
}

impl From<&Withdrawal> for WithdrawalJson {
    fn from(w: &Withdrawal) -> Self {
        let reason = match &w.status {
            WithdrawalStatus::Failed { reason } | WithdrawalStatus::Returned { reason } => {
                Some(reason.clone()).filter(|r| !r.is_empty())
            }
            _ => None,
        };
        let details = WithdrawalDetailsJson::from(w);
        Self {
            transaction_id: w.transaction_id.to_string(),
            account: w.account,
            currency: w.currency.to_string(),
            amount: w.amount.to_string(),
            status: w.status.kind().as_str(),
            payout_id: w.payout_id,
            reason,
            created_at: rfc3339(w.created_at),
            updated_at: rfc3339(w.updated_at),
            paid: w.paid.map(|p| p.to_string()),
            fee: details.fee,
            destination: details.destination,
            metadata: details.metadata,
            expires_at: rfc3339(w.expires_at),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BalanceJson {
    pub currency: String,
    pub available: String,
    pub locked: String,
    pub total: String,
}

impl From<&Balance> for BalanceJson {
    fn from(b: &Balance) -> Self {
        Self {
            currency: b.currency.to_string(),
            available: b.available.to_string(),
            locked: b.locked.to_string(),
            total: b.total.to_string(),
        }
    }
}

/// `GET /healthz`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthJson {
    /// Always `ok`.
    pub status: &'static str,
}

/// An account's balances: the live ones, or with `?at=<time>` those as of
/// that time (each currency it had touched by then), with `at` (RFC 3339,
/// UTC).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BalancesJson {
    pub account: AccountId,
    /// The time asked about; absent for the live balances.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub at: Option<String>,
    pub balances: Vec<BalanceJson>,
}

/// A payout: `{payout_id, currency, total, state, attempts, last_error?,
/// submitted_at, settled_at, items: [{transaction_id, account, amount,
/// outcome, reason?}]}` with
/// state `processing`, `completed`, `failed` or `partially_failed` and an
/// item's outcome `paid`, `failed` or `null` (no final answer yet).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PayoutJson {
    pub payout_id: u64,
    pub currency: String,
    pub total: String,
    /// `processing`, `completed`, `failed` or `partially_failed`.
    pub state: &'static str,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was logged as submitted (RFC 3339); null if logged before
    /// times were.
    #[schema(format = DateTime)]
    pub submitted_at: Option<String>,
    /// When its last item got its final answer (RFC 3339); null while an
    /// item still waits, or if it settled before times were logged.
    #[schema(format = DateTime)]
    pub settled_at: Option<String>,
    pub items: Vec<PayoutItemJson>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PayoutItemJson {
    pub transaction_id: String,
    pub account: AccountId,
    pub amount: String,
    /// `paid`, `failed`, or null (no final answer yet).
    pub outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What a `paid` item paid when it was less than its amount (a
    /// partial completion); absent when paid in full or not paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid: Option<String>,
}

impl From<&PayoutItemView> for PayoutItemJson {
    fn from(item: &PayoutItemView) -> Self {
        let (outcome, reason) = match &item.outcome {
            None => (None, None),
            Some(PayoutItemOutcome::Paid) => (Some("paid"), None),
            Some(PayoutItemOutcome::Failed { reason }) => (Some("failed"), Some(reason.clone())),
        };
        Self {
            transaction_id: item.transaction_id.to_string(),
            account: item.account,
            amount: item.amount.to_string(),
            outcome,
            reason,
            paid: item.paid.map(|paid| paid.to_string()),
        }
    }
}

impl From<&PayoutView> for PayoutJson {
    fn from(p: &PayoutView) -> Self {
        Self {
            payout_id: p.payout_id,
            currency: p.currency.to_string(),
            total: p.total.to_string(),
            state: p.state.as_str(),
            attempts: p.attempts,
            last_error: p.last_error.clone(),
            submitted_at: rfc3339(p.submitted_at),
            settled_at: rfc3339(p.settled_at),
            items: p.items.iter().map(PayoutItemJson::from).collect(),
        }
    }
}

/// Declares the JSON of a page of `$item`s: `{"items": [...], "next":
/// "<cursor>"|null}` (one named schema per listing in the OpenAPI
/// document).
macro_rules! page_json {
    ($($(#[$doc:meta])* $name:ident of $item:ty;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Serialize, utoipa::ToSchema)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `after` to get the next page; null when nothing
            /// follows.
            pub next: Option<String>,
        }

        impl $name {
            pub fn of<'a, S>(page: &'a Page<S>) -> Self
            where
                $item: From<&'a S>,
            {
                Self {
                    items: page.items.iter().map(<$item>::from).collect(),
                    next: page.next.clone(),
                }
            }
        }
    )*};
}

page_json! {
    /// A page of withdrawals.
    WithdrawalPageJson of WithdrawalJson;
    /// A page of an account's entries.
    EntryPageJson of EntryJson;
    /// A page of payouts.
    PayoutPageJson of PayoutJson;
}

/// One balance change of an account: `{transaction_id, account, currency,
/// seq, part, kind, amount, available_after, locked_after, at}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EntryJson {
    pub transaction_id: String,
    pub account: AccountId,
    pub currency: String,
    /// The log position of the event that made it: numbers the account's
    /// entries in this currency, oldest first. The changes one event made
    /// to one balance (a fee locked with the amount; a completion burning
    /// what was paid, releasing the rest and moving the fee) share it.
    pub seq: u64,
    /// Numbers the changes that share `seq`, 0 first, in the order made:
    /// (`seq`, `part`) is unique and increasing.
    pub part: u8,
    /// `deposit`, `lock`, `burn`, `release`, `return`, `transfer_in`,
    /// `transfer_out`, `fee_out` (a fee leaving the paying account) or
    /// `fee_in` (a fee arriving at the fee account).
    pub kind: &'static str,
    pub amount: String,
    /// The account's available balance in this currency after it.
    pub available_after: String,
    /// The account's locked balance in this currency after it.
    pub locked_after: String,
    /// When it happened (RFC 3339); null if logged before times were.
    #[schema(format = DateTime)]
    pub at: Option<String>,
    /// The metadata of the operation that made it (its deposit, transfer
    /// or withdrawal); absent when it carried none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataJson>,
}

impl From<&Entry> for EntryJson {
    fn from(e: &Entry) -> Self {
        Self {
            transaction_id: e.transaction_id.to_string(),
            account: e.account,
            currency: e.currency.to_string(),
            seq: e.seq,
            part: e.part,
            kind: e.kind.as_str(),
            amount: e.amount.to_string(),
            available_after: e.available_after.to_string(),
            locked_after: e.locked_after.to_string(),
            at: rfc3339(e.at),
            metadata: (!e.metadata.is_empty()).then(|| metadata_json(&e.metadata)),
        }
    }
}

/// `GET /v1/transactions/{transaction_id}`: `{"kind": "withdrawal",
/// "withdrawal": {...}}` (as `GET /v1/withdrawals/{transaction_id}` shows
/// it), `{"kind": "deposit", "deposit": {...}, "at": ...}` or `{"kind":
/// "transfer", "transfer": {...}, "at": ...}` (each as its receipt, its
/// metadata included, and when it was made: RFC 3339, null if logged
/// before times were).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransactionJson {
    Withdrawal {
        // Boxed: by far the largest of the three.
        withdrawal: Box<WithdrawalJson>,
    },
    Deposit {
        deposit: DepositJson,
        #[schema(format = DateTime)]
        at: Option<String>,
    },
    Transfer {
        transfer: TransferJson,
        #[schema(format = DateTime)]
        at: Option<String>,
    },
}

impl From<&Transaction> for TransactionJson {
    fn from(t: &Transaction) -> Self {
        match t {
            Transaction::Withdrawal(w) => Self::Withdrawal {
                withdrawal: Box::new(WithdrawalJson::from(w)),
            },
            Transaction::Deposit {
                deposit,
                at,
                metadata,
            } => Self::Deposit {
                deposit: DepositJson::new(deposit, metadata),
                at: rfc3339(*at),
            },
            Transaction::Transfer {
                transfer,
                at,
                metadata,
            } => Self::Transfer {
                transfer: TransferJson::new(transfer, metadata),
                at: rfc3339(*at),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Result<Decimal, ApiError> {
        parse_amount(&RawAmount::Text(s.into()))
    }

    #[test]
    fn amounts_are_plain_decimal_strings() {
        assert_eq!(text("12.50").unwrap(), Decimal::new(1250, 2));
        assert_eq!(text("7").unwrap(), Decimal::from(7));
        assert_eq!(text("-1.5").unwrap(), Decimal::new(-15, 1));
        assert_eq!(text("0.00000001").unwrap(), Decimal::new(1, 8));
        for bad in [
            "", "-", ".5", "5.", "1e3", "+1", " 1", "1 ", "1,000", "1_000", "0x10", "NaN", "1.2.3",
        ] {
            let error = text(bad).unwrap_err();
            assert_eq!(error.code, "invalid_amount", "{bad:?}");
            assert_eq!(error.status.as_u16(), 400);
        }
        assert!(text(&"9".repeat(crate::domain::money::AMOUNT_TEXT_LEN_MAX + 1)).is_err());
        assert!(
            text(&"9".repeat(40)).is_err(),
            "beyond a decimal's 28 digits"
        );
    }

    #[test]
    fn a_json_number_for_an_amount_is_refused() {
        let request: DepositRequest =
            serde_json::from_str(r#"{"account": 1, "currency": "USD", "amount": 12.5}"#).unwrap();
        let error = parse_amount(&request.amount).unwrap_err();
        assert_eq!(error.code, "invalid_amount");
        assert!(error.message.contains("JSON number"), "{}", error.message);
    }

    #[test]
    fn unknown_fields_and_wrong_types_do_not_parse() {
        let typo = r#"{"account": 1, "currency": "USD", "amount": "1", "idempotency_kye": "k"}"#;
        assert!(serde_json::from_str::<DepositRequest>(typo).is_err());
        let negative = r#"{"account": -1, "currency": "USD", "amount": "1"}"#;
        assert!(serde_json::from_str::<DepositRequest>(negative).is_err());
        let missing = r#"{"account": 1, "currency": "USD"}"#;
        assert!(serde_json::from_str::<DepositRequest>(missing).is_err());
    }
}
