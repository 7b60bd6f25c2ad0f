//! [`SimulatedBank`]: a deterministic in-process payment service with
//! configurable latency, failure, partial-payment and unknown-outcome rates
//! (seeded), for tests, benches and `simulate`. It remembers what it was
//! asked (each item with its destination) and what it answered, so a
//! resubmitted payout gets the same answer, as a real service's
//! idempotency would give.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

use crate::domain::ids::TransactionId;
use crate::domain::money::CurrencyCode;

use super::{
    ItemStatus, PaymentError, PaymentFuture, PaymentService, Payout, PayoutId, PayoutItem,
    PayoutReport,
};

/// Faults and limits of a [`SimulatedBank`]. Rates are per mille (0..=1000),
/// drawn from a `SmallRng` seeded with `seed`, so the same calls in the same
/// order give the same answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimulatedBankConfig {
    /// Delay of every call (no timer at all when zero).
    pub latency: Duration,
    /// An item fails (on submit, or when a pending item resolves).
    pub item_failure_per_mille: u32,
    /// A submit fails with `Unknown` before the bank receives it: nothing paid,
    /// nothing recorded.
    pub unknown_outcome_per_mille: u32,
    /// A submit is carried out (items paid) but the caller gets `Unknown`.
    pub lost_response_per_mille: u32,
    /// An item is left `Pending`; it resolves to paid or failed at the next
    /// submit or status call for its payout.
    pub pending_per_mille: u32,
    /// A paid item is paid only in part (`PartlyPaid`): a random share of
    /// its amount, 1 to 999 per mille, rounded down to the amount's
    /// decimals (in full when that rounds to nothing).
    pub partly_paid_per_mille: u32,
    /// Larger payouts are rejected; treated as at least 1.
    pub max_items_per_payout: usize,
    pub seed: u64,
}

impl Default for SimulatedBankConfig {
    /// No faults, no latency, at most 1000 items per payout.
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            item_failure_per_mille: 0,
            unknown_outcome_per_mille: 0,
            lost_response_per_mille: 0,
            pending_per_mille: 0,
            partly_paid_per_mille: 0,
            max_items_per_payout: 1000,
            seed: 0,
        }
    }
}

impl SimulatedBankConfig {
    /// Realistic faults: 5 % of items fail, 10 % of submits time out before
    /// reaching the bank, 5 % of responses are lost after paying, 5 % of items
    /// stay pending for one more call.
    pub fn with_faults() -> Self {
        Self {
            item_failure_per_mille: 50,
            unknown_outcome_per_mille: 100,
            lost_response_per_mille: 50,
            pending_per_mille: 50,
            ..Self::default()
        }
    }
}

#[derive(Debug)]
struct State {
    config: SimulatedBankConfig,
    rng: SmallRng,
    /// Payouts received, with each item's status (in the payout's order).
    payouts: BTreeMap<PayoutId, Vec<(PayoutItem, ItemStatus)>>,
    /// Every payment made: the payout, the item and what was paid.
    payments: Vec<(PayoutId, TransactionId, Decimal)>,
    submit_calls: Vec<(PayoutId, CurrencyCode, usize)>,
}

impl State {
    fn roll(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && self.rng.random_range(0..1000u32) < per_mille
    }

    /// Paid (maybe in part) or failed, by the dice; records the payment
    /// if paid.
    fn settle(&mut self, payout_id: PayoutId, item: &PayoutItem) -> ItemStatus {
        if self.roll(self.config.item_failure_per_mille) {
            let reason = "beneficiary bank refused the transfer (simulated)".into();
            return ItemStatus::Failed { reason };
        }
        let part = self.partly_paid(item.amount);
        self.payments
            .push((payout_id, item.transaction_id, part.unwrap_or(item.amount)));
        match part {
            Some(paid) => ItemStatus::PartlyPaid { paid },
            None => ItemStatus::Paid,
        }
    }

