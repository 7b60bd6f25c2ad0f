//! `/metrics` in the Prometheus text format.
//!
//! Kept as requests pass (by the [`record`] middleware): operations by kind
//! and result, and a latency histogram per kind. Read when scraped: the
//! engine's gauges ([`Ledger::gauges`]: accounts, running account actors,
//! withdrawals by currency and status, count and amount, with pending and
//! processing the ones in flight), which the shards keep as they run, so
//! that part of a scrape costs the same at 10 accounts or 10 million;
//! payouts by state and the payout mismatches recorded
//! ([`Ledger::payout_counts`], kept by the payout actor as it runs, O(1)
//! too); the WAL's fsync count and latency histogram; and each event
//! consumer's lag, the events after its cursor up to the journal's head
//! ([`Ledger::consumers`], [`Ledger::journal_head`]: one small read each).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use parking_lot::Mutex;

use crate::domain::gauges::Gauges;
use crate::domain::money::units_to_decimal;
use crate::domain::payouts::PayoutState;
use crate::domain::withdrawal::StatusKind;
use crate::http::error::ErrorCode;
use crate::ledger::{ConsumerCursor, Ledger};

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BUCKETS_SECS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The kinds of operation the API serves: the routes' names (see
/// [`kind_of`] for the routes that serve two kinds).
pub const KINDS: [&str; 25] = [
    "deposit",
    "request_withdrawal",
    "list_withdrawals",
    "account_withdrawals",
    "entries",
    "get_transaction",
    "get_withdrawal",
    "cancel_withdrawal",
    "withdrawal_status",
    "transfer",
    "balances",
    "set_tier",
    "freeze",
    "withdrawal_allowance",
    "run_payouts",
    "list_payouts",
    "get_payout",
    "events",
    "events_stream",
    "list_consumers",
    "consumer_cursor",
    "set_consumer_cursor",
    "remove_consumer",
    "journal_head",
    "unmatched",
];

#[derive(Clone, Debug, Default)]
struct Histogram {
    /// Observations at or below each bound (not cumulative here).
    buckets: [u64; LATENCY_BUCKETS_SECS.len()],
    count: u64,
    sum_secs: f64,
}

impl Histogram {
    fn observe(&mut self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS_SECS.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_secs += secs;
    }
}

/// What the service counts as it runs. Shared by all workers.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    /// (kind, result) → requests; result is `ok` or an error code.
    operations: BTreeMap<(&'static str, &'static str), u64>,
    latency: BTreeMap<&'static str, Histogram>,
}

impl Metrics {
    pub fn observe(&self, kind: &'static str, result: &'static str, elapsed: Duration) {
        let mut counters = self.inner.lock();
        *counters.operations.entry((kind, result)).or_insert(0) += 1;
        counters.latency.entry(kind).or_default().observe(elapsed);
    }

    /// Requests of `kind` with `result` so far.
    pub fn count(&self, kind: &str, result: &str) -> u64 {
        let counters = self.inner.lock();
        counters
            .operations
            .iter()
            .filter(|((k, r), _)| *k == kind && *r == result)
            .map(|(_, n)| *n)
            .sum()
    }

    fn render_counters(&self, out: &mut String) {
        let counters = self.inner.lock();
        out.push_str("# HELP burnledger_operations_total API operations by kind and result (ok or the error code).\n");
        out.push_str("# TYPE burnledger_operations_total counter\n");
        for ((kind, result), n) in &counters.operations {
            let _ = writeln!(
                out,
                "burnledger_operations_total{{kind=\"{kind}\",result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP burnledger_operation_duration_seconds Time to answer an API operation, by kind.\n");
        out.push_str("# TYPE burnledger_operation_duration_seconds histogram\n");
        for (kind, histogram) in &counters.latency {
            let mut cumulative = 0;
            for (bound, n) in LATENCY_BUCKETS_SECS.iter().zip(histogram.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "burnledger_operation_duration_seconds_bucket{{kind=\"{kind}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "burnledger_operation_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "burnledger_operation_duration_seconds_sum{{kind=\"{kind}\"}} {}",
                histogram.sum_secs
            );
            let _ = writeln!(
                out,
                "burnledger_operation_duration_seconds_count{{kind=\"{kind}\"}} {}",
                histogram.count
            );
        }
    }
}

/// The kind a request counts as: its route's name, except that a GET on
/// `/v1/withdrawals` (a resource named for its POST) is `list_withdrawals`
/// and a GET on a consumer's cursor (named for its PUT) `consumer_cursor`.
fn kind_of(route: Option<&str>, method: &actix_web::http::Method) -> &'static str {
    let get = method == actix_web::http::Method::GET;
    let name = match route {
        Some("request_withdrawal") if get => "list_withdrawals",
        Some("set_consumer_cursor") if get => "consumer_cursor",
        Some(name) => name,
        None => "unmatched",
    };
    KINDS
        .iter()
        .find(|k| **k == name)
        .copied()
        .unwrap_or("unmatched")
}

