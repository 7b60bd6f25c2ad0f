//! Snapshots in a JetStream object store, so the stream need not keep the
//! whole log: the writer uploads each snapshot its checkpointer leaves in
//! its folder (bucket `<stream>-snapshots`, object
//! `snapshot-<LSN, 20 digits>.snap`, the file as it is on disk), keeps the
//! newest few, and purges the stream below the message holding the record
//! after the oldest one kept ([`publish`]). A node whose folder is behind
//! the stream's first message bootstraps from the newest snapshot
//! ([`SnapshotStore::fetch_newest`]) before following.
//!
//! A snapshot file carries its own checksums: recovery refuses a damaged
//! one as it would a local one.

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::object_store::{self, ObjectStore};
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use crate::replication::follower::seek;
use crate::replication::stream::{patiently, until_led};
use crate::replication::{LogStream, ReplicationError};
use crate::storage::recovery::snapshot_dir;
use crate::storage::snapshot::{self, SnapshotFile};

/// Longest a listing of the bucket may take.
const LIST_WITHIN: Duration = Duration::from_secs(10);

/// The stream's snapshot bucket.
#[derive(Clone)]
pub struct SnapshotStore {
    store: ObjectStore,
}

fn object_name(lsn: u64) -> String {
    format!("snapshot-{lsn:020}.snap")
}

fn lsn_of(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot-")?
        .strip_suffix(".snap")?
        .parse()
        .ok()
}

impl SnapshotStore {
    /// Gets or makes the bucket, replicated like the stream (patiently: a
    /// node starts while the cluster may still settle), and waits until
    /// its stream has a leader (an upload before that finds none).
    pub async fn open(stream: &LogStream) -> Result<Self, ReplicationError> {
        let bucket = format!("{}-snapshots", stream.name());
        let js = &stream.js;
        let store = patiently(&bucket, || async {
            match js.get_object_store(&bucket).await {
                Ok(store) => Ok(store),
                Err(_) => js
                    .create_object_store(object_store::Config {
                        bucket: bucket.clone(),
                        num_replicas: stream.replicas,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| ReplicationError::request(format!("object store {bucket}"), e)),
            }
        })
        .await?;
        until_led(js, &format!("OBJ_{bucket}")).await?;
        Ok(Self { store })
    }

    /// The LSNs of the snapshots held, oldest first. Right after the
    /// bucket is made a listing may come back short (the object store's
    /// consumer may count nothing pending yet): [`publish`] lists until
    /// what it uploaded shows.
    pub async fn lsns(&self) -> Result<Vec<u64>, ReplicationError> {
        let listing = async {
            let mut list = self
                .store
                .list()
                .await
                .map_err(|e| ReplicationError::request("snapshot listing", e))?;
            let mut lsns = Vec::new();
            while let Some(info) = list.next().await {
                let info = info.map_err(|e| ReplicationError::request("snapshot listing", e))?;
                if !info.deleted {
                    lsns.extend(lsn_of(&info.name));
                }
            }
            Ok(lsns)
        };
        let mut lsns = tokio::time::timeout(LIST_WITHIN, listing)
            .await
            .map_err(|_| ReplicationError::request("snapshot listing", "no answer in time"))??;
        lsns.sort_unstable();
        Ok(lsns)
    }

    /// Uploads one snapshot file, trying again while the cluster cannot
    /// take it yet: right after the bucket is made, even once its stream
    /// has a leader, the server this client publishes through may not
    /// know yet where the stream lives, and a chunk finds "no stream" (CI
    /// saw it). Putting an object again under its name replaces it.
    pub async fn put(&self, file: &SnapshotFile) -> Result<(), ReplicationError> {
        let bytes = std::fs::read(&file.path).map_err(|e| {
            ReplicationError::request(format!("reading {}", file.path.display()), e)
        })?;
        let name = object_name(file.lsn);
        patiently("snapshot upload", || async {
            let mut data = bytes.as_slice();
            self.store
                .put(name.as_str(), &mut data)
                .await
                .map(drop)
                .map_err(|e| ReplicationError::request("snapshot upload", e))
        })
        .await
    }

    pub async fn delete(&self, lsn: u64) -> Result<(), ReplicationError> {
        self.store
            .delete(object_name(lsn))
            .await
            .map_err(|e| ReplicationError::request("snapshot delete", e))
    }

    /// One snapshot's bytes. A node's first download, right after it
    /// connected, once found "no responders" (CI saw it, on a cluster
    /// that served the listing just before): [`fetch_newest`] tries again.
    async fn download(&self, lsn: u64) -> Result<Vec<u8>, ReplicationError> {
        let mut object = self
            .store
            .get(object_name(lsn))
            .await
            .map_err(|e| ReplicationError::request("snapshot download", e))?;
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| ReplicationError::request("snapshot download", e))?;
        Ok(bytes)
    }

