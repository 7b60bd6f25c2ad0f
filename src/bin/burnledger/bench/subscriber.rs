//! `bench --subscribe`: a feed subscriber attached for the whole run, as a
//! host's consumer would be. It reads every event from the log's first
//! record (`Ledger::subscribe(0)`) in batches of up to
//! `FEED_BATCH_MAX`, and records how far behind the engine it runs: each
//! batch's lag is the age of its newest event (now minus the event's
//! stamp, in ms). When the load stops it reads on until nothing is left
//! and reports how long that took (`catch_up_ms`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use burnledger::{Ledger, FEED_BATCH_MAX};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the subscriber saw.
#[derive(Serialize)]
pub struct SubscriberFigures {
    /// Events read.
    pub events: u64,
    /// The age of each batch's newest event when read, in ms.
    pub lag_ms_p50: u64,
    pub lag_ms_p99: u64,
    pub lag_ms_max: u64,
    /// From the end of the load to the subscriber having read everything.
    pub catch_up_ms: f64,
}

/// A running subscriber.
pub struct Subscriber {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(SubscriberFigures, Instant), String>>,
}

impl Subscriber {
    /// Subscribes from the log's start and reads in a task of its own.
    pub fn attach(ledger: &Ledger) -> Result<Self, String> {
        let mut subscription = ledger
            .subscribe(0)
            .map_err(|e| format!("bench --subscribe: {e}"))?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut lag = Histogram::<u64>::new(3).map_err(|e| format!("histogram: {e}"))?;
            let mut events = 0u64;
            loop {
                let stopping = *stopped.borrow_and_update();
                let wait = if stopping {
                    Duration::ZERO
                } else {
                    Duration::from_millis(50)
                };
                let batch = subscription
                    .next(FEED_BATCH_MAX, wait)
                    .await
                    .map_err(|e| format!("bench --subscribe: {e}"))?;
                let Some(newest) = batch.last() else {
                    if stopping {
                        break;
                    }
                    continue;
                };
                events += batch.len() as u64;
                let stamped = newest.time_ms.unwrap_or(0);
                lag.record(now_ms().saturating_sub(stamped))
                    .map_err(|e| format!("histogram: {e}"))?;
            }
            let figures = SubscriberFigures {
                events,
                lag_ms_p50: lag.value_at_quantile(0.50),
                lag_ms_p99: lag.value_at_quantile(0.99),
                lag_ms_max: lag.max(),
                catch_up_ms: 0.0,
            };
            Ok((figures, Instant::now()))
        });
        Ok(Self { stop, task })
    }

    /// Tells it the load is over; waits until it has read everything.
    pub async fn finish(self) -> Result<SubscriberFigures, String> {
        let stopped_at = Instant::now();
        let _ = self.stop.send(true);
        let (mut figures, done) = self
            .task
            .await
            .map_err(|e| format!("bench --subscribe: {e}"))??;
        figures.catch_up_ms = done.duration_since(stopped_at).as_secs_f64() * 1e3;
        Ok(figures)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
