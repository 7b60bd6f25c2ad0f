//! When idempotency keys expire: the engine's side of
//! [`Event::IdempotencyKeysExpired`] (the rule itself, and what an expired
//! key leaves behind, are the account's: `domain/account/keys.rs`).
//!
//! Off the hot path, on the shard's idle sweep (every
//! [`Config::account_idle_sweep_ms`] on the injected clock), the
//! coordinator asks [`KeyExpiry::round`] for the accounts to expire keys
//! in: every running actor (it checks its own keys), and the parked states
//! among at most [`PARKED_PER_SWEEP`] visited per sweep, round the
//! directory, that hold a key first used before the horizon (now minus
//! [`Config::idempotency_key_retention_ms`]). Each gets an [`ExpireKeys`]
//! job in one round, sent as upkeep (`Directory::upkeep`: it does not
//! count as a use, so it keeps no idle actor from retiring; an account
//! retired by this very sweep is visited once parked): its actor applies
//! the expiry and records the event in the shard log like any command's,
//! and [`settle`] flushes the log. Every later answer of the shard waits for a flush behind it
//! (a flush that finds nothing is a barrier), so nothing refused because
//! a key expired is answered before the expiry is durable; a crash before
//! then loses the expiry, and the key is still there after restart.
//!
//! [`Event::IdempotencyKeysExpired`]: crate::domain::event::Event::IdempotencyKeysExpired
//! [`Config::account_idle_sweep_ms`]: crate::Config::account_idle_sweep_ms
//! [`Config::idempotency_key_retention_ms`]: crate::Config::idempotency_key_retention_ms

use std::rc::Rc;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::domain::account::AccountState;
use crate::domain::event::Event;
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::time::UnixMs;
use crate::engine::batch::AccountRun;
use crate::engine::command::Job;
use crate::engine::directory::Directory;
use crate::engine::horizon::PARKED_PER_SWEEP;
use crate::engine::round::RoundReplies;
use crate::engine::shard_log::ShardLog;
use crate::error::LedgerError;

/// Expire the account's keys first used before `before`; answers how many
/// went (0, and no event, when none is due).
#[derive(Debug, Clone, Copy)]
pub struct ExpireKeys {
    pub before: UnixMs,
}

impl Job for ExpireKeys {
    type Reply = usize;

    fn acts_on(&self) -> Option<TransactionId> {
        None
    }

    fn run(
        self,
        state: &mut AccountState,
        _: &crate::domain::policy::Policy,
        at: UnixMs,
    ) -> Result<(usize, Option<Event>), LedgerError> {
        let effect = state.expire_keys(self.before, at)?;
        Ok((effect.output, effect.event))
    }
}

/// One shard's key expiry: the retention on the ledger's clock, and where
/// the next visit of parked states starts.
pub struct KeyExpiry {
    clock: SharedClock,
    retention_ms: u64,
    parked_cursor: usize,
}

impl KeyExpiry {
    pub fn new(config: &Config) -> Self {
        Self {
            clock: config.clock.clone(),
            retention_ms: config.idempotency_key_retention_ms,
            parked_cursor: 0,
        }
    }

    /// Keys first used before this expire now; [`UnixMs::UNKNOWN`] (the
    /// clock is not past the retention yet) expires nothing.
    pub fn horizon(&self) -> UnixMs {
        let now = self.clock.unix_ms();
        UnixMs::from_millis(now.saturating_sub(self.retention_ms))
    }

    /// This sweep's expiry jobs: one per running account, and one per
    /// visited parked state holding a key due (see the module docs).
    pub fn round(&mut self, directory: &mut Directory) -> Vec<AccountRun<ExpireKeys>> {
        let before = self.horizon();
        if before == UnixMs::UNKNOWN {
            return Vec::new();
        }
        let mut accounts: Vec<AccountId> = directory.running_accounts().collect();
        directory.visit_parked(&mut self.parked_cursor, PARKED_PER_SWEEP, |state| {
            if state.oldest_key_use().is_some_and(|oldest| oldest < before) {
                accounts.push(state.id());
            }
        });
        let job = ExpireKeys { before };
        accounts
            .into_iter()
            .map(|account| AccountRun {
                account,
                jobs: vec![(0, job)],
            })
            .collect()
    }
}

/// Waits for a round of [`ExpireKeys`] and makes the expiries it logged
/// durable.
pub async fn settle(round: RoundReplies<ExpireKeys>, log: Rc<ShardLog>) {
    let replies = round.all().await;
    let expired: usize = replies.iter().filter_map(|(_, r)| r.as_ref().ok()).sum();
    if expired == 0 {
        return;
    }
    match log.flush().await {
        Ok(()) => tracing::debug!(expired, "idempotency keys expired"),
        // The journal poisons the ledger on a failed append: nothing more
        // is answered, and the expiry was never acknowledged to anyone.
        Err(error) => tracing::warn!(%error, "logging an idempotency key expiry failed"),
    }
}
