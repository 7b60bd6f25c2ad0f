//! `--rate OPS`: the open-loop load. Batches are scheduled at a fixed rate
//! — batch `i` at `t0 + i × batch / rate` — and each is sent at its time
//! whether or not earlier ones have answered, up to `--in-flight` batches
//! unanswered at once. Each op's latency runs from its batch's *scheduled*
//! start to its answer, so a batch that goes late (the cap was reached, or
//! the sender got no CPU) carries its wait in its latency instead of hiding
//! it (no coordinated omission). No batch is dropped: one that cannot go at
//! its time goes late, and is counted ([`RateFigures`]).
//!
//! The schedule runs on a thread of its own (`std::thread::sleep` wakes
//! within tens of µs; tokio's timer ticks in milliseconds) and hands each
//! batch to the runtime, where a task submits it, checks the answers and
//! records them.
//!
//! The ops come from one [`Stream`]: each batch carries the outcomes of the
//! withdrawals requested and answered since the last batch (oldest first,
//! at most a batch of them), then new ops to fill it. Once drawing stops
//! (the quota is used up, or `--duration` has passed) the slots go on
//! carrying outcomes until every withdrawal is settled; a slot with nothing
//! to carry sends nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burnledger::{CurrencyCode, Ledger, Operation, TransactionId};
use indicatif::ProgressBar;
use parking_lot::{Condvar, Mutex};
use tokio::runtime::Handle;

use super::engine::{bench_fee, check_answers, record, to_operation, usd, ClientReport};
use super::report::RateFigures;
use super::workload::{PlanOp, Stream};
use burnledger::FeeRequest;

/// A batch sent later than this after its scheduled start counts as late.
const LATE: Duration = Duration::from_millis(1);

/// The schedule.
pub struct Schedule {
    /// Ops per second offered.
    pub rate: u64,
    /// Ops per batch (and per slot of the schedule).
    pub batch: usize,
    /// Most batches unanswered at once.
    pub in_flight: usize,
    /// Stop drawing new ops after this long (else: at the stream's quota).
    pub duration: Option<Duration>,
}

/// What an open-loop run did.
pub struct OpenLoopRun {
    pub report: ClientReport,
    /// From the first slot to the last answer.
    pub seconds: f64,
    pub figures: RateFigures,
    /// Ops the stream drew (a request counting two): the baseline replays
    /// a stream with this quota, which draws the very same ops.
    pub drawn: u64,
}

/// Runs `stream` on `schedule`; returns once every batch has answered.
pub async fn run(
    ledger: &Ledger,
    stream: Stream,
    schedule: Schedule,
    progress: &ProgressBar,
) -> Result<OpenLoopRun, String> {
    let shared = Arc::new(Shared {
        owed: Mutex::new(VecDeque::new()),
        report: Mutex::new(ClientReport::new()?),
        last_answer: Mutex::new(None),
        busy: Mutex::new(0),
        freed: Condvar::new(),
    });
    let sender = Sender {
        ledger: ledger.clone(),
        shared: Arc::clone(&shared),
        runtime: Handle::current(),
        progress: progress.clone(),
        fee: bench_fee(ledger, usd()?),
        usd: usd()?,
    };
    let (figures, drawn, started) =
        tokio::task::spawn_blocking(move || sender.follow(stream, &schedule))
            .await
            .map_err(|e| format!("the open-loop sender failed: {e}"))?;
    // Every batch has answered (the sender saw none in flight).
    let last_answer = shared.last_answer.lock().unwrap_or(started);
    let report = std::mem::replace(&mut *shared.report.lock(), ClientReport::new()?);
    Ok(OpenLoopRun {
        report,
        seconds: last_answer.duration_since(started).as_secs_f64(),
        figures,
        drawn,
    })
}

