//! Caller updates racing the engine's own payouts (issue 11, item 4).
//!
//! Each case: a payout mode (immediate or batched), a faulty bank (item
//! failures, unknown outcomes, lost responses, pending items, a random
//! latency of 0–2 ms per call), 2–6 accounts with deposits and 1–16
//! withdrawals requested one by one; then, all launched at once as tokio
//! tasks on a multi-thread runtime (each after a random jitter of up to
//! 3 ms, so launches spread over the payouts' bank calls): payout runs
//! (`run_payouts_now`), caller outcomes (`complete_withdrawal` completed or
//! failed, some sent twice), cancels, operator resolutions (`Paid` or
//! `NotPaid`) of items a `payouts()` view shows unsettled at that moment,
//! and, in some cases, a crash: every call in flight is abandoned, the
//! ledger dropped without `shutdown` and reopened on the same folder and
//! bank; later calls go to the reopened ledger. Then the drain: faults and
//! latency off, payouts run until every withdrawal is final and every
//! payout item answered (at most 50 runs).
//!
//! The bank is wrapped in a recorder that stamps each answer the engine
//! gets with a sequence number (one clock shared with the test's own calls)
//! and the ledger instance it went to ("epoch": 0, or 1 after the crash).
//!
//! # The oracle
//! Let `paid` = the withdrawals the bank paid, `completed` = those the
//! ledger ends completed, and `operator` = those an operator resolution
//! may have settled (answered Ok, or cut by the crash).
//! 1. Nothing is paid twice; each payment has the withdrawal's amount;
//!    every withdrawal ends completed, failed or cancelled.
//! 2. `paid` Δ `completed` ⊆ `operator`: a completed, unpaid withdrawal
//!    had a `Paid` resolution; a paid, uncompleted one is failed (never
//!    cancelled) and had a `NotPaid` resolution. A cancelled withdrawal was
//!    never paid and is in no payout.
//! 3. Mismatches (`payout_mismatches()`): each names an operator-resolved
//!    item of that payout whose resolution the bank contradicts (so it is
//!    in `paid` Δ `completed`), `settled` matching the ledger's state and
//!    `reported` the bank's truth. Conversely, an item of `paid` Δ
//!    `completed` MUST have one if the bank gave a definite answer for it
//!    (paid or failed in a report, or `NotFound` for its payout) to the
//!    surviving ledger instance after the resolution was answered: never
//!    silently. (An answer that reached an instance that then crashed may
//!    be lost with it; with no answer after the resolution there is nothing
//!    to contradict it.) Resolutions are answered Ok (the item then ends in
//!    that outcome), `payout_item_settled`, or cut by the crash.
//! 4. Callers: `complete_withdrawal` is Ok only as a no-op repeat — the
//!    withdrawal answers and ends in that outcome, and before the call was
//!    answered the bank had reported that outcome for it or an operator
//!    resolution with it had been sent; `payout_in_flight` names a payout
//!    that carries the withdrawal (if any); `invalid_transition` names the
//!    withdrawal's final, other outcome. A cancel is Ok only for a
//!    withdrawal that ends cancelled, in no payout and unpaid; refused
//!    `invalid_transition` from processing (it is in some payout) or from
//!    its final state. `shutting_down` (or a call cut) only in a case with
//!    a crash. Payout runs answer Ok (or are cut by the crash).
//! 5. Balances: per account, available + locked = deposits − completed
//!    amounts, locked 0; `audit()` reports exactly the mismatches.
//! 6. A clean shutdown and reopen gives the same balances, withdrawal
//!    states, payout records and mismatches.
//!
//! `PROPTEST_CASES` sets the number of cases (default 32). A failure prints
//! the case, every step with its answer, and the bank's answers.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use burnledger::config::SharedPaymentService;
use burnledger::domain::payouts::{
    PayoutItemOutcome, PayoutMismatchView, PayoutMode, PayoutView, Resolution,
};
use burnledger::domain::withdrawal::StatusKind;
use burnledger::payment::{
    ItemStatus, PaymentError, PaymentFuture, PaymentService, Payout, PayoutId, PayoutReport,
    SimulatedBank, SimulatedBankConfig,
};
use burnledger::{Config, Decimal, Ledger, LedgerError, TransactionId, WithdrawalOutcome};
use parking_lot::Mutex;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{watch, RwLock};

use support::{ledger_config, to_decimal};

/// Accounts are 1..=accounts.
const USD_DECIMALS: u32 = 2;
/// Longest any one case may take before it fails as hung.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

// ---- what proptest generates ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// `run_payouts_now`.
    Payouts,
    /// `complete_withdrawal` of withdrawal `w` (an index), completed or failed.
    Outcome {
        w: usize,
        completed: bool,
    },
    Cancel {
        w: usize,
    },
    /// Resolve the `pick`th unsettled item a `payouts()` view shows.
    Resolve {
        pick: usize,
        paid: bool,
    },
}

#[derive(Clone, Debug)]
struct Faults {
    item_failure: u32,
    unknown: u32,
    lost: u32,
    pending: u32,
    /// Each bank call waits 0..=this many microseconds.
    latency_us: u64,
    seed: u64,
}

