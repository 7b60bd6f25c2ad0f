//! The payment-service protocol's JSON bodies (feature `http`), the one
//! definition [`HttpPaymentService`](super::HttpPaymentService) (the
//! client) and `burnledger::http::bank` (the simulated bank's server)
//! both use, so the two cannot drift. The protocol itself is documented in
//! `payment/http.rs`.
//!
//! Amounts are decimal strings both ways (a JSON number is refused: a
//! float cannot carry money exactly), read with the core money parser
//! ([`parse_amount_text`]); transaction ids are the 32 hex digits the HTTP
//! API prints. An item carries its withdrawal's destination
//! (`{"kind", "value", "network"?}`) when it has one; an item answered
//! `paid` may say how much was paid (`"amount"`, when less than the item's).
//! Reading a body checks it: a request that cannot become a [`Payout`] is
//! a [`WireError`] naming its code; a report that is not an answer for the
//! payout asked about (a paid amount that is not a positive decimal
//! string included) is an error the client turns into an unknown outcome.

use std::collections::HashSet;
use std::fmt;

use rust_decimal::Decimal;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::details::Destination;
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::{parse_amount_text, CurrencyCode};

use super::{ItemStatus, Payout, PayoutId, PayoutItem, PayoutReport};

/// A refusal of a body: a stable snake_case code and a message for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    pub code: &'static str,
    pub message: String,
}

impl WireError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// An amount as decimal text. Serializes as a JSON string; deserializes
/// from a JSON string only (a number is refused with a message saying so).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmountText(pub String);

impl From<Decimal> for AmountText {
    fn from(amount: Decimal) -> Self {
        Self(amount.to_string())
    }
}

impl AmountText {
    /// The amount, read exactly ([`parse_amount_text`]) and positive.
    pub fn positive(&self) -> Result<Decimal, WireError> {
        let amount = parse_amount_text(&self.0)
            .map_err(|e| WireError::new("invalid_amount", e.to_string()))?;
        if amount <= Decimal::ZERO {
            let message = format!("amount {:?} must be positive", self.0);
            return Err(WireError::new("invalid_amount", message));
        }
        Ok(amount)
    }
}

impl Serialize for AmountText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AmountText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = AmountText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an amount as a decimal string such as \"12.34\", never a JSON number")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<AmountText, E> {
                Ok(AmountText(text.to_string()))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// The body of `POST /payouts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutJson {
    pub payout_id: PayoutId,
    pub currency: String,
    pub items: Vec<PayoutItemJson>,
}

/// One item of a [`PayoutJson`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutItemJson {
    pub transaction_id: String,
    pub account: AccountId,
    pub amount: AmountText,
    /// Absent when the withdrawal has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<DestinationJson>,
}

/// Where an item is paid: `{"kind": "iban", "value": "DE89…", "network":
/// "sepa"}` (`network` absent when there is none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationJson {
    pub kind: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

impl From<&Destination> for DestinationJson {
    fn from(d: &Destination) -> Self {
        Self {
            kind: d.kind.clone(),
            value: d.value.clone(),
            network: d.network.clone(),
        }
    }
}

impl DestinationJson {
    /// The destination, within the ledger's limits (`invalid_destination`).
    fn into_destination(self) -> Result<Destination, WireError> {
        Destination::new(self.kind, self.value, self.network)
            .map_err(|e| WireError::new("invalid_destination", e.to_string()))
    }
}

impl From<&Payout> for PayoutJson {
    fn from(payout: &Payout) -> Self {
        let item = |i: &PayoutItem| PayoutItemJson {
            transaction_id: i.transaction_id.to_string(),
            account: i.account,
            amount: i.amount.into(),
            destination: i.destination.as_ref().map(DestinationJson::from),
        };
        Self {
            payout_id: payout.payout_id,
            currency: payout.currency.to_string(),
            items: payout.items.iter().map(item).collect(),
        }
    }
}

impl PayoutJson {
    /// Reads a request body: `malformed_request` for JSON of another shape
    /// (a JSON number for an amount included), then each field's own code.
    /// How many items, and whether they repeat, is the service's to judge.
    pub fn parse(body: &[u8]) -> Result<Payout, WireError> {
        let json: Self = serde_json::from_slice(body)
            .map_err(|e| WireError::new("malformed_request", e.to_string()))?;
        json.into_payout()
    }

