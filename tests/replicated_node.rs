//! Replicated nodes (`burnledger::replication::Node`) on a real 3-node
//! NATS JetStream cluster, in one process: a writer and a standby on
//! their own folders. The standby follows every acknowledged operation;
//! promoted by hand while the old writer still runs, it fences it — the
//! old writer's next callers get errors, never acknowledgements — and
//! holds exactly what the old writer's callers were told, then writes.
//! Without a server (and without `BURNLEDGER_REQUIRE_NATS=1`) the tests
//! say "skipped".
#![cfg(feature = "replication")]

#[allow(dead_code)] // the harness serves other tests too
#[path = "common/nats.rs"]
mod nats;
#[path = "common/observed.rs"]
mod observed;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use burnledger::replication::metrics::Role;
use burnledger::replication::node::{Node, NodeSettings};
use burnledger::replication::StreamSettings;
use burnledger::{Config, CurrencyConfig, Decimal, Ledger, LedgerError, WithdrawalOutcome};
use nats::NatsCluster;
use observed::observed_accounts;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn config(dir: &std::path::Path) -> Config {
    Config {
        currencies: vec![CurrencyConfig::new("USD", 2)],
        account_pending_withdrawals_max: 1_000,
        ..Config::for_tests_in(dir)
    }
}

fn settings(cluster: &NatsCluster, node: &str, auto_promote: bool) -> NodeSettings {
    NodeSettings {
        stream: StreamSettings {
            servers: cluster.urls(),
            stream: "ledger".into(),
            replicas: 3,
            request_timeout: Duration::from_secs(2),
        },
        node: node.into(),
        url: Some(format!("http://{node}.test")),
        lease_ttl: Duration::from_secs(3),
        append_deadline: Duration::from_secs(30),
        auto_promote,
        snapshot_publish_every: Duration::from_secs(3600),
    }
}

async fn workload(ledger: &Ledger, rounds: u64) {
    for round in 0..rounds {
        for account in 0..5u64 {
            ledger
                .deposit(account, "USD", dec("10"), None)
                .await
                .unwrap();
            let w = ledger
                .request_withdrawal(account, "USD", dec("2"), None)
                .await;
            let tx = w.unwrap().transaction_id;
            if (round + account) % 2 == 0 {
                let done = ledger.complete_withdrawal(tx, WithdrawalOutcome::Completed);
                done.await.unwrap();
            }
            let to = (account + 1) % 5;
            ledger
                .transfer(account, to, "USD", dec("1"), None)
                .await
                .unwrap();
        }
    }
}

