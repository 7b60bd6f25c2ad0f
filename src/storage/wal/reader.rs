//! Replaying the log: for recovery (which cuts a torn tail) or read-only
//! (the checkpointer's rebuild, `verify`), by [`ReplayMode`].
//!
//! Replay validates framing, checksums and LSN continuity within and across
//! segments, cuts a torn tail off the last segment (read-only: reports what
//! it would cut; see the rule in the module docs of [`super`]) and stops at
//! anything else, naming the file and byte offset.
//! It notes where the last record lies ([`ReplayReport::last_record`]), so
//! recovery can hash it (the chain's head) with one small read.
//!
//! Two threads share the work: a reader thread reads the segments a block
//! at a time, checks and decodes the records and hands them over in chunks;
//! the calling thread applies them and makes every decision across records
//! and segments, in LSN order (see [`replay_chunks`]). Reading and decoding
//! is about a third of the work of rebuilding accounts from the log.

use std::fs::OpenOptions;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::record::{self, WalEntry};
use super::scan::{scan_file, Scan, Stopped, Tail};
use super::segment::{self, Segment};
use super::WalError;

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
    /// Bytes cut off the last segment's torn tail (read-only: that
    /// recovery would cut).
    pub bytes_truncated: u64,
    /// The segment that was cut (read-only: would be), if any.
    pub truncated_segment: Option<PathBuf>,
    /// Where in that segment the cut was (would be) made: the end of its
    /// last whole record.
    pub truncated_at: u64,
    /// Where the record at `last_lsn` lies, when this replay read it (its
    /// hash is the chain's head: [`RecordPlace::hash`]).
    pub last_record: Option<RecordPlace>,
}

/// Where one whole record lies in a segment file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordPlace {
    pub lsn: u64,
    pub path: PathBuf,
    pub offset: u64,
    pub len: usize,
}

impl RecordPlace {
    /// The record's hash, read again from its file: one small read.
    pub fn hash(&self) -> Result<record::Hash, WalError> {
        use std::io::{Read, Seek, SeekFrom};
        let mut bytes = vec![0; self.len];
        std::fs::File::open(&self.path)
            .and_then(|mut file| {
                file.seek(SeekFrom::Start(self.offset))?;
                file.read_exact(&mut bytes)
            })
            .map_err(|error| WalError::io(&self.path, &error))?;
        Ok(record::hash(&bytes))
    }
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
    /// `bytes_truncated`, `truncated_segment` and `truncated_at`, as what
    /// recovery would cut) but left in place.
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
    apply: impl FnMut(WalEntry) -> Result<(), E>,
) -> Result<ReplayReport, ReplayError<E>> {
    replay_with(dir, from_lsn, ReplayMode::Recover, apply)
}

/// [`replay`], with the treatment of the files chosen by `mode`.
pub fn replay_with<E>(
    dir: &Path,
    from_lsn: u64,
    mode: ReplayMode,
    mut apply: impl FnMut(WalEntry) -> Result<(), E>,
) -> Result<ReplayReport, ReplayError<E>> {
    replay_chunks(dir, from_lsn, mode, |entries| {
        for entry in entries {
            let lsn = entry.lsn;
            apply(entry).map_err(|error| (lsn, error))?;
        }
        Ok(())
    })
}

/// Records decoded ahead of the one being applied, in chunks of
/// [`CHUNK_ENTRIES`]: enough to keep both threads busy, little memory.
const CHUNKS_AHEAD: usize = 8;

/// Records per chunk handed to the caller (fewer at a segment's end).
const CHUNK_ENTRIES: usize = 1024;

/// [`replay_with`], handing the records over in chunks, in LSN order. A
/// refused record is reported by the callback with its LSN.
///
/// Reading the segments, checking every record and decoding its event runs
/// on a second thread, one segment after the other, while the calling
/// thread applies what was decoded; everything else — the checks across
/// segments, cutting a torn tail, what is an error and which error comes
/// first — happens on the calling thread, in LSN order, exactly as if one
/// thread did it all: a record is only ever applied after every record
/// before it, the tail is only cut once every record before it was applied,
/// and a damaged record is only reported once every record before it was.
/// The reader thread may read and decode ahead (a few chunks of a thousand
/// records, and a block of the segment); a replay that stops early, for an
/// error or at `until_lsn`, stops it. Without a second thread (spawning one
/// failed) the calling thread does both, in turns.
pub fn replay_chunks<E>(
    dir: &Path,
    from_lsn: u64,
    mode: ReplayMode,
    apply: impl FnMut(Vec<WalEntry>) -> Result<(), (u64, E)>,
) -> Result<ReplayReport, ReplayError<E>> {
    let until_lsn = match mode {
        ReplayMode::ReadOnly { until_lsn } => until_lsn.unwrap_or(u64::MAX),
        ReplayMode::Recover => u64::MAX,
    };
    let from_lsn = from_lsn.max(1);
    let segments = segment::list(dir)?;
    let Some(oldest) = segments.first() else {
        return Ok(ReplayReport {
            next_lsn: from_lsn,
            ..ReplayReport::default()
        });
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
    let segments = &segments[start..];
    let mut consumer = Replay {
        segments,
        mode,
        from_lsn,
        until_lsn,
        index: 0,
        checked: false,
        next_lsn: segments[0].first_lsn,
        report: ReplayReport {
            next_lsn: from_lsn,
            ..ReplayReport::default()
        },
        apply,
    };
    let (pieces, received) = crossbeam_channel::bounded(CHUNKS_AHEAD);
    let outcome = std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("wal-replay".to_owned())
            .spawn_scoped(scope, move || {
                decode_segments(segments, from_lsn, until_lsn, |piece| {
                    pieces.send(piece).is_ok()
                });
            });
        if reader.is_err() {
            // No second thread to be had: decode and apply in turns.
            let mut outcome = None;
            decode_segments(segments, from_lsn, until_lsn, |piece| {
                outcome = consumer.take(piece).break_value();
                outcome.is_none()
            });
            return outcome;
        }
        // Dropped when this closure returns, so a reader thread still
        // decoding sees it and stops before the scope waits for it.
        let received = received;
        received
            .iter()
            .find_map(|piece| consumer.take(piece).break_value())
    });
    // The reader always hands over the piece that ends the replay (the last
    // segment's end, or a failure) before it stops; if it panicked instead,
    // the scope has re-raised its panic.
    outcome.unwrap_or_else(|| {
        Err(ReplayError::Wal(WalError::Io {
            path: segment::wal_dir(dir),
            reason: "the log's reader stopped before the log ended".to_owned(),
        }))
    })
}

