//! One process of a replicated ledger: its current [`Ledger`] — a standby
//! following the stream, or the writer appending to it — and the work
//! around it: following, watching the writer's lease, promotion, renewing
//! the lease while writing.
//!
//! Every node starts as a standby on its own data folder. A node started
//! to write promotes itself at once (so a writer first reads whatever the
//! stream holds beyond its folder); a standby promotes itself when the
//! writer's lease lapses, or when told to ([`Node::promote`]). Promotion
//! (see `takeover`) stops the follower, reads the stream to its end,
//! fences it with a takeover marker under a new epoch, takes the lease,
//! closes the standby and opens the same folder as the writer, shipping
//! from the marker on; its payout actor reconciles the payouts left
//! processing exactly as after a restart.
//!
//! The writer also publishes its snapshots to the stream's object store
//! and purges the stream below them (`snapshots`); a node whose folder the
//! stream was purged past starts from the newest snapshot there.
//!
//! A writer fenced by a newer one refuses writes (its log is poisoned)
//! and reports the `fenced` role; it is restarted as a standby on a fresh
//! folder (see README: what is and is not guaranteed).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::config::{Config, SharedReplica};
use crate::ledger::{Ledger, OpenError};
use crate::replication::follower::{check_tail, follow, FollowError};
use crate::replication::metrics::{ReplicationMetrics, ReplicationSnapshot, Role};
use crate::replication::replica::{first_lsn_of, JetStreamReplica, WriterStart};
use crate::replication::snapshots::{publish, SnapshotStore};
use crate::replication::stream::patiently;
use crate::replication::takeover::{take_over, TakeoverError};
use crate::replication::ReplicationError;
use crate::replication::{Holder, Lease, LeaseError};
use crate::replication::{LogStream, StreamSettings};

/// How a node joins the replicated ledger.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    pub stream: StreamSettings,
    /// This node's name in the lease.
    pub node: String,
    /// This node's HTTP base, named to callers a standby refuses.
    pub url: Option<String>,
    /// How long the writer's lease lasts unrenewed: a standby promotes
    /// itself once it lapsed. Renewed every third of it.
    pub lease_ttl: Duration,
    /// Longest one batch may take to reach the stream (unclear outcomes
    /// retried) before the writer's log is poisoned.
    pub append_deadline: Duration,
    /// Whether this node promotes itself when the writer's lease lapses.
    pub auto_promote: bool,
    /// How often the writer uploads its new snapshots and purges the
    /// stream below the oldest one kept (see `snapshots`).
    pub snapshot_publish_every: Duration,
}

/// Why a node could not start or promote.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Stream(#[from] ReplicationError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Takeover(#[from] TakeoverError),
    #[error(transparent)]
    Follow(FollowError),
    #[error("the lease is held by {0:?}")]
    Lease(String),
}

impl From<LeaseError> for NodeError {
    fn from(error: LeaseError) -> Self {
        Self::Lease(error.to_string())
    }
}

/// A replicated node (see the module docs). Cheap to share behind an
/// `Arc`; [`Node::ledger`] is the ledger to serve right now.
pub struct Node {
    current: RwLock<Ledger>,
    config: Config,
    settings: NodeSettings,
    stream: LogStream,
    lease: Lease,
    snapshots: SnapshotStore,
    metrics: Arc<ReplicationMetrics>,
    /// One promotion at a time.
    promoting: Mutex<()>,
    /// Tells the follower to stop between messages.
    stop_follower: watch::Sender<bool>,
    follower: parking_lot::Mutex<Option<JoinHandle<Result<(), FollowError>>>>,
}

impl Node {
    /// Joins the stream as a standby on `config`'s folder, then promotes
    /// itself at once when `write` (refused if a writer holds the lease).
    pub async fn start(
        config: Config,
        settings: NodeSettings,
        write: bool,
    ) -> Result<Arc<Self>, NodeError> {
        let stream = LogStream::connect(&settings.stream).await?;
        let lease = Lease::open(&stream, settings.lease_ttl).await?;
        if write {
            if let Some((holder, _)) = patiently("the lease", || lease.holder()).await? {
                return Err(NodeError::Lease(format!(
                    "{} (epoch {}); start this node as a standby, or promote it",
                    holder.node, holder.epoch
                )));
            }
        }
        let snapshots = SnapshotStore::open(&stream).await?;
        let standby = open_standby(&config, &stream, &snapshots).await?;
        if let Err(error) = check_tail(&standby, &stream).await {
            standby.shutdown().await;
            return Err(NodeError::Follow(error));
        }
        let metrics = Arc::new(ReplicationMetrics::default());
        metrics.set_role(Role::Standby);
        let (stop_follower, _) = watch::channel(false);
        let node = Arc::new(Self {
            current: RwLock::new(standby),
            config,
            settings,
            stream,
            lease,
            snapshots,
            metrics,
            promoting: Mutex::new(()),
            stop_follower,
            follower: parking_lot::Mutex::new(None),
        });
        node.ledger()
            .set_promoter(Arc::new(PromoteNode(Arc::downgrade(&node))));
        if write {
            node.promote().await?;
        } else {
            node.start_following();
            tokio::spawn(Arc::clone(&node).watch_lease());
        }
        Ok(node)
    }

