//! The history writer: a thread of its own that ingests the derived
//! batches into the store, off the checkpointer's thread, and publishes how
//! far it got — its applied LSN (what [`HistoryReader::caught_up`] waits
//! on) and, per shard, the stamp of the newest event of that shard it took
//! in ([`HistoryHorizons`]).
//!
//! Its producer is the [`Feeder`]: recovery's replay at open, then the
//! checkpointer, one at a time. The queue between them is bounded: when it
//! is full the producer waits, which slows the WAL writer (whose follower
//! the checkpointer is) rather than letting memory grow.
//!
//! A store failure while running (I/O) stops ingest for good, with a
//! `tracing::error!`; the money path does not notice. The applied LSN stops
//! (its sender is dropped, so reads waiting for later LSNs get an error),
//! horizons stop, and every later persist request is answered with the
//! failure, which holds snapshots back (see `checkpoint.rs`) so that the
//! log keeps every event the store lacks until a restart catches it up.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use tokio::sync::watch;

use crate::domain::event::Event;
use crate::domain::ids::{shard_of, AccountId};
use crate::domain::time::UnixMs;
use crate::storage::history::{Change, HistoryReader, HistoryStore};

/// Derived batches that may wait for the writer; past this the producer
/// waits.
pub const FEED_QUEUE_BATCHES_MAX: usize = 16;

/// Changes gathered before a batch is handed over even while more events
/// are queued: bounds the queue's memory (≈ `FEED_QUEUE_BATCHES_MAX` ×
/// this × a row's size) and the ingest's batch size.
pub const FEED_BATCH_CHANGES_MAX: usize = 8_192;

/// Per shard, the newest event time of that shard the store took in: every
/// event of the shard stamped strictly before it is in the store (a
/// shard's stamps never go back and its events reach the log in order).
/// [`UnixMs::UNKNOWN`] until known.
#[derive(Clone)]
pub struct HistoryHorizons(pub Vec<watch::Receiver<UnixMs>>);

impl HistoryHorizons {
    /// Shard `shard`'s horizon now.
    pub fn of(&self, shard: usize) -> UnixMs {
        self.0
            .get(shard)
            .map_or(UnixMs::UNKNOWN, |horizon| *horizon.borrow())
    }
}

/// What the writer's queue carries.
pub(crate) enum Message {
    Batch(Batch),
    /// Every horizon is at least this (what the store held at open).
    Horizons(UnixMs),
    /// Write everything ingested so far to disk, then answer.
    Persist(Sender<Result<u64, String>>),
}

/// Changes derived from the events up to `last_lsn`, and per shard the
/// newest of their stamps.
pub(crate) struct Batch {
    last_lsn: u64,
    changes: Vec<Change>,
    newest: Vec<UnixMs>,
}

impl Batch {
    fn new(shards: usize) -> Self {
        Self {
            last_lsn: 0,
            changes: Vec::new(),
            newest: vec![UnixMs::UNKNOWN; shards],
        }
    }
}

/// The producer's side: gathers the changes of the events it is shown and
/// hands them to the writer in batches.
pub struct Feeder {
    queue: Sender<Message>,
    batch: Batch,
    /// The LSN up to which the store holds (or was handed) every change.
    fed_lsn: u64,
    shards: usize,
}

impl Feeder {
    /// The LSN the store holds (or was handed) every change up to: events
    /// after it must be derived and fed, those at or before it need not.
    pub fn fed_lsn(&self) -> u64 {
        self.fed_lsn
    }

    /// Where the changes of the next event go; then call
    /// [`fed`](Self::fed) with it.
    pub fn changes(&mut self) -> &mut Vec<Change> {
        &mut self.batch.changes
    }

    /// The changes of `event` (LSN `lsn`, stamped `at`) were pushed; hands
    /// the batch over once it is full.
    pub fn fed(&mut self, lsn: u64, event: &Event, at: UnixMs) {
        self.batch.last_lsn = lsn;
        self.fed_lsn = lsn;
        if let Some(account) = logged_by(event) {
            let shard = shard_of(account, self.shards);
            if let Some(newest) = self.batch.newest.get_mut(shard) {
                *newest = (*newest).max(at);
            }
        }
        if self.batch.changes.len() >= FEED_BATCH_CHANGES_MAX {
            self.flush();
        }
    }

    /// The store now starts after `lsn` (the log lost what came between,
    /// see recovery): later events are fed from there.
    pub fn skip_to(&mut self, lsn: u64) {
        self.flush();
        self.fed_lsn = self.fed_lsn.max(lsn);
    }

    /// Hands over what was gathered (waits while the queue is full).
    pub fn flush(&mut self) {
        if self.batch.last_lsn == 0 {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Batch::new(self.shards));
        // A writer that is gone has stopped ingesting already (and said
        // why); the money path goes on.
        let _ = self.queue.send(Message::Batch(batch));
    }

    /// Raises every shard's horizon to at least `at`, once what was handed
    /// over before is in.
    pub fn raise_horizons(&mut self, at: UnixMs) {
        self.flush();
        let _ = self.queue.send(Message::Horizons(at));
    }

    /// Hands over what was gathered and waits until the writer has ingested
    /// it and written the store to disk; answers the LSN the store then
    /// holds on disk, or why it could not.
    pub fn persist(&mut self) -> Result<u64, String> {
        self.flush();
        let (reply, answer) = bounded(1);
        self.queue
            .send(Message::Persist(reply))
            .map_err(|_| "the history writer stopped".to_string())?;
        answer
            .recv()
            .map_err(|_| "the history writer stopped before answering".to_string())?
    }
}

