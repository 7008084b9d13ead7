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
//! value that matches no row gets the happy path.
//!
//! # DigiLocker: `verification_id` prefix (any case)
//!
//! | `verification_id` starts with | `GET /digilocker` answers |
//! |---|---|
//! | `pending` | 200 `PENDING`, `user_details` `{}`, `document_consent` `[]` |
//! | `expired` | 200 `EXPIRED`, `user_details` `{}`, `document_consent` `[]` |
//! | `denied` | 200 `CONSENT_DENIED`, `user_details` `{}`, `document_consent` `[]` |
//! | `notfound` | 404 `not_found_error` / `verification_id_value_invalid` |
//! | `failed` | 500 `internal_error` / `verification_failed` (create and bulk submit too) |
//! | `nobalance` | 422 `validation_error` / `insufficient_balance` (create and bulk submit too) |
//! | `ipblocked` | 403 `authentication_error` / `ip_validation_failed` (create and bulk submit too) |
//! | anything else | 200 `AUTHENTICATED`, synthetic `user_details` derived from the id |
//!
//! The same prefixes apply to a bulk's `bulk_verification_id` for the last three rows. A
//! `reference_id` is known once its verification was created or looked up by `verification_id`;
//! an unknown one is 404 `reference_id_value_invalid`. A second create of one id is 409
//! `verification_id_already_exists`.
//!
//! # Bank accounts: per bulk entry, the first row that matches
//!
//! | entry | `account_status` / `account_status_code` |
//! |---|---|
//! | `ifsc` not `AAAA0XXXXXX`, or its branch part is `000000` (e.g. `HDFC0000000`) | `INVALID` / `INVALID_IFSC_FAIL` |
//! | `bank_account` not 6 to 40 letters or digits | `INVALID` / `INVALID_ACCOUNT_FAIL` |
//! | `bank_account` ends `0000` | `INVALID` / `INVALID_ACCOUNT_FAIL` |
//! | `bank_account` ends `1111` | `INVALID` / `ACCOUNT_BLOCKED` |
//! | `bank_account` ends `2222` | `FAILED` / `IMPS_MODE_FAIL` |
//! | `bank_account` ends `3333` | `REJECTED` / `NRE_ACCOUNT_FAIL` |
//! | `bank_account` ends `9999` | `IN_PROCESS` for ever |
//! | anything else | `VALID` / `ACCOUNT_IS_VALID`, name match by the name (below) |
//!
//! Until the bulk is processed (`--batch-delay-ms` plus `--batch-ms-per-row` per entry) every
//! entry is `RECEIVED` (first half of that time) then `IN_PROCESS`, with an empty
//! `account_status_code`. Entries come back in a shuffled order, never the input order.
//!
//! # Names (bank `name`, PAN `name`): first word (any case)
//!
//! | first word | `name_match_result` | `name_match_score` | name at bank / registered name |
//! |---|---|---|---|
//! | `good` | `GOOD_PARTIAL_MATCH` | `90.00` | the other words |
//! | `moderate` | `MODERATE_PARTIAL_MATCH` | `75.00` | the second word |
//! | `poor` | `POOR_PARTIAL_MATCH` | `45.00` | the other words' initials |
//! | `nomatch` | `NO_MATCH` | `15.00` | `SANDBOX ACCOUNT HOLDER` |
//! | anything else | `DIRECT_MATCH` | `100.00` | the name, upper case |
//!
//! A bank entry without a name has empty match fields and `SANDBOX ACCOUNT HOLDER` at the bank.
//!
//! # PANs: the 4-digit serial (characters 6 to 9)
//!
//! | `pan` | `pan_status` | `valid` | `aadhaar_seeding_status` |
//! |---|---|---|---|
//! | not `AAAAA9999A`, or serial `0000` | `INVALID` ("Invalid PAN format") | false | `NA` |
//! | serial `9001` (e.g. `ABCPE9001F`) | `INVALID` ("PAN does not exist") | false | `NA` |
//! | serial `9002` | `DELETED` | false | `NA` |
//! | serial `9003` | `DEACTIVATED` | false | `NA` |
//! | serial `9004` | `VALID` | true | `N` |
//! | anything else | `VALID`, name match by the name | true | `Y` |
//!
//! `type` follows the 4th letter (P Individual, C Company, F Firm, H HUF, …). While a PAN bulk is
//! processed its status is `{"message":"File is being processed. Try again after some time.",
//! "entries":[]}`.
//!
//! A bulk holds 1 to 1,000 entries; a repeated `bulk_verification_id` is 409
//! `bulk_verification_id_already_exists`; an unknown id or reference is 404
//! `<parameter>_value_invalid`. [guess] codes for malformed requests: `request_body_invalid`,
//! `<field>_missing`, `<field>_value_invalid`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::gateway::header_text;
use super::ids::{Ids, shuffled};
use super::stats::Paid;
use super::store::Record;
use super::{CASHFREE_CLIENT_ID, CASHFREE_CLIENT_SECRET, SandboxError, Shared, clock, lock};

