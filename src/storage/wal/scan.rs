//! Walking one segment's records without changing anything: the loop
//! [`replay`](super::replay) is built on, and [`inspect`].
//!
//! Replay reads a segment a block at a time ([`scan_file`]), so that its
//! first records are applied while the rest is still being read; [`inspect`]
//! reads it whole (segments are bounded: 64 MiB by default, plus at most one
//! batch). Both walk the records the same way and decide the same things:
//! this file is the one owner of the torn-tail rule (see [`super`]): whether
//! a record that looks torn is a crash's leftover that may be cut (only at
//! the end of the newest segment, with nothing valid after it) or damage
//! that must be refused.

use std::convert::Infallible;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::record::{self, Decoded, WalEntry};
use super::segment;
use super::WalError;
use crate::domain::time::UnixMs;

/// One segment as [`inspect`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    /// The LSN in the file's name.
    pub first_lsn: u64,
    /// Whole, valid records from the start of the file.
    pub records: u64,
    /// The LSN of the last of them.
    pub last_lsn: Option<u64>,
    /// The earliest and the latest time among those records that carry
    /// one (format v4 on); `None` if none does.
    pub times: Option<(UnixMs, UnixMs)>,
    /// Those records without a time (written before format v4).
    pub untimed_records: u64,
    /// The file's size.
    pub bytes: u64,
    /// Where the whole records end; anything after is torn or corrupt.
    pub valid_bytes: u64,
    /// What is wrong with the segment, if anything.
    pub problem: Option<String>,
}

/// How a segment's bytes end after its last whole record.
pub(crate) enum Tail {
    Clean,
    Torn,
    Corrupt { reason: String },
}

impl Tail {
    /// The recovery rule's last word, once it is known whether the segment
    /// is the log's last: only the last segment may end torn (an earlier one
    /// was synced before the next was started), anywhere else it is corrupt.
    pub(crate) fn in_segment(self, is_last: bool) -> Tail {
        match self {
            Tail::Torn if !is_last => Tail::Corrupt {
                reason: "torn record in a segment that is not the last".to_owned(),
            },
            tail => tail,
        }
    }
}

pub(crate) struct Scan {
    pub records: u64,
    /// Offset just after the last whole record.
    pub valid_bytes: usize,
    /// The last whole record's size (0: none), so it can be read again
    /// (its hash is the chain's head) without walking the segment.
    pub last_record_bytes: usize,
    pub tail: Tail,
}

/// Decodes the records of one segment that starts at `first_lsn`.
pub(crate) fn scan<F>(
    bytes: &[u8],
    first_lsn: u64,
    mut each: impl FnMut(WalEntry) -> Result<(), F>,
) -> Result<Scan, F> {
    let mut walk = Walk::new(first_lsn);
    let tail = walk.step(bytes, true, &mut each)?;
    let tail = tail.unwrap_or(Tail::Clean); // cannot be `None`: `bytes` is all there is
    Ok(Scan {
        records: walk.records,
        valid_bytes: walk.at,
        last_record_bytes: walk.last_len,
        tail,
    })
}

/// Bytes [`scan_file`] reads at a time.
const BLOCK_BYTES: usize = 1024 * 1024;

/// Why [`scan_file`] stopped short.
pub(crate) enum Stopped<F> {
    /// Reading the file failed.
    Io(WalError),
    /// The callback said so.
    By(F),
}

/// [`scan`] of the segment file at `path`, reading it a block at a time
/// into `buf`: the first records are handed over before the file is read to
/// its end, and only about a block is held in memory. Returns the scan,
/// with offsets in the file, and the bytes read: the file's size, unless
/// the tail is corrupt (then reading may stop at the damage).
///
/// Decides exactly as [`scan`] over the whole file would: a record cut
/// short by the end of a block is read on, and one that looks corrupt but is
/// followed only by zeros so far waits for the rest of the file (a zero-
/// filled end is torn, not corrupt).
pub(crate) fn scan_file<F>(
    path: &Path,
    first_lsn: u64,
    buf: &mut Vec<u8>,
    each: impl FnMut(WalEntry) -> Result<(), F>,
) -> Result<(Scan, usize), Stopped<F>> {
    scan_file_in_blocks(path, first_lsn, buf, BLOCK_BYTES, each)
}

