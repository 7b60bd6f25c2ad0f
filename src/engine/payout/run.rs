//! What a payout run does, as futures the payout actor runs one at a time:
//! [`pay`] a new payout (claim, log, submit, settle), [`retry`] one that
//! waits for an answer (status, then the same payout again if the service
//! never got it), and [`resolve`] an operator's settlement of one item. They
//! reach accounts through the [router](crate::engine::router), admitted like
//! any caller's operations, and log through the journal, each event
//! stamped once as it is logged and applied to the record with that stamp
//! (as replay applies it); the actor keeps the records they return.
//!
//! Each item goes to the service with its withdrawal's destination, read
//! from the withdrawal itself (payout records and their events keep none):
//! a new payout's from the claims' answers, a payout submitted again (the
//! service never got it) by asking the accounts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_util::future::join_all;
use tracing::Instrument;

use crate::domain::account::Settlement;
use crate::domain::details::Destination;
use crate::domain::event::{Event, ItemOutcome, Stamped};
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::{Currency, Units};
use crate::domain::payouts::{
    apply_payout_event, paid_outcome, paid_units, PayoutRecord, Resolution,
};
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{Settler, StatusKind, TransitionAction};
use crate::engine::command::WithdrawalCommand;
use crate::engine::messages::{ResolvePayoutItem, WithdrawalOf};
use crate::engine::router::Router;
use crate::engine::stamp::Stamper;
use crate::error::LedgerError;
use crate::payment::{ItemStatus, PaymentError, PaymentService, Payout, PayoutItem, PayoutReport};
use crate::storage::journal::Journal;

/// What a run needs, cloned into its future.
#[derive(Clone)]
pub(super) struct Deps {
    pub(super) service: Arc<dyn PaymentService>,
    /// The shards, through admission like any caller.
    pub(super) router: Router,
    pub(super) journal: Journal,
    /// The stamps of the payout events.
    pub(super) stamper: Arc<Stamper>,
}

impl Deps {
    /// Stamps `event` and logs it; the stamp, once durable.
    async fn log(&self, event: &Event) -> Result<UnixMs, LedgerError> {
        let at = self.stamper.stamp();
        let stamped = Stamped {
            at,
            event: event.clone(),
        };
        self.journal.append(vec![stamped]).await?;
        Ok(at)
    }
}

/// Applies an operator's resolution at the account, then logs it.
pub(super) async fn resolve(
    deps: &Deps,
    mut record: PayoutRecord,
    msg: ResolvePayoutItem,
) -> Result<PayoutRecord, LedgerError> {
    let outcome = resolution_outcome(&record, &msg)?;
    let update = settle_command(msg.payout_id, record.currency, msg.tx, &outcome);
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
    let at = deps.log(&event).await?;
    tracing::warn!(
        payout_id = msg.payout_id,
        transaction_id = %msg.tx,
        ?event,
        "an operator resolved a payout item by hand"
    );
    apply_to_record(&mut record, &event, at).map_err(|reason| LedgerError::Internal { reason })?;
    Ok(record)
}

