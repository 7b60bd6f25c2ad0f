//! The account actor: owns one account's balances, locks, withdrawals and
//! idempotency keys, and nothing else.
//!
//! Every change to an account is a message to its actor, so checks such as
//! "available ≥ amount" run one at a time and cannot race. The rules live in
//! [`AccountState`]; this actor only delivers commands to it, hands the
//! resulting events to the journal, and replies once they are durable.

use actix::prelude::*;

use crate::account::{AccountState, TransferHold};
use crate::error::LedgerError;
use crate::event::Event;
use crate::journal::Journal;
use crate::messages::{
    AccountCommand, AccountReply, AskAccount, ExecuteCommands, ExportState, Query, QueryReply,
    WithdrawalQueued,
};

pub struct AccountActor {
    state: AccountState,
    journal: Journal,
    /// Told of every withdrawal that becomes durable and pending, when a
    /// payout actor pays them out (not in external mode). A lost message
    /// (the payout actor stopping) only delays a payout: on restart every
    /// pending withdrawal is queued again from the recovered state.
    payouts: Option<Recipient<WithdrawalQueued>>,
    /// Copied from the config: the cap on pending withdrawals per account.
    pending_withdrawals_max: u32,
}

impl AccountActor {
    pub fn new(
        state: AccountState,
        journal: Journal,
        pending_withdrawals_max: u32,
        payouts: Option<Recipient<WithdrawalQueued>>,
    ) -> Self {
        Self {
            state,
            journal,
            payouts,
            pending_withdrawals_max,
        }
    }
}

impl AccountActor {
    /// The payout notice for an event that leaves a withdrawal pending.
    fn newly_pending(&self, event: &Event) -> Option<WithdrawalQueued> {
        let tx = match event {
            Event::WithdrawalRequested { tx, .. } | Event::WithdrawalReleased { tx } => *tx,
            _ => return None,
        };
        let record = self.state.withdrawal_record_of(tx)?;
        Some(WithdrawalQueued {
            tx,
            currency: record.currency,
            amount: record.amount,
        })
    }
}

impl Actor for AccountActor {
    type Context = Context<Self>;
}

/// Runs one command against an account state, collecting its event.
/// Shared with the coordinator, which answers commands for accounts that do
/// not exist yet against an empty state without spawning an actor.
pub fn execute(
    state: &mut AccountState,
    command: AccountCommand,
    pending_withdrawals_max: u32,
    events: &mut Vec<Event>,
) -> Result<AccountReply, LedgerError> {
    let mut log = |event: Option<Event>| events.extend(event);
    match command {
        AccountCommand::Deposit {
            currency,
            amount,
            key,
        } => {
            let effect = state.deposit(currency, amount, key)?;
            log(effect.event);
            Ok(AccountReply::Deposited(effect.output))
        }
        AccountCommand::RequestWithdrawal {
            currency,
            amount,
            key,
        } => {
            let effect =
                state.request_withdrawal(currency, amount, key, pending_withdrawals_max)?;
            log(effect.event);
            Ok(AccountReply::Withdrawal(effect.output))
        }
        AccountCommand::UpdateWithdrawal { tx, action, reason } => {
            let effect = state.update_withdrawal(tx, action, &reason)?;
            log(effect.event);
            Ok(AccountReply::Withdrawal(effect.output))
        }
        AccountCommand::HoldTransfer {
            to,
            currency,
            amount,
            key,
        } => match state.hold_transfer(to, currency, amount, key)? {
            TransferHold::Held(tx) => Ok(AccountReply::TransferHeld(tx)),
            TransferHold::Replayed(receipt) => Ok(AccountReply::Transferred(receipt)),
        },
        AccountCommand::ReceiveTransfer {
            tx,
            currency,
            amount,
            key,
        } => {
            let event = state.receive_transfer(tx, currency, amount, key)?;
            log(Some(event));
            Ok(AccountReply::TransferReceived)
        }
        AccountCommand::ClaimWithdrawal { tx, payout_id } => {
            let effect = state.claim_withdrawal(tx, payout_id)?;
            log(effect.event);
            Ok(AccountReply::Withdrawal(effect.output))
        }
        AccountCommand::FinishTransfer { tx, received } => {
            // Nothing to log: the receiving side logged the one event.
            state
                .finish_transfer(tx, received)
                .map(AccountReply::Transferred)
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

/// Runs the commands in order; replies once their events are durable.
impl Handler<ExecuteCommands> for AccountActor {
    type Result = ResponseFuture<Vec<Result<AccountReply, LedgerError>>>;

    fn handle(&mut self, msg: ExecuteCommands, _ctx: &mut Self::Context) -> Self::Result {
        // After a storage failure memory must not move further from disk.
        if let Some(poisoned) = self.journal.poisoned() {
            let replies = msg.commands.iter().map(|_| Err(poisoned.clone())).collect();
            return Box::pin(std::future::ready(replies));
        }
        let mut events = Vec::new();
        let replies: Vec<_> = msg
            .commands
            .into_iter()
            .map(|command| {
                execute(
                    &mut self.state,
                    command,
                    self.pending_withdrawals_max,
                    &mut events,
                )
            })
            .collect();
        debug_assert!(
            self.state.check_invariants().is_ok(),
            "{:?}",
            self.state.check_invariants()
        );
        // Even with no events (replays, no-op updates) this waits until all
        // earlier events are durable, so no reply gets ahead of the disk.
        let queued: Vec<WithdrawalQueued> = match &self.payouts {
            Some(_) => events
                .iter()
                .filter_map(|e| self.newly_pending(e))
                .collect(),
            None => Vec::new(),
        };
        let payouts = self.payouts.clone();
        let durable = self.journal.append(events);
        Box::pin(async move {
            match durable.await {
                Ok(()) => {
                    if let Some(payouts) = payouts {
                        for withdrawal in queued {
                            payouts.do_send(withdrawal);
                        }
                    }
                    replies
                }
                Err(error) => replies.into_iter().map(|_| Err(error.clone())).collect(),
            }
        })
    }
}

/// Answers a read-only question about this account.
impl Handler<AskAccount> for AccountActor {
    type Result = Result<QueryReply, LedgerError>;

    fn handle(&mut self, msg: AskAccount, _ctx: &mut Self::Context) -> Self::Result {
        // Once poisoned, memory may hold changes the disk never got: say so
        // rather than show them.
        if let Some(poisoned) = self.journal.poisoned() {
            return Err(poisoned);
        }
        answer(&self.state, &msg.query)
    }
}

/// Copies out this account's state.
impl Handler<ExportState> for AccountActor {
    type Result = MessageResult<ExportState>;

    fn handle(&mut self, _msg: ExportState, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.state.clone())
    }
}
