//! Ingest: one committed log batch, as [`Change`]s, becomes one atomic
//! store batch together with the "applied up to LSN" watermark. A batch
//! whose LSN is at or below the watermark was applied already and is
//! skipped, so re-feeding the log after a crash applies nothing twice.
//!
//! A store batch may hold each key once (its writes share one sequence
//! number), so writes are gathered per key, last one wins, and rows read
//! back within the batch come from what it already wrote.

use std::collections::HashMap;

use crate::domain::ids::TransactionId;

use super::error::HistoryError;
use super::rows::{Change, PayoutRow, WithdrawalRow};
use super::schema::{self, Ks};
use super::HistoryStore;

/// What one [`HistoryStore::ingest`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// False when the batch was at or below the watermark (a replay).
    pub applied: bool,
    /// Status changes for withdrawals or payouts the store does not hold
    /// (their creation predates what it was fed); skipped, with a warning.
    pub missing: usize,
}

impl HistoryStore {
    /// The LSN of the last batch ingested, 0 when none.
    pub fn applied_lsn(&self) -> Result<u64, HistoryError> {
        match self.ks.get(Ks::Meta).get(schema::WATERMARK_KEY)? {
            None => Ok(0),
            Some(bytes) => {
                let raw: [u8; 8] = bytes[..]
                    .try_into()
                    .map_err(|_| schema::corrupt("watermark"))?;
                Ok(u64::from_be_bytes(raw))
            }
        }
    }

    /// Applies the changes of the log batch ending at `lsn`, atomically with
    /// the watermark; skipped if `lsn` is at or below it. Not fsynced.
    pub fn ingest(&self, lsn: u64, changes: &[Change]) -> Result<IngestReport, HistoryError> {
        let _one_writer = self.ingest_lock.lock();
        if lsn <= self.applied_lsn()? {
            return Ok(IngestReport::default());
        }
        let mut batch = Batch::new(self);
        for change in changes {
            batch.apply(change)?;
        }
        batch.put(
            Ks::Meta,
            schema::WATERMARK_KEY.to_vec(),
            lsn.to_be_bytes().to_vec(),
        );
        let missing = batch.missing;
        batch.commit()?;
        Ok(IngestReport {
            applied: true,
            missing,
        })
    }
}

/// One store batch being gathered.
struct Batch<'s> {
    store: &'s HistoryStore,
    /// Per keyspace: key → value, or `None` to remove it.
    writes: HashMap<(Ks, Vec<u8>), Option<Vec<u8>>>,
    withdrawals: HashMap<TransactionId, WithdrawalRow>,
    payouts: HashMap<u64, PayoutRow>,
    missing: usize,
}

impl<'s> Batch<'s> {
    fn new(store: &'s HistoryStore) -> Self {
        Self {
            store,
            writes: HashMap::new(),
            withdrawals: HashMap::new(),
            payouts: HashMap::new(),
            missing: 0,
        }
    }

    fn put(&mut self, ks: Ks, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert((ks, key), Some(value));
    }

    fn remove(&mut self, ks: Ks, key: Vec<u8>) {
        self.writes.insert((ks, key), None);
    }

    fn apply(&mut self, change: &Change) -> Result<(), HistoryError> {
        match change {
            Change::Withdrawal(row) => self.put_withdrawal(row.clone()),
            Change::WithdrawalStatus {
                tx,
                status,
                payout_id,
                reason,
                at_ms,
            } => {
                let Some(mut row) = self.withdrawal(*tx)? else {
                    self.warn_missing("withdrawal", tx);
                    return Ok(());
                };
                row.status = *status;
                row.payout_id = payout_id.or(row.payout_id);
                row.reason = reason.clone().or(row.reason);
                row.updated_at_ms = *at_ms;
                self.put_withdrawal(row)
            }
            Change::Entry(e) => {
                let key = schema::entry_key(e.account, e.currency, e.seq);
                self.put(Ks::Entries, key, schema::encode(e)?);
                Ok(())
            }
            Change::Transaction(t) => {
                let key = schema::tx_key(t.tx).to_vec();
                self.put(Ks::Transactions, key, schema::encode(t)?);
                Ok(())
            }
            Change::Payout(row) => self.put_payout(row.clone()),
            Change::PayoutState {
                payout_id,
                state,
                settled_at_ms,
            } => {
                let Some(mut row) = self.payout(*payout_id)? else {
                    self.warn_missing("payout", payout_id);
                    return Ok(());
                };
                row.state = *state;
                row.settled_at_ms = settled_at_ms.or(row.settled_at_ms);
                self.put_payout(row)
            }
        }
    }

