//! Page cursors and scan bounds.
//!
//! A cursor is the place of the last row a page returned, as a kind
//! letter and lowercase hex: `w` + (created_at, tx) for withdrawal
//! listings and `p` + payout id for payouts (their key suffixes), `e` +
//! (currency, seq), and the part if not 0, for entries (one key holds a
//! balance's changes in several events: `schema::entry_place`). A page
//! resumes strictly after it (an entries page at the cursor's seq, past the
//! places up to it), so pages never repeat or skip a row that existed when
//! paging began, however much is ingested meanwhile (places never move: a
//! withdrawal's created time is fixed).

use std::ops::Bound;

use super::error::HistoryError;
use super::query::Order;

/// The kinds of listing a cursor belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CursorKind {
    Withdrawals,
    Entries,
    Payouts,
}

impl CursorKind {
    fn tag(self) -> char {
        match self {
            Self::Withdrawals => 'w',
            Self::Entries => 'e',
            Self::Payouts => 'p',
        }
    }

    /// Length in bytes of the key suffix the cursor holds.
    pub fn suffix_len(self) -> usize {
        match self {
            Self::Withdrawals => super::schema::TIME_TX_LEN,
            Self::Entries => super::schema::ENTRY_SUFFIX_LEN,
            Self::Payouts => super::schema::PAYOUT_ID_LEN,
        }
    }

    /// Whether a suffix of `len` bytes is one of this kind's: an entry's
    /// may end with its part.
    fn fits(self, len: usize) -> bool {
        len == self.suffix_len() || (self == Self::Entries && len == self.suffix_len() + 1)
    }
}

pub(super) fn encode(kind: CursorKind, suffix: &[u8]) -> String {
    let mut out = String::with_capacity(1 + 2 * suffix.len());
    out.push(kind.tag());
    for b in suffix {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Reads a cursor of `kind`; anything else is [`HistoryError::BadCursor`].
pub(super) fn decode(kind: CursorKind, text: &str) -> Result<Vec<u8>, HistoryError> {
    let bad = |reason| HistoryError::BadCursor { reason };
    let hex = text
        .strip_prefix(kind.tag())
        .ok_or(bad("not a cursor of this listing"))?;
    if hex.len() % 2 != 0 || !kind.fits(hex.len() / 2) {
        return Err(bad("wrong length"));
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or(bad("not lowercase hex"))
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Key bounds for a scan of one index.
pub(super) type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The keys `prefix ++ suffix` (suffixes all `len` bytes) with `from <=
/// suffix < to`, past `after` in the direction of `order`; `None` when
/// that is empty.
pub(super) fn scan_range(
    prefix: &[u8],
    len: usize,
    from: Option<&[u8]>,
    to: Option<&[u8]>,
    after: Option<&[u8]>,
    order: Order,
) -> Option<KeyRange> {
    let key = |suffix: &[u8]| [prefix, suffix].concat();
    let mut lo = Bound::Included(key(from.unwrap_or(&vec![0u8; len])));
    let mut hi = match to {
        Some(to) => Bound::Excluded(key(to)),
        None => Bound::Included(key(&vec![0xffu8; len])),
    };
    if let Some(after) = after {
        let c = key(after);
        match order {
            Order::Asc if !below(&c, &lo) => lo = Bound::Excluded(c),
            Order::Desc if !above(&c, &hi) => hi = Bound::Excluded(c),
            _ => {}
        }
    }
    (!is_empty(&lo, &hi)).then_some((lo, hi))
}

/// Whether `key` sorts before every key the lower bound admits.
fn below(key: &[u8], lo: &Bound<Vec<u8>>) -> bool {
    match lo {
        Bound::Included(l) | Bound::Excluded(l) => key < l.as_slice(),
        Bound::Unbounded => false,
    }
}

/// Whether `key` sorts after every key the upper bound admits.
fn above(key: &[u8], hi: &Bound<Vec<u8>>) -> bool {
    match hi {
        Bound::Included(h) | Bound::Excluded(h) => key > h.as_slice(),
        Bound::Unbounded => false,
    }
}

fn is_empty(lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    match (lo, hi) {
        (Bound::Included(l), Bound::Included(h)) => l > h,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Included(h) | Bound::Excluded(h)) => {
            l >= h
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_encodes() {
        let suffix: Vec<u8> = (0..24).collect();
        let text = encode(CursorKind::Withdrawals, &suffix);
        assert_eq!(decode(CursorKind::Withdrawals, &text).ok(), Some(suffix));
    }

    #[test]
    fn malformed_cursors_are_refused_by_name() {
        let good = encode(CursorKind::Payouts, &7u64.to_be_bytes());
        let cases = [
            ("", "not a cursor of this listing"),
            ("x0000000000000007", "not a cursor of this listing"),
            (&good[..good.len() - 1], "wrong length"),
            ("p000000000000000G", "not lowercase hex"),
            ("p000000000000000A", "not lowercase hex"),
            ("p00000000000000é", "not lowercase hex"),
        ];
        for (text, why) in cases {
            match decode(CursorKind::Payouts, text) {
                Err(HistoryError::BadCursor { reason }) => assert_eq!(reason, why, "{text:?}"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        // A withdrawal cursor is not an entries cursor.
        let w = encode(CursorKind::Withdrawals, &[0u8; 24]);
        assert!(matches!(
            decode(CursorKind::Entries, &w),
            Err(HistoryError::BadCursor { .. })
        ));
    }

    #[test]
    fn a_cursor_outside_the_range_leaves_the_range_alone() {
        let r = scan_range(b"", 1, Some(&[5]), Some(&[9]), Some(&[2]), Order::Asc);
        assert_eq!(
            r,
            Some((Bound::Included(vec![5]), Bound::Excluded(vec![9])))
        );
        let r = scan_range(b"", 1, Some(&[5]), Some(&[9]), Some(&[6]), Order::Asc);
        assert_eq!(
            r,
            Some((Bound::Excluded(vec![6]), Bound::Excluded(vec![9])))
        );
        let r = scan_range(b"", 1, Some(&[5]), Some(&[9]), Some(&[9]), Order::Desc);
        assert_eq!(
            r,
            Some((Bound::Included(vec![5]), Bound::Excluded(vec![9])))
        );
        let r = scan_range(b"", 1, Some(&[5]), Some(&[9]), Some(&[5]), Order::Desc);
        assert_eq!(r, None);
        assert_eq!(
            scan_range(b"", 1, Some(&[5]), Some(&[5]), None, Order::Asc),
            None
        );
    }
}
