//! The delivery loop, apart from where its events come from and where
//! they go: it reads an [`EventSource`] from the consumer's durable
//! cursor, POSTs each batch to an [`Endpoint`] until one answers 2xx
//! (retrying the same batch, re-signed, after a capped exponential backoff
//! on the ledger's clock), then acknowledges the batch's last LSN. So
//! delivery is at-least-once and in order: an event is acknowledged only
//! after the receiver took it, and the only events delivered twice are
//! those of a batch taken but not yet acknowledged (the loop stopped, or
//! the acknowledgement failed, in between).
//!
//! A failing source (an acknowledgement or read that did not happen) is
//! retried the same way, reopening the feed at the durable cursor. Two
//! ends are final: the ledger shutting down, and `cursor_expired` (the log
//! pruned events the receiver never took: the host must resynchronise and
//! reset the cursor).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::clock::SharedClock;
use crate::domain::feed::FeedEvent;
use crate::error::LedgerError;

use super::backoff::Backoff;
use super::sign::Signer;

/// Where delivered events come from: a ledger's feed, or a test's fake.
pub(crate) trait EventSource {
    /// Opens the feed after `consumer`'s durable cursor, registering the
    /// consumer at 0 if it has none; the cursor.
    fn resume(&mut self, consumer: &str) -> impl Future<Output = Result<u64, LedgerError>>;
    /// The next events, at most `max`; empty when none came within `wait`.
    fn next(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<FeedEvent>, LedgerError>>;
    /// Makes `lsn` `consumer`'s durable cursor.
    fn ack(&mut self, consumer: &str, lsn: u64) -> impl Future<Output = Result<(), LedgerError>>;
}

/// Where batches go: the receiver's URL, or a test's fake. `Ok` only for
/// an answer that took the batch (2xx); `Err` says why not.
pub(crate) trait Endpoint {
    fn post(
        &mut self,
        body: Arc<[u8]>,
        signature: String,
    ) -> impl Future<Output = Result<(), String>>;
}

/// What the loop does, fixed at start.
pub(crate) struct Plan {
    pub consumer: String,
    /// Most events per POST.
    pub batch: usize,
    pub backoff: Backoff,
    pub signer: Signer,
    /// How long one read of the feed waits for new events.
    pub idle_wait: Duration,
}

/// Why the loop ended by itself.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The ledger is shutting down.
    ShutDown,
    /// The log no longer holds the events after the cursor.
    CursorExpired(LedgerError),
}

/// A POST's body: `{"events": [FeedEvent, ...]}`.
#[derive(Serialize)]
struct BatchJson<'a> {
    events: &'a [FeedEvent],
}

/// Delivers until the ledger shuts down or the cursor expires (a caller
/// stops it sooner by dropping the future: at-least-once holds, since
/// nothing is acknowledged before the receiver took it).
pub(crate) async fn deliver(
    mut source: impl EventSource,
    mut endpoint: impl Endpoint,
    plan: Plan,
    clock: SharedClock,
) -> Ended {
    let mut failures = 0_u32;
    loop {
        let error = match pump(&mut source, &mut endpoint, &plan, &clock, &mut failures).await {
            Ok(never) => match never {},
            Err(error) => error,
        };
        if let Some(ended) = final_end(&plan.consumer, error.clone()) {
            return ended;
        }
        failures = failures.saturating_add(1);
        let retry_in = plan.backoff.delay(failures);
        tracing::warn!(
            consumer = plan.consumer,
            attempt = failures,
            retry_in_ms = retry_in.as_millis(),
            %error,
            "webhook: reading or acknowledging the feed failed; reopening it at the durable cursor"
        );
        clock.sleep(retry_in).await;
    }
}