type Params = Query<HashMap<String, String>>;

/// The most entries one bulk may hold.
const MAX_ENTRIES: usize = 1000;

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

/// What a client-chosen id scripts, by its prefix in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Authenticated,
    Pending,
    Expired,
    Denied,
    NotFound,
    Fails,
    NoBalance,
    IpBlocked,
}

impl Marker {
    fn of(id: &str) -> Marker {
        let lower = id.to_ascii_lowercase();
        [
            ("pending", Marker::Pending),
            ("expired", Marker::Expired),
            ("denied", Marker::Denied),
            ("notfound", Marker::NotFound),
            ("failed", Marker::Fails),
            ("nobalance", Marker::NoBalance),
            ("ipblocked", Marker::IpBlocked),
        ]
        .into_iter()
        .find_map(|(prefix, marker)| lower.starts_with(prefix).then_some(marker))
        .unwrap_or(Marker::Authenticated)
    }

    /// The scripted refusal, for the markers that refuse every call.
    fn refusal(self) -> Option<Response> {
        let (status, kind, code, message) = match self {
            Marker::Fails => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "verification_failed",
                "Verification failed at source. Please retry after some time.",
            ),
            Marker::NoBalance => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_error",
                "insufficient_balance",
                "Insufficient balance to process this request",
            ),
            Marker::IpBlocked => (
                StatusCode::FORBIDDEN,
                "authentication_error",
                "ip_validation_failed",
                "IP not whitelisted",
            ),
            _ => return None,
        };
        Some(error(status, kind, code, message))
    }
}

/// Steps from a derived reference to the next one not yet taken.
fn free_reference<V>(taken: &HashMap<u64, V>, mut reference: u64) -> u64 {
    while taken.contains_key(&reference) {
        reference += 1;
    }
    reference
}

// ---------------------------------------------------------------------------------------------
// DigiLocker

/// A DigiLocker verification the sandbox has handed a `reference_id`: created, or looked up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Digilocker {
    verification_id: String,
    reference_id: u64,
    document_requested: Vec<String>,
    /// Created by `POST /digilocker`, so a second create is refused; a lookup alone does not.
    created: bool,
}

/// Cashfree's state: DigiLocker references, and the accepted bulks of each kind.
#[derive(Debug, Default)]
pub(super) struct Books {
    digilocker: HashMap<String, Digilocker>,
    digilocker_refs: HashMap<u64, String>,
    bank: Bulks<BankEntry>,
    pan: Bulks<PanEntry>,
}

impl Books {
    pub(super) fn digilocker(&mut self, record: Digilocker) {
        self.digilocker_refs
            .insert(record.reference_id, record.verification_id.clone());
        self.digilocker
            .insert(record.verification_id.clone(), record);
    }

    pub(super) fn bank_bulk(&mut self, bulk: BankBulk) {
        self.bank.insert(bulk);
    }

    pub(super) fn pan_bulk(&mut self, bulk: PanBulk) {
        self.pan.insert(bulk);
    }
}

const DOCUMENTS: [&str; 3] = ["AADHAAR", "PAN", "DRIVING_LICENSE"];

#[derive(Deserialize)]
struct CreateBody {
    verification_id: Option<String>,
    document_requested: Option<Vec<String>>,
    redirect_url: Option<String>,
}

#[derive(Serialize)]
struct Created {
    verification_id: String,
    reference_id: u64,
    url: String,
    status: &'static str,
    document_requested: Vec<String>,
    redirect_url: Option<String>,
}

