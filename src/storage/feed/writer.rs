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
//! The writer holds what it is handed for up to [`INGEST_WINDOW`] (or
//! [`INGEST_EVENTS_MAX`] events, or [`INGEST_CHANGES_MAX`] changes when
//! events fan out far) and ingests it as one store batch, so
//! a withdrawal requested and settled within that time is written once
//! (one row, one status key) and the store's per-batch costs are paid
//! rarely. The buffers of ingested batches go back to the feeder, which
//! refills them (see [`Held`]). A read waiting for an LSN
//! ([`HistoryReader::caught_up`]) does not wait for the window: it asks
//! the writer, which then ingests at once until that LSN is in.
//!
//! A store failure while running (I/O) stops ingest for good, with a
//! `tracing::error!`; the money path does not notice. The applied LSN stops
//! (its sender is dropped, so reads waiting for later LSNs get an error),
//! horizons stop, and every later persist request is answered with the
//! failure, which holds snapshots back (see `checkpoint.rs`) so that the
//! log keeps every event the store lacks until a restart catches it up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, Sender};
use tokio::sync::watch;

use crate::domain::event::Event;
use crate::domain::ids::{shard_of, AccountId};
use crate::domain::time::UnixMs;
use crate::storage::history::{Change, HistoryReader, HistoryStore};

/// Derived batches that may wait for the writer; past this the producer
/// waits.
pub const FEED_QUEUE_BATCHES_MAX: usize = 16;

/// Events whose changes are gathered before a batch is handed over even
/// while more events are queued. Counted in events, not changes, so the
/// queue and each ingest hold as many events whatever they fan out to: a
/// withdrawal with a fee makes five entries where a plain one makes two,
/// and batches counted in changes made its ingests smaller (a key per
/// balance per ingest, and a row per withdrawal settled in another ingest
/// than its request) and the queue shallower, so the log waited for the
/// writer sooner (the withdrawal benchmark with fees, 500 K operations:
/// about 6 % more throughput counted in events).
pub const FEED_BATCH_EVENTS_MAX: usize = 4_096;

/// Changes gathered before a batch is handed over whatever its events:
/// with [`FEED_BATCH_EVENTS_MAX`], bounds the queue's memory (≈
/// `FEED_QUEUE_BATCHES_MAX` × this × a row's size) when events fan out far
/// (a payout's claim changes each withdrawal it takes).
pub const FEED_BATCH_CHANGES_MAX: usize = 16_384;

/// Room a new change buffer starts with: a batch of plain withdrawals'
/// events (two changes each). Buffers come back from the writer and are
/// refilled, so one grown by a batch that fans out keeps its room.
const FEED_BATCH_CHANGES_TYPICAL: usize = 2 * FEED_BATCH_EVENTS_MAX;

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

/// The most events the writer holds for one ingest.
pub const INGEST_EVENTS_MAX: usize = FEED_QUEUE_BATCHES_MAX * FEED_BATCH_EVENTS_MAX;

/// The most changes the writer holds for one ingest, however far its
/// events fan out. With the queue's batches, the feeder's and the
/// recycled buffers, the most memory change buffers take: about 50 buffers
/// of up to twice [`FEED_BATCH_CHANGES_MAX`] changes of 160 bytes, 250 MiB
/// at worst; with withdrawals, about 60 MiB without fees (two changes an
/// event) and 125 MiB with them (3.5: buffers grow to 16,384). The
/// store's ingest keeps its own buffers for that many changes besides
/// (`storage/history/ingest.rs`, `Kept`).
pub const INGEST_CHANGES_MAX: usize = FEED_QUEUE_BATCHES_MAX * FEED_BATCH_CHANGES_MAX;

/// How long the writer holds changes before ingesting them, unless a read
/// waits for them: a few client round trips under load, so most
/// withdrawals are requested and settled within one ingest (measured on
/// the withdrawal benchmark: the writer's CPU fell ≈ 20 % from ingesting
/// whatever was queued to a 100 ms window).
pub const INGEST_WINDOW: Duration = Duration::from_millis(100);

