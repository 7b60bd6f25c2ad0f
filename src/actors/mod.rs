//! The actors: one per account, one coordinator per shard, one payout actor.

pub mod account;
pub mod coordinator;
pub mod payout;
pub mod round;
pub mod shard_log;