/// `POST /verification/digilocker`: a consent URL for the user; the status follows the id.
pub(super) async fn digilocker_create(State(app): State<Shared>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<CreateBody>(&body) else {
        return body_invalid();
    };
    let Some(verification_id) = body.verification_id else {
        return missing("verification_id");
    };
    if !is_client_id(&verification_id) {
        return invalid(
            StatusCode::BAD_REQUEST,
            "verification_id",
            "verification_id must be 1 to 50 letters, digits, '.', '-' or '_'",
        );
    }
    let documents = body.document_requested.unwrap_or_default();
    if documents.is_empty() {
        return missing("document_requested");
    }
    if !documents.iter().all(|d| DOCUMENTS.contains(&d.as_str())) {
        return invalid(
            StatusCode::BAD_REQUEST,
            "document_requested",
            "document_requested may hold AADHAAR, PAN and DRIVING_LICENSE",
        );
    }
    if let Some(refusal) = Marker::of(&verification_id).refusal() {
        return refusal;
    }
    let created = app
        .store
        .update(|jobs| {
            let books = &jobs.cashfree;
            let known = books.digilocker.get(&verification_id);
            if known.is_some_and(|known| known.created) {
                return (None, None);
            }
            let reference_id = known.map_or_else(
                || digilocker_reference(&app.ids, books, &verification_id),
                |known| known.reference_id,
            );
            let record = Digilocker {
                verification_id: verification_id.clone(),
                reference_id,
                document_requested: documents.clone(),
                created: true,
            };
            (Some(Record::Digilocker(record.clone())), Some(record))
        })
        .await;
    let record = match created {
        Ok(Some(record)) => record,
        Ok(None) => {
            return error(
                StatusCode::CONFLICT,
                "validation_error",
                "verification_id_already_exists",
                "verification_id already exists",
            );
        }
        Err(error) => return internal_error(&error),
    };
    lock(&app.stats).paid(Paid::DigilockerCreated, &verification_id);
    Json(Created {
        url: format!(
            "{}/digilocker/consent?reference_id={}",
            app.base_url, record.reference_id
        ),
        verification_id: record.verification_id,
        reference_id: record.reference_id,
        status: "PENDING",
        document_requested: record.document_requested,
        redirect_url: body.redirect_url,
    })
    .into_response()
}

fn digilocker_reference(ids: &Ids, books: &Books, verification_id: &str) -> u64 {
    let derived = ids.reference("digilocker", verification_id, 10_000, 100_000_000);
    free_reference(&books.digilocker_refs, derived)
}

/// The user's details: the document's holder when consent was given, none otherwise.
#[derive(Serialize)]
#[serde(untagged)]
enum UserDetails {
    Known {
        name: String,
        dob: String,
        gender: &'static str,
        eaadhaar: &'static str,
        mobile: String,
    },
    None {},
}

#[derive(Serialize)]
struct DigilockerStatus {
    user_details: UserDetails,
    status: &'static str,
    document_requested: Vec<String>,
    document_consent: Vec<String>,
    verification_id: String,
    reference_id: u64,
}

/// Holders for synthetic user details, with their gender.
const HOLDERS: [(&str, &str); 8] = [
    ("Ravi Kumar", "M"),
    ("Priya Sharma", "F"),
    ("Anil Mehta", "M"),
    ("Sunita Rao", "F"),
    ("Arjun Nair", "M"),
    ("Meera Iyer", "F"),
    ("Vikram Singh", "M"),
    ("Kavya Reddy", "F"),
];

fn user_details(ids: &Ids, verification_id: &str) -> UserDetails {
    let n = ids.reference("digilocker user", verification_id, 0, u64::MAX);
    let (name, gender) = HOLDERS[(n % 8) as usize];
    let day = 1 + (n / 8) % 28;
    let month = 1 + (n / 224) % 12;
    let year = 1960 + (n / 2688) % 45;
    UserDetails::Known {
        name: name.to_owned(),
        dob: format!("{day:02}-{month:02}-{year}"),
        gender,
        eaadhaar: "Y",
        mobile: format!("9{:09}", (n / 120_960) % 1_000_000_000),
    }
}

/// `GET /verification/digilocker?verification_id=|reference_id=`.
pub(super) async fn digilocker_status(
    State(app): State<Shared>,
    Query(params): Params,
) -> Response {
    let verification_id = match (params.get("verification_id"), params.get("reference_id")) {
        (Some(id), _) => id.clone(),
        (None, Some(reference)) => {
            let Ok(reference) = reference.trim().parse::<u64>() else {
                return invalid(
                    StatusCode::BAD_REQUEST,
                    "reference_id",
                    "reference_id must be an integer",
                );
            };
            let known = app
                .store
                .read(|jobs| jobs.cashfree.digilocker_refs.get(&reference).cloned());
            let Some(id) = known else {
                return invalid(
                    StatusCode::NOT_FOUND,
                    "reference_id",
                    "reference_id does not exist",
                );
            };
            id
        }
        (None, None) => return missing("verification_id"),
    };
    if !is_client_id(&verification_id) {
        return invalid(
            StatusCode::BAD_REQUEST,
            "verification_id",
            "verification_id must be 1 to 50 letters, digits, '.', '-' or '_'",
        );
    }
    let marker = Marker::of(&verification_id);
    if let Some(refusal) = marker.refusal() {
        return refusal;
    }
    if marker == Marker::NotFound {
        return invalid(
            StatusCode::NOT_FOUND,
            "verification_id",
            "verification_id does not exist",
        );
    }
    let known = app
        .store
        .update(|jobs| {
            if let Some(known) = jobs.cashfree.digilocker.get(&verification_id) {
                return (None, known.clone());
            }
            let record = Digilocker {
                verification_id: verification_id.clone(),
                reference_id: digilocker_reference(&app.ids, &jobs.cashfree, &verification_id),
                document_requested: vec!["AADHAAR".to_owned()],
                created: false,
            };
            (Some(Record::Digilocker(record.clone())), record)
        })
        .await;
    let known = match known {
        Ok(known) => known,
        Err(error) => return internal_error(&error),
    };
    let (status, user_details, consent) = match marker {
        Marker::Pending => ("PENDING", UserDetails::None {}, Vec::new()),
        Marker::Expired => ("EXPIRED", UserDetails::None {}, Vec::new()),
        Marker::Denied => ("CONSENT_DENIED", UserDetails::None {}, Vec::new()),
        _ => (
            "AUTHENTICATED",
            user_details(&app.ids, &verification_id),
            known.document_requested.clone(),
        ),
    };
    lock(&app.stats).paid(Paid::DigilockerLookup, &verification_id);
    Json(DigilockerStatus {
        user_details,
        status,
        document_requested: known.document_requested,
        document_consent: consent,
        verification_id: known.verification_id,
        reference_id: known.reference_id,
    })
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// Bulks

/// An accepted bank-account bulk.
pub(super) type BankBulk = Bulk<BankEntry>;
/// An accepted PAN bulk.
pub(super) type PanBulk = Bulk<PanEntry>;

/// One accepted bulk of either kind, as journaled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Bulk<E> {
    reference_id: u64,
    bulk_verification_id: String,
    created_ms: u64,
    ready_ms: u64,
    entries: Vec<E>,
}

