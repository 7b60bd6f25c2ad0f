//! Memory that stays flat (issue 13): finished withdrawals leave memory
//! once a history holds them (here a fake one, fed from the ledger's own
//! export as the log follower would be) or, without a history, past the
//! retention; every operation on a forgotten withdrawal answers as it did
//! before (the history gives it back), and a memory-only ledger says
//! `unknown_withdrawal` past its retention.

mod common;
#[path = "common/faults.rs"]
mod faults;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burnledger::clock::{Clock, ManualClock};
use burnledger::config::SharedWithdrawalHistory;
use burnledger::domain::money::Currency;
use burnledger::domain::withdrawal::{
    StatusKind, WithdrawalHistory, WithdrawalRecord, WithdrawalStatus,
};
use burnledger::{
    AccountExport, Config, Ledger, LedgerError, TransactionId, UnixMs, Withdrawal,
    WithdrawalOutcome,
};
use common::{dec, with_ledger};
use parking_lot::Mutex;

/// A history as the log follower would keep one: the finished withdrawals
/// it took in, and how far it holds every shard's events.
#[derive(Default)]
struct FakeHistory {
    horizon: Mutex<UnixMs>,
    records: Mutex<HashMap<TransactionId, WithdrawalRecord>>,
    /// Look-ups asked of it.
    asked: AtomicUsize,
    /// Every look-up fails, as a history whose disk fails would.
    broken: AtomicBool,
}

impl WithdrawalHistory for FakeHistory {
    fn horizon(&self, _shard: usize) -> UnixMs {
        *self.horizon.lock()
    }

    fn withdrawal(&self, tx: TransactionId) -> Result<Option<WithdrawalRecord>, String> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        if self.broken.load(Ordering::SeqCst) {
            return Err("disk on fire".into());
        }
        Ok(self.records.lock().get(&tx).cloned())
    }
}

