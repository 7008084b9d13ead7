//! The Deepvue `/v1` endpoints: authorize, async Udyam, UPI batch. Field order in every body
//! follows the provider's documented answers, hence a struct per shape.

use std::collections::HashMap;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, FromRequest, Multipart, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::batch::{Batch, STATUS_DOWN_ANSWERS};
use super::gateway::header_text;
use super::ids::sha256_hex;
use super::stats::Endpoint;
use super::udyam::{self, Scenario, SourceOutput};
use super::{CLIENT_ID, CLIENT_SECRET, MAX_AUTHORIZE_BYTES, SandboxError, Shared, clock, lock, s3};

type Params = Query<HashMap<String, String>>;

#[derive(Serialize)]
struct Detail<'a> {
    detail: &'a str,
}

/// `{"detail": "..."}`, the provider's (FastAPI's) plain error body.
pub(super) fn detail(status: StatusCode, message: &str) -> Response {
    (status, Json(Detail { detail: message })).into_response()
}

/// The provider's 429, with no rate-limit headers: the gateway adds any that a flag asks for.
pub(super) fn rate_limited() -> Response {
    detail(
        StatusCode::TOO_MANY_REQUESTS,
        "Rate limit exceeded. Please retry after some time.",
    )
}

#[derive(Serialize)]
struct Missing {
    loc: [&'static str; 2],
    msg: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// The refusal of a call without a valid token and API key; authorize needs neither.
pub(super) fn authenticate(
    app: &Shared,
    endpoint: Option<Endpoint>,
    headers: &HeaderMap,
) -> Option<Response> {
    if endpoint == Some(Endpoint::Authorize) {
        return None;
    }
    let authorization = header_text(headers, "authorization");
    let token = authorization
        .strip_prefix("Bearer ")
        .or_else(|| authorization.strip_prefix("bearer "));
    let valid = token.is_some_and(|token| app.ids.token_is_valid(token.trim(), clock::now_ms()));
    if !valid {
        return Some(detail(StatusCode::UNAUTHORIZED, "Invalid or expired token"));
    }
    if header_text(headers, "x-api-key") != CLIENT_SECRET {
        return Some(detail(StatusCode::FORBIDDEN, "Invalid API key"));
    }
    None
}

/// FastAPI's 422 for required fields that are absent, one entry per field.
fn missing(location: &'static str, fields: &[&'static str]) -> Response {
    let detail: Vec<Missing> = fields
        .iter()
        .map(|&field| Missing {
            loc: [location, field],
            msg: "field required",
            kind: "value_error.missing",
        })
        .collect();
    #[derive(Serialize)]
    struct Errors {
        detail: Vec<Missing>,
    }
    (StatusCode::UNPROCESSABLE_ENTITY, Json(Errors { detail })).into_response()
}

#[derive(Serialize)]
struct Envelope<'a> {
    code: u16,
    timestamp: u64,
    transaction_id: String,
    sub_code: &'a str,
    message: &'a str,
}

/// The provider's business envelope, for answers that are not a result.
fn envelope(app: &Shared, status: StatusCode, sub_code: &str, message: &str) -> Response {
    let body = Envelope {
        code: status.as_u16(),
        timestamp: clock::now_ms(),
        transaction_id: app.ids.transaction_id(),
        sub_code,
        message,
    };
    (status, Json(body)).into_response()
}

/// A job that could not be persisted: the client sees a plain 500 and may retry.
fn internal_error(error: &SandboxError) -> Response {
    tracing::error!(%error, "sandbox request failed");
    detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}

fn not_found(app: &Shared) -> Response {
    envelope(
        app,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "No request found for the given request_id",
    )
}

