//! The log feeds the history store: the rows each kind of event makes
//! (times, balances after), a store deleted between runs rebuilt from what
//! the log holds, and crashes (SIGKILL at random points) after which the
//! reopened store equals one rebuilt from scratch from the same log, with
//! no snapshot ever ahead of the store; `verify` catches a store row that
//! was changed or deleted; a store a newer build wrote stops the open and
//! is left as it was.
//!
//! The crash tests re-execute this test binary as a child running only
//! [`crash_child`] (with its data folder in `HISTORY_FEED_CHILD`), as
//! `tests/crash.rs` does; without that variable `crash_child` does nothing.

#[path = "common/faults.rs"]
mod faults;

use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use burnledger::clock::ManualClock;
use burnledger::config::{PayoutMode, SharedPaymentService};
use burnledger::domain::payouts::PayoutState;
use burnledger::domain::withdrawal::StatusKind;
use burnledger::payment::{SimulatedBank, SimulatedBankConfig};
use burnledger::storage::history::{
    EntryKind, EntryRow, HistoryStore, PayoutQuery, PayoutRow, TransactionKind, TransactionRecord,
    WithdrawalQuery, WithdrawalRow, FORMAT, PAGE_LIMIT_MAX,
};
use burnledger::storage::inspect::{HistoryCheck, ReadOnlyFolder, VerifyReport};
use burnledger::{Config, CurrencyConfig, Decimal, Ledger, WithdrawalOutcome};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Every row of a store, for comparisons: withdrawals, the entries and
/// transactions of `accounts`, payouts.
#[derive(Debug, PartialEq, Eq)]
struct Dump {
    withdrawals: Vec<WithdrawalRow>,
    entries: Vec<EntryRow>,
    transactions: Vec<TransactionRecord>,
    payouts: Vec<PayoutRow>,
}

