//! Ids, tokens and URL signatures, all derived from the seed.
//!
//! Deriving instead of drawing at random lets tests compare two runs answer for answer, and lets a
//! restarted sandbox with the same seed accept the tokens and URLs the previous one issued.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::CLIENT_ID;

type HmacSha256 = Hmac<Sha256>;

/// The JWT header every token carries.
const TOKEN_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: u64,
    exp: u64,
}

pub(super) struct Ids {
    seed: String,
    token_key: [u8; 32],
    url_key: [u8; 32],
    /// Numbers the `transaction_id`s: deterministic for a client that calls in a fixed order.
    transactions: AtomicU64,
}

impl Ids {
    pub(super) fn new(seed: &str) -> Ids {
        Ids {
            seed: seed.to_owned(),
            token_key: digest(&[b"token key", seed.as_bytes()]),
            url_key: digest(&[b"url key", seed.as_bytes()]),
            transactions: AtomicU64::new(0),
        }
    }

    fn derive(&self, purpose: &str, parts: &[&[u8]]) -> [u8; 32] {
        let mut all: Vec<&[u8]> = vec![purpose.as_bytes(), self.seed.as_bytes()];
        all.extend_from_slice(parts);
        digest(&all)
    }

    /// A Udyam request id: the `prior`-th accepted submission of `number`.
    pub(super) fn udyam_request_id(&self, number: &str, prior: u64) -> String {
        uuid(&self.derive("udyam request", &[number.as_bytes(), &prior.to_le_bytes()]))
    }

    /// A batch request id: the `prior`-th accepted upload of the content hashed `sha256`.
    pub(super) fn batch_request_id(&self, sha256: &str, prior: u64) -> String {
        let mut id = hex(&self.derive("batch request", &[sha256.as_bytes(), &prior.to_le_bytes()]));
        id.truncate(32);
        id
    }

    pub(super) fn transaction_id(&self) -> String {
        let n = self.transactions.fetch_add(1, Ordering::Relaxed);
        let mut id = hex(&self.derive("transaction", &[&n.to_le_bytes()]));
        id.truncate(32);
        id
    }

    /// Whether job `request_id` is among the `share` of jobs that never finish. Drawn from the
    /// id and the seed, so every poll and a restarted sandbox agree on which jobs are stuck.
    pub(super) fn is_stuck(&self, request_id: &str, share: f64) -> bool {
        if share <= 0.0 {
            return false;
        }
        let bytes = self.derive("stuck", &[request_id.as_bytes()]);
        let mut first = [0u8; 8];
        first.copy_from_slice(&bytes[..8]);
        // The top 53 bits make a fraction in [0, 1) that an f64 holds exactly.
        let fraction = (u64::from_le_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
        fraction < share
    }

    /// A provider's integer reference for `key`, in `low..high`: derived, so the same key gets
    /// the same number in every run; the caller steps past one already taken.
    pub(super) fn reference(&self, purpose: &str, key: &str, low: u64, high: u64) -> u64 {
        let bytes = self.derive(purpose, &[key.as_bytes()]);
        let mut first = [0u8; 8];
        first.copy_from_slice(&bytes[..8]);
        low + u64::from_le_bytes(first) % high.saturating_sub(low).max(1)
    }

    /// Attestr's `_id` (24 hex, like the document ids it returns) and `number` (12 digits) of
    /// the `prior`-th OTP request for `reg` and `mobile`.
    pub(super) fn otp_request(&self, reg: &str, mobile: &str, prior: u64) -> (String, String) {
        let bytes = self.derive(
            "otp request",
            &[reg.as_bytes(), mobile.as_bytes(), &prior.to_le_bytes()],
        );
        let mut id = hex(&bytes);
        id.truncate(24);
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&bytes[24..]);
        let number = format!("{:012}", u64::from_le_bytes(tail) % 1_000_000_000_000);
        (id, number)
    }

    /// Equal's `journey_transaction_id` of the journey the client calls `transaction_id`.
    pub(super) fn journey_transaction_id(&self, transaction_id: &str) -> String {
        uuid(&self.derive("journey", &[transaction_id.as_bytes()]))
    }

    /// A keyed digest of a secret identifier (an Aadhaar number), to recognise it again without
    /// keeping it: the key is the seed, so the digest is no lookup table for anyone without it.
    pub(super) fn digest_of(&self, secret: &str) -> String {
        hex(&self.derive("secret identifier", &[secret.as_bytes()]))
    }

    pub(super) fn group_id(&self, request_id: &str) -> String {
        uuid(&self.derive("group", &[request_id.as_bytes()]))
    }

    pub(super) fn task_id(&self, request_id: &str) -> String {
        uuid(&self.derive("task", &[request_id.as_bytes()]))
    }

    /// S3's `RequestId` (16 upper-case hex) and `HostId` (base64) for an XML error.
    pub(super) fn s3_request_ids(&self) -> (String, String) {
        let n = self.transactions.fetch_add(1, Ordering::Relaxed);
        let bytes = self.derive("s3 request", &[&n.to_le_bytes()]);
        let request_id = hex(&bytes[..8]).to_uppercase();
        let host_id = base64::engine::general_purpose::STANDARD.encode(&bytes[8..]);
        (request_id, host_id)
    }

    /// A JWT-looking access token valid until `exp`; returns it with `exp` in unix seconds.
    /// The expiry is rounded up to a whole second so a token never lives less than the ttl.
    pub(super) fn issue_token(&self, now_ms: u64, ttl_secs: u64) -> (String, u64) {
        let iat = now_ms / 1000;
        let exp = now_ms.div_ceil(1000).saturating_add(ttl_secs);
        let claims = Claims {
            sub: CLIENT_ID.to_owned(),
            iat,
            exp,
        };
        // Serialising three plain fields cannot fail; an empty payload would only fail to verify.
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(TOKEN_HEADER),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = URL_SAFE_NO_PAD.encode(self.token_mac(&signed).finalize().into_bytes());
        (format!("{signed}.{signature}"), exp)
    }

