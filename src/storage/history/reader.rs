//! [`HistoryReader`]: what the ledger's history reads hold — the store, and
//! how far it has ingested the log, so a read can first wait for the
//! batches acknowledged before it (read-your-writes).

use std::sync::Arc;

use tokio::sync::watch;

use super::error::HistoryError;
use super::HistoryStore;

/// The store and the follower's progress. Cheap to clone.
#[derive(Clone)]
pub struct HistoryReader {
    store: Arc<HistoryStore>,
    /// The LSN the store has ingested up to, published by its follower.
    applied: watch::Receiver<u64>,
}

impl HistoryReader {
    pub fn new(store: Arc<HistoryStore>, applied: watch::Receiver<u64>) -> Self {
        Self { store, applied }
    }

    pub fn store(&self) -> &HistoryStore {
        &self.store
    }

    /// The LSN the store has ingested up to.
    pub fn applied_lsn(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Resolves once the store has ingested every batch up to `lsn`; an
    /// error if its follower stopped before that (it would never come).
    pub async fn caught_up(&self, lsn: u64) -> Result<(), HistoryError> {
        let mut applied = self.applied.clone();
        applied
            .wait_for(|applied| *applied >= lsn)
            .await
            .map(|_| ())
            .map_err(|_| HistoryError::FollowerStopped { lsn })
    }
}
