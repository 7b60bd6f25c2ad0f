//! The account actor: owns one account's state (balances, locks,
//! withdrawals, idempotency keys) by value, and nothing else.
//!
//! Every change to and every read of a running account is a message to its
//! actor, handled one at a time, so checks such as "available ≥ amount"
//! cannot race, and an account's commands run in the order of its mailbox.
//! The rules live in [`AccountState`]; [`execute`] applies a command to it.
//! The events go to the shard's log, which the coordinator makes durable
//! before anything is acknowledged.
//!
//! An actor costs ≈ 850 B, so an idle one is retired: on [`Retire`] it
//! hands its state back to its coordinator, which parks it in its directory
//! (see [`directory`](crate::engine::directory)), and stops. The next
//! command starts a new actor with the state moved in. If that command
//! comes while the state is still on its way back, the new actor starts
//! *waiting* for it: its mailbox takes commands at once but runs none
//! until the state has arrived, so nothing is held back and nothing
//! overtakes.

use std::rc::Rc;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::domain::account::AccountState;
use crate::domain::event::Stamped;
use crate::engine::command::{execute, newly_pending, Job};
use crate::engine::messages::{AccountRead, Read, Retire};
use crate::engine::round::RunCommands;
use crate::engine::shard_log::ShardLog;
use crate::error::LedgerError;

/// Where a new actor's state comes from.
pub enum Holding {
    /// The state itself (a parked or a new account).
    State(AccountState),
    /// The state a retiring actor is handing back.
    Awaiting(oneshot::Receiver<AccountState>),
}

pub struct AccountActor {
    /// `None` only while the actor waits for its predecessor's state (its
    /// mailbox waits too), or if that state never came, which happens only
    /// when the shard stops.
    state: Option<AccountState>,
    awaiting: Option<oneshot::Receiver<AccountState>>,
    /// The shard's event buffer: this actor records its events there and
    /// answers at once; the coordinator acknowledges once they are durable.
    /// It also carries the payout notices of newly pending withdrawals (a
    /// lost notice only delays a payout: on restart every pending
    /// withdrawal is queued again from the recovered state).
    log: Rc<ShardLog>,
    /// Copied from the config: the cap on pending withdrawals per account.
    pending_withdrawals_max: u32,
}

impl AccountActor {
    pub fn new(holding: Holding, log: Rc<ShardLog>, pending_withdrawals_max: u32) -> Self {
        let (state, awaiting) = match holding {
            Holding::State(state) => (Some(state), None),
            Holding::Awaiting(receiver) => (None, Some(receiver)),
        };
        Self {
            state,
            awaiting,
            log,
            pending_withdrawals_max,
        }
    }

    /// The state to work on; refused only when it never arrived.
    fn state(&mut self) -> Result<&mut AccountState, LedgerError> {
        self.state.as_mut().ok_or(LedgerError::ShuttingDown)
    }
}

impl Actor for AccountActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Nothing in the mailbox runs before the state is here.
        if let Some(handover) = self.awaiting.take() {
            ctx.wait(
                actix::fut::wrap_future::<_, Self>(handover)
                    .map(|handed, actor, _| actor.state = handed.ok()),
            );
        }
    }
}

/// Runs the commands in order and answers at once. Their events wait in
/// the shard log: whoever awaits the replies must flush it and wait for
/// durability before acknowledging anything (the coordinator does, once
/// per round).
impl<J: Job> Handler<RunCommands<J>> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: RunCommands<J>, _ctx: &mut Self::Context) {
        // After a storage failure or an internal error, memory must not
        // move further from disk.
        if let Some(refusal) = self.log.write_refusal() {
            return msg.refuse(&refusal);
        }
        let Self {
            state,
            log,
            pending_withdrawals_max: max,
            ..
        } = self;
        let Some(state) = state.as_mut() else {
            return msg.refuse(&LedgerError::ShuttingDown);
        };
        let Some(mut gauges) = log.gauges_mut() else {
            return msg.refuse(&LedgerError::Internal {
                reason: "the shard's gauges were borrowed while an actor ran".into(),
            });
        };
        // The round's stamp: every command here is applied, and its event
        // logged, at this time.
        let at = log.now();
        msg.answer_with(|job| {
            if let Some(refusal) = log.broken_refusal() {
                return Err(refusal);
            }
            let (reply, event) = execute(state, job, *max, &mut gauges, at)
                .inspect_err(|error| poison_on_internal(log, error))?;
            if let Some(event) = event {
                if log.wants_notices() {
                    if let Some(notice) = newly_pending(state, &event) {
                        log.notify_when_durable(notice);
                    }
                }
                log.record(Stamped { at, event });
            }
            Ok(reply)
        });
        debug_assert!(
            state.check_invariants().is_ok(),
            "{:?}",
            state.check_invariants()
        );
    }
}

/// An internal error from applying a command (a check of the rules failed:
/// a bug) poisons the shard: the state may be apart from its log now.
pub fn poison_on_internal(log: &ShardLog, error: &LedgerError) {
    if matches!(error, LedgerError::Internal { .. }) {
        log.poison(error);
    }
}

/// Answers a read from the state this actor owns.
impl<Q: AccountRead> Handler<Read<Q>> for AccountActor {
    type Result = Result<Q::Output, LedgerError>;

    fn handle(&mut self, msg: Read<Q>, _ctx: &mut Self::Context) -> Self::Result {
        msg.0.read(self.state()?)
    }
}

/// Hands the state back and stops (see [`Retire`]).
impl Handler<Retire> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: Retire, ctx: &mut Self::Context) {
        if let Some(state) = self.state.take() {
            // The coordinator always keeps the receiving end while its
            // shard runs.
            let _ = msg.to.send(state);
        }
        ctx.stop();
    }
}
