//! Replaying the log for recovery.
//!
//! Replay validates framing, checksums and LSN continuity within and across
//! segments, cuts a torn tail off the last segment (see the rule in the
//! module docs of [`super`]) and stops at anything else, naming the file and
//! byte offset.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use super::scan::{read_segment, scan, Tail};
use super::segment::{self, Segment};
use super::WalError;
use crate::event::Event;

/// What a replay found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Segments read; those wholly before `from_lsn` are not even opened.
    pub segments: usize,
    /// Records handed to the callback.
    pub records: u64,
    /// The first LSN handed to the callback, if any.
    pub first_lsn: Option<u64>,
    /// The last LSN the log holds (0 for none), whether or not replayed.
    pub last_lsn: u64,
    /// Where the writer must continue: after the log, and never before the
    /// requested `from_lsn` (a snapshot may hold events a buffered log lost).
    pub next_lsn: u64,
    /// Bytes cut off the last segment's torn tail.
    pub bytes_truncated: u64,
    /// The segment that was cut, if one was.
    pub truncated_segment: Option<PathBuf>,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError<E> {
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The callback refused an entry.
    #[error("applying WAL record {lsn} failed: {error}")]
    Apply { lsn: u64, error: E },
}

/// Cuts `path` back to `len` bytes and makes the cut durable, so the next
/// append cannot land after leftover bytes.
fn truncate(path: &Path, len: usize) -> Result<(), WalError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| {
            file.set_len(len as u64)?;
            file.sync_all()
        })
        .map_err(|error| WalError::io(path, &error))
}

fn corrupt(segment: &Segment, offset: usize, reason: String) -> WalError {
    WalError::Corrupt {
        path: segment.path.clone(),
        offset: offset as u64,
        reason,
    }
}

/// How a replay treats the files it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayMode {
    /// Recovery before the writer opens: cut a torn tail off the last
    /// segment, so the writer can append after whole records.
    Recover,
    /// Change nothing on disk: a torn tail is reported (in
    /// `bytes_truncated`, as what recovery would cut) but left in place.
    /// With `until_lsn`, stop after that LSN and ignore whatever follows —
    /// the live writer may be halfway through appending it.
    ReadOnly { until_lsn: Option<u64> },
}

/// Feeds every record of `dir`'s log with an LSN of at least `from_lsn`
/// (0 and 1 both mean all) to `apply`, in LSN order. Cuts a torn tail off
/// the last segment; any other damage, or a missing record, is an error.
pub fn replay<E>(
    dir: &Path,
    from_lsn: u64,
    apply: impl FnMut(u64, Event) -> Result<(), E>,
) -> Result<ReplayReport, ReplayError<E>> {
    replay_with(dir, from_lsn, ReplayMode::Recover, apply)
}

