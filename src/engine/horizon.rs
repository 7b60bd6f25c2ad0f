//! How far a shard may forget its finished withdrawals, and where it finds
//! them again: one [`Forgetting`] per shard, made at startup from the
//! configuration and shared by the shard's coordinator and actors.
//!
//! The horizon says "every event of this shard stamped before T is safely
//! kept elsewhere", so a finished withdrawal last changed before T may
//! leave memory:
//! - with a [`WithdrawalHistory`] ([`Config::withdrawal_history`], else
//!   the data folder's history store, see [`crate::storage::recall`]):
//!   the history's own horizon for the shard, the stamp
//!   of the newest event of the shard it took in (a shard's stamps never go
//!   back and its events reach the log in order, so everything stamped
//!   strictly before it is in);
//! - without one, on a ledger that keeps no log: the clock's now minus
//!   [`Config::finished_withdrawal_retention_ms`] (nothing keeps them: past
//!   the retention they are gone, and say `unknown_withdrawal`);
//! - without one, on a durable ledger (one running without its history
//!   store, [`Config::history`] off or the store unusable): never.
//!
//! The checkpointer's copy of the state forgets too, below the store's
//! horizons, so that snapshots stay flat (see `storage/checkpoint.rs`).
//!
//! The horizon is read (one call) when it is used, not pushed: the
//! history's follower keeps its per-shard horizon where
//! [`WithdrawalHistory::horizon`] reads it (an atomic per shard will do),
//! and the engine asks once per sweep and per retiring actor.
//!
//! Forgetting runs off the hot path: when an idle account actor retires
//! (before its state is parked), on the coordinator's idle sweep for the
//! actors still running, and for parked states at most
//! [`PARKED_PER_SWEEP`] per sweep, round the directory.

use std::sync::Arc;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::domain::account::AccountState;
use crate::domain::gauges::{Counted, WithdrawalGauges};
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::WithdrawalHistory;

/// Where a shard's horizon comes from.
#[derive(Clone)]
enum Horizon {
    /// The history's horizon for this shard.
    History { shard: usize },
    /// Now minus the retention, on the ledger's clock.
    Retention {
        clock: SharedClock,
        retention_ms: u64,
    },
    /// Nothing leaves memory.
    Never,
}

/// One shard's horizon and the history that holds what it forgot.
#[derive(Clone)]
pub struct Forgetting {
    horizon: Horizon,
    history: Option<Arc<dyn WithdrawalHistory>>,
}

impl Forgetting {
    /// Shard `shard`'s, as `config` sets it up, finding forgotten
    /// withdrawals in `history` (the configuration's, else the data
    /// folder's store; see the module docs).
    pub fn for_shard(
        config: &Config,
        shard: usize,
        history: Option<Arc<dyn WithdrawalHistory>>,
    ) -> Self {
        let horizon = match (&history, config.is_durable()) {
            (Some(_), _) => Horizon::History { shard },
            (None, false) => Horizon::Retention {
                clock: config.clock.clone(),
                retention_ms: config.finished_withdrawal_retention_ms,
            },
            (None, true) => Horizon::Never,
        };
        Self { horizon, history }
    }

    /// Nothing is forgotten and nothing looked up (engine unit tests).
    #[cfg(test)]
    pub fn never() -> Self {
        Self {
            horizon: Horizon::Never,
            history: None,
        }
    }

    /// The finished withdrawals last changed before this may leave memory
    /// now; [`UnixMs::UNKNOWN`] forgets nothing.
    pub fn horizon(&self) -> UnixMs {
        match &self.horizon {
            Horizon::History { shard } => self
                .history
                .as_ref()
                .map_or(UnixMs::UNKNOWN, |h| h.horizon(*shard)),
            Horizon::Retention {
                clock,
                retention_ms,
            } => UnixMs::from_millis(clock.unix_ms().saturating_sub(*retention_ms)),
            Horizon::Never => UnixMs::UNKNOWN,
        }
    }

    /// The history forgotten withdrawals are found in, if any.
    pub fn history(&self) -> Option<&Arc<dyn WithdrawalHistory>> {
        self.history.as_ref()
    }
}

/// Parked states visited per idle sweep to forget in: bounds the sweep's
/// pause on the shard's thread whatever the shard holds (a visit is a walk
/// over one account's withdrawals).
pub const PARKED_PER_SWEEP: usize = 4_096;

/// Forgets `state`'s finished withdrawals last changed before `before`,
/// taking each out of the shard's `gauges` (they count what memory holds);
/// answers how many went.
pub fn forget(state: &mut AccountState, before: UnixMs, gauges: &mut WithdrawalGauges) -> usize {
    if before == UnixMs::UNKNOWN {
        return 0;
    }
    let forgotten = state.forget_finished_each(before, |_, record| {
        gauges.moved(Some(Counted::of(record)), None);
    });
    if forgotten > 0 {
        tracing::debug!(account = state.id(), forgotten, %before, "finished withdrawals left memory");
    }
    forgotten
}
