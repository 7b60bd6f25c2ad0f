//! The shard coordinator: owns the shard's account directory and routes
//! every operation for its accounts to their actors.
//!
//! One coordinator runs on each shard's Arbiter (one thread); the account
//! actors it spawns live on the same thread. It spawns an account's actor on
//! the first operation that can create the account (a deposit or incoming
//! transfer); anything else aimed at an unknown account is answered against
//! an empty state, so made-up ids cost no memory. Transfers whose receiving
//! account lives on another shard go through that shard's coordinator.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use actix::prelude::*;
use futures_util::future::join_all;

use crate::account::AccountState;
use crate::actors::account::{answer, execute, AccountActor};
use crate::error::LedgerError;
use crate::ids::{AccountId, IdempotencyKey, TransactionId};
use crate::journal::Journal;
use crate::messages::{
    AccountCommand, AccountReply, AskAccount, ExecuteBatch, ExecuteCommands, ExportAccounts,
    ExportState, ReceiveTransfer, WithdrawalQueued,
};
use crate::money::{Currency, Units};
use crate::receipts::Outcome;

/// The shard an account lives on: a fixed mix of its id, so consecutive ids
/// spread evenly.
pub fn shard_of(account: AccountId, shards: usize) -> usize {
    // splitmix64's finalizer.
    let mut x = account;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % shards.max(1) as u64) as usize
}

/// Every coordinator's address, filled once all shards have started (each
/// coordinator needs the others to route transfers).
pub type Peers = Arc<OnceLock<Vec<Addr<Coordinator>>>>;

pub struct Coordinator {
    /// Accounts with a running actor.
    accounts: HashMap<AccountId, Addr<AccountActor>>,
    /// Accounts known (recovered from disk) whose actor is not running: it
    /// is started, with this state, on the account's next command. Keeps
    /// opening a ledger with millions of accounts cheap.
    dormant: HashMap<AccountId, AccountState>,
    journal: Journal,
    pending_withdrawals_max: u32,
    peers: Peers,
    payouts: Option<Recipient<WithdrawalQueued>>,
}

impl Coordinator {
    pub fn new(
        journal: Journal,
        pending_withdrawals_max: u32,
        peers: Peers,
        recovered: Vec<AccountState>,
        payouts: Option<Recipient<WithdrawalQueued>>,
    ) -> Self {
        Self {
            accounts: HashMap::new(),
            dormant: recovered.into_iter().map(|a| (a.id(), a)).collect(),
            journal,
            pending_withdrawals_max,
            peers,
            payouts,
        }
    }

    fn spawn_account(&mut self, account: AccountId) -> Addr<AccountActor> {
        let journal = self.journal.clone();
        let max = self.pending_withdrawals_max;
        let payouts = self.payouts.clone();
        let dormant = &mut self.dormant;
        self.accounts
            .entry(account)
            .or_insert_with(|| {
                let state = dormant
                    .remove(&account)
                    .unwrap_or_else(|| AccountState::new(account));
                AccountActor::new(state, journal, max, payouts).start()
            })
            .clone()
    }

    fn is_known(&self, account: AccountId) -> bool {
        self.accounts.contains_key(&account) || self.dormant.contains_key(&account)
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
        let mut events = Vec::new();
        let reply = execute(
            &mut empty,
            command,
            self.pending_withdrawals_max,
            &mut events,
        )?;
        if !events.is_empty() {
            return Err(LedgerError::Internal {
                reason: format!("a command on unknown account {account} produced events"),
            });
        }
        into_outcome(reply)
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;
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
    indices: Vec<usize>,
    commands: Vec<AccountCommand>,
}

/// Runs a batch: per account, in order; accounts in parallel.
impl Handler<ExecuteBatch> for Coordinator {
    type Result = ResponseFuture<Vec<Result<Outcome, LedgerError>>>;

    fn handle(&mut self, msg: ExecuteBatch, _ctx: &mut Self::Context) -> Self::Result {
        let mut results: Vec<Option<Result<Outcome, LedgerError>>> =
            std::iter::repeat_with(|| None)
                .take(msg.ops.len())
                .collect();
        let mut groups: HashMap<AccountId, AccountGroup> = HashMap::new();
        for (index, (account, command)) in msg.ops.into_iter().enumerate() {
            let known = self.is_known(account) || groups.contains_key(&account);
            if !known && !command.creates_account() {
                results[index] = Some(self.answer_unknown_account(account, command));
                continue;
            }
            let group = match groups.entry(account) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => entry.insert(AccountGroup {
                    actor: self.spawn_account(account),
                    indices: Vec::new(),
                    commands: Vec::new(),
                }),
            };
            group.indices.push(index);
            group.commands.push(command);
        }
        let peers = self.peers.clone();
        Box::pin(run_batch(groups.into_values().collect(), results, peers))
    }
}

