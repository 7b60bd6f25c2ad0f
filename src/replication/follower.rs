//! The standby's side: finds where in the stream its folder ends
//! ([`seek`]), then mirrors every batch message into its
//! [`Ledger::mirror`](crate::Ledger::mirror) ([`follow`], [`catch_up`]).
//! Takeover markers (empty messages a new writer appends to fence the old
//! one) carry no records and are passed over.
//!
//! A mirror is never cancelled half way: the WAL writer would log a batch
//! whose LSNs the standby had not counted. [`follow`] stops only between
//! messages, when told to.

use futures_util::StreamExt;
use tokio::sync::watch;

use crate::ledger::{Ledger, MirrorError};
use crate::replication::metrics::ReplicationMetrics;
use crate::replication::replica::first_lsn_of;
use crate::replication::ReplicationError;
use crate::replication::{LogStream, StreamMessage};

/// Checks that the standby's folder holds nothing the stream does not: a
/// node that was the writer can hold a tail it logged but the stream never
/// took (a crash or a fence between the two), which was never
/// acknowledged — and a newer writer may since have written other records
/// under the same LSNs. Mirroring onto such a folder would skip the
/// stream's records as "held" and silently differ, so it is refused: the
/// folder's last record must be in the stream, and be the same record.
pub async fn check_tail(standby: &Ledger, stream: &LogStream) -> Result<(), FollowError> {
    let local_last = standby.next_lsn().await.saturating_sub(1);
    if local_last == 0 {
        return Ok(());
    }
    let diverged = |why: String| FollowError::Diverged {
        lsn: local_last,
        why,
    };
    let ours = match standby.logged_entry(local_last) {
        Ok(Some(ours)) => ours,
        // Only in a snapshot (made from acknowledged records, or fetched
        // from the bucket): nothing of its own to compare.
        Ok(None) => return Ok(()),
        Err(reason) => return Err(diverged(format!("its own log cannot be read: {reason}"))),
    };
    let seq = seek(stream, local_last).await?;
    let message = stream.message(seq).await?;
    let batch = message
        .as_ref()
        .and_then(|m| Some((m.msg_id.as_deref().and_then(first_lsn_of)?, &m.payload)));
    match batch {
        Some((first_lsn, payload)) if first_lsn <= local_last => {
            let entries = crate::storage::wal::record::decode_batch(payload, first_lsn)
                .map_err(|reason| diverged(format!("message {seq} does not decode: {reason}")))?;
            match entries.into_iter().find(|e| e.lsn == local_last) {
                Some(theirs) if theirs == ours => Ok(()),
                Some(_) => Err(diverged(
                    "the replicated log holds another record there".into(),
                )),
                None => Err(diverged("the replicated log does not hold it".into())),
            }
        }
        // Purged up to exactly here: the stream goes on right after it.
        Some((first_lsn, _)) if first_lsn == local_last + 1 => Ok(()),
        _ => Err(diverged("the replicated log does not hold it".into())),
    }
}

/// Why following stopped (other than being told to).
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Stream(#[from] ReplicationError),
    #[error("message {seq}: {error}")]
    Mirror { seq: u64, error: MirrorError },
    /// The folder's log differs from the stream (see [`check_tail`]).
    #[error(
        "this folder's record {lsn} is not the replicated log's: {why}. It was never \
         acknowledged (a writer's tail the stream did not take); start this node on a \
         fresh data folder, which it fills from the stream"
    )]
    Diverged { lsn: u64, why: String },
}

/// The sequence to follow from so that nothing after `next_lsn - 1` is
/// missed: the last batch message starting at or before `next_lsn` (the
/// batches before it are held), else the stream's first message.
pub async fn seek(stream: &LogStream, next_lsn: u64) -> Result<u64, ReplicationError> {
    let first = stream.first_sequence().await?.max(1);
    let last = stream.last_sequence().await?;
    // First LSNs grow with sequences: the search keeps `found` the last
    // batch known to start at or before `next_lsn`, and `lo..=hi` what is
    // left to look at (`first >= 1`, so `mid - 1` never underflows).
    let (mut lo, mut hi, mut found) = (first, last, first);
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        match batch_at_or_after(stream, mid, hi).await? {
            Some((seq, first_lsn)) if first_lsn <= next_lsn => {
                found = seq;
                lo = seq + 1;
            }
            _ => hi = mid - 1,
        }
    }
    Ok(found)
}

/// The first batch message (not a marker) at `seq..=hi`, with its first LSN.
async fn batch_at_or_after(
    stream: &LogStream,
    seq: u64,
    hi: u64,
) -> Result<Option<(u64, u64)>, ReplicationError> {
    for probe in seq..=hi {
        let Some(message) = stream.message(probe).await? else {
            continue;
        };
        if let Some(first_lsn) = message.msg_id.as_deref().and_then(first_lsn_of) {
            return Ok(Some((probe, first_lsn)));
        }
    }
    Ok(None)
}

/// Mirrors one message (nothing for a marker).
async fn apply(standby: &Ledger, message: &StreamMessage) -> Result<(), FollowError> {
    let Some(first_lsn) = message.msg_id.as_deref().and_then(first_lsn_of) else {
        return Ok(());
    };
    if message.payload.is_empty() {
        return Ok(());
    }
    standby
        .mirror(first_lsn, &message.payload)
        .await
        .map(drop)
        .map_err(|error| FollowError::Mirror {
            seq: message.seq,
            error,
        })
}

/// Mirrors every message from where the standby's folder ends up to the
/// stream's last one at the time of the call; returns that sequence.
pub async fn catch_up(
    standby: &Ledger,
    stream: &LogStream,
    metrics: &ReplicationMetrics,
) -> Result<u64, FollowError> {
    let from = seek(stream, standby.next_lsn().await).await?;
    let last = stream.last_sequence().await?;
    metrics.saw_stream_at(last);
    for seq in from..=last {
        if let Some(message) = stream.message(seq).await? {
            apply(standby, &message).await?;
            metrics.applied(seq);
        }
    }
    Ok(last)
}

/// Follows the stream into the standby until `stop` turns true (checked
/// between messages) or the stream fails.
pub async fn follow(
    standby: &Ledger,
    stream: &LogStream,
    metrics: &ReplicationMetrics,
    mut stop: watch::Receiver<bool>,
) -> Result<(), FollowError> {
    let from = seek(stream, standby.next_lsn().await).await?;
    let mut messages = stream.follow(from).await?;
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
        };
        let Some(message) = next else {
            return Err(FollowError::Stream(ReplicationError::Request {
                what: "following the stream".into(),
                reason: "the consumer ended".into(),
            }));
        };
        let message = message?;
        apply(standby, &message).await?;
        metrics.applied(message.seq);
        metrics.saw_stream_at(message.seq);
    }
}
