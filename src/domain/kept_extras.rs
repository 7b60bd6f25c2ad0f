//! A withdrawal's extras (fee, destination, metadata, expiry, partly paid
//! amount) as its record and its history row keep them in memory: a fee in
//! the withdrawal's own currency, the common case, inside the record
//! itself, and the rest, if any, in one allocation shared between the
//! record and the rows made from it.
//!
//! Why: a withdrawal whose only extra is its fee would otherwise allocate
//! on the shard and on the checkpointer (both apply it), and that
//! allocation is read, copied and freed across threads (the history
//! rows); measured, it was then the largest single part of what fees cost
//! (README, Withdrawals → Cost). The fee fits the record's padding, so the
//! record does not grow.
//!
//! The split is this module's alone: every [`KeptExtras`] is made by
//! [`KeptExtras::of_request`] or [`KeptExtras::from_extras`] (or is the
//! empty default), and changed only by [`KeptExtras::set_paid`], so one set
//! of extras has exactly one representation, and [`KeptExtras::encoding`]
//! gives back exactly the [`Extras`] it was made from (what snapshots and
//! history rows encode, byte for byte as before this split, and decode
//! with `from_extras`).

use std::borrow::Cow;
use std::num::NonZeroU64;
use std::sync::Arc;

use serde::Serialize;

use crate::domain::details::{Destination, Fee, Metadata, WithdrawalDetails};
use crate::domain::money::{Currency, CurrencyCode, Units, CURRENCY_DECIMALS_MAX};
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::Extras;

/// Bits of an [`OwnFee`] that hold the currency's decimals.
const DECIMALS_BITS: u32 = 5;

// Every currency's decimals fit the bits kept for them.
const _: () = assert!((CURRENCY_DECIMALS_MAX as u64) < 1 << DECIMALS_BITS);

/// A fee in the withdrawal's own currency of 1 to 2^59 − 1 units: its
/// units and the currency's decimals in one word (the code is the
/// withdrawal's), so it needs no more room than a pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OwnFee(NonZeroU64);

impl OwnFee {
    /// `fee` kept inline, if it is in `currency` and its units (and the
    /// currency's decimals, even decoded from a damaged file) fit.
    fn of(fee: Fee, currency: CurrencyCode) -> Option<Self> {
        let decimals_fit = u64::from(fee.currency.decimals) < 1 << DECIMALS_BITS;
        if fee.currency.code != currency || fee.amount <= 0 || !decimals_fit {
            return None;
        }
        let units = u64::try_from(fee.amount).ok()?;
        let packed = units.checked_mul(1 << DECIMALS_BITS)?;
        NonZeroU64::new(packed | u64::from(fee.currency.decimals)).map(Self)
    }

    fn fee(self, code: CurrencyCode) -> Fee {
        let word = self.0.get();
        Fee {
            currency: Currency {
                code,
                // Below 2^5 by construction: the cast keeps all of it.
                decimals: (word & ((1 << DECIMALS_BITS) - 1)) as u8,
            },
            amount: Units::from(word >> DECIMALS_BITS),
        }
    }
}

/// A withdrawal's extras as kept in memory; see the module docs. The
/// fee's code, and so whether it is the withdrawal's own, is the
/// withdrawal's currency, which every reader passes in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeptExtras {
    own_fee: Option<OwnFee>,
    /// Everything else; never holds a fee `own_fee` could.
    rest: Option<Arc<Extras>>,
}

impl KeptExtras {
    /// What a request in `currency` carried (nothing paid yet); allocates
    /// only for what cannot be kept inline (anything but a fee in
    /// `currency` of 1 to 2^59 − 1 units).
    pub fn of_request(currency: CurrencyCode, details: Option<&WithdrawalDetails>) -> Self {
        let Some(details) = details else {
            return Self::default();
        };
        let own_fee = details.fee.and_then(|fee| OwnFee::of(fee, currency));
        let fee_only = details.destination.is_none()
            && details.metadata.is_empty()
            && details.expires_at.is_none();
        let rest = if own_fee.is_some() && fee_only {
            None
        } else {
            let mut details = details.clone();
            if own_fee.is_some() {
                details.fee = None;
            }
            Some(Arc::new(Extras {
                details,
                paid: None,
            }))
        };
        Self { own_fee, rest }
    }

