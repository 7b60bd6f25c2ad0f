//! `burnledger inspect` and `burnledger verify`: look at a data folder
//! without opening a ledger on it, and change nothing. The reading and
//! judging is the library's read-only storage API
//! ([`burnledger::storage::inspect`]); this module prints what it reports
//! and maps it to exit codes.
//!
//! Both judge a folder by the rules opening a ledger applies (the WAL's
//! recovery rule, snapshot fallback) and say the same thing about the same
//! damage: a torn WAL tail is reported with its file and byte offset, a
//! corrupt record likewise. Their exit codes ([`EXIT_CODES`]):
//! - 0: clean — opening the ledger would cut, skip and refuse nothing
//!   (and, for `verify`, every invariant holds);
//! - 1: problems found — a corrupt or missing WAL record, a torn tail that
//!   opening would cut, a damaged snapshot, or (`verify`) a state that does
//!   not rebuild or breaks an invariant, or a history store that does not
//!   list what the log says happened (or cannot be read), or (`verify
//!   --chain`) a break in the hash chain;
//! - 2: could not run — the folder is missing, holds no ledger (no
//!   currency table, WAL segment or snapshot), could not be read, or (`verify`)
//!   is in use by a running ledger.
//!
//! Beside a running ledger: both take the folder's lock *shared*, so no
//! ledger opens while they read. `verify` refuses a folder a ledger holds
//! (exit 2, naming its pid): it judges a folder at rest, and a live log's
//! last batch may be half-written. `inspect` lists it anyway, saying
//! plainly at the top that it is in use and that the newest segment's tail
//! may be a write in progress.
//!
//! `verify --chain` also checks the log's hash chain (format v6) over every
//! archived (`--archive-dir`) and kept segment and the snapshots' stored
//! heads ([`burnledger::storage::wal::verify_chain`]): it names the first
//! record that breaks it and exits 1, or prints the head and how many
//! records it checked.
//!
//! `verify` reads amounts at the scale the folder's currency table
//! (`<data-dir>/CURRENCIES`) recorded; `--currencies`, if given, must agree
//! with it as opening a ledger would require.

use std::path::{Path, PathBuf};

use burnledger::config::parse_currencies;
use burnledger::storage::inspect::{
    FolderReport, HistoryCheck, ReadOnlyFolder, RecoveryReport, SegmentInfo, VerifyReport,
};
use burnledger::storage::wal as chain;
use clap::Args;

/// The exit codes of `inspect` and `verify`, shown in their help.
pub const EXIT_CODES: &str = "Exit codes: 0 = clean; 1 = problems found (a corrupt or missing \
WAL record, a torn tail that opening the ledger would cut, a damaged snapshot, or for verify a \
broken invariant or payout mismatch, a history store that disagrees with the log, or with --chain a \
break in the log's hash chain); 2 = could not run (no such folder, no ledger in it, it \
cannot be read, or for verify it is in use by a running ledger).";

#[derive(Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct InspectArgs {
    /// The ledger's data folder.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
}

#[derive(Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct VerifyArgs {
    /// The ledger's data folder.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Currencies the ledger is configured with, as CODE:DECIMALS pairs:
    /// checked against the folder's currency table as an open would. By
    /// default the table's own (or, for a folder from before tables,
    /// USD:2,EUR:2,BTC:8).
    #[arg(long)]
    currencies: Option<String>,
    /// Also check the log's hash chain: every record against the hash its
    /// successor records, over the archived and the kept segments, and
    /// each snapshot's stored head.
    #[arg(long)]
    chain: bool,
    /// The folder `serve --archive-dir` moved retired segments to; read
    /// before the kept ones by --chain.
    #[arg(long, requires = "chain")]
    archive_dir: Option<PathBuf>,
}

