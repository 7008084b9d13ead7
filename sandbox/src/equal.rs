//! Equal under `/ie`: the Aadhaar OTP journey (`transaction/journey/execute`, step 1 with
//! `{"aadhaar_no"}`, step 2 with `{"aadhaar_no","otp"}`) and `transaction/journey/data/fetch`
//! for a journey still in progress.
//!
//! Every call needs `Authorization: Basic base64(sandbox_equal_client:sandbox_equal_secret)`,
//! else 401 `{"status":"FAILURE","status_code":"invalid_credentials","message":"Invalid Client
//! Credentials"}`. The gateway's 429, 5xx and outage 503 carry no body, as Equal's gateway
//! answers. `journey_id` must be `sandbox-aadhaar-otp` ([`EQUAL_JOURNEY_ID`]).
//!
//! The client's `transaction_id` names the journey across both steps. A repeated step 1 with the
//! same `transaction_id` and Aadhaar number returns the same journey: no second OTP, and it is
//! not counted in `aadhaar_otp_requests` (only in `by_endpoint`). A repeated step 2 after the
//! OTP was accepted returns the journey as it stands, like `data/fetch`. The OTP is always
//! `123456` ([`SANDBOX_OTP`]); a wrong one answers FAILURE `invalid_otp` and leaves the journey
//! open for another try; past `--otp-ttl-secs` the journey answers FAILURE `otp_expired`.
//! Journeys are persisted in `--data-dir`, holding a keyed digest and the masked number, never
//! the Aadhaar number itself; nothing here logs one either.
//!
//! # Test Aadhaar numbers (all pass Verhoeff)
//!
//! | `aadhaar_no` | answer |
//! |---|---|
//! | `999900000016` | step 1: 200 FAILURE `document_not_found` "Entity not found" |
//! | `999900000028` | step 2: SUCCESS, decision `MUST REVIEW` |
//! | `999900000037` | step 2: SUCCESS, decision `NEEDS REVIEW` |
//! | `999900000044` | step 2: IN_PROGRESS `in_progress`; SUCCESS `CLEAR` from `--journey-delay-ms` on (fetch, or step 2 again) |
//! | `999900000059` | every call: 500 FAILURE `internal_server_error` |
//! | any other valid number, e.g. `234123412346` | step 1: IN_PROGRESS `otp_sent`; step 2: SUCCESS `success`, decision `CLEAR` |
//! | not `^[2-9][0-9]{11}$` or failing Verhoeff, e.g. `234123412347` | 200 FAILURE `invalid_aadhaar_no` |
//! | `aadhaar_no` absent | 400 FAILURE `invalid_request` "aadhaar_no is required" |
//!
//! A SUCCESS holds `data.keys.aadhaar[0]` with the number masked `XXXXXXXX1234`, a synthetic
//! name derived from the number, source `nsdl`, issuer `""`, the decision and no checks.
//! [guess] 400 `invalid_request` also answers: a bad body or `journey_id`, a step 2 or fetch with
//! no journey for the `transaction_id` (or another `journey_transaction_id`), and a step 1 or 2
//! whose Aadhaar number differs from the journey's.

use std::collections::HashMap;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::gateway::basic_credentials;
use super::stats::Paid;
use super::store::Record;
use super::{
    EQUAL_CLIENT_ID, EQUAL_CLIENT_SECRET, EQUAL_JOURNEY_ID, SANDBOX_OTP, SandboxError, Shared,
    clock, lock,
};

#[derive(Serialize)]
struct Failure<'a> {
    status: &'static str,
    status_code: &'a str,
    message: &'a str,
}

/// Equal's short failure body, for answers other than 200.
pub(super) fn failure(status: StatusCode, status_code: &str, message: &str) -> Response {
    let body = Failure {
        status: "FAILURE",
        status_code,
        message,
    };
    (status, Json(body)).into_response()
}

fn invalid_request(message: &str) -> Response {
    failure(StatusCode::BAD_REQUEST, "invalid_request", message)
}

fn internal_server_error() -> Response {
    failure(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_server_error",
        "Something went wrong, please try again.",
    )
}

/// A request that could not be persisted: the client sees Equal's 500 and may retry.
fn internal_error(error: &SandboxError) -> Response {
    tracing::error!(%error, "sandbox request failed");
    internal_server_error()
}

