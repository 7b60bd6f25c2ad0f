//! A storage fault harness over real files: builds a multi-segment log (and
//! two snapshots) whose every operation was acknowledged under `fsync`,
//! then, case after case, damages a copy of it — flips a bit, zeroes a run
//! of bytes, truncates a file, at random offsets of random WAL segments and
//! snapshot files, one to three faults per case — and recovers it the way
//! opening a ledger does.
//!
//! The oracle, for every case: recovery either **refuses**, with an error
//! that names the damaged file and a byte offset, or **recovers a state
//! that contains every acknowledged record**: the accounts equal exactly
//! the state after the first `L` records of the undamaged log, where `L`
//! is the last LSN recovery reports, and `L` is every record there is —
//! with one exception. A truncation of the newest segment, or zeros that
//! run to its end, look exactly like what a crash leaves in the unsynced
//! end of the log (a torn write; a file extended with zeros), and the WAL's
//! recovery rule cuts them (see `src/wal/mod.rs`): there `L` may stop
//! before the first record the fault touched, never earlier. A damaged
//! snapshot must be skipped for an older one (or the log) or refused —
//! never loaded with wrong balances, which the exact comparison catches.
//! Recovery runs as `Ledger::open` runs it (`rebuild`, which cuts a torn
//! tail); every tenth recovered case also opens a ledger on the result.
//! Read-only recovery (`verify`) must reach the same verdict, and `inspect`
//! must report any tail recovery cuts.
//!
//! `cargo test` runs a few hundred cases from a fixed seed; set
//! `BURNLEDGER_FAULT_CASES=100000` for a long run and
//! `BURNLEDGER_FAULT_SEED=<n>` to replay one (the seed is printed).

#[path = "common/faults.rs"]
mod faults;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use burnledger::domain::account::AccountState;
use burnledger::domain::money::Currencies;
use burnledger::storage::recovery::{rebuild, snapshot_dir, RecoveryError};
use burnledger::storage::wal::{self, ReplayMode, WalError};
use burnledger::{AccountExport, Config, Ledger};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const CASES_DEFAULT: u64 = 200;
const SEED_DEFAULT: u64 = 0x0011_5EED;

type States = BTreeMap<u64, AccountState>;
/// Accounts as a ledger exports them, by id.
type Exports = BTreeMap<u64, AccountExport>;

/// What a ledger opened on `states` would export.
fn exports_of(states: &States) -> Exports {
    states
        .iter()
        .map(|(id, state)| (*id, AccountExport::of(state)))
        .collect()
}

fn currencies() -> Currencies {
    Currencies::new(&Config::default().currencies).unwrap()
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {text:?}")),
        Err(_) => default,
    }
}

/// The undamaged folder and what the test knows about it.
struct Pristine {
    dir: tempfile::TempDir,
    /// The last LSN: every record up to it was acknowledged.
    last_lsn: u64,
    /// The newest segment and where its records start and end.
    last_segment: PathBuf,
    last_first_lsn: u64,
    last_boundaries: Vec<usize>,
}

