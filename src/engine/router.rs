//! The one router between callers and shards: it splits work by the shard
//! of each item's account ([`Scatter`]), sends each shard its share in one
//! message, and puts every answer back at its item's position.
//!
//! Used by the `Ledger` handle (batches, single operations, reads, the
//! per-shard counts, gauges and exports), by the payout actor (its claims
//! and settlements), by a running batch for the receiving side of its
//! transfers, and by a shard's log for the fee account's side of its
//! completions. Commands pass [admission](crate::engine::admission) here, a
//! shard's share all or none, whoever sends them; transfer credits do not
//! (they belong to an operation admitted at its source).

use std::future::Future;
use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use futures_util::future::join_all;

use crate::domain::ids::{shard_of, AccountId};
use crate::domain::time::UnixMs;
use crate::engine::admission::Admission;
use crate::engine::command::{CollectFee, Command, ReceiveTransfer};
use crate::engine::coordinator::Coordinator;
use crate::engine::messages::{AccountRead, Ask, CollectFees, ExecuteBatch, ReceiveTransfers};
use crate::error::LedgerError;

/// Items split by the shard of their account, each with its position in
/// the whole.
pub struct Scatter<T> {
    parts: Vec<Part<T>>,
}

struct Part<T> {
    positions: Vec<usize>,
    items: Vec<(AccountId, T)>,
}

impl<T> Scatter<T> {
    /// Room for about `items` items, spread evenly over `shards` (each
    /// shard a quarter more than its even share, for the unevenness of real
    /// batches), so a batch's split does not grow as it is made.
    pub fn new(shards: usize, items: usize) -> Self {
        let even = items.div_ceil(shards.max(1));
        let per_shard = even.saturating_add(even / 4);
        Self {
            parts: (0..shards)
                .map(|_| Part {
                    positions: Vec::with_capacity(per_shard),
                    items: Vec::with_capacity(per_shard),
                })
                .collect(),
        }
    }

    /// Adds the item at `position` for `account`.
    pub fn push(&mut self, position: usize, account: AccountId, item: T) {
        let shards = self.parts.len();
        if let Some(part) = self.parts.get_mut(shard_of(account, shards)) {
            part.positions.push(position);
            part.items.push((account, item));
        }
    }

    /// Sends every shard's share with `send` (all shards at once) and puts
    /// each answer at its item's position in `answers`.
    async fn gather<R, F, Fut>(self, answers: &mut [Option<R>], mut send: F)
    where
        F: FnMut(usize, Vec<(AccountId, T)>) -> Fut,
        Fut: Future<Output = Vec<R>>,
    {
        let sends = self
            .parts
            .into_iter()
            .enumerate()
            .filter(|(_, part)| !part.items.is_empty())
            .map(|(shard, part)| {
                let sent = send(shard, part.items);
                async move { (part.positions, sent.await) }
            });
        for (positions, replies) in join_all(sends).await {
            for (position, reply) in positions.into_iter().zip(replies) {
                if let Some(answer) = answers.get_mut(position) {
                    *answer = Some(reply);
                }
            }
        }
    }
}

/// The shards' coordinators and their admission; cheap to clone.
#[derive(Clone)]
pub struct Router {
    coordinators: Arc<[Addr<Coordinator>]>,
    admission: Arc<Admission>,
}

impl Router {
    pub fn new(coordinators: Vec<Addr<Coordinator>>, in_flight_ops_max: usize) -> Self {
        let admission = Admission::new(coordinators.len(), in_flight_ops_max);
        Self {
            coordinators: coordinators.into(),
            admission: Arc::new(admission),
        }
    }

    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// An empty split over this ledger's shards, with room for about
    /// `items` items.
    pub fn scatter<T>(&self, items: usize) -> Scatter<T> {
        Scatter::new(self.coordinators.len(), items)
    }

    /// Runs commands on their accounts' shards, each shard's share
    /// admitted first; every answer lands at its command's position.
    pub async fn execute<C: Command>(
        &self,
        commands: Scatter<C>,
        answers: &mut [Option<Result<C::Answer, LedgerError>>],
    ) {
        commands
            .gather(answers, |shard, ops| self.execute_on(shard, ops))
            .await;
    }

    /// Runs commands, all given, on their accounts' shards; one answer
    /// each, in order.
    pub async fn execute_all<C: Command>(
        &self,
        commands: Vec<(AccountId, C)>,
    ) -> Vec<Result<C::Answer, LedgerError>> {
        let count = commands.len();
        let mut scatter = self.scatter(count);
        for (position, (account, command)) in commands.into_iter().enumerate() {
            scatter.push(position, account, command);
        }
        let mut answers: Vec<Option<_>> = std::iter::repeat_with(|| None).take(count).collect();
        self.execute(scatter, &mut answers).await;
        answers.into_iter().map(answered).collect()
    }

    /// Runs the engine's own large batches (a payout's claims and
    /// settlements) in groups of at most half a shard's in-flight bound, one
    /// group after another; one answer each, in order. One group the size
    /// of a payout could exceed the bound and be refused every time; half
    /// leaves room for callers meanwhile.
    pub async fn execute_in_groups<C: Command>(
        &self,
        commands: Vec<(AccountId, C)>,
    ) -> Vec<Result<C::Answer, LedgerError>> {
        let group = (self.admission.limit() / 2).max(1);
        let mut answers = Vec::with_capacity(commands.len());
        let mut commands = commands.into_iter().peekable();
        while commands.peek().is_some() {
            let next: Vec<_> = commands.by_ref().take(group).collect();
            answers.extend(self.execute_all(next).await);
        }
        answers
    }