/// What the reader thread hands over, in order: for each segment, its
/// records in chunks, then how its scan ended, or why reading it failed.
enum Piece {
    /// Records of the current segment between `from_lsn` and `until_lsn`.
    Entries(Vec<WalEntry>),
    /// The current segment was scanned to its end; `bytes` were read of it
    /// (all of it, unless its tail is corrupt).
    End { found: Scan, bytes: usize },
    /// Reading the current segment failed (after the records before).
    Failed(WalError),
}

/// Reads and decodes `segments` in order, handing the pieces to `hand`
/// until it returns false. Stops after a segment that reaches `until_lsn`
/// or does not end cleanly: nothing after it is ever applied.
fn decode_segments(
    segments: &[Segment],
    from_lsn: u64,
    until_lsn: u64,
    mut hand: impl FnMut(Piece) -> bool,
) {
    /// The consumer is gone: stop decoding.
    struct Gone;
    let mut buf = Vec::new();
    for segment in segments {
        let mut chunk = Vec::with_capacity(CHUNK_ENTRIES);
        let scanned = scan_file(&segment.path, segment.first_lsn, &mut buf, |entry| {
            if entry.lsn < from_lsn || entry.lsn > until_lsn {
                return Ok(());
            }
            chunk.push(entry);
            if chunk.len() == CHUNK_ENTRIES {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_ENTRIES));
                if !hand(Piece::Entries(full)) {
                    return Err(Gone);
                }
            }
            Ok(())
        });
        let (found, bytes) = match scanned {
            Ok(scanned) => scanned,
            Err(Stopped::By(Gone)) => return,
            Err(Stopped::Io(error)) => {
                // The records before the failure were applied first, as
                // they would have been had the failure come after them.
                if !chunk.is_empty() && !hand(Piece::Entries(chunk)) {
                    return;
                }
                hand(Piece::Failed(error));
                return;
            }
        };
        if !chunk.is_empty() && !hand(Piece::Entries(chunk)) {
            return;
        }
        let last =
            segment.first_lsn + found.records > until_lsn || !matches!(found.tail, Tail::Clean);
        if !hand(Piece::End { found, bytes }) || last {
            return;
        }
    }
}

/// The calling thread's side of a replay: applies the records and decides,
/// segment by segment, exactly as a single-threaded replay would.
struct Replay<'a, F> {
    segments: &'a [Segment],
    mode: ReplayMode,
    from_lsn: u64,
    until_lsn: u64,
    /// The segment the next piece belongs to.
    index: usize,
    /// Whether that segment's first LSN was checked against `next_lsn`.
    checked: bool,
    /// The LSN the segment `index` must start at.
    next_lsn: u64,
    report: ReplayReport,
    apply: F,
}

