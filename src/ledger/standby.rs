//! A standby: a ledger that does not write, kept warm by the batches its
//! writer shipped ([`Ledger::mirror`]) — the same framed records, logged
//! under the same LSNs into its own data folder, so its log, snapshots and
//! history store follow the writer's. It answers history reads (listings,
//! entries, transactions, balances as of a time) from its store, and
//! refuses everything else with `not_leader`, naming the writer when known.
//! Promotion is opening the folder as a writer once the standby has shut
//! down: recovery replays what it mirrored.
//!
//! What feeds it (a NATS JetStream stream, with the `replication` feature)
//! is not this module's concern: it checks only that batches arrive whole
//! and in LSN order. A batch it already holds (a redelivery) is skipped;
//! a batch past its next LSN (a gap) is refused.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;

use crate::config::Config;
use crate::domain::event::Stamped;
use crate::domain::money::Currencies;
use crate::engine::startup::start_standby;
use crate::error::LedgerError;
use crate::ledger::{Inner, Ledger, OpenError};
use crate::storage::wal::record::decode_batch;
use crate::storage::wal::{first_lsn, replay_with, ReplayMode, WalEntry};

/// What a standby holds besides its storage.
pub(crate) struct StandbyState {
    /// The LSN the next mirrored record must carry; a tokio mutex so one
    /// batch is logged at a time, in order, across an await.
    next_lsn: tokio::sync::Mutex<u64>,
    /// Who writes, as the replication layer last learnt it.
    writer: Mutex<Option<String>>,
    /// What [`Ledger::promote`] asks (the replication layer's node).
    promoter: Mutex<Option<Arc<dyn Promoter>>>,
}

/// Makes a standby the writer: the replication layer's node (see
/// `replication::node`), given to the standby with
/// [`Ledger::set_promoter`].
pub trait Promoter: Send + Sync + 'static {
    /// Promotes; the writer's handle, or why not.
    fn promote(&self) -> BoxFuture<'static, Result<Ledger, String>>;
}

impl StandbyState {
    pub(crate) fn refusal(&self) -> LedgerError {
        LedgerError::NotLeader {
            writer: self.writer.lock().clone(),
        }
    }
}

/// Why a shipped batch was not mirrored. Nothing was logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MirrorError {
    /// The batch does not read as whole records from its first LSN.
    #[error("the batch from LSN {first_lsn} does not decode: {reason}")]
    Undecodable { first_lsn: u64, reason: String },
    /// Records are missing between what the standby holds and the batch.
    #[error("a gap in the replicated log: LSN {expected} was expected, the batch starts at {got}")]
    Gap { expected: u64, got: u64 },
    #[error("this ledger is not a standby")]
    NotStandby,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// What one [`Ledger::mirror`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mirrored {
    /// Records logged.
    pub logged: u64,
    /// Records skipped as already held.
    pub skipped: u64,
    /// The LSN the next record must carry.
    pub next_lsn: u64,
}

