//! The checkpointer: a background thread that writes snapshots built from
//! the log's events, never from the engine's live state.
//!
//! It follows the log: the WAL writer hands it every batch of events once
//! written (and, with `fsync`, synced), in LSN order, and it applies them to
//! its own copy of the state, which it started from the state recovered at
//! open. A snapshot is that copy at the LSN applied last: exactly the state
//! at that LSN, both sides of every transfer included, which a fuzzy copy
//! of live account states could split. The live engine is never paused and
//! never asked for anything. Applying an event costs a fraction of reading
//! it back from disk (no read, CRC or decode), which matters: the first
//! version replayed the WAL for each snapshot and took a third of the CPU
//! of a loaded 2-core machine. The price is memory: a second copy of the
//! account states.
//!
//! Should its copy ever fall behind the log (a gap in LSNs, an event that
//! does not apply), it rebuilds the state from disk — the last snapshot
//! plus the WAL up to the durable LSN — and follows on from there.
//!
//! After each snapshot it keeps the newest `snapshots_kept` and retires the
//! WAL segments none of them needs (deletes them, or moves them to
//! [`CheckpointSettings::archive_dir`]). A snapshot stores the hash chain's
//! head at its LSN: the hash of the last batch it applied, as the writer
//! hands it over ([`Committed::last_hash`]). It snapshots after `every_events`
//! events, every `interval` on the injected clock ([`CheckpointSettings::clock`];
//! nothing is written when nothing was logged since the last snapshot), on
//! demand, and at shutdown. Before a timed or requested snapshot it applies
//! every batch already handed to it, so the snapshot holds everything
//! acknowledged before then. [`Checkpointer::progress`] lets an observer
//! (a test) see how far it got, and await it, without asking the thread.
//!
//! It also feeds the history store (see [`crate::storage::feed`]): each
//! event it applies is read back from its copy as history rows and handed
//! to the history writer, whose thread it joins when it stops. A snapshot
//! at LSN S is written only once the writer has ingested up to S and
//! written the store to disk; while the store has failed, snapshots are
//! held back (each attempt logs why) and the log, whose segments are
//! deleted only behind snapshots, keeps every event the store lacks until a
//! restart catches it up. When its copy is rebuilt from disk, the rebuild
//! feeds the events the store lacks, like recovery at open.
//!
//! Its copy forgets finished withdrawals as the engine does (see
//! [`crate::storage::recall`]): every [`FORGET_EVERY_EVENTS`] events and
//! before each snapshot, every finished withdrawal last changed before its
//! shard's history horizon (what the store has ingested) leaves the copy,
//! so the copy and every snapshot (what a restart loads into memory) stay
//! flat. Forgetting what the store holds only in memory is safe: no
//! snapshot is written before the store is on disk up to its LSN, so a
//! crash restarts from a snapshot that still holds whatever the store
//! lost, and recovery feeds it again. A return of a withdrawal the copy forgot takes it back from the
//! store before it is applied; one the store cannot give back leaves the
//! copy behind (and every snapshot held back, logged) rather than apply a
//! guess.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, select, Receiver, Sender};
use tokio::sync::{oneshot, watch};

use crate::clock::SharedClock;
use crate::domain::account::AccountState;
use crate::domain::audit::audit;
use crate::domain::event::Stamped;
use crate::domain::ids::AccountId;
use crate::domain::money::Currencies;
use crate::domain::payouts::PayoutRecord;
use crate::domain::withdrawal::WithdrawalHistory;
use crate::storage::deadline::Deadline;
use crate::storage::events::Retention;
use crate::storage::feed::{apply_logged, Feeder, HistoryWriter};
use crate::storage::recall::{forget_in_copy, restore_for_replay};
use crate::storage::recovery::{rebuild_recalling, snapshot_dir, RecoveryError};
use crate::storage::snapshot::{self, SnapshotFile};
use crate::storage::wal::record::Hash;
use crate::storage::wal::{self, Committed, ReplayMode};

/// Batches of events that may wait for the checkpointer; past this the WAL
/// writer waits, which slows appends rather than letting memory grow. Few:
/// the checkpointer (and the history store it feeds) is slower than the
/// engine under sustained load, so a deep queue only fills, and whatever
/// waits in it is memory (events queued, and finished withdrawals the
/// engine may not forget until the store has them). At 4,096 the 16 M-op
/// benchmark peaked 56 % above the 4 M-op one (README, *Memory*).
pub const FOLLOW_QUEUE_BATCHES_MAX: usize = 32;

