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
use burnledger::domain::details::{Destination, Fee, FeeCollected, Metadata, WithdrawalDetails};
use burnledger::domain::event::{Event, Stamped};
use burnledger::domain::feed::JournalHead;
use burnledger::domain::ids::{IdempotencyKey, TransactionId};
use burnledger::domain::money::{Currencies, Currency, CurrencyCode};
use burnledger::domain::policy::{Freeze, FreezeScope, Policy, Tier, Window, WithdrawalLimits};
use burnledger::domain::time::UnixMs;
use burnledger::domain::withdrawal::{FeeView, Withdrawal, WithdrawalStatus};
use burnledger::storage::recovery::{rebuild, snapshot_dir, RecoveryError};
use burnledger::storage::snapshot;
use burnledger::storage::wal::record::{
    encode_chained_into, encode_into, encode_v1_into, hash, Hash, GENESIS,
    HEADER_BYTES as RECORD_HEADER_BYTES,
};
use burnledger::storage::wal::{segment_path, verify_chain, ReplayMode, WalError};
use burnledger::Config;
use rust_decimal::Decimal;

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
    states_after(&scenario(), at)
}

/// The accounts after `events` (LSN = position + 1), each applied at
/// `at(lsn)` as recovery applies it, sorted by id.
fn states_after(events: &[Event], at: impl Fn(u64) -> UnixMs) -> Vec<AccountState> {
    let mut accounts = std::collections::HashMap::new();
    for (index, event) in events.iter().enumerate() {
        let at = at(index as u64 + 1);
        burnledger::storage::recovery::apply_event(&mut accounts, &currencies(), event, at)
            .unwrap();
    }
    sorted(accounts)
}