impl<F> Replay<'_, F> {
    /// Takes the next piece; breaks with the replay's outcome when done.
    fn take<E>(&mut self, piece: Piece) -> ControlFlow<Result<ReplayReport, ReplayError<E>>>
    where
        F: FnMut(Vec<WalEntry>) -> Result<(), (u64, E)>,
    {
        let segment = &self.segments[self.index];
        if !self.checked {
            if segment.first_lsn != self.next_lsn {
                let reason = format!(
                    "segment starts at LSN {}, expected {}",
                    segment.first_lsn, self.next_lsn
                );
                return ControlFlow::Break(Err(corrupt(segment, 0, reason).into()));
            }
            self.checked = true;
        }
        match piece {
            Piece::Failed(error) => ControlFlow::Break(Err(error.into())),
            Piece::Entries(entries) => {
                debug_assert!(entries.windows(2).all(|w| w[1].lsn == w[0].lsn + 1));
                debug_assert!(entries
                    .iter()
                    .all(|e| (self.from_lsn..=self.until_lsn).contains(&e.lsn)));
                if let Some(first) = entries.first() {
                    self.report.first_lsn.get_or_insert(first.lsn);
                }
                self.report.records += entries.len() as u64;
                match (self.apply)(entries) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err((lsn, error)) => ControlFlow::Break(Err(ReplayError::Apply { lsn, error })),
                }
            }
            Piece::End { found, bytes } => match self.end_segment(found, bytes) {
                Ok(true) => ControlFlow::Continue(()),
                Ok(false) => ControlFlow::Break(Ok(std::mem::take(&mut self.report))),
                Err(error) => ControlFlow::Break(Err(error.into())),
            },
        }
    }

    /// The current segment was read to its end: checks how it ended, cuts
    /// a torn tail if it is the last, and says whether replay goes on.
    fn end_segment(&mut self, found: Scan, bytes: usize) -> Result<bool, WalError> {
        let segment = &self.segments[self.index];
        let report = &mut self.report;
        report.segments += 1;
        self.next_lsn = segment.first_lsn + found.records;
        if found.records > 0 {
            report.last_record = Some(RecordPlace {
                lsn: self.next_lsn - 1,
                path: segment.path.clone(),
                offset: (found.valid_bytes - found.last_record_bytes) as u64,
                len: found.last_record_bytes,
            });
        }
        if self.next_lsn > self.until_lsn {
            // Everything asked for was read; what follows is the live
            // writer's business.
            if report
                .last_record
                .as_ref()
                .is_some_and(|r| r.lsn != self.until_lsn)
            {
                report.last_record = None;
            }
            report.last_lsn = self.until_lsn;
            report.next_lsn = self.until_lsn + 1;
            return Ok(false);
        }
        let is_last = self.index + 1 == self.segments.len();
        match found.tail.in_segment(is_last) {
            Tail::Clean => {}
            Tail::Torn => {
                if self.mode == ReplayMode::Recover {
                    truncate(&segment.path, found.valid_bytes)?;
                }
                report.bytes_truncated = (bytes - found.valid_bytes) as u64;
                report.truncated_segment = Some(segment.path.clone());
                report.truncated_at = found.valid_bytes as u64;
            }
            Tail::Corrupt { reason } => return Err(corrupt(segment, found.valid_bytes, reason)),
        }
        if is_last {
            report.last_lsn = self.next_lsn - 1;
            report.next_lsn = self.next_lsn.max(self.from_lsn);
            return Ok(false);
        }
        self.index += 1;
        self.checked = false;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use std::convert::Infallible;

    use super::*;
    use crate::domain::event::Event;
    use crate::storage::wal::record::{self, tests::event};
    use crate::storage::wal::scan::tests::{encode, write_segment};
    use crate::storage::wal::segment::segment_path;

    fn replay_all(
        dir: &Path,
        from_lsn: u64,
    ) -> Result<(ReplayReport, Vec<(u64, Event)>), WalError> {
        let mut seen = Vec::new();
        let report = replay(dir, from_lsn, |entry| {
            assert_eq!(entry.at, record::tests::at(entry.lsn));
            seen.push((entry.lsn, entry.event));
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

    /// The replay says where the last record lies, past a torn tail it
    /// cut, so recovery can hash it without reading the segment again; a
    /// read-only replay stopped inside a segment knows no such place.
    #[test]
    fn the_replay_notes_where_the_last_whole_record_lies() {
        let tmp = tempfile::tempdir().unwrap();
        write_segment(tmp.path(), 1, &encode(1..=3).0);
        let (last, ends) = encode(4..=6);
        let torn = [&last[..], &last[..9]].concat();
        let path = write_segment(tmp.path(), 4, &torn);
        let (report, _) = replay_all(tmp.path(), 1).unwrap();
        let place = report.last_record.unwrap();
        let want = RecordPlace {
            lsn: 6,
            path,
            offset: ends[1] as u64,
            len: ends[2] - ends[1],
        };
        assert_eq!(place, want);
        assert_eq!(place.hash().unwrap(), record::hash(&last[ends[1]..]));
        let until = |lsn| ReplayMode::ReadOnly {
            until_lsn: Some(lsn),
        };
        let ignore = |_| Ok::<(), Infallible>(());
        let stopped = replay_with(tmp.path(), 1, until(5), ignore).unwrap();
        assert_eq!(stopped.last_record, None);
        let at_end = replay_with(tmp.path(), 1, until(3), ignore).unwrap();
        assert_eq!(at_end.last_record.map(|p| p.lsn), Some(3));
    }

    #[test]
    fn a_refused_entry_stops_the_replay_with_its_lsn() {
        let tmp = tempfile::tempdir().unwrap();
        write_segment(tmp.path(), 1, &encode(1..=3).0);
        let result = replay(tmp.path(), 1, |entry| {
            if entry.lsn == 2 {
                Err("no")
            } else {
                Ok(())
            }
        });
        assert!(matches!(
            result,
            Err(ReplayError::Apply {
                lsn: 2,
                error: "no"
            })
        ));
    }
}
