//! What an operation may carry beyond its currency and amount: a
//! withdrawal's fee, destination and expiry, and the metadata a deposit,
//! withdrawal or transfer keeps. Each type checks its own limits when it is
//! made, so a value of it is always within them; the events carry them as
//! they are, so replay gives back exactly what the caller sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::ids::AccountId;
use crate::domain::money::{Currency, Units};
use crate::domain::time::UnixMs;
use crate::error::LedgerError;

/// Longest destination field (`kind`, `value`, `network`), in bytes.
pub const DESTINATION_FIELD_LEN_MAX: usize = 256;

/// Most metadata keys an operation carries.
pub const METADATA_KEYS_MAX: usize = 16;

/// Most metadata bytes an operation carries: every key and value, added.
pub const METADATA_BYTES_MAX: usize = 1024;

/// A withdrawal's fee: locked with the amount when it is requested, moved
/// to the ledger's fee account when it completes, released with the amount
/// otherwise. Its currency may differ from the withdrawal's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fee {
    pub currency: Currency,
    pub amount: Units,
}

/// A fee as a completion moves it: from the withdrawal's account to `to`,
/// the fee account the ledger was configured with when it completed (kept
/// in the event so that replay credits the same account whatever the
/// configuration is then).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeCollected {
    pub to: AccountId,
    pub currency: Currency,
    pub amount: Units,
}

/// Where a withdrawal is paid: handed to the payment service with each
/// payout item. `kind` (say `iban`, `address`), `value` (the number or
/// address itself) and `network` (say `ethereum`) are opaque to the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub kind: String,
    pub value: String,
    pub network: Option<String>,
}

impl Destination {
    /// A destination; `kind` and `value` not empty, each field at most
    /// [`DESTINATION_FIELD_LEN_MAX`] bytes.
    pub fn new(
        kind: impl Into<String>,
        value: impl Into<String>,
        network: Option<String>,
    ) -> Result<Self, LedgerError> {
        let destination = Self {
            kind: kind.into(),
            value: value.into(),
            network,
        };
        destination.check()?;
        Ok(destination)
    }

    /// Whether every field is within its limits (what `new` checks; also
    /// asked of a destination built field by field).
    pub fn check(&self) -> Result<(), LedgerError> {
        let fields = [
            ("kind", Some(&self.kind)),
            ("value", Some(&self.value)),
            ("network", self.network.as_ref()),
        ];
        for (field, text) in fields {
            let Some(text) = text else { continue };
            let problem = if text.len() > DESTINATION_FIELD_LEN_MAX {
                format!("{} bytes, at most {DESTINATION_FIELD_LEN_MAX}", text.len())
            } else if text.is_empty() && field != "network" {
                "empty".to_string()
            } else if text.chars().any(char::is_control) {
                "contains a control character".to_string()
            } else {
                continue;
            };
            return Err(LedgerError::InvalidDestination { field, problem });
        }
        Ok(())
    }
}

