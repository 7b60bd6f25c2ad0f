//! The write-ahead log: events made durable in numbered, checksummed records.
//!
//! This module knows events and bytes, not actors. Opening a ledger
//! rebuilds its state from the log ([`crate::storage::recovery`], through
//! [`replay_chunks`]), then opens a writer ([`WalHandle::open`]) that
//! continues at [`ReplayReport::next_lsn`].
//!
//! ## On disk
//! `<dir>/wal/<first LSN, 20 digits zero-padded>.wal`, one file per segment.
//! A segment holds records with consecutive LSNs, starting at the LSN in its
//! name; the next segment starts where it ends. LSNs start at 1 (0 means
//! "nothing logged"). Each record (see [`record`]) is
//!
//! ```text
//! [len u32 LE][crc32 u32 LE][lsn u64 LE][payload: len bytes]
//! ```
//!
//! `len` counts the payload only; the checksum is CRC-32 (IEEE, as computed
//! by `crc32fast`, not CRC-32C) over the LSN bytes and the payload; the
//! payload is, since on-disk format v6, the byte `0xFE`, the SHA-256 of the
//! previous record's whole framed bytes (32 zeros before LSN 1), the
//! event's time (a bincode varint: ms since the epoch) and one
//! [`Event`](crate::domain::event::Event) in bincode 2 `standard()`.
//! Formats v4 and v5 wrote `0xFF`, the time and the event; a payload
//! without a tag (format v1 to v3) is the event alone, read with an unknown
//! time (see [`record`]). The hashes chain the records: changing one, even
//! with its checksum fixed, breaks the next one's ([`verify_chain`]).
//!
//! ## Recovery rule
//! **A record may be cut as torn only where nothing acknowledged can follow
//! it.** Reading a segment from its start, a record *looks torn* when the
//! bytes left are fewer than a header, or fewer than the header's `len`
//! says, or when every byte left in the file is zero (a file system may
//! extend a file with zeros when a crash lands between the size update and
//! the data; no record is ever all zeros). A record that looks torn is
//! *torn* only if it is in the **last** segment and nothing after it checks
//! out: no record at its offset passes its checksum with a shorter length
//! (a whole record whose length field was hit), and no checksum-valid record
//! with an LSN from the expected one up to the most records that fit before
//! it starts at any later byte. Then it is what a crash mid-write leaves:
//! the file is cut back to the last whole record and the cut is reported
//! (and logged when a ledger opens). Anything else is *corrupt*: a record
//! that looks torn but is followed by valid data, one that looks torn in an
//! earlier segment, a bad length, a checksum mismatch, a payload that does
//! not decode, an LSN out of sequence, even in the last record. Replay then
//! stops with [`WalError::Corrupt`] naming the file and the byte offset of
//! the bad record, and never skips it. The rule is decided in one place
//! (`scan.rs`), so recovery, read-only replay (`verify`, the checkpointer)
//! and [`inspect`] always agree.
//!
//! Why this is sound: the writer appends a whole group-commit batch with one
//! `write` and (in `fsync` mode) acknowledges it only after `fdatasync`, and
//! closes a segment with a sync before starting the next. A killed process
//! leaves a prefix of its last write; a crash of the machine leaves the
//! synced bytes plus some of the unsynced ones. Either way the only record
//! that can be cut short is in the unsynced end of the last segment, and
//! what follows it was never acknowledged — in `fsync` mode, at most the
//! rest of one batch (in `buffered` mode, what the last interval wrote,
//! which that mode may lose anyway). A flipped or zeroed byte *before*
//! acknowledged data, by contrast, always leaves valid records after it,
//! and is refused.
//!
//! Cost and limits: the search past a torn-looking record reads only what
//! follows it, which is less than the length it announces, so at most
//! [`RECORD_BYTES_MAX`] (1 MiB) per recovery; only the LSN field is compared
//! at each byte, and a checksum is computed only where the LSN fits. A
//! machine crash on a file system that persists the pages of one unsynced
//! write out of order can leave a hole followed by later records of that
//! same unacknowledged write: recovery then refuses rather than guess (the
//! operator can cut the file at the reported offset once sure nothing
//! acknowledged follows). The other way round, damage that itself looks
//! like a crash — the newest segment cut short, or zeros from a record's
//! start to the end of the file — cannot be told from one and is cut like
//! one: reported, and logged as a warning at open, but not refused. A valid
//! record that a bit flip forges is out of reach of the 32-bit checksum's
//! odds.
//!
//! ## Layout
//! - `record.rs` — framing of one record: encode, decode, limits.
//! - `segment.rs` — segment files: names, listing, creation, retirement
//!   (deletion, or a move to the archive folder), and the failure hook
//!   tests use.
//! - `chain.rs` — checking the hash chain over archived and kept segments
//!   and the snapshots' heads ([`verify_chain`]); one record's hash.
//! - `writer.rs` — the writer thread: group commit, sync modes (the
//!   buffered sync's interval on the injected clock), poisoning, the
//!   chain's head.
//! - `replica.rs` — the hook a second copy (replication) plugs into: a
//!   batch is acknowledged only once the replica has it too.
//! - `stats.rs` — fsync counts and latency histogram, for operators.
//! - `handle.rs` — [`WalHandle`], how callers reach the writer thread.
//! - `scan.rs` — walking a segment's records read-only, and the one place
//!   a torn tail is told from corruption; [`inspect`].
//! - `reader.rs` — [`replay`]: recovery, with torn-tail truncation.

