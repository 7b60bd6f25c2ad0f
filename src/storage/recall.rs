//! The history store as the engine's [`WithdrawalHistory`]: where an
//! account actor finds a finished withdrawal it forgot, and how far each
//! shard may forget (the feed's per-shard horizons).
//!
//! A data folder's ledger uses it unless the configuration brings its own
//! ([`Config::withdrawal_history`](crate::Config::withdrawal_history)).

use crate::domain::ids::TransactionId;
use crate::domain::money::Currencies;
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{
    StatusKind, WithdrawalHistory, WithdrawalRecord, WithdrawalStatus,
};
use crate::storage::feed::HistoryHorizons;
use crate::storage::history::{HistoryReader, WithdrawalRow};

/// The store, the feed's horizons and the currencies rows are read in.
pub struct StoreHistory {
    reader: HistoryReader,
    horizons: HistoryHorizons,
    currencies: Currencies,
}

impl StoreHistory {
    pub fn new(reader: HistoryReader, horizons: HistoryHorizons, currencies: Currencies) -> Self {
        Self {
            reader,
            horizons,
            currencies,
        }
    }
}

impl WithdrawalHistory for StoreHistory {
    fn horizon(&self, shard: usize) -> UnixMs {
        self.horizons.of(shard)
    }

    fn withdrawal(&self, tx: TransactionId) -> Result<Option<WithdrawalRecord>, String> {
        let store = self.reader.store().map_err(|e| e.to_string())?;
        let row = store.withdrawal(tx).map_err(|e| e.to_string())?;
        row.map(|row| record_of(&row, &self.currencies)).transpose()
    }
}

/// The engine's record of a stored row; an error if the row names a
/// currency the ledger no longer has (the folder's table forbids that).
fn record_of(row: &WithdrawalRow, currencies: &Currencies) -> Result<WithdrawalRecord, String> {
    let currency = currencies
        .get_code(row.currency)
        .map_err(|e| e.to_string())?;
    let reason = || row.reason.clone().unwrap_or_default();
    let status = match row.status {
        StatusKind::Pending => WithdrawalStatus::Pending,
        StatusKind::Processing => WithdrawalStatus::Processing {
            payout_id: row
                .payout_id
                .ok_or_else(|| format!("withdrawal {} is processing under no payout", row.tx))?,
        },
        StatusKind::Completed => WithdrawalStatus::Completed,
        StatusKind::Failed => WithdrawalStatus::Failed { reason: reason() },
        StatusKind::Cancelled => WithdrawalStatus::Cancelled,
        StatusKind::Returned => WithdrawalStatus::Returned { reason: reason() },
    };
    Ok(WithdrawalRecord {
        currency,
        amount: row.amount,
        status,
        created_at: UnixMs::from_millis(row.created_at_ms),
        updated_at: UnixMs::from_millis(row.updated_at_ms),
    })
}