/// Reads, delivers and acknowledges batches until the source fails.
async fn pump(
    source: &mut impl EventSource,
    endpoint: &mut impl Endpoint,
    plan: &Plan,
    clock: &SharedClock,
    failures: &mut u32,
) -> Result<std::convert::Infallible, LedgerError> {
    let cursor = source.resume(&plan.consumer).await?;
    tracing::info!(
        consumer = plan.consumer,
        cursor,
        "webhook: delivering the events after the cursor"
    );
    loop {
        let events = source.next(plan.batch, plan.idle_wait).await?;
        let Some(last) = events.last().map(|e| e.lsn) else {
            continue;
        };
        let body = serde_json::to_vec(&BatchJson { events: &events }).map_err(|e| {
            LedgerError::EventsUnavailable {
                reason: format!("cannot write a webhook batch: {e}"),
            }
        })?;
        post_until_taken(endpoint, Arc::from(body), &events, plan, clock).await;
        source.ack(&plan.consumer, last).await?;
        *failures = 0;
    }
}

/// POSTs `body` (the batch `events`) until the endpoint takes it, signed
/// anew at each attempt.
async fn post_until_taken(
    endpoint: &mut impl Endpoint,
    body: Arc<[u8]>,
    events: &[FeedEvent],
    plan: &Plan,
    clock: &SharedClock,
) {
    let first_lsn = events.first().map_or(0, |e| e.lsn);
    let last_lsn = events.last().map_or(0, |e| e.lsn);
    let mut attempt = 0_u32;
    loop {
        attempt = attempt.saturating_add(1);
        let signature = plan.signer.header(clock.unix_ms() / 1000, &body);
        let Err(why) = endpoint.post(Arc::clone(&body), signature).await else {
            return;
        };
        let retry_in = plan.backoff.delay(attempt);
        tracing::warn!(
            consumer = plan.consumer,
            attempt,
            first_lsn,
            last_lsn,
            retry_in_ms = retry_in.as_millis(),
            error = why,
            "webhook delivery failed; retrying the same batch"
        );
        clock.sleep(retry_in).await;
    }
}

