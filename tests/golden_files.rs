//! Loads the golden on-disk files in `snapshots/` and asserts exactly what
//! each holds, so a format change that breaks old data cannot land unnoticed.
//!
//! The files were written by this test with `BURNLEDGER_WRITE_GOLDEN=1`
//! (see snapshots/README.md). Never regenerate them to make a failing test
//! pass: a failure here means data written by an earlier build no longer
//! reads the same.

use std::fs;
use std::path::{Path, PathBuf};

use burnledger::domain::account::AccountState;
use burnledger::domain::event::{Event, Stamped};
use burnledger::domain::ids::{IdempotencyKey, TransactionId};
use burnledger::domain::money::{Currencies, Currency, CurrencyCode};
use burnledger::domain::time::UnixMs;
use burnledger::domain::withdrawal::WithdrawalStatus;
use burnledger::storage::recovery::{rebuild, snapshot_dir, RecoveryError};
use burnledger::storage::snapshot;
use burnledger::storage::wal::record::{encode_into, encode_v1_into};
use burnledger::storage::wal::{segment_path, ReplayMode, WalError};
use burnledger::Config;

fn golden(name: &str) -> PathBuf {
    golden_in("v1", name)
}

fn golden_in(version: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(version)
        .join(name)
}

/// The payout record format v2 snapshots add: withdrawal 1:2 paid in
/// payout 1.
fn golden_payout() -> burnledger::domain::payouts::PayoutRecord {
    burnledger::domain::payouts::PayoutRecord {
        payout_id: 1,
        currency: usd(),
        items: vec![burnledger::domain::payouts::PayoutRecordItem {
            transaction_id: TransactionId::new(1, 2),
            amount: 2_500,
            outcome: Some(burnledger::domain::event::ItemOutcome::Paid),
        }],
        attempts: 0,
        last_error: None,
        mismatches: Vec::new(),
        submitted_at: UnixMs::UNKNOWN,
        settled_at: UnixMs::UNKNOWN,
    }
}

fn usd() -> Currency {
    Currency {
        code: CurrencyCode::new("USD").unwrap(),
        decimals: 2,
    }
}

fn btc() -> Currency {
    Currency {
        code: CurrencyCode::new("BTC").unwrap(),
        decimals: 8,
    }
}

/// The scenario every golden file holds (LSN = position + 1).
fn scenario() -> Vec<Event> {
    let tx = TransactionId::new;
    vec![
        Event::Deposited {
            tx: tx(1, 1),
            currency: usd(),
            amount: 10_000,
            key: Some(IdempotencyKey::new("golden-deposit").unwrap()),
            metadata: None,
        },
        Event::Deposited {
            tx: tx(2, 1),
            currency: btc(),
            amount: 50_000_000,
            key: None,
            metadata: None,
        },
        Event::WithdrawalRequested {
            tx: tx(1, 2),
            currency: usd(),
            amount: 2_500,
            key: Some(IdempotencyKey::new("golden-withdrawal").unwrap()),
            details: None,
        },
        Event::WithdrawalCompleted {
            tx: tx(1, 2),
            fee: None,
            paid: None,
        },
        Event::WithdrawalRequested {
            tx: tx(1, 3),
            currency: usd(),
            amount: 1_000,
            key: None,
            details: None,
        },
        Event::Transferred {
            tx: tx(1, 4),
            to: 2,
            currency: usd(),
            amount: 500,
            key: Some(IdempotencyKey::new("golden-transfer").unwrap()),
            metadata: None,
        },
        Event::WithdrawalRequested {
            tx: tx(2, 2),
            currency: btc(),
            amount: 10_000_000,
            key: None,
            details: None,
        },
        Event::WithdrawalFailed {
            tx: tx(2, 2),
            reason: "bank declined".into(),
        },
    ]
}

/// The scenario's log in the record format before v4 (no times), as the
/// v1 files hold it, and where each record starts.
fn encoded_log() -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut starts = Vec::new();
    for (index, event) in scenario().iter().enumerate() {
        starts.push(bytes.len());
        encode_v1_into(&mut bytes, index as u64 + 1, event).unwrap();
    }
    (bytes, starts)
}

