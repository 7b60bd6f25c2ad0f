//! Checks the ledger's invariants over a set of account states.
//!
//! Used by `Ledger::audit`, `simulate`, tests, and `verify` after recovery.
//! Invariants, from the design:
//! 1. available ≥ 0 and locked ≥ 0 for every (account, currency), and the
//!    balance within the ceiling (per account: [`AccountState::check_invariants`]);
//! 2. locked = the sum of that account's withdrawals still holding a lock
//!    (the same check), and nothing held by a transfer in flight;
//! 3. per currency, Σ total = Σ deposits − Σ completed withdrawals;
//! 4. no payout mismatch: the payment service never contradicted a settled
//!    payout item (see [`Audit::add_payout_mismatches`]).

use std::collections::BTreeMap;

use crate::domain::account::AccountState;
use crate::domain::money::{Currency, CurrencyCode, Units};
use crate::domain::payouts::PayoutMismatch;
use crate::domain::withdrawal::StatusKind;

/// Sums for one currency over all accounts, in minor units.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrencyTotals {
    pub available: Units,
    pub locked: Units,
    pub deposited: Units,
    pub burned: Units,
}

impl CurrencyTotals {
    pub fn total(&self) -> Units {
        self.available + self.locked
    }
}

/// What an audit found.
#[derive(Clone, Debug, Default)]
pub struct Audit {
    pub accounts: usize,
    pub totals: BTreeMap<CurrencyCode, (Currency, CurrencyTotals)>,
    pub withdrawals_by_status: BTreeMap<&'static str, u64>,
    /// Every broken invariant, described; empty when all hold.
    pub violations: Vec<String>,
    /// Payout mismatches found (each is also a violation).
    pub payout_mismatches: u64,
}

impl Audit {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// Reports each payout mismatch (payout id, mismatch) as a violation:
    /// the ledger and the payment service disagree on whether money left,
    /// so the totals may hold while the money is wrong.
    pub fn add_payout_mismatches<'a>(
        &mut self,
        mismatches: impl IntoIterator<Item = (u64, &'a PayoutMismatch)>,
    ) {
        for (payout_id, m) in mismatches {
            self.payout_mismatches += 1;
            self.violations.push(format!(
                "payout {payout_id} item {}: mismatch: the ledger settled it {} but the payment service says {}",
                m.transaction_id,
                m.settled.as_str(),
                m.reported.as_str()
            ));
        }
    }
}

/// Accounts the audit reads ahead of checking them (see
/// [`AccountState::warm_all`]).
const WARM_GROUP: usize = 8;

/// Audits a complete set of account states (no transfer may be in flight),
/// by reference: a slice, a `Vec`, or a map's `values()`.
pub fn audit<'a>(accounts: impl IntoIterator<Item = &'a AccountState>) -> Audit {
    audit_and(accounts, |_| {})
}

/// [`audit`], also handing every account to `also` right after auditing
/// it, while it is still in cache: for a caller with more to do per account
/// (recovery notes the payouts still processing), in the same pass.
pub(crate) fn audit_and<'a>(
    accounts: impl IntoIterator<Item = &'a AccountState>,
    mut also: impl FnMut(&'a AccountState),
) -> Audit {
    let mut auditor = Auditor::default();
    let mut accounts = accounts.into_iter();
    let mut group = Vec::with_capacity(WARM_GROUP);
    loop {
        group.clear();
        group.extend(accounts.by_ref().take(WARM_GROUP));
        if group.is_empty() {
            break;
        }
        // Reading the group's accounts first overlaps their cache misses.
        let warmed = group
            .iter()
            .fold(0, |warmed, account| warmed ^ account.warm_all());
        std::hint::black_box(warmed);
        for &account in &group {
            auditor.add(account);
            also(account);
        }
    }
    auditor.finish()
}

/// What the audit has found so far, one account at a time.
#[derive(Default)]
struct Auditor {
    report: Audit,
    // Tallied here and folded into the report's maps at the end: a few
    // currencies, six statuses, and no map lookup per account.
    totals: Vec<(Currency, CurrencyTotals)>,
    by_status: [u64; StatusKind::ALL.len()],
}

impl Auditor {
    fn add(&mut self, account: &AccountState) {
        let report = &mut self.report;
        report.accounts += 1;
        if let Err(violation) = account.check_invariants() {
            report.violations.push(violation);
        }
        for entry in account.balances() {
            if entry.held != 0 {
                report.violations.push(format!(
                    "account {} {}: {} still held by a transfer in flight",
                    account.id(),
                    entry.currency.code,
                    entry.held
                ));
            }
            let index = match self
                .totals
                .iter()
                .position(|(currency, _)| currency.code == entry.currency.code)
            {
                Some(index) => index,
                None => {
                    self.totals
                        .push((entry.currency, CurrencyTotals::default()));
                    self.totals.len() - 1
                }
            };
            let sums = &mut self.totals[index].1;
            let added = [
                (&mut sums.available, entry.available),
                (&mut sums.locked, entry.locked),
                (&mut sums.deposited, entry.deposited),
                (&mut sums.burned, entry.burned),
            ]
            .into_iter()
            .all(|(sum, value)| match sum.checked_add(value) {
                Some(new) => {
                    *sum = new;
                    true
                }
                None => false,
            });
            if !added {
                report
                    .violations
                    .push(format!("{}: sums overflow", entry.currency.code));
            }
        }
        for (_, record) in account.withdrawals() {
            self.by_status[status_index(record.status.kind())] += 1;
        }
    }

    /// The audit of every account added.
    fn finish(self) -> Audit {
        let mut report = self.report;
        for status in StatusKind::ALL {
            report
                .withdrawals_by_status
                .insert(status.as_str(), self.by_status[status_index(status)]);
        }
        for (currency, sums) in self.totals {
            report.totals.insert(currency.code, (currency, sums));
        }
        for (code, (_, sums)) in &report.totals {
            if sums.total() != sums.deposited - sums.burned {
                report.violations.push(format!(
                    "{code}: total {} != deposited {} - completed withdrawals {}",
                    sums.total(),
                    sums.deposited,
                    sums.burned
                ));
            }
        }
        report
    }
}

/// Where `kind` sits in [`StatusKind::ALL`].
fn status_index(kind: StatusKind) -> usize {
    StatusKind::ALL
        .iter()
        .position(|&k| k == kind)
        .unwrap_or_default()
}
