//! What the simulator saw, for tests and benchmarks: whether a client paid twice, stayed under
//! the limits, polled too eagerly. Counters live in memory only.
//!
//! The JSON: `requests`, `rate_limited`, `server_errors`, `resets` (all providers together),
//! `accepted_per_second` (unix second → admitted requests), `by_endpoint` (endpoint → arrivals,
//! every endpoint listed), `by_provider` (provider → the four counters), then one map per kind of
//! paid call, identifier → count (see [`Stats`]).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::faults::Answer;
use super::gateway::Provider;
use super::{Shared, lock};

/// The routes whose arrivals are counted in `by_endpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Authorize,
    UdyamSubmit,
    UdyamResult,
    BatchUpload,
    BatchStatus,
    Download,
    DigilockerCreate,
    DigilockerStatus,
    BankBulkSubmit,
    BankBulkStatus,
    PanBulkSubmit,
    PanBulkStatus,
    UdyamLookup,
    UdyamOtpGen,
    UdyamOtpVerify,
    JourneyExecute,
    JourneyFetch,
}

impl Endpoint {
    /// Every endpoint, in declaration order: `endpoint as usize` indexes it.
    const ALL: [Endpoint; 17] = [
        Endpoint::Authorize,
        Endpoint::UdyamSubmit,
        Endpoint::UdyamResult,
        Endpoint::BatchUpload,
        Endpoint::BatchStatus,
        Endpoint::Download,
        Endpoint::DigilockerCreate,
        Endpoint::DigilockerStatus,
        Endpoint::BankBulkSubmit,
        Endpoint::BankBulkStatus,
        Endpoint::PanBulkSubmit,
        Endpoint::PanBulkStatus,
        Endpoint::UdyamLookup,
        Endpoint::UdyamOtpGen,
        Endpoint::UdyamOtpVerify,
        Endpoint::JourneyExecute,
        Endpoint::JourneyFetch,
    ];

    /// The endpoint a request calls; paths served for two methods count each apart.
    pub(super) fn of(method: &Method, path: &str) -> Option<Endpoint> {
        let by_method = |get: Endpoint, post: Endpoint| match *method {
            Method::GET => Some(get),
            Method::POST => Some(post),
            _ => None,
        };
        match path {
            "/v1/authorize" => Some(Endpoint::Authorize),
            "/v1/verification/async/post-udyam-details" => Some(Endpoint::UdyamSubmit),
            "/v1/verification/async/get-udyam-details" => Some(Endpoint::UdyamResult),
            "/v1/verification/upi-basic/batch" => Some(Endpoint::BatchUpload),
            "/v1/verification/batch-processing-status" => Some(Endpoint::BatchStatus),
            "/verification/digilocker" => {
                by_method(Endpoint::DigilockerStatus, Endpoint::DigilockerCreate)
            }
            "/verification/bank-account/bulk" => {
                by_method(Endpoint::BankBulkStatus, Endpoint::BankBulkSubmit)
            }
            "/verification/pan/bulk" => by_method(Endpoint::PanBulkStatus, Endpoint::PanBulkSubmit),
            "/api/v1/public/corpx/udyam" => Some(Endpoint::UdyamLookup),
            "/api/v1/public/corpx/udyam/otp-gen" => Some(Endpoint::UdyamOtpGen),
            "/api/v1/public/corpx/udyam/otp-verify" => Some(Endpoint::UdyamOtpVerify),
            "/ie/transaction/journey/execute" => Some(Endpoint::JourneyExecute),
            "/ie/transaction/journey/data/fetch" => Some(Endpoint::JourneyFetch),
            _ if path.starts_with("/bulk-data-processing/upi-basic-batch-output-files/") => {
                Some(Endpoint::Download)
            }
            _ => None,
        }
    }

    /// The key in `by_endpoint`: Deepvue's keep the names they had before other providers came.
    fn name(self) -> &'static str {
        match self {
            Endpoint::Authorize => "authorize",
            Endpoint::UdyamSubmit => "udyam_submit",
            Endpoint::UdyamResult => "udyam_result",
            Endpoint::BatchUpload => "batch_upload",
            Endpoint::BatchStatus => "batch_status",
            Endpoint::Download => "download",
            Endpoint::DigilockerCreate => "digilocker_create",
            Endpoint::DigilockerStatus => "digilocker_status",
            Endpoint::BankBulkSubmit => "bank_bulk_submit",
            Endpoint::BankBulkStatus => "bank_bulk_status",
            Endpoint::PanBulkSubmit => "pan_bulk_submit",
            Endpoint::PanBulkStatus => "pan_bulk_status",
            Endpoint::UdyamLookup => "udyam_lookup",
            Endpoint::UdyamOtpGen => "udyam_otp_gen",
            Endpoint::UdyamOtpVerify => "udyam_otp_verify",
            Endpoint::JourneyExecute => "journey_execute",
            Endpoint::JourneyFetch => "journey_fetch",
        }
    }
}

