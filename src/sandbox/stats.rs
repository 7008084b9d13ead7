//! What the simulator saw, for tests and benchmarks: whether a client paid twice, stayed under
//! the limits, polled too eagerly. Counters live in memory only.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::faults::Answer;
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
}

impl Endpoint {
    pub(super) fn of(path: &str) -> Option<Endpoint> {
        match path {
            "/v1/authorize" => Some(Endpoint::Authorize),
            "/v1/verification/async/post-udyam-details" => Some(Endpoint::UdyamSubmit),
            "/v1/verification/async/get-udyam-details" => Some(Endpoint::UdyamResult),
            "/v1/verification/upi-basic/batch" => Some(Endpoint::BatchUpload),
            "/v1/verification/batch-processing-status" => Some(Endpoint::BatchStatus),
            _ if path.starts_with("/bulk-data-processing/upi-basic-batch-output-files/") => {
                Some(Endpoint::Download)
            }
            _ => None,
        }
    }
}

/// Requests that arrived per endpoint, including refused ones.
#[derive(Debug, Default, Serialize)]
struct ByEndpoint {
    authorize: u64,
    udyam_submit: u64,
    udyam_result: u64,
    batch_upload: u64,
    batch_status: u64,
    download: u64,
}

#[derive(Debug, Default, Serialize)]
pub(super) struct Stats {
    /// Every `/v1` request that arrived, whatever became of it.
    requests: u64,
    /// Every `/v1` answer 429: the rate limiter's and an outage's.
    rate_limited: u64,
    /// Every `/v1` answer 5xx: injected by the gateway or scripted by a test identifier.
    server_errors: u64,
    /// `/v1` connections dropped without an answer.
    resets: u64,
    /// Requests the rate limiter admitted, per unix second of arrival.
    accepted_per_second: BTreeMap<u64, u64>,
    by_endpoint: ByEndpoint,
    udyam_submissions: BTreeMap<String, u64>,
    /// Submissions answered 500 or 503: not paid, kept apart so retries can be counted.
    udyam_rejected: BTreeMap<String, u64>,
    batch_uploads: BTreeMap<String, u64>,
    vpa_uploads: BTreeMap<String, u64>,
}

impl Stats {
    pub(super) fn arrived(&mut self, endpoint: Endpoint) {
        let counter = match endpoint {
            Endpoint::Authorize => &mut self.by_endpoint.authorize,
            Endpoint::UdyamSubmit => &mut self.by_endpoint.udyam_submit,
            Endpoint::UdyamResult => &mut self.by_endpoint.udyam_result,
            Endpoint::BatchUpload => &mut self.by_endpoint.batch_upload,
            Endpoint::BatchStatus => &mut self.by_endpoint.batch_status,
            Endpoint::Download => &mut self.by_endpoint.download,
        };
        *counter += 1;
    }

    pub(super) fn v1_arrived(&mut self) {
        self.requests += 1;
    }

    /// A `/v1` request the rate limiter admitted in unix second `second`.
    pub(super) fn admitted(&mut self, second: u64) {
        *self.accepted_per_second.entry(second).or_default() += 1;
    }

    /// What a `/v1` request finally got, counted by kind whichever step produced it.
    pub(super) fn v1_answered(&mut self, answer: &Answer) {
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

    pub(super) fn udyam_paid(&mut self, number: &str) {
        *self.udyam_submissions.entry(number.to_owned()).or_default() += 1;
    }

    pub(super) fn udyam_rejected(&mut self, number: &str) {
        *self.udyam_rejected.entry(number.to_owned()).or_default() += 1;
    }

    pub(super) fn batch_uploaded<'a>(&mut self, sha256: &str, vpas: impl Iterator<Item = &'a str>) {
        *self.batch_uploads.entry(sha256.to_owned()).or_default() += 1;
        for vpa in vpas {
            *self.vpa_uploads.entry(vpa.to_owned()).or_default() += 1;
        }
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
