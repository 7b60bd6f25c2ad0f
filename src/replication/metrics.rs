//! What `/metrics` shows of replication: this node's role and epoch, how
//! far behind the stream it is, and how long publishes take. Atomics only:
//! the publisher and the follower never wait to update them.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use crate::storage::wal::LatencyHistogram;

/// A node's part in the replicated ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows the stream; refuses writes.
    Standby,
    /// Appends to the stream.
    Writer,
    /// Was the writer until another took over; refuses writes.
    Fenced,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standby => "standby",
            Self::Writer => "writer",
            Self::Fenced => "fenced",
        }
    }
}

/// Live replication counters, shared by the publisher, the follower and
/// whoever reports them.
#[derive(Debug, Default)]
pub struct ReplicationMetrics {
    role: AtomicU8,
    epoch: AtomicU64,
    /// The stream sequence this node last appended (writer) or applied
    /// (standby).
    applied_seq: AtomicU64,
    /// The stream's last sequence, as last seen.
    stream_seq: AtomicU64,
    publishes: LatencyHistogram,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationSnapshot {
    pub role: Role,
    pub epoch: u64,
    pub applied_seq: u64,
    pub stream_seq: u64,
    /// Messages of the stream this node has not applied (0 on a writer).
    pub lag: u64,
    pub publishes: u64,
    pub publish_nanos: u64,
    /// Cumulative `(upper bound in µs, publishes at most that slow)`.
    pub publish_buckets_us: Vec<(Option<u64>, u64)>,
}

impl ReplicationMetrics {
    pub fn set_role(&self, role: Role) {
        let code = match role {
            Role::Standby => 0,
            Role::Writer => 1,
            Role::Fenced => 2,
        };
        self.role.store(code, Ordering::Release);
    }

    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Acquire) {
            1 => Role::Writer,
            2 => Role::Fenced,
            _ => Role::Standby,
        }
    }

    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Release);
    }

    /// A publish acknowledged at `seq` after `took`.
    pub fn published(&self, seq: u64, took: Duration) {
        self.publishes.record(took);
        self.applied(seq);
        self.saw_stream_at(seq);
    }

    pub fn fenced(&self) {
        self.set_role(Role::Fenced);
    }

    /// A standby applied the message at `seq`.
    pub fn applied(&self, seq: u64) {
        self.applied_seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// The stream's last sequence was seen to be `seq`.
    pub fn saw_stream_at(&self, seq: u64) {
        self.stream_seq.fetch_max(seq, Ordering::AcqRel);
    }

    pub fn snapshot(&self) -> ReplicationSnapshot {
        let applied_seq = self.applied_seq.load(Ordering::Acquire);
        let stream_seq = self.stream_seq.load(Ordering::Acquire);
        ReplicationSnapshot {
            role: self.role(),
            epoch: self.epoch.load(Ordering::Acquire),
            applied_seq,
            stream_seq,
            lag: stream_seq.saturating_sub(applied_seq),
            publishes: self.publishes.count(),
            publish_nanos: self.publishes.total_nanos(),
            publish_buckets_us: self.publishes.cumulative(),
        }
    }
}
