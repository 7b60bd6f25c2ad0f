//! The data folder's own promises: one ledger at a time (an OS lock), no
//! ledger silently ignored by sync mode `none`, and stored amounts never
//! read at another scale than they were written in (the currency table).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use burnledger::config::SyncMode;
use burnledger::storage::data_dir::{CurrencyTableError, LockError};
use burnledger::{Config, CurrencyConfig, Ledger, OpenError, WithdrawalOutcome};
use common::serve::{serve_command, spawn_listening};
use common::{assert_balance, dec};

fn config(dir: &Path, currencies: &[(&str, u8)]) -> Config {
    Config {
        data_dir: Some(dir.to_path_buf()),
        currencies: currencies
            .iter()
            .map(|(code, decimals)| CurrencyConfig::new(code, *decimals))
            .collect(),
        ..Config::for_tests()
    }
}

const USD_BTC: &[(&str, u8)] = &[("USD", 2), ("BTC", 8)];

fn open_err(config: Config) -> OpenError {
    match Ledger::open(config) {
        Ok(_) => panic!("the open must be refused"),
        Err(error) => error,
    }
}

/// Deposits 100.00 USD and 0.5 BTC to account 1 and withdraws 10.00 USD.
async fn some_money(ledger: &Ledger) {
    ledger.deposit(1, "USD", dec("100.00"), None).await.unwrap();
    ledger.deposit(1, "BTC", dec("0.5"), None).await.unwrap();
    ledger
        .request_withdrawal(1, "USD", dec("10.00"), None)
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------
// One ledger per folder
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_second_open_of_a_folder_in_use_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let first = Ledger::open(config(dir.path(), USD_BTC)).unwrap();
    some_money(&first).await;
    let error = open_err(config(dir.path(), USD_BTC));
    match &error {
        OpenError::Lock(LockError::InUse { pid, .. }) => {
            assert_eq!(*pid, Some(std::process::id()))
        }
        other => panic!("expected the folder in use, got {other}"),
    }
    assert!(
        error
            .to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{error}"
    );
    // The refused open changed nothing: the first ledger carries on, and
    // after its shutdown — a clone still alive — the folder opens again
    // with everything in it.
    let clone = first.clone();
    first.deposit(1, "USD", dec("1.00"), None).await.unwrap();
    first.shutdown().await;
    let second = Ledger::open(config(dir.path(), USD_BTC)).unwrap();
    assert_balance(&second, 1, "USD", ["91.00", "10.00", "101.00"]).await;
    drop(clone);
    second.shutdown().await;
}

#[tokio::test]
async fn a_ledger_dropped_without_shutdown_frees_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let first = Ledger::open(config(dir.path(), USD_BTC)).unwrap();
    some_money(&first).await;
    drop(first);
    let second = Ledger::open(config(dir.path(), USD_BTC)).unwrap();
    assert_balance(&second, 1, "BTC", ["0.5", "0", "0.5"]).await;
    second.shutdown().await;
}

/// Two processes: a running `serve` holds the folder; a second `serve` on
/// it exits with an error naming the first one's pid and never listens;
/// once the first is killed (-9), the folder opens again.
#[test]
fn a_second_process_on_a_folder_in_use_exits_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, _url) =
        spawn_listening(&mut serve_command(dir.path()), Duration::from_secs(60));
    let second = serve_command(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "second serve must fail: {stderr}");
    assert!(
        stderr.contains(&format!("pid {}", first.id())) && stderr.contains("in use"),
        "the refusal names the holder: {stderr}"
    );
    assert!(!String::from_utf8_lossy(&second.stdout).contains("listening"));
    first.kill().unwrap();
    first.wait().unwrap();
    let (mut third, _url) =
        spawn_listening(&mut serve_command(dir.path()), Duration::from_secs(60));
    third.kill().unwrap();
    third.wait().unwrap();
}

// ---------------------------------------------------------------------------
// Sync mode `none` never ignores a ledger
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sync_none_on_a_folder_that_holds_a_ledger_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path(), USD_BTC)).unwrap();
    some_money(&ledger).await;
    ledger.shutdown().await;
    let unlogged = Config {
        sync: SyncMode::None,
        ..config(dir.path(), USD_BTC)
    };
    let error = open_err(unlogged.clone());
    assert!(
        matches!(&error, OpenError::Config(reason) if reason.contains("holds a ledger")),
        "{error}"
    );
    // Even a folder whose log was emptied still holds the currency table.
    std::fs::remove_dir_all(dir.path().join("wal")).unwrap();
    std::fs::remove_dir_all(dir.path().join("snapshots")).unwrap();
    assert!(matches!(open_err(unlogged), OpenError::Config(_)));
    // An empty folder (or none) is fine: memory only, as asked.
    let empty = tempfile::tempdir().unwrap();
    let memory = Ledger::open(Config {
        sync: SyncMode::None,
        ..config(empty.path(), USD_BTC)
    })
    .unwrap();
    memory.deposit(1, "USD", dec("1.00"), None).await.unwrap();
    memory.shutdown().await;
}

