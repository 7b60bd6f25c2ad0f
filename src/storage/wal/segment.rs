//! Segment files: their names, listing them in LSN order, creating the one
//! being written, and retiring those a snapshot made unnecessary (deleting
//! them, or moving them to an archive folder, [`retire_segments_below`]);
//! and [`FailPoint`], the hook tests use to make writes and syncs fail.
//!
//! A segment's name is the LSN of its first record, so the folder listing
//! alone tells which segments cover which LSNs, without opening any.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::WalError;

const EXTENSION: &str = "wal";
const NAME_DIGITS: usize = 20;

/// The log's folder inside the ledger's data folder `dir`.
pub fn wal_dir(dir: &Path) -> PathBuf {
    dir.join("wal")
}

/// Where the segment starting at `first_lsn` lives.
pub fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    wal_dir(dir).join(format!("{first_lsn:0NAME_DIGITS$}.{EXTENSION}"))
}

/// A segment file found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub first_lsn: u64,
    pub path: PathBuf,
}

/// Every segment in `dir`'s log, in LSN order; none if the folder is absent.
///
/// Files without the `.wal` extension are ignored; a `.wal` file whose name
/// is not an LSN is an error, because skipping it could skip log records.
pub(crate) fn list(dir: &Path) -> Result<Vec<Segment>, WalError> {
    list_in(&wal_dir(dir))
}

/// Every segment file directly in `folder` (a log's `wal/` folder, or an
/// archive), in LSN order, as [`list`] reads them.
pub(crate) fn list_in(folder: &Path) -> Result<Vec<Segment>, WalError> {
    let wal = folder.to_path_buf();
    let entries = match fs::read_dir(&wal) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(WalError::io(&wal, &error)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let path = entry.map_err(|error| WalError::io(&wal, &error))?.path();
        if path.extension().and_then(|ext| ext.to_str()) != Some(EXTENSION) {
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or("");
        let first_lsn = match stem.parse::<u64>() {
            Ok(lsn) if stem.len() == NAME_DIGITS => lsn,
            _ => {
                return Err(WalError::Corrupt {
                    path,
                    offset: 0,
                    reason: "segment name is not a 20-digit LSN".to_owned(),
                })
            }
        };
        segments.push(Segment { first_lsn, path });
    }
    segments.sort_by_key(|segment| segment.first_lsn);
    Ok(segments)
}

/// Makes a file's creation or removal in `dir` survive a crash.
/// The first LSN the log in `dir` holds (its oldest segment's), `None`
/// when it has no segment.
pub fn first_lsn(dir: &Path) -> Result<Option<u64>, WalError> {
    Ok(list(dir)?.first().map(|segment| segment.first_lsn))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|folder| folder.sync_all())
        .map_err(|error| WalError::io(dir, &error))
}

/// Deletes the segments whose every record has an LSN below `lsn`, and
/// returns how many. A segment qualifies when the next one starts at or
/// before `lsn`; the last segment never does, as the writer may be using it
/// and its name is what tells the next LSN of an otherwise empty log.
pub fn delete_segments_below(dir: &Path, lsn: u64) -> Result<usize, WalError> {
    retire_segments_below(dir, lsn, None)
}

/// [`delete_segments_below`], moving the segments into the folder
/// `archive` instead when one is given (created if missing), so the hash
/// chain stays checkable end to end (`verify --chain --archive-dir`).
///
/// A segment is never lost on a crash in between: it is renamed into the
/// archive (one step on one file system) or, across file systems, copied
/// to a temporary name there, synced, renamed, the archive folder synced,
/// and only then removed from the log. A crash may leave a segment in both
/// places, which is harmless (the same bytes; a later retirement replaces
/// the archived copy).
pub fn retire_segments_below(
    dir: &Path,
    lsn: u64,
    archive: Option<&Path>,
) -> Result<usize, WalError> {
    if let Some(archive) = archive {
        fs::create_dir_all(archive).map_err(|error| WalError::io(archive, &error))?;
    }
    let segments = list(dir)?;
    let mut retired = 0;
    // Oldest first, so a crash midway leaves a log with no holes.
    for pair in segments.windows(2) {
        if pair[1].first_lsn > lsn {
            break;
        }
        match archive {
            Some(archive) => move_to_archive(&pair[0].path, archive)?,
            None => fs::remove_file(&pair[0].path)
                .map_err(|error| WalError::io(&pair[0].path, &error))?,
        }
        retired += 1;
    }
    if retired > 0 {
        sync_dir(&wal_dir(dir))?;
    }
    Ok(retired)
}

