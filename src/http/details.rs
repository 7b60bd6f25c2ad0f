//! The JSON of what an operation may carry beyond its currency and amount
//! (the ledger's `domain/details.rs`): a withdrawal's `fee`, `destination`
//! and `expires_in`, and the `metadata` of deposits, withdrawals and
//! transfers; how each is read from a request into the `Ledger`'s types
//! and shown in answers.
//!
//! Reading is strict, and a wrong value is refused with the code of the
//! field, never a shapeless parse error: `metadata` must be an object of
//! string values, each key once (else `invalid_metadata`; a map would
//! keep a repeated key's last value silently), `expires_in` an integer of
//! seconds or a duration text (else `invalid_expiry`). Limits (16 metadata
//! keys, 1 KiB, 256-byte destination fields, the longest expiry) are the
//! ledger's to judge.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::details::{Destination, Metadata};
use crate::domain::money::CurrencyCode;
use crate::domain::withdrawal::{FeeView, Withdrawal};
use crate::error::LedgerError;
use crate::http::error::ApiError;
use crate::http::json::{parse_amount, RawAmount};
use crate::operation::{FeeRequest, WithdrawalOptions};

/// Longest `expires_in` text read, in bytes (`"2592000000ms"` fits).
const EXPIRES_IN_TEXT_LEN_MAX: usize = 24;

/// A withdrawal's fee as a request sends it: `{"currency": "USD",
/// "amount": "1.00"}`, the amount a decimal string read like any other.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeeRequestJson {
    /// A configured currency code: the withdrawal's own or another.
    pub currency: String,
    /// A decimal string such as `"1.00"` (never a JSON number).
    #[schema(value_type = String, example = "1.00")]
    pub amount: RawAmount,
}

impl FeeRequestJson {
    fn read(&self) -> Result<FeeRequest, ApiError> {
        Ok(FeeRequest {
            currency: CurrencyCode::new(&self.currency)?,
            amount: parse_amount(&self.amount)?,
        })
    }
}

/// A withdrawal's fee as answers show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeeJson {
    pub currency: String,
    pub amount: String,
}

impl From<&FeeView> for FeeJson {
    fn from(fee: &FeeView) -> Self {
        Self {
            currency: fee.currency.to_string(),
            amount: fee.amount.to_string(),
        }
    }
}

/// Where a withdrawal is paid, both ways: `kind` (say `iban`, `address`)
/// and `value` not empty, `network` optional; each at most 256 bytes.
/// Handed to the payment service with the payout item.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationJson {
    pub kind: String,
    pub value: String,
    #[serde(default)]
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

/// Metadata: an object of up to 16 non-empty string keys with string
/// values, at most 1 KiB of keys and values in all; `{}` when none.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(as = Metadata)]
pub struct MetadataJson(pub BTreeMap<String, String>);