/// The time format v4 files give the scenario's event at `lsn`:
/// 2026-01-01T00:00:0N.00NZ.
fn scenario_at(lsn: u64) -> UnixMs {
    UnixMs::from_millis(1_767_225_600_000 + lsn * 1_001)
}

/// The scenario's log as this build writes it (format v4: with times), and
/// where each record starts.
fn encoded_v4_log() -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut starts = Vec::new();
    for (index, event) in scenario().into_iter().enumerate() {
        let lsn = index as u64 + 1;
        starts.push(bytes.len());
        let stamped = Stamped {
            at: scenario_at(lsn),
            event,
        };
        encode_into(&mut bytes, lsn, &stamped).unwrap();
    }
    (bytes, starts)
}

/// The scenario's accounts after all 8 events, applied at `at(lsn)`.
fn scenario_states(at: impl Fn(u64) -> UnixMs) -> Vec<AccountState> {
    let mut accounts = std::collections::HashMap::new();
    for (index, event) in scenario().iter().enumerate() {
        let at = at(index as u64 + 1);
        burnledger::storage::recovery::apply_event(&mut accounts, &currencies(), event, at)
            .unwrap();
    }
    let mut states: Vec<AccountState> = accounts.into_values().collect();
    states.sort_by_key(|a| a.id());
    states
}

/// What format v4 snapshots add: the v3 payout record and mismatch, with
/// the payout's submit and settle times.
fn golden_payout_with_times() -> burnledger::domain::payouts::PayoutRecord {
    burnledger::domain::payouts::PayoutRecord {
        submitted_at: UnixMs::from_millis(scenario_at(3).as_millis() + 500),
        settled_at: scenario_at(4),
        ..golden_payout_with_mismatch()
    }
}

/// Writes the golden files that do not exist yet. Run only when adding a
/// new format version: existing files are never rewritten.
#[test]
fn write_golden_files_when_asked() {
    if std::env::var_os("BURNLEDGER_WRITE_GOLDEN").is_none() {
        return;
    }
    let write_new = |path: PathBuf, bytes: &[u8]| {
        if !path.exists() {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, bytes).unwrap();
        }
    };
    let (bytes, starts) = encoded_log();
    write_new(golden("clean.wal"), &bytes);
    // Torn: the last record cut after its header and 3 payload bytes.
    write_new(golden("torn.wal"), &bytes[..starts[7] + 16 + 3]);
    // Corrupt: one payload byte of record 4 (LSN 4) flipped.
    let mut corrupt = bytes.clone();
    corrupt[starts[3] + 16] ^= 0x01;
    write_new(golden("corrupt.wal"), &corrupt);
    let states = scenario_states(|_| UnixMs::UNKNOWN);
    let scratch = tempfile::tempdir().unwrap();
    let v1 = snapshot::write(scratch.path(), 8, states.iter()).unwrap();
    write_new(
        golden("snapshot-00000000000000000008.snap"),
        &fs::read(&v1.path).unwrap(),
    );
    let scratch = tempfile::tempdir().unwrap();
    let payout = golden_payout();
    let v2 =
        snapshot::write_full(scratch.path(), 8, states.iter(), std::iter::once(&payout)).unwrap();
    write_new(
        golden_in("v2", "snapshot-00000000000000000008.snap"),
        &fs::read(&v2.path).unwrap(),
    );
    let scratch = tempfile::tempdir().unwrap();
    let payout = golden_payout_with_mismatch();
    let v3 =
        snapshot::write_full(scratch.path(), 8, states.iter(), std::iter::once(&payout)).unwrap();
    write_new(
        golden_in("v3", "snapshot-00000000000000000008.snap"),
        &fs::read(&v3.path).unwrap(),
    );
    let (v4_log, v4_starts) = encoded_v4_log();
    write_new(golden_in("v4", "clean.wal"), &v4_log);
    write_new(
        golden_in("v4", "torn.wal"),
        &v4_log[..v4_starts[7] + 16 + 3],
    );
    let scratch = tempfile::tempdir().unwrap();
    let states = scenario_states(scenario_at);
    let payout = golden_payout_with_times();
    let v4 =
        snapshot::write_full(scratch.path(), 8, states.iter(), std::iter::once(&payout)).unwrap();
    write_new(
        golden_in("v4", "snapshot-00000000000000000008.snap"),
        &fs::read(&v4.path).unwrap(),
    );
    write_new(golden_in("v5", "clean.wal"), &encoded_v5_log());
    let scratch = tempfile::tempdir().unwrap();
    let states = v5_states();
    let v5 =
        snapshot::write_full(scratch.path(), 9, states.iter(), std::iter::once(&payout)).unwrap();
    write_new(
        golden_in("v5", "snapshot-00000000000000000009.snap"),
        &fs::read(&v5.path).unwrap(),
    );
}