/// Moves the segment at `path` into `archive` durably (see
/// [`retire_segments_below`]): a rename, or a copy across file systems.
fn move_to_archive(path: &Path, archive: &Path) -> Result<(), WalError> {
    let target = archive.join(path.file_name().unwrap_or_default());
    match fs::rename(path, &target) {
        Ok(()) => sync_dir(archive),
        Err(error) if error.kind() == io::ErrorKind::CrossesDevices => {
            copy_to_archive(path, &target)
        }
        Err(error) => Err(WalError::io(path, &error)),
    }
}

/// Copies the segment at `path` to `target` in another file system: to a
/// temporary name, synced, renamed, the folder synced; only then is the
/// original removed, so a crash leaves it in one place or both.
fn copy_to_archive(path: &Path, target: &Path) -> Result<(), WalError> {
    fn io(at: &Path) -> impl Fn(io::Error) -> WalError + '_ {
        move |error| WalError::io(at, &error)
    }
    let temporary = target.with_extension("wal.tmp");
    fs::copy(path, &temporary).map_err(io(&temporary))?;
    File::open(&temporary)
        .and_then(|copy| copy.sync_all())
        .map_err(io(&temporary))?;
    fs::rename(&temporary, target).map_err(io(target))?;
    sync_dir(target.parent().unwrap_or(Path::new(".")))?;
    fs::remove_file(path).map_err(io(path))
}

/// Makes the writer's file operations fail on command, so tests can prove
/// what a failed write or sync does; it also counts syncs, so tests can see
/// when data was made durable. Production code leaves it untouched: the
/// cost is an atomic load per write and per sync.
#[derive(Clone, Debug, Default)]
pub struct FailPoint {
    inner: Arc<FailPointState>,
}

#[derive(Debug, Default)]
struct FailPointState {
    fail_writes: AtomicBool,
    fail_syncs: AtomicBool,
    syncs: AtomicU64,
}

impl FailPoint {
    /// While on, every write of the log fails.
    pub fn fail_writes(&self, on: bool) {
        self.inner.fail_writes.store(on, Ordering::SeqCst);
    }

    /// While on, every sync of the log fails.
    pub fn fail_syncs(&self, on: bool) {
        self.inner.fail_syncs.store(on, Ordering::SeqCst);
    }

    /// Successful syncs of segment data so far.
    pub fn syncs(&self) -> u64 {
        self.inner.syncs.load(Ordering::SeqCst)
    }

    fn check(flag: &AtomicBool, what: &str) -> io::Result<()> {
        if flag.load(Ordering::SeqCst) {
            return Err(io::Error::other(format!("injected {what} failure")));
        }
        Ok(())
    }
}

/// The segment the writer appends to.
pub(crate) struct ActiveSegment {
    file: File,
    pub path: PathBuf,
    /// Bytes in the file, to know when to start the next segment.
    pub bytes: u64,
    fail_point: FailPoint,
}

impl ActiveSegment {
    /// Creates the segment starting at `first_lsn` and syncs the folder, so
    /// the file cannot vanish after records in it were acknowledged. An
    /// existing empty file of that name (a crash right after creating it)
    /// is taken over; a non-empty one is refused, as appending after its
    /// content would break the LSN sequence.
    pub fn create(dir: &Path, first_lsn: u64, fail_point: FailPoint) -> Result<Self, WalError> {
        let path = segment_path(dir, first_lsn);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|error| WalError::io(&path, &error))?;
        let bytes = file
            .metadata()
            .map_err(|error| WalError::io(&path, &error))?
            .len();
        if bytes != 0 {
            return Err(WalError::Corrupt {
                path,
                offset: 0,
                reason: format!(
                    "segment for LSN {first_lsn} already holds data; replay the log first"
                ),
            });
        }
        sync_dir(&wal_dir(dir))?;
        Ok(Self {
            file,
            path,
            bytes,
            fail_point,
        })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        FailPoint::check(&self.fail_point.inner.fail_writes, "write")
            .and_then(|()| self.file.write_all(bytes))
            .map_err(|error| WalError::io(&self.path, &error))?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// `fdatasync`: the data and the file size, not the timestamps.
    pub fn sync(&mut self) -> Result<(), WalError> {
        FailPoint::check(&self.fail_point.inner.fail_syncs, "sync")
            .and_then(|()| self.file.sync_data())
            .map_err(|error| WalError::io(&self.path, &error))?;
        self.fail_point.inner.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, lsn: u64) {
        fs::create_dir_all(wal_dir(dir)).unwrap();
        fs::write(segment_path(dir, lsn), b"x").unwrap();
    }

