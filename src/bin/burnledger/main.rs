//! The `burnledger` command: runs the engine on embedded defaults.
//!
//! Uses only the public `Ledger` handle, like any embedder.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
#[cfg(feature = "http")]
mod http_bench;
#[cfg(feature = "http")]
mod serve;
mod simulate;
mod storage;

// The binary picks its allocator (the library leaves that to its embedder):
// glibc malloc was ~40 % of the engine's profile on the actor hot path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "burnledger",
    version,
    about = "Embedded ledger engine for withdrawals with a pending burn"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole withdrawal flow on embedded defaults and check the invariants.
    Simulate(simulate::SimulateArgs),
    /// List a data folder's WAL segments and snapshots.
    Inspect(storage::InspectArgs),
    /// Recover a data folder read-only and check the invariants.
    Verify(storage::VerifyArgs),
    /// Serve the ledger's HTTP API (JSON over actix-web).
    #[cfg(feature = "http")]
    Serve(serve::ServeArgs),
    /// Load harness: runs a workload on an embedded ledger and reports ops/s,
    /// latency, peak RSS and a plain-HashMap baseline; with `--http URL` it
    /// drives a running server instead. (Also `http-bench`.)
    #[command(alias = "http-bench")]
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("burnledger: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Simulate(args) => runtime.block_on(simulate::run(args)),
        Command::Inspect(args) => storage::inspect(args),
        Command::Verify(args) => storage::verify(args),
        #[cfg(feature = "http")]
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::run(args, &runtime),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("burnledger: {error}");
            ExitCode::from(2)
        }
    }
}
