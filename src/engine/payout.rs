//! The payout actor: pays pending withdrawals through the payment service
//! (phases 2 and 3), and owns the payout records.
//!
//! A run first reconciles the payouts still waiting for an answer (after a
//! restart, those left processing), then pays the queued withdrawals:
//! grouped by currency and split by the service's item limit (batched), or
//! one payout each (immediate). For a new payout it
//! 1. claims each item at its account (pending → processing; an item
//!    cancelled or settled by a caller meanwhile simply drops out, so the
//!    engine never pays what a caller already settled),
//! 2. logs `PayoutSubmitted` and waits until it is durable,
//! 3. calls `submit`, and settles each answered item on its own, as its
//!    payout (a caller's outcome is refused while the payout owns the
//!    item): paid → completed, failed → released to available, pending →
//!    waits,
//! 4. logs `PayoutItemsSettled`.
//!
//! An unknown outcome (timeout, lost response, 5xx) never releases anything
//! and never mints a new payout id: the payout is retried under the same id,
//! first by asking `status` (NotFound means the service never got it, so
//! its unsettled items are submitted again), with bounded exponential
//! backoff. An operator may settle an item by hand
//! ([`ResolvePayoutItem`], logged as `PayoutItemResolved`); the actor then
//! stops asking about it. A service answer contradicting a settled item is
//! logged as `PayoutMismatch` and kept in the payout's record. Runs and
//! resolutions are atomic (one at a time); new withdrawals queue meanwhile.
//!
//! Cost: every step is linear in its own work (the items it queues, plans,
//! claims, settles or retries), never in the payouts made so far; each
//! step's comment says what it visits. In immediate mode a payout per
//! withdrawal means many runs, so a run that has nothing to do is O(1).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;

use crate::clock::SharedClock;
use crate::domain::event::{Event, ItemOutcome};
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::{Currency, CurrencyCode, Units};
use crate::domain::payouts::{
    all_mismatches, apply_payout_event, retry_backoff, PayoutCounts, PayoutMode, PayoutRecord,
    PayoutView,
};
use crate::domain::withdrawal::{Settler, StatusKind, TransitionAction};
use crate::engine::command::WithdrawalCommand;
use crate::engine::messages::{
    GetPayoutCounts, GetPayoutMismatches, GetPayouts, ResolvePayoutItem, RunPayouts,
    WithdrawalQueued,
};
use crate::engine::router::Router;
use crate::error::LedgerError;
use crate::payment::{ItemStatus, PaymentError, PaymentService, Payout, PayoutItem, PayoutReport};
use crate::storage::journal::Journal;

/// How often the actor checks for payouts whose retry is due.
const RETRY_CHECK_INTERVAL_MS: u64 = 250;

/// In immediate mode, how long items the shards refused to take (see
/// [`pay`]) wait before the next run tries them again.
const REQUEUED_RETRY_MS: u64 = 100;

/// What a run needs, cloned into its future.
#[derive(Clone)]
struct Deps {
    service: Arc<dyn PaymentService>,
    /// The shards, through admission like any caller.
    router: Router,
    journal: Journal,
}

pub struct PayoutActor {
    mode: PayoutMode,
    deps: Deps,
    /// Durable pending withdrawals waiting for a payout, per currency, in
    /// arrival order.
    queue: BTreeMap<CurrencyCode, Vec<(TransactionId, Currency, Units)>>,
    payouts: BTreeMap<u64, PayoutRecord>,
    /// Payouts with items still waiting for an answer, and when each may
    /// next be retried: the only records a run or the retry timer looks at.
    awaiting: HashMap<u64, Instant>,
    /// The same, ordered by due time, so finding what is due costs only
    /// what is due.
    due: BTreeSet<(Instant, u64)>,
    next_payout_id: u64,
    /// Payouts per state and mismatches, kept as records change.
    counts: PayoutCounts,
    /// Payout records the actor's steps have looked at, for tests that
    /// check a step's cost without timing it.
    visited: u64,
    /// Where timers are set.
    clock: SharedClock,
    /// A run for requeued items is already set (immediate mode).
    requeued_run_armed: bool,
}

