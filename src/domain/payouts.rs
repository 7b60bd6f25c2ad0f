//! Payout records: what each payout carried and what became of its items,
//! as plain data with no runtime. The payout actor keeps them; recovery
//! rebuilds them from `PayoutSubmitted` / `PayoutItemsSettled` /
//! `PayoutItemResolved` / `PayoutMismatch` events, each applied with its
//! logged time (a payout's submit and settle times). Also the operator's
//! [`Resolution`] of an item, how a paid amount reported for an item is
//! read ([`paid_outcome`]; `paid_units`, the rule a caller's or an
//! operator's paid amount is judged by), and the [`PayoutMismatch`]es: service answers
//! that contradict an item already settled. The API shows them as views
//! ([`PayoutView`], [`PayoutItemOutcome`], [`PayoutMismatchView`]) with no
//! log event types in them.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::event::{Event, ItemOutcome};
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::{decimal_to_units, Currency, CurrencyCode, Units};
use crate::domain::time::UnixMs;
use crate::error::{AmountProblem, LedgerError};

/// How withdrawals get paid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayoutMode {
    /// Every `interval_secs`, every pending withdrawal, grouped by currency
    /// and split by the service's item limit: one `submit` per group.
    Batched { interval_secs: u64 },
    /// One payout per withdrawal as soon as it is durable.
    Immediate,
    /// The host pays and reports outcomes with `complete_withdrawal`.
    External,
}

/// Default payout interval: the seed's "every five minutes".
pub const PAYOUT_INTERVAL_SECS_DEFAULT: u64 = 300;

/// First wait before retrying a payout whose outcome is unknown.
pub const RETRY_BACKOFF_MS_MIN: u64 = 500;
/// Longest wait between retries; retries never stop (an unknown outcome is
/// never released), they only stop speeding up.
pub const RETRY_BACKOFF_MS_MAX: u64 = 60_000;

/// Wait before retry number `attempt` (1 = the first retry): doubling from
/// [`RETRY_BACKOFF_MS_MIN`], capped at [`RETRY_BACKOFF_MS_MAX`].
pub fn retry_backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(20);
    let ms = RETRY_BACKOFF_MS_MIN.saturating_mul(1u64 << doublings);
    Duration::from_millis(ms.min(RETRY_BACKOFF_MS_MAX))
}

/// Where a payout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayoutState {
    /// Some item has no final answer yet (sent, pending, or unknown outcome).
    Processing,
    /// Every item paid.
    Completed,
    /// Every item failed.
    Failed,
    /// Some items paid, some failed.
    PartiallyFailed,
    /// The payment service contradicted an item already settled (see
    /// [`PayoutMismatch`]): an operator must look. Wins over every other
    /// state; items still unsettled are still retried.
    Mismatch,
}

impl PayoutState {
    /// Every state.
    pub const ALL: [PayoutState; 5] = [
        PayoutState::Processing,
        PayoutState::Completed,
        PayoutState::Failed,
        PayoutState::PartiallyFailed,
        PayoutState::Mismatch,
    ];

    /// Where this state sits in [`PayoutState::ALL`].
    pub fn index(self) -> usize {
        match self {
            Self::Processing => 0,
            Self::Completed => 1,
            Self::Failed => 2,
            Self::PartiallyFailed => 3,
            Self::Mismatch => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::PartiallyFailed => "partially_failed",
            Self::Mismatch => "mismatch",
        }
    }
}

/// An operator's decision on a payout item whose outcome the engine could
/// not learn (or should not wait for): see `Ledger::resolve_payout_item`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The money left: the withdrawal completes (its amount is burned).
    Paid,
    /// The money did not leave: the withdrawal fails (its amount is
    /// released to available).
    NotPaid { reason: String },
    /// Only `paid` of the item's amount left: that is burned, the rest
    /// released. More than 0 and exact in the payout's currency (else
    /// `invalid_amount`), at most the amount (else `invalid_paid_amount`);
    /// the whole amount is [`Paid`](Self::Paid).
    PartlyPaid { paid: Decimal },
}

