//! The payout actor: pays pending withdrawals through the payment service
//! (phases 2 and 3), and owns the payout records.
//!
//! A run first reconciles the payouts still waiting for an answer (after a
//! restart, those left processing), then pays the queued withdrawals:
//! grouped by currency and split by the service's item limit (batched, on
//! the batch interval), or one payout each (immediate). For a new payout it
//! 1. claims each item at its account (pending → processing; an item
//!    cancelled or settled by a caller meanwhile simply drops out, so the
//!    engine never pays what a caller already settled),
//! 2. logs `PayoutSubmitted` and waits until it is durable,
//! 3. calls `submit` (each item with its withdrawal's destination, read
//!    from the claim's answer), and settles each answered item on its own,
//!    as its payout (a caller's outcome is refused while the payout owns
//!    the item): paid → completed, paid in part → completed with what was
//!    paid burned and the rest released, failed → released to available,
//!    pending → waits,
//! 4. logs `PayoutItemsSettled`.
//!
//! Claims and settlements go through the router and pass admission like any
//! caller's operations. A claim a shard refuses (overloaded) returns its
//! item to the queue for a later run; a settlement a shard refuses leaves
//! the item unsettled, so the payout is retried (status first) after its
//! backoff: nothing is dropped, nothing paid twice.
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
//! Here: the actor, its records and queue, and its handlers; `run.rs`:
//! what a run does; `timers.rs`: the batch interval, the retry timer and
//! the requeued run, all on the ledger's clock.
//!
//! Cost: every step is linear in its own work (the items it queues, plans,
//! claims, settles or retries), never in the payouts made so far; each
//! step's comment says what it visits. In immediate mode a payout per
//! withdrawal means many runs, so a run that has nothing to do is O(1).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tracing::Instrument;

use crate::clock::SharedClock;
use crate::domain::ids::TransactionId;
use crate::domain::money::{Currency, CurrencyCode, Units};
use crate::domain::payouts::{
    all_mismatches, retry_backoff, PayoutCounts, PayoutMode, PayoutRecord, PayoutView,
};
use crate::engine::messages::{
    GetPayoutCounts, GetPayoutMismatches, GetPayouts, ResolvePayoutItem, RunPayouts,
    WithdrawalQueued,
};
use crate::engine::router::Router;
use crate::engine::stamp::Stamper;
use crate::error::LedgerError;
use crate::payment::PaymentService;
use crate::storage::journal::Journal;

use run::{resolve, run, Deps, Queued, RunResult};

mod run;
mod timers;

/// A time on the ledger's clock: how long after the clock started.
type At = Duration;