/// Accounts by id, as a snapshot holds them.
fn sorted(accounts: std::collections::HashMap<u64, AccountState>) -> Vec<AccountState> {
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
    let (v7_log, _, v7_head) = encoded_v7_log();
    write_new(golden_in("v7", "clean.wal"), &v7_log);
    let scratch = tempfile::tempdir().unwrap();
    let states = v7_states();
    // As the checkpointer writes it: with the chain's head at its LSN.
    let v7 = snapshot::write_chained(
        scratch.path(),
        V7_LAST_LSN,
        Some(v7_head),
        states.iter(),
        std::iter::once(&golden_payout_with_times()),
    )
    .unwrap();
    write_new(golden_in("v7", V7_SNAPSHOT), &fs::read(&v7.path).unwrap());
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

// Format v7: the v5 log, chained (WAL framing v6), and what issue 16 adds.

/// Where the v7 scenario's fees go (an account no event names otherwise).
const FEE_ACCOUNT: u64 = 9;

/// The v7 log's last LSN: the v5 log's 9 events, then `v7_events`.
const V7_LAST_LSN: u64 = 19;

const V7_SNAPSHOT: &str = "snapshot-00000000000000000019.snap";

fn metadata(pairs: &[(&str, &str)]) -> Metadata {
    Metadata::new(pairs.iter().copied()).unwrap()
}

fn dec(units: i64, decimals: u32) -> Decimal {
    Decimal::new(units, decimals)
}

/// `lsn`'s time plus `ms`.
fn after(lsn: u64, ms: u64) -> UnixMs {
    UnixMs::from_millis(scenario_at(lsn).as_millis() + ms)
}

/// Withdrawal 1:6 expires an hour after its request (LSN 11).
fn v7_expiry() -> UnixMs {
    after(11, 3_600_000)
}

fn v7_destination() -> Destination {
    Destination::new("iban", "DE89370400440532013000", Some("sepa".into())).unwrap()
}

/// Account 1's freeze (LSN 16): withdrawals, for a week, "kyc refresh".
fn v7_freeze() -> Freeze {
    Freeze {
        scope: FreezeScope::Withdrawals,
        until: Some(after(16, 7 * 24 * 3_600_000)),
        reason: "kyc refresh".into(),
    }
}

fn vip() -> Tier {
    Tier::new("vip").unwrap()
}

/// What format v7 adds to the scenario: LSN 10 to 19, each exercising one
/// new part of an event (see snapshots/README.md, "v7").
fn v7_events() -> Vec<Event> {
    let tx = TransactionId::new;
    let fee = |amount| {
        Some(Fee {
            currency: usd(),
            amount,
        })
    };
    vec![
        // 10: a deposit with metadata and a key.
        Event::Deposited {
            tx: tx(1, 5),
            currency: usd(),
            amount: 4_000,
            key: key("golden-deposit-v7"),
            metadata: metadata(&[("ref", "wire-7")]).boxed(),
        },
        // 11: 50.00 USD with a 1.00 USD fee, a destination, metadata, an expiry.
        Event::WithdrawalRequested {
            tx: tx(1, 6),
            currency: usd(),
            amount: 5_000,
            key: None,
            details: WithdrawalDetails {
                fee: fee(100),
                destination: Some(v7_destination()),
                metadata: metadata(&[("order", "o-7")]),
                expires_at: Some(v7_expiry()),
            }
            .boxed(),
        },
        // 12: paid 30.00 of it; the fee goes to the fee account.
        Event::WithdrawalCompleted {
            tx: tx(1, 6),
            paid: Some(3_000),
            fee: Some(FeeCollected {
                to: FEE_ACCOUNT,
                currency: usd(),
                amount: 100,
            }),
        },
        // 13: 0.05 BTC with a 0.50 USD fee (another currency)...
        Event::WithdrawalRequested {
            tx: tx(2, 3),
            currency: btc(),
            amount: 5_000_000,
            key: None,
            details: WithdrawalDetails {
                fee: fee(50),
                ..WithdrawalDetails::default()
            }
            .boxed(),
        },
        // 14: ...which fails: both return to available.
        Event::WithdrawalFailed {
            tx: tx(2, 3),
            reason: "address rejected".into(),
        },
        // 15: a transfer with metadata.
        Event::Transferred {
            tx: tx(1, 7),
            to: 2,
            currency: usd(),
            amount: 900,
            key: None,
            metadata: metadata(&[("memo", "rent")]).boxed(),
        },
        // 16: account 1 frozen (withdrawals, for a week).
        Event::AccountFrozen {
            account: 1,
            freeze: v7_freeze(),
        },
        // 17: account 2 frozen (everything, until lifted)...
        Event::AccountFrozen {
            account: 2,
            freeze: Freeze {
                scope: FreezeScope::All,
                until: None,
                reason: "chargeback".into(),
            },
        },
        // 18: account 1 moved to tier vip.
        Event::AccountTierSet {
            account: 1,
            tier: vip(),
        },
        // 19: ...and account 2's freeze lifted.
        Event::AccountUnfrozen { account: 2 },
    ]
}

/// Every event of the v7 log, LSN = position + 1.
fn v7_log_events() -> Vec<Event> {
    let mut events = scenario();
    events.push(v5_expiry());
    events.extend(v7_events());
    events
}

/// The v7 log as this build's WAL writer frames it (v6: each record
/// chained to the one before), where each record starts, and the chain's
/// head (the last record's hash).
fn encoded_v7_log() -> (Vec<u8>, Vec<usize>, Hash) {
    let mut bytes = Vec::new();
    let mut starts = Vec::new();
    let mut previous = GENESIS;
    for (index, event) in v7_log_events().into_iter().enumerate() {
        let lsn = index as u64 + 1;
        let start = bytes.len();
        starts.push(start);
        let stamped = Stamped {
            at: scenario_at(lsn),
            event,
        };
        encode_chained_into(&mut bytes, lsn, &previous, &stamped).unwrap();
        previous = hash(&bytes[start..]);
    }
    assert_eq!(starts.len() as u64, V7_LAST_LSN);
    (bytes, starts, previous)
}

/// The accounts after the v7 log, applied in memory (not read from disk).
fn v7_states() -> Vec<AccountState> {
    states_after(&v7_log_events(), scenario_at)
}

/// Limits for tier vip: 100.00 USD a day, 1,000.00 USD in 30 days; so the
/// allowance shows what account 1's usage counts.
fn v7_policy() -> Policy {
    let mut limits = WithdrawalLimits::default();
    limits.set(vip(), usd().code, Window::Day, 10_000);
    limits.set(vip(), usd().code, Window::Month, 100_000);
    Policy {
        limits,
        ..Policy::new(10)
    }
}

/// The state after the v7 log: balances, the fee account's credit, the
/// new withdrawals' extras, the controls, the limits' usage and the keys.
fn assert_v7_state(accounts: &std::collections::HashMap<u64, AccountState>) {
    assert_eq!(accounts.len(), 3, "accounts 1, 2 and the fee account");
    assert_v7_balances(accounts);
    assert_v7_withdrawals(accounts);
    assert_v7_controls(accounts);
    assert_v7_usage(account(accounts, 1));
    assert_v7_keys(account(accounts, 1));
}

/// Account 1 USD: 100.00 + 40.00 deposited; 25.00 and 30.00 paid out
/// (burned), 5.00 + 9.00 transferred, 1.00 fee: 60.00 available, 10.00
/// locked (1:3 still pending). Account 2: 5.00 + 9.00 USD, its BTC whole
/// (the failed withdrawal and its USD fee released). The fee account: 1.00.
fn assert_v7_balances(accounts: &std::collections::HashMap<u64, AccountState>) {
    let one = account(accounts, 1).balance(usd());
    assert_eq!(
        (one.available, one.locked, one.deposited, one.burned),
        (6_000, 1_000, 14_000, 5_500)
    );
    let two_usd = account(accounts, 2).balance(usd());
    assert_eq!((two_usd.available, two_usd.locked), (1_400, 0));
    let two_btc = account(accounts, 2).balance(btc());
    assert_eq!(
        (two_btc.available, two_btc.locked, two_btc.burned),
        (50_000_000, 0, 0)
    );
    let fees = account(accounts, FEE_ACCOUNT).balance(usd());
    assert_eq!((fees.available, fees.locked, fees.deposited), (100, 0, 0));
    for state in accounts.values() {
        state.check_invariants().unwrap();
    }
}

fn view(accounts: &std::collections::HashMap<u64, AccountState>, id: u64, seq: u64) -> Withdrawal {
    account(accounts, id)
        .withdrawal(TransactionId::new(id, seq))
        .unwrap()
}

/// 1:6 partly paid with its fee, destination, metadata and expiry; 2:3
/// failed with its fee in USD; the older ones as in v5.
fn assert_v7_withdrawals(accounts: &std::collections::HashMap<u64, AccountState>) {
    let partial = view(accounts, 1, 6);
    assert_eq!(partial.status, WithdrawalStatus::Completed);
    assert_eq!(
        (partial.amount, partial.paid),
        (dec(5_000, 2), Some(dec(3_000, 2)))
    );
    let usd_fee = |units| {
        Some(FeeView {
            currency: usd().code,
            amount: dec(units, 2),
        })
    };
    assert_eq!(partial.fee, usd_fee(100));
    assert_eq!(partial.destination, Some(v7_destination()));
    assert_eq!(partial.metadata, metadata(&[("order", "o-7")]));
    assert_eq!(partial.expires_at, Some(v7_expiry()));
    assert_eq!(
        (partial.created_at, partial.updated_at),
        (Some(scenario_at(11)), Some(scenario_at(12)))
    );
    let failed = view(accounts, 2, 3);
    let reason = "address rejected".to_string();
    assert_eq!(failed.status, WithdrawalStatus::Failed { reason });
    assert_eq!((failed.amount, failed.paid), (dec(5_000_000, 8), None));
    assert_eq!(failed.fee, usd_fee(50));
    assert_eq!((failed.destination, failed.expires_at), (None, None));
    assert!(failed.metadata.is_empty());
    // A completion without `paid` paid the whole amount; no extras.
    let whole = view(accounts, 1, 2);
    assert_eq!((whole.paid, whole.fee), (Some(dec(2_500, 2)), None));
    assert_eq!(view(accounts, 1, 3).status, WithdrawalStatus::Pending);
}

/// Account 1: tier vip, frozen for withdrawals until a week after LSN 16;
/// account 2: its freeze lifted (not merely over), default tier.
fn assert_v7_controls(accounts: &std::collections::HashMap<u64, AccountState>) {
    let one = account(accounts, 1);
    assert_eq!(one.tier(), vip());
    assert_eq!(one.freeze_at(scenario_at(19)), Some(&v7_freeze()));
    let until = v7_freeze().until.unwrap();
    assert_eq!(one.freeze_at(until), None, "over at its end");
    let two = account(accounts, 2);
    assert_eq!(two.tier(), Tier::DEFAULT);
    assert_eq!(two.controls().and_then(|c| c.freeze.as_ref()), None);
    assert_eq!(account(accounts, FEE_ACCOUNT).tier(), Tier::DEFAULT);
}

/// Account 1's withdrawals count 25.00 (1:2) + 10.00 (1:3, pending) +
/// 30.00 (1:6: what was paid, not its 50.00): 65.00 in both windows at
/// LSN 19, where the freeze allows nothing; when the freeze ends a week
/// later the day's window is empty again, and the 60.00 available is the
/// most.
fn assert_v7_usage(one: &AccountState) {
    let used = |at| -> Vec<Decimal> {
        let allowance = one.withdrawal_allowance(&v7_policy(), usd(), at);
        allowance.windows.iter().map(|w| w.used).collect()
    };
    let now = one.withdrawal_allowance(&v7_policy(), usd(), scenario_at(19));
    assert_eq!(used(scenario_at(19)), [dec(6_500, 2), dec(6_500, 2)]);
    assert_eq!((now.amount, now.freeze), (Decimal::ZERO, Some(v7_freeze())));
    let until = v7_freeze().until.unwrap();
    assert_eq!(used(until), [Decimal::ZERO, dec(6_500, 2)]);
    let then = one.withdrawal_allowance(&v7_policy(), usd(), until);
    assert_eq!((then.amount, then.freeze), (dec(6_000, 2), None));
}

/// Account 1's keys: `golden-transfer` (LSN 6) and `golden-deposit-v7`
/// (LSN 10), which remembers its metadata: the same deposit replays,
/// one with other metadata is refused.
fn assert_v7_keys(one: &AccountState) {
    assert_eq!(one.key_times(), vec![scenario_at(6), scenario_at(10)]);
    assert_eq!(one.expired_key_fingerprints().len(), 2);
    let mut again = one.clone();
    let deposit = |account: &mut AccountState, meta| {
        account.deposit_with(
            usd(),
            4_000,
            key("golden-deposit-v7"),
            meta,
            scenario_at(20),
        )
    };
    let replay = deposit(&mut again, metadata(&[("ref", "wire-7")])).unwrap();
    assert_eq!(replay.event, None, "replayed, not deposited again");
    let other = deposit(&mut again, metadata(&[("ref", "wire-8")]));
    assert!(
        matches!(
            other,
            Err(burnledger::LedgerError::IdempotencyConflict { .. })
        ),
        "{other:?}"
    );
    assert_eq!(&again, one, "nothing changed");
}

#[test]
fn golden_v7_clean_wal_replays_fees_details_partial_payment_and_controls() {
    let dir = data_dir_with_wal_in("v7", "clean.wal");
    let rebuilt = rebuild(dir.path(), &currencies(), ReplayMode::Recover).unwrap();
    assert_eq!(rebuilt.report.records_replayed, V7_LAST_LSN);
    assert_eq!(rebuilt.report.last_lsn, V7_LAST_LSN);
    assert_eq!(rebuilt.report.bytes_truncated, 0);
    assert_eq!(rebuilt.report.newest_event_at, scenario_at(V7_LAST_LSN));
    let (encoded, _, head) = encoded_v7_log();
    let expected_head = JournalHead {
        lsn: V7_LAST_LSN,
        hash: head,
    };
    assert_eq!(rebuilt.report.head, Some(expected_head));
    assert_v7_state(&rebuilt.accounts);
    assert_eq!(sorted(rebuilt.accounts), v7_states());
    // The bytes this build writes are the bytes the golden file holds.
    assert_eq!(encoded, fs::read(golden_in("v7", "clean.wal")).unwrap());
}

#[test]
fn golden_v7_snapshot_loads_what_the_log_replays() {
    let contents = snapshot::read_full(&golden_in("v7", V7_SNAPSHOT)).unwrap();
    assert_eq!(contents.lsn, V7_LAST_LSN);
    assert_eq!(contents.head, Some(encoded_v7_log().2));
    assert_eq!(contents.payouts, vec![golden_payout_with_times()]);
    let loaded: std::collections::HashMap<u64, AccountState> =
        contents.accounts.into_iter().map(|a| (a.id(), a)).collect();
    assert_v7_state(&loaded);
    assert_v4_times(&loaded, 8);
    let dir = data_dir_with_wal_in("v7", "clean.wal");
    let replayed = rebuild(dir.path(), &currencies(), ReplayMode::Recover).unwrap();
    assert_eq!(sorted(loaded), sorted(replayed.accounts));
}

/// The snapshot's head is the hash of the log's record 19, so the chain
/// check accepts both together, and recovery starts from the snapshot.
#[test]
fn golden_v7_snapshot_and_wal_form_one_chain() {
    let dir = data_dir_with_wal_in("v7", "clean.wal");
    fs::create_dir_all(snapshot_dir(dir.path())).unwrap();
    let snapshot_copy = snapshot_dir(dir.path()).join(V7_SNAPSHOT);
    fs::copy(golden_in("v7", V7_SNAPSHOT), snapshot_copy).unwrap();
    let report = verify_chain(dir.path(), None).unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(
        (report.chained_from, report.records),
        (Some(1), V7_LAST_LSN)
    );
    assert_eq!(report.snapshots_checked, 1);
    let rebuilt = rebuild(dir.path(), &currencies(), ReplayMode::Recover).unwrap();
    assert_eq!(rebuilt.report.snapshot.map(|s| s.lsn), Some(V7_LAST_LSN));
    assert_eq!(rebuilt.report.records_replayed, 0);
    assert_v7_state(&rebuilt.accounts);
}

/// Damage to the chained log: a flipped payload byte fails its checksum
/// (recovery stops at the record); a flipped byte of the hash a record
/// carries, with its checksum made to match, passes recovery's framing
/// checks but breaks the chain, which `verify_chain` reports.
#[test]
fn golden_v7_wal_with_a_flipped_byte_is_detected() {
    let golden_bytes = fs::read(golden_in("v7", "clean.wal")).unwrap();
    let (_, starts, _) = encoded_v7_log();
    // Record 12 (the partial completion): one byte of its event.
    let mut corrupt = golden_bytes.clone();
    corrupt[starts[12] - 1] ^= 0x01;
    let dir = data_dir_with_bytes(&corrupt);
    match rebuild(dir.path(), &currencies(), ReplayMode::Recover) {
        Err(RecoveryError::Wal(WalError::Corrupt { path, offset, .. })) => {
            assert_eq!(path, segment_path(dir.path(), 1));
            assert_eq!(offset as usize, starts[11]);
        }
        Err(other) => panic!("expected a corrupt-record error, got {other}"),
        Ok(_) => panic!("a corrupt middle record must not recover"),
    }
    // Record 13: the first byte of its predecessor's hash, checksum fixed.
    let mut forged = golden_bytes;
    let record = starts[12];
    forged[record + RECORD_HEADER_BYTES + 1] ^= 0x01;
    refresh_checksum(&mut forged[record..starts[13]]);
    let dir = data_dir_with_bytes(&forged);
    let replayed = rebuild(
        dir.path(),
        &currencies(),
        ReplayMode::ReadOnly { until_lsn: None },
    );
    assert_eq!(replayed.unwrap().report.records_replayed, V7_LAST_LSN);
    let report = verify_chain(dir.path(), None).unwrap();
    let problem = report.problem.expect("a broken chain is reported");
    assert!(problem.starts_with("LSN 12 in "), "{problem}");
    assert!(problem.contains("the hash LSN 13 records"), "{problem}");
    assert!(problem.contains(&format!("at byte {record})")), "{problem}");
}

/// A data folder whose only segment holds `bytes`.
fn data_dir_with_bytes(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let segment = segment_path(dir.path(), 1);
    fs::create_dir_all(segment.parent().unwrap()).unwrap();
    fs::write(&segment, bytes).unwrap();
    dir
}

/// Rewrites the checksum of the one record `record` holds (CRC-32 of its
/// LSN and payload), as a forger would.
fn refresh_checksum(record: &mut [u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&record[8..16]);
    crc.update(&record[RECORD_HEADER_BYTES..]);
    record[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
}