/// How many followed events the copy goes between forgetting what the
/// store holds, besides before each snapshot: snapshots may be millions of
/// events apart, and the copy must not grow with the withdrawals finished
/// meanwhile (a pass visits every account: a few milliseconds at 100,000).
pub const FORGET_EVERY_EVENTS: u64 = 1 << 18;

/// The state the log is at when the ledger opens.
pub struct Start {
    pub accounts: HashMap<AccountId, AccountState>,
    pub payouts: BTreeMap<u64, PayoutRecord>,
    /// The LSN that state includes.
    pub lsn: u64,
    /// The LSN of the newest snapshot on disk.
    pub last_snapshot_lsn: u64,
    /// The hash of the record at `lsn` (recovery's head), if known.
    pub head: Option<Hash>,
}

/// What the checkpointer needs from the running ledger.
pub struct CheckpointSettings {
    pub data_dir: PathBuf,
    pub currencies: Currencies,
    /// Snapshot this often (on `clock`) if anything was logged meanwhile.
    pub interval: Duration,
    /// Where `interval` is measured (the ledger passes
    /// [`Config::clock`](crate::Config::clock)).
    pub clock: SharedClock,
    /// Snapshot after this many events since the last snapshot.
    pub every_events: u64,
    pub snapshots_kept: usize,
    /// The highest LSN known durable right now (for a rebuild from disk).
    pub durable_lsn: Box<dyn Fn() -> u64 + Send>,
    /// Where the copy's forgotten withdrawals are found again, and how far
    /// each shard may forget: the history store
    /// ([`StoreHistory`](crate::storage::recall::StoreHistory)), or the
    /// folder's, opened only if a replay needs it (no horizons: nothing is
    /// forgotten).
    pub history: Arc<dyn WithdrawalHistory>,
    /// What the event feed's consumers still need of the log; `None`: only
    /// the snapshots decide what is pruned.
    pub retention: Option<Retention>,
    /// The ledger's shard count (which shard's horizon an account follows).
    pub shards: usize,
    /// Where retired WAL segments go instead of being deleted
    /// ([`Config::archive_dir`](crate::Config::archive_dir)).
    pub archive_dir: Option<PathBuf>,
}

type Reply = oneshot::Sender<Result<Option<SnapshotFile>, String>>;

enum Request {
    /// Snapshot now and say how it went.
    Now(Reply),
    /// The log is closed: apply what is left, snapshot, stop.
    Final(Reply),
    /// Stop at once (like a crash as far as snapshots go).
    Stop,
}

/// How far the checkpointer got, as [`Checkpointer::progress`] shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointProgress {
    /// The LSN its copy of the state has applied.
    pub applied_lsn: u64,
    /// The LSN of the newest snapshot on disk.
    pub snapshot_lsn: u64,
    /// Snapshots this checkpointer wrote.
    pub snapshots_written: u64,
}

/// Handle to the checkpointer thread. Dropping it stops the thread after
/// any snapshot in progress.
pub struct Checkpointer {
    requests: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    /// Fed by the thread; joined after it.
    history: Option<HistoryWriter>,
    progress: watch::Receiver<CheckpointProgress>,
}

impl Checkpointer {
    /// Starts the thread, feeding the history store through `history` if
    /// given; give the returned sender to the WAL writer
    /// ([`crate::storage::wal::WalConfig::follower`]).
    pub fn start(
        settings: CheckpointSettings,
        start: Start,
        history: Option<(Feeder, HistoryWriter)>,
    ) -> std::io::Result<(Self, Sender<Committed>)> {
        let (requests, requests_rx) = bounded(16);
        let (follow, follow_rx) = bounded(FOLLOW_QUEUE_BATCHES_MAX);
        let (feeder, history) = history.unzip();
        let follower = Follower::new(settings, start, feeder);
        let progress = follower.progress.subscribe();
        // Set here, not on the thread: once `start` returns, the interval
        // runs (a test's manual clock may be advanced right away).
        let timer = Deadline::after(&follower.settings.clock, follower.settings.interval);
        let thread = std::thread::Builder::new()
            .name("burnledger-checkpoint".into())
            .spawn(move || follower.run(timer, &follow_rx, &requests_rx))?;
        Ok((
            Self {
                requests: Some(requests),
                thread: Some(thread),
                history,
                progress,
            },
            follow,
        ))
    }

    /// How far the thread got: updated after every batch it applies and
    /// every snapshot it writes; await a change with
    /// [`watch::Receiver::wait_for`].
    pub fn progress(&self) -> watch::Receiver<CheckpointProgress> {
        self.progress.clone()
    }