/// Waits (bounded) until the standby holds everything the writer logged.
async fn caught_up(standby: &Node, writer: &Ledger) {
    let want = writer.next_lsn().await;
    for _ in 0..600 {
        if standby.ledger().next_lsn().await >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the standby never caught up to LSN {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_standby_fences_the_old_writer_and_holds_every_acknowledgement() {
    let Some(cluster) = NatsCluster::start() else {
        return;
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let writer_node = Node::start(config(a.path()), settings(&cluster, "a", false), true)
        .await
        .unwrap();
    let standby_node = Node::start(config(b.path()), settings(&cluster, "b", false), false)
        .await
        .unwrap();
    let writer = writer_node.ledger();
    assert_eq!(writer_node.metrics().role, Role::Writer);
    assert_eq!(standby_node.metrics().role, Role::Standby);
    workload(&writer, 4).await;
    caught_up(&standby_node, &writer).await;
    let refused = standby_node
        .ledger()
        .deposit(1, "USD", dec("1"), None)
        .await;
    assert!(
        matches!(refused, Err(LedgerError::NotLeader { .. })),
        "{refused:?}"
    );
    let acknowledged = observed_accounts(&writer).await;

    // Promoted (through the standby's own handle) while the old writer
    // still runs: the old writer is fenced.
    let promoted_handle = standby_node.ledger().promote().await.unwrap();
    assert!(!promoted_handle.is_standby());
    assert_eq!(standby_node.metrics().role, Role::Writer);
    let late = writer.deposit(1, "USD", dec("1"), None).await;
    assert!(late.is_err(), "the fenced writer acknowledged {late:?}");
    assert!(writer.is_fenced());
    assert_eq!(writer_node.metrics().role, Role::Fenced);
    let also_late = writer.deposit(2, "USD", dec("1"), None).await;
    assert!(also_late.is_err(), "{also_late:?}");

    // The new writer holds what the old one acknowledged, and writes.
    let promoted = standby_node.ledger();
    assert_eq!(observed_accounts(&promoted).await, acknowledged);
    promoted.deposit(1, "USD", dec("1"), None).await.unwrap();
    workload(&promoted, 1).await;

    // The old writer's folder holds the refused batch under an LSN the new
    // writer has used for another record: it may not rejoin on it (it
    // would skip the stream's record as held), and says so. On a fresh
    // folder it fills from the stream.
    writer.shutdown().await;
    drop(writer_node);
    let rejoined = Node::start(config(a.path()), settings(&cluster, "a", false), false).await;
    let Err(refused) = rejoined else {
        panic!("the old writer's folder was taken as a standby");
    };
    assert!(
        refused.to_string().contains("fresh data folder"),
        "{refused}"
    );
    let c = tempfile::tempdir().unwrap();
    let fresh = Node::start(config(c.path()), settings(&cluster, "a", false), false)
        .await
        .unwrap();
    caught_up(&fresh, &promoted).await;
    assert_eq!(
        fresh
            .ledger()
            .withdrawals(Default::default())
            .await
            .unwrap(),
        promoted.withdrawals(Default::default()).await.unwrap()
    );
    promoted.shutdown().await;
    fresh.ledger().shutdown().await;
    drop(Arc::clone(&standby_node));
}

/// Each account's balances, as the export shows them.
async fn balances(ledger: &Ledger) -> Vec<(u64, Vec<burnledger::domain::export::AccountBalance>)> {
    let mut accounts: Vec<_> = ledger
        .export_accounts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.id, a.balances))
        .collect();
    accounts.sort_by_key(|a| a.0);
    accounts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_go_to_the_bucket_the_stream_is_purged_and_a_new_node_bootstraps() {
    let Some(cluster) = NatsCluster::start() else {
        return;
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let writer_node = Node::start(config(a.path()), settings(&cluster, "a", false), true)
        .await
        .unwrap();
    let writer = writer_node.ledger();
    workload(&writer, 3).await;
    writer.snapshot().await.unwrap().unwrap();
    workload(&writer, 1).await;
    let oldest = writer_node.publish_snapshots().await.unwrap().unwrap();
    assert!(oldest > 0);
    // The stream no longer starts at the log's start: a node with an empty
    // folder cannot follow from LSN 1, and bootstraps from the snapshot.
    let probe = burnledger::replication::LogStream::connect(&settings(&cluster, "x", false).stream)
        .await
        .unwrap();
    assert!(
        probe.first_sequence().await.unwrap() > 1,
        "nothing was purged"
    );
    workload(&writer, 1).await;
    let fresh = Node::start(config(b.path()), settings(&cluster, "b", false), false)
        .await
        .unwrap();
    caught_up(&fresh, &writer).await;
    let expected = balances(&writer).await;
    fresh.promote().await.unwrap();
    let promoted = fresh.ledger();
    assert_eq!(balances(&promoted).await, expected);
    promoted.deposit(1, "USD", dec("1"), None).await.unwrap();
    promoted.shutdown().await;
    writer.shutdown().await;
    drop(writer_node);
    // The bootstrapped folder is a sound one.
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_burnledger"))
        .args(["verify", "--currencies", "USD:2", "--data-dir"])
        .arg(b.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{printed}");
}
