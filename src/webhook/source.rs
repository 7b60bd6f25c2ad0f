//! The ledger as the delivery loop's [`EventSource`]: the consumer's
//! durable cursor ([`Ledger::consumer`], registered with [`Ledger::ack`]
//! at 0 when new, so the log keeps its events from then on), a
//! [`Subscription`] after it (which ends with `shutting_down` when the
//! ledger shuts down), acknowledgements through [`Ledger::ack`].

use std::time::Duration;

use crate::domain::feed::FeedEvent;
use crate::error::LedgerError;
use crate::ledger::{Ledger, Subscription};

use super::deliver::EventSource;

pub(crate) struct LedgerSource {
    ledger: Ledger,
    subscription: Option<Subscription>,
}

impl LedgerSource {
    pub(crate) fn new(ledger: Ledger) -> Self {
        Self {
            ledger,
            subscription: None,
        }
    }
}

impl EventSource for LedgerSource {
    async fn resume(&mut self, consumer: &str) -> Result<u64, LedgerError> {
        self.subscription = None;
        let after = match self.ledger.consumer(consumer)? {
            Some(cursor) => cursor.lsn,
            None => {
                self.ledger.ack(consumer, 0).await?;
                0
            }
        };
        self.subscription = Some(self.ledger.subscribe(after)?);
        Ok(after)
    }

    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<FeedEvent>, LedgerError> {
        let Some(subscription) = &mut self.subscription else {
            return Err(LedgerError::EventsUnavailable {
                reason: "the webhook's feed is not open".to_owned(),
            });
        };
        subscription.next(max, wait).await
    }

    async fn ack(&mut self, consumer: &str, lsn: u64) -> Result<(), LedgerError> {
        self.ledger.ack(consumer, lsn).await
    }
}
