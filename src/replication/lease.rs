//! The writer's lease and the epochs, in JetStream KV buckets beside the
//! log stream (replicated as it is, history 1):
//! - `<stream>-lease`, key `holder`: who writes now ([`Holder`] as JSON).
//!   The bucket's `max_age` is the lease's TTL, so a lease its holder stops
//!   renewing lapses on the servers' clock, not on any node's. Taking it is
//!   a KV create (only if nobody holds it); renewing is a KV update at the
//!   revision the holder last wrote, so a holder that lost it cannot renew.
//! - `<stream>-epoch`, key `epoch`: the last epoch handed out, advanced by
//!   compare-and-set so two promotions never get the same one. It lives in
//!   a bucket of its own, without `max_age`: in the lease's bucket it would
//!   lapse with the lease and epochs would start again from 1.
//!
//! Every write whose outcome is unclear (a timeout) is settled by reading
//! the entry back: a value only this node (or this call) writes tells
//! whether it landed.

use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::stream::{led_info, patiently};
use super::{LogStream, ReplicationError};

const HOLDER_KEY: &str = "holder";
const EPOCH_KEY: &str = "epoch";
/// Tries of a compare-and-set that keeps losing before giving up. A try
/// loses while another writer's update is still being replicated (the
/// leader counts it, a read does not show it yet), so tries are paced:
/// [`pause`] grows with each one, with jitter so contenders part.
const CAS_TRIES: u32 = 40;
/// The header that marks a KV delete or purge (`DEL`, `PURGE`; a put has
/// none, or `PUT`).
const KV_OPERATION: &str = "KV-Operation";

/// The node that holds (or asks for) the writer's lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The node's name (unique in the deployment).
    pub node: String,
    /// The epoch it writes in (from [`Lease::next_epoch`]).
    pub epoch: u64,
    /// Its HTTP base URL, for a standby to name the writer.
    pub url: Option<String>,
}

/// Why the lease was not taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else holds it.
    #[error("the lease is held by {} (epoch {})", .0.node, .0.epoch)]
    Taken(Holder),
    /// It is no longer ours: another holder took it (`Some`), or it lapsed
    /// (`None`).
    #[error("the lease was lost{}", .0.as_ref().map(|h| format!(" to {} (epoch {})", h.node, h.epoch)).unwrap_or_else(|| " (it lapsed)".into()))]
    Lost(Option<Holder>),
    /// The cluster did not answer clearly.
    #[error(transparent)]
    Replication(#[from] ReplicationError),
}

/// The lease and epoch buckets of one log stream.
#[derive(Clone, Debug)]
pub struct Lease {
    lease: kv::Store,
    epochs: kv::Store,
    /// Makes the tokens that name [`Lease::next_epoch`]'s writes.
    client: async_nats::Client,
}

/// An entry's value, read: a live value and its revision, or the revision
/// of a tombstone (0 when the key never existed or lapsed).
enum Read<T> {
    Live(T, u64),
    Absent(u64),
}

impl Lease {
    /// Opens (or creates) the buckets of `stream`'s lease with this TTL. A
    /// bucket that exists with another TTL or replication is refused.
    pub async fn open(stream: &LogStream, ttl: Duration) -> Result<Self, ReplicationError> {
        if ttl.is_zero() {
            return Err(ReplicationError::InvalidSettings(
                "the lease TTL must be above zero".into(),
            ));
        }
        let lease = bucket(stream, format!("{}-lease", stream.name()), ttl).await?;
        let epochs = bucket(stream, format!("{}-epoch", stream.name()), Duration::ZERO).await?;
        Ok(Self {
            lease,
            epochs,
            client: stream.js.client(),
        })
    }

    /// The current holder and the entry's revision; `None` if the lease
    /// lapsed, was released, or was never taken.
    pub async fn holder(&self) -> Result<Option<(Holder, u64)>, ReplicationError> {
        Ok(match read(&self.lease, HOLDER_KEY).await? {
            Read::Live(holder, revision) => Some((holder, revision)),
            Read::Absent(_) => None,
        })
    }