/// The `client_id` and `client_secret` of an authorize body, whichever form encoding it used.
#[derive(Debug, Clone, Default)]
pub(super) struct AuthorizeForm {
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// Reads the authorize form before the rate limit, which is keyed by its `client_secret`; the
/// fields travel on to the handler in the request's extensions. Returns the key.
pub(super) async fn read_authorize_form(request: Request) -> (Request, String) {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_AUTHORIZE_BYTES)
        .await
        .unwrap_or_default();
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let reread = Request::from_parts(parts.clone(), Body::from(bytes));
    let mut form = AuthorizeForm::default();
    if content_type.starts_with("multipart/form-data") {
        if let Ok(mut multipart) = Multipart::from_request(reread, &()).await {
            while let Ok(Some(field)) = multipart.next_field().await {
                let name = field.name().unwrap_or_default().to_owned();
                let Ok(value) = field.text().await else {
                    break;
                };
                match name.as_str() {
                    "client_id" => form.client_id = Some(value),
                    "client_secret" => form.client_secret = Some(value),
                    _ => {}
                }
            }
        }
    } else if let Ok(axum::Form(mut fields)) =
        axum::Form::<HashMap<String, String>>::from_request(reread, &()).await
    {
        form.client_id = fields.remove("client_id");
        form.client_secret = fields.remove("client_secret");
    }
    let key = form.client_secret.clone().unwrap_or_default();
    let mut request = Request::from_parts(parts, Body::empty());
    request.extensions_mut().insert(form);
    (request, key)
}

#[derive(Serialize)]
struct Token {
    access_token: String,
    token_type: &'static str,
    expiry: String,
}

/// `POST /v1/authorize`.
pub(super) async fn authorize(
    State(app): State<Shared>,
    Extension(form): Extension<AuthorizeForm>,
) -> Response {
    let (Some(client_id), Some(client_secret)) = (&form.client_id, &form.client_secret) else {
        let absent: Vec<&'static str> = [
            ("client_id", form.client_id.is_none()),
            ("client_secret", form.client_secret.is_none()),
        ]
        .into_iter()
        .filter_map(|(field, absent)| absent.then_some(field))
        .collect();
        return missing("body", &absent);
    };
    if client_id != CLIENT_ID || client_secret != CLIENT_SECRET {
        return detail(StatusCode::UNAUTHORIZED, "Invalid client credentials");
    }
    let (access_token, exp) = app
        .ids
        .issue_token(clock::now_ms(), app.config.token_ttl_secs);
    Json(Token {
        access_token,
        token_type: "bearer",
        expiry: clock::rfc3339_utc(exp),
    })
    .into_response()
}

#[derive(Deserialize)]
struct UdyamBody {
    udyam_aadhaar_number: Option<String>,
}

#[derive(Serialize)]
struct UdyamAccepted {
    code: u16,
    timestamp: u64,
    transaction_id: String,
    sub_code: &'static str,
    message: &'static str,
    request_id: String,
}