impl PayoutActor {
    /// `payouts` are the recovered payout records, including those left
    /// processing; `pending` the recovered pending withdrawals. O(payouts
    /// + pending), once.
    pub fn new(
        mode: PayoutMode,
        service: Arc<dyn PaymentService>,
        router: Router,
        journal: Journal,
        payouts: BTreeMap<u64, PayoutRecord>,
        pending: Vec<(TransactionId, Currency, Units)>,
        clock: SharedClock,
    ) -> Self {
        let next_payout_id = payouts.keys().next_back().map_or(1, |id| id + 1);
        let now = Instant::now();
        let awaiting: HashMap<u64, Instant> = payouts
            .values()
            .filter(|p| p.awaits_answer())
            .map(|p| (p.payout_id, now))
            .collect();
        let due = awaiting.iter().map(|(&id, &at)| (at, id)).collect();
        let mut counts = PayoutCounts {
            mismatches: all_mismatches(payouts.values()).count() as u64,
            ..PayoutCounts::default()
        };
        for record in payouts.values() {
            counts.by_state[record.state().index()] += 1;
        }
        let mut actor = Self {
            mode,
            deps: Deps {
                service,
                router,
                journal,
            },
            queue: BTreeMap::new(),
            payouts,
            awaiting,
            due,
            next_payout_id,
            counts,
            visited: 0,
            clock,
            requeued_run_armed: false,
        };
        for (tx, currency, amount) in pending {
            actor.enqueue(tx, currency, amount);
        }
        actor
    }

    /// O(1) (amortized).
    fn enqueue(&mut self, tx: TransactionId, currency: Currency, amount: Units) {
        self.queue
            .entry(currency.code)
            .or_default()
            .push((tx, currency, amount));
    }

    /// Turns the queue into new payout records (not yet claimed). O(queued
    /// items).
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

    /// The payouts to retry now: every one waiting for an answer when
    /// `force`, else those whose backoff ran out. O(retried · log awaiting)
    /// (plus the records' items, cloned into the run).
    fn take_retries(&mut self, now: Instant, force: bool) -> Vec<PayoutRecord> {
        let ids: Vec<u64> = if force {
            self.awaiting.keys().copied().collect()
        } else {
            self.due
                .iter()
                .take_while(|(at, _)| *at <= now)
                .map(|(_, id)| *id)
                .collect()
        };
        let mut retries = Vec::with_capacity(ids.len());
        for id in ids {
            self.stop_awaiting(id);
            self.visited += 1;
            if let Some(record) = self.payouts.get(&id) {
                retries.push(record.clone());
            }
        }
        retries
    }

    /// O(log awaiting).
    fn stop_awaiting(&mut self, id: u64) {
        if let Some(at) = self.awaiting.remove(&id) {
            self.due.remove(&(at, id));
        }
    }

    /// O(log awaiting).
    fn await_answer(&mut self, id: u64, at: Instant) {
        self.stop_awaiting(id);
        self.awaiting.insert(id, at);
        self.due.insert((at, id));
    }

    /// Whether some retry is due. O(log awaiting).
    fn retry_due(&self, now: Instant) -> bool {
        self.due.first().is_some_and(|(at, _)| *at <= now)
    }

    /// Takes a finished run's results into the records. O(records in the
    /// run · log payouts).
    ///
    /// Items the shards did not take go back to the front of their queue;
    /// returns whether there were any.
    fn absorb(&mut self, runs: Vec<RunResult>) -> (Vec<PayoutView>, bool) {
        let now = Instant::now();
        let mut views = Vec::with_capacity(runs.len());
        let mut requeued = false;
        for run in runs {
            if !run.requeued.is_empty() {
                requeued = true;
                self.requeue(run.requeued);
            }
            let Some(record) = run.record else { continue };
            self.visited += 1;
            self.take_record(record, now);
            views.push(self.payouts.get(&run.payout_id).map(PayoutRecord::view));
        }
        (views.into_iter().flatten().collect(), requeued)
    }

