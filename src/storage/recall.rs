//! The history store as the place forgotten withdrawals are found again,
//! for the engine and for replay:
//!
//! - [`StoreHistory`]: the store as the engine's [`WithdrawalHistory`] —
//!   where an account actor finds a finished withdrawal it forgot, and how
//!   far each shard may forget (the feed's per-shard horizons). A data
//!   folder's ledger uses it unless the configuration brings its own
//!   ([`Config::withdrawal_history`](crate::Config::withdrawal_history)).
//! - [`FolderHistory`]: the folder's store opened only if a replay needs
//!   it (`verify`, a ledger running without its store): no horizons.
//! - [`forget_in_copy`]: the checkpointer's copy of the state forgets what
//!   the store holds, as the engine does, so that snapshots (what a
//!   restart loads into memory) stay flat too.
//! - [`restore_for_replay`]: replay (the copy, recovery) meets the one
//!   event that can follow a forgotten withdrawal, a return of a completed
//!   one, and takes the withdrawal back from the store before applying
//!   it. A store that does not hold it fails the replay, saying so: the
//!   return is never applied to a guess.

use std::borrow::BorrowMut;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::domain::account::AccountState;
use crate::domain::event::Event;
use crate::domain::ids::{shard_of, AccountId, TransactionId};
use crate::domain::money::Currencies;
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::{
    StatusKind, WithdrawalHistory, WithdrawalRecord, WithdrawalStatus,
};
use crate::storage::feed::HistoryHorizons;
use crate::storage::history::{HistoryReader, HistoryStore, WithdrawalRow};

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

/// A data folder's history store, opened at the first look-up (most
/// replays never need one). Its horizon is unknown: nothing is forgotten
/// by it.
pub struct FolderHistory {
    dir: PathBuf,
    currencies: Currencies,
    store: OnceLock<Result<HistoryStore, String>>,
}

impl FolderHistory {
    pub fn new(data_dir: &Path, currencies: &Currencies) -> Self {
        Self {
            dir: data_dir.to_path_buf(),
            currencies: currencies.clone(),
            store: OnceLock::new(),
        }
    }
}

impl WithdrawalHistory for FolderHistory {
    fn horizon(&self, _shard: usize) -> UnixMs {
        UnixMs::UNKNOWN
    }

    fn withdrawal(&self, tx: TransactionId) -> Result<Option<WithdrawalRecord>, String> {
        let opened = self.store.get_or_init(|| {
            let store = HistoryStore::open(&self.dir);
            store.map_err(|e| format!("the history store cannot be opened: {e}"))
        });
        let store = opened.as_ref().map_err(Clone::clone)?;
        let row = store.withdrawal(tx).map_err(|e| e.to_string())?;
        row.map(|row| record_of(&row, &self.currencies)).transpose()
    }
}

/// The engine's record of a stored row, its extras (fee, destination,
/// metadata, expiry, partly paid amount) included, so a return of a
/// withdrawal paid in part mints what was paid; an error if the row names
/// a currency the ledger no longer has (the folder's table forbids that).
/// Also what history reads show (`ledger/history.rs`).
pub(crate) fn record_of(
    row: &WithdrawalRow,
    currencies: &Currencies,
) -> Result<WithdrawalRecord, String> {
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
        extras: row.extras.clone(),
    })
}

/// Forgets, in each of `accounts` (of a ledger of `shards` shards), the
/// finished withdrawals last changed before `history`'s horizon for the
/// account's shard (each horizon read once); answers how many went.
pub fn forget_in_copy<'a>(
    accounts: impl IntoIterator<Item = &'a mut AccountState>,
    history: &dyn WithdrawalHistory,
    shards: usize,
) -> usize {
    let horizons: Vec<UnixMs> = (0..shards).map(|shard| history.horizon(shard)).collect();
    if horizons.iter().all(|&h| h == UnixMs::UNKNOWN) {
        return 0;
    }
    accounts
        .into_iter()
        .map(|account| {
            let horizon = horizons.get(shard_of(account.id(), shards));
            horizon.map_or(0, |&before| account.forget_finished(before))
        })
        .sum()
}