#[derive(Clone, Debug)]
struct Case {
    immediate: bool,
    faults: Faults,
    /// Per account, in cents.
    deposits: Vec<u32>,
    /// (account index, cents).
    withdrawals: Vec<(usize, u32)>,
    /// Each step with its launch jitter in units of 100 µs.
    steps: Vec<(Step, u8)>,
    /// The crash's launch jitter, if the case crashes.
    crash: Option<u8>,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::Payouts),
        4 => (0usize..64, any::<bool>()).prop_map(|(w, completed)| Step::Outcome { w, completed }),
        2 => (0usize..64).prop_map(|w| Step::Cancel { w }),
        3 => (0usize..64, any::<bool>()).prop_map(|(pick, paid)| Step::Resolve { pick, paid }),
    ]
}

fn faults() -> impl Strategy<Value = Faults> {
    (
        prop_oneof![Just(0u32), 100u32..=400],
        prop_oneof![Just(0u32), 100u32..=400],
        prop_oneof![Just(0u32), 100u32..=400],
        prop_oneof![Just(0u32), 100u32..=400],
        prop_oneof![Just(0u64), Just(1_000), Just(2_000)],
        any::<u64>(),
    )
        .prop_map(
            |(item_failure, unknown, lost, pending, latency_us, seed)| Faults {
                item_failure,
                unknown,
                lost,
                pending,
                latency_us,
                seed,
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    (2usize..=6).prop_flat_map(|accounts| {
        (
            any::<bool>(),
            faults(),
            prop::collection::vec(20_000u32..=50_000, accounts),
            prop::collection::vec((0..accounts, 1u32..=1_000), 1..=16),
            prop::collection::vec((step(), 0u8..=30), 4..=24),
            prop::collection::vec(any::<prop::sample::Index>(), 0..=4),
            prop::option::weighted(0.3, 0u8..=30),
        )
            .prop_map(
                |(immediate, faults, deposits, withdrawals, mut steps, repeats, crash)| {
                    // The same caller update sent twice.
                    for pick in repeats {
                        let repeated = steps[pick.index(steps.len())];
                        if matches!(repeated.0, Step::Outcome { .. } | Step::Cancel { .. }) {
                            steps.push(repeated);
                        }
                    }
                    Case {
                        immediate,
                        faults,
                        deposits,
                        withdrawals,
                        steps,
                        crash,
                    }
                },
            )
    })
}

// ---- the recording bank ----

/// What the engine heard from the bank in one answer.
#[derive(Clone, Debug)]
enum Heard {
    /// Definite item answers: (transaction, paid?). Pending items left out.
    Items(Vec<(TransactionId, bool)>),
    /// The bank never received the payout.
    NotFound,
    /// Unknown outcome.
    Unknown,
}

#[derive(Clone, Debug)]
struct BankAnswer {
    seq: u64,
    epoch: u64,
    payout_id: PayoutId,
    heard: Heard,
}

struct Shared {
    /// One clock for the bank's answers and the test's calls.
    clock: AtomicU64,
    /// Which ledger instance the bank is talking to.
    epoch: AtomicU64,
    latency_us: AtomicU64,
    rng: Mutex<SmallRng>,
    answers: Mutex<Vec<BankAnswer>>,
}

impl Shared {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    fn record(&self, payout: Option<&Payout>, payout_id: PayoutId, answer: &PaymentAnswer) {
        let heard = match answer {
            Ok(report) => Heard::Items(
                report
                    .items
                    .iter()
                    .filter_map(|(tx, status)| match status {
                        ItemStatus::Paid
                        | ItemStatus::PartlyPaid { .. }
                        | ItemStatus::Returned { .. } => Some((*tx, true)),
                        ItemStatus::Failed { .. } => Some((*tx, false)),
                        ItemStatus::Pending => None,
                    })
                    .collect(),
            ),
            Err(PaymentError::Rejected { .. }) => Heard::Items(
                payout
                    .map(|p| p.items.iter().map(|i| (i.transaction_id, false)).collect())
                    .unwrap_or_default(),
            ),
            Err(PaymentError::NotFound { .. }) => Heard::NotFound,
            Err(PaymentError::Unknown { .. }) => Heard::Unknown,
        };
        let answer = BankAnswer {
            seq: self.tick(),
            epoch: self.epoch.load(Ordering::SeqCst),
            payout_id,
            heard,
        };
        self.answers.lock().push(answer);
    }
}

type PaymentAnswer = Result<PayoutReport, PaymentError>;

/// A `SimulatedBank` with a random latency per call, recording every
/// answer it gives.
#[derive(Clone)]
struct RecordingBank {
    bank: SimulatedBank,
    shared: Arc<Shared>,
}

impl RecordingBank {
    fn call(
        &self,
        payout: Option<Payout>,
        payout_id: PayoutId,
        inner: impl FnOnce() -> PaymentFuture,
    ) -> PaymentFuture {
        let most = self.shared.latency_us.load(Ordering::SeqCst);
        let latency = Duration::from_micros(self.shared.rng.lock().random_range(0..=most));
        let (shared, inner) = (Arc::clone(&self.shared), inner());
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let answer = inner.await;
            shared.record(payout.as_ref(), payout_id, &answer);
            answer
        })
    }
}

impl PaymentService for RecordingBank {
    fn max_items_per_payout(&self) -> usize {
        self.bank.max_items_per_payout()
    }

    fn submit(&self, payout: Payout) -> PaymentFuture {
        let (bank, id, copy) = (self.bank.clone(), payout.payout_id, payout.clone());
        self.call(Some(copy), id, move || bank.submit(payout))
    }

