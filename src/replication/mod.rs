//! Replication on a NATS JetStream cluster (cargo feature `replication`):
//! the client layer the replicated journal and the standby build on. It
//! owns the connection to the cluster, the log stream ([`LogStream`]:
//! fenced appends, reads, purging — `stream.rs`; following it — `follow.rs`,
//! behind [`LogStream::follow`]), the writer's lease and the epochs
//! ([`Lease`], JetStream KV buckets — `lease.rs`), and the errors of all
//! of them ([`ReplicationError`], here). It knows bytes,
//! sequences and message ids, not events, accounts or actors.
//!
//! On that layer, the replicated ledger: `replica` (the writer ships each
//! group-commit batch as one fenced message), `follower` (a standby
//! mirrors the messages into its folder), `takeover` (promotion: a new
//! epoch and a marker that fences the old writer), `snapshots` (snapshots
//! in the stream's object store, purging below them, bootstrapping a new
//! node), `node` (one process's role, lease watch, promotion, lease
//! renewal and snapshot publishing) and `metrics`.
//!
//! The server must be nats-server ≥ 2.10 run with
//! `jetstream { sync_interval: always }`, so that an acknowledged message is
//! on disk on a quorum (design §11).

mod follow;
mod lease;
mod stream;

pub use lease::{Holder, Lease, LeaseError};
use stream::MSG_ID;
pub use stream::{AppendError, LogStream, StreamMessage, StreamSettings};

/// What went wrong talking to the cluster, or what it answered that we
/// cannot accept.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The settings cannot work (no servers, a bad name, zero replicas).
    #[error("replication settings: {0}")]
    InvalidSettings(String),
    /// No server of the list could be reached.
    #[error("cannot connect to NATS at {servers}: {reason}")]
    Connect { servers: String, reason: String },
    /// A JetStream request failed or timed out (the cluster may be electing
    /// a leader, or out of quorum).
    #[error("NATS JetStream {what} failed: {reason}")]
    Request { what: String, reason: String },
    /// The stream exists with another replication factor than asked for.
    #[error("stream {stream} exists with {existing} replicas, the settings ask for {wanted}")]
    ReplicasMismatch {
        stream: String,
        existing: usize,
        wanted: usize,
    },
    /// Following the stream skipped a sequence (a purged start, or a
    /// message gone from the middle): what follows cannot be applied.
    #[error("stream {stream}: expected message {expected}, got {got}")]
    Gap {
        stream: String,
        expected: u64,
        got: u64,
    },
    /// Purging below a sequence past the stream's end would move its next
    /// sequence (and so break every writer's fence).
    #[error("stream {stream}: cannot purge below {seq}, its last message is {last}")]
    PurgeBeyondEnd { stream: String, seq: u64, last: u64 },
    /// A lease bucket entry that is not what this crate writes.
    #[error("lease bucket {bucket}, key {key}: unreadable value: {reason}")]
    BadEntry {
        bucket: String,
        key: String,
        reason: String,
    },
}

impl ReplicationError {
    /// A failed request, from the client's error.
    pub(crate) fn request(what: impl Into<String>, error: impl std::fmt::Display) -> Self {
        Self::Request {
            what: what.into(),
            reason: error.to_string(),
        }
    }

    /// A request that failed: may succeed if made again.
    pub(crate) fn is_request(&self) -> bool {
        matches!(self, Self::Request { .. })
    }
}

pub mod follower;
pub mod metrics;
pub mod node;
pub mod replica;
pub mod snapshots;
pub mod takeover;