/// Before `event` is replayed on `accounts`: if it returns a completed
/// withdrawal its account forgot, takes that withdrawal back from
/// `history`. An error (the replay must stop) if the history cannot be
/// read, does not hold it, or holds it in a state a return cannot follow.
/// Costs nothing for any other event.
pub fn restore_for_replay<V, S>(
    accounts: &mut HashMap<AccountId, V, S>,
    event: &Event,
    history: &dyn WithdrawalHistory,
) -> Result<(), String>
where
    V: BorrowMut<AccountState>,
    S: BuildHasher,
{
    let Event::WithdrawalReturned { tx, .. } = event else {
        return Ok(());
    };
    let Some(state) = accounts.get_mut(&tx.account()) else {
        return Ok(());
    };
    let state: &mut AccountState = state.borrow_mut();
    if state.forgotten_for(event).is_none() {
        return Ok(());
    }
    let found = history.withdrawal(*tx).map_err(|reason| {
        format!("the return of forgotten withdrawal {tx} needs the history store: {reason}")
    })?;
    let record = found.ok_or_else(|| {
        format!(
            "withdrawal {tx} was forgotten (a snapshot or the checkpointer's copy left it to \
             the history store), but the history store does not hold it: its return cannot \
             be replayed"
        )
    })?;
    state.restore_for_replay(event, record).map(|_| ())
}

/// A history a test fills, and an account whose completed withdrawal it
/// may hold.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::domain::money::usd;

    pub(crate) const T: UnixMs = UnixMs::from_millis(1_767_225_600_000);

    /// A history holding `records`, with horizon `horizon` on every shard.
    pub(crate) struct Held {
        pub(crate) horizon: UnixMs,
        pub(crate) records: Vec<(TransactionId, WithdrawalRecord)>,
    }

    impl WithdrawalHistory for Held {
        fn horizon(&self, _shard: usize) -> UnixMs {
            self.horizon
        }

        fn withdrawal(&self, tx: TransactionId) -> Result<Option<WithdrawalRecord>, String> {
            let found = self.records.iter().find(|(t, _)| *t == tx);
            Ok(found.map(|(_, r)| r.clone()))
        }
    }

    /// Account 7 (10.00 USD in) with one withdrawal of 2.50 completed at
    /// T; the withdrawal's id and record.
    pub(crate) fn completed() -> (AccountState, TransactionId, WithdrawalRecord) {
        let mut account = AccountState::new(7);
        account.deposit(usd(), 1_000, None, T).unwrap();
        let made = account.request_withdrawal(usd(), 250, None, 8, T).unwrap();
        let tx = made.output.transaction_id;
        let completed = Event::WithdrawalCompleted {
            tx,
            fee: None,
            paid: None,
        };
        account.apply(&completed, T).unwrap();
        let record = account.withdrawal_record_of(tx).unwrap().clone();
        (account, tx, record)
    }

    pub(crate) fn returned(tx: TransactionId) -> Event {
        Event::WithdrawalReturned {
            tx,
            reason: "bounced".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{completed, returned, Held, T};
    use super::*;
    use crate::domain::money::usd;
    use crate::domain::withdrawal::Withdrawal;

    fn view(accounts: &HashMap<AccountId, AccountState>, tx: TransactionId) -> Withdrawal {
        let record = accounts[&7].withdrawal_record_of(tx).unwrap();
        record.view(tx)
    }

    #[test]
    fn the_copy_forgets_below_each_shard_s_horizon_and_a_replayed_return_takes_it_back() {
        let (account, tx, record) = completed();
        let mut accounts = HashMap::from([(7, account)]);
        let later = UnixMs::from_millis(T.as_millis() + 1);
        let not_yet = Held {
            horizon: T,
            records: vec![],
        };
        assert_eq!(forget_in_copy(accounts.values_mut(), &not_yet, 4), 0);
        let held = Held {
            horizon: later,
            records: vec![(tx, record)],
        };
        assert_eq!(forget_in_copy(accounts.values_mut(), &held, 4), 1);
        assert!(accounts[&7].withdrawal_record_of(tx).is_none());

        let event = returned(tx);
        restore_for_replay(&mut accounts, &event, &held).unwrap();
        assert_eq!(view(&accounts, tx).status, WithdrawalStatus::Completed);
        let account = accounts.get_mut(&7).unwrap();
        account.apply(&event, later).unwrap();
        assert_eq!(
            account.balance(usd()).available,
            1_000,
            "returned: all back"
        );
    }

    #[test]
    fn a_return_the_history_cannot_give_back_stops_the_replay() {
        let (account, tx, _) = completed();
        let mut accounts = HashMap::from([(7, account)]);
        let later = UnixMs::from_millis(T.as_millis() + 1);
        accounts.get_mut(&7).unwrap().forget_finished(later);
        let empty = Held {
            horizon: later,
            records: vec![],
        };
        let refused = restore_for_replay(&mut accounts, &returned(tx), &empty).unwrap_err();
        assert!(refused.contains("does not hold it"), "{refused}");
        assert!(accounts[&7].withdrawal_record_of(tx).is_none(), "unchanged");
    }
}
