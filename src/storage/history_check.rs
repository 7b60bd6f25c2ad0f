//! `verify`'s check of the history store against the log: the log it
//! still has is replayed into a scratch store (in the system's temporary
//! folder, removed afterwards) by the same derivation that feeds the real
//! one, then what the log says happened must be what the store lists —
//! every withdrawal row, entry, transaction and payout the replay made —
//! and each account's latest balance in the store (its last entry) must be
//! the recovered state's.
//!
//! Rows older than the log (history from before its oldest segment) cannot
//! be checked against it and are left alone. Opening the store lets fjall
//! finish its own journal recovery in `<data_dir>/history/`; nothing of the
//! log or the snapshots changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::domain::account::AccountState;
use crate::domain::ids::AccountId;
use crate::domain::money::Currencies;
use crate::storage::feed::HistoryWriter;
use crate::storage::history::{
    EntryKind, EntryRow, HistoryError, HistoryStore, Page, PayoutQuery, WithdrawalQuery,
    PAGE_LIMIT_MAX,
};
use crate::storage::recovery::rebuild_feeding;
use crate::storage::wal::ReplayMode;

/// Mismatches reported in full; past this they are only counted.
const MISMATCHES_SHOWN: usize = 20;

/// What the history check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryCheck {
    /// The folder has no history store (the next open rebuilds one from
    /// what the log holds).
    Missing,
    /// The store was compared with the log's replay.
    Checked {
        /// Rows of the replay compared with the store.
        rows_checked: u64,
        /// What differs, the first [`MISMATCHES_SHOWN`] of them.
        mismatches: Vec<String>,
        /// How many differ in all.
        mismatch_count: u64,
    },
    /// The store, or the scratch replay, could not be read.
    Unreadable { reason: String },
}

impl HistoryCheck {
    /// Nothing differs (or there is no store to differ).
    pub fn is_clean(&self) -> bool {
        match self {
            Self::Missing => true,
            Self::Checked { mismatch_count, .. } => *mismatch_count == 0,
            Self::Unreadable { .. } => false,
        }
    }
}

/// Checks `dir`'s history store against its log; `accounts` is the
/// recovered state.
pub fn check(
    dir: &Path,
    currencies: &Currencies,
    accounts: &HashMap<AccountId, AccountState>,
) -> HistoryCheck {
    if !HistoryStore::dir_in(dir).is_dir() {
        return HistoryCheck::Missing;
    }
    let scratch = Scratch::new();
    match compare(dir, currencies, accounts, &scratch.0) {
        Ok(found) => found.into_check(),
        Err(reason) => HistoryCheck::Unreadable { reason },
    }
}

/// The scratch store's folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static MADE: AtomicU64 = AtomicU64::new(0);
        let made = MADE.fetch_add(1, Ordering::Relaxed);
        let name = format!("burnledger-verify-{}-{made}", std::process::id());
        Self(std::env::temp_dir().join(name))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn compare(
    dir: &Path,
    currencies: &Currencies,
    accounts: &HashMap<AccountId, AccountState>,
    scratch_dir: &Path,
) -> Result<Found, String> {
    let text = |e: HistoryError| e.to_string();
    let _ = std::fs::remove_dir_all(scratch_dir);
    let replayed = Arc::new(HistoryStore::open_at(scratch_dir).map_err(text)?);
    let (mut writer, mut feeder, _, _) = HistoryWriter::start(Arc::clone(&replayed), 1)?;
    let mode = ReplayMode::ReadOnly { until_lsn: None };
    let rebuilt = rebuild_feeding(dir, currencies, mode, Some(&mut feeder));
    drop(feeder);
    writer.finish();
    let rebuilt = rebuilt.map_err(|e| e.to_string())?;
    let log_from = rebuilt.report.snapshot.as_ref().map_or(0, |s| s.lsn);
    let stored = HistoryStore::open(dir).map_err(text)?;
    let mut found = Found::default();
    found.withdrawals(&replayed, &stored).map_err(text)?;
    found.payouts(&replayed, &stored).map_err(text)?;
    for account in accounts.values() {
        found
            .entries(&replayed, &stored, account.id(), log_from)
            .map_err(text)?;
        found.balances(&stored, account).map_err(text)?;
    }
    Ok(found)
}

/// What the comparison found so far.
#[derive(Default)]
struct Found {
    rows_checked: u64,
    mismatches: Vec<String>,
    mismatch_count: u64,
}

impl Found {
    fn into_check(self) -> HistoryCheck {
        HistoryCheck::Checked {
            rows_checked: self.rows_checked,
            mismatches: self.mismatches,
            mismatch_count: self.mismatch_count,
        }
    }

    fn mismatch(&mut self, what: String) {
        self.mismatch_count += 1;
        if self.mismatches.len() < MISMATCHES_SHOWN {
            self.mismatches.push(what);
        }
    }