    /// Puts items a run could not claim back ahead of those queued since.
    /// O(queued items of the currency).
    fn requeue(&mut self, items: Vec<Queued>) {
        for (code, items) in group_by_currency(items) {
            let queue = self.queue.entry(code).or_default();
            queue.splice(0..0, items);
        }
    }

    /// Keeps `record` (new or updated), schedules its next retry if it
    /// still waits for an answer, and counts its new mismatches.
    fn take_record(&mut self, record: PayoutRecord, now: Instant) {
        let id = record.payout_id;
        if record.awaits_answer() {
            self.await_answer(id, now + retry_backoff(record.attempts.max(1)));
        } else {
            self.stop_awaiting(id);
        }
        let counts = &mut self.counts;
        counts.by_state[record.state().index()] += 1;
        let known = match self.payouts.get(&id) {
            Some(old) => {
                let slot = &mut counts.by_state[old.state().index()];
                *slot = slot.saturating_sub(1);
                old.mismatches.len()
            }
            None => 0,
        };
        counts.mismatches += record.mismatches.len().saturating_sub(known) as u64;
        self.payouts.insert(id, record);
    }

    /// Payout records the actor's steps have looked at so far.
    #[cfg(test)]
    fn visited(&self) -> u64 {
        self.visited
    }
}

/// Items in their order, grouped by currency (in order of first seen).
fn group_by_currency(items: Vec<Queued>) -> Vec<(CurrencyCode, Vec<Queued>)> {
    let mut groups: Vec<(CurrencyCode, Vec<Queued>)> = Vec::new();
    for item in items {
        match groups.iter_mut().find(|(code, _)| *code == item.1.code) {
            Some((_, group)) => group.push(item),
            None => groups.push((item.1.code, vec![item])),
        }
    }
    groups
}

impl PayoutActor {
    /// Items the shards refused to take (overloaded, say) are paid by a
    /// later run: in immediate mode one [`REQUEUED_RETRY_MS`] from now on
    /// the ledger's clock, in batched mode the next interval's. Never
    /// dropped, never paid twice: they were not claimed.
    fn pay_requeued_later(&mut self, ctx: &mut Context<Self>) {
        if self.mode != PayoutMode::Immediate || self.requeued_run_armed {
            return;
        }
        self.requeued_run_armed = true;
        let wait = self.clock.sleep(Duration::from_millis(REQUEUED_RETRY_MS));
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(wait).map(|(), act, ctx| {
                act.requeued_run_armed = false;
                ctx.notify(RunPayouts {
                    force_retries: false,
                    new_payouts: true,
                });
            }),
        );
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
        // O(log awaiting) per tick.
        ctx.run_interval(
            Duration::from_millis(RETRY_CHECK_INTERVAL_MS),
            |act, ctx| {
                if act.retry_due(Instant::now()) {
                    ctx.notify(RunPayouts {
                        force_retries: false,
                        new_payouts: false,
                    })
                }
            },
        );
        // Reconcile payouts left processing by a crash before anything
        // new; in immediate mode, pay the withdrawals recovered pending
        // now, not when the next one arrives.
        let pay_now = self.mode == PayoutMode::Immediate && !self.queue.is_empty();
        if !self.awaiting.is_empty() || pay_now {
            ctx.notify(RunPayouts {
                force_retries: true,
                new_payouts: pay_now,
            });
        }
    }
}

/// A durable pending withdrawal to pay; in immediate mode, pays it now.
/// O(1).
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

/// Runs the payout job once; one run at a time. O(retried + queued) before
/// the run's own I/O: a run with nothing to do costs O(1).
impl Handler<RunPayouts> for PayoutActor {
    type Result = AtomicResponse<Self, Result<Vec<PayoutView>, LedgerError>>;

