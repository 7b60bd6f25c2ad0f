//! An account's idempotency keys over time: each key remembers when it was
//! first used (the stamp of its event); keys first used before a time the
//! engine picks (past `Config::idempotency_key_retention_ms`) expire
//! through a logged event, [`Event::IdempotencyKeysExpired`], so replay
//! (recovery, the checkpointer's copy) expires exactly what the live
//! engine did; and an expired key leaves only its fingerprint behind
//! ([`IdempotencyKey::fingerprint`], a fixed 64-bit hash), so a later use
//! of it is refused `idempotency_key_expired` instead of being taken for a
//! new key and applied twice.
//!
//! Cost: a key in memory is 96 B in the hash table (the handle of its
//! text and its [`KeyRecord`](super::KeyRecord)), its text on the heap
//! and the table's spare room; an expired one is 8 B in a sorted array. Fingerprints are
//! kept for good. Two keys of one account sharing a fingerprint (odds
//! about n²/2⁶⁵ for n expired keys) refuse the newer one with the same
//! clear error, changing nothing: never money moved.
//!
//! Never expired: a key whose transfer is in flight (between hold and
//! finish; it gets its time when the transfer's event is applied), and a
//! key whose time is unknown (first used by an event logged before format
//! v4, which carried no time). A key read from a snapshot older than
//! format v5 is dated when loaded (see `storage::snapshot`). An account
//! holding a transfer expires nothing until the transfer ends: the one
//! event that records the transfer is logged by the receiving side and may
//! reach the log before the expiry, where replay would see its key, dated,
//! while the live account still had it in flight.
//!
//! Also the snapshot's side of it (format v5): the keys' times, in the
//! order of their transactions' ids, and the fingerprints.

use crate::domain::event::Event;
use crate::domain::ids::IdempotencyKey;
use crate::domain::time::UnixMs;
use crate::error::LedgerError;

use super::{AccountState, Effect, KeyRecord};

impl AccountState {
    /// Whether `key` expired on this account (its fingerprint is kept).
    pub(super) fn key_expired(&self, key: &IdempotencyKey) -> bool {
        self.expired_keys.binary_search(&key.fingerprint()).is_ok()
    }

    /// When the oldest key an expiry may drop was first used: the engine
    /// logs an expiry for this account once it is past the retention.
    pub fn oldest_key_use(&self) -> Option<UnixMs> {
        self.idempotency
            .values()
            .filter(|record| may_expire(record))
            .map(|record| record.first_used)
            .min()
    }

    /// Expires the keys first used before `before`, as of `at`: the event
    /// to log and how many went, or no event if none would go.
    pub fn expire_keys(
        &mut self,
        before: UnixMs,
        at: UnixMs,
    ) -> Result<Effect<usize>, LedgerError> {
        let due = self.oldest_key_use().is_some_and(|oldest| oldest < before);
        if !due || !self.held_transfers.is_empty() {
            return Ok(Effect {
                output: 0,
                event: None,
            });
        }
        let held = self.idempotency.len();
        let event = Event::IdempotencyKeysExpired {
            account: self.id,
            before,
        };
        self.apply_checked(&event, at)?;
        Ok(Effect {
            output: held - self.idempotency.len(),
            event: Some(event),
        })
    }

    /// Applies a logged expiry: drops the keys first used before `before`
    /// that may expire and keeps their fingerprints, sorted.
    pub(super) fn keys_expired(&mut self, before: UnixMs) {
        let mut gone = Vec::new();
        self.idempotency.retain(|key, record| {
            let expires = may_expire(record) && record.first_used < before;
            if expires {
                gone.push(key.fingerprint());
            }
            !expires
        });
        if gone.is_empty() {
            return;
        }
        let mut all = std::mem::take(&mut self.expired_keys).into_vec();
        all.reserve_exact(gone.len());
        all.extend(gone);
        all.sort_unstable();
        all.dedup();
        self.expired_keys = all.into_boxed_slice();
        // The map shrinks with the keys, or memory would stay flat only
        // on paper.
        self.idempotency.shrink_to_fit();
    }

    /// Idempotency keys held in memory (expired ones are not).
    pub fn keys_held(&self) -> usize {
        self.idempotency.len()
    }

