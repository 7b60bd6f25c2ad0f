//! An account's withdrawals by sequence number, as one vector sorted by it,
//! and their encoding (the same bytes as the hash map it replaced).
//!
//! Sequence numbers are handed out in increasing order, so a new
//! withdrawal goes at the end; a lookup is a binary search. Compared with a
//! hash map this keeps an account's withdrawals in one allocation sized to
//! them (a map keeps up to twice the slots, plus control bytes), needs no
//! hashing, and walks them in order. Serialized exactly as the
//! `HashMap<u64, WithdrawalRecord>` it replaced: a map of its entries
//! (which a hash map wrote in no particular order), so snapshots read and
//! write the same bytes as before.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::withdrawal::WithdrawalRecord;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Withdrawals(Vec<(u64, WithdrawalRecord)>);

impl Withdrawals {
    /// `Ok(index)` of `seq`, or `Err(index)` where it would go.
    pub(super) fn search(&self, seq: u64) -> Result<usize, usize> {
        // The newest withdrawal is asked for most: try the end first.
        match self.0.last() {
            Some(&(last, _)) if last < seq => Err(self.0.len()),
            Some(&(last, _)) if last == seq => Ok(self.0.len() - 1),
            _ => self.0.binary_search_by_key(&seq, |(s, _)| *s),
        }
    }

    pub(super) fn get(&self, seq: u64) -> Option<&WithdrawalRecord> {
        let index = self.search(seq).ok()?;
        Some(&self.0[index].1)
    }

    /// The record at `index`, which [`search`](Self::search) found.
    pub(super) fn at(&self, index: usize) -> &WithdrawalRecord {
        &self.0[index].1
    }

    /// The record at `index`, which [`search`](Self::search) found.
    pub(super) fn at_mut(&mut self, index: usize) -> &mut WithdrawalRecord {
        &mut self.0[index].1
    }

    /// Like [`get`](Self::get), for [`AccountState::warm`]: reads the
    /// entries a search for `seq` reads.
    ///
    /// [`AccountState::warm`]: super::AccountState::warm
    pub(super) fn warm(&self, seq: u64) -> Option<&WithdrawalRecord> {
        self.get(seq).or_else(|| self.last())
    }

    pub(super) fn first(&self) -> Option<&WithdrawalRecord> {
        self.0.first().map(|(_, record)| record)
    }

    pub(super) fn last(&self) -> Option<&WithdrawalRecord> {
        self.0.last().map(|(_, record)| record)
    }

    /// Puts `seq` at `index`, which [`search`](Self::search) gave for it.
    /// Grows by half when full rather than doubling: accounts hold a few
    /// withdrawals each, and millions of accounts stay in memory.
    pub(super) fn insert_at(&mut self, index: usize, seq: u64, record: WithdrawalRecord) {
        debug_assert_eq!(self.search(seq), Err(index));
        if self.0.len() == self.0.capacity() {
            self.0.reserve_exact((self.0.len() / 2).max(2));
        }
        self.0.insert(index, (seq, record));
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Drops every withdrawal `drop` picks (shown each with its sequence
    /// number), keeping the others in order; answers how many went. Gives
    /// back the room they took once the vector is less than half full, so
    /// an account's memory follows what it still holds.
    pub(super) fn remove_where(
        &mut self,
        mut drop: impl FnMut(u64, &WithdrawalRecord) -> bool,
    ) -> usize {
        let before = self.0.len();
        self.0.retain(|(seq, record)| !drop(*seq, record));
        if self.0.len() <= self.0.capacity() / 2 {
            self.0.shrink_to_fit();
        }
        before - self.0.len()
    }

    /// Oldest first, to change in place (never their order).
    pub(super) fn records_mut(&mut self) -> impl Iterator<Item = &mut WithdrawalRecord> + '_ {
        self.0.iter_mut().map(|(_, record)| record)
    }

    /// Oldest first.
    pub(super) fn iter(&self) -> impl ExactSizeIterator<Item = (u64, &WithdrawalRecord)> + '_ {
        self.0.iter().map(|(seq, record)| (*seq, record))
    }
}

