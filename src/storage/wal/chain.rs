//! Checking the hash chain over the whole log ([`verify_chain`], what
//! `burnledger verify --chain` runs), and finding the hash of one record
//! ([`record_hash_at`], how recovery learns the head the writer continues).
//!
//! Since format v6 every record carries the SHA-256 of the record before it
//! (see [`record`]). [`verify_chain`] walks every archived and kept segment
//! in LSN order and reports the first break: a record whose successor
//! records another hash than its own (its content, LSN or checksum was
//! changed), LSNs that do not continue (a segment missing), an unchained
//! record after the chain started, damage, or a snapshot whose stored head
//! is not the hash of the record at its LSN. Records before the first
//! chained one (a folder from before v6) cannot be checked: the report says
//! where the chain starts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::record::{self, Decoded, Hash, GENESIS};
use super::scan::read_segment;
use super::segment;
use super::WalError;
use crate::domain::feed::JournalHead;
use crate::storage::recovery::snapshot_dir;
use crate::storage::snapshot;

/// What [`verify_chain`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// Segment files read (archived and kept).
    pub segments: usize,
    /// Whole records read.
    pub records: u64,
    /// The first LSN read, if any.
    pub first_lsn: Option<u64>,
    /// The first record that carries its predecessor's hash (format v6).
    pub chained_from: Option<u64>,
    /// The last record read: its LSN and hash.
    pub head: JournalHead,
    /// Snapshots whose stored head was compared with the log.
    pub snapshots_checked: usize,
    /// The first break, naming the record; `None`: the chain holds.
    pub problem: Option<String>,
}

/// The record read last, which the next one must chain to.
struct Previous {
    lsn: u64,
    hash: Hash,
    file: PathBuf,
}

/// The walk over the log, record after record.
struct Walk {
    report: ChainReport,
    previous: Option<Previous>,
    /// Snapshot heads to compare, by LSN.
    snapshots: HashMap<u64, (PathBuf, Hash)>,
}

/// Checks the hash chain over `archive`'s segments (if given) and the
/// log's in `data_dir`, in LSN order, and the snapshots' stored heads. A
/// segment in both places (a crash while archiving) is read from the log.
/// Errors only when a folder cannot be read; a break is in the report.
pub fn verify_chain(data_dir: &Path, archive: Option<&Path>) -> Result<ChainReport, WalError> {
    let mut files = BTreeMap::new();
    if let Some(archive) = archive {
        files.extend(
            segment::list_in(archive)?
                .into_iter()
                .map(|s| (s.first_lsn, s.path)),
        );
    }
    files.extend(
        segment::list(data_dir)?
            .into_iter()
            .map(|s| (s.first_lsn, s.path)),
    );
    let mut walk = Walk {
        report: ChainReport::default(),
        previous: None,
        snapshots: snapshot_heads(data_dir)?,
    };
    let mut buf = Vec::new();
    let count = files.len();
    for (index, (first_lsn, path)) in files.into_iter().enumerate() {
        read_segment(&path, &mut buf)?;
        walk.report.segments += 1;
        if let Err(problem) = walk.segment(&path, first_lsn, &buf, index + 1 == count) {
            walk.report.problem = Some(problem);
            break;
        }
    }
    if let Some(previous) = &walk.previous {
        walk.report.head = JournalHead {
            lsn: previous.lsn,
            hash: previous.hash,
        };
    }
    Ok(walk.report)
}

/// The heads the snapshots in `data_dir` store, by LSN (damaged ones and
/// those from before format v6 have none: plain `verify` judges them). One
/// whose LSN the log no longer or not yet holds is not checked.
fn snapshot_heads(data_dir: &Path) -> Result<HashMap<u64, (PathBuf, Hash)>, WalError> {
    let dir = snapshot_dir(data_dir);
    let files = snapshot::list(&dir).map_err(|error| WalError::Io {
        path: dir.clone(),
        reason: error.to_string(),
    })?;
    let heads = files.into_iter().filter_map(|file| {
        let head = snapshot::read_full(&file.path).ok()?.head?;
        Some((file.lsn, (file.path, head)))
    });
    Ok(heads.collect())
}

