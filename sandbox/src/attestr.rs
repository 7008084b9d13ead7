//! Attestr under `/api/v1/public`: Udyam (MSME) verification by the registered mobile's OTP
//! (`corpx/udyam/otp-gen`, then `corpx/udyam/otp-verify`), and the plain lookup without OTP
//! (`corpx/udyam`).
//!
//! Every call needs `Authorization: Basic sandbox_attestr_token` (the token as Attestr's
//! dashboard shows it: opaque, not base64 of anything), else 401 `{"code":4016,"message":
//! "Invalid client authorization"}`. Every answer carries an `xattestrid` tracing header. Errors
//! are `{"code","message","details"}` (`details` only where it says more). Over the per-second or
//! per-minute limit: 429 code 4291; over the per-day limit: 429 code 4293 (stop for today).
//!
//! The OTP is always `123456` ([`SANDBOX_OTP`]). OTP requests are persisted in `--data-dir`, so
//! a later run's sandbox still knows every `_id`, its wrong attempts and its expiry. An OTP
//! expires `--otp-ttl-secs` (600, as Attestr documents) after `otp-gen`, by the wall clock.
//!
//! # Test identifiers: the Udyam number's 7-digit serial (any state and district)
//!
//! | `reg` serial / `mobile` | `otp-gen` (and the plain lookup) | `otp-verify` |
//! |---|---|---|
//! | `8000001` (e.g. `UDYAM-MH-01-8000001`) | 200 `{"valid":false,"status":"INVALID"}` (not registered; the lookup: `{"valid":false,"message":"Udyam number not found"}`) | — |
//! | `mobile` `6000000000`, any `reg` | 200 `INVALID` (mobile not linked; the lookup ignores it) | — |
//! | `8000002` | 200 `SUCCESS` | 200 `{"valid":false,"status":"ARCHIVED"}` |
//! | `8004001` | 400 code 4001 | — |
//! | `8004005` | 400 code 4005 (low credits) | — |
//! | `8004016` | 401 code 4016 | — |
//! | `8004031` | 403 code 4031 | — |
//! | `8004035` | 403 code 4035 | — |
//! | `8004039` | 403 code 4039 | — |
//! | `8005001` | 500 code 5001 | — |
//! | anything else | 200 `{"valid":true,"status":"SUCCESS","_id","number"}` | see below |
//!
//! `otp-verify` of a known `_id`, the first rule that matches:
//!
//! | state | answer |
//! |---|---|
//! | already verified once | `INVALID_REQUEST` |
//! | the reg's serial is `8000002` | `ARCHIVED` |
//! | three wrong OTPs already | `MAX_ATTEMPTS_EXCEEDED` |
//! | past its expiry | `REQUEST_EXPIRED` |
//! | OTP `123456` | `SUCCESS`, `valid` true, with every MSME field |
//! | a wrong OTP, the 1st or 2nd | `INVALID_OTP` |
//! | a wrong OTP, the 3rd | `MAX_ATTEMPTS_EXCEEDED` |
//!
//! [guess] A malformed `reg` or `mobile`, a missing field, or an unknown `_id` is 400 code 4001
//! with the reason in `details`. The MSME fields are synthetic and derived from the number;
//! the owner's mobile is the one the OTP was sent to.

mod msme;

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::gateway::basic_credentials;
use super::stats::Paid;
use super::store::Record;
use super::udyam;
use super::{ATTESTR_AUTH_TOKEN, SANDBOX_OTP, SandboxError, Shared, clock, lock};

/// A mobile number that is never linked to a Udyam registration.
const UNLINKED_MOBILE: &str = "6000000000";
/// Wrong OTPs an OTP request survives: the third wrong one ends it.
const MAX_WRONG_OTPS: u32 = 3;

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: u16,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a str>,
}

/// Attestr's error body.
pub(super) fn error(
    status: StatusCode,
    code: u16,
    message: &str,
    details: Option<&str>,
) -> Response {
    (
        status,
        Json(ErrorBody {
            code,
            message,
            details,
        }),
    )
        .into_response()
}

fn malformed(details: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        4001,
        "Malformed data or missing required parameter values",
        Some(details),
    )
}

/// The refusal of a call without the sandbox's auth token.
pub(super) fn authenticate(headers: &HeaderMap) -> Option<Response> {
    (basic_credentials(headers) != Some(ATTESTR_AUTH_TOKEN)).then(|| {
        error(
            StatusCode::UNAUTHORIZED,
            4016,
            "Invalid client authorization",
            None,
        )
    })
}

/// Attestr's 429: 4293 when the day's limit is used up, 4291 for a short burst.
pub(super) fn rate_limited(daily: bool) -> Response {
    let (code, message) = if daily {
        (4293, "Maximum account daily limit exceeded")
    } else {
        (4291, "Maximum account rate limit exceeded")
    };
    error(StatusCode::TOO_MANY_REQUESTS, code, message, None)
}

