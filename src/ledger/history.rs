//! The handle's history reads: withdrawal listings, account entries,
//! transactions by id, balances as of a time and paged payouts, answered
//! from the history store (`storage/history/`) that the log feeds.
//!
//! Each call checks the ledger is open, reads the journal's durable LSN,
//! judges its input (currency, limit, time range), then waits until the
//! store has ingested everything up to that LSN — so whatever was
//! acknowledged before the call is in its answer (read-your-writes) — and
//! reads one snapshot of the store, showing its minor units as `Decimal`s
//! of the ledger's currencies. A ledger without a data folder has no store:
//! `history_unavailable`. Store reads are short and bounded (a page is at
//! most 1,000 rows) and run on the caller's task.

use std::sync::Arc;

use rust_decimal::Decimal;

use crate::domain::history::{Entry, Order, Page, PayoutQuery, Transaction, WithdrawalQuery};
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::{CurrencyCode, Units};
use crate::domain::payouts::{PayoutItemView, PayoutView};
use crate::domain::receipts::{Balance, Deposit, Transfer};
use crate::domain::time::UnixMs;
use crate::domain::withdrawal::Withdrawal;
use crate::engine::messages::GetPayouts;
use crate::error::LedgerError;
use crate::ledger::Ledger;
use crate::storage::history::{
    self as store, EntryRow, HistoryError, HistoryReader, HistoryStore, PayoutRow, TransactionKind,
    TransactionRecord, TransactionRow, WithdrawalRow, PAGE_LIMIT_MAX,
};
use crate::storage::recall::record_of;

impl Ledger {
    /// A page of withdrawals (see [`WithdrawalQuery`]): by account, by
    /// payout, or across accounts by status.
    #[tracing::instrument(level = "debug", name = "ledger.withdrawals", skip_all)]
    pub async fn withdrawals(
        &self,
        query: WithdrawalQuery<'_>,
    ) -> Result<Page<Withdrawal>, LedgerError> {
        let lsn = self.acknowledged_lsn()?;
        let currency = self.currency_filter(query.currency)?;
        check_limit(query.limit)?;
        check_time_range(query.created_from, query.created_to)?;
        let history = self.history_at(lsn).await?;
        let found = history.withdrawals(&store::WithdrawalQuery {
            account: query.account,
            currency,
            statuses: query.status,
            created_from: query.created_from.map(UnixMs::as_millis),
            created_to: query.created_to.map(UnixMs::as_millis),
            payout_id: query.payout_id,
            after: query.after,
            limit: query.limit,
            order: store_order(query.order),
        });
        self.page_of(found.map_err(history_error)?, |row| self.withdrawal_of(row))
    }

    /// A page of `account`'s balance changes, in `currency` or in all its
    /// currencies (by currency, then oldest first).
    #[tracing::instrument(level = "debug", name = "ledger.entries", skip_all, fields(account = account))]
    pub async fn entries(
        &self,
        account: AccountId,
        currency: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Entry>, LedgerError> {
        let lsn = self.acknowledged_lsn()?;
        let currency = self.currency_filter(currency)?;
        check_limit(limit)?;
        let history = self.history_at(lsn).await?;
        let found = history.entries(account, currency, after, limit);
        self.page_of(found.map_err(history_error)?, |row| self.entry_of(row))
    }

    /// The deposit, transfer or withdrawal `transaction_id` names, as the
    /// history keeps it; `unknown_transaction` if none.
    #[tracing::instrument(level = "debug", name = "ledger.transaction", skip_all, fields(%transaction_id))]
    pub async fn transaction(
        &self,
        transaction_id: TransactionId,
    ) -> Result<Transaction, LedgerError> {
        let lsn = self.acknowledged_lsn()?;
        let history = self.history_at(lsn).await?;
        let found = history.transaction(transaction_id);
        match found.map_err(history_error)? {
            Some(TransactionRecord::Withdrawal(row)) => {
                Ok(Transaction::Withdrawal(self.withdrawal_of(&row)?))
            }
            Some(TransactionRecord::Other(row)) => self.transaction_of(&row),
            None => Err(LedgerError::UnknownTransaction { transaction_id }),
        }
    }

    /// `account`'s balance in each currency as of `at`: after its last
    /// change at or before then. Currencies it had not touched by then are
    /// left out, as [`Ledger::balances`] leaves out those never held.
    #[tracing::instrument(level = "debug", name = "ledger.balances_at", skip_all, fields(account = account))]
    pub async fn balances_at(
        &self,
        account: AccountId,
        at: UnixMs,
    ) -> Result<Vec<Balance>, LedgerError> {
        let lsn = self.acknowledged_lsn()?;
        let history = self.history_at(lsn).await?;
        let found = history.balances_at(account, at.as_millis());
        let rows = found.map_err(history_error)?;
        rows.iter()
            .map(|b| self.balance_of(b.currency, b.available, b.locked))
            .collect()
    }

    /// A page of payouts by id (see [`PayoutQuery`]). Each is shown as the
    /// payout actor holds it (attempts, errors, item outcomes); a payout it
    /// no longer holds is shown as the history keeps it, without those. A
    /// ledger that makes no payouts (now) lists none, as [`Ledger::payout`]
    /// finds none there, history store or not.
    #[tracing::instrument(level = "debug", name = "ledger.payouts_page", skip_all)]
    pub async fn payouts_page(
        &self,
        query: PayoutQuery<'_>,
    ) -> Result<Page<PayoutView>, LedgerError> {
        let lsn = self.acknowledged_lsn()?;
        let currency = self.currency_filter(query.currency)?;
        check_limit(query.limit)?;
        if self.engine().payouts.is_none() {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        }
        let history = self.history_at(lsn).await?;
        let found = history.payouts(&store::PayoutQuery {
            state: query.state,
            currency,
            after: query.after,
            limit: query.limit,
            order: store_order(query.order),
        });
        let page = found.map_err(history_error)?;
        let mut items = Vec::with_capacity(page.items.len());
        for row in &page.items {
            items.push(self.payout_of(row).await?);
        }
        Ok(Page {
            items,
            next: page.next,
        })
    }
}

impl Ledger {
    /// Refuses a closed ledger, then reads the LSN every acknowledged
    /// write is at or below: what the answer must include.
    fn acknowledged_lsn(&self) -> Result<u64, LedgerError> {
        self.check_not_closed()?;
        Ok(self.engine().journal.durable_lsn())
    }