/// [`scan_file`], reading `block` bytes at a time.
fn scan_file_in_blocks<F>(
    path: &Path,
    first_lsn: u64,
    buf: &mut Vec<u8>,
    block: usize,
    mut each: impl FnMut(WalEntry) -> Result<(), F>,
) -> Result<(Scan, usize), Stopped<F>> {
    let io = |error: std::io::Error| Stopped::Io(WalError::io(path, &error));
    let mut file = File::open(path).map_err(io)?;
    buf.clear();
    // `buf` holds the file's bytes from offset `base` on.
    let mut base = 0;
    let mut walk = Walk::new(first_lsn);
    loop {
        // What is left unread (part of a record) moves to the front.
        buf.drain(..walk.at);
        base += walk.at;
        walk.at = 0;
        let read = (&mut file)
            .take(block as u64)
            .read_to_end(buf)
            .map_err(io)?;
        if let Some(tail) = walk.step(buf, read == 0, &mut each).map_err(Stopped::By)? {
            let found = Scan {
                records: walk.records,
                valid_bytes: base + walk.at,
                last_record_bytes: walk.last_len,
                tail,
            };
            return Ok((found, base + buf.len()));
        }
    }
}

/// Where a walk through a segment's records is.
struct Walk {
    first_lsn: u64,
    /// Whole records so far.
    records: u64,
    /// Offset just after the last of them.
    at: usize,
    /// The size of the last of them.
    last_len: usize,
}

impl Walk {
    fn new(first_lsn: u64) -> Self {
        Self {
            first_lsn,
            records: 0,
            at: 0,
            last_len: 0,
        }
    }

    /// Decodes the whole records of `bytes` from `self.at` on. `to_end`:
    /// `bytes` runs to the end of the file. Returns how the segment ends, or
    /// `None` when more of the file is needed to know.
    fn step<F>(
        &mut self,
        bytes: &[u8],
        to_end: bool,
        each: &mut impl FnMut(WalEntry) -> Result<(), F>,
    ) -> Result<Option<Tail>, F> {
        loop {
            let rest = &bytes[self.at..];
            if rest.is_empty() {
                return Ok(to_end.then_some(Tail::Clean));
            }
            match record::decode(rest, self.first_lsn + self.records) {
                Decoded::Complete { entry, len } => {
                    each(entry)?;
                    self.at += len;
                    self.last_len = len;
                    self.records += 1;
                }
                Decoded::Torn if !to_end => return Ok(None),
                Decoded::Torn => return Ok(Some(self.judge_torn(rest))),
                // A zero-filled end is a crash's extension of the file, not
                // data; whether the end is all zeros needs all of it.
                Decoded::Corrupt { .. } if rest.iter().all(|&byte| byte == 0) => {
                    return Ok(to_end.then_some(Tail::Torn));
                }
                Decoded::Corrupt { reason } => return Ok(Some(Tail::Corrupt { reason })),
            }
        }
    }

    /// The recovery rule (see [`super`]): a record that looks torn is torn
    /// only if nothing valid follows it; `rest` runs from it to the end of
    /// the file.
    fn judge_torn(&self, rest: &[u8]) -> Tail {
        let expected = self.first_lsn + self.records;
        match record::find_intact_after_torn(rest, expected) {
            None => Tail::Torn,
            Some((0, _)) => Tail::Corrupt {
                reason: "record length damaged: the record checks out with a shorter one"
                    .to_owned(),
            },
            Some((at, lsn)) => Tail::Corrupt {
                reason: format!(
                    "record {expected} looks cut short, but a valid record (LSN {lsn}) \
                     follows {at} bytes after its start: damage, not a torn write"
                ),
            },
        }
    }
}

/// The time range of a segment's records, as [`inspect`] walks them.
#[derive(Default)]
struct Times {
    range: Option<(UnixMs, UnixMs)>,
    untimed: u64,
}

impl Times {
    fn add(&mut self, at: UnixMs) {
        if at == UnixMs::UNKNOWN {
            self.untimed += 1;
            return;
        }
        let (first, last) = self.range.unwrap_or((at, at));
        self.range = Some((first.min(at), last.max(at)));
    }
}

pub(crate) fn read_segment(path: &Path, buf: &mut Vec<u8>) -> Result<(), WalError> {
    buf.clear();
    File::open(path)
        .and_then(|mut file| file.read_to_end(buf))
        .map_err(|error| WalError::io(path, &error))?;
    Ok(())
}

