//! The event feed's public API: [`Ledger::subscribe`] (a [`Subscription`]
//! reading the log's durable records as [`FeedEvent`]s, in LSN order), and
//! named consumers with durable cursors ([`Ledger::ack`],
//! [`Ledger::consumer`], [`Ledger::consumers`], [`Ledger::remove_consumer`])
//! that keep the log's segments from being pruned until they have read
//! them (up to the retention cap: `Config::event_retention_bytes` and
//! `Config::event_retention_ms`).
//!
//! The log is the outbox: a subscription reads the records the WAL holds
//! (`storage/events/`), never further than the durable LSN (what the disk,
//! and with replication the replicated log, has), so no event is seen that
//! a crash could take back. How each record becomes a feed event, with the
//! balances after it, is `domain/feed.rs`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, Stream};

use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::domain::feed::{BalanceTracker, FeedEvent, FromGenesis, SeededWithdrawal, Seeds};
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::money::{Currencies, Currency, Units};
use crate::error::LedgerError;
use crate::storage::events::{check_name, EventLog, LogReader, ReadError};
use crate::storage::history::{HistoryReader, HistoryStore};
use crate::storage::journal::DurableMark;
use crate::storage::wal::WalEntry;

use super::Ledger;

/// Most events one [`Subscription::next`] returns.
pub const FEED_BATCH_MAX: usize = 10_000;

/// How long a [`Subscription::into_stream`] waits at a time (it waits
/// again until an event comes).
const STREAM_WAIT: Duration = Duration::from_secs(60);

/// A named consumer's durable cursor: the LSN of the last event it
/// acknowledged (0: none yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerCursor {
    pub name: String,
    pub lsn: u64,
}

/// A reader of the feed from a position on. Not `Clone`: each keeps its
/// own place in the log.
pub struct Subscription {
    reader: LogReader,
    tracker: BalanceTracker,
    seeds: SeedSource,
    durable: watch::Receiver<DurableMark>,
    clock: SharedClock,
}

/// Where a subscription learns the balances from before its start.
enum SeedSource {
    /// It starts at the log's first record: every balance starts at zero.
    Genesis,
    /// The history store, once it has ingested up to the event that asks.
    Store {
        history: HistoryReader,
        currencies: Currencies,
    },
    /// No way to learn them: events about accounts not seen yet carry no
    /// balance (`balances_known: false`).
    Unknown,
}

impl Subscription {
    /// The LSN of the last event returned (the `after` it was opened with,
    /// before the first).
    pub fn position(&self) -> u64 {
        self.reader.position()
    }