    /// `extras` as a snapshot or a history row decoded them, of a
    /// withdrawal in `currency`.
    pub fn from_extras(currency: CurrencyCode, extras: Option<Extras>) -> Self {
        let Some(mut extras) = extras else {
            return Self::default();
        };
        let own_fee = extras.details.fee.and_then(|fee| OwnFee::of(fee, currency));
        if own_fee.is_some() {
            extras.details.fee = None;
        }
        let rest = (own_fee.is_none() || extras != Extras::default()).then(|| Arc::new(extras));
        Self { own_fee, rest }
    }

    /// Whether it holds anything (a plain withdrawal's holds nothing).
    pub fn is_some(&self) -> bool {
        self.own_fee.is_some() || self.rest.is_some()
    }

    /// The fee of a withdrawal in `currency`, if it has one.
    pub fn fee(&self, currency: CurrencyCode) -> Option<Fee> {
        match self.own_fee {
            Some(own) => Some(own.fee(currency)),
            None => self.rest.as_deref().and_then(|e| e.details.fee),
        }
    }

    /// What a completion paid, when it paid less than the amount.
    pub fn paid(&self) -> Option<Units> {
        self.rest.as_deref().and_then(|e| e.paid)
    }

    /// Notes that a completion paid `paid`, less than the amount.
    pub fn set_paid(&mut self, paid: Units) {
        Arc::make_mut(self.rest.get_or_insert_with(Arc::default)).paid = Some(paid);
    }

    pub fn destination(&self) -> Option<&Destination> {
        self.rest
            .as_deref()
            .and_then(|e| e.details.destination.as_ref())
    }

    /// Its metadata; `None` when it keeps nothing, or no more than a fee.
    pub fn metadata(&self) -> Option<&Metadata> {
        self.rest.as_deref().map(|e| &e.details.metadata)
    }

    pub fn expires_at(&self) -> Option<UnixMs> {
        self.rest.as_deref().and_then(|e| e.details.expires_at)
    }

    /// What its request carried, whole again (`None` if nothing).
    pub fn details(&self, currency: CurrencyCode) -> Option<WithdrawalDetails> {
        let mut details = self.rest.as_deref().map(|e| e.details.clone());
        if let Some(own) = self.own_fee {
            details.get_or_insert_with(WithdrawalDetails::default).fee = Some(own.fee(currency));
        }
        details
    }

    /// What encodes as the extras it was made from would (with serde: the
    /// same names, fields and types, so in any format), without copying
    /// them: what snapshots and history rows write.
    pub fn encoding(&self, currency: CurrencyCode) -> Option<ExtrasEncoding<'_>> {
        if !self.is_some() {
            return None;
        }
        let rest = self.rest.as_deref();
        let details = rest.map(|e| &e.details);
        Some(ExtrasEncoding {
            details: DetailsEncoding {
                fee: self.fee(currency),
                destination: details.and_then(|d| d.destination.as_ref()),
                metadata: details.map_or_else(
                    || Cow::Owned(Metadata::default()),
                    |d| Cow::Borrowed(&d.metadata),
                ),
                expires_at: details.and_then(|d| d.expires_at),
            },
            paid: rest.and_then(|e| e.paid),
        })
    }
}

/// [`Extras`] borrowed: the same fields in the same order, so serde
/// encodes both alike (a test holds them to it).
#[derive(Serialize)]
#[serde(rename = "Extras")]
pub struct ExtrasEncoding<'a> {
    details: DetailsEncoding<'a>,
    paid: Option<Units>,
}

