//! Running one batch on a shard, in rounds.
//!
//! A batch's commands are grouped per account, in order, and each group
//! goes to its account's actor as one message. A round is: step 1 on every
//! account of the round, one flush of the shard's log, the receiving side
//! of each transfer held in step 1 (on whichever shard the receiver lives),
//! then step 3 back at each transfer's source. The round's answers are
//! given only once its events are durable.
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
use futures_util::future::join_all;

use crate::domain::ids::{shard_of, AccountId, IdempotencyKey, TransactionId};
use crate::domain::money::{Currency, Units};
use crate::domain::receipts::Outcome;
use crate::engine::coordinator::{Coordinator, Peers};
use crate::engine::messages::{AccountCommand, AccountReply, ReceiveTransfers, ShardBatch};
use crate::engine::round::{RoundReplies, RunCommands};
use crate::engine::shard_log::ShardLog;
use crate::error::LedgerError;

/// One account's commands of a round, with their positions in the batch.
pub struct AccountRun {
    pub account: AccountId,
    pub commands: Vec<(usize, AccountCommand)>,
}

/// Coordinator → itself: send these commands to their accounts' actors
/// (a round after a batch's first). Dropped unhandled (the coordinator
/// stopped), each command answers `shutting_down`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Dispatch(pub Vec<(AccountId, RunCommands)>);

/// Commands gathered per account, in order of each account's first command.
#[derive(Default)]
pub struct Grouping {
    runs: Vec<AccountRun>,
    run_of: foldhash::HashMap<AccountId, usize>,
}

impl Grouping {
    pub fn contains(&self, account: AccountId) -> bool {
        self.run_of.contains_key(&account)
    }

    pub fn push(&mut self, account: AccountId, command: (usize, AccountCommand)) {
        let runs = &mut self.runs;
        let run = *self.run_of.entry(account).or_insert_with(|| {
            runs.push(AccountRun {
                account,
                commands: Vec::new(),
            });
            runs.len() - 1
        });
        runs[run].commands.push(command);
    }

    pub fn into_runs(self) -> Vec<AccountRun> {
        self.runs
    }
}

/// A batch's first round, and the later rounds of the accounts whose
/// commands were cut after a transfer.
pub struct Rounds {
    pub first: Vec<AccountRun>,
    pub later: Vec<VecDeque<AccountRun>>,
}

/// Cuts each account's commands after every transfer but the last command.
/// The common case, no such transfer, costs no copy.
pub fn cut_into_rounds(runs: Vec<AccountRun>) -> Rounds {
    let mut rounds = Rounds {
        first: Vec::with_capacity(runs.len()),
        later: Vec::new(),
    };
    for run in runs {
        let cut_inside = run
            .commands
            .iter()
            .rev()
            .skip(1)
            .any(|(_, c)| is_transfer(c));
        if !cut_inside {
            rounds.first.push(run);
            continue;
        }
        let mut pieces = VecDeque::new();
        let mut current = Vec::new();
        for (index, command) in run.commands {
            let ends_piece = is_transfer(&command);
            current.push((index, command));
            if ends_piece {
                pieces.push_back(AccountRun {
                    account: run.account,
                    commands: std::mem::take(&mut current),
                });
            }
        }
        if !current.is_empty() {
            pieces.push_back(AccountRun {
                account: run.account,
                commands: current,
            });
        }
        if let Some(first) = pieces.pop_front() {
            rounds.first.push(first);
        }
        rounds.later.push(pieces);
    }
    rounds
}

fn is_transfer(command: &AccountCommand) -> bool {
    matches!(command, AccountCommand::HoldTransfer { .. })
}

type TransferArgs = (AccountId, Currency, Units, Option<IdempotencyKey>);

/// What step 2 needs of each transfer of a round, by batch position.
pub type Transfers = foldhash::HashMap<usize, TransferArgs>;

