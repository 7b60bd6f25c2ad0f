//! One shard's events on their way to the journal, the shard's current
//! stamp (the time its events carry), the shard's gauges (withdrawals by
//! currency and status) that those events move, and what recording them
//! leaves to do: the fee credits completions owe accounts of any shard
//! (made once durable) and the expiries new withdrawals set (see
//! `expiry.rs`).
//!
//! Stamps: the coordinator [`ticks`](ShardLog::tick) once per scheduling
//! round (one clock read); every command an actor runs until the next tick
//! is applied, and its event logged, with that stamp. Everything of a
//! shard runs on its one thread and a tick never goes back, so the stamps
//! of a shard's events, in log order, never decrease.
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
//! [`execute`](crate::engine::command::execute), which sees every change,
//! whether or not the journal keeps events (a memory-only ledger has
//! gauges too).
//!
//! So does the shard's poison: an internal error while applying a command
//! (a check of the rules failed: a bug) may have left an account's memory
//! apart from its log, so from then on every write on the shard is refused
//! (`poisoned`, until a restart rebuilds the state from the log), while
//! reads are still served. A storage failure poisons the whole ledger
//! instead (the journal's poison), reads included.

use std::cell::{OnceCell, RefCell, RefMut};
use std::future::Future;
use std::rc::Rc;

use actix::Recipient;

use std::cell::Cell;

use crate::domain::event::{Event, Stamped};
use crate::domain::gauges::WithdrawalGauges;
use crate::domain::ids::{AccountId, TransactionId};
use crate::domain::time::UnixMs;
use crate::engine::batch::AccountRun;
use crate::engine::command::{CollectFee, WithdrawalCommand};
use crate::engine::expiry::Expiries;
use crate::engine::messages::WithdrawalQueued;
use crate::engine::router::Router;
use crate::engine::stamp::Stamper;
use crate::error::LedgerError;
use crate::storage::journal::Journal;
use crate::storage::wal::BATCH_EVENTS_MAX;
use tokio::sync::Notify;

/// Shared (through an `Rc`) by a shard's coordinator and its account actors;
/// never leaves the shard's thread.
pub struct ShardLog {
    journal: Journal,
    /// Where the shard's stamps come from, and the current one.
    stamper: Stamper,
    now: Cell<UnixMs>,
    /// Events applied in memory and not yet handed to the journal.
    events: RefCell<Vec<Stamped>>,
    /// Payout notices for withdrawals among those events, sent once they
    /// are durable (a payout must never take a withdrawal the disk lacks).
    notices: RefCell<Vec<WithdrawalQueued>>,
    /// Completions among those events whose fee goes to an account (on
    /// any shard) other than the withdrawal's: credited there once they
    /// are durable, so the fee account's later events always follow them
    /// in the log (replay credits the fee at the completion's place).
    fee_credits: RefCell<Vec<(AccountId, CollectFee)>>,
    /// How fee credits reach their accounts; unset in tests of one shard.
    fee_router: OnceCell<Router>,
    /// The shard's withdrawals that carry an expiry (see `expiry.rs`).
    expiries: RefCell<Expiries>,
    /// Told when a withdrawal expiring before every other one is noted:
    /// the coordinator's expiry alarm then re-arms sooner.
    sooner_expiry: Rc<Notify>,
    payouts: Option<Recipient<WithdrawalQueued>>,
    /// The shard's withdrawals by currency and status, as applied in memory.
    gauges: RefCell<WithdrawalGauges>,
    /// This shard's number, for messages.
    shard: usize,
    /// Why the shard refuses writes, once an internal error poisoned it.
    broken: OnceCell<String>,
}