impl<E> Bulk<E> {
    /// Each entry's own `reference_id`: unique, as bulks hold at most [`MAX_ENTRIES`].
    fn entry_reference(&self, index: usize) -> u64 {
        self.reference_id * 10_000 + index as u64 + 1
    }
}

/// The accepted bulks of one kind, by id and by reference.
#[derive(Debug)]
struct Bulks<E> {
    by_id: HashMap<String, Arc<Bulk<E>>>,
    by_reference: HashMap<u64, String>,
}

impl<E> Default for Bulks<E> {
    fn default() -> Self {
        Bulks {
            by_id: HashMap::new(),
            by_reference: HashMap::new(),
        }
    }
}

impl<E> Bulks<E> {
    fn insert(&mut self, bulk: Bulk<E>) {
        self.by_reference
            .insert(bulk.reference_id, bulk.bulk_verification_id.clone());
        self.by_id
            .insert(bulk.bulk_verification_id.clone(), Arc::new(bulk));
    }

    /// The bulk both given keys name; a key that names none, or another bulk, finds nothing.
    fn find(&self, reference: Option<u64>, id: Option<&str>) -> Option<Arc<Bulk<E>>> {
        let by_reference = reference.map(|r| self.by_reference.get(&r).map(String::as_str));
        let id = match (by_reference, id) {
            (Some(found), Some(id)) => found.filter(|found| *found == id)?,
            (Some(found), None) => found?,
            (None, Some(id)) => id,
            (None, None) => return None,
        };
        self.by_id.get(id).cloned()
    }
}

/// What differs between the bank and the PAN bulks.
trait Entry: Clone + Serialize + DeserializeOwned {
    /// Names the derived bulk references, so the two kinds draw apart.
    const PURPOSE: &'static str;
    /// The query parameter that carries the bulk's reference in a status call.
    const REFERENCE_PARAM: &'static str;
    const PAID_BULK: Paid;
    const PAID_ENTRY: Paid;
    /// A required field the entry lacks.
    fn missing_field(&self) -> Option<&'static str>;
    fn bulks(books: &Books) -> &Bulks<Self>;
    fn record(bulk: Bulk<Self>) -> Record;
    /// The identifier the entry's paid check is counted under.
    fn stats_key(&self) -> String;
}

#[derive(Deserialize)]
struct BulkBody<E> {
    bulk_verification_id: Option<String>,
    entries: Option<Vec<E>>,
}

