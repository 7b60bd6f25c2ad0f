//! The history store's keyspaces, key layouts and value encoding.
//!
//! Integers in keys are big-endian so byte order is numeric order. Every
//! withdrawal index key is `prefix ++ created_at_ms (8) ++ tx (16)`, so
//! all three indexes list in (created, tx) order and share one cursor form:
//! - `withdrawals`: tx → [`WithdrawalRow`]
//! - `w_by_account`: account (8) ++ created ++ tx → ()
//! - `w_by_status`: status code (1) ++ created ++ tx → ()
//! - `w_by_payout`: payout id (8) ++ created ++ tx → ()
//! - `entries`: account (8) ++ currency (8) ++ seq (8) → every change that
//!   balance went through in up to 64 events of one ingest, the last of
//!   which has that seq, in (seq, part) order (`entry_value.rs`); no key
//!   before an entry's own seq holds it. Stores written before changes
//!   shared a key hold an event's second and third change under its key
//!   ++ part (1), and are read as they are
//! - `transactions`: tx → [`TransactionRow`]
//! - `payouts`: payout id (8) → [`PayoutRow`]
//! - `p_by_state`: state code (1) ++ payout id (8) → ()
//! - `meta`: `applied_lsn` → u64 (the watermark); `incomplete` → 1 once
//!   the store was fed from a log with a gap; `format` → u32 (`format.rs`:
//!   the newest layout the store may hold)
//!
//! Values are bincode (standard configuration); status and payout state are
//! stored as one-byte codes that never change meaning. A row's fields are
//! never changed nor added to: what format v7 added to withdrawals,
//! entries and transactions is a second bincode value after the row,
//! written only when present ([`Trailing`]), so a row written before reads
//! the same, and a row without it is written as before.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::domain::details::Metadata;
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::CurrencyCode;
use crate::domain::payouts::PayoutState;
use crate::domain::withdrawal::{Extras, KeptExtras, StatusKind};

use super::error::HistoryError;
use super::rows::{EntryRow, TransactionRow, WithdrawalRow};

/// Length of the (created, tx) suffix of every withdrawal index key.
pub(super) const TIME_TX_LEN: usize = 24;

/// Length of the (currency, seq) suffix of an entry key after its account.
pub(super) const ENTRY_SUFFIX_LEN: usize = 16;

/// Length of a payout id in keys.
pub(super) const PAYOUT_ID_LEN: usize = 8;

pub(super) const WATERMARK_KEY: &[u8] = b"applied_lsn";

/// Present once the store was fed from a log with a gap (see ingest).
pub(super) const INCOMPLETE_KEY: &[u8] = b"incomplete";

/// The newest layout the store may hold (`format.rs`).
pub(super) const FORMAT_KEY: &[u8] = b"format";

/// The store's keyspaces, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Ks {
    Withdrawals,
    WByAccount,
    WByStatus,
    WByPayout,
    Entries,
    Transactions,
    Payouts,
    PByState,
    Meta,
}

impl Ks {
    pub const ALL: [Ks; 9] = [
        Ks::Withdrawals,
        Ks::WByAccount,
        Ks::WByStatus,
        Ks::WByPayout,
        Ks::Entries,
        Ks::Transactions,
        Ks::Payouts,
        Ks::PByState,
        Ks::Meta,
    ];

    fn name(self) -> &'static str {
        match self {
            Ks::Withdrawals => "withdrawals",
            Ks::WByAccount => "w_by_account",
            Ks::WByStatus => "w_by_status",
            Ks::WByPayout => "w_by_payout",
            Ks::Entries => "entries",
            Ks::Transactions => "transactions",
            Ks::Payouts => "payouts",
            Ks::PByState => "p_by_state",
            Ks::Meta => "meta",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Each keyspace's memtable: 32 MiB (fjall's default is 64): larger ones
/// mean fewer flushes and compactions (they cost the flush/compaction
/// worker about 40 % less CPU than 16 MiB on the withdrawal benchmark),
/// smaller ones less memory across the nine keyspaces.
const MEMTABLE_BYTES: u64 = 32 << 20;

/// Options of a keyspace made by this version (fjall keeps the options a
/// keyspace was made with). No block compression: the store is rebuildable
/// from the log, and compressing costs the flush and compaction CPU.
fn options() -> fjall::KeyspaceCreateOptions {
    fjall::KeyspaceCreateOptions::default()
        .max_memtable_size(MEMTABLE_BYTES)
        .data_block_compression_policy(fjall::config::CompressionPolicy::disabled())
        .manual_journal_persist(true)
}

/// The store's keyspaces, opened once, indexed by [`Ks`].
pub(super) struct Keyspaces(Vec<fjall::Keyspace>);

impl Keyspaces {
    pub fn open(db: &fjall::Database) -> Result<Self, HistoryError> {
        let open = |ks: Ks| db.keyspace(ks.name(), options);
        let all = Ks::ALL.into_iter().map(open).collect::<Result<_, _>>()?;
        Ok(Self(all))
    }

