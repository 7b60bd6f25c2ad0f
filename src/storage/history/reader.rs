//! [`HistoryReader`]: what the ledger's history reads hold — the store, and
//! how far it has ingested the log, so a read can first wait for the
//! batches acknowledged before it (read-your-writes), asking its follower
//! to ingest them now rather than when it would have. The ledger's shutdown
//! closes the store (so the folder can be opened again while handles
//! linger); reads after that answer [`HistoryError::Closed`].

use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::watch;

use super::error::HistoryError;
use super::HistoryStore;

/// The store and the follower's progress. Cheap to clone.
#[derive(Clone)]
pub struct HistoryReader {
    /// `None` once closed.
    store: Arc<RwLock<Option<Arc<HistoryStore>>>>,
    /// The LSN the store has ingested up to, published by its follower.
    applied: watch::Receiver<u64>,
    /// Tells the follower a read waits for an LSN.
    ask: Arc<dyn Fn(u64) + Send + Sync>,
}

impl HistoryReader {
    /// `ask(lsn)` is called when a read waits for `lsn`, not ingested yet.
    pub fn new(
        store: Arc<HistoryStore>,
        applied: watch::Receiver<u64>,
        ask: impl Fn(u64) + Send + Sync + 'static,
    ) -> Self {
        Self {
            store: Arc::new(RwLock::new(Some(store))),
            applied,
            ask: Arc::new(ask),
        }
    }

    /// The store, unless the ledger shut down.
    pub fn store(&self) -> Result<Arc<HistoryStore>, HistoryError> {
        self.store.read().clone().ok_or(HistoryError::Closed)
    }

    /// Lets go of the store for every clone of this reader: it closes once
    /// the reads in progress end.
    pub fn close(&self) {
        self.store.write().take();
    }

    /// The LSN the store has ingested up to.
    pub fn applied_lsn(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Resolves once the store has ingested every batch up to `lsn`; an
    /// error if its follower stopped before that (it would never come).
    pub async fn caught_up(&self, lsn: u64) -> Result<(), HistoryError> {
        let mut applied = self.applied.clone();
        if *applied.borrow() < lsn {
            (self.ask)(lsn);
        }
        applied
            .wait_for(|applied| *applied >= lsn)
            .await
            .map(|_| ())
            .map_err(|_| HistoryError::FollowerStopped { lsn })
    }
}