impl Resolution {
    /// The item outcome this resolution records for an item of `amount`
    /// in `currency`; `None` for a paid part that is not one of it (see
    /// [`paid_outcome`]).
    pub(crate) fn outcome(&self, currency: Currency, amount: Units) -> Option<ItemOutcome> {
        match self {
            Self::Paid => Some(ItemOutcome::Paid),
            Self::NotPaid { reason } => Some(ItemOutcome::Failed {
                reason: reason.clone(),
            }),
            Self::PartlyPaid { paid } => paid_outcome(currency, amount, *paid),
        }
    }
}

/// A reported paid amount in `currency`'s units, refused as any amount is
/// (`invalid_amount`: not more than 0, or finer than the currency allows)
/// before it is weighed against what it pays for: the one rule for a
/// caller's partial completion and an operator's partial resolution.
pub(crate) fn paid_units(currency: Currency, paid: Decimal) -> Result<Units, LedgerError> {
    let invalid = |problem| LedgerError::InvalidAmount {
        amount: paid,
        currency: currency.code,
        problem,
    };
    if paid <= Decimal::ZERO {
        return Err(invalid(AmountProblem::NotPositive));
    }
    decimal_to_units(paid, currency).map_err(invalid)
}

/// The outcome of an item of `amount` (in `currency`) of which `paid` was
/// paid, as the payment service or an operator says: partly paid, or paid
/// when `paid` is the whole amount. `None` unless `paid` is more than 0,
/// at most the amount and within the currency's decimals: such an answer
/// settles nothing.
pub fn paid_outcome(currency: Currency, amount: Units, paid: Decimal) -> Option<ItemOutcome> {
    let paid = decimal_to_units(paid, currency).ok()?;
    match paid {
        paid if paid == amount => Some(ItemOutcome::Paid),
        paid if paid > 0 && paid < amount => Some(ItemOutcome::PartlyPaid { paid }),
        _ => None,
    }
}

/// The payment service answered `reported` for an item already settled as
/// `settled`: the ledger and the bank disagree about whether money left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutMismatch {
    pub transaction_id: TransactionId,
    pub settled: ItemOutcome,
    pub reported: ItemOutcome,
}

impl PayoutMismatch {
    pub fn view(&self) -> PayoutMismatchView {
        PayoutMismatchView {
            transaction_id: self.transaction_id,
            settled: PayoutItemOutcome::from(&self.settled),
            reported: PayoutItemOutcome::from(&self.reported),
        }
    }
}

/// Counts the payout actor keeps as it runs, so reading them costs the
/// same at 10 or 10 million payouts (for `/metrics`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PayoutCounts {
    /// Payouts per state, indexed by [`PayoutState::index`].
    pub by_state: [u64; PayoutState::ALL.len()],
    /// Payout mismatches recorded; never decreases.
    pub mismatches: u64,
}

impl PayoutCounts {
    /// Payouts in `state`.
    pub fn in_state(&self, state: PayoutState) -> u64 {
        self.by_state[state.index()]
    }
}

/// One item of a payout as the engine records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRecordItem {
    pub transaction_id: TransactionId,
    pub amount: Units,
    /// `None` until the service gives a final answer.
    pub outcome: Option<ItemOutcome>,
}

