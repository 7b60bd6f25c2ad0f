//! Where account actors hand their events to be made durable.
//!
//! An actor applies an operation in memory, appends its events here, and
//! replies to the caller only once the returned future resolves: that is
//! the moment the operation is acknowledged. Appending no events is a
//! barrier: it resolves once everything appended before it is durable, which
//! idempotent replays use so they never acknowledge a result that is not.
//!
//! With no data folder (or sync mode `none`) nothing is logged and every
//! append resolves at once. Otherwise appends go to the WAL writer thread;
//! the first failure poisons the journal, and actors check that before
//! applying anything, so a poisoned ledger changes nothing more in memory.

use std::future::{ready, Future};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use futures_util::future::Either;

use crate::error::LedgerError;
use crate::event::Event;
use crate::wal::{WalError, WalHandle};

/// Handle to the durability layer; cheap to clone, shared by all actors.
#[derive(Clone, Default)]
pub struct Journal {
    log: Option<Arc<Log>>,
}

struct Log {
    wal: WalHandle,
    /// Highest LSN known durable; the checkpointer snapshots up to it.
    durable_lsn: AtomicU64,
    /// Events appended since the checkpointer was last nudged.
    events_since_nudge: AtomicU64,
    /// Nudge the checkpointer after this many events.
    nudge_every_events: u64,
    nudge: Box<dyn Fn() + Send + Sync>,
    /// Set by the first failed append; never cleared (only a restart, which
    /// replays the log, recovers).
    poisoned: OnceLock<String>,
}

impl Journal {
    /// A journal that keeps nothing: state lives in memory only.
    pub fn memory_only() -> Self {
        Self::default()
    }

    /// A journal over an open WAL writer. `nudge` is called (from an actor
    /// thread, so it must not block) after every `nudge_every_events`
    /// events; `durable_lsn` starts at the last recovered LSN.
    pub fn logged(
        wal: WalHandle,
        durable_lsn: u64,
        nudge_every_events: u64,
        nudge: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        Self {
            log: Some(Arc::new(Log {
                wal,
                durable_lsn: AtomicU64::new(durable_lsn),
                events_since_nudge: AtomicU64::new(0),
                nudge_every_events: nudge_every_events.max(1),
                nudge: Box::new(nudge),
                poisoned: OnceLock::new(),
            })),
        }
    }

    /// Whether appended events go to a log (false: memory only).
    pub fn is_logged(&self) -> bool {
        self.log.is_some()
    }

    /// Why the journal refuses writes, if it does.
    pub fn poisoned(&self) -> Option<LedgerError> {
        let reason = self.log.as_ref()?.poisoned.get()?;
        Some(LedgerError::Poisoned {
            reason: reason.clone(),
        })
    }

    /// The highest LSN known to be durable (0 when nothing is logged).
    pub fn durable_lsn(&self) -> u64 {
        self.log
            .as_ref()
            .map_or(0, |log| log.durable_lsn.load(Ordering::Acquire))
    }

    /// The WAL writer, when there is one.
    pub fn wal(&self) -> Option<&WalHandle> {
        self.log.as_ref().map(|log| &log.wal)
    }

    /// Appends events; the future resolves when they are durable.
    pub fn append(
        &self,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send + 'static {
        let Some(log) = &self.log else {
            return Either::Left(ready(Ok(())));
        };
        let count = events.len() as u64;
        let written = log.wal.append(events);
        if count > 0 {
            let since = log.events_since_nudge.fetch_add(count, Ordering::Relaxed) + count;
            if since >= log.nudge_every_events {
                log.events_since_nudge.store(0, Ordering::Relaxed);
                (log.nudge)();
            }
        }
        let log = Arc::clone(log);
        Either::Right(async move {
            match written.await {
                Ok(lsn) => {
                    log.durable_lsn.fetch_max(lsn, Ordering::AcqRel);
                    Ok(())
                }
                Err(error) => {
                    let reason = match error {
                        WalError::Poisoned { reason } => reason,
                        other => other.to_string(),
                    };
                    let _ = log.poisoned.set(reason.clone());
                    Err(LedgerError::Poisoned { reason })
                }
            }
        })
    }
}