/// Lists WAL segments and snapshots. Changes nothing. `Ok(false)` when a
/// segment or snapshot has a problem (see the module's exit codes).
pub fn inspect(args: InspectArgs) -> Result<bool, String> {
    let dir = &args.data_dir;
    let folder = ReadOnlyFolder::beside_ledger(dir).map_err(|e| e.to_string())?;
    let report = folder.inspect().map_err(|e| e.to_string())?;
    if let Some(pid) = report.in_use {
        let holder = pid.map_or("a running ledger".to_string(), |p| format!("pid {p}"));
        println!(
            "IN USE: {} is held by {holder}; listed read-only while it runs (the newest \
             segment's tail may be a write in progress)",
            dir.display()
        );
    }
    print_segments(&report);
    print_snapshots(&report);
    Ok(report.is_healthy())
}

fn print_segments(report: &FolderReport) {
    println!("WAL segments in {}:", report.wal_dir.display());
    if report.segments.is_empty() {
        println!("  (none)");
    }
    let (mut records, mut bytes) = (0u64, 0u64);
    for segment in &report.segments {
        records += segment.records;
        bytes += segment.bytes;
        let range = match segment.last_lsn {
            Some(last) => format!("LSN {}..={last}", segment.first_lsn),
            None => format!("LSN {} (empty)", segment.first_lsn),
        };
        println!(
            "  {}  {range}  {} records  {} bytes{}{}",
            file_name(&segment.path),
            segment.records,
            segment.bytes,
            segment_times(segment),
            segment
                .problem
                .as_ref()
                .map(|p| format!("  PROBLEM: {p}"))
                .unwrap_or_default()
        );
    }
    println!(
        "  total: {} segments, {records} records, {bytes} bytes",
        report.segments.len()
    );
}

/// A segment's time range, and how many of its records have no time.
fn segment_times(segment: &SegmentInfo) -> String {
    let range = segment
        .times
        .map(|(first, last)| format!("  times {first}..={last}"))
        .unwrap_or_default();
    match segment.untimed_records {
        0 => range,
        n => format!("{range}  {n} records without a time (written before format v4)"),
    }
}

fn print_snapshots(report: &FolderReport) {
    println!("snapshots in {}:", report.snapshot_dir.display());
    if report.snapshots.is_empty() {
        println!("  (none)");
    }
    for check in &report.snapshots {
        let verdict = match &check.accounts {
            Ok(accounts) => format!("valid, {accounts} accounts"),
            Err(e) => format!("DAMAGED: {e}"),
        };
        println!(
            "  {}  LSN {}  {} bytes  {verdict}",
            file_name(&check.file.path),
            check.file.lsn,
            check.file.bytes
        );
    }
}

/// Recovers read-only and checks the invariants (and, with `--chain`, the
/// hash chain); `Ok(false)` on any violation or damage, a torn tail
/// included (see the module's exit codes).
pub fn verify(args: VerifyArgs) -> Result<bool, String> {
    // Held until verify ends: no ledger opens on the folder meanwhile.
    let folder = ReadOnlyFolder::at_rest(&args.data_dir).map_err(|e| e.to_string())?;
    let state = verify_state(&folder, &args)?;
    let chain = !args.chain || verify_chain(&args)?;
    let verdict = if state && chain {
        "clean"
    } else {
        "PROBLEMS FOUND"
    };
    println!("result          {verdict}");
    Ok(state && chain)
}

