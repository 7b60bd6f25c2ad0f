//! Running one batch on a shard, in rounds.
//!
//! A batch's commands are grouped per account, in order, and each group
//! goes to its account's actor as one message. A round is: step 1 on every
//! account of the round, one flush of the shard's log, the receiving side
//! of each transfer held in step 1 (on whichever shard the receiver lives,
//! through the [router](crate::engine::router)), then step 3 back at each
//! transfer's source. The round's answers are given only once its events
//! are durable.
//!
//! Each account's commands are cut after every transfer, because a transfer
//! only ends (at its source) after its receiver answered: the source's later
//! commands wait for that, to keep the batch's order per account. Batches
//! without transfers, or with one transfer last per account, run in a
//! single round, dispatched by the coordinator as it takes the batch; any
//! later round, and the transfers' step 3, go back through the coordinator
//! ([`Dispatch`]), which looks the accounts' actors up in its directory
//! then: only the directory holds actors' addresses.

use std::collections::VecDeque;
use std::rc::Rc;

use actix::prelude::*;

use crate::domain::ids::AccountId;
use crate::domain::receipts::Transfer;
use crate::domain::time::UnixMs;
use crate::engine::command::{Command, FinishTransfer, Held, Job, Ran, ReceiveTransfer};
use crate::engine::coordinator::Coordinator;
use crate::engine::round::{RoundReplies, RunCommands};
use crate::engine::router::{answered, Router};
use crate::engine::shard_log::ShardLog;
use crate::error::LedgerError;

/// One account's jobs of a round, with their positions in the batch.
pub struct AccountRun<J> {
    pub account: AccountId,
    pub jobs: Vec<(usize, J)>,
}

/// Coordinator → itself: send these jobs to their accounts' actors (a
/// round after a batch's first). Dropped unhandled (the coordinator
/// stopped), each job answers `shutting_down`.
pub struct Dispatch<J: Job>(pub Vec<(AccountId, RunCommands<J>)>);

impl<J: Job> Message for Dispatch<J> {
    type Result = ();
}

/// Jobs gathered per account, in order of each account's first job.
pub struct Grouping<J> {
    runs: Vec<AccountRun<J>>,
    run_of: foldhash::HashMap<AccountId, usize>,
}

impl<J> Grouping<J> {
    /// Room for `jobs` jobs on as many accounts, so a batch's grouping
    /// never grows its map or list on the way.
    pub fn with_capacity(jobs: usize) -> Self {
        Self {
            runs: Vec::with_capacity(jobs),
            run_of: foldhash::HashMap::with_capacity_and_hasher(jobs, Default::default()),
        }
    }

    pub fn contains(&self, account: AccountId) -> bool {
        self.run_of.contains_key(&account)
    }

    pub fn push(&mut self, account: AccountId, job: (usize, J)) {
        let runs = &mut self.runs;
        let run = *self.run_of.entry(account).or_insert_with(|| {
            runs.push(AccountRun {
                account,
                jobs: Vec::new(),
            });
            runs.len() - 1
        });
        runs[run].jobs.push(job);
    }

    pub fn into_runs(self) -> Vec<AccountRun<J>> {
        self.runs
    }
}

/// A batch's first round, and the later rounds of the accounts whose
/// commands were cut after a transfer.
pub struct Rounds<C> {
    pub first: Vec<AccountRun<C>>,
    pub later: Vec<VecDeque<AccountRun<C>>>,
}

/// Cuts each account's commands after every transfer but the last command.
/// The common case, no such transfer, costs no copy.
pub fn cut_into_rounds<C: Command>(runs: Vec<AccountRun<C>>) -> Rounds<C> {
    let mut rounds = Rounds {
        first: Vec::with_capacity(runs.len()),
        later: Vec::new(),
    };
    for run in runs {
        let cut_inside = run.jobs.iter().rev().skip(1).any(|(_, c)| c.is_transfer());
        if !cut_inside {
            rounds.first.push(run);
            continue;
        }
        let mut pieces = VecDeque::new();
        let mut current = Vec::new();
        for (index, command) in run.jobs {
            let ends_piece = command.is_transfer();
            current.push((index, command));
            if ends_piece {
                pieces.push_back(AccountRun {
                    account: run.account,
                    jobs: std::mem::take(&mut current),
                });
            }
        }
        if !current.is_empty() {
            pieces.push_back(AccountRun {
                account: run.account,
                jobs: current,
            });
        }
        if let Some(first) = pieces.pop_front() {
            rounds.first.push(first);
        }
        rounds.later.push(pieces);
    }
    rounds
}

/// Where a running batch sends its later rounds, and what it needs.
pub struct BatchContext {
    pub coordinator: Addr<Coordinator>,
    pub router: Router,
    pub log: Rc<ShardLog>,
}

/// One answer per command of the batch, as they come.
pub type Results<A> = Vec<Option<Result<A, LedgerError>>>;