    /// What a partly paid item pays, if the dice say it is one: a share of
    /// `amount` rounded down to its decimals; `None` (in full) when the
    /// share rounds to nothing.
    fn partly_paid(&mut self, amount: Decimal) -> Option<Decimal> {
        if !self.roll(self.config.partly_paid_per_mille) {
            return None;
        }
        let share = Decimal::new(i64::from(self.rng.random_range(1..1000u32)), 3);
        let paid = amount
            .checked_mul(share)?
            .round_dp_with_strategy(amount.scale(), rust_decimal::RoundingStrategy::ToZero);
        (paid > Decimal::ZERO && paid < amount).then_some(paid)
    }

    /// Resolves the payout's pending items and answers its report; `None`
    /// if the bank never received the payout.
    fn resolve(&mut self, payout_id: PayoutId) -> Option<PayoutReport> {
        let mut items = self.payouts.remove(&payout_id)?;
        for (item, status) in &mut items {
            if *status == ItemStatus::Pending {
                *status = self.settle(payout_id, item);
            }
        }
        let report = report_of(payout_id, &items);
        self.payouts.insert(payout_id, items);
        Some(report)
    }

    fn validate(&self, payout: &Payout) -> Result<(), PaymentError> {
        let (count, max) = (payout.items.len(), self.config.max_items_per_payout.max(1));
        let mut seen = HashSet::with_capacity(count);
        let problem = if payout.currency.as_str().is_empty() || count == 0 {
            Some("no currency or no items".to_string())
        } else if count > max {
            Some(format!("{count} items, at most {max}"))
        } else {
            let bad = |i: &&PayoutItem| i.amount <= Decimal::ZERO || !seen.insert(i.transaction_id);
            let bad = payout.items.iter().find(bad);
            bad.map(|i| format!("{:?}: amount not positive or repeated", i.transaction_id))
        };
        problem.map_or(Ok(()), |reason| Err(PaymentError::Rejected { reason }))
    }

    fn submit(&mut self, payout: Payout) -> Result<PayoutReport, PaymentError> {
        let (payout_id, count) = (payout.payout_id, payout.items.len());
        self.submit_calls.push((payout_id, payout.currency, count));
        if self.roll(self.config.unknown_outcome_per_mille) {
            let reason = "timed out before the bank received the payout (simulated)".into();
            return Err(PaymentError::Unknown { reason });
        }
        let report = match self.resolve(payout_id) {
            Some(report) => report,
            None => {
                self.validate(&payout)?;
                let mut items = Vec::with_capacity(count);
                for item in payout.items {
                    let status = if self.roll(self.config.pending_per_mille) {
                        ItemStatus::Pending
                    } else {
                        self.settle(payout_id, &item)
                    };
                    items.push((item, status));
                }
                let report = report_of(payout_id, &items);
                self.payouts.insert(payout_id, items);
                report
            }
        };
        if self.roll(self.config.lost_response_per_mille) {
            let reason = "connection dropped after the bank processed it (simulated)".into();
            return Err(PaymentError::Unknown { reason });
        }
        Ok(report)
    }
}

fn report_of(payout_id: PayoutId, items: &[(PayoutItem, ItemStatus)]) -> PayoutReport {
    let items = items
        .iter()
        .map(|(i, s)| (i.transaction_id, s.clone()))
        .collect();
    PayoutReport { payout_id, items }
}

/// A deterministic in-process payment service (see [`SimulatedBankConfig`]).
/// Clones share one bank. `submit` is faulty as configured; `status` never.
#[derive(Clone, Debug)]
pub struct SimulatedBank {
    state: Arc<Mutex<State>>,
}

impl Default for SimulatedBank {
    fn default() -> Self {
        Self::new(SimulatedBankConfig::default())
    }
}