/// What `msg` resolves its item to; a paid part that is no amount is
/// `invalid_amount`, one that is not a part of the item's amount
/// `invalid_paid_amount` (as for a caller's partial completion).
fn resolution_outcome(
    record: &PayoutRecord,
    msg: &ResolvePayoutItem,
) -> Result<ItemOutcome, LedgerError> {
    if let Resolution::PartlyPaid { paid } = &msg.resolution {
        paid_units(record.currency, *paid)?;
    }
    let (payout_id, transaction_id) = (msg.payout_id, msg.tx);
    let item = record
        .item(transaction_id)
        .ok_or(LedgerError::NotInPayout {
            payout_id,
            transaction_id,
        })?;
    msg.resolution
        .outcome(record.currency, item.amount)
        .ok_or_else(|| LedgerError::InvalidPaidAmount {
            transaction_id,
            amount: record.currency.to_decimal(item.amount),
            paid: match &msg.resolution {
                Resolution::PartlyPaid { paid } => *paid,
                _ => record.currency.to_decimal(item.amount),
            },
        })
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
pub(super) struct RunResult {
    pub(super) payout_id: u64,
    pub(super) record: Option<PayoutRecord>,
    pub(super) requeued: Vec<Queued>,
}

/// A durable pending withdrawal waiting for a payout.
pub(super) type Queued = (TransactionId, Currency, Units);

/// Retries first (reconciliation before new payouts), then new payouts;
/// payouts of one phase run concurrently.
pub(super) async fn run(
    deps: Deps,
    retries: Vec<PayoutRecord>,
    fresh: Vec<PayoutRecord>,
) -> Vec<RunResult> {
    let retried = retries.into_iter().map(|record| {
        let span = tracing::info_span!("payout.retry", payout_id = record.payout_id);
        retry(deps.clone(), record).instrument(span)
    });
    let mut results: Vec<RunResult> = join_all(retried).await;
    let paid = fresh.into_iter().map(|record| {
        let span = tracing::info_span!("payout.pay", payout_id = record.payout_id);
        pay(deps.clone(), record).instrument(span)
    });
    results.extend(join_all(paid).await);
    results
}

/// A new payout: claim, log, submit, settle. O(items) plus the I/O.
///
/// Claims pass admission like any caller's operations, in groups of at most
/// half a shard's bound (`Router::execute_in_groups`). An item a shard did
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
    let claimed = deps.router.execute_in_groups(claims).await;
    let currency = record.currency;
    let mut requeued = Vec::new();
    let mut destinations = Destinations::new();
    let mut claimed = claimed.into_iter();
    record.items.retain(|item| match claimed.next() {
        Some(Ok(withdrawal)) => {
            if let Some(destination) = withdrawal.destination {
                destinations.insert(item.transaction_id, destination);
            }
            true
        }
        Some(Err(error)) if not_taken(&error) => {
            requeued.push((item.transaction_id, currency, item.amount));
            false
        }
        _ => false,
    });
    if !requeued.is_empty() {
        tracing::info!(
            items = requeued.len(),
            "claims refused by their shards (overloaded or stopping): back in the queue"
        );
    }
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
    match deps.log(&submitted).await {
        Ok(at) => record.submitted_at = at,
        Err(error) => {
            // Poisoned: the items stay processing; a restart reconciles them.
            record.last_error = Some(error.to_string());
            return RunResult {
                payout_id,
                record: Some(record),
                requeued,
            };
        }
    }
    record.attempts += 1;
    let answer = deps.service.submit(to_payout(&record, &destinations)).await;
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
                .filter(|i| i.outcome.as_ref().is_some_and(ItemOutcome::is_paid))
                .map(|i| (i.transaction_id, never_paid.clone()))
                .collect();
            log_mismatches(&deps, &mut record, contradicted).await;
            resubmit(&deps, &mut record).await
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

/// Submits a payout the service never got again, under its id: its
/// unsettled items with their destinations, read from their withdrawals.
/// A destination that cannot be read now (say a shard is overloaded) makes
/// the outcome unknown: nothing is sent, and the payout is retried later.
async fn resubmit(deps: &Deps, record: &mut PayoutRecord) -> Result<PayoutReport, PaymentError> {
    let destinations =
        destinations_of(deps, record)
            .await
            .map_err(|error| PaymentError::Unknown {
                reason: format!("not submitted again: a destination could not be read: {error}"),
            })?;
    record.attempts += 1;
    deps.service.submit(to_payout(record, &destinations)).await
}

/// Destinations by item, for the items that have one.
type Destinations = HashMap<TransactionId, Destination>;

/// The destinations of a payout's unsettled items, asked of their
/// accounts. O(unsettled items) reads.
async fn destinations_of(deps: &Deps, record: &PayoutRecord) -> Result<Destinations, LedgerError> {
    let asks = record.unsettled().map(|i| {
        let tx = i.transaction_id;
        async move { (tx, deps.router.ask(tx.account(), WithdrawalOf(tx)).await) }
    });
    let mut destinations = Destinations::new();
    for (tx, withdrawal) in join_all(asks).await {
        if let Some(destination) = withdrawal?.destination {
            destinations.insert(tx, destination);
        }
    }
    Ok(destinations)
}

/// What is sent to the service: the payout's unsettled items (an item an
/// operator resolved is never sent again), each with its destination.
fn to_payout(record: &PayoutRecord, destinations: &Destinations) -> Payout {
    Payout {
        payout_id: record.payout_id,
        currency: record.currency.code,
        items: record
            .unsettled()
            .map(|i| PayoutItem {
                transaction_id: i.transaction_id,
                account: i.transaction_id.account(),
                amount: record.currency.to_decimal(i.amount),
                destination: destinations.get(&i.transaction_id).cloned(),
            })
            .collect(),
    }
}

/// The command that settles `tx` as payout `payout_id` with `outcome`.
fn settle_command(
    payout_id: u64,
    currency: Currency,
    tx: TransactionId,
    outcome: &ItemOutcome,
) -> (AccountId, WithdrawalCommand) {
    let (action, reason, paid) = match outcome {
        ItemOutcome::Paid => (TransitionAction::Complete, String::new(), None),
        ItemOutcome::Failed { reason } => (TransitionAction::Fail, reason.clone(), None),
        ItemOutcome::PartlyPaid { paid } => (
            TransitionAction::Complete,
            String::new(),
            Some(currency.to_decimal(*paid)),
        ),
    };
    let by = Settler::Payout { payout_id };
    let settlement = Settlement {
        action,
        reason,
        paid,
    };
    let command = WithdrawalCommand::Update { tx, settlement, by };
    (tx.account(), command)
}

/// What the service's answer says of each item it names. `None` for an
/// unknown outcome, and for a report with a paid amount that is not one of
/// its item (see [`paid_outcome`]): an answer that cannot be read whole
/// settles nothing.
fn answered_items(
    record: &mut PayoutRecord,
    answer: Result<PayoutReport, PaymentError>,
) -> Option<Vec<(TransactionId, ItemOutcome)>> {
    let report = match answer {
        Ok(report) => report,
        // Definite: nothing was paid, so every unsettled item is released.
        Err(PaymentError::Rejected { reason }) => {
            let reason = format!("payout rejected by the payment service: {reason}");
            record.last_error = Some(reason.clone());
            let failed = ItemOutcome::Failed { reason };
            return Some(
                record
                    .unsettled()
                    .map(|i| (i.transaction_id, failed.clone()))
                    .collect(),
            );
        }
        Err(unknown) => return unknown_answer(record, unknown),
    };
    let mut answered = Vec::with_capacity(report.items.len());
    for (tx, status) in report.items {
        let outcome = match status {
            ItemStatus::Paid | ItemStatus::Returned { .. } => ItemOutcome::Paid,
            ItemStatus::PartlyPaid { paid } => match partly_paid(record, tx, paid) {
                Ok(outcome) => outcome,
                Err(unreadable) => return unknown_answer(record, unreadable),
            },
            ItemStatus::Failed { reason } => ItemOutcome::Failed { reason },
            ItemStatus::Pending => continue,
        };
        answered.push((tx, outcome));
    }
    Some(answered)
}

/// The outcome of item `tx` reported paid `paid`; an unknown outcome when
/// it is not a part of the item's amount (or names no item of the payout).
fn partly_paid(
    record: &PayoutRecord,
    tx: TransactionId,
    paid: rust_decimal::Decimal,
) -> Result<ItemOutcome, PaymentError> {
    let item = record.item(tx);
    item.and_then(|i| paid_outcome(record.currency, i.amount, paid))
        .ok_or_else(|| PaymentError::Unknown {
            reason: format!(
                "item {tx} reported paid {paid}, not more than 0 and at most its amount: \
                 the report is not read"
            ),
        })
}

/// An answer that says nothing for sure: nothing is released, and the
/// payout is retried under the same id.
fn unknown_answer(
    record: &mut PayoutRecord,
    unknown: PaymentError,
) -> Option<Vec<(TransactionId, ItemOutcome)>> {
    tracing::warn!(
        error = %unknown,
        "unknown payout outcome: nothing is released; retried under the same id"
    );
    record.last_error = Some(unknown.to_string());
    None
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
        .map(|(tx, outcome)| settle_command(record.payout_id, record.currency, *tx, outcome))
        .collect();
    let applied = deps.router.execute_in_groups(updates).await;
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
        log_and_apply(deps, record, &event).await;
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
        let settled = record.item(tx).and_then(|i| i.outcome.clone());
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
        log_and_apply(deps, record, &event).await;
    }
}

/// Logs a payout event and applies it to its record with its stamp; a
/// failure is kept as the record's last error.
async fn log_and_apply(deps: &Deps, record: &mut PayoutRecord, event: &Event) {
    match deps.log(event).await {
        Ok(at) => {
            if let Err(reason) = apply_to_record(record, event, at) {
                record.last_error = Some(reason);
            }
        }
        Err(error) => record.last_error = Some(error.to_string()),
    }
}

/// Applies a payout event, logged at `at`, to one record, as recovery
/// would. O(items of the event · items of the payout).
fn apply_to_record(record: &mut PayoutRecord, event: &Event, at: UnixMs) -> Result<(), String> {
    let id = record.payout_id;
    let mut records = BTreeMap::from([(
        id,
        std::mem::replace(record, PayoutRecord::new(id, record.currency, [])),
    )]);
    let applied = apply_payout_event(&mut records, event, at);
    if let Some(updated) = records.remove(&id) {
        *record = updated;
    }
    applied
}