/// What the writer's queue carries.
pub(crate) enum Message {
    Batch(Batch),
    /// The log the store is fed from has a gap: mark the store incomplete.
    Gap,
    /// Every horizon is at least this (what the store held at open).
    Horizons(UnixMs),
    /// Write everything ingested so far to disk, then answer.
    Persist(Sender<Result<u64, String>>),
}

/// Changes derived from `events` events up to `last_lsn`, and per shard
/// the newest of their stamps.
pub(crate) struct Batch {
    last_lsn: u64,
    events: usize,
    changes: Vec<Change>,
    newest: Vec<UnixMs>,
}

impl Batch {
    /// An empty batch gathering into `changes` (an empty buffer, perhaps
    /// with room from an earlier batch).
    fn new(shards: usize, changes: Vec<Change>) -> Self {
        Self {
            last_lsn: 0,
            events: 0,
            changes,
            newest: vec![UnixMs::UNKNOWN; shards],
        }
    }
}

/// The batches the writer holds for one ingest, in the order handed over.
/// Each keeps its own buffer (appending them into one would copy every
/// change and grow one large allocation per ingest, which measured as a
/// tenth of the writer's time in page faults and copies), and the buffers
/// go back to the feeder once ingested.
struct Held {
    batches: Vec<Batch>,
    events: usize,
    changes: usize,
    due: Instant,
}

impl Held {
    fn last_lsn(&self) -> u64 {
        self.batches.iter().map(|b| b.last_lsn).max().unwrap_or(0)
    }

    /// Per shard, the newest stamp of any held batch.
    fn newest(&self, shards: usize) -> Vec<UnixMs> {
        let mut newest = vec![UnixMs::UNKNOWN; shards];
        for batch in &self.batches {
            for (newest, &at) in newest.iter_mut().zip(&batch.newest) {
                *newest = (*newest).max(at);
            }
        }
        newest
    }
}

/// Change buffers the writer emptied, on their way back to the feeder: it
/// refills them instead of growing a new one per batch.
const RECYCLED_BUFFERS_MAX: usize = FEED_QUEUE_BATCHES_MAX + 2;

/// A change buffer for the feeder: an emptied one back from the writer if
/// there is one, else a new one with room for a batch of plain
/// withdrawals' events (it grows if they fan out further, and keeps that
/// room when recycled).
fn change_buffer(recycled: &Receiver<Vec<Change>>) -> Vec<Change> {
    recycled
        .try_recv()
        .unwrap_or_else(|_| Vec::with_capacity(FEED_BATCH_CHANGES_TYPICAL))
}