/// [`WithdrawalDetails`] borrowed, as above.
#[derive(Serialize)]
#[serde(rename = "WithdrawalDetails")]
struct DetailsEncoding<'a> {
    fee: Option<Fee>,
    destination: Option<&'a Destination>,
    metadata: Cow<'a, Metadata>,
    expires_at: Option<UnixMs>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::usd;

    fn eth() -> Currency {
        Currency {
            code: CurrencyCode::new("ETH").unwrap(),
            decimals: 18,
        }
    }

    fn fee(currency: Currency, amount: Units) -> Option<Fee> {
        Some(Fee { currency, amount })
    }

    fn details(fee: Option<Fee>, full: bool) -> WithdrawalDetails {
        WithdrawalDetails {
            fee,
            destination: full
                .then(|| Destination::new("iban", "DE89", Some("sepa".into())).unwrap()),
            metadata: if full {
                Metadata::new([("order", "7")]).unwrap()
            } else {
                Metadata::default()
            },
            expires_at: full.then(|| UnixMs::from_millis(1_700_000_000_000)),
        }
    }

    /// Every shape of extras a USD withdrawal can keep: none, a fee alone
    /// (own currency, another, too large to inline, zero), with the rest
    /// and without, each with a partial payment and without.
    fn every_shape() -> Vec<Option<Extras>> {
        let fees = [
            None,
            fee(usd(), 1),
            fee(usd(), 100),
            fee(usd(), (1 << 59) - 1),
            fee(usd(), 1 << 59),
            fee(usd(), Units::from(u64::MAX) + 1),
            fee(usd(), 0),
            fee(eth(), 5),
            // Decimals no currency has (a damaged file): kept, not inlined.
            fee(
                Currency {
                    decimals: 40,
                    ..usd()
                },
                3,
            ),
        ];
        let mut shapes = vec![None];
        for fee in fees {
            for full in [false, true] {
                for paid in [None, Some(42)] {
                    shapes.push(Some(Extras {
                        details: details(fee, full),
                        paid,
                    }));
                }
            }
        }
        shapes
    }

    fn encoded<T: Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
    }

    /// The extras `kept` writes, decoded as snapshots and rows decode them.
    fn written(kept: &KeptExtras) -> Option<Extras> {
        let bytes = encoded(&kept.encoding(usd().code));
        let config = bincode::config::standard();
        let (extras, used) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(used, bytes.len());
        extras
    }

    #[test]
    fn every_shape_gives_back_what_it_was_made_from_and_encodes_the_same_bytes() {
        for extras in every_shape() {
            let kept = KeptExtras::from_extras(usd().code, extras.clone());
            assert_eq!(written(&kept), extras);
            assert_eq!(
                encoded(&kept.encoding(usd().code)),
                encoded(&extras),
                "{extras:?}"
            );
            // A format that names the fields writes them alike too.
            assert_eq!(
                serde_json::to_string(&kept.encoding(usd().code)).unwrap(),
                serde_json::to_string(&extras).unwrap()
            );
            let fee = extras.as_ref().and_then(|e| e.details.fee);
            assert_eq!(kept.fee(usd().code), fee);
            assert_eq!(kept.paid(), extras.as_ref().and_then(|e| e.paid));
            assert_eq!(kept.is_some(), extras.is_some());
        }
    }

    #[test]
    fn a_fee_in_the_own_currency_alone_allocates_nothing_and_others_do() {
        let own = KeptExtras::of_request(usd().code, Some(&details(fee(usd(), 1), false)));
        assert!(own.rest.is_none() && own.own_fee.is_some());
        let largest =
            KeptExtras::of_request(usd().code, Some(&details(fee(usd(), (1 << 59) - 1), false)));
        assert!(largest.rest.is_none());
        let odd_decimals = Currency {
            decimals: 32,
            ..usd()
        };
        for other in [
            fee(eth(), 1),
            fee(usd(), 1 << 59),
            fee(usd(), 0),
            fee(odd_decimals, 1),
        ] {
            let kept = KeptExtras::of_request(usd().code, Some(&details(other, false)));
            assert!(kept.own_fee.is_none(), "{other:?}");
            assert_eq!(kept.fee(usd().code), other);
        }
        let with_rest = KeptExtras::of_request(usd().code, Some(&details(fee(usd(), 3), true)));
        assert!(with_rest.own_fee.is_some());
        assert_eq!(with_rest.rest.as_ref().unwrap().details.fee, None);
    }

    #[test]
    fn a_request_keeps_what_its_decoded_extras_would() {
        for full in [false, true] {
            for fee in [None, fee(usd(), 7), fee(eth(), 7)] {
                // As events carry them: `None` when there is nothing.
                let details = details(fee, full).boxed();
                let from_request = KeptExtras::of_request(usd().code, details.as_deref());
                let expected = details.clone().map(|details| Extras {
                    details: *details,
                    paid: None,
                });
                assert_eq!(from_request, KeptExtras::from_extras(usd().code, expected));
                assert_eq!(from_request.details(usd().code), details.map(|d| *d));
            }
        }
    }

    #[test]
    fn a_partial_payment_keeps_the_fee_where_it_was() {
        let mut kept = KeptExtras::of_request(usd().code, Some(&details(fee(usd(), 9), false)));
        kept.set_paid(2_400);
        assert_eq!(kept.fee(usd().code), fee(usd(), 9));
        assert_eq!(kept.paid(), Some(2_400));
        let whole = written(&kept);
        assert_eq!(KeptExtras::from_extras(usd().code, whole), kept);
    }

    #[test]
    fn the_record_does_not_grow_with_the_fee_kept_inline() {
        assert_eq!(std::mem::size_of::<KeptExtras>(), 16);
        assert_eq!(
            std::mem::size_of::<crate::domain::withdrawal::WithdrawalRecord>(),
            96
        );
    }
}