    pub fn into_payout(self) -> Result<Payout, WireError> {
        let currency = CurrencyCode::new(&self.currency)
            .map_err(|e| WireError::new("invalid_currency", e.to_string()))?;
        let items = self
            .items
            .into_iter()
            .map(|i| {
                Ok(PayoutItem {
                    transaction_id: transaction_id(&i.transaction_id)?,
                    account: i.account,
                    amount: i.amount.positive()?,
                    destination: i
                        .destination
                        .map(DestinationJson::into_destination)
                        .transpose()?,
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(Payout {
            payout_id: self.payout_id,
            currency,
            items,
        })
    }
}

fn transaction_id(text: &str) -> Result<TransactionId, WireError> {
    text.parse().map_err(|e: crate::error::LedgerError| {
        WireError::new("invalid_transaction_id", e.to_string())
    })
}

/// A report: `{"payout_id", "items": [{"transaction_id", "status",
/// "reason"?, "amount"?}]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportJson {
    pub payout_id: PayoutId,
    pub items: Vec<ItemReportJson>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemReportJson {
    pub transaction_id: String,
    #[serde(flatten)]
    pub status: StatusJson,
}

/// An item's status; failed and returned items carry their reason, a
/// paid one what was paid when it was less than the amount
/// (`{"status": "paid", "amount": "24.00"}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StatusJson {
    Paid {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount: Option<AmountText>,
    },
    Failed {
        reason: String,
    },
    Pending,
    Returned {
        reason: String,
    },
}

impl From<&ItemStatus> for StatusJson {
    fn from(status: &ItemStatus) -> Self {
        match status {
            ItemStatus::Paid => Self::Paid { amount: None },
            ItemStatus::PartlyPaid { paid } => Self::Paid {
                amount: Some((*paid).into()),
            },
            ItemStatus::Failed { reason } => Self::Failed {
                reason: reason.clone(),
            },
            ItemStatus::Pending => Self::Pending,
            ItemStatus::Returned { reason } => Self::Returned {
                reason: reason.clone(),
            },
        }
    }
}

impl TryFrom<StatusJson> for ItemStatus {
    type Error = WireError;

    /// A paid amount must be a positive decimal string; whether it is at
    /// most the item's amount is the payout's to judge (it knows it).
    fn try_from(status: StatusJson) -> Result<Self, WireError> {
        Ok(match status {
            StatusJson::Paid { amount: None } => Self::Paid,
            StatusJson::Paid {
                amount: Some(amount),
            } => Self::PartlyPaid {
                paid: amount.positive()?,
            },
            StatusJson::Failed { reason } => Self::Failed { reason },
            StatusJson::Pending => Self::Pending,
            StatusJson::Returned { reason } => Self::Returned { reason },
        })
    }
}

impl From<&PayoutReport> for ReportJson {
    fn from(report: &PayoutReport) -> Self {
        let item = |(tx, status): &(TransactionId, ItemStatus)| ItemReportJson {
            transaction_id: tx.to_string(),
            status: status.into(),
        };
        Self {
            payout_id: report.payout_id,
            items: report.items.iter().map(item).collect(),
        }
    }
}

impl ReportJson {
    /// Reads a report as the answer about payout `payout_id`: it must name
    /// that payout and each item once; with `sent`, exactly the items sent
    /// (none unknown, none missing). Anything else is an error: the caller
    /// cannot tell what happened.
    pub fn parse(
        body: &[u8],
        payout_id: PayoutId,
        sent: Option<&[PayoutItem]>,
    ) -> Result<PayoutReport, String> {
        let json: Self = serde_json::from_slice(body).map_err(|e| format!("not a report: {e}"))?;
        if json.payout_id != payout_id {
            return Err(format!(
                "a report for payout {}, not {payout_id}",
                json.payout_id
            ));
        }
        let mut seen = HashSet::with_capacity(json.items.len());
        let mut items = Vec::with_capacity(json.items.len());
        for item in json.items {
            let tx = transaction_id(&item.transaction_id).map_err(|e| e.to_string())?;
            if !seen.insert(tx) {
                return Err(format!("item {tx} reported twice"));
            }
            let status =
                ItemStatus::try_from(item.status).map_err(|e| format!("item {tx}: paid {e}"))?;
            items.push((tx, status));
        }
        if let Some(sent) = sent {
            let sent_ids: HashSet<TransactionId> = sent.iter().map(|i| i.transaction_id).collect();
            if seen != sent_ids {
                return Err(format!(
                    "the report names {} items, not the {} sent",
                    seen.len(),
                    sent.len()
                ));
            }
        }
        Ok(PayoutReport { payout_id, items })
    }
}

/// Every refusal's body: `{"error": {"code", "message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorJson {
    pub error: ErrorBodyJson,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBodyJson {
    pub code: String,
    pub message: String,
}

impl From<&WireError> for ErrorJson {
    fn from(error: &WireError) -> Self {
        Self {
            error: ErrorBodyJson {
                code: error.code.to_string(),
                message: error.message.clone(),
            },
        }
    }
}

impl ErrorJson {
    /// Reads an error body; `None` if it is not one.
    pub fn parse(body: &[u8]) -> Option<ErrorBodyJson> {
        serde_json::from_slice::<Self>(body).ok().map(|e| e.error)
    }
}

/// The body of the simulated bank's `GET /payments`: every payment made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentsJson {
    pub payments: Vec<PaymentJson>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentJson {
    pub payout_id: PayoutId,
    pub transaction_id: String,
    pub amount: AmountText,
}

impl PaymentsJson {
    /// From `SimulatedBank::payments`.
    pub fn new(payments: &[(PayoutId, TransactionId, Decimal)]) -> Self {
        let payment = |(payout_id, tx, amount): &(PayoutId, TransactionId, Decimal)| PaymentJson {
            payout_id: *payout_id,
            transaction_id: tx.to_string(),
            amount: (*amount).into(),
        };
        Self {
            payments: payments.iter().map(payment).collect(),
        }
    }

    /// Back to (payout id, transaction id, amount), in the order paid.
    pub fn into_payments(self) -> Result<Vec<(PayoutId, TransactionId, Decimal)>, WireError> {
        self.payments
            .into_iter()
            .map(|p| {
                let tx = transaction_id(&p.transaction_id)?;
                Ok((p.payout_id, tx, p.amount.positive()?))
            })
            .collect()
    }
}

/// The body of the simulated bank's `POST /payments/{transaction_id}/return`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnJson {
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payout() -> Payout {
        Payout {
            payout_id: 7,
            currency: CurrencyCode::new("USD").unwrap(),
            items: vec![PayoutItem {
                transaction_id: TransactionId::new(12, 3),
                account: 12,
                amount: Decimal::new(1234, 2),
                destination: Some(Destination::new("iban", "DE89", Some("sepa".into())).unwrap()),
            }],
        }
    }

    #[test]
    fn a_payout_round_trips_with_amounts_as_strings() {
        let body = serde_json::to_vec(&PayoutJson::from(&payout())).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["items"][0]["amount"], "12.34");
        assert_eq!(
            value["items"][0]["transaction_id"],
            "000000000000000c0000000000000003"
        );
        let destination = serde_json::json!({"kind": "iban", "value": "DE89", "network": "sepa"});
        assert_eq!(value["items"][0]["destination"], destination);
        assert_eq!(PayoutJson::parse(&body), Ok(payout()));
        // Without a destination (or a network) the field is left out.
        let mut plain = payout();
        plain.items[0].destination = None;
        let body = serde_json::to_value(PayoutJson::from(&plain)).unwrap();
        assert!(body["items"][0].get("destination").is_none(), "{body}");
        let mut no_network = payout();
        no_network.items[0].destination = Some(Destination::new("address", "0xab", None).unwrap());
        let body = serde_json::to_vec(&PayoutJson::from(&no_network)).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(value["items"][0]["destination"].get("network").is_none());
        assert_eq!(PayoutJson::parse(&body), Ok(no_network));
    }

    #[test]
    fn a_destination_past_the_ledgers_limits_is_refused() {
        let with = |destination: &str| {
            let body = format!(
                r#"{{"payout_id":1,"currency":"USD","items":[{{"transaction_id":"000000000000000c0000000000000003","account":1,"amount":"1","destination":{destination}}}]}}"#
            );
            PayoutJson::parse(body.as_bytes()).map_err(|e| e.code)
        };
        assert!(with(r#"{"kind":"iban","value":"DE89"}"#).is_ok());
        let long = format!(r#"{{"kind":"iban","value":"{}"}}"#, "9".repeat(257));
        assert_eq!(with(&long), Err("invalid_destination"));
        assert_eq!(
            with(r#"{"kind":"","value":"DE89"}"#),
            Err("invalid_destination")
        );
        assert_eq!(
            with(r#"{"kind":"iban","value":"DE89","bic":"x"}"#),
            Err("malformed_request")
        );
        assert_eq!(with(r#"{"kind":"iban"}"#), Err("malformed_request"));
    }

    #[test]
    fn a_paid_item_may_say_what_was_paid_as_a_positive_decimal_string() {
        let sent = payout();
        let tx = sent.items[0].transaction_id;
        let report = |item: &str| {
            let body = format!(r#"{{"payout_id":7,"items":[{{"transaction_id":"{tx}",{item}}}]}}"#);
            ReportJson::parse(body.as_bytes(), 7, Some(&sent.items)).map(|r| r.items[0].1.clone())
        };
        assert_eq!(report(r#""status":"paid""#), Ok(ItemStatus::Paid));
        assert_eq!(
            report(r#""status":"paid","amount":"24.00""#),
            Ok(ItemStatus::PartlyPaid {
                paid: Decimal::new(2400, 2)
            })
        );
        for bad in [
            r#""status":"paid","amount":24"#,
            r#""status":"paid","amount":"0""#,
            r#""status":"paid","amount":"-1.00""#,
            r#""status":"paid","amount":"1e2""#,
        ] {
            assert!(report(bad).is_err(), "{bad}");
        }
        // Written back as it was read: the amount only when there is one.
        let partly = PayoutReport {
            payout_id: 7,
            items: vec![(
                tx,
                ItemStatus::PartlyPaid {
                    paid: Decimal::new(5, 1),
                },
            )],
        };
        let json = serde_json::to_value(ReportJson::from(&partly)).unwrap();
        assert_eq!(json["items"][0]["status"], "paid");
        assert_eq!(json["items"][0]["amount"], "0.5");
        let body = serde_json::to_vec(&json).unwrap();
        assert_eq!(ReportJson::parse(&body, 7, Some(&sent.items)), Ok(partly));
        let full = PayoutReport {
            payout_id: 7,
            items: vec![(tx, ItemStatus::Paid)],
        };
        let json = serde_json::to_value(ReportJson::from(&full)).unwrap();
        assert!(json["items"][0].get("amount").is_none(), "{json}");
    }

    #[test]
    fn bad_requests_name_their_field() {
        let with = |amount: &str, currency: &str, tx: &str| {
            let body = format!(
                r#"{{"payout_id":1,"currency":"{currency}","items":[{{"transaction_id":"{tx}","account":1,"amount":{amount}}}]}}"#
            );
            PayoutJson::parse(body.as_bytes()).map_err(|e| e.code)
        };
        let tx = "000000000000000c0000000000000003";
        assert!(with(r#""1.5""#, "USD", tx).is_ok());
        assert_eq!(with("1.5", "USD", tx), Err("malformed_request"));
        assert_eq!(with(r#""0""#, "USD", tx), Err("invalid_amount"));
        assert_eq!(with(r#""-1""#, "USD", tx), Err("invalid_amount"));
        assert_eq!(with(r#""1e3""#, "USD", tx), Err("invalid_amount"));
        assert_eq!(with(r#""1""#, "usd", tx), Err("invalid_currency"));
        assert_eq!(with(r#""1""#, "USD", "12"), Err("invalid_transaction_id"));
    }

    #[test]
    fn a_report_must_answer_the_payout_sent() {
        let sent = payout();
        let tx = sent.items[0].transaction_id;
        let report = |id: u64, txs: &[TransactionId]| {
            let items = txs.iter().map(|t| (*t, ItemStatus::Paid)).collect();
            serde_json::to_vec(&ReportJson::from(&PayoutReport {
                payout_id: id,
                items,
            }))
            .unwrap()
        };
        let good = ReportJson::parse(&report(7, &[tx]), 7, Some(&sent.items));
        assert_eq!(good.unwrap().items, vec![(tx, ItemStatus::Paid)]);
        let other = TransactionId::new(1, 1);
        for (body, why) in [
            (report(8, &[tx]), "another payout"),
            (report(7, &[]), "a missing item"),
            (report(7, &[tx, other]), "an unknown item"),
            (report(7, &[tx, tx]), "an item twice"),
            (b"garbage".to_vec(), "garbage"),
            (
                br#"{"payout_id":7,"items":[{"transaction_id":"000000000000000c0000000000000003","status":"failed"}]}"#.to_vec(),
                "a failure without its reason",
            ),
        ] {
            assert!(ReportJson::parse(&body, 7, Some(&sent.items)).is_err(), "{why}");
        }
        assert!(ReportJson::parse(&report(7, &[tx, other]), 7, None).is_ok());
    }
}