/// The producer's side: gathers the changes of the events it is shown and
/// hands them to the writer in batches.
pub struct Feeder {
    queue: Sender<Message>,
    /// Emptied buffers back from the writer (see [`change_buffer`]).
    recycled: Receiver<Vec<Change>>,
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
        self.batch.events += 1;
        self.fed_lsn = lsn;
        if let Some(account) = logged_by(event) {
            let shard = shard_of(account, self.shards);
            if let Some(newest) = self.batch.newest.get_mut(shard) {
                *newest = (*newest).max(at);
            }
        }
        let full = self.batch.events >= FEED_BATCH_EVENTS_MAX
            || self.batch.changes.len() >= FEED_BATCH_CHANGES_MAX;
        if full {
            self.flush();
        }
    }

    /// The store now starts after `lsn` (the log lost what came between,
    /// see recovery): later events are fed from there, and the store is
    /// marked incomplete (it may lack rows later changes say it holds).
    pub fn skip_to(&mut self, lsn: u64) {
        self.flush();
        if lsn > self.fed_lsn {
            let _ = self.queue.send(Message::Gap);
        }
        self.fed_lsn = self.fed_lsn.max(lsn);
    }

    /// After [`skip_to`](Self::skip_to)`(lsn)`: hands over `rows`, the
    /// state at `lsn` (one batch, so the store takes all of them or none;
    /// it comes once, when a ledger opens with its history lost).
    pub fn feed_state(&mut self, lsn: u64, rows: impl IntoIterator<Item = Change>) {
        self.flush();
        self.batch.changes.extend(rows);
        self.batch.last_lsn = lsn;
        self.fed_lsn = self.fed_lsn.max(lsn);
        self.flush();
    }

    /// Hands over what was gathered (waits while the queue is full).
    pub fn flush(&mut self) {
        if self.batch.last_lsn == 0 {
            return;
        }
        let next = Batch::new(self.shards, change_buffer(&self.recycled));
        let batch = std::mem::replace(&mut self.batch, next);
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
        let (recycle, recycled) = bounded(RECYCLED_BUFFERS_MAX);
        let (mut ingest, reader, horizons) = Ingest::new(store, shards, INGEST_WINDOW, applied_lsn);
        ingest.recycle = Some(recycle);
        let thread = std::thread::Builder::new()
            .name("burnledger-history".into())
            .spawn(move || ingest.run(&queued))
            .map_err(|e| e.to_string())?;
        let feeder = Feeder {
            queue,
            batch: Batch::new(shards, change_buffer(&recycled)),
            recycled,
            fed_lsn: applied_lsn,
            shards,
        };
        let writer = Self {
            thread: Some(thread),
        };
        Ok((writer, feeder, reader, horizons))
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

/// The LSN reads wait for, and the writer's wake-up when it rises.
struct Wanted {
    lsn: Arc<AtomicU64>,
    wake: Sender<()>,
    woken: Receiver<()>,
}

impl Wanted {
    fn new() -> Self {
        let (wake, woken) = bounded(1);
        Self {
            lsn: Arc::new(AtomicU64::new(0)),
            wake,
            woken,
        }
    }

    /// What a reader calls when it waits for an LSN the store lacks.
    fn asker(&self) -> impl Fn(u64) + Send + Sync + 'static {
        let (lsn, wake) = (Arc::clone(&self.lsn), self.wake.clone());
        move |wanted| {
            lsn.fetch_max(wanted, Ordering::AcqRel);
            // Full: a wake-up is pending already.
            let _ = wake.try_send(());
        }
    }

    fn above(&self, applied: u64) -> bool {
        self.lsn.load(Ordering::Acquire) > applied
    }
}

/// The writer thread's state.
struct Ingest {
    store: Arc<HistoryStore>,
    /// Dropped when ingest fails: readers waiting for more get an error.
    applied: Option<watch::Sender<u64>>,
    /// The last LSN ingested.
    applied_lsn: u64,
    horizons: Vec<watch::Sender<UnixMs>>,
    /// Why ingest stopped.
    failed: Option<String>,
    /// Batches handed over and not ingested yet, and when they are due.
    held: Option<Held>,
    /// Where ingested batches' buffers go back to the feeder (`None`: a
    /// test's writer, which drops them).
    recycle: Option<Sender<Vec<Change>>>,
    /// How long batches are held (see [`INGEST_WINDOW`]).
    window: Duration,
    wanted: Wanted,
}

