//! `burnledger inspect` and `burnledger verify`: look at a data folder
//! without opening a ledger on it.

use std::path::PathBuf;

use burnledger::audit::audit;
use burnledger::config::parse_currencies;
use burnledger::money::Currencies;
use burnledger::recovery::{rebuild, snapshot_dir};
use burnledger::snapshot;
use burnledger::wal::{self, ReplayMode};
use clap::Args;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The ledger's data folder.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The ledger's data folder.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Currencies the ledger was configured with, as CODE:DECIMALS pairs.
    #[arg(long, default_value = "USD:2,EUR:2,BTC:8")]
    currencies: String,
}

/// Lists WAL segments and snapshots. Changes nothing.
pub fn inspect(args: InspectArgs) -> Result<bool, String> {
    let dir = &args.data_dir;
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
            Err(e) => format!("DAMAGED: {e}"),
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
/// violation or damage.
pub fn verify(args: VerifyArgs) -> Result<bool, String> {
    let currencies = Currencies::new(&parse_currencies(&args.currencies)?)?;
    let rebuilt = match rebuild(
        &args.data_dir,
        &currencies,
        ReplayMode::ReadOnly { until_lsn: None },
    ) {
        Ok(rebuilt) => rebuilt,
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
    if report.bytes_truncated > 0 {
        println!(
            "torn tail       {} bytes at the end of {} (recovery will cut them)",
            report.bytes_truncated,
            report
                .truncated_segment
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    let states: Vec<_> = rebuilt.accounts.into_values().collect();
    let mut checked = audit(&states);
    checked.add_payout_mismatches(burnledger::payouts::all_mismatches(
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
    Ok(clean)
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