    /// Uploads the writer's new snapshots now, keeps the newest
    /// `snapshots_kept` in the bucket and purges the stream below the
    /// oldest; that LSN. (The writer also does it every
    /// `snapshot_publish_every`.)
    pub async fn publish_snapshots(&self) -> Result<Option<u64>, NodeError> {
        let dir = self
            .config
            .data_dir
            .as_deref()
            .ok_or_else(|| NodeError::Lease("a replicated node needs a data folder".into()))?;
        let kept = self.config.snapshots_kept;
        Ok(publish(dir, &self.stream, &self.snapshots, kept).await?)
    }

    /// The ledger to serve now (a clone of the handle).
    pub fn ledger(&self) -> Ledger {
        self.current.read().clone()
    }

    /// Role, epoch, lag and publish latencies.
    pub fn metrics(&self) -> ReplicationSnapshot {
        let mut snapshot = self.metrics.snapshot();
        if snapshot.role == Role::Writer && self.ledger_fenced() {
            snapshot.role = Role::Fenced;
        }
        snapshot
    }

    fn ledger_fenced(&self) -> bool {
        self.ledger().is_fenced()
    }

    fn start_following(&self) {
        let standby = self.ledger();
        let stream = self.stream.clone();
        let metrics = Arc::clone(&self.metrics);
        let stop = self.stop_follower.subscribe();
        let task = tokio::spawn(async move {
            let followed = follow(&standby, &stream, &metrics, stop).await;
            if let Err(error) = &followed {
                tracing::error!(%error, "the standby stopped following the stream");
            }
            followed
        });
        *self.follower.lock() = Some(task);
    }

    /// Makes this node the writer (nothing if it already is). If the
    /// stream cannot be fenced, the node stays a standby and follows on.
    pub async fn promote(&self) -> Result<(), NodeError> {
        let _one = self.promoting.lock().await;
        if !self.ledger().is_standby() {
            return Ok(());
        }
        let _ = self.stop_follower.send(true);
        let follower = self.follower.lock().take();
        if let Some(follower) = follower {
            let _ = follower.await;
        }
        let standby = self.ledger();
        let taken = take_over(
            &standby,
            &self.stream,
            &self.lease,
            &self.metrics,
            self.settings.append_deadline,
        )
        .await;
        match taken {
            Ok(start) => self.become_writer(standby, start).await,
            Err(error) => {
                self.start_following_again();
                Err(error.into())
            }
        }
    }

    /// Once the stream is fenced for this node's epoch: takes the lease,
    /// closes the standby and opens its folder as the writer, shipping
    /// from the marker on.
    async fn become_writer(&self, standby: Ledger, start: WriterStart) -> Result<(), NodeError> {
        let holder = Holder {
            node: self.settings.node.clone(),
            epoch: start.epoch,
            url: self.settings.url.clone(),
        };
        // The lease only tells standbys whether to take over; the fence is
        // what keeps writers apart. Without it this node still writes (a
        // standby may then take over and fence it: a needless failover).
        let revision = match self.seize_lease(&holder).await {
            Ok(revision) => Some(revision),
            Err(error) => {
                tracing::error!(%error, "promoted without the lease");
                None
            }
        };
        standby.shutdown().await;
        let replica = JetStreamReplica::start(
            self.stream.clone(),
            start,
            self.settings.append_deadline,
            Arc::clone(&self.metrics),
        );
        let writer = Ledger::open(Config {
            replication: Some(SharedReplica(Arc::new(replica))),
            ..self.config.clone()
        })?;
        *self.current.write() = writer;
        self.metrics.set_role(Role::Writer);
        tokio::spawn(publish_snapshots_every(
            self.ledger(),
            self.config.clone(),
            self.stream.clone(),
            self.snapshots.clone(),
            self.settings.snapshot_publish_every,
        ));
        if let Some(revision) = revision {
            tokio::spawn(renew_lease(
                self.lease.clone(),
                holder,
                revision,
                self.settings.lease_ttl,
                self.config.clock.clone(),
            ));
        }
        Ok(())
    }