impl Ingest {
    /// The writer's state on `store` (which holds up to `applied_lsn`), and
    /// the reader and horizons that show its progress.
    fn new(
        store: Arc<HistoryStore>,
        shards: usize,
        window: Duration,
        applied_lsn: u64,
    ) -> (Self, HistoryReader, HistoryHorizons) {
        let (applied, applied_rx) = watch::channel(applied_lsn);
        let (horizons, horizon_rxs): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| watch::channel(UnixMs::UNKNOWN)).unzip();
        let wanted = Wanted::new();
        let reader = HistoryReader::new(Arc::clone(&store), applied_rx, wanted.asker());
        let ingest = Self {
            store,
            applied: Some(applied),
            applied_lsn,
            horizons,
            failed: None,
            held: None,
            recycle: None,
            window,
            wanted,
        };
        (ingest, reader, HistoryHorizons(horizon_rxs))
    }

    fn run(mut self, queue: &Receiver<Message>) {
        loop {
            let due = self
                .held
                .as_ref()
                .map_or_else(crossbeam_channel::never, |held| {
                    crossbeam_channel::at(held.due)
                });
            select! {
                recv(queue) -> message => match message {
                    Ok(message) => self.take(message),
                    Err(_) => break,
                },
                recv(self.wanted.woken) -> _ => {
                    if self.wanted.above(self.applied_lsn) {
                        self.ingest_held();
                    }
                }
                recv(due) -> _ => self.ingest_held(),
            }
        }
        // Every feeder is gone (shutdown, or a crash of the follower): what
        // was handed over is ingested and goes to disk, so the next open
        // re-feeds less.
        self.ingest_held();
        if let Err(error) = self.persist() {
            tracing::warn!(%error, "history store not written to disk at stop");
        }
    }

    /// Handles one message; everything else waits for what was handed
    /// over before it to be ingested.
    fn take(&mut self, message: Message) {
        match message {
            Message::Batch(batch) => self.hold(batch),
            Message::Gap => {
                self.ingest_held();
                self.mark_gap();
            }
            Message::Horizons(at) => {
                self.ingest_held();
                self.raise(&vec![at; self.horizons.len()]);
            }
            Message::Persist(reply) => {
                self.ingest_held();
                let _ = reply.send(self.persist());
            }
        }
    }

    /// Adds `batch` to what is held; ingests at once when that is full or a
    /// read waits.
    fn hold(&mut self, batch: Batch) {
        let held = self.held.get_or_insert_with(|| Held {
            batches: Vec::with_capacity(FEED_QUEUE_BATCHES_MAX),
            events: 0,
            changes: 0,
            due: Instant::now() + self.window,
        });
        held.events += batch.events;
        held.changes += batch.changes.len();
        held.batches.push(batch);
        let full = held.events >= INGEST_EVENTS_MAX || held.changes >= INGEST_CHANGES_MAX;
        if full || self.wanted.above(self.applied_lsn) {
            self.ingest_held();
        }
    }

    fn ingest_held(&mut self) {
        if let Some(mut held) = self.held.take() {
            self.ingest(&mut held);
            self.recycle(held.batches);
        }
    }

    fn ingest(&mut self, held: &mut Held) {
        if self.failed.is_some() {
            return;
        }
        let last_lsn = held.last_lsn();
        let changes = held.batches.iter_mut().flat_map(|b| b.changes.drain(..));
        match self.store.ingest(last_lsn, changes) {
            Ok(_) => {
                self.applied_lsn = self.applied_lsn.max(last_lsn);
                // Horizons first: whoever waited for the LSN sees them too.
                self.raise(&held.newest(self.horizons.len()));
                if let Some(applied) = &self.applied {
                    applied.send_if_modified(|lsn| {
                        let moved = last_lsn > *lsn;
                        *lsn = (*lsn).max(last_lsn);
                        moved
                    });
                }
            }
            Err(error) => self.fail(last_lsn, &error.to_string()),
        }
    }

    /// Hands the ingested batches' buffers back to the feeder, emptied (here,
    /// so rows ingest did not take are freed on this thread), while it has
    /// room.
    fn recycle(&self, batches: Vec<Batch>) {
        let Some(recycle) = &self.recycle else {
            return;
        };
        // A buffer grown far past a batch (a whole state fed at open) is
        // freed rather than kept for good.
        let keep = |b: &Batch| b.changes.capacity() <= 2 * FEED_BATCH_CHANGES_MAX;
        for mut batch in batches.into_iter().filter(keep) {
            batch.changes.clear();
            if recycle.try_send(batch.changes).is_err() {
                break;
            }
        }
    }

    fn mark_gap(&mut self) {
        if self.failed.is_some() {
            return;
        }
        if let Err(error) = self.store.mark_incomplete() {
            self.fail(self.applied_lsn, &error.to_string());
        }
    }

    /// Stops ingest for good (see the module docs); `lsn` is where.
    fn fail(&mut self, lsn: u64, error: &str) {
        tracing::error!(
            %error,
            lsn,
            "the history store failed; history stops here until a restart \
             (the ledger goes on; snapshots are held back so the log keeps \
             what the store lacks)"
        );
        self.failed = Some(format!("history store failed at LSN {lsn}: {error}"));
        self.applied = None;
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
        let (_, recycled) = bounded(1);
        let feeder = Feeder {
            queue,
            batch: Batch::new(shards, Vec::new()),
            recycled,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::TransactionId;
    use crate::domain::money::CurrencyCode;
    use crate::domain::withdrawal::StatusKind;
    use crate::storage::history::{WithdrawalIndex, WithdrawalRow};

    const LONG: Duration = Duration::from_secs(3_600);

    fn store() -> (tempfile::TempDir, Arc<HistoryStore>) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = HistoryStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        (dir, Arc::new(store))
    }

    fn row(status: StatusKind) -> WithdrawalRow {
        WithdrawalRow {
            tx: TransactionId::new(7, 1),
            account: 7,
            currency: CurrencyCode::new("USD").unwrap_or_else(|e| panic!("{e}")),
            amount: 100,
            status,
            payout_id: None,
            reason: None,
            created_at_ms: 10,
            updated_at_ms: 10,
            extras: Default::default(),
        }
    }

    /// A batch of the changes of LSN `lsn`.
    fn batch(lsn: u64, changes: Vec<Change>) -> Message {
        Message::Batch(Batch {
            last_lsn: lsn,
            events: 1,
            changes,
            newest: vec![UnixMs::UNKNOWN],
        })
    }

    /// The request (LSN 1) and the completion (LSN 2) of one withdrawal,
    /// handed over as two batches.
    fn request_then_complete() -> [Message; 2] {
        let requested = Change::WithdrawalFrom {
            row: row(StatusKind::Pending),
            from: None,
        };
        let completed = Change::WithdrawalFrom {
            row: row(StatusKind::Completed),
            from: Some(WithdrawalIndex {
                status: StatusKind::Pending,
                payout_id: None,
            }),
        };
        [batch(1, vec![requested]), batch(2, vec![completed])]
    }

    /// A deposit event (its changes are what a test pushes).
    fn deposit(lsn: u64) -> Event {
        use crate::domain::money::{Currencies, CurrencyConfig};
        let currencies = Currencies::new(&[CurrencyConfig::new("USD", 2)]);
        let currencies = currencies.unwrap_or_else(|e| panic!("{e}"));
        let usd = currencies.get_code(row(StatusKind::Pending).currency);
        Event::Deposited {
            tx: TransactionId::new(7, lsn),
            currency: usd.unwrap_or_else(|e| panic!("{e}")),
            amount: 1,
            key: None,
            metadata: None,
        }
    }

    /// Feeds `events` events of `changes` changes each; answers the LSNs
    /// batches were handed over at.
    fn hand_overs(events: u64, changes: usize) -> Vec<u64> {
        let (mut feeder, queued) = testing::feeder(1);
        let mut handed = Vec::new();
        for lsn in 1..=events {
            for _ in 0..changes {
                feeder
                    .changes()
                    .push(Change::Withdrawal(row(StatusKind::Pending)));
            }
            feeder.fed(lsn, &deposit(lsn), UnixMs::from_millis(lsn));
            handed.extend(queued.try_iter().filter_map(Message::batch));
        }
        handed
    }

    #[test]
    fn a_batch_is_handed_over_after_so_many_events_whatever_they_fan_out_to() {
        let events = FEED_BATCH_EVENTS_MAX as u64;
        // Two changes an event (plain withdrawals), or three (with a fee):
        // the same events a batch.
        assert_eq!(hand_overs(2 * events, 2), vec![events, 2 * events]);
        assert_eq!(hand_overs(2 * events, 3), vec![events, 2 * events]);
        // An event that fans out far hands over by changes, bounding memory.
        let far = FEED_BATCH_CHANGES_MAX / 64;
        assert_eq!(hand_overs(128, far), vec![64, 128]);
    }

    #[test]
    fn the_writer_holds_so_many_events_for_one_ingest_whatever_they_fan_out_to() {
        let (_dir, store) = store();
        let (mut ingest, _reader, _horizons) = Ingest::new(Arc::clone(&store), 1, LONG, 0);
        let per_batch = INGEST_EVENTS_MAX / FEED_QUEUE_BATCHES_MAX;
        for lsn in 1..=FEED_QUEUE_BATCHES_MAX as u64 {
            assert_eq!(store.applied_lsn().ok(), Some(0), "held, not ingested");
            let changes = vec![Change::Withdrawal(row(StatusKind::Pending)); 5];
            let Message::Batch(mut batch) = batch(lsn, changes) else {
                unreachable!("a batch")
            };
            batch.events = per_batch;
            ingest.take(Message::Batch(batch));
        }
        assert_eq!(
            store.applied_lsn().ok(),
            Some(FEED_QUEUE_BATCHES_MAX as u64)
        );
    }

    #[test]
    fn the_writer_holds_so_many_changes_for_one_ingest_however_few_their_events() {
        let (_dir, store) = store();
        let (mut ingest, _reader, _horizons) = Ingest::new(Arc::clone(&store), 1, LONG, 0);
        let per_batch = INGEST_CHANGES_MAX / 4;
        for lsn in 1..=4 {
            assert_eq!(store.applied_lsn().ok(), Some(0), "held, not ingested");
            let changes = vec![Change::Withdrawal(row(StatusKind::Pending)); per_batch];
            ingest.take(batch(lsn, changes));
        }
        assert_eq!(store.applied_lsn().ok(), Some(4));
    }

    #[test]
    fn batches_handed_over_within_the_window_are_one_ingest() {
        let (_dir, store) = store();
        let (ingest, _reader, _horizons) = Ingest::new(Arc::clone(&store), 1, LONG, 0);
        let (queue, queued) = bounded(FEED_QUEUE_BATCHES_MAX);
        for message in request_then_complete() {
            queue.send(message).unwrap_or_else(|e| panic!("{e}"));
        }
        drop(queue);
        // Runs until the queue ends: what it held is ingested then.
        ingest.run(&queued);
        assert_eq!(store.applied_lsn().ok(), Some(2));
        let tx = TransactionId::new(7, 1);
        let stored = store.withdrawal(tx).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stored, Some(row(StatusKind::Completed)));
        // One ingest: the row, its account key, its status key and the
        // watermark, each written once; no pending key and no removal.
        assert_eq!(store.writes_in_memtables(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_waiting_for_an_lsn_does_not_wait_for_the_window() {
        let (_dir, store) = store();
        let (ingest, reader, _horizons) = Ingest::new(Arc::clone(&store), 1, LONG, 0);
        let (queue, queued) = bounded(FEED_QUEUE_BATCHES_MAX);
        let thread = std::thread::spawn(move || ingest.run(&queued));
        let [first, second] = request_then_complete();
        queue.send(first).unwrap_or_else(|e| panic!("{e}"));
        let waited = tokio::time::timeout(Duration::from_secs(10), reader.caught_up(1)).await;
        assert!(matches!(waited, Ok(Ok(()))), "held for the window");
        // A batch arriving while a read still waits for it is not held either.
        let wait = tokio::spawn({
            let reader = reader.clone();
            async move { reader.caught_up(2).await }
        });
        queue.send(second).unwrap_or_else(|e| panic!("{e}"));
        let waited = tokio::time::timeout(Duration::from_secs(10), wait).await;
        assert!(matches!(waited, Ok(Ok(Ok(())))), "held for the window");
        drop(queue);
        thread
            .join()
            .unwrap_or_else(|_| panic!("the writer panicked"));
    }

    #[test]
    fn a_feed_that_skips_part_of_the_log_marks_the_store_incomplete() {
        let (_dir, store) = store();
        let (ingest, _reader, _horizons) = Ingest::new(Arc::clone(&store), 1, LONG, 0);
        let (mut feeder, queued) = testing::feeder(1);
        feeder.skip_to(5);
        // The withdrawal was requested in the skipped range: the store
        // lacks it, though its completion says the store holds it pending.
        let [_, completed] = request_then_complete();
        let Message::Batch(mut completed) = completed else {
            panic!("a batch")
        };
        completed.last_lsn = 6;
        feeder
            .queue
            .send(Message::Batch(completed))
            .unwrap_or_else(|e| panic!("{e}"));
        drop(feeder);
        ingest.run(&queued);
        let by_account = crate::storage::history::WithdrawalQuery {
            account: Some(7),
            ..Default::default()
        };
        let listed = store
            .withdrawals(&by_account)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listed.items, vec![row(StatusKind::Completed)]);
    }

    #[test]
    fn ingested_buffers_go_back_to_the_feeder_empty_and_oversized_ones_do_not() {
        let (_dir, store) = store();
        let (mut ingest, _reader, _horizons) = Ingest::new(Arc::clone(&store), 1, LONG, 0);
        let (recycle, recycled) = bounded(RECYCLED_BUFFERS_MAX);
        ingest.recycle = Some(recycle);
        let (queue, queued) = bounded(FEED_QUEUE_BATCHES_MAX);
        let thread = std::thread::spawn(move || ingest.run(&queued));
        let [first, second] = request_then_complete().map(|message| match message {
            Message::Batch(mut batch) => {
                batch.changes.reserve(100);
                Message::Batch(batch)
            }
            other => other,
        });
        let mut huge = Vec::with_capacity(2 * FEED_BATCH_CHANGES_MAX + 1);
        huge.push(Change::WithdrawalStatus {
            tx: TransactionId::new(7, 1),
            status: StatusKind::Completed,
            payout_id: None,
            reason: None,
            at_ms: 11,
        });
        let (reply, answer) = bounded(1);
        for message in [first, second, batch(3, huge), Message::Persist(reply)] {
            queue.send(message).unwrap_or_else(|e| panic!("{e}"));
        }
        let answered = answer.recv_timeout(Duration::from_secs(10));
        assert_eq!(answered.ok(), Some(Ok(3)));
        let back: Vec<Vec<Change>> = recycled.try_iter().collect();
        assert_eq!(
            back.len(),
            2,
            "the two batch-sized buffers, not the huge one"
        );
        assert!(back.iter().all(|b| b.is_empty() && b.capacity() >= 100));
        let stored = store.withdrawal(TransactionId::new(7, 1));
        assert_eq!(
            stored.ok().flatten().map(|r| r.status),
            Some(StatusKind::Completed)
        );
        drop(queue);
        thread
            .join()
            .unwrap_or_else(|_| panic!("the writer panicked"));
    }

    #[test]
    fn a_persist_request_ingests_what_is_held_first() {
        let (_dir, store) = store();
        let (ingest, _reader, _horizons) = Ingest::new(Arc::clone(&store), 1, LONG, 0);
        let (queue, queued) = bounded(FEED_QUEUE_BATCHES_MAX);
        let thread = std::thread::spawn(move || ingest.run(&queued));
        let [first, _] = request_then_complete();
        let (reply, answer) = bounded(1);
        for message in [first, Message::Persist(reply)] {
            queue.send(message).unwrap_or_else(|e| panic!("{e}"));
        }
        let answered = answer.recv_timeout(Duration::from_secs(10));
        assert_eq!(answered.ok(), Some(Ok(1)));
        drop(queue);
        thread
            .join()
            .unwrap_or_else(|_| panic!("the writer panicked"));
    }
}
