//! The writer thread: group commit of queued appends, sync modes, rollover,
//! and poisoning.
//!
//! The thread takes whatever is queued (up to [`BATCH_EVENTS_MAX`] events or
//! [`BATCH_BYTES_MAX`] bytes), gives the events consecutive LSNs in queue
//! order, encodes them into one reused buffer, writes it with one call and,
//! in `fsync` mode, syncs once for the whole batch. Only then does it answer
//! the batch's requests: one sync is shared by every caller in it, which is
//! where the throughput comes from (§3 of the design: ≈ 150 µs per fsync).
//!
//! In `buffered` mode the first unsynced write sets a deadline on the
//! injected clock ([`WalConfig::clock`](super::WalConfig::clock)): the
//! writer syncs when its alarm rings while the queue is idle, or before the
//! next batch once the clock has passed it; also when a segment is closed
//! and at shutdown. (Fsync latencies for the stats are measured on the
//! machine's clock: they are a measurement, not a timer.)
//!
//! Each record is chained to the one before (see [`record`]): the writer
//! keeps the hash of the last record it encoded and, once a batch is as
//! durable as the mode says (the moment its callers are answered),
//! publishes the log's head, its last LSN and that hash, for
//! [`WalHandle::head`](super::WalHandle::head).
//!
//! With a [`Replica`](super::replica) the batch is shipped before the local
//! write and its answer awaited after the sync: callers are answered only
//! once both hold it, and a refusal poisons like a failed write.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};
use tokio::sync::oneshot;

use super::record::{self, Hash};
use super::replica::{self, ReplicaRefusal, SharedReplica};
use super::segment::{ActiveSegment, FailPoint};
use super::{SyncMode, WalError};
use crate::clock::SharedClock;
use crate::domain::event::Stamped;
use crate::domain::feed::JournalHead;
use crate::storage::deadline::Deadline;

/// Most events one batch takes from the queue before writing; bounds the
/// delay of the first request in a batch and the buffer's size.
pub const BATCH_EVENTS_MAX: usize = 64 * 1024;

/// Most encoded bytes one batch gathers before writing (it may exceed this
/// by one request, which is never split).
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Longest buffered-mode sync interval; longer ones are shortened to it,
/// which also keeps the deadline arithmetic from overflowing.
pub const BUFFERED_INTERVAL_MS_MAX: u64 = 24 * 60 * 60 * 1000;

/// The answer an append waits for: the LSN of its last event (of the last
/// event before it, for a barrier) once it is as durable as the mode says.
pub(crate) type Ack = oneshot::Sender<Result<u64, WalError>>;

/// Events the writer logged, handed to its follower: LSNs `first_lsn..`.
#[derive(Debug)]
pub struct Committed {
    pub first_lsn: u64,
    pub events: Vec<Stamped>,
    /// The hash of the last of them as logged (see [`record::hash`]): the
    /// chain's head once they are applied.
    pub last_hash: Hash,
}

/// The log's last durable record: its LSN and hash (LSN 0 and
/// [`GENESIS`](record::GENESIS) for an empty log).
pub(crate) type SharedHead = std::sync::Arc<parking_lot::Mutex<JournalHead>>;

pub(crate) enum Message {
    /// Events to log, all or none; no events is a barrier.
    Append { events: Vec<Stamped>, done: Ack },
    /// Write and sync what was queued before, then stop.
    Shutdown,
}

