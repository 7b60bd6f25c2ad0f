//! The log's hash chain (format v6), end to end: a ledger that archives its
//! retired segments keeps a chain `burnledger verify --chain` checks from
//! LSN 1; an amount rewritten in an archived segment, its checksum fixed,
//! is named by LSN; a deleted archived segment is a gap; the chain goes on
//! across a restart, a torn tail cut at open and segment rollovers; and an
//! old folder (unchained records) opens, gets chained records, and verify
//! says where the chain starts. The real binary is run, as an auditor would.

#[path = "common/faults.rs"]
mod faults;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use burnledger::domain::event::{Event, Stamped};
use burnledger::domain::feed::JournalHead;
use burnledger::storage::wal::record::{self, decode, encode_chained_into, Decoded};
use burnledger::{Config, CurrencyConfig, Decimal, Ledger};

/// A folder with a data folder and an archive beside it.
struct Folders {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    archive: PathBuf,
}

fn folders() -> Folders {
    let tmp = tempfile::tempdir().unwrap();
    let (data, archive) = (tmp.path().join("data"), tmp.path().join("archive"));
    Folders {
        _tmp: tmp,
        data,
        archive,
    }
}

/// Small segments, snapshots only when asked, one kept, retired segments
/// archived.
fn config(folders: &Folders) -> Config {
    Config {
        archive_dir: Some(folders.archive.clone()),
        snapshots_kept: 1,
        ..faults::config(&folders.data)
    }
}

/// Runs `burnledger verify --chain` on the folders: whether it passed, and
/// what it printed.
fn verify_chain(folders: &Folders) -> (bool, String) {
    verify_chain_with(folders, &[])
}

/// [`verify_chain`] with more arguments.
fn verify_chain_with(folders: &Folders, extra: &[String]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_burnledger"))
        .arg("verify")
        .arg("--data-dir")
        .arg(&folders.data)
        .arg("--chain")
        .arg("--archive-dir")
        .arg(&folders.archive)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let code = output.status.code();
    assert!(
        matches!(code, Some(0 | 1)),
        "exit {code:?}: {stdout}{stderr}"
    );
    (code == Some(0), stdout)
}

fn head_line(head: JournalHead) -> String {
    format!("chain head      LSN {} hash {}", head.lsn, head.hash_hex())
}

/// A ledger that wrote 600 records, snapshotted (archiving every segment
/// before the snapshot), wrote 100 more and shut down; its head then.
async fn archived_ledger(folders: &Folders) -> JournalHead {
    let ledger = Ledger::open(config(folders)).unwrap();
    faults::write_acknowledged(&ledger, 6, 100).await;
    ledger.snapshot().await.unwrap().expect("a snapshot");
    faults::write_acknowledged(&ledger, 1, 100).await;
    let head = ledger.journal_head().unwrap();
    assert_eq!(head.lsn, 700);
    ledger.shutdown().await;
    assert!(
        faults::segment_files(&folders.archive).len() >= 3,
        "segments were archived, not deleted"
    );
    head
}

/// Rewrites the amount of the first deposit in `segment` (decoded,
/// changed, re-encoded with the same predecessor hash, so its checksum is
/// right) and returns its LSN.
fn rewrite_first_deposit(segment: &Path) -> u64 {
    let bytes = fs::read(segment).unwrap();
    let first_lsn = faults::first_lsn(segment);
    let bounds = faults::record_boundaries(&bytes, first_lsn);
    for (index, span) in bounds.windows(2).enumerate() {
        let lsn = first_lsn + index as u64;
        let original = &bytes[span[0]..span[1]];
        let Decoded::Complete { entry, .. } = decode(original, lsn) else {
            panic!("record {lsn} decodes");
        };
        let Event::Deposited {
            tx,
            currency,
            amount,
            key,
            metadata,
        } = entry.event
        else {
            continue;
        };
        let forged = Stamped {
            at: entry.at,
            event: Event::Deposited {
                tx,
                currency,
                amount: amount * 100,
                key,
                metadata,
            },
        };
        let previous = record::predecessor(original).expect("a chained record");
        let mut rewritten = bytes[..span[0]].to_vec();
        encode_chained_into(&mut rewritten, lsn, &previous, &forged).unwrap();
        assert!(matches!(
            decode(&rewritten[span[0]..], lsn),
            Decoded::Complete { .. }
        ));
        rewritten.extend_from_slice(&bytes[span[1]..]);
        fs::write(segment, rewritten).unwrap();
        return lsn;
    }
    panic!("no deposit in {}", segment.display());
}

