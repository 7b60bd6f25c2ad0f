//! Walking one segment's records without changing anything: the loop
//! [`replay`](super::replay) is built on, and [`inspect`].
//!
//! A segment is read whole: segments are bounded (64 MiB by default, plus
//! at most one batch), and it keeps the walk simple.

use std::convert::Infallible;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::record::{self, Decoded, WalEntry};
use super::segment;
use super::WalError;

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

pub(crate) struct Scan {
    pub records: u64,
    /// Offset just after the last whole record.
    pub valid_bytes: usize,
    pub tail: Tail,
}

/// Decodes the records of one segment that starts at `first_lsn`.
pub(crate) fn scan<F>(
    bytes: &[u8],
    first_lsn: u64,
    mut each: impl FnMut(WalEntry) -> Result<(), F>,
) -> Result<Scan, F> {
    let mut at = 0;
    let mut records = 0;
    let tail = loop {
        if at == bytes.len() {
            break Tail::Clean;
        }
        match record::decode(&bytes[at..], first_lsn + records) {
            Decoded::Complete { entry, len } => {
                each(entry)?;
                at += len;
                records += 1;
            }
            Decoded::Torn => break Tail::Torn,
            // A zero-filled end is a crash's extension of the file, not data.
            Decoded::Corrupt { .. } if bytes[at..].iter().all(|&byte| byte == 0) => {
                break Tail::Torn
            }
            Decoded::Corrupt { reason } => break Tail::Corrupt { reason },
        }
    };
    Ok(Scan {
        records,
        valid_bytes: at,
        tail,
    })
}

pub(crate) fn read_segment(path: &Path, buf: &mut Vec<u8>) -> Result<(), WalError> {
    buf.clear();
    File::open(path)
        .and_then(|mut file| file.read_to_end(buf))
        .map_err(|error| WalError::io(path, &error))?;
    Ok(())
}

/// Describes every segment of `dir`'s log without changing anything: record
/// counts, LSN ranges, and what is wrong where (torn tails included).
pub fn inspect(dir: &Path) -> Result<Vec<SegmentInfo>, WalError> {
    let mut infos = Vec::new();
    let mut buf = Vec::new();
    let mut expected: Option<u64> = None;
    for segment in segment::list(dir)? {
        read_segment(&segment.path, &mut buf)?;
        let Ok(found) = scan(&buf, segment.first_lsn, |_| Ok::<(), Infallible>(()));
        let mut problems = Vec::new();
        if let Some(lsn) = expected.filter(|&lsn| lsn != segment.first_lsn) {
            problems.push(format!("LSN {lsn} expected at the start"));
        }
        match found.tail {
            Tail::Clean => {}
            Tail::Torn => problems.push(format!("torn tail at byte {}", found.valid_bytes)),
            Tail::Corrupt { reason } => {
                problems.push(format!("corrupt at byte {}: {reason}", found.valid_bytes))
            }
        }
        expected = Some(segment.first_lsn + found.records);
        infos.push(SegmentInfo {
            first_lsn: segment.first_lsn,
            records: found.records,
            last_lsn: (found.records > 0).then(|| segment.first_lsn + found.records - 1),
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
    use crate::wal::record::tests::event;
    use crate::wal::segment::{segment_path, wal_dir};

    /// Encodes records `lsns` and returns the bytes and each record's end.
    pub(crate) fn encode(lsns: std::ops::RangeInclusive<u64>) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for lsn in lsns {
            record::encode_into(&mut buf, lsn, &event(lsn)).unwrap();
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