    /// Asks for a snapshot now (if anything was logged since the last one);
    /// the answer arrives on the returned channel.
    pub fn request_snapshot(
        &self,
    ) -> Result<oneshot::Receiver<Result<Option<SnapshotFile>, String>>, String> {
        self.ask(Request::Now)
    }

    /// After the WAL writer stopped: applies its last events, writes a final
    /// snapshot and stops the thread.
    pub fn finish(&mut self) -> Result<Option<SnapshotFile>, String> {
        let answer = self.ask(Request::Final)?;
        let result = answer
            .blocking_recv()
            .map_err(|_| "the checkpointer stopped before answering".to_string())?;
        self.stop();
        result
    }

    fn ask(
        &self,
        request: impl FnOnce(Reply) -> Request,
    ) -> Result<oneshot::Receiver<Result<Option<SnapshotFile>, String>>, String> {
        let (reply, answer) = oneshot::channel();
        let requests = self
            .requests
            .as_ref()
            .ok_or("the checkpointer is stopped")?;
        requests
            .send(request(reply))
            .map_err(|_| "the checkpointer is stopped".to_string())?;
        Ok(answer)
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        if let Some(requests) = self.requests.take() {
            let _ = requests.send(Request::Stop);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // The thread is gone, and its feeder with it: the history writer
        // ingests what it was handed, writes the store to disk and stops.
        if let Some(mut history) = self.history.take() {
            history.finish();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Account states boxed: a hash table of pointers stays small at the
/// load factors a growing table passes through (inline ≈ 150-byte states
/// cost ~300 MB of table for a million accounts, boxed ~35 MB).
type Accounts = HashMap<AccountId, Box<AccountState>>;

fn boxed(accounts: HashMap<AccountId, AccountState>) -> Accounts {
    accounts
        .into_iter()
        .map(|(id, a)| (id, Box::new(a)))
        .collect()
}

/// The checkpointer thread's state: its copy of the ledger.
struct Follower {
    settings: CheckpointSettings,
    accounts: Accounts,
    payouts: BTreeMap<u64, PayoutRecord>,
    applied_lsn: u64,
    /// The hash of the record at `applied_lsn`, if known.
    applied_head: Option<Hash>,
    last_snapshot_lsn: u64,
    /// Why the copy stopped following the log, until rebuilt from disk.
    behind: Option<String>,
    snapshots_written: u64,
    progress: watch::Sender<CheckpointProgress>,
    /// Feeds the history store, when there is one.
    feed: Option<Feeder>,
    /// The last snapshot was held back by the history store.
    history_held: bool,
    /// The applied LSN when the copy last forgot what the store holds.
    forgot_at_lsn: u64,
}

impl Follower {
    fn new(settings: CheckpointSettings, start: Start, feed: Option<Feeder>) -> Self {
        let (progress, _) = watch::channel(CheckpointProgress {
            applied_lsn: start.lsn,
            snapshot_lsn: start.last_snapshot_lsn,
            snapshots_written: 0,
        });
        Self {
            settings,
            accounts: boxed(start.accounts),
            payouts: start.payouts,
            applied_lsn: start.lsn,
            applied_head: start.head,
            last_snapshot_lsn: start.last_snapshot_lsn,
            behind: None,
            snapshots_written: 0,
            progress,
            feed,
            history_held: false,
            forgot_at_lsn: start.lsn,
        }
    }

    fn run(
        mut self,
        mut timer: Deadline,
        follow: &Receiver<Committed>,
        requests: &Receiver<Request>,
    ) {
        loop {
            let mut rang = false;
            let stop = select! {
                recv(follow) -> committed => match committed {
                    Ok(committed) => {
                        self.apply(committed);
                        // Nothing more waiting: what was derived goes to
                        // the history writer now (read-your-writes).
                        if follow.is_empty() {
                            self.flush_feed();
                        }
                        false
                    }
                    // The writer stopped; only requests remain.
                    Err(_) => self.answer_received(requests.recv(), follow),
                },
                recv(requests) -> request => self.answer_received(request, follow),
                // Rung (or its clock gone, which nothing else would ever
                // ring): due, and replaced below.
                recv(timer.alarm()) -> _ => {
                    rang = true;
                    false
                }
            };
            if stop {
                return;
            }
            self.snapshot_if_due(&mut timer, rang, follow);
        }
    }

    /// Snapshots when `every_events` were applied since the last snapshot
    /// or the timer is due (`rang`, or passed on the clock); then the timer
    /// starts again.
    fn snapshot_if_due(&mut self, timer: &mut Deadline, rang: bool, follow: &Receiver<Committed>) {
        // While the history store holds a snapshot back, only the timer
        // (and requests) try again: once per interval, one log line each.
        let due_by_count = !self.history_held
            && self.applied_lsn.saturating_sub(self.last_snapshot_lsn)
                >= self.settings.every_events;
        let due_by_time = rang || timer.has_passed(&*self.settings.clock);
        if !(due_by_count || due_by_time) {
            return;
        }
        *timer = Deadline::after(&self.settings.clock, self.settings.interval);
        if due_by_time {
            self.drain(follow);
        }
        // A failed background snapshot is retried on the next occasion; the
        // WAL still holds everything meanwhile.
        if let Err(error) = self.snapshot() {
            tracing::warn!(%error, "background snapshot failed; will retry");
        }
    }

    /// Answers what a wait for a request got; true when the thread should
    /// stop (asked to, or every handle is gone).
    fn answer_received(
        &mut self,
        received: Result<Request, crossbeam_channel::RecvError>,
        follow: &Receiver<Committed>,
    ) -> bool {
        match received {
            Ok(request) => self.answer(request, follow),
            Err(_) => true,
        }
    }

    /// Answers a request; true when the thread should stop.
    fn answer(&mut self, request: Request, follow: &Receiver<Committed>) -> bool {
        let stop = matches!(request, Request::Final(_) | Request::Stop);
        if let Request::Now(reply) | Request::Final(reply) = request {
            // Everything acknowledged before the request was handed over
            // before its acknowledgement: take it all first.
            self.drain(follow);
            let _ = reply.send(self.snapshot().map_err(|e| e.to_string()));
        }
        stop
    }

    fn drain(&mut self, follow: &Receiver<Committed>) {
        while let Ok(committed) = follow.try_recv() {
            self.apply(committed);
        }
        self.flush_feed();
    }

    fn flush_feed(&mut self) {
        if let Some(feed) = &mut self.feed {
            feed.flush();
        }
    }

    /// Applies a batch the writer logged and shows the progress.
    fn apply(&mut self, committed: Committed) {
        self.follow(committed);
        if self.applied_lsn >= self.forgot_at_lsn.saturating_add(FORGET_EVERY_EVENTS) {
            self.forget_what_the_store_holds();
        }
        self.publish();
    }

    /// Events at or below the applied LSN are skipped (the copy was rebuilt
    /// past them); a gap or an event that does not apply leaves the copy
    /// behind until the next rebuild.
    fn follow(&mut self, committed: Committed) {
        if self.behind.is_some() {
            return;
        }
        for (lsn, stamped) in (committed.first_lsn..).zip(&committed.events) {
            if lsn > self.applied_lsn + 1 {
                self.behind = Some(format!(
                    "got LSN {lsn} after {}: a gap in the log",
                    self.applied_lsn
                ));
                return;
            }
            if lsn == self.applied_lsn + 1 {
                if let Err(reason) = self.apply_one(lsn, stamped) {
                    self.behind = Some(format!("LSN {lsn} does not apply: {reason}"));
                    return;
                }
                self.applied_lsn = lsn;
            }
        }
        let last_lsn = (committed.first_lsn + committed.events.len() as u64).checked_sub(1);
        if last_lsn == Some(self.applied_lsn) {
            self.applied_head = Some(committed.last_hash);
        }
    }

    /// Applies one event to the copy and feeds the history rows it made
    /// (unless the store has them already).
    fn apply_one(&mut self, lsn: u64, stamped: &Stamped) -> Result<(), String> {
        let recall = &*self.settings.history;
        restore_for_replay(&mut self.accounts, &stamped.event, recall)?;
        let feed = self.feed.as_mut().filter(|feed| lsn > feed.fed_lsn());
        let currencies = &self.settings.currencies;
        let state = (&mut self.accounts, &mut self.payouts);
        let logged = (lsn, &stamped.event, stamped.at);
        match feed {
            Some(feed) => {
                apply_logged(state, currencies, logged, Some(feed.changes()))?;
                feed.fed(lsn, &stamped.event, stamped.at);
            }
            None => apply_logged(state, currencies, logged, None)?,
        }
        Ok(())
    }

    /// Writes a snapshot at the applied LSN if it is past the last one.
    fn snapshot(&mut self) -> Result<Option<SnapshotFile>, RecoveryError> {
        if let Some(reason) = self.behind.take() {
            self.rebuild_from_disk(reason)?;
        }
        if self.applied_lsn <= self.last_snapshot_lsn {
            return Ok(None);
        }
        let checked = audit(self.accounts.values().map(|a| &**a));
        if let Some(violation) = checked.violations.first() {
            return Err(RecoveryError::Invariant(violation.clone()));
        }
        self.history_on_disk()?;
        self.forget_what_the_store_holds();
        let file = write_and_prune(
            &self.settings,
            (self.applied_lsn, self.applied_head),
            &self.accounts,
            &self.payouts,
        )?;
        self.last_snapshot_lsn = file.lsn;
        self.snapshots_written += 1;
        self.publish();
        Ok(Some(file))
    }

    /// Forgets the copy's finished withdrawals the store holds (below each
    /// shard's horizon: what it ingested; why that need not be on disk yet:
    /// the module docs).
    fn forget_what_the_store_holds(&mut self) {
        self.forgot_at_lsn = self.applied_lsn;
        let accounts = self.accounts.values_mut().map(|a| &mut **a);
        let forgotten = forget_in_copy(accounts, &*self.settings.history, self.settings.shards);
        if forgotten > 0 {
            tracing::debug!(
                forgotten,
                "finished withdrawals left the checkpointer's copy"
            );
        }
    }

    /// Replaces the copy that fell behind (`reason`) with the state on
    /// disk: the last snapshot plus the WAL up to the durable LSN, feeding
    /// the history store what it lacks on the way.
    fn rebuild_from_disk(&mut self, reason: String) -> Result<(), RecoveryError> {
        tracing::warn!(%reason, "checkpointer rebuilds its copy of the state from disk");
        let rebuilt = rebuild_recalling(
            &self.settings.data_dir,
            &self.settings.currencies,
            ReplayMode::ReadOnly {
                until_lsn: Some((self.settings.durable_lsn)()),
            },
            self.feed.as_mut(),
            &*self.settings.history,
        );
        let rebuilt = match rebuilt {
            Ok(rebuilt) => rebuilt,
            Err(error) => {
                self.behind = Some(reason);
                return Err(error);
            }
        };
        if rebuilt.report.history_lost.is_some() {
            rebuilt.report.log();
        }
        self.accounts = boxed(rebuilt.accounts);
        self.payouts = rebuilt.payouts;
        self.applied_lsn = rebuilt.report.last_lsn;
        self.applied_head = rebuilt.report.head.map(|head| head.hash);
        self.publish();
        Ok(())
    }

    /// Makes sure the history store holds everything up to the applied LSN
    /// on disk, so the snapshot about to be written is not ahead of it.
    fn history_on_disk(&mut self) -> Result<(), RecoveryError> {
        let Some(feed) = &mut self.feed else {
            return Ok(());
        };
        let held_back = |reason: String| {
            let reason = format!(
                "snapshot at LSN {} held back: {reason}; the log is kept (it grows) until \
                 the history store holds it, at the latest after a restart",
                self.applied_lsn
            );
            tracing::error!("{reason}");
            RecoveryError::History(reason)
        };
        let on_disk = feed
            .persist()
            .and_then(|on_disk| match on_disk < self.applied_lsn {
                true => Err(format!("the history store holds LSN {on_disk} only")),
                false => Ok(()),
            });
        self.history_held = on_disk.is_err();
        on_disk.map_err(held_back)
    }

    fn publish(&self) {
        self.progress.send_replace(CheckpointProgress {
            applied_lsn: self.applied_lsn,
            snapshot_lsn: self.last_snapshot_lsn,
            snapshots_written: self.snapshots_written,
        });
    }
}

/// Writes a snapshot at `lsn` with its chain `head`, then keeps the newest
/// `snapshots_kept` and retires (deletes, or moves to the archive) the WAL
/// segments none of them, and no event consumer within the retention
/// caps, needs.
fn write_and_prune(
    settings: &CheckpointSettings,
    (lsn, head): (u64, Option<Hash>),
    accounts: &Accounts,
    payouts: &BTreeMap<u64, PayoutRecord>,
) -> Result<SnapshotFile, RecoveryError> {
    let data_dir = &settings.data_dir;
    let dir = snapshot_dir(data_dir);
    let states = accounts.values().map(|a| &**a);
    let file = snapshot::write_chained(&dir, lsn, head, states, payouts.values())?;
    snapshot::prune(&dir, settings.snapshots_kept)?;
    // Keep every record the oldest kept snapshot would need, so recovery can
    // fall back to it if the newer ones are damaged.
    if let Some(oldest) = snapshot::list(&dir)?.last() {
        let floor = match &settings.retention {
            Some(retention) => retention.keep_from(data_dir, oldest.lsn + 1)?,
            None => oldest.lsn + 1,
        };
        let archive = settings.archive_dir.as_deref();
        wal::retire_segments_below(data_dir, floor, archive)?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::money::{usd, CurrencyConfig};
    use crate::domain::time::UnixMs;
    use crate::domain::withdrawal::WithdrawalStatus;
    use crate::storage::feed::testing;
    use crate::storage::recall::testing::{self as recall_testing, Held};
    use crate::storage::recall::FolderHistory;
    use crate::storage::wal::{WalConfig, WalHandle};

    /// Deposits of 100, 200, 300 … to account 1, as logged events, the
    /// n-th stamped n ms after the epoch.
    fn deposits(count: usize) -> Vec<Stamped> {
        let mut account = AccountState::new(1);
        (1..=count)
            .map(|n| {
                let at = UnixMs::from_millis(n as u64);
                let effect = account.deposit(usd(), 100 * n as i128, None, at).unwrap();
                Stamped {
                    at,
                    event: effect.event.unwrap(),
                }
            })
            .collect()
    }

    fn currencies() -> Currencies {
        Currencies::new(&[CurrencyConfig::new("USD", 2)]).unwrap()
    }

    /// Snapshots only on request or on an hour-long timer.
    fn settings(dir: &Path) -> CheckpointSettings {
        CheckpointSettings {
            data_dir: dir.to_path_buf(),
            currencies: currencies(),
            interval: Duration::from_secs(3600),
            clock: SharedClock::system(),
            every_events: u64::MAX,
            snapshots_kept: 2,
            durable_lsn: Box::new(|| 3),
            history: Arc::new(FolderHistory::new(dir, &currencies())),
            shards: 1,
            retention: None,
            archive_dir: None,
        }
    }

    fn empty_start() -> Start {
        Start {
            accounts: HashMap::new(),
            payouts: BTreeMap::new(),
            lsn: 0,
            last_snapshot_lsn: 0,
            head: None,
        }
    }

    fn follower(dir: &Path) -> Follower {
        Follower::new(settings(dir), empty_start(), None)
    }

    /// The progress once `done` holds; fails the test after 10 s.
    async fn reached(
        progress: &mut watch::Receiver<CheckpointProgress>,
        done: impl FnMut(&CheckpointProgress) -> bool,
    ) -> CheckpointProgress {
        let waited = tokio::time::timeout(Duration::from_secs(10), progress.wait_for(done));
        let seen = waited.await.expect("the checkpointer got there in time");
        *seen.expect("the checkpointer runs")
    }

    fn available(file: &SnapshotFile) -> i128 {
        let contents = snapshot::read_full(&file.path).unwrap();
        contents.accounts[0].balance(usd()).available
    }

    /// Snapshots on its own thread, answering the LSN written or why not.
    fn snapshot_on_a_thread(
        mut follower: Follower,
    ) -> std::thread::JoinHandle<(Follower, Result<Option<u64>, String>)> {
        std::thread::spawn(move || {
            let written = follower.snapshot();
            let written = written.map(|f| f.map(|f| f.lsn)).map_err(|e| e.to_string());
            (follower, written)
        })
    }

    /// A follower whose copy holds account 7 with its completed
    /// withdrawal forgotten, finding withdrawals in `history`.
    fn forgot_one(dir: &Path, history: Held) -> Follower {
        let (mut account, _, _) = recall_testing::completed();
        account.forget_finished(UnixMs::from_millis(recall_testing::T.as_millis() + 1));
        let start = Start {
            accounts: HashMap::from([(7, account)]),
            ..empty_start()
        };
        let settings = CheckpointSettings {
            history: Arc::new(history),
            ..settings(dir)
        };
        Follower::new(settings, start, None)
    }

    fn returned_at_lsn_1(tx: crate::domain::ids::TransactionId) -> Committed {
        let at = UnixMs::from_millis(recall_testing::T.as_millis() + 2);
        let event = recall_testing::returned(tx);
        Committed {
            last_hash: [0; 32],
            first_lsn: 1,
            events: vec![Stamped { at, event }],
        }
    }

    #[test]
    fn the_copy_takes_a_forgotten_withdrawal_back_from_the_store_before_its_return() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, tx, record) = recall_testing::completed();
        let history = Held {
            horizon: UnixMs::UNKNOWN,
            records: vec![(tx, record)],
        };
        let mut follower = forgot_one(tmp.path(), history);
        follower.apply(returned_at_lsn_1(tx));
        assert_eq!((follower.behind.clone(), follower.applied_lsn), (None, 1));
        let account = &follower.accounts[&7];
        let status = &account.withdrawal_record_of(tx).unwrap().status;
        assert!(matches!(status, WithdrawalStatus::Returned { .. }));
        assert_eq!(account.balance(usd()).available, 1_000, "all back");
    }

    #[test]
    fn the_copy_forgets_what_the_store_holds_every_so_many_events_without_a_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let (account, tx, _) = recall_testing::completed();
        let history = Held {
            horizon: UnixMs::from_millis(recall_testing::T.as_millis() + 1),
            records: vec![],
        };
        let start = Start {
            accounts: HashMap::from([(7, account)]),
            ..empty_start()
        };
        let settings = CheckpointSettings {
            history: Arc::new(history),
            ..settings(tmp.path())
        };
        let mut follower = Follower::new(settings, start, None);
        let events = deposits(FORGET_EVERY_EVENTS as usize);
        let (first, last) = events.split_at(events.len() - 1);
        let batch = |first_lsn, events: &[Stamped]| Committed {
            last_hash: [0; 32],
            first_lsn,
            events: events.to_vec(),
        };
        follower.apply(batch(1, first));
        assert!(follower.accounts[&7].withdrawal_record_of(tx).is_some());
        follower.apply(batch(FORGET_EVERY_EVENTS, last));
        assert_eq!(follower.applied_lsn, FORGET_EVERY_EVENTS);
        let held = follower.accounts[&7].withdrawal_record_of(tx);
        assert!(held.is_none(), "still held: {held:?}");
        assert_eq!(follower.snapshots_written, 0);
    }

    #[test]
    fn a_return_the_store_cannot_give_back_leaves_the_copy_behind_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, tx, _) = recall_testing::completed();
        let history = Held {
            horizon: UnixMs::UNKNOWN,
            records: vec![],
        };
        let mut follower = forgot_one(tmp.path(), history);
        follower.apply(returned_at_lsn_1(tx));
        let behind = follower.behind.clone().expect("behind");
        assert!(behind.contains("does not hold it"), "{behind}");
        assert_eq!(follower.applied_lsn, 0);
        assert_eq!(follower.accounts[&7].balance(usd()).available, 750);
    }