/// A 5xx from Attestr's gateway. [guess] the body.
pub(super) fn unavailable(status: StatusCode) -> Response {
    error(
        status,
        5001,
        "Request could not be processed",
        Some("Service temporarily unavailable"),
    )
}

/// A request that could not be persisted: the client sees a 500 and may retry.
fn internal_error(error: &SandboxError) -> Response {
    tracing::error!(%error, "sandbox request failed");
    self::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        5001,
        "Request could not be processed",
        None,
    )
}

/// What a Udyam number scripts, by its serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Registered,
    NotRegistered,
    Archived,
    Refused(StatusCode, u16, &'static str),
}

impl Scenario {
    fn of(reg: &str) -> Scenario {
        let refused = |status, code, message| Scenario::Refused(status, code, message);
        match udyam::serial(reg) {
            "8000001" => Scenario::NotRegistered,
            "8000002" => Scenario::Archived,
            "8004001" => refused(
                StatusCode::BAD_REQUEST,
                4001,
                "Malformed data or missing required parameter values",
            ),
            "8004005" => refused(
                StatusCode::BAD_REQUEST,
                4005,
                "Operation could not be performed due to low credits balance",
            ),
            "8004016" => refused(
                StatusCode::UNAUTHORIZED,
                4016,
                "Invalid client authorization",
            ),
            "8004031" => refused(StatusCode::FORBIDDEN, 4031, "Unauthorized access"),
            "8004035" => refused(
                StatusCode::FORBIDDEN,
                4035,
                "Requested service is not provisioned for your account",
            ),
            "8004039" => refused(
                StatusCode::FORBIDDEN,
                4039,
                "Client's IP address is not whitelisted",
            ),
            "8005001" => refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                5001,
                "Request could not be processed",
            ),
            _ => Scenario::Registered,
        }
    }

    /// The scripted error answer, for the serials that refuse every call.
    fn refusal(self) -> Option<Response> {
        match self {
            Scenario::Refused(status, code, message) => Some(error(status, code, message, None)),
            _ => None,
        }
    }
}

/// `^[6-9][0-9]{9}$`
fn is_mobile(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10 && (b'6'..=b'9').contains(&b[0]) && b.iter().all(u8::is_ascii_digit)
}

/// A well-formed `reg` of a JSON body, or the `details` of the 4001 that refuses it.
fn reg_of(reg: Option<String>) -> Result<String, &'static str> {
    let reg = reg.ok_or("reg is required")?;
    if udyam::is_udyam_number(&reg) {
        Ok(reg)
    } else {
        Err("reg must be a UDYAM number UDYAM-XX-00-0000000")
    }
}

/// An OTP request, as journaled when it is generated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct OtpRequest {
    id: String,
    number: String,
    reg: String,
    mobile: String,
    created_ms: u64,
    expires_ms: u64,
}

/// An OTP submitted for a request, as journaled: right or wrong.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct OtpAttempt {
    id: String,
    correct: bool,
}

#[derive(Debug)]
struct OtpState {
    request: OtpRequest,
    wrong: u32,
    verified: bool,
}

/// Attestr's state: every OTP request by `_id`, and how many each reg and mobile had.
#[derive(Debug, Default)]
pub(super) struct Books {
    requests: HashMap<String, OtpState>,
    issued: HashMap<(String, String), u64>,
}

impl Books {
    pub(super) fn request(&mut self, request: OtpRequest) {
        let pair = (request.reg.clone(), request.mobile.clone());
        *self.issued.entry(pair).or_default() += 1;
        self.requests.insert(
            request.id.clone(),
            OtpState {
                request,
                wrong: 0,
                verified: false,
            },
        );
    }

    pub(super) fn attempt(&mut self, attempt: &OtpAttempt) {
        if let Some(state) = self.requests.get_mut(&attempt.id) {
            if attempt.correct {
                state.verified = true;
            } else {
                state.wrong += 1;
            }
        }
    }
}

#[derive(Deserialize)]
struct GenBody {
    reg: Option<String>,
    mobile: Option<String>,
}

#[derive(Serialize)]
struct Generated {
    valid: bool,
    status: &'static str,
    #[serde(rename = "_id")]
    id: String,
    number: String,
}

#[derive(Serialize)]
struct Status {
    valid: bool,
    status: &'static str,
}

fn status(status: &'static str) -> Response {
    Json(Status {
        valid: false,
        status,
    })
    .into_response()
}

