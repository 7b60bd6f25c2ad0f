//! [`WalHandle`]: how callers reach the writer thread, and read the head
//! of the hash chain it published ([`WalHandle::head`]).
//!
//! An append is put on the queue when [`WalHandle::append`] is *called*, not
//! when its future is first polled, so LSNs follow call order: a caller
//! that appends twice gets its events logged in that order without awaiting
//! the first append.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::segment::{self, ActiveSegment};
use super::stats::{WalStats, WalStatsSnapshot};
use super::writer::{Message, SharedHead, Writer, BATCH_EVENTS_MAX};
use super::{SyncMode, WalConfig, WalError};
use crate::domain::event::Stamped;
use crate::domain::feed::JournalHead;

/// Handle to the writer thread; cheap to clone, shared by every appender.
///
/// Dropping the last handle without [`shutdown`](Self::shutdown) lets the
/// thread write and sync what is queued and stop, unjoined.
#[derive(Clone)]
pub struct WalHandle {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Sender<Message>,
    stats: Arc<WalStats>,
    /// Set by the writer when its replica said another writer took over.
    fenced: Arc<AtomicBool>,
    /// The last durable record, as the writer published it.
    head: SharedHead,
    /// Taken by the first `shutdown`; a mutex because handles are shared
    /// across threads and joining is rare, never on the append path.
    thread: Mutex<Option<JoinHandle<Result<(), WalError>>>>,
}

