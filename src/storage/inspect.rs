//! The read-only way into a data folder from outside the crate: a
//! [`ReadOnlyFolder`], then [`inspect`](ReadOnlyFolder::inspect) (its WAL
//! segments and snapshots, each checked) or
//! [`verify`](ReadOnlyFolder::verify) (its state rebuilt read-only and
//! audited, and its history store checked against its log: see
//! [`crate::storage::history_check`]). Nothing here opens a ledger or changes a byte; the `burnledger
//! inspect` and `verify` commands are these plus printing.
//!
//! Both judge a folder by the rules opening a ledger applies (the WAL's
//! recovery rule, snapshot fallback), so they say the same thing about the
//! same damage. A folder that cannot be judged — missing, holding no
//! ledger, unreadable — is a [`ReadError`]. An open `ReadOnlyFolder` holds
//! the folder's lock *shared*, so no ledger opens on it meanwhile; opened
//! [`beside_ledger`](ReadOnlyFolder::beside_ledger) it can also be a folder
//! a running ledger holds (inspect says so), while
//! [`at_rest`](ReadOnlyFolder::at_rest) refuses that (verify's rule: a live
//! log's last batch may be half-written).

use std::path::{Path, PathBuf};

use crate::domain::audit::{audit, Audit};
use crate::domain::money::{Currencies, CurrencyConfig};
use crate::domain::payouts::all_mismatches;
use crate::storage::data_dir::{holds_ledger, CurrencyTable, DataDirLock, LockError};
use crate::storage::history_check;
use crate::storage::recovery::{rebuild, snapshot_dir, RecoveryError};
use crate::storage::snapshot::{self, SnapshotError};
use crate::storage::wal::{self, ReplayMode, WalError};

// The types the reports are made of, so that this module is all a reader
// outside the crate needs.
pub use crate::storage::history_check::HistoryCheck;
pub use crate::storage::recovery::RecoveryReport;
pub use crate::storage::snapshot::SnapshotFile;
pub use crate::storage::wal::SegmentInfo;

/// Why a folder could not be judged at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{} is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error("cannot read data folder {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    /// "Nothing wrong" must never be said of a mistyped path.
    #[error("{} holds no ledger (no currency table, WAL segment or snapshot)", .0.display())]
    NoLedger(PathBuf),
    /// [`ReadOnlyFolder::at_rest`] refuses a folder a ledger holds.
    #[error("{0}; verify judges a folder at rest: stop the ledger first, or verify a copy")]
    InUse(LockError),
    #[error(transparent)]
    Lock(LockError),
    /// The currencies given do not agree with the folder's table, or the
    /// table cannot be read.
    #[error("{0}")]
    Currencies(String),
    #[error(transparent)]
    Wal(WalError),
    #[error(transparent)]
    Snapshot(SnapshotError),
}

/// What [`ReadOnlyFolder::inspect`] found.
#[derive(Debug)]
pub struct FolderReport {
    /// Held by a running ledger: listed anyway, but the newest segment's
    /// tail may be a write in progress. `Some(pid)` when the holder wrote
    /// its pid.
    pub in_use: Option<Option<u32>>,
    pub wal_dir: PathBuf,
    /// Oldest first, each with its problem if it has one.
    pub segments: Vec<SegmentInfo>,
    pub snapshot_dir: PathBuf,
    /// Newest first.
    pub snapshots: Vec<SnapshotCheck>,
}

/// One snapshot file and whether it reads back.
#[derive(Debug)]
pub struct SnapshotCheck {
    pub file: SnapshotFile,
    /// The number of accounts it holds, or why it is damaged.
    pub accounts: Result<usize, String>,
}

impl FolderReport {
    /// No segment has a problem and every snapshot reads back: opening the
    /// ledger would cut, skip and refuse nothing.
    pub fn is_healthy(&self) -> bool {
        self.segments.iter().all(|s| s.problem.is_none())
            && self.snapshots.iter().all(|s| s.accounts.is_ok())
    }
}

/// A data folder that exists and holds a ledger, opened for reading; no
/// ledger opens on it while this lives, unless one already ran there.
pub struct ReadOnlyFolder {
    dir: PathBuf,
    /// `None` when a running ledger holds the folder.
    _reading: Option<DataDirLock>,
    /// The running ledger's pid, when there is one (and it wrote it).
    in_use: Option<Option<u32>>,
}

