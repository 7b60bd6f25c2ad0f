//! What runs at an account, typed by what it answers.
//!
//! A [`Job`] is anything an account actor runs on the state it owns; its
//! [`Reply`](Job::Reply) is its own type, so no reply is ever matched
//! against the job that asked for it. [`execute`] runs a job (the rules
//! live in [`AccountState`]) at the shard's current stamp, returns the
//! reply and the event to log, and moves the shard's gauges by what
//! changed.
//!
//! The [`Command`]s callers send in batches answer `Ran<Answer>`: done,
//! or (a transfer's step 1) funds held at the source, with the receiving
//! side still to ask. Each command type has its own answer:
//! [`DepositCommand`] a deposit receipt, [`WithdrawalCommand`] the
//! withdrawal, [`TransferCommand`] the transfer, and [`AccountCommand`]
//! (any of them, for mixed batches) an [`Outcome`]. A transfer's steps 2
//! and 3 are the jobs [`ReceiveTransfer`] and [`FinishTransfer`].
//!
//! The coordinator also runs commands on a throwaway empty state, to answer
//! those aimed at accounts that do not exist without spawning an actor.

use crate::domain::account::{
    AccountControls, AccountState, Remembered, Settlement, TransferHold, WithdrawalRequest,
};
use crate::domain::details::{FeeCollected, Metadata};
use crate::domain::event::Event;
use crate::domain::gauges::{Counted, WithdrawalGauges};
use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::{Currency, Units};
use crate::domain::policy::{Freeze, Policy, Tier};
use crate::domain::receipts::{Deposit, Outcome, Transfer};
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{Settler, Withdrawal};
use crate::engine::messages::WithdrawalQueued;
use crate::error::LedgerError;

/// What an account actor runs on its state.
pub trait Job: Send + 'static {
    type Reply: Send + 'static;

    /// The existing transaction it acts on; `None` for a job that starts
    /// a new one. Every job that can change a withdrawal already made must
    /// name it, or the gauges would count the change as a new withdrawal.
    fn acts_on(&self) -> Option<TransactionId>;

    /// The withdrawal this job needs that the account forgot: put back
    /// from the history before the job runs (see
    /// [`recall`](crate::engine::recall)), so it answers as before. `None`
    /// for a job that needs no withdrawal already made.
    fn recalls(&self, _state: &AccountState) -> Option<TransactionId> {
        None
    }

    /// Runs the rules as of `at` (the stamp its event is logged with): the
    /// reply, and the event to log if anything changed (a job changes at
    /// most one thing).
    fn run(
        self,
        state: &mut AccountState,
        policy: &Policy,
        at: UnixMs,
    ) -> Result<(Self::Reply, Option<Event>), LedgerError>;
}

/// A job callers send in batches (the `Ledger` handle, the payout actor).
pub trait Command: Job<Reply = Ran<<Self as Command>::Answer>> {
    /// What the caller gets.
    type Answer: Send + 'static;

    /// Whether it may bring a never-seen account into being. Anything else
    /// on an unknown account is answered without spawning an actor, so
    /// bogus ids cannot fill memory.
    fn creates_account(&self) -> bool {
        false
    }

    /// Whether it is a transfer's step 1: a batch's later commands for the
    /// same account wait until the transfer ended.
    fn is_transfer(&self) -> bool {
        false
    }
}

/// What a command did at its account.
pub enum Ran<A> {
    Done(A),
    /// Transfer step 1: the funds are held; the receiver is asked next.
    Held(Held<A>),
}

/// A transfer held at its source, and how its receipt becomes the answer.
pub struct Held<A> {
    pub transfer: HeldTransfer,
    pub answer: fn(Transfer) -> A,
}

/// What the receiving side of a held transfer needs.
pub struct HeldTransfer {
    pub tx: TransactionId,
    pub to: AccountId,
    pub currency: Currency,
    pub amount: Units,
    pub key: Option<IdempotencyKey>,
    pub metadata: Option<Box<Metadata>>,
}

/// Credit `amount` to available.
#[derive(Debug, Clone)]
pub struct DepositCommand {
    pub currency: Currency,
    pub amount: Units,
    pub key: Option<IdempotencyKey>,
    pub metadata: Metadata,
}

