//! The shard coordinator: owns the shard's account directory and routes
//! every operation for its accounts to their actors.
//!
//! One coordinator runs on each shard's Arbiter (one thread); the account
//! actors it starts live on the same thread. An account comes into being on
//! the first operation that can create it (a deposit or incoming transfer);
//! anything else aimed at an unknown account is answered against an empty
//! state, so made-up ids cost no memory. Transfers whose receiving account
//! lives on another shard go through that shard's coordinator.
//!
//! Actors are cheap but not free (≈ 850 B each), so only accounts in use
//! have one: an actor is started on an account's first command and stopped
//! once the account has been idle for a sweep interval, or sooner when the
//! shard runs more than its cap of actors. Its state stays here, in the
//! account's [`AccountCell`], either way.
//!
//! It also answers the shard's gauges (accounts, running actors, and the
//! withdrawal tallies its shard log keeps), without reading any account.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;

use crate::domain::account::AccountState;
use crate::domain::gauges::{Gauges, WithdrawalGauges};
use crate::domain::ids::shard_of;
use crate::domain::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::{Currency, Units};
use crate::domain::receipts::Outcome;
use crate::engine::account::{answer, execute, AccountActor, AccountCell};
use crate::engine::messages::{
    AccountCommand, AccountReply, AskAccount, CountAccounts, ExecuteBatch, ExportAccounts,
    ReadGauges, ReceiveTransfers, ShardBatch, ShardCounts, WithdrawalQueued,
};
use crate::engine::round::{RoundReplies, RunCommands};
use crate::engine::shard_log::ShardLog;
use crate::error::LedgerError;
use crate::storage::journal::Journal;

/// Every coordinator's address, filled once all shards have started (each
/// coordinator needs the others to route transfers).
pub type Peers = Arc<OnceLock<Vec<Addr<Coordinator>>>>;

/// What a coordinator needs besides its recovered accounts.
pub struct CoordinatorSettings {
    pub journal: Journal,
    pub pending_withdrawals_max: u32,
    pub peers: Peers,
    pub payouts: Option<Recipient<WithdrawalQueued>>,
    /// Most account actors running at once on this shard.
    pub account_actors_max: usize,
    /// An actor idle for between one and two of these is stopped.
    pub account_idle_sweep: Duration,
}

/// One account of the shard.
struct AccountSlot {
    state: AccountCell,
    /// Its actor, while it has one.
    actor: Option<Addr<AccountActor>>,
    /// The sweep epoch of its last command: idle since before the current
    /// epoch means its actor may be stopped.
    last_used: u64,
}

pub struct Coordinator {
    accounts: foldhash::HashMap<AccountId, AccountSlot>,
    /// Accounts whose actor runs, for sweeps that need not scan them all.
    running: Vec<AccountId>,
    epoch: u64,
    log: Rc<ShardLog>,
    pending_withdrawals_max: u32,
    peers: Peers,
    account_actors_max: usize,
    account_idle_sweep: Duration,
    /// Account states copied out by exports so far (see
    /// [`Gauges::account_states_copied`]).
    states_copied: u64,
}

impl Coordinator {
    /// Starts on the shard's recovered accounts; counting their withdrawals
    /// for the gauges is the one O(accounts) step, done here once.
    pub fn new(settings: CoordinatorSettings, recovered: Vec<AccountState>) -> Self {
        let gauges = WithdrawalGauges::scan(&recovered);
        let accounts = recovered
            .into_iter()
            .map(|state| {
                let id = state.id();
                let slot = AccountSlot {
                    state: Rc::new(RefCell::new(state)),
                    actor: None,
                    last_used: 0,
                };
                (id, slot)
            })
            .collect();
        Self {
            accounts,
            running: Vec::new(),
            epoch: 1,
            log: Rc::new(ShardLog::new(settings.journal, settings.payouts, gauges)),
            pending_withdrawals_max: settings.pending_withdrawals_max,
            peers: settings.peers,
            account_actors_max: settings.account_actors_max.max(1),
            account_idle_sweep: settings.account_idle_sweep,
            states_copied: 0,
        }
    }