/// `POST /v1/verification/async/post-udyam-details`: the number in the query, or in a JSON body
/// as one public client sends it.
pub(super) async fn udyam_submit(
    State(app): State<Shared>,
    Query(params): Params,
    body: Bytes,
) -> Response {
    let number = params.get("udyam_aadhaar_number").cloned().or_else(|| {
        serde_json::from_slice::<UdyamBody>(&body)
            .ok()
            .and_then(|body| body.udyam_aadhaar_number)
    });
    let Some(number) = number else {
        return missing("query", &["udyam_aadhaar_number"]);
    };
    if !udyam::is_udyam_number(&number) {
        return envelope(
            &app,
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            "Invalid Udyam number",
        );
    }
    match Scenario::of(&number) {
        Scenario::SubmitAlwaysErrors => {
            lock(&app.stats).udyam_rejected(&number);
            return detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
        Scenario::SubmitUnavailableOnce => match app.store.first_unavailable(&number).await {
            Ok(true) => {
                lock(&app.stats).udyam_rejected(&number);
                return detail(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
            }
            Ok(false) => {}
            Err(error) => return internal_error(&error),
        },
        Scenario::NotRegistered => {
            lock(&app.stats).udyam_paid(&number);
            return envelope(
                &app,
                StatusCode::BAD_REQUEST,
                "INVALID_UDYAM_NUMBER",
                "Udyam number is not registered",
            );
        }
        _ => {}
    }
    let created_ms = clock::now_ms();
    let ready_ms = created_ms.saturating_add(app.config.udyam_delay_ms);
    let request_id = match app
        .store
        .accept_udyam(&app.ids, &number, created_ms, ready_ms)
        .await
    {
        Ok(request_id) => request_id,
        Err(error) => return internal_error(&error),
    };
    lock(&app.stats).udyam_paid(&number);
    Json(UdyamAccepted {
        code: 200,
        timestamp: created_ms,
        transaction_id: app.ids.transaction_id(),
        sub_code: "SUCCESS",
        message: "Request submitted successfully",
        request_id,
    })
    .into_response()
}

#[derive(Serialize)]
struct InProgress {
    request_id: String,
    status: &'static str,
    message: &'static str,
}

#[derive(Serialize)]
struct ResultBody {
    source_output: SourceOutput,
}

#[derive(Serialize)]
struct Completed {
    action: &'static str,
    completed_at: String,
    created_at: String,
    group_id: String,
    request_id: String,
    result: ResultBody,
    status: &'static str,
    task_id: String,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Failed {
    action: &'static str,
    completed_at: String,
    created_at: String,
    error: &'static str,
    group_id: String,
    message: &'static str,
    request_id: String,
    status: &'static str,
    task_id: String,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// `GET /v1/verification/async/get-udyam-details`: 202 while running, then the result.
pub(super) async fn udyam_result(State(app): State<Shared>, Query(params): Params) -> Response {
    let Some(request_id) = params.get("request_id") else {
        return missing("query", &["request_id"]);
    };
    let Some(job) = app.store.udyam(request_id) else {
        return not_found(&app);
    };
    let scenario = Scenario::of(&job.number);
    if scenario == Scenario::NeverCompletes
        || !app.is_ready(request_id, job.ready_ms, clock::now_ms())
    {
        let body = InProgress {
            request_id: request_id.clone(),
            status: "in_progress",
            message: "Request is being processed",
        };
        return (StatusCode::ACCEPTED, Json(body)).into_response();
    }
    if scenario == Scenario::ResultErrorsOnce {
        match app.store.first_result_fault(request_id).await {
            Ok(true) => return detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
            Ok(false) => {}
            Err(error) => return internal_error(&error),
        }
    }
    let created_at = clock::ist(job.created_ms);
    let completed_at = clock::ist(job.ready_ms);
    let group_id = app.ids.group_id(request_id);
    let task_id = app.ids.task_id(request_id);
    let failure = match scenario {
        Scenario::FailsBadRequest => Some(("BAD_REQUEST", "Please enter a valid UAM number")),
        Scenario::FailsNotFound => {
            Some(("NOT_FOUND", "No record found for the given Udyam number"))
        }
        _ => None,
    };
    match failure {
        Some((error, message)) => Json(Failed {
            action: "verify_with_source",
            completed_at,
            created_at,
            error,
            group_id,
            message,
            request_id: request_id.clone(),
            status: "failed",
            task_id,
            kind: "udyam_aadhaar",
        })
        .into_response(),
        None => Json(Completed {
            action: "verify_with_source",
            completed_at,
            created_at,
            group_id,
            request_id: request_id.clone(),
            result: ResultBody {
                source_output: udyam::source_output(&job.number),
            },
            status: "completed",
            task_id,
            kind: "udyam_aadhaar",
        })
        .into_response(),
    }
}

#[derive(Serialize)]
struct BatchAccepted {
    code: u16,
    timestamp: u64,
    transaction_id: String,
    request_id: String,
    message: &'static str,
    sub_code: &'static str,
    output_batch_file: &'static str,
}

/// `POST /v1/verification/upi-basic/batch`, multipart field `batch_file`; `webhook_url` ignored.
pub(super) async fn batch_upload(State(app): State<Shared>, request: Request) -> Response {
    let Ok(mut multipart) = Multipart::from_request(request, &()).await else {
        return missing("body", &["batch_file"]);
    };
    let invalid_file = |app: &Shared| {
        envelope(
            app,
            StatusCode::BAD_REQUEST,
            "INVALID_FILE",
            "batch_file must be a CSV file with a vpa column and at least one row",
        )
    };
    let mut file = None;
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) if field.name() == Some("batch_file") => match field.bytes().await {
                Ok(bytes) => {
                    file = Some(bytes);
                    break;
                }
                Err(_) => return invalid_file(&app),
            },
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => return invalid_file(&app),
        }
    }
    let Some(file) = file else {
        return missing("body", &["batch_file"]);
    };
    let Some(batch) = Batch::parse(&file) else {
        return invalid_file(&app);
    };
    let max = app.config.batch_max_rows;
    let rows = batch.len() as u64;
    if rows > max {
        let message = format!("batch_file has {rows} rows; at most {max} rows are accepted");
        return envelope(&app, StatusCode::BAD_REQUEST, "BATCH_TOO_LARGE", &message);
    }
    let sha256 = sha256_hex(&file);
    let created_ms = clock::now_ms();
    let ready_ms = created_ms
        .saturating_add(app.config.batch_delay_ms)
        .saturating_add(rows.saturating_mul(app.config.batch_ms_per_row));
    let request_id = match app
        .store
        .accept_batch(&app.ids, &sha256, created_ms, ready_ms, file)
        .await
    {
        Ok(request_id) => request_id,
        Err(error) => return internal_error(&error),
    };
    lock(&app.stats).batch_uploaded(&sha256, batch.vpas());
    let body = BatchAccepted {
        code: 201,
        timestamp: created_ms,
        transaction_id: request_id.clone(),
        request_id,
        message: "batch processing in progress",
        sub_code: "SUCCESS",
        output_batch_file: "",
    };
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(Serialize)]
struct StatusData {
    request_id: String,
    status: u16,
    product_id: &'static str,
    message: &'static str,
    batch_output_file_url: Option<String>,
}

#[derive(Serialize)]
struct BatchStatus {
    transaction_id: String,
    timestamp: u64,
    code: u16,
    message: &'static str,
    sub_code: &'static str,
    data: StatusData,
}

/// `GET /v1/verification/batch-processing-status`: the output URL is signed afresh each call.
pub(super) async fn batch_status(State(app): State<Shared>, Query(params): Params) -> Response {
    let Some(request_id) = params.get("request_id") else {
        return missing("query", &["request_id"]);
    };
    let Some(job) = app.store.batch(request_id) else {
        return not_found(&app);
    };
    if Batch::may_be_status_down(&job.file)
        && Batch::parse(&job.file).is_some_and(|b| b.status_down())
    {
        let mut refusals = lock(&app.status_refusals);
        let given = refusals.entry(request_id.clone()).or_insert(0);
        if *given < STATUS_DOWN_ANSWERS {
            *given += 1;
            return detail(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
        }
    }
    let now = clock::now_ms();
    let data = if !app.is_ready(request_id, job.ready_ms, now) {
        StatusData {
            request_id: request_id.clone(),
            status: 102,
            product_id: "",
            message: "batch processing in progress",
            batch_output_file_url: None,
        }
    } else {
        StatusData {
            request_id: request_id.clone(),
            status: 200,
            product_id: "",
            message: "batch processing completed",
            batch_output_file_url: Some(s3::presign(&app, request_id, now / 1000)),
        }
    };
    Json(BatchStatus {
        transaction_id: app.ids.transaction_id(),
        timestamp: now,
        code: 200,
        message: "Batch Upload status fetched successfully",
        sub_code: "SUCCESS",
        data,
    })
    .into_response()
}