    fn status(&self, payout_id: PayoutId) -> PaymentFuture {
        let bank = self.bank.clone();
        self.call(None, payout_id, move || bank.status(payout_id))
    }
}

// ---- the race ----

/// What a step got back.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    /// A withdrawal update answered with this status.
    Status(StatusKind),
    /// A payout run or a resolution answered Ok.
    Done,
    Refused(LedgerError),
    /// Abandoned because the ledger crashed under it.
    Cut,
    /// A resolution found nothing unsettled to resolve.
    NothingToResolve,
}

#[derive(Clone, Debug)]
struct Record {
    step: Step,
    /// The withdrawal (or resolved item) and, for a resolution, its payout.
    target: Option<(TransactionId, Option<u64>)>,
    sent: u64,
    answered: u64,
    epoch: u64,
    answer: Answer,
}

/// The ledger the steps call, swapped by the crash.
struct Slot {
    ledger: RwLock<Option<Ledger>>,
    crashed: watch::Sender<bool>,
    shared: Arc<Shared>,
}

impl Slot {
    /// Runs `call` on the current ledger; cut if the ledger crashes first.
    async fn with<T, F, Fut>(&self, call: F) -> (u64, Result<T, Answer>)
    where
        F: FnOnce(Ledger) -> Fut,
        Fut: std::future::Future<Output = Result<T, LedgerError>>,
    {
        let guard = self.ledger.read().await;
        let epoch = self.shared.epoch.load(Ordering::SeqCst);
        let Some(ledger) = guard.clone() else {
            return (epoch, Err(Answer::Cut));
        };
        let mut crashed = self.crashed.subscribe();
        // Only the first instance crashes.
        let may_crash = epoch == 0;
        let answer = tokio::select! {
            answer = call(ledger) => answer.map_err(Answer::Refused),
            _ = crashed.wait_for(|c| *c), if may_crash => Err(Answer::Cut),
        };
        drop(guard);
        (epoch, answer)
    }
}

fn fail(message: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(message.into())
}

fn open(dir: &Path, bank: &RecordingBank, immediate: bool) -> Result<Ledger, TestCaseError> {
    let mut config: Config = ledger_config(dir, 1_000, None);
    config.payment_service = Some(SharedPaymentService::new(bank.clone()));
    if immediate {
        config.payout_mode = PayoutMode::Immediate;
    }
    Ledger::open(config).map_err(|e| fail(format!("Ledger::open failed: {e}")))
}

fn jitter(units: u8) -> Duration {
    Duration::from_micros(u64::from(units) * 100)
}

async fn run_step(slot: Arc<Slot>, step: Step, delay: u8, txs: Arc<Vec<TransactionId>>) -> Record {
    // Spreads the launches over the payouts' bank calls (not a wait for
    // work: nothing here depends on it).
    tokio::time::sleep(jitter(delay)).await;
    let shared = Arc::clone(&slot.shared);
    let record = |target, sent, (epoch, answer): (u64, Result<Answer, Answer>)| Record {
        step,
        target,
        sent,
        answered: shared.tick(),
        epoch,
        answer: answer.unwrap_or_else(|cut_or_refused| cut_or_refused),
    };
    let status =
        |w: Result<burnledger::Withdrawal, Answer>| w.map(|w| Answer::Status(w.status.kind()));
    match step {
        Step::Payouts => {
            let sent = shared.tick();
            let (epoch, answer) = slot
                .with(|l| async move { l.run_payouts_now().await })
                .await;
            record(None, sent, (epoch, answer.map(|_| Answer::Done)))
        }
        Step::Outcome { w, completed } => {
            let tx = txs[w % txs.len()];
            let outcome = if completed {
                WithdrawalOutcome::Completed
            } else {
                WithdrawalOutcome::Failed {
                    reason: "the caller says so".into(),
                }
            };
            let sent = shared.tick();
            let (epoch, answer) = slot
                .with(|l| async move { l.complete_withdrawal(tx, outcome).await })
                .await;
            record(Some((tx, None)), sent, (epoch, status(answer)))
        }
        Step::Cancel { w } => {
            let tx = txs[w % txs.len()];
            let sent = shared.tick();
            let (epoch, answer) = slot
                .with(|l| async move { l.cancel_withdrawal(tx).await })
                .await;
            record(Some((tx, None)), sent, (epoch, status(answer)))
        }
        Step::Resolve { pick, paid } => {
            for _ in 0..20 {
                let (epoch, views) = slot.with(|l| async move { l.payouts().await }).await;
                let views = match views {
                    Ok(views) => views,
                    Err(answer) => return record(None, shared.tick(), (epoch, Err(answer))),
                };
                let unsettled: Vec<(u64, TransactionId)> = views
                    .iter()
                    .flat_map(|p| {
                        p.items
                            .iter()
                            .filter(|i| i.outcome.is_none())
                            .map(|i| (p.payout_id, i.transaction_id))
                    })
                    .collect();
                let Some(&(payout_id, tx)) = unsettled.get(pick % unsettled.len().max(1)) else {
                    tokio::task::yield_now().await;
                    continue;
                };
                let resolution = if paid {
                    Resolution::Paid
                } else {
                    Resolution::NotPaid {
                        reason: "the operator says not paid".into(),
                    }
                };
                let sent = shared.tick();
                let (epoch, answer) = slot
                    .with(|l| async move {
                        l.resolve_payout_item(payout_id, tx, resolution, "race test")
                            .await
                    })
                    .await;
                let target = Some((tx, Some(payout_id)));
                return record(target, sent, (epoch, answer.map(|_| Answer::Done)));
            }
            let now = shared.tick();
            record(None, now, (0, Ok(Answer::NothingToResolve)))
        }
    }
}

