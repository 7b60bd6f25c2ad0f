//! The account actor: owns one account's balances, locks, withdrawals and
//! idempotency keys, and nothing else.
//!
//! Every change to an account is a message to its actor, so checks such as
//! "available ≥ amount" run one at a time and cannot race. The rules live in
//! [`AccountState`]; this actor only delivers commands to it and records the
//! resulting events in its shard's log, which the coordinator makes durable
//! before anything is acknowledged.
//!
//! The state sits in an [`AccountCell`] that the shard's coordinator also
//! holds: an idle actor is stopped to save memory (an actix actor costs
//! ≈ 850 B) while its state stays with the coordinator, and the next
//! command starts a fresh actor on the same cell. The coordinator reads the
//! cell (queries, exports) only between messages, never while an actor
//! runs, since both live on the shard's one thread.

use std::cell::RefCell;
use std::rc::Rc;

use actix::prelude::*;

use crate::account::{AccountState, TransferHold};
use crate::actors::round::RunCommands;
use crate::actors::shard_log::ShardLog;
use crate::error::LedgerError;
use crate::event::Event;
use crate::messages::{AccountCommand, AccountReply, Query, QueryReply, WithdrawalQueued};

/// One account's state, shared by its coordinator and (while it runs) its
/// actor; never leaves the shard's thread.
pub type AccountCell = Rc<RefCell<AccountState>>;

pub struct AccountActor {
    state: AccountCell,
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
    pub fn new(state: AccountCell, log: Rc<ShardLog>, pending_withdrawals_max: u32) -> Self {
        Self {
            state,
            log,
            pending_withdrawals_max,
        }
    }
}

impl Actor for AccountActor {
    type Context = Context<Self>;
}

/// The payout notice for an event that leaves a withdrawal pending.
fn newly_pending(state: &AccountState, event: &Event) -> Option<WithdrawalQueued> {
    let tx = match event {
        Event::WithdrawalRequested { tx, .. } | Event::WithdrawalReleased { tx } => *tx,
        _ => return None,
    };
    let record = state.withdrawal_record_of(tx)?;
    Some(WithdrawalQueued {
        tx,
        currency: record.currency,
        amount: record.amount,
    })
}

/// Runs one command against an account state: its reply, and the event
/// to log if it changed anything (a command changes at most one thing).
/// Shared with the coordinator, which answers commands for accounts that do
/// not exist yet against an empty state without spawning an actor.
pub fn execute(
    state: &mut AccountState,
    command: AccountCommand,
    pending_withdrawals_max: u32,
) -> Result<(AccountReply, Option<Event>), LedgerError> {
    match command {
        AccountCommand::Deposit {
            currency,
            amount,
            key,
        } => {
            let effect = state.deposit(currency, amount, key)?;
            Ok((AccountReply::Deposited(effect.output), effect.event))
        }
        AccountCommand::RequestWithdrawal {
            currency,
            amount,
            key,
        } => {
            let effect =
                state.request_withdrawal(currency, amount, key, pending_withdrawals_max)?;
            Ok((AccountReply::Withdrawal(effect.output), effect.event))
        }
        AccountCommand::UpdateWithdrawal {
            tx,
            action,
            reason,
            by,
        } => {
            let effect = state.update_withdrawal_by(tx, action, &reason, by)?;
            Ok((AccountReply::Withdrawal(effect.output), effect.event))
        }
        AccountCommand::HoldTransfer {
            to,
            currency,
            amount,
            key,
        } => match state.hold_transfer(to, currency, amount, key)? {
            TransferHold::Held(tx) => Ok((AccountReply::TransferHeld(tx), None)),
            TransferHold::Replayed(receipt) => Ok((AccountReply::Transferred(receipt), None)),
        },
        AccountCommand::ReceiveTransfer {
            tx,
            currency,
            amount,
            key,
        } => {
            let event = state.receive_transfer(tx, currency, amount, key)?;
            Ok((AccountReply::TransferReceived, Some(event)))
        }
        AccountCommand::ClaimWithdrawal { tx, payout_id } => {
            let effect = state.claim_withdrawal(tx, payout_id)?;
            Ok((AccountReply::Withdrawal(effect.output), effect.event))
        }
        AccountCommand::FinishTransfer { tx, received } => {
            // Nothing to log: the receiving side logged the one event.
            state
                .finish_transfer(tx, received)
                .map(|t| (AccountReply::Transferred(t), None))
        }
    }
}

/// Answers a read-only question about an account.
pub fn answer(state: &AccountState, query: &Query) -> Result<QueryReply, LedgerError> {
    match query {
        Query::Balance(currency) => Ok(QueryReply::Balance(state.balance(*currency).view())),
        Query::Balances => Ok(QueryReply::Balances(
            state.balances().iter().map(|b| b.view()).collect(),
        )),
        Query::Withdrawal(tx) => state.withdrawal(*tx).map(QueryReply::Withdrawal),
    }
}

/// Runs the commands in order and answers at once. Their events wait in
/// the shard log: whoever awaits the replies must flush it and wait for
/// durability before acknowledging anything (the coordinator does, once
/// per round).
impl Handler<RunCommands> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: RunCommands, _ctx: &mut Self::Context) {
        // After a storage failure memory must not move further from disk.
        if let Some(poisoned) = self.log.poisoned() {
            return msg.refuse(&poisoned);
        }
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return msg.refuse(&LedgerError::Internal {
                reason: "an account state was borrowed while its actor ran".into(),
            });
        };
        let (log, max) = (&self.log, self.pending_withdrawals_max);
        msg.answer_with(|command| {
            let (reply, event) = execute(&mut state, command, max)?;
            if let Some(event) = event {
                if log.wants_notices() {
                    if let Some(notice) = newly_pending(&state, &event) {
                        log.notify_when_durable(notice);
                    }
                }
                log.record(event);
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