    fn handle(&mut self, msg: RunPayouts, _ctx: &mut Self::Context) -> Self::Result {
        // What to run is read when this run's turn comes, not when the
        // message is handled: actix may handle a queued `notify` (a retry
        // tick, the start-up run) and a mailbox message in one poll and run
        // their atomic futures in another order, and a stale read let a run
        // and an operator's resolution both settle one item (a log that
        // then would not replay).
        AtomicResponse::new(Box::pin(actix::fut::ready(()).then(
            move |(), act: &mut Self, _| {
                let retries = act.take_retries(Instant::now(), msg.force_retries);
                let fresh = if msg.new_payouts {
                    act.plan()
                } else {
                    Vec::new()
                };
                actix::fut::wrap_future::<_, Self>(run(act.deps.clone(), retries, fresh)).map(
                    |runs, act, ctx| {
                        let (views, requeued) = act.absorb(runs);
                        if requeued {
                            act.pay_requeued_later(ctx);
                        }
                        Ok(views)
                    },
                )
            },
        )))
    }
}

/// One payout by id (O(log payouts)), or all, newest first (O(payouts):
/// the answer's own size).
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

/// Every mismatch recorded, read from the payout records (which own them),
/// by payout id. O(payouts): an operator's and the audit's query, not the
/// metrics' (those read the running count).
impl Handler<GetPayoutMismatches> for PayoutActor {
    type Result = MessageResult<GetPayoutMismatches>;

    fn handle(&mut self, _msg: GetPayoutMismatches, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(
            all_mismatches(self.payouts.values())
                .map(|(id, m)| (id, m.clone()))
                .collect(),
        )
    }
}

/// The counts kept as the actor runs. O(1).
impl Handler<GetPayoutCounts> for PayoutActor {
    type Result = MessageResult<GetPayoutCounts>;

    fn handle(&mut self, _msg: GetPayoutCounts, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.counts.clone())
    }
}

/// An operator settles one item by hand: checked against the record, applied
/// at the account as the payout, then logged. Atomic with runs, so no run
/// settles the item meanwhile. O(items of the payout).
impl Handler<ResolvePayoutItem> for PayoutActor {
    type Result = AtomicResponse<Self, Result<PayoutView, LedgerError>>;

    fn handle(&mut self, msg: ResolvePayoutItem, _ctx: &mut Self::Context) -> Self::Result {
        // Checked when its turn comes (see RunPayouts): a run just before
        // may have settled the item.
        AtomicResponse::new(Box::pin(
            actix::fut::ready(())
                .then(move |(), act: &mut Self, _| {
                    let checked = act.check_resolvable(&msg);
                    let deps = act.deps.clone();
                    actix::fut::wrap_future::<_, Self>(async move {
                        let record = checked?;
                        resolve(&deps, record, msg).await
                    })
                })
                .map(|resolved, act, _| {
                    let record = resolved?;
                    let id = record.payout_id;
                    act.take_record(record, Instant::now());
                    act.payouts
                        .get(&id)
                        .map(PayoutRecord::view)
                        .ok_or(LedgerError::UnknownPayout { payout_id: id })
                }),
        ))
    }
}

impl PayoutActor {
    /// The record a resolution applies to, if the item is in it and
    /// unsettled.
    fn check_resolvable(&self, msg: &ResolvePayoutItem) -> Result<PayoutRecord, LedgerError> {
        let (payout_id, transaction_id) = (msg.payout_id, msg.tx);
        let record = self
            .payouts
            .get(&payout_id)
            .ok_or(LedgerError::UnknownPayout { payout_id })?;
        let item = record
            .items
            .iter()
            .find(|i| i.transaction_id == transaction_id)
            .ok_or(LedgerError::NotInPayout {
                payout_id,
                transaction_id,
            })?;
        if let Some(outcome) = &item.outcome {
            return Err(LedgerError::PayoutItemSettled {
                payout_id,
                transaction_id,
                outcome: outcome.as_str().into(),
            });
        }
        Ok(record.clone())
    }
}

