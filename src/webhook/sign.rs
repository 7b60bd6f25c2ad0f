//! The webhook's signature, Stripe's scheme: the header
//! `X-Burnledger-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>`, made by [`Signer::header`] and checked by
//! [`Signer::verify`] (a receiver in Rust may use it; any language's HMAC
//! does the same, see README's *Webhooks*).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header a delivery's signature travels in.
pub const SIGNATURE_HEADER: &str = "X-Burnledger-Signature";

type HmacSha256 = Hmac<Sha256>;

/// Signs bodies with one secret. The secret's key schedule is computed
/// once; each signature starts from a copy of it.
#[derive(Clone)]
pub struct Signer {
    keyed: HmacSha256,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the secret.
        f.write_str("Signer(..)")
    }
}

/// Why [`Signer::verify`] refused a delivery.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is not `t=<unix seconds>,v1=<64 hex digits>`")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
    #[error("the signature's time {t} is more than {tolerance_secs} s from now ({now})")]
    Stale {
        t: u64,
        now: u64,
        tolerance_secs: u64,
    },
}

impl Signer {
    /// A signer with `secret` (its UTF-8 bytes are the HMAC key); an empty
    /// secret is refused.
    pub fn new(secret: &str) -> Result<Self, String> {
        if secret.is_empty() {
            return Err("webhook secret: expected at least one character".into());
        }
        let keyed = HmacSha256::new_from_slice(secret.as_bytes())
            .map_err(|e| format!("webhook secret: unusable as an HMAC key ({e})"))?;
        Ok(Self { keyed })
    }

    /// The header value for `body` sent at unix second `t`.
    pub fn header(&self, t: u64, body: &[u8]) -> String {
        let digest = self.mac(t, body).finalize().into_bytes();
        format!("t={t},v1={}", hex(&digest))
    }

    /// Whether `header` signs `body` with this secret, at a time at most
    /// `tolerance_secs` from `now` (unix seconds) either way. The digest
    /// is compared in constant time.
    pub fn verify(
        &self,
        header: &str,
        body: &[u8],
        now: u64,
        tolerance_secs: u64,
    ) -> Result<(), VerifyError> {
        let (t, digest) = parse_header(header).ok_or(VerifyError::Malformed)?;
        self.mac(t, body)
            .verify_slice(&digest)
            .map_err(|_| VerifyError::Mismatch)?;
        if t.abs_diff(now) > tolerance_secs {
            return Err(VerifyError::Stale {
                t,
                now,
                tolerance_secs,
            });
        }
        Ok(())
    }

    /// The MAC over `"<t>.<body>"`, not yet finalized.
    fn mac(&self, t: u64, body: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// `t` and the `v1` digest's bytes of a header, if it has exactly those.
fn parse_header(header: &str) -> Option<(u64, Vec<u8>)> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=')? {
            ("t", value) if t.is_none() => t = Some(value.parse::<u64>().ok()?),
            ("v1", value) if v1.is_none() => v1 = Some(unhex(value)?),
            _ => return None,
        }
    }
    Some((t?, v1.filter(|d| d.len() == 32)?))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";
    const T: u64 = 1_767_225_600;
    const BODY: &[u8] = br#"{"events":[{"lsn":1}]}"#;

    /// Computed once, independently of this code, with
    /// `printf '%s' '1767225600.{"events":[{"lsn":1}]}' | openssl dgst -sha256 -hmac whsec_test`.
    const OPENSSL_DIGEST: &str = "99bb0bbba96a3a8fd55017d23ecd7254d64c574bd3063ddccb8dba54f1a9acef";

    #[test]
    fn the_signature_is_openssls_hmac_sha256_of_t_dot_body() {
        let signer = Signer::new(SECRET).unwrap();
        assert_eq!(
            signer.header(T, BODY),
            format!("t=1767225600,v1={OPENSSL_DIGEST}")
        );
    }

    #[test]
    fn a_good_signature_verifies_and_any_change_is_refused() {
        let signer = Signer::new(SECRET).unwrap();
        let header = signer.header(T, BODY);
        assert_eq!(signer.verify(&header, BODY, T + 300, 300), Ok(()));
        assert_eq!(
            signer.verify(&header, br#"{"events":[{"lsn":2}]}"#, T, 300),
            Err(VerifyError::Mismatch),
            "another body"
        );
        let other = Signer::new("whsec_other").unwrap();
        assert_eq!(
            other.verify(&header, BODY, T, 300),
            Err(VerifyError::Mismatch),
            "another secret"
        );
        let moved = header.replace("t=1767225600", "t=1767225601");
        assert_eq!(
            signer.verify(&moved, BODY, T, 300),
            Err(VerifyError::Mismatch),
            "another time under the same digest"
        );
        assert_eq!(
            signer.verify(&header, BODY, T + 301, 300),
            Err(VerifyError::Stale {
                t: T,
                now: T + 301,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let signer = Signer::new(SECRET).unwrap();
        let digest = &signer.header(T, BODY)[13..];
        for bad in [
            String::new(),
            format!("t={T}"),
            digest.to_string(),
            format!("t=x,{digest}"),
            format!("t={T},{digest},t={T}"),
            format!("t={T},{}", &digest[..digest.len() - 2]),
            format!("t={T},v1=zz{}", &digest[5..]),
            format!("t={T},v0=00"),
        ] {
            assert_eq!(
                signer.verify(&bad, BODY, T, 300),
                Err(VerifyError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_empty_secret_is_refused() {
        assert!(Signer::new("").is_err());
        assert_eq!(format!("{:?}", Signer::new(SECRET).unwrap()), "Signer(..)");
    }
}