    /// The account's actor, started (on a new account, or on its kept
    /// state) if it has none.
    fn actor_of(&mut self, account: AccountId) -> Addr<AccountActor> {
        if self.running.len() >= self.account_actors_max {
            self.stop_idle_actors();
        }
        let epoch = self.epoch;
        let slot = self.accounts.entry(account).or_insert_with(|| AccountSlot {
            state: Rc::new(RefCell::new(AccountState::new(account))),
            actor: None,
            last_used: epoch,
        });
        slot.last_used = epoch;
        if let Some(actor) = &slot.actor {
            return actor.clone();
        }
        let actor = AccountActor::new(
            Rc::clone(&slot.state),
            Rc::clone(&self.log),
            self.pending_withdrawals_max,
        )
        .start();
        slot.actor = Some(actor.clone());
        self.running.push(account);
        actor
    }

    /// Stops the actors of accounts unused since the current epoch began,
    /// then starts a new epoch. Dropping the coordinator's address is the
    /// stop: the actor finishes what its mailbox holds (a round in flight
    /// keeps its own address until answered) and ends. Should the account
    /// get a command meanwhile, a new actor starts on the same cell; both
    /// run on this thread, one message at a time, and a batch sends an
    /// account's next commands only after the previous ones were answered,
    /// so the order of its commands is kept.
    fn stop_idle_actors(&mut self) {
        let epoch = self.epoch;
        let accounts = &mut self.accounts;
        self.running
            .retain(|account| match accounts.get_mut(account) {
                Some(slot) if slot.last_used >= epoch => true,
                Some(slot) => {
                    slot.actor = None;
                    false
                }
                None => false,
            });
        self.epoch += 1;
    }

    fn is_known(&self, account: AccountId) -> bool {
        self.accounts.contains_key(&account)
    }

    /// Answers a command for an account that does not exist, against an
    /// empty state. Such commands can only be rejected; should one ever
    /// produce an event, that is a bug and is reported, not dropped.
    fn answer_unknown_account(
        &self,
        account: AccountId,
        command: AccountCommand,
    ) -> Result<Outcome, LedgerError> {
        let mut empty = AccountState::new(account);
        // Nothing here may change (see below): throwaway gauges.
        let mut unchanged = WithdrawalGauges::default();
        let (reply, event) = execute(
            &mut empty,
            command,
            self.pending_withdrawals_max,
            &mut unchanged,
        )?;
        if event.is_some() {
            return Err(LedgerError::Internal {
                reason: format!("a command on unknown account {account} produced events"),
            });
        }
        into_outcome(reply)
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.account_idle_sweep, |coordinator, _| {
            coordinator.stop_idle_actors();
        });
    }
}

/// The receiving side of a transfer held at its source.
struct PendingTransfer {
    index: usize,
    source: Addr<AccountActor>,
    tx: TransactionId,
    to: AccountId,
    currency: Currency,
    amount: Units,
    key: Option<IdempotencyKey>,
}

/// The commands of one batch for one account, with their batch positions.
struct AccountGroup {
    actor: Addr<AccountActor>,
    commands: Vec<(usize, AccountCommand)>,
}

/// Commands gathered per account, groups in order of each account's first
/// command.
#[derive(Default)]
struct Grouping {
    groups: Vec<AccountGroup>,
    group_of: foldhash::HashMap<AccountId, usize>,
}

impl Grouping {
    fn contains(&self, account: AccountId) -> bool {
        self.group_of.contains_key(&account)
    }

    /// Adds a command to its account's group; `actor` gives the account's
    /// actor when the group is new.
    fn push(
        &mut self,
        account: AccountId,
        command: (usize, AccountCommand),
        actor: impl FnOnce() -> Addr<AccountActor>,
    ) {
        let groups = &mut self.groups;
        let group = *self.group_of.entry(account).or_insert_with(|| {
            groups.push(AccountGroup {
                actor: actor(),
                commands: Vec::new(),
            });
            groups.len() - 1
        });
        groups[group].commands.push(command);
    }
}

/// Sends each group its commands; their replies gather on the round.
fn dispatch(groups: Vec<AccountGroup>) -> RoundReplies {
    let commands = groups.iter().map(|g| g.commands.len()).sum();
    let round = RoundReplies::expecting(groups.len(), commands);
    for group in groups {
        group
            .actor
            .do_send(RunCommands::new(group.commands, round.clone()));
    }
    round
}

type Results = Vec<Option<Result<Outcome, LedgerError>>>;