/// What the sender and the batches' tasks share.
struct Shared {
    /// Withdrawals requested and answered, not yet settled: their ids and
    /// how they are to end.
    owed: Mutex<VecDeque<(TransactionId, bool)>>,
    report: Mutex<ClientReport>,
    last_answer: Mutex<Option<Instant>>,
    /// Batches sent and not yet answered.
    busy: Mutex<usize>,
    /// Signalled when a batch has answered.
    freed: Condvar,
}

impl Shared {
    /// Takes an in-flight slot, waiting while `max` are taken; returns
    /// whether it had to wait.
    fn take_slot(&self, max: usize) -> bool {
        let mut busy = self.busy.lock();
        let waited = *busy >= max;
        while *busy >= max {
            self.freed.wait(&mut busy);
        }
        *busy += 1;
        waited
    }

    /// Waits until a batch answers, for at most `at_most`; at once if
    /// outcomes are already owed. (Checked under the `busy` lock, which a
    /// batch's task takes after adding what it owes, to give its slot back
    /// and signal: the signal cannot come between the check and the wait.)
    fn await_answer(&self, at_most: Duration) {
        let mut busy = self.busy.lock();
        if *busy > 0 && self.owed.lock().is_empty() {
            self.freed.wait_for(&mut busy, at_most);
        }
    }

    /// Whether nothing is in flight and nothing owed. (A batch's task adds
    /// what it owes before giving its slot back, so reading in this order
    /// cannot miss an outcome.)
    fn settled(&self) -> bool {
        *self.busy.lock() == 0 && self.owed.lock().is_empty()
    }
}

/// An in-flight slot, given back when the batch's task ends, however it
/// ends.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.busy.lock() -= 1;
        self.0.freed.notify_one();
    }
}

/// One slot's ops; outcome `i` settles withdrawal `ids[i]` (so every
/// outcome here has its id: `to_operation` drops none).
struct Batch {
    sent: Vec<PlanOp>,
    ids: Vec<Option<TransactionId>>,
}

/// The schedule's thread.
struct Sender {
    ledger: Ledger,
    shared: Arc<Shared>,
    runtime: Handle,
    progress: ProgressBar,
    usd: CurrencyCode,
    /// With `--fees-and-limits`, each withdrawal's fee.
    fee: Option<FeeRequest>,
}

impl Sender {
    /// Sends a batch at each slot of the schedule until the stream is done
    /// and everything settled; returns the figures, the ops drawn and the
    /// start.
    fn follow(self, mut stream: Stream, schedule: &Schedule) -> (RateFigures, u64, Instant) {
        let slot_seconds = schedule.batch as f64 / schedule.rate as f64;
        let mut figures = RateFigures {
            offered_ops_per_sec: schedule.rate as f64,
            ..RateFigures::default()
        };
        let started = Instant::now();
        let stop = schedule.duration.map(|d| started + d);
        let mut drawing = true;
        for slot in 0u64.. {
            let due = started + Duration::from_secs_f64(slot as f64 * slot_seconds);
            sleep_until(due);
            drawing &= stop.is_none_or(|stop| due < stop);
            let batch = self.fill(&mut stream, &mut drawing, schedule.batch);
            if batch.sent.is_empty() {
                if !drawing && self.shared.settled() {
                    break;
                }
                // Only answers can bring work now: wait for one rather than
                // spin through slots already past.
                self.shared.await_answer(LATE);
                continue;
            }
            let waited = self.shared.take_slot(schedule.in_flight);
            count(&mut figures, batch.sent.len(), due.elapsed(), waited);
            self.send(batch, due);
        }
        (figures, stream.drawn(), started)
    }

    /// The next batch: the outcomes owed, then new ops while `drawing` (it
    /// turns false when the stream is used up).
    fn fill(&self, stream: &mut Stream, drawing: &mut bool, batch: usize) -> Batch {
        let (ids, mut sent): (Vec<_>, Vec<_>) = {
            let mut owed = self.shared.owed.lock();
            let n = owed.len().min(batch);
            owed.drain(..n)
                .enumerate()
                .map(|(i, (id, failed))| {
                    let request = i as u32;
                    (Some(id), PlanOp::Complete { request, failed })
                })
                .unzip()
        };
        if *drawing {
            for _ in 0..stream.room(sent.len()) {
                let Some(op) = stream.draw() else {
                    *drawing = false;
                    break;
                };
                sent.push(op);
            }
        }
        Batch { sent, ids }
    }