/// The gateway's own answers (429, 5xx): a status and no body.
pub(super) fn gateway_refusal(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

/// The refusal of a call without the sandbox's client id and secret.
pub(super) fn authenticate(headers: &HeaderMap) -> Option<Response> {
    let expected = format!("{EQUAL_CLIENT_ID}:{EQUAL_CLIENT_SECRET}");
    let valid = basic_credentials(headers)
        .and_then(|credentials| STANDARD.decode(credentials).ok())
        .is_some_and(|decoded| decoded == expected.as_bytes());
    (!valid).then(|| {
        failure(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "Invalid Client Credentials",
        )
    })
}

/// Verhoeff's multiplication table.
const D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];

/// Verhoeff's permutation table.
const P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// `^[2-9][0-9]{11}$` whose last digit is its Verhoeff check digit. The sandbox checks it on its
/// own rather than through the client's validator, so a client bug cannot hide in both.
fn is_aadhaar(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() != 12 || !(b'2'..=b'9').contains(&b[0]) || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let check = b.iter().rev().enumerate().fold(0u8, |c, (i, digit)| {
        D[usize::from(c)][usize::from(P[i % 8][usize::from(digit - b'0')])]
    });
    check == 0
}

/// `XXXXXXXX1234`: all the sandbox ever shows or keeps of a number.
fn mask(aadhaar: &str) -> String {
    format!("XXXXXXXX{}", aadhaar.get(8..).unwrap_or_default())
}

/// What an Aadhaar number scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Holder {
    Clear,
    MustReview,
    NeedsReview,
    NotFound,
    Delayed,
    Fails,
}

impl Holder {
    fn of(aadhaar: &str) -> Holder {
        match aadhaar {
            "999900000016" => Holder::NotFound,
            "999900000028" => Holder::MustReview,
            "999900000037" => Holder::NeedsReview,
            "999900000044" => Holder::Delayed,
            "999900000059" => Holder::Fails,
            _ => Holder::Clear,
        }
    }

    fn decision(self) -> &'static str {
        match self {
            Holder::MustReview => "MUST REVIEW",
            Holder::NeedsReview => "NEEDS REVIEW",
            _ => "CLEAR",
        }
    }
}

const NAMES: [&str; 6] = [
    "Ravi Kumar",
    "Priya Sharma",
    "Anil Mehta",
    "Sunita Rao",
    "Arjun Nair",
    "Meera Iyer",
];

/// A journey as journaled at step 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Journey {
    transaction_id: String,
    journey_transaction_id: String,
    /// The seed-keyed digest of the Aadhaar number: step 2 must send the same number.
    aadhaar_digest: String,
    aadhaar_masked: String,
    holder: Holder,
    name: String,
    created_ms: u64,
    expires_ms: u64,
}

/// The right OTP reached a journey, as journaled; it resolves at `ready_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct JourneyVerified {
    transaction_id: String,
    ready_ms: u64,
}

#[derive(Debug, Clone)]
struct JourneyState {
    journey: Journey,
    /// When the accepted OTP's verification resolves; `None` while the OTP is awaited.
    ready_ms: Option<u64>,
}

/// Equal's state: every journey by the client's `transaction_id`.
#[derive(Debug, Default)]
pub(super) struct Books {
    journeys: HashMap<String, JourneyState>,
}

impl Books {
    pub(super) fn journey(&mut self, journey: Journey) {
        self.journeys.insert(
            journey.transaction_id.clone(),
            JourneyState {
                journey,
                ready_ms: None,
            },
        );
    }

    pub(super) fn verified(&mut self, verified: &JourneyVerified) {
        if let Some(state) = self.journeys.get_mut(&verified.transaction_id) {
            state.ready_ms = Some(verified.ready_ms);
        }
    }
}

#[derive(Deserialize, Default)]
struct InputData {
    aadhaar_no: Option<String>,
    otp: Option<String>,
}

#[derive(Deserialize)]
struct ExecuteBody {
    journey_id: Option<String>,
    transaction_id: Option<String>,
    input_data: Option<InputData>,
}

#[derive(Serialize)]
struct AadhaarKey {
    aadhaar_no: String,
    name: String,
    source: &'static str,
    issuer: &'static str,
    decision: &'static str,
    checks: [(); 0],
}

#[derive(Serialize)]
struct Keys {
    aadhaar: [AadhaarKey; 1],
}

#[derive(Serialize)]
#[serde(untagged)]
enum Data {
    Keys { keys: Keys },
    Empty {},
}

/// The journey envelope, as the journey's documentation lists its keys.
#[derive(Serialize)]
struct Envelope {
    transaction_id: String,
    journey_transaction_id: String,
    journey_id: &'static str,
    status: &'static str,
    status_code: &'static str,
    message: &'static str,
    decision: &'static str,
    checks: [(); 0],
    data: Data,
}