/// Runs a batch: per account, in order; accounts in parallel.
impl Handler<ExecuteBatch> for Coordinator {
    type Result = ResponseFuture<Vec<Result<Outcome, LedgerError>>>;

    fn handle(&mut self, msg: ExecuteBatch, _ctx: &mut Self::Context) -> Self::Result {
        let mut results: Results = std::iter::repeat_with(|| None)
            .take(msg.ops.len())
            .collect();
        let mut grouping = Grouping::default();
        for (index, (account, command)) in msg.ops.into_iter().enumerate() {
            let new = !grouping.contains(account) && !self.is_known(account);
            if new && !command.creates_account() {
                results[index] = Some(self.answer_unknown_account(account, command));
                continue;
            }
            grouping.push(account, (index, command), || self.actor_of(account));
        }
        Box::pin(run_batch(
            grouping.groups,
            results,
            self.peers.clone(),
            Rc::clone(&self.log),
        ))
    }
}

/// Runs a batch in rounds. Each account's commands are cut after every
/// transfer, because a transfer only ends (at its source) after its
/// receiver answered: the source's later commands must wait for that to
/// keep the batch's order per account. Batches without transfers, or with
/// one transfer last per account, run in a single round.
async fn run_batch(
    groups: Vec<AccountGroup>,
    mut results: Results,
    peers: Peers,
    log: Rc<ShardLog>,
) -> Vec<Result<Outcome, LedgerError>> {
    let mut queues: Vec<VecDeque<AccountGroup>> =
        groups.into_iter().map(split_after_transfers).collect();
    loop {
        let round: Vec<AccountGroup> = queues.iter_mut().filter_map(|q| q.pop_front()).collect();
        if round.is_empty() {
            break;
        }
        run_round(round, &mut results, &peers, &log).await;
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(LedgerError::Internal {
                    reason: "an operation of the batch got no answer".into(),
                })
            })
        })
        .collect()
}

/// Cuts one account's commands into runs that each end at a transfer.
fn split_after_transfers(group: AccountGroup) -> VecDeque<AccountGroup> {
    let mut runs = VecDeque::new();
    // The common case, no transfer before the last command: one run, the
    // group as it is, without copying its commands.
    let cut_inside = group
        .commands
        .iter()
        .rev()
        .skip(1)
        .any(|(_, c)| is_transfer(c));
    if !cut_inside {
        runs.push_back(group);
        return runs;
    }
    let mut current = Vec::new();
    for (index, command) in group.commands {
        let ends_run = is_transfer(&command);
        current.push((index, command));
        if ends_run {
            runs.push_back(AccountGroup {
                actor: group.actor.clone(),
                commands: std::mem::take(&mut current),
            });
        }
    }
    if !current.is_empty() {
        runs.push_back(AccountGroup {
            actor: group.actor,
            commands: current,
        });
    }
    runs
}

fn is_transfer(command: &AccountCommand) -> bool {
    matches!(command, AccountCommand::HoldTransfer { .. })
}

/// Step 1 on every account of the round, then one flush of the shard's
/// log, then the receiving side of each transfer held in step 1, then step
/// 3 back at each transfer's source. The round's answers are given only
/// once its events are durable.
async fn run_round(
    groups: Vec<AccountGroup>,
    results: &mut [Option<Result<Outcome, LedgerError>>],
    peers: &Peers,
    log: &ShardLog,
) {
    let commands = groups.iter().map(|g| g.commands.len()).sum();
    // What step 2 needs of each transfer, by batch position.
    let mut transfers: foldhash::HashMap<usize, (Addr<AccountActor>, TransferArgs)> =
        Default::default();
    for group in &groups {
        for (index, command) in &group.commands {
            if let Some(args) = transfer_args(command) {
                transfers.insert(*index, (group.actor.clone(), args));
            }
        }
    }
    let round = dispatch(groups);
    let mut answered: Vec<(usize, Result<Outcome, LedgerError>)> = Vec::with_capacity(commands);
    let mut held: Vec<PendingTransfer> = Vec::new();
    for (index, reply) in round.all().await {
        match (reply, transfers.remove(&index)) {
            (Ok(AccountReply::TransferHeld(tx)), Some((source, (to, currency, amount, key)))) => {
                held.push(PendingTransfer {
                    index,
                    source,
                    tx,
                    to,
                    currency,
                    amount,
                    key,
                })
            }
            (reply, _) => answered.push((index, reply.and_then(into_outcome))),
        }
    }
    // Hand this round's events to the journal now, before any receiver logs
    // a transfer: a transfer's event must follow, in the log, the events its
    // source's funds came from (a deposit earlier in this very round, say),
    // or replay would find the source short. Handing over is synchronous;
    // durability is awaited below.
    let durable = log.flush();
    if !held.is_empty() {
        answered.extend(finish_transfers(held, peers).await);
    }
    let durable = durable.await;
    for (index, answer) in answered {
        results[index] = Some(match &durable {
            Ok(()) => answer,
            // The answers were computed on memory the disk may never hold.
            Err(error) => Err(error.clone()),
        });
    }
}

