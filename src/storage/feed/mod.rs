//! The feed: the log's events become the history store's rows, off the
//! hot path. The log is the source; the store follows it.
//!
//! - `derive.rs` — the only place a logged event becomes history
//!   [`Change`](crate::storage::history::Change)s: applied to a copy of the
//!   state, read back as full rows.
//! - `writer.rs` — the history writer thread (ingest of what it held for a
//!   short window, its applied LSN and per-shard horizons) and the
//!   [`Feeder`] its producer holds.
//!
//! Who feeds: at open, recovery's replay derives the events the store
//! lacks (after its watermark); then the checkpointer, which already
//! applies every logged batch to its own copy of the state, derives each
//! event from that copy. Before the checkpointer writes a snapshot at LSN
//! S the writer has ingested up to S and written the store to disk, so no
//! snapshot is ever ahead of the store, and recovery from any kept
//! snapshot can re-derive whatever the store lost in a crash. A store
//! that missed part of the log before the state recovery starts from
//! (history lost) is given that state's withdrawal and payout rows
//! (`derive::state_rows`), so everything memory holds is in the store.

mod derive;
mod writer;

pub(crate) use derive::{apply_logged, state_rows};
#[cfg(test)]
pub(crate) use writer::testing;
pub use writer::{
    Feeder, HistoryHorizons, HistoryWriter, FEED_BATCH_CHANGES_MAX, FEED_BATCH_EVENTS_MAX,
    FEED_QUEUE_BATCHES_MAX,
};