impl Walk {
    /// Checks one segment's records against the chain so far.
    fn segment(
        &mut self,
        path: &Path,
        first_lsn: u64,
        bytes: &[u8],
        is_last: bool,
    ) -> Result<(), String> {
        let name = file_name(path);
        let expected = self.previous.as_ref().map_or(first_lsn, |p| p.lsn + 1);
        if first_lsn != expected {
            return Err(format!(
                "LSN gap: {name} starts at LSN {first_lsn} but LSN {expected} comes next: \
                 records {expected}..={} are missing (a segment deleted?)",
                first_lsn.saturating_sub(1)
            ));
        }
        let (mut offset, mut lsn) = (0, first_lsn);
        while offset < bytes.len() {
            let rest = &bytes[offset..];
            let len = match record::decode(rest, lsn) {
                Decoded::Complete { len, .. } => len,
                // What recovery would cut; plain `verify` reports it.
                Decoded::Torn if is_last => return Ok(()),
                _ if is_last && rest.iter().all(|&byte| byte == 0) => return Ok(()),
                Decoded::Torn => {
                    return Err(format!("LSN {lsn} in {name} at byte {offset}: cut short"))
                }
                Decoded::Corrupt { reason } => {
                    return Err(format!("LSN {lsn} in {name} at byte {offset}: {reason}"))
                }
            };
            self.record(path, lsn, &rest[..len], offset)?;
            offset += len;
            lsn += 1;
        }
        Ok(())
    }

    /// Checks one whole record (`bytes`, at `offset` in `path`) against its
    /// predecessor and any snapshot at its LSN, then makes it the
    /// predecessor.
    fn record(&mut self, path: &Path, lsn: u64, bytes: &[u8], offset: usize) -> Result<(), String> {
        let name = file_name(path);
        self.link(&name, lsn, bytes, offset)?;
        let hash = record::hash(bytes);
        self.snapshot_head(&name, lsn, &hash)?;
        self.report.first_lsn.get_or_insert(lsn);
        self.report.records += 1;
        self.previous = Some(Previous {
            lsn,
            hash,
            file: path.to_path_buf(),
        });
        Ok(())
    }

    /// Whether the record at `lsn` (`bytes`, at `offset` in the file
    /// `name`) carries its predecessor's hash: a chained record must, and
    /// once one did, every later record must be chained too.
    fn link(&mut self, name: &str, lsn: u64, bytes: &[u8], offset: usize) -> Result<(), String> {
        let Some(carried) = record::predecessor(bytes) else {
            return match self.report.chained_from {
                Some(from) => Err(format!(
                    "LSN {lsn} in {name} at byte {offset}: an unchained record after the chain \
                     started at LSN {from}"
                )),
                None => Ok(()),
            };
        };
        match &self.previous {
            Some(previous) if carried != previous.hash => Err(format!(
                "LSN {} in {}: its content does not match the hash LSN {lsn} records \
                 (in {name} at byte {offset}): one of the two was changed",
                previous.lsn,
                file_name(&previous.file)
            )),
            None if lsn == 1 && carried != GENESIS => Err(format!(
                "LSN 1 in {name}: the first record must chain to zeros, it records another hash"
            )),
            // Or the first record read, whose predecessor is not kept.
            _ => {
                self.report.chained_from.get_or_insert(lsn);
                Ok(())
            }
        }
    }