/// A payout as the engine records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRecord {
    pub payout_id: u64,
    pub currency: Currency,
    pub items: Vec<PayoutRecordItem>,
    /// Calls made to the service for it (submits and status checks); kept
    /// in memory only, so it restarts from 0 after a restart.
    #[serde(skip)]
    pub attempts: u32,
    /// The last unknown outcome or rejection, for operators.
    #[serde(skip)]
    pub last_error: Option<String>,
    /// Service answers that contradicted a settled item. Not in the
    /// record's own encoding: snapshots (format v3) keep them in a section
    /// of their own, so v2 records still decode.
    #[serde(skip)]
    pub mismatches: Vec<PayoutMismatch>,
    /// When it was logged as submitted (`PayoutSubmitted`). Like the
    /// mismatches, the times are kept beside the record in snapshots
    /// (format v4); [`UnixMs::UNKNOWN`] when logged before.
    #[serde(skip)]
    pub submitted_at: UnixMs,
    /// When its last item got its final answer; [`UnixMs::UNKNOWN`] while
    /// some item waits (or if settled before times were logged).
    #[serde(skip)]
    pub settled_at: UnixMs,
}

impl PayoutRecord {
    /// Its item for withdrawal `tx`, if it carries it.
    pub fn item(&self, tx: TransactionId) -> Option<&PayoutRecordItem> {
        self.items.iter().find(|i| i.transaction_id == tx)
    }

    /// A payout whose items have no answer yet.
    pub fn new(
        payout_id: u64,
        currency: Currency,
        items: impl IntoIterator<Item = (TransactionId, Units)>,
    ) -> Self {
        Self {
            payout_id,
            currency,
            items: items
                .into_iter()
                .map(|(transaction_id, amount)| PayoutRecordItem {
                    transaction_id,
                    amount,
                    outcome: None,
                })
                .collect(),
            attempts: 0,
            last_error: None,
            mismatches: Vec::new(),
            submitted_at: UnixMs::UNKNOWN,
            settled_at: UnixMs::UNKNOWN,
        }
    }

    pub fn state(&self) -> PayoutState {
        if !self.mismatches.is_empty() {
            return PayoutState::Mismatch;
        }
        let outcomes: Vec<_> = self.items.iter().map(|i| i.outcome.as_ref()).collect();
        if outcomes.iter().any(Option::is_none) {
            PayoutState::Processing
        } else if outcomes.iter().flatten().all(|o| o.is_paid()) {
            PayoutState::Completed
        } else if outcomes
            .iter()
            .all(|o| matches!(o, Some(ItemOutcome::Failed { .. })))
        {
            PayoutState::Failed
        } else {
            PayoutState::PartiallyFailed
        }
    }

    /// Items still waiting for a final answer.
    pub fn unsettled(&self) -> impl Iterator<Item = &PayoutRecordItem> {
        self.items.iter().filter(|i| i.outcome.is_none())
    }

    /// Whether some item still waits for the service's answer: the payout
    /// actor keeps asking about this payout.
    pub fn awaits_answer(&self) -> bool {
        self.unsettled().next().is_some()
    }

    pub fn view(&self) -> PayoutView {
        let total: Units = self.items.iter().map(|i| i.amount).sum();
        PayoutView {
            payout_id: self.payout_id,
            currency: self.currency.code,
            items: self
                .items
                .iter()
                .map(|i| PayoutItemView {
                    transaction_id: i.transaction_id,
                    account: i.transaction_id.account(),
                    amount: self.currency.to_decimal(i.amount),
                    outcome: i.outcome.as_ref().map(PayoutItemOutcome::from),
                    paid: match i.outcome {
                        Some(ItemOutcome::PartlyPaid { paid }) => {
                            Some(self.currency.to_decimal(paid))
                        }
                        _ => None,
                    },
                })
                .collect(),
            total: self.currency.to_decimal(total),
            state: self.state(),
            attempts: self.attempts,
            last_error: self.last_error.clone(),
            mismatches: self.mismatches.iter().map(PayoutMismatch::view).collect(),
            submitted_at: self.submitted_at.known(),
            settled_at: self.settled_at.known(),
        }
    }
}