    /// Why there is no history store to read.
    fn no_history_reason(&self) -> &'static str {
        if !self.config().is_durable() {
            "this ledger has no data folder, so it keeps no history"
        } else if !self.config().history {
            "this ledger was opened with its history turned off (Config::history)"
        } else {
            "the history store could not be opened (see the ledger's error log)"
        }
    }

    /// The history store once it has ingested the log up to `lsn`.
    async fn history_at(&self, lsn: u64) -> Result<Arc<HistoryStore>, LedgerError> {
        let history: &HistoryReader =
            self.engine()
                .history
                .as_ref()
                .ok_or_else(|| LedgerError::HistoryUnavailable {
                    reason: self.no_history_reason().into(),
                })?;
        history.caught_up(lsn).await.map_err(history_error)?;
        history.store().map_err(history_error)
    }

    /// A configured currency's code, when a filter names one.
    fn currency_filter(&self, code: Option<&str>) -> Result<Option<CurrencyCode>, LedgerError> {
        code.map(|c| self.currencies().get(c).map(|currency| currency.code))
            .transpose()
    }

    /// `units` of `currency` as a `Decimal` of its configured scale.
    fn decimal(&self, currency: CurrencyCode, units: Units) -> Result<Decimal, LedgerError> {
        let configured =
            self.currencies()
                .get_code(currency)
                .map_err(|_| LedgerError::Internal {
                    reason: format!(
                        "the history holds currency {currency}, which is not configured"
                    ),
                })?;
        Ok(configured.to_decimal(units))
    }

    fn page_of<R, T>(
        &self,
        page: store::Page<R>,
        convert: impl Fn(&R) -> Result<T, LedgerError>,
    ) -> Result<Page<T>, LedgerError> {
        let items = page.items.iter().map(convert).collect::<Result<_, _>>()?;
        Ok(Page {
            items,
            next: page.next,
        })
    }

    /// A stored withdrawal as the live view shows it (its fee,
    /// destination, metadata, expiry and what was paid included).
    fn withdrawal_of(&self, row: &WithdrawalRow) -> Result<Withdrawal, LedgerError> {
        let record =
            record_of(row, self.currencies()).map_err(|reason| LedgerError::Internal { reason })?;
        Ok(record.view(row.tx))
    }

    fn entry_of(&self, row: &EntryRow) -> Result<Entry, LedgerError> {
        Ok(Entry {
            transaction_id: row.tx,
            account: row.account,
            currency: row.currency,
            seq: row.seq,
            part: row.part,
            kind: row.kind,
            amount: self.decimal(row.currency, row.amount)?,
            at: UnixMs::from_millis(row.at_ms).known(),
            available_after: self.decimal(row.currency, row.available_after)?,
            locked_after: self.decimal(row.currency, row.locked_after)?,
            metadata: row.metadata.as_deref().cloned().unwrap_or_default(),
        })
    }