/// What format v5 adds to the scenario: LSN 9, account 1's keys first used
/// before LSN 4's time expire (`golden-deposit`, `golden-withdrawal`;
/// `golden-transfer`, used at LSN 6, stays).
fn v5_expiry() -> Event {
    Event::IdempotencyKeysExpired {
        account: 1,
        before: scenario_at(4),
    }
}

/// The v4 log and the expiry at LSN 9, as this build writes it.
fn encoded_v5_log() -> Vec<u8> {
    let (mut bytes, _) = encoded_v4_log();
    let stamped = Stamped {
        at: scenario_at(9),
        event: v5_expiry(),
    };
    encode_into(&mut bytes, 9, &stamped).unwrap();
    bytes
}

/// The scenario's accounts after the v5 log's 9 events.
fn v5_states() -> Vec<AccountState> {
    let mut states = scenario_states(scenario_at);
    states[0].apply(&v5_expiry(), scenario_at(9)).unwrap();
    states
}

fn key(text: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::new(text).unwrap())
}

/// Account 1 after the v5 expiry: one key held (`golden-transfer`, first
/// used at LSN 6's time, still replays), two expired (their fingerprints
/// kept, their replay refused, changing nothing).
fn assert_v5_keys(accounts: &std::collections::HashMap<u64, AccountState>) {
    let mut one = account(accounts, 1).clone();
    assert_eq!(one.keys_held(), 1);
    assert_eq!(one.key_times(), vec![scenario_at(6)]);
    let mut fingerprints: Vec<u64> = ["golden-deposit", "golden-withdrawal"]
        .iter()
        .map(|k| IdempotencyKey::new(k).unwrap().fingerprint())
        .collect();
    fingerprints.sort_unstable();
    assert_eq!(one.expired_key_fingerprints(), fingerprints.as_slice());
    let before = one.clone();
    let at = scenario_at(10);
    let deposit = one.deposit(usd(), 10_000, key("golden-deposit"), at);
    let expired = |k: &str| burnledger::LedgerError::IdempotencyKeyExpired { key: k.into() };
    assert_eq!(deposit.unwrap_err(), expired("golden-deposit"));
    let withdrawal = one.request_withdrawal(usd(), 2_500, key("golden-withdrawal"), 10, at);
    assert_eq!(withdrawal.unwrap_err(), expired("golden-withdrawal"));
    assert_eq!(one, before, "refused: nothing changed");
    let replay = one.hold_transfer(2, usd(), 500, key("golden-transfer"));
    assert!(matches!(
        replay,
        Ok(burnledger::domain::account::TransferHold::Replayed(_))
    ));
}

#[test]
fn golden_v5_snapshot_loads_key_times_and_expired_keys() {
    let contents =
        snapshot::read_full(&golden_in("v5", "snapshot-00000000000000000009.snap")).unwrap();
    assert_eq!(contents.lsn, 9);
    assert_eq!(contents.payouts, vec![golden_payout_with_times()]);
    let accounts = contents.accounts.into_iter().map(|a| (a.id(), a)).collect();
    assert_full_scenario(&accounts);
    assert_v4_times(&accounts, 8);
    assert_v5_keys(&accounts);
}

