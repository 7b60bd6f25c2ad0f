//! Framing of one log record: `[len u32][crc32 u32][lsn u64][payload]`, all
//! little-endian, and the hash that chains each record to the one before.
//!
//! The payload is, since on-disk format v6, the byte [`CHAINED_RECORD_TAG`],
//! the 32-byte SHA-256 of the previous record ([`hash`] of its whole framed
//! bytes, header included; zeros before LSN 1), the event's time
//! ([`UnixMs`], a bincode varint `u64`), then the bincode-encoded [`Event`].
//! Format v4 and v5 wrote the byte [`TIMED_RECORD_TAG`], the time and the
//! event; before v4 it was the event alone (its time is then
//! [`UnixMs::UNKNOWN`]). All three are read: an event's encoding starts
//! with its variant index, a varint `u32`, which never starts with `0xFE`
//! or `0xFF`. The time costs 10 bytes per record (≈ 60 before), the chain
//! 33 more.
//!
//! Both directions check the same limits, so a record this code writes is
//! always one it can read back, and a damaged length can never make the
//! reader allocate or wait for more than [`RECORD_BYTES_MAX`].
//! [`find_intact_after_torn`] looks for what proves a record that looks
//! torn is damage instead (the evidence the torn-tail rule in `scan.rs`
//! asks for).

use bincode::config::{Configuration, Limit};

use crate::domain::event::{Event, Stamped};
use crate::domain::time::UnixMs;

use super::WalError;

/// The first payload byte of a record with a time and no chain (formats v4
/// and v5).
pub const TIMED_RECORD_TAG: u8 = 0xFF;

/// The first payload byte of a record chained to its predecessor (format
/// v6 on); the predecessor's hash follows it.
pub const CHAINED_RECORD_TAG: u8 = 0xFE;

/// A SHA-256 hash: what chains a record to the one before.
pub type Hash = [u8; 32];

/// What LSN 1 records as its predecessor.
pub const GENESIS: Hash = [0; 32];

/// The hash a record's successor records: SHA-256 of its whole framed
/// bytes (header and payload, so its LSN and checksum are covered too).
pub fn hash(record: &[u8]) -> Hash {
    use sha2::Digest;
    sha2::Sha256::digest(record).into()
}

/// The predecessor's hash the record at the start of `bytes` carries, if
/// it is a chained record (format v6 on) long enough to carry one.
pub fn predecessor(bytes: &[u8]) -> Option<Hash> {
    let payload = bytes.get(HEADER_BYTES..)?;
    match payload.split_first() {
        Some((&CHAINED_RECORD_TAG, rest)) => rest.get(..32)?.try_into().ok(),
        _ => None,
    }
}

/// Largest record, header included. Events are small (≈ 60 B); the limit is
/// there so that a corrupt length is recognised as corrupt.
pub const RECORD_BYTES_MAX: usize = 1024 * 1024;

/// `len` (4) + `crc` (4) + `lsn` (8).
pub const HEADER_BYTES: usize = 16;

/// Largest payload a record may carry.
pub const PAYLOAD_BYTES_MAX: usize = RECORD_BYTES_MAX - HEADER_BYTES;

/// One record as read back: an event, its time and the LSN it was logged
/// under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalEntry {
    pub lsn: u64,
    /// [`UnixMs::UNKNOWN`] for a record written before format v4.
    pub at: UnixMs,
    pub event: Event,
}

/// What the bytes at a position hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, valid record and the number of bytes it occupies.
    Complete { entry: WalEntry, len: usize },
    /// Fewer bytes than the header, or than the header's length announces.
    Torn,
    /// A whole record that fails a check.
    Corrupt { reason: String },
}

/// The decode limit stops bincode from allocating whatever a (checksummed
/// but hostile) length prefix inside the payload claims.
fn bincode_config(
) -> Configuration<bincode::config::LittleEndian, bincode::config::Varint, Limit<PAYLOAD_BYTES_MAX>>
{
    bincode::config::standard().with_limit::<PAYLOAD_BYTES_MAX>()
}

