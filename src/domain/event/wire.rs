//! An [`Event`]'s serde encoding (bincode in the log, the replication
//! stream and snapshots' payout records): a list of variants that only
//! ever grows at its end, one per encoding any build ever wrote.
//!
//! [`Event`] keeps one variant per fact, with optional parts; here each of
//! the four facts that gained parts (a deposit's or transfer's metadata; a
//! withdrawal request's details; a completion's partial amount and fee) has
//! its older encoding, used whenever the new parts are absent (so a plain
//! event costs what it always did), and a `…With` encoding added at the
//! end. [`Wire`] reads, [`WireRef`] writes without copying the event.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::details::{FeeCollected, Metadata, WithdrawalDetails};
use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::{Currency, Units};
use crate::domain::policy::{Freeze, Tier};
use crate::domain::time::UnixMs;

use super::{Event, ItemOutcome};

type Key = Option<IdempotencyKey>;

/// The encodings, as read. Variant order is the format: append only.
#[derive(Deserialize)]
enum Wire {
    Deposited {
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        key: Key,
    },
    WithdrawalRequested {
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        key: Key,
    },
    WithdrawalCompleted {
        tx: TransactionId,
    },
    WithdrawalFailed {
        tx: TransactionId,
        reason: String,
    },
    WithdrawalCancelled {
        tx: TransactionId,
    },
    Transferred {
        tx: TransactionId,
        to: AccountId,
        currency: Currency,
        amount: Units,
        key: Key,
    },
    WithdrawalClaimed {
        tx: TransactionId,
        payout_id: u64,
    },
    WithdrawalReleased {
        tx: TransactionId,
    },
    WithdrawalReturned {
        tx: TransactionId,
        reason: String,
    },
    PayoutSubmitted {
        payout_id: u64,
        currency: Currency,
        items: Vec<(TransactionId, Units)>,
    },
    PayoutItemsSettled {
        payout_id: u64,
        items: Vec<(TransactionId, ItemOutcome)>,
    },
    PayoutItemResolved {
        payout_id: u64,
        tx: TransactionId,
        outcome: ItemOutcome,
        note: String,
    },
    PayoutMismatch {
        payout_id: u64,
        tx: TransactionId,
        settled: ItemOutcome,
        reported: ItemOutcome,
    },
    IdempotencyKeysExpired {
        account: AccountId,
        before: UnixMs,
    },
    // Format v7 on.
    DepositedWith {
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        key: Key,
        metadata: Box<Metadata>,
    },
    WithdrawalRequestedWith {
        tx: TransactionId,
        currency: Currency,
        amount: Units,
        key: Key,
        details: Box<WithdrawalDetails>,
    },
    WithdrawalCompletedWith {
        tx: TransactionId,
        paid: Option<Units>,
        fee: Option<FeeCollected>,
    },
    TransferredWith {
        tx: TransactionId,
        to: AccountId,
        currency: Currency,
        amount: Units,
        key: Key,
        metadata: Box<Metadata>,
    },
    AccountFrozen {
        account: AccountId,
        freeze: Freeze,
    },
    AccountUnfrozen {
        account: AccountId,
    },
    AccountTierSet {
        account: AccountId,
        tier: Tier,
    },
}

