//! The handle's view of its storage: a snapshot on demand, the
//! write-ahead log's statistics and how the state was recovered at open.

use crate::error::LedgerError;
use crate::ledger::Ledger;
use crate::storage::recovery::RecoveryReport;
use crate::storage::snapshot::SnapshotFile;
use crate::storage::wal::{WalHandle, WalStatsSnapshot};

impl Ledger {
    /// Takes a snapshot now (built from the log, without pausing anything)
    /// and returns it; `None` when nothing was logged since the last one or
    /// the ledger keeps no log.
    #[tracing::instrument(level = "debug", name = "ledger.snapshot", skip_all)]
    pub async fn snapshot(&self) -> Result<Option<SnapshotFile>, LedgerError> {
        self.engine().snapshot().await
    }

    /// The write-ahead log's fsync counts and latencies; `None` when the
    /// ledger keeps no log.
    pub fn wal_stats(&self) -> Option<WalStatsSnapshot> {
        self.engine().journal.wal().map(WalHandle::stats)
    }

    /// How the state was rebuilt from disk when this ledger opened.
    pub fn recovery_report(&self) -> Option<&RecoveryReport> {
        self.engine().recovery.as_ref()
    }
}
