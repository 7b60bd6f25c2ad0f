//! The writer's side: [`JetStreamReplica`] is the log's
//! [`Replica`](crate::storage::wal::replica::Replica) on a JetStream
//! stream. Each group-commit batch becomes ONE message — the framed
//! records the local log holds, never one message per operation — with
//! `Nats-Expected-Last-Sequence` set to the sequence of this writer's
//! previous message (the fence: a message anyone else appended makes it
//! fail) and `Nats-Msg-Id = <stream>-<epoch>-<first LSN>` (so a retry is
//! recognised, and a new writer's first message never collides with its
//! predecessor's). [`LogStream::append`] retries an unclear outcome with
//! the same id and reads back whose message sits at the sequence.
//!
//! Batches are published one at a time, in order: the WAL writer waits
//! for each answer before its next batch, so a publisher task takes them
//! from a queue and answers on the channel the writer waits on. The task
//! runs on the tokio runtime the replica was started on (the one the NATS
//! connection lives on).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::replication::metrics::ReplicationMetrics;
use crate::replication::{AppendError, LogStream};
use crate::storage::wal::replica::{Replica, ReplicaRefusal, Shipped};

/// One batch waiting to be published, and where its answer goes.
struct Shipment {
    first_lsn: u64,
    batch: Vec<u8>,
    answer: crossbeam_channel::Sender<Result<(), ReplicaRefusal>>,
}

/// Ships the log's batches to a JetStream stream (see the module docs).
pub struct JetStreamReplica {
    queue: mpsc::UnboundedSender<Shipment>,
}

/// Where a writer starts appending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterStart {
    /// This writer's epoch (taken at promotion, see `takeover`).
    pub epoch: u64,
    /// The stream's last sequence when it took over: its first message
    /// must come right after it.
    pub expected_last: u64,
}

impl JetStreamReplica {
    /// Starts the publisher on the current tokio runtime. `deadline` bounds
    /// how long one batch may take (retries of unclear outcomes included)
    /// before the log is poisoned.
    pub fn start(
        stream: LogStream,
        start: WriterStart,
        deadline: Duration,
        metrics: Arc<ReplicationMetrics>,
    ) -> Self {
        let (queue, shipments) = mpsc::unbounded_channel();
        let publisher = Publisher {
            stream,
            epoch: start.epoch,
            expected_last: start.expected_last,
            deadline,
            metrics,
        };
        tokio::spawn(publisher.run(shipments));
        Self { queue }
    }
}

impl Replica for JetStreamReplica {
    fn ship(&self, first_lsn: u64, batch: Vec<u8>) -> Shipped {
        let (answer, shipped) = crossbeam_channel::bounded(1);
        // A stopped publisher drops the answer: the writer reads a refusal.
        let _ = self.queue.send(Shipment {
            first_lsn,
            batch,
            answer,
        });
        shipped
    }
}

struct Publisher {
    stream: LogStream,
    epoch: u64,
    expected_last: u64,
    deadline: Duration,
    metrics: Arc<ReplicationMetrics>,
}

impl Publisher {
    async fn run(mut self, mut shipments: mpsc::UnboundedReceiver<Shipment>) {
        while let Some(shipment) = shipments.recv().await {
            let result = self.publish(shipment.first_lsn, shipment.batch).await;
            let refused = result.is_err();
            let _ = shipment.answer.send(result);
            if refused {
                // The log is poisoned by the refusal: nothing more is
                // published, and what is queued is answered by the drop.
                return;
            }
        }
    }

    async fn publish(&mut self, first_lsn: u64, batch: Vec<u8>) -> Result<(), ReplicaRefusal> {
        let msg_id = msg_id(self.stream.name(), self.epoch, first_lsn);
        let started = Instant::now();
        let appended = self
            .stream
            .append(self.expected_last, &msg_id, batch.into(), self.deadline)
            .await;
        match appended {
            Ok(seq) => {
                self.metrics.published(seq, started.elapsed());
                self.expected_last = seq;
                Ok(())
            }
            Err(AppendError::Fenced { seq, by }) => {
                tracing::error!(
                    seq,
                    by = by.as_deref().unwrap_or("unknown"),
                    ours = %msg_id,
                    "fenced: another writer appended to the replicated log; this node steps down"
                );
                self.metrics.fenced();
                Err(ReplicaRefusal {
                    fenced: true,
                    reason: format!(
                        "message {seq} of stream {} is {}, not this writer's {msg_id}",
                        self.stream.name(),
                        by.as_deref().unwrap_or("another writer's")
                    ),
                })
            }
            Err(AppendError::Unavailable { reason }) => Err(ReplicaRefusal {
                fenced: false,
                reason,
            }),
        }
    }
}

/// The id of the message that carries the batch from `first_lsn`.
pub fn msg_id(stream: &str, epoch: u64, first_lsn: u64) -> String {
    format!("{stream}-{epoch}-{first_lsn}")
}

/// The id of a new writer's takeover marker (an empty message: it fences
/// the writer before it and carries no records).
pub fn marker_id(stream: &str, epoch: u64) -> String {
    format!("{stream}-{epoch}-takeover")
}

/// What a message id says: `Some(first LSN)` for a batch, `None` for a
/// takeover marker or an id this crate did not write.
pub fn first_lsn_of(msg_id: &str) -> Option<u64> {
    msg_id.rsplit('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_first_lsn_and_markers_carry_none() {
        assert_eq!(msg_id("led-ger", 3, 17), "led-ger-3-17");
        assert_eq!(first_lsn_of(&msg_id("led-ger", 3, 17)), Some(17));
        assert_eq!(first_lsn_of(&marker_id("led-ger", 3)), None);
        assert_eq!(first_lsn_of("garbage"), None);
    }
}