    /// The keys' first-use times, in the order of their transactions' ids
    /// (each key made one transaction): what a snapshot keeps beside the
    /// account, format v5.
    pub fn key_times(&self) -> Vec<UnixMs> {
        let mut records: Vec<&KeyRecord> = self.idempotency.values().collect();
        records.sort_unstable_by_key(|record| record.tx);
        records.iter().map(|record| record.first_used).collect()
    }

    /// Gives the keys the times [`key_times`](Self::key_times) listed;
    /// refused unless there is exactly one per key.
    pub fn restore_key_times(&mut self, times: &[UnixMs]) -> Result<(), String> {
        if times.len() != self.idempotency.len() {
            return Err(format!(
                "account {} has {} idempotency keys but {} times",
                self.id,
                self.idempotency.len(),
                times.len()
            ));
        }
        let mut records: Vec<&mut KeyRecord> = self.idempotency.values_mut().collect();
        records.sort_unstable_by_key(|record| record.tx);
        for (record, &time) in records.into_iter().zip(times) {
            record.first_used = time;
        }
        Ok(())
    }

    /// Dates the keys whose time is unknown `at` (a snapshot older than
    /// format v5 kept no key times).
    pub fn date_undated_keys(&mut self, at: UnixMs) {
        for record in self.idempotency.values_mut() {
            if record.first_used == UnixMs::UNKNOWN {
                record.first_used = at;
            }
        }
    }

    /// The fingerprints of the keys that expired, sorted.
    pub fn expired_key_fingerprints(&self) -> &[u64] {
        &self.expired_keys
    }

    /// Sets the fingerprints of the keys that expired (a snapshot's);
    /// refused unless strictly increasing, as kept.
    pub fn restore_expired_keys(&mut self, fingerprints: Vec<u64>) -> Result<(), String> {
        if fingerprints.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err(format!(
                "account {}'s expired key fingerprints are not strictly increasing",
                self.id
            ));
        }
        self.expired_keys = fingerprints.into_boxed_slice();
        Ok(())
    }
}