async fn build() -> Pristine {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(faults::config(dir.path())).unwrap();
    // The first snapshot early, so that no segment is ever compacted away
    // and the state after any prefix of the log can be rebuilt from it.
    let mut acknowledged = faults::write_acknowledged(&ledger, 1, 80).await;
    ledger.snapshot().await.unwrap().unwrap();
    acknowledged += faults::write_acknowledged(&ledger, 11, 80).await;
    ledger.snapshot().await.unwrap().unwrap();
    acknowledged += faults::write_acknowledged(&ledger, 9, 80).await;
    let mut known = ledger.export_accounts().await.unwrap();
    known.sort_by_key(|a| a.id);
    drop(ledger);

    let recovered = rebuild(
        dir.path(),
        &currencies(),
        ReplayMode::ReadOnly { until_lsn: None },
    )
    .unwrap();
    assert_eq!(
        recovered.report.last_lsn, acknowledged,
        "one record per operation"
    );
    let mut rebuilt: Vec<_> = recovered.accounts.values().map(AccountExport::of).collect();
    rebuilt.sort_by_key(|a| a.id);
    assert_eq!(
        rebuilt, known,
        "the undamaged folder holds what was acknowledged"
    );

    let segments = faults::segments(dir.path());
    assert!(segments.len() >= 5, "{} segments", segments.len());
    assert_eq!(faults::first_lsn(&segments[0]), 1, "nothing compacted");
    let last_segment = segments.last().unwrap().clone();
    let last_first_lsn = faults::first_lsn(&last_segment);
    let last_boundaries =
        faults::record_boundaries(&fs::read(&last_segment).unwrap(), last_first_lsn);
    Pristine {
        dir,
        last_lsn: acknowledged,
        last_segment,
        last_first_lsn,
        last_boundaries,
    }
}

/// The state after exactly the first `lsn` records of the undamaged log,
/// rebuilt from the log alone (no snapshot), cached.
fn state_at(pristine: &Pristine, cache: &mut HashMap<u64, States>, lsn: u64) -> States {
    cache
        .entry(lsn)
        .or_insert_with(|| {
            let scratch = tempfile::tempdir().unwrap();
            faults::copy_ledger(pristine.dir.path(), scratch.path());
            fs::remove_dir_all(snapshot_dir(scratch.path())).unwrap();
            for segment in faults::segments(scratch.path()) {
                let first = faults::first_lsn(&segment);
                if first > lsn {
                    fs::remove_file(&segment).unwrap();
                    continue;
                }
                let bytes = fs::read(&segment).unwrap();
                let ends = faults::record_boundaries(&bytes, first);
                let records = (lsn + 1 - first).min(ends.len() as u64 - 1);
                fs::write(&segment, &bytes[..ends[records as usize]]).unwrap();
            }
            let recovered = rebuild(scratch.path(), &currencies(), ReplayMode::Recover).unwrap();
            assert_eq!(recovered.report.last_lsn, lsn);
            recovered.accounts.into_iter().collect()
        })
        .clone()
}

#[derive(Debug)]
#[allow(dead_code)] // as `Applied`
enum Fault {
    Flip { at: usize, bit: u8 },
    Zero { at: usize, len: usize },
    Truncate { at: usize },
}

/// What a case did, for the failure message.
#[derive(Debug)]
// Read through `Debug` only, in failure messages.
#[allow(dead_code)]
struct Applied {
    file: PathBuf,
    fault: Fault,
}