/// Metadata as answers show it.
pub fn metadata_json(metadata: &Metadata) -> MetadataJson {
    MetadataJson(
        metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Metadata as the caller sent it, each key as often as it was sent (a
/// JSON object read into a map keeps a repeated key's last value
/// silently); judged by [`RawMetadata::read`], so anything but an object
/// of strings, each key once, is `invalid_metadata`.
#[derive(Debug, Clone, PartialEq)]
pub enum RawMetadata {
    /// An object's members, in the order sent.
    Object(Vec<(String, serde_json::Value)>),
    /// Anything else: what it was, for the message.
    Other(&'static str),
}

impl<'de> Deserialize<'de> for RawMetadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawMetadataVisitor)
    }
}

/// Reads any JSON value into a [`RawMetadata`], an object member by member.
struct RawMetadataVisitor;

impl<'de> serde::de::Visitor<'de> for RawMetadataVisitor {
    type Value = RawMetadata;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RawMetadata, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, serde_json::Value>()? {
            members.push(member);
        }
        Ok(RawMetadata::Object(members))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawMetadata, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(RawMetadata::Other("an array"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<RawMetadata, E> {
        Ok(RawMetadata::Other("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<RawMetadata, E> {
        Ok(RawMetadata::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<RawMetadata, E> {
        Ok(RawMetadata::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<RawMetadata, E> {
        Ok(RawMetadata::Other("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<RawMetadata, E> {
        Ok(RawMetadata::Other("a string"))
    }

    fn visit_unit<E>(self) -> Result<RawMetadata, E> {
        Ok(RawMetadata::Other("null"))
    }
}

impl RawMetadata {
    /// The metadata, or `invalid_metadata` saying what is wrong (a key
    /// sent twice included: [`Metadata::new`] refuses it).
    pub fn read(&self) -> Result<Metadata, ApiError> {
        let invalid = |problem: String| ApiError::from(LedgerError::InvalidMetadata { problem });
        let members = match self {
            Self::Object(members) => members,
            Self::Other(kind) => {
                return Err(invalid(format!(
                    "metadata must be a JSON object of string values, not {kind}"
                )))
            }
        };
        let mut pairs = Vec::with_capacity(members.len());
        for (key, value) in members {
            let serde_json::Value::String(text) = value else {
                let shown: String = key.chars().take(32).collect();
                return Err(invalid(format!(
                    "the value of key {shown:?} must be a string, not {}",
                    json_kind(value)
                )));
            };
            pairs.push((key.as_str(), text.as_str()));
        }
        Ok(Metadata::new(pairs)?)
    }
}

/// Optional metadata: none when absent or null.
pub fn read_metadata(raw: Option<&RawMetadata>) -> Result<Metadata, ApiError> {
    raw.map_or(Ok(Metadata::default()), RawMetadata::read)
}

/// What a JSON value is, for messages.
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `expires_in` as the caller sent it: an integer of seconds (`90`) or a
/// duration text (`"500ms"`, `"90s"`, `"30m"`, `"2h"`, `"1d"`).
#[derive(Debug, Clone, PartialEq)]
pub struct RawExpiresIn(serde_json::Value);

impl<'de> Deserialize<'de> for RawExpiresIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(Self)
    }
}

impl RawExpiresIn {
    /// The duration, or `invalid_expiry`. Zero and durations past the
    /// ledger's maximum read here and are refused by the ledger.
    pub fn read(&self) -> Result<Duration, ApiError> {
        let invalid = |problem: String| ApiError::from(LedgerError::InvalidExpiry { problem });
        match &self.0 {
            serde_json::Value::Number(n) => n.as_u64().map(Duration::from_secs).ok_or_else(|| {
                invalid(format!(
                    "expires_in {n}: expected a whole number of seconds, or a text such as \"90s\""
                ))
            }),
            serde_json::Value::String(text) => parse_duration_text(text).ok_or_else(|| {
                let shown: String = text.chars().take(EXPIRES_IN_TEXT_LEN_MAX).collect();
                invalid(format!(
                    "expires_in {shown:?}: expected digits and a unit: 500ms, 90s, 30m, 2h or 1d"
                ))
            }),
            other => Err(invalid(format!(
                "expires_in must be seconds (an integer) or a text such as \"90s\", not {}",
                json_kind(other)
            ))),
        }
    }
}

/// Reads `<digits><unit>` with unit `ms`, `s`, `m`, `h` or `d`; `None`
/// for anything else, or a duration past `u64` milliseconds.
pub fn parse_duration_text(text: &str) -> Option<Duration> {
    if text.len() > EXPIRES_IN_TEXT_LEN_MAX {
        return None;
    }
    let digits_end = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(digits_end);
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    if digits.is_empty() {
        return None;
    }
    let count: u64 = digits.parse().ok()?;
    count
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
}

/// The optional parts of a withdrawal request, as the caller sent them.
pub struct WithdrawalExtrasJson<'a> {
    pub fee: Option<&'a FeeRequestJson>,
    pub destination: Option<&'a DestinationJson>,
    pub metadata: Option<&'a RawMetadata>,
    pub expires_in: Option<&'a RawExpiresIn>,
}

impl WithdrawalExtrasJson<'_> {
    /// The `Ledger`'s options, each part read in turn (fee, destination,
    /// metadata, expiry: the first wrong one answers).
    pub fn read(&self) -> Result<WithdrawalOptions, ApiError> {
        let destination = match self.destination {
            None => None,
            Some(d) => Some(Destination::new(&d.kind, &d.value, d.network.clone())?),
        };
        Ok(WithdrawalOptions {
            fee: self.fee.map(FeeRequestJson::read).transpose()?,
            destination,
            metadata: read_metadata(self.metadata)?,
            expires_in: self.expires_in.map(RawExpiresIn::read).transpose()?,
        })
    }
}

/// What a withdrawal's answer shows of what it carried.
pub struct WithdrawalDetailsJson {
    pub fee: Option<FeeJson>,
    pub destination: Option<DestinationJson>,
    pub metadata: MetadataJson,
}

impl From<&Withdrawal> for WithdrawalDetailsJson {
    fn from(w: &Withdrawal) -> Self {
        Self {
            fee: w.fee.as_ref().map(FeeJson::from),
            destination: w.destination.as_ref().map(DestinationJson::from),
            metadata: metadata_json(&w.metadata),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expiry(value: serde_json::Value) -> Result<Duration, ApiError> {
        RawExpiresIn(value).read()
    }

    #[test]
    fn expires_in_reads_seconds_or_a_duration_text() {
        assert_eq!(expiry(json!(90)), Ok(Duration::from_secs(90)));
        assert_eq!(expiry(json!("500ms")), Ok(Duration::from_millis(500)));
        assert_eq!(expiry(json!("90s")), Ok(Duration::from_secs(90)));
        assert_eq!(expiry(json!("30m")), Ok(Duration::from_secs(1800)));
        assert_eq!(expiry(json!("2h")), Ok(Duration::from_secs(7200)));
        assert_eq!(expiry(json!("1d")), Ok(Duration::from_secs(86_400)));
        assert_eq!(
            expiry(json!("0s")),
            Ok(Duration::ZERO),
            "the ledger refuses"
        );
        for bad in [
            json!(-1),
            json!(1.5),
            json!("90"),
            json!("s"),
            json!("-5s"),
            json!("5 s"),
            json!("1w"),
            json!("1.5h"),
            json!("99999999999999999999d"),
            json!(" 5s"),
            json!(null),
            json!(true),
            json!([1]),
            json!({"s": 1}),
        ] {
            let error = expiry(bad.clone()).unwrap_err();
            assert_eq!(
                (error.status.as_u16(), error.code),
                (400, "invalid_expiry"),
                "{bad}"
            );
        }
    }

    #[test]
    fn metadata_must_be_an_object_of_strings() {
        let read = |v: serde_json::Value| serde_json::from_value::<RawMetadata>(v).unwrap().read();
        let ok = read(json!({"order": "A-17", "desk": ""})).unwrap();
        assert_eq!(ok.get("order"), Some("A-17"));
        assert_eq!(ok.len(), 2);
        for bad in [
            json!("x"),
            json!([]),
            json!(1),
            json!({"n": 1}),
            json!({"n": null}),
            json!({"n": {"deep": "x"}}),
            json!({"": "empty key"}),
        ] {
            let error = read(bad.clone()).unwrap_err();
            assert_eq!(
                (error.status.as_u16(), error.code),
                (400, "invalid_metadata"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_metadata_key_sent_twice_is_refused_not_overwritten() {
        let text = r#"{"k": "a", "other": "x", "k": "b"}"#;
        let raw: RawMetadata = serde_json::from_str(text).unwrap();
        let error = raw.read().unwrap_err();
        assert_eq!(error.code, "invalid_metadata");
        assert!(
            error.message.contains("\"k\" appears twice"),
            "{}",
            error.message
        );
        let once: RawMetadata = serde_json::from_str(r#"{"k": "a", "K": "b"}"#).unwrap();
        assert_eq!(once.read().unwrap().len(), 2);
    }
}