/// The loop's end for `error`, if it is final (logged here).
fn final_end(consumer: &str, error: LedgerError) -> Option<Ended> {
    match error {
        LedgerError::ShuttingDown => {
            tracing::info!(consumer, "webhook: the ledger is shutting down; stopped");
            Some(Ended::ShutDown)
        }
        LedgerError::CursorExpired { .. } => {
            tracing::error!(
                consumer,
                %error,
                "webhook stopped: the log no longer holds the events after its cursor; \
                 resynchronise the receiver, reset the cursor \
                 (PUT /v1/consumers/{{name}}/cursor or Ledger::ack) and restart"
            );
            Some(Ended::CursorExpired(error))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tokio::sync::mpsc;
    use tokio::task::{spawn_local, LocalSet};

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::domain::feed::{FeedBody, FEED_VERSION};
    use crate::domain::ids::TransactionId;
    use crate::domain::money::CurrencyCode;
    use rust_decimal::Decimal;

    fn event(lsn: u64) -> FeedEvent {
        FeedEvent {
            version: FEED_VERSION,
            lsn,
            time: None,
            time_ms: None,
            body: FeedBody::Deposited {
                transaction_id: TransactionId::new(7, lsn),
                account: 7,
                currency: CurrencyCode::new("USD").unwrap(),
                amount: Decimal::new(100, 2),
                idempotency_key: None,
                metadata: Default::default(),
            },
            balances: Vec::new(),
            balances_known: true,
        }
    }

    /// Events 1..=n; a durable cursor; the acknowledgements it took, sent
    /// on a channel; errors to answer instead of the next reads or acks.
    struct FakeSource {
        events: Vec<FeedEvent>,
        cursor: u64,
        position: u64,
        acks: mpsc::UnboundedSender<u64>,
        read_errors: VecDeque<LedgerError>,
        ack_errors: VecDeque<LedgerError>,
    }

    impl FakeSource {
        fn new(n: u64, cursor: u64) -> (Self, mpsc::UnboundedReceiver<u64>) {
            let (acks, taken) = mpsc::unbounded_channel();
            let source = Self {
                events: (1..=n).map(event).collect(),
                cursor,
                position: 0,
                acks,
                read_errors: VecDeque::new(),
                ack_errors: VecDeque::new(),
            };
            (source, taken)
        }
    }

    impl EventSource for FakeSource {
        async fn resume(&mut self, _: &str) -> Result<u64, LedgerError> {
            self.position = self.cursor;
            Ok(self.cursor)
        }

        async fn next(&mut self, max: usize, _: Duration) -> Result<Vec<FeedEvent>, LedgerError> {
            if let Some(error) = self.read_errors.pop_front() {
                return Err(error);
            }
            let start = usize::try_from(self.position).unwrap();
            let batch: Vec<FeedEvent> = self.events.iter().skip(start).take(max).cloned().collect();
            if batch.is_empty() {
                // Nothing more will come: wait for ever, like a quiet log.
                std::future::pending::<()>().await;
            }
            self.position += batch.len() as u64;
            Ok(batch)
        }

        async fn ack(&mut self, _: &str, lsn: u64) -> Result<(), LedgerError> {
            if let Some(error) = self.ack_errors.pop_front() {
                return Err(error);
            }
            self.cursor = lsn;
            self.acks.send(lsn).unwrap();
            Ok(())
        }
    }

    /// One POST as the fake endpoint saw it.
    struct Post {
        lsns: Vec<u64>,
        body: Vec<u8>,
        signature: String,
    }

    /// Answers the scripted results in turn, then `Ok`; sends every POST
    /// on a channel.
    struct FakeEndpoint {
        answers: VecDeque<Result<(), String>>,
        posts: mpsc::UnboundedSender<Post>,
    }

    impl FakeEndpoint {
        fn new(answers: &[Result<(), &str>]) -> (Self, mpsc::UnboundedReceiver<Post>) {
            let (posts, seen) = mpsc::unbounded_channel();
            let answers = answers.iter().map(|a| a.map_err(str::to_owned)).collect();
            (Self { answers, posts }, seen)
        }
    }

    impl Endpoint for FakeEndpoint {
        async fn post(&mut self, body: Arc<[u8]>, signature: String) -> Result<(), String> {
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let lsns = json["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["lsn"].as_u64().unwrap())
                .collect();
            self.posts
                .send(Post {
                    lsns,
                    body: body.to_vec(),
                    signature,
                })
                .unwrap();
            self.answers.pop_front().unwrap_or(Ok(()))
        }
    }

    const SECRET: &str = "whsec_unit";

    /// `test` to its end, or a failure after 10 s of real time: a loop
    /// that stops delivering fails the test instead of hanging it.
    async fn bounded<T>(test: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), test)
            .await
            .expect("the test ran to its end within 10 s")
    }

    fn plan(batch: usize) -> Plan {
        Plan {
            consumer: "webhook".into(),
            batch,
            backoff: Backoff::default(),
            signer: Signer::new(SECRET).unwrap(),
            idle_wait: Duration::from_secs(5),
        }
    }

    /// Checks `post`'s signature against the clock's time now.
    fn assert_signed(post: &Post, clock: &ManualClock) {
        let now = clock.unix_ms() / 1000;
        let signer = Signer::new(SECRET).unwrap();
        assert_eq!(signer.verify(&post.signature, &post.body, now, 1), Ok(()));
    }

    #[tokio::test]
    async fn a_failed_delivery_is_retried_with_the_same_batch_after_the_backoff() {
        let clock = ManualClock::new();
        let (source, mut acks) = FakeSource::new(5, 0);
        let (endpoint, mut posts) = FakeEndpoint::new(&[Err("answer 500"), Err("refused")]);
        let shared = clock.shared();
        bounded(LocalSet::new().run_until(async move {
            let task = spawn_local(deliver(source, endpoint, plan(3), shared));
            let first = posts.recv().await.unwrap();
            assert_eq!(first.lsns, [1, 2, 3]);
            assert_signed(&first, &clock);
            for wait_ms in [100, 200] {
                clock.armed_at_least(1).await;
                let acked = acks.try_recv();
                assert!(acked.is_err(), "acknowledged before taken: {acked:?}");
                clock.advance(Duration::from_millis(wait_ms - 1));
                assert_eq!(clock.armed(), 1, "no retry before {wait_ms} ms");
                assert!(posts.try_recv().is_err());
                clock.advance(Duration::from_millis(1));
                let again = posts.recv().await.unwrap();
                assert_eq!(again.body, first.body, "the same batch");
                assert_signed(&again, &clock);
            }
            assert_eq!(acks.recv().await, Some(3), "acknowledged once taken");
            assert_eq!(posts.recv().await.unwrap().lsns, [4, 5]);
            assert_eq!(acks.recv().await, Some(5));
            assert!(acks.try_recv().is_err() && posts.try_recv().is_err());
            task.abort();
        }))
        .await;
    }

    #[tokio::test]
    async fn a_2xx_acknowledges_exactly_the_batchs_last_lsn_from_the_cursor_on() {
        let clock = ManualClock::new();
        let (source, mut acks) = FakeSource::new(7, 2);
        let (endpoint, mut posts) = FakeEndpoint::new(&[]);
        let shared = clock.shared();
        bounded(LocalSet::new().run_until(async move {
            let task = spawn_local(deliver(source, endpoint, plan(3), shared));
            assert_eq!(posts.recv().await.unwrap().lsns, [3, 4, 5]);
            assert_eq!(acks.recv().await, Some(5));
            assert_eq!(posts.recv().await.unwrap().lsns, [6, 7]);
            assert_eq!(acks.recv().await, Some(7));
            assert_eq!(clock.armed(), 0, "no retry");
            task.abort();
        }))
        .await;
    }

    #[tokio::test]
    async fn a_failed_acknowledgement_redelivers_from_the_durable_cursor() {
        let clock = ManualClock::new();
        let (mut source, mut acks) = FakeSource::new(4, 0);
        source.ack_errors.push_back(LedgerError::EventsUnavailable {
            reason: "the disk said no".into(),
        });
        let (endpoint, mut posts) = FakeEndpoint::new(&[]);
        let shared = clock.shared();
        bounded(LocalSet::new().run_until(async move {
            let task = spawn_local(deliver(source, endpoint, plan(2), shared));
            assert_eq!(posts.recv().await.unwrap().lsns, [1, 2]);
            clock.armed_at_least(1).await;
            clock.advance(Duration::from_millis(100));
            assert_eq!(
                posts.recv().await.unwrap().lsns,
                [1, 2],
                "the unacknowledged batch, again"
            );
            assert_eq!(acks.recv().await, Some(2));
            assert_eq!(posts.recv().await.unwrap().lsns, [3, 4]);
            assert_eq!(acks.recv().await, Some(4));
            task.abort();
        }))
        .await;
    }

    #[tokio::test]
    async fn an_expired_cursor_or_a_shutdown_ends_delivery() {
        let expired = LedgerError::CursorExpired {
            after: 0,
            oldest: 10,
        };
        for (error, end) in [
            (expired.clone(), Ended::CursorExpired(expired)),
            (LedgerError::ShuttingDown, Ended::ShutDown),
        ] {
            let (mut source, _acks) = FakeSource::new(3, 0);
            source.read_errors.push_back(error);
            let (endpoint, mut posts) = FakeEndpoint::new(&[]);
            let ended = deliver(source, endpoint, plan(3), ManualClock::new().shared()).await;
            assert_eq!(ended, end);
            assert!(posts.try_recv().is_err(), "nothing delivered");
        }
    }
}