/// A 200 envelope without a decision or data: the journey failed or is still under way.
fn unfinished(
    transaction_id: &str,
    journey_transaction_id: &str,
    status: &'static str,
    status_code: &'static str,
    message: &'static str,
) -> Response {
    Json(Envelope {
        transaction_id: transaction_id.to_owned(),
        journey_transaction_id: journey_transaction_id.to_owned(),
        journey_id: EQUAL_JOURNEY_ID,
        status,
        status_code,
        message,
        decision: "",
        checks: [],
        data: Data::Empty {},
    })
    .into_response()
}

/// The envelope of a journey as it stands at `now_ms`.
fn current(state: &JourneyState, now_ms: u64) -> Response {
    let journey = &state.journey;
    let unfinished = |status, code, message| {
        unfinished(
            &journey.transaction_id,
            &journey.journey_transaction_id,
            status,
            code,
            message,
        )
    };
    match state.ready_ms {
        None if now_ms >= journey.expires_ms => {
            unfinished("FAILURE", "otp_expired", "OTP has expired")
        }
        None => unfinished(
            "IN_PROGRESS",
            "otp_sent",
            "OTP sent to the mobile number linked with the Aadhaar",
        ),
        Some(ready_ms) if now_ms < ready_ms => {
            unfinished("IN_PROGRESS", "in_progress", "Verification is in progress")
        }
        Some(_) => {
            let decision = journey.holder.decision();
            Json(Envelope {
                transaction_id: journey.transaction_id.clone(),
                journey_transaction_id: journey.journey_transaction_id.clone(),
                journey_id: EQUAL_JOURNEY_ID,
                status: "SUCCESS",
                status_code: "success",
                message: "Request successful",
                decision,
                checks: [],
                data: Data::Keys {
                    keys: Keys {
                        aadhaar: [AadhaarKey {
                            aadhaar_no: journey.aadhaar_masked.clone(),
                            name: journey.name.clone(),
                            source: "nsdl",
                            issuer: "",
                            decision,
                            checks: [],
                        }],
                    },
                },
            })
            .into_response()
        }
    }
}

/// `POST /ie/transaction/journey/execute`: step 1 without `otp`, step 2 with it.
pub(super) async fn execute(State(app): State<Shared>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<ExecuteBody>(&body) else {
        return invalid_request(
            "the body must be JSON with journey_id, transaction_id and input_data",
        );
    };
    if body.journey_id.as_deref() != Some(EQUAL_JOURNEY_ID) {
        return invalid_request("journey_id is invalid");
    }
    let Some(transaction_id) = body.transaction_id.filter(|id| !id.is_empty()) else {
        return invalid_request("transaction_id is required");
    };
    let input = body.input_data.unwrap_or_default();
    let Some(aadhaar) = input.aadhaar_no else {
        return invalid_request("aadhaar_no is required");
    };
    if !is_aadhaar(&aadhaar) {
        let journey_transaction_id = app.ids.journey_transaction_id(&transaction_id);
        return unfinished(
            &transaction_id,
            &journey_transaction_id,
            "FAILURE",
            "invalid_aadhaar_no",
            "aadhaar_no is Invalid",
        );
    }
    let holder = Holder::of(&aadhaar);
    if holder == Holder::Fails {
        return internal_server_error();
    }
    let step = Step {
        transaction_id,
        digest: app.ids.digest_of(&aadhaar),
        masked: mask(&aadhaar),
        holder,
    };
    match input.otp {
        None => step.send_otp(&app).await,
        Some(otp) => step.verify(&app, &otp).await,
    }
}

/// A journey step for a valid Aadhaar number, which goes no further than this.
struct Step {
    transaction_id: String,
    digest: String,
    masked: String,
    holder: Holder,
}

/// What a step 2 found in the books, when it found the journey.
enum Found {
    /// A wrong OTP for this open journey.
    WrongOtp(JourneyState),
    /// The journey after the step.
    Journey(JourneyState),
}

const NO_JOURNEY: &str = "No journey for this transaction_id: send step 1 first";
const OTHER_AADHAAR: &str = "transaction_id is already used for another aadhaar_no";