    /// Runs one command on its account's shard.
    pub async fn execute_one<C: Command>(
        &self,
        account: AccountId,
        command: C,
    ) -> Result<C::Answer, LedgerError> {
        let shard = shard_of(account, self.coordinators.len());
        let mut answers = self.execute_on(shard, vec![(account, command)]).await;
        answered(answers.pop())
    }

    /// Asks one account, admitted like any operation.
    pub async fn ask<Q: AccountRead>(
        &self,
        account: AccountId,
        query: Q,
    ) -> Result<Q::Output, LedgerError> {
        let shard = shard_of(account, self.coordinators.len());
        let _admitted = self.admission.admit(shard, 1)?;
        let coordinator = self.coordinator(shard)?;
        let asked = coordinator.send(Ask { account, query }).await;
        asked.unwrap_or(Err(LedgerError::ShuttingDown))
    }

    /// Credits the receiving sides of held transfers on their shards; one
    /// answer each (the stamp its event was logged with), at its position.
    pub async fn receive_transfers(
        &self,
        credits: Scatter<ReceiveTransfer>,
        answers: &mut [Option<Result<UnixMs, LedgerError>>],
    ) {
        credits
            .gather(answers, |shard, credits| async move {
                let count = credits.len();
                let Ok(coordinator) = self.coordinator(shard) else {
                    return refused(count, &LedgerError::ShuttingDown);
                };
                let answers = coordinator.send(ReceiveTransfers { credits }).await;
                counted(count, answers)
            })
            .await;
    }

    /// Credits the fee accounts' sides of durable completions, each on its
    /// account's shard; returns once every shard applied its share (or
    /// stopped).
    pub async fn collect_fees(&self, credits: Vec<(AccountId, CollectFee)>) {
        let shards = self.coordinators.len();
        let mut by_shard: Vec<Vec<(AccountId, CollectFee)>> =
            (0..shards).map(|_| Vec::new()).collect();
        for (account, credit) in credits {
            if let Some(share) = by_shard.get_mut(shard_of(account, shards)) {
                share.push((account, credit));
            }
        }
        let sends = by_shard
            .into_iter()
            .zip(self.coordinators.iter())
            .filter(|(credits, _)| !credits.is_empty())
            .map(|(credits, coordinator)| coordinator.send(CollectFees { credits }));
        for sent in join_all(sends).await {
            if sent.is_err() {
                tracing::warn!("a shard stopped before crediting collected fees: the log holds them, a restart applies them");
            }
        }
    }

    /// Sends `message()` to every shard; the answers in shard order.
    pub async fn each_shard<M>(
        &self,
        message: impl Fn() -> M,
    ) -> Result<Vec<M::Result>, LedgerError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Coordinator: Handler<M>,
        <Coordinator as Actor>::Context: ToEnvelope<Coordinator, M>,
    {
        let sends = self.coordinators.iter().map(|c| c.send(message()));
        join_all(sends)
            .await
            .into_iter()
            .map(|answer| answer.map_err(|_| LedgerError::ShuttingDown))
            .collect()
    }

    fn coordinator(&self, shard: usize) -> Result<&Addr<Coordinator>, LedgerError> {
        self.coordinators.get(shard).ok_or(LedgerError::Internal {
            reason: format!("no shard {shard}"),
        })
    }

    /// One shard's share of commands: admitted (all or none), then run.
    async fn execute_on<C: Command>(
        &self,
        shard: usize,
        ops: Vec<(AccountId, C)>,
    ) -> Vec<Result<C::Answer, LedgerError>> {
        let count = ops.len();
        let admitted = match self.admission.admit(shard, count) {
            Ok(admitted) => admitted,
            Err(error) => return refused(count, &error),
        };
        let coordinator = match self.coordinator(shard) {
            Ok(coordinator) => coordinator,
            Err(error) => return refused(count, &error),
        };
        let answers = coordinator.send(ExecuteBatch { ops }).await;
        drop(admitted);
        counted(count, answers)
    }
}

/// `count` answers from a shard: its own, or, if it answered none (it
/// stopped) or not one per item (a bug), a refusal for each.
fn counted<R>(
    count: usize,
    answers: Result<Vec<Result<R, LedgerError>>, MailboxError>,
) -> Vec<Result<R, LedgerError>> {
    match answers {
        Ok(answers) if answers.len() == count => answers,
        Ok(answers) => refused(
            count,
            &LedgerError::Internal {
                reason: format!("a shard answered {} of {count} operations", answers.len()),
            },
        ),
        Err(_) => refused(count, &LedgerError::ShuttingDown),
    }
}

fn refused<R>(count: usize, error: &LedgerError) -> Vec<Result<R, LedgerError>> {
    (0..count).map(|_| Err(error.clone())).collect()
}

/// An answer that should be there.
pub fn answered<R>(answer: Option<Result<R, LedgerError>>) -> Result<R, LedgerError> {
    answer.unwrap_or_else(|| {
        Err(LedgerError::Internal {
            reason: "an operation got no answer".into(),
        })
    })
}