/// Validates and accepts a bulk, persisted before it is answered; the refusal otherwise.
async fn submit<E: Entry>(app: &Shared, body: &[u8]) -> Result<Bulk<E>, Response> {
    let body: BulkBody<E> = serde_json::from_slice(body).map_err(|_| body_invalid())?;
    let id = body
        .bulk_verification_id
        .ok_or_else(|| missing("bulk_verification_id"))?;
    if !is_client_id(&id) {
        return Err(invalid(
            StatusCode::BAD_REQUEST,
            "bulk_verification_id",
            "bulk_verification_id must be 1 to 50 letters, digits, '.', '-' or '_'",
        ));
    }
    let entries = body.entries.ok_or_else(|| missing("entries"))?;
    if !(1..=MAX_ENTRIES).contains(&entries.len()) {
        return Err(invalid(
            StatusCode::BAD_REQUEST,
            "entries",
            &format!("entries must hold 1 to {MAX_ENTRIES} items"),
        ));
    }
    let lacking = entries
        .iter()
        .enumerate()
        .find_map(|(index, entry)| entry.missing_field().map(|field| (index, field)));
    if let Some((index, field)) = lacking {
        return Err(invalid(
            StatusCode::BAD_REQUEST,
            "entries",
            &format!("entries[{index}].{field} is missing"),
        ));
    }
    if let Some(refusal) = Marker::of(&id).refusal() {
        return Err(refusal);
    }
    let created_ms = clock::now_ms();
    let rows = entries.len() as u64;
    let ready_ms = created_ms
        .saturating_add(app.config.batch_delay_ms)
        .saturating_add(rows.saturating_mul(app.config.batch_ms_per_row));
    let accepted = app
        .store
        .update(|jobs| {
            let bulks = E::bulks(&jobs.cashfree);
            if bulks.by_id.contains_key(&id) {
                return (None, None);
            }
            let derived = app.ids.reference(E::PURPOSE, &id, 1000, 100_000_000);
            let bulk = Bulk {
                reference_id: free_reference(&bulks.by_reference, derived),
                bulk_verification_id: id.clone(),
                created_ms,
                ready_ms,
                entries,
            };
            (Some(E::record(bulk.clone())), Some(bulk))
        })
        .await;
    let bulk = match accepted {
        Ok(Some(bulk)) => bulk,
        Ok(None) => {
            return Err(error(
                StatusCode::CONFLICT,
                "validation_error",
                "bulk_verification_id_already_exists",
                "bulk_verification_id already exists",
            ));
        }
        Err(error) => return Err(internal_error(&error)),
    };
    let mut stats = lock(&app.stats);
    stats.paid(E::PAID_BULK, &id);
    for entry in &bulk.entries {
        stats.paid(E::PAID_ENTRY, &entry.stats_key());
    }
    Ok(bulk)
}

/// Why a status call found no bulk.
enum Unfound {
    /// Neither the reference nor the id was given.
    Unnamed,
    /// The reference is not an integer.
    BadReference,
    /// No bulk has this parameter's value (or both values name different bulks).
    Unknown(&'static str),
}

impl Unfound {
    fn response<E: Entry>(self) -> Response {
        let reference_param = E::REFERENCE_PARAM;
        match self {
            Unfound::Unnamed => missing(reference_param),
            Unfound::BadReference => invalid(
                StatusCode::BAD_REQUEST,
                reference_param,
                &format!("{reference_param} must be an integer"),
            ),
            Unfound::Unknown(field) => invalid(
                StatusCode::NOT_FOUND,
                field,
                &format!("{field} does not exist"),
            ),
        }
    }
}

/// The bulk a status call names by reference, by id or by both.
fn find<E: Entry>(app: &Shared, params: &HashMap<String, String>) -> Result<Arc<Bulk<E>>, Unfound> {
    let reference = params.get(E::REFERENCE_PARAM).map(|text| text.trim());
    let id = params.get("bulk_verification_id").map(String::as_str);
    if reference.is_none() && id.is_none() {
        return Err(Unfound::Unnamed);
    }
    let reference = match reference {
        Some(text) => Some(text.parse::<u64>().map_err(|_| Unfound::BadReference)?),
        None => None,
    };
    let found = app
        .store
        .read(|jobs| E::bulks(&jobs.cashfree).find(reference, id));
    found.ok_or(Unfound::Unknown(if reference.is_some() {
        E::REFERENCE_PARAM
    } else {
        "bulk_verification_id"
    }))
}

/// Where a bulk is in its processing at `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Received,
    InProcess,
    Done,
}

fn progress<E>(app: &Shared, bulk: &Bulk<E>, now_ms: u64) -> Progress {
    if app.is_ready(&bulk.bulk_verification_id, bulk.ready_ms, now_ms) {
        Progress::Done
    } else if now_ms < bulk.created_ms + (bulk.ready_ms.saturating_sub(bulk.created_ms)) / 2 {
        Progress::Received
    } else {
        Progress::InProcess
    }
}

/// How well a name matched, scripted by its first word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameMatch {
    Direct,
    Good,
    Moderate,
    Poor,
    No,
}

impl NameMatch {
    fn of(name: &str) -> NameMatch {
        let first = name.split_whitespace().next().unwrap_or_default();
        match first.to_ascii_lowercase().as_str() {
            "good" => NameMatch::Good,
            "moderate" => NameMatch::Moderate,
            "poor" => NameMatch::Poor,
            "nomatch" => NameMatch::No,
            _ => NameMatch::Direct,
        }
    }