mod chain;
mod handle;
mod reader;
pub mod record;
pub mod replica;
mod scan;
mod segment;
mod stats;
mod writer;

use std::path::PathBuf;

use crate::clock::SharedClock;

pub use chain::{record_hash_at, verify_chain, ChainReport};
pub use handle::WalHandle;
pub use reader::{
    replay, replay_chunks, replay_with, RecordPlace, ReplayError, ReplayMode, ReplayReport,
};
pub use record::{WalEntry, RECORD_BYTES_MAX};
pub use scan::{inspect, SegmentInfo};
pub(crate) use segment::list as list_segments;
pub use segment::{
    delete_segments_below, first_lsn, retire_segments_below, segment_path, wal_dir, FailPoint,
};
pub use stats::{LatencyHistogram, WalStatsSnapshot, FSYNC_BUCKETS_US};
pub use writer::{Committed, BATCH_BYTES_MAX, BATCH_EVENTS_MAX, BUFFERED_INTERVAL_MS_MAX};

/// Default size at which a segment is closed and the next one started.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;

/// Default number of append requests that may wait for the writer thread;
/// a caller appending to a full queue blocks until there is room.
pub const QUEUE_REQUESTS_MAX_DEFAULT: usize = 1024;

/// When an append is acknowledged, relative to the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Acknowledged after the batch holding it is written and `fdatasync`ed.
    Fsync,
    /// Acknowledged once written to the OS; synced every `interval_ms`, when
    /// a segment is closed, and at shutdown. A crash (of the machine, not the
    /// process) can lose up to an interval of acknowledged appends.
    Buffered { interval_ms: u64 },
    /// No log at all: state lives in memory only. The engine opens no
    /// writer in this mode and [`WalHandle::open`] refuses it.
    None,
}

/// Everything the writer needs to know; see the defaults in [`WalConfig::new`].
#[derive(Clone)]
pub struct WalConfig {
    /// The ledger's data folder; the log lives in its `wal/` subfolder.
    pub dir: PathBuf,
    pub sync: SyncMode,
    /// A segment that has reached this size is closed before the next write.
    /// A segment can exceed it by one batch, since a batch is never split.
    pub segment_bytes_max: u64,
    /// Capacity of the request queue in front of the writer thread.
    pub queue_requests_max: usize,
    /// Lets tests make the writer's writes or syncs fail.
    pub fail_point: FailPoint,
    /// Gets every batch of events once it is written (and, with `fsync`,
    /// synced), in LSN order: the checkpointer follows the log this way.
    pub follower: Option<crossbeam_channel::Sender<Committed>>,
    /// Where the `buffered` mode's sync interval is measured (the ledger
    /// passes [`Config::clock`](crate::Config::clock)).
    pub clock: SharedClock,
    /// Every batch also goes there before it is acknowledged (replication).
    pub replica: Option<replica::SharedReplica>,
    /// The hash of the record before the writer's first LSN, which that
    /// record chains to: recovery's [`RecoveryReport::head`], or
    /// [`GENESIS`](record::GENESIS) for a new log.
    ///
    /// [`RecoveryReport::head`]: crate::storage::recovery::RecoveryReport::head
    pub chain_head: record::Hash,
}

impl WalConfig {
    /// Production defaults: `fsync`, 64 MiB segments, 1024 queued requests,
    /// the system clock, a chain from [`GENESIS`](record::GENESIS).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            sync: SyncMode::Fsync,
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            queue_requests_max: QUEUE_REQUESTS_MAX_DEFAULT,
            fail_point: FailPoint::default(),
            follower: None,
            clock: SharedClock::system(),
            replica: None,
            chain_head: record::GENESIS,
        }
    }
}

/// Storage-layer failures. Cloneable because one write failure is reported
/// to every request it poisons, hence I/O errors are kept as text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O error on {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("WAL corrupt in {path} at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A write or sync failed earlier; memory and disk may differ, so the
    /// log refuses every later write. Only a restart (replay) recovers.
    #[error("WAL poisoned by an earlier failure, restart to recover: {reason}")]
    Poisoned { reason: String },
    #[error("WAL {what} too large: {size} > {max}")]
    TooLarge {
        what: &'static str,
        size: u64,
        max: u64,
    },
    #[error("WAL could not encode an event: {reason}")]
    Encode { reason: String },
    #[error("WAL writer is shut down")]
    Closed,
    #[error("WAL disabled: sync mode `none` keeps no log")]
    Disabled,
}

impl WalError {
    pub(crate) fn io(path: impl Into<PathBuf>, error: &std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            reason: error.to_string(),
        }
    }
}
