//! `burnledger bank`: a `SimulatedBank` served over the payment-service
//! protocol (`burnledger::http::bank`), for a ledger in another process
//! (`serve --payment-service-url`) and for tests that must see what was
//! actually paid (`GET /payments`).
//!
//! Checks its flags (a bad one is a clear error and exit 2), binds, prints
//! `listening on http://ADDR` for each bound address on stdout (the first
//! line is the first address, so `--listen 127.0.0.1:0` can be read back),
//! and serves until SIGINT or SIGTERM. The bank lives in memory: a restart
//! forgets every payout and payment.

use std::time::Duration;

use burnledger::http::bank;
use burnledger::payment::{SimulatedBank, SimulatedBankConfig};
use clap::Args;

/// Largest simulated latency: a minute.
pub const LATENCY_MS_MAX: u64 = 60_000;

/// Most items a payout may be allowed.
pub const MAX_ITEMS_MAX: usize = 100_000;

#[derive(Args, Debug, Clone)]
pub struct BankArgs {
    /// Address to listen on (port 0 picks a free port; the address bound
    /// is printed).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// Per mille of items that fail (on submit, or when a pending item
    /// resolves).
    #[arg(long, default_value_t = 0)]
    item_failure_per_mille: u32,
    /// Per mille of submits that fail before the bank receives them
    /// (nothing paid; the answer is 503).
    #[arg(long, default_value_t = 0)]
    unknown_outcome_per_mille: u32,
    /// Per mille of submits carried out (items paid) whose answer is lost
    /// (the answer is 503).
    #[arg(long, default_value_t = 0)]
    lost_response_per_mille: u32,
    /// Per mille of items left pending until the next call about their
    /// payout.
    #[arg(long, default_value_t = 0)]
    pending_per_mille: u32,
    /// Per mille of paid items paid only in part (a random share of the
    /// amount; the report says `"amount"`).
    #[arg(long, default_value_t = 0)]
    partly_paid_per_mille: u32,
    /// Larger payouts are rejected (422).
    #[arg(long, default_value_t = 1000)]
    max_items_per_payout: usize,
    /// Seed of the fault dice: the same calls in the same order get the
    /// same answers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Delay of every payout call, in milliseconds (0 to 60000).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

/// The bank's configuration from the flags, every bound checked.
fn bank_config(args: &BankArgs) -> Result<SimulatedBankConfig, String> {
    for (flag, value) in [
        ("--item-failure-per-mille", args.item_failure_per_mille),
        (
            "--unknown-outcome-per-mille",
            args.unknown_outcome_per_mille,
        ),
        ("--lost-response-per-mille", args.lost_response_per_mille),
        ("--pending-per-mille", args.pending_per_mille),
        ("--partly-paid-per-mille", args.partly_paid_per_mille),
    ] {
        if value > 1000 {
            return Err(format!("{flag} {value}: expected 0 to 1000"));
        }
    }
    if !(1..=MAX_ITEMS_MAX).contains(&args.max_items_per_payout) {
        return Err(format!(
            "--max-items-per-payout {}: expected 1 to {MAX_ITEMS_MAX}",
            args.max_items_per_payout
        ));
    }
    if args.latency_ms > LATENCY_MS_MAX {
        return Err(format!(
            "--latency-ms {}: expected 0 to {LATENCY_MS_MAX}",
            args.latency_ms
        ));
    }
    Ok(SimulatedBankConfig {
        latency: Duration::from_millis(args.latency_ms),
        item_failure_per_mille: args.item_failure_per_mille,
        unknown_outcome_per_mille: args.unknown_outcome_per_mille,
        lost_response_per_mille: args.lost_response_per_mille,
        pending_per_mille: args.pending_per_mille,
        partly_paid_per_mille: args.partly_paid_per_mille,
        max_items_per_payout: args.max_items_per_payout,
        seed: args.seed,
    })
}

pub fn run(args: BankArgs) -> Result<bool, String> {
    let config = bank_config(&args)?;
    tracing::info!(?config, "simulated bank");
    let bank = SimulatedBank::new(config);
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let bound = bank::bind(bank.clone(), &args.listen, true)
            .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
        crate::serve::print_listening(&bound.addrs);
        let served = bound.server.await;
        tracing::info!(
            payments = bank.payments().len(),
            "the simulated bank stopped"
        );
        served
            .map(|()| true)
            .map_err(|error| format!("server error: {error}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bank: BankArgs,
    }

    fn config(flags: &[&str]) -> Result<SimulatedBankConfig, String> {
        let cli = Cli::try_parse_from(std::iter::once("bank").chain(flags.iter().copied()))
            .map_err(|e| e.to_string())?;
        bank_config(&cli.bank)
    }

    #[test]
    fn faults_come_from_flags_within_their_bounds() {
        assert_eq!(config(&[]), Ok(SimulatedBankConfig::default()));
        let faulty = config(&[
            "--item-failure-per-mille=1",
            "--unknown-outcome-per-mille=2",
            "--lost-response-per-mille=3",
            "--pending-per-mille=1000",
            "--partly-paid-per-mille=4",
            "--max-items-per-payout=5",
            "--seed=9",
            "--latency-ms=7",
        ]);
        let expected = SimulatedBankConfig {
            latency: Duration::from_millis(7),
            item_failure_per_mille: 1,
            unknown_outcome_per_mille: 2,
            lost_response_per_mille: 3,
            pending_per_mille: 1000,
            partly_paid_per_mille: 4,
            max_items_per_payout: 5,
            seed: 9,
        };
        assert_eq!(faulty, Ok(expected));
        for bad in [
            "--item-failure-per-mille=1001",
            "--pending-per-mille=-1",
            "--max-items-per-payout=0",
            "--latency-ms=60001",
            "--seed=x",
        ] {
            assert!(config(&[bad]).is_err(), "{bad}");
        }
    }
}
