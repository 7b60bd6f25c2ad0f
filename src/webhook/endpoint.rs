//! The receiver's end over HTTP: [`HttpEndpoint`] POSTs a signed batch to
//! the webhook URL with `ureq` on tokio's blocking pool (never on the
//! caller's thread), within a timeout; only a 2xx answer takes the batch.
//! Redirects are not followed: a 3xx is a failed delivery.

use std::sync::Arc;
use std::time::Duration;

use super::deliver::Endpoint;
use super::sign::SIGNATURE_HEADER;

/// Most bytes of an answer read (then dropped): enough to reuse the
/// connection after a short answer.
const ANSWER_BYTES_MAX: u64 = 64 * 1024;

/// POSTs batches to one URL.
#[derive(Clone, Debug)]
pub(crate) struct HttpEndpoint {
    url: String,
    agent: ureq::Agent,
}

impl HttpEndpoint {
    /// A client of `url` (`http://host[:port][/path][?query]`: no TLS is
    /// compiled in) whose calls end after `timeout`, answered or not.
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        check_url(url)?;
        if timeout.is_zero() {
            return Err("webhook timeout: expected more than 0 s".into());
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Ok(Self {
            url: url.to_owned(),
            agent,
        })
    }
}

/// Refuses a URL that is not `http://` with a host.
fn check_url(url: &str) -> Result<(), String> {
    let bad = |why: &str| format!("webhook URL {url:?}: {why}");
    let uri: ureq::http::Uri = url.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad(
            "expected http://HOST:PORT/PATH (no TLS is compiled in)",
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(())
}

/// One POST, blocking: `Ok` for a 2xx answer.
fn post_blocking(
    agent: &ureq::Agent,
    url: &str,
    body: &[u8],
    signature: &str,
) -> Result<(), String> {
    let mut response = agent
        .post(url)
        .header(SIGNATURE_HEADER, signature)
        .content_type("application/json")
        .send(body)
        .map_err(|e| format!("no answer: {e}"))?;
    let status = response.status();
    // Read (a bounded part of) the answer so the connection can be reused;
    // what it says does not matter.
    let _ = response
        .body_mut()
        .with_config()
        .limit(ANSWER_BYTES_MAX)
        .read_to_vec();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answer {status}"))
    }
}

impl Endpoint for HttpEndpoint {
    async fn post(&mut self, body: Arc<[u8]>, signature: String) -> Result<(), String> {
        let (agent, url) = (self.agent.clone(), self.url.clone());
        tokio::task::spawn_blocking(move || post_blocking(&agent, &url, &body, &signature))
            .await
            .unwrap_or_else(|e| Err(format!("the call did not finish: {e}")))
    }
}