    pub fn get(&self, ks: Ks) -> &fjall::Keyspace {
        &self.0[ks.index()]
    }
}

// ---- keys ----

pub(super) fn tx_key(tx: TransactionId) -> [u8; 16] {
    ((u128::from(tx.account()) << 64) | u128::from(tx.sequence())).to_be_bytes()
}

pub(super) fn tx_from_key(bytes: &[u8]) -> Result<TransactionId, HistoryError> {
    let raw: [u8; 16] = bytes
        .try_into()
        .map_err(|_| corrupt("transaction id key"))?;
    let v = u128::from_be_bytes(raw);
    Ok(TransactionId::new((v >> 64) as AccountId, v as u64))
}

/// The (created, tx) suffix of a withdrawal index key.
pub(super) fn time_tx(created_at_ms: u64, tx: TransactionId) -> [u8; TIME_TX_LEN] {
    let mut out = [0u8; TIME_TX_LEN];
    out[..8].copy_from_slice(&created_at_ms.to_be_bytes());
    out[8..].copy_from_slice(&tx_key(tx));
    out
}

pub(super) fn account_prefix(account: AccountId) -> Vec<u8> {
    account.to_be_bytes().to_vec()
}

pub(super) fn status_prefix(status: StatusKind) -> Vec<u8> {
    vec![status_code::code(status)]
}

pub(super) fn payout_prefix(payout_id: u64) -> Vec<u8> {
    payout_id.to_be_bytes().to_vec()
}

pub(super) fn index_key(prefix: &[u8], created_at_ms: u64, tx: TransactionId) -> Vec<u8> {
    [prefix, &time_tx(created_at_ms, tx)].concat()
}

/// The transaction id at the end of a withdrawal index key.
pub(super) fn tx_of_index_key(key: &[u8]) -> Result<TransactionId, HistoryError> {
    let start = key
        .len()
        .checked_sub(16)
        .ok_or_else(|| corrupt("withdrawal index key"))?;
    tx_from_key(&key[start..])
}

pub(super) fn currency_bytes(currency: CurrencyCode) -> [u8; 8] {
    let mut out = [0u8; 8];
    let s = currency.as_str().as_bytes();
    out[..s.len()].copy_from_slice(s);
    out
}

pub(super) fn entry_key(account: AccountId, currency: CurrencyCode, seq: u64) -> Vec<u8> {
    [
        &account.to_be_bytes()[..],
        &currency_bytes(currency),
        &seq.to_be_bytes(),
    ]
    .concat()
}

/// The key of an entry's balance and event ([`entry_key`]); a key holding
/// changes of several events is its last one's.
pub(super) fn entry_row_key(e: &EntryRow) -> Vec<u8> {
    entry_key(e.account, e.currency, e.seq)
}

/// An entry's place among its account's, as cursors hold it: (currency,
/// seq) — its key after the account — then its part unless it is 0, so
/// byte order is (currency, seq, part) order.
pub(super) fn entry_place(e: &EntryRow) -> Vec<u8> {
    let mut place = entry_row_key(e).split_off(8);
    if e.part > 0 {
        place.push(e.part);
    }
    place
}

pub(super) fn payout_state_prefix(state: PayoutState) -> Vec<u8> {
    vec![payout_state_code::code(state)]
}

pub(super) fn payout_state_key(state: PayoutState, payout_id: u64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = payout_state_code::code(state);
    out[1..].copy_from_slice(&payout_id.to_be_bytes());
    out
}

// ---- values ----

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, HistoryError> {
    let mut bytes = Vec::with_capacity(VALUE_CAPACITY);
    encode_into(value, &mut bytes)?;
    Ok(bytes)
}

/// How values are decoded: bincode's standard configuration, with what
/// one value may claim capped. A damaged length (of a string, a map) would
/// otherwise be allocated before it is found short, and a claim of
/// petabytes aborts the process; capped, it is `Corrupt`. A value is at
/// most an entry key's changes of 64 events: well under the cap.
pub(super) const DECODING: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<VALUE_DECODE_MAX>,
> = bincode::config::standard().with_limit::<VALUE_DECODE_MAX>();

/// The most one stored value may claim when decoded: 16 MiB.
const VALUE_DECODE_MAX: usize = 16 << 20;

/// Room for most values at once: growing a buffer from empty reallocates
/// it three or four times per row.
pub(super) const VALUE_CAPACITY: usize = 96;

/// Appends `value`'s encoding to `bytes`.
pub(super) fn encode_into<T: Serialize>(
    value: &T,
    bytes: &mut Vec<u8>,
) -> Result<(), HistoryError> {
    bincode::serde::encode_into_std_write(value, bytes, bincode::config::standard())
        .map(drop)
        .map_err(|e| HistoryError::Encode(e.to_string()))
}

pub(super) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, HistoryError> {
    match bincode::serde::decode_from_slice(bytes, DECODING) {
        Ok((value, used)) if used == bytes.len() => Ok(value),
        _ => Err(corrupt(what)),
    }
}

/// A row with a part stored after its own encoding, only when present.
pub(super) trait Trailing: Serialize + DeserializeOwned {
    type Part: DeserializeOwned;
    /// Appends the trailing part's encoding (a `Part`'s), if the row has one.
    fn trailing_into(&self, bytes: &mut Vec<u8>) -> Result<(), HistoryError>;
    fn set_trailing(&mut self, part: Self::Part);
}

/// A row's value: its encoding, then its trailing part if it has one.
pub(super) fn encode_row<T: Trailing>(row: &T) -> Result<Vec<u8>, HistoryError> {
    let mut bytes = encode(row)?;
    row.trailing_into(&mut bytes)?;
    Ok(bytes)
}

/// A row from its value: exactly its encoding, or that and exactly one
/// trailing part.
pub(super) fn decode_row<T: Trailing>(bytes: &[u8], what: &'static str) -> Result<T, HistoryError> {
    match decode_row_prefix(bytes, what)? {
        (row, used) if used == bytes.len() => Ok(row),
        _ => Err(corrupt(what)),
    }
}

/// A row at the start of `bytes`, with its trailing part if anything
/// follows it; with the bytes it took (more may follow: an entry value's
/// next change).
pub(super) fn decode_row_prefix<T: Trailing>(
    bytes: &[u8],
    what: &'static str,
) -> Result<(T, usize), HistoryError> {
    let (mut row, mut used): (T, usize) =
        bincode::serde::decode_from_slice(bytes, DECODING).map_err(|_| corrupt(what))?;
    if used < bytes.len() {
        let (part, more) = bincode::serde::decode_from_slice(&bytes[used..], DECODING)
            .map_err(|_| corrupt(what))?;
        row.set_trailing(part);
        used += more;
    }
    Ok((row, used))
}

impl Trailing for WithdrawalRow {
    type Part = Extras;
    fn trailing_into(&self, bytes: &mut Vec<u8>) -> Result<(), HistoryError> {
        self.extras
            .encoding(self.currency)
            .map_or(Ok(()), |e| encode_into(&e, bytes))
    }
    fn set_trailing(&mut self, extras: Extras) {
        self.extras = KeptExtras::from_extras(self.currency, Some(extras));
    }
}

impl Trailing for TransactionRow {
    type Part = Metadata;
    fn trailing_into(&self, bytes: &mut Vec<u8>) -> Result<(), HistoryError> {
        self.metadata
            .as_deref()
            .map_or(Ok(()), |m| encode_into(m, bytes))
    }
    fn set_trailing(&mut self, metadata: Metadata) {
        self.metadata = metadata.boxed();
    }
}

impl Trailing for EntryRow {
    /// (part, metadata)
    type Part = (u8, Option<Metadata>);
    fn trailing_into(&self, bytes: &mut Vec<u8>) -> Result<(), HistoryError> {
        if self.part > 0 || self.metadata.is_some() {
            encode_into(&self.trailing(), bytes)?;
        }
        Ok(())
    }
    fn set_trailing(&mut self, (part, metadata): Self::Part) {
        self.part = part;
        self.metadata = metadata.and_then(Metadata::boxed);
    }
}

impl EntryRow {
    /// What follows the row in a value: (part, metadata).
    pub(super) fn trailing(&self) -> (u8, Option<&Metadata>) {
        (self.part, self.metadata.as_deref())
    }
}

pub(super) fn corrupt(what: &'static str) -> HistoryError {
    HistoryError::Corrupt { what }
}

/// A withdrawal status as a one-byte code, for keys and (as a serde `with`
/// module) for stored rows.
pub(super) mod status_code {
    use super::StatusKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn code(s: StatusKind) -> u8 {
        match s {
            StatusKind::Pending => 1,
            StatusKind::Processing => 2,
            StatusKind::Completed => 3,
            StatusKind::Failed => 4,
            StatusKind::Cancelled => 5,
            StatusKind::Returned => 6,
        }
    }

    pub fn from_code(c: u8) -> Option<StatusKind> {
        StatusKind::ALL.into_iter().find(|s| code(*s) == c)
    }

    pub fn serialize<S: Serializer>(s: &StatusKind, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_u8(code(*s))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<StatusKind, D::Error> {
        let c = u8::deserialize(de)?;
        from_code(c).ok_or_else(|| serde::de::Error::custom("unknown withdrawal status code"))
    }
}

/// A payout state as a one-byte code, for keys and stored rows.
pub(super) mod payout_state_code {
    use super::PayoutState;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn code(s: PayoutState) -> u8 {
        match s {
            PayoutState::Processing => 1,
            PayoutState::Completed => 2,
            PayoutState::Failed => 3,
            PayoutState::PartiallyFailed => 4,
            PayoutState::Mismatch => 5,
        }
    }

    pub fn serialize<S: Serializer>(s: &PayoutState, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_u8(code(*s))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<PayoutState, D::Error> {
        let c = u8::deserialize(de)?;
        PayoutState::ALL
            .into_iter()
            .find(|s| code(*s) == c)
            .ok_or_else(|| serde::de::Error::custom("unknown payout state code"))
    }
}