/// Requests that arrived per endpoint, including refused ones; every endpoint is listed, zero
/// or not, so a reader can tell "never called" from "not counted".
#[derive(Debug, Default)]
struct ByEndpoint([u64; Endpoint::ALL.len()]);

impl Serialize for ByEndpoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (endpoint, count) in Endpoint::ALL.iter().zip(&self.0) {
            map.serialize_entry(endpoint.name(), count)?;
        }
        map.end()
    }
}

/// What became of one provider's requests.
#[derive(Debug, Default, Serialize)]
struct Answers {
    /// Every request that arrived, whatever became of it.
    requests: u64,
    /// Every answer 429: the rate limiter's and an outage's.
    rate_limited: u64,
    /// Every answer 5xx: injected by the gateway or scripted by a test identifier.
    server_errors: u64,
    /// Connections dropped without an answer.
    resets: u64,
}

impl Answers {
    fn count(&mut self, answer: &Answer) {
        match answer {
            Answer::Reset => self.resets += 1,
            Answer::Respond(response) if response.status() == StatusCode::TOO_MANY_REQUESTS => {
                self.rate_limited += 1;
            }
            Answer::Respond(response) if response.status().is_server_error() => {
                self.server_errors += 1;
            }
            Answer::Respond(_) => {}
        }
    }
}

/// One provider's [`Answers`] per provider name, every provider listed.
#[derive(Debug, Default)]
struct ByProvider([Answers; Provider::ALL.len()]);

impl Serialize for ByProvider {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (provider, answers) in Provider::ALL.iter().zip(&self.0) {
            map.serialize_entry(provider.name(), answers)?;
        }
        map.end()
    }
}

/// How many times each identifier was sent in a paid call: a count above 1 is a client that paid
/// twice for the same answer. Hashed, not ordered, because a scale run sends it millions of
/// identifiers while its client runs on the same cores: ordered inserts were a third of the
/// sandbox's time in a batch job, and SipHash then a seventh (a test server on loopback needs no
/// defence against chosen collisions). Served in the identifiers' order, so that the stats read
/// alike from run to run.
#[derive(Debug, Default)]
struct PerId(foldhash::HashMap<String, u64>);

impl PerId {
    fn bump(&mut self, id: &str) {
        match self.0.get_mut(id) {
            Some(n) => *n += 1,
            None => {
                self.0.insert(id.to_owned(), 1);
            }
        }
    }
}

impl Serialize for PerId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut ids: Vec<(&String, &u64)> = self.0.iter().collect();
        ids.sort_unstable();
        let mut map = serializer.serialize_map(Some(ids.len()))?;
        for (id, n) in ids {
            map.serialize_entry(id, n)?;
        }
        map.end()
    }
}

#[derive(Debug, Default, Serialize)]
pub(super) struct Stats {
    /// The totals of `by_provider`: every provider request (whatever became of it), every 429,
    /// every 5xx, every dropped connection.
    #[serde(flatten)]
    total: Answers,
    /// Requests the rate limiter admitted, per unix second of arrival, all providers together.
    accepted_per_second: BTreeMap<u64, u64>,
    by_endpoint: ByEndpoint,
    by_provider: ByProvider,
    udyam_submissions: PerId,
    /// Submissions answered 500 or 503: not paid, kept apart so retries can be counted.
    udyam_rejected: PerId,
    batch_uploads: PerId,
    vpa_uploads: PerId,
    /// Cashfree DigiLocker verifications created, per `verification_id`.
    digilocker_created: PerId,
    /// Cashfree DigiLocker status answers (200), per `verification_id`.
    digilocker_lookups: PerId,
    /// Accepted Cashfree bank bulks, per `bulk_verification_id`.
    bank_bulk_submissions: PerId,
    /// Entries of accepted bank bulks, per `bank_account:ifsc`.
    bank_account_submissions: PerId,
    /// Accepted Cashfree PAN bulks, per `bulk_verification_id`.
    pan_bulk_submissions: PerId,
    /// Entries of accepted PAN bulks, per PAN.
    pan_submissions: PerId,
    /// Attestr plain Udyam lookups answered 200, per `reg`.
    udyam_lookups: PerId,
    /// Attestr OTP generations answered 200 (SUCCESS or INVALID), per `reg`.
    udyam_otp_requests: PerId,
    /// Attestr OTP verifications of a known request, whatever their status, per `reg`.
    udyam_otp_verifications: PerId,
    /// Equal step 1 calls that sent an OTP (a repeat of a known journey sends none) or were
    /// answered `document_not_found`, per masked Aadhaar number (`XXXXXXXX1234`: never a full
    /// number, here either).
    aadhaar_otp_requests: PerId,
    /// Equal step 2 calls that reached a journey, whatever their outcome, per masked Aadhaar.
    aadhaar_otp_verifications: PerId,
}