    /// Compares one row the replay made with the store's (`None`: missing).
    fn row<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, log: &T, store: Option<&T>) {
        self.rows_checked += 1;
        match store {
            Some(stored) if stored == log => {}
            Some(stored) => self.mismatch(format!(
                "{what}: the log says {log:?}, the store lists {stored:?}"
            )),
            None => self.mismatch(format!(
                "{what}: the log says {log:?}, the store lists nothing"
            )),
        }
    }

    /// Every withdrawal row the replay made is the store's.
    fn withdrawals(
        &mut self,
        log: &HistoryStore,
        store: &HistoryStore,
    ) -> Result<(), HistoryError> {
        let page = |after: Option<&str>| {
            log.withdrawals(&WithdrawalQuery {
                after,
                limit: PAGE_LIMIT_MAX,
                ..WithdrawalQuery::default()
            })
        };
        each_page(page, |row| {
            let stored = store.withdrawal(row.tx)?;
            self.row(&format!("withdrawal {}", row.tx), row, stored.as_ref());
            Ok(())
        })
    }

    /// Every payout row the replay made is the store's.
    fn payouts(&mut self, log: &HistoryStore, store: &HistoryStore) -> Result<(), HistoryError> {
        let page = |after: Option<&str>| {
            log.payouts(&PayoutQuery {
                after,
                limit: PAGE_LIMIT_MAX,
                ..PayoutQuery::default()
            })
        };
        each_page(page, |row| {
            let stored = store.payout(row.payout_id)?;
            self.row(&format!("payout {}", row.payout_id), row, stored.as_ref());
            Ok(())
        })
    }

    /// The account's entries after `log_from` (what the log covers) are
    /// exactly the replay's, and so are the deposits and transfers they
    /// belong to.
    fn entries(
        &mut self,
        log: &HistoryStore,
        store: &HistoryStore,
        account: AccountId,
        log_from: u64,
    ) -> Result<(), HistoryError> {
        let replayed = all_entries(log, account)?;
        // By (currency, event, part): one event may change a balance
        // several times (a fee locked with the amount, burned with it).
        let mut stored: HashMap<(_, u64, u8), EntryRow> = all_entries(store, account)?
            .into_iter()
            .filter(|e| e.seq > log_from)
            .map(|e| ((e.currency, e.seq, e.part), e))
            .collect();
        for entry in &replayed {
            let what = format!(
                "entry {} (part {}) of account {account} in {}",
                entry.seq, entry.part, entry.currency
            );
            let in_store = stored.remove(&(entry.currency, entry.seq, entry.part));
            self.row(&what, entry, in_store.as_ref());
            if matches!(entry.kind, EntryKind::Deposit | EntryKind::TransferOut) {
                let (from_log, from_store) =
                    (log.transaction(entry.tx)?, store.transaction(entry.tx)?);
                if let Some(from_log) = from_log {
                    self.row(
                        &format!("transaction {}", entry.tx),
                        &from_log,
                        from_store.as_ref(),
                    );
                }
            }
        }
        for extra in stored.into_values() {
            self.mismatch(format!(
                "entry {} (part {}) of account {account} in {}: the store lists {extra:?}, the log has no such entry",
                extra.seq, extra.part, extra.currency
            ));
        }
        Ok(())
    }

    /// The store's latest balance of each of the account's currencies is
    /// the recovered state's.
    fn balances(
        &mut self,
        store: &HistoryStore,
        account: &AccountState,
    ) -> Result<(), HistoryError> {
        let latest = store.balances_at(account.id(), u64::MAX)?;
        for balance in account.balances() {
            self.rows_checked += 1;
            let code = balance.currency.code;
            let stored = latest.iter().find(|b| b.currency == code);
            let state = (balance.available, balance.locked);
            let agrees = stored.is_some_and(|b| (b.available, b.locked) == state);
            let nothing_to_list = stored.is_none() && state == (0, 0);
            if !(agrees || nothing_to_list) {
                self.mismatch(format!(
                    "account {} in {code}: the state holds available {} locked {}, the store's \
                     last entry says {:?}",
                    account.id(),
                    state.0,
                    state.1,
                    stored.map(|b| (b.available, b.locked))
                ));
            }
        }
        Ok(())
    }
}

/// Every entry of `account`, all currencies, in key order.
fn all_entries(store: &HistoryStore, account: AccountId) -> Result<Vec<EntryRow>, HistoryError> {
    let mut entries = Vec::new();
    let mut after = None;
    loop {
        let page = store.entries(account, None, after.as_deref(), PAGE_LIMIT_MAX)?;
        entries.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(entries),
        }
    }
}

/// Calls `each` on every item of a listing, page after page (`page` gets
/// the cursor of the page before, `None` first).
fn each_page<T>(
    mut page: impl FnMut(Option<&str>) -> Result<Page<T>, HistoryError>,
    mut each: impl FnMut(&T) -> Result<(), HistoryError>,
) -> Result<(), HistoryError> {
    let mut after: Option<String> = None;
    loop {
        let listed = page(after.as_deref())?;
        listed.items.iter().try_for_each(&mut each)?;
        match listed.next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}