/// Middleware over the whole app: counts every `/v1` request by the name
/// of its route and its result, and times it.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let counted = req.path().starts_with("/v1");
    let response = next.call(req).await?;
    if let (Some(metrics), true) = (metrics, counted) {
        let request = response.request();
        let kind = kind_of(request.match_name(), request.method());
        let result = match response.response().extensions().get::<ErrorCode>() {
            Some(code) => code.0,
            None if response.status().is_success() => "ok",
            None => "error",
        };
        metrics.observe(kind, result, started.elapsed());
    }
    Ok(response)
}

/// The whole `/metrics` page.
pub async fn render(metrics: &Metrics, ledger: &Ledger) -> String {
    let mut out = String::with_capacity(4096);
    metrics.render_counters(&mut out);
    render_ledger(&mut out, ledger).await;
    if let (Ok(head), Ok(consumers)) = (ledger.journal_head(), ledger.consumers()) {
        render_consumer_lag(&mut out, head.lsn, &consumers);
    }
    out
}

/// `burnledger_feed_consumer_lag{consumer}`: events past each consumer's
/// cursor, up to the journal's head (a ledger without a log has none).
fn render_consumer_lag(out: &mut String, head: u64, consumers: &[ConsumerCursor]) {
    out.push_str("# HELP burnledger_feed_consumer_lag Durable events a consumer has not acknowledged yet (the journal head's LSN minus its cursor).\n");
    out.push_str("# TYPE burnledger_feed_consumer_lag gauge\n");
    for consumer in consumers {
        // Names are A-Z a-z 0-9 _ - . only: nothing to escape in a label.
        let _ = writeln!(
            out,
            "burnledger_feed_consumer_lag{{consumer=\"{}\"}} {}",
            consumer.name,
            head.saturating_sub(consumer.lsn)
        );
    }
}