/// Describes every segment of `dir`'s log without changing anything: record
/// counts, LSN ranges, time ranges, and what is wrong where (torn tails
/// included).
pub fn inspect(dir: &Path) -> Result<Vec<SegmentInfo>, WalError> {
    let mut infos = Vec::new();
    let mut buf = Vec::new();
    let mut expected: Option<u64> = None;
    let segments = segment::list(dir)?;
    let count = segments.len();
    for (index, segment) in segments.into_iter().enumerate() {
        read_segment(&segment.path, &mut buf)?;
        let mut times = Times::default();
        let Ok(found) = scan(&buf, segment.first_lsn, |entry| {
            times.add(entry.at);
            Ok::<(), Infallible>(())
        });
        let mut problems = Vec::new();
        if let Some(lsn) = expected.filter(|&lsn| lsn != segment.first_lsn) {
            problems.push(format!("LSN {lsn} expected at the start"));
        }
        match found.tail.in_segment(index + 1 == count) {
            Tail::Clean => {}
            Tail::Torn => problems.push(format!(
                "torn tail at byte {}: opening the ledger cuts the {} bytes after it",
                found.valid_bytes,
                buf.len() - found.valid_bytes
            )),
            Tail::Corrupt { reason } => {
                problems.push(format!("corrupt at byte {}: {reason}", found.valid_bytes))
            }
        }
        expected = Some(segment.first_lsn + found.records);
        infos.push(SegmentInfo {
            first_lsn: segment.first_lsn,
            records: found.records,
            last_lsn: (found.records > 0).then(|| segment.first_lsn + found.records - 1),
            times: times.range,
            untimed_records: times.untimed,
            bytes: buf.len() as u64,
            valid_bytes: found.valid_bytes as u64,
            problem: (!problems.is_empty()).then(|| problems.join("; ")),
            path: segment.path,
        });
    }
    Ok(infos)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs;

    use super::*;
    use crate::storage::wal::record::tests::stamped;
    use crate::storage::wal::segment::{segment_path, wal_dir};

    /// Encodes records `lsns` and returns the bytes and each record's end.
    pub(crate) fn encode(lsns: std::ops::RangeInclusive<u64>) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for lsn in lsns {
            record::encode_into(&mut buf, lsn, &stamped(lsn)).unwrap();
            ends.push(buf.len());
        }
        (buf, ends)
    }

    pub(crate) fn write_segment(dir: &Path, first_lsn: u64, bytes: &[u8]) -> PathBuf {
        fs::create_dir_all(wal_dir(dir)).unwrap();
        let path = segment_path(dir, first_lsn);
        fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn reading_a_file_in_blocks_finds_what_scanning_it_whole_finds() {
        let tmp = tempfile::tempdir().unwrap();
        let (clean, ends) = encode(1..=6);
        let mut files = vec![clean.clone(), Vec::new()];
        // Torn anywhere in the last two records; zeros after the records.
        files.extend((ends[3]..clean.len()).map(|cut| clean[..cut].to_vec()));
        files.push([&clean[..], &[0; 40]].concat());
        files.push([&clean[..ends[4]], &[0; 3]].concat());
        // Damaged: a flipped byte in each record, zeros after a bad length.
        for &end in &ends {
            let mut damaged = clean.clone();
            damaged[end - 1] ^= 0x10;
            files.push(damaged);
        }
        let mut bad_length = clean[..ends[2]].to_vec();
        bad_length.extend_from_slice(&[0, 0, 0x20, 0]);
        bad_length.extend_from_slice(&[0; 30]);
        files.push(bad_length);
        let mut raised_length = clean.clone();
        raised_length[ends[1] + 1] ^= 0x02;
        files.push(raised_length);
        let mut after_zeros = clean[..ends[2]].to_vec();
        after_zeros.extend_from_slice(&[0; 30]);
        after_zeros.push(1);
        files.push(after_zeros);

        let seen = |found: &Scan, lsns: &[u64]| {
            let tail = match &found.tail {
                Tail::Clean => "clean".to_owned(),
                Tail::Torn => "torn".to_owned(),
                Tail::Corrupt { reason } => reason.clone(),
            };
            (found.records, found.valid_bytes, tail, lsns.to_vec())
        };
        let mut buf = Vec::new();
        for bytes in &files {
            let path = write_segment(tmp.path(), 1, bytes);
            let mut whole_lsns = Vec::new();
            let Ok(whole) = scan(bytes, 1, |entry| {
                whole_lsns.push(entry.lsn);
                Ok::<(), Infallible>(())
            });
            let expected = seen(&whole, &whole_lsns);
            for block in [1, 2, 7, 16, 17, 100, 10_000] {
                let mut lsns = Vec::new();
                let scanned = scan_file_in_blocks(&path, 1, &mut buf, block, |entry| {
                    lsns.push(entry.lsn);
                    Ok::<(), Infallible>(())
                });
                let Ok((found, size)) = scanned else {
                    panic!("reading {path:?} failed")
                };
                assert_eq!(seen(&found, &lsns), expected, "block {block}, {bytes:?}");
                if !matches!(found.tail, Tail::Corrupt { .. }) {
                    assert_eq!(size, bytes.len(), "block {block}, {bytes:?}");
                }
            }
        }
    }

    /// How `scan` judges `bytes` (a segment starting at LSN 1).
    fn judged(bytes: &[u8]) -> (u64, usize, String) {
        let Ok(found) = scan(bytes, 1, |_| Ok::<(), Infallible>(()));
        let tail = match found.tail {
            Tail::Clean => "clean".to_owned(),
            Tail::Torn => "torn".to_owned(),
            Tail::Corrupt { reason } => reason,
        };
        (found.records, found.valid_bytes, tail)
    }

    #[test]
    fn a_record_that_looks_torn_is_torn_only_if_nothing_valid_follows_it() {
        let (clean, ends) = encode(1..=8);
        // A length raised past the end, mid-segment: later records follow.
        let mut raised = clean.clone();
        raised[ends[2] + 1] ^= 0x04;
        let (records, valid, tail) = judged(&raised);
        assert_eq!((records, valid), (3, ends[2]));
        assert!(tail.contains("length damaged"), "{tail}");
        // The same in the last record: the record checks out with a
        // shorter length, so it is whole and damaged, not torn.
        let mut last = clean.clone();
        last[ends[6]] ^= 0x80;
        let (records, valid, tail) = judged(&last);
        assert_eq!((records, valid), (7, ends[6]));
        assert!(tail.contains("length damaged"), "{tail}");
        // Cut anywhere in the last record, or zeros after it: torn.
        for cut in ends[6] + 1..clean.len() {
            assert_eq!(judged(&clean[..cut]), (7, ends[6], "torn".to_owned()));
        }
        let zeros = [&clean[..ends[6]], &[0; 100]].concat();
        assert_eq!(judged(&zeros), (7, ends[6], "torn".to_owned()));
        // A record cut short with a valid one after it (a crash cannot
        // leave that): record 7's header announcing more than the file
        // holds, three bytes of its payload, then record 8.
        let mut header = clean[ends[5]..ends[5] + 16].to_vec();
        header[0..4].copy_from_slice(&2000u32.to_le_bytes());
        let spliced = [
            &clean[..ends[5]],
            &header,
            &clean[ends[5] + 16..ends[5] + 19],
            &clean[ends[6]..],
        ]
        .concat();
        let (records, valid, tail) = judged(&spliced);
        assert_eq!((records, valid), (6, ends[5]));
        assert!(
            tail.contains("valid record (LSN 8) follows 19 bytes"),
            "{tail}"
        );
    }

    #[test]
    fn inspect_reports_ranges_and_problems_without_changing_files() {
        let tmp = tempfile::tempdir().unwrap();
        write_segment(tmp.path(), 1, &encode(1..=3).0);
        let (mut last, ends) = encode(4..=5);
        last.truncate(ends[1] - 2);
        write_segment(tmp.path(), 4, &last);
        let infos = inspect(tmp.path()).unwrap();
        let summary: Vec<_> = infos
            .iter()
            .map(|i| {
                (
                    i.first_lsn,
                    i.records,
                    i.last_lsn,
                    i.valid_bytes,
                    i.problem.is_some(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1, 3, Some(3), infos[0].bytes, false),
                (4, 1, Some(4), ends[0] as u64, true)
            ]
        );
        assert_eq!(infos[1].bytes, last.len() as u64, "inspect cuts nothing");
    }
}