/// Whether an expiry may drop this key at all: not while its transfer is
/// in flight, nor without a known time.
fn may_expire(record: &KeyRecord) -> bool {
    !record.in_flight && record.first_used.known().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::usd;
    use crate::domain::receipts::Deposit;

    const T: u64 = 1_767_225_600_000;

    fn at(ms: u64) -> UnixMs {
        UnixMs::from_millis(T + ms)
    }

    fn key(text: &str) -> Option<IdempotencyKey> {
        Some(IdempotencyKey::new(text).unwrap())
    }

    fn expired(text: &str) -> LedgerError {
        LedgerError::IdempotencyKeyExpired { key: text.into() }
    }

    /// Account 1 with 10.00 USD deposited under key `a` at `at(0)` and
    /// 5.00 under `b` at `at(100)`.
    fn account() -> (AccountState, Deposit) {
        let mut account = AccountState::new(1);
        let first = account.deposit(usd(), 1_000, key("a"), at(0)).unwrap();
        account.deposit(usd(), 500, key("b"), at(100)).unwrap();
        (account, first.output)
    }

    #[test]
    fn a_key_expires_once_first_used_before_the_horizon_and_not_before() {
        let (mut account, first) = account();
        let not_yet = account.expire_keys(at(0), at(200)).unwrap();
        assert_eq!((not_yet.output, not_yet.event), (0, None));
        let replay = account.deposit(usd(), 1_000, key("a"), at(200)).unwrap();
        assert_eq!((replay.output, replay.event), (first, None));

        let went = account.expire_keys(at(1), at(200)).unwrap();
        let event = Event::IdempotencyKeysExpired {
            account: 1,
            before: at(1),
        };
        assert_eq!((went.output, went.event), (1, Some(event)));
        assert_eq!(account.keys_held(), 1);
        let unchanged = account.clone();
        let refused = account.deposit(usd(), 1_000, key("a"), at(300));
        assert_eq!(refused.unwrap_err(), expired("a"));
        // Other parameters, another kind: the same answer.
        let refused = account.request_withdrawal(usd(), 1, key("a"), 8, at(300));
        assert_eq!(refused.unwrap_err(), expired("a"));
        assert_eq!(account, unchanged, "a refusal changes nothing");
        assert_eq!(account.balance(usd()).available, 1_500);
        // `b`, used after the horizon, still replays.
        assert!(account
            .deposit(usd(), 500, key("b"), at(300))
            .unwrap()
            .event
            .is_none());
    }

    #[test]
    fn replaying_the_logged_events_expires_the_same_keys() {
        let (mut live, _) = account();
        let mut events = vec![
            (
                Event::Deposited {
                    tx: crate::TransactionId::new(1, 1),
                    currency: usd(),
                    amount: 1_000,
                    key: key("a"),
                    metadata: None,
                },
                at(0),
            ),
            (
                Event::Deposited {
                    tx: crate::TransactionId::new(1, 2),
                    currency: usd(),
                    amount: 500,
                    key: key("b"),
                    metadata: None,
                },
                at(100),
            ),
        ];
        let expiry = live.expire_keys(at(101), at(200)).unwrap();
        events.push((expiry.event.unwrap(), at(200)));
        let mut replayed = AccountState::new(1);
        for (event, at) in &events {
            replayed.apply(event, *at).unwrap();
        }
        assert_eq!(replayed, live);
        assert_eq!(replayed.keys_held(), 0);
        assert_eq!(replayed.expired_key_fingerprints().len(), 2);
    }

    #[test]
    fn a_key_whose_transfer_is_in_flight_never_expires() {
        let (mut account, _) = account();
        let hold = account.hold_transfer(2, usd(), 100, key("t")).unwrap();
        let crate::domain::account::TransferHold::Held(tx) = hold else {
            panic!("held");
        };
        let far = UnixMs::MAX;
        let none = account.expire_keys(far, at(200)).unwrap();
        assert_eq!((none.output, none.event), (0, None), "nothing while held");
        // Even the logged event (as replay would meet it) spares it.
        let event = Event::IdempotencyKeysExpired {
            account: 1,
            before: far,
        };
        account.apply(&event, at(200)).unwrap();
        assert_eq!(account.keys_held(), 1, "only the one in flight is left");
        assert!(matches!(
            account.hold_transfer(2, usd(), 100, key("t")),
            Err(LedgerError::IdempotencyInProgress { .. })
        ));
        account.finish_transfer(tx, Some(at(300))).unwrap();
        // Dated by its event now: replays, then expires past its time.
        let replay = account.hold_transfer(2, usd(), 100, key("t")).unwrap();
        assert!(matches!(
            replay,
            crate::domain::account::TransferHold::Replayed(_)
        ));
        assert_eq!(account.key_times(), vec![at(300)]);
        assert_eq!(account.expire_keys(at(301), at(400)).unwrap().output, 1);
    }

    #[test]
    fn key_times_and_fingerprints_restore_as_kept_and_refuse_what_is_not() {
        let (mut account, _) = account();
        account.expire_keys(at(1), at(200)).unwrap();
        let mut copy = account.clone();
        copy.restore_key_times(&[at(5)]).unwrap();
        assert_eq!(copy.key_times(), vec![at(5)]);
        assert!(copy.restore_key_times(&[]).is_err());
        let fingerprint = IdempotencyKey::new("a").unwrap().fingerprint();
        assert_eq!(account.expired_key_fingerprints(), &[fingerprint]);
        assert!(copy.restore_expired_keys(vec![2, 1]).is_err());
        assert!(copy.restore_expired_keys(vec![1, 1]).is_err());
        copy.restore_expired_keys(vec![1, fingerprint]).unwrap();
        assert_eq!(copy.expired_key_fingerprints(), &[1, fingerprint]);
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    /// What the module docs say an expired key saves: its text's handle
    /// and record (with the map's share, more still) against 8 bytes.
    #[test]
    fn an_expired_key_costs_a_fraction_of_a_held_one() {
        let held = std::mem::size_of::<(IdempotencyKey, KeyRecord)>();
        assert_eq!(held, 96, "the docs' figure");
        assert!(std::mem::size_of::<u64>() * 10 <= held);
    }
}