#[test]
fn serve_with_sync_none_on_a_ledger_folder_exits_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, _url) =
        spawn_listening(&mut serve_command(dir.path()), Duration::from_secs(60));
    first.kill().unwrap();
    first.wait().unwrap();
    let refused = serve_command(dir.path())
        .args(["--sync", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("holds a ledger"), "{stderr}");
}

// ---------------------------------------------------------------------------
// The currency table
// ---------------------------------------------------------------------------

fn assert_scale_refused(error: OpenError, code: &str) {
    match &error {
        OpenError::Currencies(CurrencyTableError::ScaleChanged {
            code: refused,
            recorded: 2,
            configured: 3,
        }) => assert_eq!(refused.as_str(), code),
        other => panic!("expected a refused scale change of {code}, got {other}"),
    }
}

#[tokio::test]
async fn a_changed_scale_is_refused_after_a_clean_shutdown_and_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path(), USD_BTC)).unwrap();
    some_money(&ledger).await;
    ledger.shutdown().await; // everything in a snapshot, nothing to replay
    assert_scale_refused(
        open_err(config(dir.path(), &[("USD", 3), ("BTC", 8)])),
        "USD",
    );

    let ledger = Ledger::open(config(dir.path(), USD_BTC)).unwrap();
    ledger.deposit(2, "USD", dec("5.00"), None).await.unwrap();
    drop(ledger); // a crash: the last deposit only in the log
    assert_scale_refused(
        open_err(config(dir.path(), &[("USD", 3), ("BTC", 8)])),
        "USD",
    );

    // The refusals changed nothing: the right table opens it whole.
    let ledger = Ledger::open(config(dir.path(), USD_BTC)).unwrap();
    assert_balance(&ledger, 1, "USD", ["90.00", "10.00", "100.00"]).await;
    assert_balance(&ledger, 2, "USD", ["5.00", "0", "5.00"]).await;
    ledger.shutdown().await;
}

/// A folder from before the table existed: its balances carry the scale
/// they were written in, and a different configured one is refused.
#[tokio::test]
async fn a_folder_without_a_table_is_checked_against_its_balances() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path(), USD_BTC)).unwrap();
    some_money(&ledger).await;
    ledger.shutdown().await;
    std::fs::remove_file(dir.path().join("CURRENCIES")).unwrap();
    assert_scale_refused(
        open_err(config(dir.path(), &[("USD", 3), ("BTC", 8)])),
        "USD",
    );
    assert!(
        !dir.path().join("CURRENCIES").exists(),
        "a refused open records nothing"
    );
    let ledger = Ledger::open(config(dir.path(), USD_BTC)).unwrap();
    assert!(dir.path().join("CURRENCIES").exists());
    ledger.shutdown().await;
}

#[tokio::test]
async fn a_currency_may_be_added_and_one_without_money_retired_never_one_holding_money() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path(), USD_BTC)).unwrap();
    some_money(&ledger).await;
    ledger.shutdown().await;

    // Adding EUR is allowed.
    let with_eur = &[("USD", 2), ("BTC", 8), ("EUR", 2)];
    let ledger = Ledger::open(config(dir.path(), with_eur)).unwrap();
    ledger.deposit(3, "EUR", dec("7.00"), None).await.unwrap();
    // BTC still holds 0.5: leaving it out is refused, naming it.
    ledger.shutdown().await;
    let error = open_err(config(dir.path(), &[("USD", 2), ("EUR", 2)]));
    assert!(
        matches!(&error, OpenError::Currencies(CurrencyTableError::RetiredHoldsMoney { code, .. }) if code.as_str() == "BTC"),
        "{error}"
    );
    assert!(error.to_string().contains("0.5"), "{error}");

    // Money locked in a pending withdrawal is money too.
    let ledger = Ledger::open(config(dir.path(), with_eur)).unwrap();
    ledger
        .transfer(1, 9, "BTC", dec("0.5"), None)
        .await
        .unwrap();
    let pending = ledger
        .request_withdrawal(9, "BTC", dec("0.5"), None)
        .await
        .unwrap();
    ledger.shutdown().await;
    assert!(matches!(
        open_err(config(dir.path(), &[("USD", 2), ("EUR", 2)])),
        OpenError::Currencies(CurrencyTableError::RetiredHoldsMoney { .. })
    ));

    // Once BTC holds nothing it may be retired: new BTC operations are
    // refused, the rest carries on, and BTC comes back only at its scale.
    let ledger = Ledger::open(config(dir.path(), with_eur)).unwrap();
    ledger
        .cancel_withdrawal(pending.transaction_id)
        .await
        .unwrap();
    // Pay the 0.5 BTC out (external mode: the host reports it paid).
    let out = ledger
        .request_withdrawal(9, "BTC", dec("0.5"), None)
        .await
        .unwrap();
    ledger
        .complete_withdrawal(out.transaction_id, WithdrawalOutcome::Completed)
        .await
        .unwrap();
    ledger.shutdown().await;
    let ledger = Ledger::open(config(dir.path(), &[("USD", 2), ("EUR", 2)])).unwrap();
    let refused = ledger.deposit(1, "BTC", dec("1"), None).await.unwrap_err();
    assert_eq!(refused.code(), "unknown_currency");
    assert_balance(&ledger, 3, "EUR", ["7.00", "0", "7.00"]).await;
    ledger.deposit(3, "EUR", dec("1.00"), None).await.unwrap();
    ledger.shutdown().await;
    let error = open_err(config(dir.path(), &[("USD", 2), ("EUR", 2), ("BTC", 2)]));
    assert!(
        matches!(
            error,
            OpenError::Currencies(CurrencyTableError::ScaleChanged { .. })
        ),
        "{error}"
    );
    let ledger = Ledger::open(config(dir.path(), with_eur)).unwrap();
    assert_balance(&ledger, 9, "BTC", ["0", "0", "0"]).await;
    assert_balance(&ledger, 3, "EUR", ["8.00", "0", "8.00"]).await;
    ledger.shutdown().await;
}

