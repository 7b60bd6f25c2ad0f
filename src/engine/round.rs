//! Collecting the account actors' replies of one round.
//!
//! A coordinator sends each account of a round one [`RunCommands`] with
//! `do_send` and waits for them all on one [`RoundReplies`], instead of one
//! `send` (a oneshot channel and a future each) per account: per message
//! that saves two allocations and a wake-up, and with uniform traffic there
//! is one message per operation.
//!
//! `do_send` drops a message silently when the actor's mailbox is closed.
//! Here a dropped message is noticed: a [`RunCommands`] that is dropped
//! before its commands ran answers each of them `shutting_down`, so a round
//! always ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use actix::Message;
use parking_lot::Mutex;

use crate::engine::command::Job;
use crate::error::LedgerError;

/// A reply with the batch position of its job.
pub type Reply<J> = (usize, Result<<J as Job>::Reply, LedgerError>);

/// Coordinator → account actor: run these jobs in order and deliver each
/// reply, with its position, to `replies`. The events wait in the shard
/// log; whoever awaits the replies must flush it and wait for durability
/// before acknowledging anything.
pub struct RunCommands<J: Job> {
    commands: Vec<(usize, J)>,
    replies: RoundReplies<J>,
    /// Set once the replies were delivered; a drop before that delivers
    /// refusals.
    delivered: bool,
}

impl<J: Job> Message for RunCommands<J> {
    type Result = ();
}

impl<J: Job> RunCommands<J> {
    pub fn new(commands: Vec<(usize, J)>, replies: RoundReplies<J>) -> Self {
        Self {
            commands,
            replies,
            delivered: false,
        }
    }

    /// The commands, in order, before they run.
    pub fn commands(&self) -> impl Iterator<Item = &J> + '_ {
        self.commands.iter().map(|(_, command)| command)
    }

    /// Runs every command through `run` and delivers the replies.
    pub fn answer_with(mut self, mut run: impl FnMut(J) -> Result<J::Reply, LedgerError>) {
        for (index, command) in std::mem::take(&mut self.commands) {
            self.replies.push((index, run(command)));
        }
        self.delivered = true;
        self.replies.message_done();
    }

    /// Answers every command with the same refusal.
    pub fn refuse(mut self, error: &LedgerError) {
        for (index, _) in std::mem::take(&mut self.commands) {
            self.replies.push((index, Err(error.clone())));
        }
        self.delivered = true;
        self.replies.message_done();
    }
}

impl<J: Job> Drop for RunCommands<J> {
    /// Never ran (the mailbox was closed): say so for each command rather
    /// than leave the round waiting forever. (After `answer_with` or
    /// `refuse` the commands are gone and this does nothing.)
    fn drop(&mut self) {
        if !self.delivered {
            for (index, _) in std::mem::take(&mut self.commands) {
                self.replies.push((index, Err(LedgerError::ShuttingDown)));
            }
            self.replies.message_done();
        }
    }
}

/// Where a round's replies gather; resolves once every message delivered.
pub struct RoundReplies<J: Job> {
    shared: Arc<Mutex<Gathered<J>>>,
}

impl<J: Job> Clone for RoundReplies<J> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Gathered<J: Job> {
    replies: Vec<Reply<J>>,
    messages_left: usize,
    waker: Option<Waker>,
}

impl<J: Job> RoundReplies<J> {
    /// Waits for `messages` deliveries holding `commands` replies in all.
    pub fn expecting(messages: usize, commands: usize) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Gathered {
                replies: Vec::with_capacity(commands),
                messages_left: messages,
                waker: None,
            })),
        }
    }

    fn push(&self, reply: Reply<J>) {
        self.shared.lock().replies.push(reply);
    }

    /// One message's replies are all in; the last wakes the waiter.
    fn message_done(&self) {
        let waker = {
            let mut gathered = self.shared.lock();
            gathered.messages_left = gathered.messages_left.saturating_sub(1);
            match gathered.messages_left {
                0 => gathered.waker.take(),
                _ => None,
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Every reply, in the order delivered, once all messages delivered.
    pub fn all(self) -> AllReplies<J> {
        AllReplies { round: self }
    }
}

/// The future of [`RoundReplies::all`].
pub struct AllReplies<J: Job> {
    round: RoundReplies<J>,
}

impl<J: Job> Future for AllReplies<J> {
    type Output = Vec<Reply<J>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut gathered = self.round.shared.lock();
        if gathered.messages_left == 0 {
            return Poll::Ready(std::mem::take(&mut gathered.replies));
        }
        match &gathered.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => gathered.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