    /// The next events after [`position`](Self::position), in LSN order,
    /// at most `max` (1 to [`FEED_BATCH_MAX`]): whatever is durable now, or,
    /// when nothing is, the first that become durable within `wait` (on the
    /// ledger's clock); empty when none did. `cursor_expired` when the log
    /// no longer holds the next event; `shutting_down` once the ledger shut
    /// down and every event was read.
    pub async fn next(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<FeedEvent>, LedgerError> {
        if !(1..=FEED_BATCH_MAX).contains(&max) {
            return Err(LedgerError::InvalidLimit {
                limit: max,
                max: FEED_BATCH_MAX,
            });
        }
        let mut deadline = self.clock.sleep(wait);
        loop {
            let durable = *self.durable.borrow_and_update();
            if durable.lsn > self.reader.position() {
                let entries = self.reader.read(durable.lsn, max).map_err(read_error)?;
                return self.convert(entries).await;
            }
            if durable.closed {
                return Err(LedgerError::ShuttingDown);
            }
            if wait.is_zero() {
                return Ok(Vec::new());
            }
            tokio::select! {
                changed = self.durable.changed() => {
                    if changed.is_err() {
                        return Err(LedgerError::ShuttingDown);
                    }
                }
                () = &mut deadline => return Ok(Vec::new()),
            }
        }
    }

    /// The subscription as a [`Stream`] of events, one by one in LSN order,
    /// waiting as long as it takes for the next (in batches of up to
    /// `batch`, 1 to [`FEED_BATCH_MAX`]). After an error (say
    /// `cursor_expired`, or `shutting_down`) it ends.
    pub fn into_stream(self, batch: usize) -> impl Stream<Item = Result<FeedEvent, LedgerError>> {
        let state = (self, VecDeque::new(), false);
        stream::unfold(
            state,
            move |(mut subscription, mut ready, failed)| async move {
                if failed {
                    return None;
                }
                while ready.is_empty() {
                    match subscription.next(batch, STREAM_WAIT).await {
                        Ok(events) => ready.extend(events),
                        Err(error) => return Some((Err(error), (subscription, ready, true))),
                    }
                }
                let event = ready.pop_front()?;
                Some((Ok(event), (subscription, ready, false)))
            },
        )
    }

    /// Turns records into feed events, first letting the history store
    /// catch up when the tracker will ask it about what came before.
    async fn convert(&mut self, entries: Vec<WalEntry>) -> Result<Vec<FeedEvent>, LedgerError> {
        let Some(last) = entries.last().map(|e| e.lsn) else {
            return Ok(Vec::new());
        };
        let mut seeds: Box<dyn Seeds> = match &self.seeds {
            SeedSource::Genesis => Box::new(FromGenesis),
            SeedSource::Unknown => Box::new(NoSeeds),
            SeedSource::Store {
                history,
                currencies,
            } => {
                if !entries.iter().all(|e| self.tracker.knows(&e.event)) {
                    history
                        .caught_up(last)
                        .await
                        .map_err(|e| LedgerError::EventsUnavailable {
                            reason: format!(
                                "the history store, which the feed's balances come from: {e}"
                            ),
                        })?;
                }
                match history.store() {
                    Ok(store) => Box::new(StoreSeeds {
                        store,
                        currencies: currencies.clone(),
                    }),
                    Err(_) => Box::new(NoSeeds),
                }
            }
        };
        Ok(entries
            .iter()
            .map(|e| self.tracker.event(e.lsn, e.at, &e.event, seeds.as_mut()))
            .collect())
    }
}

/// Balances from the history store: its entries hold each balance after
/// every event that moved it.
struct StoreSeeds {
    store: Arc<HistoryStore>,
    currencies: Currencies,
}

impl Seeds for StoreSeeds {
    fn balance(
        &mut self,
        account: AccountId,
        currency: Currency,
        before: u64,
    ) -> Option<(Units, Units)> {
        self.store
            .balance_at_lsn(account, currency.code, before)
            .ok()
    }

    fn withdrawal(&mut self, tx: TransactionId, _before: u64) -> Option<SeededWithdrawal> {
        let row = self.store.withdrawal(tx).ok()??;
        let currency = self.currencies.get_code(row.currency).ok()?;
        Some(SeededWithdrawal {
            currency,
            amount: row.amount,
            fee: row.extras.fee(row.currency),
            paid: row.extras.paid(),
        })
    }
}

/// No source: nothing before the start is known.
struct NoSeeds;

impl Seeds for NoSeeds {
    fn balance(&mut self, _: AccountId, _: Currency, _: u64) -> Option<(Units, Units)> {
        None
    }
    fn withdrawal(&mut self, _: TransactionId, _: u64) -> Option<SeededWithdrawal> {
        None
    }
}

fn read_error(error: ReadError) -> LedgerError {
    match error {
        ReadError::Expired { after, oldest } => LedgerError::CursorExpired { after, oldest },
        ReadError::Log(error) => LedgerError::EventsUnavailable {
            reason: format!("the log could not be read: {error}"),
        },
    }
}

impl Ledger {
    /// Reads the feed from the event after LSN `after` (0: from the log's
    /// first record). `cursor_expired` if the log no longer holds it;
    /// `invalid_cursor` past the durable end; `events_unavailable` on a
    /// ledger without a log.
    pub fn subscribe(&self, after: u64) -> Result<Subscription, LedgerError> {
        self.check_not_closed()?;
        let events = self.event_log()?;
        let engine = self.engine();
        let durable = engine.journal.watch_durable().ok_or_else(no_log)?;
        let end = durable.borrow().lsn;
        if after > end {
            return Err(LedgerError::InvalidCursor {
                reason: format!("LSN {after} is past the log's durable end, {end}"),
            });
        }
        let mut reader = events.reader(after);
        if after < end {
            reader.check_held().map_err(read_error)?;
        }
        let seeds = match &engine.history {
            _ if after == 0 => SeedSource::Genesis,
            Some(history) => SeedSource::Store {
                history: history.clone(),
                currencies: self.currencies().clone(),
            },
            None => SeedSource::Unknown,
        };
        Ok(Subscription {
            reader,
            tracker: BalanceTracker::new(),
            seeds,
            durable,
            clock: self.config().clock.clone(),
        })
    }