#[tokio::test]
async fn an_amount_rewritten_in_an_archived_segment_is_named_by_verify_chain() {
    let folders = folders();
    let head = archived_ledger(&folders).await;
    let (clean, printed) = verify_chain(&folders);
    assert!(clean, "{printed}");
    assert!(
        printed.contains("700 records checked") && printed.contains(&head_line(head)),
        "{printed}"
    );
    assert!(printed.contains("chain start     LSN 1\n"), "{printed}");

    let archived = faults::segment_files(&folders.archive);
    let segment = &archived[1];
    let lsn = rewrite_first_deposit(segment);
    let (clean, printed) = verify_chain(&folders);
    assert!(!clean, "{printed}");
    let name = segment.file_name().unwrap().to_string_lossy();
    let named = format!(
        "LSN {lsn} in {name}: its content does not match the hash LSN {}",
        lsn + 1
    );
    assert!(printed.contains(&named), "want `{named}` in:\n{printed}");
}

#[tokio::test]
async fn a_deleted_archived_segment_is_reported_as_a_gap() {
    let folders = folders();
    archived_ledger(&folders).await;
    let archived = faults::segment_files(&folders.archive);
    fs::remove_file(&archived[1]).unwrap();
    let (clean, printed) = verify_chain(&folders);
    assert!(!clean, "{printed}");
    let (missing, next) = (
        faults::first_lsn(&archived[1]),
        faults::first_lsn(&archived[2]),
    );
    let named = format!(
        "LSN gap: {} starts at LSN {next} but LSN {missing} comes next",
        archived[2].file_name().unwrap().to_string_lossy()
    );
    assert!(printed.contains(&named), "want `{named}` in:\n{printed}");
}

/// A snapshot whose stored head is not the hash of the record at its LSN
/// is named: a snapshot is an anchor too.
#[tokio::test]
async fn a_record_changed_under_a_snapshot_is_named_against_its_stored_head() {
    let folders = folders();
    let ledger = Ledger::open(config(&folders)).unwrap();
    faults::write_acknowledged(&ledger, 1, 10).await;
    ledger.shutdown().await;
    // The last record (LSN 10, where the final snapshot is) has no
    // successor: only the snapshot's head can tell it was changed.
    let kept = faults::segment_files(&burnledger::storage::wal::wal_dir(&folders.data));
    let last = kept
        .iter()
        .rev()
        .find(|s| fs::metadata(s).unwrap().len() > 0);
    let segment = last.unwrap();
    let bytes = fs::read(segment).unwrap();
    let bounds = faults::record_boundaries(&bytes, faults::first_lsn(segment));
    let lsn = faults::first_lsn(segment) + bounds.len() as u64 - 2;
    assert_eq!(lsn, 10);
    let tail = &bytes[bounds[bounds.len() - 2]..];
    let Decoded::Complete { entry, .. } = decode(tail, lsn) else {
        panic!("the last record decodes");
    };
    let forged = Stamped {
        at: burnledger::domain::time::UnixMs::from_millis(entry.at.as_millis() + 1),
        event: entry.event,
    };
    let mut rewritten = bytes[..bounds[bounds.len() - 2]].to_vec();
    encode_chained_into(
        &mut rewritten,
        lsn,
        &record::predecessor(tail).unwrap(),
        &forged,
    )
    .unwrap();
    fs::write(segment, rewritten).unwrap();
    let (clean, printed) = verify_chain(&folders);
    assert!(!clean, "{printed}");
    assert!(
        printed.contains("stores a head for LSN 10 that is not the hash of LSN 10"),
        "{printed}"
    );
}