    #[test]
    fn a_snapshot_waits_until_the_history_store_holds_its_lsn_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let snapshots = || snapshot::list(&snapshot_dir(tmp.path())).unwrap().len();
        let (feeder, queue) = testing::feeder(2);
        let mut follower = Follower::new(settings(tmp.path()), empty_start(), Some(feeder));
        follower.apply(Committed {
            last_hash: [0; 32],
            first_lsn: 1,
            events: deposits(3),
        });

        // The store answers that it holds LSN 2 only: held back.
        let snapshotting = snapshot_on_a_thread(follower);
        assert_eq!(testing::next(&queue).batch(), Some(3), "first the batch");
        let reply = testing::next(&queue).persist().expect("then the persist");
        assert_eq!(snapshots(), 0, "nothing written before the store answered");
        reply.send(Ok(2)).unwrap();
        let (follower, written) = snapshotting.join().unwrap();
        assert!(written.unwrap_err().contains("holds LSN 2 only"));
        assert_eq!(snapshots(), 0);

        // A failed store: held back, saying why.
        let snapshotting = snapshot_on_a_thread(follower);
        let reply = testing::next(&queue).persist().unwrap();
        reply.send(Err("disk on fire".into())).unwrap();
        let (follower, written) = snapshotting.join().unwrap();
        assert!(written.unwrap_err().contains("disk on fire"));
        assert_eq!(snapshots(), 0);

