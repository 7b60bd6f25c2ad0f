//! Helpers shared by the property tests: proptest settings, the ledger's
//! configuration, the runtime, and money conversions.
//!
//! Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::str::FromStr;

use burnledger::config::{PayoutMode, SharedPaymentService};
use burnledger::payment::SimulatedBank;
use burnledger::{Config, CurrencyConfig, Decimal};
use proptest::strategy::Strategy;
use proptest::test_runner::{
    Config as ProptestConfig, FileFailurePersistence, TestCaseError, TestError, TestRunner,
};

/// Proptest settings: `default_cases` unless `PROPTEST_CASES` says
/// otherwise; failing seeds land next to the test file as
/// `proptests/<file>.proptest-regressions` and are replayed first.
pub fn proptest_config(default_cases: u32, source_file: &'static str) -> ProptestConfig {
    let from_env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    ProptestConfig {
        cases: from_env("PROPTEST_CASES").unwrap_or(default_cases),
        max_shrink_iters: from_env("PROPTEST_MAX_SHRINK_ITERS").unwrap_or(1024),
        // Shrinking re-runs the engine: bound it in wall-clock time too.
        max_shrink_time: from_env("PROPTEST_MAX_SHRINK_TIME").unwrap_or(240_000),
        source_file: Some(source_file),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// Runs `test` on values of `strategy` like `proptest!` does, for tests
/// that drive the engine through a runtime built once outside the cases.
pub fn check<S: Strategy>(
    name: &str,
    config: ProptestConfig,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(config);
    match runner.run(&strategy, test) {
        Ok(()) => {}
        Err(TestError::Fail(reason, minimal)) => {
            panic!("{name} failed: {reason}\nminimal failing input: {minimal:?}")
        }
        Err(TestError::Abort(reason)) => panic!("{name} aborted: {reason}"),
    }
}

/// The runtime the tests call the ledger from (the engine runs on its own
/// threads whatever the caller uses).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// USD with 2 decimals and BTC with 8; nothing else is configured.
pub fn currencies() -> Vec<CurrencyConfig> {
    vec![CurrencyConfig::new("USD", 2), CurrencyConfig::new("BTC", 8)]
}

/// A durable test ledger in `dir`: small limits, `fsync`, two shards,
/// `pending_max` pending withdrawals per account, and, with a bank,
/// batched payouts whose interval never fires during a test (they run
/// only when a test calls `run_payouts_now`).
pub fn ledger_config(dir: &Path, pending_max: u32, bank: Option<&SimulatedBank>) -> Config {
    Config {
        currencies: currencies(),
        account_pending_withdrawals_max: pending_max,
        payout_mode: PayoutMode::Batched {
            interval_secs: 86_400,
        },
        payment_service: bank.map(|b| SharedPaymentService::new(b.clone())),
        ..Config::for_tests_in(dir)
    }
}

/// `units` minor units of a currency with `decimals` places, as a Decimal.
pub fn to_decimal(units: i128, decimals: u32) -> Decimal {
    Decimal::from_i128_with_scale(units, decimals)
}

/// A Decimal as minor units of a currency with `decimals` places; `None`
/// if it has more places than that.
pub fn to_units(amount: Decimal, decimals: u32) -> Option<i128> {
    let mut exact = amount.normalize();
    if exact.scale() > decimals {
        return None;
    }
    exact.rescale(decimals);
    Some(exact.mantissa())
}

pub fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("a decimal literal")
}