impl FakeHistory {
    /// Takes in every finished withdrawal the ledger holds (their events
    /// are all stamped before `horizon`), then holds up to `horizon`.
    async fn take_in(&self, ledger: &Ledger, horizon: UnixMs) {
        for account in exported(ledger).await {
            for w in account.withdrawals {
                assert!(w.updated_at.unwrap() < horizon, "{w:?} is past the horizon");
                if !w.status.holds_lock() {
                    self.records.lock().insert(w.transaction_id, record_of(&w));
                }
            }
        }
        *self.horizon.lock() = horizon;
    }

    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

/// A withdrawal (USD, 2 decimals) as an account keeps it.
fn record_of(w: &Withdrawal) -> WithdrawalRecord {
    let mut amount = w.amount;
    amount.rescale(2);
    WithdrawalRecord {
        currency: Currency {
            code: w.currency,
            decimals: 2,
        },
        amount: amount.mantissa(),
        status: w.status.clone(),
        created_at: w.created_at.unwrap(),
        updated_at: w.updated_at.unwrap(),
        extras: Default::default(),
    }
}

/// The gauges count exactly the withdrawals memory holds, by status: those
/// forgotten left them, those put back came back.
async fn assert_gauges_count_what_memory_holds(ledger: &Ledger) {
    let accounts = exported(ledger).await;
    let gauges = ledger.gauges().await.unwrap().withdrawals;
    for status in StatusKind::ALL {
        let held = accounts
            .iter()
            .flat_map(|a| &a.withdrawals)
            .filter(|w| w.status.kind() == status)
            .count();
        let counted = gauges.get("USD", status).count;
        assert_eq!(counted, held as u64, "{status}");
    }
}

async fn exported(ledger: &Ledger) -> Vec<AccountExport> {
    ledger.export_accounts().await.unwrap()
}

/// The withdrawals the ledger holds in memory.
async fn held(ledger: &Ledger) -> Vec<TransactionId> {
    let accounts = exported(ledger).await;
    let ids = accounts.iter().flat_map(|a| &a.withdrawals);
    ids.map(|w| w.transaction_id).collect()
}

/// Moves `clock` on by `by` once both shards armed their sweep, and waits
/// until both swept and re-armed (a memory-only ledger without payouts
/// arms no other timer).
async fn sweep(clock: &ManualClock, by: Duration) {
    let bound = Duration::from_secs(20);
    let armed = tokio::time::timeout(bound, clock.armed_at_least(2));
    armed.await.expect("both shards arm their sweeps");
    clock.advance(by);
    let rearmed = tokio::time::timeout(bound, clock.armed_at_least(2));
    rearmed.await.expect("both shards sweep and re-arm");
}

/// A memory-only ledger on `clock`, keeping finished withdrawals for a
/// minute; with `history` if given.
fn config(clock: &ManualClock, history: Option<Arc<FakeHistory>>) -> Config {
    Config {
        clock: clock.shared(),
        finished_withdrawal_retention_ms: 60_000,
        withdrawal_history: history.map(|h| SharedWithdrawalHistory(h)),
        ..Config::for_tests()
    }
}

/// One withdrawal of each finished kind on account 1 (100.00 USD in),
/// and one still pending; the completed one was requested with key "k".
struct Mix {
    completed: Withdrawal,
    failed: Withdrawal,
    cancelled: Withdrawal,
    to_return: Withdrawal,
    pending: Withdrawal,
}

async fn mix(ledger: &Ledger) -> Mix {
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let request = |amount: &'static str, k: Option<&'static str>| async move {
        let w = ledger.request_withdrawal(1, "USD", dec(amount), k).await;
        w.unwrap().transaction_id
    };
    let completed = request("1", Some("k")).await;
    let failed = request("2", None).await;
    let cancelled = request("3", None).await;
    let to_return = request("4", None).await;
    let pending = request("5", None).await;
    let paid = WithdrawalOutcome::Completed;
    let refused = WithdrawalOutcome::Failed {
        reason: "bank said no".into(),
    };
    let completed = ledger.complete_withdrawal(completed, paid.clone()).await;
    let failed = ledger.complete_withdrawal(failed, refused).await;
    let cancelled = ledger.cancel_withdrawal(cancelled).await;
    let to_return = ledger.complete_withdrawal(to_return, paid).await;
    Mix {
        completed: completed.unwrap(),
        failed: failed.unwrap(),
        cancelled: cancelled.unwrap(),
        to_return: to_return.unwrap(),
        pending: ledger.withdrawal(pending).await.unwrap(),
    }
}

/// Every answer a caller can get about a finished withdrawal without
/// changing anything: the reads, the repeated outcomes, the refused
/// transitions, the keyed replay, and an id never made.
async fn answers(ledger: &Ledger, m: &Mix) -> Vec<Result<Withdrawal, LedgerError>> {
    let paid = || WithdrawalOutcome::Completed;
    let refused = || WithdrawalOutcome::Failed {
        reason: "bank said no".into(),
    };
    let never = TransactionId::new(1, 1_000);
    let mut all = Vec::new();
    for w in [&m.completed, &m.failed, &m.cancelled, &m.to_return] {
        all.push(ledger.withdrawal(w.transaction_id).await);
    }
    all.push(ledger.withdrawal(never).await);
    all.push(
        ledger
            .complete_withdrawal(m.completed.transaction_id, paid())
            .await,
    );
    all.push(
        ledger
            .complete_withdrawal(m.failed.transaction_id, refused())
            .await,
    );
    all.push(ledger.cancel_withdrawal(m.cancelled.transaction_id).await);
    // Refused: a terminal state never changes.
    all.push(ledger.cancel_withdrawal(m.completed.transaction_id).await);
    all.push(
        ledger
            .complete_withdrawal(m.cancelled.transaction_id, paid())
            .await,
    );
    all.push(ledger.complete_withdrawal(never, paid()).await);
    // The keyed replay answers the first result (pending, as created).
    let replay = ledger
        .request_withdrawal(1, "USD", dec("1"), Some("k"))
        .await;
    all.push(replay);
    all
}

#[tokio::test]
async fn forgotten_withdrawals_answer_every_operation_as_before_from_the_history() {
    let clock = ManualClock::new();
    let history = Arc::new(FakeHistory::default());
    let config = config(&clock, Some(Arc::clone(&history)));
    let every = Duration::from_millis(config.account_idle_sweep_ms);
    with_ledger(config, |ledger| async move {
        let m = mix(&ledger).await;
        let before = answers(&ledger, &m).await;
        let balances = ledger.balances(1).await.unwrap();
        // Nothing in the history yet: a sweep forgets nothing, whatever
        // the clock says (a history, not the retention, decides).
        sweep(&clock, Duration::from_secs(3_600)).await;
        assert_eq!(held(&ledger).await.len(), 5);
        assert_eq!(history.asked(), 0, "nothing forgotten, nothing asked");

        let horizon = UnixMs::from_millis(clock.unix_ms() + 1);
        history.take_in(&ledger, horizon).await;
        sweep(&clock, every).await;
        sweep(&clock, every).await;
        assert_eq!(held(&ledger).await, [m.pending.transaction_id]);
        assert_eq!(ledger.balances(1).await.unwrap(), balances);
        let gauges = ledger.gauges().await.unwrap().withdrawals;
        assert_eq!(gauges.get("USD", StatusKind::Completed).count, 0);
        assert_eq!(gauges.get("USD", StatusKind::Pending).count, 1);

        let after = answers(&ledger, &m).await;
        assert_eq!(after, before, "the same answers after forgetting");
        // The four reads, and the first command on each of three (which
        // puts it back: the later ones find it in memory).
        assert!(history.asked() >= 7, "answered from the history");
        // A completed withdrawal can still be returned.
        let returned = ledger
            .return_withdrawal(m.to_return.transaction_id, "sent back")
            .await
            .unwrap();
        assert!(matches!(returned.status, WithdrawalStatus::Returned { .. }));
        assert_eq!(returned.created_at, m.to_return.created_at);
        let usd = ledger.balance(1, "USD").await.unwrap();
        // 100 in; 1 and 4 paid, 5 locked; 2 and 3 back; then 4 back.
        assert_eq!(usd.available, dec("94"));
        let read = ledger.withdrawal(m.to_return.transaction_id).await;
        assert_eq!(read.unwrap(), returned);
        assert_gauges_count_what_memory_holds(&ledger).await;
    })
    .await;
}

#[tokio::test]
async fn a_history_that_cannot_be_read_answers_internal_and_changes_nothing() {
    let clock = ManualClock::new();
    let history = Arc::new(FakeHistory::default());
    let config = config(&clock, Some(Arc::clone(&history)));
    let every = Duration::from_millis(config.account_idle_sweep_ms);
    with_ledger(config, |ledger| async move {
        let m = mix(&ledger).await;
        let horizon = UnixMs::from_millis(clock.unix_ms() + 1);
        history.take_in(&ledger, horizon).await;
        sweep(&clock, every).await;
        sweep(&clock, every).await;
        history.broken.store(true, Ordering::SeqCst);
        let tx = m.to_return.transaction_id;
        let read = ledger.withdrawal(tx).await;
        assert_eq!(read.unwrap_err().code(), "internal");
        let returned = ledger.return_withdrawal(tx, "back").await;
        assert_eq!(returned.unwrap_err().code(), "internal");
        assert_eq!(ledger.balance(1, "USD").await.unwrap().available, dec("90"));
        ledger
            .health()
            .await
            .expect("a history read failing poisons nothing");
        history.broken.store(false, Ordering::SeqCst);
        let returned = ledger.return_withdrawal(tx, "back").await;
        assert!(matches!(
            returned.unwrap().status,
            WithdrawalStatus::Returned { .. }
        ));
    })
    .await;
}

#[tokio::test]
async fn past_the_retention_a_memory_only_ledger_drops_finished_withdrawals_and_says_unknown() {
    let clock = ManualClock::new();
    let config = config(&clock, None);
    let every = Duration::from_millis(config.account_idle_sweep_ms);
    with_ledger(config, |ledger| async move {
        let m = mix(&ledger).await;
        let balances = ledger.balances(1).await.unwrap();
        // Within the retention (59 s after): all kept.
        sweep(&clock, Duration::from_secs(59)).await;
        sweep(&clock, every).await;
        assert_eq!(held(&ledger).await.len(), 5);
        assert_eq!(
            ledger.withdrawal(m.completed.transaction_id).await.unwrap(),
            m.completed
        );
        // Past it: every finished one goes; the pending one stays.
        sweep(&clock, Duration::from_secs(2)).await;
        sweep(&clock, every).await;
        assert_eq!(held(&ledger).await, [m.pending.transaction_id]);
        assert_eq!(ledger.balances(1).await.unwrap(), balances);
        for w in [&m.completed, &m.failed, &m.cancelled, &m.to_return] {
            let tx = w.transaction_id;
            let unknown = LedgerError::UnknownWithdrawal { transaction_id: tx };
            assert_eq!(ledger.withdrawal(tx).await, Err(unknown.clone()));
            let returned = ledger.return_withdrawal(tx, "late").await;
            assert_eq!(returned, Err(unknown));
        }
        // Its key is still known (keys expire on their own terms): a replay
        // is never applied twice; it answers the first result, without
        // the times memory no longer holds.
        let replay = ledger
            .request_withdrawal(1, "USD", dec("1"), Some("k"))
            .await;
        let replay = replay.unwrap();
        let first = Withdrawal {
            status: WithdrawalStatus::Pending,
            created_at: None,
            updated_at: None,
            // Nothing paid yet when it was made.
            paid: None,
            ..m.completed.clone()
        };
        assert_eq!(replay, first);
        assert_eq!(ledger.balances(1).await.unwrap(), balances);
        // A pending withdrawal never leaves, however old.
        sweep(&clock, Duration::from_secs(86_400)).await;
        assert_eq!(
            ledger.withdrawal(m.pending.transaction_id).await.unwrap(),
            m.pending
        );
    })
    .await;
}

#[test]
fn a_retention_of_zero_is_refused_at_open() {
    let config = Config {
        finished_withdrawal_retention_ms: 0,
        ..Config::for_tests()
    };
    let refused = Ledger::open(config).err().expect("refused");
    assert!(refused
        .to_string()
        .contains("finished_withdrawal_retention_ms"));
}

/// Polls `ledger`'s memory until it holds only `ids` (its sweeps run on
/// the system clock, every 20 ms); bounded.
async fn until_held(ledger: &Ledger, ids: &[TransactionId]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while held(ledger).await != ids {
        assert!(
            Instant::now() < deadline,
            "still held: {:?}",
            held(ledger).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_crash_and_a_reopen_keep_the_answers_and_forget_again() {
    let dir = tempfile::tempdir().unwrap();
    let history = Arc::new(FakeHistory::default());
    let durable = |dir: &std::path::Path| Config {
        withdrawal_history: Some(SharedWithdrawalHistory(history.clone())),
        ..faults::config(dir)
    };
    let ledger = Ledger::open(durable(dir.path())).unwrap();
    let m = mix(&ledger).await;
    let before = answers(&ledger, &m).await;
    let horizon = UnixMs::from_millis(burnledger::clock::SystemClock::new().unix_ms() + 1);
    history.take_in(&ledger, horizon).await;
    until_held(&ledger, &[m.pending.transaction_id]).await;
    assert_eq!(answers(&ledger, &m).await, before);
    // A snapshot from the checkpointer's copy, then more of the log.
    ledger.snapshot().await.unwrap();
    let late = ledger.request_withdrawal(1, "USD", dec("6"), None).await;
    let late = late.unwrap().transaction_id;
    ledger.cancel_withdrawal(late).await.unwrap();
    // A crash: the folder as it is while the ledger runs, opened elsewhere.
    let crashed = tempfile::tempdir().unwrap();
    faults::copy_ledger(dir.path(), crashed.path());
    ledger.shutdown().await;
    let recovered = Ledger::open(durable(crashed.path())).unwrap();
    assert_eq!(answers(&recovered, &m).await, before, "recovered");
    // Recovery holds them again; the next sweeps forget them again (the
    // late one too, once the history holds it).
    let horizon = UnixMs::from_millis(burnledger::clock::SystemClock::new().unix_ms() + 1);
    history.take_in(&recovered, horizon).await;
    until_held(&recovered, &[m.pending.transaction_id]).await;
    let late = recovered.withdrawal(late).await.unwrap();
    assert_eq!(late.status, WithdrawalStatus::Cancelled);
    assert_eq!(answers(&recovered, &m).await, before, "forgotten again");
    common::assert_clean(&recovered).await;
    recovered.shutdown().await;
}

/// The account rules against themselves: one account that never forgets,
/// one that forgets at random horizons and, before each command, takes
/// back from a history (kept as the log follower keeps it: each
/// withdrawal's latest record) what the command needs, as the engine does.
/// Every answer and every balance must be the same.
mod model {
    use std::collections::HashMap;

    use burnledger::domain::account::{AccountState, Remembered};
    use burnledger::domain::money::{Currency, CurrencyCode};
    use burnledger::domain::withdrawal::{Settler, TransitionAction, WithdrawalRecord};
    use burnledger::{IdempotencyKey, TransactionId, UnixMs};
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Deposit(i128),
        Request(i128, Option<u8>),
        Act(usize, TransitionAction),
        Claim(usize),
        /// Forget what finished more than this many ms ago.
        Forget(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let action = prop_oneof![
            Just(TransitionAction::Complete),
            Just(TransitionAction::Fail),
            Just(TransitionAction::Cancel),
            Just(TransitionAction::Return),
            Just(TransitionAction::Release),
        ];
        prop_oneof![
            (1..500i128).prop_map(Op::Deposit),
            (1..300i128, proptest::option::of(0..3u8)).prop_map(|(a, k)| Op::Request(a, k)),
            (0..12usize, action).prop_map(|(i, a)| Op::Act(i, a)),
            (0..12usize).prop_map(Op::Claim),
            (0..8u64).prop_map(Op::Forget),
        ]
    }

    fn usd() -> Currency {
        Currency {
            code: CurrencyCode::new("USD").unwrap(),
            decimals: 2,
        }
    }

    /// A command's answer, comparable: the withdrawal and event, or the
    /// error's code.
    type Answer = Result<String, &'static str>;

    fn shown<T: std::fmt::Debug>(
        r: Result<T, burnledger::LedgerError>,
    ) -> Result<String, burnledger::LedgerError> {
        r.map(|e| format!("{e:?}"))
    }

    fn run(state: &mut AccountState, op: &Op, txs: &[TransactionId], at: UnixMs) -> Answer {
        let key = |k: &Option<u8>| k.map(|k| IdempotencyKey::new(&format!("k{k}")).unwrap());
        let tx = |i: &usize| txs.get(*i % txs.len().max(1)).copied();
        let answer = match op {
            Op::Deposit(amount) => shown(state.deposit(usd(), *amount, None, at).map(|e| e.event)),
            Op::Request(amount, k) => {
                let effect = state.request_withdrawal(usd(), *amount, key(k), 4, at);
                shown(effect.map(|e| (e.output, e.event)))
            }
            Op::Act(i, action) => match tx(i) {
                None => return Ok("no withdrawal yet".into()),
                Some(tx) => {
                    let host = Settler::Caller { engine_pays: false };
                    let by = match action {
                        TransitionAction::Release => Settler::Payout { payout_id: 1 },
                        _ => host,
                    };
                    let effect = state.update_withdrawal_by(tx, *action, "r", by, at);
                    shown(effect.map(|e| (e.output, e.event)))
                }
            },
            Op::Claim(i) => match tx(i) {
                None => return Ok("no withdrawal yet".into()),
                Some(tx) => shown(
                    state
                        .claim_withdrawal(tx, 1, at)
                        .map(|e| (e.output, e.event)),
                ),
            },
            Op::Forget(_) => return Ok(String::new()),
        };
        answer.map_err(|e| e.code())
    }

    /// What a command needs back (the engine's `Job::recalls`).
    fn recalls(state: &AccountState, op: &Op, txs: &[TransactionId]) -> Option<TransactionId> {
        let forgotten = |tx: TransactionId| state.remember(tx) == Remembered::Forgotten;
        match op {
            Op::Act(i, _) | Op::Claim(i) => {
                let tx = *txs.get(*i % txs.len().max(1))?;
                forgotten(tx).then_some(tx)
            }
            Op::Request(_, Some(k)) => {
                state.forgotten_by_key(&IdempotencyKey::new(&format!("k{k}")).unwrap())
            }
            _ => None,
        }
    }

    proptest! {
        #[test]
        fn forgetting_and_taking_back_changes_no_answer(ops in proptest::collection::vec(op(), 1..60)) {
            let (mut kept, mut forgetful) = (AccountState::new(1), AccountState::new(1));
            let mut history: HashMap<TransactionId, WithdrawalRecord> = HashMap::new();
            let mut txs: Vec<TransactionId> = Vec::new();
            for (step, op) in ops.iter().enumerate() {
                let now = 1_000 + step as u64;
                let at = UnixMs::from_millis(now);
                if let Op::Forget(ago) = op {
                    forgetful.forget_finished(UnixMs::from_millis(now - ago));
                }
                if let Some(tx) = recalls(&forgetful, op, &txs) {
                    let record = history.get(&tx).cloned().expect("the history holds it");
                    prop_assert_eq!(forgetful.restore_forgotten(tx, record), Ok(true));
                }
                let expected = run(&mut kept, op, &txs, at);
                let answer = run(&mut forgetful, op, &txs, at);
                prop_assert_eq!(&answer, &expected, "step {}: {:?}", step, op);
                prop_assert_eq!(forgetful.balances(), kept.balances());
                forgetful.check_invariants().map_err(TestCaseError::fail)?;
                // The follower: every withdrawal's latest record.
                for (tx, record) in forgetful.withdrawals() {
                    history.insert(tx, record.clone());
                    if !txs.contains(&tx) {
                        txs.push(tx);
                    }
                }
            }
        }
    }
}
