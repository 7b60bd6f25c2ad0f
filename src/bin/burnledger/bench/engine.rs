//! The engine side: funding the accounts (untimed), then client tasks
//! driving `Ledger::submit` with one batch in flight each, checking every
//! answer and recording each batch's latency. The plan-op → `Operation`
//! conversion, the answer checks and the latency recording are shared with
//! the open loop (`rate.rs`).

use std::time::{Duration, Instant};

use burnledger::{
    CurrencyCode, Decimal, FeeRequest, Ledger, LedgerError, Operation, Outcome, TransactionId,
    WithdrawalOptions, WithdrawalOutcome, WithdrawalStatus,
};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::task::JoinSet;

use super::workload::{PlanOp, Stream, ACCOUNT_FIRST, DECIMALS, FUNDING_UNITS};

/// Deposits per `submit` while funding: large batches make setup fast, and
/// stay well under the engine's default `batch_ops_max` (65,536).
pub const SETUP_BATCH: usize = 16_384;

/// Highest latency the histograms track: an hour, in microseconds. Larger
/// values are clamped to it (a bench that slow has other problems).
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// The reason sent with a failed withdrawal's outcome.
const FAILURE_REASON: &str = "bench: refused by the payment service";

pub fn usd() -> Result<CurrencyCode, String> {
    CurrencyCode::new("USD").map_err(|e| format!("bench currency: {e}"))
}

/// The fee every withdrawal of a run with `--fees-and-limits` carries:
/// 0.01 USD, when the ledger has a fee account to collect it.
pub fn bench_fee(ledger: &Ledger, usd: CurrencyCode) -> Option<FeeRequest> {
    ledger.config().fee_account.map(|_| FeeRequest {
        currency: usd,
        amount: Decimal::new(1, DECIMALS),
    })
}

pub fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).map_err(|e| format!("histogram: {e}"))
}

