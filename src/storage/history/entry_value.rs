//! The value of an entry key: the changes one balance went through in a
//! run of events (one event, or up to [`ENTRY_EVENTS_PER_KEY_MAX`] that
//! reached one ingest together; see `ingest`), in (seq, part) order, keyed
//! by the last one's seq.
//!
//! A lone change is stored as every entry was before changes shared a key:
//! its row, then its trailing only if it has one. Of several, the first is
//! stored in full with its trailing; each one after it as [`COMPACT`] then
//! only what the change before it in the value does not say ([`Compact`]):
//! nothing of its event when it shares that change's (a fee locked or
//! burned with its amount), its own event as differences otherwise (seq and
//! time after, the transaction's sequence, its account only when another's,
//! as a fee account's credits are), and its balance after only when that is
//! not the change before's moved by its own amount (it always is, unless
//! the store lacks changes in between). About 6 bytes for a fee's lock and
//! 16 for a fee account's credit, instead of 25 and 60: every byte is paid
//! again by the store's journal, memtable, flushes and compactions.
//!
//! Values written before still read: every change in full, and a change of
//! the same event as the full one before it as [`LATER_PART`] then
//! [`LaterPart`].

use std::borrow::Borrow;

use serde::{Deserialize, Serialize};

use crate::domain::details::Metadata;
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::Units;

use super::error::HistoryError;
use super::rows::{EntryKind, EntryRow};
use super::schema::{
    corrupt, decode_row_prefix, encode_into, encode_row, DECODING, VALUE_CAPACITY,
};

/// Most events whose changes to one balance one entry key holds: enough
/// that an account every event touches (a fee account) costs a key per
/// many events, few enough that reading one entry decodes a few KiB.
pub(super) const ENTRY_EVENTS_PER_KEY_MAX: usize = 64;

/// Opens a change stored as [`Compact`]. A full row never starts with it:
/// a row's first field, its account, is a u64 varint, and 254 opens a
/// u128.
const COMPACT: u8 = 0xFE;

/// Opened, in values written before [`COMPACT`], a change stored as
/// [`LaterPart`]. No varint starts with 255.
const LATER_PART: u8 = 0xFF;

/// Room for a compact change, besides the first's ([`VALUE_CAPACITY`]).
const COMPACT_CAPACITY: usize = 24;

/// The value of one balance's changes `parts`, in increasing (seq, part).
pub(super) fn encode_entry<E: Borrow<EntryRow>>(parts: &[E]) -> Result<Vec<u8>, HistoryError> {
    let place = |e: &E| (e.borrow().seq, e.borrow().part);
    let increasing = parts
        .windows(2)
        .all(|pair| place(&pair[0]) < place(&pair[1]));
    let [first, later @ ..] = parts else {
        return Err(empty_or_unordered());
    };
    if !increasing {
        return Err(empty_or_unordered());
    }
    let first = first.borrow();
    if later.is_empty() {
        return encode_row(first);
    }
    let mut bytes = Vec::with_capacity(VALUE_CAPACITY + COMPACT_CAPACITY * later.len());
    encode_full(first, &mut bytes)?;
    let mut before = first;
    for change in later.iter().map(Borrow::borrow) {
        match Compact::of(change, before) {
            Some(compact) => {
                bytes.push(COMPACT);
                encode_into(&compact, &mut bytes)?;
            }
            None => encode_full(change, &mut bytes)?,
        }
        before = change;
    }
    Ok(bytes)
}

/// A change as a row with its trailing, always: another may follow it.
fn encode_full(e: &EntryRow, bytes: &mut Vec<u8>) -> Result<(), HistoryError> {
    encode_into(e, bytes)?;
    encode_into(&e.trailing(), bytes)
}

fn empty_or_unordered() -> HistoryError {
    HistoryError::Encode("an entry's changes must be one or more, in increasing (seq, part)".into())
}

/// The changes an entry key's value holds ([`encode_entry`]), in (seq,
/// part) order.
pub(super) fn decode_entry(bytes: &[u8]) -> Result<Vec<EntryRow>, HistoryError> {
    let mut parts: Vec<EntryRow> = Vec::with_capacity(1);
    // The last change stored in full: a `LaterPart` completes itself from it.
    let mut full: Option<usize> = None;
    let mut rest = bytes;
    while !rest.is_empty() || parts.is_empty() {
        let row = match (rest.split_first(), parts.last()) {
            (Some((&COMPACT, after)), Some(before)) => {
                let (compact, used): (Compact<Option<Metadata>>, usize) =
                    bincode::serde::decode_from_slice(after, DECODING)
                        .map_err(|_| corrupt("entry"))?;
                rest = &after[used..];
                compact.into_row(before).ok_or_else(|| corrupt("entry"))?
            }
            (Some((&LATER_PART, after)), _) => {
                let first = full
                    .and_then(|i| parts.get(i))
                    .ok_or_else(|| corrupt("entry"))?;
                let (later, used): (LaterPart, usize) =
                    bincode::serde::decode_from_slice(after, DECODING)
                        .map_err(|_| corrupt("entry"))?;
                rest = &after[used..];
                later.into_row(first)
            }
            _ => {
                let (row, used) = decode_row_prefix::<EntryRow>(rest, "entry")?;
                rest = &rest[used..];
                full = Some(parts.len());
                row
            }
        };
        if parts
            .last()
            .is_some_and(|before| (before.seq, before.part) >= (row.seq, row.part))
        {
            return Err(corrupt("entry changes out of order"));
        }
        parts.push(row);
    }
    Ok(parts)
}

