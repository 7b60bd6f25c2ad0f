//! The replicated log stream: one JetStream stream (subject `<stream>.log`,
//! file storage, R replicas) that holds the journal's batches in order. It
//! owns the fenced append (the rule below), reading one message, and
//! purging below a sequence; following it is `follow.rs`'s. It also owns
//! waiting for a stream just made to have a leader ([`until_led`]), which
//! the snapshot and lease buckets' streams use too, and making a failed
//! request again while the cluster settles ([`patiently`]: only a failed
//! request, never a refusal; node start, the buckets, bootstrapping and
//! lease reads go through it).
//!
//! **The fence.** Every append carries `Nats-Expected-Last-Sequence` (the
//! stream-wide check: the stream takes the message only if its last
//! sequence is the one the writer expects) and `Nats-Msg-Id` (so a retry of
//! a message that landed is a duplicate, not a second message). An append
//! whose outcome is unclear — a timeout, a lost connection, a "wrong last
//! sequence" refusal (clients may report a refused append either way) — is
//! settled by reading the message at the sequence it wanted: ours (same
//! id) is a success, another writer's is [`AppendError::Fenced`], none is a
//! retry with the same id until the deadline.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream::LastRawMessageErrorKind};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::follow::Follower;
use super::ReplicationError;

/// The header that names a message for deduplication and for the fence's
/// "whose message is this" question.
pub(super) const MSG_ID: &str = "Nats-Msg-Id";
/// How long the stream remembers message ids: a retry of the same append
/// within it is answered "duplicate" with the first message's sequence
/// (past it, the read-back settles it just the same).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The pause between two tries of an unclear append grows from the first
/// to the second (a leader election takes seconds; no reason to spin).
const RETRY_PAUSE_FIRST: Duration = Duration::from_millis(25);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(500);
/// The client pings its server this often and leaves it for another after
/// two pings go unanswered: a hung server (paused, a stalled machine) keeps
/// its TCP connection open, and the default (60 s) would strand a writer
/// for minutes. Small enough to find another server within an append's
/// deadline; large enough that a busy server is not left for nothing.
const PING_INTERVAL: Duration = Duration::from_secs(2);

/// Where the log lives and how long one request may take.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    /// NATS server URLs (`nats://host:port`); all are seeds, the client
    /// finds the rest of the cluster from them.
    pub servers: Vec<String>,
    /// The stream's name: letters, digits, `-` and `_` (it names the
    /// subject `<stream>.log` and the lease buckets too).
    pub stream: String,
    /// Replicas of the stream and of the lease buckets (3 for a cluster of
    /// three: one machine may die).
    pub replicas: usize,
    /// How long one JetStream request or publish acknowledgement may take.
    pub request_timeout: Duration,
}

/// One message of the log stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamMessage {
    pub seq: u64,
    /// Its `Nats-Msg-Id` (the writer's `<stream>-<epoch>-<first LSN>`).
    pub msg_id: Option<String>,
    pub payload: Bytes,
}

/// Why an append was not acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The stream does not continue from the writer's `expected_last` with
    /// this message: another writer's message stands at `seq` (`by` is its
    /// id), or the message there has no id, or the stream ends before
    /// `expected_last` (`by: None`). This writer must stop appending.
    #[error("fenced at sequence {seq} by {}", by.as_deref().unwrap_or("(no message id)"))]
    Fenced { seq: u64, by: Option<String> },
    /// The outcome is still unknown at the deadline (no stream leader, no
    /// quorum, no connection): the message may yet land, so the caller
    /// must settle it (read `seq`) before it acknowledges or refuses.
    #[error("append unavailable: {reason}")]
    Unavailable { reason: String },
}

/// A connection to the cluster and the log stream on it. Cheap to clone
/// (clones share the connection).
#[derive(Clone, Debug)]
pub struct LogStream {
    pub(super) js: jetstream::Context,
    stream: jetstream::stream::Stream,
    name: String,
    subject: String,
    pub(super) replicas: usize,
    request_timeout: Duration,
}

/// What one publish attempt told us.
enum Attempt {
    /// The stream acknowledged it at this sequence (as new, or as a
    /// duplicate of the message it holds with this id).
    Acked(u64),
    /// No clear answer; the reason, for the error at the deadline.
    Unclear(String),
}