/// The transfers among a round's commands.
pub fn transfers_of(runs: &[AccountRun]) -> Transfers {
    let mut transfers = Transfers::default();
    for run in runs {
        for (index, command) in &run.commands {
            if let AccountCommand::HoldTransfer {
                to,
                currency,
                amount,
                key,
            } = command
            {
                transfers.insert(*index, (*to, *currency, *amount, key.clone()));
            }
        }
    }
    transfers
}

/// A round on its way: its replies, and its transfers.
pub struct SentRound {
    pub replies: RoundReplies,
    pub transfers: Transfers,
}

/// Where a running batch sends its later rounds, and what it needs.
pub struct BatchContext {
    pub coordinator: Addr<Coordinator>,
    pub peers: Peers,
    pub log: Rc<ShardLog>,
}

pub type Results = Vec<Option<Result<Outcome, LedgerError>>>;

/// Runs a batch whose first round was sent, to its end.
pub async fn run_batch(
    first: SentRound,
    mut later: Vec<VecDeque<AccountRun>>,
    mut results: Results,
    context: BatchContext,
) -> Vec<Result<Outcome, LedgerError>> {
    finish_round(first, &mut results, &context).await;
    loop {
        let runs: Vec<AccountRun> = later.iter_mut().filter_map(VecDeque::pop_front).collect();
        if runs.is_empty() {
            break;
        }
        let transfers = transfers_of(&runs);
        let replies = send_through(&context.coordinator, runs);
        finish_round(SentRound { replies, transfers }, &mut results, &context).await;
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

/// Sends runs to their actors through the coordinator's directory.
fn send_through(coordinator: &Addr<Coordinator>, runs: Vec<AccountRun>) -> RoundReplies {
    let commands = runs.iter().map(|r| r.commands.len()).sum();
    let round = RoundReplies::expecting(runs.len(), commands);
    let messages = runs
        .into_iter()
        .map(|run| (run.account, RunCommands::new(run.commands, round.clone())))
        .collect();
    coordinator.do_send(Dispatch(messages));
    round
}

/// The held transfer's receiving side, waiting to be asked.
struct PendingTransfer {
    index: usize,
    tx: TransactionId,
    to: AccountId,
    currency: Currency,
    amount: Units,
    key: Option<IdempotencyKey>,
}

/// Waits for step 1, flushes the log, runs steps 2 and 3 of the held
/// transfers, and answers the round once its events are durable.
async fn finish_round(round: SentRound, results: &mut Results, context: &BatchContext) {
    let SentRound {
        replies,
        mut transfers,
    } = round;
    let replies = replies.all().await;
    let mut answered: Vec<(usize, Result<Outcome, LedgerError>)> =
        Vec::with_capacity(replies.len());
    let mut held: Vec<PendingTransfer> = Vec::new();
    for (index, reply) in replies {
        match (reply, transfers.remove(&index)) {
            (Ok(AccountReply::TransferHeld(tx)), Some((to, currency, amount, key))) => {
                held.push(PendingTransfer {
                    index,
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
async fn finish_transfers(
    held: Vec<PendingTransfer>,
    context: &BatchContext,
) -> Vec<(usize, Result<Outcome, LedgerError>)> {
    // A refused transfer's finish answers to nobody (its caller already has
    // the receiver's reason): it runs under a position nobody reads.
    const UNANSWERED: usize = usize::MAX;
    let received = receive_all(&held, &context.peers).await;
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
        finishes.push(t.tx.account(), (index, command));
    }
    let round = send_through(&context.coordinator, finishes.into_runs());
    for (index, finished) in round.all().await {
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

/// Turns an account's reply into what the caller of a batch sees.
pub fn into_outcome(reply: AccountReply) -> Result<Outcome, LedgerError> {
    match reply {
        AccountReply::Deposited(d) => Ok(Outcome::Deposited(d)),
        AccountReply::Withdrawal(w) => Ok(Outcome::Withdrawal(w)),
        AccountReply::Transferred(t) => Ok(Outcome::Transferred(t)),
        other => Err(LedgerError::Internal {
            reason: format!("unexpected account reply {other:?}"),
        }),
    }
}