/// Applies an operator's resolution at the account, then logs it.
async fn resolve(
    deps: &Deps,
    mut record: PayoutRecord,
    msg: ResolvePayoutItem,
) -> Result<PayoutRecord, LedgerError> {
    let outcome = msg.resolution.outcome();
    let update = settle_command(msg.payout_id, msg.tx, &outcome);
    let (account, update) = update;
    deps.router
        .execute_one(account, update)
        .await
        .map_err(|error| already_settled(error, msg.payout_id))?;
    let event = Event::PayoutItemResolved {
        payout_id: msg.payout_id,
        tx: msg.tx,
        outcome,
        note: msg.note,
    };
    deps.journal.append(vec![event.clone()]).await?;
    tracing::warn!(
        payout_id = msg.payout_id,
        transaction_id = %msg.tx,
        ?event,
        "an operator resolved a payout item by hand"
    );
    apply_to_record(&mut record, &event).map_err(|reason| LedgerError::Internal { reason })?;
    Ok(record)
}

/// A resolution the account refused because the withdrawal is already
/// final: a crash between the account's settlement and the payout's
/// `PayoutItemsSettled` leaves the record showing the item open, but it is
/// settled, and the operator is told so (the restart's reconciliation
/// brings the record up to date).
fn already_settled(error: LedgerError, payout_id: u64) -> LedgerError {
    let outcome = match &error {
        LedgerError::InvalidTransition {
            from: StatusKind::Completed | StatusKind::Returned,
            ..
        } => "paid",
        LedgerError::InvalidTransition {
            from: StatusKind::Failed,
            ..
        } => "failed",
        _ => return error,
    };
    match error {
        LedgerError::InvalidTransition { transaction_id, .. } => LedgerError::PayoutItemSettled {
            payout_id,
            transaction_id,
            outcome: outcome.into(),
        },
        other => other,
    }
}

/// The outcome of one payout in a run; `record` is `None` when nothing was
/// claimed. `requeued`: items the shards did not take (see [`pay`]).
struct RunResult {
    payout_id: u64,
    record: Option<PayoutRecord>,
    requeued: Vec<Queued>,
}

/// A durable pending withdrawal waiting for a payout.
type Queued = (TransactionId, Currency, Units);

/// Retries first (reconciliation before new payouts), then new payouts;
/// payouts of one phase run concurrently.
async fn run(deps: Deps, retries: Vec<PayoutRecord>, fresh: Vec<PayoutRecord>) -> Vec<RunResult> {
    let mut results: Vec<RunResult> =
        join_all(retries.into_iter().map(|r| retry(deps.clone(), r))).await;
    results.extend(join_all(fresh.into_iter().map(|r| pay(deps.clone(), r))).await);
    results
}

/// A new payout: claim, log, submit, settle. O(items) plus the I/O.
///
/// Claims pass admission like any caller's operations. An item a shard did
/// not take (overloaded, stopping, poisoned: nothing known to have happened
/// at its account) goes back to the queue for a later run; only items a
/// shard refused on their state (cancelled or settled meanwhile) drop out.
async fn pay(deps: Deps, mut record: PayoutRecord) -> RunResult {
    let payout_id = record.payout_id;
    let claims = record
        .items
        .iter()
        .map(|i| {
            let command = WithdrawalCommand::Claim {
                tx: i.transaction_id,
                payout_id,
            };
            (i.transaction_id.account(), command)
        })
        .collect();
    let claimed = deps.router.execute_all(claims).await;
    let currency = record.currency;
    let mut requeued = Vec::new();
    let mut claimed = claimed.into_iter();
    record.items.retain(|item| match claimed.next() {
        Some(Ok(_)) => true,
        Some(Err(error)) if not_taken(&error) => {
            requeued.push((item.transaction_id, currency, item.amount));
            false
        }
        _ => false,
    });
    if record.items.is_empty() {
        return RunResult {
            payout_id,
            record: None,
            requeued,
        };
    }
    let submitted = Event::PayoutSubmitted {
        payout_id,
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
            payout_id,
            record: Some(record),
            requeued,
        };
    }
    record.attempts += 1;
    let answer = deps.service.submit(to_payout(&record)).await;
    answer_into(&deps, &mut record, answer).await;
    RunResult {
        payout_id,
        record: Some(record),
        requeued,
    }
}