/// Runs a batch in rounds. Each account's commands are cut after every
/// transfer, because a transfer only ends (at its source) after its
/// receiver answered: the source's later commands must wait for that to
/// keep the batch's order per account. Batches without transfers, or with
/// one transfer last per account, run in a single round.
async fn run_batch(
    groups: Vec<AccountGroup>,
    mut results: Vec<Option<Result<Outcome, LedgerError>>>,
    peers: Peers,
) -> Vec<Result<Outcome, LedgerError>> {
    let mut queues: Vec<std::collections::VecDeque<AccountGroup>> =
        groups.into_iter().map(split_after_transfers).collect();
    loop {
        let round: Vec<AccountGroup> = queues.iter_mut().filter_map(|q| q.pop_front()).collect();
        if round.is_empty() {
            break;
        }
        run_round(round, &mut results, &peers).await;
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
fn split_after_transfers(group: AccountGroup) -> std::collections::VecDeque<AccountGroup> {
    let mut runs = std::collections::VecDeque::new();
    // The common case, no transfer before the last command: one run, the
    // group as it is, without copying its commands.
    let cut_inside = group
        .commands
        .iter()
        .rev()
        .skip(1)
        .any(|c| matches!(c, AccountCommand::HoldTransfer { .. }));
    if !cut_inside {
        runs.push_back(group);
        return runs;
    }
    let mut current = AccountGroup {
        actor: group.actor.clone(),
        indices: Vec::new(),
        commands: Vec::new(),
    };
    for (index, command) in group.indices.into_iter().zip(group.commands) {
        let ends_run = matches!(command, AccountCommand::HoldTransfer { .. });
        current.indices.push(index);
        current.commands.push(command);
        if ends_run {
            let next = AccountGroup {
                actor: group.actor.clone(),
                indices: Vec::new(),
                commands: Vec::new(),
            };
            runs.push_back(std::mem::replace(&mut current, next));
        }
    }
    if !current.commands.is_empty() {
        runs.push_back(current);
    }
    runs
}

/// Step 1 on every account of the round, then the receiving side of each
/// transfer held in step 1, then step 3 back at each transfer's source.
async fn run_round(
    groups: Vec<AccountGroup>,
    results: &mut [Option<Result<Outcome, LedgerError>>],
    peers: &Peers,
) {
    let mut held: Vec<PendingTransfer> = Vec::new();
    let sends = groups.into_iter().map(|group| {
        let holds: Vec<_> = group.commands.iter().map(transfer_args).collect();
        let reply = group.actor.send(ExecuteCommands {
            commands: group.commands,
        });
        async move { (group.actor, group.indices, holds, reply.await) }
    });
    for (actor, indices, holds, replies) in join_all(sends).await {
        let Ok(replies) = replies else {
            for index in indices {
                results[index] = Some(Err(LedgerError::ShuttingDown));
            }
            continue;
        };
        for ((index, hold), reply) in indices.into_iter().zip(holds).zip(replies) {
            match (reply, hold) {
                (Ok(AccountReply::TransferHeld(tx)), Some((to, currency, amount, key))) => held
                    .push(PendingTransfer {
                        index,
                        source: actor.clone(),
                        tx,
                        to,
                        currency,
                        amount,
                        key,
                    }),
                (reply, _) => results[index] = Some(reply.and_then(into_outcome)),
            }
        }
    }

    if !held.is_empty() {
        let receipts = held.iter().map(|t| receive(peers, t));
        let received = join_all(receipts).await;
        let finishes = held
            .into_iter()
            .zip(received)
            .map(|(t, received)| async move {
                let outcome = match received {
                    // Unknown whether the receiver credited (it was stopping):
                    // keep the funds held. The log decides on restart, where both
                    // sides of the one transfer event apply, or neither.
                    Err(LedgerError::ShuttingDown) => Err(LedgerError::ShuttingDown),
                    received => {
                        let command = AccountCommand::FinishTransfer {
                            tx: t.tx,
                            received: received.is_ok(),
                        };
                        match t
                            .source
                            .send(ExecuteCommands {
                                commands: vec![command],
                            })
                            .await
                        {
                            Ok(mut replies) => match (received, replies.pop()) {
                                (Err(refused), _) => Err(refused),
                                (Ok(()), Some(reply)) => reply.and_then(into_outcome),
                                (Ok(()), None) => Err(LedgerError::Internal {
                                    reason: "finishing a transfer got no reply".into(),
                                }),
                            },
                            Err(_) => Err(LedgerError::ShuttingDown),
                        }
                    }
                };
                (t.index, outcome)
            });
        for (index, outcome) in join_all(finishes).await {
            results[index] = Some(outcome);
        }
    }
}

fn transfer_args(
    command: &AccountCommand,
) -> Option<(AccountId, Currency, Units, Option<IdempotencyKey>)> {
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

/// Asks the receiving account's coordinator to credit a held transfer.
async fn receive(peers: &Peers, t: &PendingTransfer) -> Result<(), LedgerError> {
    let Some(peers) = peers.get() else {
        return Err(LedgerError::Internal {
            reason: "shard coordinators are not wired to each other".into(),
        });
    };
    let Some(coordinator) = peers.get(shard_of(t.to, peers.len())) else {
        return Err(LedgerError::Internal {
            reason: "no coordinator for the receiving shard".into(),
        });
    };
    let request = ReceiveTransfer {
        to: t.to,
        command: AccountCommand::ReceiveTransfer {
            tx: t.tx,
            currency: t.currency,
            amount: t.amount,
            key: t.key.clone(),
        },
    };
    coordinator
        .send(request)
        .await
        .unwrap_or(Err(LedgerError::ShuttingDown))
}

/// Credits the receiving side of a transfer on one of this shard's accounts.
impl Handler<ReceiveTransfer> for Coordinator {
    type Result = ResponseFuture<Result<(), LedgerError>>;

    fn handle(&mut self, msg: ReceiveTransfer, _ctx: &mut Self::Context) -> Self::Result {
        let actor = self.spawn_account(msg.to);
        Box::pin(async move {
            let mut replies = actor
                .send(ExecuteCommands {
                    commands: vec![msg.command],
                })
                .await
                .map_err(|_| LedgerError::ShuttingDown)?;
            match replies.pop() {
                Some(Ok(AccountReply::TransferReceived)) => Ok(()),
                Some(Err(refused)) => Err(refused),
                other => Err(LedgerError::Internal {
                    reason: format!("receiving a transfer got {other:?}"),
                }),
            }
        })
    }
}

/// Answers a read-only question; unknown accounts answer as empty ones.
impl Handler<AskAccount> for Coordinator {
    type Result = ResponseFuture<Result<crate::messages::QueryReply, LedgerError>>;

    fn handle(&mut self, msg: AskAccount, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(poisoned) = self.journal.poisoned() {
            return Box::pin(async move { Err(poisoned) });
        }
        match self.accounts.get(&msg.account) {
            None => {
                let answered = match self.dormant.get(&msg.account) {
                    Some(state) => answer(state, &msg.query),
                    None => answer(&AccountState::new(msg.account), &msg.query),
                };
                Box::pin(async move { answered })
            }
            Some(actor) => {
                let asked = actor.send(msg);
                Box::pin(async move { asked.await.unwrap_or(Err(LedgerError::ShuttingDown)) })
            }
        }
    }
}

/// Copies out every account state of this shard.
impl Handler<ExportAccounts> for Coordinator {
    type Result = ResponseFuture<Result<Vec<AccountState>, LedgerError>>;

    fn handle(&mut self, _msg: ExportAccounts, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(poisoned) = self.journal.poisoned() {
            return Box::pin(async move { Err(poisoned) });
        }
        let exports: Vec<_> = self
            .accounts
            .values()
            .map(|a| a.send(ExportState))
            .collect();
        let mut states: Vec<AccountState> = self.dormant.values().cloned().collect();
        Box::pin(async move {
            for export in join_all(exports).await {
                match export {
                    Ok(state) => states.push(state),
                    Err(_) => return Err(LedgerError::ShuttingDown),
                }
            }
            Ok(states)
        })
    }
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