impl Serialize for Withdrawals {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(seq, record)| (seq, record)))
    }
}

impl<'de> Deserialize<'de> for Withdrawals {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(Entries)
    }
}

/// Reads a map of withdrawals, in any order, into a [`Withdrawals`].
struct Entries;

impl<'de> Visitor<'de> for Entries {
    type Value = Withdrawals;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of withdrawals by sequence number")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Withdrawals, A::Error> {
        // Like serde's own maps: trust a length hint only so far.
        let hint = map.size_hint().unwrap_or(0).min(4096);
        let mut entries: Vec<(u64, WithdrawalRecord)> = Vec::with_capacity(hint);
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        // A hash map keeps the last of repeated keys; so does this (the
        // stable sort keeps them in order, then every run of one key is
        // reduced to its last entry).
        entries.sort_by_key(|(seq, _)| *seq);
        entries.reverse();
        entries.dedup_by_key(|(seq, _)| *seq);
        entries.reverse();
        Ok(Withdrawals(entries))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::domain::money::{usd, Units};
    use crate::domain::withdrawal::WithdrawalStatus;

    fn record(amount: Units, status: WithdrawalStatus) -> WithdrawalRecord {
        WithdrawalRecord {
            currency: usd(),
            amount,
            status,
            created_at: crate::domain::time::UnixMs::UNKNOWN,
            updated_at: crate::domain::time::UnixMs::UNKNOWN,
            extras: Default::default(),
        }
    }

    #[test]
    fn withdrawals_encode_exactly_like_the_hash_map_they_replaced() {
        let config = bincode::config::standard();
        let entries = [
            (3, record(300, WithdrawalStatus::Completed)),
            (9, record(900, WithdrawalStatus::Pending)),
            (
                12,
                record(
                    1_200,
                    WithdrawalStatus::Failed {
                        reason: "no".into(),
                    },
                ),
            ),
        ];
        // One entry: the bytes are the same.
        let one = Withdrawals(entries[..1].to_vec());
        let map: HashMap<u64, WithdrawalRecord> = entries[..1].iter().cloned().collect();
        assert_eq!(
            bincode::serde::encode_to_vec(&one, config).unwrap(),
            bincode::serde::encode_to_vec(&map, config).unwrap()
        );
        // Several: a map's bytes (in its own order) read back sorted, and
        // ours read back as the same map.
        let map: HashMap<u64, WithdrawalRecord> = entries.iter().cloned().collect();
        let from_map = bincode::serde::encode_to_vec(&map, config).unwrap();
        let (read, _): (Withdrawals, _) =
            bincode::serde::decode_from_slice(&from_map, config).unwrap();
        assert_eq!(read, Withdrawals(entries.to_vec()));
        let ours = bincode::serde::encode_to_vec(&read, config).unwrap();
        let (as_map, _): (HashMap<u64, WithdrawalRecord>, _) =
            bincode::serde::decode_from_slice(&ours, config).unwrap();
        assert_eq!(as_map, map);
        assert_eq!(ours.len(), from_map.len());
    }

    #[test]
    fn a_repeated_withdrawal_key_keeps_the_last_entry_like_a_hash_map() {
        let config = bincode::config::standard();
        // Hand-made map bytes: 3 entries, key 5 twice.
        let mut bytes = vec![3];
        for (seq, amount) in [(5u64, 1), (2, 2), (5, 3)] {
            bytes.extend(bincode::serde::encode_to_vec(seq, config).unwrap());
            let entry = record(amount, WithdrawalStatus::Pending);
            bytes.extend(bincode::serde::encode_to_vec(&entry, config).unwrap());
        }
        let (map, _): (HashMap<u64, WithdrawalRecord>, _) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        let (ours, _): (Withdrawals, _) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(ours.iter().map(|(seq, _)| seq).collect::<Vec<_>>(), [2, 5]);
        assert_eq!(ours.get(5), map.get(&5));
        assert_eq!(ours.get(5).map(|r| r.amount), Some(3));
    }
}