impl LogStream {
    /// Connects (all servers as seeds) and gets or creates the stream:
    /// subject `<stream>.log`, file storage, `replicas`, direct gets
    /// allowed, a 2-minute duplicate window, no size or age limits (purging
    /// is explicit). An existing stream with other replicas is an error
    /// naming both.
    pub async fn connect(settings: &StreamSettings) -> Result<Self, ReplicationError> {
        check_settings(settings)?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(settings.request_timeout)
            .request_timeout(Some(settings.request_timeout))
            .ping_interval(PING_INTERVAL)
            .connect(settings.servers.as_slice())
            .await
            .map_err(|e| ReplicationError::Connect {
                servers: settings.servers.join(","),
                reason: e.to_string(),
            })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(settings.request_timeout)
            .build(client);
        let subject = format!("{}.log", settings.stream);
        let config = jetstream::stream::Config {
            name: settings.stream.clone(),
            subjects: vec![subject.clone()],
            storage: jetstream::stream::StorageType::File,
            num_replicas: settings.replicas,
            allow_direct: true,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        let (stream, existing) = stream_and_replicas(&js, config).await?;
        if existing != settings.replicas {
            return Err(ReplicationError::ReplicasMismatch {
                stream: settings.stream.clone(),
                existing,
                wanted: settings.replicas,
            });
        }
        Ok(Self {
            js,
            stream,
            name: settings.stream.clone(),
            subject,
            replicas: settings.replicas,
            request_timeout: settings.request_timeout,
        })
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sequence of the stream's last message (0 when it never held one).
    pub async fn last_sequence(&self) -> Result<u64, ReplicationError> {
        Ok(self.state().await?.last_sequence)
    }

    /// The sequence of the stream's first message (past the last one when
    /// it holds none).
    pub async fn first_sequence(&self) -> Result<u64, ReplicationError> {
        Ok(self.state().await?.first_sequence)
    }

    async fn state(&self) -> Result<jetstream::stream::State, ReplicationError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| ReplicationError::request(format!("stream {} info", self.name), e))?;
        Ok(info.state)
    }

    /// Appends one message, fenced: headers `Nats-Expected-Last-Sequence:
    /// expected_last` and `Nats-Msg-Id: msg_id`. `Ok(seq)` once the stream
    /// holds it at `seq == expected_last + 1`. A "wrong last sequence"
    /// refusal, a timeout or any unclear outcome reads the message at
    /// `expected_last + 1`: ours (same id) → Ok; another's → `Fenced`; none
    /// → publishes again with the same id, until `deadline` (then
    /// `Unavailable`). Never reports success for a message that is not at
    /// that sequence.
    pub async fn append(
        &self,
        expected_last: u64,
        msg_id: &str,
        payload: Bytes,
        deadline: Duration,
    ) -> Result<u64, AppendError> {
        let want = expected_last.checked_add(1).ok_or(AppendError::Fenced {
            seq: expected_last,
            by: None,
        })?;
        let until = Instant::now() + deadline;
        let mut pause = RETRY_PAUSE_FIRST;
        loop {
            let reason = match self
                .publish_once(expected_last, msg_id, &payload, until)
                .await
            {
                Attempt::Acked(seq) if seq == want => return Ok(want),
                Attempt::Acked(seq) => format!("acknowledged at {seq}, not {want}"),
                Attempt::Unclear(reason) => reason,
            };
            if let Some(settled) = self.settle(want, msg_id, until).await {
                return settled;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AppendError::Unavailable { reason });
            }
            tracing::debug!(stream = %self.name, want, %reason, "append unclear, retrying");
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }

