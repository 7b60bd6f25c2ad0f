//! `burnledger inspect` and `burnledger verify`: look at a data folder
//! without opening a ledger on it, and change nothing.
//!
//! Both judge a folder by the rules opening a ledger applies (the WAL's
//! recovery rule, snapshot fallback) and say the same thing about the same
//! damage: a torn WAL tail is reported with its file and byte offset, a
//! corrupt record likewise. Their exit codes ([`EXIT_CODES`]):
//! - 0: clean — opening the ledger would cut, skip and refuse nothing
//!   (and, for `verify`, every invariant holds);
//! - 1: problems found — a corrupt or missing WAL record, a torn tail that
//!   opening would cut, a damaged snapshot, or (`verify`) a state that does
//!   not rebuild or breaks an invariant;
//! - 2: could not run — the folder is missing, holds no ledger (no
//!   currency table, WAL segment or snapshot), could not be read, or (`verify`)
//!   is in use by a running ledger.
//!
//! Beside a running ledger: both take the folder's lock *shared*
//! ([`DataDirLock::shared`]), so no ledger opens while they read. `verify`
//! refuses a folder a ledger holds (exit 2, naming its pid): it judges a
//! folder at rest, and a live log's last batch may be half-written.
//! `inspect` lists it anyway, saying plainly at the top that it is in use
//! and that the newest segment's tail may be a write in progress.
//!
//! `verify` reads amounts at the scale the folder's currency table
//! (`<data-dir>/CURRENCIES`) recorded; `--currencies`, if given, must agree
//! with it as opening a ledger would require.

use std::path::{Path, PathBuf};

use burnledger::config::parse_currencies;
use burnledger::domain::audit::audit;
use burnledger::domain::money::Currencies;
use burnledger::storage::data_dir::{CurrencyTable, DataDirLock, LockError};
use burnledger::storage::recovery::{rebuild, snapshot_dir, RecoveryError};
use burnledger::storage::snapshot::{self, SnapshotError};
use burnledger::storage::wal::{self, ReplayMode, WalError};
use clap::Args;

/// The exit codes of `inspect` and `verify`, shown in their help.
pub const EXIT_CODES: &str = "Exit codes: 0 = clean; 1 = problems found (a corrupt or missing \
WAL record, a torn tail that opening the ledger would cut, a damaged snapshot, or for verify a \
broken invariant or payout mismatch); 2 = could not run (no such folder, no ledger in it, it \
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
}

/// Refuses a folder that does not exist or holds no ledger: "nothing
/// wrong" must never be said of a mistyped path.
fn ledger_folder(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a folder", dir.display())),
        Err(error) => {
            return Err(format!(
                "cannot read data folder {}: {error}",
                dir.display()
            ))
        }
    }
    let holds = burnledger::storage::data_dir::holds_ledger(dir)
        .map_err(|e| format!("cannot read data folder {}: {e}", dir.display()))?;
    if !holds {
        return Err(format!(
            "{} holds no ledger (no currency table, WAL segment or snapshot)",
            dir.display()
        ));
    }
    Ok(())
}

/// Lists WAL segments and snapshots. Changes nothing. `Ok(false)` when a
/// segment or snapshot has a problem (see the module's exit codes).
pub fn inspect(args: InspectArgs) -> Result<bool, String> {
    let dir = &args.data_dir;
    ledger_folder(dir)?;
    let _reading = match DataDirLock::shared(dir) {
        Ok(lock) => lock,
        Err(LockError::InUse { pid, .. }) => {
            let holder = pid.map_or("a running ledger".to_string(), |p| format!("pid {p}"));
            println!(
                "IN USE: {} is held by {holder}; listed read-only while it runs (the newest \
                 segment's tail may be a write in progress)",
                dir.display()
            );
            None
        }
        Err(error) => return Err(error.to_string()),
    };
    let segments = wal::inspect(dir).map_err(|e| e.to_string())?;
    let mut healthy = true;
    println!("WAL segments in {}:", wal::wal_dir(dir).display());
    if segments.is_empty() {
        println!("  (none)");
    }
    let (mut records, mut bytes) = (0u64, 0u64);
    for segment in &segments {
        records += segment.records;
        bytes += segment.bytes;
        let range = match segment.last_lsn {
            Some(last) => format!("LSN {}..={last}", segment.first_lsn),
            None => format!("LSN {} (empty)", segment.first_lsn),
        };
        println!(
            "  {}  {range}  {} records  {} bytes{}",
            file_name(&segment.path),
            segment.records,
            segment.bytes,
            segment
                .problem
                .as_ref()
                .map(|p| format!("  PROBLEM: {p}"))
                .unwrap_or_default()
        );
        healthy &= segment.problem.is_none();
    }
    println!(
        "  total: {} segments, {records} records, {bytes} bytes",
        segments.len()
    );

    let snapshots = snapshot::list(&snapshot_dir(dir)).map_err(|e| e.to_string())?;
    println!("snapshots in {}:", snapshot_dir(dir).display());
    if snapshots.is_empty() {
        println!("  (none)");
    }
    for file in &snapshots {
        let verdict = match snapshot::read(&file.path) {
            Ok((_, accounts)) => format!("valid, {} accounts", accounts.len()),
            Err(e) => {
                healthy = false;
                format!("DAMAGED: {e}")
            }
        };
        println!(
            "  {}  LSN {}  {} bytes  {verdict}",
            file_name(&file.path),
            file.lsn,
            file.bytes
        );
    }
    Ok(healthy)
}