pub(crate) struct Writer {
    pub dir: PathBuf,
    pub sync: SyncMode,
    pub segment_bytes_max: u64,
    pub fail_point: FailPoint,
    pub segment: ActiveSegment,
    /// The LSN the next event will get.
    pub next_lsn: u64,
    /// The hash of the record before `next_lsn`: the next one's predecessor.
    pub head: Hash,
    /// The last durable record, published after each batch.
    pub durable_head: SharedHead,
    /// The encoded batch, kept between batches to reuse its allocation.
    pub buf: Vec<u8>,
    /// The first failure's description; once set, nothing more is written.
    pub poisoned: Option<String>,
    /// Where the buffered mode's sync deadline is read and set.
    pub clock: SharedClock,
    /// Buffered mode: data was written but not synced, and must be by then.
    pub sync_due: Option<Deadline>,
    /// Fsync counts and latencies, for operators.
    pub stats: std::sync::Arc<super::stats::WalStats>,
    /// Told of every batch once it is written (see [`WalConfig::follower`]).
    ///
    /// [`WalConfig::follower`]: super::WalConfig::follower
    pub follower: Option<crossbeam_channel::Sender<Committed>>,
    /// The staged batch's events, kept for the follower until written.
    pub staged: Vec<Committed>,
    /// Every batch also goes there before it is acknowledged.
    pub replica: Option<SharedReplica>,
    /// Set when the replica said another writer took over.
    pub fenced: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// What woke the writer.
enum Woken {
    Message(Message),
    /// The buffered sync's alarm rang.
    SyncDue,
    /// Every handle is gone.
    Closed,
}

impl Writer {
    /// Serves the queue until a shutdown request or until every handle is
    /// gone; returns whether the log ended healthy.
    pub fn run(mut self, queue: Receiver<Message>) -> Result<(), WalError> {
        let mut acks: Vec<(Ack, Result<u64, WalError>)> = Vec::new();
        loop {
            let mut message = match self.wait(&queue) {
                Woken::Message(message) => message,
                Woken::SyncDue => {
                    self.sync_now();
                    continue;
                }
                Woken::Closed => break,
            };
            // Under steady load the alarm may never win the wait: a sync
            // that is due goes before the next batch.
            if self
                .sync_due
                .as_ref()
                .is_some_and(|due| due.has_passed(&*self.clock))
            {
                self.sync_now();
            }
            let batch_first_lsn = self.next_lsn;
            let mut events = 0;
            let mut shutdown = false;
            loop {
                match message {
                    Message::Append {
                        events: batch,
                        done,
                    } => {
                        events += batch.len();
                        let first_lsn = self.next_lsn;
                        let result = self.stage(&batch);
                        if result.is_ok() && self.follower.is_some() && !batch.is_empty() {
                            self.staged.push(Committed {
                                first_lsn,
                                events: batch,
                                last_hash: self.head,
                            });
                        }
                        acks.push((done, result));
                    }
                    Message::Shutdown => {
                        shutdown = true;
                        break;
                    }
                }
                if events >= BATCH_EVENTS_MAX || self.buf.len() >= BATCH_BYTES_MAX {
                    break;
                }
                match queue.try_recv() {
                    Ok(next) => message = next,
                    Err(_) => break,
                }
            }
            self.commit(batch_first_lsn, &mut acks);
            if shutdown {
                break;
            }
        }
        if self.sync_due.is_some() {
            self.sync_now();
        }
        match self.poisoned {
            Some(reason) => Err(WalError::Poisoned { reason }),
            None => Ok(()),
        }
    }

    /// Waits for the next message or, with a sync due, for its alarm.
    fn wait(&self, queue: &Receiver<Message>) -> Woken {
        let Some(due) = &self.sync_due else {
            return queue.recv().map_or(Woken::Closed, Woken::Message);
        };
        select! {
            recv(queue) -> message => message.map_or(Woken::Closed, Woken::Message),
            // Rung (or its clock gone, which nothing else would ever ring):
            // the sync clears the deadline, so this is never waited on again.
            recv(due.alarm()) -> _ => Woken::SyncDue,
        }
    }

    /// Encodes one request's events after the batch so far, each chained
    /// to the record before it. A request that cannot be encoded is dropped
    /// whole and its LSNs (and place in the chain) are given to the next
    /// one, so the log never has a hole.
    fn stage(&mut self, events: &[Stamped]) -> Result<u64, WalError> {
        let (mark, first_lsn, first_head) = (self.buf.len(), self.next_lsn, self.head);
        for event in events {
            let start = self.buf.len();
            let encoded =
                record::encode_chained_into(&mut self.buf, self.next_lsn, &self.head, event);
            if let Err(error) = encoded {
                self.buf.truncate(mark);
                (self.next_lsn, self.head) = (first_lsn, first_head);
                return Err(error);
            }
            self.head = record::hash(&self.buf[start..]);
            self.next_lsn += 1;
        }
        Ok(self.next_lsn - 1)
    }