impl ShardLog {
    /// `gauges` counts the shard's recovered withdrawals.
    pub fn new(
        shard: usize,
        journal: Journal,
        payouts: Option<Recipient<WithdrawalQueued>>,
        gauges: WithdrawalGauges,
        stamper: Stamper,
    ) -> Self {
        Self {
            journal,
            now: Cell::new(stamper.stamp()),
            stamper,
            events: RefCell::new(Vec::new()),
            notices: RefCell::new(Vec::new()),
            fee_credits: RefCell::new(Vec::new()),
            fee_router: OnceCell::new(),
            expiries: RefCell::new(Expiries::default()),
            sooner_expiry: Rc::new(Notify::new()),
            payouts,
            gauges: RefCell::new(gauges),
            shard,
            broken: OnceCell::new(),
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

    /// Why reads are refused, if they are: the ledger is poisoned by a
    /// storage failure (memory may hold changes the disk lacks).
    pub fn read_refusal(&self) -> Option<LedgerError> {
        self.journal.poisoned()
    }

    /// Why writes on this shard are refused, if they are: the ledger's
    /// storage failure, or this shard's internal error.
    pub fn write_refusal(&self) -> Option<LedgerError> {
        self.journal.poisoned().or_else(|| self.broken_refusal())
    }

    /// Why this shard refuses writes after an internal error, if it does.
    /// Cheap enough to ask before every command.
    pub fn broken_refusal(&self) -> Option<LedgerError> {
        let reason = self.broken.get()?;
        Some(LedgerError::Poisoned {
            reason: reason.clone(),
        })
    }

    /// Poisons the shard after `error`, an internal error from applying a
    /// command: every later write on it is refused.
    pub fn poison(&self, error: &LedgerError) {
        let reason = format!(
            "shard {} refuses writes after an internal error (a bug, not a storage failure): \
             {error}; reads are still served, a restart rebuilds the state from the log",
            self.shard
        );
        if self.broken.set(reason).is_ok() {
            tracing::error!(shard = self.shard, %error, "shard poisoned: it refuses every write until restarted");
        }
    }

    /// Reads the clock for the round about to run: its commands' events
    /// carry this stamp.
    pub fn tick(&self) {
        self.now.set(self.stamper.stamp());
    }

    /// The current stamp: the time the commands run now apply and log.
    pub fn now(&self) -> UnixMs {
        self.now.get()
    }

    /// Whether anyone is told of newly pending withdrawals.
    pub fn wants_notices(&self) -> bool {
        self.payouts.is_some()
    }

    /// The withdrawals of recovered accounts that carry an expiry.
    pub fn note_expiries(&self, expiries: Expiries) {
        *self.expiries.borrow_mut() = expiries;
        self.sooner_expiry.notify_one();
    }

    /// The earliest expiry not yet taken, and what tells of a sooner one
    /// (the coordinator's alarm waits for either).
    pub fn next_expiry(&self) -> (Option<UnixMs>, Rc<Notify>) {
        let next = self.expiries.borrow().next();
        (next, Rc::clone(&self.sooner_expiry))
    }

    /// The expiry jobs due at `now` (see `expiry.rs`).
    pub fn take_due_expiries(&self, now: UnixMs) -> Vec<AccountRun<WithdrawalCommand>> {
        self.expiries.borrow_mut().take_due(now)
    }

    /// Routes the fee account's side of this shard's completions.
    pub fn collect_fees_through(&self, router: Router) {
        let _ = self.fee_router.set(router);
    }

    /// Keeps an applied event for the next flush (and its fee credit for
    /// after it). A memory-only journal keeps no events, so they cost
    /// nothing; fee credits are still made.
    pub fn record(&self, event: Stamped) {
        if let Some((tx, at)) = expiry_of(&event.event) {
            if self.expiries.borrow_mut().note(tx, at) {
                self.sooner_expiry.notify_one();
            }
        }
        if let Some(credit) = fee_credit_of(&event.event) {
            self.fee_credits.borrow_mut().push((credit.fee.to, credit));
        }
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
        let fee_credits = std::mem::take(&mut *self.fee_credits.borrow_mut());
        let fee_router = self.fee_router.get().cloned();
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
            // Before the round answers, so a caller who reads the fee
            // account after its completion finds the fee there.
            if let (Some(router), false) = (fee_router, fee_credits.is_empty()) {
                router.collect_fees(fee_credits).await;
            }
            Ok(())
        }
    }
}

/// A new withdrawal's expiry, if it carries one.
fn expiry_of(event: &Event) -> Option<(TransactionId, UnixMs)> {
    match event {
        Event::WithdrawalRequested {
            tx,
            details: Some(details),
            ..
        } => details.expires_at.map(|at| (*tx, at)),
        _ => None,
    }
}

/// The fee credit a completion makes, if its fee account is not the
/// withdrawal's own account (whose side of the event already applied it).
fn fee_credit_of(event: &Event) -> Option<CollectFee> {
    match event {
        Event::WithdrawalCompleted {
            tx, fee: Some(fee), ..
        } if fee.to != tx.account() => Some(CollectFee { tx: *tx, fee: *fee }),
        _ => None,
    }
}
