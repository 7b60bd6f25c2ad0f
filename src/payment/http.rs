//! [`HttpPaymentService`]: a [`PaymentService`] in another process, spoken
//! to over HTTP/1.1 with JSON (feature `http`). `burnledger serve
//! --payment-service-url URL` pays through one; `burnledger bank` serves a
//! `SimulatedBank` over this protocol (`burnledger::http::bank`). The JSON
//! bodies are defined once, in [`wire`](super::wire).
//!
//! # The protocol
//! Amounts are decimal strings (`"12.34"`), never JSON numbers;
//! transaction ids are the 32 hex digits the ledger's HTTP API prints.
//!
//! `POST {base}/payouts`, header `Idempotency-Key: <payout_id>`, body
//! `{"payout_id": 7, "currency": "USD", "items": [{"transaction_id":
//! "000000000000000c0000000000000003", "account": 12, "amount": "12.34",
//! "destination": {"kind": "iban", "value": "DE89...", "network": "sepa"}}]}`
//! (`destination` only for a withdrawal that has one, `network` only when
//! it has one):
//! - `200` and a report, `{"payout_id": 7, "items": [{"transaction_id":
//!   "...", "status": "paid" | "failed" | "pending" | "returned", "reason":
//!   "...", "amount": "..."}]}` (`reason` with `failed` and `returned`
//!   only; `amount` with `paid` only, when less than the item's amount was
//!   paid: more than 0 and at most the amount, else the outcome is
//!   unknown). Submitting the same payout id again never pays twice and
//!   answers the current report.
//! - `400`, `409` or `422` with `{"error": {"code": "...", "message":
//!   "..."}}`: a definite rejection, nothing was paid under the payout id →
//!   [`PaymentError::Rejected`].
//! - Anything else — a `5xx`, another status, a timeout, a refused or
//!   dropped connection, a rejection status without its error body, a
//!   `200` whose body is not a report of THIS payout naming exactly the
//!   items sent — is an unknown outcome → [`PaymentError::Unknown`]: the
//!   payout may have been paid. An unreadable answer is never a rejection.
//!
//! `GET {base}/payouts/{payout_id}`:
//! - `200` and the report (of this payout id, each item once);
//! - `404` with the error body → [`PaymentError::NotFound`]: the service
//!   never received this payout id;
//! - anything else → [`PaymentError::Unknown`].
//!
//! Every call is bounded by [`HttpPaymentSettings::timeout`] as a whole
//! (connect, send, answer). A call runs the blocking `ureq` request on
//! tokio's blocking pool, so the payout actor's thread never blocks.

use std::time::Duration;

use super::wire::{ErrorJson, PayoutJson, ReportJson};
use super::{PaymentError, PaymentFuture, PaymentService, Payout, PayoutId, PayoutReport};

/// How an [`HttpPaymentService`] calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpPaymentSettings {
    /// The longest a call may take, from connecting to the answer's last
    /// byte; past it the outcome is unknown. More than zero.
    pub timeout: Duration,
    /// Most items one submit carries (the payout actor splits bigger
    /// groups); it should not exceed the service's own limit. At least 1.
    pub max_items_per_payout: usize,
}

impl Default for HttpPaymentSettings {
    /// 30 s per call, 1000 items per payout.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_items_per_payout: 1000,
        }
    }
}

/// Largest answer read, in bytes (a report of 1000 items is ~100 KB).
const ANSWER_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// A payment service at `base_url`, spoken to with the protocol above.
/// Clones share one connection pool.
#[derive(Clone, Debug)]
pub struct HttpPaymentService {
    base: String,
    settings: HttpPaymentSettings,
    agent: ureq::Agent,
}

impl HttpPaymentService {
    /// A client of the service at `base_url` (`http://host:port`, maybe
    /// with a path prefix; no TLS is compiled in). Refuses a URL of another
    /// shape, a zero timeout and a zero item limit.
    pub fn new(base_url: &str, settings: HttpPaymentSettings) -> Result<Self, String> {
        let base = check_base_url(base_url)?;
        if settings.timeout.is_zero() {
            return Err("payment service timeout: expected more than 0 s".into());
        }
        if settings.max_items_per_payout == 0 {
            return Err("payment service items per payout: expected at least 1".into());
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(settings.timeout))
            .build()
            .into();
        Ok(Self {
            base,
            settings,
            agent,
        })
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Runs `call` on tokio's blocking pool; a call that panicked or was
    /// cancelled there has an unknown outcome.
    fn blocking<F>(&self, call: F) -> PaymentFuture
    where
        F: FnOnce(&ureq::Agent, &str) -> Result<PayoutReport, PaymentError> + Send + 'static,
    {
        let (agent, base) = (self.agent.clone(), self.base.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || call(&agent, &base))
                .await
                .unwrap_or_else(|e| Err(unknown(format!("the call did not finish: {e}"))))
        })
    }
}