fn checksum(lsn: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&lsn.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends one record for `stamped` at `lsn`, chained to the record before
/// it by that record's hash `previous` (format v6), to `buf` and returns
/// its size. What the writer writes.
///
/// On error `buf` is left exactly as it was, so a caller building a batch
/// can refuse one event without corrupting the records before it.
pub fn encode_chained_into(
    buf: &mut Vec<u8>,
    lsn: u64,
    previous: &Hash,
    stamped: &Stamped,
) -> Result<usize, WalError> {
    frame(buf, lsn, |buf| {
        buf.push(CHAINED_RECORD_TAG);
        buf.extend_from_slice(previous);
        bincode::serde::encode_into_std_write(stamped.at.as_millis(), buf, bincode_config())?;
        bincode::serde::encode_into_std_write(&stamped.event, buf, bincode_config())
    })
}

/// Appends one record of formats v4 and v5 (a time, no chain) for
/// `stamped` at `lsn` to `buf` and returns its size: what older builds
/// wrote, which this one never does; kept so that tests can make old logs.
/// On error `buf` is left as it was.
pub fn encode_into(buf: &mut Vec<u8>, lsn: u64, stamped: &Stamped) -> Result<usize, WalError> {
    frame(buf, lsn, |buf| {
        buf.push(TIMED_RECORD_TAG);
        bincode::serde::encode_into_std_write(stamped.at.as_millis(), buf, bincode_config())?;
        bincode::serde::encode_into_std_write(&stamped.event, buf, bincode_config())
    })
}

/// Appends one record of the format before v4 (no time) for `event`: what
/// older builds wrote, which this one never does; kept so that tests can
/// make old logs.
pub fn encode_v1_into(buf: &mut Vec<u8>, lsn: u64, event: &Event) -> Result<usize, WalError> {
    frame(buf, lsn, |buf| {
        bincode::serde::encode_into_std_write(event, buf, bincode_config())
    })
}

/// Appends a record at `lsn` whose payload `payload` writes, and returns
/// its size; on error leaves `buf` as it was.
fn frame(
    buf: &mut Vec<u8>,
    lsn: u64,
    payload: impl FnOnce(&mut Vec<u8>) -> Result<usize, bincode::error::EncodeError>,
) -> Result<usize, WalError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_BYTES]);
    if let Err(error) = payload(buf) {
        buf.truncate(start);
        return Err(WalError::Encode {
            reason: error.to_string(),
        });
    }
    let payload_len = buf.len() - start - HEADER_BYTES;
    if payload_len > PAYLOAD_BYTES_MAX {
        buf.truncate(start);
        return Err(WalError::TooLarge {
            what: "record",
            size: (payload_len + HEADER_BYTES) as u64,
            max: RECORD_BYTES_MAX as u64,
        });
    }
    let crc = checksum(lsn, &buf[start + HEADER_BYTES..]);
    let header = &mut buf[start..start + HEADER_BYTES];
    // Cannot truncate: payload_len <= PAYLOAD_BYTES_MAX < u32::MAX.
    header[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    header[8..16].copy_from_slice(&lsn.to_le_bytes());
    Ok(HEADER_BYTES + payload_len)
}

/// Reads a whole batch as the writer wrote it (what a replica is shipped):
/// records with consecutive LSNs from `first_lsn`, nothing torn, nothing
/// after the last. The error says which record fails and why.
pub fn decode_batch(bytes: &[u8], first_lsn: u64) -> Result<Vec<WalEntry>, String> {
    let mut entries = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let lsn = first_lsn + entries.len() as u64;
        match decode(&bytes[offset..], lsn) {
            Decoded::Complete { entry, len } => {
                entries.push(entry);
                offset += len;
            }
            Decoded::Torn => return Err(format!("record {lsn} is cut short at byte {offset}")),
            Decoded::Corrupt { reason } => {
                return Err(format!("record {lsn} at byte {offset}: {reason}"))
            }
        }
    }
    Ok(entries)
}

/// Reads the record at the start of `bytes`, which must carry `expected_lsn`.
pub fn decode(bytes: &[u8], expected_lsn: u64) -> Decoded {
    let Some(header) = bytes.get(..HEADER_BYTES) else {
        return Decoded::Torn;
    };
    let field = |range: std::ops::Range<usize>| {
        let mut out = [0u8; 8];
        out[..range.len()].copy_from_slice(&header[range]);
        u64::from_le_bytes(out)
    };
    let payload_len = field(0..4) as usize;
    let crc = field(4..8) as u32;
    let lsn = field(8..16);
    if payload_len == 0 || payload_len > PAYLOAD_BYTES_MAX {
        return Decoded::Corrupt {
            reason: format!("record length {payload_len} outside 1..={PAYLOAD_BYTES_MAX}"),
        };
    }
    let Some(payload) = bytes.get(HEADER_BYTES..HEADER_BYTES + payload_len) else {
        return Decoded::Torn;
    };
    if checksum(lsn, payload) != crc {
        return Decoded::Corrupt {
            reason: "checksum mismatch".to_owned(),
        };
    }
    if lsn != expected_lsn {
        return Decoded::Corrupt {
            reason: format!("LSN {lsn} where {expected_lsn} was expected"),
        };
    }
    match decode_payload(payload) {
        Ok((at, event, used)) if used == payload_len => Decoded::Complete {
            entry: WalEntry { lsn, at, event },
            len: HEADER_BYTES + payload_len,
        },
        Ok((_, _, used)) => Decoded::Corrupt {
            reason: format!("payload has {} bytes after its event", payload_len - used),
        },
        Err(error) => Decoded::Corrupt {
            reason: format!("payload does not decode: {error}"),
        },
    }
}