    fn warn_missing(&mut self, what: &str, id: &dyn std::fmt::Debug) {
        tracing::warn!(
            what,
            ?id,
            "history: a status change for a row the store does not hold; skipped"
        );
        self.missing += 1;
    }

    /// The row as this batch leaves it so far.
    fn withdrawal(&self, tx: TransactionId) -> Result<Option<WithdrawalRow>, HistoryError> {
        if let Some(row) = self.withdrawals.get(&tx) {
            return Ok(Some(row.clone()));
        }
        let stored = self.store.ks.get(Ks::Withdrawals).get(schema::tx_key(tx))?;
        stored.map(|v| schema::decode(&v, "withdrawal")).transpose()
    }

    /// Writes the row and moves its index keys (those of the row it replaces
    /// go, unless the new row has the same ones).
    fn put_withdrawal(&mut self, row: WithdrawalRow) -> Result<(), HistoryError> {
        let old = self.withdrawal(row.tx)?;
        let new_keys = withdrawal_index_keys(&row);
        for old_key in old.iter().flat_map(withdrawal_index_keys) {
            if !new_keys.contains(&old_key) {
                self.remove(old_key.0, old_key.1);
            }
        }
        for (ks, key) in new_keys {
            self.put(ks, key, Vec::new());
        }
        self.put(
            Ks::Withdrawals,
            schema::tx_key(row.tx).to_vec(),
            schema::encode(&row)?,
        );
        self.withdrawals.insert(row.tx, row);
        Ok(())
    }

    fn payout(&self, payout_id: u64) -> Result<Option<PayoutRow>, HistoryError> {
        if let Some(row) = self.payouts.get(&payout_id) {
            return Ok(Some(row.clone()));
        }
        let stored = self
            .store
            .ks
            .get(Ks::Payouts)
            .get(payout_id.to_be_bytes())?;
        stored.map(|v| schema::decode(&v, "payout")).transpose()
    }

    fn put_payout(&mut self, row: PayoutRow) -> Result<(), HistoryError> {
        let new_key = schema::payout_state_key(row.state, row.payout_id).to_vec();
        if let Some(old) = self.payout(row.payout_id)? {
            let old_key = schema::payout_state_key(old.state, old.payout_id).to_vec();
            if old_key != new_key {
                self.remove(Ks::PByState, old_key);
            }
        }
        self.put(Ks::PByState, new_key, Vec::new());
        let key = row.payout_id.to_be_bytes().to_vec();
        self.put(Ks::Payouts, key, schema::encode(&row)?);
        self.payouts.insert(row.payout_id, row);
        Ok(())
    }

    fn commit(self) -> Result<(), HistoryError> {
        let mut batch = self.store.db.batch();
        for ((ks, key), value) in self.writes {
            let keyspace = self.store.ks.get(ks);
            match value {
                Some(value) => batch.insert(keyspace, key, value),
                None => batch.remove(keyspace, key),
            }
        }
        batch.commit()?;
        Ok(())
    }
}

/// The index keys a withdrawal row has.
fn withdrawal_index_keys(row: &WithdrawalRow) -> Vec<(Ks, Vec<u8>)> {
    let key = |prefix: Vec<u8>| schema::index_key(&prefix, row.created_at_ms, row.tx);
    let mut keys = vec![
        (Ks::WByAccount, key(schema::account_prefix(row.account))),
        (Ks::WByStatus, key(schema::status_prefix(row.status))),
    ];
    if let Some(payout_id) = row.payout_id {
        keys.push((Ks::WByPayout, key(schema::payout_prefix(payout_id))));
    }
    keys
}