/// `POST /api/v1/public/corpx/udyam/otp-gen` `{"reg","mobile"}`.
pub(super) async fn otp_gen(State(app): State<Shared>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<GenBody>(&body) else {
        return malformed("the body must be JSON {\"reg\",\"mobile\"} of strings");
    };
    let reg = match reg_of(body.reg) {
        Ok(reg) => reg,
        Err(details) => return malformed(details),
    };
    let Some(mobile) = body.mobile.filter(|mobile| is_mobile(mobile)) else {
        return malformed("mobile must be a 10 digit mobile number");
    };
    let scenario = Scenario::of(&reg);
    if let Some(refusal) = scenario.refusal() {
        return refusal;
    }
    if scenario == Scenario::NotRegistered || mobile == UNLINKED_MOBILE {
        lock(&app.stats).paid(Paid::UdyamOtpRequest, &reg);
        return status("INVALID");
    }
    let created_ms = clock::now_ms();
    let expires_ms = created_ms.saturating_add(app.config.otp_ttl_secs.saturating_mul(1000));
    let generated = app
        .store
        .update(|jobs| {
            let pair = (reg.clone(), mobile.clone());
            let prior = jobs.attestr.issued.get(&pair).copied().unwrap_or_default();
            let (id, number) = app.ids.otp_request(&reg, &mobile, prior);
            let request = OtpRequest {
                id: id.clone(),
                number: number.clone(),
                reg: reg.clone(),
                mobile: mobile.clone(),
                created_ms,
                expires_ms,
            };
            (Some(Record::OtpRequest(request)), (id, number))
        })
        .await;
    let (id, number) = match generated {
        Ok(generated) => generated,
        Err(error) => return internal_error(&error),
    };
    lock(&app.stats).paid(Paid::UdyamOtpRequest, &reg);
    Json(Generated {
        valid: true,
        status: "SUCCESS",
        id,
        number,
    })
    .into_response()
}

#[derive(Deserialize)]
struct VerifyBody {
    req: Option<String>,
    otp: Option<String>,
}

/// What an `otp-verify` found.
enum Verified {
    Unknown,
    Answered {
        reg: String,
        mobile: String,
        status: &'static str,
    },
}

/// `POST /api/v1/public/corpx/udyam/otp-verify` `{"req","otp"}`.
pub(super) async fn otp_verify(State(app): State<Shared>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<VerifyBody>(&body) else {
        return malformed("the body must be JSON {\"req\",\"otp\"} of strings");
    };
    let (Some(req), Some(otp)) = (body.req, body.otp) else {
        return malformed("req and otp are required");
    };
    let now = clock::now_ms();
    let verified = app
        .store
        .update(|jobs| {
            let Some(state) = jobs.attestr.requests.get(&req) else {
                return (None, Verified::Unknown);
            };
            let attempt = |correct| {
                Some(Record::OtpAttempt(OtpAttempt {
                    id: req.clone(),
                    correct,
                }))
            };
            let (record, status) = if state.verified {
                (None, "INVALID_REQUEST")
            } else if Scenario::of(&state.request.reg) == Scenario::Archived {
                (None, "ARCHIVED")
            } else if state.wrong >= MAX_WRONG_OTPS {
                (None, "MAX_ATTEMPTS_EXCEEDED")
            } else if now >= state.request.expires_ms {
                (None, "REQUEST_EXPIRED")
            } else if otp == SANDBOX_OTP {
                (attempt(true), "SUCCESS")
            } else if state.wrong + 1 >= MAX_WRONG_OTPS {
                (attempt(false), "MAX_ATTEMPTS_EXCEEDED")
            } else {
                (attempt(false), "INVALID_OTP")
            };
            let answered = Verified::Answered {
                reg: state.request.reg.clone(),
                mobile: state.request.mobile.clone(),
                status,
            };
            (record, answered)
        })
        .await;
    let (reg, mobile, answer) = match verified {
        Ok(Verified::Answered {
            reg,
            mobile,
            status,
        }) => (reg, mobile, status),
        Ok(Verified::Unknown) => return malformed("req is not a known request id"),
        Err(error) => return internal_error(&error),
    };
    lock(&app.stats).paid(Paid::UdyamOtpVerification, &reg);
    if answer != "SUCCESS" {
        return status(answer);
    }
    Json(msme::record(&reg, Some(&mobile))).into_response()
}

#[derive(Deserialize)]
struct LookupBody {
    reg: Option<String>,
}

#[derive(Serialize)]
struct NotFound {
    valid: bool,
    message: &'static str,
}

/// `POST /api/v1/public/corpx/udyam` `{"reg"}`: the registration without the details that need
/// the owner's OTP. [guess] its shape: the OTP answer's public fields.
pub(super) async fn lookup(State(app): State<Shared>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<LookupBody>(&body) else {
        return malformed("the body must be JSON {\"reg\"} of a string");
    };
    let reg = match reg_of(body.reg) {
        Ok(reg) => reg,
        Err(details) => return malformed(details),
    };
    let scenario = Scenario::of(&reg);
    if let Some(refusal) = scenario.refusal() {
        return refusal;
    }
    lock(&app.stats).paid(Paid::UdyamLookup, &reg);
    if scenario == Scenario::NotRegistered {
        return Json(NotFound {
            valid: false,
            message: "Udyam number not found",
        })
        .into_response();
    }
    Json(msme::record(&reg, None)).into_response()
}