#[test]
fn golden_v5_clean_wal_replays_the_key_expiry() {
    let dir = data_dir_with_wal_in("v5", "clean.wal");
    let rebuilt = rebuild(dir.path(), &currencies(), ReplayMode::Recover).unwrap();
    assert_eq!(rebuilt.report.records_replayed, 9);
    assert_eq!(rebuilt.report.newest_event_at, scenario_at(9));
    assert_full_scenario(&rebuilt.accounts);
    assert_v5_keys(&rebuilt.accounts);
    // The bytes this build writes are the bytes the golden file holds.
    assert_eq!(
        encoded_v5_log(),
        fs::read(golden_in("v5", "clean.wal")).unwrap()
    );
}

/// A snapshot before v5 kept no key times: its keys count as first used
/// at its newest time (here withdrawal 2:2's failure, LSN 8), so they
/// expire a retention after it, not at once and not never.
#[test]
fn golden_v4_snapshot_dates_its_keys_at_its_newest_time() {
    let path = golden_in("v4", "snapshot-00000000000000000008.snap");
    let contents = snapshot::read_full(&path).unwrap();
    let one = contents.accounts.iter().find(|a| a.id() == 1).unwrap();
    assert_eq!(one.key_times(), vec![scenario_at(8); 3]);
    assert_eq!(one.expired_key_fingerprints(), &[] as &[u64]);
    let mut expiring = one.clone();
    let before = expiring
        .expire_keys(scenario_at(8), scenario_at(9))
        .unwrap();
    assert_eq!((before.output, before.event), (0, None), "not before");
    let past = UnixMs::from_millis(scenario_at(8).as_millis() + 1);
    assert_eq!(
        expiring.expire_keys(past, scenario_at(9)).unwrap().output,
        3
    );
    // A v3 snapshot holds no time: its keys stay undated, never expire.
    let v3 = snapshot::read_full(&golden_in("v3", "snapshot-00000000000000000008.snap")).unwrap();
    let one = v3.accounts.iter().find(|a| a.id() == 1).unwrap();
    assert_eq!(one.key_times(), vec![UnixMs::UNKNOWN; 3]);
    assert_eq!(one.oldest_key_use(), None);
}

/// What format v3 snapshots add: the v2 payout record, with one mismatch
/// (the service later said the paid item failed).
fn golden_payout_with_mismatch() -> burnledger::domain::payouts::PayoutRecord {
    burnledger::domain::payouts::PayoutRecord {
        mismatches: vec![burnledger::domain::payouts::PayoutMismatch {
            transaction_id: TransactionId::new(1, 2),
            settled: burnledger::domain::event::ItemOutcome::Paid,
            reported: burnledger::domain::event::ItemOutcome::Failed {
                reason: "bank says failed".into(),
            },
        }],
        ..golden_payout()
    }
}

#[test]
fn golden_v3_snapshot_loads_accounts_payout_records_and_mismatches() {
    let contents =
        snapshot::read_full(&golden_in("v3", "snapshot-00000000000000000008.snap")).unwrap();
    assert_eq!(contents.lsn, 8);
    assert_eq!(contents.payouts, vec![golden_payout_with_mismatch()]);
    assert_eq!(
        contents.payouts[0].state(),
        burnledger::domain::payouts::PayoutState::Mismatch
    );
    let accounts = contents.accounts.into_iter().map(|a| (a.id(), a)).collect();
    assert_full_scenario(&accounts);
}

#[test]
fn golden_v2_snapshot_loads_accounts_and_payout_records() {
    let contents =
        snapshot::read_full(&golden_in("v2", "snapshot-00000000000000000008.snap")).unwrap();
    assert_eq!(contents.lsn, 8);
    assert_eq!(contents.payouts, vec![golden_payout()]);
    let accounts = contents.accounts.into_iter().map(|a| (a.id(), a)).collect();
    assert_full_scenario(&accounts);
}