impl Ledger {
    /// Opens `config`'s data folder as a standby: recovered like a
    /// writer's, its history store caught up, but no engine threads, no
    /// payouts, no writes of its own.
    #[tracing::instrument(name = "ledger.open_standby", skip_all)]
    pub fn open_standby(config: Config) -> Result<Self, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let currencies = Currencies::new(&config.currencies).map_err(OpenError::Config)?;
        let engine = start_standby(&config, &currencies)?;
        let next_lsn = engine.recovery.as_ref().map_or(1, |r| r.next_lsn);
        let standby = StandbyState {
            next_lsn: tokio::sync::Mutex::new(next_lsn),
            writer: Mutex::new(None),
            promoter: Mutex::new(None),
        };
        Ok(Self::from_inner(Inner {
            engine,
            currencies,
            config,
            standby: Some(standby),
        }))
    }

    /// Whether this ledger is a standby (it does not write).
    pub fn is_standby(&self) -> bool {
        self.inner.standby.is_some()
    }

    /// Whether this ledger's replicated log was taken over by another
    /// writer (its log is then poisoned: it refuses writes).
    pub fn is_fenced(&self) -> bool {
        self.engine().journal.wal().is_some_and(|wal| wal.fenced())
    }

    /// The record this ledger's log holds at `lsn`, read from its folder;
    /// `None` when the log no longer has it (before its oldest segment) or
    /// not yet.
    pub fn logged_entry(&self, lsn: u64) -> Result<Option<WalEntry>, String> {
        let Some(dir) = self.config().data_dir.as_deref() else {
            return Ok(None);
        };
        match first_lsn(dir) {
            Ok(Some(first)) if first <= lsn => {}
            Ok(_) => return Ok(None),
            Err(error) => return Err(error.to_string()),
        }
        let mode = ReplayMode::ReadOnly {
            until_lsn: Some(lsn),
        };
        let mut found = None;
        let read = replay_with(dir, lsn, mode, |entry| {
            if entry.lsn == lsn {
                found = Some(entry);
            }
            Ok::<(), std::convert::Infallible>(())
        });
        match read {
            Ok(_) => Ok(found),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Makes this standby the writer through the promoter its node gave it
    /// (`POST /v1/admin/promote` does the same): the writer's handle, which
    /// serves from then on (this one is closed). On a writer, itself.
    /// Refused with `not_leader` on a standby no node promotes.
    pub async fn promote(&self) -> Result<Ledger, LedgerError> {
        let Some(standby) = &self.inner.standby else {
            return Ok(self.clone());
        };
        let promoter = standby.promoter.lock().clone();
        let Some(promoter) = promoter else {
            return Err(standby.refusal());
        };
        promoter
            .promote()
            .await
            .map_err(|reason| LedgerError::Internal { reason })
    }

    /// Gives this standby what [`Ledger::promote`] asks.
    pub fn set_promoter(&self, promoter: Arc<dyn Promoter>) {
        if let Some(standby) = &self.inner.standby {
            *standby.promoter.lock() = Some(promoter);
        }
    }

    /// Records who writes, so refusals can name it.
    pub fn set_writer(&self, writer: Option<String>) {
        if let Some(standby) = &self.inner.standby {
            *standby.writer.lock() = writer;
        }
    }

    /// The LSN the next mirrored record must carry (a standby), else the
    /// next LSN this ledger's log will give.
    pub async fn next_lsn(&self) -> u64 {
        match &self.inner.standby {
            Some(standby) => *standby.next_lsn.lock().await,
            None => self.engine().journal.durable_lsn() + 1,
        }
    }

    /// Logs a batch the writer shipped (`batch`: its framed records, LSNs
    /// `first_lsn..`) into this standby's folder; resolves once it is as
    /// durable as the sync mode says. Records already held are skipped.
    pub async fn mirror(&self, first_lsn: u64, batch: &[u8]) -> Result<Mirrored, MirrorError> {
        let standby = self.inner.standby.as_ref().ok_or(MirrorError::NotStandby)?;
        self.check_not_closed()?;
        let entries = decode_batch(batch, first_lsn)
            .map_err(|reason| MirrorError::Undecodable { first_lsn, reason })?;
        let mut next = standby.next_lsn.lock().await;
        let total = entries.len() as u64;
        let fresh: Vec<Stamped> = entries
            .into_iter()
            .filter(|entry| entry.lsn >= *next)
            .map(|entry| Stamped {
                at: entry.at,
                event: entry.event,
            })
            .collect();
        let logged = fresh.len() as u64;
        let starts = first_lsn.max(*next);
        if logged > 0 && starts != *next {
            return Err(MirrorError::Gap {
                expected: *next,
                got: starts,
            });
        }
        self.engine().journal.append(fresh).await?;
        *next += logged;
        Ok(Mirrored {
            logged,
            skipped: total - logged,
            next_lsn: *next,
        })
    }
}