/// Steps 2 and 3 of the transfers held in a round: one message per
/// receiving shard with all its credits, then one per source account with
/// all its finishes.
async fn finish_transfers(
    held: Vec<PendingTransfer>,
    peers: &Peers,
) -> Vec<(usize, Result<Outcome, LedgerError>)> {
    // A refused transfer's finish answers to nobody (its caller already has
    // the receiver's reason): it runs under a position nobody reads.
    const UNANSWERED: usize = usize::MAX;
    let received = receive_all(&held, peers).await;
    let mut finishes = Grouping::default();
    let mut answered = Vec::new();
    for (t, received) in held.into_iter().zip(received) {
        let index = match received {
            // Unknown whether the receiver credited (it was stopping): keep
            // the funds held. The log decides on restart, where both sides
            // of the one transfer event apply, or neither.
            Err(LedgerError::ShuttingDown) => {
                answered.push((t.index, Err(LedgerError::ShuttingDown)));
                continue;
            }
            // Refused at the receiver: the source gets its funds back.
            Err(refused) => {
                answered.push((t.index, Err(refused)));
                UNANSWERED
            }
            Ok(()) => t.index,
        };
        let command = AccountCommand::FinishTransfer {
            tx: t.tx,
            received: index != UNANSWERED,
        };
        finishes.push(t.tx.account(), (index, command), || t.source.clone());
    }
    for (index, finished) in dispatch(finishes.groups).all().await {
        if index != UNANSWERED {
            answered.push((index, finished.and_then(into_outcome)));
        }
    }
    answered
}

/// Asks each receiving shard's coordinator, once, to credit its side of
/// the held transfers; one answer per transfer, in order.
async fn receive_all(held: &[PendingTransfer], peers: &Peers) -> Vec<Result<(), LedgerError>> {
    let Some(coordinators) = peers.get() else {
        let unwired = LedgerError::Internal {
            reason: "shard coordinators are not wired to each other".into(),
        };
        return vec![Err(unwired); held.len()];
    };
    let mut per_shard: Vec<ShardBatch> = coordinators
        .iter()
        .map(|_| (Vec::new(), Vec::new()))
        .collect();
    for (position, t) in held.iter().enumerate() {
        let (positions, credits) = &mut per_shard[shard_of(t.to, coordinators.len())];
        positions.push(position);
        credits.push((
            t.to,
            AccountCommand::ReceiveTransfer {
                tx: t.tx,
                currency: t.currency,
                amount: t.amount,
                key: t.key.clone(),
            },
        ));
    }
    let asks = per_shard
        .into_iter()
        .zip(coordinators)
        .filter(|((positions, _), _)| !positions.is_empty())
        .map(|((positions, credits), coordinator)| async move {
            let count = credits.len();
            let answers = match coordinator.send(ReceiveTransfers { credits }).await {
                Ok(answers) if answers.len() == count => answers,
                _ => vec![Err(LedgerError::ShuttingDown); count],
            };
            (positions, answers)
        });
    let mut received = vec![Err(LedgerError::ShuttingDown); held.len()];
    for (positions, answers) in join_all(asks).await {
        for (position, answer) in positions.into_iter().zip(answers) {
            received[position] = answer;
        }
    }
    received
}

type TransferArgs = (AccountId, Currency, Units, Option<IdempotencyKey>);

fn transfer_args(command: &AccountCommand) -> Option<TransferArgs> {
    match command {
        AccountCommand::HoldTransfer {
            to,
            currency,
            amount,
            key,
        } => Some((*to, *currency, *amount, key.clone())),
        _ => None,
    }
}

