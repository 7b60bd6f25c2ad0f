//! The history store: an on-disk, queryable record of what the log says
//! happened — withdrawals (with their status, payout and times), every
//! balance change per account and currency (entries), deposits and
//! transfers (transactions) and payouts — kept in `<data_dir>/history/` (a
//! `fjall` database; the choice and its figures are in
//! `benches/history_store_choice/README.md`).
//!
//! It owns the rows, their keys, ingest and queries; it knows nothing of
//! events or actors: a follower of the log turns committed batches into
//! [`Change`]s and calls [`HistoryStore::ingest`] with the last LSN they
//! cover. The log is the durable copy, so ingest does not fsync, nor even
//! hand its journal to the OS (fjall's manual journal persist): the store
//! keeps an "applied up to LSN" watermark written atomically with each
//! ingest, [`HistoryStore::persist`] writes it all to disk when the
//! checkpointer asks, and after a crash the follower re-feeds the log from
//! [`HistoryStore::applied_lsn`]; batches at or below the watermark are
//! skipped (ingest is idempotent).
//!
//! Amounts are integer minor units with their currency code; times are
//! milliseconds since the epoch, given by the caller.
//!
//! ## Layout
//! - `rows.rs` — the row types callers write and read, and [`Change`].
//! - `schema.rs` — keyspaces, key layouts and value encoding.
//! - `entry_value.rs` — an entry key's value: a balance's changes, each
//!   after the first as what the one before it does not say.
//! - `ingest.rs` — applying a run of changes with the watermark, collapsed
//!   per row, without reading the store when the changes say what it holds;
//!   the buffers one run leaves, emptied, to the next.
//! - `query.rs` — listings and look-ups, read from one snapshot each.
//! - `scan.rs` — index range scans, merged in key order, into pages.
//! - `cursor.rs` — opaque page cursors and index ranges.
//! - `reader.rs` — [`HistoryReader`], the store plus its follower's progress,
//!   for reads that wait for what was acknowledged before them.
//! - `format.rs` — the format marker: checked at every open, stamped by
//!   the opener that writes.
//! - `error.rs` — [`HistoryError`].

mod cursor;
mod entry_value;
mod error;
mod format;
mod ingest;
mod query;
mod reader;
mod rows;
mod scan;
mod schema;

use std::path::{Path, PathBuf};

pub use error::HistoryError;
pub use format::FORMAT;
pub use ingest::IngestReport;
pub use query::{Order, Page, PayoutQuery, WithdrawalQuery, PAGE_LIMIT_MAX};
pub use reader::HistoryReader;
pub use rows::{
    BalanceAt, Change, EntryKind, EntryRow, PayoutItemRow, PayoutRow, TransactionKind,
    TransactionRecord, TransactionRow, WithdrawalIndex, WithdrawalRow,
};

/// fjall's background threads: one flush and one compaction at a time (its
/// default is one per core up to four, on a machine the engine shares).
const FJALL_WORKERS: usize = 2;

/// The history store of one data folder. Cheap to share behind an `Arc`:
/// ingest and queries may run on different threads at once.
pub struct HistoryStore {
    db: fjall::Database,
    ks: schema::Keyspaces,
    /// Serialises ingest (the watermark check and the batch commit are one
    /// step), and holds the buffers one ingest leaves to the next.
    kept: parking_lot::Mutex<ingest::Kept>,
    /// The watermark as last committed (read from disk once, at open).
    applied: std::sync::atomic::AtomicU64,
    /// Whether the store lacks part of the log (see `ingest.rs`).
    incomplete: std::sync::atomic::AtomicBool,
}

impl HistoryStore {
    /// The folder of the history store inside a ledger's data folder.
    pub fn dir_in(data_dir: &Path) -> PathBuf {
        data_dir.join("history")
    }

    /// Opens (or creates) the store at `<data_dir>/history/`.
    pub fn open(data_dir: &Path) -> Result<Self, HistoryError> {
        Self::open_at(&Self::dir_in(data_dir))
    }

    /// Opens (or creates) the store in `dir` itself.
    pub fn open_at(dir: &Path) -> Result<Self, HistoryError> {
        // The journal is written to the OS only when asked (persist): the
        // log is the durable copy, and a crash re-feeds what was lost.
        let db = fjall::Database::builder(dir)
            .manual_journal_persist(true)
            .worker_threads(FJALL_WORKERS)
            .open()?;
        let ks = schema::Keyspaces::open(&db)?;
        format::check(&ks)?;
        let applied = Self::stored_watermark(&ks)?;
        let incomplete = Self::stored_incomplete(&ks)?;
        Ok(Self {
            db,
            ks,
            kept: parking_lot::Mutex::default(),
            applied: applied.into(),
            incomplete: incomplete.into(),
        })
    }

    /// Writes everything ingested so far to disk (fsync). Not needed for
    /// correctness (the log is the durable copy); it bounds how much of the
    /// log a restart must re-feed.
    pub fn persist(&self) -> Result<(), HistoryError> {
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    /// Every withdrawal and payout index key, tagged by keyspace, in order.
    #[cfg(test)]
    pub(crate) fn index_keys(&self) -> Vec<(&'static str, Vec<u8>)> {
        use schema::Ks;
        let mut out = Vec::new();
        let spaces = [
            (Ks::WByAccount, "account"),
            (Ks::WByStatus, "status"),
            (Ks::WByPayout, "payout"),
            (Ks::PByState, "payout state"),
        ];
        for (ks, name) in spaces {
            for guard in self.ks.get(ks).iter() {
                let key = guard.key().unwrap_or_else(|e| panic!("{e}"));
                out.push((name, key.to_vec()));
            }
        }
        out
    }

    /// Writes (removals included) the keyspaces' memtables hold: what
    /// ingest wrote, while nothing was flushed.
    #[cfg(test)]
    pub(crate) fn writes_in_memtables(&self) -> usize {
        schema::Ks::ALL
            .into_iter()
            .map(|ks| self.ks.get(ks).approximate_len())
            .sum()
    }
}

#[cfg(test)]
mod tests;