    /// One publish with the fence's headers, waiting for its
    /// acknowledgement no longer than a request timeout or `until`.
    async fn publish_once(
        &self,
        expected_last: u64,
        msg_id: &str,
        payload: &Bytes,
        until: Instant,
    ) -> Attempt {
        let message = jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .expected_last_sequence(expected_last)
            .message_id(msg_id);
        let attempt = async {
            self.js
                .send_publish(self.subject.clone(), message)
                .await?
                .await
        };
        let limit = self
            .request_timeout
            .min(until.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(ack)) => Attempt::Acked(ack.sequence),
            Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                Attempt::Unclear(format!("wrong last sequence (expected {expected_last})"))
            }
            Ok(Err(e)) => Attempt::Unclear(format!("publish: {e}")),
            Err(_) => Attempt::Unclear(format!("no acknowledgement within {limit:?}")),
        }
    }

    /// Settles an unclear append by reading the message at `want`: `Some`
    /// when that answers it (ours, another's, or a stream that cannot
    /// continue from `want - 1`), `None` when it must be tried again.
    async fn settle(
        &self,
        want: u64,
        msg_id: &str,
        until: Instant,
    ) -> Option<Result<u64, AppendError>> {
        if Instant::now() >= until {
            return None;
        }
        if let Some(found) = self.read_back(want).await? {
            return Some(whose(want, msg_id, found));
        }
        // No message at `want` yet. The stream's end says why: still
        // `want - 1` (ours not taken yet: try again), before it (the
        // stream ends before the writer's expected last: fenced), or past
        // it — a message may have been applied since the read, so read
        // again before concluding.
        let last = self.last_sequence().await.ok()?;
        if last + 1 == want {
            return None;
        }
        if last < want {
            return Some(Err(AppendError::Fenced {
                seq: want,
                by: None,
            }));
        }
        Some(match self.read_back(want).await? {
            Some(found) => whose(want, msg_id, found),
            None => Err(AppendError::Fenced {
                seq: want,
                by: None,
            }),
        })
    }

    /// The message at `want` for [`Self::settle`]: `None` (try again) when
    /// it cannot be read.
    async fn read_back(&self, want: u64) -> Option<Option<StreamMessage>> {
        match self.message(want).await {
            Ok(found) => Some(found),
            Err(e) => {
                tracing::debug!(stream = %self.name, want, error = %e, "cannot read back");
                None
            }
        }
    }

    /// The message at `seq` (read from the stream's leader), `None` if the
    /// stream holds none there (not yet written, or purged).
    pub async fn message(&self, seq: u64) -> Result<Option<StreamMessage>, ReplicationError> {
        match self.stream.get_raw_message(seq).await {
            Ok(raw) => Ok(Some(StreamMessage {
                seq: raw.sequence,
                msg_id: raw
                    .headers
                    .get(MSG_ID)
                    .map(|value| value.as_str().to_owned()),
                payload: raw.payload,
            })),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(ReplicationError::request(
                format!("stream {} message {seq}", self.name),
                e,
            )),
        }
    }

    /// Every message from `from_seq` on (0 reads as 1), in order, each
    /// once, then waits for new ones (see `follow.rs`: its consumer is made
    /// again from the next sequence after any error or silence, so a node's
    /// death or a leader change costs seconds, never a gap; such errors are
    /// logged, not yielded). A sequence the stream skips (a purged start, a
    /// deleted message) yields [`ReplicationError::Gap`] and ends it.
    pub async fn follow(
        &self,
        from_seq: u64,
    ) -> Result<
        impl futures_util::Stream<Item = Result<StreamMessage, ReplicationError>>
            + Send
            + Unpin
            + 'static,
        ReplicationError,
    > {
        let follower = Follower::start(
            self.stream.clone(),
            self.name.clone(),
            self.subject.clone(),
            from_seq,
            self.request_timeout,
        )
        .await?;
        Ok(follower.into_stream().boxed())
    }

    /// Deletes every message below `seq` (kept: `seq` and later). Refused
    /// past the stream's end + 1: that would move the stream's next
    /// sequence and so every writer's fence.
    pub async fn purge_below(&self, seq: u64) -> Result<(), ReplicationError> {
        let last = self.last_sequence().await?;
        if seq > last + 1 {
            return Err(ReplicationError::PurgeBeyondEnd {
                stream: self.name.clone(),
                seq,
                last,
            });
        }
        self.stream.purge().sequence(seq).await.map_err(|e| {
            ReplicationError::request(format!("purge {} below {seq}", self.name), e)
        })?;
        Ok(())
    }
}

/// Most attempts at getting or making a stream while the cluster cannot
/// answer yet (just started, or electing a leader: seconds), paced from
/// 100 ms growing to 2 s (about half a minute in all).
const CONNECT_ATTEMPTS: u32 = 20;

