//! Framing of one log record: `[len u32][crc32 u32][lsn u64][payload]`, all
//! little-endian, payload = one bincode-encoded [`Event`].
//!
//! Both directions check the same limits, so a record this code writes is
//! always one it can read back, and a damaged length can never make the
//! reader allocate or wait for more than [`RECORD_BYTES_MAX`].

use bincode::config::{Configuration, Limit};

use crate::event::Event;

use super::WalError;

/// Largest record, header included. Events are small (≈ 60 B); the limit is
/// there so that a corrupt length is recognised as corrupt.
pub const RECORD_BYTES_MAX: usize = 1024 * 1024;

/// `len` (4) + `crc` (4) + `lsn` (8).
pub const HEADER_BYTES: usize = 16;

/// Largest payload a record may carry.
pub const PAYLOAD_BYTES_MAX: usize = RECORD_BYTES_MAX - HEADER_BYTES;

/// One record as read back: an event and the LSN it was logged under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalEntry {
    pub lsn: u64,
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

/// Appends one record for `event` at `lsn` to `buf` and returns its size.
///
/// On error `buf` is left exactly as it was, so a caller building a batch
/// can refuse one event without corrupting the records before it.
pub fn encode_into(buf: &mut Vec<u8>, lsn: u64, event: &Event) -> Result<usize, WalError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_BYTES]);
    if let Err(error) = bincode::serde::encode_into_std_write(event, buf, bincode_config()) {
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
    match bincode::serde::decode_from_slice::<Event, _>(payload, bincode_config()) {
        Ok((event, used)) if used == payload_len => Decoded::Complete {
            entry: WalEntry { lsn, event },
            len: HEADER_BYTES + payload_len,
        },
        Ok((_, used)) => Decoded::Corrupt {
            reason: format!("payload has {} bytes after its event", payload_len - used),
        },
        Err(error) => Decoded::Corrupt {
            reason: format!("payload does not decode: {error}"),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ids::{IdempotencyKey, TransactionId};
    use crate::money::{Currency, CurrencyCode};

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
            },
            1 => Event::WithdrawalFailed {
                tx,
                reason: format!("bank said no to {n}"),
            },
            _ => Event::WithdrawalCompleted { tx },
        }
    }

    fn encoded(lsn: u64, event: &Event) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_into(&mut buf, lsn, event).unwrap();
        buf
    }

    #[test]
    fn round_trip_preserves_lsn_and_event() {
        let mut buf = Vec::new();
        for lsn in 1..=9 {
            encode_into(&mut buf, lsn, &event(lsn)).unwrap();
        }
        let mut at = 0;
        for lsn in 1..=9 {
            match decode(&buf[at..], lsn) {
                Decoded::Complete { entry, len } => {
                    assert_eq!(
                        entry,
                        WalEntry {
                            lsn,
                            event: event(lsn)
                        }
                    );
                    at += len;
                }
                other => panic!("record {lsn}: {other:?}"),
            }
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn oversized_event_is_refused_and_leaves_the_buffer_unchanged() {
        let mut buf = encoded(1, &event(1));
        let before = buf.clone();
        let huge = Event::WithdrawalFailed {
            tx: TransactionId::new(1, 1),
            reason: "x".repeat(RECORD_BYTES_MAX),
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
}
