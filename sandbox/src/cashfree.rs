//! Cashfree Secure ID under `/verification` (the client's base URL is `{base}/verification`):
//! DigiLocker status and create, bulk bank-account verification, bulk PAN verification.
//!
//! Every call needs `x-client-id: sandbox_cf_client` and `x-client-secret: sandbox_cf_secret`,
//! else 401 `authentication_error` / `authentication_failed`; an `x-cf-signature` header is
//! accepted and not verified. Errors are `{"type","code","message"}`. Every answer that passed
//! the rate limiter carries `X-RateLimit-Limit`, `-Remaining` and `-Reset` of the tightest
//! configured window (none when every `--per-*` is 0); a 429 is `rate_limit_error` /
//! `too_many_requests_per_operation` with `Retry-After`.
//!
//! Outcomes are deterministic from test identifiers, like a payment sandbox's test cards; any
//! value that matches no row gets the happy path. Each table of test identifiers is in the module
//! of what it scripts:
//!
//! - `cashfree/digilocker.rs`: the `verification_id` prefixes, which also refuse a create or a
//!   bulk submit;
//! - `cashfree/bank.rs`: the bank-account outcomes of a bulk's entries;
//! - `cashfree/pan.rs`: the PAN outcomes, by serial;
//! - `cashfree/names.rs`: the name match of a bank or PAN entry, by the name's first word;
//! - `cashfree/bulk.rs`: what both bulks share: their size, ids and processing time.
//!
//! [guess] codes for malformed requests: `request_body_invalid`, `<field>_missing`,
//! `<field>_value_invalid`.

mod bank;
mod bulk;
mod digilocker;
mod names;
mod pan;

use std::collections::HashMap;

use axum::Json;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::gateway::header_text;
use super::{CASHFREE_CLIENT_ID, CASHFREE_CLIENT_SECRET, SandboxError};
use bank::BankEntry;
use bulk::Bulks;
use digilocker::Verifications;
use pan::PanEntry;

pub(super) use bank::{BankBulk, bank_bulk_status, bank_bulk_submit};
pub(super) use digilocker::{Digilocker, digilocker_create, digilocker_status};
pub(super) use pan::{PanBulk, pan_bulk_status, pan_bulk_submit};

type Params = Query<HashMap<String, String>>;

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
    message: &'a str,
}

/// Cashfree's error body.
pub(super) fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        kind,
        code,
        message,
    };
    (status, Json(body)).into_response()
}

/// The refusal of a call without the sandbox's client id and secret.
pub(super) fn authenticate(headers: &HeaderMap) -> Option<Response> {
    let valid = header_text(headers, "x-client-id") == CASHFREE_CLIENT_ID
        && header_text(headers, "x-client-secret") == CASHFREE_CLIENT_SECRET;
    (!valid).then(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "authentication_failed",
            "authentication failed: x-client-id or x-client-secret is invalid",
        )
    })
}

/// Cashfree's 429; the gateway adds `Retry-After` and the rate-limit headers.
pub(super) fn rate_limited() -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "too_many_requests_per_operation",
        "Too many requests for this operation. Please retry after some time.",
    )
}

/// A 5xx from Cashfree's gateway. [guess] the code.
pub(super) fn unavailable(status: StatusCode) -> Response {
    error(
        status,
        "internal_error",
        "service_unavailable",
        "Service temporarily unavailable. Please retry after some time.",
    )
}

fn missing(field: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "validation_error",
        &format!("{field}_missing"),
        &format!("{field} is missing in the request"),
    )
}

fn invalid(status: StatusCode, field: &str, message: &str) -> Response {
    let kind = if status == StatusCode::NOT_FOUND {
        "not_found_error"
    } else {
        "validation_error"
    };
    error(status, kind, &format!("{field}_value_invalid"), message)
}

fn body_invalid() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "validation_error",
        "request_body_invalid",
        "request body is not valid JSON of the expected shape",
    )
}

/// A request that could not be persisted: the client sees a 500 and may retry.
fn internal_error(error: &SandboxError) -> Response {
    tracing::error!(%error, "sandbox request failed");
    self::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "internal_server_error",
        "Internal server error",
    )
}

/// At most 50 letters, digits, `.`, `-` or `_`: Cashfree's rule for the ids a client chooses.
fn is_client_id(text: &str) -> bool {
    (1..=50).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Steps from a derived reference to the next one not yet taken.
fn free_reference<V>(taken: &HashMap<u64, V>, mut reference: u64) -> u64 {
    while taken.contains_key(&reference) {
        reference += 1;
    }
    reference
}

/// Cashfree's state: DigiLocker references, and the accepted bulks of each kind.
#[derive(Debug, Default)]
pub(super) struct Books {
    digilocker: Verifications,
    bank: Bulks<BankEntry>,
    pan: Bulks<PanEntry>,
}

impl Books {
    pub(super) fn digilocker(&mut self, record: Digilocker) {
        self.digilocker.insert(record);
    }

    pub(super) fn bank_bulk(&mut self, bulk: BankBulk) {
        self.bank.insert(bulk);
    }

    pub(super) fn pan_bulk(&mut self, bulk: PanBulk) {
        self.pan.insert(bulk);
    }
}

#[cfg(test)]
mod tests {
    use super::bank::{account_outcome, is_ifsc};
    use super::digilocker::Marker;
    use super::is_client_id;
    use super::names::{NO_NAME, NameMatch};
    use super::pan::is_pan;

    #[test]
    fn markers_name_matches_and_identifier_rules() {
        assert_eq!(Marker::of("PENDING-1"), Marker::Pending);
        assert_eq!(Marker::of("nobalance_x"), Marker::NoBalance);
        assert_eq!(Marker::of("order-pending"), Marker::Authenticated);
        assert!(is_client_id("a.b-c_D9") && !is_client_id("a b") && !is_client_id(""));
        assert!(!is_client_id(&"x".repeat(51)));
        assert_eq!(NameMatch::Good.source_name("good ravi kumar"), "RAVI KUMAR");
        assert_eq!(
            NameMatch::Moderate.source_name("Moderate Ravi Kumar"),
            "RAVI"
        );
        assert_eq!(NameMatch::Poor.source_name("poor Ravi Kumar"), "R K");
        assert_eq!(NameMatch::No.source_name("nomatch Ravi"), NO_NAME);
        assert_eq!(NameMatch::of(" Ravi  Kumar "), NameMatch::Direct);
        assert_eq!(NameMatch::Direct.source_name(" Ravi  Kumar "), "RAVI KUMAR");
        assert!(is_ifsc("HDFC0001234") && !is_ifsc("HDFC1001234") && !is_ifsc("hdfc0001234"));
        assert!(is_pan("ABCPE1234F") && !is_pan("ABCPE0000F") && !is_pan("ABCPE1234"));
        assert_eq!(
            account_outcome("HDFC0000000", "1234567890"),
            Some(("INVALID", "INVALID_IFSC_FAIL"))
        );
        assert_eq!(
            account_outcome("HDFC0001234", "12345"),
            Some(("INVALID", "INVALID_ACCOUNT_FAIL"))
        );
        assert_eq!(account_outcome("HDFC0001234", "12349999"), None);
    }
}
