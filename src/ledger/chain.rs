//! The handle's view of the log's hash chain: [`Ledger::journal_head`],
//! the last durable record's LSN and hash, for anchoring outside (the
//! chain itself: `storage::wal::record`; checking it: `verify --chain`).

use crate::domain::feed::JournalHead;
use crate::error::LedgerError;
use crate::ledger::Ledger;

impl Ledger {
    /// The log's head: the LSN of the last record as durable as the sync
    /// mode says, and its SHA-256, which the next record will carry (LSN 0
    /// and zeros for an empty log). A host that records it somewhere the
    /// ledger cannot write can later prove, with `burnledger verify
    /// --chain`, that no record up to it was changed. Refused with
    /// `events_unavailable` by a ledger that keeps no log.
    pub fn journal_head(&self) -> Result<JournalHead, LedgerError> {
        self.check_not_closed()?;
        match self.engine().journal.wal() {
            Some(wal) => Ok(wal.head()),
            None => Err(LedgerError::EventsUnavailable {
                reason: "this ledger keeps no log (no data folder, or sync mode `none`)".to_owned(),
            }),
        }
    }
}
