//! An internal error while applying a command (a check of the rules found
//! the state impossible: a bug) poisons the account's shard: every later
//! write on that shard is refused as `poisoned`, reads are still served,
//! other shards carry on.
//!
//! The state is made impossible the way the world would: a snapshot written
//! by a faulty build, well-formed and checksummed, whose account hands out
//! a transaction id its own withdrawal already holds. Nothing in the
//! engine is switched on for the test.

use std::str::FromStr;

use burnledger::domain::account::AccountState;
use burnledger::domain::ids::shard_of;
use burnledger::storage::recovery::snapshot_dir;
use burnledger::storage::snapshot;
use burnledger::{Config, Decimal, Ledger, LedgerError};

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Rewrites the newest snapshot with `account`'s next transaction number
/// set to `next`.
fn rewind_next_sequence(data_dir: &std::path::Path, account: u64, next: u64) {
    let dir = snapshot_dir(data_dir);
    let newest = snapshot::list(&dir).unwrap().remove(0);
    let mut contents = snapshot::read_full(&newest.path).unwrap();
    for state in &mut contents.accounts {
        if state.id() == account {
            let mut fields = serde_json::to_value(&*state).unwrap();
            fields["next_sequence"] = next.into();
            *state = serde_json::from_value::<AccountState>(fields).unwrap();
        }
    }
    std::fs::remove_file(&newest.path).unwrap();
    snapshot::write_full(
        &dir,
        contents.lsn,
        contents.accounts.iter(),
        contents.payouts.iter(),
    )
    .unwrap();
}

#[tokio::test]
async fn an_internal_error_poisons_its_shard_for_writes_but_not_for_reads() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::for_tests_in(dir.path());
    let shards = config.shards;
    // Two accounts on the shard that breaks, one on the other.
    let on_shard = |shard| (1..).filter(move |a| shard_of(*a, shards) == shard);
    let mut first = on_shard(0);
    let (broken, neighbour) = (first.next().unwrap(), first.next().unwrap());
    let elsewhere = on_shard(1).next().unwrap();

    let ledger = Ledger::open(config.clone()).unwrap();
    for account in [broken, neighbour, elsewhere] {
        ledger
            .deposit(account, "USD", dec("10"), None)
            .await
            .unwrap();
    }
    // The deposit took transaction 1, this withdrawal 2.
    let held = ledger
        .request_withdrawal(broken, "USD", dec("1"), None)
        .await
        .unwrap();
    assert_eq!(held.transaction_id.sequence(), 2);
    assert_eq!(ledger.health().await, Ok(()), "healthy before the break");
    ledger.shutdown().await;
    assert_eq!(ledger.health().await, Err(LedgerError::ShuttingDown));
    rewind_next_sequence(dir.path(), broken, 2);

    let ledger = Ledger::open(config).unwrap();
    // The next withdrawal gets id 2 again: applying it fails a check.
    let failed = ledger
        .request_withdrawal(broken, "USD", dec("1"), None)
        .await;
    assert!(
        matches!(failed, Err(LedgerError::Internal { .. })),
        "{failed:?}"
    );

    // Every later write on the shard is refused, whatever the account.
    for (account, what) in [(broken, "the broken account"), (neighbour, "its neighbour")] {
        let refused = ledger.deposit(account, "USD", dec("1"), None).await;
        assert!(
            matches!(&refused, Err(LedgerError::Poisoned { reason }) if reason.contains("internal error")),
            "a deposit on {what}: {refused:?}"
        );
    }
    let refused = ledger.cancel_withdrawal(held.transaction_id).await;
    assert!(
        matches!(refused, Err(LedgerError::Poisoned { .. })),
        "{refused:?}"
    );
    // A transfer into the shard is refused at its receiver: the source
    // keeps its funds.
    let refused = ledger
        .transfer(elsewhere, neighbour, "USD", dec("1"), None)
        .await;
    assert!(
        matches!(refused, Err(LedgerError::Poisoned { .. })),
        "{refused:?}"
    );
    assert_eq!(
        ledger.balance(elsewhere, "USD").await.unwrap().available,
        dec("10")
    );

    // The health check (what /healthz answers) names the poisoned shard.
    assert!(
        matches!(ledger.health().await, Err(LedgerError::Poisoned { reason }) if reason.contains("internal error")),
        "health must report the poisoned shard"
    );

    // Reads are served, and show nothing of the refused writes.
    let balance = ledger.balance(broken, "USD").await.unwrap();
    assert_eq!((balance.available, balance.locked), (dec("9"), dec("1")));
    assert_eq!(
        ledger.balance(neighbour, "USD").await.unwrap().total,
        dec("10")
    );
    let status = ledger.withdrawal(held.transaction_id).await.unwrap().status;
    assert_eq!(status, burnledger::WithdrawalStatus::Pending);
    assert_eq!(ledger.export_accounts().await.unwrap().len(), 3);

    // The other shard carries on.
    ledger
        .deposit(elsewhere, "USD", dec("5"), None)
        .await
        .unwrap();
    ledger
        .request_withdrawal(elsewhere, "USD", dec("2"), None)
        .await
        .unwrap();
    assert_eq!(
        ledger.balance(elsewhere, "USD").await.unwrap().total,
        dec("15")
    );
    ledger.shutdown().await;
}
