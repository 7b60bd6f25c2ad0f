//! The engine's way into durability. [`Journal::append`] hands events,
//! each with the time the engine stamped it with, to
//! the WAL writer and returns a future that resolves once they are as
//! durable as the sync mode says: the moment the engine may acknowledge the
//! operations that made them. Appending no events is a barrier: it resolves
//! once everything appended before it is durable, so a caller with nothing
//! new to log (an idempotent replay, say) never acknowledges a result that
//! is not.
//!
//! With no data folder (or sync mode `none`) nothing is logged and every
//! append resolves at once. Otherwise the first failed append poisons the
//! journal for good ([`Journal::poisoned`]); the engine checks that before
//! applying anything, so a poisoned ledger changes nothing more in memory,
//! and only a restart (which replays the log) recovers. The journal also
//! tracks the highest LSN known durable ([`Journal::durable_lsn`]), which
//! bounds the checkpointer's rebuilds from disk and what the event feed may
//! show, and announces each advance ([`Journal::watch_durable`]) to the
//! feed's waiting subscribers.

use std::future::{ready, Future};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use futures_util::future::Either;
use tokio::sync::watch;

use crate::domain::event::Stamped;
use crate::error::LedgerError;
use crate::storage::wal::{WalError, WalHandle};

/// What [`Journal::watch_durable`] shows: the highest LSN known durable,
/// and whether the log closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurableMark {
    pub lsn: u64,
    pub closed: bool,
}

/// Handle to the durability layer; cheap to clone, shared by every part of
/// the engine that logs.
#[derive(Clone, Default)]
pub struct Journal {
    log: Option<Arc<Log>>,
}

struct Log {
    wal: WalHandle,
    /// Highest LSN known durable; a checkpointer rebuilding from disk
    /// reads up to it.
    durable_lsn: AtomicU64,
    /// Told each time `durable_lsn` advances, and when the log closes.
    durable_watch: watch::Sender<DurableMark>,
    /// Set by the first failed append; never cleared (only a restart, which
    /// replays the log, recovers).
    poisoned: OnceLock<String>,
}

impl Journal {
    /// A journal that keeps nothing: state lives in memory only.
    pub fn memory_only() -> Self {
        Self::default()
    }

    /// A journal over an open WAL writer; `durable_lsn` starts at the last
    /// recovered LSN.
    pub fn logged(wal: WalHandle, durable_lsn: u64) -> Self {
        Self {
            log: Some(Arc::new(Log {
                wal,
                durable_lsn: AtomicU64::new(durable_lsn),
                durable_watch: watch::Sender::new(DurableMark {
                    lsn: durable_lsn,
                    closed: false,
                }),
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

    /// Sees [`durable_lsn`](Self::durable_lsn) advance, and the log
    /// close; `None` when nothing is logged.
    pub fn watch_durable(&self) -> Option<watch::Receiver<DurableMark>> {
        self.log.as_ref().map(|log| log.durable_watch.subscribe())
    }

    /// Tells the watchers the log is closed: nothing more becomes durable
    /// (the engine shut down).
    pub fn close_watchers(&self) {
        if let Some(log) = &self.log {
            log.durable_watch.send_modify(|mark| mark.closed = true);
        }
    }

    /// The WAL writer, when there is one.
    pub fn wal(&self) -> Option<&WalHandle> {
        self.log.as_ref().map(|log| &log.wal)
    }

    /// Appends events; the future resolves when they are durable.
    pub fn append(
        &self,
        events: Vec<Stamped>,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send + 'static {
        let Some(log) = &self.log else {
            return Either::Left(ready(Ok(())));
        };
        let written = log.wal.append(events);
        let log = Arc::clone(log);
        Either::Right(async move {
            match written.await {
                Ok(lsn) => {
                    if log.durable_lsn.fetch_max(lsn, Ordering::AcqRel) < lsn {
                        log.durable_watch.send_if_modified(|known| {
                            let advanced = lsn > known.lsn;
                            known.lsn = known.lsn.max(lsn);
                            advanced
                        });
                    }
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
