//! The account actor: owns one account's state (balances, locks,
//! withdrawals, idempotency keys, and its controls: tier, freeze, limit
//! usage) by value, and nothing else; it judges commands by the ledger's
//! shared [`Policy`] (fee account, limits), which it only reads.
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
//!
//! Finished withdrawals leave the state as the shard's horizon allows
//! (see [`horizon`]): when the actor retires,
//! before the state goes back, and on [`ForgetFinished`] from the
//! coordinator's sweep. A command naming one the account forgot waits for
//! it to come back from the history first (see
//! [`recall`]).

use std::rc::Rc;

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::domain::account::AccountState;
use crate::domain::event::Stamped;
use std::collections::HashMap;

use crate::domain::ids::TransactionId;
use crate::domain::policy::Policy;
use crate::domain::time::UnixMs;
use crate::engine::command::{execute, newly_pending, Job};
use crate::engine::horizon::{self, Forgetting};
use crate::engine::messages::{AccountRead, ForgetFinished, Read, Retire};
use crate::engine::recall;
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
    /// The rules' configuration (pending cap, limits, fee account).
    policy: Arc<Policy>,
    /// The shard's horizon and history.
    forgetting: Rc<Forgetting>,
}

/// Withdrawals the history could not be read for, and why: the commands
/// that needed them are answered that.
type Unreadable = HashMap<TransactionId, LedgerError>;

impl AccountActor {
    pub fn new(
        holding: Holding,
        log: Rc<ShardLog>,
        policy: Arc<Policy>,
        forgetting: Rc<Forgetting>,
    ) -> Self {
        let (state, awaiting) = match holding {
            Holding::State(state) => (Some(state), None),
            Holding::Awaiting(receiver) => (None, Some(receiver)),
        };
        Self {
            state,
            awaiting,
            log,
            policy,
            forgetting,
        }
    }

    /// Forgets the state's finished withdrawals before `before`.
    fn forget(&mut self, before: UnixMs) {
        let (Some(state), Some(mut gauges)) = (self.state.as_mut(), self.log.gauges_mut()) else {
            return;
        };
        horizon::forget(state, before, &mut gauges);
    }

    /// The forgotten withdrawals `msg`'s commands need back.
    fn to_recall<J: Job>(&self, msg: &RunCommands<J>) -> Vec<TransactionId> {
        let (Some(state), Some(_)) = (self.state.as_ref(), self.forgetting.history()) else {
            return Vec::new();
        };
        let mut txs: Vec<TransactionId> = msg.commands().filter_map(|c| c.recalls(state)).collect();
        txs.dedup();
        txs
    }

    /// Puts back what the history found; answers the withdrawals it could
    /// not read.
    fn restore(&mut self, found: Vec<(TransactionId, recall::Found)>) -> Unreadable {
        let mut unreadable = Unreadable::new();
        let (Some(state), Some(mut gauges)) = (self.state.as_mut(), self.log.gauges_mut()) else {
            return unreadable;
        };
        for (tx, found) in found {
            if let Err(error) = recall::restore(state, tx, found, &mut gauges) {
                unreadable.insert(tx, error);
            }
        }
        unreadable
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

    fn handle(&mut self, msg: RunCommands<J>, ctx: &mut Self::Context) {
        let wanted = self.to_recall(&msg);
        let Some(history) = self.forgetting.history().filter(|_| !wanted.is_empty()) else {
            return self.run(msg, &Unreadable::new());
        };
        // Rare (old withdrawals only): the look-up runs off this thread;
        // this actor's mailbox waits, the shard's other accounts go on.
        let found = recall::look_up(std::sync::Arc::clone(history), wanted);
        ctx.wait(
            actix::fut::wrap_future::<_, Self>(found).map(|found, actor, _| {
                let unreadable = actor.restore(found);
                actor.run(msg, &unreadable);
            }),
        );
    }
}

impl AccountActor {
    /// Runs the commands in order and answers at once (see the handler);
    /// a command needing a withdrawal in `unreadable` is answered why.
    fn run<J: Job>(&mut self, msg: RunCommands<J>, unreadable: &Unreadable) {
        // After a storage failure or an internal error, memory must not
        // move further from disk.
        if let Some(refusal) = self.log.write_refusal() {
            return msg.refuse(&refusal);
        }
        let Self {
            state, log, policy, ..
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
            let unread = job.recalls(state).and_then(|tx| unreadable.get(&tx));
            if let Some(error) = unread {
                return Err(error.clone());
            }
            let (reply, event) = execute(state, job, policy, &mut gauges, at)
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

/// Answers a read from the state this actor owns (or, for a withdrawal it
/// forgot, from the history).
impl<Q: AccountRead> Handler<Read<Q>> for AccountActor {
    type Result = Response<Result<Q::Output, LedgerError>>;

    fn handle(&mut self, msg: Read<Q>, _ctx: &mut Self::Context) -> Self::Result {
        let forgetting = Rc::clone(&self.forgetting);
        match self.state() {
            Ok(state) => recall::read(msg.0, state, &forgetting),
            Err(error) => Response::reply(Err(error)),
        }
    }
}

/// Forgets the finished withdrawals before the shard's horizon (the
/// coordinator's sweep, for actors still running).
impl Handler<ForgetFinished> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: ForgetFinished, _ctx: &mut Self::Context) {
        self.forget(msg.before);
    }
}

/// Hands the state back and stops (see [`Retire`]).
impl Handler<Retire> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: Retire, ctx: &mut Self::Context) {
        self.forget(self.forgetting.horizon());
        if let Some(state) = self.state.take() {
            // The coordinator always keeps the receiving end while its
            // shard runs.
            let _ = msg.to.send(state);
        }
        ctx.stop();
    }
}
