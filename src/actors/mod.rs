//! The actors: one per account, one coordinator per shard.

pub mod account;
pub mod coordinator;