/// Up to [`METADATA_KEYS_MAX`] string keys with string values, at most
/// [`METADATA_BYTES_MAX`] bytes in all, kept with an operation and given
/// back wherever it is shown. Keys are in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    /// Metadata from key/value pairs; refused if a key repeats or is empty,
    /// or past the limits.
    pub fn new<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, LedgerError> {
        let mut map = BTreeMap::new();
        for (key, value) in pairs {
            let key = key.into();
            if map.contains_key(&key) {
                return Err(metadata_problem(format!("key {key:?} appears twice")));
            }
            map.insert(key, value.into());
            if map.len() > METADATA_KEYS_MAX {
                return Err(metadata_problem(format!(
                    "more than {METADATA_KEYS_MAX} keys"
                )));
            }
        }
        let metadata = Self(map);
        metadata.check()?;
        Ok(metadata)
    }

    /// Whether it is within the limits (decoded metadata is asked too).
    pub fn check(&self) -> Result<(), LedgerError> {
        if self.0.len() > METADATA_KEYS_MAX {
            return Err(metadata_problem(format!(
                "{} keys, at most {METADATA_KEYS_MAX}",
                self.0.len()
            )));
        }
        if self.0.keys().any(String::is_empty) {
            return Err(metadata_problem("an empty key".into()));
        }
        let bytes = self.bytes();
        if bytes > METADATA_BYTES_MAX {
            return Err(metadata_problem(format!(
                "{bytes} bytes, at most {METADATA_BYTES_MAX}"
            )));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The pairs, keys in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Every key's and value's bytes, added.
    fn bytes(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// `None` for no metadata: what events and records keep (a box only
    /// when there is something in it).
    pub fn boxed(self) -> Option<Box<Metadata>> {
        (!self.is_empty()).then(|| Box::new(self))
    }
}

fn metadata_problem(problem: String) -> LedgerError {
    LedgerError::InvalidMetadata { problem }
}

/// What a withdrawal carries beyond its currency and amount, as its
/// request event logs it (boxed: most withdrawals carry none of it); its
/// record keeps it split (`kept_extras.rs`: a fee in its own currency
/// inline, the rest shared).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalDetails {
    pub fee: Option<Fee>,
    pub destination: Option<Destination>,
    pub metadata: Metadata,
    /// While still `pending` at this time, it fails with reason `expired`.
    pub expires_at: Option<UnixMs>,
}

impl WithdrawalDetails {
    /// `None` when it carries nothing: the plain withdrawal of format v6.
    pub fn boxed(self) -> Option<Box<WithdrawalDetails>> {
        (self != Self::default()).then(|| Box::new(self))
    }
}

/// A stable 64-bit fingerprint of what an operation carried beyond its
/// currency and amount: what an idempotency key remembers of it, so the
/// same key with other metadata, fee or destination is a conflict. Stable
/// across processes and builds (SHA-256 of the bincode encoding), since
/// snapshots keep it.
pub fn fingerprint_of<T: Serialize>(carried: &T) -> u64 {
    use sha2::Digest;
    let bytes =
        bincode::serde::encode_to_vec(carried, bincode::config::standard()).unwrap_or_default();
    let digest = sha2::Sha256::digest(&bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// What a withdrawal's key remembers of its details: all of them, with the
/// expiry as a duration from the request (`at`), so a replay of the same
/// request later matches.
pub fn withdrawal_fingerprint(details: &WithdrawalDetails, at: UnixMs) -> u64 {
    let expires_in = details
        .expires_at
        .map(|end| end.as_millis().saturating_sub(at.as_millis()));
    fingerprint_of(&(
        &details.fee,
        &details.destination,
        &details.metadata,
        expires_in,
    ))
}

/// Why an expired withdrawal failed: its failure reason.
pub const EXPIRED_REASON: &str = "expired";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_refuses_too_many_keys_too_many_bytes_repeats_and_empty_keys() {
        let sixteen = (0..16).map(|i| (format!("k{i}"), "v".to_string()));
        assert_eq!(Metadata::new(sixteen).map(|m| m.len()), Ok(16));
        let seventeen = (0..17).map(|i| (format!("k{i}"), "v".to_string()));
        assert!(matches!(
            Metadata::new(seventeen),
            Err(LedgerError::InvalidMetadata { .. })
        ));
        let at_limit = Metadata::new([("k", "v".repeat(1023))]);
        assert!(at_limit.is_ok(), "{at_limit:?}");
        let over = Metadata::new([("k", "v".repeat(1024))]);
        assert!(matches!(over, Err(LedgerError::InvalidMetadata { .. })));
        let twice = Metadata::new([("a", "1"), ("a", "2")]);
        assert!(matches!(twice, Err(LedgerError::InvalidMetadata { .. })));
        let empty_key = Metadata::new([("", "1")]);
        assert!(matches!(
            empty_key,
            Err(LedgerError::InvalidMetadata { .. })
        ));
    }

    #[test]
    fn destination_refuses_empty_long_and_control_fields() {
        assert!(Destination::new("iban", "DE89", Some("sepa".into())).is_ok());
        assert!(Destination::new("iban", "DE89", None).is_ok());
        let field_of = |d: Result<Destination, LedgerError>| match d {
            Err(LedgerError::InvalidDestination { field, .. }) => field,
            other => panic!("expected invalid_destination, got {other:?}"),
        };
        assert_eq!(field_of(Destination::new("", "x", None)), "kind");
        assert_eq!(
            field_of(Destination::new("k", "x".repeat(257), None)),
            "value"
        );
        assert_eq!(
            field_of(Destination::new("k", "x", Some("a\nb".into()))),
            "network"
        );
        assert!(Destination::new("k", "x".repeat(256), None).is_ok());
    }

    #[test]
    fn details_without_anything_box_to_none() {
        assert!(WithdrawalDetails::default().boxed().is_none());
        assert!(Metadata::default().boxed().is_none());
        let with_expiry = WithdrawalDetails {
            expires_at: Some(UnixMs::from_millis(5)),
            ..Default::default()
        };
        assert!(with_expiry.boxed().is_some());
    }
}