fn dump(dir: &Path, accounts: impl IntoIterator<Item = u64>) -> Dump {
    let store = HistoryStore::open(dir).unwrap();
    let mut withdrawals = Vec::new();
    let mut after = None;
    loop {
        let query = WithdrawalQuery {
            after: after.as_deref(),
            limit: PAGE_LIMIT_MAX,
            ..WithdrawalQuery::default()
        };
        let page = store.withdrawals(&query).unwrap();
        withdrawals.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut entries = Vec::new();
    for account in accounts {
        let mut after = None;
        loop {
            let page = store
                .entries(account, None, after.as_deref(), PAGE_LIMIT_MAX)
                .unwrap();
            entries.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    let transactions = entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Deposit | EntryKind::TransferOut))
        .map(|e| {
            store
                .transaction(e.tx)
                .unwrap()
                .expect("its transaction is stored")
        })
        .collect();
    let query = PayoutQuery {
        limit: PAGE_LIMIT_MAX,
        ..PayoutQuery::default()
    };
    let payouts = store.payouts(&query).unwrap().items;
    Dump {
        withdrawals,
        entries,
        transactions,
        payouts,
    }
}

fn usd_only() -> Vec<CurrencyConfig> {
    vec![CurrencyConfig::new("USD", 2)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_event_makes_its_rows_with_its_time_and_the_balances_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let bank = SimulatedBank::new(SimulatedBankConfig {
        item_failure_per_mille: 0,
        ..SimulatedBankConfig::default()
    });
    let config = Config {
        clock: clock.shared(),
        payout_mode: PayoutMode::Batched {
            interval_secs: 24 * 3600,
        },
        payment_service: Some(SharedPaymentService::new(bank)),
        currencies: usd_only(),
        ..Config::for_tests_in(tmp.path())
    };
    let ledger = Ledger::open(config).unwrap();
    let now = || clock.shared().unix_ms();
    let t0 = now();
    let deposit = ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    clock.advance(Duration::from_millis(5));
    let t1 = now();
    let paid = ledger.request_withdrawal(1, "USD", dec("30"), None).await;
    let paid = paid.unwrap();
    clock.advance(Duration::from_millis(5));
    let t2 = now();
    let transfer = ledger.transfer(1, 2, "USD", dec("20"), None).await.unwrap();
    clock.advance(Duration::from_millis(5));
    let t3 = now();
    let payouts = ledger.run_payouts_now().await.unwrap();
    let payout_id = payouts[0].payout_id;
    clock.advance(Duration::from_millis(5));
    let t4 = now();
    let cancelled = ledger.request_withdrawal(2, "USD", dec("5"), None).await;
    let cancelled = cancelled.unwrap().transaction_id;
    ledger.cancel_withdrawal(cancelled).await.unwrap();
    ledger.shutdown().await;
    drop(ledger);

    let rows = dump(tmp.path(), [1, 2]);
    let kinds: Vec<_> = rows
        .entries
        .iter()
        .map(|e| {
            (
                e.account,
                e.kind,
                e.amount,
                e.at_ms,
                e.available_after,
                e.locked_after,
            )
        })
        .collect();
    use EntryKind::*;
    assert_eq!(
        kinds,
        [
            (1, Deposit, 10_000, t0, 10_000, 0),
            (1, Lock, 3_000, t1, 7_000, 3_000),
            (1, TransferOut, 2_000, t2, 5_000, 3_000),
            (1, Burn, 3_000, t3, 5_000, 0),
            (2, TransferIn, 2_000, t2, 2_000, 0),
            (2, Lock, 500, t4, 1_500, 500),
            (2, Release, 500, t4, 2_000, 0),
        ]
    );
    let seqs: Vec<_> = rows.entries.iter().map(|e| e.seq).collect();
    assert!(seqs[..4].windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let row = |tx| rows.withdrawals.iter().find(|w| w.tx == tx).unwrap();
    let w = row(paid.transaction_id);
    assert_eq!(
        (w.status, w.payout_id),
        (StatusKind::Completed, Some(payout_id))
    );
    assert_eq!(
        (w.created_at_ms, w.updated_at_ms, w.amount),
        (t1, t3, 3_000)
    );
    let c = row(cancelled);
    assert_eq!(
        (c.status, c.created_at_ms, c.updated_at_ms),
        (StatusKind::Cancelled, t4, t4)
    );
    let kinds: Vec<_> = rows
        .transactions
        .iter()
        .map(|t| match t {
            TransactionRecord::Other(t) => (t.tx, t.kind, t.to, t.amount, t.at_ms),
            other => panic!("not a deposit or transfer: {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (
                deposit.transaction_id,
                TransactionKind::Deposit,
                None,
                10_000,
                t0
            ),
            (
                transfer.transaction_id,
                TransactionKind::Transfer,
                Some(2),
                2_000,
                t2
            ),
        ]
    );
    let payout = &rows.payouts[0];
    assert_eq!(rows.payouts.len(), 1);
    assert_eq!(
        (payout.payout_id, payout.state),
        (payout_id, PayoutState::Completed)
    );
    assert_eq!(
        (payout.submitted_at_ms, payout.settled_at_ms),
        (t3, Some(t3))
    );
    assert_eq!(payout.items.len(), 1);
    assert_eq!(
        (payout.items[0].tx, payout.items[0].amount),
        (paid.transaction_id, 3_000)
    );
}

/// Deposits, withdrawals (completed, failed, cancelled, left pending) and
/// transfers among `accounts` accounts, in each of `rounds`.
async fn workload(ledger: &Ledger, accounts: u64, rounds: std::ops::Range<u64>) {
    for round in rounds {
        for account in 0..accounts {
            ledger
                .deposit(account, "USD", dec("10"), None)
                .await
                .unwrap();
            let w = ledger.request_withdrawal(account, "USD", dec("1.5"), None);
            let tx = w.await.unwrap().transaction_id;
            let outcome = match (round + account) % 4 {
                0 => Some(WithdrawalOutcome::Completed),
                1 => Some(WithdrawalOutcome::Failed {
                    reason: "bank said no".into(),
                }),
                _ => None,
            };
            match outcome {
                Some(outcome) => drop(ledger.complete_withdrawal(tx, outcome).await.unwrap()),
                None if (round + account) % 4 == 2 => {
                    drop(ledger.cancel_withdrawal(tx).await.unwrap())
                }
                None => {}
            }
            let to = (account + 1) % accounts;
            ledger
                .transfer(account, to, "USD", dec("0.25"), None)
                .await
                .unwrap();
        }
    }
}

fn durable(dir: &Path) -> Config {
    Config {
        currencies: usd_only(),
        account_pending_withdrawals_max: 10_000,
        ..Config::for_tests_in(dir)
    }
}

/// A durable ledger in `dir` that never snapshots (its whole log stays),
/// run through `rounds` of the workload on `accounts` and shut down: its
/// configuration, and what its history store holds of those accounts.
async fn ran_and_shut_down(
    dir: &Path,
    accounts: u64,
    rounds: std::ops::Range<u64>,
) -> (Config, Dump) {
    let config = Config {
        snapshot_every_events: u64::MAX,
        ..durable(dir)
    };
    let ledger = Ledger::open(config.clone()).unwrap();
    workload(&ledger, accounts, rounds).await;
    ledger.shutdown().await;
    drop(ledger);
    (config, dump(dir, 0..accounts))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_deleted_between_runs_is_rebuilt_from_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, before) = ran_and_shut_down(tmp.path(), 5, 0..4).await;
    assert_eq!(before.withdrawals.len(), 20);

    std::fs::remove_dir_all(HistoryStore::dir_in(tmp.path())).unwrap();
    let ledger = Ledger::open(config).unwrap();
    let report = ledger.recovery_report().unwrap().clone();
    the_store_lists_every_withdrawal_memory_holds(&ledger).await;
    ledger.shutdown().await;
    drop(ledger);
    assert_eq!(report.history_lost, None, "the whole log was there");
    assert_eq!(dump(tmp.path(), 0..5), before);
}

/// Every withdrawal memory holds is in the store (so none can leave
/// memory without leaving the ledger), as the listing shows it.
async fn the_store_lists_every_withdrawal_memory_holds(ledger: &Ledger) {
    let held = ledger.export_accounts().await.unwrap();
    let held: Vec<_> = held.iter().flat_map(|a| &a.withdrawals).collect();
    assert!(!held.is_empty());
    for withdrawal in held {
        let query = burnledger::WithdrawalQuery {
            account: Some(withdrawal.account),
            limit: PAGE_LIMIT_MAX,
            ..Default::default()
        };
        let listed = ledger.withdrawals(query).await.unwrap().items;
        let seen = |w: &&burnledger::Withdrawal| {
            (w.transaction_id, &w.status) == (withdrawal.transaction_id, &withdrawal.status)
        };
        assert!(
            listed.iter().any(|w| seen(&w)),
            "{withdrawal:?} is not in {listed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_deleted_after_the_log_was_compacted_gets_what_the_log_still_has() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        snapshot_every_events: u64::MAX,
        snapshots_kept: 1,
        wal_segment_bytes_max: 512,
        ..durable(tmp.path())
    };
    let ledger = Ledger::open(config.clone()).unwrap();
    workload(&ledger, 5, 0..2).await;
    let snapshot = ledger.snapshot().await.unwrap().unwrap();
    workload(&ledger, 5, 2..3).await;
    // The store is fed behind the log: a history read waits until it holds
    // every acknowledged write, so what `before` reads is all of it (CI
    // once read the store still three entries behind, and the rebuilt
    // store, rightly holding them, differed).
    ledger.entries(0, None, None, 1).await.unwrap();
    // Dropped without a shutdown: no final snapshot, so the log after the
    // one above is all that is left of the history.
    drop(ledger);
    let before = dump(tmp.path(), 0..5);

    std::fs::remove_dir_all(HistoryStore::dir_in(tmp.path())).unwrap();
    let ledger = Ledger::open(config).unwrap();
    let report = ledger.recovery_report().unwrap().clone();
    // The state recovery starts from is given to the store: what the log
    // lost is only the entries and transactions before it.
    the_store_lists_every_withdrawal_memory_holds(&ledger).await;
    ledger.shutdown().await;
    drop(ledger);
    let (first, last) = report
        .history_lost
        .expect("the history before the log is lost");
    assert_eq!(first, 1);
    assert!(last >= snapshot.lsn, "{last} < {}", snapshot.lsn);
    let after = dump(tmp.path(), 0..5);
    let kept: Vec<_> = before.entries.iter().filter(|e| e.seq > last).collect();
    assert!(!kept.is_empty());
    assert_eq!(after.entries.iter().collect::<Vec<_>>(), kept);
}

/// `verify`'s history verdict on `dir`.
fn verify_history(dir: &Path) -> HistoryCheck {
    let folder = ReadOnlyFolder::at_rest(dir).unwrap();
    let VerifyReport::Rebuilt(rebuilt) = folder.verify(None, &usd_only()).unwrap() else {
        panic!("the folder rebuilds");
    };
    rebuilt.history
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_fails_when_a_store_row_is_changed_or_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(durable(tmp.path())).unwrap();
    workload(&ledger, 3, 0..2).await;
    ledger.shutdown().await;
    drop(ledger);
    let clean = verify_history(tmp.path());
    assert!(clean.is_clean(), "{clean:?}");
    assert!(matches!(clean, HistoryCheck::Checked { rows_checked, .. } if rows_checked > 20));

    // A row rewritten (its status flipped) and an entry deleted: ingest
    // replaces whole rows, so a forged batch above the watermark does it.
    let store = HistoryStore::open(tmp.path()).unwrap();
    let mut row = store
        .withdrawals(&WithdrawalQuery::default())
        .unwrap()
        .items[0]
        .clone();
    row.status = StatusKind::Completed;
    row.amount += 1;
    let watermark = store.applied_lsn().unwrap();
    let change = burnledger::storage::history::Change::Withdrawal(row);
    store.ingest(watermark + 1, &[change]).unwrap();
    drop(store);
    let HistoryCheck::Checked {
        mismatch_count,
        mismatches,
        ..
    } = verify_history(tmp.path())
    else {
        panic!("the store is read");
    };
    assert!(mismatch_count >= 1, "{mismatches:?}");
    assert!(mismatches[0].contains("withdrawal"), "{mismatches:?}");

    // The command says so and exits 1.
    let verify = Command::new(env!("CARGO_BIN_EXE_burnledger"))
        .args(["verify", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains("history mismatch: withdrawal"),
        "{printed}"
    );
    assert!(printed.contains("rows differ from the log"), "{printed}");

    std::fs::remove_dir_all(HistoryStore::dir_in(tmp.path())).unwrap();
    HistoryStore::open(tmp.path()).unwrap();
    let emptied = verify_history(tmp.path());
    assert!(
        !emptied.is_clean(),
        "an empty store lists nothing the log says"
    );
}

/// A fee in the withdrawal's own currency makes two changes to one
/// balance in one event (locked with the amount, leaving with it), and a
/// partial completion two more (burned, released): `verify` must match
/// each part with its own, not report a clean store as changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_is_clean_when_events_change_a_balance_in_several_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config {
        fee_account: Some(900),
        ..durable(tmp.path())
    };
    let ledger = Ledger::open(config).unwrap();
    let fee = || burnledger::WithdrawalOptions {
        fee: Some(burnledger::FeeRequest {
            currency: burnledger::CurrencyCode::new("USD").unwrap(),
            amount: dec("0.10"),
        }),
        ..Default::default()
    };
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let outcomes = [
        WithdrawalOutcome::Completed,
        WithdrawalOutcome::PartlyCompleted { paid: dec("2") },
        WithdrawalOutcome::Failed {
            reason: "bank said no".into(),
        },
    ];
    for outcome in outcomes {
        let w = ledger.request_withdrawal_with(1, "USD", dec("5"), None, fee());
        let tx = w.await.unwrap().transaction_id;
        ledger.complete_withdrawal(tx, outcome).await.unwrap();
    }
    ledger.shutdown().await;
    drop(ledger);
    let parts = dump(tmp.path(), [1]).entries;
    assert!(parts.iter().any(|e| e.part > 0), "{parts:?}");
    let check = verify_history(tmp.path());
    assert!(check.is_clean(), "{check:?}");
}

/// Withdrawals a payout paid, failed, or paid and then saw returned, all
/// settled before the newest snapshot and still in it: their statuses no
/// longer name the payout, yet the store's rows do (the live feed saw it
/// just before they settled). `verify` replays from that snapshot and
/// must name the same payouts — it once named none and failed a clean
/// folder (the README's main job). (Withdrawals callers settle name none
/// in both: `verify_fails_when_a_store_row_is_changed_or_deleted`'s
/// clean folder.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_who_paid_withdrawals_settled_before_the_newest_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let bank = SimulatedBank::new(SimulatedBankConfig {
        item_failure_per_mille: 400,
        seed: 5,
        ..SimulatedBankConfig::default()
    });
    // A clock that stands still: withdrawals leave memory only when they
    // finished before the store's newest event, so all stay in the
    // snapshot, as those a run settles last do (the store's horizon
    // lags the snapshot by at most its ingest window).
    let clock = ManualClock::new();
    let config = Config {
        clock: clock.shared(),
        payout_mode: PayoutMode::Batched {
            interval_secs: 24 * 3600,
        },
        payment_service: Some(SharedPaymentService::new(bank)),
        snapshot_every_events: u64::MAX,
        // The log before the snapshot is deleted: verify replays from it.
        snapshots_kept: 1,
        wal_segment_bytes_max: 512,
        ..durable(tmp.path())
    };
    let ledger = Ledger::open(config).unwrap();
    let mut txs = Vec::new();
    for account in 0..8 {
        ledger
            .deposit(account, "USD", dec("10"), None)
            .await
            .unwrap();
        for _ in 0..2 {
            let w = ledger
                .request_withdrawal(account, "USD", dec("1"), None)
                .await;
            txs.push(w.unwrap().transaction_id);
        }
    }
    ledger.run_payouts_now().await.unwrap();
    let mut returned = false;
    for tx in &txs {
        if !returned && ledger.return_withdrawal(*tx, "bounced").await.is_ok() {
            returned = true;
        }
    }
    assert!(returned, "no withdrawal was paid");
    ledger.snapshot().await.unwrap().unwrap();
    let held = ledger.export_accounts().await.unwrap();
    assert_eq!(held.iter().map(|a| a.withdrawals.len()).sum::<usize>(), 16);
    ledger.shutdown().await;
    drop(ledger);

    let rows = dump(tmp.path(), 0..8).withdrawals;
    let named = |status| {
        rows.iter()
            .filter(|r| r.status == status && r.payout_id.is_some())
            .count()
    };
    assert!(named(StatusKind::Completed) > 0, "{rows:?}");
    assert!(named(StatusKind::Failed) > 0, "{rows:?}");
    assert_eq!(named(StatusKind::Returned), 1, "{rows:?}");
    let check = verify_history(tmp.path());
    assert!(check.is_clean(), "{check:?}");
}

