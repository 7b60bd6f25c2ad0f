//! The payout actor: pays pending withdrawals through the payment service
//! (phases 2 and 3), and owns the payout records.
//!
//! A run first reconciles every payout still waiting for an answer (after a
//! restart, those left processing), then pays the queued withdrawals:
//! grouped by currency and split by the service's item limit (batched), or
//! one payout each (immediate). For a new payout it
//! 1. claims each item at its account (pending → processing; an item
//!    cancelled or settled meanwhile simply drops out),
//! 2. logs `PayoutSubmitted` and waits until it is durable,
//! 3. calls `submit`, and settles each answered item on its own: paid →
//!    completed, failed → released to available, pending → waits,
//! 4. logs `PayoutItemsSettled`.
//!
//! An unknown outcome (timeout, lost response, 5xx) never releases anything
//! and never mints a new payout id: the payout is retried under the same id,
//! first by asking `status` (NotFound means the service never got it, so it
//! is submitted again), with bounded exponential backoff. Runs are atomic
//! (one at a time); new withdrawals queue meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;

use crate::actors::coordinator::{shard_of, Coordinator, Peers};
use crate::error::LedgerError;
use crate::event::{Event, ItemOutcome};
use crate::ids::{AccountId, TransactionId};
use crate::journal::Journal;
use crate::messages::{
    AccountCommand, ExecuteBatch, GetPayouts, RunPayouts, ShardBatch, WithdrawalQueued,
};
use crate::money::{Currency, CurrencyCode, Units};
use crate::payment::{ItemStatus, PaymentError, PaymentService, Payout, PayoutItem, PayoutReport};
use crate::payouts::{
    apply_payout_event, retry_backoff, PayoutMode, PayoutRecord, PayoutState, PayoutView,
};
use crate::receipts::Outcome;
use crate::withdrawal::TransitionAction;

/// How often the actor checks for payouts whose retry is due.
const RETRY_CHECK_INTERVAL_MS: u64 = 250;

/// What a run needs, cloned into its future.
#[derive(Clone)]
struct Deps {
    service: Arc<dyn PaymentService>,
    peers: Peers,
    journal: Journal,
}

pub struct PayoutActor {
    mode: PayoutMode,
    deps: Deps,
    /// Durable pending withdrawals waiting for a payout, per currency, in
    /// arrival order.
    queue: BTreeMap<CurrencyCode, Vec<(TransactionId, Currency, Units)>>,
    payouts: BTreeMap<u64, PayoutRecord>,
    /// When an unsettled payout may next be retried.
    retry_at: HashMap<u64, Instant>,
    next_payout_id: u64,
}

impl PayoutActor {
    /// `payouts` are the recovered payout records, including those left
    /// processing; `pending` the recovered pending withdrawals.
    pub fn new(
        mode: PayoutMode,
        service: Arc<dyn PaymentService>,
        peers: Peers,
        journal: Journal,
        payouts: BTreeMap<u64, PayoutRecord>,
        pending: Vec<(TransactionId, Currency, Units)>,
    ) -> Self {
        let next_payout_id = payouts.keys().next_back().map_or(1, |id| id + 1);
        let mut actor = Self {
            mode,
            deps: Deps {
                service,
                peers,
                journal,
            },
            queue: BTreeMap::new(),
            payouts,
            retry_at: HashMap::new(),
            next_payout_id,
        };
        for (tx, currency, amount) in pending {
            actor.enqueue(tx, currency, amount);
        }
        actor
    }

    fn enqueue(&mut self, tx: TransactionId, currency: Currency, amount: Units) {
        self.queue
            .entry(currency.code)
            .or_default()
            .push((tx, currency, amount));
    }