    /// Writes the staged batch and answers its requests.
    fn commit(&mut self, batch_first_lsn: u64, acks: &mut Vec<(Ack, Result<u64, WalError>)>) {
        if self.poisoned.is_none() && !self.buf.is_empty() {
            match self.write_batch(batch_first_lsn) {
                Ok(()) => {
                    *self.durable_head.lock() = JournalHead {
                        lsn: self.next_lsn - 1,
                        hash: self.head,
                    }
                }
                Err(reason) => self.poisoned = Some(reason),
            }
        }
        self.buf.clear();
        // Before the answers: whoever got one may ask for a snapshot that
        // must hold it.
        self.hand_to_follower();
        for (done, result) in acks.drain(..) {
            let result = match (&self.poisoned, result) {
                (Some(reason), Ok(_)) => Err(WalError::Poisoned {
                    reason: reason.clone(),
                }),
                (_, result) => result,
            };
            // A caller that stopped waiting does not need the answer.
            let _ = done.send(result);
        }
    }

    /// Hands the written batch to the follower (nothing, if it failed). A
    /// full queue blocks: the follower's pace then limits the writer's.
    fn hand_to_follower(&mut self) {
        let staged = std::mem::take(&mut self.staged);
        if self.poisoned.is_some() {
            return;
        }
        if let Some(follower) = &self.follower {
            for committed in staged {
                if follower.send(committed).is_err() {
                    // The follower stopped; it is not asked to come back.
                    self.follower = None;
                    break;
                }
            }
        }
    }

    /// Writes (and ships, with a replica) the staged batch; `Ok` once it
    /// is as durable as the mode says and the replica has it.
    fn write_batch(&mut self, batch_first_lsn: u64) -> Result<(), String> {
        let shipped = self
            .replica
            .as_ref()
            .map(|replica| replica.ship(batch_first_lsn, self.buf.clone()));
        self.write_locally(batch_first_lsn)?;
        match shipped.as_ref().map(replica::wait) {
            Some(Err(refusal)) => Err(self.refused(refusal)),
            Some(Ok(())) | None => Ok(()),
        }
    }

    /// Why the log is poisoned after the replica refused a batch.
    fn refused(&self, refusal: ReplicaRefusal) -> String {
        if refusal.fenced {
            self.fenced
                .store(true, std::sync::atomic::Ordering::Release);
            format!(
                "fenced: another writer took over the replicated log ({})",
                refusal.reason
            )
        } else {
            format!(
                "the replicated log did not take a batch: {}",
                refusal.reason
            )
        }
    }

    fn write_locally(&mut self, batch_first_lsn: u64) -> Result<(), String> {
        if self.segment.bytes >= self.segment_bytes_max {
            self.roll(batch_first_lsn)?;
        }
        let written = self.segment.write_all(&self.buf);
        written.map_err(|error| error.to_string())?;
        match self.sync {
            SyncMode::Buffered { interval_ms } => {
                if self.sync_due.is_none() {
                    let interval_ms = interval_ms.min(BUFFERED_INTERVAL_MS_MAX);
                    let interval = Duration::from_millis(interval_ms);
                    self.sync_due = Some(Deadline::after(&self.clock, interval));
                }
                Ok(())
            }
            // `None` never reaches the writer (`WalHandle::open` refuses it);
            // syncing is the safe reading should it ever.
            SyncMode::Fsync | SyncMode::None => self.sync_segment(),
        }
    }

    /// Closes the current segment and starts one at `first_lsn`. The old one
    /// is synced first: after a crash only the last segment may be torn.
    fn roll(&mut self, first_lsn: u64) -> Result<(), String> {
        if self.sync_due.is_some() {
            self.sync_segment()?;
        }
        let segment = ActiveSegment::create(&self.dir, first_lsn, self.fail_point.clone());
        self.segment = segment.map_err(|error| error.to_string())?;
        Ok(())
    }

    fn sync_segment(&mut self) -> Result<(), String> {
        self.sync_due = None;
        let started = Instant::now();
        self.segment.sync().map_err(|error| error.to_string())?;
        self.stats.record_fsync(started.elapsed());
        Ok(())
    }

    /// The buffered mode's timed sync; a failure poisons like any other.
    fn sync_now(&mut self) {
        if self.poisoned.is_none() {
            if let Err(reason) = self.sync_segment() {
                self.poisoned = Some(reason);
            }
        }
        self.sync_due = None;
    }
}
