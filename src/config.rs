//! Configuration and limits, with documented defaults.
//!
//! Every queue, batch and count the engine keeps has a limit here, with its
//! unit in the name. [`Config::for_tests`] makes them small so tests reach
//! the edges.

use crate::money::CurrencyConfig;

/// How the engine is set up when it opens.
#[derive(Clone, Debug)]
pub struct Config {
    /// Currencies the ledger accepts. Default: USD 2, EUR 2, BTC 8.
    pub currencies: Vec<CurrencyConfig>,
    /// Shards, each an actix Arbiter (one thread) with its own coordinator.
    /// Default: the number of cores.
    pub shards: usize,
    /// Operations admitted into one shard at once; past it, new operations
    /// are refused with `overloaded` instead of queued without limit.
    /// Default: 262,144.
    pub shard_in_flight_ops_max: usize,
    /// Pending withdrawals one account may hold at once. Default: 1,000.
    pub account_pending_withdrawals_max: u32,
    /// Operations accepted in one `submit` call. Default: 65,536.
    pub batch_ops_max: usize,
}

/// Default for [`Config::shard_in_flight_ops_max`].
pub const SHARD_IN_FLIGHT_OPS_MAX_DEFAULT: usize = 262_144;
/// Default for [`Config::account_pending_withdrawals_max`].
pub const ACCOUNT_PENDING_WITHDRAWALS_MAX_DEFAULT: u32 = 1_000;
/// Default for [`Config::batch_ops_max`].
pub const BATCH_OPS_MAX_DEFAULT: usize = 65_536;

impl Default for Config {
    fn default() -> Self {
        Self {
            currencies: vec![
                CurrencyConfig::new("USD", 2),
                CurrencyConfig::new("EUR", 2),
                CurrencyConfig::new("BTC", 8),
            ],
            shards: std::thread::available_parallelism().map_or(2, |n| n.get()),
            shard_in_flight_ops_max: SHARD_IN_FLIGHT_OPS_MAX_DEFAULT,
            account_pending_withdrawals_max: ACCOUNT_PENDING_WITHDRAWALS_MAX_DEFAULT,
            batch_ops_max: BATCH_OPS_MAX_DEFAULT,
        }
    }
}

impl Config {
    /// Small limits, two shards: for tests that must reach every edge.
    pub fn for_tests() -> Self {
        Self {
            shards: 2,
            shard_in_flight_ops_max: 4_096,
            account_pending_withdrawals_max: 8,
            batch_ops_max: 1_024,
            ..Self::default()
        }
    }

    /// Checks the numbers make sense; the message says which does not.
    pub fn validate(&self) -> Result<(), String> {
        if self.shards == 0 {
            return Err("shards must be at least 1".into());
        }
        if self.shard_in_flight_ops_max == 0 {
            return Err("shard_in_flight_ops_max must be at least 1".into());
        }
        if self.batch_ops_max == 0 {
            return Err("batch_ops_max must be at least 1".into());
        }
        if self.currencies.is_empty() {
            return Err("at least one currency must be configured".into());
        }
        Ok(())
    }
}