// ---------------------------------------------------------------------------
// inspect and verify beside a running ledger, and the table they read with
// ---------------------------------------------------------------------------

fn burnledger(args: &[&str], dir: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_burnledger"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn verify_refuses_a_folder_in_use_and_inspect_says_so_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, _url) =
        spawn_listening(&mut serve_command(dir.path()), Duration::from_secs(60));
    let verified = burnledger(&["verify"], dir.path());
    let stderr = String::from_utf8_lossy(&verified.stderr);
    assert_eq!(verified.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("in use") && stderr.contains(&format!("pid {}", server.id())),
        "{stderr}"
    );
    let inspected = burnledger(&["inspect"], dir.path());
    let stdout = String::from_utf8_lossy(&inspected.stdout);
    assert!(stdout.starts_with("IN USE"), "{stdout}");
    assert!(stdout.contains(&format!("pid {}", server.id())), "{stdout}");
    server.kill().unwrap();
    server.wait().unwrap();
    let verified = burnledger(&["verify"], dir.path());
    assert_eq!(
        verified.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
}

#[tokio::test]
async fn a_ledger_does_not_open_while_a_reader_holds_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    Ledger::open(config(dir.path(), USD_BTC))
        .unwrap()
        .shutdown()
        .await;
    let reading = burnledger::storage::data_dir::DataDirLock::shared(dir.path())
        .unwrap()
        .expect("the folder has a lock file");
    assert!(matches!(
        open_err(config(dir.path(), USD_BTC)),
        OpenError::Lock(LockError::InUse { .. })
    ));
    drop(reading);
    Ledger::open(config(dir.path(), USD_BTC))
        .unwrap()
        .shutdown()
        .await;
}

#[tokio::test]
async fn verify_reads_amounts_at_the_scale_the_folder_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path(), &[("USD", 3)])).unwrap();
    ledger.deposit(1, "USD", dec("1.005"), None).await.unwrap();
    drop(ledger); // in the log only
    let verified = burnledger(&["verify"], dir.path());
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("USD total 1.005"), "{stdout}");
    let misread = burnledger(&["verify", "--currencies", "USD:2"], dir.path());
    let stderr = String::from_utf8_lossy(&misread.stderr);
    assert_eq!(misread.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("recorded in this data folder with 3 decimals"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// serve says what recovery did
// ---------------------------------------------------------------------------

/// A crash left a torn tail (a half-written record header): `serve` cuts it
/// and says so on stderr, naming the segment and the offset.
#[tokio::test]
async fn serve_logs_a_cut_torn_tail_at_start() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(dir.path(), &[("USD", 2), ("EUR", 2), ("BTC", 8)])).unwrap();
    some_money(&ledger).await;
    drop(ledger);
    let mut segments: Vec<_> = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let last = segments.last().expect("a segment").clone();
    let length = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap()
        .write_all(&[7, 0, 0, 0, 1])
        .unwrap();
    let mut command = serve_command(dir.path());
    command.stderr(Stdio::piped()).env("RUST_LOG", "info");
    let (mut server, _url) = spawn_listening(&mut command, Duration::from_secs(60));
    server.kill().unwrap();
    server.wait().unwrap();
    let mut stderr = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let name = last.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        stderr.contains("WARN")
            && stderr.contains("torn WAL tail")
            && stderr.contains(&name)
            && stderr.contains(&format!("after byte {length}")),
        "{stderr}"
    );
}
