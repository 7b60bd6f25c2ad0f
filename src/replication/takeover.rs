//! Promotion: a standby becomes the writer. It takes the next epoch (a
//! compare-and-set in the lease bucket, so two promotions never share
//! one), reads the stream to its end into its folder, and appends an empty
//! *takeover marker* right after the last message it read. That append is
//! the fence: from then on the old writer's next append expects a
//! sequence that is no longer the last, and is refused — its waiting
//! callers get errors, never acknowledgements. If the old writer appended
//! meanwhile, the marker is the one refused: the standby reads the new
//! messages and tries again.
//!
//! What comes after (the standby closed, its folder opened as a writer
//! that ships to the stream from the marker on, the payout actor
//! reconciling what was left processing, as after a restart) is the
//! node's (`node.rs`).

use std::time::Duration;

use crate::ledger::Ledger;
use crate::replication::follower::{catch_up, FollowError};
use crate::replication::metrics::ReplicationMetrics;
use crate::replication::replica::{marker_id, WriterStart};
use crate::replication::Lease;
use crate::replication::ReplicationError;
use crate::replication::{AppendError, LogStream};

/// Most rounds of "read to the end, append the marker" before giving up:
/// each lost round means the old writer is still appending.
const ROUNDS_MAX: u32 = 64;

/// Why a promotion failed; the node stays a standby.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error(transparent)]
    Follow(#[from] FollowError),
    #[error(transparent)]
    Stream(#[from] ReplicationError),
    #[error("the stream did not take the takeover marker: {reason}")]
    Unavailable { reason: String },
    #[error("the old writer kept appending through {ROUNDS_MAX} attempts to fence it")]
    StillWriting,
}

/// Fences the stream for a new epoch once `standby` holds all of it;
/// returns where the new writer starts.
pub async fn take_over(
    standby: &Ledger,
    stream: &LogStream,
    lease: &Lease,
    metrics: &ReplicationMetrics,
    deadline: Duration,
) -> Result<WriterStart, TakeoverError> {
    let epoch = lease.next_epoch().await?;
    let marker = marker_id(stream.name(), epoch);
    for _ in 0..ROUNDS_MAX {
        let last = catch_up(standby, stream, metrics).await?;
        match stream
            .append(last, &marker, Default::default(), deadline)
            .await
        {
            Ok(seq) => {
                metrics.set_epoch(epoch);
                tracing::info!(epoch, seq, "took over the replicated log");
                return Ok(WriterStart {
                    epoch,
                    expected_last: seq,
                });
            }
            // Someone appended after what was read: read it too.
            Err(AppendError::Fenced { .. }) => continue,
            Err(AppendError::Unavailable { reason }) => {
                return Err(TakeoverError::Unavailable { reason })
            }
        }
    }
    Err(TakeoverError::StillWriting)
}