    fn result(self) -> &'static str {
        match self {
            NameMatch::Direct => "DIRECT_MATCH",
            NameMatch::Good => "GOOD_PARTIAL_MATCH",
            NameMatch::Moderate => "MODERATE_PARTIAL_MATCH",
            NameMatch::Poor => "POOR_PARTIAL_MATCH",
            NameMatch::No => "NO_MATCH",
        }
    }

    fn score(self) -> &'static str {
        match self {
            NameMatch::Direct => "100.00",
            NameMatch::Good => "90.00",
            NameMatch::Moderate => "75.00",
            NameMatch::Poor => "45.00",
            NameMatch::No => "15.00",
        }
    }

    /// The name the source holds for someone who gave `name`.
    fn source_name(self, name: &str) -> String {
        let words: Vec<String> = name.split_whitespace().map(str::to_uppercase).collect();
        let rest = words.get(1..).unwrap_or_default();
        let name = match self {
            NameMatch::Direct => words.join(" "),
            NameMatch::Good => rest.join(" "),
            NameMatch::Moderate => rest.first().cloned().unwrap_or_default(),
            NameMatch::Poor => rest
                .iter()
                .filter_map(|word| word.chars().next())
                .map(String::from)
                .collect::<Vec<_>>()
                .join(" "),
            NameMatch::No => String::new(),
        };
        if name.is_empty() {
            NO_NAME.to_owned()
        } else {
            name
        }
    }
}

const NO_NAME: &str = "SANDBOX ACCOUNT HOLDER";

// ---------------------------------------------------------------------------------------------
// Bank-account bulk

/// One bank bulk entry, echoed back exactly as sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct BankEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    bank_account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ifsc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<String>,
}

impl Entry for BankEntry {
    const PURPOSE: &'static str = "bank bulk";
    const REFERENCE_PARAM: &'static str = "bulk_reference_id";
    const PAID_BULK: Paid = Paid::BankBulk;
    const PAID_ENTRY: Paid = Paid::BankAccount;

    fn missing_field(&self) -> Option<&'static str> {
        if self.bank_account.is_none() {
            Some("bank_account")
        } else if self.ifsc.is_none() {
            Some("ifsc")
        } else {
            None
        }
    }

    fn bulks(books: &Books) -> &Bulks<Self> {
        &books.bank
    }

    fn record(bulk: Bulk<Self>) -> Record {
        Record::BankBulk(bulk)
    }

    fn stats_key(&self) -> String {
        format!(
            "{}:{}",
            self.bank_account.as_deref().unwrap_or_default(),
            self.ifsc.as_deref().unwrap_or_default()
        )
    }
}

#[derive(Serialize)]
struct BankAccepted {
    bulk_reference_id: u64,
    bulk_verification_id: String,
    status: &'static str,
}

/// `POST /verification/bank-account/bulk`.
pub(super) async fn bank_bulk_submit(State(app): State<Shared>, body: Bytes) -> Response {
    match submit::<BankEntry>(&app, &body).await {
        Ok(bulk) => Json(BankAccepted {
            bulk_reference_id: bulk.reference_id,
            bulk_verification_id: bulk.bulk_verification_id,
            status: "RECEIVED",
        })
        .into_response(),
        Err(refusal) => refusal,
    }
}

#[derive(Serialize)]
struct BankResult<'a> {
    #[serde(flatten)]
    entry: &'a BankEntry,
    reference_id: u64,
    name_at_bank: String,
    bank_name: String,
    utr: String,
    city: String,
    branch: String,
    micr: Option<u64>,
    name_match_score: &'static str,
    name_match_result: &'static str,
    account_status: &'static str,
    account_status_code: &'static str,
}

#[derive(Serialize)]
struct BankStatus<'a> {
    bulk_reference_id: u64,
    bulk_verification_id: &'a str,
    entries: Vec<BankResult<'a>>,
}

/// `AAAA0XXXXXX`: four letters, a zero, six letters or digits.
fn is_ifsc(ifsc: &str) -> bool {
    let b = ifsc.as_bytes();
    b.len() == 11
        && b[..4].iter().all(u8::is_ascii_uppercase)
        && b[4] == b'0'
        && b[5..].iter().all(u8::is_ascii_alphanumeric)
}

/// A few real banks by IFSC prefix, so results read plausibly.
const BANKS: [(&str, &str); 6] = [
    ("SBIN", "STATE BANK OF INDIA"),
    ("HDFC", "HDFC BANK"),
    ("ICIC", "ICICI BANK"),
    ("UTIB", "AXIS BANK"),
    ("PUNB", "PUNJAB NATIONAL BANK"),
    ("KKBK", "KOTAK MAHINDRA BANK"),
];

const CITIES: [&str; 6] = [
    "MUMBAI",
    "NEW DELHI",
    "BENGALURU",
    "CHENNAI",
    "KOLKATA",
    "PUNE",
];