/// The encodings, as written: [`Wire`]'s variants in the same order,
/// borrowing from the event.
#[derive(Serialize)]
enum WireRef<'a> {
    Deposited {
        tx: &'a TransactionId,
        currency: &'a Currency,
        amount: &'a Units,
        key: &'a Key,
    },
    WithdrawalRequested {
        tx: &'a TransactionId,
        currency: &'a Currency,
        amount: &'a Units,
        key: &'a Key,
    },
    WithdrawalCompleted {
        tx: &'a TransactionId,
    },
    WithdrawalFailed {
        tx: &'a TransactionId,
        reason: &'a String,
    },
    WithdrawalCancelled {
        tx: &'a TransactionId,
    },
    Transferred {
        tx: &'a TransactionId,
        to: &'a AccountId,
        currency: &'a Currency,
        amount: &'a Units,
        key: &'a Key,
    },
    WithdrawalClaimed {
        tx: &'a TransactionId,
        payout_id: &'a u64,
    },
    WithdrawalReleased {
        tx: &'a TransactionId,
    },
    WithdrawalReturned {
        tx: &'a TransactionId,
        reason: &'a String,
    },
    PayoutSubmitted {
        payout_id: &'a u64,
        currency: &'a Currency,
        items: &'a Vec<(TransactionId, Units)>,
    },
    PayoutItemsSettled {
        payout_id: &'a u64,
        items: &'a Vec<(TransactionId, ItemOutcome)>,
    },
    PayoutItemResolved {
        payout_id: &'a u64,
        tx: &'a TransactionId,
        outcome: &'a ItemOutcome,
        note: &'a String,
    },
    PayoutMismatch {
        payout_id: &'a u64,
        tx: &'a TransactionId,
        settled: &'a ItemOutcome,
        reported: &'a ItemOutcome,
    },
    IdempotencyKeysExpired {
        account: &'a AccountId,
        before: &'a UnixMs,
    },
    DepositedWith {
        tx: &'a TransactionId,
        currency: &'a Currency,
        amount: &'a Units,
        key: &'a Key,
        metadata: &'a Metadata,
    },
    WithdrawalRequestedWith {
        tx: &'a TransactionId,
        currency: &'a Currency,
        amount: &'a Units,
        key: &'a Key,
        details: &'a WithdrawalDetails,
    },
    WithdrawalCompletedWith {
        tx: &'a TransactionId,
        paid: &'a Option<Units>,
        fee: &'a Option<FeeCollected>,
    },
    TransferredWith {
        tx: &'a TransactionId,
        to: &'a AccountId,
        currency: &'a Currency,
        amount: &'a Units,
        key: &'a Key,
        metadata: &'a Metadata,
    },
    AccountFrozen {
        account: &'a AccountId,
        freeze: &'a Freeze,
    },
    AccountUnfrozen {
        account: &'a AccountId,
    },
    AccountTierSet {
        account: &'a AccountId,
        tier: &'a Tier,
    },
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireRef::from(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Wire::deserialize(deserializer).map(Event::from)
    }
}

impl<'a> From<&'a Event> for WireRef<'a> {
    fn from(event: &'a Event) -> Self {
        match event {
            Event::Deposited {
                tx,
                currency,
                amount,
                key,
                metadata,
            } => match metadata {
                None => WireRef::Deposited {
                    tx,
                    currency,
                    amount,
                    key,
                },
                Some(metadata) => WireRef::DepositedWith {
                    tx,
                    currency,
                    amount,
                    key,
                    metadata,
                },
            },
            Event::WithdrawalRequested {
                tx,
                currency,
                amount,
                key,
                details,
            } => match details {
                None => WireRef::WithdrawalRequested {
                    tx,
                    currency,
                    amount,
                    key,
                },
                Some(details) => WireRef::WithdrawalRequestedWith {
                    tx,
                    currency,
                    amount,
                    key,
                    details,
                },
            },
            Event::WithdrawalCompleted { tx, paid, fee } => {
                if paid.is_none() && fee.is_none() {
                    WireRef::WithdrawalCompleted { tx }
                } else {
                    WireRef::WithdrawalCompletedWith { tx, paid, fee }
                }
            }
            Event::WithdrawalFailed { tx, reason } => WireRef::WithdrawalFailed { tx, reason },
            Event::WithdrawalCancelled { tx } => WireRef::WithdrawalCancelled { tx },
            Event::Transferred {
                tx,
                to,
                currency,
                amount,
                key,
                metadata,
            } => match metadata {
                None => WireRef::Transferred {
                    tx,
                    to,
                    currency,
                    amount,
                    key,
                },
                Some(metadata) => WireRef::TransferredWith {
                    tx,
                    to,
                    currency,
                    amount,
                    key,
                    metadata,
                },
            },
            Event::WithdrawalClaimed { tx, payout_id } => {
                WireRef::WithdrawalClaimed { tx, payout_id }
            }
            Event::WithdrawalReleased { tx } => WireRef::WithdrawalReleased { tx },
            Event::WithdrawalReturned { tx, reason } => WireRef::WithdrawalReturned { tx, reason },
            Event::PayoutSubmitted {
                payout_id,
                currency,
                items,
            } => WireRef::PayoutSubmitted {
                payout_id,
                currency,
                items,
            },
            Event::PayoutItemsSettled { payout_id, items } => {
                WireRef::PayoutItemsSettled { payout_id, items }
            }
            Event::PayoutItemResolved {
                payout_id,
                tx,
                outcome,
                note,
            } => WireRef::PayoutItemResolved {
                payout_id,
                tx,
                outcome,
                note,
            },
            Event::PayoutMismatch {
                payout_id,
                tx,
                settled,
                reported,
            } => WireRef::PayoutMismatch {
                payout_id,
                tx,
                settled,
                reported,
            },
            Event::IdempotencyKeysExpired { account, before } => {
                WireRef::IdempotencyKeysExpired { account, before }
            }
            Event::AccountFrozen { account, freeze } => WireRef::AccountFrozen { account, freeze },
            Event::AccountUnfrozen { account } => WireRef::AccountUnfrozen { account },
            Event::AccountTierSet { account, tier } => WireRef::AccountTierSet { account, tier },
        }
    }
}

