//! What a command does to one account: [`execute`] runs an
//! [`AccountCommand`] against an [`AccountState`] (the rules live there),
//! returns the reply and the event to log, and moves the shard's gauges by
//! what changed. The account actor calls it on the state it owns; the
//! coordinator calls it on a throwaway empty state to answer commands for
//! accounts that do not exist, without spawning an actor.

use crate::domain::account::{AccountState, TransferHold};
use crate::domain::event::Event;
use crate::domain::gauges::{Counted, WithdrawalGauges};
use crate::domain::ids::TransactionId;
use crate::engine::messages::{AccountCommand, AccountReply, WithdrawalQueued};
use crate::error::LedgerError;

/// The payout notice for an event that leaves a withdrawal pending.
pub(crate) fn newly_pending(state: &AccountState, event: &Event) -> Option<WithdrawalQueued> {
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
///
/// Every change to an account passes here, so this is where the shard's
/// gauges follow the withdrawals: the withdrawal the command acts on, as
/// it was before and as it is after, whatever the event. Two lookups of
/// one withdrawal and a few integer operations; no allocation.
pub(crate) fn execute(
    state: &mut AccountState,
    command: AccountCommand,
    pending_withdrawals_max: u32,
    gauges: &mut WithdrawalGauges,
) -> Result<(AccountReply, Option<Event>), LedgerError> {
    let acted_on = transaction_of(&command);
    let before = acted_on
        .and_then(|tx| state.withdrawal_record_of(tx))
        .map(Counted::of);
    let (reply, event) = run(state, command, pending_withdrawals_max)?;
    if let Some(event) = &event {
        let tx = event.transaction_id();
        let after = tx
            .and_then(|tx| state.withdrawal_record_of(tx))
            .map(Counted::of);
        // `before` describes the event's withdrawal only if the command
        // named it; otherwise the event made a new one.
        let before = before.filter(|_| tx == acted_on);
        gauges.moved(before, after);
    }
    Ok((reply, event))
}

/// The existing transaction a command acts on; `None` for commands that
/// start a new one. Every command that can change a withdrawal already
/// made must name it here or the gauges would count the change as a new
/// withdrawal: the match is exhaustive so a new command has to decide.
fn transaction_of(command: &AccountCommand) -> Option<TransactionId> {
    match command {
        AccountCommand::UpdateWithdrawal { tx, .. }
        | AccountCommand::ClaimWithdrawal { tx, .. }
        | AccountCommand::ReceiveTransfer { tx, .. }
        | AccountCommand::FinishTransfer { tx, .. } => Some(*tx),
        AccountCommand::Deposit { .. }
        | AccountCommand::RequestWithdrawal { .. }
        | AccountCommand::HoldTransfer { .. } => None,
    }
}

/// The rules' side of [`execute`]: the command itself.
fn run(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::usd;
    use crate::domain::withdrawal::{Settler, StatusKind, TransitionAction};

    const MAX: u32 = 8;

    /// Runs a command through `execute`, then checks the gauges against a
    /// fresh count of every withdrawal of the states.
    fn run_checked(
        state: &mut AccountState,
        gauges: &mut WithdrawalGauges,
        command: AccountCommand,
        others: &[&AccountState],
    ) -> Result<AccountReply, LedgerError> {
        let result = execute(state, command, MAX, gauges).map(|(reply, _)| reply);
        let all = others.iter().copied().chain(std::iter::once(&*state));
        assert_eq!(*gauges, WithdrawalGauges::scan(all));
        result
    }

    fn withdrawal_id(reply: Result<AccountReply, LedgerError>) -> TransactionId {
        match reply {
            Ok(AccountReply::Withdrawal(w)) => w.transaction_id,
            other => panic!("expected a withdrawal, got {other:?}"),
        }
    }

    /// As payout 7 would: it claims, then settles what it claimed.
    fn update(tx: TransactionId, action: TransitionAction) -> AccountCommand {
        update_by(tx, action, Settler::Payout { payout_id: 7 })
    }

    /// As a caller of a ledger whose host pays (external mode) would.
    fn caller_update(tx: TransactionId, action: TransitionAction) -> AccountCommand {
        update_by(tx, action, Settler::Caller { engine_pays: false })
    }

    fn update_by(tx: TransactionId, action: TransitionAction, by: Settler) -> AccountCommand {
        AccountCommand::UpdateWithdrawal {
            tx,
            action,
            reason: "test".into(),
            by,
        }
    }

    #[test]
    fn execute_keeps_the_gauges_equal_to_a_count_through_every_transition() {
        let (mut state, mut other) = (AccountState::new(1), AccountState::new(2));
        let mut gauges = WithdrawalGauges::default();
        let mut run = |state: &mut AccountState, other: &AccountState, command| {
            run_checked(state, &mut gauges, command, &[other])
        };
        let deposit = AccountCommand::Deposit {
            currency: usd(),
            amount: 10_000,
            key: None,
        };
        run(&mut state, &other, deposit).unwrap();
        let request = |amount| AccountCommand::RequestWithdrawal {
            currency: usd(),
            amount,
            key: None,
        };
        let a = withdrawal_id(run(&mut state, &other, request(100)));
        let b = withdrawal_id(run(&mut state, &other, request(200)));
        let c = withdrawal_id(run(&mut state, &other, request(300)));
        run(&mut state, &other, request(400)).unwrap(); // stays pending
        let claim = AccountCommand::ClaimWithdrawal {
            tx: a,
            payout_id: 7,
        };
        run(&mut state, &other, claim.clone()).unwrap();
        run(&mut state, &other, update(a, TransitionAction::Release)).unwrap();
        run(&mut state, &other, claim).unwrap();
        run(&mut state, &other, update(a, TransitionAction::Complete)).unwrap();
        // Repeated: no event, no move.
        run(&mut state, &other, update(a, TransitionAction::Complete)).unwrap();
        run(&mut state, &other, update(a, TransitionAction::Return)).unwrap();
        run(&mut state, &other, caller_update(b, TransitionAction::Fail)).unwrap();
        run(
            &mut state,
            &other,
            caller_update(c, TransitionAction::Cancel),
        )
        .unwrap();
        // Refused: nothing moves.
        run(
            &mut state,
            &other,
            caller_update(c, TransitionAction::Complete),
        )
        .unwrap_err();
        // A transfer touches no withdrawal, on either side.
        let hold = AccountCommand::HoldTransfer {
            to: 2,
            currency: usd(),
            amount: 50,
            key: None,
        };
        let Ok(AccountReply::TransferHeld(tx)) = run(&mut state, &other, hold) else {
            panic!("the transfer was not held");
        };
        let receive = AccountCommand::ReceiveTransfer {
            tx,
            currency: usd(),
            amount: 50,
            key: None,
        };
        run(&mut other, &state, receive).unwrap();
        let finish = AccountCommand::FinishTransfer { tx, received: true };
        run(&mut state, &other, finish).unwrap();

        let tally = |status| gauges.get("USD", status);
        for (status, count, amount) in [
            (StatusKind::Pending, 1, 400),
            (StatusKind::Processing, 0, 0),
            (StatusKind::Completed, 0, 0),
            (StatusKind::Returned, 1, 100),
            (StatusKind::Failed, 1, 200),
            (StatusKind::Cancelled, 1, 300),
        ] {
            let t = tally(status);
            assert_eq!((t.count, t.amount), (count, amount), "{status}");
        }
    }
}
