//! Following the log stream ([`LogStream::follow`](super::LogStream::follow)):
//! every message from a sequence on, in order, each once, then new ones as
//! they come. It owns its consumer: an ephemeral pull consumer (one
//! replica, in memory, no acks) that starts at the next sequence wanted,
//! pulled in batches that each wait at most a request timeout. Any error or
//! silence (its node died or hangs, the stream is electing a leader) drops
//! the consumer and makes a new one from the next sequence (after a pause
//! of 50 ms growing to 1 s while it keeps failing), rather
//! than after missed heartbeats (async-nats' ordered consumer waits two
//! 15 s heartbeats, and restarts from the stream's first message if its
//! consumer goes before it delivered anything).

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;

use super::{ReplicationError, StreamMessage, MSG_ID};

/// Messages asked for per pull.
const BATCH: usize = 256;
/// The pause before a new consumer after an error grows from the first to
/// the last (an election takes seconds).
const PAUSE_FIRST: Duration = Duration::from_millis(50);
const PAUSE_MAX: Duration = Duration::from_secs(1);

pub(super) struct Follower {
    stream: jetstream::stream::Stream,
    name: String,
    subject: String,
    /// The next sequence to yield.
    next: u64,
    /// How long one pull waits for new messages.
    wait: Duration,
    consumer: Option<consumer::PullConsumer>,
    /// The consumer has delivered nothing yet: a first message past
    /// `next` is then a real gap, not a lost delivery.
    fresh: bool,
    ready: VecDeque<StreamMessage>,
    ended: bool,
}

impl Follower {
    /// A follower from `from_seq` (0 reads as 1). Its first consumer is
    /// made here if it can be; if not (the stream is electing a leader,
    /// say), it is made again like any later one, so following never
    /// gives up on a passing failure.
    pub(super) async fn start(
        stream: jetstream::stream::Stream,
        name: String,
        subject: String,
        from_seq: u64,
        wait: Duration,
    ) -> Result<Self, ReplicationError> {
        let mut follower = Self {
            stream,
            name,
            subject,
            next: from_seq.max(1),
            wait,
            consumer: None,
            fresh: true,
            ready: VecDeque::new(),
            ended: false,
        };
        if let Err(error) = follower.consumer().await {
            tracing::warn!(stream = %follower.name, next = follower.next, %error,
                "following the log stream: no consumer yet; trying again");
        }
        Ok(follower)
    }

    /// The stream of messages; it yields an error only for a gap, and ends
    /// after it.
    pub(super) fn into_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<StreamMessage, ReplicationError>> + Send + 'static
    {
        futures_util::stream::unfold(self, |mut follower| async move {
            if follower.ended {
                return None;
            }
            let item = follower.next_message().await;
            follower.ended = item.is_err();
            Some((item, follower))
        })
    }

    /// The next message, waiting for it as long as it takes: after any
    /// other error the consumer is dropped and made again, after a pause;
    /// only a gap is returned.
    async fn next_message(&mut self) -> Result<StreamMessage, ReplicationError> {
        let mut pause = PAUSE_FIRST;
        loop {
            if let Some(message) = self.ready.pop_front() {
                return Ok(message);
            }
            match self.pull().await {
                Ok(()) => pause = PAUSE_FIRST,
                Err(e @ ReplicationError::Gap { .. }) => return Err(e),
                Err(e) => {
                    self.consumer = None;
                    tracing::warn!(stream = %self.name, next = self.next, error = %e,
                        "following the log stream: making a new consumer");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(PAUSE_MAX);
                }
            }
        }
    }

    /// One pull: whatever the consumer delivers within `wait` (nothing, if
    /// no message is new), in order, into `ready`.
    async fn pull(&mut self) -> Result<(), ReplicationError> {
        let consumer = self.consumer().await?;
        let mut batch = consumer
            .batch()
            .max_messages(BATCH)
            .expires(self.wait)
            .messages()
            .await
            .map_err(|e| self.failed(e))?;
        let silence = self.wait * 2;
        loop {
            let delivered = tokio::time::timeout(silence, batch.next())
                .await
                .map_err(|_| self.failed(format!("no answer within {silence:?}")))?;
            let Some(delivered) = delivered else {
                return Ok(());
            };
            let message = delivered.map_err(|e| self.failed(e))?;
            if !self.take(message)? {
                // A delivery was lost: a new consumer from `next`.
                self.consumer = None;
                return Ok(());
            }
        }
    }

    /// The current consumer, or a new one starting at `next`.
    async fn consumer(&mut self) -> Result<consumer::PullConsumer, ReplicationError> {
        if let Some(consumer) = &self.consumer {
            return Ok(consumer.clone());
        }
        let config = consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: self.next,
            },
            ack_policy: consumer::AckPolicy::None,
            filter_subject: self.subject.clone(),
            num_replicas: 1,
            memory_storage: true,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        };
        let consumer = self
            .stream
            .create_consumer(config)
            .await
            .map_err(|e| self.failed(e))?;
        self.consumer = Some(consumer.clone());
        self.fresh = true;
        Ok(consumer)
    }

    /// Takes a delivered message if it is the next one (`Ok(true)`), drops
    /// one already taken; `Ok(false)` when one was skipped (a delivery
    /// lost: start again from `next`), `Gap` when the stream itself skips.
    fn take(&mut self, message: jetstream::Message) -> Result<bool, ReplicationError> {
        let seq = message
            .info()
            .map_err(|e| self.failed(format!("message info: {e}")))?
            .stream_sequence;
        let fresh = std::mem::replace(&mut self.fresh, false);
        if seq < self.next {
            return Ok(true);
        }
        if seq > self.next {
            if !fresh {
                return Ok(false);
            }
            return Err(ReplicationError::Gap {
                stream: self.name.clone(),
                expected: self.next,
                got: seq,
            });
        }
        self.next = seq + 1;
        let message = message.message;
        self.ready.push_back(StreamMessage {
            seq,
            msg_id: message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(MSG_ID))
                .map(|value| value.as_str().to_owned()),
            payload: message.payload,
        });
        Ok(true)
    }

    fn failed(&self, error: impl std::fmt::Display) -> ReplicationError {
        ReplicationError::request(format!("follow {} at {}", self.name, self.next), error)
    }
}