/// Recovers read-only and checks the invariants; `Ok(false)` on any
/// violation or damage, a torn tail included (see the module's exit codes).
pub fn verify(args: VerifyArgs) -> Result<bool, String> {
    ledger_folder(&args.data_dir)?;
    // Held until verify ends: no ledger opens on the folder meanwhile.
    let _reading = DataDirLock::shared(&args.data_dir).map_err(|error| match error {
        LockError::InUse { .. } => format!(
            "{error}; verify judges a folder at rest: stop the ledger first, or verify a copy"
        ),
        other => other.to_string(),
    })?;
    let currencies = verify_registry(&args.data_dir, args.currencies.as_deref())?;
    let rebuilt = match rebuild(
        &args.data_dir,
        &currencies,
        ReplayMode::ReadOnly { until_lsn: None },
    ) {
        Ok(rebuilt) => rebuilt,
        // Reading failed: nothing was judged.
        Err(
            error @ (RecoveryError::Wal(WalError::Io { .. })
            | RecoveryError::Snapshot(SnapshotError::Io { .. })),
        ) => return Err(error.to_string()),
        Err(error) => {
            println!("verify: FAILED: {error}");
            return Ok(false);
        }
    };
    let report = &rebuilt.report;
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
    if let Some(segment) = &report.truncated_segment {
        println!(
            "torn tail       {} bytes after byte {} of {} (opening the ledger will cut them)",
            report.bytes_truncated,
            report.truncated_at,
            segment.display()
        );
    }
    let states: Vec<_> = rebuilt.accounts.into_values().collect();
    let mut checked = audit(&states);
    checked.add_payout_mismatches(burnledger::domain::payouts::all_mismatches(
        rebuilt.payouts.values(),
    ));
    println!("accounts        {}", checked.accounts);
    println!("withdrawals     {:?}", checked.withdrawals_by_status);
    for (code, (currency, sums)) in &checked.totals {
        println!(
            "  {code:<4} total {} = deposits {} − completed withdrawals {}",
            currency.to_decimal(sums.total()),
            currency.to_decimal(sums.deposited),
            currency.to_decimal(sums.burned)
        );
    }
    println!("elapsed         {:.3} s", report.elapsed.as_secs_f64());
    for violation in checked.violations.iter().take(20) {
        println!("violation: {violation}");
    }
    let clean = checked.is_clean();
    println!("invariants      {}", if clean { "ok" } else { "FAILED" });
    let sound = report.truncated_segment.is_none() && report.damaged_snapshots.is_empty();
    let verdict = if clean && sound {
        "clean"
    } else {
        "PROBLEMS FOUND"
    };
    println!("result          {verdict}");
    Ok(clean && sound)
}

/// The currencies `verify` reads the folder with: its table's, checked
/// against `--currencies` when given (a changed scale is refused, as an
/// open would refuse it).
fn verify_registry(dir: &Path, configured: Option<&str>) -> Result<Currencies, String> {
    const LEGACY_DEFAULT: &str = "USD:2,EUR:2,BTC:8";
    let table = CurrencyTable::read(dir).map_err(|e| e.to_string())?;
    let Some(table) = table else {
        return Currencies::new(&parse_currencies(configured.unwrap_or(LEGACY_DEFAULT))?);
    };
    if let Some(configured) = configured {
        let configs = parse_currencies(configured)?;
        let registry = Currencies::new(&configs)?;
        let (merged, _) =
            CurrencyTable::reconcile(Some(&table), &registry).map_err(|e| e.to_string())?;
        return merged.registry();
    }
    table.registry()
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
