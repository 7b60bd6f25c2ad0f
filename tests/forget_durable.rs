//! Memory that stays flat on a ledger with a data folder (issue 13): its
//! history store is where finished withdrawals go once it holds them
//! (below each shard's horizon). The engine forgets them and answers as
//! before from the store; the checkpointer's copy forgets them too, so
//! snapshots stay small; a return of a forgotten withdrawal survives a
//! crash (replay takes it back from the store); and what a restart brings
//! back into memory leaves again at the next sweep.
//!
//! Every clock here is a `ManualClock`: a withdrawal leaves memory only
//! once the clock moved past its last change and a later event of its
//! shard reached the store.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burnledger::clock::ManualClock;
use burnledger::config::SharedWithdrawalHistory;
use burnledger::domain::withdrawal::{WithdrawalHistory, WithdrawalRecord};
use burnledger::storage::inspect::ReadOnlyFolder;
use burnledger::storage::snapshot;
use burnledger::{
    Config, CurrencyConfig, Ledger, LedgerError, TransactionId, UnixMs, Withdrawal,
    WithdrawalOutcome, WithdrawalQuery, WithdrawalStatus,
};
use common::dec;

/// A durable ledger in `dir` on `clock`.
fn config(dir: &Path, clock: &ManualClock) -> Config {
    Config {
        clock: clock.shared(),
        ..Config::for_tests_in(dir)
    }
}

/// The withdrawals the ledger holds in memory.
async fn held(ledger: &Ledger) -> Vec<TransactionId> {
    let accounts = ledger.export_accounts().await.unwrap();
    let mut ids: Vec<_> = accounts
        .iter()
        .flat_map(|a| &a.withdrawals)
        .map(|w| w.transaction_id)
        .collect();
    ids.sort();
    ids
}

/// Moves the clock on by a second and logs a deposit of 0.01 to each of
/// `accounts`, then waits until the store took them in: each of their
/// shards' horizons is then past everything before.
async fn move_horizons(ledger: &Ledger, clock: &ManualClock, accounts: &[u64]) {
    clock.advance(Duration::from_secs(1));
    for &account in accounts {
        let deposit = ledger.deposit(account, "USD", dec("0.01"), None);
        deposit.await.unwrap();
    }
    // A listing reads the store once it holds every acknowledged write.
    let listed = ledger.withdrawals(WithdrawalQuery::default()).await;
    listed.expect("the store caught up");
}

/// Lets the shards sweep (the clock moved on by a sweep interval at a
/// time) until memory holds exactly `expected`; fails after 20 s.
async fn swept_until(ledger: &Ledger, clock: &ManualClock, expected: &[TransactionId]) {
    let every = Duration::from_millis(ledger.config().account_idle_sweep_ms);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = held(ledger).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "memory still holds {now:?}, not {expected:?}"
        );
        clock.advance(every);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One withdrawal of each finished kind on account 1 (100.00 USD in) and
/// one still pending; the completed one was requested with key "k".
struct Mix {
    completed: TransactionId,
    failed: TransactionId,
    cancelled: TransactionId,
    to_return: TransactionId,
    pending: TransactionId,
}

async fn mix(ledger: &Ledger) -> Mix {
    ledger.deposit(1, "USD", dec("100"), None).await.unwrap();
    let request = |amount: &'static str, k: Option<&'static str>| async move {
        let w = ledger.request_withdrawal(1, "USD", dec(amount), k).await;
        w.unwrap().transaction_id
    };
    let m = Mix {
        completed: request("1", Some("k")).await,
        failed: request("2", None).await,
        cancelled: request("3", None).await,
        to_return: request("4", None).await,
        pending: request("5", None).await,
    };
    let refused = WithdrawalOutcome::Failed {
        reason: "bank said no".into(),
    };
    for (tx, outcome) in [
        (m.completed, WithdrawalOutcome::Completed),
        (m.failed, refused),
        (m.to_return, WithdrawalOutcome::Completed),
    ] {
        ledger.complete_withdrawal(tx, outcome).await.unwrap();
    }
    ledger.cancel_withdrawal(m.cancelled).await.unwrap();
    m
}

/// Every answer a caller can get about the finished withdrawals without
/// changing anything: the reads, the repeated outcomes, a refused
/// transition, the keyed replay.
async fn answers(ledger: &Ledger, m: &Mix) -> Vec<Result<Withdrawal, LedgerError>> {
    let paid = || WithdrawalOutcome::Completed;
    let mut all = Vec::new();
    for tx in [m.completed, m.failed, m.cancelled, m.to_return] {
        all.push(ledger.withdrawal(tx).await);
    }
    all.push(ledger.complete_withdrawal(m.completed, paid()).await);
    let refused = WithdrawalOutcome::Failed {
        reason: "bank said no".into(),
    };
    all.push(ledger.complete_withdrawal(m.failed, refused).await);
    all.push(ledger.cancel_withdrawal(m.cancelled).await);
    all.push(ledger.cancel_withdrawal(m.completed).await);
    let replay = ledger.request_withdrawal(1, "USD", dec("1"), Some("k"));
    all.push(replay.await);
    all
}

