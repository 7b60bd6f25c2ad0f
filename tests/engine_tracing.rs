//! Every `Ledger` call runs in a tracing span named after it, and so does
//! each payout run (and each payout in it), so a log line says which call
//! or run it came from. A layer records the spans opened.

#![cfg(feature = "cli")]

use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use burnledger::config::{PayoutMode, SharedPaymentService};
use burnledger::payment::SimulatedBank;
use burnledger::{Config, CurrencyCode, Decimal, Ledger, Operation};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Names of the spans opened, process-wide.
fn opened() -> &'static Arc<Mutex<Vec<String>>> {
    static OPENED: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    OPENED.get_or_init(|| {
        let opened = Arc::new(Mutex::new(Vec::new()));
        let layer = Recorder(Arc::clone(&opened));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::set_global_default(subscriber).unwrap();
        opened
    })
}

struct Recorder(Arc<Mutex<Vec<String>>>);

impl<S: Subscriber> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        let name = attrs.metadata().name().to_string();
        self.0.lock().unwrap().push(name);
    }
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[tokio::test]
async fn each_ledger_call_and_each_payout_run_has_its_span() {
    let opened = opened();
    let bank = SimulatedBank::default();
    let ledger = Ledger::open(Config {
        payout_mode: PayoutMode::Batched {
            interval_secs: 24 * 3600,
        },
        payment_service: Some(SharedPaymentService::new(bank)),
        ..Config::for_tests()
    })
    .unwrap();
    ledger.deposit(1, "USD", dec("10"), None).await.unwrap();
    let w = ledger
        .request_withdrawal(1, "USD", dec("1"), None)
        .await
        .unwrap();
    let batch = vec![Operation::Deposit {
        account: 2,
        currency: CurrencyCode::new("USD").unwrap(),
        amount: dec("3"),
        idempotency_key: None,
        metadata: Default::default(),
    }];
    assert!(ledger.submit(batch).await[0].is_ok());
    ledger.balance(2, "USD").await.unwrap();
    assert_eq!(ledger.run_payouts_now().await.unwrap().len(), 1);
    ledger.withdrawal(w.transaction_id).await.unwrap();
    ledger.shutdown().await;

    let opened = opened.lock().unwrap().clone();
    for span in [
        "ledger.open",
        "ledger.deposit",
        "ledger.request_withdrawal",
        "ledger.submit",
        "ledger.balance",
        "ledger.run_payouts_now",
        "ledger.withdrawal",
        "ledger.shutdown",
        "payout.run",
        "payout.pay",
    ] {
        assert!(
            opened.iter().any(|s| s == span),
            "no span {span}: {opened:?}"
        );
    }
}