    /// Turns the queue into new payout records (not yet claimed).
    fn plan(&mut self) -> Vec<PayoutRecord> {
        let per_payout = match self.mode {
            PayoutMode::Immediate => 1,
            _ => self.deps.service.max_items_per_payout().max(1),
        };
        let mut planned = Vec::new();
        for (_, items) in std::mem::take(&mut self.queue) {
            for chunk in items.chunks(per_payout) {
                let payout_id = self.next_payout_id;
                self.next_payout_id += 1;
                planned.push(PayoutRecord::new(
                    payout_id,
                    chunk[0].1,
                    chunk.iter().map(|(tx, _, amount)| (*tx, *amount)),
                ));
            }
        }
        planned
    }

    /// Takes a finished run's results into the records.
    fn absorb(&mut self, runs: Vec<RunResult>) -> Vec<PayoutView> {
        let now = Instant::now();
        let mut views = Vec::new();
        for run in runs {
            let Some(record) = run.record else { continue };
            let id = record.payout_id;
            if record.state() == PayoutState::Processing {
                self.retry_at
                    .insert(id, now + retry_backoff(record.attempts.max(1)));
            } else {
                self.retry_at.remove(&id);
            }
            views.push(record.view());
            self.payouts.insert(id, record);
        }
        views
    }
}

impl Actor for PayoutActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let PayoutMode::Batched { interval_secs } = self.mode {
            ctx.run_interval(Duration::from_secs(interval_secs.max(1)), |_, ctx| {
                ctx.notify(RunPayouts {
                    force_retries: false,
                    new_payouts: true,
                })
            });
        }
        ctx.run_interval(
            Duration::from_millis(RETRY_CHECK_INTERVAL_MS),
            |act, ctx| {
                let now = Instant::now();
                if act.retry_at.values().any(|&at| at <= now) {
                    ctx.notify(RunPayouts {
                        force_retries: false,
                        new_payouts: false,
                    })
                }
            },
        );
        // Reconcile payouts left processing by a crash before anything new.
        if self
            .payouts
            .values()
            .any(|p| p.state() == PayoutState::Processing)
        {
            ctx.notify(RunPayouts {
                force_retries: true,
                new_payouts: self.mode == PayoutMode::Immediate,
            });
        }
    }
}

/// A durable pending withdrawal to pay; in immediate mode, pays it now.
impl Handler<WithdrawalQueued> for PayoutActor {
    type Result = ();

    fn handle(&mut self, msg: WithdrawalQueued, ctx: &mut Self::Context) {
        self.enqueue(msg.tx, msg.currency, msg.amount);
        if self.mode == PayoutMode::Immediate {
            ctx.notify(RunPayouts {
                force_retries: false,
                new_payouts: true,
            });
        }
    }
}

/// Runs the payout job once; one run at a time.
impl Handler<RunPayouts> for PayoutActor {
    type Result = AtomicResponse<Self, Result<Vec<PayoutView>, LedgerError>>;

    fn handle(&mut self, msg: RunPayouts, _ctx: &mut Self::Context) -> Self::Result {
        let now = Instant::now();
        let retries: Vec<PayoutRecord> = self
            .payouts
            .values()
            .filter(|p| p.state() == PayoutState::Processing)
            .filter(|p| {
                msg.force_retries || self.retry_at.get(&p.payout_id).is_none_or(|&at| at <= now)
            })
            .cloned()
            .collect();
        let fresh = if msg.new_payouts {
            self.plan()
        } else {
            Vec::new()
        };
        let deps = self.deps.clone();
        AtomicResponse::new(Box::pin(
            actix::fut::wrap_future::<_, Self>(run(deps, retries, fresh))
                .map(|runs, act, _| Ok(act.absorb(runs))),
        ))
    }
}

/// One payout by id, or all (newest first).
impl Handler<GetPayouts> for PayoutActor {
    type Result = MessageResult<GetPayouts>;

    fn handle(&mut self, msg: GetPayouts, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(match msg.0 {
            Some(id) => self
                .payouts
                .get(&id)
                .map(PayoutRecord::view)
                .into_iter()
                .collect(),
            None => self
                .payouts
                .values()
                .rev()
                .map(PayoutRecord::view)
                .collect(),
        })
    }
}