// ---------------------------------------------------------------------------
// Crashes
// ---------------------------------------------------------------------------

const CHILD_ENV: &str = "HISTORY_FEED_CHILD";
const CHILD_MODE_ENV: &str = "HISTORY_FEED_CHILD_MODE";
const CHILD_ACCOUNTS: u64 = 6;

/// How the crash tests' ledgers snapshot.
#[derive(Clone, Copy)]
enum Snapshots {
    /// Only at shutdown: the log keeps everything until then.
    AtShutdown,
    /// Every 97 events, one kept: the log before it is deleted.
    OftenOneKept,
}

fn crash_config(dir: &Path, snapshots: Snapshots) -> Config {
    let (snapshot_every_events, snapshots_kept) = match snapshots {
        Snapshots::AtShutdown => (u64::MAX, 2),
        Snapshots::OftenOneKept => (97, 1),
    };
    Config {
        snapshot_every_events,
        snapshots_kept,
        wal_segment_bytes_max: 4096,
        ..durable(dir)
    }
}

/// The child's body: a busy ledger that never stops, saying `ROUND n`
/// after each round of work; killed by the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let snapshots = match std::env::var(CHILD_MODE_ENV).unwrap().as_str() {
        "often" => Snapshots::OftenOneKept,
        _ => Snapshots::AtShutdown,
    };
    let ledger = Ledger::open(crash_config(Path::new(&dir), snapshots)).unwrap();
    for round in 0.. {
        workload(&ledger, CHILD_ACCOUNTS, round..round + 1).await;
        println!("ROUND {round}");
    }
}