pub struct PayoutActor {
    mode: PayoutMode,
    deps: Deps,
    /// Durable pending withdrawals waiting for a payout, per currency, in
    /// arrival order.
    queue: BTreeMap<CurrencyCode, Vec<(TransactionId, Currency, Units)>>,
    payouts: BTreeMap<u64, PayoutRecord>,
    /// Payouts with items still waiting for an answer, and when each may
    /// next be retried: the only records a run or the retry timer looks at.
    awaiting: HashMap<u64, At>,
    /// The same, ordered by due time, so finding what is due costs only
    /// what is due.
    due: BTreeSet<(At, u64)>,
    next_payout_id: u64,
    /// Payouts per state and mismatches, kept as records change.
    counts: PayoutCounts,
    /// Payout records the actor's steps have looked at, for tests that
    /// check a step's cost without timing it.
    visited: u64,
    /// Where the time is read and timers are set.
    clock: SharedClock,
    /// The retry timer, while one is set: the time it is set for.
    retry_timer: Option<(At, SpawnHandle)>,
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
        stamper: Stamper,
    ) -> Self {
        let clock = stamper.clock().clone();
        let next_payout_id = payouts.keys().next_back().map_or(1, |id| id + 1);
        let now = clock.elapsed();
        let awaiting: HashMap<u64, At> = payouts
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
                stamper: Arc::new(stamper),
            },
            queue: BTreeMap::new(),
            payouts,
            awaiting,
            due,
            next_payout_id,
            counts,
            visited: 0,
            clock,
            retry_timer: None,
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
    fn take_retries(&mut self, now: At, force: bool) -> Vec<PayoutRecord> {
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
    fn await_answer(&mut self, id: u64, at: At) {
        self.stop_awaiting(id);
        self.awaiting.insert(id, at);
        self.due.insert((at, id));
    }

    /// Whether some retry is due. O(log awaiting).
    fn retry_due(&self, now: At) -> bool {
        self.due.first().is_some_and(|(at, _)| *at <= now)
    }

    /// Takes a finished run's results into the records. O(records in the
    /// run · log payouts).
    ///
    /// Items the shards did not take go back to the front of their queue;
    /// returns whether there were any.
    fn absorb(&mut self, runs: Vec<RunResult>) -> (Vec<PayoutView>, bool) {
        let now = self.clock.elapsed();
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
    fn take_record(&mut self, record: PayoutRecord, now: At) {
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

impl Actor for PayoutActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.arm_batch_timer(ctx);
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
                let retries = act.take_retries(act.clock.elapsed(), msg.force_retries);
                let fresh = if msg.new_payouts {
                    act.plan()
                } else {
                    Vec::new()
                };
                let span = tracing::info_span!(
                    "payout.run",
                    retries = retries.len(),
                    new_payouts = fresh.len()
                );
                let running = run(act.deps.clone(), retries, fresh).instrument(span);
                actix::fut::wrap_future::<_, Self>(running).map(|runs, act, ctx| {
                    let (views, requeued) = act.absorb(runs);
                    if requeued {
                        act.pay_requeued_later(ctx);
                    }
                    act.arm_retry_timer(ctx);
                    Ok(views)
                })
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
                    let span = tracing::info_span!(
                        "payout.resolve",
                        payout_id = msg.payout_id,
                        transaction_id = %msg.tx
                    );
                    let resolving = async move {
                        let record = checked?;
                        resolve(&deps, record, msg).await
                    };
                    actix::fut::wrap_future::<_, Self>(resolving.instrument(span))
                })
                .map(|resolved, act, ctx| {
                    let record = resolved?;
                    let id = record.payout_id;
                    act.take_record(record, act.clock.elapsed());
                    act.arm_retry_timer(ctx);
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
            .item(transaction_id)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::ItemOutcome;
    use crate::domain::time::UnixMs;
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
            Stamper::new(SharedClock::system(), UnixMs::UNKNOWN),
        )
    }

    /// Issue 11 item 9: with a payout per withdrawal, every run used to
    /// walk (and the retry timer to scan) every payout ever made. A run's
    /// retry selection now visits only the payouts it retries, and a run
    /// or a timer tick with nothing due visits none.
    #[test]
    fn runs_visit_only_the_payouts_they_retry_never_every_payout_made() {
        let mut actor = actor_with(20_000, 3);
        let now = actor.clock.elapsed();
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

    /// Payout claims pass admission like any caller's operations. While
    /// another caller fills the withdrawal's shard, a run's claim is
    /// refused (`overloaded`): the item goes back to the queue, nothing is
    /// claimed or paid. The next interval's run, with room made, pays it,
    /// once.
    #[tokio::test]
    async fn a_claim_refused_as_overloaded_waits_in_the_queue_and_is_paid_once_later() {
        use crate::clock::ManualClock;
        use crate::config::{Config, SharedPaymentService};
        use crate::domain::ids::shard_of;
        use crate::domain::money::Currencies;
        use crate::domain::withdrawal::WithdrawalStatus;
        use crate::engine::command::{DepositCommand, WithdrawalCommand};
        use crate::engine::messages::WithdrawalOf;
        use crate::engine::startup::start;

        let (clock, bank) = (ManualClock::new(), SimulatedBank::default());
        let interval = Duration::from_secs(60);
        let config = Config {
            clock: clock.shared(),
            payout_mode: PayoutMode::Batched {
                interval_secs: interval.as_secs(),
            },
            payment_service: Some(SharedPaymentService::new(bank.clone())),
            account_idle_sweep_ms: 24 * 3600 * 1000,
            ..Config::for_tests()
        };
        let currencies = Currencies::new(&config.currencies).unwrap();
        let engine = start(&config, &currencies).unwrap();
        let (router, payouts) = (&engine.router, engine.payouts.clone().unwrap());
        let usd = usd();
        let deposit = DepositCommand {
            currency: usd,
            amount: 1_000,
            key: None,
            metadata: Default::default(),
        };
        router.execute_one(1, deposit).await.unwrap();
        let request = WithdrawalCommand::request(usd, 400, None);
        let tx = router.execute_one(1, request).await.unwrap().transaction_id;

        let full = router
            .admission()
            .admit(shard_of(1, config.shards), config.shard_in_flight_ops_max);
        assert!(full.is_ok(), "the test fills the shard");
        let run = RunPayouts {
            force_retries: true,
            new_payouts: true,
        };
        let made = payouts.send(run).await.unwrap().unwrap();
        assert!(made.is_empty(), "claimed on a full shard: {made:?}");
        assert!(bank.submit_calls().is_empty());
        drop(full);
        let status = router.ask(1, WithdrawalOf(tx)).await.unwrap().status;
        assert_eq!(status, WithdrawalStatus::Pending, "refused, not claimed");

        // The two shards' sweeps and the payout interval.
        clock.armed_at_least(3).await;
        clock.advance(interval);
        let mut polls = 0;
        while router.ask(1, WithdrawalOf(tx)).await.unwrap().status != WithdrawalStatus::Completed {
            polls += 1;
            assert!(polls < 5_000, "the interval's run never paid the item");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(bank.times_paid(tx), 1);
        assert_eq!(bank.submit_calls().len(), 1);
        engine.shutdown().await;
    }
}