/// A payload's time (unknown before format v4), event, and bytes used.
/// The predecessor's hash of a chained payload is skipped: checking the
/// chain is [`super::chain`]'s business.
fn decode_payload(payload: &[u8]) -> Result<(UnixMs, Event, usize), bincode::error::DecodeError> {
    let time_at = match payload.first() {
        Some(&CHAINED_RECORD_TAG) => Some(1 + GENESIS.len()),
        Some(&TIMED_RECORD_TAG) => Some(1),
        _ => None,
    };
    let (at, start) = match time_at {
        Some(time_at) => {
            let rest = payload.get(time_at..).ok_or_else(|| {
                bincode::error::DecodeError::UnexpectedEnd {
                    additional: time_at.saturating_sub(payload.len()),
                }
            })?;
            let (ms, used) = match fast::time(rest) {
                Some(decoded) => decoded,
                None => bincode::serde::decode_from_slice::<u64, _>(rest, bincode_config())?,
            };
            (UnixMs::from_millis(ms), time_at + used)
        }
        None => (UnixMs::UNKNOWN, 0),
    };
    let rest = &payload[start..];
    let (event, used) = match fast::decode(rest) {
        Some(decoded) => decoded,
        None => bincode::serde::decode_from_slice::<Event, _>(rest, bincode_config())?,
    };
    Ok((at, event, start + used))
}

/// Smallest record: a header and a one-byte payload.
pub const RECORD_BYTES_MIN: usize = HEADER_BYTES + 1;

/// Something in `bytes` — which start with a record that looks torn (it
/// announces more bytes than there are) and which must run to the end of
/// the segment — proving it is no torn write but damage: a checksum-valid
/// record carrying `expected_lsn` or a later LSN. Returns the offset in
/// `bytes` and LSN of the first one found.
///
/// Two shapes are looked for:
/// - at offset 0, the record itself with a shorter length than its damaged
///   length field announces (a whole record whose length was hit);
/// - at any later offset, a successor: a record whose LSN lies between
///   `expected_lsn` and the most records that fit before it (each is at
///   least [`RECORD_BYTES_MIN`]) — that range is checked first, so only the
///   rare candidate that passes it costs a checksum.
///
/// Cost: one pass over `bytes` plus a checksum per candidate. The caller
/// only asks when [`decode`] said `Torn`, which means `bytes` is shorter
/// than the announced record, so at most [`RECORD_BYTES_MAX`].
pub fn find_intact_after_torn(bytes: &[u8], expected_lsn: u64) -> Option<(usize, u64)> {
    if let Some(lsn) = shorter_valid_length(bytes, expected_lsn) {
        return Some((0, lsn));
    }
    let u64_at = |at: usize| {
        let mut out = [0u8; 8];
        out.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(out)
    };
    let last_start = bytes.len().checked_sub(RECORD_BYTES_MIN)?;
    (RECORD_BYTES_MIN..=last_start).find_map(|at| {
        let lsn = u64_at(at + 8);
        let most = expected_lsn.saturating_add((at / RECORD_BYTES_MIN) as u64);
        if lsn < expected_lsn || lsn > most {
            return None;
        }
        let len = (u64_at(at) & u64::from(u32::MAX)) as usize;
        let crc = (u64_at(at + 4) & u64::from(u32::MAX)) as u32;
        if len == 0 || len > PAYLOAD_BYTES_MAX {
            return None;
        }
        let payload = bytes.get(at + HEADER_BYTES..at + HEADER_BYTES + len)?;
        (checksum(lsn, payload) == crc).then_some((at, lsn))
    })
}

/// The LSN of the record at the start of `bytes` if its checksum holds for
/// some payload shorter than all the bytes there are: the record is whole
/// and its length field is what was damaged.
fn shorter_valid_length(bytes: &[u8], expected_lsn: u64) -> Option<u64> {
    let header = bytes.get(..HEADER_BYTES)?;
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&header[4..8]);
    let crc = u32::from_le_bytes(crc_bytes);
    let mut lsn_bytes = [0u8; 8];
    lsn_bytes.copy_from_slice(&header[8..16]);
    let lsn = u64::from_le_bytes(lsn_bytes);
    if lsn != expected_lsn {
        return None;
    }
    let payload = &bytes[HEADER_BYTES..];
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&lsn_bytes);
    for &byte in payload.iter().take(PAYLOAD_BYTES_MAX) {
        hasher.update(&[byte]);
        if hasher.clone().finalize() == crc {
            return Some(lsn);
        }
    }
    None
}

/// Decoding the events replay meets all the time, without serde: a record
/// is decoded once per replay and serde's generic path was most of the
/// cost of reading the log.
///
/// It reads bincode 2's `standard()` format (what `encode_into` writes)
/// directly: varint integers (a byte up to 250 is the value; 251, 252, 253
/// and 254 announce a `u16`, `u32`, `u64` or `u128` in little-endian;
/// signed ones zigzag-encoded), `u8` as one byte, enum variants as a
/// varint `u32` index, `Option` as a 0/1 byte, strings as a varint length
/// and UTF-8 bytes, arrays and structs as their fields in order.
///
/// It only ever answers for a payload it finds plainly valid, and then with
/// exactly what bincode would decode; for anything else (payout records,
/// an unknown variant, a bad marker, a short payload, a value the types'
/// own constructors would not make) it answers `None` and bincode decides,
/// so what is accepted and every error message stay bincode's. The tests
/// compare the two on every variant and on damaged payloads.
mod fast {
    use crate::domain::event::Event;
    use crate::domain::ids::{IdempotencyKey, TransactionId};
    use crate::domain::money::{Currency, CurrencyCode, Units, CURRENCY_CODE_LEN_MAX};

