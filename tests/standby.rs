//! A standby kept by the batches its writer shipped (`Ledger::mirror`),
//! without any network: the writer's replica hands every batch to the
//! test, which mirrors it into a standby on another folder. The standby
//! lists what the writer did, refuses writes with `not_leader`, skips a
//! batch it holds, refuses a gap or a damaged batch without logging
//! anything, and — shut down and opened as a writer (promotion) — holds
//! exactly what the writer's callers were told.

#[path = "common/observed.rs"]
mod observed;

use std::str::FromStr;
use std::sync::Arc;

use burnledger::config::SharedReplica;
use burnledger::storage::wal::replica::{Replica, ReplicaRefusal, Shipped};
use burnledger::{
    Config, CurrencyConfig, Decimal, Ledger, LedgerError, MirrorError, WithdrawalOutcome,
    WithdrawalQuery,
};
use crossbeam_channel::{Receiver, Sender};
use observed::observed_accounts;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Takes every batch at once and hands it to the test.
struct Tap(Sender<(u64, Vec<u8>)>);

impl Replica for Tap {
    fn ship(&self, first_lsn: u64, batch: Vec<u8>) -> Shipped {
        let (answer, shipped) = crossbeam_channel::bounded::<Result<(), ReplicaRefusal>>(1);
        let _ = self.0.send((first_lsn, batch));
        let _ = answer.send(Ok(()));
        shipped
    }
}

fn config(dir: &std::path::Path) -> Config {
    Config {
        currencies: vec![CurrencyConfig::new("USD", 2)],
        account_pending_withdrawals_max: 1_000,
        ..Config::for_tests_in(dir)
    }
}

fn writer(dir: &std::path::Path) -> (Ledger, Receiver<(u64, Vec<u8>)>) {
    let (tap, shipped) = crossbeam_channel::unbounded();
    let ledger = Ledger::open(Config {
        replication: Some(SharedReplica(Arc::new(Tap(tap)))),
        ..config(dir)
    })
    .unwrap();
    (ledger, shipped)
}

/// Deposits, withdrawals settled every way, transfers.
async fn workload(ledger: &Ledger, rounds: u64) {
    for round in 0..rounds {
        for account in 0..6u64 {
            ledger
                .deposit(account, "USD", dec("10"), None)
                .await
                .unwrap();
            let w = ledger
                .request_withdrawal(account, "USD", dec("2"), None)
                .await;
            let tx = w.unwrap().transaction_id;
            match (round + account) % 3 {
                0 => drop(
                    ledger
                        .complete_withdrawal(tx, WithdrawalOutcome::Completed)
                        .await,
                ),
                1 => drop(ledger.cancel_withdrawal(tx).await),
                _ => {}
            }
            let to = (account + 1) % 6;
            ledger
                .transfer(account, to, "USD", dec("1"), None)
                .await
                .unwrap();
        }
    }
}

async fn mirror_all(standby: &Ledger, shipped: &Receiver<(u64, Vec<u8>)>) -> usize {
    let mut batches = 0;
    while let Ok((first_lsn, batch)) = shipped.try_recv() {
        standby.mirror(first_lsn, &batch).await.unwrap();
        batches += 1;
    }
    batches
}