/// Gives every account its opening balance: batches of [`SETUP_BATCH`]
/// deposits, `in_flight` batches at once.
pub async fn fund(
    ledger: &Ledger,
    accounts: u64,
    in_flight: usize,
    progress: &ProgressBar,
) -> Result<(), String> {
    let amount = Decimal::new(FUNDING_UNITS, DECIMALS);
    let usd = usd()?;
    let chunks = accounts.div_ceil(SETUP_BATCH as u64);
    let mut tasks = JoinSet::new();
    for worker in 0..in_flight as u64 {
        let (ledger, progress) = (ledger.clone(), progress.clone());
        tasks.spawn(async move {
            // Worker `w` takes chunks w, w + in_flight, w + 2 × in_flight…
            for chunk in (worker..chunks).step_by(in_flight) {
                let first = ACCOUNT_FIRST + chunk * SETUP_BATCH as u64;
                let end = (first + SETUP_BATCH as u64).min(ACCOUNT_FIRST + accounts);
                let ops: Vec<_> = (first..end)
                    .map(|account| Operation::Deposit {
                        account,
                        currency: usd,
                        amount,
                        idempotency_key: None,
                        metadata: Default::default(),
                    })
                    .collect();
                for result in ledger.submit(ops).await {
                    if let Err(error) = result {
                        return Err(format!("funding the accounts: {error}"));
                    }
                }
                progress.inc(end - first);
            }
            Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| format!("a funding task failed: {e}"))??;
    }
    Ok(())
}

/// Runs one client task per stream, each with one batch in flight, for
/// their quotas or until `duration` has passed; returns what each did and
/// the seconds from the first start to the last end.
pub async fn run_clients(
    ledger: &Ledger,
    streams: Vec<Stream>,
    duration: Option<Duration>,
    progress: &ProgressBar,
) -> Result<(Vec<ClientReport>, f64), String> {
    let usd = usd()?;
    // Made before the clock starts: nothing but the clients is timed.
    let reports = streams
        .iter()
        .map(|_| ClientReport::new())
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let tasks: Vec<_> = streams
        .into_iter()
        .zip(reports)
        .map(|(stream, report)| {
            let (ledger, progress) = (ledger.clone(), progress.clone());
            tokio::spawn(client(ledger, stream, deadline, progress, usd, report))
        })
        .collect();
    let mut reports = Vec::with_capacity(tasks.len());
    for task in tasks {
        reports.push(
            task.await
                .map_err(|e| format!("a client task failed: {e}"))?,
        );
    }
    Ok((reports, started.elapsed().as_secs_f64()))
}

/// What one client task did.
pub struct ClientReport {
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Microseconds from `submit` to its answer, once per op.
    pub latency_us: Histogram<u64>,
    /// Batches drawn with new ops allowed: the baseline replays the stream
    /// with exactly as many (see `Stream::next_batch`).
    pub draws: u64,
}

impl ClientReport {
    pub fn new() -> Result<Self, String> {
        Ok(Self {
            ops: 0,
            errors: 0,
            first_error: None,
            latency_us: new_histogram()?,
            draws: 0,
        })
    }
}

/// One client: keeps one batch in flight until its stream is done, or
/// until `deadline`, after which it only settles the withdrawals it owes.
async fn client(
    ledger: Ledger,
    mut stream: Stream,
    deadline: Option<Instant>,
    progress: ProgressBar,
    usd: CurrencyCode,
    mut report: ClientReport,
) -> ClientReport {
    let mut plan = Vec::new();
    // The plan ops actually sent (an outcome whose request failed is not).
    let mut sent: Vec<PlanOp> = Vec::new();
    // Ids of the previous batch's requests, in order; `None` if it failed.
    let mut requested: Vec<Option<TransactionId>> = Vec::new();
    let fee = bench_fee(&ledger, usd);
    loop {
        let draw_new = deadline.is_none_or(|d| Instant::now() < d);
        report.draws += u64::from(draw_new);
        stream.next_batch(draw_new, &mut plan);
        if plan.is_empty() {
            return report;
        }
        sent.clear();
        let ops: Vec<Operation> = plan
            .iter()
            .filter_map(|op| {
                let operation = to_operation(*op, usd, fee.as_ref(), &requested)?;
                sent.push(*op);
                Some(operation)
            })
            .collect();
        let count = ops.len() as u64;
        let started = Instant::now();
        let results = ledger.submit(ops).await;
        record(&mut report.latency_us, started.elapsed(), count);
        report.ops += count;
        requested.clear();
        check_answers(&mut report, &sent, results, |_, id| requested.push(id));
        progress.inc(count);
    }
}

/// Checks each answer against the op it answers, counting in `report` each
/// that is wrong (and each op left without an answer); calls `requested`
/// with every request and its new withdrawal's id, `None` if it failed.
pub fn check_answers(
    report: &mut ClientReport,
    sent: &[PlanOp],
    results: Vec<Result<Outcome, LedgerError>>,
    mut requested: impl FnMut(PlanOp, Option<TransactionId>),
) {
    // An op without an answer (or an answer without an op) is an error each.
    let unmatched = sent.len().abs_diff(results.len());
    if unmatched > 0 {
        report.errors += unmatched as u64;
        report
            .first_error
            .get_or_insert_with(|| format!("{} ops sent, {} answers", sent.len(), results.len()));
    }
    for (op, result) in sent.iter().zip(results) {
        let id = check(*op, result).unwrap_or_else(|problem| {
            report.errors += 1;
            report
                .first_error
                .get_or_insert_with(|| format!("{op:?}: {problem}"));
            None
        });
        if matches!(op, PlanOp::Request { .. }) {
            requested(*op, id);
        }
    }
}

/// Records one batch's latency for each of its `ops`.
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration, ops: u64) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record_n(micros, ops);
}