/// Whether a shard refused an operation before its account judged it:
/// it may be sent again later.
fn not_taken(error: &LedgerError) -> bool {
    matches!(
        error,
        LedgerError::Overloaded { .. }
            | LedgerError::ShuttingDown
            | LedgerError::Poisoned { .. }
            | LedgerError::Internal { .. }
    )
}

/// A payout waiting for an answer: ask for its status; if the service never
/// got it, submit its unsettled items again under the same id. O(items)
/// plus the I/O.
async fn retry(deps: Deps, mut record: PayoutRecord) -> RunResult {
    record.attempts += 1;
    let answer = match deps.service.status(record.payout_id).await {
        Err(PaymentError::NotFound { .. }) => {
            // Nothing was paid under this id: an item an operator resolved
            // as paid is contradicted.
            let never_paid = ItemOutcome::Failed {
                reason: "the payment service never received the payout".into(),
            };
            let contradicted: Vec<_> = record
                .items
                .iter()
                .filter(|i| i.outcome == Some(ItemOutcome::Paid))
                .map(|i| (i.transaction_id, never_paid.clone()))
                .collect();
            log_mismatches(&deps, &mut record, contradicted).await;
            record.attempts += 1;
            deps.service.submit(to_payout(&record)).await
        }
        other => other,
    };
    answer_into(&deps, &mut record, answer).await;
    RunResult {
        payout_id: record.payout_id,
        record: Some(record),
        requeued: Vec::new(),
    }
}

/// What is sent to the service: the payout's unsettled items (an item an
/// operator resolved is never sent again).
fn to_payout(record: &PayoutRecord) -> Payout {
    Payout {
        payout_id: record.payout_id,
        currency: record.currency.code,
        items: record
            .unsettled()
            .map(|i| PayoutItem {
                transaction_id: i.transaction_id,
                account: i.transaction_id.account(),
                amount: record.currency.to_decimal(i.amount),
            })
            .collect(),
    }
}

/// The command that settles `tx` as payout `payout_id` with `outcome`.
fn settle_command(
    payout_id: u64,
    tx: TransactionId,
    outcome: &ItemOutcome,
) -> (AccountId, WithdrawalCommand) {
    let (action, reason) = match outcome {
        ItemOutcome::Paid => (TransitionAction::Complete, String::new()),
        ItemOutcome::Failed { reason } => (TransitionAction::Fail, reason.clone()),
    };
    let by = Settler::Payout { payout_id };
    let command = WithdrawalCommand::Update {
        tx,
        action,
        reason,
        by,
    };
    (tx.account(), command)
}

/// What the service's answer says of each item it names. `None` for an
/// unknown outcome.
fn answered_items(
    record: &mut PayoutRecord,
    answer: Result<PayoutReport, PaymentError>,
) -> Option<Vec<(TransactionId, ItemOutcome)>> {
    match answer {
        Ok(report) => Some(
            report
                .items
                .into_iter()
                .filter_map(|(tx, status)| match status {
                    ItemStatus::Paid | ItemStatus::Returned { .. } => Some((tx, ItemOutcome::Paid)),
                    ItemStatus::Failed { reason } => Some((tx, ItemOutcome::Failed { reason })),
                    ItemStatus::Pending => None,
                })
                .collect(),
        ),
        // Definite: nothing was paid, so every unsettled item is released.
        Err(PaymentError::Rejected { reason }) => {
            let reason = format!("payout rejected by the payment service: {reason}");
            record.last_error = Some(reason.clone());
            let failed = ItemOutcome::Failed { reason };
            Some(
                record
                    .unsettled()
                    .map(|i| (i.transaction_id, failed.clone()))
                    .collect(),
            )
        }
        Err(unknown) => {
            record.last_error = Some(unknown.to_string());
            None
        }
    }
}

