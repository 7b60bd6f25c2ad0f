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

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::thread;

    use super::*;

    /// A server that takes one request, sends its head and body back on
    /// the returned channel, and answers `status` (or, with `None`, never
    /// answers, holding the connection until the test ends).
    fn one_request_server(
        status: Option<u16>,
    ) -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks?x=1", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            tx.send((head, body)).unwrap();
            match status {
                Some(status) => {
                    let answer = format!("HTTP/1.1 {status} X\r\nlocation: /elsewhere\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                    (&stream).write_all(answer.as_bytes()).unwrap();
                }
                None => {
                    let mut rest = Vec::new();
                    let _ = reader.read_to_end(&mut rest);
                }
            }
        });
        (url, rx)
    }

    async fn post(url: &str, timeout: Duration) -> Result<(), String> {
        let mut endpoint = HttpEndpoint::new(url, timeout).unwrap();
        endpoint
            .post(Arc::from(&b"{\"events\":[]}"[..]), "t=1,v1=ab".into())
            .await
    }

    #[tokio::test]
    async fn only_a_2xx_takes_the_batch() {
        for (status, taken) in [
            (200, true),
            (204, true),
            (302, false),
            (400, false),
            (500, false),
            (503, false),
        ] {
            let (url, requests) = one_request_server(Some(status));
            let result = post(&url, Duration::from_secs(10)).await;
            assert_eq!(result.is_ok(), taken, "{status}: {result:?}");
            let (head, body) = requests.recv().unwrap();
            assert!(head.starts_with("POST /hooks?x=1 HTTP/1.1\r\n"), "{head}");
            let head = head.to_ascii_lowercase();
            assert!(
                head.contains("\r\ncontent-type: application/json\r\n"),
                "{head}"
            );
            assert!(
                head.contains("\r\nx-burnledger-signature: t=1,v1=ab\r\n"),
                "{head}"
            );
            assert_eq!(body, b"{\"events\":[]}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_or_a_silent_receiver_fails_the_attempt() {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", closed.local_addr().unwrap());
        drop(closed);
        assert!(post(&url, Duration::from_secs(10)).await.is_err());
        let (url, requests) = one_request_server(None);
        let started = std::time::Instant::now();
        let result = post(&url, Duration::from_millis(300)).await;
        assert!(result.is_err(), "{result:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "bounded by the timeout"
        );
        assert!(requests.recv().is_ok(), "the request was sent");
    }

    #[test]
    fn only_http_urls_with_a_host_are_taken() {
        let timeout = Duration::from_secs(1);
        assert!(HttpEndpoint::new("http://127.0.0.1:9/a?b=c", timeout).is_ok());
        for bad in ["", "127.0.0.1:9", "https://h:1/", "http://", "ftp://h/"] {
            assert!(HttpEndpoint::new(bad, timeout).is_err(), "{bad:?}");
        }
        assert!(HttpEndpoint::new("http://h:1/", Duration::ZERO).is_err());
    }
}
