//! The data folder as a whole: who may use it, what it holds, and the facts
//! about it that outlive a process.
//!
//! ```text
//! <data-dir>/LOCK        held (OS file lock) by the one ledger using the folder; its pid inside
//! <data-dir>/CURRENCIES  every currency the folder's money was written in, with its decimals
//! <data-dir>/wal/        the write-ahead log (crate::storage::wal)
//! <data-dir>/snapshots/  snapshots (crate::storage::snapshot)
//! ```
//!
//! The log and snapshots record amounts in minor units, so they are only
//! readable together with the currency table that gave those units their
//! scale; and only one process may append to the log. This module keeps
//! both rules; it knows files, not actors.
//!
//! ## Layout
//! - `lock.rs` — the folder's lock: one ledger at a time, readers beside none.
//! - `currency_table.rs` — the recorded currency table and how a
//!   configuration may differ from it.

mod currency_table;
mod lock;

use std::path::Path;

pub use currency_table::{CurrencyTable, CurrencyTableError, TableChange};
pub use lock::{DataDirLock, LockError, LOCK_FILE};

/// Whether `dir` holds (part of) a ledger: a currency table, a log segment
/// or a snapshot. A missing folder holds none.
pub fn holds_ledger(dir: &Path) -> std::io::Result<bool> {
    if dir.join(currency_table::TABLE_FILE).exists() {
        return Ok(true);
    }
    for sub in [
        crate::storage::wal::wal_dir(dir),
        crate::storage::recovery::snapshot_dir(dir),
    ] {
        match std::fs::read_dir(&sub) {
            Ok(mut entries) => {
                if entries.next().transpose()?.is_some() {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}