/// Everything that answers with a withdrawal.
#[derive(Debug, Clone)]
pub enum WithdrawalCommand {
    /// Phase 1: lock the amount (and fee) in a new pending withdrawal.
    Request(Box<WithdrawalRequest>),
    /// Phase 3 (in full or in part), a cancel or a return, by `by`.
    Update {
        tx: TransactionId,
        settlement: Settlement,
        /// Who asks: a payout's claim refuses anyone but that payout.
        by: Settler,
    },
    /// A payout takes a pending withdrawal.
    Claim { tx: TransactionId, payout_id: u64 },
    /// The expiry sweep: fail it (`expired`) if still pending and due.
    /// Answers the withdrawal as it is, changed or not.
    Expire { tx: TransactionId },
}

/// Transfer step 1, at the source.
#[derive(Debug, Clone)]
pub struct TransferCommand {
    pub to: AccountId,
    pub currency: Currency,
    pub amount: Units,
    pub key: Option<IdempotencyKey>,
    pub metadata: Metadata,
}

/// An operator's change to an account's controls; answers its tier and
/// freeze.
#[derive(Debug, Clone)]
pub enum ControlCommand {
    Freeze(Freeze),
    Unfreeze,
    SetTier(Tier),
}

/// The fee account's side of completions logged on another account: the
/// fees are credited (nothing is logged: each completion's event already
/// is, and names this account). Sent once those events are durable.
#[derive(Debug, Clone)]
pub struct CollectFee {
    /// The completion that collected it.
    pub tx: TransactionId,
    pub fee: FeeCollected,
}

/// Any command, for batches that mix them; answers an [`Outcome`].
#[derive(Debug, Clone)]
pub enum AccountCommand {
    Deposit(DepositCommand),
    Withdrawal(WithdrawalCommand),
    Transfer(TransferCommand),
}

/// Transfer step 2, at the receiving account (possibly on another shard).
#[derive(Debug, Clone)]
pub struct ReceiveTransfer {
    pub tx: TransactionId,
    pub currency: Currency,
    pub amount: Units,
    pub key: Option<IdempotencyKey>,
    pub metadata: Option<Box<Metadata>>,
}

/// Transfer step 3, back at the source: the receiver answered.
#[derive(Debug, Clone)]
pub struct FinishTransfer {
    pub tx: TransactionId,
    /// The stamp the receiver logged the transfer with; `None`: refused.
    pub received: Option<UnixMs>,
}

impl Job for DepositCommand {
    type Reply = Ran<Deposit>;

    fn acts_on(&self) -> Option<TransactionId> {
        None
    }

    fn run(
        self,
        state: &mut AccountState,
        _: &Policy,
        at: UnixMs,
    ) -> Result<(Ran<Deposit>, Option<Event>), LedgerError> {
        let effect = state.deposit_with(self.currency, self.amount, self.key, self.metadata, at)?;
        Ok((Ran::Done(effect.output), effect.event))
    }
}

impl Command for DepositCommand {
    type Answer = Deposit;

    fn creates_account(&self) -> bool {
        true
    }
}

impl Job for WithdrawalCommand {
    type Reply = Ran<Withdrawal>;

    fn acts_on(&self) -> Option<TransactionId> {
        match self {
            Self::Request(_) => None,
            Self::Update { tx, .. } | Self::Claim { tx, .. } | Self::Expire { tx } => Some(*tx),
        }
    }

    /// The withdrawal it settles, cancels, returns or claims; for a keyed
    /// request, the one its key made (a replay answers from it).
    fn recalls(&self, state: &AccountState) -> Option<TransactionId> {
        match self {
            Self::Request(request) => request.key.as_ref().and_then(|k| state.forgotten_by_key(k)),
            Self::Update { tx, .. } | Self::Claim { tx, .. } => {
                (state.remember(*tx) == Remembered::Forgotten).then_some(*tx)
            }
            // A forgotten withdrawal is finished: nothing to expire.
            Self::Expire { .. } => None,
        }
    }

    fn run(
        self,
        state: &mut AccountState,
        policy: &Policy,
        at: UnixMs,
    ) -> Result<(Ran<Withdrawal>, Option<Event>), LedgerError> {
        let effect = match self {
            Self::Request(request) => state.request_withdrawal_with(*request, policy, at)?,
            Self::Update { tx, settlement, by } => {
                state.settle_withdrawal(tx, settlement, policy.fee_account, by, at)?
            }
            Self::Claim { tx, payout_id } => state.claim_withdrawal(tx, payout_id, at)?,
            Self::Expire { tx } => match state.expire_withdrawal(tx, at)? {
                Some(effect) => effect,
                None => crate::domain::account::Effect {
                    output: state.withdrawal(tx)?,
                    event: None,
                },
            },
        };
        Ok((Ran::Done(effect.output), effect.event))
    }
}