impl Step {
    /// Step 1: a new journey with its OTP sent, or the journey this transaction already is.
    async fn send_otp(self, app: &Shared) -> Response {
        let journey_transaction_id = app.ids.journey_transaction_id(&self.transaction_id);
        if self.holder == Holder::NotFound {
            lock(&app.stats).paid(Paid::AadhaarOtpRequest, &self.masked);
            return unfinished(
                &self.transaction_id,
                &journey_transaction_id,
                "FAILURE",
                "document_not_found",
                "Entity not found",
            );
        }
        let now = clock::now_ms();
        let found = app
            .store
            .update(|jobs| match jobs.equal.journeys.get(&self.transaction_id) {
                Some(state) if state.journey.aadhaar_digest == self.digest => {
                    (None, Ok((false, state.clone())))
                }
                Some(_) => (None, Err(OTHER_AADHAAR)),
                None => {
                    let pick = app.ids.reference("aadhaar name", &self.digest, 0, 6);
                    let journey = Journey {
                        transaction_id: self.transaction_id.clone(),
                        journey_transaction_id,
                        aadhaar_digest: self.digest.clone(),
                        aadhaar_masked: self.masked.clone(),
                        holder: self.holder,
                        name: NAMES[pick as usize].to_owned(),
                        created_ms: now,
                        expires_ms: now
                            .saturating_add(app.config.otp_ttl_secs.saturating_mul(1000)),
                    };
                    let state = JourneyState {
                        journey: journey.clone(),
                        ready_ms: None,
                    };
                    (Some(Record::Journey(journey)), Ok((true, state)))
                }
            })
            .await;
        match found {
            Ok(Ok((sent, state))) => {
                if sent {
                    lock(&app.stats).paid(Paid::AadhaarOtpRequest, &self.masked);
                }
                current(&state, now)
            }
            Ok(Err(message)) => invalid_request(message),
            Err(error) => internal_error(&error),
        }
    }

    /// Step 2: the OTP for the journey this transaction is.
    async fn verify(self, app: &Shared, otp: &str) -> Response {
        let now = clock::now_ms();
        let found = app
            .store
            .update(|jobs| {
                let Some(state) = jobs.equal.journeys.get(&self.transaction_id) else {
                    return (None, Err(NO_JOURNEY));
                };
                if state.journey.aadhaar_digest != self.digest {
                    return (None, Err(OTHER_AADHAAR));
                }
                if state.ready_ms.is_some() || now >= state.journey.expires_ms {
                    return (None, Ok(Found::Journey(state.clone())));
                }
                if otp != SANDBOX_OTP {
                    return (None, Ok(Found::WrongOtp(state.clone())));
                }
                let delay = if self.holder == Holder::Delayed {
                    app.config.journey_delay_ms
                } else {
                    0
                };
                let ready_ms = now.saturating_add(delay);
                let record = Record::JourneyVerified(JourneyVerified {
                    transaction_id: self.transaction_id.clone(),
                    ready_ms,
                });
                let state = JourneyState {
                    journey: state.journey.clone(),
                    ready_ms: Some(ready_ms),
                };
                (Some(record), Ok(Found::Journey(state)))
            })
            .await;
        let found = match found {
            Ok(Ok(found)) => found,
            Ok(Err(message)) => return invalid_request(message),
            Err(error) => return internal_error(&error),
        };
        lock(&app.stats).paid(Paid::AadhaarOtpVerification, &self.masked);
        match found {
            Found::WrongOtp(state) => unfinished(
                &state.journey.transaction_id,
                &state.journey.journey_transaction_id,
                "FAILURE",
                "invalid_otp",
                "OTP is invalid",
            ),
            Found::Journey(state) => current(&state, now),
        }
    }
}

#[derive(Deserialize)]
struct FetchBody {
    transaction_id: Option<String>,
    journey_transaction_id: Option<String>,
}

/// `POST /ie/transaction/journey/data/fetch`: the journey as it stands.
pub(super) async fn fetch(State(app): State<Shared>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<FetchBody>(&body) else {
        return invalid_request(
            "the body must be JSON with transaction_id and journey_transaction_id",
        );
    };
    let (Some(transaction_id), Some(journey_transaction_id)) =
        (body.transaction_id, body.journey_transaction_id)
    else {
        return invalid_request("transaction_id and journey_transaction_id are required");
    };
    let state = app.store.read(|jobs| {
        jobs.equal
            .journeys
            .get(&transaction_id)
            .filter(|state| state.journey.journey_transaction_id == journey_transaction_id)
            .cloned()
    });
    match state {
        Some(state) => current(&state, clock::now_ms()),
        None => invalid_request("No journey for this transaction_id and journey_transaction_id"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verhoeff_and_masking() {
        for valid in [
            "234123412346",
            "999900000016",
            "999900000028",
            "999900000037",
            "999900000044",
            "999900000059",
        ] {
            assert!(is_aadhaar(valid), "{valid}");
        }
        for invalid in [
            "234123412347",
            "123412341234",
            "23412341234",
            "2341234123x6",
            "",
        ] {
            assert!(!is_aadhaar(invalid), "{invalid}");
        }
        assert_eq!(mask("234123412346"), "XXXXXXXX2346");
    }
}
