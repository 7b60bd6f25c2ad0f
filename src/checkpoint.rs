//! The checkpointer: a background thread that writes snapshots built from
//! the log, never from the live actors.
//!
//! To snapshot up to LSN `L` (the highest durable LSN when asked), it loads
//! the newest valid snapshot, replays the WAL read-only up to `L`, checks
//! the invariants, and writes the result. The live engine is never paused
//! and never asked for anything, and the snapshot is exactly the state at
//! `L` — including both sides of every transfer, which a fuzzy copy of live
//! account states could split. Afterwards it keeps the newest
//! `snapshots_kept` snapshots and deletes the WAL segments none of them
//! needs. It runs on a timer, when the journal nudges it after many events,
//! on demand, and once more at shutdown.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::money::Currencies;
use crate::recovery::{rebuild, snapshot_dir, RecoveryError};
use crate::snapshot::{self, SnapshotFile};
use crate::wal::{self, ReplayMode};

/// What the checkpointer needs from the running ledger.
pub struct CheckpointSettings {
    pub data_dir: PathBuf,
    pub currencies: Currencies,
    pub interval: Duration,
    pub snapshots_kept: usize,
    /// The highest LSN known durable right now.
    pub durable_lsn: Box<dyn Fn() -> u64 + Send>,
    /// The LSN of the newest snapshot on disk when the ledger opened.
    pub last_snapshot_lsn: u64,
}

type Reply = oneshot::Sender<Result<Option<SnapshotFile>, String>>;

enum Request {
    /// Many events were logged: snapshot if there is anything new.
    Nudge,
    /// Snapshot now and say how it went.
    Now(Reply),
    /// Stop the thread. Needed explicitly: the journal's `Nudge` keeps the
    /// channel open for as long as the journal lives.
    Stop,
}

/// Handle to the checkpointer thread. Dropping it stops the thread after
/// any snapshot in progress.
pub struct Checkpointer {
    requests: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

/// A cheap, non-blocking way to nudge the checkpointer from an actor.
#[derive(Clone)]
pub struct Nudge(Sender<Request>);

impl Nudge {
    pub fn send(&self) {
        // A nudge already waiting is as good as a second one.
        match self.0.try_send(Request::Nudge) {
            Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl Checkpointer {
    pub fn start(settings: CheckpointSettings) -> std::io::Result<(Self, Nudge)> {
        // One waiting request is enough: nudges coalesce, `Now` callers wait.
        let (sender, receiver) = bounded(16);
        let thread = std::thread::Builder::new()
            .name("burnledger-checkpoint".into())
            .spawn(move || run(settings, receiver))?;
        let nudge = Nudge(sender.clone());
        Ok((
            Self {
                requests: Some(sender),
                thread: Some(thread),
            },
            nudge,
        ))
    }

    /// Asks for a snapshot now (if anything was logged since the last one);
    /// the answer arrives on the returned channel.
    pub fn request_snapshot(
        &self,
    ) -> Result<oneshot::Receiver<Result<Option<SnapshotFile>, String>>, String> {
        let (reply, answer) = oneshot::channel();
        let requests = self
            .requests
            .as_ref()
            .ok_or("the checkpointer is stopped")?;
        requests
            .send(Request::Now(reply))
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
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(settings: CheckpointSettings, requests: Receiver<Request>) {
    let mut last_lsn = settings.last_snapshot_lsn;
    loop {
        let reply = match requests.recv_timeout(settings.interval) {
            Ok(Request::Nudge) | Err(RecvTimeoutError::Timeout) => None,
            Ok(Request::Now(reply)) => Some(reply),
            Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => return,
        };
        let result = checkpoint(&settings, last_lsn);
        if let Ok(Some(file)) = &result {
            last_lsn = file.lsn;
        }
        let result = result.map_err(|e| e.to_string());
        match reply {
            Some(reply) => {
                let _ = reply.send(result);
            }
            // A failed background snapshot is retried on the next tick; the
            // WAL still holds everything, so nothing is at risk meanwhile.
            None => {
                if let Err(error) = result {
                    eprintln!("burnledger: background snapshot failed (will retry): {error}");
                }
            }
        }
    }
}

/// Writes a snapshot at the current durable LSN if it is past `last_lsn`.
fn checkpoint(
    settings: &CheckpointSettings,
    last_lsn: u64,
) -> Result<Option<SnapshotFile>, RecoveryError> {
    let until = (settings.durable_lsn)();
    if until <= last_lsn {
        return Ok(None);
    }
    write_snapshot(
        &settings.data_dir,
        &settings.currencies,
        Some(until),
        settings.snapshots_kept,
    )
    .map(Some)
}

/// Rebuilds the state at `until` (or the log's end) from disk, writes it as
/// a snapshot, then prunes old snapshots and the WAL segments they no
/// longer need. Used by the checkpointer and at shutdown.
pub fn write_snapshot(
    data_dir: &std::path::Path,
    currencies: &Currencies,
    until: Option<u64>,
    snapshots_kept: usize,
) -> Result<SnapshotFile, RecoveryError> {
    let rebuilt = rebuild(
        data_dir,
        currencies,
        ReplayMode::ReadOnly { until_lsn: until },
    )?;
    let dir = snapshot_dir(data_dir);
    let file = snapshot::write_full(
        &dir,
        rebuilt.report.last_lsn,
        rebuilt.accounts.values(),
        rebuilt.payouts.values(),
    )?;
    snapshot::prune(&dir, snapshots_kept)?;
    // Keep every record the oldest kept snapshot would need, so recovery can
    // fall back to it if the newer ones are damaged.
    if let Some(oldest) = snapshot::list(&dir)?.last() {
        wal::delete_segments_below(data_dir, oldest.lsn + 1)?;
    }
    Ok(file)
}