    /// Takes the lease: a lapsed one is created anew; one still held (a
    /// promotion by hand, the old writer already fenced) is taken from
    /// its holder.
    async fn seize_lease(&self, me: &Holder) -> Result<u64, NodeError> {
        for _ in 0..8 {
            match self.lease.acquire(me).await {
                Ok(revision) => return Ok(revision),
                Err(LeaseError::Taken(_)) => {
                    if let Some((_, revision)) = self.lease.holder().await? {
                        self.lease.release(revision).await?;
                    }
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(NodeError::Lease("another node keeps taking it".into()))
    }

    /// A standby's watch on the writer's lease: names the writer to
    /// refused callers, and promotes this node once the lease lapsed.
    async fn watch_lease(self: Arc<Self>) {
        let every = self.settings.lease_ttl / 3;
        loop {
            self.config.clock.sleep(every).await;
            if !self.ledger().is_standby() {
                return;
            }
            if let Ok(last) = self.stream.last_sequence().await {
                self.metrics.saw_stream_at(last);
            }
            match self.lease.holder().await {
                Ok(Some((holder, _))) => {
                    self.ledger().set_writer(holder.url.or(Some(holder.node)));
                }
                Ok(None) if self.settings.auto_promote => {
                    tracing::warn!("the writer's lease lapsed; promoting this standby");
                    match self.promote().await {
                        Ok(()) => return,
                        Err(error) => {
                            tracing::error!(%error, "promotion failed; still a standby");
                        }
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot read the writer's lease"),
            }
        }
    }

    fn start_following_again(&self) {
        let _ = self.stop_follower.send(false);
        if self.ledger().is_standby() {
            self.start_following();
        }
    }
}

/// What a standby's [`Ledger::promote`] asks: its node (held weakly, so
/// the standby does not keep the node alive).
struct PromoteNode(std::sync::Weak<Node>);

impl crate::ledger::Promoter for PromoteNode {
    fn promote(&self) -> futures_util::future::BoxFuture<'static, Result<Ledger, String>> {
        let node = self.0.upgrade();
        Box::pin(async move {
            let node = node.ok_or_else(|| "the node is gone".to_string())?;
            node.promote().await.map_err(|error| error.to_string())?;
            Ok(node.ledger())
        })
    }
}

/// Opens `config`'s folder as a standby; a folder the stream has been
/// purged past (a new node, or one long gone) first gets the newest
/// snapshot from the bucket, so it can follow from there.
async fn open_standby(
    config: &Config,
    stream: &LogStream,
    snapshots: &SnapshotStore,
) -> Result<Ledger, NodeError> {
    let config = Config {
        replication: None,
        ..config.clone()
    };
    let standby = Ledger::open_standby(config.clone())?;
    let next_lsn = standby.next_lsn().await;
    // Read patiently: a node starts while the cluster may still settle.
    let held = patiently("the stream's first batch", || first_lsn_held(stream)).await?;
    let Some(first_lsn) = held else {
        return Ok(standby);
    };
    if first_lsn <= next_lsn {
        return Ok(standby);
    }
    standby.shutdown().await;
    drop(standby);
    let dir = config
        .data_dir
        .as_deref()
        .ok_or_else(|| NodeError::Lease("a replicated node needs a data folder".into()))?;
    // Every record the folder's log holds is older than the stream's
    // first, so the newest snapshot covers them all: the log goes (a
    // segment left behind would read as a gap before the snapshot's).
    let wal = crate::storage::wal::wal_dir(dir);
    if let Err(error) = std::fs::remove_dir_all(&wal) {
        if error.kind() != std::io::ErrorKind::NotFound {
            return Err(ReplicationError::request("clearing the folder's old log", error).into());
        }
    }
    let fetched = snapshots.fetch_newest(dir, first_lsn - 1).await?;
    tracing::info!(
        next_lsn,
        first_lsn,
        snapshot = fetched,
        "the stream starts past this folder: bootstrapped from the newest snapshot"
    );
    Ok(Ledger::open_standby(config)?)
}

/// The first LSN the stream still holds (`None`: no batch at all).
async fn first_lsn_held(stream: &LogStream) -> Result<Option<u64>, ReplicationError> {
    let first = stream.first_sequence().await?.max(1);
    let last = stream.last_sequence().await?;
    for seq in first..=last {
        let Some(message) = stream.message(seq).await? else {
            continue;
        };
        if let Some(lsn) = message.msg_id.as_deref().and_then(first_lsn_of) {
            return Ok(Some(lsn));
        }
    }
    Ok(None)
}

/// The writer's snapshot publishing, every `every` on the injected clock;
/// a failure is logged and tried again next time.
async fn publish_snapshots_every(
    writer: Ledger,
    config: Config,
    stream: LogStream,
    snapshots: SnapshotStore,
    every: Duration,
) {
    let Some(dir) = config.data_dir.clone() else {
        return;
    };
    loop {
        config.clock.sleep(every).await;
        // A writer fenced or shut down publishes no more.
        if writer.is_fenced() || writer.check_open().is_err() {
            return;
        }
        if let Err(error) = publish(&dir, &stream, &snapshots, config.snapshots_kept).await {
            tracing::warn!(%error, "publishing snapshots failed; trying again later");
        }
    }
}

/// Renews the writer's lease every third of its life (on the injected
/// clock) until it is lost.
async fn renew_lease(
    lease: Lease,
    me: Holder,
    mut revision: u64,
    ttl: Duration,
    clock: crate::clock::SharedClock,
) {
    loop {
        clock.sleep(ttl / 3).await;
        match lease.renew(&me, revision).await {
            Ok(next) => revision = next,
            Err(LeaseError::Lost(holder)) => {
                tracing::error!(
                    ?holder,
                    "this writer lost its lease; the next append will be fenced if another took over"
                );
                return;
            }
            Err(error) => tracing::warn!(%error, "cannot renew the lease; retrying"),
        }
    }
}