/// An account's final `account_status` and `account_status_code`; `None` for one that is
/// never processed.
fn account_outcome(ifsc: &str, account: &str) -> Option<(&'static str, &'static str)> {
    if !is_ifsc(ifsc) || ifsc.ends_with("000000") {
        return Some(("INVALID", "INVALID_IFSC_FAIL"));
    }
    if !(6..=40).contains(&account.len()) || !account.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Some(("INVALID", "INVALID_ACCOUNT_FAIL"));
    }
    let ending = account.get(account.len() - 4..).unwrap_or_default();
    Some(match ending {
        "0000" => ("INVALID", "INVALID_ACCOUNT_FAIL"),
        "1111" => ("INVALID", "ACCOUNT_BLOCKED"),
        "2222" => ("FAILED", "IMPS_MODE_FAIL"),
        "3333" => ("REJECTED", "NRE_ACCOUNT_FAIL"),
        "9999" => return None,
        _ => ("VALID", "ACCOUNT_IS_VALID"),
    })
}

fn bank_result<'a>(
    ids: &Ids,
    bulk: &Bulk<BankEntry>,
    index: usize,
    entry: &'a BankEntry,
    progress: Progress,
) -> BankResult<'a> {
    let reference_id = bulk.entry_reference(index);
    let ifsc = entry.ifsc.as_deref().unwrap_or_default().trim();
    let account = entry.bank_account.as_deref().unwrap_or_default().trim();
    let mut result = BankResult {
        entry,
        reference_id,
        name_at_bank: String::new(),
        bank_name: String::new(),
        utr: String::new(),
        city: String::new(),
        branch: String::new(),
        micr: None,
        name_match_score: "",
        name_match_result: "",
        account_status: if progress == Progress::Received {
            "RECEIVED"
        } else {
            "IN_PROCESS"
        },
        account_status_code: "",
    };
    let outcome = account_outcome(ifsc, account);
    let Some((status, code)) = outcome.filter(|_| progress == Progress::Done) else {
        return result;
    };
    result.account_status = status;
    result.account_status_code = code;
    if code == "INVALID_IFSC_FAIL" {
        return result;
    }
    let prefix = ifsc.get(..4).unwrap_or_default();
    result.bank_name = BANKS
        .iter()
        .find(|(code, _)| *code == prefix)
        .map_or_else(|| format!("{prefix} BANK"), |(_, name)| (*name).to_owned());
    let city = CITIES[(ids.reference("city", ifsc, 0, CITIES.len() as u64)) as usize];
    result.city = city.to_owned();
    result.branch = format!("{city} MAIN BRANCH");
    result.micr = Some(ids.reference("micr", ifsc, 100_000_000, 1_000_000_000));
    if status != "VALID" {
        return result;
    }
    result.utr = ids
        .reference(
            "utr",
            &reference_id.to_string(),
            100_000_000_000,
            1_000_000_000_000,
        )
        .to_string();
    match &entry.name {
        Some(name) => {
            let matched = NameMatch::of(name);
            result.name_at_bank = matched.source_name(name);
            result.name_match_score = matched.score();
            result.name_match_result = matched.result();
        }
        None => result.name_at_bank = NO_NAME.to_owned(),
    }
    result
}

/// `GET /verification/bank-account/bulk?bulk_reference_id=|bulk_verification_id=`.
pub(super) async fn bank_bulk_status(State(app): State<Shared>, Query(params): Params) -> Response {
    let bulk = match find::<BankEntry>(&app, &params) {
        Ok(bulk) => bulk,
        Err(unfound) => return unfound.response::<BankEntry>(),
    };
    let progress = progress(&app, &bulk, clock::now_ms());
    let entries = shuffled(bulk.entries.len(), &bulk.bulk_verification_id)
        .into_iter()
        .map(|index| bank_result(&app.ids, &bulk, index, &bulk.entries[index], progress))
        .collect();
    Json(BankStatus {
        bulk_reference_id: bulk.reference_id,
        bulk_verification_id: &bulk.bulk_verification_id,
        entries,
    })
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// PAN bulk

/// One PAN bulk entry, as sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PanEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

impl Entry for PanEntry {
    const PURPOSE: &'static str = "pan bulk";
    const REFERENCE_PARAM: &'static str = "reference_id";
    const PAID_BULK: Paid = Paid::PanBulk;
    const PAID_ENTRY: Paid = Paid::Pan;

    fn missing_field(&self) -> Option<&'static str> {
        self.pan.is_none().then_some("pan")
    }

    fn bulks(books: &Books) -> &Bulks<Self> {
        &books.pan
    }

    fn record(bulk: Bulk<Self>) -> Record {
        Record::PanBulk(bulk)
    }

    fn stats_key(&self) -> String {
        self.pan.clone().unwrap_or_default()
    }
}