async fn listed(ledger: &Ledger) -> Vec<burnledger::Withdrawal> {
    let query = WithdrawalQuery {
        limit: 1_000,
        ..WithdrawalQuery::default()
    };
    ledger.withdrawals(query).await.unwrap().items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_fed_the_shipped_batches_holds_what_the_writer_acknowledged() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (writer, shipped) = writer(a.path());
    let standby = Ledger::open_standby(config(b.path())).unwrap();
    assert!(standby.is_standby() && !writer.is_standby());
    workload(&writer, 3).await;
    assert!(mirror_all(&standby, &shipped).await > 10);
    assert_eq!(standby.next_lsn().await, writer.next_lsn().await);

    // Reads of the history answer; writes are refused, naming the writer.
    assert_eq!(listed(&standby).await, listed(&writer).await);
    assert!(!listed(&standby).await.is_empty());
    standby.set_writer(Some("http://writer:8080".into()));
    let refused = standby.deposit(1, "USD", dec("1"), None).await;
    let Err(LedgerError::NotLeader {
        writer: Some(named),
    }) = refused.clone()
    else {
        panic!("{refused:?}");
    };
    assert_eq!(named, "http://writer:8080");
    assert_eq!(refused.unwrap_err().code(), "not_leader");

    // Promotion: the standby's folder opened as a writer holds what the
    // writer's callers observe.
    let expected = observed_accounts(&writer).await;
    writer.shutdown().await;
    standby.shutdown().await;
    drop(standby);
    let promoted = Ledger::open(config(b.path())).unwrap();
    assert_eq!(observed_accounts(&promoted).await, expected);
    promoted.deposit(1, "USD", dec("1"), None).await.unwrap();
    promoted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_batch_is_skipped_and_a_gap_or_damage_logs_nothing() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (writer, shipped) = writer(a.path());
    let standby = Ledger::open_standby(config(b.path())).unwrap();
    writer.deposit(1, "USD", dec("5"), None).await.unwrap();
    let (first_lsn, first) = shipped.try_recv().unwrap();
    writer.deposit(2, "USD", dec("5"), None).await.unwrap();
    let (second_lsn, second) = shipped.try_recv().unwrap();

    // The second batch before the first: a gap, nothing logged.
    let gap = standby.mirror(second_lsn, &second).await;
    assert_eq!(
        gap,
        Err(MirrorError::Gap {
            expected: first_lsn,
            got: second_lsn
        })
    );
    // A damaged batch: refused whole.
    let mut damaged = first.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x01;
    let refused = standby.mirror(first_lsn, &damaged).await;
    assert!(
        matches!(refused, Err(MirrorError::Undecodable { .. })),
        "{refused:?}"
    );
    assert_eq!(standby.next_lsn().await, first_lsn);

    let done = standby.mirror(first_lsn, &first).await.unwrap();
    assert_eq!((done.logged, done.skipped), (1, 0));
    // Redelivered: skipped, not logged twice.
    let again = standby.mirror(first_lsn, &first).await.unwrap();
    assert_eq!((again.logged, again.skipped), (0, 1));
    standby.mirror(second_lsn, &second).await.unwrap();
    assert_eq!(standby.next_lsn().await, second_lsn + 1);

    // A writer does not mirror; promoting it is itself. A standby no
    // replication node promotes refuses, as it refuses writes.
    let on_writer = writer.mirror(first_lsn, &first).await;
    assert_eq!(on_writer, Err(MirrorError::NotStandby));
    assert!(!writer.promote().await.unwrap().is_standby());
    let refused = standby.promote().await;
    assert!(
        matches!(refused, Err(LedgerError::NotLeader { .. })),
        "{}",
        refused.is_ok()
    );
    writer.shutdown().await;
    standby.shutdown().await;
}

/// The standby logs the shipped records as the writer did, chained the
/// same way: its journal head is the writer's, and promoted it continues
/// the writer's chain (verified from LSN 1 through its own new records).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_standby_continues_the_writers_hash_chain() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (writer, shipped) = writer(a.path());
    let archive = b.path().join("archive");
    let archiving = || Config {
        archive_dir: Some(archive.clone()),
        ..config(b.path())
    };
    let standby = Ledger::open_standby(archiving()).unwrap();
    workload(&writer, 2).await;
    mirror_all(&standby, &shipped).await;
    let head = writer.journal_head().unwrap();
    assert!(head.lsn > 10);
    assert_eq!(standby.journal_head().unwrap(), head);
    writer.shutdown().await;
    standby.shutdown().await;
    drop(standby);

    let promoted = Ledger::open(archiving()).unwrap();
    assert_eq!(promoted.journal_head().unwrap(), head);
    promoted.deposit(1, "USD", dec("1"), None).await.unwrap();
    let promoted_head = promoted.journal_head().unwrap();
    assert_eq!(promoted_head.lsn, head.lsn + 1);
    promoted.shutdown().await;
    let chain = burnledger::storage::wal::verify_chain(b.path(), Some(&archive)).unwrap();
    assert_eq!(chain.problem, None);
    assert_eq!(
        (chain.first_lsn, chain.chained_from, chain.head),
        (Some(1), Some(1), promoted_head)
    );
}