/// The withdrawals of account `account` a snapshot file holds.
fn in_snapshot(file: &snapshot::SnapshotFile, account: u64) -> Vec<TransactionId> {
    let contents = snapshot::read_full(&file.path).unwrap();
    let state = contents.accounts.iter().find(|a| a.id() == account);
    let ids = state.into_iter().flat_map(|a| a.withdrawals());
    ids.map(|(tx, _)| tx).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_folder_ledger_forgets_finished_withdrawals_the_store_holds_and_answers_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let ledger = Ledger::open(config(dir.path(), &clock)).unwrap();
    let m = mix(&ledger).await;
    let before = answers(&ledger, &m).await;
    // The clock moves, but no later event reached the store: its horizon
    // is the time of these very events, which none is older than.
    let every = Duration::from_millis(ledger.config().account_idle_sweep_ms);
    for _ in 0..10 {
        clock.advance(every);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(held(&ledger).await.len(), 5, "nothing forgotten yet");

    move_horizons(&ledger, &clock, &[1]).await;
    swept_until(&ledger, &clock, &[m.pending]).await;
    let after = answers(&ledger, &m).await;
    assert_eq!(after, before, "the same answers after forgetting");

    // A completed withdrawal it forgot can still be returned.
    swept_until(&ledger, &clock, &[m.pending]).await;
    let returned = ledger.return_withdrawal(m.to_return, "sent back").await;
    let returned = returned.unwrap();
    assert!(matches!(returned.status, WithdrawalStatus::Returned { .. }));
    // 100 in and 0.01; 1 and 4 paid, 5 locked; 2 and 3 back; then 4 back.
    let usd = ledger.balance(1, "USD").await.unwrap();
    assert_eq!((usd.available, usd.locked), (dec("94.01"), dec("5")));
    assert_eq!(ledger.withdrawal(m.to_return).await.unwrap(), returned);
    assert!(ledger.audit().await.unwrap().is_clean());
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_of_a_forgotten_withdrawal_survives_a_crash_and_the_copy_takes_it_back_too() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let ledger = Ledger::open(config(dir.path(), &clock)).unwrap();
    let m = mix(&ledger).await;
    move_horizons(&ledger, &clock, &[1]).await;
    swept_until(&ledger, &clock, &[m.pending]).await;
    // The checkpointer's copy forgot them too: the snapshot lacks them.
    let taken = ledger.snapshot().await.unwrap().expect("a snapshot");
    assert_eq!(in_snapshot(&taken, 1), [m.pending]);

    // Returned after the snapshot, then a crash: recovery replays the
    // return onto a state that forgot the withdrawal.
    let returned = ledger.return_withdrawal(m.to_return, "sent back").await;
    let returned = returned.unwrap();
    let balances = ledger.balances(1).await.unwrap();
    drop(ledger);

    // `verify` replays it too (reading the folder's store), and finds the
    // store agreeing with the log.
    let folder = ReadOnlyFolder::at_rest(dir.path()).unwrap();
    let verified = folder
        .verify(None, &[CurrencyConfig::new("USD", 2)])
        .unwrap();
    assert!(verified.is_clean(), "{verified:?}");
    drop(folder);

    let ledger = Ledger::open(config(dir.path(), &clock)).expect("recovery replays the return");
    let report = ledger.recovery_report().unwrap().clone();
    assert_eq!(report.snapshot.map(|s| s.lsn), Some(taken.lsn));
    assert!(report.records_replayed > 0);
    assert_eq!(ledger.balances(1).await.unwrap(), balances);
    assert_eq!(ledger.withdrawal(m.to_return).await.unwrap(), returned);

    // The copy meets the same: the completed withdrawal 1, forgotten in
    // the copy (it started from the snapshot), is returned; the next
    // snapshot holds the return, and a restart from it agrees.
    let returned = ledger.return_withdrawal(m.completed, "sent back").await;
    let returned = returned.unwrap();
    let balances = ledger.balances(1).await.unwrap();
    let usd = &balances[0];
    // 100 in and 0.01; 5 locked; 1, 2, 3 and 4 back.
    assert_eq!((usd.available, usd.locked), (dec("95.01"), dec("5")));
    let next = ledger
        .snapshot()
        .await
        .unwrap()
        .expect("the copy applied the return");
    assert!(next.lsn > taken.lsn);
    ledger.shutdown().await;
    let ledger = Ledger::open(config(dir.path(), &clock)).unwrap();
    assert_eq!(ledger.recovery_report().unwrap().records_replayed, 0);
    assert_eq!(ledger.balances(1).await.unwrap(), balances);
    assert_eq!(ledger.withdrawal(m.completed).await.unwrap(), returned);
    assert!(ledger.audit().await.unwrap().is_clean());
    ledger.shutdown().await;
}

/// The size of the snapshot taken after `count` withdrawals on each of
/// four accounts were made and completed, once the store holds them.
async fn snapshot_bytes_after(count: usize) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let config = Config {
        snapshot_every_events: u64::MAX,
        ..config(dir.path(), &clock)
    };
    let ledger = Ledger::open(config).unwrap();
    let accounts = [1, 2, 3, 4];
    for &account in &accounts {
        ledger
            .deposit(account, "USD", dec("1000"), None)
            .await
            .unwrap();
        for _ in 0..count {
            let w = ledger.request_withdrawal(account, "USD", dec("0.01"), None);
            let tx = w.await.unwrap().transaction_id;
            let paid = ledger.complete_withdrawal(tx, WithdrawalOutcome::Completed);
            paid.await.unwrap();
        }
    }
    move_horizons(&ledger, &clock, &accounts).await;
    let taken = ledger.snapshot().await.unwrap().expect("a snapshot");
    for &account in &accounts {
        assert_eq!(in_snapshot(&taken, account), [], "account {account}");
    }
    let bytes = std::fs::metadata(&taken.path).unwrap().len();
    ledger.shutdown().await;
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_do_not_grow_with_finished_withdrawals() {
    let small = snapshot_bytes_after(50).await;
    let large = snapshot_bytes_after(200).await;
    // Only the accounts' counters (sequence numbers, sums) differ.
    assert!(
        large <= small + 64,
        "{large} bytes after 800 finished withdrawals, {small} after 200"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_withdrawals_a_restart_brings_back_leave_memory_at_the_next_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let ledger = Ledger::open(config(dir.path(), &clock)).unwrap();
    let m = mix(&ledger).await;
    // Snapshotted while the store's horizon is their own time: kept.
    let taken = ledger.snapshot().await.unwrap().expect("a snapshot");
    assert_eq!(in_snapshot(&taken, 1).len(), 5);
    // A later event, then a crash before any snapshot forgets them.
    clock.advance(Duration::from_secs(1));
    ledger.deposit(1, "USD", dec("0.01"), None).await.unwrap();
    let before = answers(&ledger, &m).await;
    drop(ledger);

    let ledger = Ledger::open(config(dir.path(), &clock)).unwrap();
    assert_eq!(held(&ledger).await.len(), 5, "recovery holds them again");
    swept_until(&ledger, &clock, &[m.pending]).await;
    assert_eq!(answers(&ledger, &m).await, before);
    // The copy forgets them again too.
    swept_until(&ledger, &clock, &[m.pending]).await;
    ledger.deposit(1, "USD", dec("0.01"), None).await.unwrap();
    let next = ledger.snapshot().await.unwrap().expect("a snapshot");
    assert_eq!(in_snapshot(&next, 1), [m.pending]);
    ledger.shutdown().await;
}

/// A host's own history: the records it was given, all of every shard's
/// events in it (its horizon is the end of time); counts its look-ups.
#[derive(Default)]
struct HostHistory {
    records: Mutex<HashMap<TransactionId, WithdrawalRecord>>,
    asked: AtomicUsize,
}

impl WithdrawalHistory for HostHistory {
    fn horizon(&self, _shard: usize) -> UnixMs {
        UnixMs::from_millis(u64::MAX)
    }

    fn withdrawal(&self, tx: TransactionId) -> Result<Option<WithdrawalRecord>, String> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Ok(self.records.lock().unwrap().get(&tx).cloned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_s_own_history_takes_precedence_over_the_data_folder_s_store() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let host = Arc::new(HostHistory::default());
    let config = Config {
        withdrawal_history: Some(SharedWithdrawalHistory(host.clone())),
        ..config(dir.path(), &clock)
    };
    let ledger = Ledger::open(config).unwrap();
    let m = mix(&ledger).await;
    let completed = ledger.withdrawal(m.completed).await.unwrap();
    // The host's history holds the completed one only (as it was: USD, 2
    // decimals), and its horizon forgets every finished one at once.
    let record = WithdrawalRecord {
        currency: burnledger::domain::money::Currency {
            code: completed.currency,
            decimals: 2,
        },
        amount: 100,
        status: WithdrawalStatus::Completed,
        created_at: completed.created_at.unwrap(),
        updated_at: completed.updated_at.unwrap(),
        extras: Default::default(),
    };
    host.records.lock().unwrap().insert(m.completed, record);
    swept_until(&ledger, &clock, &[m.pending]).await;
    // Read back from the host's history, not the store: the one it holds
    // answers as before, the others are unknown to it.
    assert_eq!(ledger.withdrawal(m.completed).await.unwrap(), completed);
    assert!(host.asked.load(Ordering::SeqCst) >= 1);
    let unknown = LedgerError::UnknownWithdrawal {
        transaction_id: m.failed,
    };
    assert_eq!(ledger.withdrawal(m.failed).await, Err(unknown));
    ledger.shutdown().await;
}
