//! Bearer-token authentication of `/v1`, and the rule that a server
//! reachable from outside this machine must have a token.

use std::net::SocketAddr;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use subtle::ConstantTimeEq;

use crate::http::error::ApiError;

/// The API token, if the server has one.
#[derive(Clone, Default)]
pub struct ApiToken(Option<Vec<u8>>);

impl ApiToken {
    /// A server with `Some(token)` requires it; an empty token counts as none.
    pub fn new(token: Option<&str>) -> Self {
        Self(
            token
                .filter(|t| !t.is_empty())
                .map(|t| t.as_bytes().to_vec()),
        )
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
        let token = ApiToken::new(Some("s3cret"));
        assert!(token.admits(Some(b"Bearer s3cret")));
        assert!(token.admits(Some(b"bearer s3cret")));
        assert!(!token.admits(None));
        assert!(!token.admits(Some(b"Bearer s3cre")));
        assert!(!token.admits(Some(b"Bearer s3cret2")));
        assert!(!token.admits(Some(b"Basic s3cret")));
        assert!(!token.admits(Some(b"s3cret")));
        assert!(!token.admits(Some(b"Bearer ")));
        let none = ApiToken::new(None);
        assert!(none.admits(None));
        assert!(!ApiToken::new(Some("")).is_set());
    }

    #[test]
    fn an_open_address_needs_a_token() {
        let loopback: Vec<SocketAddr> = vec![
            "127.0.0.1:8080".parse().unwrap(),
            "[::1]:8080".parse().unwrap(),
        ];
        let open: Vec<SocketAddr> = vec!["0.0.0.0:8080".parse().unwrap()];
        assert!(check_exposure(&loopback, &ApiToken::new(None)).is_ok());
        assert!(check_exposure(&open, &ApiToken::new(None)).is_err());
        assert!(check_exposure(&open, &ApiToken::new(Some("t"))).is_ok());
    }
}