#[derive(Serialize)]
struct PanAccepted {
    reference_id: u64,
    message: &'static str,
}

/// `POST /verification/pan/bulk`.
pub(super) async fn pan_bulk_submit(State(app): State<Shared>, body: Bytes) -> Response {
    match submit::<PanEntry>(&app, &body).await {
        Ok(bulk) => Json(PanAccepted {
            reference_id: bulk.reference_id,
            message: "Request accepted. You can check the status after some time.",
        })
        .into_response(),
        Err(refusal) => refusal,
    }
}

#[derive(Serialize)]
struct PanProcessing {
    message: &'static str,
    entries: [(); 0],
}

#[derive(Serialize)]
struct PanResult<'a> {
    pan: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    reference_id: u64,
    name_provided: &'a str,
    registered_name: String,
    valid: bool,
    message: &'static str,
    name_match_score: &'static str,
    name_match_result: &'static str,
    aadhaar_seeding_status: &'static str,
    pan_status: &'static str,
}

#[derive(Serialize)]
struct PanStatus<'a> {
    reference_id: u64,
    bulk_verification_id: &'a str,
    count: usize,
    entries: Vec<PanResult<'a>>,
}

/// `^[A-Z]{5}[0-9]{4}[A-Z]$` with a serial other than `0000`.
fn is_pan(pan: &str) -> bool {
    let b = pan.as_bytes();
    b.len() == 10
        && b[..5].iter().all(u8::is_ascii_uppercase)
        && b[5..9].iter().all(u8::is_ascii_digit)
        && b[9].is_ascii_uppercase()
        && &b[5..9] != b"0000"
}

/// The holder type of a PAN's 4th letter.
fn holder_type(letter: u8) -> &'static str {
    match letter {
        b'P' => "Individual",
        b'C' => "Company",
        b'F' => "Firm",
        b'H' => "HUF",
        b'A' => "Association of Persons",
        b'B' => "Body of Individuals",
        b'G' => "Government",
        b'J' => "Artificial Juridical Person",
        b'L' => "Local Authority",
        b'T' => "Trust",
        b'K' => "Krish",
        _ => "",
    }
}

fn pan_result<'a>(bulk: &Bulk<PanEntry>, index: usize, entry: &'a PanEntry) -> PanResult<'a> {
    let pan = entry.pan.as_deref().unwrap_or_default();
    let name = entry.name.as_deref().unwrap_or_default();
    let mut result = PanResult {
        pan,
        kind: "",
        reference_id: bulk.entry_reference(index),
        name_provided: name,
        registered_name: String::new(),
        valid: false,
        message: "Invalid PAN format",
        name_match_score: "",
        name_match_result: "",
        aadhaar_seeding_status: "NA",
        pan_status: "INVALID",
    };
    let trimmed = pan.trim();
    if !is_pan(trimmed) {
        return result;
    }
    result.kind = holder_type(trimmed.as_bytes()[3]);
    let (status, message, seeding) = match &trimmed[5..9] {
        "9001" => ("INVALID", "PAN does not exist", "NA"),
        "9002" => ("DELETED", "PAN is deleted", "NA"),
        "9003" => ("DEACTIVATED", "PAN is deactivated", "NA"),
        "9004" => ("VALID", "PAN verified successfully", "N"),
        _ => ("VALID", "PAN verified successfully", "Y"),
    };
    result.pan_status = status;
    result.message = message;
    result.aadhaar_seeding_status = seeding;
    if status == "VALID" {
        let matched = NameMatch::of(name);
        result.valid = true;
        result.registered_name = matched.source_name(name);
        result.name_match_score = matched.score();
        result.name_match_result = matched.result();
    }
    result
}

/// `GET /verification/pan/bulk?reference_id=&bulk_verification_id=`.
pub(super) async fn pan_bulk_status(State(app): State<Shared>, Query(params): Params) -> Response {
    let bulk = match find::<PanEntry>(&app, &params) {
        Ok(bulk) => bulk,
        Err(unfound) => return unfound.response::<PanEntry>(),
    };
    if progress(&app, &bulk, clock::now_ms()) != Progress::Done {
        return Json(PanProcessing {
            message: "File is being processed. Try again after some time.",
            entries: [],
        })
        .into_response();
    }
    let entries = shuffled(bulk.entries.len(), &bulk.bulk_verification_id)
        .into_iter()
        .map(|index| pan_result(&bulk, index, &bulk.entries[index]))
        .collect();
    Json(PanStatus {
        reference_id: bulk.reference_id,
        bulk_verification_id: &bulk.bulk_verification_id,
        count: bulk.entries.len(),
        entries,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

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