/// The account whose shard stamped and logged `event`: a transfer's
/// receiving account (its one event is made there, step 2), else the
/// transaction's own; `None` for payout records (the payout actor's).
fn logged_by(event: &Event) -> Option<AccountId> {
    match event {
        Event::Transferred { to, .. } => Some(*to),
        _ => event.transaction_id().map(|tx| tx.account()),
    }
}

/// Handle to the writer thread; [`finish`](Self::finish) joins it once
/// every [`Feeder`] is gone.
pub struct HistoryWriter {
    thread: Option<JoinHandle<()>>,
}

impl HistoryWriter {
    /// Starts the writer on `store` for `shards` shards; the returned
    /// feeder feeds it, the reader and horizons show its progress.
    pub fn start(
        store: Arc<HistoryStore>,
        shards: usize,
    ) -> Result<(Self, Feeder, HistoryReader, HistoryHorizons), String> {
        let applied_lsn = store.applied_lsn().map_err(|e| e.to_string())?;
        let (queue, queued) = bounded(FEED_QUEUE_BATCHES_MAX);
        let (applied, applied_rx) = watch::channel(applied_lsn);
        let (horizons, horizon_rxs): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| watch::channel(UnixMs::UNKNOWN)).unzip();
        let reader = HistoryReader::new(Arc::clone(&store), applied_rx);
        let ingest = Ingest {
            store,
            applied: Some(applied),
            horizons,
            failed: None,
        };
        let thread = std::thread::Builder::new()
            .name("burnledger-history".into())
            .spawn(move || ingest.run(&queued))
            .map_err(|e| e.to_string())?;
        let feeder = Feeder {
            queue,
            batch: Batch::new(shards),
            fed_lsn: applied_lsn,
            shards,
        };
        let writer = Self {
            thread: Some(thread),
        };
        Ok((writer, feeder, reader, HistoryHorizons(horizon_rxs)))
    }

    /// Waits for the thread: it ingests what it was handed, writes the
    /// store to disk and stops once every feeder is dropped.
    pub fn finish(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HistoryWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The writer thread's state.
struct Ingest {
    store: Arc<HistoryStore>,
    /// Dropped when ingest fails: readers waiting for more get an error.
    applied: Option<watch::Sender<u64>>,
    horizons: Vec<watch::Sender<UnixMs>>,
    /// Why ingest stopped.
    failed: Option<String>,
}

impl Ingest {
    fn run(mut self, queue: &Receiver<Message>) {
        while let Ok(message) = queue.recv() {
            match message {
                Message::Batch(batch) => self.ingest(batch),
                Message::Horizons(at) => self.raise(&vec![at; self.horizons.len()]),
                Message::Persist(reply) => {
                    let _ = reply.send(self.persist());
                }
            }
        }
        // Every feeder is gone (shutdown, or a crash of the follower): what
        // was ingested goes to disk, so the next open re-feeds less.
        if let Err(error) = self.persist() {
            tracing::warn!(%error, "history store not written to disk at stop");
        }
    }

    fn ingest(&mut self, batch: Batch) {
        if self.failed.is_some() {
            return;
        }
        match self.store.ingest(batch.last_lsn, &batch.changes) {
            Ok(_) => {
                // Horizons first: whoever waited for the LSN sees them too.
                self.raise(&batch.newest);
                if let Some(applied) = &self.applied {
                    applied.send_if_modified(|lsn| {
                        let moved = batch.last_lsn > *lsn;
                        *lsn = (*lsn).max(batch.last_lsn);
                        moved
                    });
                }
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    lsn = batch.last_lsn,
                    "the history store failed; history stops here until a restart \
                     (the ledger goes on; snapshots are held back so the log keeps \
                     what the store lacks)"
                );
                self.failed = Some(format!(
                    "history store failed at LSN {}: {error}",
                    batch.last_lsn
                ));
                self.applied = None;
            }
        }
    }

    /// Raises each shard's horizon to its `newest`, never lowering it.
    fn raise(&self, newest: &[UnixMs]) {
        if self.failed.is_some() {
            return;
        }
        for (horizon, &at) in self.horizons.iter().zip(newest) {
            horizon.send_if_modified(|now| {
                let moved = at > *now;
                *now = (*now).max(at);
                moved
            });
        }
    }

    fn persist(&self) -> Result<u64, String> {
        if let Some(reason) = &self.failed {
            return Err(reason.clone());
        }
        self.store.persist().map_err(|e| e.to_string())?;
        self.store.applied_lsn().map_err(|e| e.to_string())
    }
}

/// A feeder whose queue a test reads, and what it finds there.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A feeder for `shards` shards with no writer: the test reads its
    /// queue.
    pub(crate) fn feeder(shards: usize) -> (Feeder, Receiver<Message>) {
        let (queue, queued) = bounded(FEED_QUEUE_BATCHES_MAX);
        let feeder = Feeder {
            queue,
            batch: Batch::new(shards),
            fed_lsn: 0,
            shards,
        };
        (feeder, queued)
    }

    /// The next message, within 10 s.
    pub(crate) fn next(queue: &Receiver<Message>) -> Message {
        queue
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the feeder sent something")
    }

    impl Message {
        /// A batch's last LSN.
        pub(crate) fn batch(self) -> Option<u64> {
            match self {
                Message::Batch(batch) => Some(batch.last_lsn),
                _ => None,
            }
        }

        /// A persist request's reply channel.
        pub(crate) fn persist(self) -> Option<Sender<Result<u64, String>>> {
            match self {
                Message::Persist(reply) => Some(reply),
                _ => None,
            }
        }
    }
}