/// A payout as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutView {
    pub payout_id: u64,
    pub currency: CurrencyCode,
    pub items: Vec<PayoutItemView>,
    pub total: Decimal,
    pub state: PayoutState,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Service answers that contradicted a settled item.
    pub mismatches: Vec<PayoutMismatchView>,
    /// When it was submitted; `None` if logged before times were.
    pub submitted_at: Option<UnixMs>,
    /// When its last item got its final answer; `None` while some item
    /// waits, or if it was settled before times were logged.
    pub settled_at: Option<UnixMs>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutItemView {
    pub transaction_id: TransactionId,
    pub account: AccountId,
    pub amount: Decimal,
    /// `None` while the item waits for a final answer.
    pub outcome: Option<PayoutItemOutcome>,
    /// What a paid item paid when less than its amount (a partial
    /// completion); `None` when paid in full, not paid, or not known.
    pub paid: Option<Decimal>,
}

/// A payout item's final answer, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayoutItemOutcome {
    /// The money left.
    Paid,
    /// The money did not leave; the withdrawal's amount was released.
    Failed { reason: String },
}

impl PayoutItemOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::Failed { .. } => "failed",
        }
    }
}

impl From<&ItemOutcome> for PayoutItemOutcome {
    fn from(outcome: &ItemOutcome) -> Self {
        match outcome {
            ItemOutcome::Paid | ItemOutcome::PartlyPaid { .. } => Self::Paid,
            ItemOutcome::Failed { reason } => Self::Failed {
                reason: reason.clone(),
            },
        }
    }
}

/// A [`PayoutMismatch`] as the API shows it: the payment service answered
/// `reported` for an item already settled as `settled`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutMismatchView {
    pub transaction_id: TransactionId,
    pub settled: PayoutItemOutcome,
    pub reported: PayoutItemOutcome,
}

/// Applies a payout event, logged at `at`, to the records (recovery and
/// live alike). The event that gives a payout's last open item its answer
/// sets its `settled_at`.
pub fn apply_payout_event(
    payouts: &mut BTreeMap<u64, PayoutRecord>,
    event: &Event,
    at: UnixMs,
) -> Result<(), String> {
    let open_before = payout_of(event)
        .and_then(|id| payouts.get(&id))
        .is_some_and(PayoutRecord::awaits_answer);
    change_payouts(payouts, event, at)?;
    if let Some(record) = payout_of(event).and_then(|id| payouts.get_mut(&id)) {
        if open_before && !record.awaits_answer() {
            record.settled_at = at;
        }
    }
    Ok(())
}

/// The payout a payout event names.
pub fn payout_of(event: &Event) -> Option<u64> {
    match event {
        Event::PayoutSubmitted { payout_id, .. }
        | Event::PayoutItemsSettled { payout_id, .. }
        | Event::PayoutItemResolved { payout_id, .. }
        | Event::PayoutMismatch { payout_id, .. } => Some(*payout_id),
        _ => None,
    }
}