    /// Checks the signature and the expiry only: tokens are stateless, so they outlive a restart.
    pub(super) fn token_is_valid(&self, token: &str, now_ms: u64) -> bool {
        let Some((signed, signature)) = token.rsplit_once('.') else {
            return false;
        };
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        if self.token_mac(signed).verify_slice(&signature).is_err() {
            return false;
        }
        let Some((_, payload)) = signed.split_once('.') else {
            return false;
        };
        let claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|json| serde_json::from_slice::<Claims>(&json).ok());
        claims.is_some_and(|claims| now_ms < claims.exp.saturating_mul(1000))
    }

    fn token_mac(&self, signed: &str) -> HmacSha256 {
        let mut mac = keyed(&self.token_key);
        mac.update(signed.as_bytes());
        mac
    }

    /// The `X-Amz-Signature` of a download URL: covers the object path, the date and the lifetime.
    pub(super) fn url_signature(&self, path: &str, date: &str, expires: &str) -> String {
        let mut mac = keyed(&self.url_key);
        for part in [path, "\n", date, "\n", expires] {
            mac.update(part.as_bytes());
        }
        hex(&mac.finalize().into_bytes())
    }
}

/// An HMAC keyed with a 32-byte key. HMAC pads short keys with zeros to the block size, so
/// padding here gives the same MAC while keeping construction infallible.
fn keyed(key: &[u8; 32]) -> HmacSha256 {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    <HmacSha256 as Mac>::new(&block.into())
}

/// SHA-256 over length-prefixed parts, so no two lists of parts hash alike.
fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Positions `0..len` in an order drawn from `key`: the same for the same key, and never the
/// input order when there are two or more, so a client that matches results by position fails
/// at once instead of by luck.
pub(super) fn shuffled(len: usize, key: &str) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut StdRng::from_seed(sha256(key.as_bytes())));
    if order.is_sorted() {
        order.rotate_left(1);
    }
    order
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha256(bytes))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// 8-4-4-4-12 hex with the version (5, name-based) and variant bits of a real UUID.
fn uuid(bytes: &[u8; 32]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&bytes[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = Ids::new("seed");
        let b = Ids::new("seed");
        let other = Ids::new("other seed");
        let id = a.udyam_request_id("UDYAM-MH-01-0000001", 0);
        assert_eq!(id, b.udyam_request_id("UDYAM-MH-01-0000001", 0));
        assert_ne!(id, a.udyam_request_id("UDYAM-MH-01-0000001", 1));
        assert_ne!(id, other.udyam_request_id("UDYAM-MH-01-0000001", 0));
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        let batch = a.batch_request_id("abc", 0);
        assert_eq!(batch.len(), 32);
        assert_eq!(batch, b.batch_request_id("abc", 0));
        assert_eq!(a.transaction_id(), b.transaction_id());
        assert_ne!(a.transaction_id(), b.group_id("x"));
    }

    #[test]
    fn stuck_jobs_are_the_share_asked_for_and_the_same_each_time() {
        let ids = Ids::new("seed");
        let request_ids: Vec<String> = (0..2000)
            .map(|n| ids.udyam_request_id("UDYAM-MH-01-0000001", n))
            .collect();
        let stuck = |ids: &Ids, share: f64| -> Vec<bool> {
            request_ids
                .iter()
                .map(|id| ids.is_stuck(id, share))
                .collect()
        };
        assert!(stuck(&ids, 0.0).iter().all(|s| !s));
        assert!(stuck(&ids, 1.0).iter().all(|s| *s));
        let half = stuck(&ids, 0.5);
        let count = half.iter().filter(|s| **s).count();
        assert!((900..=1100).contains(&count), "{count} of 2000");
        assert_eq!(half, stuck(&Ids::new("seed"), 0.5));
        assert_ne!(half, stuck(&Ids::new("other seed"), 0.5));
        // A larger share keeps every job a smaller one picked.
        let tenth = stuck(&ids, 0.1);
        assert!(tenth.iter().zip(&half).all(|(t, h)| !t || *h));
    }

    #[test]
    fn tokens_verify_by_signature_and_expiry() {
        let ids = Ids::new("seed");
        let (token, exp) = ids.issue_token(10_500, 5);
        assert_eq!(exp, 16);
        assert_eq!(token.split('.').count(), 3);
        assert!(ids.token_is_valid(&token, 15_999));
        assert!(!ids.token_is_valid(&token, 16_000));
        assert!(Ids::new("seed").token_is_valid(&token, 11_000));
        assert!(!Ids::new("other").token_is_valid(&token, 11_000));
        let mut tampered = token.clone();
        tampered.insert(tampered.len() - 3, 'A');
        assert!(!ids.token_is_valid(&tampered, 11_000));
        assert!(!ids.token_is_valid("not-a-token", 11_000));
    }

    #[test]
    fn hmac_with_padded_key_matches_plain_hmac() {
        let key = [7u8; 32];
        let mut padded = keyed(&key);
        padded.update(b"message");
        let mut plain =
            <HmacSha256 as hmac::digest::KeyInit>::new_from_slice(&key).expect("any key length");
        plain.update(b"message");
        assert_eq!(
            padded.finalize().into_bytes(),
            plain.finalize().into_bytes()
        );
    }
}
