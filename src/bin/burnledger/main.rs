//! The `burnledger` command: runs the engine on embedded defaults
//! (`simulate`), looks at data folders (`inspect`, `verify`), serves HTTP
//! (`serve`), serves a simulated bank over the payment-service protocol
//! (`bank`), drives load (`bench`) and follows a server's event feed as a
//! named consumer (`consume`, hidden).
//!
//! Uses only the public API, like any embedder. It installs the process's
//! allocator (mimalloc) and its `tracing` subscriber: logs to stderr,
//! filtered by `RUST_LOG`, whose write failures (a closed stderr, a full
//! disk) are dropped rather than turned into a panic.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(feature = "http")]
mod bank;
mod bench;
#[cfg(feature = "http")]
mod consume;
#[cfg(feature = "http")]
mod http_bench;
#[cfg(feature = "http")]
mod replicate;
#[cfg(feature = "http")]
mod serve;
mod simulate;
mod storage;
#[cfg(feature = "http")]
mod withdrawal_flags;

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
    Serve(Box<serve::ServeArgs>),
    /// Serve a simulated bank (faults as flags) over the payment-service
    /// protocol, for `serve --payment-service-url`.
    #[cfg(feature = "http")]
    Bank(bank::BankArgs),
    /// Ask a standby (`serve --replicate --standby`) to take over as the
    /// writer: POST /v1/admin/promote.
    #[cfg(feature = "http")]
    Promote(replicate::PromoteArgs),
    /// Load harness: runs a workload on an embedded ledger and reports ops/s,
    /// latency, peak RSS and a plain-HashMap baseline; with `--http URL` it
    /// drives a running server instead. (Also `http-bench`.)
    #[command(alias = "http-bench")]
    Bench(Box<bench::BenchArgs>),
    /// Follow a server's event stream as a named consumer, appending
    /// `<lsn> <type>` lines to a file (a reference consumer; hidden).
    #[cfg(feature = "http")]
    #[command(hide = true)]
    Consume(consume::ConsumeArgs),
}

/// Logs (the library's `tracing` events, and the binary's) go to stderr,
/// filtered by `RUST_LOG` (default `info`, actix-server's at `warn`). A write that fails (stderr
/// closed, a full disk behind it) loses the line and nothing else:
/// `log_internal_errors(false)` keeps the subscriber from reporting it with
/// `eprintln!`, which would panic on the same closed stream.
fn install_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,actix_server=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .log_internal_errors(false)
        .try_init();
}

/// Writes a line to stderr; a failed write is ignored (see
/// [`install_logging`]).
fn report(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "burnledger: {message}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            report(format_args!("cannot start the async runtime: {error}"));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Simulate(args) => runtime.block_on(simulate::run(args)),
        Command::Inspect(args) => storage::inspect(args),
        Command::Verify(args) => storage::verify(args),
        #[cfg(feature = "http")]
        Command::Serve(args) => serve::run(*args),
        #[cfg(feature = "http")]
        Command::Bank(args) => bank::run(args),
        #[cfg(feature = "http")]
        Command::Promote(args) => replicate::promote(args),
        Command::Bench(args) => bench::run(*args, &runtime),
        #[cfg(feature = "http")]
        Command::Consume(args) => consume::run(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            report(format_args!("{error}"));
            ExitCode::from(2)
        }
    }
}