/// Runs `attempt` until it succeeds, at most [`CONNECT_ATTEMPTS`] times
/// (the cluster is still settling); the last error if it never does. Only
/// a failed request is tried again: any other error (settings, a gap, an
/// entry this crate cannot read) says the same thing every time.
pub(super) async fn patiently<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, ReplicationError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ReplicationError>>,
{
    let mut pause = Duration::from_millis(100);
    let mut tried = 0;
    loop {
        tried += 1;
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(error) if tried >= CONNECT_ATTEMPTS || !error.is_request() => return Err(error),
            Err(error) => {
                tracing::warn!(what, %error, "the cluster cannot answer yet; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// The stream's info once it has a leader. A stream just made in a cluster
/// is created before its replicas elect one, and until then a publish to
/// its subjects finds no stream ("no responders"): whoever makes a stream
/// waits here before writing to it.
pub(super) async fn led_info(
    stream: &mut jetstream::stream::Stream,
) -> Result<jetstream::stream::Info, ReplicationError> {
    let info = stream
        .info()
        .await
        .map_err(|e| ReplicationError::request("stream info", e))?
        .clone();
    match &info.cluster {
        Some(cluster) if cluster.leader.is_none() => Err(ReplicationError::request(
            format!("stream {}", info.config.name),
            "no leader elected yet",
        )),
        _ => Ok(info),
    }
}

/// Waits until the stream `name` has a leader (see [`led_info`]).
pub(super) async fn until_led(js: &jetstream::Context, name: &str) -> Result<(), ReplicationError> {
    patiently(name, || async {
        let mut stream = js
            .get_stream(name)
            .await
            .map_err(|e| ReplicationError::request(format!("stream {name}"), e))?;
        led_info(&mut stream).await.map(drop)
    })
    .await
}

/// Gets or makes the stream once it has a leader, and reads its replica
/// count; a request that fails (the cluster is still settling) is tried
/// again.
async fn stream_and_replicas(
    js: &jetstream::Context,
    config: jetstream::stream::Config,
) -> Result<(jetstream::stream::Stream, usize), ReplicationError> {
    let name = config.name.clone();
    patiently(&name, || async {
        let mut stream = js
            .get_or_create_stream(config.clone())
            .await
            .map_err(|e| ReplicationError::request(format!("stream {name}"), e))?;
        let replicas = led_info(&mut stream).await?.config.num_replicas;
        Ok((stream, replicas))
    })
    .await
}

/// Ours (same id) → `Ok(want)`, another's → `Fenced`.
fn whose(want: u64, msg_id: &str, found: StreamMessage) -> Result<u64, AppendError> {
    if found.msg_id.as_deref() == Some(msg_id) {
        Ok(want)
    } else {
        Err(AppendError::Fenced {
            seq: want,
            by: found.msg_id,
        })
    }
}

/// Refuses settings that cannot work, before connecting.
fn check_settings(settings: &StreamSettings) -> Result<(), ReplicationError> {
    let bad = |why: String| Err(ReplicationError::InvalidSettings(why));
    if settings.servers.is_empty() {
        return bad("no NATS server given".into());
    }
    let name = &settings.stream;
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if name.is_empty() || !name.chars().all(allowed) {
        return bad(format!(
            "stream name {name:?}: use letters, digits, '-' and '_' only"
        ));
    }
    if settings.replicas == 0 {
        return bad("replicas must be at least 1".into());
    }
    if settings.request_timeout.is_zero() {
        return bad("request_timeout must be above zero".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(stream: &str) -> StreamSettings {
        StreamSettings {
            servers: vec!["nats://127.0.0.1:4222".into()],
            stream: stream.into(),
            replicas: 3,
            request_timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        assert!(check_settings(&settings("ledger-a_1")).is_ok());
        for name in ["", "a.b", "a b", "a*", "a>"] {
            assert!(
                matches!(
                    check_settings(&settings(name)),
                    Err(ReplicationError::InvalidSettings(_))
                ),
                "{name:?} accepted"
            );
        }
        let mut none = settings("s");
        none.servers.clear();
        assert!(check_settings(&none).is_err());
        let mut zero = settings("s");
        zero.replicas = 0;
        assert!(check_settings(&zero).is_err());
        let mut instant = settings("s");
        instant.request_timeout = Duration::ZERO;
        assert!(check_settings(&instant).is_err());
    }

    /// An attempt that fails `failures` times with `error`, then succeeds;
    /// how many times it ran.
    async fn attempts(failures: u32, error: fn() -> ReplicationError) -> (bool, u32) {
        let tried = std::cell::Cell::new(0);
        let outcome = patiently("test", || async {
            tried.set(tried.get() + 1);
            if tried.get() <= failures {
                Err(error())
            } else {
                Ok(())
            }
        })
        .await;
        (outcome.is_ok(), tried.get())
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_request_is_made_again_and_nothing_else_is() {
        let request = || ReplicationError::request("x", "503 no responders");
        assert_eq!(attempts(3, request).await, (true, 4));
        assert_eq!(
            attempts(CONNECT_ATTEMPTS, request).await,
            (false, CONNECT_ATTEMPTS)
        );
        let settings = || ReplicationError::InvalidSettings("bad".into());
        assert_eq!(attempts(3, settings).await, (false, 1));
    }
}