async fn render_ledger(out: &mut String, ledger: &Ledger) {
    match ledger.gauges().await {
        Ok(gauges) => render_gauges(out, ledger, &gauges),
        Err(error) => {
            let _ = writeln!(out, "# ledger state unavailable: {}", error.code());
        }
    }
    render_payouts(out, ledger).await;
    let Some(wal) = ledger.wal_stats() else {
        return;
    };
    out.push_str("# HELP burnledger_wal_fsyncs_total Successful fsyncs of the write-ahead log.\n");
    out.push_str("# TYPE burnledger_wal_fsyncs_total counter\n");
    let _ = writeln!(out, "burnledger_wal_fsyncs_total {}", wal.fsyncs);
    out.push_str("# HELP burnledger_wal_fsync_duration_seconds Time each fsync of the write-ahead log took.\n");
    out.push_str("# TYPE burnledger_wal_fsync_duration_seconds histogram\n");
    for (bound_us, count) in &wal.fsync_buckets_us {
        let le = match bound_us {
            Some(us) => format!("{}", *us as f64 / 1e6),
            None => "+Inf".to_string(),
        };
        let _ = writeln!(
            out,
            "burnledger_wal_fsync_duration_seconds_bucket{{le=\"{le}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "burnledger_wal_fsync_duration_seconds_sum {}",
        wal.fsync_nanos as f64 / 1e9
    );
    let _ = writeln!(
        out,
        "burnledger_wal_fsync_duration_seconds_count {}",
        wal.fsyncs
    );
}

/// Payouts by state and mismatches, from the counts the payout actor keeps
/// (all zero without one).
async fn render_payouts(out: &mut String, ledger: &Ledger) {
    let Ok(counts) = ledger.payout_counts().await else {
        return;
    };
    out.push_str("# HELP burnledger_payouts Payouts by state.\n");
    out.push_str("# TYPE burnledger_payouts gauge\n");
    for state in PayoutState::ALL {
        let n = counts.in_state(state);
        let _ = writeln!(
            out,
            "burnledger_payouts{{state=\"{}\"}} {n}",
            state.as_str()
        );
    }
    out.push_str("# HELP burnledger_payout_mismatches_total Payment-service answers that contradicted an item already settled (each is also an audit violation).\n");
    out.push_str("# TYPE burnledger_payout_mismatches_total counter\n");
    let _ = writeln!(
        out,
        "burnledger_payout_mismatches_total {}",
        counts.mismatches
    );
}

/// Accounts, running actors and withdrawals by currency and status, from
/// the gauges the engine keeps. Every configured currency shows every
/// status, zero or not; a currency no longer configured shows while it
/// has withdrawals.
fn render_gauges(out: &mut String, ledger: &Ledger, gauges: &Gauges) {
    // (currency, status) → (count, units, decimals).
    let mut withdrawals: BTreeMap<(String, &'static str), (u64, i128, u8)> = BTreeMap::new();
    for currency in ledger.currencies().iter() {
        for status in StatusKind::ALL {
            let key = (currency.code.to_string(), status.as_str());
            withdrawals.insert(key, (0, 0, currency.decimals));
        }
    }
    for currency in gauges.withdrawals.currencies() {
        for (status, tally) in currency.iter() {
            let key = (currency.currency.code.to_string(), status.as_str());
            let decimals = currency.currency.decimals;
            withdrawals.insert(key, (tally.count, tally.amount, decimals));
        }
    }
    out.push_str("# HELP burnledger_accounts Accounts the ledger holds.\n");
    out.push_str("# TYPE burnledger_accounts gauge\n");
    let _ = writeln!(out, "burnledger_accounts {}", gauges.accounts);
    out.push_str("# HELP burnledger_account_actors_running Account actors running (idle ones are stopped; their state stays).\n");
    out.push_str("# TYPE burnledger_account_actors_running gauge\n");
    let _ = writeln!(
        out,
        "burnledger_account_actors_running {}",
        gauges.account_actors_running
    );
    out.push_str("# HELP burnledger_withdrawals Withdrawals by currency and status (pending and processing are in flight).\n");
    out.push_str("# TYPE burnledger_withdrawals gauge\n");
    for ((currency, status), (count, _, _)) in &withdrawals {
        let _ = writeln!(
            out,
            "burnledger_withdrawals{{currency=\"{currency}\",status=\"{status}\"}} {count}"
        );
    }
    out.push_str("# HELP burnledger_withdrawals_amount Sum of withdrawal amounts by currency and status, in the currency's units.\n");
    out.push_str("# TYPE burnledger_withdrawals_amount gauge\n");
    for ((currency, status), (_, units, decimals)) in &withdrawals {
        let _ = writeln!(
            out,
            "burnledger_withdrawals_amount{{currency=\"{currency}\",status=\"{status}\"}} {}",
            units_to_decimal(*units, *decimals)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_an_infinite_bucket() {
        let metrics = Metrics::default();
        metrics.observe("deposit", "ok", Duration::from_micros(100));
        metrics.observe("deposit", "ok", Duration::from_millis(3));
        metrics.observe("deposit", "insufficient_funds", Duration::from_secs(10));
        let mut out = String::new();
        metrics.render_counters(&mut out);
        assert!(out.contains("burnledger_operations_total{kind=\"deposit\",result=\"ok\"} 2"));
        assert!(out.contains(
            "burnledger_operations_total{kind=\"deposit\",result=\"insufficient_funds\"} 1"
        ));
        assert!(
            out.contains("_bucket{kind=\"deposit\",le=\"0.00025\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("_bucket{kind=\"deposit\",le=\"0.005\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("_bucket{kind=\"deposit\",le=\"5\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("_bucket{kind=\"deposit\",le=\"+Inf\"} 3"),
            "{out}"
        );
        assert!(out.contains("burnledger_operation_duration_seconds_count{kind=\"deposit\"} 3"));
        assert_eq!(metrics.count("deposit", "ok"), 2);
    }

    #[test]
    fn a_get_on_the_withdrawals_resource_counts_as_a_listing() {
        use actix_web::http::Method;
        assert_eq!(
            kind_of(Some("request_withdrawal"), &Method::POST),
            "request_withdrawal"
        );
        assert_eq!(
            kind_of(Some("request_withdrawal"), &Method::GET),
            "list_withdrawals"
        );
        assert_eq!(kind_of(Some("entries"), &Method::GET), "entries");
        assert_eq!(kind_of(Some("openapi"), &Method::GET), "unmatched");
        assert_eq!(kind_of(None, &Method::GET), "unmatched");
    }
}