impl ReadOnlyFolder {
    /// Opens `dir`; refuses it while a ledger holds it.
    pub fn at_rest(dir: &Path) -> Result<Self, ReadError> {
        ledger_folder(dir)?;
        let reading = DataDirLock::shared(dir).map_err(|error| match error {
            LockError::InUse { .. } => ReadError::InUse(error),
            other => ReadError::Lock(other),
        })?;
        Ok(Self::new(dir, reading, None))
    }

    /// Opens `dir`, even while a ledger holds it (then the newest segment's
    /// tail may be a write in progress).
    pub fn beside_ledger(dir: &Path) -> Result<Self, ReadError> {
        ledger_folder(dir)?;
        match DataDirLock::shared(dir) {
            Ok(reading) => Ok(Self::new(dir, reading, None)),
            Err(LockError::InUse { pid, .. }) => Ok(Self::new(dir, None, Some(pid))),
            Err(error) => Err(ReadError::Lock(error)),
        }
    }

    fn new(dir: &Path, reading: Option<DataDirLock>, in_use: Option<Option<u32>>) -> Self {
        Self {
            dir: dir.to_path_buf(),
            _reading: reading,
            in_use,
        }
    }

    /// Lists the folder's WAL segments and snapshots, checking each.
    pub fn inspect(&self) -> Result<FolderReport, ReadError> {
        let dir = &self.dir;
        let segments = wal::inspect(dir).map_err(ReadError::Wal)?;
        let snapshots = snapshot::list(&snapshot_dir(dir)).map_err(ReadError::Snapshot)?;
        let snapshots = snapshots
            .into_iter()
            .map(|file| SnapshotCheck {
                accounts: snapshot::read(&file.path)
                    .map(|(_, accounts)| accounts.len())
                    .map_err(|e| e.to_string()),
                file,
            })
            .collect();
        Ok(FolderReport {
            in_use: self.in_use,
            wal_dir: wal::wal_dir(dir),
            segments,
            snapshot_dir: snapshot_dir(dir),
            snapshots,
        })
    }

    /// Rebuilds the folder's state read-only and audits it. Amounts are
    /// read at the scale the folder's currency table recorded;
    /// `configured`, if given, must agree with the table as opening a
    /// ledger would require. A folder from before currency tables is read
    /// with `configured`, or else `without_table`.
    pub fn verify(
        &self,
        configured: Option<&[CurrencyConfig]>,
        without_table: &[CurrencyConfig],
    ) -> Result<VerifyReport, ReadError> {
        if let Some(pid) = self.in_use {
            let path = self.dir.clone();
            return Err(ReadError::InUse(LockError::InUse { path, pid }));
        }
        let dir = &self.dir;
        let currencies = registry(dir, configured, without_table).map_err(ReadError::Currencies)?;
        let rebuilt = match rebuild(dir, &currencies, ReplayMode::ReadOnly { until_lsn: None }) {
            Ok(rebuilt) => rebuilt,
            // Reading failed: nothing was judged.
            Err(RecoveryError::Wal(error @ WalError::Io { .. })) => {
                return Err(ReadError::Wal(error))
            }
            Err(RecoveryError::Snapshot(error @ SnapshotError::Io { .. })) => {
                return Err(ReadError::Snapshot(error))
            }
            Err(error) => {
                return Ok(VerifyReport::Unrecoverable {
                    reason: error.to_string(),
                })
            }
        };
        let history = history_check::check(dir, &currencies, &rebuilt.accounts);
        let states: Vec<_> = rebuilt.accounts.into_values().collect();
        let mut audit = audit(&states);
        audit.add_payout_mismatches(all_mismatches(rebuilt.payouts.values()));
        Ok(VerifyReport::Rebuilt(Box::new(Rebuilt {
            recovery: rebuilt.report,
            audit,
            history,
        })))
    }
}

/// What [`ReadOnlyFolder::verify`] found.
#[derive(Debug)]
pub enum VerifyReport {
    /// The state does not rebuild (a corrupt record, an event that does
    /// not apply, a broken invariant); opening the ledger would refuse it.
    Unrecoverable {
        reason: String,
    },
    Rebuilt(Box<Rebuilt>),
}

/// A state that rebuilt, and its audit.
#[derive(Debug)]
pub struct Rebuilt {
    /// What the read-only rebuild did; a torn tail in it is what opening
    /// the ledger would cut.
    pub recovery: RecoveryReport,
    /// The rebuilt state's audit, payout mismatches included.
    pub audit: Audit,
    /// The history store checked against the log.
    pub history: HistoryCheck,
}

