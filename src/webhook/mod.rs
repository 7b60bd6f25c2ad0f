//! Signed webhooks (feature `http`): [`Webhook::start`] runs a delivery
//! loop on its own thread that POSTs the ledger's feed events, in order
//! and in batches, to one URL as `{"events": [FeedEvent, ...]}`, signed
//! with `X-Burnledger-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>">` (Stripe's scheme). `burnledger serve --webhook-url URL
//! --webhook-secret S` starts one.
//!
//! Delivery is at-least-once and in order, from a named consumer's
//! durable cursor (`webhook` by default): a 2xx answer acknowledges the
//! batch's last LSN; anything else (another status, a timeout, a refused
//! or dropped connection) retries the same batch after a capped
//! exponential backoff on the ledger's clock. Only the last unacknowledged
//! batch is ever delivered twice: receivers dedupe on `lsn`. A slow or
//! dead receiver never slows the ledger (the loop has its own thread; the
//! log keeps the consumer's events up to its retention cap). Past the cap
//! the consumer's cursor expires: the loop logs it (`tracing::error!`)
//! and stops; the host resynchronises the receiver, resets the cursor and
//! restarts.
//!
//! ## Layout
//! - `mod.rs` — [`WebhookSettings`] and the [`Webhook`] handle (the thread,
//!   its runtime, stopping).
//! - `deliver.rs` — the loop, over an event source and an endpoint.
//! - `source.rs` — the ledger's feed as the loop's source.
//! - `endpoint.rs` — the receiver's URL as its endpoint (`ureq`).
//! - `sign.rs` — the signature: [`Signer`].
//! - `backoff.rs` — the retries' waits: [`Backoff`].

mod backoff;
mod deliver;
mod endpoint;
mod sign;
mod source;

use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::ledger::{Ledger, FEED_BATCH_MAX};

pub use backoff::Backoff;
pub use sign::{Signer, VerifyError, SIGNATURE_HEADER};

use deliver::{deliver, Ended, Plan};
use endpoint::HttpEndpoint;
use source::LedgerSource;

/// The consumer a webhook's cursor is kept under unless told otherwise.
pub const WEBHOOK_CONSUMER_DEFAULT: &str = "webhook";
/// Events per POST unless told otherwise.
pub const WEBHOOK_BATCH_DEFAULT: usize = 100;
/// Longest a POST may take, connecting to the answer's end, unless told
/// otherwise; past it the attempt failed.
pub const WEBHOOK_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// How long one read of the feed waits for new events before reading
/// again (any new event ends the wait at once).
const IDLE_WAIT: Duration = Duration::from_secs(5);

/// Where and how a [`Webhook`] delivers.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// `http://host[:port][/path]` (no TLS is compiled in).
    pub url: String,
    /// The HMAC key (its UTF-8 bytes); not empty.
    pub secret: String,
    /// The consumer whose durable cursor the delivery keeps (the feed's
    /// name rules: 1 to 64 of `A-Z a-z 0-9 _ - .`).
    pub consumer: String,
    /// Most events per POST, 1 to [`FEED_BATCH_MAX`].
    pub batch: usize,
    /// Longest a POST may take.
    pub timeout: Duration,
    /// Waits between attempts.
    pub backoff: Backoff,
}

impl WebhookSettings {
    /// Delivery to `url` signed with `secret`, every other setting its
    /// default.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            secret: secret.into(),
            consumer: WEBHOOK_CONSUMER_DEFAULT.to_owned(),
            batch: WEBHOOK_BATCH_DEFAULT,
            timeout: WEBHOOK_TIMEOUT_DEFAULT,
            backoff: Backoff::default(),
        }
    }

    /// Refuses what [`Webhook::start`] would refuse of these settings
    /// alone (the URL, the secret, the batch size, the backoff).
    pub fn check(&self) -> Result<(), String> {
        self.clone().build().map(drop)
    }

    /// The loop's plan and endpoint, every setting checked.
    fn build(self) -> Result<(Plan, HttpEndpoint), String> {
        if !(1..=FEED_BATCH_MAX).contains(&self.batch) {
            return Err(format!(
                "webhook batch {}: expected 1 to {FEED_BATCH_MAX} events",
                self.batch
            ));
        }
        self.backoff.check()?;
        let endpoint = HttpEndpoint::new(&self.url, self.timeout)?;
        let plan = Plan {
            signer: Signer::new(&self.secret)?,
            consumer: self.consumer,
            batch: self.batch,
            backoff: self.backoff,
            idle_wait: IDLE_WAIT,
        };
        Ok((plan, endpoint))
    }
}

/// A running delivery loop. [`stop`](Self::stop) (or dropping it) ends it
/// at once, wherever it is; the loop also ends by itself when the ledger
/// shuts down or the consumer's cursor expires.
#[derive(Debug)]
pub struct Webhook {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Webhook {
    /// Starts delivering `ledger`'s feed as `settings` say. Refuses bad
    /// settings, and a ledger whose feed cannot serve the consumer (no
    /// log, an invalid consumer name), before anything runs.
    pub fn start(ledger: &Ledger, settings: WebhookSettings) -> Result<Self, String> {
        let (plan, endpoint) = settings.build()?;
        ledger
            .consumer(&plan.consumer)
            .map_err(|e| format!("webhook consumer {:?}: {e}", plan.consumer))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("webhook: cannot start its runtime: {e}"))?;
        let source = LedgerSource::new(ledger.clone());
        let clock = ledger.config().clock.clone();
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("burnledger-webhook".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = stopped => tracing::info!("webhook: stopped"),
                        ended = deliver(source, endpoint, plan, clock) => log_end(&ended),
                    }
                });
                // A POST still in flight on the blocking pool ends by its
                // timeout; nothing waits for it.
                runtime.shutdown_background();
            })
            .map_err(|e| format!("webhook: cannot start its thread: {e}"))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Whether the loop has ended (by itself, or stopped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Ends the loop and waits for its thread. Whatever was delivered and
    /// not yet acknowledged is delivered again by the next start.
    pub fn stop(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The loop may have ended by itself: nobody to tell.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("webhook: the delivery thread panicked");
            }
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.end();
    }
}

fn log_end(ended: &Ended) {
    match ended {
        Ended::ShutDown => tracing::info!("webhook: ended with the ledger"),
        Ended::CursorExpired(_) => tracing::error!("webhook: ended, its cursor expired"),
    }
}