impl SimulatedBank {
    pub fn new(config: SimulatedBankConfig) -> Self {
        let state = State {
            rng: SmallRng::seed_from_u64(config.seed),
            config,
            payouts: BTreeMap::new(),
            payments: Vec::new(),
            submit_calls: Vec::new(),
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// A bank with [`SimulatedBankConfig::with_faults`].
    pub fn with_faults() -> Self {
        Self::new(SimulatedBankConfig::with_faults())
    }

    /// Changes latency, faults and limits from now on (e.g. the bank
    /// recovers); keeps the random sequence (`seed` is ignored), the payouts
    /// and the payments.
    pub fn set_faults(&self, config: SimulatedBankConfig) {
        self.state.lock().config = config;
    }

    /// Every payment made: (payout id, transaction id, amount paid), in
    /// order.
    pub fn payments(&self) -> Vec<(PayoutId, TransactionId, Decimal)> {
        self.state.lock().payments.clone()
    }

    /// How many times the bank paid this transaction (more than 1 is a bug
    /// on the payout side: the same withdrawal sent under two payout ids).
    pub fn times_paid(&self, transaction_id: TransactionId) -> usize {
        let state = self.state.lock();
        state
            .payments
            .iter()
            .filter(|(_, tx, _)| *tx == transaction_id)
            .count()
    }

    /// The item of `transaction_id` as the bank first received it (its
    /// amount and destination); `None` if no payout it kept carried it.
    pub fn received(&self, transaction_id: TransactionId) -> Option<PayoutItem> {
        let state = self.state.lock();
        let mut items = state.payouts.values().flatten();
        items
            .find(|(i, _)| i.transaction_id == transaction_id)
            .map(|(i, _)| i.clone())
    }

    /// Every submit call, retries included: (payout id, currency, items).
    pub fn submit_calls(&self) -> Vec<(PayoutId, CurrencyCode, usize)> {
        self.state.lock().submit_calls.clone()
    }

    /// The receiving bank sends a paid item back: it shows as `Returned` in
    /// later reports. False if no paid item has this transaction id.
    pub fn return_item(&self, transaction_id: TransactionId, reason: &str) -> bool {
        let mut state = self.state.lock();
        let mut items = state
            .payouts
            .values_mut()
            .flat_map(|items| items.iter_mut());
        let paid = items.find(|(i, s)| {
            i.transaction_id == transaction_id
                && matches!(s, ItemStatus::Paid | ItemStatus::PartlyPaid { .. })
        });
        paid.map(|(_, s)| {
            *s = ItemStatus::Returned {
                reason: reason.to_string(),
            }
        })
        .is_some()
    }

    /// Runs `call` on the state after the configured latency.
    fn call<F>(&self, call: F) -> PaymentFuture
    where
        F: FnOnce(&mut State) -> Result<PayoutReport, PaymentError> + Send + 'static,
    {
        let (state, latency) = (Arc::clone(&self.state), self.state.lock().config.latency);
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let mut state = state.lock();
            call(&mut state)
        })
    }
}

impl PaymentService for SimulatedBank {
    fn max_items_per_payout(&self) -> usize {
        self.state.lock().config.max_items_per_payout.max(1)
    }

    fn submit(&self, payout: Payout) -> PaymentFuture {
        self.call(move |state| state.submit(payout))
    }