        // The store holds LSN 3 on disk: the snapshot at 3 is written.
        let snapshotting = snapshot_on_a_thread(follower);
        testing::next(&queue)
            .persist()
            .unwrap()
            .send(Ok(3))
            .unwrap();
        let (_, written) = snapshotting.join().unwrap();
        assert_eq!(written, Ok(Some(3)));
        assert_eq!(snapshots(), 1);
    }

    #[test]
    fn while_the_history_store_holds_snapshots_back_only_the_timer_tries_again() {
        let tmp = tempfile::tempdir().unwrap();
        let (feeder, queue) = testing::feeder(2);
        let settings = CheckpointSettings {
            every_events: 2,
            ..settings(tmp.path())
        };
        let mut follower = Follower::new(settings, empty_start(), Some(feeder));
        let events = deposits(6);
        follower.apply(Committed {
            last_hash: [0; 32],
            first_lsn: 1,
            events: events[..3].to_vec(),
        });
        let snapshotting = snapshot_on_a_thread(follower);
        assert_eq!(testing::next(&queue).batch(), Some(3));
        let reply = testing::next(&queue).persist().unwrap();
        reply.send(Err("disk on fire".into())).unwrap();
        let (mut follower, written) = snapshotting.join().unwrap();
        assert!(written.is_err());

        // Due by count again, but held back: no new attempt (which would
        // ask the store, and log, after every batch).
        follower.apply(Committed {
            last_hash: [0; 32],
            first_lsn: 4,
            events: events[3..].to_vec(),
        });
        let (done_tx, done) = bounded(1);
        std::thread::spawn(move || {
            let mut timer = Deadline::after(&follower.settings.clock, Duration::from_secs(3600));
            let (_, follow) = bounded::<Committed>(1);
            follower.snapshot_if_due(&mut timer, false, &follow);
            let _ = done_tx.send(follower);
        });
        let follower = done.recv_timeout(Duration::from_secs(10));
        let follower = follower.expect("no persist was asked for");
        assert_eq!((follower.applied_lsn, follower.last_snapshot_lsn), (6, 0));
        assert!(queue.is_empty(), "nothing asked of the store");
    }

    #[tokio::test]
    async fn a_timed_snapshot_is_written_when_the_interval_passes_on_the_clock_and_not_before() {
        let tmp = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let settings = CheckpointSettings {
            interval: Duration::from_secs(60),
            clock: clock.shared(),
            ..settings(tmp.path())
        };
        let (mut checkpointer, follow) =
            Checkpointer::start(settings, empty_start(), None).unwrap();
        let mut progress = checkpointer.progress();
        let events = deposits(5);
        let batch = |lsns: std::ops::RangeInclusive<u64>| Committed {
            last_hash: [0; 32],
            first_lsn: *lsns.start(),
            events: events[*lsns.start() as usize - 1..*lsns.end() as usize].to_vec(),
        };

        follow.send(batch(1..=3)).unwrap();
        reached(&mut progress, |p| p.applied_lsn == 3).await;
        clock.advance(Duration::from_secs(59));
        // The thread checks the timer after each batch, and takes the next
        // batch only once done with that check (and any snapshot it led
        // to): LSN 5, sent after LSN 4 was in, shows how the check at 59 s
        // went.
        follow.send(batch(4..=4)).unwrap();
        reached(&mut progress, |p| p.applied_lsn == 4).await;
        follow.send(batch(5..=5)).unwrap();
        let seen = reached(&mut progress, |p| p.applied_lsn == 5).await;
        assert_eq!(seen.snapshots_written, 0, "not due at 59 s");

        clock.advance(Duration::from_secs(1));
        let seen = reached(&mut progress, |p| p.snapshots_written == 1).await;
        assert_eq!(seen.snapshot_lsn, 5);
        let files = snapshot::list(&snapshot_dir(tmp.path())).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!((files[0].lsn, available(&files[0])), (5, 1500));
        checkpointer.stop();
    }

    #[tokio::test]
    async fn a_snapshot_is_the_followed_state_and_a_gap_rebuilds_it_from_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let events = deposits(3);
        let wal = WalHandle::open(WalConfig::new(tmp.path()), 1).unwrap();
        assert_eq!(wal.append(events.clone()).await, Ok(3));
        wal.shutdown().unwrap();

        // Followed in order: the snapshot holds all three deposits.
        let mut following = follower(tmp.path());
        following.apply(Committed {
            last_hash: [0; 32],
            first_lsn: 1,
            events: events[..2].to_vec(),
        });
        // An overlap is skipped, not applied twice.
        following.apply(Committed {
            last_hash: [0; 32],
            first_lsn: 2,
            events: events[1..].to_vec(),
        });
        let file = following.snapshot().unwrap().unwrap();
        assert_eq!((file.lsn, available(&file)), (3, 600));
        assert!(following.snapshot().unwrap().is_none(), "nothing new");

        // A gap: the copy is behind, and the next snapshot rebuilds it from
        // the log on disk (up to the durable LSN) instead of writing it.
        std::fs::remove_dir_all(tmp.path().join("snapshots")).unwrap();
        let mut gapped = follower(tmp.path());
        gapped.apply(Committed {
            last_hash: [0; 32],
            first_lsn: 1,
            events: events[..1].to_vec(),
        });
        gapped.apply(Committed {
            last_hash: [0; 32],
            first_lsn: 3,
            events: events[2..].to_vec(),
        });
        assert_eq!(gapped.applied_lsn, 1);
        let file = gapped.snapshot().unwrap().unwrap();
        assert_eq!((file.lsn, available(&file)), (3, 600));
        assert!(gapped.behind.is_none());
    }
}
