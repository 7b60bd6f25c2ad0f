//! The running engine (actix): one actor per account, one coordinator per
//! shard, the payout actor, their messages. Private to the crate: only the
//! [`Ledger`](crate::Ledger) handle reaches it.

pub(crate) mod account;
pub(crate) mod coordinator;
pub(crate) mod messages;
pub(crate) mod payout;
pub(crate) mod round;
pub(crate) mod shard_log;