impl WithdrawalCommand {
    /// Phase 1 with nothing but a currency, an amount and a key.
    #[cfg(test)]
    pub fn request(currency: Currency, amount: Units, key: Option<IdempotencyKey>) -> Self {
        Self::Request(Box::new(WithdrawalRequest {
            currency,
            amount,
            key,
            details: Default::default(),
            expires_in: None,
        }))
    }
}

impl Command for WithdrawalCommand {
    type Answer = Withdrawal;
}

impl Job for TransferCommand {
    type Reply = Ran<Transfer>;

    fn acts_on(&self) -> Option<TransactionId> {
        None
    }

    /// Holds the funds (nothing to log yet: the receiving side logs the
    /// one event), or replays the transfer its key already made.
    fn run(
        self,
        state: &mut AccountState,
        _: &Policy,
        at: UnixMs,
    ) -> Result<(Ran<Transfer>, Option<Event>), LedgerError> {
        let metadata = self.metadata.clone().boxed();
        let held = state.hold_transfer_with(
            self.to,
            self.currency,
            self.amount,
            self.key.clone(),
            self.metadata,
            at,
        )?;
        let ran = match held {
            TransferHold::Held(tx) => Ran::Held(Held {
                transfer: HeldTransfer {
                    tx,
                    to: self.to,
                    currency: self.currency,
                    amount: self.amount,
                    key: self.key,
                    metadata,
                },
                answer: std::convert::identity,
            }),
            TransferHold::Replayed(receipt) => Ran::Done(receipt),
        };
        Ok((ran, None))
    }
}

impl Command for TransferCommand {
    type Answer = Transfer;

    fn is_transfer(&self) -> bool {
        true
    }
}

impl<A> Ran<A> {
    /// The same result with its answer turned by `done`, a held transfer's
    /// receipt by `held`.
    fn map<B>(self, done: fn(A) -> B, held: fn(Transfer) -> B) -> Ran<B> {
        match self {
            Ran::Done(answer) => Ran::Done(done(answer)),
            Ran::Held(h) => Ran::Held(Held {
                transfer: h.transfer,
                answer: held,
            }),
        }
    }
}

impl Job for AccountCommand {
    type Reply = Ran<Outcome>;

    fn acts_on(&self) -> Option<TransactionId> {
        match self {
            Self::Deposit(c) => c.acts_on(),
            Self::Withdrawal(c) => c.acts_on(),
            Self::Transfer(c) => c.acts_on(),
        }
    }

    fn recalls(&self, state: &AccountState) -> Option<TransactionId> {
        match self {
            Self::Withdrawal(c) => c.recalls(state),
            Self::Deposit(_) | Self::Transfer(_) => None,
        }
    }

    fn run(
        self,
        state: &mut AccountState,
        max: &Policy,
        at: UnixMs,
    ) -> Result<(Ran<Outcome>, Option<Event>), LedgerError> {
        let transferred = Outcome::Transferred;
        let (ran, event) = match self {
            Self::Deposit(c) => {
                let (ran, event) = c.run(state, max, at)?;
                (ran.map(Outcome::Deposited, transferred), event)
            }
            Self::Withdrawal(c) => {
                let (ran, event) = c.run(state, max, at)?;
                (ran.map(Outcome::Withdrawal, transferred), event)
            }
            Self::Transfer(c) => {
                let (ran, event) = c.run(state, max, at)?;
                (ran.map(Outcome::Transferred, transferred), event)
            }
        };
        Ok((ran, event))
    }
}

impl Command for AccountCommand {
    type Answer = Outcome;

    fn creates_account(&self) -> bool {
        match self {
            Self::Deposit(c) => c.creates_account(),
            Self::Withdrawal(c) => c.creates_account(),
            Self::Transfer(c) => c.creates_account(),
        }
    }

    fn is_transfer(&self) -> bool {
        match self {
            Self::Deposit(c) => c.is_transfer(),
            Self::Withdrawal(c) => c.is_transfer(),
            Self::Transfer(c) => c.is_transfer(),
        }
    }
}