/// Drops the first ledger without `shutdown` (after every call in flight on
/// it is cut) and opens the folder again.
async fn crash(
    slot: Arc<Slot>,
    delay: u8,
    dir: std::path::PathBuf,
    bank: RecordingBank,
    immediate: bool,
) -> Result<u64, TestCaseError> {
    tokio::time::sleep(jitter(delay)).await;
    let at = slot.shared.tick();
    slot.crashed.send_replace(true);
    // Every call on the old ledger holds a read guard: this waits for them
    // to be cut, and holds back new calls until the new ledger is in.
    let mut current = slot.ledger.write().await;
    if let Some(old) = current.take() {
        // Dropping the last handle stops the engine threads (joins them).
        tokio::task::spawn_blocking(move || drop(old))
            .await
            .map_err(|e| fail(format!("dropping the ledger panicked: {e}")))?;
    }
    slot.shared.epoch.store(1, Ordering::SeqCst);
    *current = Some(open(&dir, &bank, immediate)?);
    Ok(at)
}

// ---- the case ----

/// What is compared across the final clean shutdown and reopen.
#[derive(Debug, PartialEq)]
struct Final {
    /// (account, available, locked).
    balances: Vec<(u64, Decimal, Decimal)>,
    withdrawals: BTreeMap<TransactionId, (Decimal, burnledger::WithdrawalStatus)>,
    /// Counters kept only in memory (attempts, last error) left out.
    payouts: Vec<PayoutView>,
    mismatches: Vec<(u64, PayoutMismatchView)>,
}

async fn final_state(
    ledger: &Ledger,
    accounts: usize,
    txs: &[TransactionId],
) -> Result<Final, TestCaseError> {
    let broken = |what: &str, e: LedgerError| fail(format!("{what} failed: {e}"));
    let mut balances = Vec::new();
    for account in 1..=accounts as u64 {
        let b = ledger
            .balance(account, "USD")
            .await
            .map_err(|e| broken("balance", e))?;
        balances.push((account, b.available, b.locked));
    }
    let mut withdrawals = BTreeMap::new();
    for tx in txs {
        let w = ledger
            .withdrawal(*tx)
            .await
            .map_err(|e| broken("withdrawal", e))?;
        withdrawals.insert(*tx, (w.amount, w.status));
    }
    let mut payouts = ledger.payouts().await.map_err(|e| broken("payouts", e))?;
    for p in &mut payouts {
        p.attempts = 0;
        p.last_error = None;
    }
    let mut mismatches = ledger
        .payout_mismatches()
        .await
        .map_err(|e| broken("payout_mismatches", e))?;
    // Compared as a set: recovery lists them by payout, a live ledger in
    // the order they were found.
    mismatches.sort_by_key(|(id, m)| (*id, m.transaction_id, m.reported.as_str()));
    Ok(Final {
        balances,
        withdrawals,
        payouts,
        mismatches,
    })
}

/// What differs between two final states, field by field.
fn differences(before: &Final, after: &Final) -> Option<String> {
    let mut out = String::new();
    if before.balances != after.balances {
        let _ = write!(
            out,
            "\n  balances: {:?}\n       now: {:?}",
            before.balances, after.balances
        );
    }
    for (tx, was) in &before.withdrawals {
        let now = after.withdrawals.get(tx);
        if now != Some(was) {
            let _ = write!(out, "\n  withdrawal {tx}: {was:?}, now {now:?}");
        }
    }
    for (was, now) in before.payouts.iter().zip(&after.payouts) {
        if was != now {
            let _ = write!(
                out,
                "\n  payout {}: {was:?}\n     now: {now:?}",
                was.payout_id
            );
        }
    }
    if before.payouts.len() != after.payouts.len() {
        let _ = write!(
            out,
            "\n  {} payouts, now {}",
            before.payouts.len(),
            after.payouts.len()
        );
    }
    if before.mismatches != after.mismatches {
        let _ = write!(
            out,
            "\n  mismatches: {:?}\n         now: {:?}",
            before.mismatches, after.mismatches
        );
    }
    (!out.is_empty()).then_some(out)
}

/// Everything a failure shows.
fn describe(
    case: &Case,
    records: &[Record],
    answers: &[BankAnswer],
    crash_at: Option<u64>,
) -> String {
    let mut out = format!(
        "mode: {}, faults: {:?}, crash at: {crash_at:?}\nsteps (sent..answered @epoch):\n",
        if case.immediate {
            "immediate"
        } else {
            "batched"
        },
        case.faults
    );
    for r in records {
        let _ = writeln!(
            out,
            "  {:?} on {:?}: {}..{} @{} -> {:?}",
            r.step, r.target, r.sent, r.answered, r.epoch, r.answer
        );
    }
    out.push_str("bank answers (seq @epoch payout: heard):\n");
    for a in answers {
        let _ = writeln!(
            out,
            "  {} @{} {}: {:?}",
            a.seq, a.epoch, a.payout_id, a.heard
        );
    }
    out
}