/// [`apply_payout_event`] but for the settle time.
fn change_payouts(
    payouts: &mut BTreeMap<u64, PayoutRecord>,
    event: &Event,
    at: UnixMs,
) -> Result<(), String> {
    match event {
        Event::PayoutSubmitted {
            payout_id,
            currency,
            items,
        } => {
            let mut record = PayoutRecord::new(*payout_id, *currency, items.iter().copied());
            record.submitted_at = at;
            if payouts.insert(*payout_id, record).is_some() {
                return Err(format!("payout {payout_id} was submitted twice"));
            }
            Ok(())
        }
        Event::PayoutItemsSettled { payout_id, items } => {
            let record = payouts
                .get_mut(payout_id)
                .ok_or_else(|| format!("payout {payout_id} settled before it was submitted"))?;
            // One index, so a settlement of n items costs O(n), not O(n²).
            let index: HashMap<TransactionId, usize> = record
                .items
                .iter()
                .enumerate()
                .map(|(at, i)| (i.transaction_id, at))
                .collect();
            for (tx, outcome) in items {
                let at = index
                    .get(tx)
                    .ok_or_else(|| format!("payout {payout_id} has no item {tx}"))?;
                record.items[*at].outcome = Some(outcome.clone());
            }
            Ok(())
        }
        Event::PayoutItemResolved {
            payout_id,
            tx,
            outcome,
            ..
        } => {
            let item = item_mut(payouts, *payout_id, *tx)?;
            if item.outcome.is_some() {
                return Err(format!("item {tx} of payout {payout_id} resolved twice"));
            }
            item.outcome = Some(outcome.clone());
            Ok(())
        }
        Event::PayoutMismatch {
            payout_id,
            tx,
            settled,
            reported,
        } => {
            item_mut(payouts, *payout_id, *tx)?;
            let record = payouts
                .get_mut(payout_id)
                .ok_or_else(|| format!("payout {payout_id} mismatched before it was submitted"))?;
            record.mismatches.push(PayoutMismatch {
                transaction_id: *tx,
                settled: settled.clone(),
                reported: reported.clone(),
            });
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Item `tx` of payout `payout_id`, for an event that names it.
fn item_mut(
    payouts: &mut BTreeMap<u64, PayoutRecord>,
    payout_id: u64,
    tx: TransactionId,
) -> Result<&mut PayoutRecordItem, String> {
    payouts
        .get_mut(&payout_id)
        .ok_or_else(|| format!("payout {payout_id} is named before it was submitted"))?
        .items
        .iter_mut()
        .find(|i| i.transaction_id == tx)
        .ok_or_else(|| format!("payout {payout_id} has no item {tx}"))
}

/// Every mismatch of every payout, with its payout id.
pub fn all_mismatches<'a>(
    payouts: impl IntoIterator<Item = &'a PayoutRecord>,
) -> impl Iterator<Item = (u64, &'a PayoutMismatch)> {
    payouts
        .into_iter()
        .flat_map(|p| p.mismatches.iter().map(move |m| (p.payout_id, m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: UnixMs = UnixMs::from_millis(1_767_225_600_000);

    #[test]
    fn retry_backoff_doubles_and_is_bounded() {
        assert_eq!(retry_backoff(1), Duration::from_millis(500));
        assert_eq!(retry_backoff(2), Duration::from_millis(1_000));
        assert_eq!(retry_backoff(5), Duration::from_millis(8_000));
        assert_eq!(retry_backoff(8), Duration::from_millis(60_000));
        assert_eq!(retry_backoff(u32::MAX), Duration::from_millis(60_000));
    }

    #[test]
    fn resolutions_settle_items_once_and_mismatches_mark_the_payout() {
        let usd = crate::domain::money::usd();
        let (a, b) = (TransactionId::new(1, 1), TransactionId::new(2, 1));
        let mut payouts = BTreeMap::new();
        let submitted = Event::PayoutSubmitted {
            payout_id: 4,
            currency: usd,
            items: vec![(a, 100), (b, 250)],
        };
        apply_payout_event(&mut payouts, &submitted, T).unwrap();
        let resolve = |tx| Event::PayoutItemResolved {
            payout_id: 4,
            tx,
            outcome: Resolution::NotPaid { reason: "r".into() }
                .outcome(usd, 100)
                .unwrap(),
            note: "n".into(),
        };
        apply_payout_event(&mut payouts, &resolve(a), T).unwrap();
        assert!(
            apply_payout_event(&mut payouts, &resolve(a), T).is_err(),
            "twice"
        );
        let stranger = TransactionId::new(3, 1);
        assert!(apply_payout_event(&mut payouts, &resolve(stranger), T).is_err());
        assert_eq!(payouts[&4].state(), PayoutState::Processing);
        assert!(payouts[&4].awaits_answer());
        apply_payout_event(&mut payouts, &resolve(b), T).unwrap();
        assert_eq!(payouts[&4].state(), PayoutState::Failed);
        assert!(!payouts[&4].awaits_answer());
        let mismatch = Event::PayoutMismatch {
            payout_id: 4,
            tx: a,
            settled: ItemOutcome::Failed { reason: "r".into() },
            reported: ItemOutcome::Paid,
        };
        apply_payout_event(&mut payouts, &mismatch, T).unwrap();
        assert_eq!(payouts[&4].state(), PayoutState::Mismatch);
        assert_eq!(payouts[&4].view().state.as_str(), "mismatch");
        assert_eq!(all_mismatches(payouts.values()).count(), 1);
    }

    #[test]
    fn a_payout_is_processing_until_every_item_has_an_answer() {
        let usd = crate::domain::money::usd();
        let (a, b) = (TransactionId::new(1, 1), TransactionId::new(2, 1));
        let mut payouts = BTreeMap::new();
        let submitted = Event::PayoutSubmitted {
            payout_id: 9,
            currency: usd,
            items: vec![(a, 100), (b, 250)],
        };
        apply_payout_event(&mut payouts, &submitted, T).unwrap();
        assert_eq!(payouts[&9].state(), PayoutState::Processing);
        assert_eq!(payouts[&9].view().total, Decimal::new(350, 2));
        let settle = |items| Event::PayoutItemsSettled {
            payout_id: 9,
            items,
        };
        apply_payout_event(&mut payouts, &settle(vec![(a, ItemOutcome::Paid)]), T).unwrap();
        assert_eq!(payouts[&9].state(), PayoutState::Processing);
        let failed = ItemOutcome::Failed {
            reason: "closed".into(),
        };
        apply_payout_event(&mut payouts, &settle(vec![(b, failed)]), T).unwrap();
        assert_eq!(payouts[&9].state(), PayoutState::PartiallyFailed);
        assert!(
            apply_payout_event(&mut payouts, &submitted, T).is_err(),
            "same id twice"
        );
        let unknown = Event::PayoutItemsSettled {
            payout_id: 10,
            items: vec![],
        };
        assert!(apply_payout_event(&mut payouts, &unknown, T).is_err());
    }

    #[test]
    fn a_payout_is_submitted_and_settled_at_its_events_times() {
        let at = |ms: u64| UnixMs::from_millis(1_767_225_600_000 + ms);
        let usd = crate::domain::money::usd();
        let (a, b) = (TransactionId::new(1, 1), TransactionId::new(2, 1));
        let mut payouts = BTreeMap::new();
        let submitted = Event::PayoutSubmitted {
            payout_id: 3,
            currency: usd,
            items: vec![(a, 100), (b, 250)],
        };
        apply_payout_event(&mut payouts, &submitted, at(10)).unwrap();
        let view = |p: &BTreeMap<u64, PayoutRecord>| p[&3].view();
        assert_eq!(view(&payouts).submitted_at, Some(at(10)));
        assert_eq!(view(&payouts).settled_at, None);
        let settle = |tx| Event::PayoutItemsSettled {
            payout_id: 3,
            items: vec![(tx, ItemOutcome::Paid)],
        };
        apply_payout_event(&mut payouts, &settle(a), at(20)).unwrap();
        assert_eq!(view(&payouts).settled_at, None, "b still waits");
        let resolved = Event::PayoutItemResolved {
            payout_id: 3,
            tx: b,
            outcome: ItemOutcome::Paid,
            note: "n".into(),
        };
        apply_payout_event(&mut payouts, &resolved, at(30)).unwrap();
        assert_eq!(view(&payouts).settled_at, Some(at(30)));
        let mismatch = Event::PayoutMismatch {
            payout_id: 3,
            tx: a,
            settled: ItemOutcome::Paid,
            reported: ItemOutcome::Failed { reason: "r".into() },
        };
        apply_payout_event(&mut payouts, &mismatch, at(40)).unwrap();
        assert_eq!(
            view(&payouts).settled_at,
            Some(at(30)),
            "a mismatch settles nothing"
        );
        assert_eq!(view(&payouts).submitted_at, Some(at(10)));
    }
}
