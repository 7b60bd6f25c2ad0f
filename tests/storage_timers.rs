//! The storage threads' timers run on the ledger's injected clock
//! (`Config::clock`): a ledger on a manual clock takes its timed snapshot,
//! and syncs its `buffered` log, when the clock is advanced past the
//! interval, and not before. Nothing sleeps: the clock is driven; where the
//! only sign of a background thread's work is a file or a counter, a
//! bounded poll waits for it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use burnledger::clock::ManualClock;
use burnledger::config::SyncMode;
use burnledger::{Config, Ledger};

use common::{clean_audit, dec};

/// Longest a background thread may take to show its work.
const BOUND: Duration = Duration::from_secs(10);

/// Polls `done` until it holds; fails the test after [`BOUND`].
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The LSNs of the snapshot files in the data folder, by their names
/// (`snapshots/snapshot-<lsn>.snap`).
fn snapshot_lsns(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir.join("snapshots")) else {
        return Vec::new();
    };
    let mut lsns: Vec<u64> = entries
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|name| {
            let lsn = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
            lsn.parse().ok()
        })
        .collect();
    lsns.sort_unstable();
    lsns
}

#[tokio::test]
async fn a_timed_snapshot_is_taken_when_the_interval_passes_on_the_ledgers_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let ledger = Ledger::open(Config {
        clock: clock.shared(),
        snapshot_interval_secs: 60,
        ..Config::for_tests_in(dir.path())
    })
    .unwrap();
    ledger.deposit(1, "USD", dec("5"), None).await.unwrap();
    clock.advance(Duration::from_secs(59));
    ledger.deposit(2, "USD", dec("5"), None).await.unwrap();
    ledger.deposit(3, "USD", dec("5"), None).await.unwrap();
    assert_eq!(snapshot_lsns(dir.path()), Vec::<u64>::new(), "not at 59 s");

    clock.advance(Duration::from_secs(1));
    eventually("a snapshot at 60 s", || {
        !snapshot_lsns(dir.path()).is_empty()
    })
    .await;
    // It holds every deposit acknowledged before the timer rang.
    assert_eq!(snapshot_lsns(dir.path()), [3]);
    clean_audit(&ledger).await;
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_buffered_log_syncs_when_its_interval_passes_on_the_ledgers_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let ledger = Ledger::open(Config {
        clock: clock.shared(),
        sync: SyncMode::Buffered { interval_ms: 1_000 },
        ..Config::for_tests_in(dir.path())
    })
    .unwrap();
    let fsyncs = || ledger.wal_stats().unwrap().fsyncs;
    ledger.deposit(1, "USD", dec("5"), None).await.unwrap();
    clock.advance(Duration::from_millis(999));
    ledger.deposit(2, "USD", dec("5"), None).await.unwrap();
    assert_eq!(fsyncs(), 0, "not at 999 ms");
    clock.advance(Duration::from_millis(1));
    // Due: synced before the next batch is written, so before it is
    // acknowledged.
    ledger.deposit(3, "USD", dec("5"), None).await.unwrap();
    assert_eq!(fsyncs(), 1, "at 1 s");

    // Idle, the interval passing is all it takes.
    clock.advance(Duration::from_secs(1));
    eventually("the idle log's sync", || fsyncs() == 2).await;
    clean_audit(&ledger).await;
    ledger.shutdown().await;
}