    /// Whether a snapshot at `lsn` stores `hash`, the hash of the record
    /// there (in the file `name`).
    fn snapshot_head(&mut self, name: &str, lsn: u64, hash: &Hash) -> Result<(), String> {
        let Some((snapshot, head)) = self.snapshots.remove(&lsn) else {
            return Ok(());
        };
        self.report.snapshots_checked += 1;
        if head == *hash {
            return Ok(());
        }
        Err(format!(
            "snapshot {} stores a head for LSN {lsn} that is not the hash of LSN {lsn} in \
             {name}: the record or the snapshot was changed",
            file_name(&snapshot)
        ))
    }
}

/// The hash of the record at `lsn` in `dir`'s log, `None` when the log
/// does not hold it whole. Reads the one segment that holds it, walking
/// its records by their lengths and checking only that one.
pub fn record_hash_at(dir: &Path, lsn: u64) -> Result<Option<Hash>, WalError> {
    let segments = segment::list(dir)?;
    let Some(holder) = segments.iter().rev().find(|s| s.first_lsn <= lsn) else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    read_segment(&holder.path, &mut bytes)?;
    let mut offset = 0usize;
    for _ in holder.first_lsn..lsn {
        let Some(header) = bytes.get(offset..offset + record::HEADER_BYTES) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        offset += record::HEADER_BYTES + len as usize;
    }
    let Some(rest) = bytes.get(offset..) else {
        return Ok(None);
    };
    Ok(match record::decode(rest, lsn) {
        Decoded::Complete { len, .. } => Some(record::hash(&rest[..len])),
        _ => None,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::wal::record::tests::stamped;
    use crate::storage::wal::scan::tests::{encode, write_segment};

    /// Records `lsns` chained from `previous`; the bytes and the last hash.
    fn chained(lsns: std::ops::RangeInclusive<u64>, mut previous: Hash) -> (Vec<u8>, Hash) {
        let mut bytes = Vec::new();
        for lsn in lsns {
            let start = bytes.len();
            record::encode_chained_into(&mut bytes, lsn, &previous, &stamped(lsn)).unwrap();
            previous = record::hash(&bytes[start..]);
        }
        (bytes, previous)
    }

    #[test]
    fn an_intact_chain_across_segments_verifies_from_where_it_starts() {
        let tmp = tempfile::tempdir().unwrap();
        let (old, ends) = encode(1..=3);
        let third = &old[ends[1]..ends[2]];
        let (first, head) = chained(4..=6, record::hash(third));
        let (second, head) = chained(7..=9, head);
        write_segment(tmp.path(), 1, &old);
        write_segment(tmp.path(), 4, &first);
        write_segment(tmp.path(), 7, &second);
        let report = verify_chain(tmp.path(), None).unwrap();
        assert_eq!(report.problem, None);
        assert_eq!(
            (report.records, report.first_lsn, report.chained_from),
            (9, Some(1), Some(4))
        );
        assert_eq!(report.head, JournalHead { lsn: 9, hash: head });
        assert_eq!(record_hash_at(tmp.path(), 9).unwrap(), Some(head));
        assert_eq!(
            record_hash_at(tmp.path(), 3).unwrap(),
            Some(record::hash(third))
        );
        assert_eq!(record_hash_at(tmp.path(), 10).unwrap(), None);
    }

    #[test]
    fn an_unchained_record_after_the_chain_or_a_first_record_not_chained_to_zeros_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, _) = chained(1..=3, GENESIS);
        write_segment(tmp.path(), 1, &first);
        write_segment(tmp.path(), 4, &encode(4..=4).0);
        let problem = verify_chain(tmp.path(), None).unwrap().problem.unwrap();
        assert!(
            problem.starts_with("LSN 4 in 00000000000000000004.wal at byte 0: an unchained record"),
            "{problem}"
        );

        let tmp = tempfile::tempdir().unwrap();
        write_segment(tmp.path(), 1, &chained(1..=2, [1; 32]).0);
        let problem = verify_chain(tmp.path(), None).unwrap().problem.unwrap();
        assert!(
            problem.starts_with("LSN 1 in 00000000000000000001.wal"),
            "{problem}"
        );
    }
}