/// Runs payouts with the faults off until every withdrawal is final and
/// every payout item has an answer; bounded.
async fn drain(ledger: &Ledger, txs: &[TransactionId]) -> Result<(), TestCaseError> {
    for _ in 0..50 {
        ledger
            .run_payouts_now()
            .await
            .map_err(|e| fail(format!("run_payouts_now while draining: {e}")))?;
        let views = ledger
            .payouts()
            .await
            .map_err(|e| fail(format!("payouts: {e}")))?;
        let answered = views
            .iter()
            .all(|p| p.items.iter().all(|i| i.outcome.is_some()));
        let mut locked = false;
        for tx in txs {
            let w = ledger
                .withdrawal(*tx)
                .await
                .map_err(|e| fail(format!("withdrawal: {e}")))?;
            locked |= w.status.holds_lock();
        }
        if answered && !locked {
            return Ok(());
        }
    }
    Err(fail(
        "50 payout runs with the faults off left something unsettled",
    ))
}

/// What the race reached, over all cases, so a run that never reaches
/// the interesting interleavings fails instead of passing vacuously.
#[derive(Default)]
struct Reach {
    in_flight_named: AtomicU64,
    in_flight_queued: AtomicU64,
    repeats_ok: AtomicU64,
    resolved: AtomicU64,
    mismatches: AtomicU64,
    cut: AtomicU64,
}

static REACH: Reach = Reach {
    in_flight_named: AtomicU64::new(0),
    in_flight_queued: AtomicU64::new(0),
    repeats_ok: AtomicU64::new(0),
    resolved: AtomicU64::new(0),
    mismatches: AtomicU64::new(0),
    cut: AtomicU64::new(0),
};

async fn run_case(case: Case) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let f = &case.faults;
    let bank = SimulatedBank::new(SimulatedBankConfig {
        item_failure_per_mille: f.item_failure,
        unknown_outcome_per_mille: f.unknown,
        lost_response_per_mille: f.lost,
        pending_per_mille: f.pending,
        seed: f.seed,
        ..SimulatedBankConfig::default()
    });
    let shared = Arc::new(Shared {
        clock: AtomicU64::new(0),
        epoch: AtomicU64::new(0),
        latency_us: AtomicU64::new(f.latency_us),
        rng: Mutex::new(SmallRng::seed_from_u64(f.seed)),
        answers: Mutex::new(Vec::new()),
    });
    let recording = RecordingBank {
        bank: bank.clone(),
        shared: Arc::clone(&shared),
    };
    let ledger = open(dir.path(), &recording, case.immediate)?;

    // One by one: the deposits and the withdrawals (all affordable).
    let mut deposited = BTreeMap::new();
    for (i, cents) in case.deposits.iter().enumerate() {
        let (account, amount) = (i as u64 + 1, to_decimal(i128::from(*cents), USD_DECIMALS));
        ledger
            .deposit(account, "USD", amount, None)
            .await
            .map_err(|e| fail(format!("deposit: {e}")))?;
        deposited.insert(account, amount);
    }
    let mut txs = Vec::new();
    for (account, cents) in &case.withdrawals {
        let amount = to_decimal(i128::from(*cents), USD_DECIMALS);
        let w = ledger
            .request_withdrawal(*account as u64 + 1, "USD", amount, None)
            .await
            .map_err(|e| fail(format!("request_withdrawal: {e}")))?;
        txs.push(w.transaction_id);
    }
    let txs = Arc::new(txs);

    // All at once.
    let slot = Arc::new(Slot {
        ledger: RwLock::new(Some(ledger)),
        crashed: watch::channel(false).0,
        shared: Arc::clone(&shared),
    });
    let tasks: Vec<_> = case
        .steps
        .iter()
        .map(|(step, delay)| {
            tokio::spawn(run_step(Arc::clone(&slot), *step, *delay, Arc::clone(&txs)))
        })
        .collect();
    let crasher = case.crash.map(|delay| {
        let (dir, bank) = (dir.path().to_path_buf(), recording.clone());
        tokio::spawn(crash(Arc::clone(&slot), delay, dir, bank, case.immediate))
    });
    let mut records = Vec::with_capacity(tasks.len());
    for task in tasks {
        records.push(
            task.await
                .map_err(|e| fail(format!("a step panicked: {e}")))?,
        );
    }
    let crashed = match crasher {
        Some(task) => Some(
            task.await
                .map_err(|e| fail(format!("the crash panicked: {e}")))?,
        ),
        None => None,
    };
    let crash_at = crashed.as_ref().and_then(|c| c.as_ref().ok().copied());
    let report = |e: TestCaseError| match e {
        TestCaseError::Fail(reason) => {
            let answers = shared.answers.lock().clone();
            fail(format!(
                "{reason}\n{}",
                describe(&case, &records, &answers, crash_at)
            ))
        }
        other => other,
    };
    if let Some(Err(reopen_failed)) = crashed {
        return Err(report(reopen_failed));
    }
    let ledger = slot
        .ledger
        .write()
        .await
        .take()
        .ok_or_else(|| report(fail("no ledger after the race")))?;
    drop(slot);

    bank.set_faults(SimulatedBankConfig::default());
    shared.latency_us.store(0, Ordering::SeqCst);
    drain(&ledger, &txs).await.map_err(report)?;
    let before = final_state(&ledger, case.deposits.len(), &txs)
        .await
        .map_err(report)?;
    let answers = shared.answers.lock().clone();
    let audit = ledger.audit().await.map_err(|e| fail(e.to_string()))?;
    let facts = Facts {
        state: &before,
        payments: bank.payments(),
        answers: &answers,
        records: &records,
        crashed: crash_at.is_some(),
        deposited: &deposited,
    };
    facts.check(&audit).map_err(report)?;

    // A clean shutdown and reopen: the same state.
    ledger.shutdown().await;
    let reopened = open(dir.path(), &recording, case.immediate).map_err(report)?;
    let after = final_state(&reopened, case.deposits.len(), &txs).await;
    reopened.shutdown().await;
    let after = after.map_err(report)?;
    if let Some(difference) = differences(&before, &after) {
        return Err(report(fail(format!(
            "after a clean shutdown and reopen the state differs: {difference}"
        ))));
    }
    Ok(())
}