/// Files a fault may hit: every segment and snapshot of `dir`.
fn targets(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut snapshots: Vec<_> = fs::read_dir(snapshot_dir(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    snapshots.sort();
    (faults::segments(dir), snapshots)
}

/// Damages one file of `dir`.
fn inject(rng: &mut SmallRng, dir: &Path, log: &mut Vec<Applied>) {
    let (segments, snapshots) = targets(dir);
    let file = match rng.random_range(0..10) {
        0..=2 => segments.last().unwrap().clone(),
        3..=6 => segments[rng.random_range(0..segments.len())].clone(),
        _ => snapshots[rng.random_range(0..snapshots.len())].clone(),
    };
    let mut bytes = fs::read(&file).unwrap();
    if bytes.is_empty() {
        return;
    }
    let at = rng.random_range(0..bytes.len());
    let fault = match rng.random_range(0..10) {
        0..=4 => Fault::Flip {
            at,
            bit: rng.random_range(0..8),
        },
        5..=7 => {
            let len = if rng.random_bool(0.3) {
                bytes.len() - at
            } else {
                rng.random_range(1..=64).min(bytes.len() - at)
            };
            Fault::Zero { at, len }
        }
        _ => Fault::Truncate { at },
    };
    match fault {
        Fault::Flip { at, bit } => bytes[at] ^= 1 << bit,
        Fault::Zero { at, len } => bytes[at..at + len].fill(0),
        Fault::Truncate { at } => bytes.truncate(at),
    }
    fs::write(&file, &bytes).unwrap();
    log.push(Applied { file, fault });
}

/// The first LSN whose loss the damage in `dir` permits (`u64::MAX` for
/// none). Only the newest segment may lose records, and only what a crash
/// could have taken: a crash leaves the original bytes up to some point,
/// then nothing (a cut) or zeros (a file extended with zeros). That point
/// is where the faults' crash-like end starts — the first changed byte in
/// the zeros at the end, or the end of a file that was cut — and the
/// record it falls in, with every one after it, may be lost. Any other
/// change must lie inside that record (lost anyway), or nothing may be.
fn permitted_loss_from(dir: &Path, pristine: &Pristine) -> u64 {
    let name = pristine.last_segment.file_name().unwrap();
    let now = fs::read(wal::wal_dir(dir).join(name)).unwrap();
    let before = fs::read(&pristine.last_segment).unwrap();
    let changed = |at: usize| now[at] != before[at];
    let zeros_from = now.len() - now.iter().rev().take_while(|&&b| b == 0).count();
    let crash_point = match (zeros_from..now.len()).find(|&at| changed(at)) {
        Some(at) => at,
        None if now.len() < before.len() => now.len(),
        // Nothing crash-like at the end.
        None => return u64::MAX,
    };
    let lost = pristine.last_boundaries[1..].partition_point(|&end| end <= crash_point);
    let lost_start = pristine.last_boundaries[lost];
    if (0..lost_start.min(now.len())).any(changed) {
        // Damage before it: no crash leaves that, nothing may be lost.
        return u64::MAX;
    }
    pristine.last_first_lsn + lost as u64
}

/// Every segment and snapshot of `dir`, with its bytes.
fn files_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let (segments, snapshots) = targets(dir);
    segments
        .into_iter()
        .chain(snapshots)
        .map(|path| {
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

/// Puts back every file whose content differs from `originals`, and
/// removes any a ledger opened on `dir` added.
fn restore(dir: &Path, originals: &[(PathBuf, Vec<u8>)]) {
    for (path, _) in files_of(dir) {
        if !originals.iter().any(|(original, _)| *original == path) {
            fs::remove_file(path).unwrap();
        }
    }
    for (path, bytes) in originals {
        if fs::read(path).ok().as_ref() != Some(bytes) {
            fs::write(path, bytes).unwrap();
        }
    }
}

/// Opens a ledger on `dir` (already recovered) and returns its accounts.
async fn opened_accounts(dir: &Path) -> Exports {
    let ledger = Ledger::open(faults::config(dir)).unwrap();
    let accounts = ledger.export_accounts().await.unwrap();
    ledger.shutdown().await;
    accounts.into_iter().map(|a| (a.id, a)).collect()
}

/// Whether `error` names a file of `dir` and a byte offset.
fn names_file_and_offset(error: &RecoveryError, dir: &Path) -> bool {
    match error {
        RecoveryError::Wal(WalError::Corrupt { path, .. }) => {
            path.starts_with(dir) && path.is_file() && error.to_string().contains(" at byte ")
        }
        _ => false,
    }
}

#[derive(Debug, Default)]
struct Tally {
    refused: u64,
    recovered_whole: u64,
    recovered_after_cut: u64,
    snapshot_fallbacks: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_flips_zeros_and_cuts_are_refused_or_lose_nothing_acknowledged() {
    let cases = env_u64("BURNLEDGER_FAULT_CASES", CASES_DEFAULT);
    let seed = env_u64("BURNLEDGER_FAULT_SEED", SEED_DEFAULT);
    println!("storage faults: {cases} cases, BURNLEDGER_FAULT_SEED={seed}");
    let pristine = build().await;
    let mut cache = HashMap::new();
    let mut tally = Tally::default();
    let mut rng = SmallRng::seed_from_u64(seed);
    // One copy, put back after each case: cheaper than a copy per case.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    faults::copy_ledger(pristine.dir.path(), dir);
    let originals = files_of(dir);
    for case in 0..cases {
        restore(dir, &originals);
        let mut applied = Vec::new();
        let faults_here = if rng.random_bool(0.6) {
            1
        } else {
            rng.random_range(2..=3)
        };
        for _ in 0..faults_here {
            inject(&mut rng, dir, &mut applied);
        }
        let lost_from = permitted_loss_from(dir, &pristine);
        let must_keep = pristine.last_lsn.min(lost_from.saturating_sub(1));
        let context = format!("case {case} (seed {seed}): {applied:?}");

        let inspected = wal::inspect(dir);
        let read_only = rebuild(dir, &currencies(), ReplayMode::ReadOnly { until_lsn: None });
        let recovered = rebuild(dir, &currencies(), ReplayMode::Recover);
        match (&read_only, recovered) {
            (Err(seen), Err(error)) => {
                assert!(
                    names_file_and_offset(&error, dir),
                    "{context}: refused with {error}"
                );
                assert_eq!(
                    seen.to_string(),
                    error.to_string(),
                    "{context}: verify differs"
                );
                tally.refused += 1;
            }
            (Ok(seen), Ok(recovered)) => {
                let report = &recovered.report;
                let lsn = report.last_lsn;
                assert!(
                    lsn >= must_keep,
                    "{context}: recovered up to LSN {lsn}, acknowledged up to {must_keep}"
                );
                assert!(lsn <= pristine.last_lsn, "{context}: LSN {lsn} invented");
                let got: States = recovered.accounts.into_iter().collect();
                assert!(
                    got == state_at(&pristine, &mut cache, lsn),
                    "{context}: the state recovered at LSN {lsn} is not the log's"
                );
                let verified: States = seen.accounts.clone().into_iter().collect();
                assert!(verified == got, "{context}: verify's state differs");
                if case % 10 == 0 {
                    // Now through the front door, on the recovered files.
                    let opened = opened_accounts(dir).await;
                    assert!(
                        opened == exports_of(&got),
                        "{context}: the opened ledger differs"
                    );
                }
                assert_eq!(seen.report.last_lsn, lsn, "{context}");
                assert_eq!(seen.report.truncated_segment, report.truncated_segment);
                if let Some(segment) = &report.truncated_segment {
                    let infos = inspected.as_ref().unwrap();
                    let info = infos.iter().find(|i| &i.path == segment).unwrap();
                    let problem = info.problem.as_deref().unwrap_or_default();
                    assert!(
                        problem.contains(&format!("torn tail at byte {}", report.truncated_at)),
                        "{context}: inspect says {problem:?}"
                    );
                    tally.recovered_after_cut += 1;
                } else if lsn == pristine.last_lsn {
                    tally.recovered_whole += 1;
                } else {
                    tally.recovered_after_cut += 1;
                }
                tally.snapshot_fallbacks += u64::from(!report.damaged_snapshots.is_empty());
            }
            (seen, recovered) => panic!(
                "{context}: verify says {:?}, recovery says {:?}",
                seen.as_ref()
                    .map(|r| r.report.last_lsn)
                    .map_err(|e| e.to_string()),
                recovered
                    .map(|r| r.report.last_lsn)
                    .map_err(|e| e.to_string())
            ),
        }
    }
    println!("storage faults: {tally:?}");
    if cases >= CASES_DEFAULT {
        // Each way out is taken, or the harness tests less than it says.
        assert!(tally.refused > 0 && tally.recovered_whole > 0, "{tally:?}");
        assert!(
            tally.recovered_after_cut > 0 && tally.snapshot_fallbacks > 0,
            "{tally:?}"
        );
    }
}