    /// Takes the lease if nobody holds it (a KV create): `Ok(revision)`, or
    /// `Err(Taken(holder))`.
    pub async fn acquire(&self, me: &Holder) -> Result<u64, LeaseError> {
        let value = to_json(me)?;
        for tried in 0..CAS_TRIES {
            pause(tried).await;
            let outcome = match read(&self.lease, HOLDER_KEY).await? {
                Read::Live(holder, _) if holder != *me => return Err(LeaseError::Taken(holder)),
                Read::Live(_, revision) => return Ok(revision),
                Read::Absent(0) => self.lease.create(HOLDER_KEY, value.clone()).await.ok(),
                // A released lease leaves a tombstone: take it at its revision.
                Read::Absent(revision) => self
                    .lease
                    .update(HOLDER_KEY, value.clone(), revision)
                    .await
                    .ok(),
            };
            if let Some(revision) = outcome {
                return Ok(revision);
            }
            // Refused or unclear: the next read says whose it is now.
        }
        Err(gave_up(&self.lease, "acquire", CONTENDED).into())
    }

    /// Renews: `Ok(new revision)`, or `Err(Lost(..))` if someone else
    /// holds it or it lapsed. The entry is read first and updated (KV
    /// update) only at a revision that holds `me`: a revision alone is no
    /// proof of holding (anyone can read the current one), so a renewal
    /// never overwrites another holder. `revision` is the one `me` last
    /// wrote; a newer one of its own (an unclear renewal that landed) is
    /// renewed as well.
    pub async fn renew(&self, me: &Holder, revision: u64) -> Result<u64, LeaseError> {
        let ours = match read::<Holder>(&self.lease, HOLDER_KEY).await? {
            Read::Live(holder, now) if holder == *me && now >= revision => now,
            Read::Live(holder, _) if holder == *me => {
                return Err(gave_up(&self.lease, "renew", LAGGING).into());
            }
            Read::Live(holder, _) => return Err(LeaseError::Lost(Some(holder))),
            Read::Absent(_) => return Err(LeaseError::Lost(None)),
        };
        if let Ok(renewed) = self.lease.update(HOLDER_KEY, to_json(me)?, ours).await {
            return Ok(renewed);
        }
        // Refused or unclear: only this node writes this holder, so a
        // newer entry naming it is this renewal.
        match read::<Holder>(&self.lease, HOLDER_KEY).await? {
            Read::Live(holder, now) if holder == *me && now > ours => Ok(now),
            Read::Live(holder, _) if holder == *me => {
                Err(gave_up(&self.lease, "renew", "the update was not taken").into())
            }
            Read::Live(holder, _) => Err(LeaseError::Lost(Some(holder))),
            Read::Absent(_) => Err(LeaseError::Lost(None)),
        }
    }

    /// Gives the lease up (a KV delete at `revision`), so a standby need
    /// not wait for it to lapse. A lease no longer at `revision` is not
    /// ours: it is left alone.
    pub async fn release(&self, revision: u64) -> Result<(), ReplicationError> {
        match self
            .lease
            .delete_expect_revision(HOLDER_KEY, Some(revision))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => match read::<Holder>(&self.lease, HOLDER_KEY).await? {
                Read::Live(_, now) if now == revision => {
                    Err(ReplicationError::request("lease release", e))
                }
                // Released (by this call, if unclear), lapsed, or someone else's.
                _ => Ok(()),
            },
        }
    }

    /// Takes the next epoch: key `epoch` advanced by compare-and-set, so
    /// two promotions never get the same epoch. Returns it.
    pub async fn next_epoch(&self) -> Result<u64, ReplicationError> {
        // The value carries a token unique to this call, so an unclear
        // write is settled by reading it back.
        let token = self.client.new_inbox();
        for tried in 0..CAS_TRIES {
            pause(tried).await;
            let (last, revision) = match read::<EpochValue>(&self.epochs, EPOCH_KEY).await? {
                Read::Live(value, _) if value.token == token => return Ok(value.epoch),
                Read::Live(value, revision) => (value.epoch, revision),
                Read::Absent(revision) => (0, revision),
            };
            let epoch = last.checked_add(1).ok_or_else(|| {
                ReplicationError::InvalidSettings("the epochs are exhausted".into())
            })?;
            let value = to_json(&EpochValue {
                epoch,
                token: token.clone(),
            })?;
            let written = if revision == 0 {
                self.epochs.create(EPOCH_KEY, value).await.is_ok()
            } else {
                self.epochs.update(EPOCH_KEY, value, revision).await.is_ok()
            };
            if written {
                return Ok(epoch);
            }
        }
        Err(gave_up(&self.epochs, "next epoch", CONTENDED))
    }
}