/// Credits the receiving sides of transfers on this shard's accounts, and
/// answers once the credits are durable.
impl Handler<ReceiveTransfers> for Coordinator {
    type Result = ResponseFuture<Vec<Result<(), LedgerError>>>;

    fn handle(&mut self, msg: ReceiveTransfers, _ctx: &mut Self::Context) -> Self::Result {
        let count = msg.credits.len();
        let mut grouping = Grouping::default();
        for (position, (to, command)) in msg.credits.into_iter().enumerate() {
            grouping.push(to, (position, command), || self.actor_of(to));
        }
        let round = dispatch(grouping.groups);
        let log = Rc::clone(&self.log);
        Box::pin(async move {
            let mut answers = vec![Err(LedgerError::ShuttingDown); count];
            let replies = round.all().await;
            if let Err(error) = log.flush().await {
                return vec![Err(error); count];
            }
            for (position, reply) in replies {
                answers[position] = match reply {
                    Ok(AccountReply::TransferReceived) => Ok(()),
                    Err(refused) => Err(refused),
                    Ok(other) => Err(LedgerError::Internal {
                        reason: format!("receiving a transfer got {other:?}"),
                    }),
                };
            }
            answers
        })
    }
}

/// Answers a read-only question; unknown accounts answer as empty ones.
/// Reads the account's cell directly: on this thread no actor is running
/// while the coordinator is.
impl Handler<AskAccount> for Coordinator {
    type Result = Result<crate::engine::messages::QueryReply, LedgerError>;

    fn handle(&mut self, msg: AskAccount, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(poisoned) = self.log.poisoned() {
            return Err(poisoned);
        }
        match self.accounts.get(&msg.account) {
            None => answer(&AccountState::new(msg.account), &msg.query),
            Some(slot) => answer(&*borrow(&slot.state)?, &msg.query),
        }
    }
}

/// Counts this shard's accounts and running actors.
impl Handler<CountAccounts> for Coordinator {
    type Result = MessageResult<CountAccounts>;

    fn handle(&mut self, _msg: CountAccounts, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(ShardCounts {
            accounts: self.accounts.len(),
            actors_running: self.running.len(),
        })
    }
}

/// Copies out every account state of this shard.
impl Handler<ExportAccounts> for Coordinator {
    type Result = Result<Vec<AccountState>, LedgerError>;

    fn handle(&mut self, _msg: ExportAccounts, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(poisoned) = self.log.poisoned() {
            return Err(poisoned);
        }
        let copied: Vec<AccountState> = self
            .accounts
            .values()
            .map(|slot| borrow(&slot.state).map(|state| state.clone()))
            .collect::<Result<_, _>>()?;
        self.states_copied = self.states_copied.saturating_add(copied.len() as u64);
        Ok(copied)
    }
}

/// This shard's gauges, as kept while it runs: no account is read, so the
/// answer costs the same whatever the shard holds. Refused once the ledger
/// is poisoned, like exports: memory may hold changes the disk lacks.
impl Handler<ReadGauges> for Coordinator {
    type Result = Result<Gauges, LedgerError>;

    fn handle(&mut self, _msg: ReadGauges, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(poisoned) = self.log.poisoned() {
            return Err(poisoned);
        }
        let withdrawals = self.log.gauges().ok_or_else(|| LedgerError::Internal {
            reason: "the shard's gauges were borrowed while being read".into(),
        })?;
        Ok(Gauges {
            accounts: self.accounts.len(),
            account_actors_running: self.running.len(),
            withdrawals,
            account_states_copied: self.states_copied,
        })
    }
}

/// Reads a cell; busy only through a bug, reported rather than panicking.
fn borrow(cell: &AccountCell) -> Result<std::cell::Ref<'_, AccountState>, LedgerError> {
    cell.try_borrow().map_err(|_| LedgerError::Internal {
        reason: "an account state was borrowed for writing while being read".into(),
    })
}

/// Turns an account's reply into what the caller of a batch sees.
fn into_outcome(reply: AccountReply) -> Result<Outcome, LedgerError> {
    match reply {
        AccountReply::Deposited(d) => Ok(Outcome::Deposited(d)),
        AccountReply::Withdrawal(w) => Ok(Outcome::Withdrawal(w)),
        AccountReply::Transferred(t) => Ok(Outcome::Transferred(t)),
        other => Err(LedgerError::Internal {
            reason: format!("unexpected account reply {other:?}"),
        }),
    }
}
