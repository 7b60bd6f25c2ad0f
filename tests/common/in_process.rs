//! The HTTP service on a ledger the test configures, served over real HTTP
//! on a loopback port from a thread of its own (for tests that need to
//! reach into the ledger: fail points, gauges, shutdown under a server,
//! a log pruned past a consumer).

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use burnledger::http::{self, HttpOptions};
use burnledger::{Config, Ledger};

const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct InProcess {
    pub ledger: Ledger,
    /// `host:port`.
    pub addr: String,
    handle: actix_web::dev::ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl InProcess {
    /// Opens a ledger with `config` and serves it with `options` (signals
    /// are never handled: the test stops it).
    pub fn start(config: Config, options: HttpOptions) -> Self {
        let ledger = Ledger::open(config).unwrap();
        let (tx, rx) = mpsc::channel();
        let served = ledger.clone();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let options = HttpOptions {
                    handle_signals: false,
                    ..options
                };
                let bound = http::bind(served, "127.0.0.1:0", &options).unwrap();
                tx.send((bound.addrs[0], bound.server.handle())).unwrap();
                bound.server.await.unwrap();
            });
        });
        let (addr, handle) = rx.recv_timeout(START_TIMEOUT).unwrap();
        Self {
            ledger,
            addr: addr.to_string(),
            handle,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs `future` to its end on a runtime of its own.
    pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// Stops the server (letting requests in flight finish), then the ledger.
    pub fn stop(mut self) {
        Self::block_on(self.handle.stop(true));
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        Self::block_on(self.ledger.shutdown());
    }
}

/// Writes 3,000 deposits straight into `ledger`, snapshotting every 500:
/// enough log segments that, under a small `event_retention_bytes`, the
/// log's first events are pruned (the feed's `cursor_expired`).
pub fn fill_and_snapshot(ledger: &Ledger) {
    InProcess::block_on(async {
        for round in 0..6u64 {
            let deposits = (0..500u64).map(|i| {
                let amount = burnledger::Decimal::from(1 + (round + i) % 9);
                ledger.deposit(2 + i % 50, "USD", amount, None)
            });
            for done in futures_util::future::join_all(deposits).await {
                done.unwrap();
            }
            ledger.snapshot().await.unwrap();
        }
    });
}
