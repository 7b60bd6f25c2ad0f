//! The payout actor's timers, all on the ledger's clock
//! ([`Config::clock`](crate::Config::clock)), so tests drive them:
//! - the batch interval: every `interval_secs` a run pays what is queued
//!   (batched mode);
//! - the retry timer: set for the earliest payout whose retry backoff runs
//!   out, and set again whenever that changes (after each run and each
//!   resolution); it runs the retries then due;
//! - the requeued run: items the shards refused to take (see
//!   [`run::pay`](super::run)) are tried again after a short wait in
//!   immediate mode; in batched mode they go with the next interval's run.

use std::time::Duration;

use actix::prelude::*;

use super::PayoutActor;
use crate::domain::payouts::PayoutMode;
use crate::engine::messages::RunPayouts;

/// In immediate mode, how long items the shards refused to take wait before
/// the next run tries them again.
pub const REQUEUED_RETRY_MS: u64 = 100;

impl PayoutActor {
    /// In batched mode, a run of new payouts every interval.
    pub(super) fn arm_batch_timer(&self, ctx: &mut Context<Self>) {
        let PayoutMode::Batched { interval_secs } = self.mode else {
            return;
        };
        let tick = self.clock.sleep(Duration::from_secs(interval_secs.max(1)));
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(tick).map(|(), actor, ctx| {
                ctx.notify(RunPayouts {
                    force_retries: false,
                    new_payouts: true,
                });
                actor.arm_batch_timer(ctx);
            }),
        );
    }

    /// Sets the retry timer for the earliest retry due, if it is not set
    /// for that time already. O(log awaiting).
    pub(super) fn arm_retry_timer(&mut self, ctx: &mut Context<Self>) {
        let next = self.due.first().map(|(at, _)| *at);
        if let (Some(at), Some((armed, _))) = (next, &self.retry_timer) {
            if *armed == at {
                return;
            }
        }
        if let Some((_, timer)) = self.retry_timer.take() {
            ctx.cancel_future(timer);
        }
        let Some(at) = next else { return };
        let wait = self.clock.sleep(at.saturating_sub(self.clock.elapsed()));
        let timer = ctx.spawn(
            actix::fut::wrap_future::<_, Self>(wait).map(|(), actor, ctx| {
                actor.retry_timer = None;
                if actor.retry_due(actor.clock.elapsed()) {
                    // The run sets the timer again when it ends.
                    ctx.notify(RunPayouts {
                        force_retries: false,
                        new_payouts: false,
                    });
                } else {
                    actor.arm_retry_timer(ctx);
                }
            }),
        );
        self.retry_timer = Some((at, timer));
    }

    /// Items the shards refused to take (overloaded, say) are paid by a
    /// later run: in immediate mode one [`REQUEUED_RETRY_MS`] from now, in
    /// batched mode the next interval's. Never dropped, never paid twice:
    /// they were not claimed.
    pub(super) fn pay_requeued_later(&mut self, ctx: &mut Context<Self>) {
        if self.mode != PayoutMode::Immediate || self.requeued_run_armed {
            return;
        }
        self.requeued_run_armed = true;
        let wait = self.clock.sleep(Duration::from_millis(REQUEUED_RETRY_MS));
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(wait).map(|(), actor, ctx| {
                actor.requeued_run_armed = false;
                ctx.notify(RunPayouts {
                    force_retries: false,
                    new_payouts: true,
                });
            }),
        );
    }
}