/// Runs the child on `dir` and kills it with SIGKILL as soon as it has
/// said it finished `rounds` rounds (it is then somewhere in the next).
fn run_and_kill(dir: &Path, snapshots: Snapshots, rounds: u64) {
    use std::io::BufRead;
    let mode = match snapshots {
        Snapshots::OftenOneKept => "often",
        Snapshots::AtShutdown => "at-shutdown",
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(CHILD_MODE_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let wanted = format!("ROUND {rounds}");
    let reached = std::io::BufReader::new(stdout)
        .lines()
        .any(|line| line.unwrap() == wanted);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(reached, "the child worked {rounds} rounds");
}

/// Opens `config`'s folder (which catches its store up) and shuts down;
/// answers the recovery report.
fn reopen(config: Config) -> burnledger::storage::inspect::RecoveryReport {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let ledger = Ledger::open(config).unwrap();
        let report = ledger.recovery_report().unwrap().clone();
        ledger.shutdown().await;
        report
    })
}

/// A seeded generator of kill points.
fn rounds(seed: &mut u64, from: u64, span: u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    from + (*seed >> 33) % span
}

#[test]
fn after_a_kill_at_random_points_the_store_equals_one_rebuilt_from_scratch_from_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let mut seed = 0x5eed_u64;
    for round in 0..3 {
        let dir = tmp.path().join(format!("ledger-{round}"));
        run_and_kill(&dir, Snapshots::AtShutdown, rounds(&mut seed, 2, 10));
        // A copy of the crashed folder without its store: the same log.
        let scratch = tmp.path().join(format!("scratch-{round}"));
        faults::copy_ledger(&dir, &scratch);
        std::fs::copy(dir.join("CURRENCIES"), scratch.join("CURRENCIES")).unwrap();
        reopen(crash_config(&dir, Snapshots::AtShutdown));
        let report = reopen(crash_config(&scratch, Snapshots::AtShutdown));
        assert_eq!(
            report.history_lost, None,
            "round {round}: the whole log is there"
        );
        let accounts = 0..CHILD_ACCOUNTS;
        let (store, rebuilt) = (dump(&dir, accounts.clone()), dump(&scratch, accounts));
        assert!(!store.entries.is_empty());
        assert_eq!(store, rebuilt, "round {round}");
        let check = verify_history(&dir);
        assert!(check.is_clean(), "round {round}: {check:?}");
    }
}