    fn transaction_of(&self, row: &TransactionRow) -> Result<Transaction, LedgerError> {
        let amount = self.decimal(row.currency, row.amount)?;
        let at = UnixMs::from_millis(row.at_ms).known();
        let metadata = row.metadata.as_deref().cloned().unwrap_or_default();
        Ok(match (row.kind, row.to) {
            (TransactionKind::Deposit, _) => Transaction::Deposit {
                deposit: Deposit {
                    transaction_id: row.tx,
                    account: row.account,
                    currency: row.currency,
                    amount,
                    metadata: Default::default(),
                },
                at,
                metadata,
            },
            (TransactionKind::Transfer, Some(to)) => Transaction::Transfer {
                transfer: Transfer {
                    transaction_id: row.tx,
                    from: row.account,
                    to,
                    currency: row.currency,
                    amount,
                    metadata: Default::default(),
                },
                at,
                metadata,
            },
            (TransactionKind::Transfer, None) => {
                return Err(LedgerError::Internal {
                    reason: format!("the history holds transfer {} without a recipient", row.tx),
                })
            }
        })
    }

    fn balance_of(
        &self,
        currency: CurrencyCode,
        available: Units,
        locked: Units,
    ) -> Result<Balance, LedgerError> {
        let total = available
            .checked_add(locked)
            .ok_or_else(|| LedgerError::Internal {
                reason: format!("a {currency} balance in the history overflows"),
            })?;
        Ok(Balance {
            currency,
            available: self.decimal(currency, available)?,
            locked: self.decimal(currency, locked)?,
            total: self.decimal(currency, total)?,
        })
    }

    /// The payout actor's view of `row`'s payout, or the history's.
    async fn payout_of(&self, row: &PayoutRow) -> Result<PayoutView, LedgerError> {
        if let Some(actor) = self.engine().payouts.as_ref() {
            let held = actor.send(GetPayouts(Some(row.payout_id))).await;
            let held = held.map_err(|_| LedgerError::ShuttingDown)?;
            if let Some(view) = held.into_iter().next() {
                return Ok(view);
            }
        }
        self.payout_view_of(row)
    }

    /// A payout as the history keeps it: no attempts, errors, mismatches or
    /// item outcomes (those live with the payout actor).
    fn payout_view_of(&self, row: &PayoutRow) -> Result<PayoutView, LedgerError> {
        let mut total: Units = 0;
        let mut items = Vec::with_capacity(row.items.len());
        for item in &row.items {
            total = total
                .checked_add(item.amount)
                .ok_or_else(|| LedgerError::Internal {
                    reason: format!("payout {}'s total overflows", row.payout_id),
                })?;
            items.push(PayoutItemView {
                transaction_id: item.tx,
                account: item.tx.account(),
                amount: self.decimal(row.currency, item.amount)?,
                outcome: None,
                paid: None,
            });
        }
        Ok(PayoutView {
            payout_id: row.payout_id,
            currency: row.currency,
            items,
            total: self.decimal(row.currency, total)?,
            state: row.state,
            attempts: 0,
            last_error: None,
            mismatches: Vec::new(),
            submitted_at: UnixMs::from_millis(row.submitted_at_ms).known(),
            settled_at: row
                .settled_at_ms
                .and_then(|ms| UnixMs::from_millis(ms).known()),
        })
    }
}

fn store_order(order: Order) -> store::Order {
    match order {
        Order::Asc => store::Order::Asc,
        Order::Desc => store::Order::Desc,
    }
}

fn check_limit(limit: usize) -> Result<(), LedgerError> {
    if (1..=PAGE_LIMIT_MAX).contains(&limit) {
        return Ok(());
    }
    Err(LedgerError::InvalidLimit {
        limit,
        max: PAGE_LIMIT_MAX,
    })
}

fn check_time_range(from: Option<UnixMs>, to: Option<UnixMs>) -> Result<(), LedgerError> {
    match (from, to) {
        (Some(from), Some(to)) if from > to => Err(LedgerError::InvalidTimeRange { from, to }),
        _ => Ok(()),
    }
}

/// A store refusal as the ledger's: bad input by its code; anything else
/// means the store cannot answer (logged).
fn history_error(error: HistoryError) -> LedgerError {
    match error {
        HistoryError::BadCursor { reason } => LedgerError::InvalidCursor {
            reason: reason.to_string(),
        },
        HistoryError::BadLimit { limit, max } => LedgerError::InvalidLimit { limit, max },
        HistoryError::BadTimeRange { from, to } => LedgerError::InvalidTimeRange {
            from: UnixMs::from_millis(from),
            to: UnixMs::from_millis(to),
        },
        // The ledger shut down while the read waited.
        HistoryError::Closed => LedgerError::ShuttingDown,
        other => {
            tracing::warn!(error = %other, "a history read failed");
            LedgerError::HistoryUnavailable {
                reason: other.to_string(),
            }
        }
    }
}