/// `base_url` without its trailing `/`, if it is `http://` with a host and
/// no query or fragment.
fn check_base_url(base_url: &str) -> Result<String, String> {
    let bad = |why: &str| format!("payment service URL {base_url:?}: {why}");
    let uri: ureq::http::Uri = base_url
        .parse()
        .map_err(|e| bad(&format!("not a URL ({e})")))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("expected http://HOST:PORT (no TLS is compiled in)"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if uri.query().is_some() || base_url.contains('#') {
        return Err(bad("a base URL takes no query or fragment"));
    }
    Ok(base_url.trim_end_matches('/').to_string())
}

fn unknown(reason: String) -> PaymentError {
    PaymentError::Unknown { reason }
}

/// A call's status and body, or why there is none.
fn answer(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, Vec<u8>), PaymentError> {
    let mut response = response.map_err(|e| unknown(format!("no answer: {e}")))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(ANSWER_BYTES_MAX)
        .read_to_vec()
        .map_err(|e| unknown(format!("answer {status} cut short: {e}")))?;
    Ok((status, body))
}

/// What `POST /payouts` answered `payout`.
fn submit_answer(status: u16, body: &[u8], payout: &Payout) -> Result<PayoutReport, PaymentError> {
    match status {
        200 => ReportJson::parse(body, payout.payout_id, Some(&payout.items))
            .map_err(|why| unknown(format!("unreadable report: {why}"))),
        400 | 409 | 422 => match ErrorJson::parse(body) {
            Some(error) => Err(PaymentError::Rejected {
                reason: format!("{status} {}: {}", error.code, error.message),
            }),
            None => Err(unknown(format!("{status} without an error body"))),
        },
        other => Err(unknown(format!("answer {other}: {}", shown(body)))),
    }
}

/// What `GET /payouts/{payout_id}` answered.
fn status_answer(
    status: u16,
    body: &[u8],
    payout_id: PayoutId,
) -> Result<PayoutReport, PaymentError> {
    match status {
        200 => ReportJson::parse(body, payout_id, None)
            .map_err(|why| unknown(format!("unreadable report: {why}"))),
        404 if ErrorJson::parse(body).is_some() => Err(PaymentError::NotFound { payout_id }),
        other => Err(unknown(format!("answer {other}: {}", shown(body)))),
    }
}

/// The start of a body, for an error message.
fn shown(body: &[u8]) -> String {
    const SHOWN_BYTES_MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(SHOWN_BYTES_MAX)]);
    text.trim().to_string()
}

impl PaymentService for HttpPaymentService {
    fn max_items_per_payout(&self) -> usize {
        self.settings.max_items_per_payout
    }

    fn submit(&self, payout: Payout) -> PaymentFuture {
        self.blocking(move |agent, base| {
            let body = serde_json::to_vec(&PayoutJson::from(&payout))
                .map_err(|e| unknown(format!("cannot write the payout: {e}")))?;
            let response = agent
                .post(format!("{base}/payouts"))
                .header("Idempotency-Key", payout.payout_id.to_string())
                .content_type("application/json")
                .send(&body[..]);
            let (status, body) = answer(response)?;
            submit_answer(status, &body, &payout)
        })
    }

    fn status(&self, payout_id: PayoutId) -> PaymentFuture {
        self.blocking(move |agent, base| {
            let response = agent.get(format!("{base}/payouts/{payout_id}")).call();
            let (status, body) = answer(response)?;
            status_answer(status, &body, payout_id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_base_urls_are_taken() {
        let settings = HttpPaymentSettings::default();
        let ok = HttpPaymentService::new("http://127.0.0.1:9/bank/", settings.clone()).unwrap();
        assert_eq!(ok.base_url(), "http://127.0.0.1:9/bank");
        for bad in [
            "",
            "127.0.0.1:9",
            "https://h:1",
            "http://",
            "http://h:1/?q=1",
            "http://h/#x",
        ] {
            assert!(
                HttpPaymentService::new(bad, settings.clone()).is_err(),
                "{bad:?}"
            );
        }
        let zero = HttpPaymentSettings {
            timeout: Duration::ZERO,
            ..settings.clone()
        };
        assert!(HttpPaymentService::new("http://h:1", zero).is_err());
        let none = HttpPaymentSettings {
            max_items_per_payout: 0,
            ..settings
        };
        assert!(HttpPaymentService::new("http://h:1", none).is_err());
    }

    #[test]
    fn a_rejection_needs_its_status_and_its_error_body() {
        let payout = Payout {
            payout_id: 1,
            currency: crate::domain::money::CurrencyCode::new("USD").unwrap(),
            items: Vec::new(),
        };
        let error = br#"{"error":{"code":"payout_rejected","message":"no"}}"#;
        for status in [400, 409, 422] {
            let answer = submit_answer(status, error, &payout);
            assert!(
                matches!(answer, Err(PaymentError::Rejected { .. })),
                "{status}"
            );
            let bare = submit_answer(status, b"<html>bad</html>", &payout);
            assert!(
                matches!(bare, Err(PaymentError::Unknown { .. })),
                "{status}"
            );
        }
        for status in [401, 404, 408, 413, 429, 500, 502, 503, 504, 302] {
            let answer = submit_answer(status, error, &payout);
            assert!(
                matches!(answer, Err(PaymentError::Unknown { .. })),
                "{status}"
            );
        }
        assert_eq!(
            status_answer(404, error, 1),
            Err(PaymentError::NotFound { payout_id: 1 })
        );
        assert!(matches!(
            status_answer(404, b"Not Found", 1),
            Err(PaymentError::Unknown { .. })
        ));
    }
}