    #[test]
    fn names_are_twenty_digit_lsns_listed_in_lsn_order() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(
            segment_path(tmp.path(), 42).file_name().unwrap(),
            "00000000000000000042.wal"
        );
        for lsn in [900, 1, 30] {
            touch(tmp.path(), lsn);
        }
        fs::write(wal_dir(tmp.path()).join("notes.txt"), b"").unwrap();
        let lsns: Vec<u64> = list(tmp.path())
            .unwrap()
            .iter()
            .map(|s| s.first_lsn)
            .collect();
        assert_eq!(lsns, [1, 30, 900]);
    }

    #[test]
    fn a_wal_file_with_a_foreign_name_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        touch(tmp.path(), 1);
        fs::write(wal_dir(tmp.path()).join("7.wal"), b"").unwrap();
        assert!(matches!(list(tmp.path()), Err(WalError::Corrupt { .. })));
    }

    #[test]
    fn missing_folder_lists_no_segments() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(list(tmp.path()).unwrap(), []);
    }

    #[test]
    fn deletes_only_segments_wholly_below_the_lsn_and_never_the_last() {
        let tmp = tempfile::tempdir().unwrap();
        for lsn in [1, 10, 20] {
            touch(tmp.path(), lsn);
        }
        // Segment 10 holds 10..=19: LSN 15 still needs it.
        assert_eq!(delete_segments_below(tmp.path(), 15).unwrap(), 1);
        let left = |dir| -> Vec<u64> { list(dir).unwrap().iter().map(|s| s.first_lsn).collect() };
        assert_eq!(left(tmp.path()), [10, 20]);
        assert_eq!(delete_segments_below(tmp.path(), u64::MAX).unwrap(), 1);
        assert_eq!(left(tmp.path()), [20]);
    }

    #[test]
    fn retiring_into_an_archive_moves_what_deleting_would_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("archive");
        for lsn in [1, 10, 20] {
            touch(tmp.path(), lsn);
        }
        // A copy left in both places by a crash is replaced, not refused.
        fs::create_dir_all(&archive).unwrap();
        fs::write(archive.join("00000000000000000001.wal"), b"old").unwrap();
        assert_eq!(
            retire_segments_below(tmp.path(), 15, Some(&archive)).unwrap(),
            1
        );
        let lsns =
            |segments: Vec<Segment>| -> Vec<u64> { segments.iter().map(|s| s.first_lsn).collect() };
        assert_eq!(lsns(list(tmp.path()).unwrap()), [10, 20]);
        assert_eq!(lsns(list_in(&archive).unwrap()), [1]);
        assert_eq!(
            fs::read(archive.join("00000000000000000001.wal")).unwrap(),
            b"x"
        );
        assert_eq!(
            retire_segments_below(tmp.path(), u64::MAX, Some(&archive)).unwrap(),
            1
        );
        assert_eq!(lsns(list_in(&archive).unwrap()), [1, 10]);
        assert_eq!(lsns(list(tmp.path()).unwrap()), [20]);
    }

    /// Across file systems (where a rename fails) the segment is copied
    /// whole, under its own name, and only then removed from the log.
    #[test]
    fn a_copy_into_the_archive_lands_whole_before_the_original_goes() {
        let tmp = tempfile::tempdir().unwrap();
        touch(tmp.path(), 1);
        let archive = tmp.path().join("archive");
        fs::create_dir_all(&archive).unwrap();
        let source = segment_path(tmp.path(), 1);
        let target = archive.join("00000000000000000001.wal");
        copy_to_archive(&source, &target).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"x");
        assert!(!source.exists());
        let left: Vec<_> = fs::read_dir(&archive)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(left, [target], "no temporary file left");
    }

    #[test]
    fn create_takes_over_an_empty_file_but_refuses_one_with_data() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(wal_dir(tmp.path())).unwrap();
        fs::write(segment_path(tmp.path(), 5), b"").unwrap();
        let mut segment = ActiveSegment::create(tmp.path(), 5, FailPoint::default()).unwrap();
        segment.write_all(b"abc").unwrap();
        assert_eq!(segment.bytes, 3);
        let err = ActiveSegment::create(tmp.path(), 5, FailPoint::default()).err();
        assert!(matches!(err, Some(WalError::Corrupt { .. })), "{err:?}");
    }

    #[test]
    fn fail_point_fails_writes_and_syncs_on_command() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(wal_dir(tmp.path())).unwrap();
        let fail_point = FailPoint::default();
        let mut segment = ActiveSegment::create(tmp.path(), 1, fail_point.clone()).unwrap();
        fail_point.fail_writes(true);
        assert!(segment.write_all(b"abc").is_err());
        fail_point.fail_syncs(true);
        assert!(segment.sync().is_err());
        fail_point.fail_syncs(false);
        segment.sync().unwrap();
        assert_eq!(fail_point.syncs(), 1);
    }
}