/// The final state and everything observed on the way there.
struct Facts<'a> {
    state: &'a Final,
    payments: Vec<(PayoutId, TransactionId, Decimal)>,
    answers: &'a [BankAnswer],
    records: &'a [Record],
    crashed: bool,
    deposited: &'a BTreeMap<u64, Decimal>,
}

/// An operator's resolution that was (or may have been) applied.
struct Resolved {
    payout_id: u64,
    paid: bool,
    sent: u64,
    answered: u64,
}

impl Facts<'_> {
    fn status(&self, tx: TransactionId) -> StatusKind {
        self.state
            .withdrawals
            .get(&tx)
            .map_or(StatusKind::Pending, |(_, s)| s.kind())
    }

    /// The payouts carrying `tx`, with the item's outcome.
    fn items_of(&self, tx: TransactionId) -> Vec<(u64, Option<PayoutItemOutcome>)> {
        self.state
            .payouts
            .iter()
            .flat_map(|p| {
                p.items
                    .iter()
                    .filter(move |i| i.transaction_id == tx)
                    .map(move |i| (p.payout_id, i.outcome.clone()))
            })
            .collect()
    }

    fn resolutions(&self) -> BTreeMap<TransactionId, Vec<Resolved>> {
        let mut resolved: BTreeMap<TransactionId, Vec<Resolved>> = BTreeMap::new();
        for r in self.records {
            let (Step::Resolve { paid, .. }, Some((tx, Some(payout_id)))) = (r.step, r.target)
            else {
                continue;
            };
            let applied = matches!(
                r.answer,
                Answer::Done | Answer::Cut | Answer::Refused(LedgerError::ShuttingDown)
            );
            if applied {
                resolved.entry(tx).or_default().push(Resolved {
                    payout_id,
                    paid,
                    sent: r.sent,
                    answered: r.answered,
                });
            }
        }
        resolved
    }

    fn check(&self, audit: &burnledger::Audit) -> Result<(), TestCaseError> {
        let paid = self.check_payments()?;
        let resolved = self.resolutions();
        self.check_paid_equals_completed(&paid, &resolved)?;
        self.check_mismatches(&paid, &resolved)?;
        for r in self.records {
            self.check_answer(r, &resolved)?;
        }
        self.check_balances(audit)
    }

    /// Nothing paid twice, each payment of the withdrawal's amount, every
    /// withdrawal final. Returns the paid set.
    fn check_payments(&self) -> Result<BTreeSet<TransactionId>, TestCaseError> {
        let mut paid = BTreeSet::new();
        for (payout_id, tx, amount) in &self.payments {
            if !paid.insert(*tx) {
                return Err(fail(format!(
                    "the bank paid {tx} twice: {:?}",
                    self.payments
                )));
            }
            let known = self.state.withdrawals.get(tx).map(|(a, _)| *a);
            if known != Some(*amount) {
                return Err(fail(format!(
                    "payout {payout_id} paid {tx} {amount}, the withdrawal is {known:?}"
                )));
            }
        }
        for (tx, (_, status)) in &self.state.withdrawals {
            if !matches!(
                status.kind(),
                StatusKind::Completed | StatusKind::Failed | StatusKind::Cancelled
            ) {
                return Err(fail(format!("{tx} ended {status:?}")));
            }
        }
        Ok(paid)
    }

    /// Oracle 2.
    fn check_paid_equals_completed(
        &self,
        paid: &BTreeSet<TransactionId>,
        resolved: &BTreeMap<TransactionId, Vec<Resolved>>,
    ) -> Result<(), TestCaseError> {
        for tx in self.state.withdrawals.keys().copied() {
            let (is_paid, status) = (paid.contains(&tx), self.status(tx));
            let resolved_as = |as_paid: bool| {
                resolved
                    .get(&tx)
                    .is_some_and(|rs| rs.iter().any(|r| r.paid == as_paid))
            };
            match (is_paid, status) {
                (true, StatusKind::Completed) | (false, StatusKind::Failed) => {}
                (false, StatusKind::Completed) if resolved_as(true) => {}
                (true, StatusKind::Failed) if resolved_as(false) => {}
                (false, StatusKind::Cancelled) if self.items_of(tx).is_empty() => {}
                (is_paid, status) => {
                    return Err(fail(format!(
                        "{tx}: paid by the bank: {is_paid}, ledger: {status}, in payouts {:?}, \
                         no operator resolution explains it",
                        self.items_of(tx)
                    )))
                }
            }
        }
        Ok(())
    }

    /// Oracle 3.
    fn check_mismatches(
        &self,
        paid: &BTreeSet<TransactionId>,
        resolved: &BTreeMap<TransactionId, Vec<Resolved>>,
    ) -> Result<(), TestCaseError> {
        for (payout_id, m) in &self.state.mismatches {
            let tx = m.transaction_id;
            let status = self.status(tx);
            let carried = self.items_of(tx).iter().any(|(p, _)| p == payout_id);
            let settled_ok =
                matches!(m.settled, PayoutItemOutcome::Paid) == (status == StatusKind::Completed);
            let reported_ok = matches!(m.reported, PayoutItemOutcome::Paid) == paid.contains(&tx);
            // The two disagree on whether the money left.
            let contradicts = matches!(m.settled, PayoutItemOutcome::Paid)
                != matches!(m.reported, PayoutItemOutcome::Paid);
            if !resolved.contains_key(&tx)
                || !carried
                || !settled_ok
                || !reported_ok
                || !contradicts
            {
                return Err(fail(format!(
                    "mismatch {m:?} of payout {payout_id} is unexplained: {tx} is {status}, \
                     paid by the bank: {}, resolved by an operator: {}",
                    paid.contains(&tx),
                    resolved.contains_key(&tx)
                )));
            }
        }
        // Never silently: a contradiction the surviving ledger heard is recorded.
        let surviving = u64::from(self.crashed);
        for (tx, rs) in resolved {
            let contradicted = paid.contains(tx) != (self.status(*tx) == StatusKind::Completed);
            let mismatched = self
                .state
                .mismatches
                .iter()
                .any(|(_, m)| m.transaction_id == *tx);
            if !contradicted || mismatched {
                continue;
            }
            let after = rs.iter().map(|r| r.answered).max().unwrap_or(0);
            let payouts: BTreeSet<u64> = rs.iter().map(|r| r.payout_id).collect();
            let heard = self.answers.iter().find(|a| {
                a.epoch == surviving
                    && a.seq > after
                    && payouts.contains(&a.payout_id)
                    && match &a.heard {
                        Heard::Items(items) => items.iter().any(|(t, _)| t == tx),
                        Heard::NotFound => true,
                        Heard::Unknown => false,
                    }
            });
            if let Some(answer) = heard {
                return Err(fail(format!(
                    "{tx}: the operator's resolution is contradicted by the bank (paid: {}), \
                     the ledger heard it ({answer:?}), yet no mismatch is recorded",
                    paid.contains(tx)
                )));
            }
        }
        REACH
            .mismatches
            .fetch_add(self.state.mismatches.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Oracle 4: one step's answer.
    fn check_answer(
        &self,
        r: &Record,
        resolved: &BTreeMap<TransactionId, Vec<Resolved>>,
    ) -> Result<(), TestCaseError> {
        let unexplained = || {
            fail(format!(
                "{:?} on {:?} answered {:?}: unexplained",
                r.step, r.target, r.answer
            ))
        };
        let cut = matches!(
            r.answer,
            Answer::Cut | Answer::Refused(LedgerError::ShuttingDown)
        );
        if cut {
            REACH.cut.fetch_add(1, Ordering::Relaxed);
            return if self.crashed {
                Ok(())
            } else {
                Err(unexplained())
            };
        }
        let target = r.target.map(|(tx, _)| tx);
        match (r.step, &r.answer, target) {
            (Step::Payouts, Answer::Done, _) => Ok(()),
            (Step::Resolve { .. }, Answer::NothingToResolve, _) => Ok(()),
            (Step::Resolve { paid, .. }, Answer::Done, Some(tx)) => {
                REACH.resolved.fetch_add(1, Ordering::Relaxed);
                let payout_id = r.target.and_then(|(_, p)| p);
                let outcome = self
                    .items_of(tx)
                    .into_iter()
                    .find(|(p, _)| Some(*p) == payout_id)
                    .and_then(|(_, o)| o);
                let expected = if paid {
                    StatusKind::Completed
                } else {
                    StatusKind::Failed
                };
                let item_ok = outcome
                    .as_ref()
                    .is_some_and(|o| matches!(o, PayoutItemOutcome::Paid) == paid);
                if self.status(tx) == expected && item_ok {
                    Ok(())
                } else {
                    Err(fail(format!(
                        "{tx} resolved (paid: {paid}) ended {} with item outcome {outcome:?}",
                        self.status(tx)
                    )))
                }
            }
            (
                Step::Resolve { .. },
                Answer::Refused(LedgerError::PayoutItemSettled {
                    payout_id,
                    transaction_id,
                    ..
                }),
                Some(tx),
            ) if *transaction_id == tx && r.target.and_then(|(_, p)| p) == Some(*payout_id) => {
                Ok(())
            }
            (Step::Outcome { completed, .. }, answer, Some(tx)) => {
                let wanted = if completed {
                    StatusKind::Completed
                } else {
                    StatusKind::Failed
                };
                self.check_outcome(r, tx, wanted, answer, resolved)
                    .then_some(())
                    .ok_or_else(unexplained)
            }
            (Step::Cancel { .. }, answer, Some(tx)) => self
                .check_cancel(tx, answer)
                .then_some(())
                .ok_or_else(unexplained),
            _ => Err(unexplained()),
        }
    }

    /// A caller's completed or failed (`wanted`) for `tx`.
    fn check_outcome(
        &self,
        r: &Record,
        tx: TransactionId,
        wanted: StatusKind,
        answer: &Answer,
        resolved: &BTreeMap<TransactionId, Vec<Resolved>>,
    ) -> bool {
        let final_kind = self.status(tx);
        match answer {
            Answer::Status(kind) => {
                // A no-op repeat of what a payout or an operator did first.
                let as_paid = wanted == StatusKind::Completed;
                let bank_said = self.answers.iter().any(|a| {
                    a.seq < r.answered
                        && matches!(&a.heard, Heard::Items(items) if items.contains(&(tx, as_paid)))
                });
                let operator_said = resolved
                    .get(&tx)
                    .is_some_and(|rs| rs.iter().any(|o| o.paid == as_paid && o.sent < r.answered));
                REACH.repeats_ok.fetch_add(1, Ordering::Relaxed);
                *kind == wanted && final_kind == wanted && (bank_said || operator_said)
            }
            Answer::Refused(LedgerError::PayoutInFlight {
                transaction_id,
                payout_id,
            }) => {
                let counter = match payout_id {
                    Some(_) => &REACH.in_flight_named,
                    None => &REACH.in_flight_queued,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                *transaction_id == tx
                    && payout_id.is_none_or(|p| self.items_of(tx).iter().any(|(q, _)| *q == p))
            }
            Answer::Refused(LedgerError::InvalidTransition {
                transaction_id,
                from,
                ..
            }) => {
                *transaction_id == tx
                    && *from == final_kind
                    && *from != wanted
                    && matches!(
                        from,
                        StatusKind::Completed | StatusKind::Failed | StatusKind::Cancelled
                    )
            }
            _ => false,
        }
    }

    /// A caller's cancel of `tx`.
    fn check_cancel(&self, tx: TransactionId, answer: &Answer) -> bool {
        let final_kind = self.status(tx);
        match answer {
            // Never paid, in no payout: checked for every cancelled one.
            Answer::Status(kind) => {
                *kind == StatusKind::Cancelled && final_kind == StatusKind::Cancelled
            }
            Answer::Refused(LedgerError::InvalidTransition {
                transaction_id,
                from,
                ..
            }) => {
                *transaction_id == tx
                    && match from {
                        StatusKind::Processing => !self.items_of(tx).is_empty(),
                        StatusKind::Completed | StatusKind::Failed => *from == final_kind,
                        _ => false,
                    }
            }
            _ => false,
        }
    }

    /// Oracle 5.
    fn check_balances(&self, audit: &burnledger::Audit) -> Result<(), TestCaseError> {
        for (account, available, locked) in &self.state.balances {
            let completed: Decimal = self
                .state
                .withdrawals
                .iter()
                .filter(|(tx, (_, s))| {
                    tx.account() == *account && s.kind() == StatusKind::Completed
                })
                .map(|(_, (amount, _))| *amount)
                .sum();
            let deposited = self.deposited.get(account).copied().unwrap_or_default();
            if *locked != Decimal::ZERO || *available + *locked != deposited - completed {
                return Err(fail(format!(
                    "account {account}: available {available} + locked {locked} != \
                     deposits {deposited} - completed {completed}"
                )));
            }
        }
        let mismatches = self.state.mismatches.len();
        if audit.payout_mismatches != mismatches as u64 || audit.violations.len() != mismatches {
            return Err(fail(format!(
                "the audit reports {:?} ({} mismatches), the ledger {mismatches} mismatches",
                audit.violations, audit.payout_mismatches
            )));
        }
        Ok(())
    }
}

#[test]
fn caller_updates_racing_the_engines_payouts_never_create_or_burn_money() {
    let rt = support::runtime();
    let config = support::proptest_config(32, file!());
    let cases = config.cases;
    support::check("payout_race", config, case(), |case| {
        rt.block_on(async {
            tokio::time::timeout(CASE_TIMEOUT, run_case(case))
                .await
                .unwrap_or_else(|_| Err(fail("the case hung")))
        })
    });
    let reach = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let summary = format!(
        "payout_in_flight naming a payout: {}, queued: {}, repeats answered Ok: {}, \
         resolutions: {}, mismatches: {}, calls cut by a crash: {}",
        reach(&REACH.in_flight_named),
        reach(&REACH.in_flight_queued),
        reach(&REACH.repeats_ok),
        reach(&REACH.resolved),
        reach(&REACH.mismatches),
        reach(&REACH.cut)
    );
    eprintln!("payout_race reached: {summary}");
    // Not vacuous: at the default count the race reaches payouts in
    // flight and answered repeats (dozens each); resolutions average ~6 per
    // 32 cases, so they are required from 64 on.
    if cases >= 32 {
        assert!(
            reach(&REACH.in_flight_named) > 0 && reach(&REACH.repeats_ok) > 0,
            "the race never reached a payout in flight or a repeat: {summary}"
        );
    }
    if cases >= 64 {
        assert!(
            reach(&REACH.resolved) > 0,
            "the race never reached a resolution: {summary}"
        );
    }
}