impl Job for ReceiveTransfer {
    /// The stamp the transfer's event is logged with, for the source.
    type Reply = UnixMs;

    fn acts_on(&self) -> Option<TransactionId> {
        Some(self.tx)
    }

    /// Credits the transfer and logs its one event.
    fn run(
        self,
        state: &mut AccountState,
        _: &Policy,
        at: UnixMs,
    ) -> Result<(UnixMs, Option<Event>), LedgerError> {
        let event = state.receive_transfer_with(
            self.tx,
            self.currency,
            self.amount,
            self.key,
            self.metadata,
            at,
        )?;
        Ok((at, Some(event)))
    }
}

impl Job for FinishTransfer {
    type Reply = Transfer;

    fn acts_on(&self) -> Option<TransactionId> {
        Some(self.tx)
    }

    /// Nothing to log: the receiving side logged the one event (applied
    /// here with the receiver's stamp, as replay applies it).
    fn run(
        self,
        state: &mut AccountState,
        _: &Policy,
        _: UnixMs,
    ) -> Result<(Transfer, Option<Event>), LedgerError> {
        Ok((state.finish_transfer(self.tx, self.received)?, None))
    }
}

impl Job for ControlCommand {
    type Reply = Ran<AccountControls>;

    fn acts_on(&self) -> Option<TransactionId> {
        None
    }

    fn run(
        self,
        state: &mut AccountState,
        _: &Policy,
        at: UnixMs,
    ) -> Result<(Ran<AccountControls>, Option<Event>), LedgerError> {
        let effect = match self {
            Self::Freeze(freeze) => state.set_freeze(freeze, at)?,
            Self::Unfreeze => state.lift_freeze(at)?,
            Self::SetTier(tier) => state.set_tier(tier, at)?,
        };
        Ok((Ran::Done(effect.output), effect.event))
    }
}

impl Command for ControlCommand {
    type Answer = AccountControls;

    /// A freeze or a tier may be set before the account ever held money.
    fn creates_account(&self) -> bool {
        !matches!(self, Self::Unfreeze)
    }
}

impl Job for CollectFee {
    type Reply = ();

    fn acts_on(&self) -> Option<TransactionId> {
        None
    }

    /// Applies the fee account's side of the completion; nothing to log.
    fn run(
        self,
        state: &mut AccountState,
        _: &Policy,
        _: UnixMs,
    ) -> Result<((), Option<Event>), LedgerError> {
        state
            .collect_fee(self.tx, &self.fee)
            .map_err(|e| LedgerError::Internal {
                reason: e.to_string(),
            })?;
        Ok(((), None))
    }
}

