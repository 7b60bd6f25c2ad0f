//! One shard's events on their way to the journal, and the shard's gauges
//! (withdrawals by currency and status) that those events move.
//!
//! Account actors run a command, record its events here and answer at once;
//! the coordinator then flushes the shard's events to the journal with ONE
//! append per scheduling round and acknowledges the round's operations when
//! that append is durable. Appending once per account message instead cost a
//! WAL request, a oneshot and a boxed future per operation, which was most of
//! the time an operation spent in the engine.
//!
//! Order: every actor of a shard runs on the shard's one thread, so the
//! buffer holds events in the order they were applied, and flushes go to the
//! journal in that order. A flush that finds the buffer empty (another
//! round's flush took its events) is a barrier: it still resolves only once
//! everything recorded before it is durable, so nothing is acknowledged
//! ahead of the disk.
//!
//! The gauges live here because this is what the shard's coordinator and
//! its account actors share; they are moved by
//! [`execute`](crate::engine::account::execute), which sees every change,
//! whether or not the journal keeps events (a memory-only ledger has
//! gauges too).

use std::cell::{RefCell, RefMut};
use std::future::Future;

use actix::Recipient;

use crate::domain::event::Event;
use crate::domain::gauges::WithdrawalGauges;
use crate::engine::messages::WithdrawalQueued;
use crate::error::LedgerError;
use crate::storage::journal::Journal;
use crate::storage::wal::BATCH_EVENTS_MAX;

/// Shared (through an `Rc`) by a shard's coordinator and its account actors;
/// never leaves the shard's thread.
pub struct ShardLog {
    journal: Journal,
    /// Events applied in memory and not yet handed to the journal.
    events: RefCell<Vec<Event>>,
    /// Payout notices for withdrawals among those events, sent once they
    /// are durable (a payout must never take a withdrawal the disk lacks).
    notices: RefCell<Vec<WithdrawalQueued>>,
    payouts: Option<Recipient<WithdrawalQueued>>,
    /// The shard's withdrawals by currency and status, as applied in memory.
    gauges: RefCell<WithdrawalGauges>,
}

impl ShardLog {
    /// `gauges` counts the shard's recovered withdrawals.
    pub fn new(
        journal: Journal,
        payouts: Option<Recipient<WithdrawalQueued>>,
        gauges: WithdrawalGauges,
    ) -> Self {
        Self {
            journal,
            events: RefCell::new(Vec::new()),
            notices: RefCell::new(Vec::new()),
            payouts,
            gauges: RefCell::new(gauges),
        }
    }

    /// The gauges, to move while an actor runs commands; `None` only if
    /// they are already borrowed, which on this one thread is a bug.
    pub fn gauges_mut(&self) -> Option<RefMut<'_, WithdrawalGauges>> {
        self.gauges.try_borrow_mut().ok()
    }

    /// A copy of the gauges (a few entries per currency); `None` as above.
    pub fn gauges(&self) -> Option<WithdrawalGauges> {
        self.gauges.try_borrow().ok().map(|g| g.clone())
    }

    /// Why the journal refuses writes, if it does.
    pub fn poisoned(&self) -> Option<LedgerError> {
        self.journal.poisoned()
    }

    /// Whether anyone is told of newly pending withdrawals.
    pub fn wants_notices(&self) -> bool {
        self.payouts.is_some()
    }

    /// Keeps an applied event for the next flush. A memory-only journal
    /// keeps nothing, so it costs nothing.
    pub fn record(&self, event: Event) {
        if self.journal.is_logged() {
            self.events.borrow_mut().push(event);
        }
    }

    /// Keeps a payout notice to send once the events before it are durable.
    pub fn notify_when_durable(&self, notice: WithdrawalQueued) {
        if self.payouts.is_some() {
            self.notices.borrow_mut().push(notice);
        }
    }

    /// Hands every recorded event to the journal — at once, when called,
    /// so a later flush on any shard gets later LSNs; the future resolves
    /// once they, and everything recorded before them, are durable. Then
    /// sends the payout notices they carry.
    pub fn flush(&self) -> impl Future<Output = Result<(), LedgerError>> + 'static {
        // The next round's buffer starts at this one's size, not empty, so
        // it does not grow through reallocations every round.
        let mut events = {
            let mut buffer = self.events.borrow_mut();
            let capacity = buffer.len();
            std::mem::replace(&mut *buffer, Vec::with_capacity(capacity))
        };
        let notices = std::mem::take(&mut *self.notices.borrow_mut());
        // The WAL takes at most BATCH_EVENTS_MAX events per append; a
        // larger flush goes as several appends, queued in order at once.
        let mut earlier = Vec::new();
        while events.len() > BATCH_EVENTS_MAX {
            let rest = events.split_off(BATCH_EVENTS_MAX);
            earlier.push(self.journal.append(std::mem::replace(&mut events, rest)));
        }
        let last = self.journal.append(events);
        let payouts = self.payouts.clone();
        async move {
            for append in earlier {
                append.await?;
            }
            last.await?;
            if let Some(payouts) = payouts {
                for notice in notices {
                    payouts.do_send(notice);
                }
            }
            Ok(())
        }
    }
}