fn currencies() -> Currencies {
    Currencies::new(&Config::default().currencies).unwrap()
}

/// A data folder holding `wal` as its only segment.
fn data_dir_with_wal(wal: &str) -> tempfile::TempDir {
    data_dir_with_segment(&golden(wal))
}

/// A data folder holding the file at `wal` as its only segment.
fn data_dir_with_segment(wal: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let segment = segment_path(dir.path(), 1);
    fs::create_dir_all(segment.parent().unwrap()).unwrap();
    fs::copy(wal, &segment).unwrap();
    dir
}

fn account(accounts: &std::collections::HashMap<u64, AccountState>, id: u64) -> &AccountState {
    accounts.get(&id).unwrap()
}

/// The state after all 8 events.
fn assert_full_scenario(accounts: &std::collections::HashMap<u64, AccountState>) {
    assert_eq!(accounts.len(), 2);
    let one = account(accounts, 1).balance(usd());
    assert_eq!(
        (one.available, one.locked, one.deposited, one.burned),
        (6_000, 1_000, 10_000, 2_500)
    );
    let two_usd = account(accounts, 2).balance(usd());
    assert_eq!((two_usd.available, two_usd.locked), (500, 0));
    let two_btc = account(accounts, 2).balance(btc());
    assert_eq!((two_btc.available, two_btc.locked), (50_000_000, 0));
    let status = |id, seq| {
        account(accounts, id)
            .withdrawal(TransactionId::new(id, seq))
            .unwrap()
            .status
    };
    assert_eq!(status(1, 2), WithdrawalStatus::Completed);
    assert_eq!(status(1, 3), WithdrawalStatus::Pending);
    assert_eq!(
        status(2, 2),
        WithdrawalStatus::Failed {
            reason: "bank declined".into()
        }
    );
}

#[test]
fn golden_v1_snapshot_loads_to_the_scenario_state() {
    let (lsn, states) = snapshot::read(&golden("snapshot-00000000000000000008.snap")).unwrap();
    assert_eq!(lsn, 8);
    let accounts = states.into_iter().map(|a| (a.id(), a)).collect();
    assert_full_scenario(&accounts);
}

#[test]
fn golden_v1_clean_wal_replays_all_eight_records() {
    let dir = data_dir_with_wal("clean.wal");
    let rebuilt = rebuild(dir.path(), &currencies(), ReplayMode::Recover).unwrap();
    assert_eq!(rebuilt.report.records_replayed, 8);
    assert_eq!(rebuilt.report.last_lsn, 8);
    assert_eq!(rebuilt.report.bytes_truncated, 0);
    assert_full_scenario(&rebuilt.accounts);
    // The bytes this build writes are the bytes the golden file holds.
    assert_eq!(encoded_log().0, fs::read(golden("clean.wal")).unwrap());
}

#[test]
fn golden_v1_snapshot_plus_wal_skips_what_the_snapshot_holds() {
    let dir = data_dir_with_wal("clean.wal");
    fs::create_dir_all(snapshot_dir(dir.path())).unwrap();
    fs::copy(
        golden("snapshot-00000000000000000008.snap"),
        snapshot_dir(dir.path()).join("snapshot-00000000000000000008.snap"),
    )
    .unwrap();
    let rebuilt = rebuild(dir.path(), &currencies(), ReplayMode::Recover).unwrap();
    assert_eq!(rebuilt.report.snapshot.map(|s| s.lsn), Some(8));
    assert_eq!(rebuilt.report.records_replayed, 0);
    assert_full_scenario(&rebuilt.accounts);
}

