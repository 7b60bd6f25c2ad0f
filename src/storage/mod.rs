//! What the ledger keeps on disk, and the only code that touches it. It
//! knows events and bytes, never actors: the engine hands it events through
//! the [`journal`] and gets states back from [`recovery`].
//!
//! ## Layout
//! - `journal.rs` — the engine's way in: append events, learn when they
//!   are durable; the first failure poisons it.
//! - `wal/` — the write-ahead log: record framing, segment files, the
//!   writer thread (group commit, sync modes), replay and the torn-tail
//!   rule.
//! - `snapshot.rs` — snapshot files: every account's state at one LSN.
//! - `recovery.rs` — rebuilding the state: the newest valid snapshot plus
//!   the log after it.
//! - `checkpoint.rs` — the checkpointer thread: follows the log, writes
//!   snapshots (its copy forgetting what the history store holds),
//!   deletes the log segments none of them, and no event consumer, needs.
//! - `events/` — the event feed's side of the log: reading durable records
//!   from any position, consumers' durable cursors, retention for them.
//! - `data_dir/` — the folder as a whole: its lock (one ledger at a time)
//!   and its currency table (the scale of every stored amount).
//! - `inspect.rs` — the public read-only API for tools outside the crate
//!   (`burnledger inspect` and `verify`).
//! - `history/` — the history store: withdrawals, entries, transactions
//!   and payouts on disk (fjall), ingested off the log, paged by cursors.
//! - `feed/` — what feeds it: logged events turned into history rows, and
//!   the history writer thread that ingests them.
//! - `recall.rs` — the store as the engine's `WithdrawalHistory` (where a
//!   forgotten withdrawal is found again, how far each shard may forget),
//!   the checkpointer's copy forgetting, and replay taking a forgotten
//!   withdrawal back before its return.
//! - `history_check.rs` — `verify`'s check of the history store against
//!   the log.
//! - `deadline.rs` — the storage threads' timers, on the injected clock
//!   ([`crate::clock`]).

pub mod checkpoint;
pub mod data_dir;
mod deadline;
pub mod events;
pub mod feed;
pub mod history;
pub mod history_check;
pub mod inspect;
pub mod journal;
pub mod recall;
pub mod recovery;
pub mod snapshot;
pub mod wal;