/// Checks the hash chain and prints what it found; `Ok(false)` on a break.
fn verify_chain(args: &VerifyArgs) -> Result<bool, String> {
    let archive = args.archive_dir.as_deref();
    let report = chain::verify_chain(&args.data_dir, archive).map_err(|e| e.to_string())?;
    let range = match report.first_lsn {
        Some(first) => format!("LSN {first}..={}", report.head.lsn),
        None => "no records".to_owned(),
    };
    println!(
        "chain           {} records checked in {} segments ({range}), {} snapshot heads",
        report.records, report.segments, report.snapshots_checked
    );
    match (report.first_lsn, report.chained_from) {
        (_, None) => println!("chain start     no chained record (all predate format v6)"),
        (Some(first), Some(from)) if from > first => println!(
            "chain start     LSN {from} (LSN {first}..={} predate format v6: not chained)",
            from - 1
        ),
        (_, Some(from)) => println!("chain start     LSN {from}"),
    }
    println!(
        "chain head      LSN {} hash {}",
        report.head.lsn,
        report.head.hash_hex()
    );
    match &report.problem {
        None => println!("chain           ok"),
        Some(problem) => println!("chain           BROKEN: {problem}"),
    }
    Ok(report.problem.is_none())
}

/// The read-only recovery and audit, printed; `Ok(false)` on a problem.
fn verify_state(folder: &ReadOnlyFolder, args: &VerifyArgs) -> Result<bool, String> {
    /// What a folder from before currency tables was written with.
    const WITHOUT_TABLE: &str = "USD:2,EUR:2,BTC:8";
    let configured = args.currencies.as_deref();
    let configured = configured.map(parse_currencies).transpose()?;
    let without_table = parse_currencies(WITHOUT_TABLE)?;
    let report = folder
        .verify(configured.as_deref(), &without_table)
        .map_err(|e| e.to_string())?;
    let (recovery, audit, history) = match &report {
        VerifyReport::Unrecoverable { reason } => {
            println!("verify: FAILED: {reason}");
            return Ok(false);
        }
        VerifyReport::Rebuilt(rebuilt) => (&rebuilt.recovery, &rebuilt.audit, &rebuilt.history),
    };
    print_recovery(recovery);
    println!("accounts        {}", audit.accounts);
    println!("withdrawals     {:?}", audit.withdrawals_by_status);
    for (code, (currency, sums)) in &audit.totals {
        println!(
            "  {code:<4} total {} = deposits {} − completed withdrawals {}",
            currency.to_decimal(sums.total()),
            currency.to_decimal(sums.deposited),
            currency.to_decimal(sums.burned)
        );
    }
    println!("elapsed         {:.3} s", recovery.elapsed.as_secs_f64());
    for violation in audit.violations.iter().take(20) {
        println!("violation: {violation}");
    }
    let invariants = if audit.is_clean() { "ok" } else { "FAILED" };
    println!("invariants      {invariants}");
    print_history(history);
    Ok(report.is_clean())
}

fn print_history(history: &HistoryCheck) {
    match history {
        HistoryCheck::Missing => {
            println!("history         none (the next open rebuilds it from what the log holds)")
        }
        HistoryCheck::Unreadable { reason } => println!("history         FAILED: {reason}"),
        HistoryCheck::Checked {
            rows_checked,
            mismatches,
            mismatch_count,
        } => {
            for mismatch in mismatches {
                println!("history mismatch: {mismatch}");
            }
            let verdict = if *mismatch_count == 0 {
                "ok".to_string()
            } else {
                format!("FAILED: {mismatch_count} rows differ from the log")
            };
            println!("history         {rows_checked} rows checked against the log: {verdict}");
        }
    }
}

fn print_recovery(report: &RecoveryReport) {
    match &report.snapshot {
        Some(s) => println!("snapshot        {} (LSN {})", s.path.display(), s.lsn),
        None => println!("snapshot        none"),
    }
    for (path, reason) in &report.damaged_snapshots {
        println!("skipped         {} is damaged: {reason}", path.display());
    }
    println!(
        "wal             {} records replayed, last LSN {}",
        report.records_replayed, report.last_lsn
    );
    if let Some(at) = report.newest_event_at.known() {
        println!("newest event    at {at} (of those replayed)");
    }
    if let Some(segment) = &report.truncated_segment {
        println!(
            "torn tail       {} bytes after byte {} of {} (opening the ledger will cut them)",
            report.bytes_truncated,
            report.truncated_at,
            segment.display()
        );
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