/// The chain goes on across a crash (no final snapshot: the head comes from
/// the log), a torn tail cut at open, segment rollovers, and a clean
/// restart (the head comes from the final snapshot); verify checks it all.
#[tokio::test]
async fn the_chain_continues_across_a_crash_a_torn_tail_rollovers_and_a_restart() {
    let folders = folders();
    let crashed = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(config(&folders)).unwrap();
    faults::write_acknowledged(&ledger, 3, 50).await;
    let before_crash = ledger.journal_head().unwrap();
    // What a crash leaves: every acknowledged record, no final snapshot,
    // and half a record at the end.
    faults::copy_ledger(&folders.data, crashed.path());
    ledger.shutdown().await;
    let copied = faults::segments(crashed.path());
    let last = copied
        .iter()
        .rev()
        .find(|s| fs::metadata(s).unwrap().len() > 0);
    let last = last.unwrap();
    let mut bytes = fs::read(last).unwrap();
    bytes.extend_from_within(..30);
    fs::write(last, bytes).unwrap();

    let moved = Folders {
        data: crashed.path().to_path_buf(),
        archive: crashed.path().join("archive"),
        _tmp: crashed,
    };
    let ledger = Ledger::open(config(&moved)).unwrap();
    let report = ledger.recovery_report().unwrap();
    assert_eq!(
        (report.bytes_truncated, report.snapshot.is_none()),
        (30, true)
    );
    assert_eq!(
        ledger.journal_head().unwrap(),
        before_crash,
        "the head from the log"
    );
    faults::write_acknowledged(&ledger, 3, 50).await;
    ledger.shutdown().await;

    let ledger = Ledger::open(config(&moved)).unwrap();
    let restarted = ledger.journal_head().unwrap();
    assert_eq!(restarted.lsn, 300);
    faults::write_acknowledged(&ledger, 1, 50).await;
    let head = ledger.journal_head().unwrap();
    ledger.shutdown().await;
    let segments =
        faults::segments(&moved.data).len() + faults::segment_files(&moved.archive).len();
    assert!(segments >= 4, "{segments} segments: the log rolled over");
    let (clean, printed) = verify_chain(&moved);
    assert!(clean, "{printed}");
    assert!(
        printed.contains("350 records checked") && printed.contains(&head_line(head)),
        "{printed}"
    );
}

#[tokio::test]
async fn an_old_folder_opens_gets_chained_records_and_verify_says_where_the_chain_starts() {
    let folders = folders();
    fs::create_dir_all(burnledger::storage::wal::wal_dir(&folders.data)).unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots/v5/clean.wal");
    fs::copy(
        golden,
        burnledger::storage::wal::segment_path(&folders.data, 1),
    )
    .unwrap();
    let config = Config {
        currencies: vec![CurrencyConfig::new("USD", 2), CurrencyConfig::new("BTC", 8)],
        ..config(&folders)
    };
    let ledger = Ledger::open(config).unwrap();
    assert_eq!(ledger.journal_head().unwrap().lsn, 9);
    let amount = Decimal::from_str("1.00").unwrap();
    ledger.deposit(3, "USD", amount, None).await.unwrap();
    ledger.deposit(3, "USD", amount, None).await.unwrap();
    let head = ledger.journal_head().unwrap();
    assert_eq!(head.lsn, 11);
    ledger.shutdown().await;
    let (clean, printed) = verify_chain(&folders);
    assert!(clean, "{printed}");
    assert!(
        printed.contains("chain start     LSN 10 (LSN 1..=9 predate format v6: not chained)")
            && printed.contains(&head_line(head)),
        "{printed}"
    );
}