/// Applies the service's answer: settles each answered, unsettled item at
/// its account, logs which items settled, and logs a mismatch for each
/// answer that contradicts an item already settled. O(items).
async fn answer_into(
    deps: &Deps,
    record: &mut PayoutRecord,
    answer: Result<PayoutReport, PaymentError>,
) {
    let Some(answered) = answered_items(record, answer) else {
        return;
    };
    let settled_before: HashMap<TransactionId, Option<ItemOutcome>> = record
        .items
        .iter()
        .map(|i| (i.transaction_id, i.outcome.clone()))
        .collect();
    let mut to_settle = Vec::new();
    let mut contradicted = Vec::new();
    for (tx, outcome) in answered {
        match settled_before.get(&tx) {
            Some(None) => to_settle.push((tx, outcome)),
            Some(Some(settled)) if settled.contradicts(&outcome) => {
                contradicted.push((tx, outcome))
            }
            // Confirms what is settled, or names no item of this payout.
            _ => {}
        }
    }
    let updates = to_settle
        .iter()
        .map(|(tx, outcome)| settle_command(record.payout_id, *tx, outcome))
        .collect();
    let applied = deps.router.execute_all(updates).await;
    let mut settled = Vec::new();
    for ((tx, outcome), result) in to_settle.into_iter().zip(applied) {
        match result {
            Ok(_) => settled.push((tx, outcome)),
            // The account already holds another final outcome (an operator's
            // resolution whose record was lost to a crash): the account's
            // state stands, and the contradiction is a mismatch.
            Err(LedgerError::InvalidTransition { from, .. }) if final_outcome(from).is_some() => {
                if let Some(held) = final_outcome(from) {
                    if held.contradicts(&outcome) {
                        contradicted.push((tx, outcome));
                    }
                    settled.push((tx, held));
                }
            }
            Err(other) => record.last_error = Some(format!("item {tx}: {other}")),
        }
    }
    if !settled.is_empty() {
        let event = Event::PayoutItemsSettled {
            payout_id: record.payout_id,
            items: settled,
        };
        match deps.journal.append(vec![event.clone()]).await {
            Ok(()) => {
                if let Err(reason) = apply_to_record(record, &event) {
                    record.last_error = Some(reason);
                }
            }
            Err(error) => record.last_error = Some(error.to_string()),
        }
    }
    log_mismatches(deps, record, contradicted).await;
}

/// The item outcome a withdrawal already in a final state `from` stands
/// for; `None` while it is still locked.
fn final_outcome(from: StatusKind) -> Option<ItemOutcome> {
    match from {
        StatusKind::Completed | StatusKind::Returned => Some(ItemOutcome::Paid),
        StatusKind::Failed | StatusKind::Cancelled => Some(ItemOutcome::Failed {
            reason: format!("already {from}"),
        }),
        StatusKind::Pending | StatusKind::Processing => None,
    }
}

/// Logs a `PayoutMismatch` for each `(item, reported outcome)` not already
/// recorded with the same answer, and keeps it in the record. O(items +
/// mismatches of the payout).
async fn log_mismatches(
    deps: &Deps,
    record: &mut PayoutRecord,
    reported: Vec<(TransactionId, ItemOutcome)>,
) {
    for (tx, reported) in reported {
        let known = record
            .mismatches
            .iter()
            .any(|m| m.transaction_id == tx && !m.reported.contradicts(&reported));
        let settled = record
            .items
            .iter()
            .find(|i| i.transaction_id == tx)
            .and_then(|i| i.outcome.clone());
        let Some(settled) = settled.filter(|_| !known) else {
            continue;
        };
        let event = Event::PayoutMismatch {
            payout_id: record.payout_id,
            tx,
            settled,
            reported,
        };
        tracing::error!(
            payout_id = record.payout_id,
            transaction_id = %tx,
            ?event,
            "the payment service contradicts a settled payout item: an operator must look"
        );
        match deps.journal.append(vec![event.clone()]).await {
            Ok(()) => {
                if let Err(reason) = apply_to_record(record, &event) {
                    record.last_error = Some(reason);
                }
            }
            Err(error) => record.last_error = Some(error.to_string()),
        }
    }
}

