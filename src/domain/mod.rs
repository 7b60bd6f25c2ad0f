//! The ledger's model, pure: no actix, no tokio, no file or network I/O.
//! Everything here is plain data and the rules over it, so it can be read,
//! tested and benchmarked alone; the engine runs it, storage encodes it.

pub mod account;
pub mod audit;
pub mod details;
pub mod event;
pub mod export;
pub mod feed;
pub mod gauges;
pub mod history;
pub mod ids;
pub mod kept_extras;
pub mod money;
pub mod payouts;
pub mod policy;
pub mod receipts;
pub mod time;
pub mod withdrawal;