/// A change after another of its value (`before`), as what that one does
/// not say. `M` is its new event's metadata: borrowed to encode, owned
/// when decoded.
#[derive(Serialize, Deserialize)]
struct Compact<M> {
    part: u8,
    kind: EntryKind,
    amount: Units,
    /// `None`: `before`'s event (seq, transaction, time, metadata).
    event: Option<NextEvent<M>>,
    /// (available, locked) after it; `None`: `before`'s moved by this
    /// change ([`EntryKind::moved`]).
    balance: Option<(Units, Units)>,
}

/// A change's event, as differences from the change before it.
#[derive(Serialize, Deserialize)]
struct NextEvent<M> {
    seq_after: u64,
    /// The transaction's account; `None`: the entry's own.
    tx_account: Option<AccountId>,
    tx_sequence: u64,
    at_after_ms: i64,
    metadata: M,
}

impl<'a> Compact<Option<&'a Metadata>> {
    /// `e` stored after `before`; `None` when it cannot be (another
    /// balance's, or differences that do not fit): it is stored in full.
    fn of(e: &'a EntryRow, before: &EntryRow) -> Option<Self> {
        if (e.account, e.currency) != (before.account, before.currency) {
            return None;
        }
        let same_event = (e.seq, e.tx, e.at_ms, &e.metadata)
            == (before.seq, before.tx, before.at_ms, &before.metadata);
        let event = match same_event {
            true => None,
            false => Some(NextEvent {
                seq_after: e.seq.checked_sub(before.seq)?,
                tx_account: (e.tx.account() != e.account).then_some(e.tx.account()),
                tx_sequence: e.tx.sequence(),
                at_after_ms: i64::try_from(i128::from(e.at_ms) - i128::from(before.at_ms)).ok()?,
                metadata: e.metadata.as_deref(),
            }),
        };
        let after = (e.available_after, e.locked_after);
        let follows = e.kind.moved(balance_of(before), e.amount) == Some(after);
        Some(Self {
            part: e.part,
            kind: e.kind,
            amount: e.amount,
            event,
            balance: (!follows).then_some(after),
        })
    }
}

impl Compact<Option<Metadata>> {
    /// The change it stores, completed from `before`; `None` when what it
    /// says does not add up (damaged bytes).
    fn into_row(self, before: &EntryRow) -> Option<EntryRow> {
        let (seq, tx, at_ms, metadata) = match self.event {
            None => (before.seq, before.tx, before.at_ms, before.metadata.clone()),
            Some(event) => (
                before.seq.checked_add(event.seq_after)?,
                TransactionId::new(
                    event.tx_account.unwrap_or(before.account),
                    event.tx_sequence,
                ),
                u64::try_from(i128::from(before.at_ms) + i128::from(event.at_after_ms)).ok()?,
                event.metadata.and_then(Metadata::boxed),
            ),
        };
        let (available_after, locked_after) = match self.balance {
            Some(after) => after,
            None => self.kind.moved(balance_of(before), self.amount)?,
        };
        Some(EntryRow {
            account: before.account,
            currency: before.currency,
            seq,
            tx,
            kind: self.kind,
            amount: self.amount,
            at_ms,
            available_after,
            locked_after,
            part: self.part,
            metadata,
        })
    }
}

fn balance_of(e: &EntryRow) -> (Units, Units) {
    (e.available_after, e.locked_after)
}

/// What a later change of an event held, in values written before
/// [`Compact`], that the event's first change, stored in full before it,
/// does not.
#[derive(Serialize, Deserialize)]
struct LaterPart {
    part: u8,
    kind: EntryKind,
    amount: Units,
    available_after: Units,
    locked_after: Units,
}

impl LaterPart {
    /// The change as a row: the rest is its event's first change's.
    fn into_row(self, first: &EntryRow) -> EntryRow {
        EntryRow {
            part: self.part,
            kind: self.kind,
            amount: self.amount,
            available_after: self.available_after,
            locked_after: self.locked_after,
            ..first.clone()
        }
    }
}