/// Runs a batch whose first round was sent, to its end.
pub async fn run_batch<C: Command>(
    first: RoundReplies<C>,
    mut later: Vec<VecDeque<AccountRun<C>>>,
    mut results: Results<C::Answer>,
    context: BatchContext,
) -> Vec<Result<C::Answer, LedgerError>> {
    finish_round(first, &mut results, &context).await;
    loop {
        let runs: Vec<_> = later.iter_mut().filter_map(VecDeque::pop_front).collect();
        if runs.is_empty() {
            break;
        }
        let round = send_through(&context.coordinator, runs);
        finish_round(round, &mut results, &context).await;
    }
    results.into_iter().map(answered).collect()
}

/// Sends runs to their actors through the coordinator's directory.
fn send_through<J: Job>(
    coordinator: &Addr<Coordinator>,
    runs: Vec<AccountRun<J>>,
) -> RoundReplies<J>
where
    Coordinator: Handler<Dispatch<J>>,
{
    let jobs = runs.iter().map(|r| r.jobs.len()).sum();
    let round = RoundReplies::expecting(runs.len(), jobs);
    let messages = runs
        .into_iter()
        .map(|run| (run.account, RunCommands::new(run.jobs, round.clone())))
        .collect();
    coordinator.do_send(Dispatch(messages));
    round
}

/// Waits for step 1, flushes the log, runs steps 2 and 3 of the held
/// transfers, and answers the round once its events are durable.
async fn finish_round<C: Command>(
    round: RoundReplies<C>,
    results: &mut Results<C::Answer>,
    context: &BatchContext,
) {
    let replies = round.all().await;
    let mut answered: Vec<(usize, Result<C::Answer, LedgerError>)> =
        Vec::with_capacity(replies.len());
    let mut held: Vec<(usize, Held<C::Answer>)> = Vec::new();
    for (index, reply) in replies {
        match reply {
            Ok(Ran::Done(answer)) => answered.push((index, Ok(answer))),
            Ok(Ran::Held(transfer)) => held.push((index, transfer)),
            Err(refused) => answered.push((index, Err(refused))),
        }
    }
    // Hand this round's events to the journal now, before any receiver logs
    // a transfer: a transfer's event must follow, in the log, the events its
    // source's funds came from (a deposit earlier in this very round, say),
    // or replay would find the source short. Handing over is synchronous;
    // durability is awaited below.
    let durable = context.log.flush();
    if !held.is_empty() {
        answered.extend(finish_transfers(held, context).await);
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
/// receiving shard with all its credits, then the finishes at the sources,
/// one message per source account.
async fn finish_transfers<A>(
    held: Vec<(usize, Held<A>)>,
    context: &BatchContext,
) -> Vec<(usize, Result<A, LedgerError>)> {
    let mut credits = context.router.scatter(held.len());
    for (position, (_, h)) in held.iter().enumerate() {
        let t = &h.transfer;
        let credit = ReceiveTransfer {
            tx: t.tx,
            currency: t.currency,
            amount: t.amount,
            key: t.key.clone(),
            metadata: t.metadata.clone(),
        };
        credits.push(position, t.to, credit);
    }
    let mut received: Vec<Option<_>> = std::iter::repeat_with(|| None).take(held.len()).collect();
    context
        .router
        .receive_transfers(credits, &mut received)
        .await;
    let mut finishes = Grouping::with_capacity(held.len());
    let mut answered = Vec::new();
    // What each finish answers: the transfer's position and how its receipt
    // becomes the answer; `None` for a refused transfer, whose caller
    // already has the receiver's reason.
    let mut waiting: Vec<Waiting<A>> = Vec::with_capacity(held.len());
    for (position, ((index, h), received)) in held.into_iter().zip(received).enumerate() {
        let tx = h.transfer.tx;
        let received = match answered_credit(received) {
            // Unknown whether the receiver credited (it was stopping): keep
            // the funds held. The log decides on restart, where both sides
            // of the one transfer event apply, or neither.
            Err(LedgerError::ShuttingDown) => {
                answered.push((index, Err(LedgerError::ShuttingDown)));
                waiting.push(None);
                continue;
            }
            // Refused at the receiver: the source gets its funds back.
            Err(refused) => {
                answered.push((index, Err(refused)));
                waiting.push(None);
                None
            }
            Ok(at) => {
                waiting.push(Some((index, h.answer)));
                Some(at)
            }
        };
        finishes.push(tx.account(), (position, FinishTransfer { tx, received }));
    }
    let round = send_through(&context.coordinator, finishes.into_runs());
    for (position, finished) in round.all().await {
        if let Some(Some((index, answer))) = waiting.get(position) {
            answered.push((*index, finished.map(*answer)));
        }
    }
    answered
}

/// Where a finished transfer's answer goes: its batch position, and how
/// its receipt becomes the answer.
type Waiting<A> = Option<(usize, fn(Transfer) -> A)>;

/// A receiver's answer: the stamp it logged the transfer with, or why not.
fn answered_credit(credit: Option<Result<UnixMs, LedgerError>>) -> Result<UnixMs, LedgerError> {
    credit.unwrap_or(Err(LedgerError::ShuttingDown))
}
