//! Building a multi-segment log whose every record was acknowledged, and
//! looking at its files, for the tests that damage storage on purpose
//! (`recovery`'s bit-flip sweep and `storage_faults`). Included by path
//! (`#[path = "common/faults.rs"]`), so those binaries need not compile the
//! rest of `common`.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burnledger::storage::wal::record::{decode, Decoded};
use burnledger::storage::wal::{self, WalEntry, WalError};
use burnledger::{Config, Decimal, Ledger};

/// Small segments (many of them for a few thousand records), and no
/// snapshot unless the test asks for one.
pub fn config(dir: &Path) -> Config {
    Config {
        wal_segment_bytes_max: 8 * 1024,
        snapshot_every_events: u64::MAX / 2,
        snapshot_interval_secs: 24 * 60 * 60,
        account_pending_withdrawals_max: 10_000,
        ..Config::for_tests_in(dir)
    }
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// Runs `waves` rounds of `per_wave` operations (deposits, withdrawal
/// requests, transfers: one logged event each) on `ledger`, one after the
/// other, so the same calls always write the same log, byte for byte.
/// Every operation must be acknowledged; returns how many were.
pub async fn write_acknowledged(ledger: &Ledger, waves: u64, per_wave: u64) -> u64 {
    let mut acknowledged = 0;
    for wave in 0..waves {
        for i in 0..per_wave {
            let account = i % 16;
            match wave % 3 {
                0 => ledger
                    .deposit(account, "USD", dec("10.25"), None)
                    .await
                    .map(drop),
                1 => ledger
                    .request_withdrawal(account, "USD", dec("1.5"), None)
                    .await
                    .map(drop),
                _ => ledger
                    .transfer(account, (account + 1) % 16, "USD", dec("0.75"), None)
                    .await
                    .map(drop),
            }
            .unwrap();
            acknowledged += 1;
        }
    }
    acknowledged
}

/// The log's segment files, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    segment_files(&wal::wal_dir(dir))
}

/// The segment files in `folder` (a log's, or an archive), oldest first.
pub fn segment_files(folder: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

/// The LSN in a segment's name.
pub fn first_lsn(segment: &Path) -> u64 {
    segment
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Byte offsets where each record of a sound segment starts, plus its end.
pub fn record_boundaries(bytes: &[u8], first_lsn: u64) -> Vec<usize> {
    let mut offsets = vec![0];
    let mut lsn = first_lsn;
    let mut at = 0;
    while let Decoded::Complete { len, .. } = decode(&bytes[at..], lsn) {
        at += len;
        lsn += 1;
        offsets.push(at);
    }
    assert_eq!(at, bytes.len(), "the test log must decode whole");
    offsets
}

/// Every record of `dir`'s log, by recovery's replay (which may cut a
/// torn tail), or the error it stopped with.
pub fn replay_all(dir: &Path) -> Result<Vec<WalEntry>, WalError> {
    let mut seen = Vec::new();
    let replayed = wal::replay(dir, 1, |entry| {
        seen.push(entry);
        Ok::<(), std::convert::Infallible>(())
    });
    match replayed {
        Ok(_) => Ok(seen),
        Err(wal::ReplayError::Wal(error)) => Err(error),
        Err(wal::ReplayError::Apply { error, .. }) => match error {},
    }
}

/// Copies `from`'s `wal/` and `snapshots/` folders into `to`.
pub fn copy_ledger(from: &Path, to: &Path) {
    for sub in ["wal", "snapshots"] {
        let Ok(entries) = fs::read_dir(from.join(sub)) else {
            continue;
        };
        fs::create_dir_all(to.join(sub)).unwrap();
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                fs::copy(&path, to.join(sub).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
}