impl From<Wire> for Event {
    fn from(wire: Wire) -> Self {
        match wire {
            Wire::Deposited {
                tx,
                currency,
                amount,
                key,
            } => Event::Deposited {
                tx,
                currency,
                amount,
                key,
                metadata: None,
            },
            Wire::DepositedWith {
                tx,
                currency,
                amount,
                key,
                metadata,
            } => Event::Deposited {
                tx,
                currency,
                amount,
                key,
                metadata: Some(metadata),
            },
            Wire::WithdrawalRequested {
                tx,
                currency,
                amount,
                key,
            } => Event::WithdrawalRequested {
                tx,
                currency,
                amount,
                key,
                details: None,
            },
            Wire::WithdrawalRequestedWith {
                tx,
                currency,
                amount,
                key,
                details,
            } => Event::WithdrawalRequested {
                tx,
                currency,
                amount,
                key,
                details: Some(details),
            },
            Wire::WithdrawalCompleted { tx } => Event::WithdrawalCompleted {
                tx,
                paid: None,
                fee: None,
            },
            Wire::WithdrawalCompletedWith { tx, paid, fee } => {
                Event::WithdrawalCompleted { tx, paid, fee }
            }
            Wire::WithdrawalFailed { tx, reason } => Event::WithdrawalFailed { tx, reason },
            Wire::WithdrawalCancelled { tx } => Event::WithdrawalCancelled { tx },
            Wire::Transferred {
                tx,
                to,
                currency,
                amount,
                key,
            } => Event::Transferred {
                tx,
                to,
                currency,
                amount,
                key,
                metadata: None,
            },
            Wire::TransferredWith {
                tx,
                to,
                currency,
                amount,
                key,
                metadata,
            } => Event::Transferred {
                tx,
                to,
                currency,
                amount,
                key,
                metadata: Some(metadata),
            },
            Wire::WithdrawalClaimed { tx, payout_id } => Event::WithdrawalClaimed { tx, payout_id },
            Wire::WithdrawalReleased { tx } => Event::WithdrawalReleased { tx },
            Wire::WithdrawalReturned { tx, reason } => Event::WithdrawalReturned { tx, reason },
            Wire::PayoutSubmitted {
                payout_id,
                currency,
                items,
            } => Event::PayoutSubmitted {
                payout_id,
                currency,
                items,
            },
            Wire::PayoutItemsSettled { payout_id, items } => {
                Event::PayoutItemsSettled { payout_id, items }
            }
            Wire::PayoutItemResolved {
                payout_id,
                tx,
                outcome,
                note,
            } => Event::PayoutItemResolved {
                payout_id,
                tx,
                outcome,
                note,
            },
            Wire::PayoutMismatch {
                payout_id,
                tx,
                settled,
                reported,
            } => Event::PayoutMismatch {
                payout_id,
                tx,
                settled,
                reported,
            },
            Wire::IdempotencyKeysExpired { account, before } => {
                Event::IdempotencyKeysExpired { account, before }
            }
            Wire::AccountFrozen { account, freeze } => Event::AccountFrozen { account, freeze },
            Wire::AccountUnfrozen { account } => Event::AccountUnfrozen { account },
            Wire::AccountTierSet { account, tier } => Event::AccountTierSet { account, tier },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::details::{Destination, Fee};
    use crate::domain::money::CurrencyCode;
    use crate::domain::policy::FreezeScope;

    fn config() -> bincode::config::Configuration {
        bincode::config::standard()
    }

    fn encode(event: &Event) -> Vec<u8> {
        bincode::serde::encode_to_vec(event, config()).unwrap()
    }

    fn decode(bytes: &[u8]) -> Event {
        bincode::serde::decode_from_slice(bytes, config())
            .unwrap()
            .0
    }

    fn usd() -> Currency {
        Currency {
            code: CurrencyCode::new("USD").unwrap(),
            decimals: 2,
        }
    }

    /// The encoding of format v6 and before, field for field: what older
    /// logs hold.
    #[derive(Serialize)]
    enum Old {
        Deposited {
            tx: TransactionId,
            currency: Currency,
            amount: Units,
            key: Key,
        },
        WithdrawalRequested {
            tx: TransactionId,
            currency: Currency,
            amount: Units,
            key: Key,
        },
        WithdrawalCompleted {
            tx: TransactionId,
        },
    }

    #[test]
    fn plain_events_keep_the_encoding_older_logs_hold() {
        let tx = TransactionId::new(7, 3);
        let pairs = [
            (
                Old::Deposited {
                    tx,
                    currency: usd(),
                    amount: 5,
                    key: None,
                },
                Event::Deposited {
                    tx,
                    currency: usd(),
                    amount: 5,
                    key: None,
                    metadata: None,
                },
            ),
            (
                Old::WithdrawalRequested {
                    tx,
                    currency: usd(),
                    amount: 5,
                    key: None,
                },
                Event::WithdrawalRequested {
                    tx,
                    currency: usd(),
                    amount: 5,
                    key: None,
                    details: None,
                },
            ),
            (
                Old::WithdrawalCompleted { tx },
                Event::WithdrawalCompleted {
                    tx,
                    paid: None,
                    fee: None,
                },
            ),
        ];
        for (old, event) in pairs {
            let old = bincode::serde::encode_to_vec(&old, config()).unwrap();
            assert_eq!(encode(&event), old, "{event:?}");
            assert_eq!(decode(&old), event);
        }
    }

    #[test]
    fn events_with_their_new_parts_round_trip() {
        let tx = TransactionId::new(7, 3);
        let metadata = Metadata::new([("order", "42")]).unwrap();
        let details = WithdrawalDetails {
            fee: Some(Fee {
                currency: usd(),
                amount: 25,
            }),
            destination: Some(Destination::new("iban", "DE89", Some("sepa".into())).unwrap()),
            metadata: metadata.clone(),
            expires_at: Some(UnixMs::from_millis(99)),
        };
        let events = [
            Event::Deposited {
                tx,
                currency: usd(),
                amount: 5,
                key: None,
                metadata: metadata.clone().boxed(),
            },
            Event::WithdrawalRequested {
                tx,
                currency: usd(),
                amount: 5,
                key: Some(IdempotencyKey::new("k").unwrap()),
                details: details.boxed(),
            },
            Event::WithdrawalCompleted {
                tx,
                paid: Some(4),
                fee: Some(FeeCollected {
                    to: 9,
                    currency: usd(),
                    amount: 25,
                }),
            },
            Event::Transferred {
                tx,
                to: 8,
                currency: usd(),
                amount: 5,
                key: None,
                metadata: metadata.boxed(),
            },
            Event::AccountFrozen {
                account: 7,
                freeze: Freeze {
                    scope: FreezeScope::All,
                    until: Some(UnixMs::from_millis(5)),
                    reason: "review".into(),
                },
            },
            Event::AccountUnfrozen { account: 7 },
            Event::AccountTierSet {
                account: 7,
                tier: Tier::new("vip").unwrap(),
            },
        ];
        for event in events {
            assert_eq!(decode(&encode(&event)), event);
        }
    }
}