#[test]
fn golden_v1_torn_wal_recovers_the_first_seven_records_and_cuts_the_rest() {
    let dir = data_dir_with_wal("torn.wal");
    let rebuilt = rebuild(dir.path(), &currencies(), ReplayMode::Recover).unwrap();
    assert_eq!(rebuilt.report.records_replayed, 7);
    assert_eq!(rebuilt.report.bytes_truncated, 19);
    let btc_balance = account(&rebuilt.accounts, 2).balance(btc());
    assert_eq!(
        (btc_balance.available, btc_balance.locked),
        (40_000_000, 10_000_000)
    );
    let (_, starts) = encoded_log();
    assert_eq!(
        fs::metadata(segment_path(dir.path(), 1)).unwrap().len() as usize,
        starts[7]
    );
}

#[test]
fn golden_v1_corrupt_wal_fails_naming_the_file_and_the_record_offset() {
    let dir = data_dir_with_wal("corrupt.wal");
    let (_, starts) = encoded_log();
    match rebuild(dir.path(), &currencies(), ReplayMode::Recover) {
        Err(RecoveryError::Wal(WalError::Corrupt { path, offset, .. })) => {
            assert_eq!(path, segment_path(dir.path(), 1));
            assert_eq!(offset as usize, starts[3]);
        }
        Err(other) => panic!("expected a corrupt-record error, got {other}"),
        Ok(_) => panic!("a corrupt middle record must not recover"),
    }
}

/// Issue 11, item 2: a length field raised past the end of the file looks
/// like a torn write, but records follow it: corrupt, never cut.
#[test]
fn golden_v1_corrupt_length_mid_log_fails_naming_the_file_and_the_record_offset() {
    for mode in [
        ReplayMode::Recover,
        ReplayMode::ReadOnly { until_lsn: None },
    ] {
        let dir = data_dir_with_wal("corrupt_length.wal");
        let (_, starts) = encoded_log();
        match rebuild(dir.path(), &currencies(), mode) {
            Err(RecoveryError::Wal(WalError::Corrupt { path, offset, .. })) => {
                assert_eq!(path, segment_path(dir.path(), 1));
                assert_eq!(offset as usize, starts[3]);
            }
            Err(other) => panic!("expected a corrupt-record error, got {other}"),
            Ok(_) => panic!("a damaged length before valid records must not recover"),
        }
        let golden_bytes = fs::read(golden("corrupt_length.wal")).unwrap();
        let left = fs::read(segment_path(dir.path(), 1)).unwrap();
        assert_eq!(left, golden_bytes, "nothing cut");
    }
}

/// The times the v4 files give the scenario's withdrawals: `(id, seq)` →
/// `(created_at, updated_at)`.
fn assert_v4_times(accounts: &std::collections::HashMap<u64, AccountState>, lsns: u64) {
    let times = |id, seq| {
        let w = account(accounts, id)
            .withdrawal(TransactionId::new(id, seq))
            .unwrap();
        (w.created_at, w.updated_at)
    };
    let at = |lsn| Some(scenario_at(lsn));
    assert_eq!(times(1, 2), (at(3), at(4)));
    assert_eq!(times(1, 3), (at(5), at(5)));
    let failed_at = if lsns >= 8 { at(8) } else { at(7) };
    assert_eq!(times(2, 2), (at(7), failed_at));
}

/// Every v1 to v3 file: the withdrawals' times are unknown (`None`).
fn assert_no_times(accounts: &std::collections::HashMap<u64, AccountState>) {
    for state in accounts.values() {
        for (tx, _) in state.withdrawals() {
            let w = state.withdrawal(tx).unwrap();
            assert_eq!((w.created_at, w.updated_at), (None, None), "{tx}");
        }
    }
}

#[test]
fn golden_v1_to_v3_files_load_with_unknown_times() {
    let (_, v1) = snapshot::read(&golden("snapshot-00000000000000000008.snap")).unwrap();
    assert_no_times(&v1.into_iter().map(|a| (a.id(), a)).collect());
    for version in ["v2", "v3"] {
        let path = golden_in(version, "snapshot-00000000000000000008.snap");
        let contents = snapshot::read_full(&path).unwrap();
        assert_no_times(&contents.accounts.into_iter().map(|a| (a.id(), a)).collect());
        let payout = contents.payouts[0].view();
        assert_eq!((payout.submitted_at, payout.settled_at), (None, None));
    }
    let dir = data_dir_with_wal("clean.wal");
    let rebuilt = rebuild(dir.path(), &currencies(), ReplayMode::Recover).unwrap();
    assert_no_times(&rebuilt.accounts);
    assert_eq!(rebuilt.report.newest_event_at, UnixMs::UNKNOWN);
}

