//! Identifiers: accounts, transactions, idempotency keys (with the fixed
//! fingerprint an expired key leaves behind), and the shard an account
//! lives on ([`shard_of`], the one routing rule).
//!
//! A `TransactionId` carries the account it belongs to, so phase 3
//! (`complete_withdrawal(transaction_id, ..)`) is routed to the right shard
//! and account actor with no directory lookup and no global scan.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::money::truncate_for_message;
use crate::error::LedgerError;

/// An account, as the host application numbers it.
pub type AccountId = u64;

/// Longest idempotency key accepted, in bytes.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 128;

/// Engine-assigned id of a deposit, withdrawal or transfer: the account it
/// belongs to (the source, for a transfer) and that account's sequence number.
/// Shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransactionId(u128);

impl TransactionId {
    pub fn new(account: AccountId, sequence: u64) -> Self {
        Self((u128::from(account) << 64) | u128::from(sequence))
    }

    /// The account that owns this transaction (the source of a transfer).
    pub fn account(self) -> AccountId {
        (self.0 >> 64) as AccountId
    }

    /// The owning account's sequence number of this transaction.
    pub fn sequence(self) -> u64 {
        self.0 as u64
    }
}

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.account(), self.sequence())
    }
}

impl FromStr for TransactionId {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let well_formed = s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let parsed = well_formed
            .then(|| u128::from_str_radix(s, 16).ok())
            .flatten();
        parsed
            .map(Self)
            .ok_or_else(|| LedgerError::InvalidTransactionId {
                input: truncate_for_message(s),
            })
    }
}

/// A caller's idempotency key, scoped to the account the operation acts on
/// (the source account of a transfer). 1 to 128 bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdempotencyKey(Box<str>);

impl IdempotencyKey {
    pub fn new(key: &str) -> Result<Self, LedgerError> {
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX {
            return Err(LedgerError::InvalidIdempotencyKey {
                length: key.len(),
                max: IDEMPOTENCY_KEY_LEN_MAX,
            });
        }
        Ok(Self(key.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This key's fingerprint: 64 bits an account keeps, in place of the
    /// key, once the key expired (see `AccountState`'s expired keys), so a
    /// replay of it is told apart from a new key. A hash with no seed
    /// (FNV-1a over the key's bytes, then splitmix64's finalizer to spread
    /// them): the same on every run and every build, since fingerprints
    /// are logged state (snapshots). Two keys of one account sharing a
    /// fingerprint (odds about n²/2⁶⁵ for n expired keys) only makes the
    /// newer one refused `idempotency_key_expired`: never money moved.
    pub fn fingerprint(&self) -> u64 {
        const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
        let hash = self.0.bytes().fold(FNV_OFFSET, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
        });
        mix(hash)
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The shard an account lives on among `shards`: a fixed mix of its id, so
/// consecutive ids spread evenly. The engine routes by it; tests use it to
/// place accounts on chosen shards.
pub fn shard_of(account: AccountId, shards: usize) -> usize {
    (mix(account) % shards.max(1) as u64) as usize
}

/// splitmix64's finalizer: every input bit moves about half the output's.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_id_carries_its_account_and_round_trips_as_hex() {
        let id = TransactionId::new(u64::MAX, 7);
        assert_eq!(id.account(), u64::MAX);
        assert_eq!(id.sequence(), 7);
        let shown = id.to_string();
        assert_eq!(shown.len(), 32);
        assert_eq!(shown.parse::<TransactionId>().unwrap(), id);
        assert!("xyz".parse::<TransactionId>().is_err());
        assert!("+0000000000000000000000000000001"
            .parse::<TransactionId>()
            .is_err());
    }

    #[test]
    fn idempotency_keys_are_bounded() {
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new(&"k".repeat(IDEMPOTENCY_KEY_LEN_MAX)).is_ok());
        assert!(IdempotencyKey::new(&"k".repeat(IDEMPOTENCY_KEY_LEN_MAX + 1)).is_err());
    }

    /// Fingerprints are kept in snapshots: the same key must give the same
    /// one on every run and every build, so they are pinned here.
    #[test]
    fn a_keys_fingerprint_is_fixed() {
        let fingerprint = |k: &str| IdempotencyKey::new(k).unwrap().fingerprint();
        assert_eq!(fingerprint("order-1"), PINNED_ORDER_1);
        assert_eq!(fingerprint("order-1"), fingerprint("order-1"));
        assert_ne!(fingerprint("order-1"), fingerprint("order-2"));
    }

    /// FNV-1a of `order-1`, then splitmix64's finalizer (checked by hand).
    const PINNED_ORDER_1: u64 = 17_145_836_837_575_567_827;
}