    /// Reads the feed from `consumer`'s cursor (`unknown_consumer` if it
    /// has none yet).
    pub fn subscribe_consumer(&self, consumer: &str) -> Result<Subscription, LedgerError> {
        let cursor = self
            .consumer(consumer)?
            .ok_or_else(|| LedgerError::UnknownConsumer {
                name: consumer.to_owned(),
            })?;
        self.subscribe(cursor.lsn)
    }

    /// Sets `consumer`'s durable cursor to `lsn` (creating the consumer):
    /// it has handled every event up to `lsn`, so the log may prune them
    /// once every other consumer has too. Durable when this returns. An
    /// `lsn` past the durable LSN is `invalid_cursor`; one the log no
    /// longer holds the event after is `cursor_expired`.
    pub async fn ack(&self, consumer: &str, lsn: u64) -> Result<(), LedgerError> {
        check_name(consumer)?;
        // Refuses a future LSN and one the log no longer holds.
        drop(self.subscribe(lsn)?);
        let events = self.event_log()?;
        events
            .consumers
            .set(consumer, lsn)
            .map_err(|e| LedgerError::EventsUnavailable {
                reason: format!("consumer {consumer}'s cursor could not be written: {e}"),
            })
    }

    /// `consumer`'s cursor, `None` if it has none.
    pub fn consumer(&self, consumer: &str) -> Result<Option<ConsumerCursor>, LedgerError> {
        check_name(consumer)?;
        let lsn = self.event_log()?.consumers.get(consumer);
        Ok(lsn.map(|lsn| ConsumerCursor {
            name: consumer.to_owned(),
            lsn,
        }))
    }

    /// Every consumer's cursor, by name.
    pub fn consumers(&self) -> Result<Vec<ConsumerCursor>, LedgerError> {
        let all = self.event_log()?.consumers.all();
        Ok(all
            .into_iter()
            .map(|(name, lsn)| ConsumerCursor { name, lsn })
            .collect())
    }

    /// Forgets `consumer` (it no longer holds the log back); whether it
    /// existed.
    pub async fn remove_consumer(&self, consumer: &str) -> Result<bool, LedgerError> {
        check_name(consumer)?;
        let events = self.event_log()?;
        events
            .consumers
            .remove(consumer)
            .map_err(|e| LedgerError::EventsUnavailable {
                reason: format!("consumer {consumer}'s cursor could not be removed: {e}"),
            })
    }

    fn event_log(&self) -> Result<&EventLog, LedgerError> {
        self.engine().events.as_deref().ok_or_else(no_log)
    }
}

fn no_log() -> LedgerError {
    LedgerError::EventsUnavailable {
        reason: "this ledger keeps no log (no data folder, or sync mode `none`): the feed is read from the log".to_owned(),
    }
}