#[test]
fn golden_v4_clean_wal_replays_all_eight_records_with_their_times() {
    let dir = data_dir_with_wal_in("v4", "clean.wal");
    let rebuilt = rebuild(dir.path(), &currencies(), ReplayMode::Recover).unwrap();
    assert_eq!(rebuilt.report.records_replayed, 8);
    assert_eq!(rebuilt.report.bytes_truncated, 0);
    assert_eq!(rebuilt.report.newest_event_at, scenario_at(8));
    assert_full_scenario(&rebuilt.accounts);
    assert_v4_times(&rebuilt.accounts, 8);
    // The bytes this build writes are the bytes the golden file holds.
    assert_eq!(
        encoded_v4_log().0,
        fs::read(golden_in("v4", "clean.wal")).unwrap()
    );
}

#[test]
fn golden_v4_torn_wal_recovers_the_first_seven_records_with_their_times() {
    let dir = data_dir_with_wal_in("v4", "torn.wal");
    let rebuilt = rebuild(dir.path(), &currencies(), ReplayMode::Recover).unwrap();
    assert_eq!(rebuilt.report.records_replayed, 7);
    assert_eq!(rebuilt.report.bytes_truncated, 19);
    assert_v4_times(&rebuilt.accounts, 7);
    let (_, starts) = encoded_v4_log();
    assert_eq!(
        fs::metadata(segment_path(dir.path(), 1)).unwrap().len() as usize,
        starts[7]
    );
}

#[test]
fn golden_v4_snapshot_loads_accounts_payouts_mismatches_and_times() {
    let contents =
        snapshot::read_full(&golden_in("v4", "snapshot-00000000000000000008.snap")).unwrap();
    assert_eq!(contents.lsn, 8);
    assert_eq!(contents.payouts, vec![golden_payout_with_times()]);
    let payout = contents.payouts[0].view();
    assert_eq!(
        payout.submitted_at.map(|t| t.to_string()).as_deref(),
        Some("2026-01-01T00:00:03.503Z")
    );
    assert_eq!(payout.settled_at, Some(scenario_at(4)));
    let accounts = contents.accounts.into_iter().map(|a| (a.id(), a)).collect();
    assert_full_scenario(&accounts);
    assert_v4_times(&accounts, 8);
}

/// A folder written before format v4 (the v1 log) goes on in v4: the old
/// records keep unknown times, what follows them is stamped, and both read
/// back.
#[test]
fn a_v1_log_followed_by_a_v4_segment_replays_both() {
    let dir = data_dir_with_wal("clean.wal");
    let mut next = Vec::new();
    let stamped = Stamped {
        at: scenario_at(9),
        event: Event::WithdrawalCancelled {
            tx: TransactionId::new(1, 3),
        },
    };
    encode_into(&mut next, 9, &stamped).unwrap();
    fs::write(segment_path(dir.path(), 9), next).unwrap();
    let rebuilt = rebuild(dir.path(), &currencies(), ReplayMode::Recover).unwrap();
    assert_eq!(rebuilt.report.records_replayed, 9);
    let w = account(&rebuilt.accounts, 1)
        .withdrawal(TransactionId::new(1, 3))
        .unwrap();
    assert_eq!(w.status, WithdrawalStatus::Cancelled);
    assert_eq!((w.created_at, w.updated_at), (None, Some(scenario_at(9))));
}

fn data_dir_with_wal_in(version: &str, wal: &str) -> tempfile::TempDir {
    data_dir_with_segment(&golden_in(version, wal))
}
