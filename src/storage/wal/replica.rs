//! A second copy every batch must reach before its callers are answered:
//! the hook replication plugs into (the `replication` feature's JetStream
//! journal, see `crate::replication`), kept free of any network crate so
//! the log knows bytes only.
//!
//! The writer hands each batch — the same framed records it writes to its
//! segment, LSNs `first_lsn..` — to [`Replica::ship`] *before* its local
//! write, so the network round trip overlaps the local write and sync, and
//! waits for the [`Shipped`] answer after them. A batch is acknowledged to
//! its callers only when both the disk and the replica have it; a replica
//! that refuses (fenced by another writer) or cannot answer poisons the
//! log like a failed write: every later append is refused, and the callers
//! waiting get errors, never acknowledgements.

use std::sync::Arc;

/// Why a replica did not take a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaRefusal {
    /// Another writer appended in this writer's place: this node must step
    /// down (as opposed to a replica that could not be reached in time).
    pub fenced: bool,
    pub reason: String,
}

/// The answer to one [`Replica::ship`], waited for after the local write.
pub type Shipped = crossbeam_channel::Receiver<Result<(), ReplicaRefusal>>;

/// Where every written batch also goes (see the module docs).
pub trait Replica: Send + Sync + 'static {
    /// Starts shipping one batch: `batch` is the framed records of LSNs
    /// `first_lsn..`, exactly as the local log holds them. The answer
    /// comes on the returned channel (a dropped sender reads as refused).
    fn ship(&self, first_lsn: u64, batch: Vec<u8>) -> Shipped;
}

/// A replica shared by the handle that configures it and the writer.
pub type SharedReplica = Arc<dyn Replica>;

/// Waits for a shipped batch's answer.
pub(crate) fn wait(shipped: &Shipped) -> Result<(), ReplicaRefusal> {
    shipped.recv().unwrap_or_else(|_| {
        Err(ReplicaRefusal {
            fenced: false,
            reason: "the replica stopped before answering".into(),
        })
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crossbeam_channel::{Receiver, Sender};
    use futures_util::FutureExt;

    use super::*;
    use crate::storage::wal::record::tests::stamped;
    use crate::storage::wal::{segment_path, SyncMode, WalConfig, WalError, WalHandle};

    /// One shipped batch, and where its answer goes.
    struct Shipment {
        first_lsn: u64,
        batch: Vec<u8>,
        answer: Sender<Result<(), ReplicaRefusal>>,
    }

    /// A replica whose answers the test gives by hand.
    struct ByHand(Sender<Shipment>);

    impl Replica for ByHand {
        fn ship(&self, first_lsn: u64, batch: Vec<u8>) -> Shipped {
            let (answer, shipped) = crossbeam_channel::bounded(1);
            let _ = self.0.send(Shipment {
                first_lsn,
                batch,
                answer,
            });
            shipped
        }
    }

    fn open(dir: &std::path::Path) -> (WalHandle, Receiver<Shipment>) {
        let (to_test, shipments) = crossbeam_channel::unbounded();
        let config = WalConfig {
            sync: SyncMode::Fsync,
            replica: Some(Arc::new(ByHand(to_test))),
            ..WalConfig::new(dir)
        };
        (WalHandle::open(config, 1).unwrap(), shipments)
    }

    fn next(shipments: &Receiver<Shipment>) -> Shipment {
        shipments.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    /// A batch is answered only once the replica has it, and the replica
    /// gets exactly the bytes the local log holds.
    #[tokio::test]
    async fn an_append_is_acknowledged_only_after_the_replica_took_the_batch() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, shipments) = open(tmp.path());
        let mut append = Box::pin(wal.append(vec![stamped(1), stamped(2)]));
        let shipment = next(&shipments);
        assert_eq!(shipment.first_lsn, 1);
        // Not acknowledged while the replica has not answered (the batch
        // was shipped before its local write, which may still be going on).
        tokio::task::yield_now().await;
        assert!((&mut append).now_or_never().is_none());
        shipment.answer.send(Ok(())).unwrap();
        assert_eq!(append.await, Ok(2));
        // Acknowledged: written locally, the very bytes the replica got.
        let on_disk = std::fs::read(segment_path(tmp.path(), 1)).unwrap();
        assert_eq!(on_disk, shipment.batch);
        let second = wal.append(vec![stamped(3)]);
        let shipment = next(&shipments);
        assert_eq!(shipment.first_lsn, 3);
        shipment.answer.send(Ok(())).unwrap();
        assert_eq!(second.await, Ok(3));
        assert!(!wal.fenced());
    }

    /// Fenced: the waiting caller gets an error, never an acknowledgement,
    /// and so does every later append; the handle says it was fenced.
    #[tokio::test]
    async fn a_fenced_batch_poisons_the_log_and_acknowledges_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, shipments) = open(tmp.path());
        let append = wal.append(vec![stamped(1)]);
        let refusal = ReplicaRefusal {
            fenced: true,
            reason: "message 7 is writer 2's".into(),
        };
        next(&shipments).answer.send(Err(refusal)).unwrap();
        let Err(WalError::Poisoned { reason }) = append.await else {
            panic!("acknowledged");
        };
        assert!(
            reason.contains("fenced") && reason.contains("writer 2"),
            "{reason}"
        );
        assert!(wal.fenced());
        let later = wal.append(vec![stamped(2)]).await;
        assert!(matches!(later, Err(WalError::Poisoned { .. })), "{later:?}");
        assert!(shipments.try_recv().is_err(), "nothing more was shipped");
    }

    /// A replica that stops answering (its sender dropped) or refuses
    /// without a fence poisons too, without claiming a fence.
    #[tokio::test]
    async fn a_replica_that_cannot_answer_poisons_without_a_fence() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, shipments) = open(tmp.path());
        let append = wal.append(vec![stamped(1)]);
        drop(next(&shipments).answer);
        let Err(WalError::Poisoned { reason }) = append.await else {
            panic!("acknowledged");
        };
        assert!(reason.contains("stopped before answering"), "{reason}");
        assert!(!wal.fenced());
    }
}