    /// Writes the newest snapshot into `data_dir`'s snapshot folder (a
    /// temporary file renamed into place) and returns its LSN. It must
    /// reach `at_least` (the record before the stream's first): the writer
    /// purges only below what a snapshot it uploaded covers, so a listing
    /// without one is a short one (a node just connected) and is taken
    /// again, and after that an error, never a folder that cannot follow.
    pub async fn fetch_newest(
        &self,
        data_dir: &Path,
        at_least: u64,
    ) -> Result<u64, ReplicationError> {
        let lsn = patiently("snapshot listing", || async {
            match self.lsns().await?.last() {
                Some(&lsn) if lsn >= at_least => Ok(lsn),
                newest => Err(ReplicationError::request(
                    "snapshot listing",
                    format!("no snapshot reaches LSN {at_least} (newest: {newest:?})"),
                )),
            }
        })
        .await?;
        let bytes = patiently("snapshot download", || self.download(lsn)).await?;
        let dir = snapshot_dir(data_dir);
        let written = (|| {
            std::fs::create_dir_all(&dir)?;
            let temp = dir.join(format!("{}.download", object_name(lsn)));
            std::fs::write(&temp, &bytes)?;
            std::fs::File::open(&temp)?.sync_all()?;
            std::fs::rename(&temp, dir.join(object_name(lsn)))
        })();
        written.map_err(|e| ReplicationError::request("writing the snapshot", e))?;
        Ok(lsn)
    }
}

/// Uploads the snapshots in `data_dir` the bucket lacks, keeps the newest
/// `keep` there, and purges the stream below the message holding the
/// record after the oldest kept one. Returns that oldest kept LSN.
pub async fn publish(
    data_dir: &Path,
    stream: &LogStream,
    store: &SnapshotStore,
    keep: usize,
) -> Result<Option<u64>, ReplicationError> {
    let local = snapshot::list(&snapshot_dir(data_dir))
        .map_err(|e| ReplicationError::request("listing local snapshots", e))?;
    let held = store.lsns().await?;
    let mut uploaded = Vec::new();
    for file in local.iter().filter(|f| !held.contains(&f.lsn)) {
        store.put(file).await?;
        uploaded.push(file.lsn);
    }
    // Listed until what was just uploaded shows (a listing may come back
    // short right after the bucket is made).
    let mut all = patiently("snapshot listing", || async {
        let listed = store.lsns().await?;
        match uploaded.iter().find(|lsn| !listed.contains(lsn)) {
            None => Ok(listed),
            Some(lsn) => Err(ReplicationError::request(
                "snapshot listing",
                format!("snapshot {lsn}, uploaded, is not listed yet"),
            )),
        }
    })
    .await?;
    let dropped = all.len().saturating_sub(keep.max(1));
    for lsn in all.drain(..dropped) {
        store.delete(lsn).await?;
    }
    let Some(&oldest) = all.first() else {
        return Ok(None);
    };
    let from = seek(stream, oldest + 1).await?;
    if from > 1 {
        stream.purge_below(from).await?;
    }
    Ok(Some(oldest))
}
