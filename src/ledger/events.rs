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

use std::time::Duration;

use crate::domain::feed::FeedEvent;
use crate::error::LedgerError;

use super::Ledger;

/// Most events one [`Subscription::next`] returns.
pub const FEED_BATCH_MAX: usize = 10_000;

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
    position: u64,
}

impl Subscription {
    /// The LSN of the last event returned (the `after` it was opened with,
    /// before the first).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next events after [`position`](Self::position), in LSN order,
    /// at most `max` (1 to [`FEED_BATCH_MAX`]): whatever is durable now, or,
    /// when nothing is, the first that become durable within `wait` (on the
    /// ledger's clock); empty when none did. `cursor_expired` when the log
    /// no longer holds the next event.
    pub async fn next(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<FeedEvent>, LedgerError> {
        let _ = (max, wait);
        Err(unbuilt())
    }
}

fn unbuilt() -> LedgerError {
    LedgerError::EventsUnavailable {
        reason: "the event feed is being built".to_owned(),
    }
}

impl Ledger {
    /// Reads the feed from the event after LSN `after` (0: from the log's
    /// first record). `cursor_expired` if the log no longer holds it;
    /// `events_unavailable` on a ledger without a log.
    pub fn subscribe(&self, after: u64) -> Result<Subscription, LedgerError> {
        let _ = after;
        Err(unbuilt())
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
    /// `lsn` past the durable LSN is `invalid_consumer`; one the log no
    /// longer holds the event after is `cursor_expired`.
    pub async fn ack(&self, consumer: &str, lsn: u64) -> Result<(), LedgerError> {
        let _ = (consumer, lsn);
        Err(unbuilt())
    }

    /// `consumer`'s cursor, `None` if it has none.
    pub fn consumer(&self, consumer: &str) -> Result<Option<ConsumerCursor>, LedgerError> {
        let _ = consumer;
        Err(unbuilt())
    }

    /// Every consumer's cursor, by name.
    pub fn consumers(&self) -> Result<Vec<ConsumerCursor>, LedgerError> {
        Err(unbuilt())
    }

    /// Forgets `consumer` (it no longer holds the log back); whether it
    /// existed.
    pub async fn remove_consumer(&self, consumer: &str) -> Result<bool, LedgerError> {
        let _ = consumer;
        Err(unbuilt())
    }
}