    /// Hands the batch to a task that submits it and records its answers,
    /// timed from `due`.
    fn send(&self, Batch { sent, ids }: Batch, due: Instant) {
        let ops: Vec<Operation> = sent
            .iter()
            .filter_map(|op| to_operation(*op, self.usd, self.fee.as_ref(), &ids))
            .collect();
        let slot = Slot(Arc::clone(&self.shared));
        let (ledger, shared, progress) = (
            self.ledger.clone(),
            Arc::clone(&self.shared),
            self.progress.clone(),
        );
        self.runtime.spawn(async move {
            let _slot = slot;
            let count = ops.len() as u64;
            let results = ledger.submit(ops).await;
            let answered = Instant::now();
            let mut owed = Vec::new();
            {
                let mut report = shared.report.lock();
                record(
                    &mut report.latency_us,
                    answered.saturating_duration_since(due),
                    count,
                );
                report.ops += count;
                check_answers(&mut report, &sent, results, |op, id| {
                    if let (PlanOp::Request { failed, .. }, Some(id)) = (op, id) {
                        owed.push((id, failed));
                    }
                });
            }
            shared.owed.lock().extend(owed);
            let mut last = shared.last_answer.lock();
            *last = Some(last.map_or(answered, |l| l.max(answered)));
            progress.inc(count);
        });
    }
}

/// Adds one batch of `ops`, sent `lag` after its scheduled start, to the
/// figures.
fn count(figures: &mut RateFigures, ops: usize, lag: Duration, waited: bool) {
    figures.batches += 1;
    figures.capped_batches += u64::from(waited);
    if lag > LATE {
        figures.late_batches += 1;
        figures.late_ops += ops as u64;
    }
    let lag_us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
    figures.send_lag_max_us = figures.send_lag_max_us.max(lag_us);
}

fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_means_over_a_millisecond_behind() {
        let mut figures = RateFigures::default();
        count(&mut figures, 10, Duration::from_micros(300), false);
        count(&mut figures, 7, Duration::from_micros(1_500), true);
        count(&mut figures, 5, LATE, false);
        let expected = RateFigures {
            offered_ops_per_sec: 0.0,
            batches: 3,
            late_batches: 1,
            late_ops: 7,
            capped_batches: 1,
            send_lag_max_us: 1_500,
        };
        assert_eq!(figures, expected);
    }

    /// A full cap holds the sender until a batch answers (whether it had
    /// to wait is checked end to end: `capped_batches` in
    /// tests/bench_cli.rs).
    #[test]
    fn a_full_cap_holds_the_sender_until_an_answer() {
        let shared = Arc::new(Shared {
            owed: Mutex::new(VecDeque::new()),
            report: Mutex::new(ClientReport::new().expect("report")),
            last_answer: Mutex::new(None),
            busy: Mutex::new(0),
            freed: Condvar::new(),
        });
        assert!(!shared.take_slot(1), "a free slot is taken at once");
        let first = Slot(Arc::clone(&shared));
        assert!(!shared.settled());
        let (sent, taken) = std::sync::mpsc::channel();
        let sender = Arc::clone(&shared);
        let waiter = std::thread::spawn(move || sent.send(sender.take_slot(1)));
        let held = taken.recv_timeout(Duration::from_millis(100));
        assert!(held.is_err(), "the slot was taken twice");
        drop(first);
        taken.recv().expect("the slot, once given back");
        waiter.join().expect("waiter").expect("sent");
        drop(Slot(Arc::clone(&shared)));
        assert!(shared.settled());
    }
}