    fn status(&self, payout_id: PayoutId) -> PaymentFuture {
        self.call(move |state| {
            state
                .resolve(payout_id)
                .ok_or(PaymentError::NotFound { payout_id })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> CurrencyCode {
        CurrencyCode::new("USD").unwrap()
    }

    /// Payout `id` of `n` items with transactions `first..first + n`.
    fn payout(id: PayoutId, first: u64, n: u64) -> Payout {
        let item = |seq: u64| PayoutItem {
            transaction_id: TransactionId::new(seq % 7, seq),
            account: seq % 7,
            amount: Decimal::new(i64::try_from(seq % 1000 + 1).unwrap(), 2),
            destination: None,
        };
        let items = (first..first + n).map(item).collect();
        Payout {
            payout_id: id,
            currency: usd(),
            items,
        }
    }

    fn bank_with(f: impl FnOnce(&mut SimulatedBankConfig)) -> SimulatedBank {
        let mut config = SimulatedBankConfig::default();
        f(&mut config);
        SimulatedBank::new(config)
    }

    fn all_paid(bank: &SimulatedBank, report: &PayoutReport) -> bool {
        let paid_once = |(tx, s): &(TransactionId, ItemStatus)| {
            *s == ItemStatus::Paid && bank.times_paid(*tx) == 1
        };
        report.items.iter().all(paid_once)
    }

    #[tokio::test]
    async fn idempotent_resubmit_never_pays_twice() {
        let bank = SimulatedBank::default();
        let first = bank.submit(payout(1, 0, 3)).await.unwrap();
        assert!(first.items.len() == 3 && all_paid(&bank, &first));
        assert_eq!(bank.submit(payout(1, 0, 3)).await.unwrap(), first);
        assert_eq!(bank.status(1).await.unwrap(), first);
        assert!(all_paid(&bank, &first) && bank.payments().len() == 3);
        assert_eq!(bank.submit_calls(), vec![(1, usd(), 3), (1, usd(), 3)]);
    }

    #[tokio::test]
    async fn lost_response_pays_once_and_a_retry_returns_the_report() {
        let bank = bank_with(|c| c.lost_response_per_mille = 1000);
        let err = bank.submit(payout(5, 0, 2)).await.unwrap_err();
        assert!(matches!(err, PaymentError::Unknown { .. }) && !err.is_definite());
        assert_eq!(bank.payments().len(), 2);
        assert!(
            bank.submit(payout(5, 0, 2)).await.is_err(),
            "retries can fail too"
        );
        bank.set_faults(SimulatedBankConfig::default());
        let report = bank.submit(payout(5, 0, 2)).await.unwrap();
        assert!(all_paid(&bank, &report) && bank.payments().len() == 2);
        assert_eq!(bank.submit_calls().len(), 3);
    }

    #[tokio::test]
    async fn unknown_outcome_pays_nothing_and_status_is_not_found() {
        let bank = bank_with(|c| c.unknown_outcome_per_mille = 1000);
        assert!(!bank
            .submit(payout(9, 0, 4))
            .await
            .unwrap_err()
            .is_definite());
        assert!(bank.payments().is_empty());
        let not_found = bank.status(9).await.unwrap_err();
        assert!(not_found == PaymentError::NotFound { payout_id: 9 } && not_found.is_definite());
        bank.set_faults(SimulatedBankConfig::default());
        let report = bank.submit(payout(9, 0, 4)).await.unwrap();
        assert!(all_paid(&bank, &report) && bank.payments().len() == 4);
    }

    #[tokio::test]
    async fn pending_items_resolve_on_status() {
        let bank = bank_with(|c| c.pending_per_mille = 1000);
        let report = bank.submit(payout(2, 0, 3)).await.unwrap();
        assert!(report.items.iter().all(|(_, s)| *s == ItemStatus::Pending));
        assert!(bank.payments().is_empty());
        let resolved = bank.status(2).await.unwrap();
        assert!(all_paid(&bank, &resolved));
        assert_eq!(bank.status(2).await.unwrap(), resolved);
        assert_eq!(bank.payments().len(), 3);
    }

    #[tokio::test]
    async fn returned_items_show_in_reports() {
        let bank = SimulatedBank::default();
        let (tx, _) = bank.submit(payout(3, 0, 2)).await.unwrap().items[0];
        assert!(bank.return_item(tx, "account closed"));
        assert!(!bank.return_item(tx, "twice") && !bank.return_item(TransactionId::new(9, 9), "?"));
        let after = bank.status(3).await.unwrap();
        let returned = ItemStatus::Returned {
            reason: "account closed".into(),
        };
        assert_eq!(after.items[0], (tx, returned));
        assert_eq!(
            (&after.items[1].1, bank.times_paid(tx)),
            (&ItemStatus::Paid, 1)
        );
    }

    #[tokio::test]
    async fn partly_paid_items_pay_a_share_of_their_amount_and_list_it() {
        let bank = bank_with(|c| c.partly_paid_per_mille = 1000);
        let sent = payout(6, 0, 50);
        let report = bank.submit(sent.clone()).await.unwrap();
        let payments = bank.payments();
        for ((tx, status), item) in report.items.iter().zip(&sent.items) {
            let paid = match status {
                ItemStatus::PartlyPaid { paid } => *paid,
                // A share of one cent rounds to nothing: paid in full.
                ItemStatus::Paid => item.amount,
                other => panic!("{tx:?}: {other:?}"),
            };
            assert!(paid > Decimal::ZERO && paid <= item.amount, "{paid}");
            assert!(paid.scale() <= item.amount.scale(), "{paid}");
            assert!(
                payments.contains(&(6, *tx, paid)),
                "{tx:?} listed as paid {paid}"
            );
            assert_eq!(bank.received(*tx).as_ref(), Some(item));
        }
        let partly =
            |(_, s): &&(TransactionId, ItemStatus)| matches!(s, ItemStatus::PartlyPaid { .. });
        assert!(report.items.iter().filter(partly).count() > 40);
        let (tx, _) = report.items.iter().find(partly).unwrap();
        assert!(
            bank.return_item(*tx, "closed"),
            "a partly paid item comes back too"
        );
    }

    #[tokio::test]
    async fn oversized_empty_or_malformed_payouts_are_rejected() {
        let bank = bank_with(|c| c.max_items_per_payout = 3);
        assert_eq!(bank.max_items_per_payout(), 3);
        let (mut duplicate, mut negative) = (payout(13, 0, 2), payout(14, 0, 1));
        duplicate.items[1].transaction_id = duplicate.items[0].transaction_id;
        negative.items[0].amount = Decimal::new(-1, 2);
        for bad in [payout(11, 0, 4), payout(12, 0, 0), duplicate, negative] {
            let id = bad.payout_id;
            let err = bank.submit(bad).await.unwrap_err();
            assert!(matches!(err, PaymentError::Rejected { .. }) && err.is_definite());
            assert_eq!(
                bank.status(id).await,
                Err(PaymentError::NotFound { payout_id: id })
            );
        }
        assert!(bank.payments().is_empty());
        assert!(bank.submit(payout(15, 0, 3)).await.is_ok());
    }

    /// Pays `count` payouts as a payout actor would (retry the same id, ask
    /// status, resubmit on NotFound); returns the final reports.
    async fn workload(bank: &SimulatedBank, count: u64) -> Vec<PayoutReport> {
        let mut reports = Vec::new();
        for id in 0..count {
            let p = payout(id, id * 10, id % 10 + 1);
            let mut answer = bank.submit(p.clone()).await;
            for attempt in 0..50 {
                answer = match answer {
                    Err(PaymentError::Unknown { .. }) if attempt % 2 == 0 => bank.status(id).await,
                    Err(PaymentError::Unknown { .. } | PaymentError::NotFound { .. }) => {
                        bank.submit(p.clone()).await
                    }
                    done => done,
                };
            }
            let report = answer.unwrap();
            let pending = report.items.iter().any(|(_, s)| *s == ItemStatus::Pending);
            reports.push(if pending {
                bank.status(id).await.unwrap()
            } else {
                report
            });
        }
        reports
    }

    #[tokio::test]
    async fn high_fault_rates_never_pay_a_transaction_twice() {
        let bank = bank_with(|c| {
            (c.item_failure_per_mille, c.unknown_outcome_per_mille) = (200, 300);
            (c.lost_response_per_mille, c.pending_per_mille) = (300, 200);
        });
        let (mut paid, mut failed) = (0, 0);
        for report in workload(&bank, 1000).await {
            for (tx, status) in report.items {
                let expected = match status {
                    ItemStatus::Paid => {
                        paid += 1;
                        1
                    }
                    ItemStatus::Failed { .. } => {
                        failed += 1;
                        0
                    }
                    other => panic!("{tx:?} left {other:?}"),
                };
                assert_eq!(bank.times_paid(tx), expected, "{tx:?} {status:?}");
            }
        }
        assert!(bank.payments().len() == paid && paid > 0 && failed > 0);
        assert!(bank.submit_calls().len() > 1000);
    }

    #[tokio::test]
    async fn the_same_seed_gives_the_same_answers() {
        let config = SimulatedBankConfig {
            seed: 7,
            ..SimulatedBankConfig::with_faults()
        };
        let (a, b) = (
            SimulatedBank::new(config.clone()),
            SimulatedBank::new(config.clone()),
        );
        let reports = workload(&a, 200).await;
        assert_eq!(reports, workload(&b, 200).await);
        assert_eq!(
            (a.payments(), a.submit_calls()),
            (b.payments(), b.submit_calls())
        );
        let other = SimulatedBank::new(SimulatedBankConfig { seed: 8, ..config });
        assert!(workload(&other, 200).await != reports || other.submit_calls() != a.submit_calls());
    }
}
