//! Checks the ledger's invariants over a set of account states.
//!
//! Used by `simulate`, by tests, and (later) by `verify` after recovery.
//! Invariants, from the design:
//! 1. available ≥ 0 and locked ≥ 0 for every (account, currency);
//! 2. locked = the sum of that account's withdrawals still holding a lock;
//! 3. per currency, Σ total = Σ deposits − Σ completed withdrawals.

use std::collections::BTreeMap;

use crate::account::AccountState;
use crate::money::{Currency, CurrencyCode, Units};
use crate::withdrawal::StatusKind;

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
}

impl Audit {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Audits a complete set of account states (no transfer may be in flight).
pub fn audit(accounts: &[AccountState]) -> Audit {
    let mut report = Audit {
        accounts: accounts.len(),
        ..Audit::default()
    };
    for status in StatusKind::ALL {
        report.withdrawals_by_status.insert(status.as_str(), 0);
    }
    for account in accounts {
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
            let (_, sums) = report
                .totals
                .entry(entry.currency.code)
                .or_insert_with(|| (entry.currency, CurrencyTotals::default()));
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
            *report
                .withdrawals_by_status
                .entry(record.status.kind().as_str())
                .or_insert(0) += 1;
        }
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
