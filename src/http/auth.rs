//! Bearer-token authentication of `/v1` (and of `/metrics` when it has its
//! own token), the rule that a token must be sendable, and the rule that a server
//! reachable from outside this machine must have a token.

use std::net::SocketAddr;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, ResponseError};
use subtle::ConstantTimeEq;

use crate::http::error::ApiError;

/// The API token, if the server has one.
#[derive(Clone, Default)]
pub struct ApiToken(Option<Vec<u8>>);

impl ApiToken {
    /// A server with `Some(token)` requires it. The token must be usable
    /// as sent in a header: not empty, no surrounding whitespace (a token
    /// read from a file with its trailing newline would never match, since
    /// a header value's whitespace is trimmed), no control characters.
    /// `what` names the token's source in the error (e.g. `--api-token`).
    pub fn new(token: Option<&str>, what: &str) -> Result<Self, String> {
        let Some(token) = token else {
            return Ok(Self(None));
        };
        check_token(token, what)?;
        Ok(Self(Some(token.as_bytes().to_vec())))
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Whether an `Authorization` header value grants access. The token is
    /// compared in constant time (only its length can show in the timing).
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(expected) = &self.0 else {
            return true;
        };
        let Some(given) = authorization.and_then(bearer) else {
            return false;
        };
        given.ct_eq(expected).into()
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_set() {
            "ApiToken(set)"
        } else {
            "ApiToken(none)"
        })
    }
}

/// The token `/metrics` needs, if the server has one (none: `/metrics` is
/// open, as `/healthz` is).
#[derive(Clone, Debug, Default)]
pub struct MetricsToken(pub ApiToken);

/// Whether a request's `Authorization` admits it to `/metrics`; else the
/// 401 to answer.
pub fn check_metrics_token(req: &HttpRequest) -> Result<(), ApiError> {
    let admitted = match req.app_data::<web::Data<MetricsToken>>() {
        Some(token) => token
            .0
            .admits(req.headers().get(AUTHORIZATION).map(|v| v.as_bytes())),
        None => true,
    };
    if admitted {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "/metrics needs the metrics token: send Authorization: Bearer <token>",
        ))
    }
}

/// Refuses a token no client could send: empty, with surrounding
/// whitespace, or with control characters.
fn check_token(token: &str, what: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err(format!(
            "{what} is empty: give a token, or leave it unset for no authentication"
        ));
    }
    if token.trim() != token {
        return Err(format!(
            "{what} has leading or trailing whitespace (a trailing newline from a token file?): \
             it could never match a request's Authorization header; remove the whitespace"
        ));
    }
    if token.chars().any(char::is_control) {
        return Err(format!(
            "{what} contains a control character: it cannot be sent in a header"
        ));
    }
    Ok(())
}

/// The credentials of `Bearer <token>` (scheme case-insensitive).
fn bearer(header: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if header.len() < SCHEME.len() || !header[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    Some(header[SCHEME.len()..].trim_ascii())
}

/// Middleware of the `/v1` scope: 401 `unauthorized` without the token.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let admitted = match req.app_data::<web::Data<ApiToken>>() {
        Some(token) => token.admits(req.headers().get(AUTHORIZATION).map(|v| v.as_bytes())),
        None => true,
    };
    if !admitted {
        let message = if req.headers().contains_key(AUTHORIZATION) {
            "the API token is wrong"
        } else {
            "this server needs an API token: send Authorization: Bearer <token>"
        };
        let response = ApiError::unauthorized(message).error_response();
        return Ok(req.into_response(response).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// Refuses to serve on an address other hosts can reach without a token.
pub fn check_exposure(addrs: &[SocketAddr], token: &ApiToken) -> Result<(), String> {
    if token.is_set() {
        return Ok(());
    }
    match addrs.iter().find(|a| !a.ip().is_loopback()) {
        Some(open) => Err(format!(
            "refusing to listen on {open} without an API token: it is not a loopback address; \
             set --api-token or BURNLEDGER_API_TOKEN"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let token = ApiToken::new(Some("s3cret"), "t").unwrap();
        assert!(token.admits(Some(b"Bearer s3cret")));
        assert!(token.admits(Some(b"bearer s3cret")));
        assert!(!token.admits(None));
        assert!(!token.admits(Some(b"Bearer s3cre")));
        assert!(!token.admits(Some(b"Bearer s3cret2")));
        assert!(!token.admits(Some(b"Basic s3cret")));
        assert!(!token.admits(Some(b"s3cret")));
        assert!(!token.admits(Some(b"Bearer ")));
        let none = ApiToken::new(None, "t").unwrap();
        assert!(none.admits(None));
    }

    #[test]
    fn a_token_no_client_could_send_is_refused() {
        for bad in [
            "",
            "s3cret\n",
            " s3cret",
            "s3cret ",
            "\ts3cret",
            "s3c\u{7}ret",
            "\n",
        ] {
            let error = ApiToken::new(Some(bad), "--api-token").unwrap_err();
            assert!(error.starts_with("--api-token "), "{error}");
        }
        assert!(ApiToken::new(Some("s3cret\n"), "--api-token")
            .unwrap_err()
            .contains("whitespace"));
        assert!(ApiToken::new(Some(""), "x").unwrap_err().contains("empty"));
        assert!(
            ApiToken::new(Some("a b"), "x").is_ok(),
            "inner spaces survive a header"
        );
    }

    #[test]
    fn an_open_address_needs_a_token() {
        let loopback: Vec<SocketAddr> = vec![
            "127.0.0.1:8080".parse().unwrap(),
            "[::1]:8080".parse().unwrap(),
        ];
        let open: Vec<SocketAddr> = vec!["0.0.0.0:8080".parse().unwrap()];
        assert!(check_exposure(&loopback, &ApiToken::default()).is_ok());
        assert!(check_exposure(&open, &ApiToken::default()).is_err());
        assert!(check_exposure(&open, &ApiToken::new(Some("t"), "t").unwrap()).is_ok());
    }
}