/// The outcome of one payout in a run; `None` when nothing was claimed.
struct RunResult {
    record: Option<PayoutRecord>,
}

/// Retries first (reconciliation before new payouts), then new payouts;
/// payouts of one phase run concurrently.
async fn run(deps: Deps, retries: Vec<PayoutRecord>, fresh: Vec<PayoutRecord>) -> Vec<RunResult> {
    let mut results: Vec<RunResult> =
        join_all(retries.into_iter().map(|r| retry(deps.clone(), r))).await;
    results.extend(join_all(fresh.into_iter().map(|r| pay(deps.clone(), r))).await);
    results
}

/// A new payout: claim, log, submit, settle.
async fn pay(deps: Deps, mut record: PayoutRecord) -> RunResult {
    let claims = record
        .items
        .iter()
        .map(|i| {
            let command = AccountCommand::ClaimWithdrawal {
                tx: i.transaction_id,
                payout_id: record.payout_id,
            };
            (i.transaction_id.account(), command)
        })
        .collect();
    let claimed = execute_on_shards(&deps.peers, claims).await;
    // Items cancelled or settled since they were queued drop out.
    let mut kept = claimed.iter().map(Result::is_ok);
    record.items.retain(|_| kept.next().unwrap_or(false));
    if record.items.is_empty() {
        return RunResult { record: None };
    }
    let submitted = Event::PayoutSubmitted {
        payout_id: record.payout_id,
        currency: record.currency,
        items: record
            .items
            .iter()
            .map(|i| (i.transaction_id, i.amount))
            .collect(),
    };
    if let Err(error) = deps.journal.append(vec![submitted]).await {
        // Poisoned: the items stay processing; a restart reconciles them.
        record.last_error = Some(error.to_string());
        return RunResult {
            record: Some(record),
        };
    }
    record.attempts += 1;
    let answer = deps.service.submit(to_payout(&record)).await;
    answer_into(&deps, &mut record, answer).await;
    RunResult {
        record: Some(record),
    }
}

/// A payout waiting for an answer: ask for its status; if the service never
/// got it, submit it again under the same id.
async fn retry(deps: Deps, mut record: PayoutRecord) -> RunResult {
    record.attempts += 1;
    let answer = match deps.service.status(record.payout_id).await {
        Err(PaymentError::NotFound { .. }) => {
            record.attempts += 1;
            deps.service.submit(to_payout(&record)).await
        }
        other => other,
    };
    answer_into(&deps, &mut record, answer).await;
    RunResult {
        record: Some(record),
    }
}

fn to_payout(record: &PayoutRecord) -> Payout {
    Payout {
        payout_id: record.payout_id,
        currency: record.currency.code,
        items: record
            .items
            .iter()
            .map(|i| PayoutItem {
                transaction_id: i.transaction_id,
                account: i.transaction_id.account(),
                amount: record.currency.to_decimal(i.amount),
            })
            .collect(),
    }
}