/// Applies a payout event to one record, as recovery would. O(items of the
/// event · items of the payout).
fn apply_to_record(record: &mut PayoutRecord, event: &Event) -> Result<(), String> {
    let id = record.payout_id;
    let mut records = BTreeMap::from([(
        id,
        std::mem::replace(record, PayoutRecord::new(id, record.currency, [])),
    )]);
    let applied = apply_payout_event(&mut records, event);
    if let Some(updated) = records.remove(&id) {
        *record = updated;
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::SimulatedBank;

    fn usd() -> Currency {
        Currency {
            code: CurrencyCode::new("USD").unwrap(),
            decimals: 2,
        }
    }

    /// An actor (not started) recovering `settled` finished payouts and
    /// `awaiting` ones still waiting for an answer, in immediate mode.
    fn actor_with(settled: u64, awaiting: u64) -> PayoutActor {
        let mut payouts = BTreeMap::new();
        for id in 1..=settled + awaiting {
            let tx = TransactionId::new(id, 1);
            let mut record = PayoutRecord::new(id, usd(), [(tx, 100)]);
            if id <= settled {
                record.items[0].outcome = Some(ItemOutcome::Paid);
            }
            payouts.insert(id, record);
        }
        PayoutActor::new(
            PayoutMode::Immediate,
            Arc::new(SimulatedBank::default()),
            Router::new(Vec::new(), 1),
            Journal::memory_only(),
            payouts,
            Vec::new(),
            SharedClock::system(),
        )
    }

    /// Issue 11 item 9: with a payout per withdrawal, every run used to
    /// walk (and the retry timer to scan) every payout ever made. A run's
    /// retry selection now visits only the payouts it retries, and a run
    /// or a timer tick with nothing due visits none.
    #[test]
    fn runs_visit_only_the_payouts_they_retry_never_every_payout_made() {
        let mut actor = actor_with(20_000, 3);
        let now = Instant::now();
        let retried = actor.take_retries(now, false);
        assert_eq!(retried.len(), 3, "recovered payouts are due at once");
        assert_eq!(actor.visited(), 3);
        for _ in 0..1_000 {
            assert!(!actor.retry_due(now));
            assert!(actor.take_retries(now, false).is_empty());
            assert!(actor.take_retries(now, true).is_empty(), "all 3 in flight");
            assert!(actor.plan().is_empty());
        }
        assert_eq!(actor.visited(), 3, "empty runs visit no record");
        // The run ends with the 3 still unanswered: they wait their backoff.
        let results = retried
            .into_iter()
            .map(|record| RunResult {
                payout_id: record.payout_id,
                record: Some(record),
                requeued: Vec::new(),
            })
            .collect();
        assert_eq!(actor.absorb(results).0.len(), 3);
        assert_eq!(actor.visited(), 6);
        assert!(!actor.retry_due(now) && actor.take_retries(now, false).is_empty());
        let later = now + RETRY_BACKOFF_LONGEST;
        assert!(actor.retry_due(later));
        assert_eq!(actor.take_retries(later, false).len(), 3);
        assert_eq!(actor.visited(), 9, "only the three, never the 20,000");
        let counts = &actor.counts;
        assert_eq!(
            counts.in_state(crate::domain::payouts::PayoutState::Completed),
            20_000
        );
        assert_eq!(
            counts.in_state(crate::domain::payouts::PayoutState::Processing),
            3
        );
    }

    const RETRY_BACKOFF_LONGEST: Duration =
        Duration::from_millis(crate::domain::payouts::RETRY_BACKOFF_MS_MAX + 1);
}