/// The engine operation for a plan op; `None` for the outcome of a
/// request that failed (that failure was already counted).
pub fn to_operation(
    op: PlanOp,
    usd: CurrencyCode,
    fee: Option<&FeeRequest>,
    requested: &[Option<TransactionId>],
) -> Option<Operation> {
    let amount = |units| Decimal::new(units, DECIMALS);
    Some(match op {
        PlanOp::Request { account, units, .. } => Operation::RequestWithdrawal {
            account,
            currency: usd,
            amount: amount(units),
            idempotency_key: None,
            options: WithdrawalOptions {
                fee: fee.cloned(),
                ..WithdrawalOptions::default()
            },
        },
        PlanOp::Complete { request, failed } => Operation::CompleteWithdrawal {
            transaction_id: (*requested.get(request as usize)?)?,
            outcome: if failed {
                WithdrawalOutcome::Failed {
                    reason: FAILURE_REASON.into(),
                }
            } else {
                WithdrawalOutcome::Completed
            },
        },
        PlanOp::Deposit { account, units } => Operation::Deposit {
            account,
            currency: usd,
            amount: amount(units),
            idempotency_key: None,
            metadata: Default::default(),
        },
        PlanOp::Transfer { from, to, units } => Operation::Transfer {
            from,
            to,
            currency: usd,
            amount: amount(units),
            idempotency_key: None,
            metadata: Default::default(),
        },
    })
}

/// Checks an answer is the one the op must get (every account is funded
/// far beyond what the run moves, so any refusal is a failure). Returns the
/// new withdrawal's id for a request.
pub fn check(
    op: PlanOp,
    result: Result<Outcome, LedgerError>,
) -> Result<Option<TransactionId>, String> {
    let outcome = result.map_err(|e| format!("refused: {e} ({})", e.code()))?;
    match (op, &outcome) {
        (PlanOp::Request { .. }, Outcome::Withdrawal(w))
            if w.status == WithdrawalStatus::Pending =>
        {
            Ok(Some(w.transaction_id))
        }
        (PlanOp::Complete { failed: false, .. }, Outcome::Withdrawal(w))
            if w.status == WithdrawalStatus::Completed =>
        {
            Ok(None)
        }
        (PlanOp::Complete { failed: true, .. }, Outcome::Withdrawal(w))
            if matches!(w.status, WithdrawalStatus::Failed { .. }) =>
        {
            Ok(None)
        }
        (PlanOp::Deposit { .. }, Outcome::Deposited(_))
        | (PlanOp::Transfer { .. }, Outcome::Transferred(_)) => Ok(None),
        _ => Err(format!("unexpected answer {outcome:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burnledger::Withdrawal;

    fn withdrawal(status: WithdrawalStatus) -> Result<Outcome, LedgerError> {
        Ok(Outcome::Withdrawal(Withdrawal {
            transaction_id: TransactionId::new(7, 1),
            account: 7,
            currency: usd().expect("USD"),
            amount: Decimal::new(100, DECIMALS),
            status,
            payout_id: None,
            created_at: None,
            updated_at: None,
            destination: None,
            expires_at: None,
            fee: None,
            metadata: Default::default(),
            paid: None,
        }))
    }

    #[test]
    fn only_the_expected_answer_passes() {
        let request = PlanOp::Request {
            account: 7,
            units: 100,
            failed: false,
        };
        let id = check(request, withdrawal(WithdrawalStatus::Pending)).expect("pending");
        assert_eq!(id, Some(TransactionId::new(7, 1)));
        let refused = Err(LedgerError::Overloaded { shard: 0, limit: 1 });
        assert!(check(request, refused).is_err());
        let complete = PlanOp::Complete {
            request: 0,
            failed: false,
        };
        assert!(check(complete, withdrawal(WithdrawalStatus::Completed)).is_ok());
        let failed = WithdrawalStatus::Failed {
            reason: FAILURE_REASON.into(),
        };
        assert!(check(complete, withdrawal(failed)).is_err());
        let deposit = PlanOp::Deposit {
            account: 7,
            units: 1,
        };
        assert!(check(deposit, withdrawal(WithdrawalStatus::Pending)).is_err());
    }

    #[test]
    fn an_outcome_whose_request_failed_is_not_sent() {
        let usd = usd().expect("USD");
        let requested = [Some(TransactionId::new(3, 9)), None];
        let complete = |request| PlanOp::Complete {
            request,
            failed: true,
        };
        let sent = to_operation(complete(0), usd, None, &requested).expect("sent");
        assert!(matches!(
            sent,
            Operation::CompleteWithdrawal {
                outcome: WithdrawalOutcome::Failed { .. },
                ..
            }
        ));
        assert_eq!(to_operation(complete(1), usd, None, &requested), None);
        assert_eq!(to_operation(complete(2), usd, None, &requested), None);
    }
}