/// The `epoch` key's value.
#[derive(Serialize, Deserialize)]
struct EpochValue {
    epoch: u64,
    /// Names the call that wrote it.
    token: String,
}

/// Gets or creates a bucket of the stream's replication, history 1, with
/// this `max_age` (zero: none), once its stream has a leader; refuses one
/// that exists otherwise.
async fn bucket(
    stream: &LogStream,
    name: String,
    max_age: Duration,
) -> Result<kv::Store, ReplicationError> {
    let config = kv::Config {
        bucket: name.clone(),
        history: 1,
        max_age,
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: stream.replicas,
        ..Default::default()
    };
    let store = patiently(&name, || async {
        match stream.js.create_key_value(config.clone()).await {
            Ok(store) => Ok(store),
            Err(create) => stream
                .js
                .get_key_value(name.clone())
                .await
                .map_err(|_| ReplicationError::request(format!("bucket {name}"), create)),
        }
    })
    .await?;
    let info = patiently(&name, || {
        let mut bucket_stream = store.stream.clone();
        async move { led_info(&mut bucket_stream).await }
    })
    .await?;
    let (age, replicas) = (info.config.max_age, info.config.num_replicas);
    if replicas != stream.replicas {
        return Err(ReplicationError::ReplicasMismatch {
            stream: format!("KV_{name}"),
            existing: replicas,
            wanted: stream.replicas,
        });
    }
    if age != max_age {
        return Err(ReplicationError::InvalidSettings(format!(
            "bucket {name} exists with max_age {age:?}, this node asks for {max_age:?}"
        )));
    }
    Ok(store)
}

/// Reads `key` from the bucket's stream leader (a KV `entry` may be served
/// by a lagging replica, and a compare-and-set on a stale revision only
/// fails): its live value and revision, or the revision of its tombstone
/// (0 for none: never written, or lapsed). A read changes nothing, so a
/// failed one is made again while the cluster settles (CI saw one fail
/// while the bucket's leader moved).
async fn read<T: for<'de> Deserialize<'de>>(
    store: &kv::Store,
    key: &str,
) -> Result<Read<T>, ReplicationError> {
    patiently(key, || read_once(store, key)).await
}

async fn read_once<T: for<'de> Deserialize<'de>>(
    store: &kv::Store,
    key: &str,
) -> Result<Read<T>, ReplicationError> {
    let subject = format!("{}{key}", store.prefix);
    let raw = match store.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(raw) => raw,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
            return Ok(Read::Absent(0))
        }
        Err(e) => {
            let what = format!("bucket {} key {key}", store.name);
            return Err(ReplicationError::request(what, e));
        }
    };
    let operation = raw.headers.get(KV_OPERATION).map(|op| op.as_str());
    if matches!(operation, Some("DEL" | "PURGE")) {
        return Ok(Read::Absent(raw.sequence));
    }
    let value = serde_json::from_slice(&raw.payload).map_err(|e| ReplicationError::BadEntry {
        bucket: store.name.clone(),
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Read::Live(value, raw.sequence))
}

fn to_json<T: Serialize>(value: &T) -> Result<Bytes, ReplicationError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ReplicationError::InvalidSettings(format!("cannot encode: {e}")))
}

/// Before try `tried` (none before the first): up to 2^tried ms (at most
/// 200 ms), a random part of it.
async fn pause(tried: u32) {
    if tried == 0 {
        return;
    }
    let most = 2u64.saturating_pow(tried).min(200);
    let ms = rand::random_range(most / 2..=most);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Why a lease write gave up without an answer (the caller may try again).
const CONTENDED: &str = "no clear answer after every compare-and-set try";
const LAGGING: &str = "the entry read back is older than the revision this node wrote";

fn gave_up(store: &kv::Store, what: &str, reason: &str) -> ReplicationError {
    ReplicationError::Request {
        what: format!("{what} in bucket {}", store.name),
        reason: reason.to_owned(),
    }
}