#[tokio::test]
async fn a_ledger_without_a_log_has_no_journal_head() {
    let ledger = Ledger::open(Config::for_tests()).unwrap();
    let error = ledger.journal_head().unwrap_err();
    assert_eq!(error.code(), "events_unavailable");
    ledger.shutdown().await;
}

#[test]
fn the_logs_own_folder_is_refused_as_its_archive() {
    let folders = folders();
    let own = burnledger::storage::wal::wal_dir(&folders.data);
    let refused = Ledger::open(Config {
        archive_dir: Some(own),
        ..config(&folders)
    });
    let Err(burnledger::OpenError::Config(reason)) = refused else {
        panic!("the open must be refused");
    };
    assert!(reason.contains("archive_dir"), "{reason}");
}

/// The last records can be checked only against a head kept outside: cut
/// from the end, or rewritten with their checksums fixed, they are caught
/// by `--expect-head`, and a clean log passes it.
#[tokio::test]
async fn a_head_recorded_outside_catches_records_cut_from_the_end_or_rewritten() {
    let folders = folders();
    let head = archived_ledger(&folders).await;
    let anchor = [format!("--expect-head={head}")];
    let (clean, out) = verify_chain_with(&folders, &anchor);
    assert!(clean, "{out}");
    assert_eq!(JournalHead::from_str(&head.to_string()), Ok(head));

    // Cut the last record: every link left still holds, the anchor does not.
    let last = faults::segment_files(&folders.data.join("wal"))
        .pop()
        .unwrap();
    let bytes = fs::read(&last).unwrap();
    let bounds = faults::record_boundaries(&bytes, faults::first_lsn(&last));
    let cut = bounds[bounds.len() - 2];
    fs::write(&last, &bytes[..cut]).unwrap();
    let (unanchored, out) = verify_chain(&folders);
    assert!(unanchored, "without the anchor the cut is invisible: {out}");
    let (anchored, out) = verify_chain_with(&folders, &anchor);
    assert!(!anchored, "{out}");
    assert!(out.contains("records 700..=700 were removed"), "{out}");

    // Put it back, changed with its checksum fixed.
    fs::write(&last, &bytes).unwrap();
    let forged = rewrite_last_record_time(&last);
    assert_eq!(forged, head.lsn);
    let (anchored, out) = verify_chain_with(&folders, &anchor);
    assert!(!anchored, "{out}");
    assert!(out.contains("LSN 700 in"), "{out}");
    let bad = [String::from("--expect-head=700:zz")];
    let output = Command::new(env!("CARGO_BIN_EXE_burnledger"))
        .args(["verify", "--chain", "--data-dir"])
        .arg(&folders.data)
        .args(&bad)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "a malformed head is a usage error"
    );
}

/// Re-stamps the last record of `segment` a second later (re-encoded with
/// its predecessor hash, so its checksum is right); its LSN.
fn rewrite_last_record_time(segment: &Path) -> u64 {
    let bytes = fs::read(segment).unwrap();
    let first_lsn = faults::first_lsn(segment);
    let bounds = faults::record_boundaries(&bytes, first_lsn);
    let (start, end) = (bounds[bounds.len() - 2], bounds[bounds.len() - 1]);
    let lsn = first_lsn + (bounds.len() - 2) as u64;
    let Decoded::Complete { entry, .. } = decode(&bytes[start..end], lsn) else {
        panic!("record {lsn} decodes");
    };
    let later = burnledger::UnixMs::from_millis(entry.at.as_millis() + 1_000);
    let previous = record::predecessor(&bytes[start..end]).expect("a chained record");
    let mut rewritten = bytes[..start].to_vec();
    let forged = Stamped {
        at: later,
        event: entry.event,
    };
    encode_chained_into(&mut rewritten, lsn, &previous, &forged).unwrap();
    fs::write(segment, rewritten).unwrap();
    lsn
}