#[test]
fn after_a_kill_no_snapshot_is_ahead_of_the_store_even_when_the_log_behind_it_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let mut seed = 0xdead_u64;
    for round in 0..3 {
        // One snapshot kept: the log before it is deleted, so a store
        // behind it would have lost that history for good.
        run_and_kill(&dir, Snapshots::OftenOneKept, rounds(&mut seed, 5, 10));
        let report = reopen(crash_config(&dir, Snapshots::OftenOneKept));
        assert!(
            report.snapshot.is_some(),
            "round {round}: snapshots were written"
        );
        assert_eq!(report.history_lost, None, "round {round}");
        let check = verify_history(&dir);
        assert!(check.is_clean(), "round {round}: {check:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_ahead_of_the_log_is_rebuilt_and_takes_the_new_events() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, earlier) = (tmp.path().join("ledger"), tmp.path().join("earlier"));
    let config = |dir: &Path| Config {
        snapshot_every_events: u64::MAX,
        ..durable(dir)
    };
    let ledger = Ledger::open(config(&dir)).unwrap();
    workload(&ledger, 3, 0..1).await;
    ledger.shutdown().await;
    drop(ledger);
    // The log and snapshots as they were, then more history on top.
    faults::copy_ledger(&dir, &earlier);
    let ledger = Ledger::open(config(&dir)).unwrap();
    workload(&ledger, 3, 1..3).await;
    ledger.shutdown().await;
    drop(ledger);
    let ahead = dump(&dir, 0..3);
    assert_eq!(ahead.withdrawals.len(), 9);

    // The log loses what came after (a lost tail); the store kept it.
    for sub in ["wal", "snapshots"] {
        std::fs::remove_dir_all(dir.join(sub)).unwrap();
    }
    faults::copy_ledger(&earlier, &dir);
    let ledger = Ledger::open(config(&dir)).unwrap();
    let deposit = ledger.deposit(0, "USD", dec("1"), None).await.unwrap();
    ledger.shutdown().await;
    drop(ledger);
    let rows = dump(&dir, 0..3);
    assert!(
        rows.withdrawals.len() < ahead.withdrawals.len(),
        "what the log lost is not listed: {} rows",
        rows.withdrawals.len()
    );
    let last = rows.entries.iter().rfind(|e| e.account == 0).unwrap();
    assert_eq!(
        (last.tx, last.kind),
        (deposit.transaction_id, EntryKind::Deposit)
    );
    let check = verify_history(&dir);
    assert!(check.is_clean(), "{check:?}");
}

/// Stamps the folder's history store with `format` (`None`: reads it), as
/// the build that wrote it would have (opened as fjall: a store would
/// refuse or re-stamp); the marker then held.
fn history_format(dir: &Path, format: Option<u32>) -> Option<Vec<u8>> {
    let db = fjall::Database::builder(HistoryStore::dir_in(dir))
        .open()
        .unwrap();
    let meta = db
        .keyspace("meta", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    if let Some(format) = format {
        meta.insert("format", format.to_be_bytes()).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    meta.get("format").unwrap().map(|v| v.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_a_newer_build_wrote_refuses_the_open_and_is_left_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, before) = ran_and_shut_down(tmp.path(), 3, 0..2).await;

    let ours = FORMAT.to_be_bytes().to_vec();
    assert_eq!(
        history_format(tmp.path(), None),
        Some(ours),
        "stamped by the ledger"
    );
    let newer = (FORMAT + 1).to_be_bytes().to_vec();
    assert_eq!(
        history_format(tmp.path(), Some(FORMAT + 1)),
        Some(newer.clone())
    );
    let refused = Ledger::open(config.clone()).err().map(|e| e.to_string());
    let expected = format!("format {} is newer than this build reads", FORMAT + 1);
    assert!(
        refused.as_deref().is_some_and(|e| e.contains(&expected)),
        "{refused:?}"
    );
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("history.damaged-")),
        "not set aside nor rebuilt: {names:?}"
    );
    assert_eq!(
        history_format(tmp.path(), None),
        Some(newer),
        "left as it was"
    );
    // With the store back at this build's format (the newer build's
    // operator downgrading on purpose), everything is as it was.
    history_format(tmp.path(), Some(FORMAT));
    let ledger = Ledger::open(config).unwrap();
    ledger.shutdown().await;
    drop(ledger);
    assert_eq!(dump(tmp.path(), 0..3), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_opened_is_set_aside_and_rebuilt_from_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, before) = ran_and_shut_down(tmp.path(), 3, 0..2).await;

    // Not a store at all: a file where its folder should be.
    let store_dir = HistoryStore::dir_in(tmp.path());
    std::fs::remove_dir_all(&store_dir).unwrap();
    std::fs::write(&store_dir, b"not a store").unwrap();
    let ledger = Ledger::open(config).unwrap();
    ledger.shutdown().await;
    drop(ledger);
    assert_eq!(dump(tmp.path(), 0..3), before, "rebuilt from the whole log");
    let set_aside: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("history.damaged-"))
        .collect();
    assert_eq!(set_aside.len(), 1, "kept for the operator");
}
