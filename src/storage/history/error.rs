//! [`HistoryError`]: why a history store call failed.

/// Why a history store call failed. Bad input (a cursor, a limit) changes
/// nothing; a store failure leaves the watermark where it was, so the same
/// batch can be ingested again.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The underlying store failed (I/O, or it is poisoned by an earlier
    /// I/O failure).
    #[error("history store: {0}")]
    Store(#[from] fjall::Error),

    /// A stored key or value does not decode: the store is damaged.
    #[error("history store: a stored {what} does not decode")]
    Corrupt { what: &'static str },

    /// The store was written by a newer build, in a layout this one does
    /// not read: refused rather than misread (or rebuilt over).
    #[error(
        "history store: format {found} is newer than this build reads (up to {reads}); \
         open it with the build that wrote it, or move the history folder aside to \
         rebuild it from the log (losing what the log no longer holds)"
    )]
    NewerFormat { found: u32, reads: u32 },

    /// The store's format marker does not decode: it may be a newer
    /// build's, so it is refused like one.
    #[error(
        "history store: its format marker ({stored}) is not one this build reads; \
         open it with the build that wrote it, or move the history folder aside to \
         rebuild it from the log (losing what the log no longer holds)"
    )]
    UnknownFormat { stored: String },

    /// A row could not be encoded.
    #[error("history store: cannot encode a row: {0}")]
    Encode(String),

    /// A page cursor that this store did not make for this kind of listing.
    #[error("malformed cursor: {reason}")]
    BadCursor { reason: &'static str },

    /// A page limit outside 1..=max.
    #[error("limit must be 1 to {max}, got {limit}")]
    BadLimit { limit: usize, max: usize },

    /// `created_from` is after `created_to`.
    #[error("created_from ({from}) is after created_to ({to})")]
    BadTimeRange { from: u64, to: u64 },

    /// The follower feeding the store stopped (the ledger is shutting down
    /// or its storage failed) before the store reached `lsn`.
    #[error("history store: its follower stopped before LSN {lsn}")]
    FollowerStopped { lsn: u64 },

    /// The ledger shut down and closed its history store.
    #[error("history store: closed (the ledger shut down)")]
    Closed,
}