impl VerifyReport {
    /// The state rebuilds whole, nothing would be cut or skipped, and the
    /// audit is clean.
    pub fn is_clean(&self) -> bool {
        match self {
            Self::Unrecoverable { .. } => false,
            Self::Rebuilt(rebuilt) => {
                rebuilt.audit.is_clean()
                    && rebuilt.history.is_clean()
                    && rebuilt.recovery.truncated_segment.is_none()
                    && rebuilt.recovery.damaged_snapshots.is_empty()
            }
        }
    }
}

/// Refuses a folder that does not exist or holds no ledger.
fn ledger_folder(dir: &Path) -> Result<(), ReadError> {
    let unreadable = |reason: String| ReadError::Unreadable {
        path: dir.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(dir).map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_dir() {
        return Err(ReadError::NotAFolder(dir.to_path_buf()));
    }
    if !holds_ledger(dir).map_err(|e| unreadable(e.to_string()))? {
        return Err(ReadError::NoLedger(dir.to_path_buf()));
    }
    Ok(())
}

/// The currencies `verify` reads the folder with: its table's, checked
/// against `configured` when given (a changed scale is refused, as an open
/// would refuse it).
fn registry(
    dir: &Path,
    configured: Option<&[CurrencyConfig]>,
    without_table: &[CurrencyConfig],
) -> Result<Currencies, String> {
    let Some(table) = CurrencyTable::read(dir).map_err(|e| e.to_string())? else {
        return Currencies::new(configured.unwrap_or(without_table));
    };
    let Some(configured) = configured else {
        return table.registry();
    };
    let registry = Currencies::new(configured)?;
    let (merged, _) =
        CurrencyTable::reconcile(Some(&table), &registry).map_err(|e| e.to_string())?;
    merged.registry()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::account::AccountState;
    use crate::domain::money::usd;
    use crate::storage::wal::{WalConfig, WalHandle};

    /// A folder whose log holds one deposit of 1.00 USD.
    async fn folder_with_a_deposit() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let at = crate::domain::time::UnixMs::from_millis(1_767_225_600_000);
        let effect = AccountState::new(1).deposit(usd(), 100, None, at).unwrap();
        let wal = WalHandle::open(WalConfig::new(tmp.path()), 1).unwrap();
        let stamped = crate::domain::event::Stamped {
            at,
            event: effect.event.unwrap(),
        };
        assert_eq!(wal.append(vec![stamped]).await, Ok(1));
        wal.shutdown().unwrap();
        tmp
    }

    #[tokio::test]
    async fn a_folder_a_ledger_holds_is_listed_beside_it_but_never_verified() {
        let tmp = folder_with_a_deposit().await;
        let dir = tmp.path();
        let usd_only = [CurrencyConfig::new("USD", 2)];
        let ledger = DataDirLock::exclusive(dir).unwrap();

        assert!(matches!(
            ReadOnlyFolder::at_rest(dir),
            Err(ReadError::InUse(LockError::InUse { .. }))
        ));
        let beside = ReadOnlyFolder::beside_ledger(dir).unwrap();
        let listed = beside.inspect().unwrap();
        assert_eq!(listed.in_use, Some(Some(std::process::id())));
        assert_eq!(listed.segments[0].last_lsn, Some(1));
        let at = crate::domain::time::UnixMs::from_millis(1_767_225_600_000);
        assert_eq!(listed.segments[0].times, Some((at, at)));
        assert_eq!(listed.segments[0].untimed_records, 0);
        assert!(listed.is_healthy());
        assert!(matches!(
            beside.verify(None, &usd_only),
            Err(ReadError::InUse(_))
        ));

        drop((beside, ledger));
        let at_rest = ReadOnlyFolder::at_rest(dir).unwrap();
        assert_eq!(at_rest.inspect().unwrap().in_use, None);
        let VerifyReport::Rebuilt(rebuilt) = at_rest.verify(None, &usd_only).unwrap() else {
            panic!("a sound folder rebuilds");
        };
        assert_eq!((rebuilt.recovery.last_lsn, rebuilt.audit.accounts), (1, 1));
        assert!(rebuilt.audit.is_clean());
    }

    #[test]
    fn a_missing_folder_or_one_without_a_ledger_cannot_be_read() {
        let empty = tempfile::tempdir().unwrap();
        let missing = empty.path().join("missing");
        assert!(matches!(
            ReadOnlyFolder::beside_ledger(&missing),
            Err(ReadError::Unreadable { .. })
        ));
        assert!(matches!(
            ReadOnlyFolder::at_rest(empty.path()),
            Err(ReadError::NoLedger(_))
        ));
    }
}