    const U16_MARKER: u8 = 251;
    const U32_MARKER: u8 = 252;
    const U64_MARKER: u8 = 253;
    const U128_MARKER: u8 = 254;

    /// The time (a varint `u64`) at the start of `payload` and the bytes
    /// it used.
    pub(super) fn time(payload: &[u8]) -> Option<(u64, usize)> {
        let mut input = Input { bytes: payload };
        let ms = input.u64()?;
        Some((ms, payload.len() - input.bytes.len()))
    }

    /// The event at the start of `payload` and the bytes it used.
    pub(super) fn decode(payload: &[u8]) -> Option<(Event, usize)> {
        let mut input = Input { bytes: payload };
        let event = match input.varint(U32_MARKER)? {
            0 => Event::Deposited {
                tx: input.tx()?,
                currency: input.currency()?,
                amount: input.units()?,
                key: input.key()?,
                metadata: None,
            },
            1 => Event::WithdrawalRequested {
                tx: input.tx()?,
                currency: input.currency()?,
                amount: input.units()?,
                key: input.key()?,
                details: None,
            },
            2 => Event::WithdrawalCompleted {
                tx: input.tx()?,
                paid: None,
                fee: None,
            },
            3 => Event::WithdrawalFailed {
                tx: input.tx()?,
                reason: input.string()?.to_owned(),
            },
            4 => Event::WithdrawalCancelled { tx: input.tx()? },
            5 => Event::Transferred {
                tx: input.tx()?,
                to: input.u64()?,
                currency: input.currency()?,
                amount: input.units()?,
                key: input.key()?,
                metadata: None,
            },
            6 => Event::WithdrawalClaimed {
                tx: input.tx()?,
                payout_id: input.u64()?,
            },
            7 => Event::WithdrawalReleased { tx: input.tx()? },
            8 => Event::WithdrawalReturned {
                tx: input.tx()?,
                reason: input.string()?.to_owned(),
            },
            // Payout records are rare: serde's path is fine for them.
            _ => return None,
        };
        Some((event, payload.len() - input.bytes.len()))
    }