/// Applies the service's answer: settles each answered item at its account,
/// then logs which items settled.
async fn answer_into(
    deps: &Deps,
    record: &mut PayoutRecord,
    answer: Result<PayoutReport, PaymentError>,
) {
    let answered: Vec<(TransactionId, ItemOutcome)> = match answer {
        Ok(report) => report
            .items
            .into_iter()
            .filter_map(|(tx, status)| match status {
                ItemStatus::Paid | ItemStatus::Returned { .. } => Some((tx, ItemOutcome::Paid)),
                ItemStatus::Failed { reason } => Some((tx, ItemOutcome::Failed { reason })),
                ItemStatus::Pending => None,
            })
            .collect(),
        // Definite: nothing was paid, so every item is released.
        Err(PaymentError::Rejected { reason }) => {
            let reason = format!("payout rejected by the payment service: {reason}");
            record.last_error = Some(reason.clone());
            record
                .unsettled()
                .map(|i| {
                    (
                        i.transaction_id,
                        ItemOutcome::Failed {
                            reason: reason.clone(),
                        },
                    )
                })
                .collect()
        }
        Err(unknown) => {
            record.last_error = Some(unknown.to_string());
            return;
        }
    };
    let unsettled: Vec<TransactionId> = record.unsettled().map(|i| i.transaction_id).collect();
    let answered: Vec<_> = answered
        .into_iter()
        .filter(|(tx, _)| unsettled.contains(tx))
        .collect();
    if answered.is_empty() {
        return;
    }
    let updates = answered
        .iter()
        .map(|(tx, outcome)| {
            let (action, reason) = match outcome {
                ItemOutcome::Paid => (TransitionAction::Complete, String::new()),
                ItemOutcome::Failed { reason } => (TransitionAction::Fail, reason.clone()),
            };
            (
                tx.account(),
                AccountCommand::UpdateWithdrawal {
                    tx: *tx,
                    action,
                    reason,
                },
            )
        })
        .collect();
    let applied = execute_on_shards(&deps.peers, updates).await;
    // An update refused because the host already reported another outcome
    // (external phase 3 racing the payout) still settles the item: the
    // account's state stands, and the refusal is kept for operators.
    let mut settled = Vec::new();
    for ((tx, outcome), result) in answered.into_iter().zip(applied) {
        match result {
            Ok(_) => settled.push((tx, outcome)),
            Err(LedgerError::InvalidTransition { from, .. }) => {
                record.last_error = Some(format!(
                    "item {tx}: the service said {outcome:?} but it was already {from}"
                ));
                settled.push((tx, outcome));
            }
            Err(other) => record.last_error = Some(format!("item {tx}: {other}")),
        }
    }
    if settled.is_empty() {
        return;
    }
    let event = Event::PayoutItemsSettled {
        payout_id: record.payout_id,
        items: settled,
    };
    if deps.journal.append(vec![event.clone()]).await.is_ok() {
        let mut records = BTreeMap::from([(record.payout_id, record.clone())]);
        if apply_payout_event(&mut records, &event).is_ok() {
            if let Some(updated) = records.remove(&record.payout_id) {
                *record = updated;
            }
        }
    }
}

/// Runs commands on their accounts' shards; one result each, in order.
pub async fn execute_on_shards(
    peers: &Peers,
    ops: Vec<(AccountId, AccountCommand)>,
) -> Vec<Result<Outcome, LedgerError>> {
    let Some(coordinators) = peers.get() else {
        return ops.iter().map(|_| Err(LedgerError::ShuttingDown)).collect();
    };
    let mut per_shard: Vec<ShardBatch> = coordinators
        .iter()
        .map(|_| (Vec::new(), Vec::new()))
        .collect();
    let count = ops.len();
    for (index, (account, command)) in ops.into_iter().enumerate() {
        let (indices, commands) = &mut per_shard[shard_of(account, coordinators.len())];
        indices.push(index);
        commands.push((account, command));
    }
    let mut results: Vec<Result<Outcome, LedgerError>> =
        (0..count).map(|_| Err(LedgerError::ShuttingDown)).collect();
    let sends = per_shard
        .into_iter()
        .zip(coordinators.iter())
        .filter(|((indices, _), _)| !indices.is_empty())
        .map(
            |((indices, commands), coordinator): (_, &Addr<Coordinator>)| async move {
                (
                    indices,
                    coordinator.send(ExecuteBatch { ops: commands }).await,
                )
            },
        );
    for (indices, answers) in join_all(sends).await {
        if let Ok(answers) = answers {
            for (index, answer) in indices.into_iter().zip(answers) {
                results[index] = answer;
            }
        }
    }
    results
}