/// [`replay`], with the treatment of the files chosen by `mode`.
pub fn replay_with<E>(
    dir: &Path,
    from_lsn: u64,
    mode: ReplayMode,
    mut apply: impl FnMut(u64, Event) -> Result<(), E>,
) -> Result<ReplayReport, ReplayError<E>> {
    let until_lsn = match mode {
        ReplayMode::ReadOnly { until_lsn } => until_lsn.unwrap_or(u64::MAX),
        ReplayMode::Recover => u64::MAX,
    };
    let from_lsn = from_lsn.max(1);
    let segments = segment::list(dir)?;
    let mut report = ReplayReport {
        next_lsn: from_lsn,
        ..ReplayReport::default()
    };
    let Some(oldest) = segments.first() else {
        return Ok(report);
    };
    if oldest.first_lsn > from_lsn {
        let reason = format!(
            "log starts at LSN {}, records from {from_lsn} are missing",
            oldest.first_lsn
        );
        return Err(corrupt(oldest, 0, reason).into());
    }
    // Every segment before the last one starting at or before `from_lsn`
    // ends before `from_lsn`: nothing in it to replay.
    let start = segments
        .iter()
        .rposition(|segment| segment.first_lsn <= from_lsn)
        .unwrap_or(0);
    let mut next_lsn = segments[start].first_lsn;
    let mut buf = Vec::new();
    for (index, segment) in segments.iter().enumerate().skip(start) {
        if segment.first_lsn != next_lsn {
            let reason = format!(
                "segment starts at LSN {}, expected {next_lsn}",
                segment.first_lsn
            );
            return Err(corrupt(segment, 0, reason).into());
        }
        read_segment(&segment.path, &mut buf)?;
        let found = scan(&buf, segment.first_lsn, |entry| {
            if entry.lsn < from_lsn || entry.lsn > until_lsn {
                return Ok(());
            }
            report.first_lsn.get_or_insert(entry.lsn);
            report.records += 1;
            let lsn = entry.lsn;
            apply(lsn, entry.event).map_err(|error| ReplayError::Apply { lsn, error })
        })?;
        report.segments += 1;
        next_lsn = segment.first_lsn + found.records;
        if next_lsn > until_lsn {
            // Everything asked for was read; what follows is the live
            // writer's business.
            report.last_lsn = until_lsn;
            report.next_lsn = until_lsn + 1;
            return Ok(report);
        }
        let is_last = index + 1 == segments.len();
        match found.tail {
            Tail::Clean => {}
            Tail::Torn if is_last && mode != ReplayMode::Recover => {
                report.bytes_truncated = (buf.len() - found.valid_bytes) as u64;
            }
            Tail::Torn if is_last => {
                truncate(&segment.path, found.valid_bytes)?;
                report.bytes_truncated = (buf.len() - found.valid_bytes) as u64;
                report.truncated_segment = Some(segment.path.clone());
            }
            Tail::Torn => {
                let reason = "torn record in a segment that is not the last".to_owned();
                return Err(corrupt(segment, found.valid_bytes, reason).into());
            }
            Tail::Corrupt { reason } => {
                return Err(corrupt(segment, found.valid_bytes, reason).into())
            }
        }
    }
    report.last_lsn = next_lsn - 1;
    report.next_lsn = next_lsn.max(from_lsn);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use std::convert::Infallible;

    use super::*;
    use crate::wal::record::{self, tests::event};
    use crate::wal::scan::tests::{encode, write_segment};
    use crate::wal::segment::segment_path;

    fn replay_all(
        dir: &Path,
        from_lsn: u64,
    ) -> Result<(ReplayReport, Vec<(u64, Event)>), WalError> {
        let mut seen = Vec::new();
        let report = replay(dir, from_lsn, |lsn, event| {
            seen.push((lsn, event));
            Ok::<(), Infallible>(())
        });
        match report {
            Ok(report) => Ok((report, seen)),
            Err(ReplayError::Wal(error)) => Err(error),
        }
    }

    fn expected(lsns: std::ops::RangeInclusive<u64>) -> Vec<(u64, Event)> {
        lsns.map(|lsn| (lsn, event(lsn))).collect()
    }

    #[test]
    fn cut_anywhere_in_the_last_three_records_recovers_the_whole_record_prefix() {
        let (first, _) = encode(1..=3);
        let (last, ends) = encode(4..=9);
        let cut_from = ends[ends.len() - 4];
        for cut in cut_from..=last.len() {
            let tmp = tempfile::tempdir().unwrap();
            write_segment(tmp.path(), 1, &first);
            let path = write_segment(tmp.path(), 4, &last[..cut]);
            let whole = ends.iter().filter(|&&end| end <= cut).count() as u64;
            let prefix = ends[..whole as usize].last().copied().unwrap_or(0);

            let (report, seen) = replay_all(tmp.path(), 1).unwrap();
            assert_eq!(seen, expected(1..=3 + whole), "cut at {cut}");
            assert_eq!(
                report.bytes_truncated,
                (cut - prefix) as u64,
                "cut at {cut}"
            );
            assert_eq!(report.next_lsn, 4 + whole);
            assert_eq!(fs::metadata(&path).unwrap().len(), prefix as u64);
            let again = replay_all(tmp.path(), 1).unwrap();
            assert_eq!((again.0.bytes_truncated, again.1.len()), (0, seen.len()));
        }
    }

    #[test]
    fn a_damaged_record_before_the_tail_names_its_file_and_offset() {
        let (first, first_ends) = encode(1..=3);
        let (last, last_ends) = encode(4..=6);
        // Record 2 in the first segment, record 5 in the middle of the last.
        for (segment, record_start) in [(1, first_ends[0]), (4, last_ends[0])] {
            let tmp = tempfile::tempdir().unwrap();
            let (mut a, mut b) = (first.clone(), last.clone());
            let damaged = if segment == 1 { &mut a } else { &mut b };
            damaged[record_start + record::HEADER_BYTES + 1] ^= 0x40;
            write_segment(tmp.path(), 1, &a);
            write_segment(tmp.path(), 4, &b);
            let err = replay_all(tmp.path(), 1).unwrap_err();
            let want_path = segment_path(tmp.path(), segment);
            assert!(
                matches!(&err, WalError::Corrupt { path, offset, .. }
                    if *path == want_path && *offset == record_start as u64),
                "{err}"
            );
        }
    }

    #[test]
    fn a_bad_checksum_on_the_final_whole_record_is_corrupt_not_torn() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut bytes, ends) = encode(1..=3);
        let last_start = ends[1];
        *bytes.last_mut().unwrap() ^= 0x01;
        let path = write_segment(tmp.path(), 1, &bytes);
        let err = replay_all(tmp.path(), 1).unwrap_err();
        assert!(matches!(err, WalError::Corrupt { offset, .. } if offset == last_start as u64));
        assert_eq!(
            fs::metadata(path).unwrap().len(),
            bytes.len() as u64,
            "nothing cut"
        );
    }

    #[test]
    fn a_zero_filled_tail_is_cut_like_a_torn_one() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut bytes, _) = encode(1..=2);
        bytes.extend_from_slice(&[0; 100]);
        write_segment(tmp.path(), 1, &bytes);
        let (report, seen) = replay_all(tmp.path(), 1).unwrap();
        assert_eq!((report.bytes_truncated, seen), (100, expected(1..=2)));
    }

    #[test]
    fn a_torn_record_in_an_earlier_segment_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, ends) = encode(1..=3);
        write_segment(tmp.path(), 1, &first[..ends[2] - 1]);
        write_segment(tmp.path(), 3, &encode(3..=4).0);
        let err = replay_all(tmp.path(), 1).unwrap_err();
        let want = segment_path(tmp.path(), 1);
        assert!(
            matches!(&err, WalError::Corrupt { path, offset, .. } if *path == want && *offset == ends[1] as u64)
        );
    }

    #[test]
    fn missing_records_are_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        write_segment(tmp.path(), 1, &encode(1..=3).0);
        write_segment(tmp.path(), 5, &encode(5..=6).0);
        let err = replay_all(tmp.path(), 1).unwrap_err();
        let want = segment_path(tmp.path(), 5);
        assert!(
            matches!(&err, WalError::Corrupt { path, offset: 0, .. } if *path == want),
            "{err}"
        );

        let tmp = tempfile::tempdir().unwrap();
        write_segment(tmp.path(), 4, &encode(4..=6).0);
        assert!(
            replay_all(tmp.path(), 2).is_err(),
            "log starts after the LSN asked for"
        );
        assert_eq!(replay_all(tmp.path(), 4).unwrap().1, expected(4..=6));
    }

    #[test]
    fn replay_from_an_lsn_skips_earlier_records() {
        let tmp = tempfile::tempdir().unwrap();
        write_segment(tmp.path(), 1, &encode(1..=3).0);
        write_segment(tmp.path(), 4, &encode(4..=6).0);
        write_segment(tmp.path(), 7, &encode(7..=9).0);
        let (report, seen) = replay_all(tmp.path(), 5).unwrap();
        assert_eq!(seen, expected(5..=9));
        assert_eq!((report.segments, report.records), (2, 5));
        assert_eq!(
            (report.first_lsn, report.last_lsn, report.next_lsn),
            (Some(5), 9, 10)
        );
        // A snapshot ahead of the log: the writer continues after the snapshot.
        let (report, seen) = replay_all(tmp.path(), 20).unwrap();
        assert_eq!((seen.len(), report.last_lsn, report.next_lsn), (0, 9, 20));
    }

    #[test]
    fn an_empty_or_missing_log_replays_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (report, seen) = replay_all(tmp.path(), 0).unwrap();
        assert_eq!((seen.len(), report.last_lsn, report.next_lsn), (0, 0, 1));
        // An empty last segment still says where the log continues.
        write_segment(tmp.path(), 1, &encode(1..=2).0);
        write_segment(tmp.path(), 3, &[]);
        let (report, _) = replay_all(tmp.path(), 1).unwrap();
        assert_eq!(
            (report.segments, report.last_lsn, report.next_lsn),
            (2, 2, 3)
        );
    }

    #[test]
    fn a_refused_entry_stops_the_replay_with_its_lsn() {
        let tmp = tempfile::tempdir().unwrap();
        write_segment(tmp.path(), 1, &encode(1..=3).0);
        let result = replay(
            tmp.path(),
            1,
            |lsn, _| if lsn == 2 { Err("no") } else { Ok(()) },
        );
        assert!(matches!(
            result,
            Err(ReplayError::Apply {
                lsn: 2,
                error: "no"
            })
        ));
    }
}