    /// What is left of the payload.
    struct Input<'a> {
        bytes: &'a [u8],
    }

    impl<'a> Input<'a> {
        fn take(&mut self, count: usize) -> Option<&'a [u8]> {
            let (taken, rest) = self.bytes.split_at_checked(count)?;
            self.bytes = rest;
            Some(taken)
        }

        fn byte(&mut self) -> Option<u8> {
            Some(self.take(1)?[0])
        }

        fn le<const N: usize>(&mut self) -> Option<[u8; N]> {
            self.take(N)?.try_into().ok()
        }

        /// An unsigned varint whose type allows markers up to `widest`.
        fn varint(&mut self, widest: u8) -> Option<u128> {
            let marker = self.byte()?;
            if marker > widest {
                return None;
            }
            Some(match marker {
                U16_MARKER => u16::from_le_bytes(self.le()?).into(),
                U32_MARKER => u32::from_le_bytes(self.le()?).into(),
                U64_MARKER => u64::from_le_bytes(self.le()?).into(),
                U128_MARKER => u128::from_le_bytes(self.le()?),
                small => small.into(),
            })
        }

        fn u64(&mut self) -> Option<u64> {
            // Cannot truncate: markers above `U64_MARKER` were refused.
            self.varint(U64_MARKER).map(|value| value as u64)
        }

        fn units(&mut self) -> Option<Units> {
            let zigzag = self.varint(U128_MARKER)?;
            let half = (zigzag >> 1) as Units;
            Some(if zigzag & 1 == 0 { half } else { !half })
        }

        fn tx(&mut self) -> Option<TransactionId> {
            let id = self.varint(U128_MARKER)?;
            Some(TransactionId::new((id >> 64) as u64, id as u64))
        }

        fn currency(&mut self) -> Option<Currency> {
            let inline: [u8; CURRENCY_CODE_LEN_MAX] = self.le()?;
            let decimals = self.byte()?;
            // `CurrencyCode::new` stores the code's bytes, then zeros: only
            // bytes of that shape make the same code.
            let len = inline.iter().position(|&b| b == 0).unwrap_or(inline.len());
            if inline[len..].iter().any(|&b| b != 0) {
                return None;
            }
            let code = CurrencyCode::new(std::str::from_utf8(&inline[..len]).ok()?).ok()?;
            Some(Currency { code, decimals })
        }

        fn string(&mut self) -> Option<&'a str> {
            let len = usize::try_from(self.u64()?).ok()?;
            std::str::from_utf8(self.take(len)?).ok()
        }

        /// `Some(None)` for no key; `None` when in doubt.
        fn key(&mut self) -> Option<Option<IdempotencyKey>> {
            match self.byte()? {
                0 => Some(None),
                1 => IdempotencyKey::new(self.string()?).ok().map(Some),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::ids::{IdempotencyKey, TransactionId};
    use crate::domain::money::{Currency, CurrencyCode, Units};

    /// The time `stamped(n)` carries.
    pub(crate) fn at(n: u64) -> UnixMs {
        UnixMs::from_millis(1_767_225_600_000 + n * 1_000)
    }

    /// `event(n)` stamped `at(n)`, shared by the other WAL tests.
    pub(crate) fn stamped(n: u64) -> Stamped {
        Stamped {
            at: at(n),
            event: event(n),
        }
    }

    /// A shipped batch reads back whole; cut, flipped, or read from the
    /// wrong LSN it is refused, naming the record.
    #[test]
    fn a_batch_decodes_whole_or_not_at_all() {
        let mut batch = Vec::new();
        for lsn in 5..=7 {
            encode_into(&mut batch, lsn, &stamped(lsn)).unwrap();
        }
        let entries = decode_batch(&batch, 5).unwrap();
        let read: Vec<_> = entries
            .iter()
            .map(|e| (e.lsn, e.at, e.event.clone()))
            .collect();
        let want: Vec<_> = (5..=7).map(|n| (n, at(n), event(n))).collect();
        assert_eq!(read, want);
        assert_eq!(decode_batch(&[], 1).unwrap(), Vec::new());
        let cut = decode_batch(&batch[..batch.len() - 1], 5).unwrap_err();
        assert!(
            cut.contains("record 7") && cut.contains("cut short"),
            "{cut}"
        );
        let mut flipped = batch.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x10;
        assert!(decode_batch(&flipped, 5).unwrap_err().contains("record 7"));
        assert!(decode_batch(&batch, 4).unwrap_err().contains("record 4"));
    }

    /// A varied event for `n`, shared by the other WAL tests.
    pub(crate) fn event(n: u64) -> Event {
        let tx = TransactionId::new(n % 7 + 1, n);
        match n % 3 {
            0 => Event::Deposited {
                tx,
                currency: Currency {
                    code: CurrencyCode::new("USD").unwrap(),
                    decimals: 2,
                },
                amount: i128::from(n) * 1_000_000_007,
                key: Some(IdempotencyKey::new(&format!("key-{n}")).unwrap()),
                metadata: None,
            },
            1 => Event::WithdrawalFailed {
                tx,
                reason: format!("bank said no to {n}"),
            },
            _ => Event::WithdrawalCompleted {
                tx,
                fee: None,
                paid: None,
            },
        }
    }

    fn encoded(lsn: u64, event: &Event) -> Vec<u8> {
        let mut buf = Vec::new();
        let stamped = Stamped {
            at: at(lsn),
            event: event.clone(),
        };
        encode_into(&mut buf, lsn, &stamped).unwrap();
        buf
    }

    #[test]
    fn round_trip_preserves_lsn_and_event() {
        let mut buf = Vec::new();
        for lsn in 1..=9 {
            encode_into(&mut buf, lsn, &stamped(lsn)).unwrap();
        }
        let mut offset = 0;
        for lsn in 1..=9 {
            match decode(&buf[offset..], lsn) {
                Decoded::Complete { entry, len } => {
                    assert_eq!(
                        entry,
                        WalEntry {
                            lsn,
                            at: at(lsn),
                            event: event(lsn)
                        }
                    );
                    offset += len;
                }
                other => panic!("record {lsn}: {other:?}"),
            }
        }
        assert_eq!(offset, buf.len());
    }

    #[test]
    fn oversized_event_is_refused_and_leaves_the_buffer_unchanged() {
        let mut buf = encoded(1, &event(1));
        let before = buf.clone();
        let huge = Event::WithdrawalFailed {
            tx: TransactionId::new(1, 1),
            reason: "x".repeat(RECORD_BYTES_MAX),
        };
        let huge = Stamped {
            at: at(2),
            event: huge,
        };
        let err = encode_into(&mut buf, 2, &huge).unwrap_err();
        assert!(
            matches!(err, WalError::TooLarge { what: "record", .. }),
            "{err}"
        );
        assert_eq!(buf, before);
    }

    #[test]
    fn short_bytes_are_torn() {
        let buf = encoded(5, &event(5));
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut], 5), Decoded::Torn, "cut at {cut}");
        }
    }

    #[test]
    fn damaged_records_are_corrupt() {
        let good = encoded(5, &event(5));
        let corrupt = |bytes: &[u8], lsn| matches!(decode(bytes, lsn), Decoded::Corrupt { .. });
        assert!(corrupt(&good, 6), "wrong LSN");
        for at in 4..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            assert!(corrupt(&bad, 5), "flipped byte {at}");
        }
        let mut too_long = good.clone();
        too_long[0..4].copy_from_slice(&(PAYLOAD_BYTES_MAX as u32 + 1).to_le_bytes());
        assert!(corrupt(&too_long, 5), "length above the limit");
        assert!(corrupt(&[0; HEADER_BYTES], 0), "zero length");
    }

    /// Events of every variant, with the integers at the varint markers'
    /// edges and strings the constructors refuse.
    fn events_for_the_fast_decoder() -> Vec<Event> {
        let code = |c| CurrencyCode::new(c).unwrap();
        let currencies =
            [("USD", 2), ("A", 0), ("ABCDEFGH", 18), ("BTC", 255)].map(|(c, decimals)| Currency {
                code: code(c),
                decimals,
            });
        let numbers: [u64; 9] = [
            0,
            1,
            250,
            251,
            65_535,
            65_536,
            u32::MAX as u64,
            1 << 40,
            u64::MAX,
        ];
        let amounts: [Units; 9] = [
            0,
            1,
            -1,
            125,
            -126,
            40_000,
            -(1 << 70),
            Units::MAX,
            Units::MIN,
        ];
        let keys = [
            None,
            Some(IdempotencyKey::new("k").unwrap()),
            Some(IdempotencyKey::new("ключ-é").unwrap()),
            Some(IdempotencyKey::new(&"x".repeat(128)).unwrap()),
        ];
        let mut events = Vec::new();
        for (i, &n) in numbers.iter().enumerate() {
            let tx = TransactionId::new(n, numbers[(i + 3) % numbers.len()]);
            let currency = currencies[i % currencies.len()];
            let amount = amounts[i];
            let key = keys[i % keys.len()].clone();
            let reason = ["", "bank said no", "ünïcödé ✓", &"r".repeat(300)][i % 4].to_owned();
            events.extend([
                Event::Deposited {
                    tx,
                    currency,
                    amount,
                    key: key.clone(),
                    metadata: None,
                },
                Event::WithdrawalRequested {
                    tx,
                    currency,
                    amount,
                    key: key.clone(),
                    details: None,
                },
                Event::WithdrawalCompleted {
                    tx,
                    fee: None,
                    paid: None,
                },
                Event::WithdrawalFailed {
                    tx,
                    reason: reason.clone(),
                },
                Event::WithdrawalCancelled { tx },
                Event::Transferred {
                    tx,
                    to: n,
                    currency,
                    amount,
                    key,
                    metadata: None,
                },
                Event::WithdrawalClaimed { tx, payout_id: n },
                Event::WithdrawalReleased { tx },
                Event::WithdrawalReturned { tx, reason },
                Event::PayoutSubmitted {
                    payout_id: n,
                    currency,
                    items: vec![(tx, amount)],
                },
            ]);
        }
        events.extend(events_with_new_parts(currencies[0], currencies[1]));
        events
    }

    /// One event of each encoding format v7 added (a fee, a destination,
    /// metadata, an expiry, a partial payment; freezes and tiers), small so
    /// that the byte-by-byte damage below stays quick.
    pub(crate) fn events_with_new_parts(currency: Currency, other: Currency) -> Vec<Event> {
        use crate::domain::details::{Destination, Fee, FeeCollected, Metadata, WithdrawalDetails};
        use crate::domain::policy::{Freeze, FreezeScope, Tier};
        let tx = TransactionId::new(3, 251);
        let metadata = Metadata::new([("k", "v")]).unwrap();
        let details = WithdrawalDetails {
            fee: Some(Fee {
                currency: other,
                amount: 7,
            }),
            destination: Some(Destination::new("a", "b", Some("n".into())).unwrap()),
            metadata: metadata.clone(),
            expires_at: Some(UnixMs::from_millis(65_536)),
        };
        vec![
            Event::Deposited {
                tx,
                currency,
                amount: 1,
                key: None,
                metadata: metadata.clone().boxed(),
            },
            Event::WithdrawalRequested {
                tx,
                currency,
                amount: 300,
                key: Some(IdempotencyKey::new("w").unwrap()),
                details: details.boxed(),
            },
            Event::WithdrawalCompleted {
                tx,
                paid: Some(120),
                fee: Some(FeeCollected {
                    to: 9,
                    currency: other,
                    amount: 7,
                }),
            },
            Event::WithdrawalCompleted {
                tx,
                paid: Some(-1),
                fee: None,
            },
            Event::Transferred {
                tx,
                to: 4,
                currency,
                amount: 2,
                key: None,
                metadata: metadata.boxed(),
            },
            Event::AccountFrozen {
                account: 3,
                freeze: Freeze {
                    scope: FreezeScope::All,
                    until: Some(UnixMs::from_millis(1_000)),
                    reason: "r".into(),
                },
            },
            Event::AccountUnfrozen { account: 3 },
            Event::AccountTierSet {
                account: 3,
                tier: Tier::new("vip").unwrap(),
            },
            Event::PayoutItemsSettled {
                payout_id: 2,
                items: vec![(
                    tx,
                    crate::domain::event::ItemOutcome::PartlyPaid { paid: 5 },
                )],
            },
        ]
    }

    /// Whether the fast decoder reads `event` itself: variants 0 to 8 with
    /// nothing format v7 added; everything else is bincode's.
    fn read_fast(event: &Event) -> bool {
        match event {
            Event::Deposited { metadata, .. } | Event::Transferred { metadata, .. } => {
                metadata.is_none()
            }
            Event::WithdrawalRequested { details, .. } => details.is_none(),
            Event::WithdrawalCompleted { paid, fee, .. } => paid.is_none() && fee.is_none(),
            Event::WithdrawalFailed { .. }
            | Event::WithdrawalCancelled { .. }
            | Event::WithdrawalClaimed { .. }
            | Event::WithdrawalReleased { .. }
            | Event::WithdrawalReturned { .. } => true,
            _ => false,
        }
    }

    /// Whenever the fast decoder answers, bincode decodes the same bytes to
    /// the same event, using the same number of bytes.
    fn fast_agrees_with_bincode(bytes: &[u8]) -> bool {
        let Some(fast) = fast::decode(bytes) else {
            return false;
        };
        let slow = bincode::serde::decode_from_slice::<Event, _>(bytes, bincode_config());
        assert_eq!(Ok(fast), slow.map_err(|e| e.to_string()), "bytes {bytes:?}");
        true
    }

    #[test]
    fn the_fast_decoder_reads_what_bincode_reads_and_nothing_it_refuses() {
        let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(7);
        for event in events_for_the_fast_decoder() {
            let payload = bincode::serde::encode_to_vec(&event, bincode_config()).unwrap();
            let fast = read_fast(&event);
            assert_eq!(fast_agrees_with_bincode(&payload), fast, "{event:?}");
            if fast {
                assert_eq!(fast::decode(&payload), Some((event.clone(), payload.len())));
            }
            for cut in 0..payload.len() {
                fast_agrees_with_bincode(&payload[..cut]);
            }
            let mut damaged = payload.clone();
            for at in 0..payload.len() {
                for value in 0..=u8::MAX {
                    damaged[at] = value;
                    fast_agrees_with_bincode(&damaged);
                }
                damaged[at] = payload[at];
            }
            for _ in 0..200 {
                let mut noisy = payload.clone();
                for _ in 0..rand::Rng::random_range(&mut rng, 1..4) {
                    let at = rand::Rng::random_range(&mut rng, 0..noisy.len());
                    noisy[at] = rand::Rng::random(&mut rng);
                }
                fast_agrees_with_bincode(&noisy);
            }
        }
        // Keys and codes the constructors refuse are left to bincode.
        let refused_key = |key: &str| {
            let mut payload = vec![0, 5];
            payload.extend_from_slice(b"USD\0\0\0\0\0\x02\x02\x01");
            payload.push(key.len() as u8);
            payload.extend_from_slice(key.as_bytes());
            payload
        };
        let valid = refused_key("k");
        assert!(fast_agrees_with_bincode(&valid));
        assert_eq!(fast::decode(&refused_key("")), None);
        let lower_case = [&[0u8, 5, b'u', b's', b'd', 0, 0, 0, 0, 0, 2, 2][..], &[0]].concat();
        assert!(
            bincode::serde::decode_from_slice::<Event, _>(&lower_case, bincode_config()).is_ok()
        );
        assert_eq!(fast::decode(&lower_case), None);
    }

    /// The events format v7 added read back whole from a chained record
    /// (what the engine writes) and a v4 one, through bincode.
    #[test]
    fn the_events_format_v7_added_round_trip_through_records() {
        let usd = Currency {
            code: CurrencyCode::new("USD").unwrap(),
            decimals: 2,
        };
        let btc = Currency {
            code: CurrencyCode::new("BTC").unwrap(),
            decimals: 8,
        };
        for (n, event) in (1..).zip(events_with_new_parts(usd, btc)) {
            let stamped = Stamped { at: at(n), event };
            let mut chained = Vec::new();
            encode_chained_into(&mut chained, n, &GENESIS, &stamped).unwrap();
            let plain = {
                let mut buf = Vec::new();
                encode_into(&mut buf, n, &stamped).unwrap();
                buf
            };
            for bytes in [chained, plain] {
                let Decoded::Complete { entry, len } = decode(&bytes, n) else {
                    panic!("{:?} decodes", stamped.event);
                };
                assert_eq!(
                    (entry.at, &entry.event, len),
                    (at(n), &stamped.event, bytes.len())
                );
            }
        }
    }

    #[test]
    fn payload_with_trailing_bytes_is_corrupt() {
        let mut payload = bincode::serde::encode_to_vec(event(3), bincode_config()).unwrap();
        payload.push(0);
        let mut buf = Vec::new();
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&checksum(3, &payload).to_le_bytes());
        buf.extend_from_slice(&3u64.to_le_bytes());
        buf.extend_from_slice(&payload);
        assert!(matches!(decode(&buf, 3), Decoded::Corrupt { .. }));
    }

    #[test]
    fn a_record_without_a_time_reads_as_unknown_time_and_one_with_reads_its_time() {
        let mut old = Vec::new();
        encode_v1_into(&mut old, 4, &event(4)).unwrap();
        let new = encoded(4, &event(4));
        assert_eq!(new.len(), old.len() + 10, "a tag and a 9-byte varint");
        assert_eq!(new[HEADER_BYTES], TIMED_RECORD_TAG);
        let read = |bytes: &[u8]| match decode(bytes, 4) {
            Decoded::Complete { entry, .. } => (entry.at, entry.event),
            other => panic!("{other:?}"),
        };
        assert_eq!(read(&old), (UnixMs::UNKNOWN, event(4)));
        assert_eq!(read(&new), (at(4), event(4)));
    }

    fn chained(lsn: u64, previous: &Hash) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_chained_into(&mut buf, lsn, previous, &stamped(lsn)).unwrap();
        buf
    }

    /// Format v6 reads back its LSN, time and event, and carries the
    /// predecessor's hash right after its tag; v4 and v1 records, which
    /// carry none, still decode.
    #[test]
    fn a_chained_record_round_trips_and_older_records_still_decode() {
        let previous = hash(b"the record before");
        let v6 = chained(4, &previous);
        let v4 = encoded(4, &event(4));
        assert_eq!(v6.len(), v4.len() + 32, "the hash, in place of nothing");
        assert_eq!(v6[HEADER_BYTES], CHAINED_RECORD_TAG);
        assert_eq!(predecessor(&v6), Some(previous));
        let mut v1 = Vec::new();
        encode_v1_into(&mut v1, 4, &event(4)).unwrap();
        for (bytes, at) in [(&v6, at(4)), (&v4, at(4)), (&v1, UnixMs::UNKNOWN)] {
            let Decoded::Complete { entry, len } = decode(bytes, 4) else {
                panic!("{bytes:?} decodes");
            };
            assert_eq!(
                (entry, len),
                (
                    WalEntry {
                        lsn: 4,
                        at,
                        event: event(4)
                    },
                    bytes.len()
                )
            );
        }
        assert_eq!((predecessor(&v4), predecessor(&v1)), (None, None));
        // A batch of chained records decodes whole, as a standby reads it.
        let mut batch = chained(1, &GENESIS);
        let first_hash = hash(&batch);
        batch.extend(chained(2, &first_hash));
        let lsns: Vec<u64> = decode_batch(&batch, 1)
            .unwrap()
            .iter()
            .map(|e| e.lsn)
            .collect();
        assert_eq!(lsns, [1, 2]);
    }

    /// The hash covers every framed byte: header (length, checksum, LSN)
    /// and payload, so a record changed anywhere chains differently.
    #[test]
    fn a_records_hash_changes_with_any_of_its_bytes() {
        let record = chained(9, &GENESIS);
        let original = hash(&record);
        for at in 0..record.len() {
            let mut changed = record.clone();
            changed[at] ^= 0x01;
            assert_ne!(hash(&changed), original, "byte {at}");
        }
    }

    /// A chained payload cut inside its hash, or with a hash and nothing
    /// after, is corrupt, never a panic.
    #[test]
    fn a_chained_payload_cut_short_is_corrupt() {
        let corrupt =
            |payload: &[u8]| matches!(decode(&framed(3, payload), 3), Decoded::Corrupt { .. });
        assert!(corrupt(&[CHAINED_RECORD_TAG]));
        assert!(corrupt(&[&[CHAINED_RECORD_TAG][..], &[7; 20]].concat()));
        assert!(corrupt(&[&[CHAINED_RECORD_TAG][..], &[7; 32]].concat()));
        assert!(corrupt(
            &[&[CHAINED_RECORD_TAG][..], &[7; 32], &[9]].concat()
        ));
        assert_eq!(predecessor(&framed(3, &[CHAINED_RECORD_TAG, 1, 2])), None);
    }

    /// Builds a record around a hand-made payload.
    fn framed(lsn: u64, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&checksum(lsn, payload).to_le_bytes());
        buf.extend_from_slice(&lsn.to_le_bytes());
        buf.extend_from_slice(payload);
        buf
    }

    #[test]
    fn a_tagged_payload_with_a_bad_time_or_no_event_is_corrupt() {
        let event_bytes = bincode::serde::encode_to_vec(event(2), bincode_config()).unwrap();
        let corrupt =
            |payload: &[u8]| matches!(decode(&framed(2, payload), 2), Decoded::Corrupt { .. });
        // The tag alone; a time whose varint is cut; a time with no event;
        // a `u128` marker where a `u64` time must be; the tag twice.
        assert!(corrupt(&[TIMED_RECORD_TAG]));
        assert!(corrupt(&[TIMED_RECORD_TAG, 253, 1, 2]));
        assert!(corrupt(&[TIMED_RECORD_TAG, 7]));
        let wide = [&[TIMED_RECORD_TAG, 254][..], &[0; 16], &event_bytes].concat();
        assert!(corrupt(&wide));
        let twice = [&[TIMED_RECORD_TAG, TIMED_RECORD_TAG][..], &event_bytes].concat();
        assert!(corrupt(&twice));
        // A small time is read as it is; one past year 9999 is held there.
        let small = [&[TIMED_RECORD_TAG, 7][..], &event_bytes].concat();
        let Decoded::Complete { entry, .. } = decode(&framed(2, &small), 2) else {
            panic!("a time of 7 ms decodes");
        };
        assert_eq!(entry.at, UnixMs::from_millis(7));
        let huge = [
            &[TIMED_RECORD_TAG, 253][..],
            &u64::MAX.to_le_bytes(),
            &event_bytes,
        ]
        .concat();
        let Decoded::Complete { entry, .. } = decode(&framed(2, &huge), 2) else {
            panic!("any u64 time decodes");
        };
        assert_eq!(entry.at, UnixMs::MAX);
    }
}