/// The payout notice for an event that leaves a withdrawal pending.
pub fn newly_pending(state: &AccountState, event: &Event) -> Option<WithdrawalQueued> {
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

/// Runs one job against an account state as of `at`: its reply, and the
/// event to log if it changed anything.
///
/// Every change to an account passes here, so this is where the shard's
/// gauges follow the withdrawals: the withdrawal the job acts on, as it
/// was before and as it is after, whatever the event. Two lookups of one
/// withdrawal and a few integer operations; no allocation.
pub fn execute<J: Job>(
    state: &mut AccountState,
    job: J,
    policy: &Policy,
    gauges: &mut WithdrawalGauges,
    at: UnixMs,
) -> Result<(J::Reply, Option<Event>), LedgerError> {
    let acted_on = job.acts_on();
    let before = acted_on
        .and_then(|tx| state.withdrawal_record_of(tx))
        .map(Counted::of);
    let (reply, event) = job.run(state, policy, at)?;
    if let Some(event) = &event {
        let tx = event.transaction_id();
        let after = tx
            .and_then(|tx| state.withdrawal_record_of(tx))
            .map(Counted::of);
        // `before` describes the event's withdrawal only if the job named
        // it; otherwise the event made a new one.
        let before = before.filter(|_| tx == acted_on);
        gauges.moved(before, after);
    }
    Ok((reply, event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::usd;
    use crate::domain::withdrawal::{StatusKind, TransitionAction};

    fn policy() -> Policy {
        Policy::new(8)
    }

    /// Runs a job through `execute`, then checks the gauges against a fresh
    /// count of every withdrawal of the states.
    fn run_checked<J: Job>(
        state: &mut AccountState,
        gauges: &mut WithdrawalGauges,
        job: J,
        others: &[&AccountState],
    ) -> Result<J::Reply, LedgerError> {
        let at = UnixMs::from_millis(1_767_225_600_000);
        let result = execute(state, job, &policy(), gauges, at).map(|(reply, _)| reply);
        let all = others.iter().copied().chain(std::iter::once(&*state));
        assert_eq!(*gauges, WithdrawalGauges::scan(all));
        result
    }

    fn withdrawal_id(reply: Result<Ran<Withdrawal>, LedgerError>) -> TransactionId {
        match reply {
            Ok(Ran::Done(w)) => w.transaction_id,
            Ok(Ran::Held(_)) => panic!("a withdrawal holds no transfer"),
            Err(error) => panic!("expected a withdrawal, got {error:?}"),
        }
    }

    /// As payout 7 would: it claims, then settles what it claimed.
    fn update(tx: TransactionId, action: TransitionAction) -> WithdrawalCommand {
        update_by(tx, action, Settler::Payout { payout_id: 7 })
    }

    /// As a caller of a ledger whose host pays (external mode) would.
    fn caller_update(tx: TransactionId, action: TransitionAction) -> WithdrawalCommand {
        update_by(tx, action, Settler::Caller { engine_pays: false })
    }

    fn update_by(tx: TransactionId, action: TransitionAction, by: Settler) -> WithdrawalCommand {
        let settlement = Settlement {
            action,
            reason: "test".into(),
            paid: None,
        };
        WithdrawalCommand::Update { tx, settlement, by }
    }

    #[test]
    fn execute_keeps_the_gauges_equal_to_a_count_through_every_transition() {
        let (mut state, mut other) = (AccountState::new(1), AccountState::new(2));
        let mut gauges = WithdrawalGauges::default();
        let g = &mut gauges;
        let deposit = DepositCommand {
            currency: usd(),
            amount: 10_000,
            key: None,
            metadata: Default::default(),
        };
        assert!(run_checked(&mut state, g, deposit, &[&other]).is_ok());
        let request = |amount| WithdrawalCommand::request(usd(), amount, None);
        let a = withdrawal_id(run_checked(&mut state, g, request(100), &[&other]));
        let b = withdrawal_id(run_checked(&mut state, g, request(200), &[&other]));
        let c = withdrawal_id(run_checked(&mut state, g, request(300), &[&other]));
        // Stays pending.
        assert!(run_checked(&mut state, g, request(400), &[&other]).is_ok());
        let claim = WithdrawalCommand::Claim {
            tx: a,
            payout_id: 7,
        };
        let ok = |state: &mut AccountState, g: &mut WithdrawalGauges, job| {
            assert!(run_checked(state, g, job, &[&other]).is_ok());
        };
        ok(&mut state, g, claim.clone());
        ok(&mut state, g, update(a, TransitionAction::Release));
        ok(&mut state, g, claim);
        ok(&mut state, g, update(a, TransitionAction::Complete));
        // Repeated: no event, no move.
        ok(&mut state, g, update(a, TransitionAction::Complete));
        ok(&mut state, g, update(a, TransitionAction::Return));
        ok(&mut state, g, caller_update(b, TransitionAction::Fail));
        ok(&mut state, g, caller_update(c, TransitionAction::Cancel));
        // Refused: nothing moves.
        let refused = caller_update(c, TransitionAction::Complete);
        assert!(run_checked(&mut state, g, refused, &[&other]).is_err());
        // A transfer touches no withdrawal, on either side.
        let hold = TransferCommand {
            to: 2,
            currency: usd(),
            amount: 50,
            key: None,
            metadata: Default::default(),
        };
        let Ok(Ran::Held(held)) = run_checked(&mut state, g, hold, &[&other]) else {
            panic!("the transfer was not held");
        };
        let tx = held.transfer.tx;
        let receive = ReceiveTransfer {
            tx,
            currency: usd(),
            amount: 50,
            key: None,
            metadata: None,
        };
        assert!(run_checked(&mut other, g, receive, &[&state]).is_ok());
        let finish = FinishTransfer {
            tx,
            received: Some(UnixMs::from_millis(1)),
        };
        assert!(run_checked(&mut state, g, finish, &[&other]).is_ok());

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