impl WalHandle {
    /// Starts the writer on `config.dir`'s log, continuing at `next_lsn`
    /// (clamped to at least 1) in a new segment named after it, chained to
    /// [`WalConfig::chain_head`].
    ///
    /// Replay the log first and pass [`ReplayReport::next_lsn`]: replay cuts
    /// a torn tail off the last segment, which must happen before a newer
    /// segment exists, or the next recovery would find that tail in the
    /// middle of the log and refuse it as corrupt.
    ///
    /// [`ReplayReport::next_lsn`]: super::ReplayReport::next_lsn
    pub fn open(config: WalConfig, next_lsn: u64) -> Result<Self, WalError> {
        if config.sync == SyncMode::None {
            return Err(WalError::Disabled);
        }
        let next_lsn = next_lsn.max(1);
        let wal = segment::wal_dir(&config.dir);
        std::fs::create_dir_all(&wal).map_err(|error| WalError::io(&wal, &error))?;
        segment::sync_dir(&config.dir)?;
        if let Some(last) = segment::list(&config.dir)?.last() {
            if last.first_lsn > next_lsn {
                return Err(WalError::Corrupt {
                    path: last.path.clone(),
                    offset: 0,
                    reason: format!("log is past LSN {next_lsn}; replay it first"),
                });
            }
        }
        let segment = ActiveSegment::create(&config.dir, next_lsn, config.fail_point.clone())?;
        let stats = Arc::new(WalStats::default());
        let fenced = Arc::new(AtomicBool::new(false));
        let head = Arc::new(Mutex::new(JournalHead {
            lsn: next_lsn - 1,
            hash: config.chain_head,
        }));
        let writer = Writer {
            head: config.chain_head,
            durable_head: Arc::clone(&head),
            stats: Arc::clone(&stats),
            dir: config.dir,
            sync: config.sync,
            segment_bytes_max: config.segment_bytes_max,
            fail_point: config.fail_point,
            segment,
            next_lsn,
            buf: Vec::new(),
            poisoned: None,
            clock: config.clock,
            sync_due: None,
            follower: config.follower,
            staged: Vec::new(),
            replica: config.replica,
            fenced: Arc::clone(&fenced),
        };
        let (queue, requests) = crossbeam_channel::bounded(config.queue_requests_max.max(1));
        let thread = std::thread::Builder::new()
            .name("burnledger-wal".to_owned())
            .spawn(move || writer.run(requests))
            .map_err(|error| WalError::io(&wal, &error))?;
        Ok(Self {
            shared: Arc::new(Shared {
                queue,
                stats,
                fenced,
                head,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Fsync counts and latencies so far.
    pub fn stats(&self) -> WalStatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// The log's last durable record (as durable as the sync mode says): its
    /// LSN and the hash the next record chains to. Published with each
    /// batch, before its callers are answered.
    pub fn head(&self) -> JournalHead {
        *self.shared.head.lock()
    }

    /// Whether the replica refused a batch because another writer took
    /// over the replicated log (the log is then poisoned for good).
    pub fn fenced(&self) -> bool {
        self.shared.fenced.load(Ordering::Acquire)
    }

    /// Logs `events` with consecutive LSNs, all or none; resolves to the
    /// LSN of the last one once they are as durable as the sync mode says.
    /// No events is a barrier: it resolves, with the LSN of the last event
    /// queued before it, once everything queued before it is as durable.
    ///
    /// Blocks the calling thread while the queue is full: by the time the
    /// engine appends, its state already changed in memory, so refusing the
    /// append would let memory and log differ; waiting is the backpressure.
    pub fn append(
        &self,
        events: Vec<Stamped>,
    ) -> impl Future<Output = Result<u64, WalError>> + Send + 'static {
        let queued = self.enqueue(events);
        async move {
            match queued {
                // A dropped answer means the thread stopped before serving it.
                Ok(answer) => answer.await.unwrap_or(Err(WalError::Closed)),
                Err(error) => Err(error),
            }
        }
    }

    fn enqueue(
        &self,
        events: Vec<Stamped>,
    ) -> Result<oneshot::Receiver<Result<u64, WalError>>, WalError> {
        if events.len() > BATCH_EVENTS_MAX {
            return Err(WalError::TooLarge {
                what: "append (events)",
                size: events.len() as u64,
                max: BATCH_EVENTS_MAX as u64,
            });
        }
        let (done, answer) = oneshot::channel();
        self.shared
            .queue
            .send(Message::Append { events, done })
            .map_err(|_| WalError::Closed)?;
        Ok(answer)
    }

    /// Writes and syncs everything queued before it, stops the thread and
    /// waits for it. Blocks; later appends fail with [`WalError::Closed`].
    /// Returns the poisoning failure, if the log was poisoned.
    pub fn shutdown(&self) -> Result<(), WalError> {
        // Already stopped if this fails; joining below still reports how.
        let _ = self.shared.queue.send(Message::Shutdown);
        let Some(thread) = self.shared.thread.lock().take() else {
            return Ok(());
        };
        thread.join().unwrap_or_else(|_| {
            Err(WalError::Poisoned {
                reason: "WAL writer thread panicked".to_owned(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::event::Event;
    use crate::domain::feed::JournalHead;
    use crate::domain::ids::TransactionId;
    use crate::storage::wal::record::tests::{event, stamped};
    use crate::storage::wal::{
        inspect, replay, segment_path, FailPoint, ReplayReport, RECORD_BYTES_MAX,
    };

    fn config(dir: &Path, sync: SyncMode) -> WalConfig {
        WalConfig {
            sync,
            ..WalConfig::new(dir)
        }
    }

    fn replay_all(dir: &Path) -> (ReplayReport, Vec<(u64, Event)>) {
        let mut seen = Vec::new();
        let report = replay(dir, 1, |entry| {
            assert_eq!(entry.at, stamped(entry.lsn).at);
            seen.push((entry.lsn, entry.event));
            Ok::<(), Infallible>(())
        });
        (report.unwrap(), seen)
    }

    fn events(lsns: std::ops::RangeInclusive<u64>) -> Vec<Stamped> {
        lsns.map(stamped).collect()
    }

    #[tokio::test]
    async fn written_events_replay_in_order_across_rolled_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let wal = WalHandle::open(
            WalConfig {
                segment_bytes_max: 256,
                ..config(tmp.path(), SyncMode::Fsync)
            },
            1,
        )
        .unwrap();
        // One at a time, so each is a batch and segments roll between them...
        for n in 0..20u64 {
            assert_eq!(
                wal.append(events(3 * n + 1..=3 * n + 3)).await,
                Ok(3 * n + 3)
            );
        }
        // ...then queued at once, so a batch holds several requests.
        let pending: Vec<_> = (20..40u64)
            .map(|n| (n, wal.append(events(3 * n + 1..=3 * n + 3))))
            .collect();
        for (n, append) in pending {
            assert_eq!(append.await, Ok(3 * n + 3));
        }
        wal.shutdown().unwrap();

        let (report, seen) = replay_all(tmp.path());
        let want: Vec<_> = (1..=120).map(|lsn| (lsn, event(lsn))).collect();
        assert_eq!(seen, want);
        assert_eq!(report.bytes_truncated, 0);
        let segments = inspect(tmp.path()).unwrap();
        assert!(segments.len() > 2, "{} segments", segments.len());
        let (last, closed) = segments.split_last().unwrap();
        assert!(closed.iter().all(|s| s.bytes >= 256 && s.problem.is_none()));
        assert_eq!(last.last_lsn, Some(120));
    }

    #[tokio::test]
    async fn lsns_continue_after_a_restart_even_past_a_torn_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let wal = WalHandle::open(config(tmp.path(), SyncMode::Fsync), 1).unwrap();
        assert_eq!(wal.append(events(1..=3)).await, Ok(3));
        wal.shutdown().unwrap();
        // A crash mid-write leaves half a record behind.
        let first = segment_path(tmp.path(), 1);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes.extend_from_within(..10);
        std::fs::write(&first, &bytes).unwrap();

        let (report, _) = replay_all(tmp.path());
        assert_eq!((report.bytes_truncated, report.next_lsn), (10, 4));
        // A stale LSN would reuse LSNs already on disk.
        assert!(WalHandle::open(config(tmp.path(), SyncMode::Fsync), 1).is_err());
        let wal = WalHandle::open(config(tmp.path(), SyncMode::Fsync), report.next_lsn).unwrap();
        assert_eq!(wal.append(events(4..=5)).await, Ok(5));
        wal.shutdown().unwrap();

        let (report, seen) = replay_all(tmp.path());
        assert_eq!(
            seen.iter().map(|(lsn, _)| *lsn).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!((report.segments, report.bytes_truncated), (2, 0));
        assert!(segment_path(tmp.path(), 4).exists());
    }

    async fn assert_failure_poisons_forever(fail: impl Fn(&FailPoint, bool)) {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path(), SyncMode::Fsync);
        let fail_point = cfg.fail_point.clone();
        let wal = WalHandle::open(cfg, 1).unwrap();
        assert_eq!(wal.append(events(1..=1)).await, Ok(1));

        fail(&fail_point, true);
        let Err(WalError::Poisoned { reason }) = wal.append(events(2..=2)).await else {
            panic!("the failing append must be poisoned");
        };
        assert!(reason.contains("injected"), "{reason}");
        fail(&fail_point, false);
        let poisoned = Err(WalError::Poisoned { reason });
        assert_eq!(wal.append(events(3..=3)).await, poisoned);
        assert_eq!(wal.append(Vec::new()).await, poisoned, "barrier");
        assert_eq!(wal.shutdown(), poisoned.map(|_| ()));
    }

    #[tokio::test]
    async fn a_failed_fsync_poisons_that_append_and_every_later_one() {
        assert_failure_poisons_forever(FailPoint::fail_syncs).await;
    }

    #[tokio::test]
    async fn a_failed_write_poisons_that_append_and_every_later_one() {
        assert_failure_poisons_forever(FailPoint::fail_writes).await;
    }

    #[tokio::test]
    async fn a_barrier_resolves_with_the_lsn_before_it_once_that_is_durable() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path(), SyncMode::Fsync);
        let fail_point = cfg.fail_point.clone();
        let wal = WalHandle::open(cfg, 1).unwrap();
        assert_eq!(wal.append(Vec::new()).await, Ok(0), "empty log");

        let a = wal.append(events(1..=2));
        let b = wal.append(events(3..=3));
        let barrier = wal.append(Vec::new());
        let c = wal.append(events(4..=4));
        assert_eq!(barrier.await, Ok(3));
        assert!(fail_point.syncs() >= 1);
        assert!(inspect(tmp.path()).unwrap()[0].records >= 3);
        assert_eq!((a.await, b.await, c.await), (Ok(2), Ok(3), Ok(4)));
        wal.shutdown().unwrap();
    }

    #[tokio::test]
    async fn buffered_mode_acknowledges_before_syncing() {
        let tmp = tempfile::tempdir().unwrap();
        let hour_ms = 3_600_000;
        let cfg = config(
            tmp.path(),
            SyncMode::Buffered {
                interval_ms: hour_ms,
            },
        );
        let fail_point = cfg.fail_point.clone();
        let wal = WalHandle::open(cfg, 1).unwrap();
        assert_eq!(wal.append(events(1..=2)).await, Ok(2));
        assert_eq!(fail_point.syncs(), 0);
        assert_eq!(
            inspect(tmp.path()).unwrap()[0].records,
            2,
            "written to the OS"
        );
        wal.shutdown().unwrap();
        assert_eq!(fail_point.syncs(), 1, "synced at shutdown");

        // A full segment is synced before the next one starts: after a crash
        // only the last segment may have a torn tail.
        let tmp = tempfile::tempdir().unwrap();
        let cfg = WalConfig {
            segment_bytes_max: 1,
            ..config(
                tmp.path(),
                SyncMode::Buffered {
                    interval_ms: hour_ms,
                },
            )
        };
        let fail_point = cfg.fail_point.clone();
        let wal = WalHandle::open(cfg, 1).unwrap();
        assert_eq!(wal.append(events(1..=1)).await, Ok(1));
        assert_eq!(wal.append(events(2..=2)).await, Ok(2));
        assert_eq!(
            (fail_point.syncs(), inspect(tmp.path()).unwrap().len()),
            (1, 2)
        );
        wal.shutdown().unwrap();

        // An interval that has passed syncs after the very next batch.
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path(), SyncMode::Buffered { interval_ms: 0 });
        let fail_point = cfg.fail_point.clone();
        let wal = WalHandle::open(cfg, 1).unwrap();
        assert_eq!(wal.append(events(1..=1)).await, Ok(1));
        assert_eq!(wal.append(Vec::new()).await, Ok(1));
        assert_eq!(fail_point.syncs(), 1);
        wal.shutdown().unwrap();
    }

    #[tokio::test]
    async fn buffered_mode_syncs_when_its_interval_passes_on_the_clock() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let cfg = WalConfig {
            clock: clock.shared(),
            ..config(
                tmp.path(),
                SyncMode::Buffered {
                    interval_ms: 60_000,
                },
            )
        };
        let fail_point = cfg.fail_point.clone();
        let wal = WalHandle::open(cfg, 1).unwrap();
        let minute = Duration::from_secs(60);
        let just_short = minute - Duration::from_millis(1);

        // With traffic: the first batch after the interval passed syncs
        // before it is written, so before the barrier is answered.
        assert_eq!(wal.append(events(1..=2)).await, Ok(2));
        clock.advance(just_short);
        assert_eq!(wal.append(events(3..=3)).await, Ok(3));
        assert_eq!(fail_point.syncs(), 0, "not due a millisecond short");
        clock.advance(Duration::from_millis(1));
        assert_eq!(wal.append(Vec::new()).await, Ok(3));
        assert_eq!(fail_point.syncs(), 1, "due on the clock");

        // Idle: the alarm alone wakes the writer to sync. The interval
        // starts at the first write after a sync.
        assert_eq!(wal.append(events(4..=4)).await, Ok(4));
        clock.advance(just_short);
        assert_eq!(wal.append(Vec::new()).await, Ok(4));
        assert_eq!(fail_point.syncs(), 1);
        clock.advance(Duration::from_millis(1));
        synced_within(&fail_point, 2, Duration::from_secs(10)).await;
        wal.shutdown().unwrap();
        assert_eq!(fail_point.syncs(), 2, "nothing left to sync at shutdown");
    }

    /// Waits, polling, until `fail_point` counted `syncs`: an idle writer's
    /// sync has nothing to await but its count.
    async fn synced_within(fail_point: &FailPoint, syncs: u64, bound: Duration) {
        let deadline = std::time::Instant::now() + bound;
        while fail_point.syncs() < syncs {
            assert!(
                std::time::Instant::now() < deadline,
                "{} syncs after {bound:?}, want {syncs}",
                fail_point.syncs()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn a_too_large_append_is_refused_whole_and_leaves_no_lsn_gap() {
        let tmp = tempfile::tempdir().unwrap();
        let wal = WalHandle::open(config(tmp.path(), SyncMode::Fsync), 1).unwrap();
        let huge = Event::WithdrawalFailed {
            tx: TransactionId::new(1, 1),
            reason: "x".repeat(RECORD_BYTES_MAX),
        };
        let huge = Stamped {
            at: stamped(1).at,
            event: huge,
        };
        let refused = wal.append(vec![stamped(1), huge]);
        let accepted = wal.append(events(1..=1));
        assert!(matches!(refused.await, Err(WalError::TooLarge { .. })));
        assert_eq!(accepted.await, Ok(1));
        let too_many = vec![stamped(1); BATCH_EVENTS_MAX + 1];
        assert!(matches!(
            wal.append(too_many).await,
            Err(WalError::TooLarge { .. })
        ));
        wal.shutdown().unwrap();
        assert_eq!(replay_all(tmp.path()).1, [(1, event(1))]);
    }

    /// The head is the last durable record's LSN and hash; a request the
    /// writer refuses gives up its place in the chain with its LSNs, so
    /// the chain stays whole across it and across rolled segments.
    #[tokio::test]
    async fn the_head_is_the_last_records_hash_and_a_refused_append_leaves_the_chain_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = WalConfig {
            segment_bytes_max: 256,
            ..config(tmp.path(), SyncMode::Fsync)
        };
        let wal = WalHandle::open(cfg, 1).unwrap();
        assert_eq!(wal.head(), JournalHead::default(), "an empty log");
        assert_eq!(wal.append(events(1..=3)).await, Ok(3));
        let huge = Stamped {
            at: stamped(5).at,
            event: Event::WithdrawalFailed {
                tx: TransactionId::new(1, 1),
                reason: "x".repeat(RECORD_BYTES_MAX),
            },
        };
        let refused = wal.append(vec![stamped(4), huge]);
        let accepted = wal.append(events(4..=6));
        assert!(matches!(refused.await, Err(WalError::TooLarge { .. })));
        assert_eq!(accepted.await, Ok(6));
        for n in 2..10u64 {
            wal.append(events(3 * n + 1..=3 * n + 3)).await.unwrap();
        }
        let head = wal.head();
        wal.shutdown().unwrap();
        assert!(inspect(tmp.path()).unwrap().len() > 2, "rolled over");
        let chain = crate::storage::wal::verify_chain(tmp.path(), None).unwrap();
        assert_eq!(chain.problem, None);
        assert_eq!(
            (chain.chained_from, chain.records, chain.head),
            (Some(1), 30, head)
        );
        let last = crate::storage::wal::record_hash_at(tmp.path(), 30).unwrap();
        assert_eq!((head.lsn, Some(head.hash)), (30, last));
    }

    #[tokio::test]
    async fn after_shutdown_appends_are_refused_and_mode_none_opens_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let wal = WalHandle::open(config(tmp.path(), SyncMode::Fsync), 1).unwrap();
        let clone = wal.clone();
        wal.shutdown().unwrap();
        assert_eq!(clone.append(events(1..=1)).await, Err(WalError::Closed));
        assert_eq!(clone.shutdown(), Ok(()));
        let none = WalHandle::open(config(tmp.path(), SyncMode::None), 1).err();
        assert_eq!(none, Some(WalError::Disabled));
    }
}