/// The paid calls counted per identifier, one map each.
#[derive(Debug, Clone, Copy)]
pub(super) enum Paid {
    DigilockerCreated,
    DigilockerLookup,
    BankBulk,
    BankAccount,
    PanBulk,
    Pan,
    UdyamLookup,
    UdyamOtpRequest,
    UdyamOtpVerification,
    AadhaarOtpRequest,
    AadhaarOtpVerification,
}

impl Stats {
    pub(super) fn arrived(&mut self, endpoint: Endpoint) {
        self.by_endpoint.0[endpoint as usize] += 1;
    }

    fn provider(&mut self, provider: Provider) -> &mut Answers {
        &mut self.by_provider.0[provider as usize]
    }

    pub(super) fn provider_arrived(&mut self, provider: Provider) {
        self.total.requests += 1;
        self.provider(provider).requests += 1;
    }

    /// A request the rate limiter admitted in unix second `second`.
    pub(super) fn admitted(&mut self, second: u64) {
        *self.accepted_per_second.entry(second).or_default() += 1;
    }

    /// What a provider request finally got, counted by kind whichever step produced it.
    pub(super) fn provider_answered(&mut self, provider: Provider, answer: &Answer) {
        self.total.count(answer);
        self.provider(provider).count(answer);
    }

    pub(super) fn udyam_paid(&mut self, number: &str) {
        self.udyam_submissions.bump(number);
    }

    pub(super) fn udyam_rejected(&mut self, number: &str) {
        self.udyam_rejected.bump(number);
    }

    pub(super) fn batch_uploaded<'a>(&mut self, sha256: &str, vpas: impl Iterator<Item = &'a str>) {
        self.batch_uploads.bump(sha256);
        for vpa in vpas {
            self.vpa_uploads.bump(vpa);
        }
    }

    /// A paid call of kind `paid` for identifier `id`.
    pub(super) fn paid(&mut self, paid: Paid, id: &str) {
        let map = match paid {
            Paid::DigilockerCreated => &mut self.digilocker_created,
            Paid::DigilockerLookup => &mut self.digilocker_lookups,
            Paid::BankBulk => &mut self.bank_bulk_submissions,
            Paid::BankAccount => &mut self.bank_account_submissions,
            Paid::PanBulk => &mut self.pan_bulk_submissions,
            Paid::Pan => &mut self.pan_submissions,
            Paid::UdyamLookup => &mut self.udyam_lookups,
            Paid::UdyamOtpRequest => &mut self.udyam_otp_requests,
            Paid::UdyamOtpVerification => &mut self.udyam_otp_verifications,
            Paid::AadhaarOtpRequest => &mut self.aadhaar_otp_requests,
            Paid::AadhaarOtpVerification => &mut self.aadhaar_otp_verifications,
        };
        map.bump(id);
    }
}

/// `GET /_sandbox/stats`: neither authenticated nor limited, so observing never perturbs.
/// Serialised under the lock, field order kept as declared.
pub(super) async fn handler(State(app): State<Shared>) -> Response {
    let body = serde_json::to_string(&*lock(&app.stats));
    match body {
        Ok(body) => ([(CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot serialise the sandbox stats");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_of_all_are_in_declaration_order() {
        for (index, endpoint) in Endpoint::ALL.iter().enumerate() {
            assert_eq!(*endpoint as usize, index, "{endpoint:?}");
        }
        for (index, provider) in Provider::ALL.iter().enumerate() {
            assert_eq!(*provider as usize, index, "{provider:?}");
        }
    }
}
